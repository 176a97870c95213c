"""
The read model (lunaroute.sessions.store) and the schema version 4 columns
it reads, over sessions recorded from real Claude Code and Codex request
bodies (tests/fixtures/clients).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from lunaroute.sessions.events import client_name, request_facts
from lunaroute.sessions.recorder import InlineThreadPool
from lunaroute.sessions.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteWriter, connect, migrate
from lunaroute.sessions.store import (
    BadParameter,
    NotFound,
    SessionFilters,
    SessionQueries,
    SessionStore,
    StatsWindow,
    StoreUnavailable,
    to_fts_query,
)
from lunaroute.testing.exchanges import make_exchange as plain_exchange
from lunaroute.testing.sessions import anthropic_summary, make_exchange, write_exchanges

FIXTURES = Path(__file__).parent / "fixtures" / "clients"
CC_FIRST = json.loads((FIXTURES / "claude_code_messages_request.json").read_text())
CC_TOOL = json.loads((FIXTURES / "claude_code_messages_tool_result_request.json").read_text())
CODEX = json.loads((FIXTURES / "codex_responses_request.json").read_text())

# 2025-06-15T12:00:00Z
NOON = 1749988800.0
DAY = 86400.0

CC = "b4806849-c459-45f9-830c-3b20ea333b4c"
CX = "01a209fa-cab1-7fe2-865f-0032e4e56790"
SDK = "sdk-session-1"


def record_sample(db_path: str) -> None:
    """
    Three sessions: a two-turn Claude Code session with a Read tool call and
    its result, a failed Codex turn, and an SDK session three days older.
    """
    write_exchanges(db_path, sample_exchanges())


def sample_exchanges() -> list[Any]:
    return (
        [
            make_exchange(
                CC, "cc-req-1", CC_FIRST,
                anthropic_summary(
                    "Let me read the capybara notes.", thinking="the user wants the hello file",
                    input_tokens=10, output_tokens=30, cache_read=8000, cache_write=1500, cache_write_1h=500,
                    tool_calls=[("toolu_7b822992361b4217a664682a", "Read", {"file_path": "/tmp/cc-tool/hello.txt"})],
                    stop_reason="tool_use",
                ),
                received=NOON, cost_usd=0.01,
            ),
            make_exchange(
                CC, "cc-req-2", CC_TOOL,
                anthropic_summary("The file greets you: hello.", input_tokens=20, output_tokens=10, cache_read=9500),
                received=NOON + 5, cost_usd=0.02,
                tool_results=[{"tool_call_id": "toolu_7b822992361b4217a664682a", "tool_name": "Read",
                               "duration_ms": 1200.0}],
            ),
            make_exchange(
                CX, "cx-req-1", CODEX,
                anthropic_summary("TypeError: undefined is not a function", model="gpt-5.5", input_tokens=5000,
                                  output_tokens=50, cache_read=4000, dialect="openai_responses"),
                received=NOON + 60, user_agent="codex_exec/0.169.0 (Debian 12.0.0; x86_64) dumb",
                dialect="openai_responses", provider="openai", status=500, outcome="upstream_error",
                error="server overloaded", error_type="overloaded_error", cost_usd=None,
            ),
            make_exchange(
                SDK, "sdk-req-1",
                {"model": "claude-haiku-4", "max_tokens": 10,
                 "messages": [{"role": "user", "content": "translate wombat to French"}]},
                anthropic_summary("wombat", model="claude-haiku-4", input_tokens=90000, output_tokens=100),
                received=NOON - 3 * DAY, user_agent="Anthropic/Python 0.40.0", cost_usd=0.5, duration=30.0,
            ),
        ]
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "sessions.db")
    record_sample(path)
    return path


@pytest.fixture
def q(queries_for: Any) -> SessionQueries:
    return queries_for(sample_exchanges())


def on_postgres(q: SessionQueries) -> bool:
    return type(q).__name__ == "PostgresQueries"


def row(db: str, sql: str, *args: Any) -> tuple[Any, ...]:
    conn = sqlite3.connect(db)
    try:
        return tuple(conn.execute(sql, args).fetchone())
    finally:
        conn.close()


# -- the write side ----------------------------------------------------------


def test_client_names_come_from_the_user_agent() -> None:
    """Claude Code, Codex, the SDKs by their user agents; anything else by its product token."""
    assert client_name("claude-cli/2.1.197 (external, sdk-cli)") == "Claude Code"
    assert client_name("codex_exec/0.169.0 (Debian 12.0.0; x86_64) dumb (codex_exec; 0.169.0)") == "Codex"
    assert client_name("codex_cli_rs/0.50.0") == "Codex"
    assert client_name("Anthropic/Python 0.40.0") == "Anthropic Python SDK"
    assert client_name("OpenAI/Python 1.50.0") == "OpenAI Python SDK"
    assert client_name("curl/8.5.0") == "curl"
    assert client_name(None) is None and client_name("  ") is None


def test_project_and_title_from_real_claude_code_and_codex_bodies() -> None:
    """Claude Code's 'Primary working directory' and Codex's <cwd>; the title skips injected context."""
    cc = request_facts(CC_FIRST)
    assert cc["project"] == "/tmp/cc-work"
    assert cc["title"] == "say hi"
    assert cc["system_sha256"] and len(cc["system_sha256"]) == 64
    assert cc["tools_sha256"] and cc["tools_sha256"] != cc["system_sha256"]
    codex = request_facts(CODEX)
    assert codex["project"] == "/tmp/cx-work"
    assert codex["title"] == "say hi"
    assert codex["system_sha256"]  # the developer messages
    # The same system prompt and tools hash the same on the next turn.
    assert request_facts(CC_TOOL)["tools_sha256"] == cc["tools_sha256"]
    old = request_facts({"system": "Working directory: /home/me/app", "messages": [{"role": "user", "content": "x" * 300}]})
    assert old["project"] == "/home/me/app"
    assert len(old["title"]) == 120 and old["title"].endswith("…")


def test_prompt_and_tool_hashes_change_only_with_the_content() -> None:
    """Equal values hash equal (also after a JSON round trip, as import-sessions reads them); an edit changes them."""
    facts = request_facts(CC_FIRST)
    again = request_facts(json.loads(json.dumps(CC_FIRST, indent=1)))
    assert (again["system_sha256"], again["tools_sha256"]) == (facts["system_sha256"], facts["tools_sha256"])
    edited = json.loads(json.dumps(CC_FIRST))
    edited["tools"][0]["description"] += " (changed)"
    edited["system"][-1]["text"] += "\nOne more rule."
    changed = request_facts(edited)
    assert changed["tools_sha256"] != facts["tools_sha256"]
    assert changed["system_sha256"] != facts["system_sha256"]
    assert request_facts({"messages": []})["tools_sha256"] is None


def test_tool_results_are_only_those_after_the_last_assistant_turn() -> None:
    """The tool result text is what this request brings back, with the errors it marks."""
    facts = request_facts(CC_TOOL)
    assert "hello from the file" in facts["tool_result_text"]
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "old", "content": "stale"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                                          "content": [{"type": "text", "text": "permission denied"}]}]},
        ]
    }
    facts = request_facts(body)
    assert facts["tool_result_text"] == "permission denied"
    assert facts["tool_error_ids"] == ["t1"]


def test_request_text_is_what_the_turn_adds() -> None:
    """System prompt with the first turn only, then the user text after the last assistant turn."""
    from lunaroute.sessions.events import request_text

    first = request_text(CC_FIRST)
    assert "Harness" in first and "say hi" in first
    assert request_text(CC_TOOL) == ""  # only a tool result: that is tool_result_text
    second = {
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "explain the zebra stripes"},
            {"role": "assistant", "content": "camouflage"},
            {"role": "user", "content": "more"},
        ],
    }
    assert request_text(second) == "more"
    prefill = {"messages": [*second["messages"], {"role": "assistant", "content": "Stripes"}]}
    assert request_text(prefill) == "more"
    codex_next = dict(CODEX, input=[*CODEX["input"], {"type": "function_call", "name": "shell", "arguments": "{}"},
                                    {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]}])
    assert request_text(codex_next) == "thanks"


def test_a_word_is_indexed_with_the_turn_that_brought_it(q: SessionQueries) -> None:
    """The system prompt and first message hit the first turn only, not every later turn resending them."""
    assert [h["request_id"] for h in q.search("Harness", 10)] == ["cc-req-1"]


def test_per_turn_columns_of_schema_4(db: str) -> None:
    """Cache writes by lifetime, context, hit ratio, error type, hashes, client, project, title, per turn."""
    got = row(
        db,
        "SELECT cache_creation_5m_tokens, cache_creation_1h_tokens, context_tokens, cache_hit_ratio, "
        "estimated_cost_usd, stop_reason, client, project, title, system_sha256 IS NOT NULL "
        "FROM session_stats WHERE request_id = 'cc-req-1'",
    )
    assert got == (1000, 500, 10 + 8000 + 1500, pytest.approx(8000 / 9510), 0.01, "tool_use", "Claude Code",
                   "/tmp/cc-work", "say hi", 1)
    # OpenAI's input already holds the cached tokens.
    assert row(db, "SELECT context_tokens, error_type, error FROM session_stats WHERE request_id = 'cx-req-1'") == (
        5000, "overloaded_error", "overloaded_error: server overloaded")
    # The two fixture turns were captured in different folders: the session
    # shows the latest one, its title comes from the first turn.
    assert row(db, "SELECT project FROM session_stats WHERE request_id = 'cc-req-2'") == ("/tmp/cc-tool",)
    assert row(db, "SELECT client, project, title, cache_creation_1h_tokens FROM sessions WHERE session_id = ?", CC) == (
        "Claude Code", "/tmp/cc-tool", "say hi", 500)
    assert row(db, "SELECT client, project FROM sessions WHERE session_id = ?", CX) == ("Codex", "/tmp/cx-work")
    assert row(db, "SELECT client, title FROM sessions WHERE session_id = ?", SDK) == (
        "Anthropic Python SDK", "translate wombat to French")


def test_session_columns_by_difference_equal_a_recomputation(db: str) -> None:
    """The incremental client/project/title/1h sums are what recomputing from the requests gives."""
    before = sqlite3.connect(db).execute("SELECT * FROM sessions ORDER BY session_id").fetchall()
    writer = SQLiteWriter(db)
    writer.recompute_sessions()
    writer.close()
    assert sqlite3.connect(db).execute("SELECT * FROM sessions ORDER BY session_id").fetchall() == before


def test_every_recorded_word_is_searchable(q: SessionQueries) -> None:
    """User text, system prompt, assistant text, thinking, tool inputs and tool results all hit."""
    for word, request in (
        ("capybara", "cc-req-1"),  # assistant text
        ('"hello file"', "cc-req-1"),  # thinking
        ('"cc-tool/hello.txt"', "cc-req-1"),  # tool input
        ('"hello from the file"', "cc-req-2"),  # tool result
        ("wombat", "sdk-req-1"),  # user text (and the answer)
        ("Harness", "cc-req-1"),  # Claude Code's system prompt
    ):
        hits = q.search(word, 10)
        assert request in [h["request_id"] for h in hits], word


def test_search_hits_carry_escaped_highlighted_snippets_and_rank(q: SessionQueries) -> None:
    """Each hit names session and request, a snippet with <mark> (HTML-escaped) and a bm25 rank."""
    hits = q.search("TypeError", 5)
    assert [h["session_id"] for h in hits] == [CX]
    hit = hits[0]
    assert "<mark>TypeError</mark>" in hit["snippet"]
    assert "[TypeError]" in hit["snippet_text"]
    assert isinstance(hit["rank"], float)
    assert hit["title"] == "say hi" and hit["client"] == "Codex"


def test_fts_syntax_phrases_prefixes_operators_and_columns(q: SessionQueries) -> None:
    """FTS5 syntax works as documented: phrase, prefix*, AND/OR/NOT, column filter."""
    ids = lambda text: {h["request_id"] for h in q.search(text, 50)}  # noqa: E731
    assert ids('"greets you"') == {"cc-req-2"}
    assert "cc-req-1" in ids("capyb*")
    assert ids("wombat AND French") == {"sdk-req-1"}
    assert {"sdk-req-1", "cx-req-1"} <= ids("wombat OR TypeError")
    assert "cc-req-2" not in ids("hello NOT greets")
    if on_postgres(q):
        # No per-column index in PostgreSQL: a column filter says so.
        with pytest.raises(BadParameter, match="column filters"):
            q.search("response_text: capybara", 5)
    else:
        assert ids("response_text: capybara") == {"cc-req-1"}
        assert ids("tool_result_text: hello") == {"cc-req-2"}
    # Plain text with punctuation FTS5 refuses is quoted word by word.
    assert ids("TypeError: undefined") == {"cx-req-1"}
    assert to_fts_query("foo.py bar") == '"foo.py" "bar"'


def test_search_ranks_the_most_recent_matches_with_a_snippet_per_hit(queries_for: Any) -> None:
    """
    A search ranks among the window's most recently recorded matches
    (bm25's cost stays bounded however many turns match), every match with
    window=None; each hit of a prefix query has its own snippet.
    """
    old = plain_exchange("old", NOON, request_id="old-1", user_text="zebra zebra zebra zebra zebra", answer="ok")
    new = [
        plain_exchange("new", NOON + 60 * i, request_id=f"new-{i}", user_text=f"a zebra crossing number{i}",
                       answer="the road is long and wide and zebras cross it slowly " * 3)
        for i in range(1, 4)
    ]
    q = queries_for([old, *new])
    assert [h["request_id"] for h in q.search("zebra", 10, window=None)][0] == "old-1"
    assert {h["request_id"] for h in q.search("zebra", 10, window=3)} == {"new-1", "new-2", "new-3"}
    assert {h["request_id"] for h in q.search("zebra", 10, window=10)} == {"old-1", "new-1", "new-2", "new-3"}
    hits = q.search("numb*", 10)
    assert sorted((h["request_id"], h["snippet_text"].count("[number")) for h in hits) == [
        ("new-1", 1), ("new-2", 1), ("new-3", 1)]
    assert all(f"[number{h['request_id'][-1]}]" in h["snippet_text"] for h in hits)


def test_malformed_search_query_names_the_problem(q: SessionQueries) -> None:
    """An unbalanced quote or an unknown column is a BadParameter, not a crash."""
    with pytest.raises(BadParameter) as caught:
        q.search('"unbalanced', 5)
    assert caught.value.param == "q" and "malformed search query" in caught.value.message
    with pytest.raises(BadParameter) as caught:
        q.list_sessions(SessionFilters(text_search="wombat AND (x"))
    assert caught.value.param == "text_search"


def test_list_filters_sorts_and_counts(q: SessionQueries) -> None:
    """Filters combine; the total counts all matches; sorts order as asked."""
    rows, total = q.list_sessions(SessionFilters())
    assert total == 3 and [r["session_id"] for r in rows] == [CX, CC, SDK]
    assert rows[1]["metadata"] == {"client": "Claude Code", "project": "/tmp/cc-tool", "title": "say hi"}
    assert q.list_sessions(SessionFilters(client="Codex"))[1] == 1
    assert q.list_sessions(SessionFilters(project="/tmp/cc-tool"))[0][0]["session_id"] == CC
    assert q.list_sessions(SessionFilters(project="/tmp/cc-work"))[1] == 0
    assert q.list_sessions(SessionFilters(success=False))[0][0]["session_id"] == CX
    assert q.list_sessions(SessionFilters(model="claude-haiku-4"))[0][0]["session_id"] == SDK
    assert q.list_sessions(SessionFilters(provider="openai"))[1] == 1
    assert q.list_sessions(SessionFilters(ranges={"input_tokens": (1000, None)}))[1] == 2
    assert q.list_sessions(SessionFilters(ranges={"cost": (0.02, 0.05)}))[0][0]["session_id"] == CC
    assert q.list_sessions(SessionFilters(ranges={"duration_ms": (None, 10_000)}))[1] == 2
    assert q.list_sessions(SessionFilters(text_search="TypeError"))[0][0]["session_id"] == CX
    since = StatsWindow(since="2025-06-14T00:00:00.000Z")
    assert {r["session_id"] for r in q.list_sessions(SessionFilters(window=since))[0]} == {CC, CX}
    rows, _ = q.list_sessions(SessionFilters(), sort="total_tokens", order="desc")
    assert [r["session_id"] for r in rows] == [SDK, CX, CC]
    rows, _ = q.list_sessions(SessionFilters(), sort="cost", order="asc")
    assert [r["session_id"] for r in rows] == [CC, SDK, CX]  # no cost last
    rows, total = q.list_sessions(SessionFilters(), sort="started_at", order="asc", limit=1, offset=1)
    assert total == 3 and [r["session_id"] for r in rows] == [CC]
    assert q.list_sessions(SessionFilters(), limit=5, offset=10) == ([], 3)
    for bad in (dict(sort="size"), dict(order="up")):
        with pytest.raises(BadParameter):
            q.list_sessions(SessionFilters(), **bad)  # type: ignore[arg-type]
    with pytest.raises(BadParameter) as caught:
        q.list_sessions(SessionFilters(ranges={"session_id": (1, None)}))
    assert caught.value.param == "min_session_id"


def test_detail_timeline_raw_and_tools(q: SessionQueries) -> None:
    """A session's turns, its ordered timeline, a raw request (masked) and per-tool figures."""
    session = q.get_session(CC)
    assert [r["request_id"] for r in session["requests"]] == ["cc-req-1", "cc-req-2"]
    assert "request_json" not in session["requests"][0]
    events = q.timeline(CC)
    assert [(e["type"], e["request_id"]) for e in events] == [
        ("request", "cc-req-1"), ("tool_call", "cc-req-1"), ("response", "cc-req-1"),
        ("request", "cc-req-2"), ("response", "cc-req-2"),
    ]
    assert events[1]["tool_name"] == "Read" and events[1]["duration_ms"] == 1200.0
    assert events[2]["tokens"]["cache_write_1h"] == 500 and events[2]["stop_reason"] == "tool_use"
    # The serving model's window beside the context size (claude-sonnet-4: 200k).
    assert events[2]["context_window"] == 200_000
    assert [r["context_window"] for r in session["requests"]] == [200_000, 200_000]
    raw = q.raw(CC, "cc-req-1")
    assert raw["request_json"]["model"] == CC_FIRST["model"]
    assert raw["response_json"]["content"][0]["type"] == "thinking"
    assert q.tools(CC) == [{"tool_name": "Read", "calls": 1, "errors": 0, "timed_calls": 1,
                            "total_duration_ms": 1200.0, "avg_duration_ms": 1200.0, "max_duration_ms": 1200.0}]
    for call in (lambda: q.get_session("nope"), lambda: q.timeline("nope"), lambda: q.raw(CC, "cx-req-1")):
        with pytest.raises(NotFound):
            call()


def test_statistics_over_a_window(q: SessionQueries) -> None:
    """Overview, tokens, costs, models, hours, spending, tools and user agents agree with the rows."""
    everything = StatsWindow()
    overview = q.stats_overview(everything)
    assert overview["sessions"] == 3 and overview["requests"] == 4
    assert overview["failed_requests"] == 1
    assert overview["cost_usd"] == pytest.approx(0.53)
    assert overview["cache_write_1h_tokens"] == 500 and overview["cache_write_5m_tokens"] == 1000
    recent = q.stats_overview(StatsWindow(since="2025-06-14T00:00:00.000Z"))
    assert recent["requests"] == 3 and recent["cost_usd"] == pytest.approx(0.03)
    days = q.stats_tokens(everything)["days"]
    assert [d["day"] for d in days] == ["2025-06-12", "2025-06-15"]
    assert q.stats_costs(everything)["total_cost_usd"] == pytest.approx(0.53)
    spending = q.stats_spending(everything)
    assert spending["days"][-1]["cumulative_usd"] == pytest.approx(0.53) and spending["unpriced_requests"] == 1
    models = {m["model"]: m for m in q.stats_models(everything)["models"]}
    assert models["claude-sonnet-4"]["requests"] == 2 and models["gpt-5.5"]["failed_requests"] == 1
    hours = q.stats_hours(everything)["hours"]
    assert len(hours) == 24 and hours[12]["requests"] == 4
    assert q.stats_tools(everything)["tools"][0]["tool_name"] == "Read"
    agents = {a["client"]: a for a in q.user_agents(everything)["user_agents"]}
    assert agents["Claude Code"]["sessions"] == 1 and agents["Codex"]["requests"] == 1
    assert {m["model"] for m in q.models(everything)["models"]} == {"claude-sonnet-4", "gpt-5.5", "claude-haiku-4"}


def test_delete_removes_rows_search_entries_and_jsonl_files(db: str, tmp_path: Path) -> None:
    """Every trace of the session goes; the others stay; the search index stays consistent."""
    jsonl = tmp_path / "jsonl"
    (jsonl / "2025-06-15").mkdir(parents=True)
    (jsonl / "2025-06-15" / f"session_{CC}.jsonl").write_text("{}\n")
    (jsonl / "2025-06-15" / f"session_{CX}.jsonl").write_text("{}\n")
    conn = connect(db)
    removed = SessionQueries(conn, str(jsonl)).delete_session(CC)
    assert removed["removed"] == {
        "search_entries": 2, "requests": 2, "tool_calls": 1, "stream_metrics": 2, "sessions": 1,
        "jsonl_files": [f"2025-06-15/session_{CC}.jsonl"],
    }
    assert not (jsonl / "2025-06-15" / f"session_{CC}.jsonl").exists()
    assert (jsonl / "2025-06-15" / f"session_{CX}.jsonl").exists()
    q = SessionQueries(conn)
    assert q.search("capybara", 5) == []
    assert q.search("TypeError", 5)
    conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    with pytest.raises(NotFound):
        q.get_session(CC)


def test_version_3_database_is_upgraded_and_a_replay_fills_old_requests(tmp_path: Path) -> None:
    """
    A v3 database gets the new columns: its sessions' client, title and
    project at once; its requests' new columns when their events are
    replayed (import-sessions --no-skip-existing), events without the new
    fields included.
    """
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, 3)
    conn.close()
    # A v3 writer's rows: what a current writer stores, v3 columns only.
    current = str(tmp_path / "current.db")
    record_sample(current)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ATTACH ? AS cur", (current,))
    for table in ("sessions", "session_stats", "tool_call_executions", "stream_metrics"):
        columns = [r[1] for r in conn.execute(f"PRAGMA main.table_xinfo({table})") if r[6] == 0]
        names = ", ".join(columns)
        conn.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM cur.{table}")
    conn.execute("DETACH cur")
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert migrate(conn) == SCHEMA_VERSION == len(MIGRATIONS)
    assert conn.execute("SELECT client, project, title FROM sessions WHERE session_id = ?", (CC,)).fetchone() == (
        "Claude Code", "/tmp/cc-tool", "say hi")
    assert conn.execute("SELECT client FROM session_stats WHERE request_id = 'cc-req-1'").fetchone() == (None,)
    q = SessionQueries(conn)
    assert [h["request_id"] for h in q.search("capybara", 5)] == ["cc-req-1"]
    agents = {a["client"] for a in q.user_agents(StatsWindow())["user_agents"]}
    assert agents == {"Claude Code", "Codex", "Anthropic Python SDK"}
    conn.close()

    # Events recorded before schema 4 lack the new fields: the writer derives them.
    new_fields = {"client", "system_sha256", "tools_sha256", "title", "project", "tool_result_text",
                  "tool_error_ids", "tool_input_text", "cache_creation_1h_tokens"}
    from lunaroute.sessions.events import exchange_events

    events = [{k: v for k, v in e.items() if k not in new_fields} for x in sample_exchanges() for e in exchange_events(x)]
    writer = SQLiteWriter(path)
    writer.write_batch(events)
    writer.close()
    conn = sqlite3.connect(path)
    got = conn.execute(
        "SELECT client, project, title, system_sha256 IS NOT NULL, tool_input_text LIKE '%hello.txt%' "
        "FROM session_stats WHERE request_id = 'cc-req-1'"
    ).fetchone()
    assert got == ("Claude Code", "/tmp/cc-work", "say hi", 1, 1)
    q = SessionQueries(conn)
    assert [h["request_id"] for h in q.search('"hello from the file"', 5)] == ["cc-req-2"]
    conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")


@pytest_twisted.ensureDeferred
async def test_store_runs_queries_in_a_thread_on_read_only_connections(db: str) -> None:
    """SessionStore answers through the reactor's thread pool; its connection cannot write."""
    store = SessionStore(db, reactor=reactor)
    rows, total = await store.list_sessions(SessionFilters(), "last_activity", "desc", 10, 0)
    assert total == 3
    hits = await store.search("wombat", 5)
    assert hits[0]["session_id"] == SDK
    # The connection was opened in a pool thread, never on the reactor's.
    assert getattr(store._local, "queries", None) is None
    inline = SessionStore(db, reactor=Clock(), threadpool=InlineThreadPool())
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        inline._queries().conn.execute("DELETE FROM sessions")


def test_store_without_a_database_is_unavailable(tmp_path: Path) -> None:
    """No database yet: a StoreUnavailable failure (a 503), not an empty file created by a reader."""
    store = SessionStore(str(tmp_path / "none.db"), reactor=Clock(), threadpool=InlineThreadPool())
    failure = store.get_session("x")
    errors: list[Any] = []
    failure.addErrback(errors.append)
    assert errors and errors[0].check(StoreUnavailable)
    assert not (tmp_path / "none.db").exists()
