"""Shared helpers for the translation tests: fixtures, streams, the SDKs in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.model import ResponseSummary
from lunaroute.dialects.sse import SSEParser
from lunaroute.dialects.translate.base import StreamTranslator

__all__ = [
    "FIXTURES", "client_fixture", "openai_client", "rebuild", "stream_events", "translate_events",
]

FIXTURES = Path(__file__).resolve().parent.parent.parent / "tests" / "fixtures"


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
