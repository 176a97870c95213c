"""Tests for the JSONL session writer (lunaroute.sessions.jsonl)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_session_events import NOON, RAW_API_KEY, RAW_BEARER, build_exchange
from zope.interface.verify import verifyObject

from lunaroute.interfaces import ISessionWriter
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.jsonl import (
    MAX_PLAIN_ID,
    JSONLWriter,
    SessionFilesError,
    encode_event,
    session_file_name,
)

# 2025-06-15T23:59:59Z and two seconds later, on the 16th.
BEFORE_MIDNIGHT = 1750031999.0
AFTER_MIDNIGHT = 1750032001.0


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def all_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"))


def test_writer_provides_the_interface(tmp_path: Path) -> None:
    """JSONLWriter implements ISessionWriter."""
    assert verifyObject(ISessionWriter, JSONLWriter(str(tmp_path)))


def test_events_go_to_the_session_file_of_the_day(tmp_path: Path) -> None:
    """Events land in <dir>/<YYYY-MM-DD>/session_<id>.jsonl, one JSON object per line."""
    writer = JSONLWriter(str(tmp_path))
    events = exchange_events(build_exchange("abc-123", received=NOON))
    writer.write_batch(events)
    writer.close()
    path = tmp_path / "2025-06-15" / "session_abc-123.jsonl"
    assert all_files(tmp_path) == [path]
    assert read_lines(path) == json.loads(json.dumps(events))


def test_session_spanning_midnight_stays_in_its_first_file(tmp_path: Path) -> None:
    """An exchange at 00:00:01 of a session started at 23:59:59 goes to the earlier day's file."""
    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(build_exchange("night", received=BEFORE_MIDNIGHT)))
    writer.write_batch(exchange_events(build_exchange("night", received=AFTER_MIDNIGHT)))
    writer.close()
    assert all_files(tmp_path) == [tmp_path / "2025-06-15" / "session_night.jsonl"]
    assert len({e["request_id"] for e in read_lines(all_files(tmp_path)[0])}) == 2


def test_session_file_is_found_again_after_a_restart(tmp_path: Path) -> None:
    """A new writer (gateway restart) finds yesterday's file instead of starting another."""
    first = JSONLWriter(str(tmp_path))
    first.write_batch(exchange_events(build_exchange("resumed", received=BEFORE_MIDNIGHT)))
    first.close()
    second = JSONLWriter(str(tmp_path))
    second.write_batch(exchange_events(build_exchange("resumed", received=AFTER_MIDNIGHT + 3 * 86400)))
    second.close()
    assert all_files(tmp_path) == [tmp_path / "2025-06-15" / "session_resumed.jsonl"]


def test_a_new_session_after_midnight_gets_the_new_day(tmp_path: Path) -> None:
    """Only sessions already on disk stay in the old folder; new ones use their own day."""
    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(build_exchange("old", received=BEFORE_MIDNIGHT)))
    writer.write_batch(exchange_events(build_exchange("new", received=AFTER_MIDNIGHT)))
    writer.close()
    assert all_files(tmp_path) == [
        tmp_path / "2025-06-15" / "session_old.jsonl",
        tmp_path / "2025-06-16" / "session_new.jsonl",
    ]


def test_final_stats_token_totals_add_up_like_jq(tmp_path: Path) -> None:
    """Summing final_stats.tokens.total over a day's lines gives the day's tokens."""
    writer = JSONLWriter(str(tmp_path))
    batch: list[dict[str, Any]] = []
    for i in range(3):
        batch += exchange_events(build_exchange("s1", received=NOON + i))
    batch += exchange_events(build_exchange("s2", received=NOON + 10))
    writer.write_batch(batch)
    writer.close()
    # jq -s '[.[] | select(.final_stats) | .final_stats.tokens.total] | add'
    lines = [e for path in all_files(tmp_path / "2025-06-15") for e in read_lines(path)]
    total = sum(e["final_stats"]["tokens"]["total"] for e in lines if e.get("final_stats"))
    assert total == 4 * 1280
    assert all({"session_id", "request_id", "type", "timestamp"} <= set(e) for e in lines)


def test_raw_credentials_never_reach_the_file(tmp_path: Path) -> None:
    """Neither the x-api-key value nor the bearer token appears in the file's bytes."""
    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(build_exchange("secret")))
    writer.close()
    data = b"".join(path.read_bytes() for path in all_files(tmp_path))
    assert RAW_API_KEY.encode() not in data
    assert RAW_BEARER.encode() not in data
    assert b"x-api-key" in data


def test_unsafe_session_ids_cannot_escape_the_directory(tmp_path: Path) -> None:
    """A session id with path characters is recorded under a hashed name inside the day folder."""
    root = tmp_path / "sessions"
    writer = JSONLWriter(str(root))
    event = {"type": "started", "session_id": "../../etc/passwd", "request_id": "r", "timestamp": "2025-06-15T00:00:00.000Z"}
    writer.write_batch([event])
    writer.close()
    files = all_files(tmp_path)
    assert len(files) == 1
    assert files[0].parent == root / "2025-06-15"
    assert files[0].name.startswith("session_unsafe-")
    assert session_file_name("../../etc/passwd") == session_file_name("../../etc/passwd")
    assert session_file_name(None) != session_file_name("None")


