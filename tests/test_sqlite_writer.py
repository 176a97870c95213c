"""Tests for the SQLite session writer and store (lunaroute.sessions.sqlite)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_session_events import (
    NOON,
    RAW_API_KEY,
    RAW_BEARER,
    build_exchange,
    captured_summary,
    simple_summary,
)
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from lunaroute.interfaces import ISessionStore, ISessionWriter
from lunaroute.sessions import reports
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.sqlite import (
    SCHEMA_VERSION,
    USAGE_INDEX_COLUMNS,
    SchemaTooNew,
    SQLiteSessionStore,
    SQLiteWriter,
    ThreadedSessionStore,
    connect,
    fts_query,
)
from lunaroute.sessions.store import SessionStore


def session_events(session_id: str, n: int, start: float = NOON, **kwargs: Any) -> list[dict[str, Any]]:
    """Events of n consecutive exchanges of one session."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        out += exchange_events(build_exchange(session_id, received=start + 10 * i, **kwargs))
    return out


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(row) for row in conn.execute(sql, args)]
    finally:
        conn.close()


def snapshot(db: Path) -> dict[str, Any]:
    """Row counts and sums that a replay must not change."""
    return {
        "sessions": query(db, "SELECT * FROM sessions ORDER BY session_id"),
        "stats": query(db, "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM session_stats"),
        "tools": query(db, "SELECT COUNT(*) FROM tool_call_executions"),
        "streams": query(db, "SELECT COUNT(*) FROM stream_metrics"),
        "fts": query(db, "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'tokyo'"),
    }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


def write(db: Path, events: list[dict[str, Any]]) -> None:
    writer = SQLiteWriter(str(db))
    writer.write_batch(events)
    writer.close()


def test_writer_and_store_provide_their_interfaces(db: Path) -> None:
    """SQLiteWriter implements ISessionWriter; the read model's SessionStore implements ISessionStore."""
    assert verifyObject(ISessionWriter, SQLiteWriter(str(db)))
    assert verifyObject(ISessionStore, SessionStore(str(db), reactor=reactor))


def test_database_is_wal_and_at_the_current_schema(db: Path) -> None:
    """A new database is created in WAL mode with user_version = SCHEMA_VERSION."""
    writer = SQLiteWriter(str(db))
    writer.open()
    writer.close()
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    assert query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_exchanges_of_one_session_make_one_summed_session_row(db: Path) -> None:
    """Three requests of a session give one sessions row with request_count 3 and summed tokens."""
    write(db, session_events("s1", 3))
    rows = query(
        db,
        "SELECT request_count, input_tokens, output_tokens, total_tokens, cache_read_tokens, "
        "success, model_used, provider, started_at, last_activity, duration_ms FROM sessions",
    )
    assert rows == [
        (3, 3600, 240, 3840, 30, 1, "claude-sonnet-4", "anthropic",
         "2025-06-15T12:00:00.000Z", "2025-06-15T12:00:21.201Z", 21201.0)
    ]
    assert query(db, "SELECT COUNT(*) FROM session_stats") == [(3,)]


def test_the_documented_query_works_as_written(db: Path) -> None:
    """The sessions query from the issue runs unchanged and filters by model and tokens."""
    write(db, session_events("big", 1))
    write(db, session_events("small", 1, summary=simple_summary(input_tokens=10)))
    write(db, session_events("other", 1, model="gpt-5", summary=simple_summary(model="gpt-5")))
    rows = query(
        db,
        "SELECT * FROM sessions WHERE model_used = 'claude-sonnet-4' AND input_tokens > 1000 "
        "ORDER BY started_at DESC",
    )
    assert [row[0] for row in rows] == ["big"]


def test_full_text_search_finds_a_word_only_in_a_response(db: Path) -> None:
    """A word that appears only in the model's answer finds its session."""
    write(db, session_events("answered", 1, summary=simple_summary(text="The capybara is sunbathing.")))
    write(db, session_events("unrelated", 1))
    assert query(
        db,
        "SELECT session_id FROM messages_fts WHERE messages_fts MATCH 'capybara'",
    ) == [("answered",)]
    found = SQLiteSessionStore(str(db)).search("capybara")
    assert [s["session_id"] for s in found] == ["answered"]
    assert "[capybara]" in found[0]["match"]["snippet"]


def test_search_quotes_user_text(db: Path) -> None:
    """FTS syntax in user text is taken literally instead of raising."""
    write(db, session_events("s", 1))
    store = SQLiteSessionStore(str(db))
    assert store.search('weather" OR * NEAR(') == []
    assert [s["session_id"] for s in store.search("Tokyo WEATHER")] == ["s"]
    assert store.search("   ") == []
    assert fts_query('say "hi"') == '"say" """hi"""'


