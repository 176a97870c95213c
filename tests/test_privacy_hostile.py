"""
Hostile inputs against PII redaction, retention and request modification:
every place a value can come in (prompt, system prompt, tool input, tool
result, the provider's answer, headers, the URL query) and every place it
could come out (files, every SQLite table, the API, the UI, /metrics).
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from lunaroute.config import PiiSettings, RetentionSettings, settings_from_mapping
from lunaroute.errors import ConfigError
from lunaroute.pii import (
    Detection,
    EmailDetector,
    PatternDetector,
    Redactor,
    redactor_from_settings,
    resolve_overlaps,
)
from lunaroute.pii.detectors import backtracking_risk
from lunaroute.proxy.reqlog import RequestLogPrinter
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.importer import import_sessions
from lunaroute.sessions.retention import run_file_phase
from lunaroute.sessions.sqlite import connect
from lunaroute.sessions.store import SessionQueries
from lunaroute.testing.exchanges import make_exchange
from lunaroute.testing.helpers import free_port

EMAIL = "mallory.leak@evil-corp.example"
PHONE = "+1 415 555 0199"
CARD = "4111 1111 1111 1111"
SSN = "219-09-9999"
IP = "203.0.113.77"
ANT = "sk-ant-api03-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0-PpOoNnMm"
AKIA = "AKIAIOSFODNN7EXAMPLE"
GHP = "ghp_R4nd0mT0k3nV4lu3Th4tL00ksR34l123456"
LEAKS = {
    "email": "mallory.leak",
    "phone": "555 0199",
    "card": "1111 1111 1111",
    "ssn": SSN,
    "ip": IP,
    "ant": "Zz9Yy8Xx7Ww6Vv5",
    "akia": AKIA,
    "ghp": "R4nd0mT0k3nV4lu3",
}
ALL = f"{EMAIL} {PHONE} {CARD} {SSN} {IP} {ANT} {AKIA} {GHP}"


def leaks_in(text: str) -> list[str]:
    return [name for name, leak in LEAKS.items() if leak in text]


async def fetch(url: str, **kwargs: Any) -> str:
    response = await treq.get(url, **kwargs)
    body: str = await response.text()
    assert response.code == 200, (url, response.code, body[:300])
    return body


def pii_config(sessions: Path, **pii: Any) -> dict[str, Any]:
    return {
        "session_recording": {
            "enabled": True,
            "sessions_dir": str(sessions),
            "pii": {"enabled": True, "redaction_mode": "tokenize", "hmac_secret": "qa-secret", **pii},
        },
    }


def hostile_body() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "system": f"You help {EMAIL}. Working directory: /home/{EMAIL}/proj",
        "metadata": {"user_id": "user_abc_account__session_11111111-2222-3333-4444-555555555555"},
        "tools": [{"name": "Bash", "description": f"run for {EMAIL}", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": f"My data: {ALL}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Running it."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": f"echo {ALL}"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": f"out: {ALL}"}],
            },
        ],
    }


@pytest.mark.parametrize(
    "mode",
    [{}, {"redaction_mode": "mask"}, {"redaction_mode": "remove"}, {"redaction_mode": "partial"},
     {"redaction_mode": "tokenize", "hmac_secret": None}],
    ids=["tokenize", "mask", "remove", "partial", "tokenize-without-secret"],
)
@pytest_twisted.ensureDeferred
async def test_pii_from_every_input_reaches_no_output(fake, start_gateway, tmp_path: Path, mode: dict[str, Any]) -> None:
    """Prompt, system, tool input/result, answer, headers and URL query: no value in any file, table, API or UI page."""
    sessions = tmp_path / "sessions"
    ui_port = free_port()
    fake.default_text = f"Sure, I will mail {EMAIL} and call {PHONE}; key {ANT}. "
    gw = await start_gateway(fake, **pii_config(sessions, **mode), ui={"enabled": True, "port": ui_port})
    session_id = "qa-hostile-session-1"
    response = await treq.post(
        gw.url + f"/v1/messages?note={EMAIL}&ip={IP}",
        data=json.dumps(hostile_body()).encode(),
        headers={
            "content-type": ["application/json"],
            "x-api-key": ["sk-ant-client-key-123456789"],
            "anthropic-version": ["2023-06-01"],
            "x-session-id": [session_id],
            "x-custom-note": [f"contact {EMAIL} {GHP}"],
            "user-agent": [f"claude-cli/2.0.0 (external, cli) {EMAIL}"],
        },
    )
    answer = await response.text()
    assert response.code == 200, answer
    assert EMAIL in answer  # the client's answer is untouched
    await gw.service.recorder.flush()

    seen: dict[str, str] = {}
    listed = json.loads(await fetch(gw.url + "/sessions"))
    session_id = listed["sessions"][0]["session_id"]
    for path in (
        "/sessions",
        f"/sessions/{session_id}",
        f"/sessions/{session_id}/timeline",
        f"/sessions/{session_id}/tools",
        f"/sessions/{session_id}/export?format=json",
        f"/sessions/{session_id}/export?format=jsonl",
        f"/sessions/{session_id}/export?format=html",
        f"/sessions/{session_id}/export?format=csv",
        "/api/search?q=claude",
        "/api/user-agents",
        "/api/sessions/recent",
        "/metrics",
    ):
        seen["api " + path] = await fetch(gw.url + path)
    timeline = json.loads(seen[f"api /sessions/{session_id}/timeline"])
    request_ids = {e["request_id"] for e in timeline["events"] if e.get("request_id")}
    assert request_ids
    ui = f"http://127.0.0.1:{ui_port}"
    for request_id in request_ids:
        seen["raw"] = await fetch(gw.url + f"/sessions/{session_id}/raw/{request_id}")
        seen["ui raw"] = await fetch(ui + f"/sessions/{session_id}/raw/{request_id}")
    for path in ("/", "/sessions", f"/sessions/{session_id}", f"/sessions/{session_id}/turns?start=0&count=50",
                 "/analytics", "/sessions.csv", "/sessions.json", "/sessions?text_search=EMAIL"):
        seen["ui " + path] = await fetch(ui + path)
    for where, body in seen.items():
        assert leaks_in(body) == [], (where, [body[max(0, body.find(LEAKS[k]) - 150): body.find(LEAKS[k]) + 60] for k in leaks_in(body)])

    await gw.service.stopService()
    files = [p for p in sessions.rglob("*") if p.is_file()]
    for path in files:
        assert leaks_in(path.read_bytes().decode("utf-8", "replace")) == [], path.name
    db = sqlite3.connect(sessions / "sessions.db")
    try:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in db.execute(f'SELECT * FROM "{table}"'):
                assert leaks_in(" ".join(str(cell) for cell in row)) == [], table
    finally:
        db.close()


def _redactor() -> Redactor:
    redactor = redactor_from_settings(PiiSettings(enabled=True))
    assert redactor is not None
    return redactor


def test_numbers_next_to_numbers_are_still_found() -> None:
    """A card right after a phone number, two cards in a row, a +1 number before another: all redacted whole."""
    redactor = _redactor()
    assert redactor.redact_text(ALL) == "[EMAIL] [PHONE] [SSN] [IP_ADDRESS] [API_KEY] [AWS_KEY] [GITHUB_TOKEN]"
    two = redactor.redact_text("cards 4111 1111 1111 1111 5555 5555 5555 4444 end")
    assert two == "cards [CREDIT_CARD] [CREDIT_CARD] end"
    assert redactor.redact_text("call +1 415 555 0199 and") == "call [PHONE] and"
    # Still not cards or phones: long ids and timestamps.
    assert redactor.redact_text("id 1700000000000 run 12345678901234567890") == "id 1700000000000 run 12345678901234567890"


def test_overlapping_detections_leave_nothing_behind() -> None:
    """Overlapping detections are redacted as one span covering them all, of the winner's kind."""
    spans = [Detection(0, 10, "A", 0.5), Detection(8, 14, "B", 0.9), Detection(20, 25, "C", 0.1)]
    assert resolve_overlaps(spans) == [Detection(0, 14, "A", 0.5), Detection(20, 25, "C", 0.1)]
    ticket = PatternDetector("ticket", r"TICKET-\d+-[a-z.]+", "TICKET")
    text = "see TICKET-7-mallory.leak@evil-corp.example now"
    out = Redactor([EmailDetector(), ticket]).redact_text(text)
    assert "mallory" not in out and "evil-corp" not in out and out.startswith("see [") and out.endswith("] now")


