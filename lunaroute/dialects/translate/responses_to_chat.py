"""Codex on a Chat-only server: Responses API in, Chat Completions out.

Free of I/O:

- :func:`responses_request_to_chat` turns a Responses request body into a
  Chat Completions one;
- :func:`chat_completion_to_response` turns a ``chat.completion`` into a
  Responses ``response`` object;
- :class:`ResponsesEventWriter` takes ``chat.completion.chunk`` dicts one at
  a time and returns the Responses SSE frames for each (``response.created``,
  output item and content part events, ``response.completed`` with usage).

The Anthropic translator (:mod:`responses_to_anthropic`) is built on the
same pieces: a Responses request goes to Chat and then to Messages, and the
Anthropic answer comes back as Chat chunks fed to the same writer.  Every
field is listed in docs/translation.md.
"""

from __future__ import annotations

import json
import time
from typing import Any

from lunaroute.dialects._coerce import as_dict, as_int, as_list, as_str, opt_str
from lunaroute.dialects.model import json_compact
from lunaroute.dialects.openai_chat import content_text
from lunaroute.dialects.translate import base
from lunaroute.dialects.translate.anthropic_to_chat import uses_max_completion_tokens
from lunaroute.dialects.translate.chat_to_anthropic import THINKING_KEY
from lunaroute.dialects.translate.common import (
    ENDED_EARLY,
    ChatChunkReader,
    Direction,
    call_arguments,
    call_id,
    chat_function_tool,
    end_chat_request,
    sort_top_level,
    utf8,
)
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.dialects.translate.validate import check_responses_request

__all__ = [
    "THINKING_MARK",
    "ResponsesEventWriter",
    "chat_completion_to_response",
    "openai_error",
    "responses_request_to_chat",
    "responses_usage_from_chat",
]

# Anthropic thinking blocks travel to Codex as a reasoning item's
# encrypted_content: this mark, then the block's JSON.  Codex sends the item
# back verbatim (store: false, include: reasoning.encrypted_content), so the
# signed block can be replayed to Anthropic, which requires it in tool loops.
THINKING_MARK = "lunaroute.anthropic.thinking:"

_HANDLED_FIELDS = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
        "max_output_tokens", "temperature", "top_p", "reasoning", "text", "stream", "user",
        "safety_identifier",
    }
)
_REFUSED_FIELDS = {
    "previous_response_id": "the conversation is stored at OpenAI; send the whole input instead",
    "conversation": "the conversation is stored at OpenAI; send the whole input instead",
    "prompt": "stored prompt templates live at OpenAI",
    "background": "background responses need OpenAI's server state",
}
# Tool types dropped (listed in dropped): hosted at OpenAI or grouping tools
# whose calls could not be routed back; the model works without them.
_DROPPED_TOOLS = frozenset(
    {"web_search", "web_search_preview", "web_search_2025_08_26", "tool_search", "namespace", "local_shell",
     "image_generation"}
)
# Input items of hosted tools that ran at OpenAI: their results are gone.
_DROPPED_ITEMS = frozenset(
    {"web_search_call", "file_search_call", "image_generation_call", "code_interpreter_call",
     "tool_search_call", "tool_search_output"}
)


# -- requests ------------------------------------------------------------------


