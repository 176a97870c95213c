"""The proxy's single entry point for watching a response go by.

The proxy hands every body chunk it relays to :meth:`ResponseCapture.feed`
and calls :meth:`ResponseCapture.finish` when the body ends.  The capture
undoes any content encoding, splits event streams into events, sends them to
the dialect's accumulator (or buffers a JSON body) and produces a
:class:`ResponseSummary`.  Recording is a side concern: whatever the bytes
are, neither method raises; anything that cannot be understood just marks
the summary ``partial``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from json.scanner import make_scanner
from typing import Any, cast

from lunaroute.dialects.anthropic import (
    AnthropicStreamAccumulator,
    summarize_anthropic_json,
)
from lunaroute.dialects.model import ResponseSummary
from lunaroute.dialects.openai_chat import (
    ChatCompletionAccumulator,
    summarize_chat_json,
)
from lunaroute.dialects.openai_responses import (
    ResponsesAccumulator,
    summarize_responses_json,
)
from lunaroute.dialects.sse import SSEEvent, SSEParser

__all__ = ["DIALECTS", "ResponseCapture"]

_JSON_SUMMARIZERS: dict[str, Callable[[dict[str, Any]], ResponseSummary]] = {
    "anthropic": summarize_anthropic_json,
    "openai_chat": summarize_chat_json,
    "openai_responses": summarize_responses_json,
}

DIALECTS = frozenset(_JSON_SUMMARIZERS)

# The scanner behind json.loads (the C one; the settings of its default
# decoder), called directly on a stripped payload: one C call per event
# instead of json.loads' few Python frames.
# (typeshed types make_scanner's argument oddly; any decoder will do.)
_scan_once = make_scanner(cast(Any, json.JSONDecoder()))

# While a deflate stream has produced nothing we keep its first bytes, so a
# server sending raw deflate (no zlib header) under "deflate" can be retried.
_PROBE_LIMIT = 64 * 1024


class _UnsupportedEncoding(Exception):
    """A Content-Encoding we cannot undo with the standard library."""


class DecodedTooLarge(Exception):
    """Compressed bytes that decode to more than the decoder's limit (a gzip bomb, or a runaway body)."""


def bounded_decompress(obj: Any, data: bytes, limit: int) -> bytes:
    """
    C{obj.decompress(data)} (a C{zlib} decompressor) that never produces
    more than C{limit} bytes: deflate expands up to about a thousand times,
    so one 64 KB read of a hostile or broken body could otherwise become
    64 MB, and a buffered one gigabytes.

    @raise DecodedTooLarge: C{data} decodes to C{limit} bytes or more.
    """
    out: bytes = obj.decompress(data, limit)
    if obj.unconsumed_tail or len(out) >= limit:
        raise DecodedTooLarge(f"the compressed body decodes to more than {limit} bytes")
    return out


class _Inflater:
    """Incremental gzip / zlib / raw-deflate decoder for one encoding layer."""

    def __init__(self, limit: int) -> None:
        # At most this many decoded bytes from one call (DecodedTooLarge).
        self._limit = limit
        # 32 + MAX_WBITS accepts both gzip and zlib headers, so a server that
        # mislabels one as the other still decodes.
        self._obj = zlib.decompressobj(32 + zlib.MAX_WBITS)
        self._raw = False
        self._probe: bytearray | None = bytearray()

    def decompress(self, data: bytes) -> bytes:
        if self._probe is not None:
            self._probe += data
            try:
                out = bounded_decompress(self._obj, data, self._limit)
            except zlib.error:
                # Nothing decoded yet, so the header was the problem: retry
                # everything seen so far as headerless deflate (once).
                self._raw = True
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                data, self._probe = bytes(self._probe), None
                return self._more(bounded_decompress(self._obj, data, self._limit))
            if out or len(self._probe) > _PROBE_LIMIT:
                self._probe = None
            return self._more(out)
        return self._more(bounded_decompress(self._obj, data, self._limit))

    def _more(self, out: bytes) -> bytes:
        # gzip allows several members back to back; each needs a new object.
        while self._obj.eof and self._obj.unused_data and not self._raw:
            rest = self._obj.unused_data
            self._obj = zlib.decompressobj(32 + zlib.MAX_WBITS)
            # What this call may still decode (out is already under the limit).
            out += bounded_decompress(self._obj, rest, self._limit - len(out))
        return out

    def flush(self) -> bytes:
        return self._obj.flush()

    @property
    def truncated(self) -> bool:
        return not self._obj.eof


