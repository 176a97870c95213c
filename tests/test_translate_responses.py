"""Codex (the Responses API) on Claude and on a Chat-only server: the sans-I/O cores."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunaroute.dialects.translate import base, responses_to_anthropic, responses_to_chat
from lunaroute.dialects.translate.chat_to_anthropic import DEFAULT_MAX_TOKENS, THINKING_KEY
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.dialects.translate.responses_to_anthropic import (
    AnthropicToResponsesStream,
    messages_response_to_responses,
    responses_request_to_messages,
)
from lunaroute.dialects.translate.responses_to_chat import (
    THINKING_MARK,
    ResponsesEventWriter,
    chat_completion_to_response,
    openai_error,
    responses_request_to_chat,
)
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

CODEX = ["codex_responses_request.json", "codex_responses_function_call_output_request.json"]
ANTHROPIC_STREAM = "anthropic_thinking_tools.sse"
CHAT_STREAM = "openai_chat_tools.sse"


def test_both_directions_are_registered() -> None:
    anthropic = base.translator_for("openai_responses", "anthropic")
    chat = base.translator_for("openai_responses", "openai_chat")
    assert anthropic is responses_to_anthropic.TRANSLATOR and anthropic.target_path == "/v1/messages"
    assert chat is responses_to_chat.TRANSLATOR and chat.target_path == "/v1/chat/completions"


# -- requests ------------------------------------------------------------------


def input_meaning(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What the Codex input says: texts by role (a message's parts joined), calls, outputs."""
    out: list[tuple[Any, ...]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            out.append((item["role"], "\n\n".join(part["text"] for part in item["content"])))
        elif kind == "function_call":
            out.append(("call", item["call_id"], item["name"], json.loads(item["arguments"])))
        elif kind == "function_call_output":
            out.append(("output", item["call_id"], item["output"]))
    return out


def messages_meaning(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [("developer", block["text"]) for block in body.get("system", [])]
    for message in body["messages"]:
        for block in message["content"]:
            if block["type"] == "text":
                out.append((message["role"], block["text"]))
            elif block["type"] == "tool_use":
                out.append(("call", block["id"], block["name"], block["input"]))
            elif block["type"] == "tool_result":
                out.append(("output", block["tool_use_id"], block["content"]))
    return out


def chat_meaning(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for message in body["messages"]:
        role = {"system": "developer"}.get(message["role"], message["role"])
        if role == "tool":
            out.append(("output", message["tool_call_id"], message["content"]))
            continue
        if message.get("content"):
            out.append((role, message["content"]))
        for call in message.get("tool_calls", []):
            out.append(("call", call["id"], call["function"]["name"], json.loads(call["function"]["arguments"])))
    return out


@pytest.mark.parametrize("name", CODEX)
def test_real_codex_request_to_messages_keeps_every_message_and_tool(name: str) -> None:
    body = client_fixture(name)
    frozen = copy.deepcopy(body)
    dropped: list[str] = []
    out = responses_request_to_messages(body, "claude-sonnet-4-5", dropped)
    assert body == frozen
    assert out["model"] == "claude-sonnet-4-5"
    assert messages_meaning(out) == input_meaning(body["input"])
    assert [m["role"] for m in out["messages"]][0] == "user"
    sent = {tool["name"] for tool in out["tools"]}
    function_tools = {t["name"] for t in body["tools"] if t["type"] in ("function", "custom")}
    assert sent == function_tools
    assert out["tool_choice"] == {"type": "auto"}
    for i, tool in enumerate(body["tools"]):
        if tool["type"] in ("web_search", "tool_search", "namespace"):
            assert f"tools[{i}]" in dropped
    assert {"store", "include", "prompt_cache_key", "client_metadata"} <= set(dropped)
    assert out["stream"] is True
    effort = body["reasoning"].get("effort")
    if effort == "medium":
        assert out["thinking"] == {"type": "enabled", "budget_tokens": 8192}
        assert out["max_tokens"] == DEFAULT_MAX_TOKENS + 8192
    else:
        assert "thinking" not in out and out["max_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("name", CODEX)
def test_real_codex_request_to_chat_keeps_every_message_and_tool(name: str) -> None:
    body = client_fixture(name)
    dropped: list[str] = []
    out = responses_request_to_chat(body, "qwen3-coder", dropped)
    assert chat_meaning(out) == input_meaning(body["input"])
    function_tools = [t["name"] for t in body["tools"] if t["type"] in ("function", "custom")]
    assert [t["function"]["name"] for t in out["tools"]] == function_tools
    assert out["tool_choice"] == "auto"
    assert out["stream_options"] == {"include_usage": True}
    assert "reasoning_effort" not in out  # qwen3-coder is no OpenAI reasoning model


def test_custom_apply_patch_travels_as_a_function_of_one_string() -> None:
    body = client_fixture("codex_responses_request.json")
    out = responses_request_to_messages(body, "claude-sonnet-4-5")
    patch = next(tool for tool in out["tools"] if tool["name"] == "apply_patch")
    assert patch["input_schema"]["required"] == ["input"]
    assert "*** Begin Patch" in patch["description"]  # the grammar goes along
    history = {"model": "m", "input": [
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch\n"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done"},
    ]}
    messages = responses_request_to_messages(history)["messages"]
    assert messages[0]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "apply_patch", "input": {"input": "*** Begin Patch\n"}}
    ]
    assert messages[1]["content"] == [{"type": "tool_result", "tool_use_id": "c1", "content": "Done"}]


@pytest.mark.parametrize(
    "body, chat",
    [
        pytest.param({"input": "hi", "instructions": "be brief"},
                     {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
                     id="string-input-and-instructions"),
        pytest.param({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "see"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "high"},
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JV"}]}]},
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA", "detail": "high"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JV", "filename": "a.pdf"}}]}]},
            id="image-and-file"),
        pytest.param({"input": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "o"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "k"}]},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{\"x\":1}"},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {"type": "function_call_output", "call_id": "b", "output": [
                {"type": "input_text", "text": "two"},
                {"type": "input_image", "image_url": "https://x/y.png"}]}]},
            {"messages": [
                {"role": "assistant", "content": "o\n\nk", "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "a", "content": "1"},
                {"role": "tool", "tool_call_id": "b", "content": "two"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
            id="parallel-calls-outputs-and-tool-images"),
        pytest.param({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"},
                                               "strict": True}],
                      "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False},
                     {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                                                  "strict": True}}],
                      "tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False},
                     id="tools"),
        pytest.param({"input": "x", "max_output_tokens": 50, "temperature": 0.5, "top_p": 0.8},
                     {"max_tokens": 50, "temperature": 0.5, "top_p": 0.8}, id="limits"),
        pytest.param({"model": "gpt-5", "input": "x", "max_output_tokens": 50, "reasoning": {"effort": "high"}},
                     {"max_completion_tokens": 50, "reasoning_effort": "high"}, id="reasoning-model"),
        pytest.param({"input": "x", "text": {"format": {"type": "json_schema", "name": "r", "schema": {}}}},
                     {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {}}}},
                     id="json-schema"),
        pytest.param({"input": "x", "safety_identifier": "u"}, {"user": "u"}, id="user"),
    ],
)
def test_request_fields_translate_to_chat(body: dict[str, Any], chat: dict[str, Any]) -> None:
    out = responses_request_to_chat({"model": "llama", **body})
    for key, value in chat.items():
        assert out[key] == value, key


