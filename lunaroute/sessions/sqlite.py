"""
Session events in SQLite: one row per session, one per request, one per
tool call, and a full-text index over what was asked and answered.

The database is the queryable view of the recordings (the session API, the
UI, ad-hoc C{sqlite3} queries).  Every row is built from the session events
alone, never from L{Exchange} objects, and every write is keyed by request
id: so C{lunaroute-server import-sessions} can rebuild the database by
replaying the JSONL files through L{SQLiteWriter.write_batch}, and replaying
the same events twice changes nothing.

Recording cost must not grow with a session's length (real sessions run to
thousands of requests): a batch reads only the rows of the requests it
carries, writes each request row once, and brings each touched session row
up to date by the difference between the stored and the new request rows
(counts kept in the session row make C{success} and C{cost_complete}
differences too).  A full recomputation from the request rows remains for
the rare change that is not a difference (a request moved to another
session, or its start time rewritten).

WAL mode with C{synchronous=NORMAL} and one transaction per batch: a killed
gateway leaves a consistent database (the last batch is either all there or
not at all).  The schema version lives in C{PRAGMA user_version}; the
ordered steps in L{MIGRATIONS} bring an older database up to date in place,
each in its own transaction.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from lunaroute.interfaces import ISessionWriter
from lunaroute.logs import log_observer
from lunaroute.sessions.events import client_name, json_text, request_facts, strings_text

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLiteSessionStore",
    "SQLiteWriter",
    "SchemaTooNew",
    "ThreadedSessionStore",
    "USAGE_INDEX_COLUMNS",
    "connect",
    "fts_query",
    "migrate",
]

log = Logger(observer=log_observer)


class SchemaTooNew(Exception):
    """The database was written by a newer LunaRoute; we must not touch it."""


# --------------------------------------------------------------------------
# Schema.  Append new steps; never edit a released one.

_V1 = (
    """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        started_at TEXT,
        last_activity TEXT,
        model_used TEXT,
        provider TEXT,
        listener TEXT,
        request_count INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        thinking_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER GENERATED ALWAYS AS (input_tokens + output_tokens) VIRTUAL,
        tool_call_count INTEGER NOT NULL DEFAULT 0,
        success INTEGER,
        duration_ms REAL,
        user_agent TEXT,
        client_ip TEXT
    )
    """,
    "CREATE INDEX sessions_started_at ON sessions (started_at)",
    "CREATE INDEX sessions_last_activity ON sessions (last_activity)",
    "CREATE INDEX sessions_model_used ON sessions (model_used)",
    # An explicit INTEGER PRIMARY KEY (rather than request_id) gives the
    # full-text index a rowid that VACUUM cannot renumber.
    """
    CREATE TABLE session_stats (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        started_at TEXT,
        completed_at TEXT,
        model_requested TEXT,
        model_used TEXT,
        provider TEXT,
        listener TEXT,
        dialect TEXT,
        method TEXT,
        path TEXT,
        streaming INTEGER,
        client_ip TEXT,
        user_agent TEXT,
        status INTEGER,
        outcome TEXT,
        success INTEGER,
        error TEXT,
        stop_reason TEXT,
        partial INTEGER,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        thinking_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER GENERATED ALWAYS AS (input_tokens + output_tokens) VIRTUAL,
        thinking_estimated INTEGER,
        tool_call_count INTEGER NOT NULL DEFAULT 0,
        chunk_count INTEGER,
        bytes_out INTEGER,
        duration_ms REAL,
        ttft_ms REAL,
        provider_ms REAL,
        pre_proxy_ms REAL,
        post_proxy_ms REAL,
        proxy_overhead_ms REAL,
        request_bytes INTEGER,
        message_count INTEGER,
        tools_offered TEXT,
        request_text TEXT,
        response_text TEXT,
        thinking_text TEXT,
        request_json TEXT,
        response_json TEXT
    )
    """,
    "CREATE INDEX session_stats_session ON session_stats (session_id, started_at)",
    """
    CREATE TABLE tool_call_executions (
        request_id TEXT NOT NULL,
        call_index INTEGER NOT NULL,
        tool_call_id TEXT,
        session_id TEXT NOT NULL,
        tool_name TEXT,
        input_json TEXT,
        duration_ms REAL,
        created_at TEXT,
        PRIMARY KEY (request_id, call_index)
    )
    """,
    "CREATE INDEX tool_call_executions_session ON tool_call_executions (session_id, tool_call_id)",
    "CREATE INDEX tool_call_executions_tool ON tool_call_executions (tool_name)",
    """
    CREATE TABLE stream_metrics (
        request_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        ttft_ms REAL,
        chunk_count INTEGER,
        event_count INTEGER,
        bytes_out INTEGER,
        stream_ms REAL,
        chunk_gap_mean_ms REAL,
        chunk_gap_p50_ms REAL,
        chunk_gap_p95_ms REAL,
        chunk_gap_max_ms REAL
    )
    """,
    "CREATE INDEX stream_metrics_session ON stream_metrics (session_id)",
    # The original's tool_stats table, as a view so it can never disagree.
    """
    CREATE VIEW tool_stats AS
    SELECT session_id, tool_name,
           COUNT(*) AS call_count,
           COUNT(duration_ms) AS timed_count,
           AVG(duration_ms) AS avg_duration_ms,
           MAX(duration_ms) AS max_duration_ms
    FROM tool_call_executions
    GROUP BY session_id, tool_name
    """,
)

_V2 = (
    # Statistics: estimated cost and tool result timings.
    "ALTER TABLE sessions ADD COLUMN estimated_cost_usd REAL",
    "ALTER TABLE sessions ADD COLUMN cost_complete INTEGER",
    "ALTER TABLE session_stats ADD COLUMN estimated_cost_usd REAL",
    "ALTER TABLE session_stats ADD COLUMN tool_results_json TEXT",
    "ALTER TABLE tool_call_executions ADD COLUMN result_request_id TEXT",
    # Full-text search.  External content: the text is stored once, in
    # session_stats, and the writer keeps the index in step by hand.
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        request_id UNINDEXED,
        session_id UNINDEXED,
        request_text,
        response_text,
        thinking_text,
        content='session_stats',
        content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    )
    """,
    "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
)

_CONTEXT_SQL = (
    "CASE WHEN dialect LIKE 'openai%' THEN input_tokens "
    "ELSE input_tokens + cache_read_tokens + cache_creation_tokens END"
)