def test_writing_the_same_events_twice_changes_nothing(db: Path) -> None:
    """Replaying a batch (import-sessions twice) leaves counts, sums and the index unchanged."""
    events = session_events("s1", 2, summary=captured_summary("anthropic_thinking_tools.sse", "anthropic"))
    events += session_events("s2", 1, cost_usd=0.5)
    writer = SQLiteWriter(str(db))
    writer.write_batch(events)
    before = snapshot(db)
    writer.write_batch(events)
    writer.close()
    assert snapshot(db) == before
    assert before["stats"][0][0] == 3 and before["tools"] == [(4,)]
    assert query(db, "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)") == []


def test_events_split_over_batches_give_the_same_rows(db: Path, tmp_path: Path) -> None:
    """Rows depend on the events only, not on how they were batched."""
    events = session_events("s1", 3, cost_usd=0.01)
    write(db, events)
    other = tmp_path / "split.db"
    writer = SQLiteWriter(str(other))
    for i in range(0, len(events), 4):
        writer.write_batch(events[i : i + 4])
    writer.close()
    assert snapshot(other) == snapshot(db)


def test_raw_credentials_never_reach_the_database(db: Path, tmp_path: Path) -> None:
    """No database file (main, WAL) contains the raw API key or bearer token."""
    writer = SQLiteWriter(str(db))
    writer.write_batch(session_events("secret", 2))
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    writer.close()
    data += b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert RAW_API_KEY.encode() not in data
    assert RAW_BEARER.encode() not in data


def test_tool_calls_and_their_result_times_are_stored(db: Path) -> None:
    """tool_call_executions gets one row per call; a later request's tool result sets its duration."""
    summary = captured_summary("anthropic_thinking_tools.sse", "anthropic")
    first = exchange_events(build_exchange("tools", received=NOON, summary=summary))
    results = [{"tool_call_id": "toolu_01A09q90qw90lq917835lq9", "tool_name": "get_weather", "duration_ms": 1500.0}]
    second_exchange = build_exchange("tools", received=NOON + 5, tool_results=results)
    write(db, first)
    write(db, exchange_events(second_exchange))
    rows = query(
        db,
        "SELECT call_index, tool_name, tool_call_id, input_json, duration_ms, result_request_id "
        "FROM tool_call_executions ORDER BY call_index",
    )
    assert rows == [
        (0, "get_weather", "toolu_01A09q90qw90lq917835lq9", '{"location":"Tokyo, JP","unit":"celsius"}',
         1500.0, second_exchange.request_id),
        (1, "get_weather", "toolu_01B7aXgQkxB3nR8M2pZ4c6Yv", '{"location":"Paris, FR","unit":"celsius"}',
         None, None),
    ]
    assert query(db, "SELECT tool_call_count FROM sessions") == [(2,)]
    assert query(db, "SELECT tool_name, call_count, timed_count FROM tool_stats") == [("get_weather", 2, 1)]


def test_costs_are_summed_and_flagged_incomplete_when_unknown(db: Path) -> None:
    """estimated_cost_usd sums known costs; cost_complete is 0 once any cost is unknown."""
    write(db, session_events("priced", 2, cost_usd=0.25))
    write(db, exchange_events(build_exchange("mixed", cost_usd=0.1)) + exchange_events(build_exchange("mixed")))
    assert query(db, "SELECT session_id, estimated_cost_usd, cost_complete FROM sessions ORDER BY 1") == [
        ("mixed", 0.1, 0),
        ("priced", 0.5, 1),
    ]
    assert query(db, "SELECT COUNT(*) FROM session_stats WHERE estimated_cost_usd = 0.25") == [(2,)]


def test_stream_metrics_and_latencies_are_recorded(db: Path) -> None:
    """Streaming requests get a stream_metrics row; session_stats keeps the latencies."""
    write(db, session_events("stream", 1))
    assert query(db, "SELECT ttft_ms, chunk_count, bytes_out, chunk_gap_max_ms FROM stream_metrics") == [
        (350.0, 14, 4096, 50.0)
    ]
    assert query(db, "SELECT ttft_ms, provider_ms, pre_proxy_ms, proxy_overhead_ms, status, stop_reason "
                     "FROM session_stats") == [(350.0, 1198.0, 2.0, 3.0, 200, "end_turn")]


