"""The openai SDK (Chat Completions) on Claude: Chat in, Anthropic Messages out.

Free of I/O, like :mod:`anthropic_to_chat`:

- :func:`chat_request_to_messages` turns a Chat Completions request body
  into an Anthropic Messages one;
- :func:`messages_response_to_chat` turns an Anthropic ``message`` into a
  ``chat.completion``; :func:`openai_error_from_anthropic` an Anthropic
  error into OpenAI's error body;
- :class:`AnthropicToChatChunks` turns the provider's parsed stream events
  into ``chat.completion.chunk`` dicts one event at a time, and
  :class:`AnthropicToChatStream` writes them as the client's SSE bytes.

The Responses translator (:mod:`responses_to_anthropic`) reuses all of it:
a Responses request goes through Chat on its way to Anthropic, and an
Anthropic answer through Chat chunks on its way back.  For that use the
functions take a ``keep_thinking`` switch that carries Anthropic's signed
thinking blocks under the private key :data:`THINKING_KEY`, which a Chat
client never sees.  Every field is listed in docs/translation.md.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from lunaroute.dialects._coerce import as_dict, as_int, as_list, as_str, opt_str
from lunaroute.dialects.model import json_compact
from lunaroute.dialects.openai_chat import content_text
from lunaroute.dialects.translate import base
from lunaroute.dialects.translate.common import ENDED_EARLY, Direction, sort_top_level, utf8
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.dialects.translate.validate import check_chat_request

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "THINKING_BUDGETS",
    "THINKING_KEY",
    "AnthropicToChatChunks",
    "AnthropicToChatStream",
    "chat_request_to_messages",
    "chat_usage_from_anthropic",
    "messages_response_to_chat",
    "openai_error_from_anthropic",
    "sse_data",
]

# Anthropic requires max_tokens; OpenAI does not.  8192 is what every
# current Claude model (3.5 Haiku and up) can produce.
DEFAULT_MAX_TOKENS = 8192

# reasoning_effort as an extended-thinking budget (Anthropic's minimum is
# 1024); "none" and "minimal" mean no thinking.
THINKING_BUDGETS = {"low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576, "max": 24576}
_MIN_BUDGET = 1024

# Private key carrying Anthropic thinking blocks through the Chat form on the
# Responses path (assistant messages, message and chunk deltas).
THINKING_KEY = "_anthropic_thinking"

# Marker the Messages -> Chat core puts before an erroring tool result.
_TOOL_ERROR_PREFIX = "[tool error] "

_HANDLED_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p",
        "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "metadata", "user",
        "safety_identifier", "reasoning_effort", "response_format", "n",
    }
)
_REFUSED_FIELDS = {
    "functions": "legacy function calling; send `tools` instead",
    "function_call": "legacy function calling; send `tool_choice` instead",
    "audio": "Anthropic models do not produce audio",
    "web_search_options": "OpenAI's search runs only at OpenAI",
}

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> (HTTP status it comes with, OpenAI type, OpenAI code).
_ERRORS = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "invalid_request_error", "invalid_api_key"),
    "permission_error": (403, "invalid_request_error", "permission_denied"),
    "not_found_error": (404, "invalid_request_error", "model_not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "requests", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "overloaded_error": (529, "server_error", "overloaded"),
}
_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


# -- requests ------------------------------------------------------------------


def chat_request_to_messages(
    body: dict[str, Any],
    model: str | None = None,
    dropped: list[str] | None = None,
    *,
    keep_thinking: bool = False,
    check: bool = True,
) -> dict[str, Any]:
    """
    Translate a Chat Completions request body into an Anthropic Messages one.

    ``model`` replaces the body's model.  Paths of fields left out on
    purpose are appended to ``dropped``.  Raises :class:`UntranslatableField`
    for what cannot be carried.  ``keep_thinking`` turns assistant messages'
    :data:`THINKING_KEY` lists back into thinking blocks (the Responses path).
    ``check`` checks the client's body's shape first (the Responses path
    checked its own body already).
    """
    drops = sort_top_level(body, _HANDLED_FIELDS, _REFUSED_FIELDS, dropped)
    if check:
        check_chat_request(body)
    if as_int(body.get("n"), 1) > 1:
        raise UntranslatableField("n", "Anthropic answers with one message per request")
    _response_format(body.get("response_format"), drops)

    out: dict[str, Any] = {"model": model if model is not None else as_str(body.get("model"))}
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for i, raw in enumerate(as_list(body.get("messages"))):
        _message(as_dict(raw), f"messages[{i}]", system, messages, drops, keep_thinking)
    if system:
        out["system"] = system
    out["messages"] = messages

    tools = as_list(body.get("tools"))
    if tools:
        out["tools"] = [_tool(as_dict(tool), f"tools[{i}]", drops) for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if tools and body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None and tools:
        out["tool_choice"] = choice
    elif choice is not None:
        drops.append("tool_choice")  # Anthropic refuses a tool choice without tools

    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [as_str(s) for s in stop]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and temperature > 1:
        raise UntranslatableField("temperature", "Anthropic's temperature goes from 0 to 1 (OpenAI's to 2)")

    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    _thinking(body, out, as_int(limit) or None, messages, drops)

    metadata = as_dict(body.get("metadata"))
    if set(metadata) - {"user"}:
        drops.append("metadata")  # Anthropic's metadata holds only user_id
    user = metadata.get("user") or body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("stream"):
        out["stream"] = True
    return out


def _response_format(fmt: Any, drops: list[str]) -> None:
    kind = as_dict(fmt).get("type")
    if kind in (None, "text"):
        return
    if kind == "json_object":
        # The model still sees the prompt asking for JSON; nothing enforces it.
        drops.append("response_format")
        return
    raise UntranslatableField("response_format.type", f"{kind!r}: Anthropic cannot enforce an output schema")


def _push(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append blocks as a ``role`` turn, joining a turn of the same role."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _message(
    message: dict[str, Any],
    path: str,
    system: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    drops: list[str],
    keep_thinking: bool,
) -> None:
    role = message.get("role")
    content = message.get("content")
    if "name" in message:
        drops.append(f"{path}.name")  # Anthropic has no participant names
    if role in ("system", "developer"):
        # Every system message joins the one system prompt, in order: a
        # `system` turn inside `messages` needs Anthropic's
        # mid-conversation-system beta, which a translated request cannot
        # count on.
        text = _text_only(content, f"{path}.content")
        if text:
            system.append({"type": "text", "text": text})
    elif role == "user":
        _push(messages, "user", _user_blocks(content, f"{path}.content"))
    elif role == "assistant":
        _push(messages, "assistant", _assistant_blocks(message, path, drops, keep_thinking))
    elif role == "tool":
        result = content_text(content) if not isinstance(content, str) else content
        for j, part in enumerate(as_list(content)):
            if as_dict(part).get("type") != "text":
                raise UntranslatableField(f"{path}.content[{j}].type", "a tool message carries text only")
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": as_str(message.get("tool_call_id"))}
        if result.startswith(_TOOL_ERROR_PREFIX):
            result = result[len(_TOOL_ERROR_PREFIX):]
            block["is_error"] = True
        block["content"] = result
        _push(messages, "user", [block])
    else:
        raise UntranslatableField(f"{path}.role", f"role {role!r} has no Anthropic form")


def _text_only(content: Any, path: str) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    for j, part in enumerate(as_list(content)):
        if as_dict(part).get("type") != "text":
            raise UntranslatableField(f"{path}[{j}].type", "only text can be a system prompt")
    return content_text(content)


def _user_blocks(content: Any, path: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, raw in enumerate(as_list(content)):
        part = as_dict(raw)
        kind = part.get("type")
        where = f"{path}[{j}]"
        if kind == "text":
            if as_str(part.get("text")):
                blocks.append({"type": "text", "text": as_str(part.get("text"))})
        elif kind == "image_url":
            url = as_str(as_dict(part.get("image_url")).get("url"))
            blocks.append({"type": "image", "source": media_source(url, f"{where}.image_url.url")})
        elif kind == "file":
            blocks.append(_document(as_dict(part.get("file")), f"{where}.file"))
        else:
            raise UntranslatableField(f"{where}.type", f"{kind!r} parts have no Anthropic form")
    return blocks


IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
DOCUMENT_MEDIA_TYPES = frozenset({"application/pdf"})
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def media_source(url: str, path: str, media_types: frozenset[str] = IMAGE_MEDIA_TYPES) -> dict[str, Any]:
    """
    An image or PDF URL (``data:`` or http) as an Anthropic ``source``.  A
    data URL must be base64 of a media type Anthropic takes (``media_types``)
    with a body that is base64: Anthropic would refuse anything else naming
    its own field, not the client's.
    """
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise UntranslatableField(path, "only base64 data URLs can be carried")
        if media_type.lower() not in media_types:
            raise UntranslatableField(path, f"the media type {media_type!r} is not one of {', '.join(sorted(media_types))}")
        if _BASE64.fullmatch(data) is None:
            raise UntranslatableField(path, "the data URL's body is empty or not base64")
        return {"type": "base64", "media_type": media_type.lower(), "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise UntranslatableField(path, "neither a data URL nor an http(s) URL")


def _document(file: dict[str, Any], path: str) -> dict[str, Any]:
    data = file.get("file_data")
    if not isinstance(data, str):
        raise UntranslatableField(f"{path}.file_id", "uploaded OpenAI files cannot be read by Anthropic")
    block: dict[str, Any] = {"type": "document", "source": media_source(data, f"{path}.file_data", DOCUMENT_MEDIA_TYPES)}
    if as_str(file.get("filename")):
        block["title"] = file["filename"]
    return block


def _assistant_blocks(
    message: dict[str, Any], path: str, drops: list[str], keep_thinking: bool
) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if keep_thinking:
        blocks.extend(as_dict(b) for b in as_list(message.get(THINKING_KEY)))
    elif message.get("reasoning_content"):
        drops.append(f"{path}.reasoning_content")
    text = content_text(message.get("content")) or as_str(message.get("refusal"))
    if text:
        blocks.append({"type": "text", "text": text})
    for j, raw in enumerate(as_list(message.get("tool_calls"))):
        call = as_dict(raw)
        where = f"{path}.tool_calls[{j}]"
        if call.get("type", "function") != "function":
            raise UntranslatableField(f"{where}.type", "only function tool calls have an Anthropic form")
        function = as_dict(call.get("function"))
        arguments = as_str(function.get("arguments")) or "{}"
        try:
            parsed = json.loads(arguments)
        except ValueError:
            raise UntranslatableField(f"{where}.function.arguments", "not valid JSON") from None
        if not isinstance(parsed, dict):
            raise UntranslatableField(f"{where}.function.arguments", "not a JSON object")
        blocks.append(
            {"type": "tool_use", "id": as_str(call.get("id")), "name": as_str(function.get("name")), "input": parsed}
        )
    return blocks


def _tool(tool: dict[str, Any], where: str, drops: list[str]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise UntranslatableField(f"{where}.type", f"{tool.get('type')!r} tools have no Anthropic form")
    function = as_dict(tool.get("function"))
    out: dict[str, Any] = {
        "name": as_str(function.get("name")),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("strict"):
        # Anthropic's strict tool use is a beta of its own; false is the default anyway.
        drops.append(f"{where}.function.strict")
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": as_str(as_dict(choice.get("function")).get("name"))}
    raise UntranslatableField("tool_choice", f"{choice!r} has no Anthropic form")


def _thinking(
    body: dict[str, Any], out: dict[str, Any], limit: int | None, messages: list[dict[str, Any]], drops: list[str]
) -> None:
    """reasoning_effort as a thinking budget, when Anthropic allows one here."""
    budget = THINKING_BUDGETS.get(as_str(body.get("reasoning_effort")), 0)
    if budget and limit is not None:
        # max_completion_tokens counts reasoning too: thinking gets what
        # leaves 1024 tokens for the answer.
        budget = min(budget, limit - _MIN_BUDGET)
    allowed = (
        budget >= _MIN_BUDGET
        and body.get("temperature") in (None, 1)
        and (body.get("top_p") is None or body["top_p"] >= 0.95)
        and as_dict(out.get("tool_choice")).get("type") not in ("any", "tool")
        and _thinking_fits_history(messages)
    )
    if allowed:
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif body.get("reasoning_effort") not in (None, "none", "minimal"):
        drops.append("reasoning_effort")
    out["max_tokens"] = limit if limit is not None else DEFAULT_MAX_TOKENS + (budget if allowed else 0)


def _thinking_fits_history(messages: list[dict[str, Any]]) -> bool:
    """With thinking on, Anthropic wants a tool loop's last call to follow its thinking."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            blocks = message["content"]
            has_call = any(b.get("type") == "tool_use" for b in blocks)
            return not has_call or blocks[0].get("type") in ("thinking", "redacted_thinking")
    return True


