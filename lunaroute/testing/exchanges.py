"""
Exchanges built by hand, as the proxy would hand them to the recorder, for
tests and benchmarks that need a session store filled through the real
writers (L{lunaroute.sessions.events.exchange_events} then
L{lunaroute.sessions.sqlite.SQLiteWriter}).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from lunaroute.dialects.model import ResponseSummary, Usage
from lunaroute.exchange import Exchange, Timings

CLAUDE_CODE_AGENT = "claude-cli/2.1.0 (external, sdk-cli)"
CODEX_AGENT = "codex_cli_rs/0.46.0 (Ubuntu 24.4.0; x86_64) xterm-256color"
SDK_AGENT = "Anthropic/Python 0.40.0"


def make_exchange(
    session_id: str,
    received: float,
    *,
    request_id: str | None = None,
    model: str = "claude-sonnet-4-5-20250929",
    user_text: str = "What is the weather in Tokyo?",
    answer: str = "Tokyo is sunny today.",
    input_tokens: int = 1200,
    output_tokens: int = 80,
    cache_read_tokens: int = 0,
    cache_creation_tokens: int = 0,
    cost_usd: float | None = None,
    user_agent: str = CLAUDE_CODE_AGENT,
    dialect: str = "anthropic",
    system: str = "You are a helpful assistant.",
    thinking: str = "",
) -> Exchange:
    """
    One finished, successful streaming exchange received at C{received}
    (epoch seconds), with the usage and cost given.  C{dialect}
    C{openai_chat} makes it a Chat Completions exchange (whose input counts
    the cached tokens, as OpenAI reports them).
    """
    openai = dialect.startswith("openai")
    if openai:
        body: dict[str, Any] = {
            "model": model,
            "stream": True,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user_text}],
        }
        message: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        }
    else:
        body = {
            "model": model,
            "max_tokens": 1024,
            "stream": True,
            "system": [{"type": "text", "text": system}],
            "messages": [{"role": "user", "content": user_text}],
            "metadata": {"user_id": json.dumps({"session_id": session_id})},
        }
        message = {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": answer}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    summary = ResponseSummary(
        dialect=dialect,
        model=model,
        response_id=message["id"],
        text=answer,
        thinking=thinking,
        stop_reason="stop" if openai else "end_turn",
        usage=Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_creation_tokens=cache_creation_tokens,
            thinking_tokens_exact=openai,
        ),
        message=message,
        event_count=8,
        streaming=True,
    )
    raw = json.dumps(body).encode()
    timings = Timings(
        received=received,
        upstream_sent=received + 0.002,
        headers_received=received + 0.300,
        first_byte=received + 0.350,
        last_byte=received + 1.200,
        finished=received + 1.201,
    )
    return Exchange(
        request_id=request_id or str(uuid.uuid4()),
        session_id=session_id,
        listener="openai" if openai else "anthropic",
        kind="conversation",
        dialect=dialect,
        path="/v1/chat/completions" if openai else "/v1/messages",
        method="POST",
        timings=timings,
        provider="openai" if openai else "anthropic",
        model=model,
        streaming=True,
        status=200,
        outcome="ok",
        client_ip="127.0.0.1",
        user_agent=user_agent,
        request_body=raw,
        request_json=body,
        request_headers={"content-type": "application/json"},
        response_headers={"content-type": "text/event-stream"},
        response=summary,
        bytes_out=2048,
        chunk_count=8,
        chunk_gaps_ms=[1.0, 2.0],
        cost_usd=cost_usd,
    )
