"""Rebuild an OpenAI Responses API result from its stream or JSON body.

The Responses stream announces each output item (``reasoning``,
``message``, ``function_call``...) with ``response.output_item.added``,
streams its parts as typed deltas addressed by ``output_index`` (and
``content_index`` / ``summary_index``), closes it with a ``.done`` event
holding the finished item, and ends with ``response.completed`` (or
``.incomplete`` / ``.failed``) carrying the whole response object.  That
final object is the authoritative result; the deltas are kept only so a
stream cut short still yields what had arrived.
"""

from __future__ import annotations

from typing import Any

from lunaroute.dialects._coerce import as_dict, as_int, as_list, as_str, json_keeper, opt_str
from lunaroute.dialects.model import (
    ResponseSummary,
    ToolCall,
    Usage,
    parse_tool_input,
)
from lunaroute.dialects.openai_chat import openai_usage

__all__ = ["ResponsesAccumulator", "responses_usage", "summarize_responses_json"]

DIALECT = "openai_responses"

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

# Item types reported as tool calls, and the field holding their arguments.
_TOOL_ITEMS = {"function_call": "arguments", "custom_tool_call": "input"}


class _Part:
    """A content or summary part: its opening shape plus text deltas."""

    __slots__ = ("base", "deltas", "final")

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.deltas: list[str] = []
        self.final: dict[str, Any] | None = None

    def build(self) -> dict[str, Any]:
        if self.final is not None:
            return self.final
        part = dict(self.base)
        part["text"] = as_str(part.get("text")) + "".join(self.deltas)
        return part


class _Item:
    """One output item under construction."""

    __slots__ = ("args", "args_final", "base", "content", "final", "summary")

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.content: dict[int, _Part] = {}
        self.summary: dict[int, _Part] = {}
        self.args: list[str] = []
        self.args_final: str | None = None
        self.final: dict[str, Any] | None = None

    def build(self) -> dict[str, Any]:
        if self.final is not None:
            return self.final
        item = dict(self.base)
        kind = item.get("type")
        if self.content or kind == "message":
            item["content"] = [part.build() for _, part in sorted(self.content.items())]
        if self.summary or kind == "reasoning":
            item["summary"] = [part.build() for _, part in sorted(self.summary.items())]
        if kind == "function_call":
            if self.args_final is not None:
                item["arguments"] = self.args_final
            else:
                item["arguments"] = as_str(item.get("arguments")) + "".join(self.args)
        return item


def _part(parts: dict[int, _Part], index: int, kind: str = "output_text") -> _Part:
    """The part at ``index``, created on first sight (its .added was lost)."""
    part = parts.get(index)
    if part is None:
        part = parts[index] = _Part({"type": kind, "text": ""})
    return part


class ResponsesAccumulator:
    """
    Follow Responses API stream events and summarise on demand.

    The objects it keeps (response, items, parts, errors) are deep copies of
    the events' data, unless ``owned``: the caller then hands each event's
    data over and never uses it again (the capture without a listener), so
    it is kept as it is.
    """

    def __init__(self, *, owned: bool = False) -> None:
        self._copy = json_keeper(owned)
        self.event_count = 0
        self._response: dict[str, Any] | None = None
        self._final: dict[str, Any] | None = None
        self._items: dict[int, _Item] = {}
        self._error: dict[str, Any] | None = None

    def add(self, event_name: str, data: dict[str, Any]) -> None:
        """Take one parsed SSE event (its ``event:`` name and JSON data)."""
        self.event_count += 1
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if not isinstance(kind, str):
            kind = event_name
        if kind in _TERMINAL:
            response = data.get("response")
            if isinstance(response, dict):
                self._final = self._copy(response)
            return
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, data)

    @property
    def complete(self) -> bool:
        """True once a terminal ``response.*`` event arrived without error."""
        return self._final is not None and self._error is None

    def summary(self) -> ResponseSummary:
        """Summarise what has arrived so far (may be called repeatedly)."""
        accumulated = [item.build() for _, item in sorted(self._items.items())]
        if self._final is not None:
            response = dict(self._final)
            # Keep the streamed items if the final object came without them.
            if not as_list(response.get("output")) and accumulated:
                response["output"] = accumulated
        elif self._response is not None or accumulated:
            response = dict(self._response or {"object": "response", "usage": None})
            response["output"] = accumulated
        else:
            return ResponseSummary(
                dialect=DIALECT, error=self._error, partial=not self.complete,
                event_count=self.event_count, streaming=True,
            )
        result = summarize_responses_json(response)
        if self._error is not None:
            result.error = self._error
        result.partial = not self.complete
        result.event_count = self.event_count
        result.streaming = True
        return result

    def _item(self, data: dict[str, Any]) -> _Item:
        index = as_int(data.get("output_index"), len(self._items))
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = _Item({"id": data.get("item_id"), "type": "message"})
        return item

    def _on_created(self, data: dict[str, Any]) -> None:
        self._response = self._copy(as_dict(data.get("response")))

    def _on_item_added(self, data: dict[str, Any]) -> None:
        index = as_int(data.get("output_index"), len(self._items))
        self._items[index] = _Item(self._copy(as_dict(data.get("item"))))

    def _on_item_done(self, data: dict[str, Any]) -> None:
        self._item(data).final = self._copy(as_dict(data.get("item")))

    def _on_content_part_added(self, data: dict[str, Any]) -> None:
        parts = self._item(data).content
        parts[as_int(data.get("content_index"))] = _Part(self._copy(as_dict(data.get("part"))))

    def _on_content_part_done(self, data: dict[str, Any]) -> None:
        part = _part(self._item(data).content, as_int(data.get("content_index")))
        part.final = self._copy(as_dict(data.get("part")))

    def _on_summary_part_added(self, data: dict[str, Any]) -> None:
        parts = self._item(data).summary
        parts[as_int(data.get("summary_index"))] = _Part(self._copy(as_dict(data.get("part"))))

    def _on_summary_part_done(self, data: dict[str, Any]) -> None:
        part = _part(self._item(data).summary, as_int(data.get("summary_index")), "summary_text")
        part.final = self._copy(as_dict(data.get("part")))

    def _on_content_delta(self, data: dict[str, Any]) -> None:
        part = _part(self._item(data).content, as_int(data.get("content_index")))
        part.deltas.append(as_str(data.get("delta")))

    def _on_reasoning_text_delta(self, data: dict[str, Any]) -> None:
        part = _part(self._item(data).content, as_int(data.get("content_index")), "reasoning_text")
        part.deltas.append(as_str(data.get("delta")))

    def _on_content_text_done(self, data: dict[str, Any]) -> None:
        part = _part(self._item(data).content, as_int(data.get("content_index")))
        # The .done text is authoritative; drop the deltas it supersedes.
        text = data.get("text")
        if isinstance(text, str):
            part.base = dict(part.base, text=text)
            part.deltas = []

    def _on_summary_delta(self, data: dict[str, Any]) -> None:
        part = _part(self._item(data).summary, as_int(data.get("summary_index")), "summary_text")
        part.deltas.append(as_str(data.get("delta")))

    def _on_summary_done(self, data: dict[str, Any]) -> None:
        part = _part(self._item(data).summary, as_int(data.get("summary_index")), "summary_text")
        text = data.get("text")
        if isinstance(text, str):
            part.base = dict(part.base, text=text)
            part.deltas = []

    def _on_args_delta(self, data: dict[str, Any]) -> None:
        self._item(data).args.append(as_str(data.get("delta")))

    def _on_args_done(self, data: dict[str, Any]) -> None:
        arguments = data.get("arguments")
        if isinstance(arguments, str):
            self._item(data).args_final = arguments

    def _on_error(self, data: dict[str, Any]) -> None:
        self._error = self._copy(data)


