"""
Tests for turning exchanges into session events (lunaroute.sessions.events).

The exchange builders here are shared with the writer and recorder tests,
which import them from this module.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.model import ResponseSummary, ToolCall, Usage
from lunaroute.exchange import Exchange, Timings
from lunaroute.sessions.events import (
    EVENT_SCHEMA_VERSION,
    exchange_events,
    iso_timestamp,
    request_text,
    scrub_secrets,
    tool_names,
)

STREAMS = Path(__file__).parent / "fixtures" / "streams"

# Credentials that must never reach a recording.
RAW_API_KEY = "sk-ant-api03-RAWSECRETKEY0123456789abcdefXYZ"
RAW_BEARER = "sk-proj-RAWBEARERTOKEN9876543210zyxwvuQ"

# 2025-06-15T12:00:00Z
NOON = 1749988800.0


def captured_summary(name: str, dialect: str) -> ResponseSummary:
    """Run a recorded stream fixture through the proxy's capture."""
    capture = ResponseCapture(dialect, streaming=True, content_type="text/event-stream")
    capture.feed((STREAMS / name).read_bytes())
    return capture.finish()


def simple_summary(
    text: str = "Tokyo is sunny today.",
    model: str = "claude-sonnet-4",
    input_tokens: int = 1200,
    output_tokens: int = 80,
    tool_calls: list[ToolCall] | None = None,
) -> ResponseSummary:
    """A hand-made Anthropic response summary."""
    message = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
    return ResponseSummary(
        dialect="anthropic",
        model=model,
        response_id="msg_test",
        text=text,
        tool_calls=tool_calls or [],
        stop_reason="end_turn",
        usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=10),
        message=message,
        event_count=12,
        streaming=True,
    )


def build_exchange(
    session_id: str = "sess-1",
    *,
    request_id: str | None = None,
    received: float = NOON,
    summary: ResponseSummary | None = None,
    user_text: str = "What is the weather in Tokyo?",
    model: str = "claude-sonnet-4",
    streaming: bool = True,
    status: int | None = 200,
    outcome: str = "ok",
    cost_usd: float | None = None,
    tool_results: list[dict[str, Any]] | None = None,
    with_secrets: bool = True,
    kind: str = "conversation",
) -> Exchange:
    """An Anthropic streaming exchange as the proxy would hand it over."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "stream": streaming,
        "system": [{"type": "text", "text": "You are a helpful assistant."}],
        "messages": [{"role": "user", "content": user_text}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "metadata": {"user_id": json.dumps({"session_id": session_id})},
    }
    raw = json.dumps(body).encode()
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if with_secrets:
        # As if the proxy had forgotten to mask them: the recorder must not
        # rely on it.
        headers["x-api-key"] = RAW_API_KEY
        headers["authorization"] = f"Bearer {RAW_BEARER}"
    timings = Timings(
        received=received,
        upstream_sent=received + 0.002,
        headers_received=received + 0.300,
        first_byte=received + 0.350 if streaming else None,
        last_byte=received + 1.200,
        finished=received + 1.201,
    )
    if summary is None and status is not None:
        summary = simple_summary(model=model)
    return Exchange(
        request_id=request_id or str(uuid.uuid4()),
        session_id=session_id,
        listener="anthropic",
        kind=kind,
        dialect="anthropic",
        path="/v1/messages",
        method="POST",
        timings=timings,
        provider="anthropic",
        model=model,
        streaming=streaming,
        status=status,
        outcome=outcome,
        client_ip="127.0.0.1",
        user_agent="claude-cli/2.1.0 (external, sdk-cli)",
        request_body=raw,
        request_json=body,
        request_headers=headers,
        response_headers={"content-type": "text/event-stream", "request-id": "req_abc"},
        response=summary,
        bytes_out=4096,
        chunk_count=14,
        chunk_gaps_ms=[1.0, 2.0, 3.0, 50.0],
        cost_usd=cost_usd,
        tool_results=tool_results or [],
    )


def by_type(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["type"]: event for event in events}


def test_events_come_in_order_with_the_common_keys() -> None:
    """Every event has type, ids, an ISO millisecond UTC timestamp and the schema version."""
    exchange = build_exchange(summary=captured_summary("anthropic_thinking_tools.sse", "anthropic"))
    events = exchange_events(exchange)
    assert [e["type"] for e in events] == [
        "started",
        "request_recorded",
        "stream_started",
        "response_recorded",
        "tool_call_recorded",
        "tool_call_recorded",
        "completed",
    ]
    for event in events:
        assert event["session_id"] == "sess-1"
        assert event["request_id"] == exchange.request_id
        assert event["schema_version"] == EVENT_SCHEMA_VERSION
        assert event["timestamp"].endswith("Z") and len(event["timestamp"]) == 24
    assert events[0]["timestamp"] == "2025-06-15T12:00:00.000Z"
    assert events[-1]["timestamp"] == "2025-06-15T12:00:01.201Z"
    json.dumps(events)  # everything is serialisable


def test_started_and_request_events_describe_the_request() -> None:
    """started names model, provider, listener and client; request_recorded the body."""
    exchange = build_exchange(user_text="Find the bug in parser.py")
    events = by_type(exchange_events(exchange))
    started = events["started"]
    assert started["model_requested"] == "claude-sonnet-4"
    assert started["provider"] == "anthropic"
    assert started["listener"] == "anthropic"
    assert started["streaming"] is True
    assert started["client_ip"] == "127.0.0.1"
    assert started["user_agent"].startswith("claude-cli/")
    assert started["path"] == "/v1/messages"
    request = events["request_recorded"]
    assert request["request_text"] == "You are a helpful assistant.\n\nFind the bug in parser.py"
    assert request["request_json"] == exchange.request_json
    assert request["body_bytes"] == len(exchange.request_body)
    assert request["message_count"] == 1
    assert request["tools"] == ["get_weather"]


def test_the_providers_view_is_recorded_only_when_it_differs() -> None:
    """A translated or modified request keeps what was really sent beside the client's body, secrets masked."""
    plain = by_type(exchange_events(build_exchange()))["request_recorded"]
    assert "upstream_request_json" not in plain and "upstream_path" not in plain

    exchange = build_exchange()
    exchange.upstream_body = b'{"model":"gpt-5","messages":[],"api_key":"sk-proj-abcdefghijklmnopqrstuvwxyz123456"}'
    exchange.upstream_path = "/v1/chat/completions"
    request = by_type(exchange_events(exchange))["request_recorded"]
    assert request["upstream_path"] == "/v1/chat/completions"
    assert request["upstream_request_json"]["model"] == "gpt-5"
    assert "abcdefghijklmnopqrstuvwxyz" not in json.dumps(request["upstream_request_json"])
    assert request["request_json"] == exchange.request_json


