"""
Hostile clients and misbehaving providers on translated exchanges: every
bad client body is a 400 in the client's own dialect naming the field
(never a 500), every odd provider answer a well-formed answer or a clear
error in the client's dialect with the record saying what happened, the
pure translators never raise anything but UntranslatableField, and no
credential crosses a dialect.  In memory: GatewayApp through StubTreq, a
fake IProvider, a Clock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import treq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from lunaroute.config import settings_from_mapping
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.exchange import Exchange
from lunaroute.testing.providers import CannedProvider, UpstreamTransport

CHAT_OK = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-5",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 2},
}
ANTHROPIC_OK = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 7, "output_tokens": 2},
}


class Response:
    """An IResponse with a fixed status, headers and body, delivered in C{pieces}."""

    def __init__(
        self, code: int = 200, body: bytes = b"", headers: dict[bytes, list[bytes]] | None = None,
        pieces: int = 0, end: Failure | None = None,
    ) -> None:
        self.code = code
        self.phrase = b"OK"
        self.headers = Headers(headers or {b"content-type": [b"application/json"]})
        self.body = body
        self.pieces = pieces
        self.end = end or Failure(ResponseDone())
        self.transport = UpstreamTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)
        if self.pieces:
            for i in range(0, len(self.body), self.pieces):
                if self.transport.stopped:
                    return
                protocol.dataReceived(self.body[i:i + self.pieces])
        elif self.body:
            protocol.dataReceived(self.body)
        if not self.transport.stopped:
            protocol.connectionLost(self.end)


class Gateway:
    def __init__(self, providers: dict[str, Any], response: Response | None = None) -> None:
        from lunaroute.proxy.app import GatewayApp

        self.settings = settings_from_mapping({"providers": providers}, env={})
        self.clock = Clock()
        self.providers = {
            name: CannedProvider(p, response or Response()) for name, p in self.settings.providers.items() if p.enabled
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

    def calls(self) -> list[dict[str, Any]]:
        return [call for provider in self.providers.values() for call in provider.calls]


OPENAI_ONLY = {"anthropic": {"enabled": False}, "openai": {"base_url": "http://o.test/v1", "api_key": "sk-server-openai"}}
ANTHROPIC_ONLY = {"openai": {"enabled": False}, "anthropic": {"base_url": "http://a.test", "api_key": "sk-server-anthropic"}}
CHAT_ONLY = {
    "anthropic": {"enabled": False},
    "openai": {"base_url": "http://o.test/v1", "api_key": "sk-server-openai", "supports_responses": False},
}

# (client path, providers, the provider's success answer)
DIRECTIONS = {
    "messages->chat": ("/v1/messages", OPENAI_ONLY, CHAT_OK),
    "chat->messages": ("/v1/chat/completions", ANTHROPIC_ONLY, ANTHROPIC_OK),
    "responses->messages": ("/v1/responses", ANTHROPIC_ONLY, ANTHROPIC_OK),
    "responses->chat": ("/v1/responses", CHAT_ONLY, CHAT_OK),
}


def gateway_for(direction: str, response: Response | None = None) -> tuple[Gateway, str]:
    path, providers, ok = DIRECTIONS[direction]
    return Gateway(providers, response or Response(body=json.dumps(ok).encode())), path


def assert_client_error(direction: str, status: int, body: bytes, field: str | None = None) -> dict[str, Any]:
    """A 4xx/5xx in the client's dialect: Anthropic's error object for Messages, OpenAI's otherwise."""
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), dict), body
    if direction.startswith("messages"):
        assert parsed["type"] == "error", body
    else:
        assert "type" not in parsed or parsed["type"] != "error", body
    message = parsed["error"]["message"]
    assert isinstance(message, str) and message
    if field is not None:
        assert field in message, (field, message)
    return parsed


def sent_nothing(gateway: Gateway) -> bool:
    return gateway.calls() == []


# -- 1. hostile client bodies -------------------------------------------------

MSG = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
RESP = {"model": "gpt-5", "input": [{"role": "user", "content": "hi"}]}
BASES = {"messages->chat": MSG, "chat->messages": CHAT, "responses->messages": RESP, "responses->chat": RESP}


def with_(base: dict[str, Any], **fields: Any) -> bytes:
    body = dict(base)
    body.update(fields)
    return json.dumps(body).encode()


