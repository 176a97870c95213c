"""
What the gateway needs to know about a request, read once from its bytes.

A L{RequestView} is the parse step of the request lifecycle: the model, the
stream flag and the session id, for routing, recording and statistics.  The
body itself is forwarded as it came, byte for byte, unless a provider's
configured model replaces the C{model} field (L{replace_model}), which
changes those bytes and no others.

Plain functions over bytes; no reactor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lunaroute.dialects.session_id import extract_session_id
from lunaroute.errors import RequestError

__all__ = ["MAX_LABEL_CHARS", "BadRequestBody", "RequestView", "bounded", "parse_request", "replace_model"]

# Model names, user agents and other label-like values are kept (in stats,
# metrics, recordings, logs) cut to this many characters: a hostile 1 MB
# model name must not be copied into every table and summary line.
MAX_LABEL_CHARS = 200

class BadRequestBody(RequestError):
    """The request body cannot be forwarded as a model call (400)."""


def bounded(value: str | None, limit: int = MAX_LABEL_CHARS) -> str | None:
    """C{value} cut to C{limit} characters (with an ellipsis), or C{None}."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


@dataclass(frozen=True)
class RequestView:
    """
    One request as the gateway sees it.

    @ivar dialect: the wire format (C{anthropic}, C{openai_chat},
        C{openai_responses}), or C{None} for a body the gateway does not read.
    @ivar model: the requested model, as sent (C{None} if none).
    @ivar stream: whether the client asked for a stream.
    @ivar session_id: the assistant's own session id, if it sent one.
    @ivar json: the parsed body (C{None} when not parsed); read-only by
        convention: nothing downstream mutates it.
    """

    dialect: str | None
    model: str | None = None
    stream: bool = False
    session_id: str | None = None
    json: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def model_label(self) -> str | None:
        """The model name cut to a length fit for labels and tables."""
        return bounded(self.model)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """
    The body as a JSON object.

    @raise BadRequestBody: not JSON, not an object, or nested too deeply
        for the parser (a C{RecursionError}, not a crash).
    """
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise BadRequestBody("request body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequestBody(f"request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadRequestBody("request body must be a JSON object")
    return parsed


def parse_request(
    dialect: str | None,
    body: bytes,
    header: Callable[[str], str | None],
    *,
    parse_json: bool = True,
) -> RequestView:
    """
    Read a request once.

    @param dialect: the wire format of the route, or C{None} (bypass, models).
    @param header: looks a request header up by lower-case name.
    @param parse_json: whether the body must be a JSON model call.
    @raise BadRequestBody: when C{parse_json} and the body is not a JSON
        object with a non-empty string C{model}.
    """
    if not parse_json:
        return RequestView(dialect=dialect, session_id=extract_session_id(None, header))
    parsed = parse_json_object(body)
    model = parsed.get("model")
    if model is None:
        raise BadRequestBody("model: field required")
    if not isinstance(model, str) or not model:
        raise BadRequestBody(f"model: expected a non-empty string, got {_json_kind(model)}")
    return RequestView(
        dialect=dialect,
        model=model,
        stream=bool(parsed.get("stream")),
        session_id=extract_session_id(parsed, header),
        json=parsed,
    )


def _json_kind(value: object) -> str:
    """How a JSON value is named in an error message."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _top_level_values(text: str, key: str) -> list[tuple[int, int]]:
    """The C{(start, end)} spans of every top-level value stored under C{key}."""
    decoder = json.JSONDecoder()
    whitespace = " \t\n\r"
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(text) and text[i] in whitespace:
        i += 1
    if i >= len(text) or text[i] != "{":
        return spans
    i += 1
    while True:
        while text[i] in whitespace:
            i += 1
        if text[i] == "}":
            return spans
        name, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        while text[i] in whitespace:
            i += 1
        i += 1  # the colon
        while text[i] in whitespace:
            i += 1
        _, end = decoder.raw_decode(text, i)
        if name == key:
            spans.append((i, end))
        i = end
        while text[i] in whitespace:
            i += 1
        if text[i] == ",":
            i += 1


def replace_model(body: bytes, model: str) -> bytes:
    """
    The body with its top-level C{model} value replaced by C{model}; every
    other byte unchanged.  The body must already have parsed as a JSON object.
    """
    try:
        text = body.decode("utf-8")
        spans = _top_level_values(text, "model")
    except (UnicodeDecodeError, ValueError, IndexError):
        spans = []
        text = ""
    if not spans:
        # Not UTF-8 JSON we can splice (UTF-16, say): re-serialise.
        parsed: Mapping[str, Any] = json.loads(body)
        return json.dumps({**parsed, "model": model}, ensure_ascii=False).encode("utf-8")
    encoded = json.dumps(model, ensure_ascii=False)
    for start, end in reversed(spans):
        text = text[:start] + encoded + text[end:]
    return text.encode("utf-8")
