"""Tests for ResponseCapture, the proxy's entry point into lunaroute.dialects."""

from __future__ import annotations

import gzip
import json
import random
import zlib
from pathlib import Path
from typing import Any

import pytest

from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.model import ResponseSummary

STREAMS = Path(__file__).parent / "fixtures" / "streams"
SSE = "text/event-stream; charset=utf-8"
JSON = "application/json"

# (dialect, fixture, content type) for every complete, successful fixture.
FIXTURES = [
    ("anthropic", "anthropic_thinking_tools.sse", SSE),
    ("anthropic", "anthropic_thinking_tools.json", JSON),
    ("openai_chat", "openai_chat_tools.sse", SSE),
    ("openai_chat", "openai_chat_tools.json", JSON),
    ("openai_responses", "openai_responses_tools.sse", SSE),
    ("openai_responses", "openai_responses_tools.json", JSON),
]
FIXTURE_IDS = [name for _, name, _ in FIXTURES]
STREAM_FIXTURES = [f for f in FIXTURES if f[2] == SSE]
STREAM_IDS = [name for _, name, _ in STREAM_FIXTURES]


def random_chunks(data: bytes, seed: int, largest: int = 64) -> list[bytes]:
    """Cut ``data`` at seeded random points into pieces of 1..largest bytes."""
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, largest)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def capture(dialect: str, chunks: list[bytes], content_type: str | None = SSE,
            **kwargs: Any) -> ResponseSummary:
    """Run ``chunks`` through a fresh capture and return its summary."""
    cap = ResponseCapture(dialect, streaming=content_type == SSE, content_type=content_type,
                          **kwargs)
    for chunk in chunks:
        cap.feed(chunk)
    return cap.finish()


def reference(dialect: str, name: str, content_type: str) -> dict[str, Any]:
    """The summary (as a dict) of a fixture fed in one piece."""
    return capture(dialect, [(STREAMS / name).read_bytes()], content_type).to_dict()


@pytest.mark.parametrize(("dialect", "name", "content_type"), FIXTURES, ids=FIXTURE_IDS)
def test_fixture_summary_is_complete_and_serialisable(
    dialect: str, name: str, content_type: str
) -> None:
    """Each fixture in one piece gives a complete summary that json.dumps accepts."""
    summary = capture(dialect, [(STREAMS / name).read_bytes()], content_type)
    assert summary.partial is False
    assert summary.error is None
    assert summary.message is not None
    assert summary.streaming is (content_type == SSE)
    assert summary.tool_calls
    json.dumps(summary.to_dict())


@pytest.mark.parametrize(("dialect", "name", "content_type"), FIXTURES, ids=FIXTURE_IDS)
def test_fixture_is_rebuilt_identically_byte_by_byte(
    dialect: str, name: str, content_type: str
) -> None:
    """Feeding one byte at a time gives exactly the one-piece summary."""
    data = (STREAMS / name).read_bytes()
    summary = capture(dialect, [data[i : i + 1] for i in range(len(data))], content_type)
    assert summary.to_dict() == reference(dialect, name, content_type)


@pytest.mark.parametrize(("dialect", "name", "content_type"), FIXTURES, ids=FIXTURE_IDS)
def test_fixture_is_rebuilt_identically_in_random_chunks(
    dialect: str, name: str, content_type: str
) -> None:
    """Seeded random chunkings give exactly the one-piece summary."""
    data = (STREAMS / name).read_bytes()
    expected = reference(dialect, name, content_type)
    for seed in range(20):
        summary = capture(dialect, random_chunks(data, seed), content_type)
        assert summary.to_dict() == expected, seed


def test_stream_and_json_fixtures_rebuild_the_same_message() -> None:
    """Anthropic and Responses streams rebuild exactly their JSON twin."""
    for dialect, stem in (("anthropic", "anthropic_thinking_tools"),
                          ("openai_responses", "openai_responses_tools")):
        streamed = capture(dialect, [(STREAMS / f"{stem}.sse").read_bytes()])
        assert streamed.message == json.loads((STREAMS / f"{stem}.json").read_bytes())