def test_response_and_tool_call_events_come_from_the_summary() -> None:
    """response_recorded carries text, thinking, usage and timings; each tool call gets an event."""
    summary = captured_summary("anthropic_thinking_tools.sse", "anthropic")
    events = exchange_events(build_exchange(summary=summary))
    response = by_type(events)["response_recorded"]
    assert response["response_text"] == summary.text
    assert response["thinking"] == summary.thinking
    assert response["response_json"] == summary.message
    assert response["model_used"] == "claude-sonnet-4-5-20250929"
    assert response["input_tokens"] == 1247
    assert response["cache_read_tokens"] == 8192
    assert response["cache_creation_tokens"] == 512
    assert response["stop_reason"] == "tool_use"
    assert response["chunk_count"] == 14
    assert response["provider_latency_ms"] == 1198.0
    assert response["pre_proxy_ms"] == 2.0
    assert response["chunk_gap_ms"]["max"] == 50.0
    calls = [e for e in events if e["type"] == "tool_call_recorded"]
    assert [(c["index"], c["tool_name"], c["tool_call_id"]) for c in calls] == [
        (0, "get_weather", "toolu_01A09q90qw90lq917835lq9"),
        (1, "get_weather", "toolu_01B7aXgQkxB3nR8M2pZ4c6Yv"),
    ]
    assert calls[0]["input"] == {"location": "Tokyo, JP", "unit": "celsius"}
    assert by_type(events)["stream_started"]["ttft_ms"] == 350.0


def test_completed_carries_final_stats_with_token_totals_and_cost() -> None:
    """The last event has final_stats.tokens.{input,output,thinking,total}, cost and tool results."""
    results = [{"tool_call_id": "toolu_1", "tool_name": "get_weather", "duration_ms": 812.5}]
    exchange = build_exchange(cost_usd=0.0123, tool_results=results)
    completed = exchange_events(exchange)[-1]
    assert completed["type"] == "completed"
    assert completed["success"] is True and completed["outcome"] == "ok"
    stats = completed["final_stats"]
    assert stats["tokens"]["input"] == 1200
    assert stats["tokens"]["output"] == 80
    assert stats["tokens"]["thinking"] == 0
    assert stats["tokens"]["total"] == 1280
    assert stats["estimated_cost_usd"] == 0.0123
    assert stats["duration_ms"] == 1201.0
    assert stats["tool_results"] == results


def test_secrets_are_masked_in_headers_and_bodies() -> None:
    """Raw API keys and bearer tokens appear nowhere in the events."""
    exchange = build_exchange()
    assert exchange.request_json is not None
    exchange.request_json["provider_options"] = {"api_key": RAW_API_KEY, "nested": [{"Authorization": RAW_BEARER}]}
    text = json.dumps(exchange_events(exchange))
    assert RAW_API_KEY not in text
    assert RAW_BEARER not in text
    headers = by_type(exchange_events(exchange))["request_recorded"]["request_headers"]
    assert headers["authorization"].startswith("Bearer sk-p")
    assert headers["anthropic-version"] == "2023-06-01"


