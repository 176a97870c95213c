"""Tests for the recorder service (lunaroute.sessions.recorder)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_session_events import NOON, build_exchange, captured_summary
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from lunaroute.config import RecordingSettings
from lunaroute.errors import ConfigError
from lunaroute.interfaces import ISessionWriter
from lunaroute.metrics import GatewayMetrics
from lunaroute.sessions import recorder as recorder_module
from lunaroute.sessions.jsonl import JSONLWriter
from lunaroute.sessions.recorder import (
    InlineThreadPool,
    RecorderService,
    event_count,
    make_recorder,
    make_writers,
)
from lunaroute.sessions.sqlite import SQLiteWriter

TESTS_DIR = Path(__file__).parent


@implementer(ISessionWriter)
class ListWriter:
    """Keeps every batch in memory and notes the thread it ran on."""

    name = "list"

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.threads: set[int] = set()
        self.closed = False

    def write_batch(self, events: list[dict[str, Any]]) -> None:
        self.threads.add(threading.get_ident())
        self.batches.append(list(events))

    def close(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]


@implementer(ISessionWriter)
class BrokenWriter:
    """A writer whose disk is full."""

    name = "broken"

    def write_batch(self, events: list[dict[str, Any]]) -> None:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        raise OSError(28, "No space left on device")


def inline_recorder(*writers: Any, **kwargs: Any) -> tuple[RecorderService, Clock]:
    clock = Clock()
    service = RecorderService(list(writers), clock, threadpool=InlineThreadPool(), **kwargs)
    return service, clock


@pytest.fixture
def logged() -> Any:
    """Log events emitted while the test runs."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_nothing_is_written_before_the_interval() -> None:
    """record() only queues; the batch is written when the 100 ms timer fires."""
    writer = ListWriter()
    service, clock = inline_recorder(writer)
    service.startService()
    service.record(build_exchange())
    clock.advance(0.099)
    assert writer.batches == []
    assert service.queue_depth == 5
    clock.advance(0.001)
    assert [e["type"] for e in writer.events] == [
        "started", "request_recorded", "stream_started", "response_recorded", "completed",
    ]
    assert service.queue_depth == 0
    assert service.written_events == 5


def test_a_full_batch_is_flushed_soon_but_not_inside_record() -> None:
    """Reaching batch_size schedules a flush for the next reactor turn, not before."""
    writer = ListWriter()
    service, clock = inline_recorder(writer, batch_size=10)
    service.startService()
    service.record(build_exchange())
    service.record(build_exchange())
    assert writer.batches == []
    clock.advance(0)
    assert len(writer.batches) == 1 and len(writer.events) == 10


def test_batches_are_at_most_batch_size_events() -> None:
    """A burst is written in several batches of about batch_size events, in order."""
    writer = ListWriter()
    service, clock = inline_recorder(writer, batch_size=10)
    service.startService()
    exchanges = [build_exchange(received=NOON + i) for i in range(7)]
    for exchange in exchanges:
        service.record(exchange)
    for _ in range(5):
        clock.advance(0)
    assert [len(b) for b in writer.batches] == [10, 10, 10]
    clock.advance(0.1)  # the remainder waits for the timer
    assert [len(b) for b in writer.batches] == [10, 10, 10, 5]
    started = [e["request_id"] for e in writer.events if e["type"] == "started"]
    assert started == [x.request_id for x in exchanges]


def test_a_full_queue_drops_and_counts(logged: list[dict[str, Any]]) -> None:
    """Past max_queue_events new exchanges are dropped, counted, and warned about once."""
    writer = ListWriter()
    service, clock = inline_recorder(writer, max_queue_events=12)
    for _ in range(5):
        service.record(build_exchange())
    assert service.queue_depth == 10
    assert service.dropped_events == 15
    warnings = [e for e in logged if "queue is full" in e.get("log_format", "")]
    assert len(warnings) == 1
    clock.advance(20)
    service.record(build_exchange())
    assert len([e for e in logged if "queue is full" in e.get("log_format", "")]) == 2


