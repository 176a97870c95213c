"""Rebuild an OpenAI Chat Completions response from its stream or body.

A streamed chat completion is a run of ``chat.completion.chunk`` objects:
each carries per-choice deltas (content, reasoning from compatible servers,
tool-call fragments keyed by ``index``), the last one per choice a
``finish_reason``; with ``stream_options.include_usage`` a final chunk with
``choices: []`` carries usage, and ``data: [DONE]`` ends the stream.  Every
choice is tracked so the rebuilt ``chat.completion`` is whole, but only
choice 0 feeds the summary's text and tool calls.
"""

from __future__ import annotations

from typing import Any

from lunaroute.dialects._coerce import as_dict, as_int, as_list, as_str, copy_json, opt_str
from lunaroute.dialects.model import (
    ResponseSummary,
    ToolCall,
    Usage,
    estimate_tokens,
    parse_tool_input,
)

__all__ = ["ChatCompletionAccumulator", "chat_usage", "summarize_chat_json"]

DIALECT = "openai_chat"

# Chunk-level fields copied into the rebuilt chat.completion when present.
_HEADER_FIELDS = ("id", "created", "model", "service_tier", "system_fingerprint")

# Compatible servers (vLLM, DeepSeek, OpenRouter...) name reasoning either way.
_REASONING_KEYS = ("reasoning_content", "reasoning")


