"""
The read model's aggregates behind the UI's analytics and dashboard charts
(L{SessionQueries.stats_usage}, C{stats_clients}, C{stats_projects},
C{stats_durations}, C{stats_blocks}) over the sample sessions recorded by the
real writer, on both stores (SQLite and PostgreSQL: the same figures, in the
same order), and their routes on the session API.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_session_store import CC, CX, DAY, NOON, SDK, sample_exchanges
from treq.testing import StubTreq
from twisted.internet.task import Clock

from lunaroute.api.app import SessionAPI
from lunaroute.config import settings_from_mapping
from lunaroute.sessions.recorder import InlineThreadPool
from lunaroute.sessions.store import (
    STATS,
    NotFound,
    SessionFilters,
    SessionQueries,
    SessionStore,
    StatsWindow,
    _ordered,
)
from lunaroute.stats.pricing import PricingTable
from lunaroute.testing.sessions import (
    anthropic_summary,
    make_exchange,
    write_exchanges,
    write_postgres_exchanges,
)

EVERYTHING = StatsWindow()


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "sessions.db")
    write_exchanges(path, sample_exchanges())
    return path


@pytest.fixture
def q(queries_for: Any) -> SessionQueries:
    """The sample sessions in each store (conftest.py's C{queries_for})."""
    return queries_for(sample_exchanges())


def test_usage_per_hour_day_week_and_month(q: SessionQueries) -> None:
    """
    The four sample requests: one on Thursday 2025-06-12, three on Sunday
    2025-06-15 at noon (one failed).  A Sunday belongs to the week of the
    Monday before it.
    """
    usage = q.stats_usage(EVERYTHING)
    days = {d["period"]: d for d in usage["days"]}
    assert list(days) == ["2025-06-12", "2025-06-15"]
    sunday = days["2025-06-15"]
    assert (sunday["requests"], sunday["sessions"], sunday["failed_requests"]) == (3, 2, 1)
    assert sunday["success_rate"] == pytest.approx(2 / 3)
    assert sunday["cost_usd"] == pytest.approx(0.03) and sunday["priced_requests"] == 2
    assert sunday["cache_read_tokens"] == 8000 + 9500 + 4000
    assert days["2025-06-12"]["success_rate"] == 1.0
    assert [(w["period"], w["requests"]) for w in usage["weeks"]] == [("2025-06-09", 4)]
    assert [(m["period"], m["requests"], m["sessions"]) for m in usage["months"]] == [("2025-06", 4, 3)]
    assert [h["period"] for h in usage["hours"]] == ["2025-06-12T12:00", "2025-06-15T12:00"]
    assert usage["hours"][1]["avg_duration_ms"] == pytest.approx(1000.0)
    recent = q.stats_usage(StatsWindow(since="2025-06-14T00:00:00.000Z"))
    assert [d["period"] for d in recent["days"]] == ["2025-06-15"]


def test_usage_by_client_and_by_project(q: SessionQueries) -> None:
    """Grouped by the client named from the user agent and by the project the client reported; costliest first."""
    clients = q.stats_clients(EVERYTHING)["clients"]
    assert [c["client"] for c in clients] == ["Anthropic Python SDK", "Claude Code", "Codex"]
    by_client = {c["client"]: c for c in clients}
    assert by_client["Claude Code"]["requests"] == 2 and by_client["Claude Code"]["cost_usd"] == pytest.approx(0.03)
    assert by_client["Codex"]["failed_requests"] == 1 and by_client["Codex"]["cost_usd"] is None
    projects = {p["project"]: p for p in q.stats_projects(EVERYTHING)["projects"]}
    # The session's project is its latest turn's: both Claude Code turns count for it.
    assert projects["/tmp/cc-tool"]["requests"] == 2 and projects["/tmp/cx-work"]["requests"] == 1
    assert projects[None]["requests"] == 1  # the SDK session names no project


def test_duration_histogram(q: SessionQueries) -> None:
    """Three one-second requests and one of 30 s, in their buckets; every bucket listed, the last open."""
    buckets = q.stats_durations(EVERYTHING)["buckets"]
    assert buckets[0] == {"from_ms": 0, "to_ms": 1000, "requests": 0}
    assert buckets[1] == {"from_ms": 1000, "to_ms": 2000, "requests": 3}
    assert {"from_ms": 30000, "to_ms": 60000, "requests": 1} in buckets
    assert buckets[-1]["to_ms"] is None
    assert sum(b["requests"] for b in buckets) == 4


def test_five_hour_blocks(queries_for: Any) -> None:
    """
    A block starts at the whole hour of the first request after the
    previous block ended and lasts five hours; a request at its end opens
    the next one.
    """
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]}
    times = [NOON + 25 * 60, NOON + 3 * 3600, NOON + 5 * 3600, NOON + 11 * 3600]
    q = queries_for(
        [
            make_exchange("blocks", f"b-{i}", body, anthropic_summary("ok"), received=t, cost_usd=0.5)
            for i, t in enumerate(times)
        ]
    )
    blocks = q.stats_blocks(EVERYTHING)["blocks"]
    assert [(b["start"][:16], b["end"][:16], b["requests"]) for b in blocks] == [
        ("2025-06-15T12:00", "2025-06-15T17:00", 2),
        ("2025-06-15T17:00", "2025-06-15T22:00", 1),
        ("2025-06-15T23:00", "2025-06-16T04:00", 1),
    ]
    assert blocks[0]["cost_usd"] == pytest.approx(1.0) and blocks[0]["total_tokens"] == 240
    assert blocks[0]["last_request"].startswith("2025-06-15T15:00")