@pytest.mark.parametrize(
    "body, field",
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "critic", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "developer", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"type": "compaction", "encrypted_content": "x"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
         "input[0].content[0].file_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
        ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"input": "x", "tools": [{"type": "mcp"}]}, "tools[0].type"),
        ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ],
)
def test_untranslatable_responses_fields_name_the_field(body: dict[str, Any], field: str) -> None:
    for translate in (responses_request_to_chat, responses_request_to_messages):
        with pytest.raises(UntranslatableField) as caught:
            translate({"model": "m", **body})
        assert caught.value.field == field


def test_invalid_call_arguments_name_the_responses_path_on_the_way_to_anthropic() -> None:
    body = {"model": "m", "input": [{"type": "function_call", "call_id": "a", "name": "f", "arguments": "{x"}]}
    with pytest.raises(UntranslatableField) as caught:
        responses_request_to_messages(body)
    assert caught.value.field == "input[0].arguments"
    assert responses_request_to_chat(body)["messages"][0]["tool_calls"][0]["function"]["arguments"] == "{x"


def test_drops_toward_anthropic_name_the_responses_path() -> None:
    dropped: list[str] = []
    body = {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}},
            "tools": [{"type": "web_search"}, {"type": "function", "name": "f", "strict": True}]}
    out = responses_request_to_messages(body, None, dropped)
    assert dropped == ["tools[0]", "tools[1].strict", "text.format"]
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    with pytest.raises(UntranslatableField) as caught:
        responses_request_to_messages({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}})
    assert caught.value.field == "text.format.type"
    dropped = []
    body = {"model": "m", "input": "x", "temperature": 0.2, "reasoning": {"effort": "high"},
            "tools": [{"type": "web_search"}], "tool_choice": "auto"}
    out = responses_request_to_messages(body, None, dropped)
    assert "thinking" not in out and "tool_choice" not in out
    assert dropped == ["tools[0]", "tool_choice", "reasoning.effort"]


