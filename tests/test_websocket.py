"""
Codex's Responses WebSocket (GET /v1/responses with Upgrade: websocket):
frame-level tests with autobahn's client through a running gateway and the
fake provider, and the pure helpers of lunaroute.proxy.websocket.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
import pytest_twisted
import treq
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock

from lunaroute.proxy.websocket import (
    PING_INTERVAL_SECS,
    PING_TIMEOUT_SECS,
    SocketConversation,
    error_frame,
    response_create_body,
)
from lunaroute.testing.helpers import free_port


class _Client(WebSocketClientProtocol):
    """Collects every text frame; C{until(type)} waits for an event type."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, Any]] = []
        self.opened: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[int | None] = defer.Deferred()
        self._waiters: list[tuple[str, defer.Deferred[None]]] = []
        self._counts: list[tuple[str, int, defer.Deferred[None]]] = []

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        event = json.loads(payload)
        self.frames.append(event)
        for kind, waiter in list(self._waiters):
            if event.get("type") == kind:
                self._waiters.remove((kind, waiter))
                waiter.callback(None)
        for entry in list(self._counts):
            if self.count(entry[0]) >= entry[1]:
                self._counts.remove(entry)
                entry[2].callback(None)

    def count(self, kind: str) -> int:
        return sum(1 for event in self.frames if event.get("type") == kind)

    def until_count(self, kind: str, n: int) -> defer.Deferred[None]:
        """Fires once C{n} events of type C{kind} have arrived."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self.count(kind) >= n:
            waiter.callback(None)
        else:
            self._counts.append((kind, n, waiter))
        return waiter

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"refused: {code} {reason}"))
        self.closed.callback(code)

    def until(self, kind: str) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        if any(event.get("type") == kind for event in self.frames):
            waiter.callback(None)
        else:
            self._waiters.append((kind, waiter))
        return waiter

    def send_json(self, data: dict[str, Any]) -> None:
        self.sendMessage(json.dumps(data).encode(), isBinary=False)


async def _connect(port: int, path: str = "/v1/responses", headers: dict[str, str] | None = None) -> _Client:
    factory = WebSocketClientFactory(
        f"ws://127.0.0.1:{port}{path}",
        headers=headers or {"authorization": "Bearer sk-client-key-123456789"},
    )
    factory.protocol = _Client
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    client: _Client = await endpoint.connect(factory)
    await client.opened
    return client


def _create(model: str = "gpt-test", text: str = "hi") -> dict[str, Any]:
    return {
        "type": "response.create",
        "model": model,
        "instructions": "be brief",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "store": False,
        "stream": True,
        "include": [],
    }


def _sse_events(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for line in raw.decode("utf-8").splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            events.append(json.loads(line[5:]))
    return events


# -- pure helpers ------------------------------------------------------------


def test_response_create_body_drops_type_and_streams() -> None:
    body = response_create_body(json.dumps({"type": "response.create", "model": "m", "stream": False}).encode())
    assert body is not None
    assert json.loads(body) == {"model": "m", "stream": True}


def test_other_frame_types_need_no_answer() -> None:
    assert response_create_body(b'{"type":"response.processed","response_id":"r"}') is None


def test_a_frame_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError):
        response_create_body(b"[1,2]")


def test_the_socket_conversation_continues_its_last_response() -> None:
    """previous_response_id plus new items becomes the whole input, for a provider that keeps no state."""
    conversation = SocketConversation()
    first = {"model": "m", "input": "hi"}
    assert conversation.expanded(first) == {"model": "m", "input": [{"type": "message", "role": "user", "content": "hi"}]}
    conversation.started(first)
    call = {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"}
    conversation.completed({"id": "resp_1", "output": [call]})
    output = {"type": "function_call_output", "call_id": "c1", "output": "done"}
    second = {"model": "m", "previous_response_id": "resp_1", "input": [output]}
    whole = conversation.expanded(second)
    assert whole == {"model": "m", "input": [{"type": "message", "role": "user", "content": "hi"}, call, output]}
    # A response this socket does not hold (or an older one) cannot be continued.
    assert conversation.expanded({**second, "previous_response_id": "resp_0"}) is None
    conversation.started(second)
    conversation.completed({"id": "resp_2", "output": []})
    assert conversation.last_id == "resp_2"
    assert conversation.expanded(second) is None
    # A turn whose whole input is unknown leaves nothing to continue.
    conversation.started({"previous_response_id": "elsewhere", "input": []})
    conversation.completed({"id": "resp_3", "output": []})
    assert conversation.last_id is None


def test_error_frame_shape() -> None:
    assert json.loads(error_frame(429, "slow down", "rate_limited")) == {
        "type": "error",
        "status": 429,
        "error": {"type": "invalid_request_error", "message": "slow down", "code": "rate_limited"},
    }


# -- through a running gateway ------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("path", ["/v1/responses", "/responses"])
async def test_a_turn_gets_the_providers_events_as_frames_in_order(fake, start_gateway, path: str) -> None:
    gw = await start_gateway(fake)
    client = await _connect(gw.port, path)
    client.send_json(_create())
    await client.until("response.completed")
    # What the provider received: one streaming POST with the frame's fields.
    assert len(fake.requests) == 1
    sent = fake.requests[0]
    assert sent.method == "POST" and sent.path == "/v1/responses"
    body = json.loads(sent.body)
    assert "type" not in body and body["stream"] is True and body["model"] == "gpt-test"
    assert sent.header("authorization") == "Bearer sk-client-key-123456789"
    # The same request over HTTP gives the same events, in the same order.
    http = await treq.post(
        gw.url + "/v1/responses",
        json.dumps({k: v for k, v in _create().items() if k != "type"}).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer sk-client-key-123456789"},
    )
    expected = _sse_events(await http.content())
    assert [e["type"] for e in client.frames] == [e["type"] for e in expected]
    text = "".join(e.get("delta", "") for e in client.frames if e["type"] == "response.output_text.delta")
    assert text == fake.reply_text
    # A second turn on the same socket works too.
    client.frames.clear()
    client.send_json(_create(text="again"))
    await client.until("response.completed")
    assert len(fake.requests) == 3
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_each_turn_is_recorded_like_its_http_twin(fake, start_gateway) -> None:
    gw = await start_gateway(fake)
    seen: list[Any] = []
    gw.app._sinks = (*gw.app._sinks, seen.append)
    client = await _connect(
        gw.port, headers={"authorization": "Bearer sk-client-key-123456789", "session-id": "ws-session-1"}
    )
    client.send_json(_create())
    await client.until("response.completed")
    client.frames.clear()
    client.send_json(_create(text="again"))
    await client.until("response.completed")
    client.sendClose()
    await client.closed
    assert len(seen) == 2
    assert [e.outcome for e in seen] == ["ok", "ok"]
    # The session id comes from the upgrade request's headers, as on HTTP.
    assert [e.session_id for e in seen] == ["ws-session-1", "ws-session-1"]
    assert seen[0].request_id != seen[1].request_id
    exchange = seen[0]
    assert exchange.method == "POST" and exchange.path == "/v1/responses"
    assert exchange.status == 200 and exchange.outcome == "ok"
    assert exchange.provider == "openai" and exchange.model == "gpt-test"
    assert exchange.streaming is True and exchange.bytes_out > 0
    assert exchange.response is not None
    assert exchange.timings.first_byte is not None and exchange.timings.finished is not None


@pytest_twisted.ensureDeferred
async def test_a_turn_gets_the_providers_request_modification(fake, start_gateway) -> None:
    """request_headers and request_body apply to WebSocket turns as to HTTP (docs/request-modification.md)."""
    gw = await start_gateway(fake, providers={"openai": {
        "request_headers": {"headers": {"X-Session": "ws-${session_id}"}},
        "request_body": {"overrides": {"parallel_tool_calls": True},
                         "prepend_messages": [{"role": "developer", "content": "Local dev."}]},
    }})
    seen: list[Any] = []
    gw.app._sinks = (*gw.app._sinks, seen.append)
    client = await _connect(
        gw.port, headers={"authorization": "Bearer sk-client-key-123456789", "session-id": "ws-session-2"}
    )
    client.send_json(_create())
    await client.until("response.completed")
    client.sendClose()
    await client.closed
    sent = fake.requests[-1]
    assert sent.header("x-session") == "ws-ws-session-2"
    body = json.loads(sent.body)
    assert body["parallel_tool_calls"] is True
    assert body["input"][0] == {"role": "developer", "content": "Local dev."} and len(body["input"]) == 2
    assert seen[0].upstream_body == sent.body and json.loads(seen[0].request_body)["parallel_tool_calls"] is False


@pytest_twisted.ensureDeferred
async def test_closing_the_socket_mid_turn_cancels_the_provider_request(fake, start_gateway) -> None:
    fake.gate = defer.Deferred()  # the stream stops after its first content event
    gw = await start_gateway(fake)
    client = await _connect(gw.port)
    client.send_json(_create())
    await client.until("response.output_text.delta")
    client.sendClose()
    await client.closed
    # The provider sees its client (the gateway) go away mid-stream.
    assert await fake.on_disconnect() == "/v1/responses"
    assert not any(e["type"] == "response.completed" for e in client.frames)


@pytest_twisted.ensureDeferred
async def test_frames_sent_without_waiting_queue_at_most_max_queued_turns(fake, start_gateway) -> None:
    """A client flooding response.create frames: the turns beyond the queue's cap get a 429 error frame, the rest run."""
    from lunaroute.proxy.websocket import MAX_QUEUED_TURNS

    fake.gate = defer.Deferred()  # the first turn stops after its first content event
    gw = await start_gateway(fake)
    client = await _connect(gw.port)
    client.send_json(_create())
    await client.until("response.output_text.delta")
    extra = 5
    for _ in range(MAX_QUEUED_TURNS + extra):
        client.send_json(_create())
    await client.until_count("error", extra)
    refused = [e for e in client.frames if e.get("type") == "error"]
    assert len(refused) == extra
    assert all(e["status"] == 429 and e["error"]["code"] == "too_many_queued_turns" for e in refused)
    fake.gate.callback(None)
    # The running turn and every queued one complete.
    await client.until_count("response.completed", 1 + MAX_QUEUED_TURNS)
    client.sendClose()
    await client.closed
    assert client.count("error") == extra


