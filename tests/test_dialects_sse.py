"""Tests for the incremental SSE parser in lunaroute.dialects.sse."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lunaroute.dialects.sse import SSEEvent, SSEParser

STREAMS = Path(__file__).parent / "fixtures" / "streams"


def parse(*chunks: bytes) -> list[SSEEvent]:
    """Feed ``chunks`` in order, then close, and return every event."""
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events


def random_chunks(data: bytes, seed: int) -> list[bytes]:
    """Cut ``data`` at seeded random points into pieces of 1-40 bytes."""
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, 40)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def test_event_name_data_and_id_are_parsed() -> None:
    """A complete event yields its type, data and id."""
    events = parse(b"event: message_start\ndata: {\"a\":1}\nid: 7\n\n")
    assert events == [SSEEvent(event="message_start", data='{"a":1}', id="7")]


def test_event_type_defaults_to_message() -> None:
    """Without an event field the type is "message" and the id None."""
    assert parse(b"data: hi\n\n") == [SSEEvent(event="message", data="hi", id=None)]


def test_multi_line_data_is_joined_with_newlines() -> None:
    """Several data lines in one event are joined by a single LF."""
    assert parse(b"data: one\ndata: two\ndata:\n\n")[0].data == "one\ntwo\n"


def test_only_one_leading_space_is_stripped() -> None:
    """Exactly one space after the colon is removed, further ones are data."""
    assert parse(b"data:  two spaces\n\n")[0].data == " two spaces"
    assert parse(b"data:none\n\n")[0].data == "none"


def test_field_without_colon_has_empty_value() -> None:
    """A bare "data" line contributes an empty data line."""
    assert parse(b"data\ndata\n\n")[0].data == "\n"


def test_comments_and_unknown_fields_are_ignored() -> None:
    """Comment lines such as ": ping" and unknown fields change nothing."""
    events = parse(b": ping\n\n:another\nfoo: bar\ndata: x\n: mid comment\n\n")
    assert events == [SSEEvent(data="x")]


def test_event_without_data_is_not_dispatched_and_resets_type() -> None:
    """An event block with no data lines is dropped, its type forgotten."""
    assert parse(b"event: lonely\n\ndata: x\n\n") == [SSEEvent(event="message", data="x")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_all_line_endings_are_accepted(eol: bytes) -> None:
    """LF, CRLF and lone CR all terminate lines."""
    body = eol.join([b"event: a", b"data: 1", b"", b"data: 2", b"data: 3", b"", b""])
    assert parse(body) == [SSEEvent(event="a", data="1"), SSEEvent(data="2\n3")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    """A CR ending one chunk and the LF starting the next make one terminator."""
    events = parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n")
    assert events == [SSEEvent(data="a\nb")]


def test_lone_cr_at_chunk_end_followed_by_text() -> None:
    """A CR at a chunk end still ends the line when no LF follows."""
    assert parse(b"data: a\r", b"data: b\r", b"\r") == [SSEEvent(data="a\nb")]


def test_leading_bom_is_stripped_even_when_split() -> None:
    """A UTF-8 BOM at the very start is dropped, even cut into pieces."""
    bom = "\ufeff".encode()
    assert parse(bom + b"data: x\n\n") == [SSEEvent(data="x")]
    assert parse(bom[:1], bom[1:2], bom[2:] + b"data: y\n\n") == [SSEEvent(data="y")]


def test_bom_after_start_is_kept() -> None:
    """Only the stream's first character is treated as a BOM."""
    assert parse("data: \ufeffx\n\n".encode()) == [SSEEvent(data="\ufeffx")]


def test_multibyte_utf8_split_byte_by_byte_survives() -> None:
    """Emoji and CJK cut inside their UTF-8 sequences decode intact."""
    text = "data: 東京 🌤️ café\n\n".encode()
    events = parse(*[text[i : i + 1] for i in range(len(text))])
    assert events == [SSEEvent(data="東京 🌤️ café")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    """Undecodable bytes become U+FFFD instead of raising."""
    assert parse(b"data: \xff\xfe ok\n\n") == [SSEEvent(data="\ufffd\ufffd ok")]


def test_close_flushes_trailing_event_without_blank_line() -> None:
    """close() dispatches an event whose terminating blank line never came."""
    parser = SSEParser()
    assert parser.feed(b"data: first\n\ndata: last") == [SSEEvent(data="first")]
    assert parser.close() == [SSEEvent(data="last")]
    assert parser.close() == []
    assert parser.feed(b"data: late\n\n") == []


def test_close_dispatches_event_ended_by_single_newline() -> None:
    """A final event terminated by one LF only is also flushed on close."""
    assert parse(b"event: e\ndata: x\n") == [SSEEvent(event="e", data="x")]


def test_id_persists_and_nul_ids_are_ignored() -> None:
    """The last event id carries over; an id containing NUL is ignored."""
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x00\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "1", ""]


def test_retry_field_is_recorded_when_numeric() -> None:
    """A numeric retry field is exposed; a non-numeric one is ignored."""
    parser = SSEParser()
    parser.feed(b"retry: 1500\nretry: soon\n\n")
    assert parser.retry == 1500


def test_buffered_size_counts_unfinished_line() -> None:
    """buffered_size reports characters held while a line is incomplete."""
    parser = SSEParser()
    parser.feed(b"data: " + b"x" * 100)
    assert parser.buffered_size >= 100
    parser.feed(b"\n\n")
    assert parser.buffered_size == 0


@pytest.mark.parametrize("name", ["anthropic_thinking_tools.sse", "openai_chat_tools.sse",
                                  "openai_responses_tools.sse"])
def test_fixture_events_do_not_depend_on_chunking(name: str) -> None:
    """Whole, byte-by-byte and random chunkings produce identical events."""
    data = (STREAMS / name).read_bytes()
    whole = parse(data)
    assert whole and all(event.data for event in whole)
    assert parse(*[data[i : i + 1] for i in range(len(data))]) == whole
    for seed in range(10):
        assert parse(*random_chunks(data, seed)) == whole
    crlf = data.replace(b"\n", b"\r\n")
    for seed in range(5):
        assert parse(*random_chunks(crlf, seed)) == whole
