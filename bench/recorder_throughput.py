"""
How fast the session recorder turns finished exchanges into JSONL + SQLite.

    python bench/recorder_throughput.py [--quick] [--json] [--history-kb N]

Builds realistic exchanges: a Claude Code shaped streaming request (the same
body as C{bench/run.py}), and the response summary that
L{lunaroute.dialects.capture.ResponseCapture} makes of
C{tests/fixtures/streams/anthropic_thinking_tools.sse} fed event by event, as
the relay would (thinking, text, two tool calls: 7 events per exchange).
Then measures, on this thread:

  - C{events}: L{lunaroute.sessions.events.exchange_events} alone;
  - C{jsonl}: L{JSONLWriter.write_batch} alone, on prepared events;
  - C{sqlite}: L{SQLiteWriter.write_batch} alone;
  - C{combined}: what the recorder's writer thread does per batch (events,
    then both writers), in batches of C{batch_size} (100) events;

each for small (~3 KB) requests and for Claude Code sized ones
(C{--history-kb}, default 100 KB of conversation history, stored in full by
both writers).  Finally the real L{RecorderService}, on the reactor with its
own writer thread, is offered C{--rate} exchanges a second (default 2,000)
for a few seconds: it reports events written and dropped, the deepest
queue, and how long stopping (draining) took.

All files go to a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

from run import CLIENT_HEADERS, request_body  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402

from lunaroute.dialects.capture import ResponseCapture  # noqa: E402
from lunaroute.exchange import Exchange, Timings  # noqa: E402
from lunaroute.proxy.headers import masked_headers  # noqa: E402
from lunaroute.sessions.events import exchange_events  # noqa: E402
from lunaroute.sessions.jsonl import JSONLWriter  # noqa: E402
from lunaroute.sessions.sqlite import SQLiteWriter  # noqa: E402

FIXTURE = os.path.join(REPO, "tests", "fixtures", "streams", "anthropic_thinking_tools.sse")

RESPONSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("request-id", "req_011CVbenchFastUpstream00000"),
    ("anthropic-organization-id", "00000000-0000-4000-8000-0000000bench0"),
    ("anthropic-ratelimit-requests-limit", "4000"),
    ("anthropic-ratelimit-requests-remaining", "3999"),
    ("anthropic-ratelimit-input-tokens-limit", "400000"),
    ("anthropic-ratelimit-output-tokens-limit", "400000"),
]


def stream_chunks() -> list[bytes]:
    with open(FIXTURE, "rb") as handle:
        raw = handle.read().replace(b"\r\n", b"\n").strip(b"\n")
    return [event + b"\n\n" for event in raw.split(b"\n\n") if event.strip()]


class ExchangeFactory:
    """Fresh exchanges that differ as real ones do: ids, sessions, times."""

    def __init__(self, history_kb: int, sessions: int = 200) -> None:
        self.body = request_body(True, history_kb=history_kb)
        self.chunks = stream_chunks()
        self.sessions = [str(uuid.UUID(int=i + 1)) for i in range(sessions)]
        request_headers = Headers()
        for name, value in CLIENT_HEADERS:
            request_headers.addRawHeader(name.encode(), value.encode())
        self.request_headers = masked_headers(request_headers)
        response_headers = Headers()
        for name, value in RESPONSE_HEADERS:
            response_headers.addRawHeader(name.encode(), value.encode())
        self.response_headers = masked_headers(response_headers)
        self.count = 0

    def make(self) -> Exchange:
        i = self.count
        self.count += 1
        capture = ResponseCapture(
            "anthropic", streaming=True, content_type="text/event-stream; charset=utf-8"
        )
        for chunk in self.chunks:
            capture.feed(chunk)
        summary = capture.finish()
        t0 = time.time()
        timings = Timings(
            received=t0,
            upstream_sent=t0 + 0.0004,
            headers_received=t0 + 0.35,
            first_byte=t0 + 0.351,
            last_byte=t0 + 2.4,
            finished=t0 + 2.4003,
        )
        return Exchange(
            request_id=str(uuid.uuid4()),
            session_id=self.sessions[i % len(self.sessions)],
            listener="anthropic",
            kind="conversation",
            dialect="anthropic",
            path="/v1/messages",
            method="POST",
            timings=timings,
            provider="anthropic",
            model="claude-sonnet-4-5-20250929",
            streaming=True,
            status=200,
            client_ip="127.0.0.1",
            user_agent="claude-cli/2.0.14 (external, cli)",
            request_body=self.body,
            # Every exchange has its own parsed body, as in the gateway.
            request_json=json.loads(self.body),
            request_headers=dict(self.request_headers),
            response_headers=dict(self.response_headers),
            response=summary,
            bytes_out=sum(len(c) for c in self.chunks),
            chunk_count=len(self.chunks),
            chunk_gaps_ms=[40.0 + (j % 7) for j in range(len(self.chunks) - 1)],
        )


def batches_of_events(exchanges: list[Exchange], batch_events: int) -> list[list[Exchange]]:
    """Group exchanges as the recorder does: until C{batch_events} events."""
    per = max(1, len(exchange_events(exchanges[0])))
    size = max(1, -(-batch_events // per))
    return [exchanges[i : i + size] for i in range(0, len(exchanges), size)]


def measure(history_kb: int, n: int, tmp: str, batch_events: int = 100) -> dict[str, Any]:
    factory = ExchangeFactory(history_kb)
    exchanges = [factory.make() for _ in range(n)]
    per_exchange = len(exchange_events(exchanges[0]))
    out: dict[str, Any] = {
        "history_kb": history_kb,
        "request_bytes": len(factory.body),
        "exchanges": n,
        "events_per_exchange": per_exchange,
        "batch_events": batch_events,
    }

    # events alone
    t0 = time.perf_counter()
    all_events = [exchange_events(e) for e in exchanges]
    dt = time.perf_counter() - t0
    out["events_only"] = {"exchanges_per_s": n / dt, "events_per_s": n * per_exchange / dt}

    groups = batches_of_events(exchanges, batch_events)
    event_batches: list[list[dict[str, Any]]] = []
    index = 0
    for group in groups:
        batch: list[dict[str, Any]] = []
        for _ in group:
            batch.extend(all_events[index])
            index += 1
        event_batches.append(batch)

    for name, writer in (
        ("jsonl_only", JSONLWriter(os.path.join(tmp, f"jsonl-{history_kb}"))),
        ("sqlite_only", SQLiteWriter(os.path.join(tmp, f"sqlite-{history_kb}.db"))),
    ):
        if hasattr(writer, "open"):
            writer.open()
        t0 = time.perf_counter()
        for batch in event_batches:
            writer.write_batch(batch)
        dt = time.perf_counter() - t0
        writer.close()
        out[name] = {"exchanges_per_s": n / dt, "events_per_s": n * per_exchange / dt}

    # what the writer thread does: events, then both writers, per batch
    fresh = [factory.make() for _ in range(n)]
    jsonl = JSONLWriter(os.path.join(tmp, f"combined-jsonl-{history_kb}"))
    sqlite = SQLiteWriter(os.path.join(tmp, f"combined-{history_kb}.db"))
    sqlite.open()
    t0 = time.perf_counter()
    written = 0
    for group in batches_of_events(fresh, batch_events):
        events: list[dict[str, Any]] = []
        for exchange in group:
            events.extend(exchange_events(exchange))
        jsonl.write_batch(events)
        sqlite.write_batch(events)
        written += len(events)
    dt = time.perf_counter() - t0
    jsonl.close()
    sqlite.close()
    out["combined"] = {"exchanges_per_s": n / dt, "events_per_s": written / dt, "seconds": dt}
    out["disk_bytes"] = _du(tmp)
    return out


def _du(path: str) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def service_run(rate: int, seconds: float, tmp: str, history_kb: int) -> dict[str, Any]:
    """The real RecorderService on the reactor, offered C{rate} exchanges/s."""
    from twisted.internet import reactor, task

    from lunaroute.sessions.recorder import RecorderService

    factory = ExchangeFactory(history_kb)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    # Prepared up front, so the reactor thread only pays for record().
    total_ticks = int(seconds / tick)
    pool = [factory.make() for _ in range(min(per_tick * total_ticks, 4000))]
    service = RecorderService(
        [
            JSONLWriter(os.path.join(tmp, "service-jsonl")),
            SQLiteWriter(os.path.join(tmp, "service.db")),
        ],
        reactor,
    )
    result: dict[str, Any] = {"offered_rate": rate, "seconds": seconds, "history_kb": history_kb}
    state = {"ticks": 0, "offered": 0, "max_depth": 0, "record_s": 0.0, "next": 0}

    def reuse(exchange: Exchange) -> Exchange:
        # A new identity for a pooled exchange (the writer may still hold
        # the old one; the fields it reads are replaced, not mutated).
        clone = Exchange(**{f: getattr(exchange, f) for f in exchange.__dataclass_fields__})
        clone.request_id = str(uuid.uuid4())
        return clone

    def offer() -> None:
        if state["ticks"] >= total_ticks:
            loop.stop()
            return
        state["ticks"] += 1
        batch = []
        for _ in range(per_tick):
            batch.append(reuse(pool[state["next"] % len(pool)]))
            state["next"] += 1
        t0 = time.perf_counter()
        for exchange in batch:
            service.record(exchange)
        state["record_s"] += time.perf_counter() - t0
        state["offered"] += per_tick
        state["max_depth"] = max(state["max_depth"], service.queue_depth)

    loop = task.LoopingCall(offer)

    def run() -> Any:
        service.startService()
        start = time.perf_counter()
        d = loop.start(tick, now=False)

        def stop(_: Any) -> Any:
            result["offer_seconds"] = time.perf_counter() - start
            t0 = time.perf_counter()
            stopping = service.stopService()

            def done(_: Any) -> None:
                result["drain_ms"] = (time.perf_counter() - t0) * 1000
                result["total_seconds"] = time.perf_counter() - start

            return stopping.addCallback(done)

        return d.addCallback(stop)

    d = run()
    d.addBoth(lambda r: (reactor.stop(), r)[1])
    guard = reactor.callLater(seconds + 120, reactor.stop)
    reactor.run()
    if guard.active():
        guard.cancel()
    result.update(
        {
            "offered_exchanges": state["offered"],
            "achieved_offer_rate": state["offered"] / result.get("offer_seconds", seconds),
            "written_events": service.written_events,
            "dropped_events": service.dropped_events,
            "write_failures": service.write_failures,
            "max_queue_depth": state["max_depth"],
            "record_us_per_exchange": state["record_s"] / max(1, state["offered"]) * 1e6,
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Session recorder throughput (JSONL + SQLite)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument(
        "--exchanges", type=int, default=None, help="exchanges per measurement (default 3000; --quick 500)"
    )
    parser.add_argument("--history-kb", type=int, default=100, help="history size of the large requests")
    parser.add_argument("--rate", type=int, default=2000, help="exchanges/s offered to RecorderService")
    parser.add_argument("--service-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    n = args.exchanges or (500 if args.quick else 3000)
    seconds = args.service_seconds or (2.0 if args.quick else 5.0)

    tmp = tempfile.mkdtemp(prefix="lunaroute-recorder-bench-")
    try:
        small = measure(0, n, tmp)
        large = measure(args.history_kb, max(100, n // 5), tmp)
        service = service_run(args.rate, seconds, tmp, 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {
        "events_per_exchange": small["events_per_exchange"],
        "combined": small["combined"],
        "small": small,
        "large": large,
        "service": service,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{small['events_per_exchange']} events per exchange (streamed thinking + text + 2 tool calls)")
    print(f"{'request':>16} | {'stage':>12} | {'exchanges/s':>12} | {'events/s':>10}")
    for label, res in (
        (f"{small['request_bytes'] // 1024} KB", small),
        (f"{large['request_bytes'] // 1024} KB", large),
    ):
        for stage in ("events_only", "jsonl_only", "sqlite_only", "combined"):
            r = res[stage]
            print(f"{label:>16} | {stage:>12} | {r['exchanges_per_s']:>12.0f} | {r['events_per_s']:>10.0f}")
    s = service
    print(
        f"RecorderService offered {s['offered_rate']}/s for {s['seconds']} s "
        f"({s['offered_exchanges']} exchanges, achieved {s['achieved_offer_rate']:.0f}/s): "
        f"{s['written_events']} events written, {s['dropped_events']} dropped, "
        f"max queue {s['max_queue_depth']} events, drain {s.get('drain_ms', float('nan')):.0f} ms, "
        f"record() {s['record_us_per_exchange']:.1f} us/exchange on the reactor"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