def test_local_shell_history_and_refusals_travel_as_calls_and_text() -> None:
    body = {"model": "m", "input": [
        {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "user", "content": "please"},
        {"type": "local_shell_call", "call_id": "s1", "status": "completed",
         "action": {"type": "exec", "command": ["ls"]}},
        {"type": "local_shell_call_output", "call_id": "s1", "output": {"stdout": "a"}}]}
    out = responses_request_to_chat(body)["messages"]
    assert out[0] == {"role": "assistant", "content": "no"}
    assert out[2]["tool_calls"][0]["function"] == {"name": "local_shell",
                                                   "arguments": '{"type":"exec","command":["ls"]}'}
    assert out[3] == {"role": "tool", "tool_call_id": "s1", "content": '{"stdout":"a"}'}


def test_redacted_thinking_streams_to_codex_and_back() -> None:
    events: list[dict[str, Any] | str] = [
        {"type": "message_start", "message": {"id": "msg_r", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "ENC"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": "Hi"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"},
    ]
    final = frames(b"".join(anthropic_to_responses(events)))[-1][1]["response"]
    reasoning, message = final["output"]
    assert reasoning["summary"] == [] and message["content"][0]["text"] == "Hi"
    back = responses_request_to_messages({"model": "m", "input": [{"role": "user", "content": "x"}, reasoning]})
    assert back["messages"][1]["content"] == [{"type": "redacted_thinking", "data": "ENC"}]


def test_openai_reasoning_items_are_dropped_and_listed() -> None:
    dropped: list[str] = []
    body = {"model": "m", "input": [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
        {"role": "user", "content": "go"}]}
    out = responses_request_to_messages(body, None, dropped)
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "go"}]}]
    assert dropped == ["input[0]", "input[1]"]


# -- responses (JSON) ----------------------------------------------------------

def test_anthropic_message_becomes_a_response_object() -> None:
    out = messages_response_to_responses(ANTHROPIC_MESSAGE, "gpt-5.5")
    assert out["object"] == "response" and out["status"] == "completed" and out["model"] == "gpt-5.5"
    reasoning, message, call = out["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "let me see"}]
    assert reasoning["encrypted_content"].startswith(THINKING_MARK)
    assert message["content"][0]["text"] == "Checking."
    assert (call["type"], call["call_id"], call["name"], json.loads(call["arguments"])) == (
        "function_call", "toolu_1", "get", {"city": "東京"})
    assert out["usage"] == {
        "input_tokens": 115, "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5},
        "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 122,
    }


def test_max_tokens_makes_the_response_incomplete() -> None:
    out = messages_response_to_responses({**ANTHROPIC_MESSAGE, "stop_reason": "max_tokens"}, "gpt-5.5")
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}


