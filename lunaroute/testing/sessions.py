"""
Recorded sessions for tests and benchmarks: exchanges shaped like what
Claude Code, Codex and the SDKs send (the captured request bodies under
C{tests/fixtures/clients} when given), written to a session database by the
real writer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from lunaroute.dialects.model import ResponseSummary, ToolCall, Usage
from lunaroute.exchange import Enrichment, Exchange, Timings
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.sqlite import SQLiteWriter

__all__ = ["anthropic_summary", "make_exchange", "write_exchanges"]


def anthropic_summary(
    text: str,
    *,
    model: str = "claude-sonnet-4",
    input_tokens: int = 100,
    output_tokens: int = 20,
    cache_read: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    thinking: str = "",
    tool_calls: Iterable[tuple[str, str, Any]] = (),
    stop_reason: str = "end_turn",
    dialect: str = "anthropic",
) -> ResponseSummary:
    """A finished response: text, optional thinking and tool calls C{(id, name, input)}."""
    calls = [ToolCall(id=i, name=n, input=v, raw_input=json.dumps(v)) for i, n, v in tool_calls]
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": "sig"})
    content.append({"type": "text", "text": text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in calls]
    return ResponseSummary(
        dialect=dialect,
        model=model,
        response_id="msg_1",
        text=text,
        thinking=thinking,
        tool_calls=calls,
        stop_reason=stop_reason,
        usage=Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_creation_tokens=cache_write,
            cache_creation_1h_tokens=cache_write_1h,
        ),
        message={"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content},
        event_count=10,
        streaming=True,
    )


def make_exchange(
    session_id: str,
    request_id: str,
    body: dict[str, Any],
    summary: ResponseSummary | None,
    *,
    received: float,
    user_agent: str = "claude-cli/2.1.197 (external, sdk-cli)",
    dialect: str = "anthropic",
    provider: str = "anthropic",
    status: int | None = 200,
    outcome: str = "ok",
    error: str | None = None,
    error_type: str | None = None,
    cost_usd: float | None = None,
    tool_results: list[dict[str, Any]] | None = None,
    duration: float = 1.0,
) -> Exchange:
    """A sealed exchange as the proxy hands it to the recorder."""
    listener = "anthropic" if dialect == "anthropic" else "openai"
    path = {"anthropic": "/v1/messages", "openai_chat": "/v1/chat/completions"}.get(dialect, "/v1/responses")
    exchange = Exchange(
        request_id=request_id,
        session_id=session_id,
        listener=listener,
        kind="conversation",
        dialect=dialect,
        path=path,
        method="POST",
        timings=Timings(
            received=received,
            upstream_sent=received + 0.001,
            headers_received=received + 0.2,
            first_byte=received + 0.25,
            last_byte=received + duration - 0.002,
            finished=received + duration,
        ),
        provider=provider,
        model=body.get("model"),
        streaming=True,
        status=status,
        outcome=outcome,
        error=error,
        error_type=error_type,
        client_ip="127.0.0.1",
        user_agent=user_agent,
        request_body=json.dumps(body).encode(),
        request_json=body,
        request_headers={"content-type": "application/json", "x-api-key": "sk-ant-secret-key-0123456789"},
        response_headers={"content-type": "text/event-stream"},
        response=summary,
        bytes_out=2048,
        chunk_count=8,
    )
    exchange.complete(Enrichment(cost_usd=cost_usd, tool_results=tuple(tool_results or ())))
    return exchange


def write_exchanges(db_path: str, exchanges: Iterable[Exchange]) -> None:
    """Record C{exchanges} into the database at C{db_path} with the real writer."""
    writer = SQLiteWriter(db_path)
    try:
        events: list[dict[str, Any]] = []
        for exchange in exchanges:
            events += exchange_events(exchange)
        writer.write_batch(events)
    finally:
        writer.close()
