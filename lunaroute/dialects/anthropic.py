"""Rebuild an Anthropic Messages response from its stream or JSON body.

Claude streams a response as ``message_start``, then per content block a
``content_block_start`` / ``content_block_delta``... / ``content_block_stop``
run (runs may interleave, keyed by ``index``), then ``message_delta`` with
the stop reason and cumulative usage and finally ``message_stop``.  The
accumulator keeps each block's pieces in lists and only joins them when a
summary is asked for, so a delta costs an append.
"""

from __future__ import annotations

from typing import Any

from lunaroute.dialects._coerce import as_dict, as_int, as_list, as_str, json_keeper, opt_str
from lunaroute.dialects.model import (
    ResponseSummary,
    ToolCall,
    Usage,
    estimate_tokens,
    json_compact,
    parse_tool_input,
)

__all__ = ["AnthropicStreamAccumulator", "summarize_anthropic_json"]

DIALECT = "anthropic"

# Block types whose input arrives as input_json_delta fragments and which we
# report as tool calls (server tools run at Anthropic but are still calls).
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


class _Block:
    """One content block under construction."""

    __slots__ = ("base", "citations", "json_parts", "signature", "text", "thinking")

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.signature: list[str] = []
        self.json_parts: list[str] = []
        self.citations: list[Any] = []

    def build(self) -> tuple[dict[str, Any], str | None]:
        """Return the finished block and, for tool blocks, the raw input."""
        block = dict(self.base)
        kind = block.get("type")
        if kind == "text":
            block["text"] = as_str(block.get("text")) + "".join(self.text)
            if self.citations:
                block["citations"] = as_list(block.get("citations")) + self.citations
        elif kind == "thinking":
            block["thinking"] = as_str(block.get("thinking")) + "".join(self.thinking)
            if self.signature:
                block["signature"] = "".join(self.signature)
        elif kind in _TOOL_BLOCKS:
            if self.json_parts:
                raw = "".join(self.json_parts)
                block["input"] = parse_tool_input(raw)
            else:
                raw = _raw_of(block.get("input"))
                block.setdefault("input", {})
            return block, raw
        return block, None


