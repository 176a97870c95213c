"""Tests for rebuilding Anthropic Messages responses (lunaroute.dialects.anthropic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lunaroute.dialects.anthropic import AnthropicStreamAccumulator, summarize_anthropic_json
from lunaroute.dialects.errors import anthropic_error_body
from lunaroute.dialects.sse import SSEParser

STREAMS = Path(__file__).parent / "fixtures" / "streams"


def events_of(name: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse a fixture stream into (event name, JSON data) pairs."""
    parser = SSEParser()
    events = parser.feed((STREAMS / name).read_bytes()) + parser.close()
    return [(event.event, json.loads(event.data)) for event in events]


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> AnthropicStreamAccumulator:
    """Feed ``events`` to a fresh accumulator and return it."""
    acc = AnthropicStreamAccumulator()
    for name, data in events:
        acc.add(name, data)
    return acc


def fixture_json(name: str) -> dict[str, Any]:
    """Load a non-streaming JSON fixture."""
    return json.loads((STREAMS / name).read_text(encoding="utf-8"))


def test_stream_rebuilds_the_non_streaming_response_exactly() -> None:
    """The rebuilt message equals the same response in non-streaming form."""
    summary = accumulate(events_of("anthropic_thinking_tools.sse")).summary()
    assert summary.message == fixture_json("anthropic_thinking_tools.json")
    assert summary.partial is False
    assert summary.streaming is True
    assert summary.event_count == 23


def test_stream_summary_fields() -> None:
    """Text, thinking, ids, stop reason and model come from the stream."""
    summary = accumulate(events_of("anthropic_thinking_tools.sse")).summary()
    assert summary.dialect == "anthropic"
    assert summary.model == "claude-sonnet-4-5-20250929"
    assert summary.response_id == "msg_01HCDu5LRGeP2o7s2xGmxyx8"
    assert summary.text == "I'll check the weather in 東京 (Tokyo) and Paris for you 🌤️"
    assert summary.thinking.startswith("The user wants the weather in Tokyo and Paris. I can")
    assert summary.stop_reason == "tool_use"
    assert summary.error is None


def test_interleaved_tool_inputs_are_parsed_per_block() -> None:
    """Fragments of two interleaved tool_use blocks are joined by index."""
    calls = accumulate(events_of("anthropic_thinking_tools.sse")).summary().tool_calls
    assert [(c.id, c.name, c.input) for c in calls] == [
        ("toolu_01A09q90qw90lq917835lq9", "get_weather",
         {"location": "Tokyo, JP", "unit": "celsius"}),
        ("toolu_01B7aXgQkxB3nR8M2pZ4c6Yv", "get_weather",
         {"location": "Paris, FR", "unit": "celsius"}),
    ]
    assert calls[0].raw_input == '{"location": "Tokyo, JP", "unit": "celsius"}'


def test_usage_takes_cumulative_output_and_keeps_cache_separate() -> None:
    """message_delta's output count wins; cache tokens stay out of input."""
    usage = accumulate(events_of("anthropic_thinking_tools.sse")).summary().usage
    assert usage.input_tokens == 1247
    assert usage.output_tokens == 187
    assert usage.cache_read_tokens == 8192
    assert usage.cache_creation_tokens == 512
    assert usage.total == 1247 + 187
    assert usage.thinking_tokens_exact is False
    assert 0 < usage.thinking_tokens <= 187


def test_message_delta_usage_overrides_input_and_cache_when_present() -> None:
    """Newer message_delta usage carrying input/cache counts is taken."""
    events = events_of("anthropic_thinking_tools.sse")
    for name, data in events:
        if name == "message_delta":
            data["usage"] = {"input_tokens": 1300, "cache_read_input_tokens": 9000,
                             "cache_creation_input_tokens": None, "output_tokens": 190}
    usage = accumulate(events).summary().usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_creation_tokens,
            usage.output_tokens) == (1300, 9000, 512, 190)


