"""
Hostile inputs against PII redaction, retention and request modification:
every place a value can come in (prompt, system prompt, tool input, tool
result, the provider's answer, headers, the URL query) and every place it
could come out (files, every SQLite table, the API, the UI, /metrics).
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from lunaroute.config import PiiSettings, settings_from_mapping
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


@pytest_twisted.ensureDeferred
async def test_pii_from_every_input_reaches_no_output(fake, start_gateway, tmp_path: Path) -> None:
    """Prompt, system, tool input/result, answer, headers and URL query: no value in any file, table, API or UI page."""
    sessions = tmp_path / "sessions"
    ui_port = free_port()
    fake.default_text = f"Sure, I will mail {EMAIL} and call {PHONE}; key {ANT}. "
    gw = await start_gateway(fake, **pii_config(sessions), ui={"enabled": True, "port": ui_port})
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
        "/api/search?q=EMAIL",
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