@pytest_twisted.ensureDeferred
async def test_a_provider_error_is_one_error_frame(fake, start_gateway) -> None:
    gw = await start_gateway(fake)
    client = await _connect(gw.port)
    client.send_json(_create(model="gpt-rate-limit"))
    await client.until("error")
    assert client.frames[-1]["status"] == 429
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_426_without_upgrade_and_when_disabled(fake, start_gateway) -> None:
    gw = await start_gateway(fake)
    plain = await treq.get(gw.url + "/v1/responses")
    assert plain.code == 426
    assert b"websocket_not_supported" in await plain.content()

    off = await start_gateway(fake, http_server={"websocket_enabled": False})
    with pytest.raises(ConnectionError):
        await _connect(off.port)
    upgrade = await treq.get(
        off.url + "/v1/responses",
        headers={
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version": "13",
        },
    )
    assert upgrade.code == 426
    await upgrade.content()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest_twisted.ensureDeferred
async def test_metrics_count_sockets_and_frames(fake, start_gateway) -> None:
    gw = await start_gateway(fake)
    client = await _connect(gw.port)
    text = (await (await treq.get(gw.url + "/metrics")).content()).decode()
    assert _metric(text, "lunaroute_ws_connections") == 1
    client.send_json(_create())
    await client.until("response.completed")
    client.sendClose()
    await client.closed
    text = (await (await treq.get(gw.url + "/metrics")).content()).decode()
    assert _metric(text, "lunaroute_ws_connections") == 0
    assert _metric(text, 'lunaroute_ws_frames_total{direction="in"}') == 1
    assert _metric(text, 'lunaroute_ws_frames_total{direction="out"}') == len(client.frames)


