"""
C{lunaroute-server report} and C{lunaroute-server search} (lunaroute.sessions.reports).

The database is filled by really recording exchanges (the events the
recorder makes, written by the SQLite writer), and every figure the reports
print is checked against sums worked out by hand below.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from lunaroute.sessions import reports
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.reports import (
    ReportError,
    UsageRow,
    build_report,
    client_of,
    day_bounds,
    parse_day,
    period_key,
    render_report,
    run_report,
    run_search,
    split_blocks,
)
from lunaroute.sessions.sqlite import SQLiteWriter
from lunaroute.testing.exchanges import CODEX_AGENT, SDK_AGENT, make_exchange

SERVER = shutil.which("lunaroute-server") or str(Path(sys.executable).with_name("lunaroute-server"))

SONNET = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5-20251001"
OPUS = "claude-opus-4-1-20250805"


def at(text: str) -> float:
    """Epoch seconds of an ISO UTC time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# The recorded requests.  Figures per request: input (not cached), output,
# cache write, cache read, cost.
#
#  r1 s1 Claude Code sonnet 2025-06-15 12:00Z  1000 100 200 3000  0.010
#  r2 s1 Claude Code sonnet 2025-06-15 12:30Z  2000 200   0 4000  0.020
#  r3 s1 Claude Code sonnet 2025-06-15 17:10Z   500  50   0    0  0.005
#  r4 s2 Codex gpt-5 (chat) 2025-06-15 22:30Z  1500 in, 1000 of it cached:
#                                               500 300   0 1000  0.004
#  r5 s3 SDK haiku          2025-06-16 09:00Z   100  10   0    0  no price
#  r6 s4 Claude Code opus   2025-07-02 10:00Z    10  10   0    0  0.500
#  r7 s4 Claude Code opus   2025-07-02 10:30Z    20  20   0    0  0.250
EXCHANGES: list[dict[str, Any]] = [
    dict(request_id="r1", session_id="s1", received=at("2025-06-15T12:00:00"), model=SONNET,
         input_tokens=1000, output_tokens=100, cache_creation_tokens=200, cache_read_tokens=3000,
         cost_usd=0.010, user_text="Why does the parser raise TypeError on empty input?",
         answer="The tokenizer returns None for an empty string; guard it before the loop."),
    dict(request_id="r2", session_id="s1", received=at("2025-06-15T12:30:00"), model=SONNET,
         input_tokens=2000, output_tokens=200, cache_read_tokens=4000, cost_usd=0.020,
         user_text="Now write a regression test", answer="Added test_empty_input to tests/test_parser.py."),
    dict(request_id="r3", session_id="s1", received=at("2025-06-15T17:10:00"), model=SONNET,
         input_tokens=500, output_tokens=50, cost_usd=0.005,
         user_text="Summarise the change", answer="The parser now handles empty input."),
    dict(request_id="r4", session_id="s2", received=at("2025-06-15T22:30:00"), model="gpt-5",
         dialect="openai_chat", user_agent=CODEX_AGENT, input_tokens=1500, output_tokens=300,
         cache_read_tokens=1000, cost_usd=0.004,
         user_text="List the files in the repo", answer="README.md, setup.py and the lunaroute package."),
    dict(request_id="r5", session_id="s3", received=at("2025-06-16T09:00:00"), model=HAIKU,
         user_agent=SDK_AGENT, input_tokens=100, output_tokens=10, cost_usd=None,
         user_text="Translate hello", answer="Bonjour"),
    dict(request_id="r6", session_id="s4", received=at("2025-07-02T10:00:00"), model=OPUS,
         input_tokens=10, output_tokens=10, cost_usd=0.500,
         user_text="Plan the umbrella migration", answer="Step one: take an umbrella inventory."),
    dict(request_id="r7", session_id="s4", received=at("2025-07-02T10:30:00"), model=OPUS,
         input_tokens=20, output_tokens=20, cost_usd=0.250,
         user_text="And then?", answer="Step two: migrate the light rain handlers."),
]


