"""
Session recording through the running gateway: SDK requests in, JSONL files
and SQLite rows out, never at the cost of the client's answer.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest_twisted
from zope.interface import implementer

from lunaroute.interfaces import ISessionWriter
from lunaroute.sessions.sqlite import SQLiteSessionStore
from lunaroute.testing.helpers import in_thread

SESSION = "7d3c3a5e-1f0b-4c59-9a55-2b1f7c1e9a01"
USER_ID = json.dumps({"device_id": "ab" * 32, "account_uuid": "", "session_id": SESSION})
CLIENT_KEY = "sk-ant-api03-verysecretclientkey-0042"


def _recording(tmp_path: Path) -> dict:
    return {"session_recording": {"enabled": True, "sessions_dir": str(tmp_path / "sessions")}}


def _jsonl_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "sessions").glob("*/session_*.jsonl"))


async def _two_turns(gw) -> None:
    client = gw.anthropic(api_key=CLIENT_KEY)
    await in_thread(
        client.messages.create, model="claude-sonnet-4", max_tokens=50,
        metadata={"user_id": USER_ID},
        messages=[{"role": "user", "content": "explain the zebra stripes"}],
    )

    def stream():
        with client.messages.stream(
            model="claude-sonnet-4", max_tokens=50, metadata={"user_id": USER_ID},
            messages=[
                {"role": "user", "content": "explain the zebra stripes"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "more"},
            ],
        ) as s:
            return s.get_final_message()

    await in_thread(stream)


@pytest_twisted.ensureDeferred
async def test_two_turns_of_one_session_land_in_one_file_and_one_row(fake, start_gateway, tmp_path):
    """Both turns of a Claude Code session go to one JSONL file and one sessions row, searchable."""
    gw = await start_gateway(fake, **_recording(tmp_path))
    await _two_turns(gw)
    await gw.service.stopService()

    files = _jsonl_files(tmp_path)
    assert [f.name for f in files] == [f"session_{SESSION}.jsonl"]
    events = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert {e["session_id"] for e in events} == {SESSION}
    finals = [e for e in events if e.get("final_stats")]
    assert len(finals) == 2
    total = sum(e["final_stats"]["tokens"]["total"] for e in finals)
    assert total > 0

    db = sqlite3.connect(tmp_path / "sessions" / "sessions.db")
    row = db.execute(
        "SELECT request_count, input_tokens, output_tokens, total_tokens, model_used, provider "
        "FROM sessions WHERE session_id = ?", (SESSION,)
    ).fetchone()
    assert row[0] == 2
    assert row[3] == row[1] + row[2] == total
    assert row[4] == "claude-sonnet-4" and row[5] == "anthropic"
    rows = db.execute(
        "SELECT * FROM sessions WHERE model_used = 'claude-sonnet-4' AND input_tokens > 10 "
        "ORDER BY started_at DESC"
    ).fetchall()
    assert len(rows) == 1

    store = SQLiteSessionStore(str(tmp_path / "sessions" / "sessions.db"))
    hits = store.search("月光", 10)
    assert [h["session_id"] for h in hits] == [SESSION]
    assert store.search("zebra", 10)


@pytest_twisted.ensureDeferred
async def test_secrets_never_reach_recordings(fake, start_gateway, tmp_path):
    """The client's API key appears nowhere in the JSONL files or the database."""
    gw = await start_gateway(fake, **_recording(tmp_path))
    await _two_turns(gw)
    await gw.service.stopService()
    for path in (tmp_path / "sessions").rglob("*"):
        if path.is_file():
            assert b"verysecretclientkey" not in path.read_bytes(), path


@implementer(ISessionWriter)
class BrokenWriter:
    name = "broken"

    def __init__(self):
        self.calls = 0

    def write_batch(self, events):
        self.calls += 1
        raise OSError(28, "No space left on device")

    def close(self):
        pass


@pytest_twisted.ensureDeferred
async def test_failing_writer_does_not_break_requests(fake, start_gateway, tmp_path, logged_failures):
    """A writer that raises (disk full) is counted; the SDK still gets its answer and JSONL still records."""
    logged_failures.expect(OSError)
    gw = await start_gateway(fake, **_recording(tmp_path))
    broken = BrokenWriter()
    gw.service.recorder.writers.insert(0, broken)
    client = gw.anthropic()
    message = await in_thread(
        client.messages.create, model="claude-sonnet-4", max_tokens=5,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert message.content[0].text == fake.reply_text
    await gw.service.stopService()
    assert broken.calls >= 1
    assert gw.service.recorder.write_failures >= 1
    assert _jsonl_files(tmp_path)


@pytest_twisted.ensureDeferred
async def test_graceful_stop_flushes_everything_accepted(fake, start_gateway, tmp_path):
    """Exchanges accepted just before stop are all on disk once stopService fires."""
    gw = await start_gateway(
        fake, session_recording={"enabled": True, "sessions_dir": str(tmp_path / "sessions"),
                                 "batch_interval_ms": 60000, "batch_size": 1000}
    )
    client = gw.openai()
    for i in range(5):
        await in_thread(
            client.chat.completions.create, model="gpt-4.1",
            messages=[{"role": "user", "content": f"q{i}"}],
            extra_headers={"x-session-id": "openai-session-1"},
        )
    assert gw.service.recorder.queue_depth > 0
    await gw.service.stopService()
    lines = _jsonl_files(tmp_path)[0].read_text().splitlines()
    assert len([line for line in lines if '"completed"' in line]) == 5
    db = sqlite3.connect(tmp_path / "sessions" / "sessions.db")
    assert db.execute("SELECT request_count FROM sessions WHERE session_id='openai-session-1'").fetchone()[0] == 5