def test_multibyte_text_survives_every_split_point() -> None:
    """Emoji and CJK text is intact whichever byte the stream is cut at."""
    data = (STREAMS / "anthropic_thinking_tools.sse").read_bytes()
    start = data.index("東京".encode())
    for cut in range(start, start + 8):
        summary = capture("anthropic", [data[:cut], data[cut:]])
        assert "東京" in summary.text and "🌤️" in summary.text
    emoji = data.index("🌤️".encode())
    for cut in range(emoji, emoji + len("🌤️".encode())):
        assert capture("anthropic", [data[:cut], data[cut:]]).text.endswith("🌤️")


@pytest.mark.parametrize(("dialect", "name", "content_type"), STREAM_FIXTURES, ids=STREAM_IDS)
@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_other_line_endings_give_the_same_summary(
    dialect: str, name: str, content_type: str, eol: bytes
) -> None:
    """CRLF or CR line endings, randomly chunked, change nothing."""
    data = (STREAMS / name).read_bytes().replace(b"\n", eol)
    expected = reference(dialect, name, content_type)
    for seed in range(5):
        assert capture(dialect, random_chunks(data, seed)).to_dict() == expected


def test_comments_and_keepalives_are_ignored() -> None:
    """": ping" comment lines interleaved in a stream change nothing."""
    data = (STREAMS / "openai_chat_tools.sse").read_bytes()
    noisy = data.replace(b"\n\n", b"\n\n: keep-alive\n\n")
    expected = reference("openai_chat", "openai_chat_tools.sse", SSE)
    assert capture("openai_chat", random_chunks(noisy, 3)).to_dict() == expected


@pytest.mark.parametrize(("dialect", "name", "content_type"), FIXTURES, ids=FIXTURE_IDS)
def test_truncated_body_is_partial(dialect: str, name: str, content_type: str) -> None:
    """A body cut in the middle is reported partial, without an exception."""
    data = (STREAMS / name).read_bytes()
    for cut in (1, len(data) // 3, len(data) // 2, len(data) - 30):
        summary = capture(dialect, random_chunks(data[:cut], cut), content_type)
        assert summary.partial is True, cut


@pytest.mark.parametrize("dialect", ["anthropic", "openai_chat", "openai_responses"])
@pytest.mark.parametrize("content_type", [SSE, JSON])
def test_garbage_bytes_are_partial_not_exceptions(dialect: str, content_type: str) -> None:
    """Random bytes never raise from feed() or finish() and end partial."""
    rng = random.Random(1234)
    for _ in range(10):
        data = rng.randbytes(rng.randint(0, 3000))
        summary = capture(dialect, random_chunks(data, rng.randint(0, 99)), content_type)
        assert summary.partial is True
        json.dumps(summary.to_dict())


def test_garbage_data_lines_mark_partial_but_are_counted() -> None:
    """A non-JSON data line is counted as an event and makes the result partial."""
    data = (STREAMS / "openai_chat_tools.sse").read_bytes()
    broken = data.replace(b"data: [DONE]", b"data: {not json\n\ndata: [DONE]")
    summary = capture("openai_chat", [broken])
    assert summary.partial is True
    assert summary.event_count == 14
    assert summary.text == "Checking 東京 and Paris ☔️"


def test_done_sentinel_is_expected_only_for_openai() -> None:
    """[DONE] is normal for OpenAI but unexpected, hence partial, for Anthropic."""
    chat = (STREAMS / "openai_chat_tools.sse").read_bytes()
    assert capture("openai_chat", [chat]).event_count == 13
    anthropic = (STREAMS / "anthropic_thinking_tools.sse").read_bytes()
    assert capture("anthropic", [anthropic + b"data: [DONE]\n\n"]).partial is True


def test_chat_stream_without_done_is_still_complete_with_usage() -> None:
    """A chat stream missing only [DONE] is complete once finish and usage came."""
    data = (STREAMS / "openai_chat_tools.sse").read_bytes().replace(b"data: [DONE]\n\n", b"")
    assert capture("openai_chat", [data]).partial is False


def test_anthropic_mid_stream_error_through_capture() -> None:
    """An in-stream overloaded_error is reported as error and partial."""
    summary = capture("anthropic", [(STREAMS / "anthropic_overloaded.sse").read_bytes()])
    assert summary.partial is True
    assert summary.error["error"]["type"] == "overloaded_error"
    assert summary.text == "Once upon a time, in a quiet village"


@pytest.mark.parametrize(("dialect", "name"), [("anthropic", "anthropic_error.json"),
                                                ("openai_chat", "openai_error.json"),
                                                ("openai_responses", "openai_error.json")])
def test_json_error_bodies_are_reported(dialect: str, name: str) -> None:
    """A JSON error response to a streaming request is parsed as JSON, not SSE."""
    data = (STREAMS / name).read_bytes()
    cap = ResponseCapture(dialect, streaming=True, content_type="application/json")
    for piece in random_chunks(data, 7):
        cap.feed(piece)
    summary = cap.finish()
    assert summary.error == json.loads(data)
    assert summary.streaming is False
    assert summary.partial is False


@pytest.mark.parametrize(("dialect", "name", "content_type"), FIXTURES, ids=FIXTURE_IDS)
@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "Identity", "gzip, gzip"])
def test_compressed_bodies_are_decoded_incrementally(
    dialect: str, name: str, content_type: str, encoding: str
) -> None:
    """gzip / deflate bodies, randomly chunked, give the plain summary."""
    data = (STREAMS / name).read_bytes()
    encoded = data
    for layer in [e.strip().lower() for e in encoding.split(",")]:
        if layer in ("gzip", "x-gzip"):
            encoded = gzip.compress(encoded)
        elif layer == "deflate":
            encoded = zlib.compress(encoded)
    expected = reference(dialect, name, content_type)
    for seed in range(3):
        summary = capture(dialect, random_chunks(encoded, seed), content_type,
                          content_encoding=encoding)
        assert summary.to_dict() == expected