def record(db_path: Path, exchanges: list[dict[str, Any]]) -> None:
    """Record exchanges as the gateway does: their events, through the SQLite writer."""
    writer = SQLiteWriter(str(db_path))
    events: list[dict[str, Any]] = []
    for spec in exchanges:
        spec = dict(spec)
        events.extend(exchange_events(make_exchange(spec.pop("session_id"), spec.pop("received"), **spec)))
    writer.write_batch(events)
    writer.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reports") / "sessions.db"
    record(path, EXCHANGES)
    return path


def args(db: Path, kind: str = "daily", **options: Any) -> argparse.Namespace:
    values: dict[str, Any] = dict(
        kind=kind, since=None, until=None, timezone="UTC", model=None, client=None, project=None,
        breakdown=False, json=True, db_path=str(db), config=None,
    )
    values.update(options)
    return argparse.Namespace(**values)


def report_json(db: Path, kind: str = "daily", now: datetime | None = None, **options: Any) -> dict[str, Any]:
    out = io.StringIO()
    assert run_report(args(db, kind, **options), out=out, now=now) == 0
    return json.loads(out.getvalue())


def figures(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["requests"], row["input_tokens"], row["output_tokens"], row["cache_creation_tokens"],
        row["cache_read_tokens"], row["total_tokens"],
    )


# --------------------------------------------------------------------------
# Reports over a recorded database


def test_daily_report_matches_the_hand_computed_figures(db: Path) -> None:
    """Per UTC day: requests, the four token kinds, their total and the summed cost."""
    report = report_json(db, "daily")
    rows = {row["date"]: row for row in report["rows"]}
    assert list(rows) == ["2025-06-15", "2025-06-16", "2025-07-02"]
    # r1..r4; r4's 1,500 OpenAI input tokens count 1,000 cached, so 500 uncached.
    assert figures(rows["2025-06-15"]) == (4, 4000, 650, 200, 8000, 12850)
    assert rows["2025-06-15"]["cost_usd"] == pytest.approx(0.039)
    assert rows["2025-06-15"]["cost_complete"] is True
    assert rows["2025-06-15"]["models"] == [SONNET, "gpt-5"] or rows["2025-06-15"]["models"] == sorted([SONNET, "gpt-5"])
    # r5 has no known price.
    assert figures(rows["2025-06-16"]) == (1, 100, 10, 0, 0, 110)
    assert rows["2025-06-16"]["cost_usd"] is None
    assert rows["2025-06-16"]["unpriced_requests"] == 1
    assert figures(rows["2025-07-02"]) == (2, 30, 30, 0, 0, 60)
    assert rows["2025-07-02"]["cost_usd"] == pytest.approx(0.75)
    totals = report["totals"]
    assert figures(totals) == (7, 4130, 690, 200, 8000, 13020)
    assert totals["cost_usd"] == pytest.approx(0.789)
    assert totals["cost_complete"] is False and totals["unpriced_requests"] == 1


def test_report_cost_is_the_sum_of_the_per_request_costs(db: Path) -> None:
    """Every report's total cost equals the sum of session_stats.estimated_cost_usd, to the cent and beyond."""
    conn = sqlite3.connect(db)
    stored = dict(conn.execute("SELECT request_id, estimated_cost_usd FROM session_stats").fetchall())
    conn.close()
    assert stored == {spec["request_id"]: spec["cost_usd"] for spec in EXCHANGES}
    expected = sum(cost for cost in stored.values() if cost is not None)
    for kind in reports.REPORT_KINDS:
        report = report_json(db, kind, now=datetime(2026, 1, 1, tzinfo=UTC))
        assert report["totals"]["cost_usd"] == pytest.approx(expected, abs=1e-12), kind
        row_sum = sum(row["cost_usd"] or 0.0 for row in report["rows"])
        assert row_sum == pytest.approx(expected, abs=1e-12), kind