HOSTILE: list[tuple[str, bytes, str]] = [
    # Messages in
    ("messages->chat", with_(MSG, messages=1), "messages"),
    ("messages->chat", with_(MSG, messages={"role": "user"}), "messages"),
    ("messages->chat", with_(MSG, messages=[None]), "messages[0]"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("messages->chat", with_(MSG, messages=[{"role": 7, "content": "x"}]), "messages[0].role"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": [None]}]), "messages[0].content[0]"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": [{"type": "text", "text": None}]}]),
     "messages[0].content[0].text"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": [{"type": "zzz"}]}]),
     "messages[0].content[0].type"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": None}}]}]),
     "messages[0].content[0].source.data"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": [{"type": "image", "source": "x"}]}]),
     "messages[0].content[0].source"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}]),
     "messages[0].content[0].tool_use_id"),
    ("messages->chat", with_(MSG, messages=[{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": "not an object"}]}]),
     "messages[0].content[0].input"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "text/html", "data": "PGh0bWw+"}}]}]),
     "messages[0].content[0].source.media_type"),
    ("messages->chat", with_(MSG, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}]}]),
     "messages[0].content[0].source.data"),
    ("messages->chat", with_(MSG, tools="str"), "tools"),
    ("messages->chat", with_(MSG, tools=[1]), "tools[0]"),
    ("messages->chat", with_(MSG, tools=[{"name": None}]), "tools[0].name"),
    ("messages->chat", with_(MSG, tool_choice="auto"), "tool_choice"),
    ("messages->chat", with_(MSG, max_tokens="5"), "max_tokens"),
    ("messages->chat", with_(MSG, max_tokens=10**30), "max_tokens"),
    ("messages->chat", with_(MSG, max_tokens=-1), "max_tokens"),
    ("messages->chat", with_(MSG, temperature="hot"), "temperature"),
    ("messages->chat", with_(MSG, stop_sequences="x"), "stop_sequences"),
    ("messages->chat", with_(MSG, system=5), "system"),
    ("messages->chat", with_(MSG, system=[5]), "system[0]"),
    ("messages->chat", with_(MSG, stream="yes"), "stream"),
    ("messages->chat", with_(MSG, model=5), "model"),
    ("messages->chat", with_(MSG, metadata=5), "metadata"),
    # Chat in
    ("chat->messages", with_(CHAT, messages="s"), "messages"),
    ("chat->messages", with_(CHAT, messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("chat->messages", with_(CHAT, messages=[{"role": {"x": 1}, "content": "hi"}]), "messages[0].role"),
    ("chat->messages", with_(CHAT, messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
    ("chat->messages", with_(CHAT, messages=[{"role": "tool", "tool_call_id": "call_nope", "content": "x"}]),
     "messages[0].tool_call_id"),
    ("chat->messages", with_(CHAT, messages=[{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": None, "arguments": "{}"}}]}]),
     "messages[0].tool_calls[0].function.name"),
    ("chat->messages", with_(CHAT, messages=[{"role": "assistant", "tool_calls": "x"}]), "messages[0].tool_calls"),
    *[
        ("chat->messages", with_(CHAT, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}]), "messages[0].content[0].image_url.url")
        for url in ("data:image/png;base64,", "data:;base64,AAAA", "data:text/html;base64,AAAA",
                    "data:image/png;base64,@@@", "data:image/png,AAAA", "javascript:alert(1)")
    ],
    ("chat->messages", with_(CHAT, messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:image/png;base64,AAAA"}}]}]),
     "messages[0].content[0].file.file_data"),
    ("chat->messages", with_(CHAT, tools="str"), "tools"),
    ("chat->messages", with_(CHAT, tools=[{"type": "function", "function": "f"}]), "tools[0].function"),
    ("chat->messages", with_(CHAT, max_tokens="5"), "max_tokens"),
    ("chat->messages", with_(CHAT, max_completion_tokens=2**63), "max_completion_tokens"),
    ("chat->messages", with_(CHAT, temperature=[1]), "temperature"),
    ("chat->messages", with_(CHAT, stop=5), "stop"),
    ("chat->messages", with_(CHAT, stream="yes"), "stream"),
    # Responses in (both targets)
    *[
        (direction, body, field)
        for direction in ("responses->messages", "responses->chat")
        for body, field in [
            (with_(RESP, input=5), "input"),
            (with_(RESP, input={"a": 1}), "input"),
            (with_(RESP, input=[None]), "input[0]"),
            (with_(RESP, input=[{"type": {"x": 1}}]), "input[0].type"),
            (with_(RESP, input=[{"role": "user", "content": 5}]), "input[0].content"),
            (with_(RESP, input=[{"role": "user", "content": [{"type": None}]}]), "input[0].content[0].type"),
            (with_(RESP, input=[{"type": "function_call", "call_id": 1, "name": "f", "arguments": "{}"}]),
             "input[0].call_id"),
            (with_(RESP, input=[{"type": "function_call_output", "call_id": None, "output": "x"}]),
             "input[0].call_id"),
            (with_(RESP, tools="str"), "tools"),
            (with_(RESP, tools=[{"type": {"a": 1}}]), "tools[0].type"),
            (with_(RESP, tools=[{"type": "function", "name": None}]), "tools[0].name"),
            (with_(RESP, instructions=5), "instructions"),
            (with_(RESP, max_output_tokens="5"), "max_output_tokens"),
            (with_(RESP, temperature="hot"), "temperature"),
            (with_(RESP, reasoning=5), "reasoning"),
            (with_(RESP, text={"format": 5}), "text.format"),
            (with_(RESP, stream="yes"), "stream"),
        ]
    ],
]


HOSTILE += [
    ("responses->messages", with_(RESP, input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": "javascript:alert(1)"}]}]), "input[0].content[0].image_url"),
    ("responses->messages", with_(RESP, input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": "data:text/html;base64,AAAA"}]}]), "input[0].content[0].image_url"),
    ("responses->messages", with_(RESP, input=[{"role": "user", "content": [
        {"type": "input_file", "file_data": "data:image/png;base64,AAAA"}]}]), "input[0].content[0].file_data"),
    ("responses->messages", with_(RESP, input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]),
     "input[0].arguments"),
]


HOSTILE += [
    ("messages->chat", with_(MSG, messages=[]), "messages"),
    ("chat->messages", with_(CHAT, messages=[]), "messages"),
    ("chat->messages", with_(CHAT, messages=[{"role": "system", "content": "only a system prompt"}]), "messages"),
    ("responses->messages", with_(RESP, input=[]), "input"),
    ("responses->messages", with_(RESP, input=[{"type": "reasoning", "summary": []}]), "input"),
    ("responses->chat", with_(RESP, input=[]), "input"),
]


@pytest.mark.parametrize(("direction", "body", "field"), HOSTILE)
def test_a_wrong_type_is_a_400_in_the_clients_dialect_naming_the_field(direction: str, body: bytes, field: str) -> None:
    """
    Wrong JSON types anywhere the translators read were quietly coerced
    (a number as ``messages`` sent an empty conversation, a dict as an
    item's ``type`` was a 500): now a 400 in the client's dialect whose
    message names the field, and nothing is sent.
    """
    gateway, path = gateway_for(direction)
    status, _, answer = gateway.post(path, body)
    assert status == 400, answer
    parsed = assert_client_error(direction, status, answer, field + ":")
    assert parsed["error"]["type"] == "invalid_request_error"
    assert sent_nothing(gateway)
    # (a non-string model is refused before an exchange is recorded)
    assert all(exchange.outcome == "bad_request" for exchange in gateway.exchanges)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize(
    ("raw_value", "where"), [(b"NaN", "NaN"), (b"Infinity", "Infinity"), (b"-Infinity", "-Infinity"), (b"1e999", "1e999")]
)
def test_nan_and_infinity_are_a_400_naming_the_field(direction: str, raw_value: bytes, where: str) -> None:
    """
    Python's JSON parser takes NaN, Infinity and 1e999; the translated body
    went to the provider as ``NaN`` (not JSON).  Now a 400 naming the field.
    """
    gateway, path = gateway_for(direction)
    schema = {"type": "object", "properties": {"n": {"type": "number", "maximum": "X"}}}
    tool: dict[str, Any] = {
        "messages->chat": {"name": "f", "input_schema": schema},
        "chat->messages": {"type": "function", "function": {"name": "f", "parameters": schema}},
    }.get(direction, {"type": "function", "name": "f", "parameters": schema})
    body = with_(BASES[direction], tools=[tool]).replace(b'"X"', raw_value)
    status, _, answer = gateway.post(path, body)
    assert status == 400, answer
    message = assert_client_error(direction, status, answer)["error"]["message"]
    assert "tools[0]." in message and "properties.n.maximum" in message
    assert "finite" in message and sent_nothing(gateway)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_a_lone_surrogate_is_a_400_naming_the_field(direction: str) -> None:
    """
    ``"\\ud800"`` parses in Python but is not text; the other dialect's
    server refuses it as invalid JSON with its own field names.  A 400
    naming the client's field; a real character beyond the BMP (escaped as
    a surrogate pair) still goes through.
    """
    gateway, path = gateway_for(direction)
    body = dict(BASES[direction])
    key = "input" if direction.startswith("responses") else "messages"
    body[key] = [{"role": "user", "content": "a\ud800b"}]
    status, _, answer = gateway.post(path, json.dumps(body).encode())
    assert status == 400, answer
    message = assert_client_error(direction, status, answer)["error"]["message"]
    assert "surrogate" in message and f"{key}[0].content" in message and sent_nothing(gateway)

    body[key] = [{"role": "user", "content": "snake \U0001f40d"}]
    status, _, answer = gateway.post(path, json.dumps(body).encode())
    assert status == 200, answer
    assert "snake \U0001f40d" in json.dumps(json.loads(gateway.calls()[0]["body"]), ensure_ascii=False)


# -- the pure translators under hypothesis -----------------------------------

_WORDS = [
    "text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "user", "assistant", "system",
    "developer", "tool", "function", "message", "function_call", "function_call_output", "custom_tool_call",
    "reasoning", "input_text", "output_text", "input_image", "image_url", "base64", "url", "auto", "any", "none",
    "required", "custom", "stop", "length", "tool_calls", "message_start", "content_block_start",
    "content_block_delta", "content_block_stop", "message_delta", "message_stop", "error", "text_delta",
    "input_json_delta", "thinking_delta", "signature_delta", "document", "file", "enabled", "json_schema",
    "data:image/png;base64,@@", "[DONE]", "lunaroute.anthropic.thinking:{",
]
_KEYS = [
    "type", "role", "content", "text", "messages", "system", "tools", "tool_choice", "name", "input", "id",
    "tool_use_id", "is_error", "source", "media_type", "data", "url", "image_url", "tool_calls", "function",
    "arguments", "tool_call_id", "model", "max_tokens", "stop", "stop_sequences", "temperature", "instructions",
    "call_id", "output", "summary", "encrypted_content", "reasoning", "effort", "format", "delta", "index",
    "choices", "finish_reason", "usage", "content_block", "message", "stop_reason", "error", "input_schema",
    "parameters", "thinking", "partial_json", "signature", "reasoning_content", "refusal", "prompt_tokens",
    "input_tokens", "output_tokens", "stream", "metadata", "user_id", "n", "max_output_tokens",
]
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=6), st.sampled_from(_WORDS),
)
JSONISH = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=6)),
    max_leaves=40,
)
DIRECTION_PAIRS = [
    ("anthropic", "openai_chat"), ("openai_chat", "anthropic"),
    ("openai_responses", "anthropic"), ("openai_responses", "openai_chat"),
]


def _translators() -> list[Any]:
    from lunaroute.dialects.translate import base

    found = [base.translator_for(source, target) for source, target in DIRECTION_PAIRS]
    assert all(found)
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=JSONISH, top=st.dictionaries(st.sampled_from(_KEYS), JSONISH, max_size=8))
def test_request_translators_raise_only_untranslatable_field(body: Any, top: dict[str, Any]) -> None:
    """Any JSON as a request (and any object): a translated body, or UntranslatableField."""
    for translator in _translators():
        for candidate in (body, top):
            try:
                out = translator.request(candidate, None, [])
            except UntranslatableField:
                continue
            assert isinstance(out, dict)
            json.dumps(out)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(st.sampled_from(_KEYS), JSONISH, max_size=8), anything=JSONISH, status=st.integers(100, 999))
def test_response_and_error_translators_never_raise(body: dict[str, Any], anything: Any, status: int) -> None:
    """A provider's JSON object as an answer, any JSON as an error body: always a dict in the client's terms."""
    for translator in _translators():
        assert isinstance(translator.response(body, "m"), dict)
        for error_body in (body, anything, None):
            answer = translator.error(error_body, status)
            assert isinstance(answer, dict) and isinstance(answer.get("error"), dict)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=st.lists(st.one_of(st.dictionaries(st.sampled_from(_KEYS), JSONISH, max_size=6), st.just("[DONE]")), max_size=8))
