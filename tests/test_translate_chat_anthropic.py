"""The openai SDK on Claude: Chat Completions in, Anthropic Messages out (sans I/O)."""

from __future__ import annotations

import copy
import json
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunaroute.dialects.translate import base
from lunaroute.dialects.translate.anthropic_to_chat import messages_request_to_chat
from lunaroute.dialects.translate.chat_to_anthropic import (
    DEFAULT_MAX_TOKENS,
    TRANSLATOR,
    AnthropicToChatStream,
    chat_request_to_messages,
    messages_response_to_chat,
    openai_error_from_anthropic,
)
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.testing.translation import (
    ANTHROPIC_MESSAGE,
    FIXTURES,
    PROPERTY,
    assert_same_answer,
    client_fixture,
    names,
    openai_client,
    pieces,
    rebuild,
    stream_events,
    texts,
    translate_events,
)

USER = {"role": "user", "content": "hi"}


def test_registered_for_chat_clients_on_anthropic() -> None:
    translator = base.translator_for("openai_chat", "anthropic")
    assert translator is TRANSLATOR
    assert translator.target_path == "/v1/messages"


# -- requests ------------------------------------------------------------------


def blocks_meaning(messages: list[dict[str, Any]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """
    What a conversation says, per turn: tool results, images, the text, tool calls.

    Consecutive turns of one role count as one (Anthropic treats them so) and
    a turn's text blocks as one text (the Chat form joins them: user text with
    a blank line, assistant text without), the way the two dialects can both say it.
    """
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for message in messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if turns and turns[-1][0] == message["role"]:
            turns[-1][1].extend(blocks)
        else:
            turns.append((message["role"], blocks))
    meaning = []
    for role, blocks in turns:
        results: list[tuple[Any, ...]] = []
        images: list[tuple[Any, ...]] = []
        calls: list[tuple[Any, ...]] = []
        text: list[str] = []
        for block in blocks:
            kind = block["type"]
            if kind == "text" and block["text"]:
                text.append(block["text"])
            elif kind == "tool_use":
                calls.append(("tool_use", block["id"], block["name"], block["input"]))
            elif kind == "tool_result":
                result = block.get("content")
                if isinstance(result, list):
                    result = "\n\n".join(part["text"] for part in result if part["type"] == "text")
                results.append(("tool_result", block["tool_use_id"], result, bool(block.get("is_error"))))
            elif kind == "image":
                images.append(("image", json.dumps(block["source"], sort_keys=True)))
        joined = ("" if role == "assistant" else "\n\n").join(text)
        meaning.append((role, results + images + ([("text", joined)] if joined else []) + calls))
    return meaning


@pytest.mark.parametrize(
    "name", ["claude_code_messages_request.json", "claude_code_messages_tool_result_request.json"]
)
def test_real_claude_code_request_survives_chat_and_back(name: str) -> None:
    """Messages -> Chat (the core) -> Messages keeps roles, texts, tool calls and results, tools."""
    original = client_fixture(name)
    chat = messages_request_to_chat(original, model="gpt-4.1")
    frozen = copy.deepcopy(chat)
    back = chat_request_to_messages(chat, model="claude-sonnet-4-5")
    assert chat == frozen  # the client's body is never modified
    assert back["model"] == "claude-sonnet-4-5"
    # Claude Code's mid-conversation system turn joins the system prompt.
    turns = [m for m in original["messages"] if m["role"] != "system"]
    assert blocks_meaning(back["messages"]) == blocks_meaning(turns)
    system = [b["text"] for b in original["system"] if b["text"]]
    system.append("\n\n".join(m["content"] for m in original["messages"] if m["role"] == "system"))
    assert "\n\n".join(b["text"] for b in back["system"]) == "\n\n".join(t for t in system if t)
    assert [(t["name"], t["input_schema"]) for t in back["tools"]] == [
        (t["name"], t["input_schema"]) for t in original["tools"]
    ]
    assert back["max_tokens"] == original["max_tokens"]
    assert back["stream"] is True


def translated(body: dict[str, Any], dropped: list[str] | None = None) -> dict[str, Any]:
    return chat_request_to_messages({"model": "gpt-4.1", **body}, dropped=dropped)


TOOL = {"type": "function", "function": {"name": "get", "description": "d", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    "body, expected",
    [
        pytest.param(
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "developer", "content": [
                {"type": "text", "text": "use tools"}]}, USER, {"role": "system", "content": "later"}]},
            {"system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "use tools"},
                        {"type": "text", "text": "later"}],
             "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            id="system-and-developer-anywhere",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            ]}]},
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                 "title": "a.pdf"},
            ]}]},
            id="images-and-pdf",
        ),
        pytest.param(
            {"messages": [USER, {"role": "assistant", "content": "sure", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"a":1}'}},
                {"id": "c2", "type": "function", "function": {"name": "get", "arguments": ""}},
            ]}, {"role": "tool", "tool_call_id": "c1", "content": "one"},
                {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "[tool error] boom"}]},
                {"role": "user", "content": "and?"}]},
            {"messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "sure"},
                    {"type": "tool_use", "id": "c1", "name": "get", "input": {"a": 1}},
                    {"type": "tool_use", "id": "c2", "name": "get", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                    {"type": "tool_result", "tool_use_id": "c2", "is_error": True, "content": "boom"},
                    {"type": "text", "text": "and?"},
                ]},
            ]},
            id="parallel-calls-and-results-in-one-turn",
        ),
        pytest.param(
            {"messages": [USER], "tools": [TOOL], "tool_choice": "required", "parallel_tool_calls": False},
            {"tools": [{"name": "get", "description": "d", "input_schema": {"type": "object"}}],
             "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
            id="tools-required-not-parallel",
        ),
        pytest.param(
            {"messages": [USER], "tools": [TOOL], "parallel_tool_calls": False},
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
            id="not-parallel-alone",
        ),
        pytest.param(
            {"messages": [USER], "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get"}}},
            {"tool_choice": {"type": "tool", "name": "get"}},
            id="named-tool",
        ),
        pytest.param({"messages": [USER], "tools": [TOOL], "tool_choice": "none"}, {"tool_choice": {"type": "none"}},
                     id="none"),
        pytest.param({"messages": [USER], "stop": "END"}, {"stop_sequences": ["END"]}, id="stop-string"),
        pytest.param({"messages": [USER], "stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}, id="stop-list"),
        pytest.param({"messages": [USER], "max_tokens": 100}, {"max_tokens": 100}, id="max-tokens"),
        pytest.param({"messages": [USER], "max_completion_tokens": 300, "max_tokens": 100}, {"max_tokens": 300},
                     id="max-completion-tokens-wins"),
        pytest.param({"messages": [USER]}, {"max_tokens": DEFAULT_MAX_TOKENS}, id="default-max-tokens"),
        pytest.param({"messages": [USER], "temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2, "top_p": 0.9},
                     id="sampling"),
        pytest.param({"messages": [USER], "reasoning_effort": "medium"},
                     {"thinking": {"type": "enabled", "budget_tokens": 8192}, "max_tokens": DEFAULT_MAX_TOKENS + 8192},
                     id="effort-to-thinking"),
        pytest.param({"messages": [USER], "reasoning_effort": "high", "max_completion_tokens": 10000},
                     {"thinking": {"type": "enabled", "budget_tokens": 10000 - 1024}, "max_tokens": 10000},
                     id="thinking-fits-the-limit"),
        pytest.param({"messages": [USER], "metadata": {"user": "u1"}}, {"metadata": {"user_id": "u1"}}, id="user"),
        pytest.param({"messages": [USER], "user": "u2"}, {"metadata": {"user_id": "u2"}}, id="legacy-user"),
        pytest.param({"messages": [USER], "stream": True, "stream_options": {"include_usage": True}},
                     {"stream": True}, id="stream"),
    ],
)
def test_request_fields_translate(body: dict[str, Any], expected: dict[str, Any]) -> None:
    out = translated(body)
    for key, value in expected.items():
        assert out[key] == value, key


@pytest.mark.parametrize(
    "body, field",
    [
        ({"messages": [USER], "n": 2}, "n"),
        ({"messages": [USER], "temperature": 1.5}, "temperature"),
        ({"messages": [USER, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
         "messages[1].tool_calls[0].function.arguments"),
        ({"messages": [USER], "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format.type"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
         "messages[0].content[0].image_url.url"),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
         "messages[0].content[0].file.file_id"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [USER, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}, "messages[2].content[0].type"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,AAA"}}]}]},
         "messages[0].content[0].image_url.url"),
        ({"messages": [USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}]},
         "messages[1].tool_calls[0].type"),
        ({"messages": [USER, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]},
         "messages[1].tool_calls[0].function.arguments"),
        ({"messages": [USER], "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"messages": [USER], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"messages": [USER], "functions": []}, "functions"),
        ({"messages": [USER], "audio": {}}, "audio"),
    ],
)
def test_untranslatable_fields_are_a_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(UntranslatableField) as caught:
        translated(body)
    assert caught.value.field == field
    assert caught.value.status == 400


def test_documented_drops_are_listed() -> None:
    dropped: list[str] = []
    tool = copy.deepcopy(TOOL)
    tool["function"]["strict"] = True
    translated({"messages": [USER, {"role": "assistant", "content": "x", "reasoning_content": "r", "name": "bot"}],
                "response_format": {"type": "json_object"}, "seed": 1, "logprobs": True, "tools": [tool],
                "metadata": {"user": "u", "trace": "t"}},
               dropped)
    assert dropped == ["seed", "logprobs", "response_format", "messages[1].name", "messages[1].reasoning_content",
                       "tools[0].function.strict", "metadata"]
    dropped = []
    assert "tool_choice" not in translated({"messages": [USER], "tool_choice": "auto"}, dropped)
    assert dropped == ["tool_choice"]


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 0.3},
        {"tool_choice": "required", "tools": [TOOL]},
        {"max_completion_tokens": 1500},
        {"messages": [USER, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "x"}]},
    ],
    ids=["temperature", "forced-tool", "too-small-limit", "mid-tool-loop"],
)
def test_thinking_stays_off_where_anthropic_refuses_it(extra: dict[str, Any]) -> None:
    dropped: list[str] = []
    out = translated({"messages": [USER], "reasoning_effort": "low", **extra}, dropped)
    assert "thinking" not in out
    assert "reasoning_effort" in dropped


