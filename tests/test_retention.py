"""Tests for session retention (lunaroute.sessions.retention): plan, compression, database, service, CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_twisted
import zstandard
from test_session_events import NOON, build_exchange
from twisted.internet.task import Clock

from lunaroute.config import RetentionSettings, settings_from_mapping
from lunaroute.metrics import GatewayMetrics
from lunaroute.sessions import retention
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.importer import import_sessions
from lunaroute.sessions.jsonl import JSONLWriter, encode_event
from lunaroute.sessions.recorder import InlineThreadPool, RecorderService
from lunaroute.sessions.retention import (
    RetentionService,
    SessionFile,
    compress_file,
    plan_retention,
    read_session_bytes,
    run_database_phase,
    run_file_phase,
    scan_session_files,
)
from lunaroute.sessions.sqlite import SCHEMA_VERSION, SQLiteWriter
from lunaroute.sessions.store import SessionQueries
from lunaroute.testing.helpers import in_thread

DAY = 86_400.0
# "Now" for the plans and the Clock: 2026-01-10T00:00:00Z.
NOW = 1_768_003_200.0
GB = 1024**3
SERVER = shutil.which("lunaroute-server") or str(Path(sys.executable).with_name("lunaroute-server"))
REPO = Path(__file__).resolve().parent.parent


def dated(path: Path, age_days: float, now: float = NOW) -> Path:
    """Set a file's modification time C{age_days} before C{now}."""
    stamp = now - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def write_session(root: Path, session_id: str, n: int = 3, start: float = NOON, text: str = "weather") -> Path:
    """A session's JSONL file written by the real writer; returns its path."""
    writer = JSONLWriter(str(root))
    events = []
    for i in range(n):
        events += exchange_events(build_exchange(session_id, received=start + 10 * i, user_text=f"{text} {i}"))
    writer.write_batch(events)
    writer.close()
    (path,) = [p for p in root.rglob(f"session_{session_id}.jsonl")]
    return path


def lines_of(path: Path) -> list[bytes]:
    return read_session_bytes(path).splitlines()


# --------------------------------------------------------------------------
# The plan (pure)


def sf(name: str, age_days: float, size: int = 100, compressed: bool = False) -> SessionFile:
    suffix = ".jsonl.zst" if compressed else ".jsonl"
    return SessionFile(f"/s/2026-01-01/session_{name}{suffix}", size, NOW - age_days * DAY)


def test_plan_compresses_files_closed_for_long_enough_and_deletes_expired_ones() -> None:
    """compress_after_days and max_age_days by last write; compressed files are not compressed again."""
    files = [sf("fresh", 1), sf("week", 8), sf("done", 9, compressed=True), sf("old", 31), sf("oldzst", 40, compressed=True)]
    plan = plan_retention(files, RetentionSettings(), NOW)
    assert [(p.action, p.file.path.split("/")[-1], p.reason) for p in plan.actions] == [
        ("delete", "session_oldzst.jsonl.zst", "older than 30 days"),
        ("delete", "session_old.jsonl", "older than 30 days"),
        ("compress", "session_week.jsonl", "older than 7 days"),
    ]
    assert plan.bytes_deleted == 200 and plan.total_bytes == 500
    # Exactly at the limit is not older than it.
    assert plan_retention([sf("edge", 7)], RetentionSettings(), NOW).actions == ()