@pytest_twisted.ensureDeferred
async def test_new_statistics_on_the_session_api(db: str) -> None:
    """/api/stats/usage, clients, projects, durations and blocks answer with the store's figures."""
    clock = Clock()
    clock.advance(NOON + 3600)
    store = SessionStore(db, reactor=clock, threadpool=InlineThreadPool())
    settings = settings_from_mapping({}, env={})
    stub = StubTreq(SessionAPI(store, settings, clock, None, PricingTable.load(None, {})).resource())

    async def get(path: str) -> tuple[int, dict]:
        response = await stub.get("http://127.0.0.1:8082" + path)
        return response.code, json.loads(await response.content())

    code, usage = await get("/api/stats/usage")
    assert code == 200 and [w["requests"] for w in usage["weeks"]] == [4]
    code, usage = await get("/api/stats/usage?days=1")
    assert [d["period"] for d in usage["days"]] == ["2025-06-15"]
    assert (await get("/api/stats/clients"))[1]["clients"][0]["client"] == "Anthropic Python SDK"
    assert len((await get("/api/stats/projects"))[1]["projects"]) == 3
    assert sum(b["requests"] for b in (await get("/api/stats/durations"))[1]["buckets"]) == 4
    assert len((await get("/api/stats/blocks"))[1]["blocks"]) == 2
    code, error = await get("/api/stats/nope")
    assert code == 404 and "usage" in error["error"]["message"]


def test_tool_calls_of_a_session(q: SessionQueries) -> None:
    """One row per call with its request, input, duration and the request that brought the result back."""
    (call,) = q.tool_calls(CC)
    assert (call["request_id"], call["tool_name"], call["result_request_id"]) == ("cc-req-1", "Read", "cc-req-2")
    assert call["input_json"] == {"file_path": "/tmp/cc-tool/hello.txt"} and call["duration_ms"] == 1200.0
    assert q.tool_calls(SDK) == []
    with pytest.raises(NotFound):
        q.tool_calls("nope")


def test_weeks_start_on_monday_on_both_stores(queries_for: Any) -> None:
    """
    The week of a Sunday is the Monday six days before; a Monday starts its
    own; a week can start in the year before (SQLite's date(), PostgreSQL's
    date_trunc('week')).
    """
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]}
    moments = {
        "sunday": NOON,  # 2025-06-15
        "monday": NOON + DAY,  # 2025-06-16
        "new-year": 1735732800.0,  # Wednesday 2025-01-01 12:00
    }
    q = queries_for(
        [make_exchange(f"w-{n}", f"w-{n}-1", body, anthropic_summary("ok"), received=t) for n, t in moments.items()]
    )
    weeks = q.stats_usage(EVERYTHING)["weeks"]
    assert [(w["period"], w["requests"]) for w in weeks] == [("2024-12-30", 1), ("2025-06-09", 1), ("2025-06-16", 1)]


def test_ordered_sorts_as_sqlite_does() -> None:
    """NULL first ascending and last descending, text by code point, later keys break ties."""
    rows = [{"k": "bolt", "n": 1}, {"k": None, "n": 1}, {"k": "Zed", "n": 2}, {"k": "a-b", "n": None}]
    assert [r["k"] for r in _ordered(rows, "k")] == [None, "Zed", "a-b", "bolt"]
    assert [r["k"] for r in _ordered(rows, "-k")] == ["bolt", "a-b", "Zed", None]
    assert [r["k"] for r in _ordered(rows, "-n", "k")] == ["Zed", None, "bolt", "a-b"]
    assert [r["k"] for r in _ordered(rows, "n", "-k")] == ["a-b", "bolt", None, "Zed"]