@pytest_twisted.ensureDeferred
async def test_the_upgrade_passes_through_the_access_guard(fake, start_gateway) -> None:
    gw = await start_gateway(fake, http_server={"auth_token": "gw-token-123456", "require_auth_for_proxy": True})
    with pytest.raises(ConnectionError, match="401"):
        await _connect(gw.port)
    with pytest.raises(ConnectionError, match="403"):
        await _connect(gw.port, headers={"origin": "http://evil.example", "x-lunaroute-token": "gw-token-123456"})
    client = await _connect(gw.port, headers={"x-lunaroute-token": "gw-token-123456"})
    client.send_json(_create())
    await client.until("response.completed")
    # The gateway token is not forwarded to the provider.
    assert fake.requests[-1].header("x-lunaroute-token") is None
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_stopping_lets_the_turn_finish_then_closes_the_socket(fake, start_gateway) -> None:
    fake.gate = defer.Deferred()  # the stream stops after its first content event
    gw = await start_gateway(fake)
    client = await _connect(gw.port)
    client.send_json(_create())
    await client.until("response.output_text.delta")
    stopped = gw.service.stopService()
    assert not client.closed.called
    fake.gate.callback(None)
    await client.until("response.completed")
    assert await client.closed == 1000
    await stopped


@pytest_twisted.ensureDeferred
async def test_stopping_cuts_a_turn_at_the_deadline_with_an_error_frame(fake, start_gateway) -> None:
    fake.gate = defer.Deferred()
    gw = await start_gateway(fake)
    client = await _connect(gw.port)
    client.send_json(_create())
    await client.until("response.output_text.delta")
    gw.app.cut_all()  # what the shutdown deadline (or a second signal) does
    await client.until("error")
    assert client.frames[-1]["status"] == 503
    assert await fake.on_disconnect() == "/v1/responses"
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_routing_applies_per_turn(fake, start_gateway) -> None:
    """The primary refuses connections: the turn falls back as an HTTP request would, on the record."""
    closed = f"http://127.0.0.1:{free_port()}/v1"
    gw = await start_gateway(
        fake,
        providers={
            "openai": {"base_url": closed},
            "openai_backup": {"provider_type": "openai", "base_url": fake.url + "/v1"},
        },
        routing={"rules": [{"name": "gpt", "model_pattern": "^gpt-", "primary": "openai",
                            "fallbacks": ["openai_backup"]}]},
    )
    seen: list[Any] = []
    gw.app._sinks = (*gw.app._sinks, seen.append)
    client = await _connect(gw.port)
    client.send_json(_create())
    await client.until("response.completed")
    client.sendClose()
    await client.closed
    assert len(fake.requests) == 1 and fake.requests[0].method == "POST"
    assert [(e.provider, e.rule) for e in seen] == [("openai_backup", "gpt")]
    assert [a["provider"] for a in seen[0].attempts] == ["openai", "openai_backup"]


