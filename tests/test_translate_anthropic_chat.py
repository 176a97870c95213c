"""Claude Code on an OpenAI-compatible model: the sans-I/O translation core."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import anthropic
import pytest

from lunaroute.dialects.anthropic import AnthropicStreamAccumulator, summarize_anthropic_json
from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.model import ResponseSummary
from lunaroute.dialects.openai_chat import ChatCompletionAccumulator
from lunaroute.dialects.sse import SSEParser
from lunaroute.dialects.translate.anthropic_to_chat import (
    ChatToAnthropicStream,
    UntranslatableField,
    anthropic_error_from_chat,
    chat_response_to_messages,
    dumps_request,
    messages_request_to_chat,
    uses_max_completion_tokens,
)
from lunaroute.errors import RequestError

FIXTURES = Path(__file__).parent / "fixtures"
CLIENT_FIXTURES = ["claude_code_messages_request.json", "claude_code_messages_tool_result_request.json"]


def client_fixture(name: str) -> dict[str, Any]:
    """A captured real Claude Code request body."""
    body: dict[str, Any] = json.loads((FIXTURES / "clients" / name).read_text())
    return body


def chat_chunks(name: str) -> list[dict[str, Any] | str]:
    """A captured Chat Completions stream as parsed chunks and the [DONE] marker."""
    parser = SSEParser()
    events = parser.feed((FIXTURES / "streams" / name).read_bytes()) + parser.close()
    return [event.data if event.data == "[DONE]" else json.loads(event.data) for event in events]


def translate_stream(chunks: list[dict[str, Any] | str], model: str = "claude-opus-4-8") -> list[bytes]:
    """Feed chunks one by one; the Anthropic bytes produced for each, then close()."""
    converter = ChatToAnthropicStream(model)
    produced = [converter.feed(chunk) for chunk in chunks]
    produced.append(converter.close())
    return produced


def anthropic_summary(data: bytes) -> ResponseSummary:
    """What the gateway's own Anthropic capture rebuilds from the bytes."""
    capture = ResponseCapture("anthropic", streaming=True, content_type="text/event-stream")
    capture.feed(data)
    return capture.finish()


def chat_summary(chunks: list[dict[str, Any] | str]) -> ResponseSummary:
    accumulator = ChatCompletionAccumulator()
    for chunk in chunks:
        if chunk == "[DONE]":
            accumulator.mark_done()
        else:
            assert isinstance(chunk, dict)
            accumulator.add(chunk)
    return accumulator.summary()


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4.1",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


# -- requests ------------------------------------------------------------------


@pytest.mark.parametrize("name", CLIENT_FIXTURES)
def test_claude_code_request_translates_to_chat_shape(name: str) -> None:
    """System blocks, mid-conversation system messages, tools and stream options all map."""
    body = client_fixture(name)
    original = copy.deepcopy(body)
    dropped: list[str] = []
    out = messages_request_to_chat(body, model="gpt-4.1", dropped=dropped)
    assert body == original, "the client's body must not be modified"
    assert out["model"] == "gpt-4.1"
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["max_tokens"] == 64000 and "max_completion_tokens" not in out
    assert out["user"] == body["metadata"]["user_id"]
    first = out["messages"][0]
    assert first["role"] == "system"
    assert first["content"] == "\n\n".join(block["text"] for block in body["system"])
    # Claude Code's role:"system" reminder in the history stays a system message.
    assert out["messages"][2] == {"role": "system", "content": body["messages"][1]["content"]}
    # Two text blocks in the first user turn are one string (servers that take only strings).
    user = out["messages"][1]
    assert user["role"] == "user" and isinstance(user["content"], str)
    assert body["messages"][0]["content"][1]["text"] in user["content"]
    assert len(out["tools"]) == len(body["tools"]) == 24
    for tool, original_tool in zip(out["tools"], body["tools"], strict=True):
        assert tool["type"] == "function"
        assert tool["function"]["name"] == original_tool["name"]
        assert tool["function"]["parameters"] == original_tool["input_schema"]
        assert tool["function"]["description"] == original_tool["description"]
    assert {"thinking", "context_management", "output_config"} <= set(dropped)
    json.dumps(out)  # plain JSON all the way down