_V3 = (
    # Incremental session aggregates: the counts that MIN(success) and
    # cost_complete are derived from, and the request the "latest" columns
    # come from, so a batch updates its sessions without reading their
    # other requests.
    "ALTER TABLE sessions ADD COLUMN success_count INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sessions ADD COLUMN failed_count INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sessions ADD COLUMN priced_count INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sessions ADD COLUMN last_request_id TEXT",
    """
    UPDATE sessions SET
        success_count = (SELECT COUNT(*) FROM session_stats AS r
                         WHERE r.session_id = sessions.session_id AND r.success = 1),
        failed_count = (SELECT COUNT(*) FROM session_stats AS r
                        WHERE r.session_id = sessions.session_id AND r.success = 0),
        priced_count = (SELECT COUNT(r.estimated_cost_usd) FROM session_stats AS r
                        WHERE r.session_id = sessions.session_id),
        last_request_id = (SELECT r.request_id FROM session_stats AS r
                           WHERE r.session_id = sessions.session_id
                           ORDER BY COALESCE(r.started_at, r.completed_at) DESC, r.id DESC LIMIT 1)
    """,
)



def _backfill_v4(conn: sqlite3.Connection) -> None:
    """
    Fill the new session columns of the sessions already stored: C{client}
    from the user agent of each session's latest request, C{title} from the
    body of its first, C{project} from its latest (or first).  Request rows
    are not rewritten (a row holds its bodies: rewriting every one would
    make the upgrade of a big database take minutes), so the new
    per-request columns of older requests stay empty;
    C{lunaroute-server import-sessions --no-skip-existing} fills them from
    the JSONL files.
    """

    def body_facts(request_json: Any) -> dict[str, Any]:
        try:
            body = json.loads(request_json) if isinstance(request_json, str) else None
        except ValueError:
            body = None
        return request_facts(body if isinstance(body, dict) else None)

    updates = []
    for session_id, first_id, last_id in conn.execute(
        """
        SELECT s.session_id,
               (SELECT r.id FROM session_stats AS r WHERE r.session_id = s.session_id
                ORDER BY COALESCE(r.started_at, r.completed_at), r.id LIMIT 1),
               (SELECT r.id FROM session_stats AS r WHERE r.request_id = s.last_request_id)
        FROM sessions AS s
        """
    ).fetchall():
        facts: dict[Any, dict[str, Any]] = {}
        agent = None
        for row_id in (first_id, last_id):
            if row_id is None or row_id in facts:
                continue
            found = conn.execute(
                "SELECT request_json, user_agent FROM session_stats WHERE id = ?", (row_id,)
            ).fetchone()
            facts[row_id] = body_facts(found[0] if found else None)
            if row_id == last_id and found is not None:
                agent = found[1]
        first, last = facts.get(first_id, {}), facts.get(last_id, {})
        updates.append(
            (client_name(agent), first.get("title"), last.get("project") or first.get("project"), session_id)
        )
    conn.executemany("UPDATE sessions SET client = ?, title = ?, project = ? WHERE session_id = ?", updates)


_V4: tuple[Any, ...] = (
    # What the session API shows per request and per session (issue 13).
    "ALTER TABLE session_stats ADD COLUMN cache_creation_1h_tokens INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE session_stats ADD COLUMN cache_creation_5m_tokens INTEGER "
    "GENERATED ALWAYS AS (cache_creation_tokens - cache_creation_1h_tokens) VIRTUAL",
    # Anthropic's input excludes cached tokens, OpenAI's includes them.
    "ALTER TABLE session_stats ADD COLUMN context_tokens INTEGER GENERATED ALWAYS AS ("
    + _CONTEXT_SQL
    + ") VIRTUAL",
    "ALTER TABLE session_stats ADD COLUMN cache_hit_ratio REAL GENERATED ALWAYS AS ("
    f"CASE WHEN ({_CONTEXT_SQL}) > 0 THEN cache_read_tokens * 1.0 / ({_CONTEXT_SQL}) END) VIRTUAL",
    "ALTER TABLE session_stats ADD COLUMN error_type TEXT",
    "ALTER TABLE session_stats ADD COLUMN system_sha256 TEXT",
    "ALTER TABLE session_stats ADD COLUMN tools_sha256 TEXT",
    "ALTER TABLE session_stats ADD COLUMN client TEXT",
    "ALTER TABLE session_stats ADD COLUMN project TEXT",
    "ALTER TABLE session_stats ADD COLUMN title TEXT",
    "ALTER TABLE session_stats ADD COLUMN tool_input_text TEXT",
    "ALTER TABLE session_stats ADD COLUMN tool_result_text TEXT",
    "ALTER TABLE tool_call_executions ADD COLUMN is_error INTEGER",
    "ALTER TABLE sessions ADD COLUMN cache_creation_1h_tokens INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sessions ADD COLUMN client TEXT",
    "ALTER TABLE sessions ADD COLUMN project TEXT",
    "ALTER TABLE sessions ADD COLUMN title TEXT",
    "CREATE INDEX session_stats_started_at ON session_stats (started_at)",
    "CREATE INDEX sessions_client ON sessions (client)",
    "CREATE INDEX sessions_project ON sessions (project)",
    _backfill_v4,
    # The index now covers tool inputs and results too.
    "DROP TABLE messages_fts",
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        request_id UNINDEXED,
        session_id UNINDEXED,
        request_text,
        response_text,
        thinking_text,
        tool_input_text,
        tool_result_text,
        content='session_stats',
        content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    )
    """,
    "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
)

# The columns of a request row the usage report (C{lunaroute-server report})
# reads.  The report scans a window of requests: from an index holding these
# it never reads the rows themselves, whose bodies (and the columns added
# after them by ALTER TABLE, such as the cost) sit on overflow pages.
USAGE_INDEX_COLUMNS = (
    "started_at",
    "completed_at",
    "model_used",
    "model_requested",
    "dialect",
    "user_agent",
    "session_id",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "estimated_cost_usd",
)

_V5: tuple[Any, ...] = (
    # Read performance on a big store (docs/performance.md, "Session store").
    # The covering index for the usage report; it leads with started_at, so
    # it also serves every window on started_at the v4 index served.
    "DROP INDEX IF EXISTS session_stats_started_at",
    f"CREATE INDEX session_stats_usage ON session_stats ({', '.join(USAGE_INDEX_COLUMNS)})",
    # The session list's client filter reads the sessions by client (v4
    # index); its project and time filters and sorts scan the (small)
    # sessions table.  The search's and the report's join to sessions go by
    # its primary key.
    #
    # Prefix indexes of 2, 3 and 4 characters: FTS5 answers "se*", "ses*"
    # and "sess*" from them instead of merging the lists of every word
    # with that prefix (an index serves only its own length: "sessi*" is
    # merged as before, but has fewer words to merge).  The option is fixed
    # when the table is created: drop, create, and rebuild the index from
    # the stored text (about 40 s per GB of text, once).
    "DROP TABLE messages_fts",
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        request_id UNINDEXED,
        session_id UNINDEXED,
        request_text,
        response_text,
        thinking_text,
        tool_input_text,
        tool_result_text,
        content='session_stats',
        content_rowid='id',
        tokenize='unicode61 remove_diacritics 2',
        prefix='2 3 4'
    )
    """,
    "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
)