def test_plan_size_limit_deletes_oldest_first_and_never_an_open_file() -> None:
    """Beyond max_total_size_gb the oldest files go until the rest fits; files open for writing are skipped."""
    settings = RetentionSettings(max_total_size_gb=1.0, compress_after_days=100)
    files = [sf("a", 5, GB // 2), sf("b", 4, GB // 2), sf("c", 3, GB // 2), sf("d", 2, GB // 4)]
    plan = plan_retention(files, settings, NOW, open_paths={files[0].path})
    deleted = [p.file.path.split("/")[-1] for p in plan.to_delete]
    # a is open (kept, still counted): b and c go, leaving a + d = 0.75 GB.
    assert deleted == ["session_b.jsonl", "session_c.jsonl"]
    assert all(p.reason == "over 1 GB, oldest first" for p in plan.to_delete)
    assert [f.path for f in plan.in_use] == [files[0].path]
    # An open file is never compressed nor deleted for age either.
    old_open = sf("busy", 60)
    assert plan_retention([old_open], RetentionSettings(), NOW, open_paths={old_open.path}).actions == ()


# --------------------------------------------------------------------------
# Files


def test_old_files_are_compressed_atomically_and_read_back_the_same(tmp_path: Path) -> None:
    """A file past compress_after_days becomes .jsonl.zst (zstd level 3, same mtime); no temp file is left."""
    root = tmp_path / "sessions"
    path = write_session(root, "weekold", n=20)
    original = path.read_bytes()
    dated(path, 8)
    fresh = dated(write_session(root, "fresh", start=NOON + 3600), 1)
    # What a compression killed midway left: removed after a day.
    left_over = path.parent / ".retention-abc.zst.tmp"
    recent = path.parent / ".retention-def.zst.tmp"
    left_over.write_bytes(b"x")
    recent.write_bytes(b"y")
    dated(left_over, 2)
    dated(recent, 0.1)
    result = run_file_phase(str(root), RetentionSettings(), NOW)
    target = Path(str(path) + ".zst")
    assert not path.exists() and target.exists() and fresh.exists()
    assert result.compressed == [(str(path), len(original), target.stat().st_size)]
    assert target.stat().st_mtime == pytest.approx(NOW - 8 * DAY)
    assert read_session_bytes(target) == original
    assert zstandard.ZstdDecompressor().stream_reader(target.open("rb"), read_across_frames=True).read() == original
    frame = zstandard.get_frame_parameters(target.read_bytes())
    assert frame.has_checksum
    assert target.stat().st_size < len(original) / 3
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == [recent.name]
    assert result.bytes_freed == len(original) - target.stat().st_size


def test_a_file_open_for_writing_is_never_compressed_or_deleted(tmp_path: Path) -> None:
    """The writer's shared lock makes compress and delete skip the file until the writer lets it go."""
    root = tmp_path / "sessions"
    writer = JSONLWriter(str(root))
    writer.write_batch(exchange_events(build_exchange("live", received=NOON)))
    (path,) = root.rglob("*.jsonl")
    dated(path, 60)
    assert writer.open_paths() == {str(path)}
    result = run_file_phase(str(root), RetentionSettings(), NOW)
    assert result.in_use == [str(path)] and path.exists() and not result.deleted
    assert compress_file(str(path)) is None and path.exists()
    # Files written after the cutoff stay open; older ones are released.
    assert writer.release_files_written_before(NOW - 61 * DAY) == {str(path)}
    assert writer.release_files_written_before(NOW - 7 * DAY) == frozenset()
    done = compress_file(str(path))
    assert done is not None and not path.exists()
    # The session goes on: the writer starts the file again, and a second
    # compression appends a frame; both parts read back in order.
    writer.write_batch(exchange_events(build_exchange("live", received=NOON + 60)))
    writer.close()
    assert path.exists()
    assert compress_file(str(path)) is not None
    events = [json.loads(line) for line in lines_of(Path(str(path) + ".zst"))]
    assert len({e["request_id"] for e in events}) == 2
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)


def test_a_writer_appending_during_compression_loses_no_line(tmp_path: Path) -> None:
    """Compression on one thread, the writer appending to the same session on another: every line survives."""
    root = tmp_path / "sessions"
    path = write_session(root, "busy", n=400, text="x" * 2000)
    expected = set(path.read_bytes().splitlines())
    writer = JSONLWriter(str(root))
    # The writer knows the file (as after earlier batches) but has it closed.
    assert writer.path_for("busy", date.fromisoformat(path.parent.name)) == str(path)
    results: list[Any] = []

    writing = threading.Event()
    writing.set()

    def compress_repeatedly() -> None:
        # As often as it can while the writer works (it wins the lock when
        # the writer has just released the file).
        while writing.is_set():
            results.append(compress_file(str(path)) if path.exists() else None)

    worker = threading.Thread(target=compress_repeatedly)
    worker.start()
    for i in range(200):
        batch = exchange_events(build_exchange("busy", received=NOON + 10_000 + i, user_text=f"more {i}"))
        expected.update(encode_event(event).rstrip(b"\n") for event in batch)
        writer.write_batch(batch)
        if i % 10 == 0:
            writer.release_files_written_before(float("inf"))
    writing.clear()
    worker.join()
    writer.close()
    if path.exists():
        assert compress_file(str(path)) is not None
    assert not path.exists()
    found = lines_of(Path(str(path) + ".zst"))
    assert set(found) == expected
    assert len(found) == len(expected)


# --------------------------------------------------------------------------
# The database follows


def fill_database(db: Path, sessions: dict[str, float], n: int = 5, text: str = "tokyo ") -> SQLiteWriter:
    writer = SQLiteWriter(str(db))
    for session_id, start in sessions.items():
        events = []
        for i in range(n):
            events += exchange_events(
                build_exchange(session_id, received=start + 10 * i, user_text=(text * 2000) + f"{session_id} {i}")
            )
        writer.write_batch(events)
    return writer


def count(db: Path, sql: str, *args: Any) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("chunk", [200, 7])
def test_deleted_sessions_leave_no_row_and_no_search_entry_and_the_file_shrinks(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests of deleted files and sessions idle past max_age_days go from every table and the FTS index."""
    monkeypatch.setattr(retention, "DELETE_CHUNK", chunk)
    db = tmp_path / "sessions.db"
    old_start = NOW - 40 * DAY
    new_start = NOW - 1 * DAY
    sessions = {f"old{i}": old_start + i for i in range(20)} | {"kept": new_start, "partial": new_start + 5}
    writer = fill_database(db, sessions)
    ids = [r[0] for r in writer.connection().execute("SELECT request_id FROM session_stats WHERE session_id = 'partial'")]
    writer.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.stat().st_size
    assert count(db, "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'old3'") == 5
    assert count(db, "PRAGMA auto_vacuum") == 2  # new databases can shrink incrementally
    removed = run_database_phase(writer, ids[:2], RetentionSettings(), NOW)
    writer.close()
    assert removed["requests"] == 20 * 5 + 2 and removed["sessions"] == 20
    for table in ("sessions", "session_stats", "tool_call_executions", "stream_metrics"):
        assert count(db, f"SELECT COUNT(*) FROM {table} WHERE session_id LIKE 'old%'") == 0, table
    assert count(db, "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'old3'") == 0
    assert count(db, "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'tokyo'") == 8
    # The session that lost two requests is recomputed from the three left.
    assert count(db, "SELECT request_count FROM sessions WHERE session_id = 'partial'") == 3
    assert count(db, "SELECT request_count FROM sessions WHERE session_id = 'kept'") == 5
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    conn.close()
    assert removed["bytes_freed"] > 0
    assert db.stat().st_size < before * 0.5


def test_a_database_made_before_incremental_vacuum_is_converted_once(tmp_path: Path) -> None:
    """An older database (auto_vacuum off) gets one full VACUUM and is incremental afterwards."""
    db = tmp_path / "sessions.db"
    plain = sqlite3.connect(db)
    plain.execute("PRAGMA auto_vacuum = NONE")
    plain.execute("CREATE TABLE legacy (x)")
    plain.close()
    writer = fill_database(db, {"old": NOW - 40 * DAY, "new": NOW})
    assert count(db, "PRAGMA auto_vacuum") == 0
    before = db.stat().st_size + Path(str(db) + "-wal").stat().st_size
    removed = run_database_phase(writer, [], RetentionSettings(), NOW)
    writer.close()
    assert removed["sessions"] == 1
    assert count(db, "PRAGMA auto_vacuum") == 2
    assert db.stat().st_size < before


# --------------------------------------------------------------------------
# Readers of compressed files


def test_import_sessions_reads_compressed_and_plain_files(tmp_path: Path) -> None:
    """import-sessions rebuilds the same database from .jsonl.zst files as from .jsonl ones."""
    root = tmp_path / "sessions"
    write_session(root, "one", n=3)
    write_session(root, "two", n=2, start=NOON + 7200)
    plain_db = tmp_path / "plain.db"
    import_sessions(root, plain_db)
    for path in root.rglob("*.jsonl"):
        dated(path, 10)
    run_file_phase(str(root), RetentionSettings(), NOW)
    assert sorted(p.name for p in root.rglob("session_*")) == ["session_one.jsonl.zst", "session_two.jsonl.zst"]
    zst_db = tmp_path / "zst.db"
    report = import_sessions(root, zst_db)
    assert (report.files, report.sessions, report.requests, report.failed_lines) == (2, 2, 5, 0)
    query = "SELECT session_id, request_count, input_tokens, output_tokens FROM sessions ORDER BY session_id"
    assert sqlite3.connect(zst_db).execute(query).fetchall() == sqlite3.connect(plain_db).execute(query).fetchall()


def test_deleting_a_session_through_the_api_removes_its_compressed_file(tmp_path: Path) -> None:
    """The session API's delete (SessionQueries.delete_session) removes .jsonl.zst files too."""
    root = tmp_path / "sessions"
    path = write_session(root, "gone", n=2)
    db = tmp_path / "sessions.db"
    import_sessions(root, db)
    assert compress_file(str(path)) is not None
    write_session(root, "gone", n=1, start=NOON + 100)  # the session went on: a plain part too
    from lunaroute.sessions.sqlite import connect

    conn = connect(str(db))
    removed = SessionQueries(conn, str(root)).delete_session("gone")["removed"]
    conn.close()
    day = path.parent.name
    assert removed["jsonl_files"] == [f"{day}/session_gone.jsonl", f"{day}/session_gone.jsonl.zst"]
    assert list(root.rglob("session_gone*")) == []


def test_the_guides_zstdcat_recipe_reads_a_compressed_session(tmp_path: Path) -> None:
    """`zstdcat sessions/2024-12-01/session_abc123.jsonl.zst | jq` (guide, Tip 5) works on our files."""
    guide = (REPO / "docs" / "original" / "claude-code-guide.md").read_text()
    (recipe,) = re.findall(r"^zstdcat .*$", guide, re.M)
    assert recipe == "zstdcat sessions/2024-12-01/session_abc123.jsonl.zst | jq"
    root = tmp_path / "sessions"
    start = 1_733_054_400.0  # 2024-12-01T12:00:00Z
    path = write_session(root, "abc123", n=2, start=start)
    assert path.relative_to(tmp_path).as_posix() == "sessions/2024-12-01/session_abc123.jsonl"
    original = path.read_bytes()
    dated(path, 8)
    run_file_phase(str(root), RetentionSettings(), NOW)
    if shutil.which("zstdcat") is None or shutil.which("jq") is None:
        pytest.skip("zstdcat or jq is not installed (scripts/run-tests installs Debian's zstd)")
    out = subprocess.run(["sh", "-c", recipe], cwd=tmp_path, capture_output=True, timeout=60, check=True).stdout
    decoder = json.JSONDecoder()
    text, events, at = out.decode(), [], 0
    while at < len(text.rstrip()):
        value, at = decoder.raw_decode(text, at)
        events.append(value)
        while at < len(text) and text[at].isspace():
            at += 1
    assert events == [json.loads(line) for line in original.splitlines()]
    raw = subprocess.run(["zstdcat", str(path) + ".zst"], capture_output=True, timeout=60, check=True).stdout
    assert raw == original


# --------------------------------------------------------------------------
# The service


def recording_settings(root: Path, **retention: Any) -> Any:
    return settings_from_mapping(
        {
            "session_recording": {
                "enabled": True,
                "sessions_dir": str(root),
                "cleanup": {"retention": retention},
            }
        }
    ).session_recording


def test_the_service_runs_at_start_and_every_cleanup_interval(tmp_path: Path) -> None:
    """TimerService schedule on a Clock: a run at start, then one per cleanup_interval_minutes; metrics count."""
    root = tmp_path / "sessions"
    recording = recording_settings(root, cleanup_interval_minutes=30)
    clock = Clock()
    clock.advance(NOW)
    service = RetentionService(recording, recording.retention, clock, threadpool=InlineThreadPool())
    metrics = GatewayMetrics()
    metrics.bind_retention(service)
    first = dated(write_session(root, "first"), 8)
    service.startService()
    assert service.runs == 1 and Path(str(first) + ".zst").exists()
    second = dated(write_session(root, "second", start=NOON + 3600), 7.99, now=NOW)
    clock.advance(29 * 60)
    assert service.runs == 1 and second.exists()
    clock.advance(60)
    assert service.runs == 2 and not second.exists()
    assert service.files_compressed == 2 and service.errors == 0
    text = metrics.render()[0].decode()
    assert 'lunaroute_retention_files_total{action="compressed"} 2.0' in text
    assert "lunaroute_retention_runs_total 2.0" in text
    assert "lunaroute_retention_errors_total 0.0" in text
    assert service.last_report is not None and "compressed 1 file(s)" in service.last_report.summary()
    service.stopService()
    clock.advance(3600)
    assert service.runs == 2


def test_a_failing_run_is_counted_and_the_next_one_still_happens(tmp_path: Path, logged_failures: Any) -> None:
    """A broken database is logged and counted in /metrics; the schedule goes on."""
    root = tmp_path / "sessions"
    recording = recording_settings(root)
    root.mkdir()
    Path(recording.db_path).write_bytes(b"this is not a database" * 100)
    logged_failures.expect(sqlite3.DatabaseError)
    clock = Clock()
    clock.advance(NOW)
    service = RetentionService(recording, recording.retention, clock, threadpool=InlineThreadPool())
    metrics = GatewayMetrics()
    metrics.bind_retention(service)
    service.startService()
    assert service.runs == 1 and service.errors == 1
    clock.advance(3600)
    assert service.runs == 2 and service.errors == 2
    assert "lunaroute_retention_errors_total 2.0" in metrics.render()[0].decode()
    service.stopService()


def test_the_service_uses_the_recorders_writers_and_spares_open_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the gateway: idle handles are released, open ones spared; rows go on the writer's connection."""
    root = tmp_path / "sessions"
    recording = recording_settings(root, max_age_days=30)
    clock = Clock()
    clock.advance(NOW)
    jsonl = JSONLWriter(str(root))
    sqlite_writer = SQLiteWriter(recording.db_path)
    recorder = RecorderService([jsonl, sqlite_writer], clock, threadpool=InlineThreadPool())
    old = exchange_events(build_exchange("old", received=NOW - 45 * DAY))
    old += exchange_events(build_exchange("old", received=NOW - 45 * DAY + 5))
    idle = exchange_events(build_exchange("idle", received=NOW - 10 * DAY))
    live = exchange_events(build_exchange("live", received=NOW - 60))
    for events in (old, idle, live):
        jsonl.write_batch(events)
        sqlite_writer.write_batch(events)
    paths = {p.name.split("_", 1)[1].split(".")[0]: p for p in root.rglob("*.jsonl")}
    dated(paths["old"], 45)
    dated(paths["idle"], 10)
    service = RetentionService(recording, recording.retention, clock, recorder=recorder, threadpool=InlineThreadPool())
    # Deletions go to the writers' thread one chunk per call, so recording
    # batches run in between.
    calls: list[str] = []
    real_call = recorder.call_in_writer_thread

    def spy(fn: Any, *args: Any) -> Any:
        calls.append(fn.__name__)
        return real_call(fn, *args)

    recorder.call_in_writer_thread = spy  # type: ignore[method-assign]
    monkeypatch.setattr(retention, "DELETE_CHUNK", 1)
    report = service.run_once().result
    assert calls == [
        "release_files_written_before", "request_ids_idle_before", "delete_requests", "delete_requests", "reclaim_space"
    ]
    assert not paths["old"].exists() and not Path(str(paths["old"]) + ".zst").exists()
    assert Path(str(paths["idle"]) + ".zst").exists() and not paths["idle"].exists()
    assert paths["live"].exists()
    assert jsonl.open_paths() == {str(paths["live"])}
    assert (report.requests_deleted, report.sessions_deleted) == (2, 1)
    assert [r[0] for r in sqlite_writer.connection().execute("SELECT session_id FROM sessions ORDER BY 1")] == [
        "idle", "live"
    ]
    # The idle session goes on after compression: a new plain file, nothing lost.
    more = exchange_events(build_exchange("idle", received=NOW))
    jsonl.write_batch(more)
    jsonl.close()
    sqlite_writer.close()
    assert paths["idle"].exists()


# --------------------------------------------------------------------------
# lunaroute-server cleanup


def cleanup(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNAROUTE_")}
    return subprocess.run(
        [SERVER, "cleanup", "--config", str(config), *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.skipif(not Path(SERVER).exists(), reason="lunaroute-server is not installed")
def test_cleanup_command_dry_run_changes_nothing_then_the_real_run_does_it(tmp_path: Path) -> None:
    """`lunaroute-server cleanup --dry-run` lists what would go and the space; without it, it happens."""
    root = tmp_path / "sessions"
    now = time.time()
    old = dated(write_session(root, "expired", n=4, start=now - 40 * DAY), 40, now)
    week = dated(write_session(root, "weekold", n=4, start=now - 9 * DAY), 9, now)
    fresh = write_session(root, "fresh", n=1, start=now - 60)
    import_sessions(root, root / "sessions.db")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"session_recording:\n  enabled: true\n  sessions_dir: {root}\n"
        "  cleanup:\n    retention:\n      max_age_days: 30\n"
    )
    def state() -> dict[Path, tuple[int, bytes]]:
        # SQLite's -wal/-shm files come and go with any reader.
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()
                and not p.name.endswith(("-wal", "-shm"))}

    snapshot = state()
    dry = cleanup(config, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout
    assert "policy: compress after 7 day(s), delete after 30 day(s) or beyond 10 GB (oldest first)" in out
    assert re.search(rf"^delete\s+{old.parent.name}/session_expired.jsonl\s+\S+ \S+\s+\(older than 30 days\)$", out, re.M)
    assert re.search(rf"^compress\s+{week.parent.name}/session_weekold.jsonl\s+.*\(older than 7 days\)$", out, re.M)
    assert "fresh" not in out.split("policy:")[1].split("\n", 2)[2]
    assert re.search(
        r"dry run, nothing changed: would compress 1 file\(s\) \(.+\), delete 1 file\(s\) \(.+\) and 4 request\(s\) "
        r"of 1 session\(s\) from the database; would free \d", out
    )
    assert state() == snapshot
    real = cleanup(config)
    assert real.returncode == 0, real.stderr
    assert not old.exists() and not week.exists() and fresh.exists()
    assert Path(str(week) + ".zst").exists()
    assert re.search(
        r"compressed 1 file\(s\), deleted 1 file\(s\), removed 4 request\(s\) and 1 session\(s\) from the database; "
        r"freed \d", real.stdout
    )
    assert count(root / "sessions.db", "SELECT COUNT(*) FROM sessions") == 2
    again = cleanup(config)
    assert "compressed 0 file(s), deleted 0 file(s)" in again.stdout


@pytest.mark.skipif(not Path(SERVER).exists(), reason="lunaroute-server is not installed")
def test_cleanup_command_bad_config_is_one_line(tmp_path: Path) -> None:
    """A bad retention value: one line naming the key, status 1, no traceback."""
    config = tmp_path / "config.yaml"
    config.write_text("session_recording:\n  jsonl:\n    retention:\n      max_age_days: 0\n")
    run = cleanup(config, "--dry-run")
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "lunaroute-server: configuration error: session_recording.jsonl.retention.max_age_days: must be at least 1, got 0"
    )


def test_scan_lists_plain_and_compressed_files_in_reading_order(tmp_path: Path) -> None:
    """A session's compressed part is read before its plain part; other files are ignored."""
    day = tmp_path / "2026-01-01"
    day.mkdir()
    for name in ("session_b.jsonl", "session_a.jsonl", "session_a.jsonl.zst", "notes.txt", ".retention-x.zst.tmp"):
        (day / name).write_bytes(b"")
    assert [Path(f.path).name for f in scan_session_files(tmp_path)] == [
        "session_a.jsonl.zst", "session_a.jsonl", "session_b.jsonl"
    ]
    assert retention.human_bytes(1536) == "1.5 KB" and retention.human_bytes(12) == "12 bytes"


def test_the_gateway_runs_retention_only_when_configured_and_stops_it_before_the_recorder(tmp_path: Path) -> None:
    """GatewayService: a RetentionService child (its interval from the config) before the recorder in the stop order."""
    from twisted.internet import reactor

    from lunaroute.service import make_gateway_service

    base = {"providers": {"anthropic": {"base_url": "http://127.0.0.1:9"}}, "port": 0}
    recording = {"enabled": True, "sessions_dir": str(tmp_path / "s")}
    plain = make_gateway_service(settings_from_mapping({**base, "session_recording": recording}, env={}), reactor)
    assert plain.retention is None and "lunaroute_retention_runs_total" not in plain.metrics.render()[0].decode()
    configured = {**recording, "jsonl": {"retention": {"cleanup_interval_minutes": 15}}}
    gateway = make_gateway_service(settings_from_mapping({**base, "session_recording": configured}, env={}), reactor)
    assert isinstance(gateway.retention, RetentionService) and gateway.retention.step == 15 * 60
    assert gateway.retention.parent is gateway
    assert gateway.drained_services == [gateway.retention, gateway.recorder]
    assert "lunaroute_retention_runs_total 0.0" in gateway.metrics.render()[0].decode()


@pytest_twisted.ensureDeferred
async def test_a_running_gateway_compresses_an_idle_session_and_still_serves_it(fake, start_gateway, tmp_path: Path) -> None:
    """Real gateway: a session recorded, left idle past compress_after_days, is compressed; API and import read it."""
    from twisted.logger import formatEvent, globalLogPublisher

    root = tmp_path / "sessions"
    stale = dated(write_session(root, "stale", n=1, start=time.time() - 9 * DAY), 9, time.time())
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        gw = await start_gateway(
            fake,
            session_recording={"enabled": True, "sessions_dir": str(root), "jsonl": {"retention": {}}},
        )
        service = gw.service.retention
        await service.run_once()  # the start-up run
        assert Path(str(stale) + ".zst").exists() and not stale.exists()
        await in_thread(
            gw.anthropic().messages.create, model="claude-sonnet-4", max_tokens=20,
            messages=[{"role": "user", "content": "hello"}], extra_headers={"x-session-id": "live-one"},
        )
        await gw.service.recorder.flush()
        (live,) = root.rglob("session_live-one.jsonl")
        assert gw.service.recorder.writer("jsonl").open_paths() == {str(live)}
        # Eight days later (by its date), the writer lets it go and it is compressed.
        dated(live, 8, time.time())
        report = await service.run_once()
        assert report is not None and [Path(p).name for p, _, _ in report.files.compressed] == ["session_live-one.jsonl"]
        response = await in_thread(httpx.get, gw.url + "/sessions/live-one", timeout=10)
        assert response.status_code == 200 and response.json()["request_count"] == 1
        metrics = (await in_thread(httpx.get, gw.url + "/metrics", timeout=10)).text
        assert 'lunaroute_retention_files_total{action="compressed"} 2.0' in metrics
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "lunaroute.sessions.retention"]
    assert any(line.startswith("session retention: compressed 1 file(s), deleted 0 file(s)") for line in lines), lines
    rebuilt = tmp_path / "rebuilt.db"
    report_import = import_sessions(root, rebuilt)
    assert (report_import.files, report_import.sessions, report_import.failed_lines) == (2, 2, 0)


def test_the_size_limit_is_checked_again_after_compressing(tmp_path: Path) -> None:
    """A file the first plan would delete for size is kept when compressing brings the total under the limit."""
    root = tmp_path / "sessions"
    old = dated(write_session(root, "old", n=30, text="lorem ipsum " * 50), 8)
    new = dated(write_session(root, "new", n=10, start=NOON + 7200, text="dolor sit " * 50), 1)
    total = old.stat().st_size + new.stat().st_size
    settings = RetentionSettings(max_total_size_gb=(new.stat().st_size + old.stat().st_size // 3) / GB)
    first = plan_retention(scan_session_files(root), settings, NOW)
    assert [(p.action, p.rule, Path(p.file.path).name) for p in first.actions] == [
        ("delete", "size", "session_old.jsonl")
    ]
    assert first.total_bytes == total
    result = run_file_phase(str(root), settings, NOW)
    assert [Path(p).name for p, _, _ in result.compressed] == ["session_old.jsonl"] and result.deleted == []
    # Tighter: even compressed, the oldest has to go.
    tight = RetentionSettings(max_total_size_gb=new.stat().st_size / GB)
    result = run_file_phase(str(root), tight, NOW)
    assert [(Path(p).name, reason) for p, _, reason in result.deleted] == [
        ("session_old.jsonl.zst", f"over {tight.max_total_size_gb:g} GB, oldest first")
    ]
    assert result.requests == {"old": {r for r in result.requests["old"]}} and len(result.requests["old"]) == 30
    assert new.exists()


def test_cleanup_dry_run_shows_the_size_limit_before_compression(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_cleanup --dry-run: compressions, then size deletions marked as computed before compression."""
    import argparse
    import io

    root = tmp_path / "sessions"
    old = dated(write_session(root, "old", n=30, text="lorem ipsum " * 50), 8)
    new = dated(write_session(root, "new", n=10, start=NOON + 7200, text="dolor sit " * 50), 1)
    limit_mb = (new.stat().st_size + old.stat().st_size // 3) / 1024 / 1024
    config = tmp_path / "c.yaml"
    config.write_text(
        f"session_recording:\n  sessions_dir: {root}\n  sqlite: false\n"
        f"  cleanup:\n    retention:\n      max_size_mb: {limit_mb}\n"
    )
    monkeypatch.delenv("LUNAROUTE_CONFIG", raising=False)
    out = io.StringIO()
    args = argparse.Namespace(config=str(config), dry_run=True)
    assert retention.run_cleanup(args, out=out, now=NOW) == 0
    text = out.getvalue()
    assert re.search(r"^compress\s+\S+/session_old.jsonl\s.*\(older than 7 days\)$", text, re.M), text
    assert re.search(r"^delete\s+\S+/session_old.jsonl\s.*\(over .* GB, oldest first; before compression\)$", text, re.M)
    assert "(the size limit is checked again after compressing: fewer files may be deleted)" in text
    assert old.exists() and not Path(str(old) + ".zst").exists()
    out = io.StringIO()
    assert retention.run_cleanup(argparse.Namespace(config=str(config), dry_run=False), out=out, now=NOW) == 0
    assert "compressed 1 file(s), deleted 0 file(s)" in out.getvalue()
    assert Path(str(old) + ".zst").exists()


def test_cleanup_with_a_database_from_a_newer_lunaroute_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are still handled; the database is left alone, said in one line, exit status 1."""
    import argparse
    import io

    root = tmp_path / "sessions"
    dated(write_session(root, "weekold", n=2), 8)
    db = root / "sessions.db"
    writer = SQLiteWriter(str(db))
    writer.open()
    writer.connection().execute("PRAGMA user_version = 999")
    writer.close()
    config = tmp_path / "c.yaml"
    config.write_text(f"session_recording:\n  sessions_dir: {root}\n  cleanup:\n    retention: {{}}\n")
    monkeypatch.delenv("LUNAROUTE_CONFIG", raising=False)
    out = io.StringIO()
    assert retention.run_cleanup(argparse.Namespace(config=str(config), dry_run=False), out=out, now=NOW) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: database: database schema version 999 is newer than this LunaRoute understands ({SCHEMA_VERSION})"
    ]
    assert "compressed 1 file(s)" in out.getvalue() and "1 error(s)" in out.getvalue()


def test_an_idle_open_file_past_the_age_limit_is_let_go_and_deleted(tmp_path: Path) -> None:
    """compress_after_days above max_age_days: the writer still releases files idle past the age limit."""
    root = tmp_path / "sessions"
    recording = recording_settings(root, compress_after_days=60, max_age_days=30)
    clock = Clock()
    clock.advance(NOW)
    jsonl = JSONLWriter(str(root))
    recorder = RecorderService([jsonl], clock, threadpool=InlineThreadPool())
    jsonl.write_batch(exchange_events(build_exchange("idle", received=NOW - 45 * DAY)))
    (path,) = root.rglob("*.jsonl")
    dated(path, 45)
    service = RetentionService(recording, recording.retention, clock, recorder=recorder, threadpool=InlineThreadPool())
    report = service.run_once().result
    assert [Path(p).name for p, _, _ in report.files.deleted] == ["session_idle.jsonl"] and not path.exists()
    assert jsonl.open_paths() == frozenset()
    jsonl.close()