def test_the_request_log_redacts_the_url_query() -> None:
    """The request log's route line shows the path with the query string redacted."""
    exchange = make_exchange("session-1", 1_700_000_000.0, user_text="hi", answer="ok")
    exchange.path = f"/v1/messages?note={EMAIL}"
    out = io.StringIO()
    RequestLogPrinter(out, redactor=_redactor()).started(exchange)
    assert "mallory" not in out.getvalue() and "/v1/messages?note=[EMAIL]" in out.getvalue()
    events = exchange_events(exchange, redactor=_redactor())
    assert events[0]["path"] == "/v1/messages?note=[EMAIL]"


@pytest.mark.parametrize(
    "pattern",
    [r"(a+)+$", r"(a*)*b", r"(\w+\s?)*$", r"(.*a){20}", r"(a|a)*$", r"(\w|\d)+$", r"(?:x+)+", r"^(([a-z])+.)+[A-Z]"],
)
def test_a_catastrophic_custom_pattern_is_refused_at_start_up(pattern: str) -> None:
    """A custom pattern that could backtrack exponentially is a one-line config error, not a hung recorder."""
    raw = {"session_recording": {"pii": {"enabled": True, "custom_patterns": [{"name": "evil", "pattern": pattern}]}}}
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(raw)
    message = str(caught.value)
    assert "\n" not in message and "custom_patterns[0].pattern" in message and "backtrack" in message