def test_chat_completion_becomes_a_response_object() -> None:
    completion = {
        "id": "chatcmpl-1", "created": 5, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "hi", "reasoning_content": "hmm",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38,
                  "prompt_tokens_details": {"cached_tokens": 16},
                  "completion_tokens_details": {"reasoning_tokens": 3}},
    }
    out = chat_completion_to_response(completion, "gpt-5.5")
    assert out["id"] == "resp_1" and out["created_at"] == 5
    assert [item["type"] for item in out["output"]] == ["reasoning", "message", "function_call"]
    assert "encrypted_content" not in out["output"][0]
    assert out["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}
    assert out["usage"]["input_tokens_details"] == {"cached_tokens": 16}


def test_sdk_parses_the_translated_json_response() -> None:
    client = openai_client(json.dumps(messages_response_to_responses(ANTHROPIC_MESSAGE, "gpt-5.5")).encode(),
                           content_type="application/json")
    response = client.responses.create(model="gpt-5.5", input="ls")
    assert response.output_text == "Checking."
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 100


def test_errors_keep_openai_shape() -> None:
    anthropic_error = json.loads((FIXTURES / "streams" / "anthropic_error.json").read_text())
    assert responses_to_anthropic.TRANSLATOR.error(anthropic_error, 429)["error"]["code"] == "rate_limit_exceeded"
    chat_error = json.loads((FIXTURES / "streams" / "openai_error.json").read_text())
    assert openai_error(chat_error, 429) == chat_error
    assert openai_error({"detail": "model not loaded"}, 404)["error"] == {
        "message": "model not loaded", "type": "invalid_request_error", "param": None, "code": None}
    assert openai_error(None, 502)["error"]["type"] == "server_error"
    vllm = {"object": "error", "message": "too long", "type": "BadRequestError", "param": None, "code": 400}
    assert openai_error(vllm, 400)["error"] == {
        "message": "too long", "type": "BadRequestError", "param": None, "code": 400}


# -- streams -------------------------------------------------------------------


def frames(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in data.split(b"\n\n"):
        if frame:
            name, payload = frame.split(b"\n", 1)
            assert name.startswith(b"event: ") and payload.startswith(b"data: ")
            out.append((name[7:].decode(), json.loads(payload[6:])))
    return out


def anthropic_to_responses(events: list[dict[str, Any] | str]) -> list[bytes]:
    return translate_events(AnthropicToResponsesStream("gpt-5.5", created=1), events)


def chat_to_responses(events: list[dict[str, Any] | str]) -> list[bytes]:
    return translate_events(ResponsesEventWriter("gpt-5.5", created=1), events)


@pytest.mark.parametrize(
    "fixture, dialect, convert",
    [(ANTHROPIC_STREAM, "anthropic", anthropic_to_responses), (CHAT_STREAM, "openai_chat", chat_to_responses)],
)
def test_real_stream_rebuilds_as_the_same_answer(fixture: str, dialect: str, convert: Any) -> None:
    original = rebuild(dialect, (FIXTURES / "streams" / fixture).read_bytes())
    data = b"".join(convert(stream_events(fixture)))
    assert_same_answer(rebuild("openai_responses", data), original)
    parsed = frames(data)
    assert [data["sequence_number"] for _, data in parsed] == list(range(len(parsed)))
    assert all(name == data["type"] for name, data in parsed)
    assert [name for name, _ in parsed[:2]] == ["response.created", "response.in_progress"]
    assert parsed[-1][0] == "response.completed"
    assert len({data["response"]["id"] for name, data in parsed if "response" in data}) == 1


def test_stream_is_translated_event_by_event() -> None:
    events = stream_events(ANTHROPIC_STREAM)
    produced = anthropic_to_responses(events)
    for event, out in zip(events, produced, strict=False):
        assert isinstance(event, dict)
        names = [name for name, _ in frames(out)]
        delta = event.get("delta", {})
        if delta.get("type") == "text_delta":
            assert names[-1] == "response.output_text.delta"
        if delta.get("type") == "thinking_delta":
            assert names[-1] == "response.reasoning_summary_text.delta"
        if delta.get("partial_json"):
            assert names == ["response.function_call_arguments.delta"]
        if event["type"] == "ping":
            assert out == b""


def test_codex_replays_thinking_to_anthropic_signed() -> None:
    """The reasoning item Codex gets back carries the signed block Anthropic needs in a tool loop."""
    data = b"".join(anthropic_to_responses(stream_events(ANTHROPIC_STREAM)))
    final = frames(data)[-1][1]["response"]
    history = [item for item in final["output"] if item["type"] != "message"]
    outputs = [{"type": "function_call_output", "call_id": item["call_id"], "output": "sunny"}
               for item in history if item["type"] == "function_call"]
    body = {"model": "gpt-5.5", "reasoning": {"effort": "low"},
            "input": [{"role": "user", "content": "weather?"}, *history, *outputs]}
    out = responses_request_to_messages(body, "claude-sonnet-4-5")
    assistant = out["messages"][1]["content"]
    original = rebuild("anthropic", (FIXTURES / "streams" / ANTHROPIC_STREAM).read_bytes()).message
    assert original is not None
    assert assistant[0] == original["content"][0]  # thinking text and signature, unchanged
    assert [b["type"] for b in assistant] == ["thinking", "tool_use", "tool_use"]
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}  # allowed: the loop is signed


def test_max_tokens_stream_ends_incomplete() -> None:
    events = [e for e in stream_events(ANTHROPIC_STREAM) if isinstance(e, dict)]
    for event in events:
        if event["type"] == "message_delta":
            event["delta"]["stop_reason"] = "max_tokens"
    name, data = frames(b"".join(anthropic_to_responses(events)))[-1]
    assert name == "response.incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize(
    ("arguments", "status"), [('{"command": "ls', "incomplete"), ('{"command": "ls"}', "completed")]
)
def test_a_call_cut_by_the_output_limit_is_incomplete(arguments: str, status: str) -> None:
    """Stopped by max tokens inside a call's arguments: that function_call is incomplete, not one to run."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": arguments}}
    events: list[dict[str, Any] | str] = [
        chunk({"role": "assistant", "tool_calls": [call]}), chunk({}, "length"), "[DONE]",
    ]
    out = frames(b"".join(chat_to_responses(events)))
    [item] = [data["item"] for name, data in out if name == "response.output_item.done"]
    assert item["type"] == "function_call" and item["arguments"] == arguments and item["status"] == status
    name, data = out[-1]
    assert name == "response.incomplete" and data["response"]["output"][0]["status"] == status


def test_error_mid_stream_becomes_response_failed() -> None:
    produced = anthropic_to_responses(stream_events("anthropic_overloaded.sse"))
    name, data = frames(b"".join(produced))[-1]
    assert name == "response.failed"
    assert data["response"]["status"] == "failed"
    assert data["response"]["error"] == {"code": "overloaded", "message": "Overloaded"}
    chat_error = {"error": {"message": "bad", "type": "server_error", "code": None}}
    name, data = frames(b"".join(chat_to_responses([chat_error])))[-1]
    assert name == "response.failed" and data["response"]["error"]["code"] == "server_error"

    client = openai_client(b"".join(produced))
    seen = [event.type for event in client.responses.create(model="gpt-5.5", input="x", stream=True)]
    assert seen[-1] == "response.failed"
    with client.responses.stream(model="gpt-5.5", input="x") as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"


def test_cut_stream_fails_and_a_stream_without_done_completes_on_close() -> None:
    events = stream_events(CHAT_STREAM)
    cut = frames(b"".join(chat_to_responses(events[:3])))
    assert cut[-1][0] == "response.failed"
    assert cut[-1][1]["response"]["error"]["code"] == "stream_interrupted"
    done = frames(b"".join(chat_to_responses(events[:-1])))
    assert done[-1][0] == "response.completed"


def test_empty_answer_still_forms_a_response() -> None:
    parsed = frames(b"".join(chat_to_responses(["[DONE]"])))
    assert [name for name, _ in parsed] == ["response.created", "response.in_progress", "response.completed"]


@pytest.mark.parametrize(
    "fixture, convert", [(ANTHROPIC_STREAM, anthropic_to_responses), (CHAT_STREAM, chat_to_responses)]
)
def test_openai_sdk_accepts_the_translated_stream(fixture: str, convert: Any) -> None:
    data = b"".join(convert(stream_events(fixture)))
    client = openai_client(data)
    kinds = [event.type for event in client.responses.create(model="gpt-5.5", input="x", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    with client.responses.stream(model="gpt-5.5", input="x") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls and all(json.loads(call.arguments)["location"] for call in calls)
    assert final.usage is not None and final.usage.output_tokens > 0


# -- properties ----------------------------------------------------------------

values = st.dictionaries(names, st.integers() | st.text(max_size=5) | st.booleans(), max_size=3)


@st.composite
def chat_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any] | str], str, str, list[tuple[str, str, Any]]]:
    """A random Chat stream: reasoning, text and parallel calls, arguments cut anywhere."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-r", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": ""})]
    reasoning = draw(st.lists(texts, max_size=3))
    events += [chunk({"reasoning_content": piece}) for piece in reasoning]
    text = draw(st.lists(texts, max_size=3))
    events += [chunk({"content": piece}) for piece in text]
    calls = [(f"call_{n}", draw(names), draw(values)) for n in range(draw(st.integers(0, 3)))]
    fragments: list[tuple[int, str]] = []
    for n, (ident, name, value) in enumerate(calls):
        events.append(chunk({"tool_calls": [{"index": n, "id": ident, "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        raw = json.dumps(value)
        fragments += [(n, piece) for piece in pieces(draw, raw, 3)]
    # Parallel calls' fragments interleave; each call's own stay in order.
    order = draw(st.permutations(range(len(fragments))))
    pending = {n: [f for m, f in fragments if m == n] for n in range(len(calls))}
    for i in order:
        n = fragments[i][0]
        events.append(chunk({"tool_calls": [{"index": n, "function": {"arguments": pending[n].pop(0)}}]}))
    events.append(chunk({}, "tool_calls" if calls else "stop"))
    events.append({"id": "chatcmpl-r", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    events.append("[DONE]")
    return events, "".join(reasoning), "".join(text), calls


@PROPERTY
@given(chat_streams())
def test_random_chat_streams_reassemble_as_responses(stream: tuple[list[Any], str, str, list[Any]]) -> None:
    events, reasoning, text, calls = stream
    summary = rebuild("openai_responses", b"".join(chat_to_responses(events)))
    assert not summary.partial
    assert summary.text == text
    assert summary.thinking == reasoning
    assert [(c.id, c.name, c.input) for c in summary.tool_calls] == calls
    assert summary.usage.input_tokens == 5 and summary.usage.output_tokens == 3


@st.composite
def codex_histories(draw: st.DrawFn) -> dict[str, Any]:
    """A random Codex input: user turns, assistant text, calls and their outputs."""
    items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": draw(texts)}]}]
    for turn in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            items.append({"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": draw(texts)}]})
        calls = [{"type": "function_call", "call_id": f"c{turn}_{n}", "name": draw(names),
                  "arguments": json.dumps(draw(values))} for n in range(draw(st.integers(1, 2)))]
        items += calls
        items += [{"type": "function_call_output", "call_id": c["call_id"], "output": draw(texts)} for c in calls]
    return {"model": "gpt-5.5", "instructions": draw(texts), "input": items}


@PROPERTY
@given(codex_histories())
def test_random_codex_histories_keep_their_meaning(body: dict[str, Any]) -> None:
    expected = [("developer", body["instructions"]), *input_meaning(body["input"])]
    assert messages_meaning(responses_request_to_messages(body)) == expected
    assert chat_meaning(responses_request_to_chat(body)) == expected
    assert body["input"][0]["content"][0]["type"] == "input_text"  # never modified


@pytest.mark.parametrize("payload", ["{oops", '{"type":"tool_use","id":"x"}', "[]"])
def test_a_damaged_thinking_item_is_refused(payload: str) -> None:
    body = {"model": "m", "input": [{"type": "reasoning", "summary": [], "encrypted_content": THINKING_MARK + payload}]}
    with pytest.raises(UntranslatableField) as caught:
        responses_request_to_messages(body)
    assert caught.value.field == "input[0].encrypted_content"


def test_private_thinking_key_never_reaches_a_chat_provider() -> None:
    body = {"model": "m", "input": [
        {"type": "reasoning", "summary": [], "encrypted_content": THINKING_MARK + '{"type":"thinking"}'},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"}]}
    dropped: list[str] = []
    out = responses_request_to_chat(body, None, dropped)
    assert THINKING_KEY not in json.dumps(out) and dropped == ["input[0]"]