def _bomb(decoded_bytes: int) -> bytes:
    """gzip of a JSON-looking prefix and then zeros: about a thousand times smaller than it decodes to."""
    packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    out = [packer.compress(b'{"id":"msg_1","content":"')]
    block = b"\0" * (1 << 20)
    for _ in range(decoded_bytes // len(block)):
        out.append(packer.compress(block))
    out.append(packer.flush())
    return b"".join(out)


@pytest.mark.parametrize("content_type", [SSE, "application/json"])
def test_a_gzip_bomb_is_never_decoded_past_the_limit(content_type: str) -> None:
    """256 MB of zeros in 250 KB of gzip: decoding stops at the capture's limit, memory stays near it, the summary says partial."""
    import tracemalloc

    bomb = _bomb(256 << 20)
    assert len(bomb) < 300_000
    chunks = [bomb[i : i + 65536] for i in range(0, len(bomb), 65536)]
    tracemalloc.start()
    try:
        summary = capture("anthropic", chunks, content_type, content_encoding="gzip", max_buffer_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.partial
    assert peak < 8 << 20, peak


def test_a_body_decoding_to_just_under_the_limit_is_kept() -> None:
    """The bound is on decoded bytes: a JSON body just under it still summarises."""
    body = json.dumps({"type": "error", "error": {"type": "x", "message": "y" * 500_000}}).encode()
    summary = capture("anthropic", [gzip.compress(body)], "application/json",
                      content_encoding="gzip", max_buffer_bytes=len(body) + 1)
    assert not summary.partial and summary.error is not None


# The start of an Anthropic text stream, and one 900-character text delta.
_TEXT_STREAM_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c",'
    b'"content":[],"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"' + b"w" * 900 + b'"}}\n\n'
)


def test_an_endless_stream_is_followed_up_to_the_limit_then_partial() -> None:
    """A provider streaming text without end: the record keeps what came before the limit, the accumulator stops growing."""
    cap = ResponseCapture("anthropic", streaming=True, content_type=SSE, max_buffer_bytes=200_000,
                          bulk_bytes=16 * 1024)
    cap.feed(_TEXT_STREAM_START)
    for _ in range(2_000):  # about 2 MB, ten times the limit
        cap.feed(_TEXT_DELTA)
    summary = cap.finish()
    assert summary.partial
    assert summary.usage.input_tokens == 5
    assert 100_000 < len(summary.text) <= 200_000


def test_a_listeners_endless_stream_still_reaches_the_listener_but_not_the_record() -> None:
    """With on_event (a translation), every event still reaches the listener past the limit; the record stops growing."""
    seen: list[str] = []
    cap = ResponseCapture("anthropic", streaming=True, content_type=SSE, max_buffer_bytes=200_000,
                          on_event=lambda event, data: seen.append(data["type"]))
    cap.feed(_TEXT_STREAM_START)
    for _ in range(2_000):
        cap.feed(_TEXT_DELTA)
    summary = cap.finish()
    assert seen.count("content_block_delta") == 2_000
    assert summary.partial
    assert 100_000 < len(summary.text) <= 200_000


def test_raw_deflate_without_zlib_header_is_accepted() -> None:
    """Servers sending raw deflate under "deflate" are decoded too."""
    data = (STREAMS / "anthropic_thinking_tools.sse").read_bytes()
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = packer.compress(data) + packer.flush()
    chunks = [raw[i : i + 1] for i in range(len(raw))]
    summary = capture("anthropic", chunks, content_encoding="deflate")
    assert summary.to_dict() == reference("anthropic", "anthropic_thinking_tools.sse", SSE)


def test_multi_member_gzip_is_decoded() -> None:
    """Concatenated gzip members form one body, as gzip allows."""
    data = (STREAMS / "openai_chat_tools.json").read_bytes()
    encoded = gzip.compress(data[:100]) + gzip.compress(data[100:])
    summary = capture("openai_chat", random_chunks(encoded, 5), JSON, content_encoding="gzip")
    assert summary.to_dict() == reference("openai_chat", "openai_chat_tools.json", JSON)


def test_truncated_gzip_is_partial() -> None:
    """A gzip body missing its tail is partial even if the JSON inside parsed."""
    data = (STREAMS / "anthropic_thinking_tools.sse").read_bytes()
    encoded = gzip.compress(data)[:-8]  # drop only the CRC and length trailer
    summary = capture("anthropic", [encoded], content_encoding="gzip")
    assert summary.partial is True
    assert summary.text.endswith("🌤️")


def test_corrupt_gzip_is_partial_not_an_exception() -> None:
    """Bytes that are not gzip at all under Content-Encoding: gzip are partial."""
    data = (STREAMS / "openai_chat_tools.json").read_bytes()
    summary = capture("openai_chat", [data[:50], data[50:]], JSON, content_encoding="gzip")
    assert summary.partial is True
    assert summary.message is None


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, br"])
def test_unsupported_encoding_is_partial(encoding: str) -> None:
    """Encodings the stdlib cannot undo give a partial summary, no exception."""
    data = (STREAMS / "anthropic_thinking_tools.sse").read_bytes()
    summary = capture("anthropic", [data], content_encoding=encoding)
    assert summary.partial is True
    assert summary.text == ""


def test_json_over_buffer_limit_is_partial() -> None:
    """A JSON body larger than max_buffer_bytes is dropped and partial."""
    data = (STREAMS / "openai_responses_tools.json").read_bytes()
    summary = capture("openai_responses", random_chunks(data, 1), JSON, max_buffer_bytes=1000)
    assert summary.partial is True
    assert summary.message is None


def test_endless_sse_line_over_buffer_limit_is_partial() -> None:
    """An event stream line that never ends stops being buffered past the cap."""
    summary = capture("anthropic", [b"data: " + b"x" * 5000] * 3, max_buffer_bytes=4096)
    assert summary.partial is True


def test_content_type_decides_over_streaming_flag() -> None:
    """text/event-stream means SSE even if the request was not streaming."""
    data = (STREAMS / "openai_chat_tools.sse").read_bytes()
    cap = ResponseCapture("openai_chat", streaming=False, content_type="Text/Event-Stream")
    cap.feed(data)
    summary = cap.finish()
    assert summary.streaming is True and summary.partial is False


def test_streaming_flag_decides_without_content_type() -> None:
    """Without a content type the streaming flag picks SSE or JSON."""
    data = (STREAMS / "openai_chat_tools.sse").read_bytes()
    cap = ResponseCapture("openai_chat", streaming=True)
    cap.feed(data)
    assert cap.finish().partial is False
    cap = ResponseCapture("openai_chat", streaming=False)
    cap.feed((STREAMS / "openai_chat_tools.json").read_bytes())
    assert cap.finish().streaming is False


def test_finish_is_idempotent_and_later_feeds_are_ignored() -> None:
    """finish() returns the same summary every time; feed() after it is ignored."""
    cap = ResponseCapture("anthropic", streaming=True, content_type=SSE)
    cap.feed((STREAMS / "anthropic_overloaded.sse").read_bytes())
    first = cap.finish()
    cap.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    assert cap.finish() is first
    assert first.partial is True


def test_empty_body_is_partial() -> None:
    """No bytes at all is a partial result for both body kinds."""
    assert capture("anthropic", [], SSE).partial is True
    assert capture("openai_chat", [b""], JSON).partial is True


def test_unknown_dialect_is_rejected_at_construction() -> None:
    """Only the three known dialects are accepted."""
    with pytest.raises(ValueError):
        ResponseCapture("gemini", streaming=True)


def test_feed_survives_accumulator_misbehaviour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a bug in an accumulator cannot make feed() or finish() raise."""
    from lunaroute.dialects import anthropic

    def explode(self: object, *args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(anthropic.AnthropicStreamAccumulator, "add", explode)
    monkeypatch.setattr(anthropic.AnthropicStreamAccumulator, "summary", explode)
    summary = capture("anthropic", [(STREAMS / "anthropic_thinking_tools.sse").read_bytes()])
    assert summary.partial is True
    assert summary.event_count == 23


@pytest.mark.parametrize(("dialect", "name", "content_type"), STREAM_FIXTURES, ids=STREAM_IDS)
@pytest.mark.parametrize("bulk", [1, 100, 16 * 1024])
def test_bulk_mode_gives_the_same_summary(dialect: str, name: str, content_type: str, bulk: int) -> None:
    """Parsing the stream in passes of bulk_bytes gives exactly the chunk-by-chunk summary."""
    data = (STREAMS / name).read_bytes()
    expected = reference(dialect, name, content_type)
    for seed in range(5):
        summary = capture(dialect, random_chunks(data, seed), content_type, bulk_bytes=bulk)
        assert summary.to_dict() == expected, seed
    compressed = gzip.compress(data)
    summary = capture(dialect, random_chunks(compressed, 1), content_type, bulk_bytes=bulk,
                      content_encoding="gzip")
    assert summary.to_dict() == expected


def test_bulk_mode_defers_parsing_until_enough_has_arrived() -> None:
    """In bulk mode a chunk is only kept until bulk_bytes arrived (or finish); then it is parsed."""
    data = (STREAMS / "anthropic_thinking_tools.sse").read_bytes()
    cap = ResponseCapture("anthropic", streaming=True, content_type=SSE, bulk_bytes=len(data) // 2 + 1)
    first, rest = data[: len(data) // 2], data[len(data) // 2:]
    cap.feed(first)
    assert cap._event_count == 0  # noqa: SLF001 - nothing parsed yet
    cap.feed(rest)
    assert cap._event_count > 0  # noqa: SLF001 - the pass ran once enough had arrived
    assert cap.finish().to_dict() == reference("anthropic", "anthropic_thinking_tools.sse", SSE)


def test_bulk_mode_is_off_with_an_event_listener() -> None:
    """A listener (the request log) sees each event as it arrives, so no bulk then."""
    data = (STREAMS / "anthropic_thinking_tools.sse").read_bytes()
    seen: list[str] = []
    cap = ResponseCapture("anthropic", streaming=True, content_type=SSE, bulk_bytes=1 << 20,
                          on_event=lambda event, payload: seen.append(event.event))
    cap.feed(data[: data.index(b"\n\n") + 2])
    assert seen == ["message_start"]


def test_bulk_mode_still_gives_up_on_an_endless_line() -> None:
    """The buffer limit still applies in bulk mode: an endless line makes the summary partial."""
    summary = capture("anthropic", [b"data: " + b"x" * 1000] * 50, max_buffer_bytes=10_000, bulk_bytes=4096)
    assert summary.partial is True