@pytest.mark.parametrize(
    "pattern",
    [r"TICKET-\d+", r"(?:foo|bar)+", r"\b[A-Z]{2}\d{6}\b", r"(?i)secret-[a-z0-9]{8}", r"(?:\s|,)+x", r"EMP-(\d{4})-(\d{2})",
     r"(?<=id=)\w+", r"(ab){3}", r"sk-[a-zA-Z0-9]{32,}"],
)
def test_ordinary_custom_patterns_are_accepted(pattern: str) -> None:
    raw = {"session_recording": {"pii": {"enabled": True, "custom_patterns": [{"name": "ok", "pattern": pattern}]}}}
    assert settings_from_mapping(raw).session_recording.pii.custom_patterns[0].pattern == pattern
    assert backtracking_risk(pattern) is None


def test_captured_span_content_is_redacted_with_pii_on(tmp_path: Path) -> None:
    """telemetry.capture_content with PII on: the prompt and answer on the span are redacted; the service wires it."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from lunaroute.config import TelemetrySettings
    from lunaroute.service import make_gateway_service
    from lunaroute.telemetry import make_tracer

    exporter = InMemorySpanExporter()
    tracer = make_tracer(
        TelemetrySettings(enabled=True, service_name="qa", capture_content=True),
        {"anthropic": "anthropic"},
        SimpleSpanProcessor(exporter),
    )
    tracer.redactor = _redactor()
    exchange = make_exchange("session-1", 1_700_000_000.0, user_text=f"mail {EMAIL}", answer=f"call {PHONE} or {ANT}")
    exchange.client_ip = IP
    exchange.user_agent = f"curl/8 {EMAIL}"
    tracer.observe(exchange)
    attributes = [dict(span.attributes or {}) for span in exporter.get_finished_spans()]
    content = json.dumps(attributes)
    assert "gen_ai.input.messages" in content and "[EMAIL]" in content
    assert leaks_in(content) == []

    settings = settings_from_mapping(
        {
            "telemetry": {"enabled": True, "capture_content": True},
            "session_recording": {"enabled": True, "sessions_dir": str(tmp_path), "pii": {"enabled": True}},
        }
    )
    service = make_gateway_service(settings)
    assert service.tracer is not None and service.tracer.redactor is service.redactor is not None


@pytest_twisted.ensureDeferred
async def test_hostile_client_values_in_modification_templates(fake, start_gateway, tmp_path: Path) -> None:
    """A client-chosen model and session id holding ${env.HOME}, CRLF, '}' or unicode: filled once, no header injected."""
    gw = await start_gateway(
        fake,
        providers={
            "anthropic": {
                "base_url": fake.url,
                "request_headers": {"headers": {"X-Model": "m=${model}", "X-Session": "s=${session_id}"}},
                "request_body": {"overrides": {"metadata": {"user_id": "${model}|${session_id}"}}},
            }
        },
        session_recording={"enabled": True, "sessions_dir": str(tmp_path / "sessions")},
    )
    hostile_model = "claude-${env.HOME}}\r\nX-Injected: yes\r\n-ü🚀"
    body = {"model": hostile_model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    response = await treq.post(
        gw.url + "/v1/messages",
        data=json.dumps(body).encode(),
        headers={"content-type": ["application/json"], "x-api-key": ["sk-ant-client-key-123456789"],
                 "anthropic-version": ["2023-06-01"], "x-session-id": ["sess-${request_id}"]},
    )
    text = await response.text()
    assert response.code == 200, text
    (sent,) = [r for r in fake.requests if r.path == "/v1/messages"]
    headers = {str(k).lower(): v for k, v in sent.headers.items()}
    assert "x-injected" not in headers
    model_header = headers["x-model"]
    model_header = model_header if isinstance(model_header, str) else model_header[0]
    assert "\r" not in model_header and "\n" not in model_header
    assert model_header.startswith("m=claude-${env.HOME}}")  # never expanded
    assert "ü🚀" in model_header.encode("latin-1").decode("utf-8")  # sent as UTF-8 bytes
    forwarded = sent.json
    assert forwarded["model"] == hostile_model
    assert forwarded["metadata"]["user_id"].startswith(hostile_model + "|")
    assert "${" not in str(headers["x-session"])  # an id the gateway checked, never the raw header


# --------------------------------------------------------------------------
# Retention against a hostile sessions folder

RET_NOW = 1_768_003_200.0  # 2026-01-10T00:00:00Z
RET_DAY = 86_400.0


def _aged(path: Path, days: float) -> Path:
    stamp = RET_NOW - days * RET_DAY
    os.utime(path, (stamp, stamp), follow_symlinks=False)
    return path


def _session_lines(session_id: str, n: int = 2) -> bytes:
    return b"".join(
        json.dumps({"type": "completed", "session_id": session_id, "request_id": f"{session_id}-r{i}"}).encode() + b"\n"
        for i in range(n)
    )


def test_a_corrupt_compressed_file_is_still_deleted_and_import_goes_on(tmp_path: Path) -> None:
    """A damaged .jsonl.zst past max_age is deleted (not an error every run forever); import skips it, reports it."""
    root = tmp_path / "sessions"
    day = root / "2025-11-01"
    day.mkdir(parents=True)
    corrupt = _aged(day / "session_broken.jsonl.zst", 40) if (day / "session_broken.jsonl.zst").write_bytes(
        b"\x28\xb5\x2f\xfd not really zstd"
    ) else None
    good = day / "session_good.jsonl"
    good.write_bytes(_session_lines("good"))
    report = import_sessions(root, tmp_path / "import.db")
    assert report.sessions == 1 and report.requests == 2
    assert any("session_broken.jsonl.zst" in problem for problem in report.problems)
    result = run_file_phase(str(root), RetentionSettings(max_age_days=30), RET_NOW)
    assert corrupt is not None and not corrupt.exists()
    assert result.errors == [] and [path for path, _, _ in result.deleted] == [str(corrupt)]


def test_retention_never_follows_a_symlink_out_of_the_sessions_folder(tmp_path: Path) -> None:
    """Symlinked day folders, session files and .zst targets pointing outside: nothing outside is read, changed or deleted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "session_victim.jsonl"
    precious.write_bytes(_session_lines("victim"))
    _aged(precious, 60)
    secret = outside / "secret.txt"
    secret.write_bytes(b"top secret\n")
    root = tmp_path / "sessions"
    day = root / "2025-11-01"
    day.mkdir(parents=True)
    (root / "2025-10-01").symlink_to(outside, target_is_directory=True)
    link = day / "session_link.jsonl"
    link.symlink_to(precious)
    # A plain file whose .zst name is a symlink to a file outside.
    plain = day / "session_mixed.jsonl"
    plain.write_bytes(_session_lines("mixed"))
    _aged(plain, 10)
    (day / "session_mixed.jsonl.zst").symlink_to(secret)
    # Unrelated files are left alone, old or not.
    for name in ("notes.txt", "session_x.json", ".hidden", "session_y.jsonl.bak"):
        _aged(day / name, 90) if (day / name).write_bytes(b"keep") else None
    before = {p: p.read_bytes() for p in outside.iterdir()}

    result = run_file_phase(str(root), RetentionSettings(max_age_days=30, compress_after_days=7), RET_NOW)
    assert {p: p.read_bytes() for p in outside.iterdir()} == before
    assert plain.exists() and result.errors  # refused, reported, not read through the link
    assert all(b"top secret" not in p.read_bytes() for p in day.iterdir() if p.is_file() and not p.is_symlink())
    assert all((day / name).exists() for name in ("notes.txt", "session_x.json", ".hidden", "session_y.jsonl.bak"))

    # Deleting the victim's session through the API's delete: not through the symlinked folder.
    db = tmp_path / "sessions.db"
    import_sessions(outside, db)
    conn = connect(str(db))
    try:
        SessionQueries(conn, str(root)).delete_session("victim")
    finally:
        conn.close()
    assert precious.exists()


