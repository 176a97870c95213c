"""
A provider that drops, and a gateway that stops, mid-request, over real
sockets with raw HTTP/1.1 clients: the client keeps every byte the provider
sent and sees a body that ends without its chunked terminator; a request
that reached the provider is never sent twice; no HTML ever enters a stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from lunaroute.testing.helpers import in_thread

TERMINATOR = b"0\r\n\r\n"


class RawClient(Protocol):
    """
    Sends one raw HTTP/1.1 request and keeps every byte of the answer.
    C{seen} fires once C{wait_for} has arrived; C{closed} with all bytes
    when the server closes the connection.
    """

    def __init__(self, request: bytes, wait_for: bytes = b"") -> None:
        self.request = request
        self.wait_for = wait_for
        self.data = bytearray()
        self.seen: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.seen.called and self.wait_for and self.wait_for in self.data:
            self.seen.callback(None)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed.callback(bytes(self.data))


async def raw_request(port: int, path: str, body: dict[str, Any], wait_for: bytes = b"") -> RawClient:
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"content-type: application/json\r\nanthropic-version: 2023-06-01\r\nx-api-key: k\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    client = RawClient(request, wait_for)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The data of a chunked body, and whether it ended with the terminating chunk."""
    out = bytearray()
    rest = body
    while True:
        size_line, sep, after = rest.partition(b"\r\n")
        if not sep:
            return bytes(out), False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out), after.startswith(b"\r\n")
        if len(after) < size + 2:
            out += after[:size]
            return bytes(out), False
        out += after[:size]
        rest = after[size + 2 :]


def recorded_exchanges(sessions: Path) -> list[dict[str, Any]]:
    """Every recorded event that carries an exchange outcome."""
    found = []
    for path in sessions.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if "outcome" in json.dumps(event):
                found.append(event)
    return found


def _find(event: Any, key: str) -> list[Any]:
    if isinstance(event, dict):
        return ([event[key]] if key in event else []) + [v for x in event.values() for v in _find(x, key)]
    if isinstance(event, list):
        return [v for x in event for v in _find(x, key)]
    return []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {"model": "claude-drop-burst", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/chat/completions", {"model": "gpt-drop-burst", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
    ],
    ids=["anthropic", "chat"],
)
@pytest_twisted.ensureDeferred
async def test_provider_closing_after_a_burst_keeps_every_byte(fake, start_gateway, tmp_path: Path, path: str, body: dict[str, Any]):
    """A quick burst then a close: the client gets every byte the provider sent, no chunked terminator, and the record says so in a sentence."""
    sessions = tmp_path / "sessions"
    gw = await start_gateway(fake, session_recording={"enabled": True, "sessions_dir": str(sessions)})
    client = await raw_request(gw.port, path, body)
    answer = await client.closed
    head, _, raw_body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    [sent] = fake.dropped_bodies
    assert len(sent) > 50_000, "the burst should be large enough to sit in buffers"
    data, terminated = dechunk(raw_body)
    assert data == sent
    assert not terminated and not answer.endswith(TERMINATOR)
    assert b"<html" not in answer.lower()
    assert len(fake.requests) == 1
    await gw.service.stopService()
    errors = [e for event in recorded_exchanges(sessions) for e in _find(event, "error") if isinstance(e, str)]
    assert f"the provider closed the connection after {len(sent):,} bytes" in errors, errors
    assert not any("Failure" in e or "<" in e for e in errors)


@pytest.mark.parametrize(
    ("path", "model", "dialect_check"),
    [
        ("/v1/messages", "claude-drop", lambda j: j["type"] == "error" and j["error"]["type"] == "api_error"),
        ("/v1/chat/completions", "gpt-drop", lambda j: j["error"]["code"] == "upstream_unreachable"),
    ],
    ids=["anthropic", "chat"],
)
@pytest_twisted.ensureDeferred
async def test_provider_that_reads_then_closes_gets_exactly_one_post(fake, start_gateway, path: str, model: str, dialect_check: Any):
    """The provider reads the request then closes without answering: one POST only (no double billing), the client gets a 502 JSON error."""
    gw = await start_gateway(fake, providers={"anthropic": {"http_client": {"max_retries": 3}}, "openai": {"http_client": {"max_retries": 3}}})
    response = await in_thread(
        httpx.post,
        gw.url + path,
        json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"anthropic-version": "2023-06-01", "x-api-key": "k"},
    )
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert dialect_check(response.json())
    assert [r.method for r in fake.requests] == ["POST"]
    # Nothing is still pending that could send it again later.
    assert gw.app.in_flight == {}
    assert len(fake.requests) == 1


@pytest_twisted.ensureDeferred
async def test_stopping_during_a_stream_cuts_it_cleanly_after_the_deadline(fake, start_gateway, tmp_path: Path):
    """Stopping with shutdown_timeout_secs 0.5 while a stream waits: the client keeps the bytes so far, then the connection closes without terminator and without HTML."""
    sessions = tmp_path / "sessions"
    fake.gate = defer.Deferred()  # the stream stops after its first content event
    gw = await start_gateway(
        fake, shutdown_timeout_secs=0.5, session_recording={"enabled": True, "sessions_dir": str(sessions)}
    )
    client = await raw_request(
        gw.port,
        "/v1/messages",
        {"model": "claude-x", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        wait_for=b"content_block_delta",
    )
    await client.seen
    before = bytes(client.data)
    stopped = gw.service.stopService()
    answer = await client.closed
    await stopped
    assert answer.startswith(before)
    head, _, raw_body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    data, terminated = dechunk(raw_body)
    assert b"event: message_start" in data and b"content_block_delta" in data
    assert b"message_stop" not in data
    assert not terminated and not answer.endswith(TERMINATOR)
    assert b"<html" not in answer.lower() and b"Processing Failed" not in answer
    outcomes = [o for event in recorded_exchanges(sessions) for o in _find(event, "outcome")]
    assert outcomes == ["interrupted"], outcomes