def test_each_line_is_whole_even_with_newlines_and_odd_unicode() -> None:
    """Newlines in text are escaped and lone surrogates still encode: one event, one line."""
    line = encode_event({"type": "x", "text": "a\nb\u2028c\ud800"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["text"].startswith("a\nb\u2028c")


def test_torn_tail_is_cut_before_appending(tmp_path: Path) -> None:
    """A file ending in half a line (disk full, crash) is cut back so every line parses."""
    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(build_exchange("torn")))
    writer.close()
    path = all_files(tmp_path)[0]
    with open(path, "ab") as handle:
        handle.write(b'{"type":"half a li')
    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(build_exchange("torn", received=NOON + 5)))
    writer.close()
    lines = read_lines(path)
    assert len({e["request_id"] for e in lines}) == 2


def test_a_failing_file_does_not_stop_the_others(tmp_path: Path) -> None:
    """If one session's file cannot be written the rest of the batch still is, then it raises."""
    writer = JSONLWriter(str(tmp_path))
    # A directory where the file should be makes the open fail.
    os.makedirs(tmp_path / "2025-06-15" / "session_blocked.jsonl")
    batch = exchange_events(build_exchange("blocked")) + exchange_events(build_exchange("fine"))
    with pytest.raises(OSError):
        writer.write_batch(batch)
    writer.close()
    assert read_lines(tmp_path / "2025-06-15" / "session_fine.jsonl")


def test_open_files_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a bounded number of handles stays open; evicted files reopen and append."""
    import lunaroute.sessions.jsonl as jsonl

    monkeypatch.setattr(jsonl, "MAX_OPEN_FILES", 2)
    writer = JSONLWriter(str(tmp_path))
    for round_ in range(2):
        for i in range(5):
            writer.write_batch(exchange_events(build_exchange(f"s{i}", received=NOON + round_)))
            assert len(writer._files) <= 2
    writer.close()
    assert len(all_files(tmp_path)) == 5
    assert all(len({e["request_id"] for e in read_lines(p)}) == 2 for p in all_files(tmp_path))


def test_a_session_file_deleted_while_running_is_created_again(tmp_path: Path) -> None:
    """The next batch after a delete (or a move) goes to a file at the expected path, not the lost handle."""
    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(build_exchange("gone", received=NOON)))
    path = tmp_path / "2025-06-15" / "session_gone.jsonl"
    path.unlink()
    writer.write_batch(exchange_events(build_exchange("gone", received=NOON + 1)))
    assert len({e["request_id"] for e in read_lines(path)}) == 1
    moved = tmp_path / "elsewhere.jsonl"
    path.rename(moved)
    writer.write_batch(exchange_events(build_exchange("gone", received=NOON + 2)))
    writer.close()
    assert len(read_lines(path)) == 5
    assert len(read_lines(moved)) == 5  # the moved file is left as it was


def test_a_deleted_day_folder_is_created_again(tmp_path: Path) -> None:
    """Even the whole day folder removed (a clean-up script) is recreated."""
    import shutil

    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(build_exchange("s", received=NOON)))
    shutil.rmtree(tmp_path / "2025-06-15")
    writer.write_batch(exchange_events(build_exchange("s", received=NOON + 1)))
    writer.close()
    assert len(read_lines(tmp_path / "2025-06-15" / "session_s.jsonl")) == 5


def test_the_open_file_is_checked_once_per_batch_not_per_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reopen detection costs one stat of the path per file per batch."""
    import lunaroute.sessions.jsonl as jsonl

    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(build_exchange("s", received=NOON)))
    calls: list[str] = []
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(jsonl.os, "stat", stat)
    batch = [e for i in range(10) for e in exchange_events(build_exchange("s", received=NOON + i))]
    writer.write_batch(batch)
    writer.close()
    assert len(calls) == 1


def test_long_session_ids_keep_their_file_and_full_id(tmp_path: Path) -> None:
    """Ids of 238-255 characters (valid) get a name under 256 bytes, .zst included; the events keep the whole id."""
    assert MAX_PLAIN_ID == 237
    plain = "p" * 237
    assert session_file_name(plain) == f"session_{plain}.jsonl"
    writer = JSONLWriter(str(tmp_path))
    ids = ["a" * 238, "a" * 255, "a" * 254 + "b"]
    for session_id in ids:
        writer.write_batch(exchange_events(build_exchange(session_id)))
    writer.close()
    files = all_files(tmp_path)
    assert len(files) == 3
    for path in files:
        assert len(path.name.encode()) + len(".zst") < 256
        assert path.name.startswith("session_" + "a" * 200 + "~")
    found = sorted({e["session_id"] for path in files for e in read_lines(path)})
    assert found == sorted(ids)
    # Stable: the same id finds the same file again.
    assert session_file_name("a" * 250) == session_file_name("a" * 250)