def test_files_dated_in_the_future_are_kept(tmp_path: Path) -> None:
    """Clock skew: a file dated tomorrow is neither compressed nor deleted, and is the last to go under size pressure."""
    root = tmp_path / "sessions"
    day = root / "2026-01-09"
    day.mkdir(parents=True)
    future = _aged(day / "session_future.jsonl", -3) if (day / "session_future.jsonl").write_bytes(b"x" * 600) else None
    old = _aged(day / "session_old.jsonl", 2) if (day / "session_old.jsonl").write_bytes(b"y" * 600) else None
    result = run_file_phase(str(root), RetentionSettings(max_total_size_gb=1000 / 1024**3), RET_NOW)
    assert future is not None and future.exists() and old is not None and not old.exists()
    assert [path for path, _, _ in result.deleted] == [str(old)]


def test_a_client_named_by_its_user_agent_is_redacted() -> None:
    """A user agent whose first word is an email: the recorded client name is redacted too."""
    exchange = make_exchange("session-1", 1_700_000_000.0, user_text="hi", answer="ok")
    exchange.user_agent = f"{EMAIL} curl-ish"
    started = exchange_events(exchange, redactor=_redactor())[0]
    assert started["client"] == "[EMAIL]" and started["user_agent"] == "[EMAIL] curl-ish"
    exchange.user_agent = "claude-cli/2.0.14 (external, cli)"
    assert exchange_events(exchange, redactor=_redactor())[0]["client"] == "Claude Code"