# Sessions whose names sort differently by code point (SQLite) than under a
# linguistic collation, or with NULL first: the order must still be SQLite's.
TIES = ("B", "a-b", "ab", "codex")


def tie_exchanges() -> list[Any]:
    """
    One unpriced request each, all at the same moment, from clients named
    C{Zed}, C{bolt}, C{a-b} and none: every group ties on cost and count.
    """
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "tie"}]}
    agents = ("Zed/1.0", "bolt/2.0", "a-b/3", "")
    return [
        make_exchange(sid, f"tie-{i}", body, anthropic_summary("ok", model=sid), received=NOON + 600, user_agent=agent)
        for i, (sid, agent) in enumerate(zip(TIES, agents, strict=True))
    ]


def store_answers(q: SessionQueries) -> dict[str, Any]:
    """Everything the read model answers over the recorded sessions, floats rounded."""
    windows = (
        EVERYTHING,
        StatsWindow(since="2025-06-14T00:00:00.000Z"),
        StatsWindow(since="2025-06-12T00:00:00.000Z", until="2025-06-15T12:00:30.000Z"),
    )
    out: dict[str, Any] = {}
    for name, method in STATS.items():
        for index, window in enumerate(windows):
            out[f"{name}/{index}"] = getattr(q, method)(window)
    sessions, total = q.list_sessions(SessionFilters(), "last_activity", "desc", 100, 0)
    out["list"] = ([s["session_id"] for s in sessions], total)
    out["list-asc"] = [s["session_id"] for s in q.list_sessions(SessionFilters(), "started_at", "asc", 100, 0)[0]]
    for session_id in (CC, CX, SDK, *TIES):
        out[f"session/{session_id}"] = q.get_session(session_id)
        out[f"timeline/{session_id}"] = q.timeline(session_id)
        out[f"tools/{session_id}"] = q.tools(session_id)
        out[f"tool_calls/{session_id}"] = q.tool_calls(session_id)
    return rounded(out)


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


@pytest.fixture
def linguistic_dsn(postgres_server: Any) -> Any:
    """
    A database of the test server whose text collation is ICU's English
    (C{B} between C{ab} and C{codex}, punctuation ignored), as a production
    server's often is: the tests' others compare by code point.
    """
    import psycopg

    name = "lunaroute_icu"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        try:
            conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'")
        except psycopg.Error as error:
            pytest.skip(f"this PostgreSQL has no ICU collations: {error}")
        order = conn.execute(
            "SELECT x FROM (VALUES ('B'), ('ab')) AS v(x) ORDER BY x COLLATE \"en-x-icu\""
        ).fetchall()
    assert order == [("ab",), ("B",)]
    yield postgres_server.dsn(name)
    postgres_server.drop_database(postgres_server.dsn(name))


@pytest.mark.parametrize("collation", ["code point", "linguistic"])
def test_both_stores_answer_alike(tmp_path: Path, request: pytest.FixtureRequest, collation: str) -> None:
    """
    Every statistic over three windows, the session list (ties broken by
    session id) and each session's detail, timeline, tools and tool calls:
    the PostgreSQL store answers exactly as the SQLite one, whatever the
    database's collation.
    """
    from lunaroute.sessions.postgres import PgConnection, PostgresQueries, connect

    exchanges = [*sample_exchanges(), *tie_exchanges()]
    path = str(tmp_path / "sessions.db")
    write_exchanges(path, exchanges)
    sqlite_answers = store_answers(SessionQueries(sqlite3.connect(path)))
    dsn = request.getfixturevalue("postgres_dsn" if collation == "code point" else "linguistic_dsn")
    write_postgres_exchanges(dsn, exchanges)
    with connect(dsn) as conn:
        postgres_answers = store_answers(PostgresQueries(PgConnection(conn)))
    assert postgres_answers.keys() == sqlite_answers.keys()
    for key, expected in sqlite_answers.items():
        assert postgres_answers[key] == expected, key
    # The orders that differ by collation or NULL placement are SQLite's.
    clients = [c["client"] for c in sqlite_answers["clients/0"]["clients"]]
    assert clients[-5:] == [None, "Codex", "Zed", "a-b", "bolt"]
    assert sqlite_answers["list"][0][:4] == ["codex", "ab", "a-b", "B"]
