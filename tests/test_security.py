"""
One real-socket test per security item of the request lifecycle: a request
target cannot move the server key to another host, a browser page cannot
spend the key, binding beyond loopback is announced, and credential headers
never reach the debug log or the session files.
"""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from lunaroute.config import settings_from_mapping
from lunaroute.logs import set_log_level
from lunaroute.service import exposure_warning, make_gateway_service
from lunaroute.testing.fake_provider import FakeProvider
from lunaroute.testing.helpers import in_thread

SERVER_KEY = "sk-ant-server-key-must-stay-home-0001"
BODY = b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'


def raw_http(port: int, data: bytes) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes (blocking: run in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


class _Trap(Protocol):
    def connectionMade(self) -> None:
        self.factory.connections.append(self.transport.getPeer())  # type: ignore[attr-defined]
        self.transport.loseConnection()  # type: ignore[union-attr]


class TrapFactory(Factory):
    """Counts every connection made to it."""

    protocol = _Trap

    def __init__(self) -> None:
        self.connections: list[Any] = []


def _provider_and_trap() -> tuple[FakeProvider, Any, TrapFactory, Any]:
    """
    A fake provider on a port P small enough that port int(f"{P}1") exists,
    with a trap listening there: the port the old string concatenation sent
    '1/steal' to.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(1100, 6553)
        fake = FakeProvider(reactor)
        try:
            listening = fake.listen(port)
        except CannotListenError:
            continue
        trap = TrapFactory()
        try:
            trap_port = reactor.listenTCP(int(f"{port}1"), trap, interface="127.0.0.1")
        except CannotListenError:
            listening.stopListening()
            continue
        return fake, listening, trap, trap_port
    pytest.skip("no free port pair for the trap")


@pytest_twisted.ensureDeferred
async def test_relative_target_cannot_carry_the_server_key_to_another_port(start_gateway):
    """'GET 1/steal' with a server key: 400 JSON; neither the provider nor port <P>1 sees anything."""
    fake, listening, trap, trap_port = _provider_and_trap()
    try:
        gw = await start_gateway(
            fake,
            providers={
                "anthropic": {"base_url": fake.url, "api_key": SERVER_KEY},
                "openai": {"base_url": fake.url, "api_key": SERVER_KEY},
            },
        )
        trap_host = f"127.0.0.1:{trap_port.getHost().port}"
        for target in (b"1/steal", b"@" + trap_host.encode() + b"/steal", b"http://" + trap_host.encode() + b"/x"):
            for method in (b"GET", b"POST"):
                answer = await in_thread(
                    raw_http,
                    gw.port,
                    method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"content-type: application/json\r\ncontent-length: "
                    + str(len(BODY)).encode()
                    + b"\r\n\r\n"
                    + BODY,
                )
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 400 "), answer
                assert b"application/json" in head.lower()
                assert b"<html" not in answer.lower()
                assert b"invalid_request_target" in body
        assert fake.requests == []
        assert trap.connections == []
    finally:
        await fake.stop()
        await trap_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_dot_segments_cannot_climb_out_of_the_base_path(fake, start_gateway):
    """'/v1/../../admin' (and '%2e%2e', '%2f..%2f'): 400 JSON in dialect; the provider sees nothing."""
    gw = await start_gateway(
        fake,
        providers={
            "anthropic": {"base_url": fake.url + "/prefix", "api_key": SERVER_KEY},
            "openai": {"base_url": fake.url + "/prefix/v1", "api_key": SERVER_KEY},
        },
    )
    for target, dialect in (
        (b"/v1/../../admin", "openai"),  # no dialect in the path or headers: OpenAI
        (b"/v1/messages/%2e%2e/%2e%2e/%2e%2e/admin", "anthropic"),
        (b"/v1/chat/completions%2f..%2f..%2f..%2fadmin", "openai"),
    ):
        answer = await in_thread(
            raw_http,
            gw.port,
            # HTTP/1.0: the answer comes unchunked.
            b"POST " + target + b" HTTP/1.0\r\nHost: x\r\n"
            b"content-type: application/json\r\ncontent-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY,
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 400 "), answer
        payload = json.loads(body)
        if dialect == "anthropic":
            assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
        else:
            assert payload["error"]["code"] == "invalid_request_target"
    assert fake.requests == []


@pytest_twisted.ensureDeferred
async def test_bad_content_length_and_oversized_head_get_json_and_a_closed_socket(fake, start_gateway):
    """
    Over a real socket: 'Content-Length: -5' is a 400 and a Content-Length
    over max_request_body_bytes a 413 sent on the head alone (no body is
    ever sent), each JSON in the path's dialect with Connection: close, and
    the gateway closes the socket (raw_http reads until it does).  Nothing
    reaches the provider.
    """
    gw = await start_gateway(fake, http_server={"max_request_body_bytes": 1000})
    answer = await in_thread(
        raw_http,
        gw.port,
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"Content-Length: -5\r\n\r\n" + BODY,
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"connection: close" in head.lower()
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "Content-Length" in error["error"]["message"]

    answer = await in_thread(
        raw_http,
        gw.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"Content-Length: 1000000\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
    assert json.loads(body) == {
        "error": {
            "message": "request body exceeds the 1000-byte limit",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert fake.requests == []


@pytest_twisted.ensureDeferred
async def test_malformed_heads_get_json_over_a_real_socket(fake, start_gateway):
    """A bad HTTP version, a header line without a colon, 501 headers: JSON in the path's dialect, never a bare 400."""
    gw = await start_gateway(fake, providers={"anthropic": {"api_key": SERVER_KEY}})
    many = b"".join(b"X-%d: v\r\n" % i for i in range(501))
    for head, status in (
        (b"POST /v1/messages HTTP/9.9\r\nHost: x\r\n\r\n", b"400"),
        (b"POST /v1/messages HTTP/1.1\r\nHost x\r\n\r\n", b"400"),
        (b"POST /v1/messages HTTP/1.1\r\n" + many + b"\r\n", b"431"),
    ):
        answer = await in_thread(raw_http, gw.port, head)
        first, _, body = answer.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 " + status + b" "), answer
        assert json.loads(body)["type"] == "error"
    assert fake.requests == []


@pytest_twisted.ensureDeferred
async def test_cross_site_post_is_refused_and_never_forwarded(fake, start_gateway):
    """A browser's text/plain POST with an Origin gets 403 in dialect; the provider never sees it."""
    gw = await start_gateway(fake, providers={"anthropic": {"api_key": SERVER_KEY}})
    response = await in_thread(
        httpx.post,
        gw.url + "/v1/messages",
        content=BODY,
        headers={"content-type": "text/plain", "origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "permission_error"
    assert "access-control-allow-origin" not in response.headers
    assert fake.requests == []
    # The same request without Origin (an SDK) goes through.
    response = await in_thread(httpx.post, gw.url + "/v1/messages", content=BODY, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert len(fake.requests) == 1


def _settings(**data: Any) -> Any:
    return settings_from_mapping({"providers": {"anthropic": {"base_url": "http://127.0.0.1:9"}}, **data}, env={})


def test_exposure_warning_names_what_is_readable_and_the_setting() -> None:
    """Beyond loopback: one line naming /metrics, /_lunaroute/stats and http_server.auth_token; none on loopback."""
    for host in ("0.0.0.0", "::", "192.168.1.10"):
        warning = exposure_warning(_settings(host=host))
        assert warning is not None and "\n" not in warning
        assert "/metrics" in warning and "/_lunaroute/stats" in warning
        assert "http_server.auth_token" in warning
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert exposure_warning(_settings(host=host)) is None
    guarded = exposure_warning(_settings(host="0.0.0.0", http_server={"auth_token": "t" * 20}))
    assert guarded is not None and "require_auth_for_proxy" in guarded


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_start_up_log_warns_when_listening_beyond_loopback(host: str, warned: bool) -> None:
    """startService logs the exposure warning (at warn level) for 0.0.0.0 and not for 127.0.0.1."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    service = make_gateway_service(_settings(host=host, port=0), reactor=MemoryReactorClock())
    try:
        service.startService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if e.get("log_level") is not None and e["log_level"].name == "warn"]
    exposure = [line for line in lines if "beyond loopback" in line]
    assert bool(exposure) is warned, lines
    if warned:
        assert "http_server.auth_token" in exposure[0]


@pytest_twisted.ensureDeferred
async def test_credential_headers_never_reach_the_debug_log_or_session_files(fake, start_gateway, tmp_path: Path, capsys):
    """With debug logging, the request log and recording on, x-goog-api-key and X-Auth-Token values appear nowhere."""
    google_key = "AIzaSyD-google-secret-never-logged-0042"
    auth_token = "x-auth-token-secret-never-logged-0043"
    client_key = "sk-ant-client-secret-never-logged-0044"
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        gw = await start_gateway(
            fake,
            logging={"level": "debug", "log_requests": True},
            session_recording={
                "enabled": True,
                "sessions_dir": str(tmp_path / "sessions"),
                "sqlite": {"enabled": True, "path": str(tmp_path / "sessions.db")},
            },
        )
        for stream in (False, True):
            body = json.dumps(
                {"model": "claude-x", "max_tokens": 5, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
            )
            response = await in_thread(
                httpx.post,
                gw.url + "/v1/messages",
                content=body,
                headers={
                    "content-type": "application/json",
                    "x-goog-api-key": google_key,
                    "X-Auth-Token": auth_token,
                    "x-api-key": client_key,
                    "anthropic-version": "2023-06-01",
                    "x-claude-code-session-id": "sess-secrets",
                },
            )
            assert response.status_code == 200
        await gw.service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
        set_log_level("info")
    # The provider got the credentials (they are the client's to send) ...
    assert fake.requests[0].header("x-goog-api-key") == google_key
    # ... but the gateway's own outputs never show them.
    logged = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "request headers" in logged, "the debug line with headers was not logged"
    printed = capsys.readouterr()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and any(p.name.startswith("sessions.db") for p in files)
    for secret in (google_key, auth_token, client_key):
        assert secret not in logged
        assert secret not in printed.out and secret not in printed.err
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{secret} found in {path}"
