"""Tests for the OpenAI Chat Completions and Responses accumulators."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from lunaroute.dialects.errors import openai_error_body
from lunaroute.dialects.openai_chat import ChatCompletionAccumulator, summarize_chat_json
from lunaroute.dialects.openai_responses import ResponsesAccumulator, summarize_responses_json
from lunaroute.dialects.sse import SSEParser

STREAMS = Path(__file__).parent / "fixtures" / "streams"

CHAT_ID = "chatcmpl-CDx9MfQ2bT7kRz4yUvN8pLs1aW3eH"

EXPECTED_CHAT_MESSAGE = {
    "id": CHAT_ID,
    "object": "chat.completion",
    "created": 1757512345,
    "model": "gpt-4.1-2025-04-14",
    "service_tier": "default",
    "system_fingerprint": "fp_7a1b2c3d4e",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking 東京 and Paris ☔️",
                "refusal": None,
                "tool_calls": [
                    {"id": "call_Xk2sL9vQp3mN7rT1yB4wZ8cD", "type": "function",
                     "function": {"name": "get_weather",
                                  "arguments": '{"location": "Tokyo, JP"}'}},
                    {"id": "call_P8fH2jK5nV0sR6tW3xA9eG1L", "type": "function",
                     "function": {"name": "get_weather",
                                  "arguments": '{"location": "Paris, FR"}'}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 312,
        "completion_tokens": 58,
        "total_tokens": 370,
        "prompt_tokens_details": {"cached_tokens": 256, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    },
}


def events_of(name: str) -> list[tuple[str, str]]:
    """Parse a fixture stream into (event name, raw data) pairs."""
    parser = SSEParser()
    events = parser.feed((STREAMS / name).read_bytes()) + parser.close()
    return [(event.event, event.data) for event in events]


def chat_accumulate(events: list[tuple[str, str]]) -> ChatCompletionAccumulator:
    """Feed chat events, handling [DONE] the way the capture does."""
    acc = ChatCompletionAccumulator()
    for _, data in events:
        if data == "[DONE]":
            acc.mark_done()
        else:
            acc.add(json.loads(data))
    return acc


def responses_accumulate(events: list[tuple[str, str]]) -> ResponsesAccumulator:
    """Feed Responses API events to a fresh accumulator."""
    acc = ResponsesAccumulator()
    for name, data in events:
        acc.add(name, json.loads(data))
    return acc


def fixture_json(name: str) -> dict[str, Any]:
    """Load a non-streaming JSON fixture."""
    return json.loads((STREAMS / name).read_text(encoding="utf-8"))


def chunk(delta: dict[str, Any], index: int = 0, finish: str | None = None) -> dict[str, Any]:
    """A minimal chat.completion.chunk carrying one choice delta."""
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


# --- Chat Completions -------------------------------------------------------


def test_chat_stream_rebuilds_chat_completion() -> None:
    """Chunks, tool fragments and the usage chunk rebuild a chat.completion."""
    summary = chat_accumulate(events_of("openai_chat_tools.sse")).summary()
    assert summary.message == EXPECTED_CHAT_MESSAGE
    assert summary.partial is False
    assert summary.streaming is True
    assert summary.event_count == 12


def test_chat_stream_summary_fields_and_tools() -> None:
    """Text, stop reason and both tool calls with parsed inputs are reported."""
    summary = chat_accumulate(events_of("openai_chat_tools.sse")).summary()
    assert summary.dialect == "openai_chat"
    assert summary.response_id == CHAT_ID
    assert summary.model == "gpt-4.1-2025-04-14"
    assert summary.text == "Checking 東京 and Paris ☔️"
    assert summary.stop_reason == "tool_calls"
    assert [(c.id, c.name, c.input) for c in summary.tool_calls] == [
        ("call_Xk2sL9vQp3mN7rT1yB4wZ8cD", "get_weather", {"location": "Tokyo, JP"}),
        ("call_P8fH2jK5nV0sR6tW3xA9eG1L", "get_weather", {"location": "Paris, FR"}),
    ]
    assert summary.tool_calls[1].raw_input == '{"location": "Paris, FR"}'


def test_chat_usage_counts_cached_inside_input() -> None:
    """prompt_tokens (which includes cached) is input; cached is cache_read."""
    usage = chat_accumulate(events_of("openai_chat_tools.sse")).summary().usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (312, 58, 256)
    assert usage.cache_creation_tokens == 0
    assert usage.thinking_tokens == 0 and usage.thinking_tokens_exact is True
    assert usage.total == 370


def test_chat_stream_without_done_or_usage_is_partial() -> None:
    """A stream cut before the finish chunk, usage and [DONE] is partial."""
    summary = chat_accumulate(events_of("openai_chat_tools.sse")[:8]).summary()
    assert summary.partial is True
    assert summary.stop_reason is None
    assert summary.tool_calls[1].input == {}


def test_chat_second_choice_does_not_feed_text() -> None:
    """With n>1 only choice 0 feeds text; every choice is rebuilt."""
    acc = ChatCompletionAccumulator()
    acc.add(chunk({"role": "assistant", "content": "zero"}, 0))
    acc.add(chunk({"role": "assistant", "content": "one"}, 1))
    acc.add(chunk({}, 1, "stop"))
    acc.add(chunk({}, 0, "length"))
    acc.mark_done()
    summary = acc.summary()
    assert summary.text == "zero"
    assert summary.stop_reason == "length"
    assert [c["message"]["content"] for c in summary.message["choices"]] == ["zero", "one"]


def test_chat_reasoning_content_becomes_thinking() -> None:
    """reasoning_content / reasoning deltas from compatible servers are thinking."""
    for key in ("reasoning_content", "reasoning"):
        acc = ChatCompletionAccumulator()
        acc.add(chunk({"role": "assistant", key: "hmm, "}))
        acc.add(chunk({key: "ok"}))
        acc.add(chunk({"content": "done"}, finish="stop"))
        summary = acc.summary()
        assert summary.thinking == "hmm, ok"
        assert summary.message["choices"][0]["message"][key] == "hmm, ok"
        assert summary.usage.thinking_tokens_exact is False


def test_chat_tool_fragments_without_index_follow_ids() -> None:
    """Servers omitting tool index still get calls split by id."""
    acc = ChatCompletionAccumulator()
    acc.add(chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}))
    acc.add(chunk({"tool_calls": [{"function": {"arguments": "}"}}]}))
    acc.add(chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "[1]"}}]}))
    calls = acc.summary().tool_calls
    assert [(c.id, c.name, c.input) for c in calls] == [("a", "f", {}), ("b", "g", [1])]


def test_chat_malformed_chunks_do_not_raise() -> None:
    """Chunks with wrong types are ignored rather than raising."""
    acc = ChatCompletionAccumulator()
    acc.add({"choices": "x", "usage": 3})
    acc.add({"choices": [None, {"index": "0", "delta": None}]})
    acc.add({"choices": [{"delta": {"tool_calls": [None, {"index": True}]}}]})
    acc.add([])  # type: ignore[arg-type]
    assert acc.summary().partial is True


def test_chat_json_summary_reads_tools_and_reasoning_usage() -> None:
    """A non-streaming chat.completion yields tools and exact reasoning tokens."""
    body = fixture_json("openai_chat_tools.json")
    summary = summarize_chat_json(body)
    assert summary.message is body
    assert summary.partial is False and summary.streaming is False
    assert summary.text == ""
    assert summary.stop_reason == "tool_calls"
    assert summary.tool_calls[0].input == {"path": "src/main.py", "limit": 200}
    usage = summary.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (1536, 412, 1024)
    assert (usage.thinking_tokens, usage.thinking_tokens_exact) == (384, True)


def test_chat_json_error_body_is_reported_as_error() -> None:
    """An OpenAI error body is stored in error with no message."""
    body = fixture_json("openai_error.json")
    summary = summarize_chat_json(body)
    assert summary.error == body
    assert summary.message is None


def test_openai_error_body_is_compact_json() -> None:
    """openai_error_body emits OpenAI's error shape with param and code."""
    assert openai_error_body("No route", "invalid_request_error") == (
        b'{"error":{"message":"No route","type":"invalid_request_error",'
        b'"param":null,"code":null}}'
    )
    body = openai_error_body("bad", "invalid_request_error", code="model_not_found", param="model")
    assert json.loads(body)["error"] == {"message": "bad", "type": "invalid_request_error",
                                         "param": "model", "code": "model_not_found"}