def test_mid_stream_error_is_recorded_and_marks_partial() -> None:
    """An error event keeps the text so far, stores the payload, is partial."""
    summary = accumulate(events_of("anthropic_overloaded.sse")).summary()
    assert summary.partial is True
    assert summary.error == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    assert summary.text == "Once upon a time, in a quiet village"
    assert summary.stop_reason is None


def test_stream_without_message_stop_is_partial() -> None:
    """Losing message_stop (and what precedes it) marks the result partial."""
    events = events_of("anthropic_thinking_tools.sse")
    cut = next(i for i, (name, _) in enumerate(events) if name == "content_block_stop" and i > 15)
    summary = accumulate(events[:cut]).summary()
    assert summary.partial is True
    assert summary.stop_reason is None
    assert summary.tool_calls[0].input == {"location": "Tokyo, JP", "unit": "celsius"}


def test_truncated_tool_input_falls_back_to_raw_string() -> None:
    """Tool input that is not valid JSON is reported as the raw string."""
    acc = AnthropicStreamAccumulator()
    acc.add("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "tool_use", "id": "t",
                                                      "name": "bash", "input": {}}})
    acc.add("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "input_json_delta",
                                              "partial_json": '{"cmd": "l'}})
    call = acc.summary().tool_calls[0]
    assert call.input == '{"cmd": "l'
    assert call.raw_input == '{"cmd": "l'


def test_tool_without_input_deltas_has_empty_object_input() -> None:
    """A tool_use block with no argument fragments reports input {}."""
    acc = AnthropicStreamAccumulator()
    acc.add("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "tool_use", "id": "t",
                                                      "name": "now", "input": {}}})
    acc.add("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "input_json_delta", "partial_json": ""}})
    call = acc.summary().tool_calls[0]
    assert (call.input, call.raw_input) == ({}, "")


def test_citations_and_redacted_thinking_are_kept() -> None:
    """citations_delta entries land on the text block; redacted thinking is copied."""
    citation = {"type": "char_location", "cited_text": "x", "document_index": 0,
                "document_title": None, "start_char_index": 0, "end_char_index": 1}
    acc = AnthropicStreamAccumulator()
    acc.add("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "redacted_thinking",
                                                      "data": "EmwKAhgB"}})
    acc.add("content_block_start", {"type": "content_block_start", "index": 1,
                                    "content_block": {"type": "text", "text": "",
                                                      "citations": []}})
    acc.add("content_block_delta", {"type": "content_block_delta", "index": 1,
                                    "delta": {"type": "citations_delta", "citation": citation}})
    acc.add("content_block_delta", {"type": "content_block_delta", "index": 1,
                                    "delta": {"type": "text_delta", "text": "cited"}})
    content = acc.summary().message["content"]
    assert content == [
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "text", "text": "cited", "citations": [citation]},
    ]


def test_event_type_is_taken_from_data_when_event_line_is_missing() -> None:
    """Relays that drop "event:" lines still work through the JSON type field."""
    events = [("message", data) for _, data in events_of("anthropic_thinking_tools.sse")]
    summary = accumulate(events).summary()
    assert summary.message == fixture_json("anthropic_thinking_tools.json")


def test_malformed_events_do_not_raise() -> None:
    """Events with wrong field types are tolerated without exceptions."""
    acc = AnthropicStreamAccumulator()
    acc.add("message_start", {"type": "message_start", "message": "nope"})
    acc.add("content_block_start", {"type": "content_block_start", "index": "x",
                                    "content_block": None})
    acc.add("content_block_delta", {"type": "content_block_delta", "index": 9,
                                    "delta": {"type": "text_delta", "text": 5}})
    acc.add("message_delta", {"type": "message_delta", "delta": [], "usage": {"output_tokens": "a"}})
    acc.add("weird", [])  # type: ignore[arg-type]
    summary = acc.summary()
    assert summary.partial is True
    assert summary.usage.output_tokens == 0