def test_a_request_without_a_start_counts_when_it_finished(tmp_path: Path) -> None:
    """Only the completion of a request reached the database (an import of a cut file): it still counts, once."""
    path = tmp_path / "partial.db"
    events = exchange_events(make_exchange("s9", at("2025-06-20T23:59:59"), request_id="r9", cost_usd=0.5))
    writer = SQLiteWriter(str(path))
    writer.write_batch([event for event in events if event["type"] not in ("started", "request_recorded")])
    writer.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT started_at, completed_at FROM session_stats").fetchall() == [
        (None, "2025-06-21T00:00:00.201Z")
    ]
    conn.close()
    rows = report_json(path, "daily", since="2025-06-21", until="2025-06-21")["rows"]
    assert [(row["date"], row["requests"], row["cost_usd"]) for row in rows] == [("2025-06-21", 1, 0.5)]
    assert report_json(path, "daily", until="2025-06-20")["rows"] == []


def test_requests_are_summed_per_quarter_hour_and_still_split_at_a_half_hour_midnight(tmp_path: Path) -> None:
    """
    The database sums requests of one model and client per quarter of an
    hour; India (UTC+5:30) has its midnight at 18:30Z, a quarter's edge, so
    18:29:59Z and 18:31Z still land on different local days.
    """
    path = tmp_path / "quarters.db"
    specs: list[dict[str, Any]] = [
        dict(request_id="q1", session_id="k", received=at("2025-06-15T18:16:00"), cost_usd=0.25),
        dict(request_id="q2", session_id="k", received=at("2025-06-15T18:20:00"), cost_usd=0.5),
        dict(request_id="q3", session_id="k", received=at("2025-06-15T18:29:59"), cost_usd=None),
        dict(request_id="q4", session_id="k", received=at("2025-06-15T18:31:00"), cost_usd=0.125),
    ]
    record(path, specs)
    conn = reports.connect_readonly(path)
    rows, _ = reports.query_usage_rows(conn)
    conn.close()
    assert sorted((row.requests, row.priced, row.cost_usd, row.input_tokens) for row in rows) == [
        (1, 1, 0.125, 1200),
        (3, 2, 0.75, 3600),
    ]
    kolkata = report_json(path, "daily", timezone="Asia/Kolkata")["rows"]
    assert [(r["date"], r["requests"], r["unpriced_requests"], r["cost_usd"]) for r in kolkata] == [
        ("2025-06-15", 3, 1, 0.75),
        ("2025-06-16", 1, 0, 0.125),
    ]
    blocks = report_json(path, "blocks")["rows"]
    assert [(b["first_request"], b["last_request"], b["requests"]) for b in blocks] == [
        ("2025-06-15T18:16:00.000Z", "2025-06-15T18:31:00.000Z", 4)
    ]


def test_weekly_and_monthly_group_by_monday_and_month(db: Path) -> None:
    """2025-06-15 is a Sunday (week of 06-09), 06-16 a Monday, 07-02 in the week of 06-30."""
    weekly = {row["week"]: row["requests"] for row in report_json(db, "weekly")["rows"]}
    assert weekly == {"2025-06-09": 4, "2025-06-16": 1, "2025-06-30": 2}
    monthly = {row["month"]: row["requests"] for row in report_json(db, "monthly")["rows"]}
    assert monthly == {"2025-06": 5, "2025-07": 2}


def test_session_report_has_one_row_per_session_most_recent_last(db: Path) -> None:
    rows = report_json(db, "session")["rows"]
    assert [row["session_id"] for row in rows] == ["s1", "s2", "s3", "s4"]
    s1 = rows[0]
    assert figures(s1) == (3, 3500, 350, 200, 7000, 11050)
    assert s1["cost_usd"] == pytest.approx(0.035)
    assert s1["first_request"] == "2025-06-15T12:00:00.000Z"
    assert s1["last_request"] == "2025-06-15T17:10:00.000Z"


