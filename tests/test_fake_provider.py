"""
Tests for the fake upstream provider.

The fake is only useful if it is indistinguishable from the real APIs, so
these tests drive it over real 127.0.0.1 sockets with the official
C{anthropic} and C{openai} SDKs (blocking calls run in threads) and check the
raw bytes where the SDKs would hide a difference; a few drive its resource in
memory with a L{Clock} to prove every delay uses the injected reactor.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable, Generator
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import openai
import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from lunaroute.testing.fake_provider import FakeProvider, ReceivedRequest, estimate_tokens

T = TypeVar("T")

HELLO = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL = {
    "name": "lookup_city",
    "description": "Look a city up.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
WAIT = 5.0


class Served:
    """A fake provider listening on an ephemeral 127.0.0.1 port."""

    def __init__(self, provider: FakeProvider, port: int) -> None:
        self.provider = provider
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def anthropic(self, **kwargs: Any) -> anthropic.Anthropic:
        """An Anthropic SDK client aimed at the fake, with no retries."""
        return anthropic.Anthropic(base_url=self.url, api_key="test", max_retries=0, **kwargs)

    def openai(self, base_path: str = "/v1", **kwargs: Any) -> openai.OpenAI:
        """An OpenAI SDK client aimed at the fake, with no retries."""
        return openai.OpenAI(base_url=self.url + base_path, api_key="test", max_retries=0, **kwargs)


@pytest.fixture
def served() -> Generator[Served, None, None]:
    """Start a fake provider on the real reactor and stop it afterwards."""
    provider = FakeProvider(reactor)
    port = provider.listen(0)
    yield Served(provider, port.getHost().port)
    pytest_twisted.blockon(provider.stop())


def in_thread(function: Callable[[], T]) -> Deferred[T]:
    """Run a blocking SDK call off the reactor thread, bounded in time."""
    return deferToThread(function).addTimeout(WAIT, reactor)


class Collector(Protocol):
    """Collects a streamed body and fires Deferreds as markers arrive."""

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None
        self.done: Deferred[None] = Deferred()
        self._markers: list[tuple[bytes, Deferred[bytes]]] = []

    def wait_for(self, marker: bytes) -> Deferred[bytes]:
        """Fire with the data so far once C{marker} has been received."""
        waiter: Deferred[bytes] = Deferred()
        self._markers.append((marker, waiter))
        self._check()
        return waiter.addTimeout(WAIT, reactor)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def _check(self) -> None:
        ready = [(m, d) for m, d in self._markers if m in self.data]
        self._markers = [(m, d) for m, d in self._markers if m not in self.data]
        for _, waiter in ready:
            waiter.callback(self.data)

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]
        # A Failure passed to callback() would run the errback chain: wrap it.
        self.reason = reason
        self.done.callback(None)


def post(url: str, payload: Any, headers: dict[str, str] | None = None) -> Deferred[IResponse]:
    """POST JSON with a plain Agent: no decoding, headers exactly as given."""
    raw = {"content-type": ["application/json"]}
    for name, value in (headers or {}).items():
        raw[name] = [value]
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Agent(reactor).request(b"POST", url.encode(), Headers(raw), FileBodyProducer(BytesIO(body)))


def read_body(response: IResponse) -> Deferred[bytes]:
    """The whole body of C{response}, once it ended normally."""
    collector = Collector()
    response.deliverBody(collector)

    def check(_: object) -> bytes:
        assert collector.reason is not None
        collector.reason.trap(ResponseDone)
        return collector.data

    return collector.done.addCallback(check)


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event name, data) pairs, checking the framing."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        name = None
        if lines[0].startswith("event: "):
            name = lines.pop(0)[len("event: ") :]
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        events.append((name, lines[0][len("data: ") :]))
    return events


# -- Anthropic ---------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_anthropic_stream_wire_format_is_exact(served: Served) -> Generator[Any, Any, None]:
    """The default Anthropic stream has the real event order, framing and headers."""
    payload = {"model": "claude-test", "max_tokens": 64, "stream": True, "messages": HELLO}
    response = yield post(served.url + "/v1/messages", payload)
    raw = yield read_body(response)
    events = sse_events(raw)
    names = [name for name, _ in events]
    deltas = names.count("content_block_delta")
    assert names == (
        ["message_start", "content_block_start", "ping"]
        + ["content_block_delta"] * deltas
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert deltas >= 3
    data = [json.loads(d) for _, d in events]
    assert [d["type"] for d in data] == names
    message = data[0]["message"]
    assert message["id"].startswith("msg_") and message["model"] == "claude-test"
    assert message["content"] == [] and message["stop_reason"] is None
    assert set(message["usage"]) >= {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    }
    texts = [d["delta"]["text"] for d in data if d["type"] == "content_block_delta"]
    assert "".join(texts) == served.provider.reply_text
    assert any(len(t.encode()) > len(t) for t in texts), "no multi-byte delta"
    assert data[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[-2]["usage"] == {"output_tokens": estimate_tokens(served.provider.reply_text)}
    headers = response.headers
    assert headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    assert headers.getRawHeaders("request-id")[0].startswith("req_")
    assert headers.getRawHeaders("anthropic-ratelimit-requests-remaining")


@pytest_twisted.inlineCallbacks
def test_anthropic_sdk_parses_text_stream(served: Served) -> Generator[Any, Any, None]:
    """C{messages.stream().get_final_message()} rebuilds the text and usage."""

    def call() -> Any:
        with served.anthropic() as client:
            with client.messages.stream(model="claude-sonnet-test", max_tokens=64, messages=HELLO) as stream:
                return stream.get_final_message()

    message = yield in_thread(call)
    assert message.content[0].text == served.provider.reply_text
    assert message.model == "claude-sonnet-test"
    assert message.stop_reason == "end_turn"
    body = served.provider.requests[-1].body
    assert message.usage.input_tokens == estimate_tokens(body)
    assert message.usage.output_tokens == estimate_tokens(served.provider.reply_text)


@pytest_twisted.inlineCallbacks
def test_anthropic_non_streaming_message(served: Served) -> Generator[Any, Any, None]:
    """A non-streaming request gets the full Messages object."""
    served.provider.default_text = "Plain answer."
    served.provider.text_suffix = ""

    def call() -> Any:
        with served.anthropic() as client:
            return client.messages.create(model="claude-x", max_tokens=64, messages=HELLO)

    message = yield in_thread(call)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == "Plain answer."
    assert message.stop_sequence is None
    assert message.usage.cache_read_input_tokens == 0


@pytest_twisted.inlineCallbacks
def test_anthropic_tools_echo_the_first_offered_tool(served: Served) -> Generator[Any, Any, None]:
    """C{tools} calls the request's first tool with streamed JSON input, then answers a result."""

    def call() -> Any:
        with served.anthropic() as client:
            with client.messages.stream(
                model="fake-tools", max_tokens=64, messages=HELLO, tools=[WEATHER_TOOL]
            ) as stream:
                first = stream.get_final_message()
            follow_up = [
                *HELLO,
                {"role": "assistant", "content": [block.model_dump() for block in first.content]},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": first.content[0].id, "content": "ok"}],
                },
            ]
            second = client.messages.create(
                model="fake-tools", max_tokens=64, messages=follow_up, tools=[WEATHER_TOOL]
            )
            return first, second

    first, second = yield in_thread(call)
    assert first.stop_reason == "tool_use"
    (tool_use,) = first.content
    assert tool_use.type == "tool_use" and tool_use.id.startswith("toolu_")
    assert tool_use.name == "lookup_city"
    assert tool_use.input == {"city": "fake", "days": 1}
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == served.provider.reply_text