def test_empty_accumulator_summary_is_partial() -> None:
    """With no events at all the summary is empty and partial."""
    summary = AnthropicStreamAccumulator().summary()
    assert summary.partial is True
    assert summary.message is None


def test_json_summary_matches_stream_summary() -> None:
    """The non-streaming body gives the same facts as the stream."""
    from_json = summarize_anthropic_json(fixture_json("anthropic_thinking_tools.json"))
    from_stream = accumulate(events_of("anthropic_thinking_tools.sse")).summary()
    assert from_json.partial is False
    assert from_json.streaming is False
    for field in ("text", "thinking", "stop_reason", "usage", "model", "response_id"):
        assert getattr(from_json, field) == getattr(from_stream, field)
    assert [(c.id, c.input) for c in from_json.tool_calls] == [
        (c.id, c.input) for c in from_stream.tool_calls
    ]
    assert from_json.tool_calls[1].raw_input == '{"location":"Paris, FR","unit":"celsius"}'


def test_json_error_body_is_reported_as_error() -> None:
    """An error body is stored in error with no message and not partial."""
    body = fixture_json("anthropic_error.json")
    summary = summarize_anthropic_json(body)
    assert summary.error == body
    assert summary.message is None
    assert summary.partial is False


def test_anthropic_error_body_is_compact_json() -> None:
    """anthropic_error_body emits Anthropic's error shape as compact UTF-8."""
    body = anthropic_error_body("overloaded_error", "Überlastet")
    assert body == '{"type":"error","error":{"type":"overloaded_error","message":"Überlastet"}}'.encode()
    assert summarize_anthropic_json(json.loads(body)).error["error"]["type"] == "overloaded_error"


def test_to_dict_is_json_serialisable() -> None:
    """to_dict() of a full summary round-trips through json.dumps."""
    summary = accumulate(events_of("anthropic_thinking_tools.sse")).summary()
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["usage"]["total"] == 1434
    assert data["tool_calls"][1]["input"] == {"location": "Paris, FR", "unit": "celsius"}


def test_count_tokens_body_reports_input_tokens() -> None:
    """A count_tokens result is a complete summary carrying only input tokens."""
    summary = summarize_anthropic_json({"input_tokens": 2095})
    assert summary.partial is False
    assert summary.usage.input_tokens == 2095
    assert summary.message == {"input_tokens": 2095}


def test_body_that_is_no_message_is_partial() -> None:
    """A JSON object that is neither a message nor an error is partial."""
    assert summarize_anthropic_json({"hello": "world"}).partial is True


def test_error_before_message_start_has_no_message() -> None:
    """An error as the first event gives the error and no invented message."""
    acc = AnthropicStreamAccumulator()
    payload = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    acc.add("error", payload)
    summary = acc.summary()
    assert summary.error == payload
    assert summary.message is None
    assert summary.partial is True


def _cache_usage(five_minutes: int, one_hour: int) -> dict[str, Any]:
    """An Anthropic usage object with cache writes split by lifetime."""
    return {
        "input_tokens": 12,
        "cache_creation_input_tokens": five_minutes + one_hour,
        "cache_read_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": five_minutes, "ephemeral_1h_input_tokens": one_hour},
        "output_tokens": 1,
    }


