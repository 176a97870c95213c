"""Incremental Server-Sent Events parser.

Provider streams arrive in TCP-sized pieces that cut through events, lines
and even multi-byte UTF-8 characters.  This parser accepts bytes exactly as
they come off the socket and yields whole events following the WHATWG
"event stream interpretation" rules, keeping only the unfinished line and
the unfinished event between calls so each chunk costs O(len(chunk)).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser"]

# The three line terminators SSE allows; "\r\n" must be tried first so it is
# taken as one terminator rather than two.
_EOL = re.compile(r"\r\n|\r|\n")

_BOM = "\ufeff"

# The usual event of a provider stream, "event: X" (optional) then "data: Y",
# each one line and without CR, and any run of them ending in a blank line.
_PLAIN_EVENT = re.compile(r"(?:event: ([^\n]*)\n)?data: ([^\n]*)\n\n")
_PLAIN_EVENTS = re.compile(r"(?:(?:event: [^\n]*\n)?data: [^\n]*\n\n)*")


def _pairs_of(events: list[SSEEvent]) -> list[tuple[str, str]]:
    """Events as the C{(event type, data)} pairs of L{SSEParser.feed_pairs}."""
    return [(event.event, event.data) for event in events]


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its type, its joined data lines and last id."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEParser:
    """Turn a byte stream into :class:`SSEEvent` objects, chunk by chunk."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Fragments of the line not yet terminated; joined only once its end
        # arrives so byte-at-a-time feeding stays linear.
        self._partial: list[str] = []
        self._partial_size = 0
        # A chunk ending in "\r" may be half of "\r\n": the "\n" that starts
        # the next chunk must then not count as a second (blank) line.
        self._skip_lf = False
        self._at_start = True
        self._data: list[str] = []
        self._data_size = 0
        self._event_type = ""
        self._last_id: str | None = None
        self._closed = False
        self.retry: int | None = None

    @property
    def buffered_size(self) -> int:
        """Characters held for an unfinished line or event (for size caps)."""
        return self._partial_size + self._data_size

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed, in order."""
        if self._closed or not chunk:
            return []
        return self._feed_text(self._decoder.decode(chunk))

    def feed_pairs(self, chunk: bytes) -> list[tuple[str, str]]:
        """
        The same events as :meth:`feed`, as ``(event type, data)`` pairs.

        Made for whole bodies (or large parts of them): while the text has
        no "\\r" (the providers' usual case), the complete events it holds
        are split on their blank lines and the common shapes (``event: X``
        then ``data: Y``, or ``data: Y`` alone) are read directly; anything
        else goes through the line parser, so the pairs (and the parser's
        state after) are exactly those of :meth:`feed`.  Ids are not
        returned (the last id is still kept).
        """
        if self._closed or not chunk:
            return []
        return self._pairs(self._decoder.decode(chunk))

    def close_pairs(self) -> list[tuple[str, str]]:
        """:meth:`close`, as ``(event type, data)`` pairs."""
        return _pairs_of(self.close())

    def _pairs(self, text: str) -> list[tuple[str, str]]:
        if "\r" in text or self._skip_lf or not text:
            # CR line ends (or nothing): the line parser.
            return _pairs_of(self._feed_text(text))
        if self._at_start:
            self._at_start = False
            if text.startswith(_BOM):
                text = text[1:]
        pairs: list[tuple[str, str]] = []
        start = 0
        if self._partial or self._data or self._event_type:
            # Up to the first blank line the line parser finishes the line
            # or event that earlier text started; after it nothing is pending.
            first = text.find("\n\n")
            if first < 0:
                return _pairs_of(self._feed_text(text))
            start = first + 2
            pairs = _pairs_of(self._feed_text(text[:start]))
        last = text.rfind("\n\n")
        if last >= start:
            # From a line start with nothing pending to the last blank line:
            # events that are lines ended by a blank line, one after another.
            middle = text[start : last + 2]
            if _PLAIN_EVENTS.fullmatch(middle):
                # Only "event: X" / "data: Y" events, one line each (both
                # patterns read lines exactly as the line parser does).
                pairs += [(name or "message", data) for name, data in _PLAIN_EVENT.findall(middle)]
            else:
                self._blocks(middle[:-2], pairs)
            start = last + 2
        pairs += _pairs_of(self._feed_text(text[start:]))
        return pairs

    def _blocks(self, text: str, pairs: list[tuple[str, str]]) -> None:
        """Events separated by blank lines (``text`` minus the last one's)."""
        events: list[SSEEvent] = []
        line_of = self._line
        for block in text.split("\n\n"):
            # Each block is lines ended by a blank line: one event at most.
            if block.startswith("event: "):
                end = block.find("\n")
                if block.startswith("data: ", end + 1) and block.find("\n", end + 1) < 0:
                    pairs.append((block[7:end] or "message", block[end + 7 :]))
                    continue
            elif block.startswith("data: ") and "\n" not in block:
                pairs.append(("message", block[6:]))
                continue
            for line in block.split("\n"):
                line_of(line, events)
            self._dispatch(events)
            if events:
                pairs += _pairs_of(events)
                events.clear()

    def close(self) -> list[SSEEvent]:
        """End the stream, dispatching an event that lacked its blank line.

        The WHATWG rules drop such an event; a proxy recording a response
        would rather keep it, since providers sometimes end on ``data:``.
        """
        if self._closed:
            return []
        events = self._feed_text(self._decoder.decode(b"", True))
        self._closed = True
        if self._partial:
            self._line("".join(self._partial), events)
            self._partial.clear()
            self._partial_size = 0
        self._dispatch(events)
        return events

    def _feed_text(self, text: str) -> list[SSEEvent]:
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            if text.startswith(_BOM):
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            text = text.removeprefix("\n")
        events: list[SSEEvent] = []
        if "\r" not in text:
            # The usual case (providers end lines with "\n"): split in C.
            lines = text.split("\n")
            rest = lines.pop()
            if lines and self._partial:
                self._partial.append(lines[0])
                lines[0] = "".join(self._partial)
                self._partial.clear()
                self._partial_size = 0
            line_of = self._line
            for line in lines:
                line_of(line, events)
            if rest:
                self._partial.append(rest)
                self._partial_size += len(rest)
            return events
        pos = 0
        for match in _EOL.finditer(text):
            line = text[pos : match.start()]
            if self._partial:
                self._partial.append(line)
                line = "".join(self._partial)
                self._partial.clear()
                self._partial_size = 0
            self._line(line, events)
            pos = match.end()
        if pos < len(text):
            rest = text[pos:]
            self._partial.append(rest)
            self._partial_size += len(rest)
        elif text.endswith("\r"):
            self._skip_lf = True
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            return  # comment, e.g. ": ping" keep-alives
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        # Any other field name is ignored, as the spec requires.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if not self._data:
            # No data lines: the spec says reset and dispatch nothing.
            self._event_type = ""
            return
        events.append(
            SSEEvent(
                event=self._event_type or "message",
                data="\n".join(self._data),
                id=self._last_id,
            )
        )
        self._data = []
        self._data_size = 0
        self._event_type = ""
