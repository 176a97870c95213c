"""
The bulk fast path of the SSE parser and of the capture (issue 19): the same
events, the same parser state and the same summaries as the line parser and
the per-event path, whatever the stream and wherever it is cut.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.sse import SSEParser

STREAMS = Path(__file__).parent / "fixtures" / "streams"
SSE = "text/event-stream"
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

# Characters that matter to the parser, plus some that do not.
_TEXT = st.text(alphabet=st.sampled_from(list(" :aZé€\U0001f600\0\ufeff{}\"1,")), max_size=8)

_LINES = st.one_of(
    st.builds(lambda v: "event: " + v, _TEXT),
    st.builds(lambda v: "event:" + v, _TEXT),
    st.builds(lambda v: "data: " + v, _TEXT),
    st.builds(lambda v: "data:" + v, _TEXT),
    st.just("data"),
    st.just("data: "),
    st.just("event: "),
    st.builds(lambda v: "id: " + v, _TEXT),
    st.builds(lambda v: "retry: " + v, st.sampled_from(["10", "x", "3000", "", "1.5"])),
    st.builds(lambda v: ":" + v, _TEXT),
    st.just(""),
    st.just(""),
    _TEXT,
)

# Mostly the shapes providers send, so that the fast path's runs are long.
_PLAIN_BLOCKS = st.one_of(
    st.builds(lambda e, d: f"event: {e}\ndata: {d}\n\n", _TEXT, _TEXT),
    st.builds(lambda d: f"data: {d}\n\n", _TEXT),
    st.builds(lambda e, d: f"event: {e}\ndata: {d}\n\n", _TEXT, _TEXT),
    st.builds(lambda ls: "\n".join(ls) + "\n\n", st.lists(_LINES, max_size=4)),
    st.builds(lambda ls: "\n".join(ls) + "\n", st.lists(_LINES, max_size=3)),
)


@st.composite
def any_stream(draw: st.DrawFn) -> bytes:
    """Lines of every kind with any of the three line ends (or none at the end)."""
    lf_only = draw(st.booleans())
    ends = st.just("\n") if lf_only else st.sampled_from(["\n", "\n", "\r\n", "\r"])
    lines = draw(st.lists(st.tuples(_LINES, ends), max_size=30))
    text = "".join(line + end for line, end in lines)
    if draw(st.booleans()):
        text += draw(_TEXT)  # an unterminated last line
    if draw(st.booleans()):
        text = "\ufeff" + text
    data = text.encode()
    if draw(st.booleans()):
        data += draw(st.sampled_from([b"\xff", b"\xe2\x82", b"data: \xc3\n\n"]))
    return data


@st.composite
def plain_stream(draw: st.DrawFn) -> bytes:
    """Provider-shaped events, now and then an odd one, LF line ends."""
    text = "".join(draw(st.lists(_PLAIN_BLOCKS, max_size=40)))
    if draw(st.booleans()):
        text = draw(st.sampled_from(["\ufeff", "\r", "\n", ": hi\n"])) + text
    return text.encode()


@st.composite
def cut(draw: st.DrawFn, streams: st.SearchStrategy[bytes]) -> list[bytes]:
    """A stream cut at random byte offsets (through characters too)."""
    data = draw(streams)
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _check_same(chunks: list[bytes]) -> None:
    line, fast = SSEParser(), SSEParser()
    for chunk in chunks:
        expected = [(e.event, e.data) for e in line.feed(chunk)]
        assert fast.feed_pairs(chunk) == expected
        assert fast.buffered_size == line.buffered_size
        assert fast.retry == line.retry
    assert fast.close_pairs() == [(e.event, e.data) for e in line.close()]
    assert fast.retry == line.retry


def _check_same_state(chunks: list[bytes]) -> None:
    """After the fast path, the line parser carries on exactly (ids included)."""
    line, fast = SSEParser(), SSEParser()
    for chunk in chunks:
        line.feed(chunk)
        fast.feed_pairs(chunk)
    probe = b"\ndata: probe\n\n"
    assert fast.feed(probe) == line.feed(probe)


@SETTINGS
@given(cut(any_stream()))
def test_fast_path_equals_the_line_parser_on_any_stream(chunks: list[bytes]) -> None:
    _check_same(chunks)
    _check_same_state(chunks)


@SETTINGS
@given(cut(plain_stream()))
def test_fast_path_equals_the_line_parser_on_provider_streams(chunks: list[bytes]) -> None:
    _check_same(chunks)
    _check_same_state(chunks)


@pytest.mark.parametrize("text", [
    "event: a\ndata: 1\n\nevent: b\ndata: 2\n\nevent: c\ndata: 3\n\n",
    "data: 1\n\n\n\ndata: 2\n\n\n",
    "event: a\ndata: 1\n\nevent: \ndata: 2\n\nevent:x\ndata:3\n\ndata: 4\ndata: 5\n\n",
    "data: 1\n\nid: 9\ndata: 2\n\nevent: e\ndata: 3\nid: 10\n\nretry: 5\ndata: 4\n\n",
    "\ufeffevent: a\ndata: 1\n\n: c\n\nevent: a\n\ndata: 2\n\n",
    "event: a\ndata: 1\n\nevent: b\ndata: 2\r\n\r\ndata: 3\n\n",
])
def test_fast_path_examples_byte_by_byte_and_whole(text: str) -> None:
    data = text.encode()
    _check_same([data])
    for i in range(len(data) + 1):
        _check_same([data[:i], data[i:]])
        _check_same_state([data[:i], data[i:]])


# -- the capture: bulk mode against the per-event path -------------------

def _payloads(name: str) -> list[str]:
    text = (STREAMS / name).read_text()
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


_FIXTURES = {
    "anthropic": "anthropic_thinking_tools.sse",
    "openai_chat": "openai_chat_tools.sse",
    "openai_responses": "openai_responses_tools.sse",
}
_ODD = [
    "", " ", "[DONE]", " [DONE] ", "1", "[]", "null", "NaN", '"x"', "{}", "{} ", "{}}", "{} x",
    '{"type":"ping"}{"type":"ping"}', '{"a":1},{"b":2}', '{"type":"ping","a":[{"b":1}', '{"c":2}]}',
    '{"a":"}', '{"}', "\ufeff{}", '{"type": "message_stop"} ', '{"type":"error","error":{"type":"x"}}',
    "[" * 50 + "]" * 50, '{"a":1e400}', '{"a":-0}', '{"a":"\\ud800"}',
]


@st.composite
def dialect_stream(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    dialect = draw(st.sampled_from(sorted(_FIXTURES)))
    real = _payloads(_FIXTURES[dialect])
    payload = st.one_of(
        st.sampled_from(real),
        st.sampled_from(_ODD),
        st.builds(lambda p, n: p[:n], st.sampled_from(real), st.integers(0, 80)),
        st.builds(lambda p, n: p[n:], st.sampled_from(real), st.integers(0, 80)),
    )
    names = st.sampled_from(["", "message", "ping", "content_block_delta", "response.completed", "error"])
    events = draw(st.lists(st.tuples(names, payload), max_size=40))
    text = "".join((f"event: {n}\n" if n else "") + f"data: {p}\n\n" for n, p in events)
    data = text.encode()
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    bounds = [0, *points, len(data)]
    return dialect, [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _summary(dialect: str, chunks: list[bytes], **kwargs: object) -> str:
    cap = ResponseCapture(dialect, streaming=True, content_type=SSE, **kwargs)  # type: ignore[arg-type]
    for chunk in chunks:
        cap.feed(chunk)
    # repr, not ==: a summary may hold NaN (never equal to itself).
    return repr(cap.finish())


def _ignore(event: object, data: object) -> None:
    pass


@SETTINGS
@given(dialect_stream(), st.sampled_from([1, 64, 16 * 1024]))
def test_bulk_capture_equals_the_per_event_path(case: tuple[str, list[bytes]], bulk: int) -> None:
    """Same summary, partial flag and event count as json.loads per event."""
    dialect, chunks = case
    assert _summary(dialect, chunks, bulk_bytes=bulk) == _summary(dialect, chunks, on_event=_ignore)


@pytest.mark.parametrize("payloads", [
    # Each invalid alone, a valid array of dicts when joined with ",": a
    # decoder of the joined array would take them as three events.
    ['{"type":"ping","a":[{"b":1}', '{"c":2}]}', '{"type":"ping"},{"type":"ping"}'],
    ['{"type":"message_stop"} x'],
    ["\ufeff{}"],
])
def test_payloads_invalid_alone_mark_the_summary_partial(payloads: list[str]) -> None:
    start = json.dumps({"type": "message_start", "message": {"id": "m", "content": [], "usage": {}}})
    stop = json.dumps({"type": "message_stop"})
    text = "".join(f"data: {p}\n\n" for p in [start, *payloads, stop]).encode()
    bulk = ResponseCapture("anthropic", streaming=True, content_type=SSE, bulk_bytes=16 * 1024)
    bulk.feed(text)
    summary = bulk.finish()
    assert summary.partial
    assert summary.event_count == len(payloads) + 2
    assert repr(summary) == _summary("anthropic", [text], on_event=_ignore)


# -- the accumulators keep a listener-less capture's events as they are --

_OWNING = [
    ("anthropic", "anthropic_thinking_tools.sse"),
    ("openai_responses", "openai_responses_tools.sse"),
]


@pytest.mark.parametrize(("dialect", "fixture"), _OWNING)
def test_bulk_capture_keeps_the_events_it_owns_without_copying(
    monkeypatch: pytest.MonkeyPatch, dialect: str, fixture: str
) -> None:
    from lunaroute.dialects import _coerce

    copies: list[object] = []

    def counting_copy(value: object) -> object:
        copies.append(value)
        return value

    # Both accumulators keep event data through _coerce.json_keeper.
    monkeypatch.setattr(_coerce, "copy_json", counting_copy)
    body = (STREAMS / fixture).read_bytes()
    bulk = ResponseCapture(dialect, streaming=True, content_type=SSE, bulk_bytes=16 * 1024)
    bulk.feed(body)
    assert bulk.finish().tool_calls and copies == []
    listened = ResponseCapture(dialect, streaming=True, content_type=SSE, on_event=_ignore)
    listened.feed(body)
    listened.finish()
    assert copies  # a listener gets the data after the accumulator: copied


def _vandal(event: object, data: dict[str, object]) -> None:
    """A listener that empties every object of the event it is shown."""
    for value in list(data.values()):
        if isinstance(value, dict):
            _vandal(event, value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _vandal(event, item)
            value.clear()
    data.clear()


@pytest.mark.parametrize(("dialect", "fixture"), _OWNING)
def test_a_listener_changing_the_data_does_not_change_the_summary(dialect: str, fixture: str) -> None:
    body = (STREAMS / fixture).read_bytes()
    assert _summary(dialect, [body], on_event=_vandal) == _summary(dialect, [body], bulk_bytes=1)