def _stream_events(start_usage: dict[str, Any], delta_usage: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    message = {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage,
    }
    return [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "hi"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta_usage}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_stream_usage_splits_cache_writes_by_lifetime() -> None:
    """
    message_start's cache_creation split (5-minute vs 1-hour writes) survives
    a message_delta that only updates the output count.
    """
    usage = accumulate(_stream_events(_cache_usage(200, 800), {"output_tokens": 40})).summary().usage
    assert usage.cache_creation_tokens == 1000
    assert (usage.cache_creation_5m_tokens, usage.cache_creation_1h_tokens) == (200, 800)
    assert usage.output_tokens == 40


def test_message_delta_cache_split_replaces_message_start() -> None:
    """A message_delta repeating the cache counts (newer API versions) wins."""
    delta = _cache_usage(0, 1500) | {"output_tokens": 40}
    usage = accumulate(_stream_events(_cache_usage(200, 800), delta)).summary().usage
    assert (usage.cache_creation_tokens, usage.cache_creation_1h_tokens, usage.cache_creation_5m_tokens) == (
        1500, 1500, 0,
    )


def test_json_usage_splits_cache_writes_by_lifetime() -> None:
    """A non-streaming response carries the same split."""
    body = {"type": "message", "model": "claude-sonnet-4-5", "content": [], "usage": _cache_usage(300, 700)}
    usage = summarize_anthropic_json(body).usage
    assert (usage.cache_creation_tokens, usage.cache_creation_5m_tokens, usage.cache_creation_1h_tokens) == (
        1000, 300, 700,
    )
    assert summarize_anthropic_json(body).to_dict()["usage"]["cache_creation_5m_tokens"] == 300


def test_cache_writes_without_a_split_are_five_minute_writes() -> None:
    """Only cache_creation_input_tokens reported: every write is a 5-minute one."""
    body = {"type": "message", "content": [], "usage": {"input_tokens": 1, "cache_creation_input_tokens": 900}}
    usage = summarize_anthropic_json(body).usage
    assert (usage.cache_creation_5m_tokens, usage.cache_creation_1h_tokens) == (900, 0)


def test_cache_split_without_a_total_adds_up() -> None:
    """Only the split reported: the total is its sum."""
    raw = {"input_tokens": 1, "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 7}}
    usage = summarize_anthropic_json({"type": "message", "content": [], "usage": raw}).usage
    assert (usage.cache_creation_tokens, usage.cache_creation_5m_tokens, usage.cache_creation_1h_tokens) == (12, 5, 7)


def test_one_hour_writes_above_the_total_are_capped() -> None:
    """A 1-hour count larger than all writes (a confused relay) is cut to the total."""
    raw = _cache_usage(0, 0) | {"cache_creation_input_tokens": 10, "cache_creation": {"ephemeral_1h_input_tokens": 99}}
    usage = summarize_anthropic_json({"type": "message", "content": [], "usage": raw}).usage
    assert (usage.cache_creation_tokens, usage.cache_creation_1h_tokens, usage.cache_creation_5m_tokens) == (10, 10, 0)


def test_accumulator_keeps_its_own_copy_of_the_events() -> None:
    """The summary does not change when the caller reuses the event dicts (copy_json)."""
    acc = AnthropicStreamAccumulator()
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "m", "content": [],
                                                  "usage": {"input_tokens": 3, "output_tokens": 1}}}
    block = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}}
    acc.add("message_start", start)
    acc.add("content_block_start", block)
    start["message"]["usage"]["input_tokens"] = 99
    start["message"]["id"] = "changed"
    block["content_block"]["name"] = "changed"
    acc.add("message_stop", {"type": "message_stop"})
    summary = acc.summary()
    assert summary.response_id == "msg_1"
    assert summary.usage.input_tokens == 3
    assert [call.name for call in summary.tool_calls] == ["Bash"]


def test_copy_json_copies_containers_at_every_depth() -> None:
    from lunaroute.dialects._coerce import copy_json

    value: dict[str, Any] = {"a": [{"b": [1, 2.5, None, True, "s"]}], "c": {"d": {}}}
    copied = copy_json(value)
    assert copied == value
    assert copied is not value and copied["a"] is not value["a"] and copied["a"][0]["b"] is not value["a"][0]["b"]
    assert copied["c"]["d"] is not value["c"]["d"]
    odd = {"t": (1, [2])}
    assert copy_json(odd)["t"] == (1, [2]) and copy_json(odd)["t"][1] is not odd["t"][1]