def test_stream_translators_never_raise(events: list[Any]) -> None:
    """Any sequence of parsed provider events: bytes for each, and a close that never raises."""
    for translator in _translators():
        stream = translator.stream("m")
        for event in events:
            assert isinstance(stream.feed(event), bytes)
        assert isinstance(stream.close(), bytes)


@pytest.mark.parametrize("pair", DIRECTION_PAIRS)
def test_a_providers_lone_surrogate_does_not_break_the_clients_frame(pair: tuple[str, str]) -> None:
    """
    JSON allows ``"\\ud800"`` and a provider may send one; the frame encoder
    raised UnicodeEncodeError (the relay then cut the whole stream).  Now
    the character becomes ``?`` and the frame is valid UTF-8.
    """
    from lunaroute.dialects.translate import base

    translator = base.translator_for(*pair)
    assert translator is not None
    stream = translator.stream("m")
    if pair[1] == "openai_chat":
        events: list[Any] = [
            {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "a\ud800b"}}]},
            {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            "[DONE]",
        ]
    else:
        events = [
            {"type": "message_start", "message": {"id": "m", "model": "x", "usage": {"input_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a\ud800b"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
            {"type": "message_stop"},
        ]
    out = b"".join(stream.feed(event) for event in events) + stream.close()
    text = out.decode("utf-8")
    assert "a?b" in text and stream.finished


# -- 2. misbehaving providers -------------------------------------------------

JSON_HEADERS = {b"content-type": [b"application/json"]}
SSE_HEADERS = {b"content-type": [b"text/event-stream"]}


def chat_stream(crlf: bool = False, done: bool = True) -> bytes:
    chunks = [
        {"id": "c", "model": "gpt-5", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}]}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    nl = "\r\n" if crlf else "\n"
    out = "".join(f"data: {json.dumps(c)}{nl}{nl}" for c in chunks)
    return (out + (f"data: [DONE]{nl}{nl}" if done else "")).encode()


def anthropic_stream(crlf: bool = False, done: bool = True) -> bytes:
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                                              "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hel"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 2}},
    ] + ([{"type": "message_stop"}] if done else [])
    nl = "\r\n" if crlf else "\n"
    return "".join(f"event: {e['type']}{nl}data: {json.dumps(e)}{nl}{nl}" for e in events).encode()