def test_timezone_moves_requests_across_day_boundaries(db: Path) -> None:
    """r4 (22:30Z) is on the 16th in Paris (UTC+2 in June), on the 15th in UTC; --since/--until are local days."""
    paris = {row["date"]: row for row in report_json(db, "daily", timezone="Europe/Paris")["rows"]}
    assert figures(paris["2025-06-15"]) == (3, 3500, 350, 200, 7000, 11050)
    assert figures(paris["2025-06-16"]) == (2, 600, 310, 0, 1000, 1910)
    assert paris["2025-06-16"]["cost_usd"] == pytest.approx(0.004)
    one_day = {"since": "2025-06-16", "until": "20250616"}
    local = report_json(db, "daily", timezone="Europe/Paris", **one_day)
    assert [row["requests"] for row in local["rows"]] == [2]
    utc = report_json(db, "daily", timezone="UTC", **one_day)
    assert [row["requests"] for row in utc["rows"]] == [1]
    # New York (UTC-4): r1 at 12:00Z is 08:00 on the 15th, r4 18:30 on the 15th, r5 05:00 on the 16th.
    new_york = {row["date"]: row["requests"] for row in report_json(db, "daily", timezone="America/New_York")["rows"]}
    assert new_york == {"2025-06-15": 4, "2025-06-16": 1, "2025-07-02": 2}


def test_model_and_client_filters(db: Path) -> None:
    """--model matches part of the id; --client is derived from the user agent."""
    sonnet = report_json(db, "daily", model="sonnet")
    assert sonnet["totals"]["requests"] == 3 and sonnet["filters"]["model"] == "sonnet"
    codex = report_json(db, "daily", client="codex")
    assert codex["totals"]["requests"] == 1 and figures(codex["totals"])[1:] == (500, 300, 0, 1000, 1800)
    claude = report_json(db, "daily", client="Claude Code")
    assert claude["totals"]["requests"] == 5
    other = report_json(db, "daily", client="other")
    assert other["totals"]["requests"] == 1 and other["rows"][0]["models"] == [HAIKU]


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}


def test_project_filter_on_a_v3_database_filters_nothing_with_a_note(db: Path, tmp_path: Path) -> None:
    """A database from before schema v4 has no sessions.project: the filter says it did nothing."""
    copy = tmp_path / "v3.db"
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    indexes = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions' AND sql IS NOT NULL"
    )]
    for column in ("project", "client"):
        if column in _columns(conn):
            for index in indexes:
                if column in index:
                    conn.execute(f"DROP INDEX IF EXISTS {index}")
            conn.execute(f"ALTER TABLE sessions DROP COLUMN {column}")
    conn.commit()
    conn.close()
    report = report_json(copy, "daily", project="lunaroute")
    assert report["totals"]["requests"] == 7
    assert any("--project filtered nothing" in note for note in report["notes"])


def test_project_and_client_columns_are_used_when_the_schema_has_them(db: Path, tmp_path: Path) -> None:
    """With sessions.project/client (schema v4) the filter applies and the stored client wins."""
    copy = tmp_path / "v4.db"
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    for column in ("project", "client"):
        if column not in _columns(conn):
            conn.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")
    conn.execute("UPDATE sessions SET project = '/home/ada/lunaroute' WHERE session_id IN ('s1', 's2')")
    conn.execute("UPDATE sessions SET client = 'Codex' WHERE session_id = 's3'")
    conn.commit()
    conn.close()
    report = report_json(copy, "session", project="lunaroute")
    assert [row["session_id"] for row in report["rows"]] == ["s1", "s2"]
    assert report["notes"] == []
    assert report_json(copy, "daily", client="codex")["totals"]["requests"] == 2


def test_breakdown_has_a_row_per_model(db: Path) -> None:
    row = report_json(db, "daily", breakdown=True)["rows"][0]
    by_model = {item["model"]: item for item in row["breakdown"]}
    assert set(by_model) == {SONNET, "gpt-5"}
    assert figures(by_model[SONNET]) == (3, 3500, 350, 200, 7000, 11050)
    assert figures(by_model["gpt-5"]) == (1, 500, 300, 0, 1000, 1800)