@pytest_twisted.inlineCallbacks
def test_anthropic_input_json_arrives_in_pieces(served: Served) -> Generator[Any, Any, None]:
    """Tool input is streamed as several C{input_json_delta} pieces of C{get_weather}."""
    payload = {"model": "fake-tools", "max_tokens": 64, "stream": True, "messages": HELLO}
    response = yield post(served.url + "/v1/messages", payload)
    data = [json.loads(d) for _, d in sse_events((yield read_body(response)))]
    start = data[1]["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "get_weather" and start["input"] == {}
    pieces = [d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta"]
    assert len([p for p in pieces if p]) >= 3
    assert json.loads("".join(pieces)) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


@pytest_twisted.inlineCallbacks
def test_model_can_name_the_tool_to_call(served: Served) -> Generator[Any, Any, None]:
    """A tool named in the model (C{fake-tools-bash}) is called instead of the first one."""
    bash = {
        "name": "Bash",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    }
    payload = {"model": "fake-tools-bash", "max_tokens": 8, "messages": HELLO, "tools": [WEATHER_TOOL, bash]}
    response = yield post(served.url + "/v1/messages", payload)
    message = json.loads((yield read_body(response)))
    (tool_use,) = message["content"]
    assert tool_use["name"] == "Bash"
    assert tool_use["input"] == {"command": "echo hello from the fake provider"}


@pytest_twisted.inlineCallbacks
def test_anthropic_parallel_tools(served: Served) -> Generator[Any, Any, None]:
    """C{tools-parallel} gives a text block then two tool_use blocks."""

    def call() -> Any:
        with served.anthropic() as client:
            with client.messages.stream(model="fake-tools-parallel", max_tokens=64, messages=HELLO) as stream:
                return stream.get_final_message()

    message = yield in_thread(call)
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].id != message.content[2].id
    assert message.content[2].input == {"location": "Tokyo, Japan", "unit": "celsius"}


@pytest_twisted.inlineCallbacks
def test_anthropic_thinking_block(served: Served) -> Generator[Any, Any, None]:
    """C{thinking} streams thinking deltas and a signature before the text."""

    def call() -> Any:
        with served.anthropic() as client:
            with client.messages.stream(
                model="claude-opus",
                max_tokens=2048,
                messages=HELLO,
                thinking={"type": "enabled", "budget_tokens": 1024},
            ) as stream:
                return stream.get_final_message()

    message = yield in_thread(call)
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert text.text == served.provider.reply_text


@pytest_twisted.inlineCallbacks
def test_anthropic_error_midstream(served: Served) -> Generator[Any, Any, None]:
    """C{error-midstream} sends an C{error} event after some deltas; the SDK raises it."""
    received: list[str] = []

    def call() -> None:
        with served.anthropic() as client:
            with client.messages.stream(
                model="fake-error-midstream", max_tokens=64, messages=HELLO
            ) as stream:
                for text in stream.text_stream:
                    received.append(text)

    def catch() -> anthropic.APIStatusError:
        with pytest.raises(anthropic.APIStatusError) as caught:
            call()
        return caught.value

    error = yield in_thread(catch)
    assert error.body["error"]["type"] == "overloaded_error"
    assert len(received) == 2


@pytest_twisted.inlineCallbacks
def test_anthropic_overloaded_and_rate_limit(served: Served) -> Generator[Any, Any, None]:
    """C{overloaded} is a 529 overloaded_error; C{rate-limit} a 429 with retry-after."""

    def call(model: str) -> Callable[[], anthropic.APIStatusError]:
        def run() -> anthropic.APIStatusError:
            with served.anthropic() as client:
                try:
                    client.messages.create(model=model, max_tokens=8, messages=HELLO)
                except anthropic.APIStatusError as error:
                    return error
            raise AssertionError("no error")

        return run

    overloaded = yield in_thread(call("fake-overloaded"))
    assert overloaded.status_code == 529
    assert overloaded.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert overloaded.body["request_id"].startswith("req_")
    limited = yield in_thread(call("fake-rate-limit"))
    assert limited.status_code == 429
    assert limited.response.headers["retry-after"] == "1"


@pytest_twisted.inlineCallbacks
def test_next_response_is_used_once(served: Served) -> Generator[Any, Any, None]:
    """C{next_response} replaces exactly one answer, then normal service resumes."""
    served.provider.next_response = (500, {"x-test": "1"}, b'{"error":"boom"}')
    first = yield post(served.url + "/v1/messages", {"model": "m", "messages": HELLO})
    assert first.code == 500 and (yield read_body(first)) == b'{"error":"boom"}'
    assert first.headers.getRawHeaders("x-test") == ["1"]
    second = yield post(served.url + "/v1/messages", {"model": "m", "messages": HELLO})
    assert second.code == 200
    yield read_body(second)


@pytest_twisted.inlineCallbacks
def test_gzip_only_when_accepted(served: Served) -> Generator[Any, Any, None]:
    """C{gzip} compresses non-streaming bodies only for clients that accept gzip."""
    payload = {"model": "fake-gzip", "max_tokens": 8, "messages": HELLO}
    zipped = yield post(served.url + "/v1/messages", payload, {"accept-encoding": "gzip, br"})
    assert zipped.headers.getRawHeaders("content-encoding") == ["gzip"]
    body = json.loads(gzip.decompress((yield read_body(zipped))))
    assert body["content"][0]["text"] == served.provider.reply_text
    plain = yield post(served.url + "/v1/messages", payload, {"accept-encoding": "identity"})
    assert plain.headers.getRawHeaders("content-encoding") is None
    assert json.loads((yield read_body(plain)))["type"] == "message"


@pytest_twisted.inlineCallbacks
def test_invalid_json_and_count_tokens(served: Served) -> Generator[Any, Any, None]:
    """Bad JSON gets an Anthropic 400; count_tokens answers from the body length."""
    bad = yield post(served.url + "/v1/messages", b"{not json")
    error = json.loads((yield read_body(bad)))
    assert bad.code == 400 and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"

    def call() -> Any:
        with served.anthropic() as client:
            return client.messages.count_tokens(model="claude-x", messages=HELLO)

    counted = yield in_thread(call)
    assert counted.input_tokens == estimate_tokens(served.provider.requests[-1].body)


@pytest_twisted.inlineCallbacks
def test_root_probe_and_request_recording(served: Served) -> Generator[Any, Any, None]:
    """C{HEAD /} is an empty 200 and every request is recorded raw."""
    agent = Agent(reactor)
    head = yield agent.request(b"HEAD", served.url.encode() + b"/")
    assert head.code == 200
    payload = {"model": "m", "max_tokens": 8, "messages": HELLO}
    response = yield post(served.url + "/v1/messages?beta=true", payload, {"X-Claude-Code-Session-Id": "abc"})
    yield read_body(response)
    probe, message = served.provider.requests
    assert (probe.method, probe.path, probe.body) == ("HEAD", "/", b"")
    assert isinstance(message, ReceivedRequest)
    assert (message.method, message.path, message.query) == ("POST", "/v1/messages", b"beta=true")
    assert message.headers["x-claude-code-session-id"] == ["abc"]
    assert message.header("Content-Type") == "application/json"
    assert message.json == payload and json.loads(message.body) == payload


# -- OpenAI Chat Completions -----------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_chat_stream_with_usage(served: Served) -> Generator[Any, Any, None]:
    """Chat streaming sends role, content deltas, finish, a usage chunk and [DONE]."""

    def call() -> Any:
        with served.openai() as client:
            stream = client.chat.completions.create(
                model="gpt-test",
                messages=HELLO,
                stream=True,
                stream_options={"include_usage": True},
            )
            return list(stream)

    chunks = yield in_thread(call)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == served.provider.reply_text
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage.prompt_tokens == estimate_tokens(served.provider.requests[-1].body)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0
    response = yield post(
        served.url + "/chat/completions",
        {"model": "gpt-test", "messages": HELLO, "stream": True},
    )
    raw = yield read_body(response)
    assert raw.endswith(b"data: [DONE]\n\n") and b"event:" not in raw
    assert b'"usage"' not in raw


@pytest_twisted.inlineCallbacks
def test_chat_stream_tool_calls(served: Served) -> Generator[Any, Any, None]:
    """The chat stream helper assembles tool_calls fragments into both calls."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "run",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                },
            },
        }
    ]

    def call() -> Any:
        with served.openai() as client:
            with client.chat.completions.stream(
                model="gpt-tools-parallel", messages=HELLO, tools=tools
            ) as stream:
                return stream.get_final_completion()

    completion = yield in_thread(call)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["run", "run"]
    assert json.loads(calls[0].function.arguments) == {"command": ["echo", "hello from the fake provider"]}
    assert calls[0].id.startswith("call_") and calls[0].id != calls[1].id


@pytest_twisted.inlineCallbacks
def test_chat_non_streaming_and_error_midstream(served: Served) -> Generator[Any, Any, None]:
    """A plain chat.completion parses; C{error-midstream} makes the SDK raise."""

    def call() -> Any:
        with served.openai() as client:
            completion = client.chat.completions.create(model="gpt-x", messages=HELLO)
            try:
                list(client.chat.completions.create(model="gpt-error-midstream", messages=HELLO, stream=True))
            except openai.APIError as error:
                return completion, error
            raise AssertionError("no error")

    completion, error = yield in_thread(call)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == served.provider.reply_text
    assert completion.choices[0].finish_reason == "stop"
    assert error.body["type"] == "server_error"


# -- OpenAI Responses -----------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_responses_stream_text(served: Served) -> Generator[Any, Any, None]:
    """C{responses.stream} sees the full event sequence and the final usage."""

    def call() -> Any:
        with served.openai() as client:
            with client.responses.stream(model="gpt-5", input="hi") as stream:
                events = [event for event in stream]
                return events, stream.get_final_response()

    events, final = yield in_thread(call)
    types = [e.type for e in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 3
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == served.provider.reply_text
    usage = final.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


@pytest_twisted.inlineCallbacks
def test_responses_function_call_and_reasoning(served: Served) -> Generator[Any, Any, None]:
    """C{tools} yields a function_call item; C{thinking} a reasoning item first."""
    tools = [
        {
            "type": "function",
            "name": "shell",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        }
    ]

    def call() -> Any:
        with served.openai() as client:
            with client.responses.stream(model="gpt-thinking-tools", input="hi", tools=tools) as stream:
                events = [event.type for event in stream]
                return events, stream.get_final_response()

    events, final = yield in_thread(call)
    reasoning, function_call = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text
    assert function_call.type == "function_call" and function_call.name == "shell"
    assert json.loads(function_call.arguments) == {"command": "echo hello from the fake provider"}
    assert events.count("response.function_call_arguments.delta") >= 3
    assert "response.function_call_arguments.done" in events
    assert "response.reasoning_summary_text.delta" in events
    assert final.usage.output_tokens_details.reasoning_tokens > 0


@pytest_twisted.inlineCallbacks
def test_responses_non_streaming_on_bare_path(served: Served) -> Generator[Any, Any, None]:
    """C{POST /responses} (no /v1) returns the response object; a tool result ends the loop."""
    history = [
        {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"},
    ]

    def call() -> Any:
        with served.openai(base_path="") as client:
            return client.responses.create(model="gpt-tools", input=history)

    response = yield in_thread(call)
    assert served.provider.requests[-1].path == "/responses"
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == served.provider.reply_text


# -- models and bypass targets ----------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_models_lists_in_both_dialects(served: Served) -> Generator[Any, Any, None]:
    """C{GET /v1/models} answers OpenAI-style, or Anthropic-style with anthropic-version."""

    def call() -> Any:
        with served.openai() as oai, served.anthropic() as ant:
            return list(oai.models.list()), ant.models.list()

    openai_models, anthropic_page = yield in_thread(call)
    assert openai_models[0].object == "model" and openai_models[0].owned_by
    assert anthropic_page.data[0].type == "model" and anthropic_page.data[0].display_name
    assert anthropic_page.has_more is False
    assert anthropic_page.first_id == anthropic_page.data[0].id


@pytest_twisted.inlineCallbacks
def test_bypass_targets(served: Served) -> Generator[Any, Any, None]:
    """Embeddings, file uploads and speech parse with the SDK; unknown paths are 404."""
    upload = b"line one\n\xff\xfe binary\n" * 50

    def call() -> Any:
        with served.openai() as client:
            embeddings = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
            file_object = client.files.create(file=("notes.jsonl", upload), purpose="batch")
            speech = client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
            try:
                client.get("/nope", cast_to=object)
            except openai.NotFoundError as error:
                return embeddings, file_object, speech.content, error
            raise AssertionError("no 404")

    embeddings, file_object, audio, missing = yield in_thread(call)
    assert [e.index for e in embeddings.data] == [0, 1] and len(embeddings.data[0].embedding) == 8
    assert file_object.bytes == len(upload) and file_object.filename == "notes.jsonl"
    assert upload in served.provider.requests[-3].body
    assert audio == FakeProvider.speech_bytes("hi")
    with pytest.raises(UnicodeDecodeError):
        audio.decode("utf-8")
    assert missing.body["message"] == "Invalid URL (GET /v1/nope)"


# -- timing, gate, disconnects -----------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_gate_holds_stream_after_first_content_event(served: Served) -> Generator[Any, Any, None]:
    """With a gate set, the stream stops after its first delta until the gate fires."""
    gate: Deferred[None] = Deferred()
    served.provider.gate = gate
    payload = {"model": "m", "max_tokens": 8, "stream": True, "messages": HELLO}
    response = yield post(served.url + "/v1/messages", payload)
    collector = Collector()
    response.deliverBody(collector)
    yield collector.wait_for(b"content_block_delta")
    yield deferLater(reactor, 0.05, lambda: None)
    assert collector.data.count(b"event: content_block_delta") == 1
    assert b"message_stop" not in collector.data
    gate.callback(None)
    yield collector.done
    assert collector.reason is not None and collector.reason.check(ResponseDone)
    assert collector.data.endswith(b'data: {"type":"message_stop"}\n\n')
    assert served.provider.disconnects == []


@pytest_twisted.inlineCallbacks
def test_client_closing_mid_stream_is_recorded(served: Served) -> Generator[Any, Any, None]:
    """A client that closes a held stream shows up in C{disconnects}."""
    served.provider.gate = Deferred()

    def call() -> str:
        with served.anthropic() as client:
            with client.messages.stream(model="m", max_tokens=8, messages=HELLO) as stream:
                for event in stream:
                    if event.type == "content_block_delta":
                        return event.delta.text
        raise AssertionError("no delta")

    first = yield in_thread(call)
    assert served.provider.reply_text.startswith(first)
    path = yield served.provider.on_disconnect().addTimeout(WAIT, reactor)
    assert path == "/v1/messages" and served.provider.disconnects == ["/v1/messages"]
    served.provider.gate.callback(None)


@pytest_twisted.inlineCallbacks
def test_hang_times_out_and_is_recorded(served: Served) -> Generator[Any, Any, None]:
    """C{hang} never answers: the client times out and the fake sees it leave."""

    def call() -> Exception:
        with served.openai(timeout=0.3) as client:
            try:
                client.chat.completions.create(model="gpt-hang", messages=HELLO)
            except openai.APITimeoutError as error:
                return error
        raise AssertionError("answered")

    yield in_thread(call)
    path = yield served.provider.on_disconnect().addTimeout(WAIT, reactor)
    assert path == "/v1/chat/completions"


@pytest_twisted.inlineCallbacks
def test_drop_closes_connection_mid_body(served: Served) -> Generator[Any, Any, None]:
    """C{drop} cuts the TCP connection after two deltas; not counted as a client leaving."""
    payload = {"model": "gpt-drop", "stream": True, "messages": HELLO}
    response = yield post(served.url + "/v1/chat/completions", payload)
    collector = Collector()
    response.deliverBody(collector)
    yield collector.done
    assert collector.reason is not None and not collector.reason.check(ResponseDone)
    assert collector.data.count(b'"content":') == 3  # the role chunk and two deltas
    assert b"[DONE]" not in collector.data
    assert served.provider.disconnects == []


def test_slow_stream_and_delays_follow_the_injected_clock() -> None:
    """In memory, C{slow} spaces events 0.5 s apart on the given Clock only."""
    clock = Clock()
    provider = FakeProvider(clock)
    provider.response_delay = 1.0
    stub = StubTreq(provider.resource())
    payload = {"model": "fake-slow", "max_tokens": 8, "stream": True, "messages": HELLO}
    results: list[Any] = []
    stub.post("http://fake/v1/messages", json=payload, unbuffered=True).addCallback(results.append)
    stub.flush()
    assert results == []
    clock.advance(1.0)
    stub.flush()
    chunks: list[bytes] = []
    done = treq.collect(results[0], chunks.append)
    stub.flush()
    assert b"".join(chunks).count(b"\n\n") == 1
    clock.advance(0.5)
    stub.flush()
    assert b"".join(chunks).count(b"\n\n") == 2
    while not done.called:
        clock.advance(0.5)
        stub.flush()
    assert b"".join(chunks).endswith(b'data: {"type":"message_stop"}\n\n')


def test_standalone_command_prints_its_port() -> None:
    """C{python -m lunaroute.testing.fake_provider} prints its port and serves it."""
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "lunaroute.testing.fake_provider", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="test", max_retries=0
        ) as client:
            message = client.messages.create(model="claude-x", max_tokens=8, messages=HELLO)
        assert message.content[0].text.startswith("Hello from the fake provider.")
    finally:
        process.terminate()
        process.wait(WAIT)


def test_cache_write_1h_share_reports_one_hour_writes() -> None:
    """C{cache_write_1h_share} moves that share of the cache writes to C{ephemeral_1h_input_tokens}."""
    provider = FakeProvider(Clock())
    provider.cache_write_1h_share = 0.5
    stub = StubTreq(provider.resource())
    payload = {"model": "fake-cache", "max_tokens": 8, "messages": HELLO * 40}
    results: list[Any] = []
    stub.post("http://fake/v1/messages", json=payload).addCallback(treq.json_content).addCallback(results.append)
    stub.flush()
    usage = results[0]["usage"]
    written = usage["cache_creation_input_tokens"]
    split = usage["cache_creation"]
    assert written > 1
    assert split["ephemeral_1h_input_tokens"] == round(written / 2) > 0
    assert split["ephemeral_5m_input_tokens"] + split["ephemeral_1h_input_tokens"] == written
