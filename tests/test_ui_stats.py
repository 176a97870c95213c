"""
The read model's aggregates behind the UI's analytics and dashboard charts
(L{SessionQueries.stats_usage}, C{stats_clients}, C{stats_projects},
C{stats_durations}, C{stats_blocks}) over the sample sessions recorded by the
real writer, and their routes on the session API.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import pytest_twisted
from test_session_store import CC, NOON, SDK, sample_exchanges
from treq.testing import StubTreq
from twisted.internet.task import Clock

from lunaroute.api.app import SessionAPI
from lunaroute.config import settings_from_mapping
from lunaroute.sessions.recorder import InlineThreadPool
from lunaroute.sessions.store import NotFound, SessionQueries, SessionStore, StatsWindow
from lunaroute.stats.pricing import PricingTable
from lunaroute.testing.sessions import anthropic_summary, make_exchange, write_exchanges

EVERYTHING = StatsWindow()


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "sessions.db")
    write_exchanges(path, sample_exchanges())
    return path


@pytest.fixture
def q(db: str) -> SessionQueries:
    return SessionQueries(sqlite3.connect(db), jsonl_dir=None)


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


def test_five_hour_blocks(tmp_path: Path) -> None:
    """
    A block starts at the whole hour of the first request after the
    previous block ended and lasts five hours; a request at its end opens
    the next one.
    """
    path = str(tmp_path / "blocks.db")
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]}
    times = [NOON + 25 * 60, NOON + 3 * 3600, NOON + 5 * 3600, NOON + 11 * 3600]
    write_exchanges(
        path,
        [
            make_exchange("blocks", f"b-{i}", body, anthropic_summary("ok"), received=t, cost_usd=0.5)
            for i, t in enumerate(times)
        ],
    )
    blocks = SessionQueries(sqlite3.connect(path)).stats_blocks(EVERYTHING)["blocks"]
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