class _ToolCallParts:
    """One tool call being assembled from fragments."""

    __slots__ = ("args", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type = "function"
        self.name: list[str] = []
        self.args: list[str] = []


class _Choice:
    """One choice's deltas, kept as lists until a summary joins them."""

    __slots__ = (
        "content", "finish_reason", "reasoning", "reasoning_key", "refusal", "role",
        "saw_content", "tools",
    )

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.saw_content = False
        self.refusal: list[str] = []
        self.reasoning: list[str] = []
        self.reasoning_key = "reasoning_content"
        self.tools: dict[int, _ToolCallParts] = {}
        self.finish_reason: str | None = None

    def add(self, delta: dict[str, Any]) -> None:
        role = delta.get("role")
        if isinstance(role, str):
            self.role = role
        content = delta.get("content")
        if isinstance(content, str):
            self.saw_content = True
            self.content.append(content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str):
            self.refusal.append(refusal)
        for key in _REASONING_KEYS:
            piece = delta.get(key)
            if isinstance(piece, str):
                self.reasoning_key = key
                self.reasoning.append(piece)
                break
        for fragment in as_list(delta.get("tool_calls")):
            self._add_tool_fragment(as_dict(fragment))

    def _add_tool_fragment(self, fragment: dict[str, Any]) -> None:
        call_id = opt_str(fragment.get("id"))
        index = fragment.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # Some compatible servers omit index: a new id opens a new call,
            # anything else continues the latest one.
            if call_id is not None or not self.tools:
                index = len(self.tools)
            else:
                index = max(self.tools)
        parts = self.tools.get(index)
        if parts is None:
            parts = self.tools[index] = _ToolCallParts()
        if call_id:
            parts.id = call_id
        kind = fragment.get("type")
        if isinstance(kind, str):
            parts.type = kind
        function = as_dict(fragment.get("function"))
        name = function.get("name")
        if isinstance(name, str):
            parts.name.append(name)
        args = function.get("arguments")
        if isinstance(args, str):
            parts.args.append(args)

    def build(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(self.content) if self.saw_content else None,
            "refusal": "".join(self.refusal) if self.refusal else None,
        }
        if self.reasoning:
            message[self.reasoning_key] = "".join(self.reasoning)
        if self.tools:
            message["tool_calls"] = [
                {
                    "id": parts.id,
                    "type": parts.type,
                    "function": {"name": "".join(parts.name), "arguments": "".join(parts.args)},
                }
                for _, parts in sorted(self.tools.items())
            ]
        return {
            "index": index,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }


class ChatCompletionAccumulator:
    """Follow ``chat.completion.chunk`` objects and summarise on demand."""

    def __init__(self) -> None:
        self.event_count = 0
        self._header: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: dict[str, Any] | None = None
        self._done = False
        self._error: dict[str, Any] | None = None

    def add(self, data: dict[str, Any]) -> None:
        """Take one parsed chunk object (the JSON of one ``data:`` line)."""
        self.event_count += 1
        if not isinstance(data, dict):
            return
        error = data.get("error")
        if isinstance(error, dict):
            # Some servers report mid-stream failures as {"error": {...}}.
            self._error = copy_json(data)
            return
        for key in _HEADER_FIELDS:
            value = data.get(key)
            if value is not None and key not in self._header:
                self._header[key] = value
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._usage = copy_json(usage)
        for raw_choice in as_list(data.get("choices")):
            choice = as_dict(raw_choice)
            index = as_int(choice.get("index"))
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _Choice()
            state.add(as_dict(choice.get("delta")))
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                state.finish_reason = finish

    def mark_done(self) -> None:
        """Record the ``data: [DONE]`` sentinel that ends a normal stream."""
        self._done = True

    @property
    def complete(self) -> bool:
        """True once the stream was properly terminated without an error."""
        if self._error is not None:
            return False
        # [DONE] is the real terminator; servers that omit it still count as
        # finished once choice 0 has a finish_reason and usage has arrived.
        first = self._choices.get(0)
        finished = first is not None and first.finish_reason is not None
        return self._done or (finished and self._usage is not None)

    def summary(self) -> ResponseSummary:
        """Summarise what has arrived so far (may be called repeatedly)."""
        if not self._header and not self._choices and self._usage is None:
            return ResponseSummary(
                dialect=DIALECT, error=self._error, partial=not self.complete,
                event_count=self.event_count, streaming=True,
            )
        message: dict[str, Any] = {
            "id": self._header.get("id"),
            "object": "chat.completion",
            "created": self._header.get("created"),
            "model": self._header.get("model"),
            "choices": [state.build(index) for index, state in sorted(self._choices.items())],
        }
        for key in ("service_tier", "system_fingerprint"):
            if key in self._header:
                message[key] = self._header[key]
        if self._usage is not None:
            message["usage"] = self._usage
        result = summarize_chat_json(message)
        result.error = self._error
        result.partial = not self.complete
        result.event_count = self.event_count
        result.streaming = True
        return result


def summarize_chat_json(body: dict[str, Any]) -> ResponseSummary:
    """Summarise a non-streaming ``chat.completion`` or an error body."""
    if not isinstance(body, dict):
        return ResponseSummary(dialect=DIALECT, partial=True)
    if isinstance(body.get("error"), dict):
        return ResponseSummary(dialect=DIALECT, error=body)
    choices = [as_dict(choice) for choice in as_list(body.get("choices"))]
    first = next((c for c in choices if as_int(c.get("index")) == 0), {})
    message = as_dict(first.get("message"))
    calls = []
    for call in as_list(message.get("tool_calls")):
        call = as_dict(call)
        function = as_dict(call.get("function"))
        raw = as_str(function.get("arguments"))
        calls.append(
            ToolCall(
                id=opt_str(call.get("id")),
                name=opt_str(function.get("name")),
                input=parse_tool_input(raw),
                raw_input=raw,
            )
        )
    thinking = ""
    for key in _REASONING_KEYS:
        if isinstance(message.get(key), str):
            thinking = message[key]
            break
    return ResponseSummary(
        dialect=DIALECT,
        model=opt_str(body.get("model")),
        response_id=opt_str(body.get("id")),
        text=content_text(message.get("content")),
        thinking=thinking,
        tool_calls=calls,
        stop_reason=opt_str(first.get("finish_reason")),
        usage=chat_usage(as_dict(body.get("usage")), thinking),
        message=body,
        partial="choices" not in body,
    )


def openai_usage(raw: dict[str, Any], input_name: str, output_name: str, thinking: str = "") -> Usage:
    """
    Normalise an OpenAI ``usage`` object (see :class:`Usage`).  Chat
    Completions calls its counts ``prompt``/``completion``, the Responses API
    ``input``/``output``; the details objects follow the same names.
    """
    details = as_dict(raw.get(f"{output_name}_tokens_details"))
    reasoning = details.get("reasoning_tokens")
    exact = as_int(reasoning, -1) >= 0
    return Usage(
        input_tokens=as_int(raw.get(f"{input_name}_tokens")),
        output_tokens=as_int(raw.get(f"{output_name}_tokens")),
        thinking_tokens=as_int(reasoning) if exact else estimate_tokens(thinking),
        cache_read_tokens=as_int(as_dict(raw.get(f"{input_name}_tokens_details")).get("cached_tokens")),
        cache_creation_tokens=0,
        thinking_tokens_exact=exact,
    )


def chat_usage(raw: dict[str, Any], thinking: str = "") -> Usage:
    """Normalise a Chat Completions ``usage`` object (see :class:`Usage`)."""
    return openai_usage(raw, "prompt", "completion", thinking)


def content_text(content: Any) -> str:
    """Message content as text; some servers send a list of parts."""
    if isinstance(content, str):
        return content
    return "".join(
        as_str(as_dict(part).get("text"))
        for part in as_list(content)
        if as_dict(part).get("type") in ("text", "output_text")
    )