def test_secrets_are_masked_in_every_container_of_every_event() -> None:
    """
    Credentials in tool inputs, tool results, an in-stream error and the
    response headers are masked too: masking the events again finds nothing
    left to mask, and no raw secret is anywhere.
    """
    call = ToolCall(id="toolu_1", name="deploy", raw_input="", input={"token": RAW_BEARER, "env": "prod"})
    summary = simple_summary(tool_calls=[call])
    assert summary.message is not None
    summary.message["content"].append({"type": "tool_use", "id": "toolu_1", "input": call.input})
    summary.error = {"type": "error", "error": {"api_key": RAW_API_KEY}}
    exchange = build_exchange(
        summary=summary, tool_results=[{"tool_call_id": "toolu_0", "password": RAW_API_KEY}]
    )
    exchange.response_headers = {"set-cookie": RAW_BEARER, "content-type": "text/event-stream"}
    events = exchange_events(exchange)
    assert scrub_secrets(events) == events
    text = json.dumps(events)
    assert RAW_API_KEY not in text and RAW_BEARER not in text
    assert call.input["token"] == RAW_BEARER  # the exchange itself is left alone


def test_already_masked_values_keep_their_hint() -> None:
    """A value the proxy masked already (sk-a…xyz4) is left as it is."""
    assert scrub_secrets({"x-api-key": "sk-a…xyz4"}) == {"x-api-key": "sk-a…xyz4"}
    assert scrub_secrets({"X-Api-Key": "short"}) == {"X-Api-Key": "***"}
    assert scrub_secrets({"authorization": {"token": "x"}}) == {"authorization": "***"}


def test_unreachable_exchange_has_no_response_event() -> None:
    """Without a status or response there is no response_recorded, and completed says why."""
    exchange = build_exchange(status=None, outcome="unreachable", streaming=False)
    exchange.error = "connection refused"
    exchange.timings.first_byte = exchange.timings.last_byte = exchange.timings.headers_received = None
    events = exchange_events(exchange)
    assert [e["type"] for e in events] == ["started", "request_recorded", "completed"]
    assert events[-1]["success"] is False
    assert events[-1]["error"] == "connection refused"
    assert events[-1]["final_stats"]["tokens"]["total"] == 0


def test_missing_finish_time_uses_the_given_clock() -> None:
    """A milestone the exchange never reached falls back to now_iso()."""
    exchange = build_exchange(status=None, streaming=False)
    exchange.timings.last_byte = exchange.timings.finished = exchange.timings.headers_received = None
    exchange.timings.received = None  # type: ignore[assignment]
    events = exchange_events(exchange, now_iso=lambda: "2030-01-01T00:00:00.000Z")
    assert {e["timestamp"] for e in events} == {"2030-01-01T00:00:00.000Z"}


def test_request_text_and_tools_in_openai_dialects() -> None:
    """Chat and Responses bodies give their user/system text and tool names."""
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {"role": "assistant", "content": "not me"},
        ],
        "tools": [{"type": "function", "function": {"name": "shell"}}],
    }
    assert request_text(chat) == "Be brief.\n\nhello"
    assert tool_names(chat) == ["shell"]
    responses = {
        "instructions": "You are Codex.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "fix it"}]}],
        "tools": [{"type": "function", "name": "apply_patch"}, {"type": "web_search"}],
    }
    assert request_text(responses) == "You are Codex.\n\nfix it"
    assert tool_names(responses) == ["apply_patch", "web_search"]
    assert request_text({"input": "plain"}) == "plain"
    assert request_text(None) == ""


def test_iso_timestamp_is_utc_with_milliseconds() -> None:
    """Epoch seconds render as UTC with exactly three fraction digits and a Z."""
    assert iso_timestamp(0.5) == "1970-01-01T00:00:00.500Z"


def test_masked_header_views_are_recorded_masked_and_as_their_own_dict() -> None:
    """The request path's lazy header view reaches the record masked, through its cheap copy()."""
    from twisted.web.http_headers import Headers

    from lunaroute.proxy.headers import MaskedHeaders
    from lunaroute.sessions.events import _header_dict

    view = MaskedHeaders(Headers({b"x-api-key": [b"sk-ant-api03-abcdefghijklmnop"], b"user-agent": [b"claude-cli"]}))
    copied = _header_dict(view)
    assert type(copied) is dict and copied is not _header_dict(view)
    assert copied["user-agent"] == "claude-cli"
    assert "abcdefghijklmnop" not in copied["x-api-key"]
    assert _header_dict({"a": "b"}) == {"a": "b"}
