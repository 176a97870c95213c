"""
Codex over the WebSocket on Claude, attacked: a malformed frame, a turn
continuing an unknown response, a client that leaves mid translated turn,
a provider error mid-stream, a provider stream that ends early, and two
sockets whose conversations must stay apart.  Real sockets (autobahn's
client) through a running gateway and the fake provider on 127.0.0.1.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

ANTHROPIC_KEY = "sk-ant-server-key-123456789"
ANTHROPIC_ONLY = {"openai": {"enabled": False}, "anthropic": {"api_key": ANTHROPIC_KEY}}


class Client(WebSocketClientProtocol):
    """Collects every text frame; C{until(type, n)} waits for the n-th event of a type."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, Any]] = []
        self.opened: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[int | None] = defer.Deferred()
        self._waiters: list[tuple[str, int, defer.Deferred[None]]] = []

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.append(json.loads(payload))
        self._wake()

    def _wake(self) -> None:
        for kind, count, waiter in list(self._waiters):
            if self.count(kind) >= count:
                self._waiters.remove((kind, count, waiter))
                waiter.callback(None)

    def count(self, kind: str) -> int:
        return sum(1 for frame in self.frames if frame.get("type") == kind)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"refused: {code} {reason}"))
        self.closed.callback(code)

    def until(self, kind: str, count: int = 1) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((kind, count, waiter))
        self._wake()
        return waiter.addTimeout(10, reactor)

    def send_json(self, data: Any) -> None:
        self.sendMessage(json.dumps(data).encode(), isBinary=False)


async def connect(port: int) -> Client:
    factory = WebSocketClientFactory(
        f"ws://127.0.0.1:{port}/v1/responses", headers={"authorization": "Bearer sk-openai-client-123456789"}
    )
    factory.protocol = Client
    client: Client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    await client.opened
    return client


def create(model: str = "claude-sonnet-4-5", text: str = "hi", previous: str | None = None,
           items: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "response.create",
        "model": model,
        "instructions": "be brief",
        "input": items if items is not None else [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        ],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "store": False,
        "stream": True,
    }
    if previous is not None:
        body["previous_response_id"] = previous
    return body


async def gateway(fake: Any, start_gateway: Any) -> tuple[Any, list[Any]]:
    gw = await start_gateway(fake, providers=ANTHROPIC_ONLY)
    seen: list[Any] = []
    gw.app._sinks = (*gw.app._sinks, seen.append)
    return gw, seen


async def close(client: Client) -> None:
    client.sendClose()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_a_malformed_frame_is_an_error_frame_and_the_socket_goes_on(fake, start_gateway) -> None:
    gw, _ = await gateway(fake, start_gateway)
    client = await connect(gw.port)
    client.sendMessage(b"{not json", isBinary=False)
    await client.until("error")
    client.send_json([1, 2])
    await client.until("error", 2)
    client.send_json(create(items=[{"type": "message", "role": "user", "content": 5}]))
    await client.until("error", 3)
    assert all(frame["status"] == 400 for frame in client.frames)
    assert "input[0].content" in client.frames[-1]["error"]["message"]
    assert [r.path for r in fake.requests] == []
    client.send_json(create())
    await client.until("response.completed")
    await close(client)


@pytest_twisted.ensureDeferred
async def test_an_unknown_previous_response_is_an_error_frame_naming_it(fake, start_gateway) -> None:
    gw, _ = await gateway(fake, start_gateway)
    client = await connect(gw.port)
    client.send_json(create(previous="resp_never_seen"))
    await client.until("error")
    frame = client.frames[-1]
    assert frame["status"] == 400 and "previous_response_id" in frame["error"]["message"]
    assert fake.requests == []
    await close(client)


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_mid_translated_turn_aborts_the_provider_within_a_second(fake, start_gateway) -> None:
    gw, seen = await gateway(fake, start_gateway)
    fake.gate = defer.Deferred()  # the stream stops after its first content event
    client = await connect(gw.port)
    client.send_json(create())
    await client.until("response.output_text.delta")
    client.transport.abortConnection()
    assert await fake.on_disconnect().addTimeout(1, reactor) == "/v1/messages"
    await client.closed


