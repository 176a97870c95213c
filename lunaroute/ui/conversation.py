"""
What a recorded request adds to its conversation, read from its body: the
user's new text, the tool results it carries back and the system prompt, in
any of the three dialects.  Clients resend the whole conversation each turn,
so a turn shows only what came after the conversation's last assistant
message.  Pure: a parsed body in, plain strings out (escaping is the page's
job).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestParts", "ToolResult", "request_parts"]


@dataclass(frozen=True)
class ToolResult:
    """A tool's output the client sends back: the call it answers, its text, whether it failed."""

    call_id: str
    text: str
    is_error: bool = False


@dataclass(frozen=True)
class RequestParts:
    """
    @ivar user_texts: what the user wrote in this turn.
    @ivar context_texts: user-role texts the client injected, each one whole
        tagged block (Claude Code's C{<system-reminder>}, Codex's
        C{<environment_context>}, C{<user_instructions>}).
    """

    user_texts: list[str] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    system: str | None = None
    tool_names: list[str] = field(default_factory=list)
    context_texts: list[str] = field(default_factory=list)


_TAGGED_BLOCK = re.compile(r"\A\s*<([A-Za-z_][\w-]*)>.*</\1>\s*\Z", re.S)


def _split_context(parts: RequestParts) -> RequestParts:
    """Move the user texts that are one whole tagged block to C{context_texts}."""
    user = [t for t in parts.user_texts if not _TAGGED_BLOCK.match(t)]
    context = [t for t in parts.user_texts if _TAGGED_BLOCK.match(t)]
    return RequestParts(user, parts.tool_results, parts.system, parts.tool_names, context)


def _text_of(content: Any) -> str:
    """Text of a content value: a string, or a list of text-bearing parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, Mapping):
                kind = part.get("type")
                if isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                elif kind in ("image", "input_image", "image_url"):
                    pieces.append("[image]")
                elif kind in ("document", "input_file", "file"):
                    pieces.append("[file]")
        return "\n".join(pieces)
    if content is None:
        return ""
    return json.dumps(content, ensure_ascii=False)


def _tool_names(tools: Any) -> list[str]:
    names = []
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, Mapping):
            name = tool.get("name")
            if name is None and isinstance(tool.get("function"), Mapping):
                name = tool["function"].get("name")
            if isinstance(name, str):
                names.append(name)
    return names


def _after_last(items: list[Any], is_assistant: Any) -> list[Any]:
    last = -1
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and is_assistant(item):
            last = index
    return items[last + 1 :]


def _anthropic(body: Mapping[str, Any]) -> RequestParts:
    messages: list[Any] = body["messages"] if isinstance(body.get("messages"), list) else []
    texts: list[str] = []
    results: list[ToolResult] = []
    for message in _after_last(messages, lambda m: m.get("role") == "assistant"):
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "tool_result":
                results.append(
                    ToolResult(str(block.get("tool_use_id", "")), _text_of(block.get("content")), bool(block.get("is_error")))
                )
            else:
                text = _text_of([block])
                if text:
                    texts.append(text)
    system = body.get("system")
    return RequestParts(texts, results, _text_of(system) if system else None, _tool_names(body.get("tools")))


def _chat(body: Mapping[str, Any]) -> RequestParts:
    messages: list[Any] = body["messages"] if isinstance(body.get("messages"), list) else []
    system = "\n\n".join(
        _text_of(m.get("content")) for m in messages if isinstance(m, Mapping) and m.get("role") in ("system", "developer")
    )
    texts: list[str] = []
    results: list[ToolResult] = []
    for message in _after_last(messages, lambda m: m.get("role") == "assistant"):
        if not isinstance(message, Mapping):
            continue
        if message.get("role") == "user":
            texts.append(_text_of(message.get("content")))
        elif message.get("role") == "tool":
            results.append(ToolResult(str(message.get("tool_call_id", "")), _text_of(message.get("content"))))
    return RequestParts(texts, results, system or None, _tool_names(body.get("tools")))


def _responses(body: Mapping[str, Any]) -> RequestParts:
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    items = items if isinstance(items, list) else []
    texts: list[str] = []
    results: list[ToolResult] = []

    def assistant(item: Mapping[str, Any]) -> bool:
        return item.get("role") == "assistant" or item.get("type") in ("function_call", "custom_tool_call", "reasoning")

    for item in _after_last(items, assistant):
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            results.append(ToolResult(str(item.get("call_id", "")), output if isinstance(output, str) else _text_of(output)))
        elif item.get("role") == "user":
            texts.append(_text_of(item.get("content")))
    instructions = body.get("instructions")
    system = [instructions] if isinstance(instructions, str) and instructions else []
    system += [
        _text_of(item.get("content"))
        for item in items
        if isinstance(item, Mapping) and item.get("role") in ("system", "developer")
    ]
    return RequestParts(texts, results, "\n\n".join(system) or None, _tool_names(body.get("tools")))


def request_parts(body: Any, dialect: str | None) -> RequestParts:
    """
    The new user text, tool results and system prompt of one request body
    (C{dialect}: C{anthropic}, C{openai_chat} or C{openai_responses}; guessed
    from the body's shape when unknown).  A body that is not a JSON object
    gives empty parts.
    """
    if not isinstance(body, Mapping):
        return RequestParts()
    if dialect == "openai_responses" or (dialect is None and "input" in body):
        return _split_context(_responses(body))
    if dialect == "openai_chat":
        return _split_context(_chat(body))
    return _split_context(_anthropic(body))