class AnthropicStreamAccumulator:
    """
    Follow Messages stream events and summarise them on demand.

    The message, blocks and errors it keeps are deep copies of the events'
    data, unless ``owned``: the caller then hands each event's data over
    and never uses it again (the capture without a listener), so it is
    kept as it is.
    """

    def __init__(self, *, owned: bool = False) -> None:
        self._copy = json_keeper(owned)
        self.event_count = 0
        self._message: dict[str, Any] | None = None
        self._usage: dict[str, Any] = {}
        self._delta: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}
        self._last_index = -1
        self._stopped = False
        self._error: dict[str, Any] | None = None

    def add(self, event_name: str, data: dict[str, Any]) -> None:
        """Take one parsed SSE event (its ``event:`` name and JSON data)."""
        self.event_count += 1
        if not isinstance(data, dict):
            return
        # The JSON "type" always equals the SSE event name on Anthropic's
        # wire; preferring it copes with relays that drop "event:" lines.
        kind = data.get("type")
        if not isinstance(kind, str):
            kind = event_name
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, data)

    @property
    def complete(self) -> bool:
        """True once ``message_stop`` arrived and no error interrupted it."""
        return self._stopped and self._error is None

    def summary(self) -> ResponseSummary:
        """Summarise what has arrived so far (may be called repeatedly)."""
        if self._message is None and not self._blocks:
            # Nothing of a message arrived (at most an error): do not invent one.
            return ResponseSummary(
                dialect=DIALECT, error=self._error, partial=not self.complete,
                event_count=self.event_count, streaming=True,
            )
        built = [self._blocks[i].build() for i in sorted(self._blocks)]
        message = dict(self._message or _EMPTY_MESSAGE)
        message.update(self._delta)
        message["content"] = [block for block, _ in built]
        usage = dict(as_dict(message.get("usage")))
        usage.update(self._usage)
        message["usage"] = usage
        result = _summarize(message, [raw for _, raw in built])
        result.error = self._error
        result.partial = not self.complete
        result.event_count = self.event_count
        result.streaming = True
        return result

    def _on_message_start(self, data: dict[str, Any]) -> None:
        # Deep copy: the summary must not change if the caller reuses data.
        self._message = self._copy(as_dict(data.get("message")))
        self._usage = {}

    def _on_block_start(self, data: dict[str, Any]) -> None:
        index = as_int(data.get("index"), len(self._blocks))
        block = _Block(self._copy(as_dict(data.get("content_block"))))
        self._blocks[index] = block
        self._last_index = index

    def _on_block_delta(self, data: dict[str, Any]) -> None:
        index = as_int(data.get("index"), self._last_index)
        block = self._blocks.get(index)
        if block is None:
            # A delta without its start (relay glitch): keep it anyway.
            block = self._blocks[index] = _Block({"type": "text", "text": ""})
        delta = as_dict(data.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta":
            block.text.append(as_str(delta.get("text")))
        elif kind == "input_json_delta":
            block.json_parts.append(as_str(delta.get("partial_json")))
        elif kind == "thinking_delta":
            block.thinking.append(as_str(delta.get("thinking")))
        elif kind == "signature_delta":
            block.signature.append(as_str(delta.get("signature")))
        elif kind == "citations_delta":
            block.citations.append(delta.get("citation"))

    def _on_message_delta(self, data: dict[str, Any]) -> None:
        self._delta.update(as_dict(data.get("delta")))
        # Usage here is cumulative, and newer API versions repeat the input
        # and cache counts: take every figure that is actually present.
        for key, value in as_dict(data.get("usage")).items():
            if value is not None:
                self._usage[key] = value

    def _on_message_stop(self, data: dict[str, Any]) -> None:
        self._stopped = True

    def _on_error(self, data: dict[str, Any]) -> None:
        self._error = self._copy(data)

    def _ignore(self, data: dict[str, Any]) -> None:
        pass


_HANDLERS = {
    "message_start": AnthropicStreamAccumulator._on_message_start,
    "content_block_start": AnthropicStreamAccumulator._on_block_start,
    "content_block_delta": AnthropicStreamAccumulator._on_block_delta,
    "content_block_stop": AnthropicStreamAccumulator._ignore,
    "message_delta": AnthropicStreamAccumulator._on_message_delta,
    "message_stop": AnthropicStreamAccumulator._on_message_stop,
    "ping": AnthropicStreamAccumulator._ignore,
    "error": AnthropicStreamAccumulator._on_error,
}

# Shape used when the stream died before message_start told us the header.
_EMPTY_MESSAGE: dict[str, Any] = {
    "id": None,
    "type": "message",
    "role": "assistant",
    "model": None,
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {},
}


def summarize_anthropic_json(body: dict[str, Any]) -> ResponseSummary:
    """Summarise a non-streaming Messages response or an error body."""
    if not isinstance(body, dict):
        return ResponseSummary(dialect=DIALECT, partial=True)
    if body.get("type") == "error":
        return ResponseSummary(dialect=DIALECT, error=body)
    if "content" not in body and "input_tokens" in body:
        # A /v1/messages/count_tokens result: {"input_tokens": N}.
        usage = Usage(input_tokens=as_int(body.get("input_tokens")))
        return ResponseSummary(dialect=DIALECT, usage=usage, message=body)
    content = [as_dict(block) for block in as_list(body.get("content"))]
    raws = [
        _raw_of(block.get("input")) if block.get("type") in _TOOL_BLOCKS else None
        for block in content
    ]
    result = _summarize(body, raws)
    # A body without content is not a Messages response we understand.
    result.partial = "content" not in body
    return result


def _raw_of(value: Any) -> str:
    """Argument text for an input the provider sent as an object."""
    return json_compact(value) if value else ""


def _summarize(message: dict[str, Any], raws: list[str | None]) -> ResponseSummary:
    """Build the summary from a finished message and its tool raw inputs."""
    text: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for block, raw in zip(as_list(message.get("content")), raws, strict=False):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text":
            text.append(as_str(block.get("text")))
        elif kind == "thinking":
            thinking.append(as_str(block.get("thinking")))
        elif kind in _TOOL_BLOCKS:
            calls.append(
                ToolCall(
                    id=opt_str(block.get("id")),
                    name=opt_str(block.get("name")),
                    input=block.get("input", {}),
                    raw_input=raw or "",
                )
            )
    thinking_text = "".join(thinking)
    raw_usage = as_dict(message.get("usage"))
    output_tokens = as_int(raw_usage.get("output_tokens"))
    # cache_creation_input_tokens is every write; cache_creation splits it by
    # lifetime (5-minute and 1-hour writes are billed at different rates).
    by_ttl = as_dict(raw_usage.get("cache_creation"))
    one_hour = max(0, as_int(by_ttl.get("ephemeral_1h_input_tokens")))
    five_minutes = max(0, as_int(by_ttl.get("ephemeral_5m_input_tokens")))
    creation = as_int(raw_usage.get("cache_creation_input_tokens"), -1)
    if creation < 0:
        creation = one_hour + five_minutes
    usage = Usage(
        input_tokens=as_int(raw_usage.get("input_tokens")),
        output_tokens=output_tokens,
        # Anthropic folds thinking into output_tokens without a breakdown.
        thinking_tokens=min(estimate_tokens(thinking_text), output_tokens)
        if output_tokens
        else estimate_tokens(thinking_text),
        cache_read_tokens=as_int(raw_usage.get("cache_read_input_tokens")),
        cache_creation_tokens=creation,
        cache_creation_1h_tokens=min(one_hour, creation),
        thinking_tokens_exact=False,
    )
    return ResponseSummary(
        dialect=DIALECT,
        model=opt_str(message.get("model")),
        response_id=opt_str(message.get("id")),
        text="".join(text),
        thinking=thinking_text,
        tool_calls=calls,
        stop_reason=opt_str(message.get("stop_reason")),
        usage=usage,
        message=message,
    )