def test_failed_request_makes_the_session_unsuccessful(db: Path) -> None:
    """success is 1 only when every request of the session succeeded."""
    failed = build_exchange("flaky", received=NOON + 5, status=529, outcome="upstream_error")
    write(db, exchange_events(build_exchange("flaky")) + exchange_events(failed))
    assert query(db, "SELECT success, request_count FROM sessions") == [(0, 2)]


def test_old_schema_is_upgraded_in_place_keeping_data(db: Path) -> None:
    """A version-1 database gains the cost columns and search index on open; its rows survive and are searchable."""
    conn = connect(str(db), target=1)
    conn.execute(
        "INSERT INTO session_stats (request_id, session_id, started_at, model_used, input_tokens, "
        "output_tokens, request_text, response_text) VALUES ('r-old', 'old', "
        "'2025-01-01T00:00:00.000Z', 'claude-sonnet-4', 2000, 10, 'legacy question', 'ancient wombat')"
    )
    conn.execute(
        "INSERT INTO sessions (session_id, started_at, model_used, request_count, input_tokens, output_tokens) "
        "VALUES ('old', '2025-01-01T00:00:00.000Z', 'claude-sonnet-4', 1, 2000, 10)"
    )
    conn.close()
    assert query(db, "PRAGMA user_version") == [(1,)]

    writer = SQLiteWriter(str(db))
    writer.open()
    assert query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(db, "SELECT session_id FROM messages_fts WHERE messages_fts MATCH 'wombat'") == [("old",)]
    writer.write_batch(session_events("new", 1, cost_usd=0.02))
    writer.close()
    assert query(db, "SELECT session_id, total_tokens, estimated_cost_usd FROM sessions ORDER BY 1") == [
        ("new", 1280, 0.02),
        ("old", 2010, None),
    ]


def test_newer_schema_is_refused(db: Path) -> None:
    """A database from a newer LunaRoute is not touched: writing raises SchemaTooNew."""
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew):
        SQLiteWriter(str(db)).write_batch(session_events("s", 1))