def test_the_queue_is_bounded_by_bytes_too() -> None:
    """Huge request bodies cannot pile up beyond max_queue_bytes."""
    service, _ = inline_recorder(ListWriter(), max_queue_bytes=10_000)
    big = build_exchange()
    big.request_body = b"x" * 8_000
    service.record(big)  # the first always fits
    service.record(big)
    assert service.queue_depth == 5
    assert service.dropped_events == 5


def test_a_raising_writer_is_counted_and_others_still_write(
    logged: list[dict[str, Any]], logged_failures: Any
) -> None:
    """A writer that raises is logged and counted; the next writer gets the batch all the same."""
    logged_failures.expect(OSError)
    good = ListWriter()
    service, clock = inline_recorder(BrokenWriter(), good)
    service.startService()
    service.record(build_exchange())
    clock.advance(0.1)
    service.record(build_exchange())
    clock.advance(0.1)
    assert len(good.batches) == 2
    assert service.write_failures == 2
    assert service.write_failures_by_writer == {"broken": 2}
    assert service.written_events == 0
    assert any("broken" in str(e.get("writer")) for e in logged if e.get("log_failure"))
    assert service.running


def test_non_conversation_exchanges_are_not_recorded() -> None:
    """Token counting and model listing requests are left to metrics."""
    writer = ListWriter()
    service, clock = inline_recorder(writer)
    service.startService()
    service.record(build_exchange(kind="count_tokens"))
    clock.advance(0.1)
    assert writer.batches == [] and service.queue_depth == 0


def test_stop_drains_every_queued_event_and_closes_writers() -> None:
    """stopService writes the whole queue in several batches, closes the writers, then fires."""
    writer = ListWriter()
    service, clock = inline_recorder(writer, batch_size=10)
    service.startService()
    exchanges = [build_exchange(received=NOON + i) for i in range(23)]
    for exchange in exchanges:
        service.record(exchange)
    done = service.stopService()
    assert done.called
    assert len(writer.events) == 23 * 5
    assert writer.closed
    assert service.queue_depth == 0
    service.record(build_exchange())
    assert service.dropped_events == 5  # after stop nothing is accepted


def test_stop_without_start_still_writes_the_queue() -> None:
    """Exchanges recorded before the service started are written on stop."""
    writer = ListWriter()
    service, _ = inline_recorder(writer)
    service.record(build_exchange())
    assert service.stopService().called
    assert len(writer.events) == 5


def test_event_count_matches_the_events() -> None:
    """The queue's event estimate is exact, tool calls included."""
    from lunaroute.sessions.events import exchange_events

    for exchange in (
        build_exchange(),
        build_exchange(summary=captured_summary("anthropic_thinking_tools.sse", "anthropic")),
        build_exchange(status=None, streaming=False),
    ):
        assert event_count(exchange) == len(exchange_events(exchange))


def test_a_clock_without_threads_needs_an_inline_pool() -> None:
    """A fake clock with a real thread pool is refused at construction."""
    with pytest.raises(ValueError):
        RecorderService([ListWriter()], Clock())


def test_make_writers_and_make_recorder_follow_the_settings(tmp_path: Path) -> None:
    """jsonl/sqlite switches pick the writers; disabled recording gives no recorder."""
    settings = RecordingSettings(
        enabled=True,
        sessions_dir=str(tmp_path),
        jsonl_enabled=True,
        jsonl_dir=str(tmp_path / "jsonl"),
        sqlite_enabled=True,
        db_path=str(tmp_path / "sessions.db"),
        batch_size=7,
    )
    writers = make_writers(settings)
    assert [type(w) for w in writers] == [JSONLWriter, SQLiteWriter]
    recorder = make_recorder(settings, reactor)
    assert recorder is not None and recorder.batch_size == 7 and len(recorder.writers) == 2
    from dataclasses import replace

    assert make_recorder(replace(settings, enabled=False), reactor) is None
    assert make_recorder(replace(settings, jsonl_enabled=False, sqlite_enabled=False), reactor) is None


