"""
PII redaction end to end: the real Claude Code CLI (C{claude -p}) sends a
prompt holding an email address, a phone number, a card number and an
Anthropic key through a gateway with C{session_recording.pii} on.  None of
them reaches a JSONL file, the SQLite database (its full-text index
included), the session API or the UI; the answer Claude Code prints is
the provider's, unchanged; and the provider receives the prompt as typed,
unless C{apply_to_upstream} is on.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from test_session_api_live import mount_api
from test_websocket import _connect, _create
from twisted.logger import formatEvent, globalLogPublisher

from lunaroute.testing.clis import run_claude
from lunaroute.testing.helpers import free_port, in_thread

KEY = "sk-ant-api03-Qm7vXr2Lp9Tz4Wk8Hn3Bc6Df1Gj5Ks0Yd-AbCdEfGh"
PROMPT = (
    "Write to jane.roe@example.org or call +1 415 555 0132; "
    f"pay with 4242 4242 4242 4242 and use the key {KEY} please"
)
LEAKS = ("jane.roe", "example.org", "415 555 0132", "4242 4242", "Qm7vXr2Lp9Tz4Wk8")


def leaks_in(text: str) -> list[str]:
    return [leak for leak in LEAKS if leak in text]


def pii_settings(sessions: Path, **pii: Any) -> dict[str, Any]:
    return {
        "session_recording": {
            "enabled": True,
            "sessions_dir": str(sessions),
            "pii": {"enabled": True, "redaction_mode": "tokenize", "hmac_secret": "e2e-secret", **pii},
        },
    }


async def get_text(url: str) -> str:
    response = await treq.get(url)
    body: str = await response.text()
    assert response.code == 200, (url, body[:500])
    return body


@pytest_twisted.ensureDeferred
async def test_claude_code_prompt_is_redacted_everywhere_it_is_stored(fake, start_gateway, tmp_path: Path) -> None:
    """Files, database, search index, API and UI hold placeholders only; the answer and the upstream request are untouched."""
    sessions = tmp_path / "sessions"
    ui_port = free_port()
    gw = await start_gateway(
        fake,
        **pii_settings(sessions),
        ui={"enabled": True, "port": ui_port},
    )
    mount_api(gw)
    home = tmp_path / "home"
    home.mkdir()
    result = await in_thread(run_claude, gw.url, home, PROMPT)
    assert result.returncode == 0, result.stderr + result.stdout
    output = json.loads(result.stdout)
    assert output["result"] == fake.reply_text  # the client's answer is unchanged
    session_id = output["session_id"]
    # The provider got the prompt as typed: nothing forwarded is redacted.
    sent = "\n".join(r.body.decode("utf-8", "replace") for r in fake.requests if r.path == "/v1/messages")
    assert leaks_in(sent) == list(LEAKS)
    await gw.service.recorder.flush()

    # The session API and the UI read the store.
    api_pages = [
        f"/sessions/{session_id}",
        f"/sessions/{session_id}/timeline",
        f"/sessions/{session_id}/export?format=json",
        f"/sessions/{session_id}/export?format=html",
        "/sessions",
        "/api/search?q=EMAIL",
    ]
    seen = {path: await get_text(gw.url + path) for path in api_pages}
    timeline = json.loads(seen[f"/sessions/{session_id}/timeline"])
    request_ids = {e["request_id"] for e in timeline["events"] if e.get("request_id")}
    assert request_ids
    for request_id in request_ids:
        path = f"/sessions/{session_id}/raw/{request_id}"
        seen[path] = await get_text(gw.url + path)
    seen["ui"] = await get_text(f"http://127.0.0.1:{ui_port}/sessions/{session_id}")
    for path, body in seen.items():
        assert leaks_in(body) == [], path
    assert "[EMAIL:" in seen[f"/sessions/{session_id}/export?format=json"]
    assert json.loads(seen["/api/search?q=EMAIL"])["hits"], "the placeholders are what is indexed"
    assert json.loads(await get_text(gw.url + "/api/search?q=jane"))["hits"] == []
    metrics = await get_text(gw.url + "/metrics")
    assert 'lunaroute_pii_redactions_total{kind="EMAIL"}' in metrics
    assert 'lunaroute_pii_failures_total{where="record"} 0.0' in metrics

    await gw.service.stopService()
    files = [p for p in sessions.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and any(p.name == "sessions.db" for p in files)
    for path in files:
        assert leaks_in(path.read_bytes().decode("utf-8", "replace")) == [], path.name
    db = sqlite3.connect(sessions / "sessions.db")
    try:
        for word in ("jane", "roe", "Qm7vXr2Lp9Tz4Wk8Hn3Bc6Df1Gj5Ks0Yd"):
            query = "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?"
            assert db.execute(query, (f'"{word}"',)).fetchone() == (0,), word
        assert db.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'EMAIL'").fetchone()[0] >= 1
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in db.execute(f'SELECT * FROM "{table}"'):
                assert leaks_in(" ".join(str(cell) for cell in row)) == [], table
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_apply_to_upstream_sends_placeholders_to_the_provider(fake, start_gateway, tmp_path: Path) -> None:
    """With pii.apply_to_upstream the provider receives the redacted prompt; Claude Code still gets its answer."""
    gw = await start_gateway(fake, **pii_settings(tmp_path / "sessions", apply_to_upstream=True))
    home = tmp_path / "home"
    home.mkdir()
    result = await in_thread(run_claude, gw.url, home, PROMPT)
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["result"] == fake.reply_text
    sent = [r for r in fake.requests if r.path == "/v1/messages"]
    assert sent
    bodies = "\n".join(r.body.decode("utf-8", "replace") for r in sent)
    assert leaks_in(bodies) == []
    assert "[EMAIL:" in bodies and "[PHONE:" in bodies and "[CREDIT_CARD:" in bodies and "[API_KEY:" in bodies
    # Still a request the provider could parse, with Claude Code's session id.
    last = sent[-1].json
    assert last["messages"] and json.loads(last["metadata"]["user_id"])["session_id"]


@pytest_twisted.ensureDeferred
async def test_apply_to_upstream_covers_codex_websocket_turns(fake, start_gateway, tmp_path: Path) -> None:
    """A response.create frame over Codex's WebSocket is redacted before it goes to the provider too."""
    gw = await start_gateway(fake, **pii_settings(tmp_path / "sessions", apply_to_upstream=True))
    client = await _connect(gw.port)
    client.send_json(_create(text=PROMPT))
    await client.until("response.completed")
    client.sendClose()
    await client.closed
    sent = [r for r in fake.requests if r.path.endswith("/responses")]
    assert sent
    body = sent[-1].body.decode("utf-8")
    assert leaks_in(body) == [] and "[EMAIL:" in body and "[API_KEY:" in body


@pytest_twisted.ensureDeferred
async def test_tokenize_without_a_secret_warns_at_start_up(fake, start_gateway, tmp_path: Path) -> None:
    """redaction_mode tokenize without hmac_secret: one warning line, and values are masked."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        gw = await start_gateway(fake, session_recording={
            "enabled": True, "sessions_dir": str(tmp_path / "sessions"),
            "pii": {"enabled": True, "redaction_mode": "tokenize"},
        })
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if "hmac_secret" in formatEvent(e)]
    assert lines == [
        "PII redaction: on (tokenize, no hmac_secret: masking; records and request log)",
        "session_recording.pii: redaction_mode tokenize needs hmac_secret; without one, "
        "values are masked ([EMAIL]) instead of tokenized",
    ]
    assert [e.get("log_level").name for e in events if "needs hmac_secret" in formatEvent(e)] == ["warn"]
    assert gw.service.redactor.redact_text("a@b.co") == "[EMAIL]"
