"""
C{lunaroute-server import-sessions}: a database rebuilt from the JSONL files
the gateway recorded answers the same queries as the live one, and importing
twice changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from test_session_events import NOON, build_exchange  # tests/ is on sys.path under pytest

from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.importer import import_sessions
from lunaroute.sessions.jsonl import JSONLWriter
from lunaroute.sessions.sqlite import SQLiteSessionStore, SQLiteWriter
from lunaroute.testing.helpers import in_thread

SERVER = shutil.which("lunaroute-server") or str(Path(sys.executable).with_name("lunaroute-server"))

QUERIES = [
    "SELECT session_id, request_count, input_tokens, output_tokens, thinking_tokens, total_tokens, "
    "model_used, provider, success FROM sessions ORDER BY session_id",
    "SELECT request_id, session_id, input_tokens, output_tokens, status FROM session_stats ORDER BY request_id",
    "SELECT tool_call_id, tool_name FROM tool_call_executions ORDER BY tool_call_id",
]


def _snapshot(db_path: Path) -> list[list[tuple]]:
    conn = sqlite3.connect(db_path)
    return [conn.execute(q).fetchall() for q in QUERIES]


def _import(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNAROUTE_")}
    return subprocess.run(
        [SERVER, "import-sessions", *args], capture_output=True, text=True, timeout=120, env=env
    )


async def _record_some_sessions(fake, start_gateway, sessions: Path) -> None:
    gw = await start_gateway(fake, session_recording={"enabled": True, "sessions_dir": str(sessions)})
    claude = gw.anthropic()
    gpt = gw.openai()
    for i in range(3):
        await in_thread(
            claude.messages.create, model="claude-sonnet-4-tools", max_tokens=20,
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
            messages=[{"role": "user", "content": f"weather {i}"}],
            extra_headers={"x-session-id": "claude-session"},
        )
        await in_thread(
            gpt.chat.completions.create, model="gpt-4.1",
            messages=[{"role": "user", "content": f"question {i}"}],
            extra_headers={"x-session-id": f"gpt-session-{i}"},
        )
    await gw.service.stopService()


@pytest.mark.skipif(not Path(SERVER).exists(), reason="lunaroute-server is not installed")
@pytest_twisted.ensureDeferred
async def test_rebuilt_database_equals_the_live_one(fake, start_gateway, tmp_path):
    """The imported database has the same sessions, requests, tool calls and search results; twice is a no-op."""
    sessions = tmp_path / "sessions"
    await _record_some_sessions(fake, start_gateway, sessions)
    live = sessions / "sessions.db"
    rebuilt = tmp_path / "rebuilt.db"

    first = await in_thread(_import, "--sessions-dir", str(sessions), "--db-path", str(rebuilt))
    assert first.returncode == 0, first.stderr
    assert "6 requests (" in first.stdout and "in 4 sessions imported" in first.stdout
    assert "0 bad lines" in first.stdout
    assert _snapshot(rebuilt) == _snapshot(live)
    live_hits = [h["session_id"] for h in SQLiteSessionStore(str(live)).search("weather", 10)]
    rebuilt_hits = [h["session_id"] for h in SQLiteSessionStore(str(rebuilt)).search("weather", 10)]
    assert rebuilt_hits == live_hits == ["claude-session"]

    again = await in_thread(_import, "--sessions-dir", str(sessions), "--db-path", str(rebuilt))
    assert again.returncode == 0
    assert "0 requests (0 events) in 0 sessions imported" in again.stdout
    assert "6 requests (" in again.stdout  # all skipped as present
    assert _snapshot(rebuilt) == _snapshot(live)
    forced = await in_thread(
        _import, "--sessions-dir", str(sessions), "--db-path", str(rebuilt), "--no-skip-existing"
    )
    assert forced.returncode == 0
    assert _snapshot(rebuilt) == _snapshot(live)


@pytest.mark.skipif(not Path(SERVER).exists(), reason="lunaroute-server is not installed")
def test_bad_lines_are_reported_and_the_rest_imported(tmp_path):
    """A corrupt line is named with file and line number; the other events still land."""
    day = tmp_path / "sessions" / "2026-11-23"
    day.mkdir(parents=True)
    good = {
        "type": "started", "session_id": "s1", "request_id": "r1",
        "timestamp": "2026-11-23T10:00:00.000Z", "schema_version": 1,
        "model_requested": "claude-x", "provider": "anthropic",
    }
    path = day / "session_s1.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n")
    result = _import("--sessions-dir", str(tmp_path / "sessions"), "--db-path", str(tmp_path / "x.db"))
    assert result.returncode == 0
    assert f"{path}:2:" in result.stderr
    assert "1 bad lines" in result.stdout
    dry = _import("--sessions-dir", str(tmp_path / "sessions"), "--db-path", str(tmp_path / "y.db"), "--dry-run")
    assert dry.returncode == 0 and "dry run" in dry.stdout
    assert not (tmp_path / "y.db").exists()


def _request_ids(db_path: Path) -> list[str]:
    conn = sqlite3.connect(db_path)
    try:
        return [row[0] for row in conn.execute("SELECT request_id FROM session_stats ORDER BY request_id")]
    finally:
        conn.close()


def test_a_session_the_database_holds_in_part_is_completed(tmp_path):
    """After a crash the database has the first request of a session; the import adds the others, once."""
    sessions = tmp_path / "sessions"
    db_path = tmp_path / "sessions.db"
    exchanges = [
        build_exchange("crashed", request_id=f"req-{i}", received=NOON + i) for i in range(3)
    ] + [build_exchange("other", request_id="req-other", received=NOON + 5)]
    jsonl = JSONLWriter(str(sessions))
    live = SQLiteWriter(str(db_path))
    # The database saw the first request, then the gateway crashed (or its
    # disk filled): the JSONL file got everything.
    live.write_batch(exchange_events(exchanges[0]))
    live.close()
    for exchange in exchanges:
        jsonl.write_batch(exchange_events(exchange))
    jsonl.close()
    assert _request_ids(db_path) == ["req-0"]

    report = import_sessions(sessions, db_path)
    assert _request_ids(db_path) == ["req-0", "req-1", "req-2", "req-other"]
    assert (report.requests, report.skipped_requests, report.sessions) == (3, 1, 2)
    conn = sqlite3.connect(db_path)
    assert conn.execute(
        "SELECT request_count FROM sessions WHERE session_id = 'crashed'"
    ).fetchone() == (3,)
    conn.close()

    before = _snapshot(db_path)
    again = import_sessions(sessions, db_path)
    assert (again.requests, again.events, again.skipped_requests) == (0, 0, 4)
    assert _snapshot(db_path) == before
    forced = import_sessions(sessions, db_path, skip_existing=False)
    assert forced.requests == 4 and _snapshot(db_path) == before


def test_the_help_says_missing_requests_are_added():
    """The --skip-existing help talks about requests, not whole sessions."""
    from lunaroute.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["import-sessions"].format_help()
    assert "skip requests already in the database" in " ".join(text.split())