@pytest_twisted.inlineCallbacks
def test_real_thread_pool_writes_off_the_reactor_and_drains_on_stop(tmp_path: Path) -> Any:
    """With the real reactor, events are made and written in the recorder thread; stop leaves all on disk."""
    made_in: set[int] = set()
    original = recorder_module.exchange_events

    def spy(exchange: Any) -> Any:
        made_in.add(threading.get_ident())
        return original(exchange)

    recorder_module.exchange_events = spy
    try:
        spy_writer = ListWriter()
        jsonl = JSONLWriter(str(tmp_path / "jsonl"))
        db = tmp_path / "sessions.db"
        service = RecorderService([jsonl, SQLiteWriter(str(db)), spy_writer], reactor, batch_size=20)
        service.startService()
        for i in range(30):
            service.record(build_exchange(f"s{i % 3}", received=NOON + i))
        yield deferLater(reactor, 0.15, lambda: None)
        for i in range(30, 45):
            service.record(build_exchange(f"s{i % 3}", received=NOON + i))
        yield service.stopService()
    finally:
        recorder_module.exchange_events = original
    main = threading.get_ident()
    assert made_in and main not in made_in
    assert spy_writer.threads and main not in spy_writer.threads
    lines = [json.loads(line) for p in (tmp_path / "jsonl").rglob("*.jsonl") for line in p.read_bytes().splitlines()]
    assert len(lines) == 45 * 5
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*), SUM(request_count) FROM sessions").fetchone() == (3, 45)
    conn.close()
    assert service.written_events == 45 * 5


