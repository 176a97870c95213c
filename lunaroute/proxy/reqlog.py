"""
The human-readable request log (C{logging.log_requests}): a boxed summary per
request and, for streams, the text as it arrives.

This is console output for a person watching the gateway, written straight to
a text stream; structured events still go through C{twisted.logger}.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from lunaroute.dialects.sse import SSEEvent
from lunaroute.exchange import Exchange
from lunaroute.pii.records import redact_text_or_drop
from lunaroute.pii.redactor import Redactor

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

    With a C{redactor} (C{session_recording.pii.enabled}) what is printed is
    redacted: the response text, tool inputs, errors and header values.  A
    stream's text is then printed once, redacted, when it ends, not as it
    arrives (a value can be split across stream events).  A redaction that
    fails prints C{[REDACTION_FAILED]} instead of the text, counted.
    """

    def __init__(self, out: TextIO | None = None, debug: bool = False, redactor: Redactor | None = None) -> None:
        self._out = out or sys.stdout
        self._debug = debug
        self._redactor = redactor
        # Requests whose text was printed while streaming.
        self._streamed: set[str] = set()

    def _clean(self, text: str) -> str:
        if self._redactor is None or not text:
            return text
        return redact_text_or_drop(text, self._redactor, "request_log")

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
            f"route     {exchange.method} {self._clean(exchange.path)} → {exchange.provider}",
            f"model     {exchange.model}",
            f"streaming {'yes' if exchange.streaming else 'no'}",
            f"messages  {count}",
        ]
        if self._debug:
            lines += [f"> {k}: {self._clean(v)}" for k, v in exchange.request_headers.items()]
        self._write(_box("LunaRoute request", lines) + "\n")

    def listener(
        self, exchange: Exchange, dialect: str | None = None
    ) -> Callable[[SSEEvent, dict[str, Any]], None] | None:
        """
        A listener for the response capture's parsed events that prints the
        streamed text as it arrives (C{None} for a non-streaming request).
        C{dialect} is the events' dialect when it is not the client's (a
        translated answer: the provider's events).
        """
        if not exchange.streaming or self._redactor is not None:
            return None
        dialect = dialect or exchange.dialect

        def on_event(event: SSEEvent, data: dict[str, Any]) -> None:
            text = _stream_text(dialect, event.event, data)
            if text:
                self._streamed.add(exchange.request_id)
                self._write(text)

        return on_event

    def finished(self, exchange: Exchange) -> None:
        streamed = exchange.request_id in self._streamed
        self._streamed.discard(exchange.request_id)
        summary = exchange.response
        lines = [f"status    {exchange.status} ({exchange.outcome})"]
        if exchange.error:
            lines.append(f"error     {self._clean(exchange.error)}")
        if summary is not None:
            if not streamed and summary.text:
                lines.append("text      " + self._clean(summary.text).replace("\n", "\n│           "))
            for call in summary.tool_calls:
                arguments = self._clean(json.dumps(call.input, ensure_ascii=False))
                lines.append(f"tool      {call.name} {arguments[:200]}")
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
            lines += [f"< {k}: {self._clean(v)}" for k, v in exchange.response_headers.items()]
        self._write(("\n" if streamed else "") + _box("LunaRoute response", lines) + "\n")
