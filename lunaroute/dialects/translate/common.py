"""Pieces the translation directions share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lunaroute.dialects.translate.base import StreamTranslator
from lunaroute.dialects.translate.errors import UntranslatableField

__all__ = ["Direction", "chat_function_tool", "sort_top_level"]


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