@pytest_twisted.inlineCallbacks
def test_a_stalled_disk_never_blocks_record(tmp_path: Path) -> Any:
    """While a write hangs, record() returns at once, batches do not overlap, and the excess is dropped."""
    release = threading.Event()
    active = [0]
    overlap = [False]

    @implementer(ISessionWriter)
    class StalledWriter(ListWriter):
        def write_batch(self, events: list[dict[str, Any]]) -> None:
            active[0] += 1
            overlap[0] = overlap[0] or active[0] > 1
            release.wait(5)
            super().write_batch(events)
            active[0] -= 1

    writer = StalledWriter()
    service = RecorderService([writer], reactor, batch_size=5, max_queue_events=50)
    service.startService()
    service.record(build_exchange())
    yield deferLater(reactor, 0.15, lambda: None)  # first batch now hangs in the thread
    for _ in range(20):
        service.record(build_exchange())
    assert service.queue_depth == 50
    assert service.dropped_events == 50
    release.set()
    yield service.stopService()
    assert not overlap[0]
    assert len(writer.events) == 55


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_session_events import NOON, build_exchange
    from lunaroute.sessions.events import exchange_events
    from lunaroute.sessions.jsonl import JSONLWriter
    from lunaroute.sessions.sqlite import SQLiteWriter

    root = sys.argv[1]
    writers = [JSONLWriter(root + "/jsonl"), SQLiteWriter(root + "/sessions.db")]
    i = 0
    while True:
        batch = []
        for _ in range(10):
            batch += exchange_events(build_exchange("s%d" % (i % 4), received=NOON + i))
            i += 1
        for writer in writers:
            writer.write_batch(batch)
        print(i, flush=True)
    """
)


def test_sigkill_leaves_whole_lines_and_a_consistent_database(tmp_path: Path) -> None:
    """A writer process killed mid-way leaves parseable JSONL and a database whose sessions match their requests."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent), str(TESTS_DIR)]))
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(TESTS_DIR)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=str(TESTS_DIR.parent),
    )
    try:
        assert child.stdout is not None
        written = 0
        while written < 150:
            line = child.stdout.readline()
            assert line, "writer process ended early"
            written = int(line)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    files = list((tmp_path / "jsonl").rglob("*.jsonl"))
    assert len(files) == 4
    total = 0
    for path in files:
        # Every complete line parses.  Only a kill inside the write() call
        # itself can leave a fragment after the last newline (the kernel
        # stops copying on SIGKILL); the next writer to open the file cuts
        # it off, as checked below.
        *complete, _tail = path.read_bytes().split(b"\n")
        total += len([json.loads(line) for line in complete])
    assert total >= 150 * 5
    restarted = JSONLWriter(str(tmp_path / "jsonl"))
    restarted.write_batch(
        [dict(type="started", session_id=f"s{k}", request_id="after", timestamp="2025-06-15T13:00:00.000Z")
         for k in range(4)]
    )
    restarted.close()
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n")
        assert json.loads(data.splitlines()[-1])["request_id"] == "after"
        for line in data.splitlines():
            json.loads(line)

    conn = sqlite3.connect(tmp_path / "sessions.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
        mismatched = conn.execute(
            """
            SELECT s.session_id FROM sessions AS s
            JOIN (SELECT session_id, COUNT(*) AS n, SUM(input_tokens) AS i, SUM(output_tokens) AS o
                  FROM session_stats GROUP BY session_id) AS r USING (session_id)
            WHERE s.request_count != r.n OR s.input_tokens != r.i OR s.output_tokens != r.o
            """
        ).fetchall()
        assert mismatched == []
        requests = conn.execute("SELECT COUNT(*) FROM session_stats").fetchone()[0]
        assert requests >= 150 and requests % 10 == 0  # whole batches only
        assert conn.execute("SELECT SUM(request_count) FROM sessions").fetchone()[0] == requests
    finally:
        conn.close()


# -- nothing is lost silently ---------------------------------------------------


def stop_line(logged: list[dict[str, Any]]) -> str:
    from twisted.logger import formatEvent

    lines = [formatEvent(e) for e in logged if "session recorder stopped" in e.get("log_format", "")]
    assert len(lines) == 1
    return lines[0]


def test_a_full_disk_counts_every_lost_exchange(logged: list[dict[str, Any]], logged_failures: Any) -> None:
    """ENOSPC from a writer: each exchange of the failed batches is counted as lost, and the stop line says so."""
    logged_failures.expect(OSError)
    good = ListWriter()
    service, clock = inline_recorder(BrokenWriter(), good)
    service.startService()
    for i in range(3):
        service.record(build_exchange(received=NOON + i))
    clock.advance(0.1)
    service.record(build_exchange(received=NOON + 5))
    clock.advance(0.1)
    lost = service.loss_counts()
    assert lost["disk_full:broken"] == 4
    assert lost["queue_full"] == 0 and lost["closed"] == 0
    assert lost["writer_error:list"] == 0 and lost["disk_full:list"] == 0
    service.stopService()
    line = stop_line(logged)
    assert "4 exchange(s) dropped (disk_full:broken 4)" in line
    assert "0 dropped" not in line


def test_losses_are_counted_per_reason_and_reported_on_stop(logged: list[dict[str, Any]], logged_failures: Any) -> None:
    """Queue overflow, a generic writer error and recording after stop each get their own reason."""
    logged_failures.expect(Exception)

    @implementer(ISessionWriter)
    class LockedWriter(ListWriter):
        name = "locked"

        def write_batch(self, events: list[dict[str, Any]]) -> None:
            raise sqlite3.OperationalError("database is locked")

    service, clock = inline_recorder(LockedWriter(), max_queue_events=10)
    service.startService()
    service.record(build_exchange())
    service.record(build_exchange())
    service.record(build_exchange())  # 15 events > 10: refused
    clock.advance(0.1)
    service.stopService()
    service.record(build_exchange())
    lost = service.loss_counts()
    assert {k: v for k, v in lost.items() if v} == {
        "queue_full": 1, "writer_error:locked": 2, "closed": 1,
    }
    assert "3 exchange(s) dropped (queue_full 1, writer_error:locked 2)" in stop_line(logged)


def test_sqlite_disk_full_is_reported_as_disk_full() -> None:
    """SQLite's SQLITE_FULL and the errno of a full disk or quota map to disk_full."""
    from lunaroute.sessions.recorder import loss_reason

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    assert loss_reason("sqlite", full) == "disk_full:sqlite"
    assert loss_reason("jsonl", OSError(errno.EDQUOT, "quota")) == "disk_full:jsonl"
    assert loss_reason("jsonl", OSError(errno.EACCES, "denied")) == "writer_error:jsonl"


def test_a_real_sqlite_disk_full_error_is_counted(tmp_path: Path, logged_failures: Any) -> None:
    """A database that cannot grow (max_page_count) raises SQLITE_FULL: counted as disk_full:sqlite."""
    logged_failures.expect(Exception)
    writer = SQLiteWriter(str(tmp_path / "full.db"))
    writer.open()
    conn = writer._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    service, clock = inline_recorder(writer)
    service.startService()
    service.record(build_exchange(user_text="x" * 100_000))
    clock.advance(0.1)
    assert service.loss_counts()["disk_full:sqlite"] == 1
    service.stopService()


def test_a_jsonl_file_write_failing_with_enospc_counts_only_its_exchanges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged_failures: Any
) -> None:
    """One session's file hits ENOSPC: its exchanges are lost (and counted), the other session's are written."""
    logged_failures.expect(OSError)
    from lunaroute.sessions import jsonl as jsonl_module

    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("session_full.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(jsonl_module.os, "write", write)
    writer = JSONLWriter(str(tmp_path))
    service, clock = inline_recorder(writer)
    service.startService()
    service.record(build_exchange("full", received=NOON))
    service.record(build_exchange("full", received=NOON + 1))
    service.record(build_exchange("fine", received=NOON + 2))
    clock.advance(0.1)
    service.stopService()
    assert service.loss_counts()["disk_full:jsonl"] == 2
    assert len((tmp_path / "2025-06-15" / "session_fine.jsonl").read_bytes().splitlines()) == 5
    assert (tmp_path / "2025-06-15" / "session_full.jsonl").read_bytes() == b""


def test_exchanges_that_cannot_become_events_are_counted(monkeypatch: pytest.MonkeyPatch, logged_failures: Any) -> None:
    """An exchange whose events cannot be made is lost under events_error; the rest of the batch is written."""
    logged_failures.expect(Exception)
    original = recorder_module.exchange_events

    def events(exchange: Any) -> Any:
        if exchange.session_id == "bad":
            raise ValueError("odd exchange")
        return original(exchange)

    monkeypatch.setattr(recorder_module, "exchange_events", events)
    writer = ListWriter()
    service, clock = inline_recorder(writer)
    service.startService()
    service.record(build_exchange("bad"))
    service.record(build_exchange("good"))
    clock.advance(0.1)
    assert service.loss_counts()["events_error"] == 1
    assert len(writer.events) == 5


def test_losses_are_in_metrics_by_reason(logged_failures: Any) -> None:
    """/metrics has lunaroute_recorder_lost_exchanges_total{reason}; the older families are still there."""
    logged_failures.expect(Exception)
    from prometheus_client.parser import text_string_to_metric_families

    service, clock = inline_recorder(BrokenWriter(), max_queue_events=10)
    metrics = GatewayMetrics()
    metrics.bind_recorder(service)
    service.startService()
    for _ in range(3):
        service.record(build_exchange())
    clock.advance(0.1)
    body, _ = metrics.render()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("lunaroute_recorder_lost_exchanges_total", (("reason", "disk_full:broken"),))] == 2
    assert samples[("lunaroute_recorder_lost_exchanges_total", (("reason", "queue_full"),))] == 1
    assert samples[("lunaroute_recorder_lost_exchanges_total", (("reason", "closed"),))] == 0
    assert samples[("lunaroute_recorder_dropped_events_total", ())] == 5
    assert ("lunaroute_recorder_write_failures_total", ()) in samples
    service.stopService()


