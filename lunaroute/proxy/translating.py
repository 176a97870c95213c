"""
The send and relay steps of a translated attempt: the provider's request in
its own dialect, and a converting relay that turns the provider's answer
into the client's as it arrives.

The translators themselves (L{lunaroute.dialects.translate}) are free of
I/O; this module moves bytes around them.  A stream is converted event by
event: provider bytes -> the recording's L{ResponseCapture} (its SSE parser
and C{json.loads}, done once) -> each parsed event to
L{StreamTranslator.feed} -> C{request.write}, with the same backpressure,
idle timeout and disconnect handling as the plain relay (it is one).  A
JSON answer is read whole (bounded) and translated once.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from lunaroute.dialects._coerce import as_dict, as_list
from lunaroute.dialects.capture import DecodedTooLarge, ResponseCapture, bounded_decompress
from lunaroute.dialects.sse import SSEEvent
from lunaroute.dialects.translate.base import StreamTranslator, Translator
from lunaroute.dialects.translate.common import ENDED_EARLY, utf8
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.dialects.translate.validate import check_finite, check_unicode
from lunaroute.logs import log_observer
from lunaroute.proxy.headers import HOP_BY_HOP
from lunaroute.proxy.relay import RelayProtocol

log = Logger(observer=log_observer)

__all__ = [
    "MAX_JSON_BYTES",
    "TranslatingRelay",
    "encode_body",
    "estimate_input_tokens",
    "events_from_json",
    "has_lone_surrogate",
    "translated_request_headers",
    "translated_response_headers",
]

# A JSON answer is read whole before translating; a larger one is refused.
MAX_JSON_BYTES = 64 * 1024 * 1024

ANTHROPIC_VERSION = b"2023-06-01"

# A surrogate escape in compact ASCII JSON (characters beyond the BMP, the
# emoji of many Claude Code prompts, are escaped as high-low pairs).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def has_lone_surrogate(text: str) -> bool:
    """
    Whether compact ASCII JSON escapes a lone surrogate: a high one not
    followed at once by a low one, or a low one not right after a high one.
    An escaped backslash before C{ud800} text may match too (the caller
    then looks properly); pairs never do.
    """
    if "\\ud" not in text and "\\uD" not in text:
        return False
    low_due = -1
    for match in _SURROGATE_ESCAPE.finditer(text):
        if match.group()[3] in "89abAB":
            if low_due != -1:
                return True
            low_due = match.end()
        else:
            if match.start() != low_due:
                return True
            low_due = -1
    return low_due != -1

_ENDED_EARLY = ENDED_EARLY.encode()

# A provider key shorter than this is not looked for in its answers (it
# would match ordinary text).
_MIN_SECRET = 8

_DONE = b"data: [DONE]"
_NL_DONE = b"\n" + _DONE

# Client headers a translated request keeps: nothing dialect-specific and
# never a credential meant for the other dialect's provider.
_KEPT = (b"user-agent",)
# ... and, when client and provider are of one family (Responses to Chat,
# both OpenAI), the client's own OpenAI credentials and account headers.
_KEPT_SAME_FAMILY = (b"authorization", b"openai-organization", b"openai-project")

# Provider response headers that describe the provider's body, not ours.
_BODY_HEADERS = frozenset({b"content-type", b"content-length", b"content-encoding", b"etag"})


def _family(dialect: str) -> str:
    return "anthropic" if dialect == "anthropic" else "openai"


def translated_request_headers(client: Headers, source: str, target: str) -> Headers:
    """
    The headers of a translated request: JSON, identity encoding (the
    converting relay reads the body), the client's user agent; the client's
    credentials only when its provider family is the target's (an
    Anthropic key never goes to an OpenAI server, nor the reverse).  The
    provider adds its own key (L{lunaroute.providers.http.HTTPProvider.apply_auth}).
    """
    out = Headers()
    out.setRawHeaders(b"content-type", [b"application/json"])
    out.setRawHeaders(b"accept-encoding", [b"identity"])
    kept = _KEPT + (_KEPT_SAME_FAMILY if _family(source) == _family(target) else ())
    for name in kept:
        values = client.getRawHeaders(name)
        if values:
            out.setRawHeaders(name, list(values))
    if target == "anthropic":
        out.setRawHeaders(b"anthropic-version", [ANTHROPIC_VERSION])
    return out


def translated_response_headers(upstream: Headers) -> list[tuple[bytes, list[bytes]]]:
    """
    The provider's headers worth relaying with a translated body (request
    ids, rate limits, C{retry-after}); never its framing, content type or
    encoding, which describe a body the client does not get.
    """
    return [
        (name, list(values))
        for name, values in upstream.getAllRawHeaders()
        if name.lower() not in HOP_BY_HOP
        and name.lower() not in _BODY_HEADERS
        and not name.lower().startswith(b"access-control-")
    ]


def encode_body(body: dict[str, Any], client_body: Any = None) -> bytes:
    """
    A translated request body as compact ASCII JSON (the encoder's fast
    path).  Raises L{UntranslatableField} naming the field for what JSON
    cannot carry to the provider: a NaN or infinity (Python's parser takes
    C{NaN} and C{1e999}), a lone UTF-16 surrogate (C{"\\ud800"}, which
    other dialects' servers refuse as invalid JSON).  The field is named
    by its path in C{client_body} (the client's request) when given.
    """
    named = body if client_body is None else client_body
    try:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    except ValueError:
        check_finite(named)
        raise UntranslatableField("body", "holds a number JSON cannot carry") from None
    if has_lone_surrogate(text):
        # Rare (or an escaped backslash before "ud800" text): find the field.
        check_unicode(named)
        if named is not body:
            check_unicode(body)
    return text.encode("ascii")


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """
    An estimate of a Messages request's input tokens, for C{count_tokens}
    on a provider without one: a quarter of the characters of the compact
    JSON of its C{system}, C{messages} and C{tools} (about four characters
    a token for English text and code), rounded up; at least 1.
    """
    parts = {key: body[key] for key in ("system", "messages", "tools") if key in body}
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
    return max(1, math.ceil(len(text) / 4))


class _Inflate:
    """
    Undoes a gzip/deflate body (a provider that ignored C{identity}), at
    most C{limit} decoded bytes a read (L{bounded_decompress}).
    """

    def __init__(self, limit: int) -> None:
        self._obj = zlib.decompressobj(32 + zlib.MAX_WBITS)
        self._limit = limit

    def __call__(self, data: bytes) -> bytes:
        return bounded_decompress(self._obj, data, self._limit)


def _decoder(content_encoding: str | None, limit: int) -> _Inflate | None:
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflate(limit)
    return None


class TranslatingRelay(RelayProtocol):
    """
    The relay of a translated attempt: everything L{RelayProtocol} does
    (backpressure, idle timeout, disconnects), but what reaches the client
    is the translator's output.

    The provider's bytes go to C{capture} (a L{ResponseCapture} of the
    provider's dialect, for the record: its usage, its model) as they
    arrive.  For a stream (C{text/event-stream} with a 2xx) the capture's
    parsed events also drive C{translator.stream(client_model)}, so each
    event is parsed once and its translation written at once; anything
    else is read whole (bounded) and answered once with
    C{translator.response} (2xx) or C{translator.error} (same status).
    C{client_bytes} counts what the client got.
    """

    def __init__(
        self,
        request: Any,
        clock: IReactorTime,
        idle_timeout: float,
        *,
        translator: Translator,
        client_model: str,
        status: int,
        streaming: bool,
        content_type: str | None = None,
        content_encoding: str | None = None,
        no_key_hint: str | None = None,
        max_json_bytes: int = MAX_JSON_BYTES,
        secret: str | None = None,
        client_stream: bool = False,
        on_provider_event: Callable[[SSEEvent, dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(request, clock, _ignore, idle_timeout)
        # Told of each of the provider's parsed events (the request log).
        self._on_provider_event = on_provider_event
        self._translator = translator
        self._client_model = client_model
        self._status = status
        self._hint = no_key_hint
        self._content_type = (content_type or "").lower()
        # The client asked for a stream and the provider answered one JSON
        # object: the client still gets a stream (L{events_from_json}).
        self._client_stream = client_stream and not streaming
        # The provider's own key, should its answer echo it (an error body
        # quoting the request): never shown to the client.
        self._secret = secret.encode() if secret and len(secret) >= _MIN_SECRET else None
        self._max = max_json_bytes
        self.client_bytes = 0
        self.translation_error: str | None = None
        # The provider's stream ended cleanly but before its finish reason:
        # the client got an error event; the record says so.
        self.ended_early: str | None = None
        self._stream: StreamTranslator | None = translator.stream(client_model) if streaming else None
        if content_type is None:
            content_type = "text/event-stream" if streaming else "application/json"
        self.capture = ResponseCapture(
            translator.target,
            streaming=streaming,
            content_type=content_type,
            content_encoding=content_encoding,
            on_event=self._on_event if self._stream is not None else None,
        )
        self._decode = _decoder(content_encoding, self._max + 1) if self._stream is None else None
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._client_gone = False

    def connectionMade(self) -> None:
        if getattr(self._request, "channel", None) is None:
            # The client left before the body started: nothing to write to.
            self._client_gone = True
        super().connectionMade()

    def _cancel(self, d: Any) -> None:
        # The client went away: nothing more is written to it.
        self._client_gone = True
        super()._cancel(d)

    def _write(self, data: bytes) -> None:
        if data and not self._client_gone:
            if self._secret is not None and self._secret in data:
                data = data.replace(self._secret, b"[redacted]")
            self.client_bytes += len(data)
            self._request.write(data)

    def deliver(self, data: bytes) -> None:
        # The capture never raises; for a stream it calls _on_event.
        self.capture.feed(data)
        if self._stream is not None:
            # The capture does not hand "[DONE]" on; a line that starts with
            # it (no JSON string holds a raw newline) is OpenAI's terminator.
            # One split across reads is left to close(), which ends the same.
            if data.startswith(_DONE) or _NL_DONE in data:
                self._on_event(None, "[DONE]")
            return
        if self._too_large:
            return
        try:
            if self._decode is not None:
                data = self._decode(data)
        except DecodedTooLarge:
            self._too_large = True
            self._body = []
            return
        except Exception:
            self.translation_error = "the provider's answer could not be decoded"
            self.cut_translation()
            return
        self._size += len(data)
        if self._size > self._max:
            self._too_large = True
            self._body = []
        else:
            self._body.append(data)

    def _on_event(self, event: SSEEvent | None, data: dict[str, Any] | str) -> None:
        stream = self._stream
        if stream is None or self.translation_error is not None:
            return
        try:
            self._write(stream.feed(data))
        except Exception:
            # A translator bug: stop the provider; the client's stream ends
            # with an error event (body_ended).
            log.failure("translating the provider's stream failed")
            self.translation_error = "the gateway could not translate the provider's stream"
            self.cut_translation()
            return
        if self._on_provider_event is not None and event is not None and isinstance(data, dict):
            try:
                self._on_provider_event(event, data)
            except Exception:
                log.failure("the request log's stream listener failed")

    def cut_translation(self) -> None:
        """Stop reading the provider (a body that cannot be translated)."""
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def body_ended(self, reason: Failure) -> None:
        if self._client_gone:
            return
        if self._stream is not None:
            # The capture's last events (a tail without a blank line), then
            # the end: the provider's "[DONE]" is not an event the capture
            # hands on, and close() finishes a stream that had its finish
            # reason, or reports one cut short.
            self.capture.finish()
            closing = self._stream.close()
            if _ENDED_EARLY in closing and self.failure is None and not self.timed_out:
                self.ended_early = ENDED_EARLY + " (no finish reason before the end of its body)"
            self._write(closing)
            return
        self._write(self._json_answer())

    def _json_answer(self) -> bytes:
        try:
            return self._translated_answer()
        except RecursionError:
            # A provider answer nested deeper than the encoder goes.
            self._request.setResponseCode(502)
            self.translation_error = "the provider's answer is nested too deeply to translate"
            return encode_json(self._translator.error({"error": {"message": self.translation_error}}, 502))

    def _translated_answer(self) -> bytes:
        translator = self._translator
        status = self._status
        if self.translation_error is not None or self._too_large:
            message = self.translation_error or f"the provider's answer exceeds {self._max} bytes"
            self._request.setResponseCode(502)
            return encode_json(translator.error({"error": {"message": message}}, 502))
        raw = b"".join(self._body)
        self._body = []
        try:
            parsed: Any = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            parsed = None
        if 200 <= status < 300:
            if isinstance(parsed, dict):
                if self._client_stream:
                    stream = translator.stream(self._client_model)
                    frames = [stream.feed(event) for event in events_from_json(translator.target, parsed)]
                    return b"".join(frames) + stream.close()
                return encode_json(translator.response(parsed, self._client_model))
            self._request.setResponseCode(502)
            if self._client_stream:
                self._request.setHeader(b"content-type", b"application/json")
            if self._content_type.startswith("text/event-stream"):
                self.translation_error = "the provider streamed its answer to a request that did not ask for a stream"
            else:
                self.translation_error = "the provider's answer is not a JSON object"
            return encode_json(translator.error({"error": {"message": self.translation_error}}, 502))
        if parsed is None and raw.strip():
            parsed = _sse_error(raw) or {"error": {"message": raw[:2000].decode("utf-8", "replace")}}
        answer = translator.error(parsed, status)
        if self._hint and status in (401, 403):
            _append_hint(answer, self._hint)
        return encode_json(answer)


def events_from_json(dialect: str, body: dict[str, Any]) -> list[dict[str, Any] | str]:
    """
    A provider's whole JSON answer as the stream it would have sent
    (C{openai_chat} chunks and C{[DONE]}, or Anthropic events), for a
    client that asked for a stream from a provider that ignored
    C{stream: true}.  Lenient: odd fields give an odd but well-formed stream.
    """
    if dialect == "anthropic":
        message = {key: value for key, value in body.items() if key != "content"}
        message["content"] = []
        events: list[dict[str, Any] | str] = [{"type": "message_start", "message": message}]
        blocks = as_list(body.get("content"))
        for index, block in enumerate(blocks):
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            start = dict(block)
            delta: dict[str, Any] | None = None
            if kind == "text":
                start["text"] = ""
                delta = {"type": "text_delta", "text": block.get("text") or ""}
            elif kind == "tool_use":
                start["input"] = {}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block.get("input") or {})}
            elif kind == "thinking":
                start["thinking"], start["signature"] = "", ""
                delta = {"type": "thinking_delta", "thinking": block.get("thinking") or ""}
            events.append({"type": "content_block_start", "index": index, "content_block": start})
            if delta is not None:
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
            if kind == "thinking" and block.get("signature"):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "signature_delta", "signature": block["signature"]}})
            events.append({"type": "content_block_stop", "index": index})
        usage = as_dict(body.get("usage"))
        events.append({
            "type": "message_delta",
            "delta": {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")},
            "usage": usage,
        })
        events.append({"type": "message_stop"})
        return events
    choices = as_list(body.get("choices"))
    first = as_dict(choices[0]) if choices else {}
    said = as_dict(first.get("message"))
    first_delta: dict[str, Any] = {key: value for key, value in said.items() if key != "tool_calls"}
    calls = as_list(said.get("tool_calls"))
    if calls:
        first_delta["tool_calls"] = [
            dict(call, index=i) for i, call in enumerate(calls) if isinstance(call, dict)
        ]
    head: dict[str, Any] = {key: body[key] for key in ("id", "model", "created") if key in body}
    chunks: list[dict[str, Any] | str] = [
        dict(head, object="chat.completion.chunk", choices=[{"index": 0, "delta": first_delta, "finish_reason": None}]),
        dict(head, object="chat.completion.chunk",
             choices=[{"index": 0, "delta": {}, "finish_reason": first.get("finish_reason") or "stop"}]),
    ]
    if isinstance(body.get("usage"), dict):
        chunks.append(dict(head, object="chat.completion.chunk", choices=[], usage=body["usage"]))
    chunks.append("[DONE]")
    return chunks


def _sse_error(raw: bytes) -> dict[str, Any] | None:
    """The first JSON object of an error status sent as an event stream (C{data: {...}}), if any."""
    for line in raw[:65536].splitlines():
        if line.startswith(b"data:"):
            try:
                parsed = json.loads(line[5:])
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return None


def _append_hint(answer: dict[str, Any], hint: str) -> None:
    """Add the gateway's word to a translated error's message (Anthropic or OpenAI shape)."""
    error = answer.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        error["message"] = f"{message} ({hint})" if message else hint


def _ignore(data: bytes) -> None:
    pass


def encode_json(body: dict[str, Any]) -> bytes:
    """A translated answer as the client's JSON bytes."""
    return utf8(json.dumps(body, separators=(",", ":"), ensure_ascii=False))