_V6: tuple[Any, ...] = (
    # Routing (issue 15): the rule that chose the providers and each attempt
    # ({provider, rule, reason, status, error, detail, duration_ms}).
    "ALTER TABLE session_stats ADD COLUMN routing_rule TEXT",
    "ALTER TABLE session_stats ADD COLUMN attempts_json TEXT",
)

MIGRATIONS: tuple[tuple[Any, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
SCHEMA_VERSION = len(MIGRATIONS)

_FTS_COLUMNS = (
    "request_id",
    "session_id",
    "request_text",
    "response_text",
    "thinking_text",
    "tool_input_text",
    "tool_result_text",
)
# The columns a search can name (FTS5 column filters: "response_text: foo").
FTS_TEXT_COLUMNS = _FTS_COLUMNS[2:]


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """
    Apply the missing schema steps up to C{target}, each in its own
    transaction, and return the resulting version.  Safe against another
    connection migrating at the same time (the version is re-read under the
    write lock).  C{conn} must be in autocommit mode (C{isolation_level=None}).

    @raise SchemaTooNew: the database is newer than this code.
    """
    while True:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database schema version {version} is newer than this LunaRoute "
                f"understands ({SCHEMA_VERSION})"
            )
        if version >= target:
            return version
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < target:
                for statement in MIGRATIONS[version]:
                    if callable(statement):
                        statement(conn)
                    else:
                        conn.execute(statement)
                # PRAGMA does not take parameters; version is our own int.
                conn.execute(f"PRAGMA user_version = {int(version) + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if version < target:
            log.info("session database upgraded to schema version {version}", version=version + 1)


def connect(db_path: str, target: int = SCHEMA_VERSION) -> sqlite3.Connection:
    """
    Open (creating if needed) the session database in WAL mode and bring its
    schema up to C{target}.  The connection is in autocommit mode: callers
    issue C{BEGIN}/C{COMMIT} themselves.
    """
    if db_path != ":memory:":
        directory = os.path.dirname(os.path.abspath(db_path))
        os.makedirs(directory, exist_ok=True)
    conn = sqlite3.connect(db_path, timeout=10.0, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        # Takes effect only on a new, empty database: retention can then
        # give freed pages back with incremental_vacuum (SQLiteWriter.reclaim_space).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, target)
    except BaseException:
        conn.close()
        raise
    return conn


# --------------------------------------------------------------------------
# Values


def _text(value: Any) -> str | None:
    """
    A string SQLite can store.  Lone surrogates (from odd client JSON) cannot
    be encoded as UTF-8 and become visible C{\\udXXX} escapes instead.
    """
    if type(value) is not str:
        if value is None:
            return None
        if not isinstance(value, str):
            value = str(value)
    if value.isascii() or not _SURROGATE.search(value):
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


# Lone surrogates: the only str content UTF-8 cannot encode.  Searching for
# them costs far less than encoding a body just to find out.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return _text(json_text(value))


def _bool(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _error_text(event: Mapping[str, Any]) -> Any:
    """The error column: the provider's error type, then its message."""
    error, error_type = event.get("error"), event.get("error_type")
    if isinstance(error_type, str) and error_type and isinstance(error, str) and error != error_type:
        return f"{error_type}: {error}"
    return error if error is not None else error_type


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _num(value: Any) -> float | None:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# --------------------------------------------------------------------------
# Events → columns.  Each function gives the session_stats columns one
# event type owns; the upsert sets exactly those, so events may arrive in
# any grouping and replaying one is harmless.


def _started_columns(event: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "started_at": _text(event.get("timestamp")),
        "model_requested": _text(event.get("model_requested")),
        "provider": _text(event.get("provider")),
        "listener": _text(event.get("listener")),
        "dialect": _text(event.get("dialect")),
        "method": _text(event.get("method")),
        "path": _text(event.get("path")),
        "streaming": _bool(event.get("streaming")),
        "client_ip": _text(event.get("client_ip")),
        "user_agent": _text(event.get("user_agent")),
        "client": _text(event["client"] if "client" in event else client_name(event.get("user_agent"))),
    }


def _request_columns(event: Mapping[str, Any]) -> dict[str, Any]:
    facts: Mapping[str, Any] = event
    if "system_sha256" not in event:
        # Recorded before these fields existed: derive them as the recorder does.
        body = event.get("request_json")
        facts = request_facts(body if isinstance(body, Mapping) else None)
    return {
        "system_sha256": _text(facts.get("system_sha256")),
        "tools_sha256": _text(facts.get("tools_sha256")),
        "title": _text(facts.get("title")),
        "project": _text(facts.get("project")),
        "tool_result_text": _text(facts.get("tool_result_text") or ""),
        "request_text": _text(event.get("request_text") or ""),
        "request_json": _json(event.get("request_json")),
        "request_bytes": _int(event.get("body_bytes")),
        "message_count": _int(event.get("message_count")),
        "tools_offered": _json(event.get("tools") or []),
    }


def _response_columns(event: Mapping[str, Any]) -> dict[str, Any]:
    columns = {
        "response_text": _text(event.get("response_text") or ""),
        "thinking_text": _text(event.get("thinking") or ""),
        "response_json": _json(event.get("response_json")),
        "model_used": _text(event.get("model_used")),
        "stop_reason": _text(event.get("stop_reason")),
        "partial": _bool(event.get("partial")),
        "provider_ms": _num(event.get("provider_latency_ms")),
        "pre_proxy_ms": _num(event.get("pre_proxy_ms")),
        "post_proxy_ms": _num(event.get("post_proxy_ms")),
        "proxy_overhead_ms": _num(event.get("proxy_overhead_ms")),
        "input_tokens": _int(event.get("input_tokens")),
        "output_tokens": _int(event.get("output_tokens")),
        "thinking_tokens": _int(event.get("thinking_tokens")),
        "cache_read_tokens": _int(event.get("cache_read_tokens")),
        "cache_creation_tokens": _int(event.get("cache_creation_tokens")),
        "cache_creation_1h_tokens": _int(event.get("cache_creation_1h_tokens")),
        "tool_input_text": _text(
            event["tool_input_text"] if "tool_input_text" in event else _tool_input_text(event.get("tool_calls"))
        ),
        "thinking_estimated": _bool(not event.get("thinking_tokens_exact", False)),
        "tool_call_count": len(event.get("tool_calls") or []),
        "chunk_count": _int(event.get("chunk_count")),
        "bytes_out": _int(event.get("bytes_out")),
    }
    if event.get("status") is not None:
        columns["status"] = _int(event.get("status"))
    return columns


def _tool_input_text(calls: Any) -> str:
    if not isinstance(calls, list):
        return ""
    return "\n\n".join(
        f"{call.get('name') or ''}\n{strings_text(call.get('input'))}" for call in calls if isinstance(call, Mapping)
    )


def _completed_columns(event: Mapping[str, Any]) -> dict[str, Any]:
    stats = _dict(event.get("final_stats"))
    tokens = _dict(stats.get("tokens"))
    columns: dict[str, Any] = {
        "completed_at": _text(event.get("timestamp")),
        "success": _bool(event.get("success")),
        "outcome": _text(event.get("outcome")),
        "error": _text(_error_text(event)),
        "error_type": _text(event.get("error_type")),
        "routing_rule": _text(event.get("routing_rule")),
        "attempts_json": _json(event.get("attempts")) if event.get("attempts") else None,
        "duration_ms": _num(stats.get("duration_ms")),
        "estimated_cost_usd": _num(stats.get("estimated_cost_usd")),
        "tool_results_json": _json(stats.get("tool_results") or []),
        # The token totals are repeated here so a request whose response
        # event is missing (a file cut short) still counts.
        "input_tokens": _int(tokens.get("input")),
        "output_tokens": _int(tokens.get("output")),
        "thinking_tokens": _int(tokens.get("thinking")),
        "cache_read_tokens": _int(tokens.get("cache_read")),
        "cache_creation_tokens": _int(tokens.get("cache_creation")),
        "cache_creation_1h_tokens": _int(tokens.get("cache_creation_1h")),
    }
    # The response event owns these; only fill them when it said nothing.
    for column, key in (("status", "status"), ("model_used", "model_used"), ("stop_reason", "finish_reason")):
        if event.get(key) is not None:
            columns[column] = _int(event[key]) if column == "status" else _text(event[key])
    if stats.get("ttft_ms") is not None:
        columns["ttft_ms"] = _num(stats.get("ttft_ms"))
    return columns


_COLUMNS_BY_TYPE: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "started": _started_columns,
    "request_recorded": _request_columns,
    "stream_started": lambda event: {"ttft_ms": _num(event.get("ttft_ms"))},
    "response_recorded": _response_columns,
    "tool_call_recorded": lambda event: {},
    "completed": _completed_columns,
}


_SESSION_COLUMNS = (
    "started_at",
    "last_activity",
    "model_used",
    "provider",
    "listener",
    "request_count",
    "input_tokens",
    "output_tokens",
    "thinking_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "tool_call_count",
    "success",
    "duration_ms",
    "estimated_cost_usd",
    "cost_complete",
    "user_agent",
    "client_ip",
    "success_count",
    "failed_count",
    "priced_count",
    "last_request_id",
    "cache_creation_1h_tokens",
    "client",
    "project",
    "title",
)

# The reference definition of a session row as a function of its request
# rows.  The writer keeps the rows up to date incrementally (see
# _SessionTotals); this full recomputation is only run in the rare cases a
# batch changes a request in a way that cannot be applied as a difference
# (a request moving to another session, or its start time changing), and by
# SQLiteWriter.recompute_sessions.  The "latest" columns come from the most
# recent request.  duration_ms is the wall-clock span of the session,
# rounded to whole milliseconds because julianday() is only precise to some
# microseconds.
_RECOMPUTE_SESSION = f"""
WITH reqs AS (
    SELECT id, request_id, started_at, completed_at, model_used, model_requested, provider,
           listener, user_agent, client_ip, input_tokens, output_tokens, thinking_tokens,
           cache_read_tokens, cache_creation_tokens, tool_call_count, success,
           estimated_cost_usd, cache_creation_1h_tokens, client, project, title,
           COALESCE(started_at, completed_at) AS at
    FROM session_stats WHERE session_id = :sid
), latest AS (
    SELECT * FROM reqs ORDER BY at DESC, id DESC LIMIT 1
)
INSERT INTO sessions (session_id, {", ".join(_SESSION_COLUMNS)})
SELECT
    :sid,
    MIN(at),
    MAX(COALESCE(completed_at, at)),
    (SELECT COALESCE(model_used, model_requested) FROM latest),
    (SELECT provider FROM latest),
    (SELECT listener FROM latest),
    COUNT(*),
    SUM(input_tokens),
    SUM(output_tokens),
    SUM(thinking_tokens),
    SUM(cache_read_tokens),
    SUM(cache_creation_tokens),
    SUM(tool_call_count),
    MIN(success),
    ROUND((julianday(MAX(COALESCE(completed_at, at))) - julianday(MIN(at))) * 86400000.0),
    SUM(estimated_cost_usd),
    COUNT(*) = COUNT(estimated_cost_usd),
    (SELECT user_agent FROM latest),
    (SELECT client_ip FROM latest),
    COUNT(CASE WHEN success = 1 THEN 1 END),
    COUNT(CASE WHEN success = 0 THEN 1 END),
    COUNT(estimated_cost_usd),
    (SELECT request_id FROM latest),
    SUM(cache_creation_1h_tokens),
    (SELECT client FROM latest),
    (SELECT project FROM reqs WHERE project IS NOT NULL ORDER BY at DESC, id DESC LIMIT 1),
    (SELECT title FROM reqs WHERE title IS NOT NULL ORDER BY at, id LIMIT 1)
FROM reqs
WHERE 1
ON CONFLICT (session_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _SESSION_COLUMNS)}
"""

# Writing a session row computed by the writer: duration_ms is computed by
# SQLite from the two timestamps, exactly as in _RECOMPUTE_SESSION.
_WRITE_SESSION = f"""
INSERT INTO sessions (session_id, {", ".join(_SESSION_COLUMNS)})
VALUES ({", ".join(
    "ROUND((julianday(?) - julianday(?)) * 86400000.0)" if c == "duration_ms" else "?"
    for c in ("session_id", *_SESSION_COLUMNS)
)})
ON CONFLICT (session_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _SESSION_COLUMNS)}
"""

# The parameters of _WRITE_SESSION after the session id, from a session row
# (duration_ms is computed by SQLite from the last and first moments).
_session_values = itemgetter(
    *(name for c in _SESSION_COLUMNS for name in (("last_activity", "started_at") if c == "duration_ms" else (c,)))
)

# Every stored column of session_stats but id and the generated total_tokens.
_STATS_COLUMNS = (
    "request_id",
    "session_id",
    "started_at",
    "completed_at",
    "model_requested",
    "model_used",
    "provider",
    "listener",
    "dialect",
    "method",
    "path",
    "streaming",
    "client_ip",
    "user_agent",
    "status",
    "outcome",
    "success",
    "error",
    "stop_reason",
    "partial",
    "input_tokens",
    "output_tokens",
    "thinking_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_estimated",
    "tool_call_count",
    "chunk_count",
    "bytes_out",
    "duration_ms",
    "ttft_ms",
    "provider_ms",
    "pre_proxy_ms",
    "post_proxy_ms",
    "proxy_overhead_ms",
    "request_bytes",
    "message_count",
    "tools_offered",
    "request_text",
    "response_text",
    "thinking_text",
    "request_json",
    "response_json",
    "estimated_cost_usd",
    "tool_results_json",
    "cache_creation_1h_tokens",
    "error_type",
    "system_sha256",
    "tools_sha256",
    "client",
    "project",
    "title",
    "tool_input_text",
    "tool_result_text",
    "routing_rule",
    "attempts_json",
)

# Summed into the session row.
_SUMMED_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "thinking_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cache_creation_1h_tokens",
    "tool_call_count",
)

# A new request row before its events are applied: the table's defaults.
_EMPTY_ROW: dict[str, Any] = {c: (0 if c in _SUMMED_COLUMNS else None) for c in _STATS_COLUMNS}
# A row's values in _STATS_COLUMNS order, in one C call.
_stats_values = itemgetter(*_STATS_COLUMNS)

_INSERT_STATS = (
    f"INSERT INTO session_stats (id, {', '.join(_STATS_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in range(len(_STATS_COLUMNS) + 1))})"
)

# What a batch reads of the requests it touches that are already stored:
# what the session totals and the search index need, never the bodies.
_STORED_COLUMNS = (
    "id",
    "request_id",
    "session_id",
    "started_at",
    "completed_at",
    "model_used",
    "model_requested",
    "provider",
    "listener",
    "user_agent",
    "client_ip",
    *_SUMMED_COLUMNS,
    "success",
    "estimated_cost_usd",
    "client",
    "project",
    "title",
    "request_text",
    "response_text",
    "thinking_text",
    "tool_input_text",
    "tool_result_text",
)

_FTS_INSERT = (
    f"INSERT INTO messages_fts (rowid, {', '.join(_FTS_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in range(len(_FTS_COLUMNS) + 1))})"
)
_fts_values = itemgetter(*_FTS_COLUMNS)
# External-content FTS: an entry is deleted with exactly the values it was
# indexed with.
_FTS_DELETE = (
    f"INSERT INTO messages_fts (messages_fts, rowid, {', '.join(_FTS_COLUMNS)}) "
    f"VALUES ('delete', {', '.join('?' for _ in range(len(_FTS_COLUMNS) + 1))})"
)

# Ids per "IN (...)" lookup; SQLite allows at least 999 parameters.
_LOOKUP_CHUNK = 500


def _at(row: Mapping[str, Any]) -> Any:
    """When a request happened, for ordering: its start, else its end."""
    started = row["started_at"]
    return started if started is not None else row["completed_at"]


def _end(row: Mapping[str, Any]) -> Any:
    completed = row["completed_at"]
    return completed if completed is not None else _at(row)


def _latest_key(at: Any, row_id: int) -> tuple[bool, str, int]:
    """Sort key of "the most recent request": ORDER BY at DESC, id DESC (NULLs last)."""
    return (at is not None, at or "", row_id)


class _Batch:
    """
    A batch of events merged per request: the columns each request's events
    set (later events win, as one upsert per event would), its tool calls,
    tool results and stream metrics.
    """

    def __init__(self, events: Iterable[Any]) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.tool_calls: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.tool_results: list[tuple[Any, ...]] = []
        self.tool_errors: list[tuple[str, str]] = []
        self.streams: dict[str, dict[str, Any]] = {}
        for event in events:
            if not isinstance(event, Mapping):
                continue
            kind = event.get("type")
            columns_of = _COLUMNS_BY_TYPE.get(kind) if isinstance(kind, str) else None
            if columns_of is None:
                continue
            request_id, session_id = event.get("request_id"), event.get("session_id")
            if not isinstance(request_id, str) or not isinstance(session_id, str):
                continue
            row = self.rows.get(request_id)
            if row is None:
                row = self.rows[request_id] = {}
            row["session_id"] = session_id
            row.update(columns_of(event))
            if kind == "tool_call_recorded":
                index = _int(event.get("index"))
                self.tool_calls[(request_id, index)] = (
                    request_id,
                    index,
                    _text(event.get("tool_call_id")),
                    session_id,
                    _text(event.get("tool_name")),
                    _json(event.get("input")),
                    _text(event.get("timestamp")),
                )
            elif kind == "completed":
                self._tool_results(event, request_id, session_id)
            elif kind == "request_recorded":
                for call_id in event.get("tool_error_ids") or ():
                    if isinstance(call_id, str):
                        self.tool_errors.append((session_id, call_id))
            elif kind == "stream_started":
                self.streams.setdefault(request_id, {"session_id": session_id})["ttft_ms"] = _num(
                    event.get("ttft_ms")
                )
            elif kind == "response_recorded" and event.get("streaming"):
                gaps = _dict(event.get("chunk_gap_ms"))
                stream = self.streams.setdefault(request_id, {})
                stream["session_id"] = session_id
                stream.update(
                    chunk_count=_int(event.get("chunk_count")),
                    event_count=_int(event.get("event_count")),
                    bytes_out=_int(event.get("bytes_out")),
                    stream_ms=_num(event.get("provider_latency_ms")),
                    chunk_gap_mean_ms=_num(gaps.get("mean")),
                    chunk_gap_p50_ms=_num(gaps.get("p50")),
                    chunk_gap_p95_ms=_num(gaps.get("p95")),
                    chunk_gap_max_ms=_num(gaps.get("max")),
                )

    def _tool_results(self, event: Mapping[str, Any], request_id: str, session_id: str) -> None:
        """A request carrying tool results times the calls that asked for them."""
        for result in _dict(event.get("final_stats")).get("tool_results") or []:
            if not isinstance(result, Mapping) or not result.get("tool_call_id"):
                continue
            self.tool_results.append(
                (_num(result.get("duration_ms")), request_id, session_id, _text(result["tool_call_id"]))
            )


class _SessionTotals:
    """
    One session row being brought up to date, in memory: every request a
    batch adds or changes is applied as the difference between its stored
    and its new values, so the cost does not depend on how many requests
    the session already has.
    """

    def __init__(self, session_id: str, stored: Any) -> None:
        self.session_id = session_id
        if stored is None:
            self.row: dict[str, Any] = {c: None for c in _SESSION_COLUMNS}
            for column in (*_SUMMED_COLUMNS, "request_count", "success_count", "failed_count", "priced_count"):
                self.row[column] = 0
            self.latest: tuple[bool, str, int] | None = None
        else:
            self.row = {c: stored[c] for c in _SESSION_COLUMNS}
            latest_id = stored["latest_id"]
            self.latest = None if latest_id is None else _latest_key(stored["latest_at"], latest_id)

    def apply(self, old: Any, new: Mapping[str, Any]) -> None:
        """Count C{new} in, C{old} (its stored version, if any) out."""
        row = self.row
        if old is None:
            row["request_count"] += 1
        for column in _SUMMED_COLUMNS:
            row[column] += (new[column] or 0) - ((old[column] or 0) if old is not None else 0)
        was = old["success"] if old is not None else None
        row["success_count"] += (new["success"] == 1) - (was == 1)
        row["failed_count"] += (new["success"] == 0) - (was == 0)
        cost, old_cost = new["estimated_cost_usd"], old["estimated_cost_usd"] if old is not None else None
        row["priced_count"] += (cost is not None) - (old_cost is not None)
        if cost != old_cost:
            total = (row["estimated_cost_usd"] or 0.0) + (cost or 0.0) - (old_cost or 0.0)
            row["estimated_cost_usd"] = total if row["priced_count"] else None
        at, end = _at(new), _end(new)
        title = new["title"]
        if title is not None and (
            row["title"] is None or (at is not None and (row["started_at"] is None or at <= row["started_at"]))
        ):
            row["title"] = title
        if new["project"] is not None and row["project"] is None:
            row["project"] = new["project"]
        if at is not None and (row["started_at"] is None or at < row["started_at"]):
            row["started_at"] = at
        if end is not None and (row["last_activity"] is None or end > row["last_activity"]):
            row["last_activity"] = end
        key = _latest_key(at, new["id"])
        if row["last_request_id"] == new["request_id"] or self.latest is None or key > self.latest:
            self.latest = key
            row["last_request_id"] = new["request_id"]
            model = new["model_used"]
            row["model_used"] = model if model is not None else new["model_requested"]
            for column in ("provider", "listener", "user_agent", "client_ip", "client"):
                row[column] = new[column]
            if new["project"] is not None:
                row["project"] = new["project"]

    def params(self) -> tuple[Any, ...]:
        row = self.row
        row["success"] = 0 if row["failed_count"] else (1 if row["success_count"] else None)
        row["cost_complete"] = int(row["request_count"] == row["priced_count"])
        return (self.session_id, *_session_values(row))


# How many WAL pages (4 KiB each) the writer lets accumulate before SQLite
# copies them into the database (SQLite's default is 1,000, about 4 MB).
# A checkpoint writes every page changed since the last one once, however
# often it changed (B-tree and index pages, the search index's segments, the
# session rows change with every batch), and syncs the WAL and the
# database: ten times fewer checkpoints cut the commit's CPU by a quarter
# to a third (docs/performance.md).  Durability is unchanged where it
# matters: with synchronous=NORMAL, a committed batch survives the
# gateway being killed whatever the WAL's size (it is in the operating
# system's cache); only a power cut or kernel crash can roll back the
# batches since the last checkpoint (now up to about 40 MB of them instead
# of 4 MB), and the database stays consistent, as the JSONL files (never
# synced) do.  Closing the writer on a graceful stop checkpoints everything.
WAL_AUTOCHECKPOINT_PAGES = 10_000


@implementer(ISessionWriter)
class SQLiteWriter:
    """
    Writes session events into the SQLite database at C{db_path}.

    The connection is opened on first use, in the recorder's writer thread
    (L{open} lets the recorder do it at start-up, so the schema is upgraded
    then).  Not thread-safe: one writer thread at a time.
    """

    name = "sqlite"

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path if db_path == ":memory:" else os.path.expanduser(db_path)
        self._conn: sqlite3.Connection | None = None
        self._sql_cache: dict[tuple[str, tuple[str, ...]], str] = {}

    def open(self) -> None:
        """Open the database and upgrade its schema now rather than lazily."""
        self._connection()

    def connection(self) -> sqlite3.Connection:
        """
        The writer's connection, opened if needed (for tools and tests: use
        it only from the thread that writes).
        """
        return self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect(self.db_path)
            try:
                # PRAGMA takes no parameters; the value is our own int.
                conn.execute(f"PRAGMA wal_autocheckpoint = {int(WAL_AUTOCHECKPOINT_PAGES)}").fetchall()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    # -- ISessionWriter ----------------------------------------------------

    def write_batch(self, events: list[dict[str, Any]]) -> None:
        """
        Apply the events in one transaction: insert or update one
        C{session_stats} row per request (each row written once per batch,
        however many events it has), its tool calls and stream metrics,
        keep the search index in step, and bring the touched sessions' rows
        up to date by difference.  The statements issued depend on the
        batch, never on how long its sessions already are.  Events without
        a string C{type}, C{session_id} and C{request_id}, or of an unknown
        type, are skipped.
        """
        batch = _Batch(events)
        if not batch.rows:
            return
        self._transaction(lambda conn: self._apply(conn, batch))

    def recompute_sessions(self, session_ids: Iterable[str] | None = None) -> None:
        """
        Recompute session rows from all their requests (every session when
        C{session_ids} is C{None}): a repair tool, and the reference the
        incremental updates are tested against.
        """

        def run(conn: sqlite3.Connection) -> None:
            ids = (
                [r[0] for r in conn.execute("SELECT DISTINCT session_id FROM session_stats")]
                if session_ids is None
                else list(session_ids)
            )
            for session_id in ids:
                self._recompute_session(conn, session_id)

        self._transaction(run)

    def close(self) -> None:
        """Close the connection (WAL is checkpointed by SQLite on close)."""
        self._drop_connection()

    def _transaction(self, work: Callable[[sqlite3.Connection], None]) -> None:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            work(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                # The connection may be unusable (disk I/O error, file
                # replaced); start afresh on the next batch.
                self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                log.failure("closing the session database failed")

    # -- rows --------------------------------------------------------------

    def _upsert_sql(self, table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
        cached = self._sql_cache.get((table, columns))
        if cached is not None:
            return cached
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        updates = [f"{c} = excluded.{c}" for c in columns if c not in key]
        action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({', '.join(key)}) {action}"
        self._sql_cache[(table, columns)] = sql
        return sql

    def _update_sql(self, columns: tuple[str, ...]) -> str:
        cached = self._sql_cache.get(("session_stats:update", columns))
        if cached is None:
            sets = ", ".join(f"{c} = ?" for c in columns)
            cached = f"UPDATE session_stats SET {sets} WHERE request_id = ?"
            self._sql_cache[("session_stats:update", columns)] = cached
        return cached

    def _select_in(self, conn: sqlite3.Connection, sql: str, keys: list[str]) -> list[sqlite3.Row]:
        """C{sql} ending in C{IN ({marks})}, run over C{keys} in chunks."""
        rows: list[sqlite3.Row] = []
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            rows += conn.execute(sql.format(marks=", ".join("?" for _ in chunk)), chunk).fetchall()
        return rows

    def _apply(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        stored = {
            row["request_id"]: row
            for row in self._select_in(
                conn,
                f"SELECT {', '.join(_STORED_COLUMNS)} FROM session_stats WHERE request_id IN ({{marks}})",
                list(batch.rows),
            )
        }
        session_ids = {row["session_id"] for row in batch.rows.values()}
        session_ids |= {row["session_id"] for row in stored.values()}
        sessions = {
            row["session_id"]: row
            for row in self._select_in(
                conn,
                "SELECT s.*, l.id AS latest_id, COALESCE(l.started_at, l.completed_at) AS latest_at "
                "FROM sessions AS s LEFT JOIN session_stats AS l ON l.request_id = s.last_request_id "
                "WHERE s.session_id IN ({marks})",
                sorted(session_ids),
            )
        }

        next_id: int | None = None
        inserts: list[tuple[Any, ...]] = []
        updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        fts_delete: list[tuple[Any, ...]] = []
        fts_insert: list[tuple[Any, ...]] = []
        changes: list[tuple[Any, dict[str, Any]]] = []
        for request_id, columns in batch.rows.items():
            old = stored.get(request_id)
            if old is None:
                if next_id is None:
                    next_id = conn.execute("SELECT MAX(id) FROM session_stats").fetchone()[0] or 0
                next_id += 1
                new = dict(_EMPTY_ROW)
                new.update(columns)
                new["request_id"] = request_id
                new["id"] = next_id
                inserts.append((next_id, *_stats_values(new)))
                fts_insert.append((next_id, *_fts_values(new)))
            else:
                new = dict(old)
                new.update(columns)
                updates.setdefault(tuple(columns), []).append((*columns.values(), request_id))
                before = _fts_values(old)
                after = _fts_values(new)
                if before != after:
                    fts_delete.append((old["id"], *before))
                    fts_insert.append((old["id"], *after))
            changes.append((old, new))

        if inserts:
            conn.executemany(_INSERT_STATS, inserts)
        for names, params in updates.items():
            conn.executemany(self._update_sql(names), params)
        if fts_delete:
            conn.executemany(_FTS_DELETE, fts_delete)
        if fts_insert:
            conn.executemany(_FTS_INSERT, fts_insert)
        if batch.tool_calls:
            conn.executemany(
                self._upsert_sql(
                    "tool_call_executions",
                    ("request_id", "call_index"),
                    ("request_id", "call_index", "tool_call_id", "session_id", "tool_name",
                     "input_json", "created_at"),
                ),
                list(batch.tool_calls.values()),
            )
        if batch.tool_results:
            conn.executemany(
                "UPDATE tool_call_executions SET duration_ms = ?, result_request_id = ?, "
                "is_error = COALESCE(is_error, 0) WHERE session_id = ? AND tool_call_id = ?",
                batch.tool_results,
            )
        if batch.tool_errors:
            conn.executemany(
                "UPDATE tool_call_executions SET is_error = 1 WHERE session_id = ? AND tool_call_id = ?",
                batch.tool_errors,
            )
        streams: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for request_id, stream in batch.streams.items():
            streams.setdefault(("request_id", *stream), []).append((request_id, *stream.values()))
        for names, params in streams.items():
            conn.executemany(self._upsert_sql("stream_metrics", ("request_id",), names), params)
        self._update_sessions(conn, sessions, changes)

    def _update_sessions(
        self,
        conn: sqlite3.Connection,
        sessions: Mapping[str, sqlite3.Row],
        changes: list[tuple[Any, dict[str, Any]]],
    ) -> None:
        totals: dict[str, _SessionTotals] = {}
        recompute: set[str] = set()
        for old, new in changes:
            session_id = new["session_id"]
            if old is not None and (
                old["session_id"] != session_id
                or _at(old) != _at(new)
                or (_end(old) is not None and (_end(new) is None or _end(new) < _end(old)))
                or session_id not in sessions
            ):
                # Not expressible as a difference (the session's first or
                # last moment may move back, or its latest request change):
                # recompute those sessions from their rows.
                recompute.add(old["session_id"])
                recompute.add(session_id)
                continue
            total = totals.get(session_id)
            if total is None:
                total = totals[session_id] = _SessionTotals(session_id, sessions.get(session_id))
            total.apply(old, new)
        rows = [total.params() for session_id, total in totals.items() if session_id not in recompute]
        if rows:
            conn.executemany(_WRITE_SESSION, rows)
        for session_id in sorted(recompute):
            self._recompute_session(conn, session_id)

    # -- retention ---------------------------------------------------------

    def delete_requests(self, request_ids: Iterable[str]) -> dict[str, int]:
        """
        Remove requests everywhere in the database (their rows, tool calls,
        stream metrics and search entries) in one transaction; the sessions
        they belonged to are recomputed from what is left, or removed when
        nothing is.  Returns C{{"requests": n, "sessions": n}} (sessions
        removed).  Retention uses it for the requests of deleted files.
        """
        ids = sorted(set(request_ids))
        removed = {"requests": 0, "sessions": 0}
        if not ids:
            return removed

        def run(conn: sqlite3.Connection) -> None:
            touched: set[str] = set()
            for start in range(0, len(ids), _LOOKUP_CHUNK):
                chunk = ids[start:start + _LOOKUP_CHUNK]
                marks = ", ".join("?" for _ in chunk)
                rows = conn.execute(
                    f"SELECT id, {', '.join(_FTS_COLUMNS)} FROM session_stats WHERE request_id IN ({marks})",
                    chunk,
                ).fetchall()
                # External-content index: each entry is deleted with the
                # values it was indexed with, before the row goes.
                conn.executemany(_FTS_DELETE, [tuple(row) for row in rows])
                touched.update(row["session_id"] for row in rows)
                for table in ("tool_call_executions", "stream_metrics"):
                    conn.execute(f"DELETE FROM {table} WHERE request_id IN ({marks})", chunk)
                removed["requests"] += conn.execute(
                    f"DELETE FROM session_stats WHERE request_id IN ({marks})", chunk
                ).rowcount
            for session_id in sorted(touched):
                self._recompute_session(conn, session_id)
                if conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone() is None:
                    removed["sessions"] += 1

        self._transaction(run)
        return removed

    def request_ids_idle_before(self, cutoff: str) -> list[str]:
        """
        The requests of the sessions whose last activity is before
        C{cutoff} (an ISO 8601 UTC time, as the events write it).
        """
        conn = self._connection()
        rows = conn.execute(
            "SELECT r.request_id FROM session_stats AS r JOIN sessions AS s ON s.session_id = r.session_id "
            "WHERE s.last_activity < ?",
            (cutoff,),
        )
        return [row[0] for row in rows]

    def reclaim_space(self, full_vacuum: bool = True) -> int:
        """
        Give the pages freed by deletions back to the file system, and
        return the bytes the database file (with its WAL) shrank by.

        New databases are created with C{auto_vacuum = INCREMENTAL}
        (L{connect}), so this is C{PRAGMA incremental_vacuum}: it moves no
        live data and takes about as long as the freed pages take to
        truncate.  A database created before that is converted once with a
        full C{VACUUM} (a rewrite of the whole file), and incremental from
        then on; without C{full_vacuum} such a database keeps its free pages
        for new rows (the file stops growing but does not shrink).  A
        checkpoint then truncates the WAL so the file shrinks on disk now.
        """
        conn = self._connection()
        before = _file_bytes(self.db_path)
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            # executescript steps the pragma to completion (one step of it
            # through execute() frees a single page).
            conn.executescript("PRAGMA incremental_vacuum;")
        elif full_vacuum and conn.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return max(0, before - _file_bytes(self.db_path))

    def _recompute_session(self, conn: sqlite3.Connection, session_id: str) -> None:
        count = conn.execute(
            "SELECT COUNT(*) FROM session_stats WHERE session_id = ?", (session_id,)
        ).fetchone()[0]
        if count == 0:
            conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            return
        conn.execute(_RECOMPUTE_SESSION, {"sid": session_id})


def _file_bytes(db_path: str) -> int:
    """The database file's size plus its WAL's (0 for what is missing)."""
    total = 0
    for path in (db_path, db_path + "-wal"):
        try:
            total += os.path.getsize(path)
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------
# Reading


def fts_query(text: str) -> str:
    """
    Turn user text into an FTS5 query that matches rows containing every
    word, with no FTS5 syntax (C{AND}, C{NEAR}, C{*}, quotes, column filters)
    taking effect: each word becomes a quoted string.
    """
    words = text.split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


_BODY_COLUMNS = ("request_json", "response_json")
_JSON_COLUMNS = ("request_json", "response_json", "tools_offered", "tool_results_json", "input_json")


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for column in _JSON_COLUMNS:
        if isinstance(out.get(column), str):
            try:
                out[column] = json.loads(out[column])
            except ValueError:
                pass
    return out


class SQLiteSessionStore:
    """
    Read-side queries over the session database, as plain blocking calls.
    Each call opens its own short-lived connection, so calls may come from
    any thread; WAL lets them read while the recorder writes.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = os.path.expanduser(db_path)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.db_path)

    def list_sessions(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Session rows, most recently active first."""
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT * FROM sessions ORDER BY last_activity DESC, session_id LIMIT ? OFFSET ?",
                (int(limit), int(offset)),
            ).fetchall()
            return [_row_dict(r) for r in rows]
        finally:
            conn.close()

    def get_session(self, session_id: str, include_bodies: bool = False) -> dict[str, Any] | None:
        """
        One session row with its C{requests} (oldest first) and
        C{tool_calls}; the full request/response JSON only when
        C{include_bodies} (they can be megabytes per request).
        """
        conn = self._connect()
        try:
            row = conn.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
            if row is None:
                return None
            session = _row_dict(row)
            requests = []
            for request in conn.execute(
                "SELECT * FROM session_stats WHERE session_id = ? "
                "ORDER BY COALESCE(started_at, completed_at), id",
                (session_id,),
            ):
                item = _row_dict(request)
                if not include_bodies:
                    for column in _BODY_COLUMNS:
                        item.pop(column, None)
                requests.append(item)
            session["requests"] = requests
            session["tool_calls"] = [
                _row_dict(r)
                for r in conn.execute(
                    "SELECT * FROM tool_call_executions WHERE session_id = ? "
                    "ORDER BY created_at, request_id, call_index",
                    (session_id,),
                )
            ]
            return session
        finally:
            conn.close()

    def get_request(self, request_id: str) -> dict[str, Any] | None:
        """One request row with its request and response JSON."""
        conn = self._connect()
        try:
            row = conn.execute("SELECT * FROM session_stats WHERE request_id = ?", (request_id,)).fetchone()
            return _row_dict(row) if row is not None else None
        finally:
            conn.close()

    def search(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        """
        Sessions whose request, response or thinking text contains every
        word of C{text}, best match first; each carries a C{match} with the
        best matching C{request_id} and a C{snippet}.
        """
        query = fts_query(text)
        if not query:
            return []
        conn = self._connect()
        try:
            # The hits are materialised first (FTS5 ranking functions cannot
            # run inside an aggregate); then SQLite fills the bare columns of
            # the MIN() aggregate from the row holding the minimum: the best
            # hit of each session.
            rows = conn.execute(
                """
                WITH hits AS MATERIALIZED (
                    SELECT s.session_id, s.request_id,
                           bm25(messages_fts) AS score,
                           snippet(messages_fts, -1, '[', ']', '…', 12) AS snippet
                    FROM messages_fts JOIN session_stats AS s ON s.id = messages_fts.rowid
                    WHERE messages_fts MATCH ?
                )
                SELECT hits.session_id AS hit_session, hits.request_id AS hit_request,
                       hits.snippet AS snippet, MIN(hits.score) AS score
                FROM hits
                GROUP BY hits.session_id
                ORDER BY score
                LIMIT ?
                """,
                (query, int(limit)),
            ).fetchall()
            out = []
            for hit in rows:
                session = conn.execute(
                    "SELECT * FROM sessions WHERE session_id = ?", (hit["hit_session"],)
                ).fetchone()
                if session is None:
                    continue
                item = _row_dict(session)
                item["match"] = {
                    "request_id": hit["hit_request"],
                    "snippet": hit["snippet"],
                    "score": hit["score"],
                }
                out.append(item)
            return out
        finally:
            conn.close()


class ThreadedSessionStore:
    """
    L{SQLiteSessionStore}'s queries in a thread pool (the reactor's by
    default), each returning a L{Deferred}.  The session API uses
    L{lunaroute.sessions.store.SessionStore}, the full L{ISessionStore}.
    """

    def __init__(self, store: SQLiteSessionStore, reactor: Any = None, threadpool: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.store = store
        self._reactor = reactor
        self._threadpool = threadpool

    def _run(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        pool = self._threadpool or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, fn, *args)

    def list_sessions(self, limit: int = 50, offset: int = 0) -> Deferred[list[dict[str, Any]]]:
        return self._run(self.store.list_sessions, limit, offset)

    def search(self, text: str, limit: int = 20) -> Deferred[list[dict[str, Any]]]:
        return self._run(self.store.search, text, limit)

    def get_session(self, session_id: str, include_bodies: bool = False) -> Deferred[dict[str, Any] | None]:
        return self._run(self.store.get_session, session_id, include_bodies)

    def get_request(self, request_id: str) -> Deferred[dict[str, Any] | None]:
        return self._run(self.store.get_request, request_id)