def provider_stream(direction: str, **kwargs: Any) -> bytes:
    return chat_stream(**kwargs) if direction.endswith("chat") else anthropic_stream(**kwargs)


def provider_ok(direction: str) -> bytes:
    return json.dumps(CHAT_OK if direction.endswith("chat") else ANTHROPIC_OK).encode()


def post_stream(gateway: Gateway, path: str, direction: str, stream: bool = True) -> tuple[int, Headers, bytes]:
    body = dict(BASES[direction])
    if stream:
        body["stream"] = True
    return gateway.post(path, json.dumps(body).encode())


def client_events(direction: str, answer: bytes) -> list[Any]:
    """The client's stream as parsed data lines (the terminator as the string)."""
    out: list[Any] = []
    for line in answer.decode("utf-8").splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_complete_client_stream(direction: str, answer: bytes) -> None:
    """A stream the client's SDK accepts as finished, with the text and the tool call."""
    events = client_events(direction, answer)
    if direction.startswith("messages"):
        assert events[-1] == {"type": "message_stop"}
        text = "".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta")
        assert "hel" in text
        assert any(e.get("type") == "content_block_start" and e["content_block"]["type"] == "tool_use" for e in events)
    elif direction.startswith("chat"):
        assert events[-1] == "[DONE]"
        assert not any(isinstance(e, dict) and "error" in e for e in events)
    else:
        assert events[-1]["type"] == "response.completed"
        items = events[-1]["response"]["output"]
        assert [item["type"] for item in items] == ["message", "function_call"]
        assert items[1]["arguments"] == '{"a":1}' or json.loads(items[1]["arguments"]) == {"a": 1}


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize(
    "variant",
    ["crlf", "one_byte_per_chunk", "garbage_lines", "no_terminator"],
)
def test_odd_but_complete_provider_streams_reach_the_client_whole(direction: str, variant: str) -> None:
    """CRLF line ends, one byte per read, garbage lines and comments, no [DONE]/message_stop."""
    body = provider_stream(direction, crlf=variant == "crlf", done=variant != "no_terminator")
    if variant == "garbage_lines":
        body = b"data: {garbage\n\n: a comment\n\nfoo bar\n\n" + body
    gateway, path = gateway_for(direction, Response(200, body, SSE_HEADERS, pieces=1 if variant == "one_byte_per_chunk" else 0))
    status, headers, answer = post_stream(gateway, path, direction)
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert_complete_client_stream(direction, answer)
    [exchange] = gateway.exchanges
    assert exchange.outcome == "ok", exchange.error


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("cut", ["mid_tool_arguments", "empty_body"])
def test_a_stream_that_ends_before_its_finish_is_an_error_event_and_a_stream_error_on_the_record(
    direction: str, cut: str
) -> None:
    """
    A provider whose body ends cleanly but before its finish reason (a
    proxy that buffers and gives up, a crash between chunks): the client
    got an error event, yet the record said ``ok``.  Now ``stream_error``
    with why.
    """
    full = provider_stream(direction)
    body = full[: full.index(b"1}")] if cut == "mid_tool_arguments" else b""
    gateway, path = gateway_for(direction, Response(200, body, SSE_HEADERS))
    status, _, answer = post_stream(gateway, path, direction)
    assert status == 200
    last = client_events(direction, answer)[-1]
    if direction.startswith("messages"):
        assert last["type"] == "error"
    elif direction.startswith("chat"):
        assert "error" in last
    else:
        assert last["type"] == "response.failed"
    [exchange] = gateway.exchanges
    assert exchange.outcome == "stream_error"
    assert "ended early" in (exchange.error or "")


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_a_json_answer_to_a_stream_request_reaches_the_client_as_a_stream(direction: str) -> None:
    """
    A server that ignores ``stream: true`` and answers one JSON object:
    the client asked for a stream and got ``application/json`` (its SDK's
    stream helper found no events).  Now the answer is replayed as the
    client's stream.
    """
    gateway, path = gateway_for(direction, Response(200, provider_ok(direction), JSON_HEADERS))
    status, headers, answer = post_stream(gateway, path, direction)
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    events = client_events(direction, answer)
    if direction.startswith("messages"):
        assert events[0]["type"] == "message_start" and events[-1] == {"type": "message_stop"}
        assert "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta") == "hello"
    elif direction.startswith("chat"):
        assert events[-1] == "[DONE]"
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == "hello"
    else:
        assert events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "hello"
    assert gateway.exchanges[0].outcome == "ok"


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_a_stream_answer_to_a_json_request_is_a_clear_502(direction: str) -> None:
    """The reverse: a stream the client did not ask for was sent as text/event-stream to a JSON client."""
    gateway, path = gateway_for(direction, Response(200, provider_stream(direction), SSE_HEADERS))
    status, headers, answer = post_stream(gateway, path, direction, stream=False)
    assert status == 502 and headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert "did not ask for a stream" in assert_client_error(direction, status, answer)["error"]["message"]
    [exchange] = gateway.exchanges
    assert exchange.outcome == "gateway_error" and "did not ask for a stream" in (exchange.error or "")


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"text/html"),
        (500, b"upstream exploded", b"text/plain"),
        (200, b"", b"application/json"),
        (200, b"{not json", b"application/json"),
        (200, b"[1, 2]", b"application/json"),
    ],
)
def test_unreadable_provider_answers_are_errors_in_the_clients_dialect(
    direction: str, status: int, body: bytes, content_type: bytes
) -> None:
    gateway, path = gateway_for(direction, Response(status, body, {b"content-type": [content_type]}))
    code, headers, answer = post_stream(gateway, path, direction, stream=False)
    assert code == (status if status >= 400 else 502)
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert_client_error(direction, code, answer)
    [exchange] = gateway.exchanges
    assert exchange.outcome == ("upstream_error" if status >= 400 else "gateway_error")


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_the_providers_key_never_reaches_the_client_even_when_its_error_echoes_it(direction: str) -> None:
    """A provider error body quoting the key it was sent: the client's copy has it redacted."""
    _, providers, _ = DIRECTIONS[direction]
    key = next(p["api_key"] for p in providers.values() if p.get("api_key"))
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}})
    gateway, path = gateway_for(direction, Response(401, echo.encode()))
    status, _, answer = post_stream(gateway, path, direction, stream=False)
    assert status == 401 and key.encode() not in answer and b"[redacted]" in answer
    stream = provider_stream(direction)[:40] + key.encode()
    gateway, path = gateway_for(direction, Response(200, stream, SSE_HEADERS))
    _, _, answer = post_stream(gateway, path, direction)
    assert key.encode() not in answer