@pytest_twisted.ensureDeferred
async def test_pii_on_leaves_the_upstream_body_byte_for_byte_unless_applied(fake, start_gateway, tmp_path: Path) -> None:
    """Without apply_to_upstream the provider gets the client's exact bytes; with it, the redacted body, still valid JSON."""
    raw = (
        '{ "model" : "claude-sonnet-4-5", "max_tokens":8,\n "messages":[{"role":"user",'
        f'"content":"mail {EMAIL} \\u00e9 {ANT}"}}] }}'
    ).encode()
    headers = {"content-type": ["application/json"], "x-api-key": ["sk-ant-client-key-123456789"],
               "anthropic-version": ["2023-06-01"]}
    for apply in (False, True):
        gw = await start_gateway(fake, **pii_config(tmp_path / f"s{apply}", apply_to_upstream=apply))
        response = await treq.post(gw.url + "/v1/messages", data=raw, headers=headers)
        assert response.code == 200, await response.text()
        await response.content()
        sent = [r for r in fake.requests if r.path == "/v1/messages"][-1].body
        if apply:
            assert leaks_in(sent.decode()) == [] and "[EMAIL:" in json.loads(sent)["messages"][0]["content"]
        else:
            assert sent == raw


def test_an_empty_session_file_is_never_taken_from_a_writer(tmp_path: Path) -> None:
    """compress_file leaves an empty file (one a writer has just created) where it is."""
    from lunaroute.sessions.retention import compress_file

    day = tmp_path / "2026-01-01"
    day.mkdir()
    empty = day / "session_new.jsonl"
    empty.write_bytes(b"")
    assert compress_file(str(empty)) is None
    assert empty.exists() and not (day / "session_new.jsonl.zst").exists()