def responses_request_to_chat(
    body: dict[str, Any],
    model: str | None = None,
    dropped: list[str] | None = None,
    *,
    for_anthropic: bool = False,
) -> dict[str, Any]:
    """
    Translate a Responses request body into a Chat Completions one.

    ``for_anthropic`` prepares the body for :func:`chat_request_to_messages`
    (the Responses -> Anthropic path): ``reasoning.effort`` is always
    carried, function-call arguments must be JSON, and Anthropic thinking
    kept in reasoning items rides along.
    """
    drops = sort_top_level(body, _HANDLED_FIELDS, _REFUSED_FIELDS, dropped)
    check_responses_request(body)
    target = model if model is not None else as_str(body.get("model"))
    out: dict[str, Any] = {"model": target}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    else:
        for i, item in enumerate(as_list(items)):
            _item(as_dict(item), f"input[{i}]", messages, drops, for_anthropic)
    out["messages"] = messages

    tools = []
    for i, raw in enumerate(as_list(body.get("tools"))):
        tool = _tool(as_dict(raw), f"tools[{i}]", drops, for_anthropic)
        if tool is not None:
            tools.append(tool)
    if tools:
        out["tools"] = tools
        if body.get("parallel_tool_calls") is False:
            out["parallel_tool_calls"] = False
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"])
        if tools:
            out["tool_choice"] = choice
        else:
            drops.append("tool_choice")  # no tool left to choose (hosted ones are dropped)

    if body.get("max_output_tokens") is not None:
        reasoning_model = uses_max_completion_tokens(target) and not for_anthropic
        out["max_completion_tokens" if reasoning_model else "max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    reasoning = as_dict(body.get("reasoning"))
    effort = reasoning.get("effort")
    if isinstance(effort, str) and (for_anthropic or uses_max_completion_tokens(target)):
        out["reasoning_effort"] = effort
    elif effort is not None:
        drops.append("reasoning.effort")
    if reasoning.get("summary") is not None or reasoning.get("generate_summary") is not None:
        drops.append("reasoning.summary")
    _text_format(as_dict(body.get("text")), out, drops, for_anthropic)
    return end_chat_request(out, body.get("safety_identifier") or body.get("user"), body.get("stream"))


def _text_format(text: dict[str, Any], out: dict[str, Any], drops: list[str], for_anthropic: bool) -> None:
    fmt = as_dict(text.get("format"))
    kind = fmt.get("type")
    if for_anthropic and kind == "json_schema":
        raise UntranslatableField("text.format.type", "'json_schema': Anthropic cannot enforce an output schema")
    if for_anthropic and kind == "json_object":
        drops.append("text.format")  # the prompt still asks for JSON; nothing enforces it
    elif kind == "json_schema":
        schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    if "verbosity" in text:
        drops.append("text.verbosity")


def _assistant(messages: list[dict[str, Any]], for_call: bool) -> dict[str, Any]:
    """The assistant message an output item belongs to (the open one, or a new one)."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and (for_call or not last.get("tool_calls")):
        return last
    message: dict[str, Any] = {"role": "assistant", "content": None}
    messages.append(message)
    return message


def _item(
    item: dict[str, Any], path: str, messages: list[dict[str, Any]], drops: list[str], for_anthropic: bool
) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        _message_item(item, path, messages)
    elif kind in ("function_call", "custom_tool_call", "local_shell_call"):
        message = _assistant(messages, for_call=True)
        message.setdefault("tool_calls", []).append(_call(item, path, kind, for_anthropic))
    elif kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
        _call_output(item, path, messages)
    elif kind == "reasoning":
        encrypted = as_str(item.get("encrypted_content"))
        if for_anthropic and encrypted.startswith(THINKING_MARK):
            try:
                block = json.loads(encrypted[len(THINKING_MARK):])
            except ValueError:
                block = None
            if as_dict(block).get("type") not in ("thinking", "redacted_thinking"):
                raise UntranslatableField(f"{path}.encrypted_content", "a damaged thinking block")
            _assistant(messages, for_call=False).setdefault(THINKING_KEY, []).append(block)
        else:
            # OpenAI's own reasoning is encrypted for OpenAI only.
            drops.append(path)
    elif kind in _DROPPED_ITEMS:
        drops.append(path)
    else:
        raise UntranslatableField(f"{path}.type", f"{kind!r} items have no Chat Completions form")


def _message_item(item: dict[str, Any], path: str, messages: list[dict[str, Any]]) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        messages.append({"role": "system", "content": _text(content, f"{path}.content")})
    elif role == "assistant":
        text = _text(content, f"{path}.content")
        message = _assistant(messages, for_call=False)
        message["content"] = "\n\n".join(part for part in (message.get("content"), text) if part) or None
    elif role == "user":
        if isinstance(content, str):
            messages.append({"role": "user", "content": content})
            return
        parts = [_input_part(as_dict(part), f"{path}.content[{j}]") for j, part in enumerate(as_list(content))]
        if all(part["type"] == "text" for part in parts):
            messages.append({"role": "user", "content": "\n\n".join(part["text"] for part in parts)})
        else:
            messages.append({"role": "user", "content": parts})
    else:
        raise UntranslatableField(f"{path}.role", f"role {role!r} has no Chat Completions form")


def _text(content: Any, path: str) -> str:
    """Text-only content (system, developer and assistant messages)."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, raw in enumerate(as_list(content)):
        part = as_dict(raw)
        if part.get("type") in ("input_text", "output_text", "text"):
            texts.append(as_str(part.get("text")))
        elif part.get("type") == "refusal":
            texts.append(as_str(part.get("refusal")))
        else:
            raise UntranslatableField(f"{path}[{j}].type", f"{part.get('type')!r} cannot be part of this message")
    return "\n\n".join(texts)


def _input_part(part: dict[str, Any], path: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": as_str(part.get("text"))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise UntranslatableField(f"{path}.file_id", "uploaded OpenAI files cannot be sent elsewhere")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        file = {"file_data": part["file_data"], "filename": as_str(part.get("filename")) or "document.pdf"}
        return {"type": "file", "file": file}
    raise UntranslatableField(f"{path}.type", f"{kind!r} input has no Chat Completions form")


def _call(item: dict[str, Any], path: str, kind: str, for_anthropic: bool) -> dict[str, Any]:
    if kind == "function_call":
        arguments = as_str(item.get("arguments"))
        if for_anthropic:
            try:
                json.loads(arguments or "{}")
            except ValueError:
                raise UntranslatableField(f"{path}.arguments", "not valid JSON") from None
        name = as_str(item.get("name"))
    elif kind == "custom_tool_call":
        # Custom (freeform) tools travel as functions of one string, "input".
        arguments = json_compact({"input": as_str(item.get("input"))})
        name = as_str(item.get("name"))
    else:
        arguments = json_compact(as_dict(item.get("action")))
        name = "local_shell"
    call_id = as_str(item.get("call_id")) or as_str(item.get("id"))
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _call_output(item: dict[str, Any], path: str, messages: list[dict[str, Any]]) -> None:
    output = item.get("output")
    images: list[dict[str, Any]] = []
    if isinstance(output, str):
        text = output
    elif isinstance(output, list):
        texts: list[str] = []
        for j, raw in enumerate(output):
            part = _input_part(as_dict(raw), f"{path}.output[{j}]")
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(part)
        text = "\n\n".join(texts)
    else:
        text = json_compact(output) if output is not None else ""
    messages.append({"role": "tool", "tool_call_id": as_str(item.get("call_id")), "content": text})
    if images:
        # A tool message carries text only; pictures follow as the user's.
        messages.append({"role": "user", "content": images})


def _tool(tool: dict[str, Any], where: str, drops: list[str], for_anthropic: bool) -> dict[str, Any] | None:
    kind = tool.get("type")
    if kind == "function":
        strict = tool.get("strict")
        if for_anthropic:
            if strict:
                drops.append(f"{where}.strict")  # as the Chat -> Anthropic direction does
            strict = None
        return chat_function_tool(as_str(tool.get("name")), tool.get("parameters"), tool.get("description"), strict)
    if kind == "custom":
        description = as_str(tool.get("description")) + (
            "\n\nCall it as a function: the whole freeform text goes, unchanged, in its one"
            " string argument `input`."
        )
        fmt = as_dict(tool.get("format"))
        if fmt.get("type") == "grammar":
            description += (
                f"\n\nThe `input` argument must follow this {as_str(fmt.get('syntax'))} grammar:\n"
                f"{as_str(fmt.get('definition'))}"
            )
        schema = {
            "type": "object",
            "properties": {"input": {"type": "string", "description": "the tool's whole freeform input"}},
            "required": ["input"],
            "additionalProperties": False,
        }
        return chat_function_tool(as_str(tool.get("name")), schema, description)
    if kind in _DROPPED_TOOLS:
        drops.append(where)
        return None
    raise UntranslatableField(f"{where}.type", f"{kind!r} tools run only at OpenAI")


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    data = as_dict(choice)
    if data.get("type") in ("function", "custom"):
        return {"type": "function", "function": {"name": as_str(data.get("name"))}}
    raise UntranslatableField("tool_choice", f"{choice!r} has no Chat Completions form")


# -- responses -----------------------------------------------------------------


def responses_usage_from_chat(usage: dict[str, Any]) -> dict[str, Any]:
    """Chat usage in Responses terms (both count cached tokens in the input)."""
    prompt = as_int(usage.get("prompt_tokens"))
    completion = as_int(usage.get("completion_tokens"))
    prompt_details = as_dict(usage.get("prompt_tokens_details"))
    details = {"cached_tokens": as_int(prompt_details.get("cached_tokens"))}
    if "cache_write_tokens" in prompt_details:
        details["cache_write_tokens"] = as_int(prompt_details["cache_write_tokens"])
    return {
        "input_tokens": prompt,
        "input_tokens_details": details,
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": as_int(as_dict(usage.get("completion_tokens_details")).get("reasoning_tokens"))
        },
        "total_tokens": as_int(usage.get("total_tokens"), prompt + completion),
    }


def _response_id(chat_id: Any) -> str:
    ident = as_str(chat_id).removeprefix("chatcmpl-") or "chat"
    return ident if ident.startswith("resp_") else f"resp_{ident}"


def response_object(
    response_id: str, client_model: str, created: int, output: list[dict[str, Any]],
    usage: dict[str, Any] | None, finish: str | None, status: str | None = None,
) -> dict[str, Any]:
    """A Responses ``response`` object; ``finish`` is the Chat finish reason."""
    incomplete = None
    if status is None:
        status = "completed"
        if finish in ("length", "content_filter"):
            status = "incomplete"
            incomplete = {"reason": "max_output_tokens" if finish == "length" else "content_filter"}
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "error": None, "incomplete_details": incomplete, "instructions": None, "max_output_tokens": None,
        "model": client_model, "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": None, "store": False, "temperature": None, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": None, "truncation": "disabled",
        "usage": usage, "user": None, "metadata": {},
    }