# -- 5. security ---------------------------------------------------------------


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_model_names_never_reach_the_provider_url(direction: str) -> None:
    """A model_map target or a client model full of path syntax stays a JSON string; the path is the translator's."""
    path, providers, ok = DIRECTIONS[direction]
    hostile = "../../admin/keys?steal=1#x"
    mapped = {name: dict(p, model_map={"claude-x": hostile, "gpt-5": hostile}) if p.get("api_key") else p
              for name, p in providers.items()}
    gateway = Gateway(mapped, Response(body=json.dumps(ok).encode()))
    for model in (BASES[direction]["model"], "/../../v1/files%2f..?x=1"):
        status, _, answer = gateway.post(path, with_(BASES[direction], model=model))
        assert status == 200, answer
    first, second = gateway.calls()
    target = "/v1/chat/completions" if direction.endswith("chat") else "/v1/messages"
    assert first["path"] == second["path"] == target and first["query"] == second["query"] == b""
    assert json.loads(first["body"])["model"] == hostile
    assert json.loads(second["body"])["model"] == "/../../v1/files%2f..?x=1"


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_the_clients_other_dialect_credentials_and_cookies_are_never_forwarded(direction: str) -> None:
    gateway, path = gateway_for(direction)
    headers = {
        b"x-api-key": [b"sk-ant-client"], b"authorization": [b"Bearer sk-client"],
        b"anthropic-version": [b"2023-06-01"], b"anthropic-beta": [b"x"], b"openai-organization": [b"org-c"],
        b"openai-project": [b"proj-c"], b"cookie": [b"session=c"], b"proxy-authorization": [b"Basic c"],
    }
    status, _, _ = gateway.post(path + "?beta=true", json.dumps(BASES[direction]).encode(), headers)
    assert status == 200
    [call] = gateway.calls()
    sent: Headers = call["headers"]
    assert call["query"] == b""
    for name in (b"x-api-key", b"anthropic-beta", b"cookie", b"proxy-authorization"):
        assert not sent.hasHeader(name), name
    if direction == "responses->chat":
        # One family: the client's own OpenAI credentials may go along (the provider's key wins when set).
        return
    assert not sent.hasHeader(b"authorization")
    assert not sent.hasHeader(b"openai-organization") and not sent.hasHeader(b"openai-project")
    if direction.endswith("chat"):
        assert not sent.hasHeader(b"anthropic-version")


