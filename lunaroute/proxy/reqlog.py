"""
The human-readable request log (C{logging.log_requests}): a boxed summary per
request and, for streams, the text as it arrives.

This is console output for a person watching the gateway, written straight to
a text stream; structured events still go through C{twisted.logger}.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from lunaroute.dialects.sse import SSEParser
from lunaroute.exchange import Exchange

_WIDTH = 72


def _box(title: str, lines: list[str]) -> str:
    top = f"┌─ {title} " + "─" * max(0, _WIDTH - len(title) - 4)
    body = [f"│ {line}" for line in lines]
    return "\n".join([top, *body, "└" + "─" * (_WIDTH - 1)])


def _stream_text(dialect: str, event: str, data: dict[str, Any]) -> str:
    """The visible text one stream event adds, if any."""
    if dialect == "anthropic":
        if data.get("type") == "content_block_start" and data.get("index"):
            return "\n"  # thinking, text and tool blocks each on their own line
        if data.get("type") == "content_block_delta":
            delta = data.get("delta") or {}
            return delta.get("text") or delta.get("thinking") or ""
        return ""
    if dialect == "openai_chat":
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            return delta.get("content") or ""
        return ""
    if dialect == "openai_responses":
        if data.get("type") in ("response.output_text.delta", "response.reasoning_summary_text.delta"):
            return data.get("delta") or ""
    return ""


class RequestLogPrinter:
    """
    Prints each request as it goes.  C{debug} adds masked headers and timings.
    """

    def __init__(self, out: TextIO | None = None, debug: bool = False) -> None:
        self._out = out or sys.stdout
        self._debug = debug
        self._parsers: dict[str, SSEParser] = {}

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def started(self, exchange: Exchange) -> None:
        body = exchange.request_json or {}
        messages = body.get("messages") or body.get("input") or []
        count = len(messages) if isinstance(messages, list) else 1
        lines = [
            f"request   {exchange.request_id}",
            f"session   {exchange.session_id}",
            f"route     {exchange.method} {exchange.path} → {exchange.provider}",
            f"model     {exchange.model}",
            f"streaming {'yes' if exchange.streaming else 'no'}",
            f"messages  {count}",
        ]
        if self._debug:
            lines += [f"> {k}: {v}" for k, v in exchange.request_headers.items()]
        self._write(_box("LunaRoute request", lines) + "\n")
        if exchange.streaming:
            self._parsers[exchange.request_id] = SSEParser()

    def chunk(self, exchange: Exchange, chunk: bytes, capture: Any) -> None:
        if capture is not None:
            capture.feed(chunk)
        parser = self._parsers.get(exchange.request_id)
        if parser is None:
            return
        pieces = []
        for event in parser.feed(chunk):
            try:
                data = json.loads(event.data)
            except ValueError:
                continue
            if isinstance(data, dict):
                pieces.append(_stream_text(exchange.dialect, event.event, data))
        text = "".join(pieces)
        if text:
            self._write(text)

    def finished(self, exchange: Exchange) -> None:
        streamed = self._parsers.pop(exchange.request_id, None) is not None
        summary = exchange.response
        lines = [f"status    {exchange.status} ({exchange.outcome})"]
        if exchange.error:
            lines.append(f"error     {exchange.error}")
        if summary is not None:
            if not streamed and summary.text:
                lines.append("text      " + summary.text.replace("\n", "\n│           "))
            for call in summary.tool_calls:
                lines.append(f"tool      {call.name} {json.dumps(call.input, ensure_ascii=False)[:200]}")
            usage = summary.usage
            lines.append(
                f"usage     in={usage.input_tokens} out={usage.output_tokens} "
                f"thinking={usage.thinking_tokens} cache_read={usage.cache_read_tokens} "
                f"cache_write={usage.cache_creation_tokens}"
            )
            lines.append(f"stop      {summary.stop_reason}")
        if self._debug:
            t = exchange.timings
            lines.append(
                "timings   "
                + " ".join(
                    f"{k}={v:.2f}ms" for k, v in t.to_dict().items() if v is not None
                )
            )
            lines += [f"< {k}: {v}" for k, v in exchange.response_headers.items()]
        self._write(("\n" if streamed else "") + _box("LunaRoute response", lines) + "\n")