def test_minimal_effort_means_no_thinking_and_no_drop() -> None:
    dropped: list[str] = []
    out = translated({"messages": [USER], "reasoning_effort": "minimal"}, dropped)
    assert "thinking" not in out and dropped == []


# -- responses -----------------------------------------------------------------

def test_anthropic_message_becomes_chat_completion() -> None:
    out = messages_response_to_chat(ANTHROPIC_MESSAGE, "gpt-4.1", created=1)
    assert out == {
        "id": "chatcmpl-msg_1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.", "refusal": None, "reasoning_content": "let me see",
            "tool_calls": [{"id": "toolu_1", "type": "function",
                            "function": {"name": "get", "arguments": '{"city":"東京"}'}}],
        }}],
        "usage": {"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122,
                  "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5}},
    }


@pytest.mark.parametrize(
    "stop, finish",
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), ("pause_turn", "stop"), (None, "stop")],
)
def test_stop_reasons_map(stop: str | None, finish: str) -> None:
    out = messages_response_to_chat({"content": [], "stop_reason": stop}, "m")
    assert out["choices"][0]["finish_reason"] == finish


def test_sdk_parses_the_translated_json_answer() -> None:
    body = json.dumps(messages_response_to_chat(ANTHROPIC_MESSAGE, "gpt-4.1")).encode()
    client = openai_client(body, content_type="application/json")
    completion = client.chat.completions.create(model="gpt-4.1", messages=[USER])
    assert completion.choices[0].message.tool_calls[0].function.name == "get"
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100