def deep_tool_body(direction: str, depth: int, leaf: bytes) -> bytes:
    schema = {"type": "object", "x": "X"}
    tool: dict[str, Any] = {
        "messages->chat": {"name": "f", "input_schema": schema},
        "chat->messages": {"type": "function", "function": {"name": "f", "parameters": schema}},
    }.get(direction, {"type": "function", "name": "f", "parameters": schema})
    return with_(BASES[direction], tools=[tool]).replace(b'"X"', b"[" * depth + leaf + b"]" * depth)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_deeply_nested_bodies_are_answered_never_a_500(direction: str) -> None:
    """
    Bodies just inside the parser's nesting limit went past it once the
    translation's own frames were added (RecursionError in the encoder or
    the NaN search: a 500).  Every depth is now a 200 or a 400 in the
    client's dialect.
    """
    for depth in range(900, 1001, 3):
        gateway, path = gateway_for(direction)
        status, _, answer = gateway.post(path, deep_tool_body(direction, depth, b"1"))
        assert status in (200, 400), (depth, answer)
        if status == 400:
            assert "nested too deeply" in assert_client_error(direction, status, answer)["error"]["message"]
    # A NaN deep down is named by a path cut short.
    gateway, path = gateway_for(direction)
    status, _, answer = gateway.post(path, deep_tool_body(direction, 400, b"NaN"))
    message = assert_client_error(direction, status, answer)["error"]["message"]
    assert status == 400 and "finite" in message and len(message) < 600


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_an_error_status_sent_as_an_event_stream_keeps_the_providers_message(direction: str) -> None:
    """A 529 whose body is an SSE error event: the client's error carried the raw 'event: error\\ndata: ...' text."""
    body = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy now"}}\n\n'
    gateway, path = gateway_for(direction, Response(529, body, SSE_HEADERS))
    status, _, answer = post_stream(gateway, path, direction)
    assert status == 529
    assert assert_client_error(direction, status, answer)["error"]["message"] == "busy now"