# -- responses -----------------------------------------------------------------


def chat_usage_from_anthropic(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage in Chat terms: the prompt includes cache reads and writes."""
    cached = as_int(usage.get("cache_read_input_tokens"))
    writes = as_int(usage.get("cache_creation_input_tokens"))
    prompt = as_int(usage.get("input_tokens")) + cached + writes
    completion = as_int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        # cache_write_tokens: the openai SDK's name for what was written to the cache.
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": writes},
    }


def _chat_id(message_id: Any) -> str:
    return f"chatcmpl-{as_str(message_id)}"


def _tool_call(block: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": as_str(block.get("id")),
        "type": "function",
        "function": {"name": as_str(block.get("name")), "arguments": json_compact(block.get("input", {}))},
    }
    if index is not None:
        call = {"index": index, **call}
    return call


def messages_response_to_chat(
    body: dict[str, Any], client_model: str, created: int | None = None, *, keep_thinking: bool = False
) -> dict[str, Any]:
    """
    Translate an Anthropic ``message`` into a ``chat.completion``.

    Thinking text is reported as ``reasoning_content`` (the convention of
    DeepSeek and vLLM); with ``keep_thinking`` the signed blocks ride along
    under :data:`THINKING_KEY`.
    """
    text: list[str] = []
    thinking: list[str] = []
    signed: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for raw in as_list(as_dict(body).get("content")):
        block = as_dict(raw)
        kind = block.get("type")
        if kind == "text":
            text.append(as_str(block.get("text")))
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(as_str(block.get("thinking")))
            signed.append(block)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None,
                               "refusal": None}
    if any(thinking):
        message["reasoning_content"] = "".join(thinking)
    if keep_thinking and signed:
        message[THINKING_KEY] = signed
    if calls:
        message["tool_calls"] = calls
    stop = opt_str(body.get("stop_reason"))
    return {
        "id": _chat_id(body.get("id")),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": client_model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _FINISH_REASONS.get(stop or "end_turn", "stop")}],
        "usage": chat_usage_from_anthropic(as_dict(body.get("usage"))),
    }


def openai_error_from_anthropic(body: Any, status: int) -> dict[str, Any]:
    """An Anthropic error body (or anything) as OpenAI's ``{"error": {...}}``."""
    error = as_dict(as_dict(body).get("error"))
    kind = as_str(error.get("type")) or _STATUS_TYPES.get(status) or (
        "api_error" if status >= 500 else "invalid_request_error"
    )
    _, error_type, code = _ERRORS.get(kind, (status, "server_error" if status >= 500 else "invalid_request_error", None))
    message = as_str(error.get("message")) or f"upstream error (HTTP {status})"
    return {"error": {"message": message, "type": error_type, "param": None, "code": code or kind}}


# -- streams -------------------------------------------------------------------


def sse_data(data: dict[str, Any] | str) -> bytes:
    """One ``data:`` frame of a Chat Completions stream."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return utf8(f"data: {text}\n\n")


class AnthropicToChatChunks:
    """
    Anthropic stream events in, ``chat.completion.chunk`` dicts out.

    :meth:`feed` returns the chunks for one event (often none: pings, block
    stops); the last is followed by ``"[DONE]"`` once ``message_stop``
    arrived.  An ``error`` event becomes one OpenAI error dict
    (``{"error": {...}}``) and ends the stream.  Tool calls are numbered in
    the order their blocks start, so interleaved parallel calls keep their
    own ``index``.
    """

    def __init__(
        self, client_model: str, *, include_usage: bool = True, keep_thinking: bool = False,
        created: int | None = None,
    ) -> None:
        self.client_model = client_model
        self.include_usage = include_usage
        self.keep_thinking = keep_thinking
        self.created = created if created is not None else int(time.time())
        self.finished = False
        self._id = "chatcmpl-"
        self._started = False
        self._tools: dict[int, int] = {}  # Anthropic block index -> tool call index
        self._thinking: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] = {}
        self._finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.client_model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, event: dict[str, Any] | str) -> list[dict[str, Any] | str]:
        """The chunks for one parsed Anthropic event (its JSON ``data``)."""
        if self.finished or not isinstance(event, dict):
            return []
        kind = event.get("type")
        handler = _EVENT_HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return []
        out: list[dict[str, Any] | str] = []
        if not self._started and kind != "error":
            self._start(as_dict(event.get("message")), out)
        handler(self, event, out)
        return out

    def close(self) -> list[dict[str, Any] | str]:
        """The provider's body ended: finish (after a stop reason) or report the cut."""
        if self.finished:
            return []
        if self._finish is not None:
            out: list[dict[str, Any] | str] = []
            self._on_stop({}, out)
            return out
        self.finished = True
        return [{"error": {"message": ENDED_EARLY, "type": "server_error",
                           "param": None, "code": "stream_interrupted"}}]

    def _start(self, message: dict[str, Any], out: list[dict[str, Any] | str]) -> None:
        self._started = True
        self._id = _chat_id(message.get("id") or "stream")
        self._usage.update(as_dict(message.get("usage")))
        out.append(self._chunk({"role": "assistant", "content": ""}))

    def _on_message_start(self, event: dict[str, Any], out: list[dict[str, Any] | str]) -> None:
        pass  # handled by _start

    def _on_block_start(self, event: dict[str, Any], out: list[dict[str, Any] | str]) -> None:
        block = as_dict(event.get("content_block"))
        index = as_int(event.get("index"))
        kind = block.get("type")
        if kind == "tool_use":
            position = self._tools[index] = len(self._tools)
            call = _tool_call(block, position)
            call["function"]["arguments"] = ""
            out.append(self._chunk({"tool_calls": [call]}))
        elif kind in ("thinking", "redacted_thinking") and self.keep_thinking:
            self._thinking[index] = dict(block)
        elif kind == "text" and as_str(block.get("text")):
            out.append(self._chunk({"content": block["text"]}))

    def _on_block_delta(self, event: dict[str, Any], out: list[dict[str, Any] | str]) -> None:
        delta = as_dict(event.get("delta"))
        kind = delta.get("type")
        index = as_int(event.get("index"))
        if kind == "text_delta":
            out.append(self._chunk({"content": as_str(delta.get("text"))}))
        elif kind == "input_json_delta":
            fragment = as_str(delta.get("partial_json"))
            if fragment and index in self._tools:
                out.append(self._chunk({"tool_calls": [{"index": self._tools[index], "function": {"arguments": fragment}}]}))
        elif kind == "thinking_delta":
            text = as_str(delta.get("thinking"))
            if index in self._thinking:
                self._thinking[index]["thinking"] = as_str(self._thinking[index].get("thinking")) + text
            out.append(self._chunk({"reasoning_content": text}))
        elif kind == "signature_delta" and index in self._thinking:
            self._thinking[index]["signature"] = as_str(delta.get("signature"))

    def _on_block_stop(self, event: dict[str, Any], out: list[dict[str, Any] | str]) -> None:
        block = self._thinking.pop(as_int(event.get("index")), None)
        if block is not None:
            out.append(self._chunk({THINKING_KEY: [block]}))

    def _on_message_delta(self, event: dict[str, Any], out: list[dict[str, Any] | str]) -> None:
        self._usage.update(as_dict(event.get("usage")))
        stop = opt_str(as_dict(event.get("delta")).get("stop_reason"))
        if stop is not None:
            self._finish = _FINISH_REASONS.get(stop, "stop")
            out.append(self._chunk({}, self._finish))

    def _on_stop(self, event: dict[str, Any], out: list[dict[str, Any] | str]) -> None:
        if self._finish is None:
            self._finish = "stop"
            out.append(self._chunk({}, "stop"))
        if self.include_usage:
            final = self._chunk({})
            final["choices"] = []
            final["usage"] = chat_usage_from_anthropic(self._usage)
            out.append(final)
        out.append("[DONE]")
        self.finished = True

    def _on_error(self, event: dict[str, Any], out: list[dict[str, Any] | str]) -> None:
        error = as_dict(event.get("error"))
        status = _ERRORS.get(as_str(error.get("type")), (500, "", None))[0]
        out.append(openai_error_from_anthropic(event, status))
        self.finished = True


_EVENT_HANDLERS = {
    "message_start": AnthropicToChatChunks._on_message_start,
    "content_block_start": AnthropicToChatChunks._on_block_start,
    "content_block_delta": AnthropicToChatChunks._on_block_delta,
    "content_block_stop": AnthropicToChatChunks._on_block_stop,
    "message_delta": AnthropicToChatChunks._on_message_delta,
    "message_stop": AnthropicToChatChunks._on_stop,
    "error": AnthropicToChatChunks._on_error,
}


class AnthropicToChatStream:
    """A :class:`base.StreamTranslator`: Anthropic events in, Chat SSE bytes out."""

    def __init__(self, client_model: str, *, include_usage: bool = True, created: int | None = None) -> None:
        self._chunks = AnthropicToChatChunks(client_model, include_usage=include_usage, created=created)

    @property
    def finished(self) -> bool:
        return self._chunks.finished

    def feed(self, event: dict[str, Any] | str) -> bytes:
        return b"".join(sse_data(chunk) for chunk in self._chunks.feed(event))

    def close(self) -> bytes:
        return b"".join(sse_data(chunk) for chunk in self._chunks.close())


def _chat_stream(client_model: str, request: dict[str, Any] | None) -> AnthropicToChatStream:
    """The client's ``stream_options.include_usage`` decides the usage chunk (sent when unknown)."""
    include = True if request is None else bool(as_dict(request.get("stream_options")).get("include_usage"))
    return AnthropicToChatStream(client_model, include_usage=include)


# The registered translator: Chat Completions clients on an Anthropic provider.
TRANSLATOR = base.register(Direction(
    "openai_chat", "anthropic", "/v1/messages", chat_request_to_messages, messages_response_to_chat,
    openai_error_from_anthropic, _chat_stream))
