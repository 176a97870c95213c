"""Shared helpers for the translation tests: fixtures, streams, the SDKs in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.model import ResponseSummary
from lunaroute.dialects.sse import SSEParser
from lunaroute.dialects.translate.base import StreamTranslator

__all__ = [
    "ANTHROPIC_MESSAGE", "FIXTURES", "PROPERTY", "assert_same_answer", "client_fixture", "names", "openai_client", "pieces", "rebuild", "stream_events", "texts",
    "translate_events",
]

# An Anthropic answer with thinking, text, a tool call and cache traffic.
ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "let me see", "signature": "sig"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "東京"}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5,
              "output_tokens": 7},
}

# The property tests' settings: a fixed example sequence (the suite must be
# reproducible for the lead's merges) and no example database in the tree.
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None)

# Hypothesis strategies for generated conversations and streams.
texts = st.text(min_size=1, max_size=12)
names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)


def pieces(draw: st.DrawFn, text: str, most: int = 4) -> list[str]:
    """``text`` cut at up to ``most`` places hypothesis picks (pieces may be empty)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=most)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]

# The checkout's captured fixtures: the suite runs from the checkout, and
# this module may be the installed copy (site-packages), not the source.
FIXTURES = Path.cwd() / "tests" / "fixtures"


def client_fixture(name: str) -> dict[str, Any]:
    """A captured real client request body (tests/fixtures/clients)."""
    body: dict[str, Any] = json.loads((FIXTURES / "clients" / name).read_text())
    return body


def stream_events(name: str) -> list[dict[str, Any] | str]:
    """A captured provider stream (tests/fixtures/streams) as parsed ``data:`` lines."""
    parser = SSEParser()
    events = parser.feed((FIXTURES / "streams" / name).read_bytes()) + parser.close()
    return [event.data if event.data == "[DONE]" else json.loads(event.data) for event in events]


def translate_events(converter: StreamTranslator, events: list[dict[str, Any] | str]) -> list[bytes]:
    """Feed events one by one: the bytes produced for each, then those of close()."""
    produced = [converter.feed(event) for event in events]
    produced.append(converter.close())
    return produced


def rebuild(dialect: str, data: bytes) -> ResponseSummary:
    """What the gateway's own capture makes of a stream in ``dialect``."""
    capture = ResponseCapture(dialect, streaming=True, content_type="text/event-stream")
    capture.feed(data)
    return capture.finish()


def assert_same_answer(summary: ResponseSummary, original: ResponseSummary) -> None:
    """
    A translated stream's rebuilt answer says what the provider's said: text,
    reasoning, tool calls, and the usage in OpenAI's terms (the input counts
    Anthropic's cache reads and writes).
    """
    assert not summary.partial
    assert summary.text == original.text
    assert summary.thinking == original.thinking
    assert [(c.id, c.name, c.input) for c in summary.tool_calls] == [
        (c.id, c.name, c.input) for c in original.tool_calls
    ]
    usage = original.usage
    cache = usage.cache_read_tokens + usage.cache_creation_tokens if original.dialect == "anthropic" else 0
    assert summary.usage.input_tokens == usage.input_tokens + cache
    assert summary.usage.cache_read_tokens == usage.cache_read_tokens
    assert summary.usage.output_tokens == usage.output_tokens


def openai_client(body: bytes, status: int = 200, content_type: str = "text/event-stream") -> Any:
    """An ``openai.OpenAI`` whose every request is answered with ``body``, in memory."""
    import httpx2  # the openai SDK of this lock builds on httpx2
    import openai

    def handler(request: Any) -> Any:
        return httpx2.Response(status, headers={"content-type": content_type}, content=body)

    return openai.OpenAI(
        api_key="x", base_url="http://test/v1", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