def test_blocks_report_boundaries_burn_rate_and_projection(db: Path) -> None:
    """
    r1 opens 12:00-17:00; r3 at 17:10 opens 17:00-22:00; r4 at 22:30 opens
    22:00-03:00; r5 09:00; r6 opens 10:00-15:00 on 07-02, which is active at
    11:00 with r6 and r7 half an hour apart.
    """
    now = datetime(2025, 7, 2, 11, 0, tzinfo=UTC)
    rows = report_json(db, "blocks", now=now)["rows"]
    assert [(row["block_start"], row["block_end"], row["requests"]) for row in rows] == [
        ("2025-06-15T12:00:00.000Z", "2025-06-15T17:00:00.000Z", 2),
        ("2025-06-15T17:00:00.000Z", "2025-06-15T22:00:00.000Z", 1),
        ("2025-06-15T22:00:00.000Z", "2025-06-16T03:00:00.000Z", 1),
        ("2025-06-16T09:00:00.000Z", "2025-06-16T14:00:00.000Z", 1),
        ("2025-07-02T10:00:00.000Z", "2025-07-02T15:00:00.000Z", 2),
    ]
    first = rows[0]
    # 10,500 tokens and $0.03 in the 30 minutes from r1 to r2.
    assert first["burn_rate"]["tokens_per_minute"] == pytest.approx(350.0)
    assert first["burn_rate"]["cost_usd_per_hour"] == pytest.approx(0.06)
    assert first["active"] is False and first["projection"] is None
    assert rows[1]["burn_rate"] is None  # a single request
    active = rows[-1]
    assert active["active"] is True
    # 60 tokens in 30 min = 2/min; $0.75 in 0.5 h = $1.50/h; 240 minutes left.
    assert active["burn_rate"]["tokens_per_minute"] == pytest.approx(2.0)
    assert active["projection"]["remaining_minutes"] == pytest.approx(240.0)
    assert active["projection"]["total_tokens"] == 60 + 2 * 240
    assert active["projection"]["cost_usd"] == pytest.approx(0.75 + 1.5 * 4)
    text = io.StringIO()
    assert run_report(args(db, "blocks", json=False), out=text, now=now) == 0
    assert "ACTIVE" in text.getvalue()
    assert "Projected at block end: 540 tokens, $6.75" in text.getvalue()
    assert "Burn rate: 2 tokens/min, $1.50/h" in text.getvalue()


# --------------------------------------------------------------------------
# Pure rules


def _row(when: datetime, tokens: int = 10, cost: float | None = 0.01, model: str = SONNET) -> UsageRow:
    return UsageRow(
        session_id="s", first=when, model=model, client="Claude Code",
        input_tokens=tokens, output_tokens=0, cache_creation_tokens=0, cache_read_tokens=0, cost_usd=cost,
    )


def test_a_block_starts_at_the_floored_hour_and_a_request_at_its_end_opens_the_next() -> None:
    start = datetime(2025, 6, 15, 9, 47, 12, tzinfo=UTC)
    rows = [
        _row(start),
        _row(datetime(2025, 6, 15, 13, 59, 59, tzinfo=UTC)),  # 09:00 + 5 h - 1 s: same block
        _row(datetime(2025, 6, 15, 14, 0, 0, tzinfo=UTC)),  # exactly the end: next block, at 14:00
        _row(datetime(2025, 6, 16, 2, 30, tzinfo=UTC)),  # after a gap: a block at 02:00, no empty ones
    ]
    blocks = split_blocks(reversed(rows))
    assert [(b.start.hour, b.group.totals.requests) for b in blocks] == [(9, 2), (14, 1), (2, 1)]
    assert blocks[0].end == datetime(2025, 6, 15, 14, 0, tzinfo=UTC)
    assert blocks[1].active(datetime(2025, 6, 15, 18, 59, tzinfo=UTC))
    assert not blocks[1].active(datetime(2025, 6, 15, 19, 0, tzinfo=UTC))


def test_dates_accept_both_forms_and_refuse_the_rest() -> None:
    assert parse_day("2025-06-15") == parse_day("20250615") == date(2025, 6, 15)
    for bad in ("2025-13-01", "15/06/2025", "yesterday", ""):
        with pytest.raises(ReportError) as info:
            parse_day(bad)
        assert info.value.status == 2


