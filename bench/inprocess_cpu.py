"""
LunaRoute's own CPU per request, in one process, without sockets: a steady
measure of the code LunaRoute adds on top of its stack.

    python bench/inprocess_cpu.py [--requests 3000] [--rounds 5] [--configs default,floor]
                                  [--history-kb 0] [--baseline DIR] [--instructions]

C{bench/hot_path_cpu.py} measures the whole gateway process over real
sockets, which includes the reactor, the system calls and Agent, and moves by
up to 1.8x with the other load on a shared machine.  This benchmark leaves all
of that out so that changes to LunaRoute's own steps can be compared in
minutes:

  - C{default}: the real L{lunaroute.service.GatewayService} (the same wiring
    as C{twistd lunaroute}: the access guard, the session API in front of the
    proxy routes, statistics and metrics on) built on a
    C{MemoryReactorClock}, with an in-memory Anthropic provider that answers
    at once with the bytes C{bench/fast_upstream.py} serves (its headers, the
    JSON answer, or the SSE stream delivered one event per read);
  - C{floor}: the server half of C{bench/stack_floor.py} (twisted.web's
    C{Site}, headers copied both ways, the answer relayed), with the same
    in-memory answer: what twisted.web alone costs here;
  - the other configurations of C{hot_path_cpu.py} (C{lean}, C{no-metrics},
    C{no-stats}).

Each request is the bytes of a Claude Code shaped request (C{run.py}'s body,
four sessions in rotation) fed to the site's channel over one kept-alive
C{StringTransport}; the answer is checked and discarded.  The number is
C{time.process_time} per request, the best of C{--rounds} loops after a
warm-up, so it is the code's cost without the machine's noise, not what a
client sees.  C{--baseline DIR} runs each configuration on another checkout
too (e.g. from C{git archive}), alternating, as C{NAME@base}.

C{--instructions} counts instructions instead (valgrind's callgrind, only
around the measured loop; C{apt-get install valgrind}): exact and the same
from run to run, so a change of 0.5 % shows, where the timings move by 10 %
with the machine's other load.  About ten seconds per configuration and
phase at C{--requests 400}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from hot_path_cpu import CONFIGS  # noqa: E402
from run import CLIENT_HEADERS, request_body  # noqa: E402

FIXTURES = os.path.join(REPO, "tests", "fixtures", "streams")


def _upstream_headers(stream: bool) -> Any:
    from fast_upstream import _ANTHROPIC_HEADERS
    from twisted.web.http_headers import Headers

    headers = Headers()
    for line in _ANTHROPIC_HEADERS.decode().split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            headers.addRawHeader(name, value)
    headers.setRawHeaders(
        "content-type", ["text/event-stream; charset=utf-8" if stream else "application/json"]
    )
    return headers


def _answer(stream: bool) -> Any:
    """fast_upstream's answer as an in-memory C{IResponse}: the JSON body, or the SSE stream one event per read."""
    from lunaroute.testing.providers import CannedResponse

    headers = _upstream_headers(stream)
    if stream:
        with open(os.path.join(FIXTURES, "anthropic_thinking_tools.sse"), "rb") as handle:
            text = handle.read().replace(b"\r\n", b"\n")
        reads = [event + b"\n\n" for event in text.split(b"\n\n") if event.strip()]
    else:
        with open(os.path.join(FIXTURES, "anthropic_thinking_tools.json"), "rb") as handle:
            body = handle.read().strip()
        headers.setRawHeaders("content-length", [str(len(body))])
        reads = [body]
    return CannedResponse(200, headers, reads)