@pytest.mark.parametrize(
    "error_type, status, openai_type, code",
    [
        ("invalid_request_error", 400, "invalid_request_error", "invalid_request_error"),
        ("authentication_error", 401, "invalid_request_error", "invalid_api_key"),
        ("permission_error", 403, "invalid_request_error", "permission_denied"),
        ("not_found_error", 404, "invalid_request_error", "model_not_found"),
        ("request_too_large", 413, "invalid_request_error", "request_too_large"),
        ("rate_limit_error", 429, "requests", "rate_limit_exceeded"),
        ("api_error", 500, "server_error", "api_error"),
        ("overloaded_error", 529, "server_error", "overloaded"),
    ],
)
def test_anthropic_errors_become_openai_errors(error_type: str, status: int, openai_type: str, code: str) -> None:
    body = {"type": "error", "error": {"type": error_type, "message": "nope"}}
    assert openai_error_from_anthropic(body, status) == {
        "error": {"message": "nope", "type": openai_type, "param": None, "code": code}
    }


def test_error_without_a_body_is_named_by_its_status() -> None:
    assert openai_error_from_anthropic(None, 503)["error"]["type"] == "server_error"
    assert openai_error_from_anthropic("junk", 429)["error"]["code"] == "rate_limit_exceeded"


def test_sdk_raises_the_translated_rate_limit() -> None:
    body = json.loads((FIXTURES / "streams" / "anthropic_error.json").read_text())
    client = openai_client(json.dumps(openai_error_from_anthropic(body, 429)).encode(), 429, "application/json")
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4.1", messages=[USER])
    assert "50,000 input tokens" in caught.value.message