def _reasoning_item(item_id: str, text: str, block: dict[str, Any] | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id, "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if block is not None:
        item["encrypted_content"] = THINKING_MARK + json_compact(block)
    return item


def _message_item_out(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}] if status == "completed" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _whole_json(text: str) -> bool:
    """Whether C{text} is one complete JSON value (a tool call's arguments)."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _function_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
            "call_id": call_id, "name": name}


def chat_completion_to_response(body: dict[str, Any], client_model: str) -> dict[str, Any]:
    """Translate a ``chat.completion`` into a Responses ``response`` object (choice 0)."""
    response_id = _response_id(body.get("id"))
    choice = next((as_dict(c) for c in as_list(body.get("choices")) if as_int(as_dict(c).get("index")) == 0), {})
    message = as_dict(choice.get("message"))
    output: list[dict[str, Any]] = []
    signed = [as_dict(b) for b in as_list(message.get(THINKING_KEY))]
    if signed:
        for n, block in enumerate(signed):
            output.append(_reasoning_item(f"rs_{response_id}_{n}", as_str(block.get("thinking")), block))
    else:
        reasoning = as_str(message.get("reasoning_content")) or as_str(message.get("reasoning"))
        if reasoning:
            output.append(_reasoning_item(f"rs_{response_id}", reasoning, None))
    text = content_text(message.get("content")) or as_str(message.get("refusal"))
    if text:
        output.append(_message_item_out(f"msg_{response_id}", text))
    for n, raw in enumerate(as_list(message.get("tool_calls"))):
        call = as_dict(raw)
        function = as_dict(call.get("function"))
        output.append(_function_item(f"fc_{response_id}_{n}", call_id(call.get("id")), as_str(function.get("name")),
                                     call_arguments(function.get("arguments"))))
    usage = body.get("usage")
    return response_object(
        response_id, client_model, as_int(body.get("created"), int(time.time())), output,
        responses_usage_from_chat(usage) if isinstance(usage, dict) else None,
        opt_str(choice.get("finish_reason")),
    )


def openai_error(body: Any, status: int) -> dict[str, Any]:
    """An OpenAI-compatible server's error body in OpenAI's own shape."""
    # OpenAI and most servers nest the error; vLLM-style servers put its
    # fields at the top, FastAPI ones say only "detail".
    error = as_dict(body.get("error")) if isinstance(body, dict) and isinstance(body.get("error"), dict) else as_dict(body)
    message = as_str(error.get("message")) or as_str(error.get("detail"))
    return {
        "error": {
            "message": message or f"upstream error (HTTP {status})",
            "type": as_str(error.get("type")) or ("server_error" if status >= 500 else "invalid_request_error"),
            "param": opt_str(error.get("param")),
            "code": error.get("code") if isinstance(error.get("code"), (str, int)) else None,
        }
    }


# -- streams -------------------------------------------------------------------


class _Open:
    """An output item being streamed."""

    __slots__ = ("block", "call_id", "index", "item_id", "kind", "name", "parts")

    def __init__(self, kind: str, index: int, item_id: str) -> None:
        self.kind = kind
        self.index = index
        self.item_id = item_id
        self.parts: list[str] = []
        self.call_id = ""
        self.name = ""
        self.block: dict[str, Any] | None = None


class ResponsesEventWriter(ChatChunkReader):
    """
    ``chat.completion.chunk`` dicts in, Responses SSE frames out.

    A :class:`base.StreamTranslator` for a Chat provider, and the back half of
    the Anthropic one.  Text and reasoning each open an output item that the
    next item of another kind closes; function calls stay open (their
    arguments may still grow, and parallel calls may interleave) until the
    finish reason.  ``response.completed`` (``response.incomplete`` when the
    model hit its token limit) carries every item and the usage; a provider
    error becomes ``response.failed`` and ends the stream.
    """

    def __init__(self, client_model: str, created: int | None = None) -> None:
        self.client_model = client_model
        self.created = created if created is not None else int(time.time())
        self.finished = False
        self._seq = 0
        self._id = ""
        self._text: _Open | None = None  # the open message or reasoning item
        self._calls: dict[int, _Open] = {}  # Chat tool-call index -> open call
        self._done: dict[int, dict[str, Any]] = {}
        self._next = 0
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return utf8(f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n")

    def _response(self, status: str | None = "in_progress", output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        usage = responses_usage_from_chat(self._usage) if self._usage is not None else None
        return response_object(self._id, self.client_model, self.created, output or [], usage, self._finish, status)

    def _on_done(self) -> bytes:
        return self._complete()

    def _on_error(self, error: dict[str, Any]) -> bytes:
        return self._fail(error)

    def _on_chunk(self, data: dict[str, Any], out: list[bytes]) -> None:
        if not self._id:
            self._id = _response_id(data.get("id"))
            out.append(self._event("response.created", {"response": self._response()}))
            out.append(self._event("response.in_progress", {"response": self._response()}))

    def close(self) -> bytes:
        """The provider's body ended: complete after a finish reason, else fail."""
        if self.finished:
            return b""
        if self._finish is not None:
            return self._complete()
        return self._fail({"code": "stream_interrupted", "message": ENDED_EARLY})

    def _open(self, kind: str, out: list[bytes], prefix: str) -> _Open:
        item = _Open(kind, self._next, f"{prefix}_{self._id}_{self._next}")
        self._next += 1
        if kind == "message":
            added = _message_item_out(item.item_id, "", "in_progress")
        else:
            added = {"id": item.item_id, "type": "reasoning", "summary": []}
        out.append(self._event("response.output_item.added", {"output_index": item.index, "item": added}))
        where = {"item_id": item.item_id, "output_index": item.index}
        if kind == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            out.append(self._event("response.content_part.added", {**where, "content_index": 0, "part": part}))
        else:
            part = {"type": "summary_text", "text": ""}
            out.append(self._event("response.reasoning_summary_part.added", {**where, "summary_index": 0, "part": part}))
        return item

    def _close_text(self, out: list[bytes]) -> None:
        item = self._text
        if item is None:
            return
        self._text = None
        text = "".join(item.parts)
        where = {"item_id": item.item_id, "output_index": item.index}
        if item.kind == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            out.append(self._event("response.output_text.done", {**where, "content_index": 0, "text": text, "logprobs": []}))
            out.append(self._event("response.content_part.done", {**where, "content_index": 0, "part": part}))
            final = _message_item_out(item.item_id, text)
        else:
            part = {"type": "summary_text", "text": text}
            out.append(self._event("response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text}))
            out.append(self._event("response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": part}))
            final = _reasoning_item(item.item_id, text, item.block)
        self._done[item.index] = final
        out.append(self._event("response.output_item.done", {"output_index": item.index, "item": final}))

    def _text_delta(self, kind: str, text: str, out: list[bytes]) -> None:
        if self._text is None or self._text.kind != kind:
            self._close_text(out)
            self._text = self._open(kind, out, "msg" if kind == "message" else "rs")
        item = self._text
        item.parts.append(text)
        where = {"item_id": item.item_id, "output_index": item.index}
        if kind == "message":
            out.append(self._event("response.output_text.delta", {**where, "content_index": 0, "delta": text, "logprobs": []}))
        else:
            out.append(self._event("response.reasoning_summary_text.delta", {**where, "summary_index": 0, "delta": text}))

    def _on_delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._text_delta("reasoning", reasoning, out)
        for block in as_list(delta.get(THINKING_KEY)):
            # A signed Anthropic thinking block is complete: it closes its item.
            if self._text is None or self._text.kind != "reasoning":
                self._close_text(out)
                self._text = self._open("reasoning", out, "rs")
                self._text.parts.append(as_str(as_dict(block).get("thinking")))
            self._text.block = as_dict(block)
            self._close_text(out)
        text = delta.get("content")
        if not isinstance(text, str) or not text:
            text = delta.get("refusal")
        if isinstance(text, str) and text:
            self._text_delta("message", text, out)
        for raw in as_list(delta.get("tool_calls")):
            self._call_delta(as_dict(raw), out)

    def _call_delta(self, fragment: dict[str, Any], out: list[bytes]) -> None:
        position = as_int(fragment.get("index"), len(self._calls))
        function = as_dict(fragment.get("function"))
        call = self._calls.get(position)
        if call is None:
            self._close_text(out)
            call = self._calls[position] = _Open("function_call", self._next, f"fc_{self._id}_{self._next}")
            self._next += 1
            call.call_id = call_id(fragment.get("id"))
            call.name = as_str(function.get("name"))
            item = _function_item(call.item_id, call.call_id, call.name, "", "in_progress")
            out.append(self._event("response.output_item.added", {"output_index": call.index, "item": item}))
        arguments = call_arguments(function.get("arguments"))
        if arguments:
            call.parts.append(arguments)
            out.append(self._event("response.function_call_arguments.delta",
                                   {"item_id": call.item_id, "output_index": call.index, "delta": arguments}))

    def _complete(self) -> bytes:
        out: list[bytes] = []
        if not self._id:
            out.append(self.feed({"id": "", "choices": []}))  # an empty answer still has a response
        self._close_text(out)
        for call in self._calls.values():
            arguments = "".join(call.parts)
            where = {"item_id": call.item_id, "output_index": call.index}
            out.append(self._event("response.function_call_arguments.done", {**where, "arguments": arguments}))
            # Cut by the output limit inside its arguments: the call is
            # incomplete, not one to run.
            status = "incomplete" if self._finish == "length" and not _whole_json(arguments) else "completed"
            final = _function_item(call.item_id, call.call_id, call.name, arguments, status)
            self._done[call.index] = final
            out.append(self._event("response.output_item.done", {"output_index": call.index, "item": final}))
        self._calls = {}
        self.finished = True
        response = self._response(None, [self._done[i] for i in sorted(self._done)])
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        out.append(self._event(kind, {"response": response}))
        return b"".join(out)

    def _fail(self, error: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        if not self._id:
            self._id = _response_id("failed")
            out.append(self._event("response.created", {"response": self._response()}))
        self.finished = True
        response = self._response("failed", [self._done[i] for i in sorted(self._done)])
        code = error.get("code")
        response["error"] = {
            "code": code if isinstance(code, str) and code else as_str(error.get("type")) or "server_error",
            "message": as_str(error.get("message")) or "the provider reported an error",
        }
        out.append(self._event("response.failed", {"response": response}))
        return b"".join(out)


# The registered translator: Responses clients (Codex) on a Chat Completions provider.
TRANSLATOR = base.register(Direction(
    "openai_responses", "openai_chat", "/v1/chat/completions", responses_request_to_chat,
    chat_completion_to_response, openai_error, lambda model, request: ResponsesEventWriter(model)))