@pytest_twisted.ensureDeferred
async def test_a_providers_model_replaces_the_turns(fake, start_gateway) -> None:
    gw = await start_gateway(fake, providers={"openai": {"model": "gpt-configured"}})
    client = await _connect(gw.port, headers={"authorization": "Bearer k", "sec-websocket-protocol": "x"})
    client.send_json(_create(model="gpt-client"))
    await client.until("response.completed")
    client.sendClose()
    await client.closed
    assert fake.requests[0].json["model"] == "gpt-configured"
    # The handshake's headers stay on this side.
    assert fake.requests[0].header("sec-websocket-key") is None
    assert fake.requests[0].header("upgrade") is None


@pytest_twisted.ensureDeferred
async def test_a_closed_socket_no_longer_counts_against_the_per_client_cap(fake, start_gateway) -> None:
    gw = await start_gateway(fake, http_server={"max_connections_per_client": 2})
    for _ in range(3):
        client = await _connect(gw.port)
        (socket,) = gw.app.sockets
        site = socket.upgrade.channel.site
        assert site.connections_per_client["127.0.0.1"] == 1
        client.sendClose()
        await client.closed
        await socket.lost
        assert site.connections_per_client == {}
    health = await treq.get(gw.url + "/healthz")
    assert health.code == 200
    await health.content()


@pytest_twisted.ensureDeferred
async def test_a_frame_over_the_body_limit_closes_the_socket_with_1009(fake, start_gateway) -> None:
    gw = await start_gateway(fake, http_server={"max_request_body_bytes": 2000})
    client = await _connect(gw.port)
    client.send_json(_create(text="x" * 3000))
    assert await client.closed == 1009  # message too big
    assert fake.requests == []


class _RawSocketClient(Protocol):
    """
    A bare WebSocket client that answers pings only when told to: autobahn's
    own client always answers them, so keepalive needs a peer that can stay
    silent.  After answering a ping it pings back, and C{synced} fires on the
    gateway's pong: frames are handled in order, so by then the gateway has
    seen the answer.
    """

    def __init__(self, answer_pings: bool) -> None:
        self.answer_pings = answer_pings
        self.buffer = b""
        self.upgraded: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.pinged: defer.Deferred[None] = defer.Deferred()
        self.synced: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                "GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Authorization: Bearer sk-client-key-123456789\r\n\r\n"
            ).encode()
        )

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.called:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            assert head.startswith(b"HTTP/1.1 101"), head
            self.buffer = rest
            self.upgraded.callback(None)
        while len(self.buffer) >= 2 and len(self.buffer) >= 2 + (self.buffer[1] & 0x7F):
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            payload, self.buffer = self.buffer[2 : 2 + length], self.buffer[2 + length :]
            if opcode == 0x9 and not self.pinged.called:
                if self.answer_pings:
                    self._send(0xA, payload)
                    self._send(0x9, b"sync")
                self.pinged.callback(None)
            elif opcode == 0xA and payload == b"sync":
                self.synced.callback(None)

    def _send(self, opcode: int, payload: bytes) -> None:
        # Client frames are masked (RFC 6455 5.3); short payloads only.
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@pytest.fixture
def txaio_clock() -> Any:
    """autobahn's timers (ping/pong among them) run on a Clock for the test."""
    clock = Clock()
    previous = txaio.config.loop
    txaio.config.loop = clock
    yield clock
    txaio.config.loop = previous


