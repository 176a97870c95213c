"""Claude Code on an OpenAI-compatible model: Messages in, Chat Completions out.

Three pieces, all free of I/O:

- :func:`messages_request_to_chat` turns an Anthropic Messages request body
  into a Chat Completions request body;
- :func:`chat_response_to_messages` turns a ``chat.completion`` (or an
  OpenAI error body) into the Anthropic JSON the client expects;
- :class:`ChatToAnthropicStream` takes the provider's parsed stream chunks
  one at a time and returns the Anthropic SSE bytes to send for each, so the
  first token reaches the client as soon as the provider sends it.

What cannot be carried raises :class:`UntranslatableField` naming the field;
what is deliberately left out is listed in docs/translation.md and, when the
caller passes a ``dropped`` list, reported there by field path.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lunaroute.dialects._coerce import as_dict, as_int, as_list, as_str, opt_str
from lunaroute.dialects.model import json_compact, parse_tool_input
from lunaroute.dialects.openai_chat import content_text
from lunaroute.dialects.translate.base import register
from lunaroute.dialects.translate.common import (
    ENDED_EARLY,
    ChatChunkReader,
    call_arguments,
    call_id,
    chat_function_tool,
    end_chat_request,
    sort_top_level,
    utf8,
)
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.dialects.translate.validate import check_messages_request

__all__ = [
    "MESSAGES_TO_CHAT",
    "ChatToAnthropicStream",
    "MessagesToChat",
    "UntranslatableField",
    "anthropic_error_from_chat",
    "anthropic_usage",
    "chat_response_to_messages",
    "dumps_request",
    "messages_request_to_chat",
    "uses_max_completion_tokens",
]

# OpenAI's reasoning models refuse ``max_tokens`` and want
# ``max_completion_tokens``; every other OpenAI-compatible server (vLLM,
# Ollama, LM Studio, DeepSeek, OpenRouter) knows ``max_tokens``, and many do
# not know the newer name, so the newer name is used only for these.
_REASONING_MODEL = re.compile(r"^(?:[\w.-]+/)?(?:o\d|gpt-5)", re.IGNORECASE)

# Top-level fields that change the request's meaning and cannot be carried.
_REFUSED_FIELDS = {
    "mcp_servers": "remote MCP servers run at Anthropic; Chat Completions has none",
    "container": "code-execution containers exist only at Anthropic",
}
_HANDLED_FIELDS = frozenset(
    {
        "model", "messages", "system", "max_tokens", "stop_sequences", "temperature",
        "top_p", "stream", "tools", "tool_choice", "metadata",
    }
)
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high", "minimal": "minimal"}

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


def uses_max_completion_tokens(model: str) -> bool:
    """True for OpenAI reasoning models (o1, o3, o4-mini, gpt-5...)."""
    return bool(_REASONING_MODEL.match(model))


def messages_request_to_chat(
    body: dict[str, Any], model: str | None = None, dropped: list[str] | None = None
) -> dict[str, Any]:
    """
    Translate an Anthropic Messages request body into a Chat Completions one.

    ``model`` replaces the body's model (model mapping happens before this).
    Field paths left out on purpose are appended to ``dropped`` when given,
    so the caller can log them.  Raises :class:`UntranslatableField` for
    anything that cannot be carried without changing the request's meaning.
    """
    # Known extras (thinking, context_management...) and fields newer than
    # this code are dropped: neither can be said in Chat Completions.
    drops = sort_top_level(body, _HANDLED_FIELDS, _REFUSED_FIELDS, dropped)
    check_messages_request(body)
    target = model if model is not None else as_str(body.get("model"))
    out: dict[str, Any] = {"model": target}

    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(as_list(body.get("messages"))):
        _translate_message(as_dict(message), f"messages[{i}]", messages, drops)
    out["messages"] = messages

    if "max_tokens" in body:
        key = "max_completion_tokens" if uses_max_completion_tokens(target) else "max_tokens"
        out[key] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stops = body.get("stop_sequences")
    if stops:
        out["stop"] = list(as_list(stops))

    effort = as_dict(body.get("output_config")).get("effort")
    if isinstance(effort, str) and effort in _EFFORTS and uses_max_completion_tokens(target):
        out["reasoning_effort"] = _EFFORTS[effort]
        if set(as_dict(body.get("output_config"))) == {"effort"}:
            drops.remove("output_config")  # carried whole

    tools = as_list(body.get("tools"))
    if tools:
        out["tools"] = [_tool(as_dict(tool), f"tools[{i}]", drops) for i, tool in enumerate(tools)]
    if "tool_choice" in body and body["tool_choice"] is not None:
        _tool_choice(as_dict(body["tool_choice"]), out, bool(tools))

    return end_chat_request(out, as_dict(body.get("metadata")).get("user_id"), body.get("stream"))


def _system_text(system: Any, path: str) -> str:
    """The system prompt as one string; cache_control marks are dropped."""
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    parts: list[str] = []
    for i, block in enumerate(as_list(system)):
        block = as_dict(block)
        if block.get("type") != "text":
            raise UntranslatableField(f"{path}[{i}].type", "only text blocks can be a system prompt")
        parts.append(as_str(block.get("text")))
    # Separate blocks are separate paragraphs to the model; keep them apart.
    return "\n\n".join(part for part in parts if part)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [as_dict(block) for block in as_list(content)]


def _translate_message(
    message: dict[str, Any], path: str, out: list[dict[str, Any]], drops: list[str]
) -> None:
    role = message.get("role")
    content = message.get("content")
    if role == "system":
        # Claude Code puts system reminders mid-conversation; Chat
        # Completions allows system messages anywhere.
        out.append({"role": "system", "content": _system_text(content, f"{path}.content")})
    elif role == "assistant":
        out.append(_assistant(content, path, drops))
    elif role == "user":
        _user(content, path, out)
    else:
        raise UntranslatableField(f"{path}.role", f"unknown role {role!r}")


def _assistant(content: Any, path: str, drops: list[str]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content)):
        kind = block.get("type")
        where = f"{path}.content[{j}]"
        if kind == "text":
            text.append(as_str(block.get("text")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": as_str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": as_str(block.get("name")),
                        "arguments": json_compact(block.get("input", {})),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            # Signed Anthropic reasoning means nothing to another model.
            drops.append(where)
        else:
            raise UntranslatableField(f"{where}.type", f"{kind!r} blocks have no Chat Completions form")
    result: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        result["tool_calls"] = calls
    return result


def _user(content: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content)):
        kind = block.get("type")
        where = f"{path}.content[{j}]"
        if kind == "tool_result":
            # Chat wants each result as its own "tool" message right after
            # the assistant's calls, so results go out first, in order.
            tool_message, images = _tool_result(block, where)
            out.append(tool_message)
            parts.extend(images)
        else:
            parts.append(_user_part(block, where))
    if not parts:
        return
    if all(part["type"] == "text" for part in parts):
        # Many compatible servers accept only string content.
        out.append({"role": "user", "content": "\n\n".join(part["text"] for part in parts)})
    else:
        out.append({"role": "user", "content": parts})


def _user_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": as_str(block.get("text"))}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block, where)}}
    if kind == "document":
        source = as_dict(block.get("source"))
        if source.get("type") == "text":
            return {"type": "text", "text": as_str(source.get("data"))}
        if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
            data = f"data:application/pdf;base64,{as_str(source.get('data'))}"
            name = as_str(block.get("title")) or "document.pdf"
            return {"type": "file", "file": {"filename": name, "file_data": data}}
        raise UntranslatableField(f"{where}.source", "only text and base64 PDF documents translate")
    raise UntranslatableField(f"{where}.type", f"{kind!r} blocks have no Chat Completions form")


def _image_url(block: dict[str, Any], where: str) -> str:
    source = as_dict(block.get("source"))
    kind = source.get("type")
    if kind == "base64":
        return f"data:{as_str(source.get('media_type'))};base64,{as_str(source.get('data'))}"
    if kind == "url":
        return as_str(source.get("url"))
    raise UntranslatableField(f"{where}.source.type", f"image source {kind!r} cannot be sent by URL")


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    content = block.get("content")
    text: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        text.append(content)
    else:
        for k, part in enumerate(_blocks(content)):
            kind = part.get("type")
            if kind == "text":
                text.append(as_str(part.get("text")))
            elif kind == "image":
                # A tool message carries text only; the picture follows in
                # the next user message.
                images.append(
                    {"type": "image_url", "image_url": {"url": _image_url(part, f"{where}.content[{k}]")}}
                )
            else:
                raise UntranslatableField(
                    f"{where}.content[{k}].type", f"{kind!r} cannot be part of a tool result"
                )
    body = "\n\n".join(text)
    if block.get("is_error"):
        # Chat has no error flag on tool results; say it in words.
        body = f"[tool error] {body}"
    message = {"role": "tool", "tool_call_id": as_str(block.get("tool_use_id")), "content": body}
    return message, images


def _tool(tool: dict[str, Any], where: str, drops: list[str]) -> dict[str, Any]:
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise UntranslatableField(f"{where}.type", f"Anthropic server tool {kind!r} runs only at Anthropic")
    if "cache_control" in tool:
        drops.append(f"{where}.cache_control")
    return chat_function_tool(as_str(tool.get("name")), tool.get("input_schema"), tool.get("description"),
                              tool.get("strict"))


def _tool_choice(choice: dict[str, Any], out: dict[str, Any], has_tools: bool) -> None:
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": as_str(choice.get("name"))}}
    else:
        raise UntranslatableField("tool_choice.type", f"unknown tool_choice {kind!r}")
    if choice.get("disable_parallel_tool_use") and has_tools:
        out["parallel_tool_calls"] = False


# -- responses ---------------------------------------------------------------


def _message_id(chat_id: Any) -> str:
    ident = as_str(chat_id)
    return ident if ident.startswith("msg_") else f"msg_{ident}"


def anthropic_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Chat ``usage`` in Anthropic's terms: input excludes the cached part."""
    prompt = as_int(usage.get("prompt_tokens"))
    cached = as_int(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))
    return {
        "input_tokens": max(0, prompt - cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": as_int(usage.get("completion_tokens")),
    }


def anthropic_error_from_chat(body: Any, status: int) -> dict[str, Any]:
    """An OpenAI error body (or anything) as Anthropic's error object."""
    error = as_dict(as_dict(body).get("error"))
    message = as_str(error.get("message")) or f"upstream error (HTTP {status})"
    error_type = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": error_type, "message": message}}


def chat_response_to_messages(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """
    Translate a ``chat.completion`` body into an Anthropic ``message``.

    ``model`` is the name to report (the one the client asked for).  An
    OpenAI error body becomes an Anthropic error object (status 400 assumed;
    use :func:`anthropic_error_from_chat` when the HTTP status is known).
    Only choice 0 is translated; reasoning text is dropped.
    """
    if isinstance(as_dict(resp).get("error"), dict):
        return anthropic_error_from_chat(resp, 400)
    choices = [as_dict(choice) for choice in as_list(resp.get("choices"))]
    first = next((c for c in choices if as_int(c.get("index")) == 0), {})
    message = as_dict(first.get("message"))
    content: list[dict[str, Any]] = []
    text = content_text(message.get("content")) or as_str(message.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    for call in as_list(message.get("tool_calls")):
        call = as_dict(call)
        function = as_dict(call.get("function"))
        arguments = parse_tool_input(call_arguments(function.get("arguments")))
        content.append(
            {
                "type": "tool_use",
                "id": call_id(call.get("id")),
                "name": as_str(function.get("name")),
                "input": arguments if isinstance(arguments, dict) else {},
            }
        )
    finish = opt_str(first.get("finish_reason"))
    return {
        "id": _message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_REASONS.get(finish or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(as_dict(resp.get("usage"))),
    }


def _stream_error_status(error: dict[str, Any]) -> int:
    """The HTTP status a mid-stream error would have had (it comes with 200)."""
    status = as_int(error.get("status") or error.get("code"), 0)
    if status >= 400:
        return status
    words = f"{error.get('code')} {error.get('type')}"
    if "rate_limit" in words:
        return 429
    if "overloaded" in words:
        return 503
    if "invalid_request" in words:
        return 400
    return 500


def _event(name: str, data: dict[str, Any]) -> bytes:
    return utf8(f"event: {name}\ndata: {json_compact(data)}\n\n")


_BLOCK_STOP = "content_block_stop"


class ChatToAnthropicStream(ChatChunkReader):
    """
    Turn a Chat Completions stream into an Anthropic Messages stream.

    Feed each parsed chunk (the JSON of one ``data:`` line, or the string
    ``"[DONE]"``) to :meth:`feed`; it returns the bytes to send now (maybe
    empty).  Nothing is held back beyond the current chunk: text and tool
    argument deltas go out as they arrive.  Call :meth:`close` when the
    provider's body ends; it finishes a stream that lacked ``[DONE]``, or
    reports an error if the answer was cut short.
    """

    def __init__(self, model: str, message_id: str | None = None) -> None:
        self.model = model
        self._message_id = message_id
        self._started = False
        self.finished = False
        self._next_index = 0
        # The open Anthropic block: ("text", index) or ("tool", chat index).
        self._open: tuple[str, int] | None = None
        self._text_index = -1
        self._tool_blocks: dict[int, int] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    # feed() is ChatChunkReader's; these say what to write.

    def _on_done(self) -> bytes:
        return self._finish_stream()

    def _on_error(self, error: dict[str, Any]) -> bytes:
        return self._error(anthropic_error_from_chat({"error": error}, _stream_error_status(error)))

    def _on_chunk(self, data: dict[str, Any], out: list[bytes]) -> None:
        if not self._started:
            out.append(self._start(data))

    def _on_finish(self, out: list[bytes]) -> None:
        self._close_block(out)

    def close(self) -> bytes:
        """The provider's body ended: finish, or report the cut."""
        if self.finished:
            return b""
        if self._finish is not None:
            return self._finish_stream()
        return self._error(
            {"type": "error", "error": {"type": "api_error", "message": ENDED_EARLY}}
        )

    def _start(self, data: dict[str, Any]) -> bytes:
        self._started = True
        ident = self._message_id or _message_id(data.get("id"))
        message: dict[str, Any] = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Chat streams report usage only at the end (message_delta).
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _on_delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        text = delta.get("content")
        if not isinstance(text, str) or not text:
            text = delta.get("refusal")
        if isinstance(text, str) and text:
            if self._open is None or self._open[0] != "text":
                self._close_block(out)
                self._text_index = self._next_index
                self._next_index += 1
                self._open = ("text", self._text_index)
                out.append(_event("content_block_start", {
                    "type": "content_block_start", "index": self._text_index,
                    "content_block": {"type": "text", "text": ""},
                }))
            out.append(_event("content_block_delta", {
                "type": "content_block_delta", "index": self._text_index,
                "delta": {"type": "text_delta", "text": text},
            }))
        for raw in as_list(delta.get("tool_calls")):
            fragment = as_dict(raw)
            position = as_int(fragment.get("index"), len(self._tool_blocks))
            function = as_dict(fragment.get("function"))
            index = self._tool_blocks.get(position)
            if index is None:
                self._close_block(out)
                index = self._tool_blocks[position] = self._next_index
                self._next_index += 1
                self._open = ("tool", position)
                out.append(_event("content_block_start", {
                    "type": "content_block_start", "index": index,
                    "content_block": {
                        "type": "tool_use", "id": call_id(fragment.get("id")),
                        "name": as_str(function.get("name")), "input": {},
                    },
                }))
            arguments = call_arguments(function.get("arguments"))
            if arguments:
                out.append(_event("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                }))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        kind, key = self._open
        index = key if kind == "text" else self._tool_blocks[key]
        out.append(_event(_BLOCK_STOP, {"type": _BLOCK_STOP, "index": index}))
        self._open = None

    def _finish_stream(self) -> bytes:
        out: list[bytes] = []
        if not self._started:
            out.append(self._start({}))
        self._close_block(out)
        self.finished = True
        out.append(_event("message_delta", {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP_REASONS.get(self._finish or "stop", "end_turn"),
                "stop_sequence": None,
            },
            "usage": anthropic_usage(self._usage or {}),
        }))
        out.append(_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _error(self, error: dict[str, Any]) -> bytes:
        self.finished = True
        return _event("error", error)


def dumps_request(body: dict[str, Any]) -> bytes:
    """The translated request as the bytes to send upstream.

    ASCII escapes keep CPython's encoder on its fast path: about 2.5 times
    faster than ``ensure_ascii=False`` on a Claude Code sized request.
    """
    return json.dumps(body, separators=(",", ":")).encode("ascii")


class MessagesToChat:
    """
    The gateway's view of this module (a
    :class:`lunaroute.dialects.translate.base.Translator`): Anthropic
    Messages requests sent to a Chat Completions provider.
    """

    source = "anthropic"
    target = "openai_chat"
    target_path = "/v1/chat/completions"

    def request(self, body: dict[str, Any], model: str | None, dropped: list[str]) -> dict[str, Any]:
        # Streams ask for usage (stream_options.include_usage) in the core.
        return messages_request_to_chat(body, model, dropped)

    def response(self, body: dict[str, Any], client_model: str) -> dict[str, Any]:
        return chat_response_to_messages(body, client_model)

    def error(self, body: Any, status: int) -> dict[str, Any]:
        return anthropic_error_from_chat(body, status)

    def stream(self, client_model: str) -> ChatToAnthropicStream:
        return ChatToAnthropicStream(client_model)


MESSAGES_TO_CHAT = register(MessagesToChat())