def _usage_plan(db: Path, **bounds: str) -> list[str]:
    """The query plan of the usage report's query (as lunaroute-server report runs it)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    executed: list[str] = []
    conn.set_trace_callback(executed.append)
    try:
        rows, _ = reports.query_usage_rows(conn, **bounds)
        conn.set_trace_callback(None)
        assert rows
        (sql,) = [s for s in executed if "GROUP BY" in s]
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    finally:
        conn.close()


def test_usage_report_reads_the_covering_index_not_the_request_rows(db: Path) -> None:
    """
    Schema 5: the report's scan of session_stats (alias s) is answered from
    session_stats_usage alone, with or without a time range, so it never
    reads the rows and their bodies.
    """
    write(db, session_events("s", 3, cost_usd=0.01))
    for bounds in ({}, {"low": "2000-01-01T00:00:00.000Z", "high": "2100-01-01T00:00:00.000Z"}):
        plan = _usage_plan(db, **bounds)
        on_requests = [step for step in plan if step.startswith(("SCAN s ", "SEARCH s ")) or step == "SCAN s"]
        assert on_requests, plan
        assert all("COVERING INDEX session_stats_usage" in step for step in on_requests), plan
    columns = [r[0] for r in query(db, "SELECT name FROM pragma_index_info('session_stats_usage') ORDER BY seqno")]
    assert columns == list(USAGE_INDEX_COLUMNS) and columns[0] == "started_at"
    # It replaces the v4 index on started_at alone (a prefix of it).
    assert query(db, "SELECT name FROM sqlite_master WHERE name = 'session_stats_started_at'") == []


def _fts_sql(db: Path) -> str:
    return str(query(db, "SELECT sql FROM sqlite_master WHERE name = 'messages_fts'")[0][0])


def test_search_index_keeps_prefix_indexes(db: Path) -> None:
    """Schema 5: the FTS5 table has 2-, 3- and 4-character prefix indexes; prefix queries match as before."""
    write(db, session_events("s", 2))
    assert re.search(r"prefix\s*=\s*'2 3 4'", _fts_sql(db))
    for prefix in ("to*", "tok*", "tokyo*"):
        assert query(db, "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH ?", prefix) == [(2,)], prefix
    assert query(db, "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)") == []


def test_schema_4_database_is_upgraded_to_5_keeping_rows_and_search(tmp_path: Path) -> None:
    """
    A v4 database gains the usage index and a search index rebuilt with
    prefix indexes from the stored text; no row changes, every word is
    found again, and the writer goes on writing.
    """
    current = tmp_path / "current.db"
    write(current, session_events("s", 3, cost_usd=0.01) + session_events("t", 2, start=NOON + 500))
    old = tmp_path / "old.db"
    conn = connect(str(old), target=4)
    conn.execute("ATTACH ? AS cur", (str(current),))
    for table in ("sessions", "session_stats", "tool_call_executions", "stream_metrics"):
        names = ", ".join(r[1] for r in conn.execute(f"PRAGMA main.table_xinfo({table})") if r[6] == 0)
        conn.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM cur.{table}")
    conn.execute("DETACH cur")
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    conn.close()
    assert query(old, "PRAGMA user_version") == [(4,)]
    assert "prefix" not in _fts_sql(old)
    assert query(old, "SELECT name FROM sqlite_master WHERE name = 'session_stats_started_at'") != []
    before = snapshot(old)
    assert before["fts"] == [(5,)]

    connect(str(old)).close()

    assert query(old, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert snapshot(old) == before
    assert re.search(r"prefix\s*=\s*'2 3 4'", _fts_sql(old))
    assert query(old, "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'tok*'") == [(5,)]
    assert query(old, "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)") == []
    assert query(old, "SELECT name FROM sqlite_master WHERE name = 'session_stats_started_at'") == []
    assert query(old, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'session_stats_usage'") == [(1,)]
    write(old, session_events("u", 1, start=NOON + 900))
    assert query(old, "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'tok*'") == [(6,)]


def test_malformed_events_are_skipped(db: Path) -> None:
    """Events without ids or with unknown types are ignored rather than failing the batch."""
    events = [{"type": "started"}, {"type": "stats_snapshot", "session_id": "s", "request_id": "r"}, "junk"]
    write(db, events + session_events("ok", 1))  # type: ignore[operator]
    assert query(db, "SELECT session_id FROM sessions") == [("ok",)]


def test_store_lists_and_reads_sessions(db: Path) -> None:
    """list_sessions is newest first; get_session returns requests (bodies only on request) and tool calls."""
    write(db, session_events("older", 1, start=NOON))
    write(db, session_events("newer", 2, start=NOON + 100,
                             summary=captured_summary("anthropic_thinking_tools.sse", "anthropic")))
    store = SQLiteSessionStore(str(db))
    assert [s["session_id"] for s in store.list_sessions(10, 0)] == ["newer", "older"]
    assert [s["session_id"] for s in store.list_sessions(1, 1)] == ["older"]
    session = store.get_session("newer")
    assert session is not None
    assert len(session["requests"]) == 2
    assert "request_json" not in session["requests"][0]
    assert session["requests"][0]["tools_offered"] == ["get_weather"]
    assert len(session["tool_calls"]) == 4
    full = store.get_session("newer", include_bodies=True)
    assert full is not None and full["requests"][0]["request_json"]["model"] == "claude-sonnet-4"
    request = store.get_request(full["requests"][0]["request_id"])
    assert request is not None and request["response_json"]["stop_reason"] == "tool_use"
    assert store.get_session("missing") is None


@pytest_twisted.inlineCallbacks
def test_threaded_store_answers_with_deferreds(db: Path) -> Any:
    """ThreadedSessionStore runs the queries in a thread and fires with their results."""
    write(db, session_events("async", 1))
    store = ThreadedSessionStore(SQLiteSessionStore(str(db)), reactor=reactor)
    sessions = yield store.list_sessions(10, 0)
    assert [s["session_id"] for s in sessions] == ["async"]
    found = yield store.search("Tokyo", 5)
    assert [s["session_id"] for s in found] == ["async"]
    session = yield store.get_session("async")
    assert session["request_count"] == 1


def test_nan_and_infinity_in_a_request_are_stored_as_strict_json(tmp_path: Path) -> None:
    """request_json with NaN/Infinity is stored so SQLite's JSON functions and strict parsers read it."""
    import json

    exchange = build_exchange("nan")
    exchange.request_json = json.loads('{"model":"m","temperature":NaN,"stop":[Infinity]}')
    db = tmp_path / "s.db"
    writer = SQLiteWriter(str(db))
    writer.write_batch(exchange_events(exchange))
    writer.close()
    conn = sqlite3.connect(db)
    stored, valid, temperature = conn.execute(
        "SELECT request_json, json_valid(request_json), json_extract(request_json, '$.temperature') "
        "FROM session_stats"
    ).fetchone()
    conn.close()

    def refuse(name: str) -> Any:
        raise ValueError(name)

    assert json.loads(stored, parse_constant=refuse) == {"model": "m", "temperature": None, "stop": [None]}
    assert valid == 1 and temperature is None