async def _raw_socket(port: int, answer_pings: bool) -> _RawSocketClient:
    client = _RawSocketClient(answer_pings)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    await client.upgraded
    return client


@pytest_twisted.ensureDeferred
async def test_keepalive_pings_and_a_silent_peer_is_dropped(fake, start_gateway, txaio_clock) -> None:
    """Every PING_INTERVAL_SECS the gateway pings; a peer that answers stays, one that does not is dropped."""
    gw = await start_gateway(fake)
    answering = await _raw_socket(gw.port, answer_pings=True)
    silent = await _raw_socket(gw.port, answer_pings=False)
    assert len(gw.app.sockets) == 2

    txaio_clock.advance(PING_INTERVAL_SECS)
    await defer.gatherResults([answering.pinged, silent.pinged])
    await answering.synced
    txaio_clock.advance(PING_TIMEOUT_SECS)
    await silent.lost
    assert not answering.lost.called
    assert len(gw.app.sockets) == 1
    answering.transport.loseConnection()
    await answering.lost


def _tool_create(model: str) -> dict[str, Any]:
    create = _create(model=model, text="read the file")
    create["tools"] = [
        {
            "type": "function",
            "name": "shell",
            "description": "Runs a shell command",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        }
    ]
    return create


@pytest_twisted.ensureDeferred
async def test_a_turn_on_an_anthropic_provider_is_translated(fake, start_gateway) -> None:
    """
    Codex on Claude over the WebSocket: with only an Anthropic provider, the
    turn goes to /v1/messages with the gateway's key (never the client's
    OpenAI key) and comes back as Responses events, a function call included;
    the record carries the provider's usage and view.
    """
    gw = await start_gateway(
        fake,
        providers={"openai": {"enabled": False}, "anthropic": {"api_key": "sk-ant-server-key-123456789"}},
    )
    seen: list[Any] = []
    gw.app._sinks = (*gw.app._sinks, seen.append)
    client = await _connect(gw.port)
    client.send_json(_tool_create("claude-tools"))
    await client.until("response.completed")
    client.sendClose()
    await client.closed

    (received,) = fake.requests
    assert received.path == "/v1/messages"
    assert received.header("x-api-key") == "sk-ant-server-key-123456789"
    assert received.header("authorization") is None
    sent = json.loads(received.body)
    assert sent["model"] == "claude-tools" and sent["tools"][0]["name"] == "shell" and sent["stream"] is True

    types = [frame["type"] for frame in client.frames]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in types
    done_items = [f["item"] for f in client.frames if f["type"] == "response.output_item.done"]
    calls = [item for item in done_items if item["type"] == "function_call"]
    assert calls and calls[0]["name"] == "shell" and isinstance(json.loads(calls[0]["arguments"]), dict)
    usage = client.frames[-1]["response"]["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0

    (exchange,) = seen
    assert exchange.provider == "anthropic" and exchange.outcome == "ok"
    assert exchange.upstream_path == "/v1/messages"
    assert exchange.response is not None and exchange.response.usage is not None
    assert exchange.response.usage.output_tokens == usage["output_tokens"]


@pytest_twisted.ensureDeferred
async def test_a_translated_turn_gets_the_providers_error_as_a_responses_error(fake, start_gateway) -> None:
    """An Anthropic 529 on a translated turn is one error frame in OpenAI's terms, with the status."""
    gw = await start_gateway(
        fake,
        providers={"openai": {"enabled": False}, "anthropic": {"api_key": "sk-ant-server-key-123456789"}},
    )
    client = await _connect(gw.port)
    client.send_json(_create(model="claude-overloaded"))
    await client.until("error")
    client.sendClose()
    await client.closed
    (frame,) = client.frames
    assert frame["status"] == 529
    assert frame["error"]["message"]