def _inflaters(content_encoding: str | None, limit: int) -> list[_Inflater]:
    """Decoders for each layer, outermost (last applied) first, each bounded by C{limit} bytes a call."""
    names = [
        name.strip().lower()
        for name in (content_encoding or "").split(",")
        if name.strip().lower() not in ("", "identity")
    ]
    for name in names:
        if name not in ("gzip", "x-gzip", "deflate"):
            raise _UnsupportedEncoding(name)
    # Layers are listed in the order they were applied: undo the last first.
    return [_Inflater(limit) for _ in reversed(names)]


def _record_nothing(name: str, data: dict[str, Any]) -> None:
    """The accumulator of a stream past the capture's limit: it keeps nothing more."""


class ResponseCapture:
    """Watch one response body and summarise it.

    ``dialect`` is ``"anthropic"``, ``"openai_chat"`` or
    ``"openai_responses"`` (anything else raises ValueError here, the only
    place that may raise).  The body is an event stream when
    ``content_type`` starts with ``text/event-stream``, whatever
    ``streaming`` says, since error responses to streaming requests are
    plain JSON; only without a content type does ``streaming`` decide.
    JSON bodies are buffered up to ``max_buffer_bytes`` (decoded size).
    ``on_event``, if given, is called with each parsed stream event (and the
    dialect) after the accumulator has seen it; the pretty request log
    subscribes this way.  Whatever it raises is ignored.

    A stream is recorded up to ``max_buffer_bytes`` decoded bytes in all
    (the summary is partial past that); with ``on_event``, later events are
    still parsed and handed to it.

    ``bulk_bytes`` (streams without ``on_event`` only): keep up to this many
    bytes of the stream as they arrive and parse them together, when that
    much has arrived or at ``finish()``.  The summary is the same (the
    parser does not care where the chunks were split); what changes is that
    each relayed chunk costs a list append instead of a parse, and the work
    is done in a few large passes (the proxy's tap: about 9 µs per event
    spread over the stream's reactor turns before).
    """

    def __init__(
        self,
        dialect: str,
        *,
        streaming: bool,
        content_type: str | None = None,
        content_encoding: str | None = None,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        on_event: Callable[[SSEEvent, dict[str, Any]], None] | None = None,
        bulk_bytes: int = 0,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        self._dialect = dialect
        if content_type is None:
            self._sse = streaming
        else:
            self._sse = content_type.strip().lower().startswith("text/event-stream")
        self._max = max_buffer_bytes
        self._on_event = on_event
        # Stream chunks not parsed yet (bulk mode), and their size.
        self._bulk = bulk_bytes if self._sse and on_event is None else 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._partial = False
        # Set once the body can no longer be followed; later chunks are
        # ignored and the summary says partial.
        self._dead = False
        self._summary: ResponseSummary | None = None
        self._event_count = 0
        try:
            self._inflaters = _inflaters(content_encoding, max_buffer_bytes)
        except _UnsupportedEncoding:
            self._inflaters = []
            self._partial = self._dead = True
        self._parser = SSEParser()
        self._chunks: list[bytes] = []
        self._size = 0
        # Only a stream needs an accumulator, and only its dialect's.
        if self._sse:
            # Without a listener the parsed events are the capture's alone:
            # the accumulator need not copy what it keeps.
            self._add: Callable[[str, dict[str, Any]], None]
            if dialect == "anthropic":
                self._anthropic = AnthropicStreamAccumulator(owned=on_event is None)
                self._add = self._anthropic.add
            elif dialect == "openai_chat":
                self._chat = ChatCompletionAccumulator()
                self._add = self._add_chat
            else:
                self._responses = ResponsesAccumulator(owned=on_event is None)
                self._add = self._responses.add

    def feed(self, chunk: bytes) -> None:
        """Take the next body chunk exactly as relayed; never raises."""
        if self._dead or self._summary is not None or not chunk:
            return
        if self._bulk:
            self._pending.append(chunk)
            self._pending_size += len(chunk)
            if self._pending_size >= self._bulk:
                self._take_pending()
            return
        self._take(chunk)

    def _take_pending(self) -> None:
        pending = b"".join(self._pending)
        self._pending = []
        self._pending_size = 0
        if pending and not self._dead:
            self._take(pending)

    def _take(self, chunk: bytes) -> None:
        try:
            for inflater in self._inflaters:
                chunk = inflater.decompress(chunk)
            self._consume(chunk)
        except Exception:  # recording must never break the relay
            # Corrupt compressed data, or a bug here: stop following the body
            # rather than risk the relay.
            self._partial = self._dead = True

    def finish(self) -> ResponseSummary:
        """Summarise the body; never raises and returns the same object twice."""
        if self._summary is None:
            try:
                self._summary = self._finish()
            except Exception:  # finish() promises never to raise
                self._summary = ResponseSummary(
                    dialect=self._dialect, partial=True, event_count=self._event_count,
                    streaming=self._sse,
                )
        return self._summary

    def _finish(self) -> ResponseSummary:
        if self._pending:
            self._take_pending()
        if not self._dead:
            try:
                self._flush()
            except Exception:  # a bad tail still leaves a summary
                self._partial = self._dead = True
        if self._sse:
            summary = self._stream_summary()
        else:
            summary = self._json_summary()
        summary.partial = summary.partial or self._partial
        summary.event_count = self._event_count
        summary.streaming = self._sse
        return summary

    def _flush(self) -> None:
        tail = b""
        for inflater in self._inflaters:
            tail = inflater.decompress(tail) + inflater.flush()
            if inflater.truncated:
                self._partial = True
        self._consume(tail)
        if self._sse:
            if self._bulk:
                self._dispatch_pairs(self._parser.close_pairs())
            else:
                for event in self._parser.close():
                    self._dispatch(event)

    def _consume(self, data: bytes) -> None:
        if not data:
            return
        if self._sse:
            # A stream is followed for its record up to the same number of
            # decoded bytes as a JSON body: no answer comes near it, and a
            # provider streaming without end must not grow the accumulator
            # without end.  The relay goes on; the summary keeps what came
            # before and says partial.  A listener's capture (it drives a
            # translation) still parses every event for the listener.
            self._size += len(data)
            if self._size > self._max and self._add is not _record_nothing:
                self._partial = True
                if self._on_event is None:
                    self._dead = True
                    self._parser = SSEParser()
                    return
                self._add = _record_nothing
            if self._bulk:
                self._dispatch_pairs(self._parser.feed_pairs(data))
            else:
                for event in self._parser.feed(data):
                    self._dispatch(event)
            if self._parser.buffered_size > self._max:
                # One endless line or event: give up rather than hoard memory.
                self._partial = self._dead = True
                self._parser = SSEParser()
            return
        self._size += len(data)
        if self._size > self._max:
            self._partial = self._dead = True
            self._chunks = []
            return
        self._chunks.append(data)

    def _dispatch(self, event: SSEEvent) -> None:
        data = self._take_event(event.event, event.data)
        if data is not None and self._on_event is not None:
            try:
                self._on_event(event, data)
            except Exception:  # a listener's failure is not the capture's
                pass

    def _dispatch_pairs(self, pairs: list[tuple[str, str]]) -> None:
        """:meth:`_dispatch` for many events at once (bulk mode: no listener)."""
        take = self._take_event
        for name, data in pairs:
            take(name, data)

    def _take_event(self, name: str, data: str) -> dict[str, Any] | None:
        """
        Hand one event (its C{event:} name and joined data) to the dialect's
        accumulator; return its decoded data, or C{None} when it carries
        nothing usable (marked partial where that means a damaged stream).
        The payload is decoded by the JSON scanner directly: exactly what
        C{json.loads} accepts (it is stripped, so a value ending before the
        end of the payload is what C{json.loads} calls extra data).
        """
        self._event_count += 1
        payload = data.strip()
        if not payload:
            return None  # an empty data line carries nothing, e.g. a bare keep-alive
        if payload == "[DONE]":
            # OpenAI's terminator; Anthropic never sends it.
            if self._dialect == "anthropic":
                self._partial = True
            elif self._dialect == "openai_chat":
                self._chat.mark_done()
            return None
        try:
            value, end = _scan_once(payload, 0)
        except (StopIteration, ValueError):
            self._partial = True
            return None
        if end != len(payload) or not isinstance(value, dict):
            self._partial = True
            return None
        try:
            self._add(name, value)
        except Exception:  # one odd event must not end the capture
            self._partial = True
        return value

    def _add_chat(self, name: str, data: dict[str, Any]) -> None:
        # Chat Completions chunks have no event names.
        self._chat.add(data)

    @property
    def dialect(self) -> str:
        return self._dialect

    def _stream_summary(self) -> ResponseSummary:
        if self._dialect == "anthropic":
            return self._anthropic.summary()
        if self._dialect == "openai_chat":
            return self._chat.summary()
        return self._responses.summary()

    def _json_summary(self) -> ResponseSummary:
        body = b"".join(self._chunks)
        self._chunks = []
        if self._dead or not body.strip():
            return ResponseSummary(dialect=self._dialect, partial=True)
        try:
            data = json.loads(body)
        except ValueError:
            return ResponseSummary(dialect=self._dialect, partial=True)
        if not isinstance(data, dict):
            return ResponseSummary(dialect=self._dialect, partial=True)
        return _JSON_SUMMARIZERS[self._dialect](data)
