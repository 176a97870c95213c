"""Codex CLI on Claude: Responses API in, Anthropic Messages out.

Built from the two neighbouring directions rather than a third copy:

- the request goes Responses -> Chat (:func:`responses_request_to_chat`
  with ``for_anthropic``) -> Messages (:func:`chat_request_to_messages`);
- the JSON answer goes Messages -> ``chat.completion``
  (:func:`messages_response_to_chat`) -> ``response``
  (:func:`chat_completion_to_response`);
- the stream goes through :class:`AnthropicToChatChunks` into the same
  :class:`ResponsesEventWriter` a Chat provider's stream feeds, event by
  event.

Anthropic's signed thinking blocks survive the round trip through Codex as
reasoning items (see :data:`THINKING_MARK`), so extended thinking works in
tool loops.  Every field is listed in docs/translation.md.
"""

from __future__ import annotations

import json
from typing import Any

from lunaroute.dialects.translate import base
from lunaroute.dialects.translate.chat_to_anthropic import (
    DOCUMENT_MEDIA_TYPES,
    AnthropicToChatChunks,
    chat_request_to_messages,
    media_source,
    messages_response_to_chat,
    openai_error_from_anthropic,
)
from lunaroute.dialects.translate.common import Direction
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.dialects.translate.responses_to_chat import (
    ResponsesEventWriter,
    chat_completion_to_response,
    responses_request_to_chat,
)

__all__ = ["AnthropicToResponsesStream", "messages_response_to_responses", "responses_request_to_messages"]


def _check_for_anthropic(body: dict[str, Any]) -> None:
    """
    What the second step (Chat -> Messages) would refuse, refused here by
    the client's own paths (``input[2].content[0].image_url``, not the
    intermediate Chat request's): data URLs Anthropic cannot take, call
    arguments that are not a JSON object.
    """
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else []):
        kind = item.get("type", "message")
        if kind == "message" and isinstance(item.get("content"), list):
            for j, part in enumerate(item["content"]):
                where = f"input[{i}].content[{j}]"
                if part.get("type") == "input_image" and isinstance(part.get("image_url"), str):
                    media_source(part["image_url"], f"{where}.image_url")
                elif part.get("type") == "input_file" and isinstance(part.get("file_data"), str):
                    media_source(part["file_data"], f"{where}.file_data", DOCUMENT_MEDIA_TYPES)
        elif kind == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                raise UntranslatableField(f"input[{i}].arguments", "not a JSON object")


def responses_request_to_messages(
    body: dict[str, Any], model: str | None = None, dropped: list[str] | None = None
) -> dict[str, Any]:
    """Translate a Responses request body into an Anthropic Messages one."""
    drops: list[str] = dropped if dropped is not None else []
    chat = responses_request_to_chat(body, model, drops, for_anthropic=True)
    _check_for_anthropic(body)
    second: list[str] = []
    out = chat_request_to_messages(chat, None, second, keep_thinking=True, check=False)
    # What the second step leaves out, by the name the client used.
    drops.extend(_CHAT_NAMES.get(path, path) for path in second)
    return out


_CHAT_NAMES = {"reasoning_effort": "reasoning.effort"}


def messages_response_to_responses(body: dict[str, Any], client_model: str) -> dict[str, Any]:
    """Translate an Anthropic ``message`` into a Responses ``response`` object."""
    return chat_completion_to_response(messages_response_to_chat(body, client_model, keep_thinking=True), client_model)


class AnthropicToResponsesStream:
    """A :class:`base.StreamTranslator`: Anthropic events in, Responses SSE frames out."""

    def __init__(self, client_model: str, created: int | None = None) -> None:
        self._chunks = AnthropicToChatChunks(client_model, keep_thinking=True, created=created)
        self._writer = ResponsesEventWriter(client_model, created=created)

    @property
    def finished(self) -> bool:
        return self._writer.finished

    def feed(self, event: dict[str, Any] | str) -> bytes:
        return b"".join(self._writer.feed(chunk) for chunk in self._chunks.feed(event))

    def close(self) -> bytes:
        out = [self._writer.feed(chunk) for chunk in self._chunks.close()]
        out.append(self._writer.close())
        return b"".join(out)


# The registered translator: Responses clients (Codex) on an Anthropic provider.
TRANSLATOR = base.register(Direction(
    "openai_responses", "anthropic", "/v1/messages", responses_request_to_messages,
    messages_response_to_responses, openai_error_from_anthropic, lambda model, request: AnthropicToResponsesStream(model)))