def test_day_bounds_follow_the_time_zone_including_dst() -> None:
    """Local midnights as UTC: Paris is UTC+1 in winter, UTC+2 in summer."""
    paris = ZoneInfo("Europe/Paris")
    assert day_bounds(date(2025, 1, 10), date(2025, 1, 10), paris) == (
        "2025-01-09T23:00:00.000Z", "2025-01-10T23:00:00.000Z",
    )
    # The DST change (2025-03-30) falls inside the range: it ends at UTC+2.
    assert day_bounds(date(2025, 3, 29), date(2025, 3, 30), paris) == (
        "2025-03-28T23:00:00.000Z", "2025-03-30T22:00:00.000Z",
    )
    with pytest.raises(ReportError):
        day_bounds(date(2025, 2, 1), date(2025, 1, 1), paris)


def test_the_default_time_zone_is_the_machines(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --timezone: $TZ names the zone (Tokyo, UTC+9, puts r4 at 07:30 on the 16th)."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert reports.parse_timezone(None) == ZoneInfo("Asia/Tokyo")
    report = report_json(db, "daily", timezone=None)
    assert report["timezone"] == "Asia/Tokyo"
    assert {row["date"]: row["requests"] for row in report["rows"]} == {
        "2025-06-15": 2, "2025-06-16": 3, "2025-07-02": 2,
    }


def test_period_keys() -> None:
    moment = datetime(2025, 6, 15, 23, 30, tzinfo=UTC)
    assert period_key("daily", moment, UTC) == "2025-06-15"
    assert period_key("daily", moment, ZoneInfo("Asia/Tokyo")) == "2025-06-16"
    assert period_key("weekly", moment, UTC) == "2025-06-09"
    assert period_key("weekly", moment, ZoneInfo("Asia/Tokyo")) == "2025-06-16"
    assert period_key("monthly", moment, UTC) == "2025-06"


@pytest.mark.parametrize(
    ("agent", "client"),
    [
        ("claude-cli/2.1.12 (external, sdk-cli)", "Claude Code"),
        ("claude-cli/1.0.0 (external, cli)", "Claude Code"),
        ("codex_cli_rs/0.46.0 (Ubuntu 24.4.0; x86_64) xterm-256color", "Codex"),
        ("codex_exec/0.46.0 (Mac OS 15.1.0; arm64)", "Codex"),
        ("Anthropic/Python 0.40.0", "other"),
        ("OpenAI/Python 1.50.0", "other"),
        ("curl/8.5.0", "other"),
        (None, "other"),
    ],
)
def test_client_is_derived_from_the_user_agent(agent: str | None, client: str) -> None:
    assert client_of(agent) == client


def test_bad_options_are_one_line_and_status_2(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for options in ({"timezone": "Mars/Olympus"}, {"since": "2025-02-30"}, {"client": "cursor"},
                    {"since": "2025-06-02", "until": "2025-06-01"}):
        assert run_report(args(db, **options), out=io.StringIO()) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lunaroute-server: "), lines


def test_a_missing_database_is_one_line_and_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.db"
    assert run_report(args(missing), out=io.StringIO()) == 1
    assert capsys.readouterr().err.strip() == (
        f"lunaroute-server: session database not found: {missing} (is SQLite recording on? see --db-path)"
    )
    assert not missing.exists()  # read-only: never created


def test_an_old_schema_is_one_line_asking_for_the_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A v1 database (no costs, no search index) is not upgraded by a read-only report: it says how."""
    old = tmp_path / "v1.db"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE session_stats (id INTEGER PRIMARY KEY, request_id TEXT)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    before = old.read_bytes()
    assert run_report(args(old), out=io.StringIO()) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "has schema v1, older than v2" in lines[0] and "import-sessions" in lines[0]
    assert old.read_bytes() == before


# --------------------------------------------------------------------------
# Tables: 80 columns, plain when not a terminal


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _big_rows() -> list[UsageRow]:
    """Rows with large figures and long model names, to push the table's width."""
    base = datetime(2025, 6, 15, 12, tzinfo=UTC)
    models = [SONNET, "gpt-5-codex-high-reasoning-preview-2025-09-15", OPUS]
    return [
        UsageRow(
            session_id=f"3f1c9a2e-7b4d-4e8a-9c61-2d5f8e0b7a1{i % 3}", first=base + timedelta(hours=7 * i),
            model=models[i % 3], client="Claude Code", input_tokens=123_456_789, output_tokens=9_876_543,
            cache_creation_tokens=45_678_901, cache_read_tokens=987_654_321, cost_usd=12345.678 if i % 4 else None,
        )
        for i in range(12)
    ]


@pytest.mark.parametrize("kind", reports.REPORT_KINDS)
@pytest.mark.parametrize("fancy", [False, True])
def test_every_report_fits_80_columns(kind: str, fancy: bool) -> None:
    report = build_report(kind, _big_rows(), UTC, now=datetime(2025, 6, 17, 12, tzinfo=UTC),
                          notes=["this database records no project yet; --project filtered nothing"])
    text = render_report(report, breakdown=True, width=80, fancy=fancy)
    widths = [len(reports._ANSI.sub("", line)) for line in text.splitlines()]
    assert max(widths) <= 80, text
    assert "Total" in text
    if kind == "session":  # the full id, which opens the session, is never cut
        assert "Session 3f1c9a2e-7b4d-4e8a-9c61-2d5f8e0b7a10" in text
    # Too big for exact figures in 80 columns: compact ones.
    assert "1.2B" in text or "1.5B" in text or "B" in text


def test_small_figures_are_printed_exactly(db: Path) -> None:
    out = io.StringIO()
    assert run_report(args(db, json=False), out=out) == 0
    assert "12,850" in out.getvalue() and "$0.039" in out.getvalue()
    assert "$0.789*" in out.getvalue() and reports.UNPRICED_NOTE in out.getvalue()


def test_output_that_is_not_a_terminal_is_plain_text(db: Path) -> None:
    """No box lines, no escape sequences when stdout is a file or a pipe."""
    plain = io.StringIO()
    assert run_report(args(db, "session", json=False, breakdown=True), out=plain) == 0
    text = plain.getvalue()
    assert "\x1b" not in text
    assert not set("│─┌┐└┘├┤┬┴┼") & set(text)
    assert text.isascii() or set(text) - set(map(chr, range(128))) <= {"…"}
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_terminal_gets_box_lines_within_its_width(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = _Terminal()
    assert run_report(args(db, "session", json=False, breakdown=True), out=out) == 0
    text = out.getvalue()
    assert "│" in text and "\x1b[1m" in text
    assert max(len(reports._ANSI.sub("", line)) for line in text.splitlines()) <= 80


# --------------------------------------------------------------------------
# Search


def search_args(db: Path, query: str, **options: Any) -> argparse.Namespace:
    values: dict[str, Any] = dict(
        query=query, limit=20, json=True, timezone="UTC", db_path=str(db), config=None, all=False
    )
    values.update(options)
    return argparse.Namespace(**values)


def test_search_returns_turns_with_highlighted_snippets(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("LUNAROUTE_")]:
        monkeypatch.delenv(name)
    out = io.StringIO()
    assert run_search(search_args(db, "umbrella"), out=out) == 0
    hits = json.loads(out.getvalue())["hits"]
    assert [hit["request_id"] for hit in hits] == ["r6"]
    assert hits[0]["session_id"] == "s4"
    assert "[umbrella]" in hits[0]["snippet"]
    assert hits[0]["open"] == "curl -s 'http://127.0.0.1:8081/sessions/s4'"
    # FTS5 syntax: prefix, phrase, column filter, boolean operators.
    for query, expected in [
        ("regress*", {"r2"}),
        ('"light rain"', {"r7"}),
        ("response_text: parser", {"r2", "r3"}),  # test_parser.py is two tokens
        ("parser NOT regression", {"r1", "r3"}),
        ("tokenizer OR bonjour", {"r1", "r5"}),
    ]:
        out = io.StringIO()
        assert run_search(search_args(db, query), out=out) == 0
        assert {hit["request_id"] for hit in json.loads(out.getvalue())["hits"]} == expected, query


def test_search_ranks_the_most_recent_matches_unless_asked_for_all(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the window, only the newest matching turns are ranked, and the output says so; --all ranks them all."""
    conn = reports.connect_readonly(db)
    try:
        everything = reports.query_search(conn, "parser", window=None)
        assert {hit.request_id for hit in everything.hits} == {"r1", "r2", "r3"} and not everything.windowed
        recent = reports.query_search(conn, "parser", window=2)
        assert {hit.request_id for hit in recent.hits} == {"r2", "r3"} and recent.windowed
        exact = reports.query_search(conn, "parser", window=3)
        assert len(exact.hits) == 3 and not exact.windowed
    finally:
        conn.close()
    monkeypatch.setattr(reports, "SEARCH_WINDOW", 2)
    out = io.StringIO()
    assert run_search(search_args(db, "parser", json=False), out=out) == 0
    assert "Note: more than 2 turns match" in out.getvalue() and "--all" in out.getvalue()
    out = io.StringIO()
    assert run_search(search_args(db, "parser", all=True), out=out) == 0
    answer = json.loads(out.getvalue())
    assert len(answer["hits"]) == 3 and answer["ranked_recent_only"] is False


def test_search_text_names_the_turn_and_the_command_to_open_it(db: Path) -> None:
    out = io.StringIO()
    assert run_search(search_args(db, "empty", json=False, limit=1), out=out) == 0
    text = out.getvalue()
    assert "session s1" in text and "request r" in text
    assert "[empty]" in text and "\x1b" not in text
    assert "curl -s 'http://127.0.0.1:8081/sessions/s1'" in text
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("query", ['"unbalanced', "umbrella AND", "nosuchcolumn: word", "(a OR"])
def test_a_malformed_query_is_one_line_and_status_2(db: Path, query: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_search(search_args(db, query), out=io.StringIO()) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("lunaroute-server: bad search query ")


# --------------------------------------------------------------------------
# The installed command


def _server(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNAROUTE_")}
    return subprocess.run([SERVER, *argv], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(not Path(SERVER).exists(), reason="lunaroute is not installed (pip install .)")
def test_lunaroute_server_report_daily_json(db: Path) -> None:
    result = _server("report", "daily", "--json", "--db-path", str(db), "--timezone", "UTC")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [row["date"] for row in report["rows"]] == ["2025-06-15", "2025-06-16", "2025-07-02"]
    assert report["totals"]["total_tokens"] == 13020
    assert report["totals"]["cost_usd"] == pytest.approx(0.789)
    plain = _server("report", "monthly", "--db-path", str(db), "-z", "UTC")
    assert plain.returncode == 0 and "2025-07" in plain.stdout and "\x1b" not in plain.stdout


@pytest.mark.skipif(not Path(SERVER).exists(), reason="lunaroute is not installed (pip install .)")
def test_lunaroute_server_search_and_its_errors(db: Path) -> None:
    found = _server("search", "tokenizer", "--db-path", str(db))
    assert found.returncode == 0 and "[tokenizer]" in found.stdout
    bad = _server("search", '"unbalanced', "--db-path", str(db))
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and not bad.stdout
    usage = _server("report", "hourly", "--db-path", str(db))
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    listed = _server("--help")
    assert "report" in listed.stdout and "search" in listed.stdout


@pytest.mark.skipif(not Path(SERVER).exists(), reason="lunaroute is not installed (pip install .)")
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_lunaroute_server_report_on_a_terminal_draws_boxes_within_80_columns(db: Path) -> None:
    """The same command on a (pseudo-)terminal: box lines and a bold header, still within its 80 columns."""
    controller, terminal = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNAROUTE_") and k != "NO_COLOR"}
    env.update(COLUMNS="80", LINES="24", TERM="xterm-256color")
    process = subprocess.Popen(
        [SERVER, "report", "session", "--breakdown", "--db-path", str(db), "-z", "UTC"],
        stdout=terminal, stderr=subprocess.PIPE, env=env,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=120) == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    assert "┌" in text and "│" in text and "\x1b[1m" in text
    assert max(len(reports._ANSI.sub("", line)) for line in text.splitlines()) <= 80