# -- unusable paths stop the start-up -------------------------------------------


def recording_settings(tmp_path: Path, **changes: Any) -> RecordingSettings:
    from dataclasses import replace

    sessions = str(tmp_path / "sessions")
    settings = RecordingSettings(
        enabled=True,
        sessions_dir=sessions,
        jsonl_enabled=True,
        jsonl_dir=sessions,
        sqlite_enabled=True,
        db_path=os.path.join(sessions, "sessions.db"),
    )
    return replace(settings, **changes)


def test_an_uncreatable_sessions_dir_is_a_config_error(tmp_path: Path) -> None:
    """A sessions_dir under a regular file cannot be created: ConfigError naming the key."""
    (tmp_path / "afile").write_text("")
    bad = str(tmp_path / "afile" / "sessions")
    settings = recording_settings(tmp_path, sessions_dir=bad, jsonl_dir=bad, db_path=bad + "/sessions.db")
    with pytest.raises(ConfigError) as caught:
        make_recorder(settings, reactor)
    assert caught.value.key == "session_recording.sessions_dir"
    assert str(caught.value).startswith(f"session_recording.sessions_dir: cannot create '{bad}'")
    assert "\n" not in str(caught.value)


def test_each_writer_path_is_checked_under_its_own_key(tmp_path: Path) -> None:
    """A separate jsonl.directory or sqlite.path that cannot be used is named by its own key."""
    (tmp_path / "afile").write_text("")
    bad = str(tmp_path / "afile" / "x")
    with pytest.raises(ConfigError) as caught:
        make_recorder(recording_settings(tmp_path, jsonl_dir=bad), reactor)
    assert caught.value.key == "session_recording.jsonl.directory"
    with pytest.raises(ConfigError) as caught:
        make_recorder(recording_settings(tmp_path, db_path=bad + "/s.db"), reactor)
    assert caught.value.key == "session_recording.sqlite.path"
    # Only enabled writers are checked.
    assert make_recorder(recording_settings(tmp_path, db_path=bad + "/s.db", sqlite_enabled=False), reactor)