def test_unsafe_characters_never_reach_the_file_name(tmp_path: Path) -> None:
    """/, .., NUL, control characters and a trailing newline all give a hashed name in the day folder."""
    root = tmp_path / "sessions"
    writer = JSONLWriter(str(root))
    unsafe = ["a/b", "..", "../x", "a\x00b", "tab\there", "line\n", "\x1b[31m", "a b", "é", "", 7]
    for session_id in unsafe:
        writer.write_batch(
            [{"type": "started", "session_id": session_id, "request_id": "r", "timestamp": "2025-06-15T00:00:00.000Z"}]
        )
    writer.close()
    files = all_files(tmp_path)
    assert len(files) == len(unsafe)
    for path in files:
        assert path.parent == root / "2025-06-15"
        assert path.name.startswith("session_unsafe-") and path.name.isascii() and path.name.isprintable()
    assert sorted(json.dumps(e["session_id"]) for p in files for e in read_lines(p)) == sorted(
        json.dumps(s) for s in unsafe
    )


def _strict_loads(line: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def test_nan_and_infinity_become_null_so_strict_parsers_read_the_line(tmp_path: Path) -> None:
    """A request body with NaN/Infinity (Python's json.loads accepts them) still gives strict JSON lines."""
    exchange = build_exchange("nan")
    exchange.request_body = b'{"model":"m","temperature":NaN,"top_p":Infinity,"x":[-Infinity,1.5]}'
    body = json.loads(exchange.request_body)
    exchange.request_json = body
    writer = JSONLWriter(str(tmp_path))
    writer.write_batch(exchange_events(exchange))
    writer.close()
    lines = (tmp_path / "2025-06-15" / "session_nan.jsonl").read_bytes().splitlines()
    events = [_strict_loads(line) for line in lines]
    recorded = next(e for e in events if e["type"] == "request_recorded")["request_json"]
    assert recorded == {"model": "m", "temperature": None, "top_p": None, "x": [None, 1.5]}
    assert body["x"][1] == 1.5 and body["temperature"] != body["temperature"]  # the input is not changed
    assert encode_event({"a": 1.0, "b": [2]}) == b'{"a":1.0,"b":[2]}\n'


def test_a_write_error_names_the_requests_not_written(tmp_path: Path) -> None:
    """The error raised for a batch is an OSError that names exactly the requests that were not written."""
    os.makedirs(tmp_path / "2025-06-15" / "session_blocked.jsonl")
    batch = exchange_events(build_exchange("blocked", request_id="r-blocked")) + exchange_events(
        build_exchange("fine", request_id="r-fine")
    )
    writer = JSONLWriter(str(tmp_path))
    with pytest.raises(SessionFilesError) as caught:
        writer.write_batch(batch)
    writer.close()
    assert isinstance(caught.value, OSError) and caught.value.errno is not None
    assert caught.value.request_ids == frozenset({"r-blocked"})


def test_bodies_are_serialised_once_per_batch_and_written_last() -> None:
    """
    Inside shared_json() a body is serialised once (both writers reuse the
    text); the JSONL line puts bodies after the short fields and still
    parses to the event.
    """
    from lunaroute.sessions.events import json_text, shared_json

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "t": float("nan")}
    event = {"type": "request_recorded", "request_json": body, "session_id": "s", "request_id": "r"}
    with shared_json():
        line = encode_event(event)
        body["model"] = "changed"  # the same object: its text is not made again
        assert json_text(body) == '{"model":"m","messages":[{"role":"user","content":"hi"}],"t":null}'
    assert json_text(body).startswith('{"model":"changed"')
    assert line.index(b'"session_id"') < line.index(b'"request_json"')
    body["model"] = "m"
    assert json.loads(line) == dict(event, request_json=dict(body, t=None))


@pytest.mark.parametrize(
    ("raw", "verbatim"),
    [
        (b'{"model": "m",  "max_tokens": 5, "note": "caf\\u00e9"}', True),
        (b'{"model": "m",\n "max_tokens": 5}', False),  # a line break would split the line
        (b'{"model": "m", "temperature": NaN}', False),  # not strict JSON
        (b'{"model": "m", "api_key": "' + RAW_API_KEY.encode() + b'"}', False),  # masked
    ],
)
def test_a_request_body_is_stored_as_its_own_bytes_when_it_can_be(raw: bytes, verbatim: bool) -> None:
    """
    Inside shared_json() (as the recorder writes), a request body whose bytes
    are one line of strict JSON with nothing masked is stored as those
    bytes, not serialised again; otherwise it is serialised (masked,
    NaN as null, on one line).  Either way the line parses to the masked body.
    """
    from lunaroute.sessions.events import shared_json

    exchange = build_exchange("raw")
    exchange.request_body = raw
    exchange.request_json = json.loads(raw)
    with shared_json():
        events = exchange_events(exchange)
        line = next(encode_event(e) for e in events if e["type"] == "request_recorded")
    assert line.count(b"\n") == 1
    assert (raw in line) is verbatim
    stored = json.loads(line)["request_json"]
    assert RAW_API_KEY not in json.dumps(stored)
    assert stored["model"] == "m" and "NaN" not in line.decode()