# --- Responses API ------------------------------------------------------------


def test_responses_stream_message_is_the_completed_response() -> None:
    """The message is the response object from response.completed."""
    summary = responses_accumulate(events_of("openai_responses_tools.sse")).summary()
    assert summary.message == fixture_json("openai_responses_tools.json")
    assert summary.partial is False
    assert summary.event_count == 27


def test_responses_stream_summary_fields() -> None:
    """Text, joined reasoning summaries, call_id and status are reported."""
    summary = responses_accumulate(events_of("openai_responses_tools.sse")).summary()
    assert summary.dialect == "openai_responses"
    assert summary.model == "gpt-5-2025-08-07"
    assert summary.response_id == "resp_68c1f2a9b0e48190b7d4c2a1e9f3d5c70a6b8e2f4d1c3a5b"
    assert summary.text == "Let me look up 東京's weather 🌦️."
    assert summary.thinking == (
        "**Planning the weather lookup**\n\nThe user asked about Tokyo; I should call "
        "get_weather.\n\n**Answer format**\n\nA short note, then the call."
    )
    assert summary.stop_reason == "completed"
    [call] = summary.tool_calls
    assert (call.id, call.name, call.input) == (
        "call_9LmN3bV5cX7zA1sD2fG4hJ6k", "get_weather", {"location": "Tokyo, JP"})


