"""
The translated send and relay steps in memory: the converting relay (event
by event, backpressure, drops, idle timeout, gzip), the generic wiring over
any registered Translator (a stub for Responses -> Chat), the refusals
(no translator, an untranslatable field) and what a keyless provider's 401
says.  No sockets: GatewayApp through StubTreq, a fake IProvider, a Clock.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
import treq
from treq.testing import StubTreq
from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers

from lunaroute.config import settings_from_mapping
from lunaroute.dialects.translate import base
from lunaroute.dialects.translate.anthropic_to_chat import MESSAGES_TO_CHAT
from lunaroute.exchange import Exchange, Timings
from lunaroute.proxy.app import GatewayApp
from lunaroute.proxy.translating import TranslatingRelay, estimate_input_tokens, translated_request_headers
from lunaroute.testing.providers import CannedProvider, UpstreamTransport

MESSAGES_BODY = b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
CHAT_OK = json.dumps(
    {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-5",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }
).encode()


def sse(*chunks: Any) -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks)


def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-5",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


# -- fakes ---------------------------------------------------------------


class Response:
    """An IResponse whose body is delivered by the test (C{feed}, C{end})."""

    def __init__(self, code: int = 200, body: bytes | None = CHAT_OK, headers: dict[bytes, list[bytes]] | None = None):
        self.code = code
        self.phrase = b"OK"
        self.headers = Headers(headers or {b"content-type": [b"application/json"]})
        self.body = body
        self.transport = UpstreamTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)
        if self.body is not None:
            protocol.dataReceived(self.body)
            protocol.connectionLost(Failure(ResponseDone()))


class Gateway:
    def __init__(self, providers: dict[str, Any], response: Any) -> None:
        self.settings = settings_from_mapping({"providers": providers}, env={})
        self.clock = Clock()
        self.providers = {
            name: CannedProvider(p, response) for name, p in self.settings.providers.items() if p.enabled
        }
        self.exchanges: list[Exchange] = []
        self.app = GatewayApp(self.settings, self.providers, self.clock, sinks=[self.exchanges.append])
        self.stub = StubTreq(self.app.resource())

    def post(self, path: str, body: bytes, headers: dict[bytes, list[bytes]] | None = None) -> tuple[int, Headers, bytes]:
        out: list[Any] = []
        d = self.stub.request("POST", "http://gateway.test" + path, data=body, headers=headers or {})
        d.addCallback(lambda r: treq.content(r).addCallback(lambda c: out.append((r.code, r.headers, c))))
        d.addErrback(out.append)
        self.stub.flush()
        assert out and not isinstance(out[0], Failure), out
        return out[0]


OPENAI_ONLY = {"anthropic": {"enabled": False}, "openai": {"base_url": "http://o.test/v1", "api_key": "sk-server"}}


# -- the generic path, over a stub translator ---------------------------


class StubResponsesToChat:
    """A Translator for Responses -> Chat that only proves the wiring."""

    source = "openai_responses"
    target = "openai_chat"
    target_path = "/v1/chat/completions"

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], str | None]] = []

    def request(self, body: dict[str, Any], model: str | None, dropped: list[str]) -> dict[str, Any]:
        self.seen.append((body, model))
        dropped.append("reasoning")
        return {"model": model or body["model"], "messages": [{"role": "user", "content": body["input"]}]}

    def response(self, body: dict[str, Any], client_model: str) -> dict[str, Any]:
        text = body["choices"][0]["message"]["content"]
        return {"object": "response", "model": client_model, "output_text": text}

    def error(self, body: Any, status: int) -> dict[str, Any]:
        return {"error": {"message": f"stub {status}", "type": "stub_error"}}

    def stream(self, client_model: str) -> Any:
        raise NotImplementedError


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[Any, Any]:
    """The translator registry, restored after the test."""
    saved = dict(base._REGISTRY)
    yield base._REGISTRY
    base._REGISTRY.clear()
    base._REGISTRY.update(saved)


def test_any_registered_translator_is_wired_with_no_more_code(registry: Any) -> None:
    """
    A Responses request to a provider with supports_responses: false goes
    through whatever translator is registered for (openai_responses,
    openai_chat): its request at its target path with the provider's model
    map, its response to the client; the record has both views.
    """
    stub = base.register(StubResponsesToChat())
    gateway = Gateway(
        {"anthropic": {"enabled": False},
         "openai": {"base_url": "http://o.test/v1", "supports_responses": False, "model_map": {"gpt-5-codex": "qwen3"}}},
        Response(),
    )
    status, headers, body = gateway.post(
        "/v1/responses", b'{"model":"gpt-5-codex","input":"hi"}',
        {b"authorization": [b"Bearer sk-client"], b"x-api-key": [b"sk-ant-not-for-openai"]},
    )
    assert status == 200, body
    assert json.loads(body) == {"object": "response", "model": "gpt-5-codex", "output_text": "hello"}
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert stub.seen == [({"model": "gpt-5-codex", "input": "hi"}, "qwen3")]
    [call] = gateway.providers["openai"].calls
    assert call["path"] == "/v1/chat/completions"
    assert json.loads(call["body"]) == {"model": "qwen3", "messages": [{"role": "user", "content": "hi"}]}
    # Same provider family: the client's OpenAI key goes along; never an Anthropic one.
    assert call["headers"].getRawHeaders(b"authorization") == [b"Bearer sk-client"]
    assert not call["headers"].hasHeader(b"x-api-key")
    [exchange] = gateway.exchanges
    assert exchange.upstream_path == "/v1/chat/completions" and exchange.upstream_body == call["body"]
    assert exchange.dialect == "openai_responses" and exchange.outcome == "ok"
    assert exchange.response is not None and exchange.response.model == "gpt-5"


def test_a_missing_translator_is_a_400_naming_it_and_nothing_is_sent(registry: Any) -> None:
    """Without a Responses -> Chat translator, supports_responses: false is a clear 400."""
    registry.pop(("openai_responses", "openai_chat"), None)
    gateway = Gateway(
        {"anthropic": {"enabled": False}, "openai": {"base_url": "http://o.test/v1", "supports_responses": False}},
        Response(),
    )
    status, _, body = gateway.post("/v1/responses", b'{"model":"gpt-5-codex","input":"hi"}')
    assert status == 400
    message = json.loads(body)["error"]["message"]
    assert "supports_responses: false" in message and "no translator from openai_responses to openai_chat" in message
    assert gateway.providers["openai"].calls == []
    [exchange] = gateway.exchanges
    assert exchange.outcome == "bad_request"


def test_chat_requests_to_the_same_provider_stay_untouched() -> None:
    """supports_responses: false changes nothing for Chat Completions: passthrough byte for byte."""
    gateway = Gateway(
        {"openai": {"base_url": "http://o.test/v1", "supports_responses": False}}, Response()
    )
    raw = b'{"model":"gpt-5",  "messages":[{"role":"user","content":"hi"}]}'
    status, _, body = gateway.post("/v1/chat/completions", raw)
    assert status == 200 and body == CHAT_OK
    [call] = gateway.providers["openai"].calls
    assert call["body"] == raw and gateway.exchanges[0].upstream_body is None


# -- Messages -> Chat in memory ---------------------------------------------


def test_an_untranslatable_field_is_a_400_in_anthropic_form_and_nothing_is_sent() -> None:
    gateway = Gateway(OPENAI_ONLY, Response())
    body = json.loads(MESSAGES_BODY)
    body["messages"][0]["content"] = [{"type": "server_tool_use", "id": "x", "name": "web_search", "input": {}}]
    status, _, answer = gateway.post("/v1/messages", json.dumps(body).encode())
    assert status == 400
    parsed = json.loads(answer)
    assert parsed["type"] == "error" and parsed["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].type" in parsed["error"]["message"]
    assert gateway.providers["openai"].calls == []


def test_a_keyless_providers_401_says_why() -> None:
    """No api_key on the OpenAI provider: the 401 tells the user the Anthropic key is not forwarded."""
    refused = Response(401, b'{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}')
    gateway = Gateway({"anthropic": {"enabled": False}, "openai": {"base_url": "http://o.test/v1"}}, refused)
    status, _, answer = gateway.post("/v1/messages", MESSAGES_BODY, {b"x-api-key": [b"sk-ant-secret"]})
    assert status == 401
    error = json.loads(answer)["error"]
    assert error["type"] == "authentication_error"
    assert "Incorrect API key provided" in error["message"] and "has no api_key configured" in error["message"]
    [call] = gateway.providers["openai"].calls
    assert not call["headers"].hasHeader(b"x-api-key") and not call["headers"].hasHeader(b"authorization")


def test_a_gzip_answer_is_decoded_before_translating() -> None:
    """A provider that ignores accept-encoding: identity still gets translated."""
    zipped = Response(200, gzip.compress(CHAT_OK), {b"content-type": [b"application/json"], b"content-encoding": [b"gzip"]})
    gateway = Gateway(OPENAI_ONLY, zipped)
    status, headers, answer = gateway.post("/v1/messages", MESSAGES_BODY)
    assert status == 200 and json.loads(answer)["content"] == [{"type": "text", "text": "hello"}]
    assert b"gzip" not in b"".join(headers.getRawHeaders(b"content-encoding", []))
    assert gateway.exchanges[0].response is not None and gateway.exchanges[0].response.usage.input_tokens == 7


def test_a_gzip_bomb_answer_is_a_502_not_its_decoded_size() -> None:
    """A JSON answer of 256 MB of zeros in 250 KB of gzip: decoding stops at the relay's limit; the client gets a 502 in its dialect."""
    import tracemalloc
    import zlib

    packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    bomb = packer.compress(b'{"id":"') + b"".join(packer.compress(block) for _ in range(256)) + packer.flush()
    zipped = Response(200, bomb, {b"content-type": [b"application/json"], b"content-encoding": [b"gzip"]})
    gateway = Gateway(OPENAI_ONLY, zipped)
    tracemalloc.start()
    try:
        status, _, answer = gateway.post("/v1/messages", MESSAGES_BODY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 502
    assert json.loads(answer)["type"] == "error"
    assert "exceeds" in json.loads(answer)["error"]["message"]
    # The relay and the capture stop at 64 MB each (MAX_JSON_BYTES), never 256 MB.
    assert peak < 200 << 20, peak


def test_count_tokens_is_estimated_locally() -> None:
    gateway = Gateway(OPENAI_ONLY, Response())
    status, headers, answer = gateway.post("/v1/messages/count_tokens", MESSAGES_BODY)
    assert status == 200 and headers.getRawHeaders(b"x-lunaroute-estimated") == [b"true"]
    assert json.loads(answer) == {"input_tokens": estimate_input_tokens(json.loads(MESSAGES_BODY))}
    assert gateway.providers["openai"].calls == []
    [exchange] = gateway.exchanges
    assert exchange.kind == "count_tokens" and exchange.response_headers["x-lunaroute-estimated"] == "true"


def test_the_estimate_is_a_quarter_of_the_characters() -> None:
    body = {"model": "m", "system": "s" * 10, "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 9}
    text = json.dumps({"system": body["system"], "messages": body["messages"]}, separators=(",", ":"))
    assert estimate_input_tokens(body) == -(-len(text) // 4)
    assert estimate_input_tokens({}) == 1


def test_translated_headers_never_carry_the_other_dialects_credentials() -> None:
    client = Headers({
        b"x-api-key": [b"sk-ant"], b"authorization": [b"Bearer sk-ant-oauth"], b"anthropic-version": [b"2023-06-01"],
        b"anthropic-beta": [b"x"], b"user-agent": [b"claude-cli/2"], b"accept-encoding": [b"gzip"],
    })
    out = translated_request_headers(client, "anthropic", "openai_chat")
    assert dict(out.getAllRawHeaders()) == {
        b"Content-Type": [b"application/json"], b"Accept-Encoding": [b"identity"], b"User-Agent": [b"claude-cli/2"],
    }
    to_anthropic = translated_request_headers(Headers({b"authorization": [b"Bearer sk-openai"]}), "openai_chat", "anthropic")
    assert not to_anthropic.hasHeader(b"authorization")
    assert to_anthropic.getRawHeaders(b"anthropic-version") == [b"2023-06-01"]


# -- the converting relay ---------------------------------------------------


class ClientRequest:
    """What a relay needs of the client's request: writes, producer, status."""

    def __init__(self) -> None:
        self.channel = object()
        self.writes: list[bytes] = []
        self.producer: Any = None
        self.code = 200

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def setResponseCode(self, code: int) -> None:
        self.code = code


def relay(clock: Clock | None = None, streaming: bool = True, **kwargs: Any) -> tuple[TranslatingRelay, ClientRequest, Response]:
    request = ClientRequest()
    protocol = TranslatingRelay(
        request, clock or Clock(), 60.0, translator=MESSAGES_TO_CHAT, client_model="claude-x",
        status=kwargs.pop("status", 200), streaming=streaming, **kwargs,
    )
    response = Response(body=None)
    response.deliverBody(protocol)
    return protocol, request, response


def events(data: bytes) -> list[str]:
    return [line[7:] for line in data.decode().splitlines() if line.startswith("event: ")]


def test_each_provider_event_is_sent_at_once_with_backpressure() -> None:
    """
    The first delta reaches the client when its chunk arrives, even split
    across reads; the upstream transport is the client's producer; the
    capture rebuilds the provider's answer (its model and usage).
    """
    protocol, request, response = relay()
    assert request.producer is response.transport
    first = sse(chunk({"role": "assistant", "content": "Hel"}))
    protocol.dataReceived(first[:10])
    assert request.writes == []
    protocol.dataReceived(first[10:])
    assert events(b"".join(request.writes)) == ["message_start", "content_block_start", "content_block_delta"]
    protocol.dataReceived(sse(chunk({"content": "lo"})))
    assert events(request.writes[-1]) == ["content_block_delta"]
    protocol.dataReceived(sse(chunk({}, "stop"), chunk({}, None, {"prompt_tokens": 3, "completion_tokens": 2})))
    assert events(request.writes[-1]) == ["content_block_stop"]
    protocol.dataReceived(sse("[DONE]"))
    # The terminator is translated when it arrives, not when the body ends.
    assert events(request.writes[-1]) == ["message_delta", "message_stop"]
    protocol.connectionLost(Failure(ResponseDone()))
    sent = b"".join(request.writes)
    assert b'"output_tokens":2' in request.writes[-1]
    assert protocol.client_bytes == len(sent) and protocol.failure is None and request.producer is None
    summary = protocol.capture.finish()
    assert summary.model == "gpt-5" and summary.text == "Hello" and summary.usage.input_tokens == 3


def test_a_provider_drop_mid_stream_ends_with_an_error_event() -> None:
    protocol, request, _ = relay()
    protocol.dataReceived(sse(chunk({"role": "assistant", "content": "partial"})))
    protocol.connectionLost(Failure(ResponseFailed([Failure(error.ConnectionLost())])))
    sent = b"".join(request.writes)
    assert events(sent)[-1] == "error" and b"ended early" in sent
    assert protocol.lost == "reset the connection"


def test_a_silent_provider_is_cut_after_the_idle_timeout_with_an_error_event() -> None:
    clock = Clock()
    protocol, request, response = relay(clock)
    protocol.dataReceived(sse(chunk({"role": "assistant", "content": "a"})))
    clock.advance(59)
    assert not response.transport.stopped
    clock.advance(2)
    assert response.transport.stopped and protocol.timed_out
    assert events(b"".join(request.writes))[-1] == "error"


def test_a_client_that_leaves_stops_the_provider_and_gets_nothing_more() -> None:
    protocol, request, response = relay()
    protocol.dataReceived(sse(chunk({"role": "assistant", "content": "a"})))
    before = len(request.writes)
    protocol.done.cancel()
    assert response.transport.stopped
    assert len(request.writes) == before


def test_a_provider_error_body_keeps_its_status() -> None:
    """A non-2xx JSON error is translated once, at the end, with the provider's status."""
    protocol, request, _ = relay(streaming=False, status=529)
    protocol.dataReceived(b'{"error":{"message":"busy"}}')
    assert request.writes == []
    protocol.connectionLost(Failure(ResponseDone()))
    assert json.loads(b"".join(request.writes)) == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


def test_an_unreadable_success_body_is_a_502() -> None:
    protocol, request, _ = relay(streaming=False)
    protocol.dataReceived(b"<html>oops</html>")
    protocol.connectionLost(Failure(ResponseDone()))
    assert request.code == 502 and protocol.translation_error is not None
    assert json.loads(b"".join(request.writes))["type"] == "error"


def test_a_json_answer_over_the_limit_is_a_502() -> None:
    protocol, request, _ = relay(streaming=False, max_json_bytes=10)
    protocol.dataReceived(CHAT_OK[:8])
    protocol.dataReceived(CHAT_OK[8:])
    protocol.dataReceived(b" ")
    protocol.connectionLost(Failure(ResponseDone()))
    assert request.code == 502 and b"exceeds" in b"".join(request.writes)


# -- classification and the other entry points ------------------------------


class StreamResponse(Response):
    """A Chat stream that ends with C{end} (a clean end, or a cut connection)."""

    def __init__(self, body: bytes, end: Failure) -> None:
        super().__init__(200, None, {b"content-type": [b"text/event-stream"]})
        self.stream_body = body
        self.end = end

    def deliverBody(self, protocol: Any) -> None:
        super().deliverBody(protocol)
        protocol.dataReceived(self.stream_body)
        protocol.connectionLost(self.end)


STREAM_BODY = b'{"model":"claude-x","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}'


def test_a_provider_error_event_is_classified_from_the_providers_stream() -> None:
    """The capture reads the provider's dialect: its mid-stream error is the exchange's upstream_error."""
    body = sse(chunk({"role": "assistant", "content": "a"}), {"error": {"message": "overloaded now", "type": "overloaded_error"}})
    gateway = Gateway(OPENAI_ONLY, StreamResponse(body, Failure(ResponseDone())))
    status, headers, answer = gateway.post("/v1/messages", STREAM_BODY)
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert events(answer)[-1] == "error" and b"overloaded_error" in answer
    [exchange] = gateway.exchanges
    assert exchange.outcome == "upstream_error" and exchange.error_type == "overloaded_error"
    assert exchange.response is not None and exchange.response.dialect == "openai_chat"


def test_a_cut_provider_stream_is_a_stream_error_on_the_record() -> None:
    body = sse(chunk({"role": "assistant", "content": "partial"}))
    cut = Failure(ResponseFailed([Failure(error.ConnectionLost())]))
    gateway = Gateway(OPENAI_ONLY, StreamResponse(body, cut))
    d = gateway.stub.request("POST", "http://gateway.test/v1/messages", data=STREAM_BODY)
    gateway.stub.flush()
    del d
    [exchange] = gateway.exchanges
    assert exchange.outcome == "stream_error" and "reset the connection" in (exchange.error or "")
    assert exchange.bytes_out > 0 and exchange.upstream_path == "/v1/chat/completions"


def test_count_tokens_through_a_routing_rule_is_estimated() -> None:
    """With routing, an attempt on an OpenAI provider for count_tokens is answered locally too."""
    gateway = Gateway(
        {**OPENAI_ONLY, "anthropic": {"enabled": True, "base_url": "http://a.test"}},
        Response(),
    )
    settings = settings_from_mapping(
        {"providers": {"anthropic": {"base_url": "http://a.test"}, "openai": {"base_url": "http://o.test/v1"}},
         "routing": {"rules": [{"name": "gpt", "listener": "anthropic", "primary": "openai"}]}},
        env={},
    )
    from lunaroute.routing.plan import Router

    gateway.app = GatewayApp(
        settings, gateway.providers, gateway.clock, sinks=[gateway.exchanges.append],
        router=Router(settings, gateway.providers, gateway.clock),
    )
    gateway.stub = StubTreq(gateway.app.resource())
    status, headers, _ = gateway.post("/v1/messages/count_tokens", MESSAGES_BODY)
    assert status == 200 and headers.getRawHeaders(b"x-lunaroute-estimated") == [b"true"]
    assert gateway.providers["openai"].calls == [] and gateway.providers["anthropic"].calls == []
    assert gateway.exchanges[0].provider == "openai"


def test_readyz_names_the_provider_that_serves_a_dialect_through_translation() -> None:
    gateway = Gateway(OPENAI_ONLY, Response())
    out: list[Any] = []
    d = gateway.stub.get("http://gateway.test/readyz")
    d.addCallback(lambda r: treq.json_content(r).addCallback(out.append))
    gateway.stub.flush()
    assert out[0]["dialects"]["anthropic"]["provider"] == "openai"


def test_websocket_turns_are_translated_like_http_requests(registry: Any) -> None:
    """
    A Responses WebSocket turn whose attempt needs translation goes through
    the translator: the provider gets the translated body at the
    translator's path, and the exchange keeps the provider's view.
    """
    from lunaroute.dialects.request_view import parse_request
    from lunaroute.routing.plan import Router

    base.register(StubResponsesToChat())
    settings = settings_from_mapping(
        {"providers": {"anthropic": {"enabled": False},
                       "openai": {"base_url": "http://o.test/v1", "supports_responses": False}},
         "routing": {"rules": [{"name": "all", "always": True, "primary": "openai"}]}},
        env={},
    )
    clock = Clock()
    providers = {"openai": CannedProvider(settings.providers["openai"], Response())}
    app = GatewayApp(settings, providers, clock, router=Router(settings, providers, clock))
    body = b'{"model":"gpt-5-codex","input":"hi"}'
    view = parse_request("openai_responses", body, lambda name: None)
    plan = app.plan_turn(view, lambda name: None)
    assert plan is not None

    class Turn:
        method = b"POST"
        requestHeaders = Headers()
        uri = b"/v1/responses"
        sending = None

    exchange = Exchange(
        request_id="r", session_id="s", listener="openai", kind="conversation", dialect="openai_responses",
        path="/v1/responses", method="POST", timings=Timings(0.0),
    )
    failures: list[Failure] = []
    defer.ensureDeferred(app.send_turn(Turn(), Turn(), exchange, view, body, plan)).addErrback(failures.append)
    assert failures == []
    (call,) = providers["openai"].calls
    assert call["path"] == "/v1/chat/completions"
    assert exchange.upstream_path == "/v1/chat/completions" and exchange.upstream_body == call["body"]
    assert json.loads(call["body"])["messages"] == [{"role": "user", "content": "hi"}]


class BrokenStream:
    """A stream translator with a bug: its second event raises."""

    finished = False

    def __init__(self) -> None:
        self.fed = 0

    def feed(self, event: Any) -> bytes:
        self.fed += 1
        if self.fed == 2:
            raise KeyError("bug")
        return b"event: ok\ndata: {}\n\n"

    def close(self) -> bytes:
        return b"event: error\ndata: {}\n\n"


class BrokenTranslator(StubResponsesToChat):
    source = "anthropic"

    def stream(self, client_model: str) -> Any:
        return BrokenStream()


def test_a_translator_bug_mid_stream_stops_the_provider_and_ends_with_an_error(logged_failures: Any) -> None:
    """The failure is logged; the provider is cut; the client's stream ends with the translator's close()."""
    logged_failures.expect(KeyError)
    request = ClientRequest()
    protocol = TranslatingRelay(
        request, Clock(), 60.0, translator=BrokenTranslator(), client_model="x", status=200, streaming=True,
    )
    response = Response(body=None)
    response.deliverBody(protocol)
    protocol.dataReceived(sse(chunk({"content": "a"}), chunk({"content": "b"}), chunk({"content": "c"})))
    assert response.transport.stopped and protocol.translation_error is not None
    assert events(b"".join(request.writes)) == ["ok", "error"]


def test_a_corrupt_gzip_answer_is_a_502() -> None:
    protocol, request, _ = relay(streaming=False, content_encoding="gzip")
    protocol.dataReceived(b"\x1f\x8b\x08\x00garbage-that-is-not-deflate")
    protocol.connectionLost(Failure(ResponseDone()))
    assert request.code == 502 and protocol.translation_error == "the provider's answer could not be decoded"


def test_an_unreadable_answer_through_the_gateway_is_a_gateway_error_on_the_record() -> None:
    gateway = Gateway(OPENAI_ONLY, Response(200, b"<html>oops</html>"))
    status, _, answer = gateway.post("/v1/messages", MESSAGES_BODY)
    assert status == 502 and json.loads(answer)["type"] == "error"
    [exchange] = gateway.exchanges
    assert exchange.outcome == "gateway_error" and exchange.status == 502
    assert exchange.error == "the provider's answer is not a JSON object"


def test_a_gateway_cut_ends_the_translated_stream_with_an_error_event() -> None:
    """Shutdown past its deadline: the provider is cut, the client's stream gets an error event."""
    protocol, request, response = relay()
    protocol.dataReceived(sse(chunk({"role": "assistant", "content": "a"})))
    protocol.cut()
    assert response.transport.stopped and protocol.cut_by_gateway
    assert events(request.writes[-1]) == ["error"]


def test_a_client_gone_before_the_body_gets_nothing_written() -> None:
    request = ClientRequest()
    request.channel = None
    protocol = TranslatingRelay(
        request, Clock(), 60.0, translator=MESSAGES_TO_CHAT, client_model="x", status=200, streaming=True,
    )
    response = Response(body=None)
    response.deliverBody(protocol)
    assert response.transport.stopped and request.writes == [] and protocol.done.called