def _chat_chunk(delta: Any, finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "model": "g", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.parametrize("pair", [("anthropic", "openai_chat"), ("openai_responses", "openai_chat")])
def test_a_chat_servers_object_arguments_and_missing_call_ids_are_kept(pair: tuple[str, str]) -> None:
    """
    Some OpenAI-compatible servers send a tool call's ``arguments`` as an
    object, or no call ``id``: the arguments were dropped (the tool ran with
    ``{}``) and the id was empty (the result could not be paired).  Now the
    object's JSON is the arguments and a fresh id is made, streamed or not.
    """
    from lunaroute.dialects.translate import base

    translator = base.translator_for(*pair)
    assert translator is not None
    stream = translator.stream("m")
    events: list[Any] = [
        _chat_chunk({"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": {"path": "a.txt"}}},
            {"index": 1, "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ]}),
        _chat_chunk({}, "tool_calls"),
        "[DONE]",
    ]
    out = (b"".join(stream.feed(event) for event in events) + stream.close()).decode()
    datas = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: ")]
    if pair[0] == "anthropic":
        starts = [d["content_block"] for d in datas if d["type"] == "content_block_start"]
        partial = [d["delta"]["partial_json"] for d in datas if d["type"] == "content_block_delta"]
        assert starts[0]["id"] == "call_a" and starts[1]["id"].startswith("call_") and len(starts[1]["id"]) > 5
        assert json.loads(partial[0]) == {"path": "a.txt"}
    else:
        calls = [item for item in datas[-1]["response"]["output"] if item["type"] == "function_call"]
        assert calls[0]["call_id"] == "call_a" and calls[1]["call_id"].startswith("call_") and len(calls[1]["call_id"]) > 5
        assert json.loads(calls[0]["arguments"]) == {"path": "a.txt"}

    whole = dict(CHAT_OK, choices=[{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"path": "b.txt"}}}]}}])
    answer = translator.response(whole, "m")
    if pair[0] == "anthropic":
        [block] = answer["content"]
        assert block["input"] == {"path": "b.txt"} and block["id"].startswith("call_") and len(block["id"]) > 5
    else:
        [item] = answer["output"]
        assert json.loads(item["arguments"]) == {"path": "b.txt"} and len(item["call_id"]) > 5