_HANDLERS = {
    "response.created": ResponsesAccumulator._on_created,
    "response.in_progress": ResponsesAccumulator._on_created,
    "response.queued": ResponsesAccumulator._on_created,
    "response.output_item.added": ResponsesAccumulator._on_item_added,
    "response.output_item.done": ResponsesAccumulator._on_item_done,
    "response.content_part.added": ResponsesAccumulator._on_content_part_added,
    "response.content_part.done": ResponsesAccumulator._on_content_part_done,
    "response.output_text.delta": ResponsesAccumulator._on_content_delta,
    "response.output_text.done": ResponsesAccumulator._on_content_text_done,
    "response.reasoning_text.delta": ResponsesAccumulator._on_reasoning_text_delta,
    "response.reasoning_text.done": ResponsesAccumulator._on_content_text_done,
    "response.reasoning_summary_part.added": ResponsesAccumulator._on_summary_part_added,
    "response.reasoning_summary_part.done": ResponsesAccumulator._on_summary_part_done,
    "response.reasoning_summary_text.delta": ResponsesAccumulator._on_summary_delta,
    "response.reasoning_summary_text.done": ResponsesAccumulator._on_summary_done,
    "response.function_call_arguments.delta": ResponsesAccumulator._on_args_delta,
    "response.function_call_arguments.done": ResponsesAccumulator._on_args_done,
    "error": ResponsesAccumulator._on_error,
}


def summarize_responses_json(body: dict[str, Any]) -> ResponseSummary:
    """Summarise a non-streaming ``response`` object or an error body."""
    if not isinstance(body, dict):
        return ResponseSummary(dialect=DIALECT, partial=True)
    # A response object always has "error" (usually null); an error body is
    # {"error": {...}} and nothing else of a response.
    if isinstance(body.get("error"), dict) and "output" not in body:
        return ResponseSummary(dialect=DIALECT, error=body)
    text: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for item in as_list(body.get("output")):
        item = as_dict(item)
        kind = item.get("type")
        if kind == "message":
            for part in as_list(item.get("content")):
                part = as_dict(part)
                if part.get("type") == "output_text":
                    text.append(as_str(part.get("text")))
        elif kind == "reasoning":
            for part in as_list(item.get("summary")) + as_list(item.get("content")):
                piece = as_str(as_dict(part).get("text"))
                if piece:
                    thinking.append(piece)
        elif kind in _TOOL_ITEMS:
            raw = as_str(item.get(_TOOL_ITEMS[kind]))
            calls.append(
                ToolCall(
                    # call_id, not the item id, is what the client answers.
                    id=opt_str(item.get("call_id")) or opt_str(item.get("id")),
                    name=opt_str(item.get("name")),
                    input=parse_tool_input(raw),
                    raw_input=raw,
                )
            )
    # Separate summary parts are separate paragraphs in OpenAI's own UIs.
    thinking_text = "\n\n".join(thinking)
    status = opt_str(body.get("status"))
    reason = opt_str(as_dict(body.get("incomplete_details")).get("reason"))
    error = body.get("error")
    return ResponseSummary(
        dialect=DIALECT,
        model=opt_str(body.get("model")),
        response_id=opt_str(body.get("id")),
        text="".join(text),
        thinking=thinking_text,
        tool_calls=calls,
        stop_reason=reason or status,
        usage=responses_usage(as_dict(body.get("usage")), thinking_text),
        message=body,
        error=error if isinstance(error, dict) else None,
        partial="output" not in body,
    )


def responses_usage(raw: dict[str, Any], thinking: str = "") -> Usage:
    """Normalise a Responses API ``usage`` object (see :class:`Usage`)."""
    return openai_usage(raw, "input", "output", thinking)