def test_a_database_path_that_is_no_database_is_a_config_error(tmp_path: Path) -> None:
    """A directory, or a file that is not SQLite, at the database path stops the start-up."""
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        make_recorder(recording_settings(tmp_path, db_path=str(tmp_path / "dir.db")), reactor)
    (tmp_path / "text.db").write_bytes(b"this is not a database, just some text long enough" * 100)
    with pytest.raises(ConfigError, match="session_recording.sqlite.path: cannot open"):
        make_recorder(recording_settings(tmp_path, db_path=str(tmp_path / "text.db")), reactor)


def test_usable_paths_are_created_and_left_clean(tmp_path: Path) -> None:
    """The check creates the folders and leaves no probe file behind."""
    settings = recording_settings(tmp_path)
    assert make_recorder(settings, reactor) is not None
    assert os.listdir(settings.sessions_dir) == []


TWISTD = shutil.which("twistd") or str(Path(sys.executable).with_name("twistd"))


@pytest.mark.skipif(not Path(TWISTD).exists(), reason="twistd is not installed")
def test_twistd_with_an_uncreatable_sessions_dir_exits_with_one_line(tmp_path: Path) -> None:
    """`twistd -n lunaroute` with recording on and a sessions dir under a file: exit != 0, one line, no traceback."""
    (tmp_path / "afile").write_text("")
    bad = tmp_path / "afile" / "sessions"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_"))}
    env.update(LUNAROUTE_ENABLE_SESSION_RECORDING="true", LUNAROUTE_SESSIONS_DIR=str(bad), LUNAROUTE_UI_PORT="0")
    result = subprocess.run(
        [TWISTD, "-n", "lunaroute", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert "Traceback" not in output
    assert output.splitlines() == [
        f"lunaroute: configuration error: session_recording.sessions_dir: cannot create '{bad}': Not a directory"
    ]


def test_listeners_hear_of_each_written_batch_after_it_is_written(logged_failures: Any) -> None:
    """add_listener: called once per batch, after the writers, with (session, request) ids; one that raises is logged."""
    writer = ListWriter()
    service, clock = inline_recorder(writer)
    heard: list[tuple[int, list[tuple[str, str]]]] = []
    service.add_listener(lambda written: heard.append((len(writer.batches), written)))

    def broken(written: list[tuple[str, str]]) -> None:
        raise RuntimeError("listener bug")

    logged_failures.expect(RuntimeError)
    service.add_listener(broken)
    service.startService()
    service.record(build_exchange("s-1", request_id="r-1"))
    service.record(build_exchange("s-2", request_id="r-2"))
    clock.advance(0.1)
    assert heard == [(1, [("s-1", "r-1"), ("s-2", "r-2")])]
    assert service.written_events == 10
    assert len(logged_failures.matching(RuntimeError)) == 1
    service.remove_listener(broken)
    assert len(service.listeners()) == 1
    service.record(build_exchange("s-1", request_id="r-3"))
    clock.advance(0.1)
    assert heard[-1] == (2, [("s-1", "r-3")])
