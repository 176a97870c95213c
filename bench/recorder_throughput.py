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

try:
    from lunaroute.sessions.events import shared_json
except ImportError:  # an older checkout, for before/after comparisons
    from contextlib import nullcontext as shared_json  # type: ignore[assignment]
from lunaroute.sessions.jsonl import JSONLWriter  # noqa: E402
from lunaroute.sessions.sqlite import SQLiteWriter  # noqa: E402

FIXTURE = os.path.join(REPO, "tests", "fixtures", "streams", "anthropic_thinking_tools.sse")
JSON_FIXTURE = os.path.join(REPO, "tests", "fixtures", "streams", "anthropic_thinking_tools.json")

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


def json_summary() -> Any:
    """The summary the capture makes of the fixture's non-streaming answer."""
    with open(JSON_FIXTURE, "rb") as handle:
        body = handle.read()
    capture = ResponseCapture("anthropic", streaming=False, content_type="application/json")
    capture.feed(body)
    return capture.finish(), len(body)


class ExchangeFactory:
    """
    Fresh exchanges that differ as real ones do: ids, sessions, times.
    Every C{stream_every}-th exchange streams (1: all of them); the others
    get the fixture's non-streaming answer.
    """

    def __init__(self, history_kb: int, sessions: int = 200, stream_every: int = 1) -> None:
        self.body = request_body(True, history_kb=history_kb)
        self.plain_body = request_body(False, history_kb=history_kb)
        self.chunks = stream_chunks()
        self.plain_summary, self.plain_bytes = json_summary()
        self.stream_every = stream_every
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

    def make(self, session_id: str | None = None) -> Exchange:
        i = self.count
        self.count += 1
        if session_id is None:
            session_id = self.sessions[i % len(self.sessions)]
        if i % self.stream_every:
            return self._plain(session_id)
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
            session_id=session_id,
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


    def _plain(self, session_id: str) -> Exchange:
        t0 = time.time()
        timings = Timings(
            received=t0,
            upstream_sent=t0 + 0.0004,
            headers_received=t0 + 2.1,
            first_byte=t0 + 2.1,
            last_byte=t0 + 2.1002,
            finished=t0 + 2.1004,
        )
        return Exchange(
            request_id=str(uuid.uuid4()),
            session_id=session_id,
            listener="anthropic",
            kind="conversation",
            dialect="anthropic",
            path="/v1/messages",
            method="POST",
            timings=timings,
            provider="anthropic",
            model="claude-sonnet-4-5-20250929",
            streaming=False,
            status=200,
            client_ip="127.0.0.1",
            user_agent="claude-cli/2.0.14 (external, cli)",
            request_body=self.plain_body,
            request_json=json.loads(self.plain_body),
            request_headers=dict(self.request_headers),
            response_headers={"content-type": "application/json"},
            response=self.plain_summary,
            bytes_out=self.plain_bytes,
            chunk_count=1,
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
        with shared_json():  # as RecorderService does
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


def short_session(i: int, per_session: int = 20, open_at_once: int = 16) -> str:
    """
    The session of the C{i}-th exchange when sessions have C{per_session}
    exchanges each and C{open_at_once} of them are going at a time (as 16
    clients would): 20,000 exchanges make 1,000 sessions.
    """
    wave = i // (per_session * open_at_once)
    return f"short-{wave * open_at_once + i % open_at_once:05d}"


def shape_run(
    label: str, session_of: Any, n: int, tmp: str, batch_events: int, history_kb: int = 0
) -> dict[str, Any]:
    """
    What the writer thread does (events, then JSONL and SQLite sharing the
    JSON text) for C{n} exchanges, a quarter of them streaming, with
    sessions from C{session_of(i)}.  The exchanges of a batch are made
    before its clock starts.  Wall time and this thread's CPU time, overall
    and per quarter of the run (a cost growing with session length shows
    as a growing last quarter).
    """
    from lunaroute.sessions.recorder import event_count


    factory = ExchangeFactory(history_kb, stream_every=4)
    folder = os.path.join(tmp, f"shape-{label}")
    jsonl = JSONLWriter(os.path.join(folder, "jsonl"))
    sqlite = SQLiteWriter(os.path.join(folder, "sessions.db"))
    sqlite.open()
    wall = cpu = 0.0
    quarter_cpu = [0.0, 0.0, 0.0, 0.0]
    quarter_n = [0, 0, 0, 0]
    i = 0
    while i < n:
        group: list[Exchange] = []
        events_in = 0
        while i < n and events_in < batch_events:
            exchange = factory.make(session_of(i))
            group.append(exchange)
            events_in += event_count(exchange)
            i += 1
        w0, c0 = time.perf_counter(), time.thread_time()
        with shared_json():  # as RecorderService does
            events: list[dict[str, Any]] = []
            for exchange in group:
                events.extend(exchange_events(exchange))
            jsonl.write_batch(events)
            sqlite.write_batch(events)
        dw, dc = time.perf_counter() - w0, time.thread_time() - c0
        wall += dw
        cpu += dc
        quarter = min(3, (i - 1) * 4 // n)
        quarter_cpu[quarter] += dc
        quarter_n[quarter] += len(group)
    jsonl.close()
    sqlite.close()
    return {
        "label": label,
        "exchanges": n,
        "batch_events": batch_events,
        "exchanges_per_s": n / wall,
        "cpu_us_per_exchange": cpu / n * 1e6,
        "cpu_us_per_exchange_by_quarter": [c / max(1, k) * 1e6 for c, k in zip(quarter_cpu, quarter_n, strict=True)],
    }


def service_run(
    rate: int, seconds: float, tmp: str, history_kb: int, batch_size: int = 100, batch_interval_ms: int = 100
) -> dict[str, Any]:
    """
    The real RecorderService on the reactor, offered C{rate} exchanges/s: a
    quarter of them streaming, half of them in one long session and half
    in short ones (see L{short_session}).  After the load stops, the time
    until the queue is empty and until everything accepted is written.
    """
    import threading

    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred
    from twisted.python.threadpool import ThreadPool

    from lunaroute.sessions.recorder import RecorderService, event_count

    factory = ExchangeFactory(history_kb, stream_every=4)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    # Prepared up front, so the reactor thread only pays for record().
    total_ticks = int(seconds / tick)
    pool = [factory.make() for _ in range(min(per_tick * total_ticks, 4000))]
    threads = ThreadPool(1, 1, name="bench-recorder")
    service = RecorderService(
        [
            JSONLWriter(os.path.join(tmp, "service-jsonl")),
            SQLiteWriter(os.path.join(tmp, "service.db")),
        ],
        reactor,
        batch_size=batch_size,
        batch_interval_ms=batch_interval_ms,
        threadpool=threads,
    )
    result: dict[str, Any] = {
        "offered_rate": rate,
        "seconds": seconds,
        "history_kb": history_kb,
        "batch_size": batch_size,
        "batch_interval_ms": batch_interval_ms,
    }
    state: dict[str, Any] = {
        "ticks": 0, "offered": 0, "offered_events": 0, "max_depth": 0, "record_s": 0.0, "next": 0,
    }
    clock_ids: list[int] = []

    def reuse(exchange: Exchange, i: int) -> Exchange:
        # A new identity for a pooled exchange (the writer may still hold
        # the old one; the fields it reads are replaced, not mutated).
        clone = Exchange(**{f: getattr(exchange, f) for f in exchange.__dataclass_fields__})
        clone.request_id = str(uuid.uuid4())
        clone.session_id = "long-session" if i % 2 == 0 else short_session(i // 2)
        return clone

    def offer() -> None:
        if state["ticks"] >= total_ticks:
            loop.stop()
            return
        state["ticks"] += 1
        batch = []
        for _ in range(per_tick):
            batch.append(reuse(pool[state["next"] % len(pool)], state["next"]))
            state["next"] += 1
        t0 = time.perf_counter()
        for exchange in batch:
            service.record(exchange)
        state["record_s"] += time.perf_counter() - t0
        state["offered"] += per_tick
        state["offered_events"] += sum(event_count(e) for e in batch)
        state["max_depth"] = max(state["max_depth"], service.queue_depth)

    loop = task.LoopingCall(offer)

    def writer_cpu() -> float:
        return time.clock_gettime(clock_ids[0]) if clock_ids else 0.0

    def run() -> Any:
        threads.start()
        threads.callInThread(lambda: clock_ids.append(time.pthread_getcpuclockid(threading.get_ident())))
        service.startService()
        start = time.perf_counter()
        cpu0 = {"reactor": time.thread_time(), "writer": writer_cpu(), "process": time.process_time()}
        d = loop.start(tick, now=False)

        def drained(_: Any) -> Any:
            stopped = time.perf_counter()
            result["offer_seconds"] = stopped - start
            done: Deferred[None] = Deferred()
            marks: dict[str, float] = {}

            def poll() -> None:
                now = time.perf_counter()
                if "queue_empty_ms" not in marks and service.queue_depth == 0:
                    marks["queue_empty_ms"] = (now - stopped) * 1000
                accepted = state["offered_events"] - service.dropped_events
                if service.written_events >= accepted or now - stopped > 60:
                    marks["all_written_ms"] = (now - stopped) * 1000
                    result.update(marks)
                    done.callback(None)
                else:
                    reactor.callLater(0.002, poll)

            poll()
            return done

        def stop(_: Any) -> Any:
            result["cpu_s"] = {
                "reactor": time.thread_time() - cpu0["reactor"],
                "writer": writer_cpu() - cpu0["writer"],
                "process": time.process_time() - cpu0["process"],
            }
            t0 = time.perf_counter()
            stopping = service.stopService()

            def done(_: Any) -> None:
                result["stop_ms"] = (time.perf_counter() - t0) * 1000
                threads.stop()

            return stopping.addCallback(done)

        return d.addCallback(drained).addCallback(stop)

    d = run()
    d.addBoth(lambda r: (reactor.stop(), r)[1])
    guard = reactor.callLater(seconds + 120, reactor.stop)
    reactor.run()
    if guard.active():
        guard.cancel()
    written_exchanges = state["offered"] - sum(service.loss_counts().values())
    result.update(
        {
            "offered_exchanges": state["offered"],
            "achieved_offer_rate": state["offered"] / result.get("offer_seconds", seconds),
            "written_events": service.written_events,
            "dropped_events": service.dropped_events,
            "lost_exchanges": service.loss_counts(),
            "write_failures": service.write_failures,
            "max_queue_depth": state["max_depth"],
            "record_us_per_exchange": state["record_s"] / max(1, state["offered"]) * 1e6,
            "writer_cpu_us_per_exchange": result["cpu_s"]["writer"] / max(1, written_exchanges) * 1e6,
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
    parser.add_argument(
        "--shape-exchanges",
        type=int,
        default=None,
        help="exchanges of the long-session vs short-sessions runs (default 20000; --quick 4000)",
    )
    parser.add_argument("--history-kb", type=int, default=100, help="history size of the large requests")
    parser.add_argument("--rate", type=int, default=2100, help="exchanges/s offered to RecorderService")
    parser.add_argument("--service-seconds", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="RecorderService batch_size (events)")
    parser.add_argument("--batch-interval-ms", type=int, default=None)
    parser.add_argument("--skip-stages", action="store_true", help="only the shape and service runs")
    args = parser.parse_args(argv)
    import dataclasses

    from lunaroute.config import RecordingSettings

    # The configuration's defaults, unless told otherwise.
    defaults = {f.name: f.default for f in dataclasses.fields(RecordingSettings)}
    batch_size = args.batch_size or int(defaults["batch_size"])  # type: ignore[call-overload]
    interval = args.batch_interval_ms or int(defaults["batch_interval_ms"])  # type: ignore[call-overload]
    n = args.exchanges or (500 if args.quick else 3000)
    shape_n = args.shape_exchanges or (4000 if args.quick else 20000)
    seconds = args.service_seconds or (2.0 if args.quick else 5.0)

    tmp = tempfile.mkdtemp(prefix="lunaroute-recorder-bench-")
    results: dict[str, Any] = {}
    try:
        if not args.skip_stages:
            results["small"] = measure(0, n, tmp)
            results["large"] = measure(args.history_kb, max(100, n // 5), tmp)
        results["shapes"] = [
            shape_run("one-long-session", lambda i: "long-session", shape_n, tmp, batch_size),
            shape_run("1000-short-sessions", short_session, shape_n, tmp, batch_size),
        ]
        results["service"] = service_run(args.rate, seconds, tmp, 0, batch_size, interval)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    if not args.skip_stages:
        small, large = results["small"], results["large"]
        print(f"{small['events_per_exchange']} events per exchange (streamed thinking + text + 2 tool calls)")
        print(f"{'request':>16} | {'stage':>12} | {'exchanges/s':>12} | {'events/s':>10}")
        for label, res in (
            (f"{small['request_bytes'] // 1024} KB", small),
            (f"{large['request_bytes'] // 1024} KB", large),
        ):
            for stage in ("events_only", "jsonl_only", "sqlite_only", "combined"):
                r = res[stage]
                print(
                    f"{label:>16} | {stage:>12} | {r['exchanges_per_s']:>12.0f} | {r['events_per_s']:>10.0f}"
                )
    for shape in results["shapes"]:
        quarters = " / ".join(f"{q:.0f}" for q in shape["cpu_us_per_exchange_by_quarter"])
        print(
            f"{shape['label']}: {shape['exchanges']} exchanges (1 in 4 streaming), batches of "
            f"{shape['batch_events']} events: {shape['exchanges_per_s']:.0f} exchanges/s, "
            f"{shape['cpu_us_per_exchange']:.0f} us CPU per exchange (by quarter: {quarters})"
        )
    s = results["service"]
    print(
        f"RecorderService offered {s['offered_rate']}/s for {s['seconds']} s "
        f"({s['offered_exchanges']} exchanges, achieved {s['achieved_offer_rate']:.0f}/s, 1 in 4 streaming, "
        f"half in one session; batch_size {s['batch_size']}, {s['batch_interval_ms']} ms): "
        f"{s['written_events']} events written, {s['dropped_events']} dropped, "
        f"max queue {s['max_queue_depth']} events; after the load: queue empty in "
        f"{s.get('queue_empty_ms', float('nan')):.0f} ms, all written in "
        f"{s.get('all_written_ms', float('nan')):.0f} ms; writer thread "
        f"{s['writer_cpu_us_per_exchange']:.0f} us CPU per exchange; record() "
        f"{s['record_us_per_exchange']:.1f} us/exchange on the reactor"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