# --------------------------------------------------------------------------
# Constant cost per batch, and session rows kept by difference


def _shape(statement: str) -> str:
    """A traced statement with its literal values (ids, texts, numbers) replaced by C{?}."""
    statement = re.sub(r"'(?:[^']|'')*'", "?", statement)
    return re.sub(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", "?", statement)


def traced_batch(writer: SQLiteWriter, events: list[dict[str, Any]], work: list[int] | None = None) -> list[str]:
    """
    The shapes of the statements one write_batch issues, in order; the
    number of SQLite virtual machine instructions they ran is appended to
    C{work}.
    """
    statements: list[str] = []
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    conn = writer.connection()
    conn.set_trace_callback(statements.append)
    conn.set_progress_handler(step, 1)
    try:
        writer.write_batch(events)
    finally:
        conn.set_trace_callback(None)
        conn.set_progress_handler(None, 1)
    if work is not None:
        work.append(steps[0])
    return [_shape(s) for s in statements]


def test_statements_per_batch_do_not_depend_on_session_length(tmp_path: Path) -> None:
    """
    A batch into a 2,000-request session issues the same statements, as
    many, as the same batch into a 10-request one: nothing reads the
    session's other requests.
    """
    writer = SQLiteWriter(str(tmp_path / "s.db"))
    writer.write_batch(session_events("short", 10))
    for chunk in range(0, 2000, 250):
        writer.write_batch(session_events("long", 250, start=NOON + 10 * chunk))
    assert query(tmp_path / "s.db", "SELECT request_count FROM sessions ORDER BY session_id") == [(2000,), (10,)]

    later = NOON + 100_000
    summary = captured_summary("anthropic_thinking_tools.sse", "anthropic")

    def one_exchange(session_id: str) -> list[dict[str, Any]]:
        return exchange_events(build_exchange(session_id, received=later, summary=summary, cost_usd=0.01))

    into_short, into_long = one_exchange("short"), one_exchange("long")
    work: list[int] = []
    short_statements = traced_batch(writer, into_short, work)
    long_statements = traced_batch(writer, into_long, work)
    assert long_statements == short_statements
    # And SQLite does the same work for both (not a scan of 2,000 rows).
    short_work, long_work = work
    assert abs(long_work - short_work) <= short_work // 20, work
    assert any(s.startswith("INSERT INTO session_stats") for s in short_statements)
    assert not any("WITH reqs" in s for s in short_statements)
    # Replaying an existing request (the update path) is just as constant.
    assert traced_batch(writer, into_long) == traced_batch(writer, into_short)
    writer.close()
    assert query(tmp_path / "s.db", "SELECT request_count FROM sessions ORDER BY session_id") == [(2001,), (11,)]


def _sessions(db: Path) -> list[tuple[Any, ...]]:
    rows = query(db, "SELECT * FROM sessions ORDER BY session_id")
    # Costs are summed in another order by the recomputation.
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


def test_incremental_session_rows_equal_a_full_recomputation(tmp_path: Path) -> None:
    """
    Sessions built batch by batch (requests split across batches, replays,
    failures, unknown costs, tool calls, a request moved to another session,
    a start time rewritten) equal what recomputing them from all their
    requests gives.
    """
    db = tmp_path / "s.db"
    summary = captured_summary("anthropic_thinking_tools.sse", "anthropic")
    events: list[dict[str, Any]] = []
    for i in range(30):
        exchange = build_exchange(
            f"s{i % 4}",
            received=NOON + 7 * ((i * 13) % 30),  # not in time order
            summary=summary if i % 3 == 0 else simple_summary(input_tokens=100 + i),
            cost_usd=None if i % 5 == 0 else 0.001 * (i + 1),
            status=529 if i % 7 == 3 else 200,
            outcome="upstream_error" if i % 7 == 3 else "ok",
            model="claude-opus-4" if i % 2 else "claude-sonnet-4",
        )
        events += exchange_events(exchange)
    writer = SQLiteWriter(str(db))
    for start in range(0, len(events), 9):  # batches cut through requests
        writer.write_batch(events[start : start + 9])
    writer.write_batch(events[20:60])  # a replay
    moved = [dict(e, session_id="s-moved") for e in events if e["request_id"] == events[0]["request_id"]]
    writer.write_batch(moved)
    rewritten = [dict(e, timestamp="2025-06-15T11:00:00.000Z") for e in events[7:12] if e["type"] == "started"]
    writer.write_batch(rewritten)
    incremental = _sessions(db)
    assert len(incremental) == 5
    writer.recompute_sessions()
    writer.close()
    assert _sessions(db) == incremental