def _floor_site(answer: Any) -> Any:
    """The server half of bench/stack_floor.py, answered in memory."""
    from stack_floor import _HOP, _QuietSite, _Relay
    from twisted.web import resource, server
    from twisted.web.http_headers import Headers

    class Forward(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            request.content.read()
            headers = Headers()
            for name, values in request.requestHeaders.getAllRawHeaders():
                if name.lower() not in _HOP:
                    headers.setRawHeaders(name, values)
            request.setResponseCode(answer.code)
            for name, values in answer.headers.getAllRawHeaders():
                if name.lower() not in _HOP:
                    request.responseHeaders.setRawHeaders(name, values)
            answer.deliverBody(_Relay(request))
            return server.NOT_DONE_YET

    return _QuietSite(Forward(), parsePOSTFormSubmission=False)


def _gateway_site(config: dict[str, Any], answer: Any) -> Any:
    from twisted.internet.testing import MemoryReactorClock

    from lunaroute.config import settings_from_mapping
    from lunaroute.service import GatewayService
    from lunaroute.testing.providers import CannedProvider

    settings = settings_from_mapping(config, env={})
    provider = CannedProvider(settings.providers["anthropic"], answer)
    # CannedProvider remembers every call; a benchmark must not grow.
    provider.calls = _Forget()
    try:
        service = GatewayService(settings, MemoryReactorClock(), providers={"anthropic": provider})
    except TypeError:
        # A baseline checkout from before GatewayService took its providers.
        service = GatewayService(settings, MemoryReactorClock())
        service.gateway.providers["anthropic"] = provider
    return service.site


class _Forget(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


def measure(
    name: str, requests: int, rounds: int, history_kb: int, phases: tuple[str, ...] = ("json", "stream")
) -> dict[str, float]:
    """CPU microseconds per request of configuration C{name}, for each of C{phases}."""
    extra = json.loads(json.dumps(CONFIGS[name]))
    result: dict[str, float] = {}
    for stream in [phase == "stream" for phase in phases]:
        answer = _answer(stream)
        if extra.get("floor"):
            site = _floor_site(answer)
        else:
            config: dict[str, Any] = {
                "host": "127.0.0.1",
                "port": 0,
                "providers": {"anthropic": {"base_url": "http://127.0.0.1:9"}},
                "ui": {"enabled": False},
            }
            config.update(extra)
            site = _gateway_site(config, answer)
        raws = []
        for session in range(4):
            body = request_body(stream, session, history_kb)
            head = [b"POST /v1/messages HTTP/1.1", b"Host: 127.0.0.1:8081", b"Content-Length: %d" % len(body)]
            head += [f"{k}: {v}".encode() for k, v in CLIENT_HEADERS]
            raws.append(b"\r\n".join(head) + b"\r\n\r\n" + body)
        n = requests // 2 if stream else requests
        result["stream" if stream else "json"] = round(_best_loop(name, site, raws, stream, n, rounds), 1)
    return result


def _best_loop(name: str, site: Any, raws: list[bytes], stream: bool, n: int, rounds: int) -> float:
    """The best of C{rounds} loops of C{n} requests over one connection, us each."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    client = IPv4Address("TCP", "127.0.0.1", 40000)
    channel = site.buildProtocol(client)
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8081), peerAddress=client)
    channel.makeConnection(transport)
    # The floor drops content-length (so JSON answers go chunked too).
    ends = (b"0\r\n\r\n",) if stream else (b"}", b"0\r\n\r\n")

    def one(raw: bytes) -> None:
        channel.dataReceived(raw)
        out = transport.value()
        if not (out.startswith(b"HTTP/1.1 200 ") and out.endswith(ends)):
            raise RuntimeError(f"{name}: unexpected answer {out[:300]!r}")
        transport.clear()

    for i in range(max(200, n // 10)):
        one(raws[i % 4])
    if os.environ.get("INPROCESS_CPU_COUNTED"):
        # Under callgrind (--instructions): the parent counts only this loop.
        print("READY", flush=True)
        sys.stdin.readline()
        for i in range(n):
            one(raws[i % 4])
        print("DONE", flush=True)
        sys.stdin.readline()
        return 0.0
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for i in range(n):
            one(raws[i % 4])
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


def instructions(name: str, code: str, phase: str, requests: int, history_kb: int) -> float:
    """
    Instructions per request (callgrind's Ir) of C{phase} of configuration
    C{name} on the checkout C{code}: exact and the same from run to run,
    whatever else the machine is doing.  Counting is switched on
    (C{callgrind_control}) only around the measured loop, after the warm-up.
    """
    n = requests // 2 if phase == "stream" else requests
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ, PYTHONPATH=code, INPROCESS_CPU_COUNTED="1", PYTHONHASHSEED="0")
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                sys.executable, __file__, "--child", name, "--phase", phase, "--requests", str(requests),
                "--rounds", "1", "--history-kb", str(history_kb)]
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env)
        assert child.stdin is not None and child.stdout is not None

        def wait_for(word: str) -> None:
            assert child.stdout is not None
            for line in child.stdout:
                if line.strip() == word:
                    return
            raise SystemExit(f"{name} under valgrind: {child.stderr.read()[-3000:] if child.stderr else ''}")

        wait_for("READY")
        subprocess.run(["callgrind_control", "--instr=on", str(child.pid)], capture_output=True, check=True)
        child.stdin.write("go\n")
        child.stdin.flush()
        wait_for("DONE")
        subprocess.run(["callgrind_control", "--instr=off", str(child.pid)], capture_output=True, check=True)
        child.stdin.write("go\n")
        child.stdin.close()
        child.wait(timeout=600)
        with open(out) as handle:
            totals = [int(line.split()[1]) for line in handle if line.startswith(("summary:", "totals:"))]
    if not totals or not max(totals):
        raise SystemExit(f"{name}: callgrind counted nothing")
    return max(totals) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="non-streaming requests per loop (streams: half)")
    parser.add_argument("--rounds", type=int, default=5, help="loops per configuration; the best counts")
    parser.add_argument("--configs", default="default,floor")
    parser.add_argument("--history-kb", type=int, default=0, help="KB of history in every body (100: Claude Code sized)")
    parser.add_argument("--baseline", default=None, help="another checkout: each configuration also runs on its code")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each configuration (median)")
    parser.add_argument(
        "--instructions", action="store_true",
        help="count instructions per request under valgrind's callgrind instead of timing (exact, slow)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        phases = (args.phase,) if args.phase else ("json", "stream")
        print(json.dumps(measure(args.child, args.requests, args.rounds, args.history_kb, phases)))
        return 0
    names = [n for n in args.configs.split(",") if n]
    runs: list[tuple[str, str | None]] = [(n, None) for n in names]
    if args.baseline:
        runs += [(n, os.path.abspath(args.baseline)) for n in names if not CONFIGS[n].get("floor")]
    if args.instructions:
        print("Instructions per request in process (callgrind Ir)")
        for name, code in runs:
            cells = [
                f"{phase} {instructions(name, code or REPO, phase, args.requests, args.history_kb):12,.0f}"
                for phase in ("json", "stream")
            ]
            print(f"  {name + ('@base' if code else ''):16s} " + "   ".join(cells))
        return 0
    results: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        for name, code in runs:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (code or REPO, env.get("PYTHONPATH")) if p)
            argv_child = [sys.executable, __file__, "--child", name, "--requests", str(args.requests),
                          "--rounds", str(args.rounds), "--history-kb", str(args.history_kb)]
            out = subprocess.run(argv_child, capture_output=True, text=True, env=env, timeout=900, check=False)
            if out.returncode:
                raise SystemExit(f"{name}: {out.stderr[-3000:]}")
            label = name + ("@base" if code else "")
            results.setdefault(label, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"CPU per request in process, us (median of {args.repeat} runs, each the best of {args.rounds} loops)")
    for label, values in results.items():
        cells = []
        for phase in ("json", "stream"):
            series = sorted(v[phase] for v in values)
            cells.append(f"{phase} {series[len(series) // 2]:7.1f} min {series[0]:6.1f} ({', '.join(f'{x:.0f}' for x in series)})")
        print(f"  {label:16s} " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