@pytest_twisted.ensureDeferred
async def test_a_provider_error_mid_stream_is_a_failed_response_on_the_socket_and_the_record(fake, start_gateway) -> None:
    gw, seen = await gateway(fake, start_gateway)
    client = await connect(gw.port)
    client.send_json(create(model="claude-error-midstream"))
    await client.until("response.failed")
    failed = client.frames[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    await close(client)
    [exchange] = seen
    assert exchange.outcome != "ok" and exchange.error


@pytest_twisted.ensureDeferred
async def test_two_sockets_keep_their_conversations_apart(fake, start_gateway) -> None:
    """Socket B cannot continue socket A's response; each continuation carries only its own history."""
    gw, _ = await gateway(fake, start_gateway)
    a = await connect(gw.port)
    b = await connect(gw.port)
    a.send_json(create(text="secret of A"))
    await a.until("response.completed")
    b.send_json(create(text="question of B"))
    await b.until("response.completed")
    a_id = a.frames[-1]["response"]["id"]
    b_id = b.frames[-1]["response"]["id"]

    b.send_json(create(text="B again", previous=a_id))
    await b.until("error")
    assert "previous_response_id" in b.frames[-1]["error"]["message"]

    b.send_json(create(text="B again", previous=b_id))
    await b.until("response.completed", 2)
    sent = json.dumps(fake.requests[-1].json)
    assert "question of B" in sent and "B again" in sent and "secret of A" not in sent
    await close(a)
    await close(b)


@pytest_twisted.ensureDeferred
async def test_a_provider_stream_that_ends_early_is_a_failed_response_and_a_stream_error(fake, start_gateway) -> None:
    """The provider's body ends cleanly mid tool arguments: response.failed on the socket, stream_error on the record."""
    gw, seen = await gateway(fake, start_gateway)
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                              "model": "claude-x", "content": [], "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"comm'}},
    ]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    fake.next_response = (200, {"content-type": "text/event-stream"}, body)
    client = await connect(gw.port)
    client.send_json(create())
    await client.until("response.failed")
    await close(client)
    assert client.frames[-1]["response"]["error"]["code"] == "stream_interrupted"
    [exchange] = seen
    assert exchange.outcome == "stream_error" and "ended early" in (exchange.error or "")


@pytest_twisted.ensureDeferred
async def test_the_providers_key_never_reaches_the_socket_even_when_its_error_echoes_it(fake, start_gateway) -> None:
    gw, _ = await gateway(fake, start_gateway)
    echo = {"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key {ANTHROPIC_KEY}"}}
    fake.next_response = (401, {"content-type": "application/json"}, json.dumps(echo))
    client = await connect(gw.port)
    client.send_json(create())
    await client.until("error")
    await close(client)
    frame = client.frames[-1]
    assert frame["status"] == 401 and "[redacted]" in frame["error"]["message"]
    assert ANTHROPIC_KEY not in json.dumps(client.frames)


@pytest_twisted.ensureDeferred
async def test_a_json_answer_to_a_translated_turn_is_replayed_as_events(fake, start_gateway) -> None:
    """
    An Anthropic provider that ignores stream: true and answers one JSON
    message: the socket got an 'error' frame with status 200.  Now the
    Responses events of that answer, ending with response.completed, and
    the response continues the socket's conversation.
    """
    gw, seen = await gateway(fake, start_gateway)
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "hello there"},
                    {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {"command": "ls"}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 3},
    }
    fake.next_response = (200, {"content-type": "application/json"}, json.dumps(message))
    client = await connect(gw.port)
    client.send_json(create())
    await client.until("response.completed")
    types = [frame["type"] for frame in client.frames]
    assert "error" not in types and types[0] == "response.created"
    final = client.frames[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert json.loads(final["output"][1]["arguments"]) == {"command": "ls"}
    assert final["usage"]["output_tokens"] == 3
    # The replayed response is the socket's conversation: the next turn may continue it.
    output = {"type": "function_call_output", "call_id": "toolu_1", "output": "a.txt"}
    client.send_json(create(previous=final["id"], items=[output]))
    await client.until("response.completed", 2)
    await close(client)
    assert seen[0].outcome == "ok"
    sent = fake.requests[-1].json
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]


@pytest_twisted.ensureDeferred
async def test_a_provider_that_drops_a_translated_turn_ends_it_once(fake, start_gateway) -> None:
    """
    The provider's connection drops mid-stream: the turn ends with one
    response.failed and no second 'error' frame (Codex would take a stray
    one for its next turn's answer); the next turn on the socket works.
    """
    gw, seen = await gateway(fake, start_gateway)
    client = await connect(gw.port)
    client.send_json(create(model="claude-drop"))
    await client.until("response.failed")
    client.send_json(create(model="claude-sonnet-4-5"))
    await client.until("response.completed")
    await close(client)
    types = [frame["type"] for frame in client.frames]
    assert "error" not in types and types.count("response.failed") == 1
    assert seen[0].outcome == "upstream_error" and "cut" in (seen[0].error or "")
