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

__all__ = [
    "anthropic_summary",
    "long_session_exchanges",
    "make_exchange",
    "write_exchanges",
    "write_postgres_exchanges",
]


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


def write_postgres_exchanges(dsn: str, exchanges: Iterable[Exchange]) -> None:
    """Record C{exchanges} into the PostgreSQL store at C{dsn} with its real writer."""
    from lunaroute.sessions.postgres import PostgresWriter

    writer = PostgresWriter(dsn)
    try:
        writer.write_batch([e for x in exchanges for e in exchange_events(x)])
    finally:
        writer.close()


LONG_SYSTEM = "You are Claude Code, an interactive CLI tool that helps users with software engineering tasks."
LONG_TOOLS = (
    {"name": "Read", "description": "Read a file from the local filesystem.", "input_schema": {"type": "object"}},
    {"name": "Bash", "description": "Run a shell command.", "input_schema": {"type": "object"}},
)


def long_session_exchanges(
    session_id: str,
    turns: int,
    *,
    start: float,
    text_bytes: int = 40,
    keep_messages: int | None = 6,
    change_every: int = 0,
    model: str = "claude-sonnet-4-5",
) -> list[Exchange]:
    """
    A Claude Code-like session of C{turns} requests: turn 1 asks, every
    answer calls C{Read} and the next request carries its result back, so
    the conversation grows by two messages a turn.  Each request resends
    the last C{keep_messages} messages (C{None}: the whole conversation, as
    clients do, which makes the bodies grow quadratically); C{text_bytes}
    pads every text.  With C{change_every}, the system prompt changes at
    every C{change_every}-th turn and the tool definitions at the ones
    after (the turns that pay a cache write).  Turns are ten seconds apart.
    """
    pad = ("lorem ipsum dolor sit amet " * (text_bytes // 27 + 1))[:text_bytes]
    history: list[dict[str, Any]] = [{"role": "user", "content": f"question 1 {pad}"}]
    out: list[Exchange] = []
    for index in range(turns):
        number = index + 1
        version = number // change_every if change_every else 0
        tools_version = (number - 1) // change_every if change_every else 0
        tools = [dict(t) for t in LONG_TOOLS]
        if tools_version:
            tools[1]["description"] = f"Run a shell command (revision {tools_version})."
        body = {
            "model": model,
            "max_tokens": 4096,
            "system": LONG_SYSTEM + (f" Revision {version}." if version else ""),
            "tools": tools,
            "messages": history[-keep_messages:] if keep_messages else list(history),
        }
        call_id = f"toolu_{number:05d}"
        changed = bool(change_every) and (number % change_every in (0, 1)) and number > 1
        summary = anthropic_summary(
            f"answer {number}: {pad}",
            model=model,
            input_tokens=50,
            output_tokens=40,
            cache_read=1000 + 300 * number,
            cache_write=2000 if changed or number == 1 else 300,
            tool_calls=[(call_id, "Read", {"file_path": f"/tmp/long/file-{number}.txt"})],
            stop_reason="tool_use",
        )
        results = None
        if index > 0:
            results = [{"tool_call_id": f"toolu_{number - 1:05d}", "tool_name": "Read", "duration_ms": 400.0}]
        out.append(
            make_exchange(
                session_id,
                f"long-{number:05d}",
                body,
                summary,
                received=start + index * 10.0,
                cost_usd=0.001 * number,
                tool_results=results,
                duration=2.0,
            )
        )
        history += [
            {"role": "assistant", "content": [
                {"type": "text", "text": f"answer {number}: {pad}"},
                {"type": "tool_use", "id": call_id, "name": "Read", "input": {"file_path": f"/tmp/long/file-{number}.txt"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call_id, "content": f"contents of file {number} {pad}"},
                {"type": "text", "text": f"question {number + 1} {pad}"},
            ]},
        ]
    return out
