"""
The shape checks a client's request passes before it is translated.

A passthrough request reaches its provider untouched, and the provider
says what is wrong with it.  A translated one is rebuilt field by field,
and the translators read fields leniently: without these checks a
``messages`` that is a number, a content block that is a string or a
``max_tokens`` of ``"5"`` would be quietly dropped or carried as junk.
Each check raises :class:`UntranslatableField` (a 400 in the client's
dialect) naming the first wrong field's path, e.g.
``messages[2].content[0].text: must be a string``.

Only the fields the translators read are checked, and only for their JSON
type (plus a few values a provider of the other dialect would refuse with
a message naming its own field, not the client's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from lunaroute.dialects.translate.errors import UntranslatableField

__all__ = [
    "check_chat_request",
    "check_finite",
    "check_messages_request",
    "check_responses_request",
    "check_unicode",
]

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

# No model takes more; a larger value only earns a 400 naming the provider's field.
MAX_TOKENS_LIMIT = 2**31 - 1


def _fail(path: str, problem: str) -> UntranslatableField:
    return UntranslatableField(path, problem)


def _str(value: Any, path: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise _fail(path, "must be a string")


def _dict(value: Any, path: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, dict):
        raise _fail(path, "must be an object")


def _list(value: Any, path: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, list):
        raise _fail(path, "must be an array")


def _number(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(key, "must be a finite number")


def _count(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, "must be an integer")
    if not 0 < value <= MAX_TOKENS_LIMIT:
        raise _fail(key, f"must be between 1 and {MAX_TOKENS_LIMIT}")


def _bool(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise _fail(key, "must be a boolean")


def _typed_blocks(blocks: list[Any], path: str) -> None:
    for j, block in enumerate(blocks):
        _dict(block, f"{path}[{j}]")
        _str(block.get("type"), f"{path}[{j}].type")


def _model(body: dict[str, Any]) -> None:
    if "model" in body:
        _str(body["model"], "model")


def _walk(value: Any) -> Iterator[tuple[Any, str]]:
    """
    Every (value, path) in ``value``, depth first, without recursion (a
    body may be nested as deep as the parser allows).  Paths name keys as
    ``a.b`` and items as ``a[0]``; a very long one is cut to its start.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        yield item, path
        if isinstance(item, dict):
            for key, child in item.items():
                yield key, path
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(item, list):
            for i, child in enumerate(item):
                stack.append((child, f"{path}[{i}]"))


def _named(path: str) -> str:
    path = path or "body"
    return path if len(path) <= _MAX_PATH else path[:_MAX_PATH] + "..."


_MAX_PATH = 200


def check_finite(value: Any) -> None:
    """Raise naming the first NaN or infinity in ``value`` (JSON has neither)."""
    for item, path in _walk(value):
        if isinstance(item, float) and not math.isfinite(item):
            raise _fail(_named(path), "must be a finite number (NaN and Infinity are not JSON)")


def check_unicode(value: Any) -> None:
    """Raise naming the first string in ``value`` (or key) with a lone surrogate (not Unicode text)."""
    for item, path in _walk(value):
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail(_named(path), "holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text") from None


# -- Anthropic Messages ------------------------------------------------------


def _messages_block(block: Any, path: str, tool_ids: set[str]) -> None:
    _dict(block, path)
    kind = block.get("type")
    _str(kind, f"{path}.type")
    if kind == "text":
        _str(block.get("text"), f"{path}.text")
    elif kind in ("image", "document"):
        source = block.get("source")
        _dict(source, f"{path}.source")
        _str(source.get("type"), f"{path}.source.type")
        if source["type"] == "base64":
            _str(source.get("data"), f"{path}.source.data")
            _str(source.get("media_type"), f"{path}.source.media_type")
            if kind == "image":
                if source["media_type"] not in _IMAGE_TYPES:
                    raise _fail(f"{path}.source.media_type", f"must be one of {', '.join(sorted(_IMAGE_TYPES))}")
                if _BASE64.fullmatch(source["data"]) is None:
                    raise _fail(f"{path}.source.data", "is empty or not base64")
        elif source["type"] == "url":
            _str(source.get("url"), f"{path}.source.url")
    elif kind == "tool_use":
        _str(block.get("id"), f"{path}.id")
        _str(block.get("name"), f"{path}.name")
        if "input" in block:
            _dict(block["input"], f"{path}.input")
        tool_ids.add(block["id"])
    elif kind == "tool_result":
        _str(block.get("tool_use_id"), f"{path}.tool_use_id")
        if block["tool_use_id"] not in tool_ids:
            raise _fail(f"{path}.tool_use_id", f"no earlier tool_use has the id {block['tool_use_id']!r}")
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            _list(content, f"{path}.content")
            for k, part in enumerate(content):
                _messages_block(part, f"{path}.content[{k}]", tool_ids)
        is_error = block.get("is_error")
        if is_error is not None and not isinstance(is_error, bool):
            raise _fail(f"{path}.is_error", "must be a boolean")


