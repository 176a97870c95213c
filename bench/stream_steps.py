"""
CPU per streamed response of the gateway's own stream steps, in process.

    python bench/stream_steps.py [--baseline DIR] [--rounds 7]

For the Anthropic fixture the benchmarks serve
(C{tests/fixtures/streams/anthropic_thinking_tools.sse}, 23 events, one chunk
per event as C{bench/fast_upstream.py} sends them), each step as the proxy
runs it:

  - C{tap + collect}: C{ResponseCapture} in the proxy's bulk mode, every
    chunk fed, then C{finish()} (the SSE parse, the JSON of every event, the
    accumulator and the summary);
  - C{relay}: C{RelayProtocol} relaying the 23 chunks (to a request that
    drops them) with that capture as its tap, then the body's end;
  - C{metrics}: C{GatewayMetrics.observe} of a finished streamed exchange
    with 22 chunk gaps.

Each figure is the best of C{--rounds} loops of CPU time (C{process_time})
divided by the loop's count: warm caches, no sockets, so it moves little
with other load but is lower than the same step inside the gateway
(C{bench/hot_path_cpu.py --steps}). C{--baseline DIR} runs the same on
another checkout (e.g. from C{git archive}) in a child process, alternating.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FIXTURE = os.path.join(REPO, "tests", "fixtures", "streams", "anthropic_thinking_tools.sse")


def _best(fn: Callable[[], Any], count: int, rounds: int) -> float:
    for _ in range(count // 10):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(count):
            fn()
        best = min(best, (time.process_time() - start) / count)
    return best * 1e6


def measure(rounds: int) -> dict[str, float]:
    """The steps of the checkout first on sys.path, in µs per stream."""
    from twisted.internet.task import Clock

    from lunaroute.dialects.capture import ResponseCapture
    from lunaroute.exchange import Exchange, Timings
    from lunaroute.metrics import GatewayMetrics
    from lunaroute.proxy.app import TAP_BULK_BYTES
    from lunaroute.proxy.relay import RelayProtocol

    with open(FIXTURE, "rb") as handle:
        body = handle.read()
    chunks = [event + b"\n\n" for event in body.split(b"\n\n") if event.strip()]

    def capture() -> Any:
        return ResponseCapture(
            "anthropic", streaming=True, content_type="text/event-stream", bulk_bytes=TAP_BULK_BYTES
        )

    def tap_and_collect() -> None:
        cap = capture()
        for chunk in chunks:
            cap.feed(chunk)
        cap.finish()

    class Request:
        channel = object()

        def write(self, data: bytes) -> None:
            pass

        def registerProducer(self, producer: Any, streaming: bool) -> None:
            pass

        def unregisterProducer(self) -> None:
            pass

    class Transport:
        def stopProducing(self) -> None:
            pass

    clock = Clock()

    def relay() -> None:
        protocol = RelayProtocol(Request(), clock, capture().feed, 300.0)
        protocol.makeConnection(Transport())
        for chunk in chunks:
            protocol.dataReceived(chunk)
        protocol.connectionLost()

    metrics = GatewayMetrics()
    exchange = Exchange(
        request_id="r", session_id="s", listener="anthropic", kind="conversation", dialect="anthropic",
        path="/v1/messages", method="POST",
        timings=Timings(received=0.0, upstream_sent=0.002, headers_received=0.3, first_byte=0.3,
                        last_byte=1.5, finished=1.503),
        provider="anthropic", model="claude-sonnet-4-5", streaming=True, status=200, outcome="ok",
        chunk_count=len(chunks), chunk_gaps_ms=[0.05 * i for i in range(len(chunks) - 1)],
    )
    return {
        "tap + collect": _best(tap_and_collect, 2000, rounds),
        "relay (with the tap, without collect)": _best(relay, 2000, rounds),
        "metrics (observe)": _best(lambda: metrics.observe(exchange), 5000, rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--baseline", help="another checkout to measure too")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        for name, value in measure(args.rounds).items():
            print(f"{name}\t{value}")
        return
    runs: dict[str, dict[str, list[float]]] = {}
    targets = [("this checkout", REPO)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
    for _ in range(3):
        for label, path in targets:
            env = dict(os.environ, PYTHONPATH=path)
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", "--rounds", str(args.rounds)],
                env=env, cwd=path, check=True, capture_output=True, text=True,
            ).stdout
            for line in out.splitlines():
                name, value = line.split("\t")
                runs.setdefault(label, {}).setdefault(name, []).append(float(value))
    print("µs per stream (23 chunks), best of each child's rounds, min over 3 children:")
    for label, steps in runs.items():
        print(f"  {label}: " + ", ".join(f"{name} {min(values):.1f}" for name, values in steps.items()))


if __name__ == "__main__":
    main()