def test_claude_code_tool_result_becomes_tool_call_and_tool_message() -> None:
    """tool_use blocks become tool_calls with JSON arguments; the result a tool message."""
    body = client_fixture("claude_code_messages_tool_result_request.json")
    out = messages_request_to_chat(body, model="gpt-4.1")
    use = body["messages"][2]["content"][0]
    result = body["messages"][3]["content"][0]
    assistant, tool = out["messages"][3], out["messages"][4]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    [call] = assistant["tool_calls"]
    assert call["id"] == use["id"] and call["type"] == "function"
    assert call["function"]["name"] == "Read"
    assert json.loads(call["function"]["arguments"]) == use["input"]
    assert tool == {"role": "tool", "tool_call_id": result["tool_use_id"], "content": result["content"]}
    assert len(out["messages"]) == 5


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("gpt-5", "max_completion_tokens"),
        ("gpt-5-mini", "max_completion_tokens"),
        ("o4-mini", "max_completion_tokens"),
        ("openai/o3", "max_completion_tokens"),
        ("gpt-4.1", "max_tokens"),
        ("deepseek-chat", "max_tokens"),
        ("qwen2.5-coder:32b", "max_tokens"),
    ],
)
def test_max_tokens_name_follows_the_target_model(model: str, key: str) -> None:
    """OpenAI reasoning models get max_completion_tokens, every other server max_tokens."""
    out = messages_request_to_chat({"model": "claude", "max_tokens": 99, "messages": []}, model=model)
    assert out[key] == 99
    assert uses_max_completion_tokens(model) is (key == "max_completion_tokens")


def test_effort_maps_to_reasoning_effort_only_for_reasoning_models() -> None:
    body = {"model": "c", "messages": [], "output_config": {"effort": "max"}, "thinking": {"type": "adaptive"}}
    dropped: list[str] = []
    assert messages_request_to_chat(body, model="gpt-5", dropped=dropped)["reasoning_effort"] == "high"
    assert dropped == ["thinking"]
    dropped.clear()
    assert "reasoning_effort" not in messages_request_to_chat(body, model="gpt-4.1", dropped=dropped)
    assert dropped == ["output_config", "thinking"]


REQUEST_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("string system", {"system": "be brief"}, {"messages": [{"role": "system", "content": "be brief"}]}),
    ("stop sequences", {"stop_sequences": ["END", "STOP"]}, {"stop": ["END", "STOP"]}),
    ("sampling", {"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2, "top_p": 0.9}),
    ("tool_choice auto", {"tool_choice": {"type": "auto"}}, {"tool_choice": "auto"}),
    ("tool_choice any", {"tool_choice": {"type": "any"}}, {"tool_choice": "required"}),
    ("tool_choice none", {"tool_choice": {"type": "none"}}, {"tool_choice": "none"}),
    (
        "tool_choice tool",
        {"tool_choice": {"type": "tool", "name": "Read", "disable_parallel_tool_use": True},
         "tools": [{"name": "Read", "input_schema": {"type": "object"}}]},
        {"tool_choice": {"type": "function", "function": {"name": "Read"}}, "parallel_tool_calls": False},
    ),
    (
        "string user",
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "images base64 and url",
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        ]}]},
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        ]}]},
    ),
    (
        "parallel calls, results in order, is_error, blocks and a following user text",
        {"messages": [
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Reading both."},
                {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "a"}},
                {"type": "tool_use", "id": "t2", "name": "Read", "input": {"file_path": "b"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "A"}]},
                {"type": "tool_result", "tool_use_id": "t2", "content": "no such file", "is_error": True},
                {"type": "text", "text": "go on"},
            ]},
        ]},
        {"messages": [
            {"role": "assistant", "content": "Reading both.", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "Read", "arguments": '{"file_path":"a"}'}},
                {"id": "t2", "type": "function", "function": {"name": "Read", "arguments": '{"file_path":"b"}'}},
            ]},
            {"role": "tool", "tool_call_id": "t1", "content": "A"},
            {"role": "tool", "tool_call_id": "t2", "content": "[tool error] no such file"},
            {"role": "user", "content": "go on"},
        ]},
    ),
    (
        "image inside a tool result follows as a user message",
        {"messages": [{"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}},
        ]}, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "screenshot"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j"}},
            ]},
        ]}]},
        {"messages": [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "screenshot"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j"}}]},
        ]},
    ),
    (
        "documents: text source and base64 PDF",
        {"messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
            {"type": "document", "title": "spec.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
        ]}]},
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "notes"},
            {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBER"}},
        ]}]},
    ),
    (
        "tool definition without description",
        {"tools": [{"name": "Noop", "input_schema": {"type": "object", "properties": {}},
                    "cache_control": {"type": "ephemeral"}}]},
        {"tools": [{"type": "function", "function": {
            "name": "Noop", "parameters": {"type": "object", "properties": {}}}}]},
    ),
]