def test_the_lone_surrogate_search_passes_pairs_and_catches_every_lone_one() -> None:
    """
    The search runs on every translated body: emoji (surrogate pairs once
    escaped, in many Claude Code prompts) must not send it down the slow
    path, every lone surrogate must.
    """
    from lunaroute.proxy.translating import has_lone_surrogate

    def escaped(text: str) -> str:
        return json.dumps({"t": text}, separators=(",", ":"))

    for fine in ("plain", "\U0001f916 made with Claude Code", "\U0001f916\U0001f40d", "é ü 中"):
        assert not has_lone_surrogate(escaped(fine)), fine
    for lone in ("a\ud800b", "a\udc00b", "\ud800\ud800", "x\udfff", "end\ud800", "\U0001f916\udc00", "\udc00\U0001f916"):
        assert has_lone_surrogate(escaped(lone)), repr(lone)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_(MSG, messages=5), "messages"),
        (with_(MSG, messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]), "messages[0].content[0].text"),
        (with_(MSG, tools="all"), "tools"),
    ],
)
def test_count_tokens_on_a_hostile_body_is_a_400_not_an_estimate(body: bytes, field: str) -> None:
    """count_tokens estimated by the gateway estimated anything (messages: 5 gave 4 tokens); a too-deep body was a 500."""
    gateway = Gateway(OPENAI_ONLY)
    status, _, answer = gateway.post("/v1/messages/count_tokens", body)
    assert status == 400
    assert_client_error("messages->chat", status, answer, field + ":")
    assert gateway.calls() == [] and gateway.exchanges[0].outcome == "bad_request"


def test_count_tokens_on_a_deeply_nested_body_is_never_a_500() -> None:
    for depth in range(900, 1001, 3):
        gateway = Gateway(OPENAI_ONLY)
        status, _, answer = gateway.post("/v1/messages/count_tokens", deep_tool_body("messages->chat", depth, b"1"))
        assert status in (200, 400), (depth, answer)
        assert_client_error("messages->chat", status, answer) if status == 400 else json.loads(answer)["input_tokens"]