def check_messages_request(body: dict[str, Any]) -> None:
    """The shape of an Anthropic Messages request the translators read."""
    _model(body)
    messages = body.get("messages")
    _list(messages, "messages")
    tool_ids: set[str] = set()
    for i, message in enumerate(messages or []):
        path = f"messages[{i}]"
        _dict(message, path)
        role = message.get("role")
        _str(role, f"{path}.role")
        if role not in ("user", "assistant", "system"):
            raise _fail(f"{path}.role", f"{role!r} is not a Messages role (user, assistant)")
        content = message.get("content")
        if isinstance(content, str):
            continue
        _list(content, f"{path}.content")
        for j, block in enumerate(content):
            _messages_block(block, f"{path}.content[{j}]", tool_ids)
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        _list(system, "system")
        _typed_blocks(system, "system")
    tools = body.get("tools")
    _list(tools, "tools", optional=True)
    for i, tool in enumerate(tools or []):
        _dict(tool, f"tools[{i}]")
        if tool.get("type") in (None, "custom"):
            _str(tool.get("name"), f"tools[{i}].name")
            _dict(tool.get("input_schema"), f"tools[{i}].input_schema", optional=True)
        else:
            _str(tool.get("type"), f"tools[{i}].type")
    choice = body.get("tool_choice")
    if choice is not None:
        _dict(choice, "tool_choice")
        _str(choice.get("type"), "tool_choice.type")
    stops = body.get("stop_sequences")
    _list(stops, "stop_sequences", optional=True)
    for i, stop in enumerate(stops or []):
        _str(stop, f"stop_sequences[{i}]")
    _count(body, "max_tokens")
    for key in ("temperature", "top_p", "top_k"):
        _number(body, key)
    _bool(body, "stream")
    _dict(body.get("metadata"), "metadata", optional=True)
    _dict(body.get("thinking"), "thinking", optional=True)


# -- Chat Completions --------------------------------------------------------


def check_chat_request(body: dict[str, Any]) -> None:
    """The shape of a Chat Completions request the translators read."""
    _model(body)
    messages = body.get("messages")
    _list(messages, "messages")
    call_ids: set[str] = set()
    for i, message in enumerate(messages or []):
        path = f"messages[{i}]"
        _dict(message, path)
        role = message.get("role")
        _str(role, f"{path}.role")
        if role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise _fail(f"{path}.role", f"{role!r} is not a Chat Completions role")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            _list(content, f"{path}.content")
            _typed_blocks(content, f"{path}.content")
        calls = message.get("tool_calls")
        _list(calls, f"{path}.tool_calls", optional=True)
        for j, call in enumerate(calls or []):
            where = f"{path}.tool_calls[{j}]"
            _dict(call, where)
            _str(call.get("id"), f"{where}.id")
            call_ids.add(call["id"])
            if call.get("type", "function") != "function":
                continue  # the translator names what it cannot carry
            function = call.get("function")
            _dict(function, f"{where}.function")
            _str(function.get("name"), f"{where}.function.name")
            _str(function.get("arguments"), f"{where}.function.arguments", optional=True)
        if role == "tool":
            _str(message.get("tool_call_id"), f"{path}.tool_call_id")
            if message["tool_call_id"] not in call_ids:
                raise _fail(f"{path}.tool_call_id", f"no earlier tool call has the id {message['tool_call_id']!r}")
    tools = body.get("tools")
    _list(tools, "tools", optional=True)
    for i, tool in enumerate(tools or []):
        _dict(tool, f"tools[{i}]")
        _str(tool.get("type"), f"tools[{i}].type")
        if tool["type"] == "function":
            _dict(tool.get("function"), f"tools[{i}].function")
            _str(tool["function"].get("name"), f"tools[{i}].function.name")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str):
        _dict(choice, "tool_choice")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        _list(stop, "stop")
        for i, item in enumerate(stop):
            _str(item, f"stop[{i}]")
    for key in ("max_tokens", "max_completion_tokens"):
        _count(body, key)
    for key in ("temperature", "top_p"):
        _number(body, key)
    _bool(body, "stream")
    _bool(body, "parallel_tool_calls")
    for key in ("stream_options", "metadata", "response_format"):
        _dict(body.get(key), key, optional=True)


# -- Responses ---------------------------------------------------------------


def check_responses_request(body: dict[str, Any]) -> None:
    """The shape of a Responses request the translators read."""
    _model(body)
    _str(body.get("instructions"), "instructions", optional=True)
    items = body.get("input")
    if not isinstance(items, str):
        _list(items, "input")
        for i, item in enumerate(items or []):
            path = f"input[{i}]"
            _dict(item, path)
            kind = item.get("type")
            _str(kind, f"{path}.type", optional=True)
            if kind in (None, "message"):
                _str(item.get("role"), f"{path}.role")
                content = item.get("content")
                if not isinstance(content, str):
                    _list(content, f"{path}.content")
                    _typed_blocks(content, f"{path}.content")
            elif kind == "function_call":
                _str(item.get("call_id"), f"{path}.call_id")
                _str(item.get("name"), f"{path}.name")
                _str(item.get("arguments"), f"{path}.arguments", optional=True)
            elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
                _str(item.get("call_id"), f"{path}.call_id")
    tools = body.get("tools")
    _list(tools, "tools", optional=True)
    for i, tool in enumerate(tools or []):
        _dict(tool, f"tools[{i}]")
        _str(tool.get("type"), f"tools[{i}].type")
        if tool["type"] in ("function", "custom"):
            _str(tool.get("name"), f"tools[{i}].name")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str):
        _dict(choice, "tool_choice")
    _count(body, "max_output_tokens")
    for key in ("temperature", "top_p"):
        _number(body, key)
    _bool(body, "stream")
    _bool(body, "parallel_tool_calls")
    for key in ("reasoning", "text"):
        _dict(body.get(key), key, optional=True)
    _dict((body.get("text") or {}).get("format"), "text.format", optional=True)