# -- streams -------------------------------------------------------------------


def chat_stream(events: list[dict[str, Any] | str], include_usage: bool = True) -> list[bytes]:
    return translate_events(AnthropicToChatStream("gpt-4.1", include_usage=include_usage, created=1), events)


def test_real_anthropic_stream_rebuilds_as_the_same_answer() -> None:
    events = stream_events("anthropic_thinking_tools.sse")
    original = rebuild("anthropic", (FIXTURES / "streams" / "anthropic_thinking_tools.sse").read_bytes())
    data = b"".join(chat_stream(events))
    summary = rebuild("openai_chat", data)
    assert_same_answer(summary, original)
    assert summary.stop_reason == "tool_calls"
    assert data.endswith(b"data: [DONE]\n\n")


def test_stream_frames_are_sent_event_by_event() -> None:
    events = stream_events("anthropic_thinking_tools.sse")
    produced = chat_stream(events)
    frames = [[json.loads(line[6:]) if line != b"data: [DONE]" else "[DONE]"
               for line in chunk.split(b"\n\n") if line] for chunk in produced]
    first = frames[0][0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    for event, out in zip(events, frames, strict=False):
        assert isinstance(event, dict)
        delta = event.get("delta", {})
        if delta.get("type") in ("text_delta", "thinking_delta") or delta.get("partial_json"):
            assert len(out) == 1, event  # each delta leaves with its own event
        if event["type"] in ("ping", "content_block_stop"):
            assert out == []
    starts = [f for out in frames for f in out if isinstance(f, dict) and f["choices"]
              and f["choices"][0]["delta"].get("tool_calls", [{}])[0].get("id")]
    assert [s["choices"][0]["delta"]["tool_calls"][0]["index"] for s in starts] == [0, 1]
    last = [f for out in frames for f in out]
    assert last[-2]["choices"] == [] and last[-2]["usage"]["completion_tokens"] == 187
    assert last[-3]["choices"][0]["finish_reason"] == "tool_calls"


def test_usage_chunk_only_when_asked() -> None:
    events = stream_events("anthropic_thinking_tools.sse")
    assert b'"usage"' not in b"".join(chat_stream(events, include_usage=False))
    translator = TRANSLATOR
    quiet = translator.stream("m", {"stream": True})
    asked = translator.stream("m", {"stream": True, "stream_options": {"include_usage": True}})
    assert b'"usage"' not in b"".join(translate_events(quiet, events))
    assert b'"usage"' in b"".join(translate_events(asked, events))


def test_error_mid_stream_becomes_an_openai_error_frame_and_ends() -> None:
    events = stream_events("anthropic_overloaded.sse")
    converter = AnthropicToChatStream("gpt-4.1", created=1)
    produced = translate_events(converter, events)
    assert converter.finished
    error = json.loads(produced[-2].decode()[6:])
    assert error == {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}}
    assert produced[-1] == b""
    assert b"[DONE]" not in b"".join(produced)

    client = openai_client(b"".join(produced))
    texts: list[str] = []
    with pytest.raises(openai.APIError, match="Overloaded"):
        for chunk in client.chat.completions.create(model="gpt-4.1", messages=[USER], stream=True):
            texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) == "Once upon a time, in a quiet village"


