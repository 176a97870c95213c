"""Pieces the translation directions share."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lunaroute.dialects._coerce import as_dict, as_int, as_list
from lunaroute.dialects.translate.base import StreamTranslator
from lunaroute.dialects.translate.errors import UntranslatableField

__all__ = [
    "ENDED_EARLY",
    "ChatChunkReader",
    "Direction",
    "call_arguments",
    "call_id",
    "chat_function_tool",
    "end_chat_request",
    "sort_top_level",
    "utf8",
]

def call_arguments(value: Any) -> str:
    """
    A Chat tool call's ``arguments`` as text: a string as is; an object or
    array (some OpenAI-compatible servers send the parsed arguments) as its
    compact JSON, never dropped; anything else empty.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return ""


def call_id(value: Any) -> str:
    """
    A provider's tool-call id, or a fresh one when it sent none (some
    servers do): the client sends it back with the result, and an empty or
    repeated id would pair results with the wrong call.
    """
    if isinstance(value, str) and value:
        return value
    return f"call_{uuid.uuid4().hex[:24]}"


# The message of the error event a stream converter's close() sends when the
# provider's body ended before its finish reason (the relay looks for it).
ENDED_EARLY = "the provider's stream ended early"


def utf8(text: str) -> bytes:
    """
    ``text`` as UTF-8 for the client; a lone UTF-16 surrogate (a provider's
    ``"\\ud800"``, which JSON's syntax allows and Unicode does not) becomes
    ``?`` instead of failing the whole frame.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def sort_top_level(
    body: Any, handled: frozenset[str], refused: dict[str, str], dropped: list[str] | None
) -> list[str]:
    """
    Check a request's top-level fields: a ``refused`` one raises (its value
    says why), one neither handled nor refused is appended to the drop list,
    which is returned (``dropped``, or a new list).
    """
    if not isinstance(body, dict):
        raise UntranslatableField("body", "the request body must be a JSON object")
    drops: list[str] = dropped if dropped is not None else []
    for key in body:
        if key in refused:
            raise UntranslatableField(key, refused[key])
        if key not in handled:
            drops.append(key)
    return drops


def chat_function_tool(name: str, parameters: Any, description: Any = None, strict: Any = None) -> dict[str, Any]:
    """A Chat Completions function tool; an empty schema becomes an empty object."""
    function: dict[str, Any] = {"name": name, "parameters": parameters or {"type": "object", "properties": {}}}
    if description:
        function["description"] = description
    if strict is not None:
        function["strict"] = bool(strict)
    return {"type": "function", "function": function}


def end_chat_request(out: dict[str, Any], user: Any, stream: Any) -> dict[str, Any]:
    """The last fields of a Chat request: ``user``, and streaming with usage at the end."""
    if isinstance(user, str) and user:
        out["user"] = user
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


@dataclass
class Direction:
    """
    A :class:`lunaroute.dialects.translate.base.Translator` made of functions.

    ``make_stream`` takes the client's model and, when the caller has it,
    the client's request body (the Chat direction reads
    ``stream_options.include_usage`` from it).
    """

    source: str
    target: str
    target_path: str
    translate_request: Callable[[dict[str, Any], str | None, list[str]], dict[str, Any]]
    translate_response: Callable[[dict[str, Any], str], dict[str, Any]]
    translate_error: Callable[[Any, int], dict[str, Any]]
    make_stream: Callable[[str, dict[str, Any] | None], StreamTranslator]

    def request(self, body: dict[str, Any], model: str | None, dropped: list[str]) -> dict[str, Any]:
        return self.translate_request(body, model, dropped)

    def response(self, body: dict[str, Any], client_model: str) -> dict[str, Any]:
        return self.translate_response(body, client_model)

    def error(self, body: Any, status: int) -> dict[str, Any]:
        return self.translate_error(body, status)

    def stream(self, client_model: str, request: dict[str, Any] | None = None) -> StreamTranslator:
        return self.make_stream(client_model, request)


class ChatChunkReader:
    """
    The reading half of a converter fed a Chat Completions stream.

    :meth:`feed` sorts each parsed line: ``[DONE]``, an error chunk, or a
    chunk whose usage it keeps and whose choice 0 it hands on, delta by
    delta, with its finish reason (other choices have no place in a
    one-answer dialect).  Subclasses say what to write for each.
    """

    finished = False
    _finish: str | None = None
    _usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any] | str) -> bytes:
        """Translate one provider chunk (or ``"[DONE]"``); returns the bytes to send."""
        if self.finished:
            return b""
        if chunk == "[DONE]":
            return self._on_done()
        data = as_dict(chunk)
        if isinstance(data.get("error"), dict):
            return self._on_error(data["error"])
        out: list[bytes] = []
        self._on_chunk(data, out)
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        for raw in as_list(data.get("choices")):
            choice = as_dict(raw)
            if as_int(choice.get("index")) != 0:
                continue
            self._on_delta(as_dict(choice.get("delta")), out)
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                self._finish = finish
                self._on_finish(out)
        return b"".join(out)

    def _on_done(self) -> bytes:
        raise NotImplementedError

    def _on_error(self, error: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _on_chunk(self, data: dict[str, Any], out: list[bytes]) -> None:
        """Every chunk, before its deltas (the first one starts the answer)."""

    def _on_delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        raise NotImplementedError

    def _on_finish(self, out: list[bytes]) -> None:
        """Choice 0 has finished."""
