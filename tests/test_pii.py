"""
PII redaction (lunaroute.pii): the detectors' tables of true and false
positives, overlap resolution, each mode, tokenize stability, the JSON walk,
and where redaction is applied (recorded events, the SQLite store and its
full-text index, the request log, the metrics, the upstream body).
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from lunaroute.config import settings_from_mapping
from lunaroute.dialects.model import ResponseSummary, ToolCall, Usage
from lunaroute.interfaces import IDetector
from lunaroute.metrics import GatewayMetrics
from lunaroute.pii import (
    CreditCardDetector,
    Detection,
    EmailDetector,
    IpAddressDetector,
    PatternDetector,
    PhoneDetector,
    Redactor,
    SecretDetector,
    SsnDetector,
    find_spans,
    hkdf_sha256,
    luhn_valid,
    redact_json,
    redactor_from_settings,
    resolve_overlaps,
)
from lunaroute.pii.records import FAILED, RedactionFailed, redact_request_body
from lunaroute.proxy.reqlog import RequestLogPrinter
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.jsonl import JSONLWriter
from lunaroute.sessions.recorder import InlineThreadPool, RecorderService
from lunaroute.sessions.sqlite import SQLiteWriter
from lunaroute.testing.exchanges import make_exchange

ALL = [EmailDetector(), PhoneDetector(), SsnDetector(), CreditCardDetector(), IpAddressDetector(), SecretDetector()]

ANTHROPIC_KEY = "sk-ant-api03-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2
SECRETS_TEXT = (
    "Contact john.doe@example.com or +44 20 7946 0958, card 4111 1111 1111 1111, "
    f"SSN 123-45-6789, key {ANTHROPIC_KEY}, host 203.0.113.7"
)
# Fragments long enough not to turn up by chance in ids, timestamps or a
# database file's binary pages (four digits alone did, now and then).
LEAKS = ("john.doe", "example.com", "7946 0958", "4111 1111", "41111111", "45-6789", "sk-ant-", "203.0.113.7")


def found(detector: Any, text: str) -> list[str]:
    return [text[d.start : d.end] for d in detector.detect(text)]


def test_every_detector_provides_idetector() -> None:
    """Each built-in detector (and a custom pattern) implements IDetector."""
    for detector in [*ALL, PatternDetector("x", "x+", "X")]:
        assert verifyObject(IDetector, detector)


@pytest.mark.parametrize(
    ("detector", "text", "expected"),
    [
        # Email
        (EmailDetector(), "mail john.doe+tag@mail.example.co.uk now", ["john.doe+tag@mail.example.co.uk"]),
        (EmailDetector(), "(a_b@x.io).", ["a_b@x.io"]),
        (EmailDetector(), "@property and @types/node and icon@2x.png", []),
        (EmailDetector(), "user@localhost has no domain", []),
        # Phone: international forms and the North American one
        (PhoneDetector(), "call +44 20 7946 0958 today", ["+44 20 7946 0958"]),
        (PhoneDetector(), "call +1-555-123-4567 or +33 1 23 45 67 89", ["+1-555-123-4567", "+33 1 23 45 67 89"]),
        (PhoneDetector(), "(555) 123-4567 and 555.123.4567 and 555-123-4567", ["(555) 123-4567", "555.123.4567", "555-123-4567"]),
        # Phone-like numbers in code are not phones
        (PhoneDetector(), "version 1.2.3, date 2024-01-15, epoch 1700000000, port 8080", []),
        (PhoneDetector(), "id 550e8400-e29b-41d4-a716-446655440000 hex 0x5551234567", []),
        (PhoneDetector(), "x = 555-123-45678 and v555.123.4567 and 555-123-4567-89", []),
        (PhoneDetector(), "a + 12 and 3+4=7", []),
        # SSN validity rules
        (SsnDetector(), "SSN 123-45-6789 or 123 45 6789", ["123-45-6789", "123 45 6789"]),
        (SsnDetector(), "000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000", []),
        (SsnDetector(), "123-45 6789 (mixed) 1123-45-6789 123-45-67890", []),
        # Cards: Luhn and issuer
        (CreditCardDetector(), "visa 4111 1111 1111 1111 amex 3782-822463-10005", ["4111 1111 1111 1111", "3782-822463-10005"]),
        (CreditCardDetector(), "mc 5555555555554444 discover 6011111111111117", ["5555555555554444", "6011111111111117"]),
        (CreditCardDetector(), "bad luhn 4111 1111 1111 1112 and 5555555555554445", []),
        (CreditCardDetector(), "ms timestamp 1700000000000 and id 9999999999999995", []),
        # IPv4 and IPv6, not versions
        (IpAddressDetector(), "hosts 192.168.1.10, 8.8.8.8 and 10.0.0.255.", ["192.168.1.10", "8.8.8.8", "10.0.0.255"]),
        (IpAddressDetector(), "server 203.0.113.7:8080", ["203.0.113.7"]),
        (IpAddressDetector(), "v1.2.3.4 version 1.2.3.4 Version: 10.0.0.1 pkg==1.2.3.4 lib@1.2.3.4 ^1.2.3.4", []),
        (IpAddressDetector(), "256.1.1.1 1.2.3.4.5 01.02.03.04 1.2.3", []),
        (IpAddressDetector(), "v6 2001:db8::8a2e:370:7334 and ::1 and fe80::1", ["2001:db8::8a2e:370:7334", "::1", "fe80::1"]),
        (IpAddressDetector(), "std::vector Vec::new 12:34:56 00:1a:2b:3c:4d:5e a :: b", []),
        # Secrets by shape
        (SecretDetector(), f"key {ANTHROPIC_KEY}.", [ANTHROPIC_KEY]),
        (SecretDetector(), "sk-proj-abc123def456ghi789jkl012mno345pq AKIAIOSFODNN7EXAMPLE", ["sk-proj-abc123def456ghi789jkl012mno345pq", "AKIAIOSFODNN7EXAMPLE"]),
        (SecretDetector(), "sk-" + "T3BlbkFJ" * 6, ["sk-" + "T3BlbkFJ" * 6]),
        (SecretDetector(), 'b"sk-ssh-ed25519-cert-v01" and sk-ecdsa-sha2-nistp256-cert-v01', []),
        (SecretDetector(), "ghp_" + "a1" * 18 + " github_pat_11ABCDEFG0123456789_abcdefghij", ["ghp_" + "a1" * 18, "github_pat_11ABCDEFG0123456789_abcdefghij"]),
        (SecretDetector(), "task-abcdefghijklmnopqrstuvwxyz1234 sk-this-is-a-long-kebab-case-name AKIA1234", []),
    ],
)
def test_detector_tables(detector: Any, text: str, expected: list[str]) -> None:
    """True positives are found whole; false positives (versions, ids, code, bad checksums) are not."""
    assert found(detector, text) == expected


def test_a_private_key_block_is_one_detection() -> None:
    """A PEM private key block is found from BEGIN to END; a cut-off one as far as its key material goes."""
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nq83+/=\n-----END RSA PRIVATE KEY-----"
    assert found(SecretDetector(), f"x\n{block}\ny") == [block]
    cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA"
    assert found(SecretDetector(), cut) == [cut]
    assert found(SecretDetector(), "-----BEGIN PUBLIC KEY-----\nMIIB") == []


def test_luhn() -> None:
    """The Luhn check of known good and bad numbers."""
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_overlaps_longest_then_most_confident_wins() -> None:
    """Overlapping detections: one span covering them all, of the longest's kind, then the most confident's; disjoint ones are all kept."""
    spans = [
        Detection(0, 10, "A", 0.5),
        Detection(2, 12, "B", 0.9),  # same length as A, more confident
        Detection(3, 5, "C", 1.0),  # shorter, inside both
        Detection(20, 25, "D", 0.1),
    ]
    assert resolve_overlaps(spans) == [Detection(0, 12, "B", 0.9), Detection(20, 25, "D", 0.1)]
    card_and_phone = find_spans("pay 4111-1111-1111-1111 now", [CreditCardDetector(), PatternDetector("p", r"1111-1111", "P")])
    assert [s.kind for s in card_and_phone] == ["CREDIT_CARD"]


def test_min_confidence_filters() -> None:
    """Detections below min_confidence are left alone (a private IP has 0.6, a public one 0.9)."""
    text = "from 127.0.0.1 to 8.8.8.8"
    assert Redactor([IpAddressDetector()], min_confidence=0.8).redact_text(text) == "from 127.0.0.1 to [IP_ADDRESS]"
    assert Redactor([IpAddressDetector()]).redact_text(text) == "from [IP_ADDRESS] to [IP_ADDRESS]"


def test_each_mode() -> None:
    """mask, remove, partial and tokenize replace a value as documented."""
    text = "card 4111 1111 1111 1111 mail a@b.co"
    assert Redactor(ALL).redact_text(text) == "card [CREDIT_CARD] mail [EMAIL]"
    assert Redactor(ALL, mode="remove").redact_text(text) == "card  mail "
    assert Redactor(ALL, mode="partial").redact_text(text) == "card [CREDIT_CARD:…1111] mail [EMAIL]"
    assert Redactor(ALL, mode="partial", partial_show_chars=2).redact_text(text) == "card [CREDIT_CARD:…11] mail [EMAIL:…co]"
    tokenized = Redactor(ALL, mode="tokenize", hmac_secret="s3cret").redact_text(text)
    assert tokenized.startswith("card [CREDIT_CARD:") and "4111" not in tokenized and "a@b.co" not in tokenized
    token = tokenized.split("[EMAIL:")[1].rstrip("]")
    assert len(token) == 8 and int(token, 16) >= 0


def test_tokenize_is_stable_across_restarts_and_secret_bound() -> None:
    """Two redactors with the same secret (a restart) give the same token; another secret another one."""
    text = "My email is john.doe@example.com and SSN is 123-45-6789"
    first = Redactor(ALL, mode="tokenize", hmac_secret="k1").redact_text(text)
    again = Redactor(ALL, mode="tokenize", hmac_secret="k1").redact_text(text)
    other = Redactor(ALL, mode="tokenize", hmac_secret="k2").redact_text(text)
    assert first == again and first != other
    assert first.startswith("My email is [EMAIL:") and " and SSN is [SSN:" in first
    # Same value, same token, within a text too.
    twice = Redactor(ALL, mode="tokenize", hmac_secret="k1").redact_text("a@b.co and a@b.co")
    assert twice.split(" and ")[0] == twice.split(" and ")[1]


def test_tokenize_without_secret_masks() -> None:
    """Without hmac_secret, tokenize masks (and says so for the start-up warning)."""
    redactor = Redactor(ALL, mode="tokenize")
    assert redactor.tokenizes_without_secret
    assert redactor.redact_text("a@b.co") == "[EMAIL]"
    assert not Redactor(ALL, mode="tokenize", hmac_secret="x").tokenizes_without_secret


def test_hkdf_matches_rfc5869() -> None:
    """HKDF-SHA256 gives RFC 5869's test case 1 output."""
    okm = hkdf_sha256(bytes.fromhex("0b" * 22), bytes.fromhex("000102030405060708090a0b0c"),
                      bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_custom_patterns_from_settings() -> None:
    """The guide's custom patterns detect with their own mode and placeholder; the switches turn detectors off."""
    settings = settings_from_mapping({"session_recording": {"pii": {
        "enabled": True, "redaction_mode": "tokenize", "hmac_secret": "s", "detect_email": False,
        "custom_patterns": [
            {"name": "ticket", "pattern": r"TICKET-\d+", "confidence": 0.95},
            {"name": "aws", "pattern": "AKIA[0-9A-Z]{16}", "redaction_mode": "mask", "placeholder": "[AWS_KEY]"},
        ],
    }}})
    redactor = redactor_from_settings(settings.session_recording.pii)
    assert redactor is not None
    out = redactor.redact_text("a@b.co TICKET-42 AKIAIOSFODNN7EXAMPLE")
    assert out.startswith("a@b.co [TICKET:") and out.endswith(" [AWS_KEY]")
    assert redactor_from_settings(settings_from_mapping({}).session_recording.pii) is None


def test_json_walk_keeps_structure_keys_and_tool_arguments_valid() -> None:
    """Strings are redacted at any depth; keys, numbers and JSON-in-a-string stay valid."""
    arguments = json.dumps({"to": "x\njohn@example.com", "cc": ["b@c.io"], "n": 5})
    value = {
        "john@example.com": "555-123-4567",
        "messages": [{"role": "user", "content": [{"type": "text", "text": SECRETS_TEXT}]}],
        "tool_calls": [{"function": {"name": "send", "arguments": arguments}}],
        "n": 3, "ok": True, "none": None, "untouched": {"a": "plain"},
    }
    redactor = Redactor(ALL)
    out = redactor.redact_json(value)
    assert out["john@example.com"] == "[PHONE]"  # keys kept
    assert (out["n"], out["ok"], out["none"]) == (3, True, None)
    assert out["untouched"] is value["untouched"]  # nothing copied where nothing changed
    text = out["messages"][0]["content"][0]["text"]
    assert not any(leak in text for leak in LEAKS)
    inner = json.loads(out["tool_calls"][0]["function"]["arguments"])
    assert inner == {"to": "x\n[EMAIL]", "cc": ["[EMAIL]"], "n": 5}
    # The fast joined scan agrees with the plain walk.
    assert out == redact_json(value, redactor.redact_text)
    assert value["john@example.com"] == "555-123-4567"  # the input is not changed
    assert redactor.redact_json({"a": ["plain", "text"]}) == {"a": ["plain", "text"]}


def test_strings_are_scanned_apart() -> None:
    """A value is never found across two strings; custom patterns run per string, so anchors work."""
    assert Redactor(ALL).redact_json(["555-123", "4567", "john@", "example.com"]) == ["555-123", "4567", "john@", "example.com"]
    custom = Redactor([PatternDetector("any", r"ab[\s\S]cd", "X"), PatternDetector("id", r"^\d{9}$", "ID")])
    assert custom.redact_json(["xxab", "cdyy", "123456789", "a 123456789"]) == ["xxab", "cdyy", "[ID]", "a 123456789"]
    mixed = Redactor([*ALL, PatternDetector("ticket", r"TICKET-\d+", "TICKET")])
    assert mixed.redact_json({"a": "TICKET-7 for a@b.co", "b": ["8.8.8.8"]}) == {"a": "[TICKET] for [EMAIL]", "b": ["[IP_ADDRESS]"]}
    assert mixed.counts() == {"TICKET": 1, "EMAIL": 1, "IP_ADDRESS": 1}


def test_counters() -> None:
    """The redactor counts redactions by kind and failures by where."""
    redactor = Redactor(ALL)
    redactor.redact_text("a@b.co c@d.io 8.8.8.8")
    redactor.redact_json({"x": ["a@b.co"]})
    redactor.count_failure("record")
    assert redactor.counts() == {"EMAIL": 3, "IP_ADDRESS": 1}
    assert redactor.failures() == {"record": 1}


def _exchange_with_pii() -> Any:
    exchange = make_exchange("session-1", 1_700_000_000.0, user_text=SECRETS_TEXT, answer="Reply to john.doe@example.com")
    arguments = {"command": f"echo {ANTHROPIC_KEY} 4111111111111111"}
    call = ToolCall(id="toolu_1", name="Bash", input=arguments, raw_input=json.dumps(arguments))
    summary = exchange.response
    exchange.response = ResponseSummary(
        dialect=summary.dialect, model=summary.model, response_id=summary.response_id, text=summary.text,
        thinking="the card 4111 1111 1111 1111", stop_reason="tool_use", usage=Usage(input_tokens=1, output_tokens=1),
        message={**summary.message, "content": [{"type": "text", "text": summary.text},
                                                 {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": call.input}]},
        tool_calls=[call], event_count=3, streaming=True,
    )
    exchange.client_ip = "203.0.113.9"
    return exchange


def test_recorded_events_are_redacted_but_ids_kept() -> None:
    """Every content field of every event is redacted; ids, timestamps and the session survive."""
    events = exchange_events(_exchange_with_pii())
    redacted = exchange_events(_exchange_with_pii(), redactor=Redactor(ALL))
    text = json.dumps(redacted)
    assert not any(leak in text for leak in LEAKS) and "203.0.113.9" not in text
    assert [e["session_id"] for e in redacted] == ["session-1"] * len(events)
    assert [e["timestamp"] for e in redacted] == [e["timestamp"] for e in events]
    assert [e["type"] for e in redacted] == [e["type"] for e in events]
    assert all(leak in json.dumps(events) for leak in LEAKS)  # without a redactor, all there
    request = next(e for e in redacted if e["type"] == "request_recorded")
    assert request["title"].startswith("Contact [EMAIL] or [PHONE], card [CREDIT_CARD], SSN [SSN], key [API_KEY]")


def test_a_failing_detector_drops_the_field_not_the_record(logged_failures: Any) -> None:
    """Fail closed: the field becomes [REDACTION_FAILED] (or empty), the rest is written, the failure counted."""
    logged_failures.expect(ZeroDivisionError)

    class Broken:
        name = "broken"
        kinds = ("X",)

        def detect(self, text: str) -> list[Detection]:
            if "Tokyo" in text or "john" in text:
                raise ZeroDivisionError("bug")
            return []

    redactor = Redactor([Broken()])
    exchange = make_exchange("s", 1_700_000_000.0, user_text="john@example.com")
    redacted = exchange_events(exchange, redactor=redactor)
    assert len(redacted) == len(exchange_events(exchange))
    request = next(e for e in redacted if e["type"] == "request_recorded")
    assert request["request_json"] == {} and request["request_text"] == ""
    response = next(e for e in redacted if e["type"] == "response_recorded")
    assert response["response_text"] == FAILED and response["status"] == 200
    assert "john@example.com" not in json.dumps(redacted)
    assert redactor.failures()["record"] >= 2


def test_the_store_holds_no_pii_not_even_in_the_search_index(tmp_path: Path) -> None:
    """The recorder redacts before JSONL and SQLite (FTS included) see the events."""
    db = tmp_path / "sessions.db"
    redactor = Redactor(ALL)
    service = RecorderService(
        [JSONLWriter(str(tmp_path / "jsonl")), SQLiteWriter(str(db))], Clock(),
        threadpool=InlineThreadPool(), redactor=redactor,
    )
    service.startService()
    service.record(_exchange_with_pii())
    service.stopService()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files)
    for path in files:
        data = path.read_bytes()
        for leak in LEAKS:
            assert leak.encode() not in data, (path.name, leak)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH '\"john\"'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'EMAIL'").fetchone()[0] >= 1
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                cells = " ".join(str(c) for c in row)
                assert not any(leak in cells for leak in LEAKS), table
    finally:
        conn.close()
    assert redactor.counts()["EMAIL"] >= 1 and service.loss_counts().get("redaction_error", 0) == 0


def test_the_request_log_is_redacted_and_streams_are_not_printed_live() -> None:
    """With a redactor the request log prints redacted text, tool inputs and errors, once, at the end."""
    exchange = _exchange_with_pii()
    exchange.error = "upstream said: bad card 4111 1111 1111 1111"
    out = io.StringIO()
    printer = RequestLogPrinter(out, debug=True, redactor=Redactor(ALL))
    assert printer.listener(exchange) is None
    printer.started(exchange)
    printer.finished(exchange)
    text = out.getvalue()
    assert "[EMAIL]" in text and "[API_KEY]" in text and "[CREDIT_CARD]" in text
    assert not any(leak in text for leak in LEAKS)
    plain = io.StringIO()
    RequestLogPrinter(plain).finished(exchange)
    assert "john.doe@example.com" in plain.getvalue()  # off by default


def test_metrics_show_redactions_and_failures() -> None:
    """/metrics has lunaroute_pii_redactions_total{kind} and lunaroute_pii_failures_total{where}."""
    metrics = GatewayMetrics()
    redactor = Redactor(ALL)
    metrics.bind_pii(redactor)
    redactor.redact_text("a@b.co and 8.8.8.8")
    body = metrics.render()[0].decode()
    assert 'lunaroute_pii_redactions_total{kind="EMAIL"} 1.0' in body
    assert 'lunaroute_pii_redactions_total{kind="IP_ADDRESS"} 1.0' in body
    assert 'lunaroute_pii_failures_total{where="record"} 0.0' in body


def test_upstream_body_is_redacted_only_when_something_is_found(logged_failures: Any) -> None:
    """apply_to_upstream: a body with PII is re-serialised redacted; one without stays byte for byte."""
    redactor = Redactor(ALL)
    clean = b'{"model": "m",  "messages": [{"role": "user", "content": "hello"}]}'
    assert redact_request_body(clean, redactor) is clean
    assert redact_request_body(b"not json", redactor) == b"not json"
    dirty = json.dumps({"messages": [{"role": "user", "content": SECRETS_TEXT}]}).encode()
    out = redact_request_body(dirty, redactor)
    assert not any(leak.encode() in out for leak in LEAKS)
    assert json.loads(out)["messages"][0]["role"] == "user"

    logged_failures.expect(ZeroDivisionError)

    class Broken:
        name = "broken"
        kinds = ("X",)

        def detect(self, text: str) -> list[Detection]:
            raise ZeroDivisionError("bug")

    broken = Redactor([Broken()])
    with pytest.raises(RedactionFailed):
        redact_request_body(dirty, broken)
    assert broken.failures() == {"upstream": 1}


def _redacting_gateway(redactor: Redactor) -> Any:
    """The in-memory gateway of test_gateway_memory, its app built with an upstream redactor."""
    from test_gateway_memory import Gateway
    from treq.testing import StubTreq

    from lunaroute.proxy.access import AccessPolicy, GuardedResource
    from lunaroute.proxy.app import GatewayApp

    gw = Gateway()
    gw.app = GatewayApp(gw.settings, gw.providers, gw.clock, sinks=[gw.exchanges.append], upstream_redactor=redactor)
    gw.resource = GuardedResource(gw.app.resource(), AccessPolicy(gw.settings.http_server))
    gw.stub = StubTreq(gw.resource)
    return gw


def test_apply_to_upstream_in_memory() -> None:
    """The provider gets the redacted body (and the record starts from it); a clean body goes byte for byte."""
    gw = _redacting_gateway(Redactor(ALL))
    dirty = json.dumps({"model": "claude-x", "max_tokens": 5,
                        "messages": [{"role": "user", "content": SECRETS_TEXT}]}).encode()
    status, _, _ = gw.call("POST", "/v1/messages", dirty, {b"content-type": [b"application/json"]})
    assert status == 200
    sent = gw.providers["anthropic"].calls[-1]["body"]
    assert not any(leak.encode() in sent for leak in LEAKS) and b"[EMAIL]" in sent
    assert gw.exchanges[-1].request_json["messages"][0]["content"].startswith("Contact [EMAIL]")
    clean = b'{"model":"claude-x",  "max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    gw.call("POST", "/v1/messages", clean, {b"content-type": [b"application/json"]})
    assert gw.providers["anthropic"].calls[-1]["body"] == clean


def test_a_failing_upstream_redaction_sends_nothing(logged_failures: Any) -> None:
    """apply_to_upstream fails closed: a 500 in the client's dialect, nothing sent, counted."""
    logged_failures.expect(ZeroDivisionError)

    class Broken:
        name = "broken"
        kinds = ("X",)

        def detect(self, text: str) -> list[Detection]:
            raise ZeroDivisionError("bug")

    redactor = Redactor([Broken()])
    gw = _redacting_gateway(redactor)
    body = b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    status, _, answer = gw.call("POST", "/v1/messages", body, {b"content-type": [b"application/json"]})
    assert status == 500
    assert json.loads(answer)["error"]["message"] == "PII redaction of the request failed; it was not sent"
    assert gw.calls == 0 and redactor.failures() == {"upstream": 1}