@pytest.mark.parametrize(("body", "expected"), [case[1:] for case in REQUEST_CASES],
                         ids=[case[0] for case in REQUEST_CASES])
def test_request_fields_translate(body: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each Messages field lands in its Chat Completions form."""
    out = messages_request_to_chat({"model": "claude-sonnet-4-5", "messages": [], **body}, model="gpt-4.1")
    for key, value in expected.items():
        assert out[key] == value


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "mcp_servers"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s"}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
         "messages[0].content[0].source.type"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]},
         "messages[0].content[0].source"),
        ({"system": [{"type": "image"}]}, "system[0].type"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_untranslatable_fields_are_a_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(UntranslatableField) as caught:
        messages_request_to_chat({"model": "c", "messages": [], **body}, model="gpt-4.1")
    assert isinstance(caught.value, RequestError)
    assert caught.value.status == 400 and caught.value.field == field
    assert field in caught.value.message


# -- JSON responses ------------------------------------------------------------------


def test_chat_json_response_becomes_anthropic_message() -> None:
    body = json.loads((FIXTURES / "streams" / "openai_chat_tools.json").read_text())
    out = chat_response_to_messages(body, "claude-opus-4-8")
    assert out["type"] == "message" and out["role"] == "assistant" and out["model"] == "claude-opus-4-8"
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [{
        "type": "tool_use", "id": "call_R3tY7uI9oP1aS5dF2gH8jK4l", "name": "read_file",
        "input": {"path": "src/main.py", "limit": 200},
    }]
    assert out["usage"] == {
        "input_tokens": 512, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1024, "output_tokens": 412,
    }
    summary = summarize_anthropic_json(out)
    assert summary.tool_calls[0].input == {"path": "src/main.py", "limit": 200}
    assert summary.usage.input_tokens + summary.usage.cache_read_tokens == 1536


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
     ("content_filter", "refusal"), (None, "end_turn")],
)
def test_finish_reasons_map(finish: str | None, stop_reason: str) -> None:
    body = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                    "finish_reason": finish}]}
    out = chat_response_to_messages(body, "m")
    assert out["stop_reason"] == stop_reason
    assert out["content"] == [{"type": "text", "text": "hi"}]
    stream = b"".join(translate_stream([chunk({"content": "hi"}, finish=finish or "stop"), "[DONE]"]))
    assert anthropic_summary(stream).stop_reason == stop_reason


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (429, "rate_limit_error"),
     (500, "api_error"), (503, "overloaded_error"), (418, "invalid_request_error")],
)
def test_provider_error_becomes_anthropic_error(status: int, error_type: str) -> None:
    body = json.loads((FIXTURES / "streams" / "openai_error.json").read_text())
    out = anthropic_error_from_chat(body, status)
    assert out == {"type": "error", "error": {"type": error_type, "message": body["error"]["message"]}}


# -- streams ------------------------------------------------------------------


def test_translated_stream_rebuilds_what_the_chat_stream_said() -> None:
    """Text, both parallel tool calls and usage survive the translation."""
    chunks = chat_chunks("openai_chat_tools.sse")
    original = chat_summary(chunks)
    translated = anthropic_summary(b"".join(translate_stream(chunks)))
    assert not translated.partial and translated.error is None
    assert translated.text == original.text == "Checking 東京 and Paris ☔️"
    assert [(c.id, c.name, c.input) for c in translated.tool_calls] == [
        (c.id, c.name, c.input) for c in original.tool_calls
    ]
    assert len(translated.tool_calls) == 2
    assert translated.stop_reason == "tool_use"
    assert translated.usage.output_tokens == original.usage.output_tokens == 58
    assert translated.usage.cache_read_tokens == original.usage.cache_read_tokens == 256
    assert translated.usage.input_tokens + translated.usage.cache_read_tokens == original.usage.input_tokens
    assert translated.model == "claude-opus-4-8"


def test_stream_is_translated_chunk_by_chunk_with_sequential_blocks() -> None:
    """Each delta goes out with its own chunk, never held for the end of the answer."""
    chunks = chat_chunks("openai_chat_tools.sse")
    produced = translate_stream(chunks)
    assert produced[0].startswith(b"event: message_start\n")
    assert b'"text_delta","text":"Checking \xe6\x9d\xb1\xe4\xba\xac"' in produced[1]
    assert b"input_json_delta" in produced[4]
    names: list[str] = []
    indices: list[tuple[str, int]] = []
    parser = SSEParser()
    for event in parser.feed(b"".join(produced)):
        names.append(event.event)
        data = json.loads(event.data)
        if "index" in data:
            indices.append((event.event, data["index"]))
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    starts = [i for name, i in indices if name == "content_block_start"]
    stops = [i for name, i in indices if name == "content_block_stop"]
    assert starts == stops == [0, 1, 2]
    # A block's deltas all come between its start and its stop.
    open_block = None
    for name, index in indices:
        if name == "content_block_start":
            assert open_block is None
            open_block = index
        elif name == "content_block_delta":
            assert index == open_block
        else:
            open_block = None


def test_official_sdk_accepts_the_translated_stream() -> None:
    """anthropic.Anthropic().messages.stream() parses the bytes into the same message."""
    # The anthropic SDK of this lock builds on httpx2 (it refuses httpx objects).
    httpx = pytest.importorskip("httpx2")
    stream = b"".join(translate_stream(chat_chunks("openai_chat_tools.sse")))

    def handler(request: Any) -> Any:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)

    client = anthropic.Anthropic(
        api_key="test", base_url="http://127.0.0.1:9", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with client.messages.stream(
        model="claude-opus-4-8", max_tokens=100, messages=[{"role": "user", "content": "weather?"}]
    ) as events:
        text = "".join(events.text_stream)
        message = events.get_final_message()
    assert text == "Checking 東京 and Paris ☔️"
    assert message.stop_reason == "tool_use"
    tools = [block for block in message.content if block.type == "tool_use"]
    assert [(t.name, t.input) for t in tools] == [
        ("get_weather", {"location": "Tokyo, JP"}), ("get_weather", {"location": "Paris, FR"}),
    ]
    assert message.usage.output_tokens == 58
    assert message.usage.cache_read_input_tokens == 256


def test_provider_error_mid_stream_becomes_an_error_event() -> None:
    error = json.loads((FIXTURES / "streams" / "openai_error.json").read_text())
    converter = ChatToAnthropicStream("claude-opus-4-8")
    first = converter.feed(chunk({"role": "assistant", "content": "Hel"}))
    produced = converter.feed(error)
    assert produced.startswith(b"event: error\n")
    assert converter.finished
    assert converter.feed("[DONE]") == b"" and converter.close() == b""
    summary = anthropic_summary(first + produced)
    assert summary.error is not None and summary.partial
    assert summary.error["error"]["message"] == error["error"]["message"]
    assert summary.error["error"]["type"] == "rate_limit_error"  # from code rate_limit_exceeded


@pytest.mark.parametrize(
    ("error", "error_type"),
    [({"message": "boom", "type": "server_error"}, "api_error"),
     ({"message": "busy", "code": 529}, "overloaded_error"),
     ({"message": "bad", "type": "invalid_request_error"}, "invalid_request_error")],
)
def test_mid_stream_error_type_follows_its_code(error: dict[str, Any], error_type: str) -> None:
    data = ChatToAnthropicStream("m").feed({"error": error})
    assert data.startswith(b"event: error\n")
    payload = json.loads(data.split(b"data: ", 1)[1])
    assert payload == {"type": "error", "error": {"type": error_type, "message": error["message"]}}


def test_stream_without_done_is_finished_by_close() -> None:
    """Servers that omit [DONE] still get message_delta and message_stop."""
    converter = ChatToAnthropicStream("m")
    data = converter.feed(chunk({"content": "ok"}, finish="length"))
    data += converter.close()
    summary = anthropic_summary(data)
    assert not summary.partial and summary.text == "ok" and summary.stop_reason == "max_tokens"


def test_stream_cut_before_finish_reason_is_an_error() -> None:
    converter = ChatToAnthropicStream("m")
    data = converter.feed(chunk({"content": "half"})) + converter.close()
    assert b"event: error\n" in data
    assert anthropic_summary(data).error is not None


def test_empty_stream_with_done_still_forms_a_message() -> None:
    data = b"".join(translate_stream(["[DONE]"]))
    accumulator = AnthropicStreamAccumulator()
    for event in SSEParser().feed(data):
        accumulator.add(event.event, json.loads(event.data))
    assert accumulator.complete


def test_other_choices_and_reasoning_are_not_sent() -> None:
    converter = ChatToAnthropicStream("m")
    data = converter.feed(chunk({"content": "second"}, index=1))
    data += converter.feed(chunk({"reasoning_content": "thinking..."}))
    assert b"second" not in data and b"thinking..." not in data


def test_dumps_request_is_the_same_json() -> None:
    body = client_fixture("claude_code_messages_request.json")
    out = messages_request_to_chat(body, model="gpt-4.1")
    assert json.loads(dumps_request(out)) == out


def random_chat_stream(rng: random.Random) -> list[dict[str, Any] | str]:
    """A Chat stream with random text and parallel tool calls cut at random places."""
    def pieces(text: str) -> list[str]:
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 5))))
        return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]

    chunks: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": ""})]
    if rng.random() < 0.8:
        words = " ".join(rng.choice(["héllo", "東京", "x", "{", "\"q\"", "☔️", "line\n"]) for _ in range(8))
        chunks += [chunk({"content": piece}) for piece in pieces(words)]
    calls = rng.randint(0, 3)
    for n in range(calls):
        arguments = json.dumps({"path": f"/tmp/{n}", "n": rng.randint(0, 99), "s": "ü" * rng.randint(0, 3)})
        chunks.append(chunk({"tool_calls": [
            {"index": n, "id": f"call_{n}", "type": "function", "function": {"name": f"T{n}", "arguments": ""}},
        ]}))
        chunks += [chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
                   for piece in pieces(arguments)]
    chunks.append(chunk({}, finish="tool_calls" if calls else rng.choice(["stop", "length"])))
    prompt = rng.randint(10, 5000)
    cached = rng.randint(0, prompt)
    chunks.append({"id": "chatcmpl-1", "choices": [], "usage": {
        "prompt_tokens": prompt, "completion_tokens": rng.randint(1, 900),
        "prompt_tokens_details": {"cached_tokens": cached},
    }})
    chunks.append("[DONE]")
    return chunks


@pytest.mark.parametrize("seed", range(60))
def test_random_streams_keep_their_meaning(seed: int) -> None:
    """Seeded random streams: text, calls and usage survive, byte feeding included."""
    chunks = random_chat_stream(random.Random(seed))
    original = chat_summary(chunks)
    data = b"".join(translate_stream(chunks))
    capture = ResponseCapture("anthropic", streaming=True, content_type="text/event-stream")
    for i in range(0, len(data), 7):  # TCP-sized pieces cutting through UTF-8
        capture.feed(data[i : i + 7])
    translated = capture.finish()
    assert not translated.partial and translated.error is None
    assert translated.text == original.text
    assert [(c.id, c.name, c.input) for c in translated.tool_calls] == [
        (c.id, c.name, c.input) for c in original.tool_calls
    ]
    assert translated.usage.output_tokens == original.usage.output_tokens
    assert translated.usage.input_tokens + translated.usage.cache_read_tokens == original.usage.input_tokens
    assert translated.usage.cache_read_tokens == original.usage.cache_read_tokens