def test_cut_stream_is_an_error_and_stream_without_stop_is_finished_by_close() -> None:
    events = stream_events("anthropic_thinking_tools.sse")
    cut = chat_stream(events[:8])
    assert json.loads(cut[-1].decode()[6:])["error"]["code"] == "stream_interrupted"
    no_stop = chat_stream([e for e in events if isinstance(e, dict) and e["type"] != "message_stop"])
    assert no_stop[-1].endswith(b"data: [DONE]\n\n")


def test_sdk_iterates_and_accumulates_the_translated_stream() -> None:
    data = b"".join(chat_stream(stream_events("anthropic_thinking_tools.sse")))
    client = openai_client(data)
    chunks = list(client.chat.completions.create(model="gpt-4.1", messages=[USER], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "I'll check the weather in 東京 (Tokyo) and Paris for you 🌤️"
    )
    with client.chat.completions.stream(model="gpt-4.1", messages=[USER]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_01A09q90qw90lq917835lq9", "get_weather", {"location": "Tokyo, JP", "unit": "celsius"}),
        ("toolu_01B7aXgQkxB3nR8M2pZ4c6Yv", "get_weather", {"location": "Paris, FR", "unit": "celsius"}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens == 187


# -- properties ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
tool_inputs = st.dictionaries(names, json_values, max_size=3)


@st.composite
def anthropic_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str, list[tuple[str, str, Any]]]:
    """A random Anthropic stream: text and tool_use blocks, deltas cut anywhere."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_r", "usage": {"input_tokens": draw(st.integers(0, 50)), "output_tokens": 1}}}]
    text: list[str] = []
    calls: list[tuple[str, str, Any]] = []
    for index, kind in enumerate(draw(st.lists(st.sampled_from(["text", "tool"]), max_size=5))):
        if kind == "text":
            parts = draw(st.lists(texts, min_size=1, max_size=4))
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}})
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": p}} for p in parts]
            text += parts
        else:
            ident, name, value = f"toolu_{index}", draw(names), draw(tool_inputs)
            raw = json.dumps(value, ensure_ascii=False)
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "tool_use", "id": ident, "name": name, "input": {}}})
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": p}} for p in pieces(draw, raw)]
            calls.append((ident, name, value))
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": "tool_use" if calls else "end_turn"},
                   "usage": {"output_tokens": draw(st.integers(1, 99))}})
    events.append({"type": "message_stop"})
    return events, "".join(text), calls


@PROPERTY
@given(anthropic_streams())
def test_random_anthropic_streams_reassemble_as_chat(stream: tuple[list[dict[str, Any]], str, list[Any]]) -> None:
    events, text, calls = stream
    summary = rebuild("openai_chat", b"".join(chat_stream(list(events))))
    assert summary.text == text
    assert [(c.id, c.name, c.input) for c in summary.tool_calls] == calls
    assert not summary.partial


@st.composite
def messages_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A random Messages conversation: user texts, assistant texts and calls, results."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": draw(texts)}]
    for turn in range(draw(st.integers(0, 3))):
        calls = [{"type": "tool_use", "id": f"t{turn}_{n}", "name": draw(names), "input": draw(tool_inputs)}
                 for n in range(draw(st.integers(0, 2)))]
        head = [{"type": "text", "text": draw(texts)}] if draw(st.booleans()) or not calls else []
        messages.append({"role": "assistant", "content": head + calls})
        results = [{"type": "tool_result", "tool_use_id": call["id"], "content": draw(texts),
                    "is_error": draw(st.booleans())} for call in calls]
        tail = [{"type": "text", "text": draw(texts)}] if draw(st.booleans()) or not results else []
        messages.append({"role": "user", "content": results + tail})
    return {"model": "claude-x", "max_tokens": 100, "system": draw(texts), "messages": messages}


@PROPERTY
@given(messages_requests())
def test_random_messages_requests_survive_chat_and_back(body: dict[str, Any]) -> None:
    back = chat_request_to_messages(messages_request_to_chat(body, model="gpt-4.1"), model="claude-x")
    assert back["system"] == [{"type": "text", "text": body["system"]}]
    assert blocks_meaning(back["messages"]) == blocks_meaning(body["messages"])