def test_responses_usage_is_exact_for_reasoning() -> None:
    """input includes cached tokens; reasoning tokens are exact."""
    usage = responses_accumulate(events_of("openai_responses_tools.sse")).summary().usage
    assert (usage.input_tokens, usage.output_tokens) == (1820, 296)
    assert (usage.cache_read_tokens, usage.thinking_tokens) == (1536, 192)
    assert usage.thinking_tokens_exact is True
    assert usage.total == 2116


def test_responses_without_completed_falls_back_to_accumulated_output() -> None:
    """Missing response.completed: partial, output rebuilt from the items."""
    events = events_of("openai_responses_tools.sse")[:-1]
    summary = responses_accumulate(events).summary()
    assert summary.partial is True
    expected = fixture_json("openai_responses_tools.json")["output"]
    assert summary.message["output"] == expected
    assert summary.message["status"] == "in_progress"
    assert summary.text == "Let me look up 東京's weather 🌦️."
    assert summary.usage.total == 0


def test_responses_deltas_alone_rebuild_text_and_arguments() -> None:
    """Without any .done events the deltas still give text, summary and args."""
    events = [(n, d) for n, d in events_of("openai_responses_tools.sse")
              if not n.endswith(".done") and n != "response.completed"]
    summary = responses_accumulate(events).summary()
    assert summary.partial is True
    assert summary.text == "Let me look up 東京's weather 🌦️."
    assert summary.thinking.startswith("**Planning the weather lookup**")
    assert summary.tool_calls[0].input == {"location": "Tokyo, JP"}


def test_responses_error_event_is_recorded_and_partial() -> None:
    """A stream-level error event is kept as the error and marks partial."""
    events = events_of("openai_responses_tools.sse")[:17]
    error = {"type": "error", "sequence_number": 17, "code": "server_error",
             "message": "The server had an error while processing your request.",
             "param": None}
    acc = responses_accumulate(events)
    acc.add("error", error)
    summary = acc.summary()
    assert summary.error == error
    assert summary.partial is True


def test_responses_incomplete_reports_reason() -> None:
    """response.incomplete ends the stream; its reason is the stop reason."""
    final = fixture_json("openai_responses_tools.json")
    final.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    acc = responses_accumulate(events_of("openai_responses_tools.sse")[:-1])
    acc.add("response.incomplete", {"type": "response.incomplete", "response": final})
    summary = acc.summary()
    assert summary.partial is False
    assert summary.stop_reason == "max_output_tokens"


def test_responses_failed_reports_response_error() -> None:
    """response.failed carries the response's error object into error."""
    final = fixture_json("openai_responses_tools.json")
    final.update(status="failed", output=[], usage=None,
                 error={"code": "server_error", "message": "boom"})
    acc = ResponsesAccumulator()
    acc.add("response.failed", {"type": "response.failed", "response": final})
    summary = acc.summary()
    assert summary.error == {"code": "server_error", "message": "boom"}
    assert summary.stop_reason == "failed"


def test_responses_completed_without_output_keeps_streamed_items() -> None:
    """A final object with an empty output list is filled from the stream."""
    events = events_of("openai_responses_tools.sse")
    name, data = events[-1]
    trimmed = json.loads(data)
    trimmed["response"]["output"] = []
    acc = responses_accumulate(events[:-1])
    acc.add(name, trimmed)
    summary = acc.summary()
    assert summary.partial is False
    assert summary.message["output"] == fixture_json("openai_responses_tools.json")["output"]


def test_responses_json_summary_matches_stream_summary() -> None:
    """The non-streaming body gives the same facts as the stream."""
    body = fixture_json("openai_responses_tools.json")
    from_json = summarize_responses_json(copy.deepcopy(body))
    from_stream = responses_accumulate(events_of("openai_responses_tools.sse")).summary()
    for field in ("text", "thinking", "stop_reason", "usage", "model", "response_id",
                  "tool_calls", "message"):
        assert getattr(from_json, field) == getattr(from_stream, field)
    assert from_json.partial is False and from_json.streaming is False


def test_responses_json_error_body_is_reported_as_error() -> None:
    """An OpenAI error body is an error, not a response."""
    body = fixture_json("openai_error.json")
    summary = summarize_responses_json(body)
    assert summary.error == body
    assert summary.message is None


def test_responses_malformed_events_do_not_raise() -> None:
    """Events with wrong field types are tolerated."""
    acc = ResponsesAccumulator()
    acc.add("response.output_item.added", {"output_index": "a", "item": None})
    acc.add("response.output_text.delta", {"output_index": 5, "content_index": None, "delta": 3})
    acc.add("response.function_call_arguments.done", {"arguments": None})
    acc.add("response.completed", {"type": "response.completed", "response": "x"})
    acc.add("x", None)  # type: ignore[arg-type]
    summary = acc.summary()
    assert json.dumps(summary.to_dict())
