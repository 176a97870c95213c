"""
The one read model over the session database: the session API, the UI and
the command line all ask their questions here.

L{SessionQueries} holds the queries as plain blocking methods over one
read-only SQLite connection (the command line calls them directly);
L{SessionStore} runs them off the reactor, one read-only connection per
thread of its pool, and returns L{Deferred}s.  SQLite's WAL mode lets them
read while the recorder writes on its own thread.  Every value a caller
gives reaches SQLite as a parameter; the only text put into SQL is chosen
from fixed tables here (sort columns, directions).

Errors are L{StoreError}s that know their HTTP status: a bad parameter or
a malformed search query (C{BadParameter}, 400, naming the parameter), an
unknown session or request (C{NotFound}, 404), no usable database
(C{StoreUnavailable}, 503).
"""

from __future__ import annotations

import html
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from lunaroute.dialects.session_id import is_valid_session_id
from lunaroute.errors import LunaRouteError
from lunaroute.interfaces import ISessionStore
from lunaroute.sessions.events import client_name, iso_timestamp, scrub_secrets
from lunaroute.sessions.jsonl import session_file_name
from lunaroute.sessions.sqlite import FTS_TEXT_COLUMNS, SCHEMA_VERSION, connect
from lunaroute.stats.models import context_window

__all__ = [
    "SEARCH_WINDOW",
    "SORTS",
    "BadParameter",
    "NotFound",
    "SessionFilters",
    "SessionQueries",
    "SessionStore",
    "StatsWindow",
    "StoreError",
    "NothingRecordedYet",
    "StoreUnavailable",
    "ThreadedStore",
    "make_session_store",
    "to_fts_query",
]


# --------------------------------------------------------------------------
# Errors


class StoreError(LunaRouteError):
    """
    A question the store cannot answer.  C{status} and C{error_type} say how
    the API reports it; C{param} names the offending parameter, if any.
    """

    status = 500
    error_type = "api_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadParameter(StoreError):
    """A parameter is malformed or out of range (400)."""

    status = 400
    error_type = "invalid_request_error"


class NotFound(StoreError):
    """No such session or request (404)."""

    status = 404
    error_type = "not_found_error"


class StoreUnavailable(StoreError):
    """The session database cannot be read (503)."""

    status = 503
    error_type = "store_unavailable"


class NothingRecordedYet(StoreUnavailable):
    """
    No session database yet: nothing was recorded.  The API answers 503;
    the UI shows its pages empty.
    """


# --------------------------------------------------------------------------
# Parameters


SORTS: Mapping[str, str] = {
    "started_at": "s.started_at",
    "last_activity": "s.last_activity",
    "total_tokens": "s.total_tokens",
    "cost": "s.estimated_cost_usd",
    "duration": "s.duration_ms",
    "requests": "s.request_count",
}

# Range filters: parameter stem -> column of the sessions table.
RANGES: Mapping[str, str] = {
    "input_tokens": "s.input_tokens",
    "output_tokens": "s.output_tokens",
    "total_tokens": "s.total_tokens",
    "cost": "s.estimated_cost_usd",
    "duration_ms": "s.duration_ms",
}

MAX_LIMIT = 1000

# How many of the most recently recorded matching turns a search ranks (as
# C{lunaroute-server search} does by default; see docs/performance.md).
SEARCH_WINDOW = 5_000


@dataclass(frozen=True)
class StatsWindow:
    """
    A time window over request start times, as ISO-8601 UTC strings in the
    stored format (C{since} inclusive, C{until} exclusive); C{None} is open.
    """

    since: str | None = None
    until: str | None = None


@dataclass(frozen=True)
class SessionFilters:
    """
    What C{GET /sessions} can ask for; every field C{None} means "any".
    C{ranges} maps a L{RANGES} stem to C{(min, max)}.  The window: a session
    is in it when it was active in it (C{last_activity >= since} and
    C{started_at < until}).
    """

    text_search: str | None = None
    model: str | None = None
    provider: str | None = None
    client: str | None = None
    project: str | None = None
    window: StatsWindow = field(default_factory=StatsWindow)
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    success: bool | None = None


def _iso(moment: datetime) -> str:
    return iso_timestamp(moment.timestamp())


def parse_moment(value: str, param: str, end: bool = False) -> str:
    """
    An ISO date (C{2025-06-15}) or date-time (C{2025-06-15T14:03:07Z}, an
    offset, or none for UTC) as the stored timestamp format.  A bare date
    as an end (C{end=True}) means the end of that day.

    @raise BadParameter: not an ISO date.
    """
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return _iso(day + timedelta(days=1) if end else day)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadParameter(
            f"{param} must be an ISO date (2025-06-15) or date-time (2025-06-15T14:00:00Z), got {value[:60]!r}",
            param,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _iso(moment)


def make_window(now: float, days: int | None = None, since: str | None = None, until: str | None = None) -> StatsWindow:
    """The window of the last C{days} days before C{now}, or from/to (already parsed)."""
    if days is not None:
        since = iso_timestamp(now - days * 86400.0)
    return StatsWindow(since, until)


# --------------------------------------------------------------------------
# Full-text queries

_FTS_OPERATORS = frozenset({"AND", "OR", "NOT", "NEAR"})
_COLUMN_FILTER = re.compile(r"(?:^|[\s(])-?\{?(" + "|".join(FTS_TEXT_COLUMNS) + r")\b[^:]*:")


def uses_fts_syntax(text: str) -> bool:
    """
    Whether the user wrote FTS5 syntax on purpose: quotes, a prefix C{*},
    parentheses, C{AND}/C{OR}/C{NOT}/C{NEAR} in capitals, C{^}, or a filter
    on one of the index's columns (C{response_text: foo}).
    """
    if any(mark in text for mark in ('"', "*", "(", ")", "^")):
        return True
    if any(word in _FTS_OPERATORS for word in text.split()):
        return True
    return bool(_COLUMN_FILTER.search(text))


def to_fts_query(text: str) -> str:
    """
    The FTS5 query for what a user typed: their own FTS5 syntax when they
    used some (L{uses_fts_syntax}); otherwise every word quoted, so that
    C{foo.py} or C{TypeError:} (punctuation FTS5 would refuse) match as
    written.  Empty when there is nothing to look for.
    """
    text = text.strip()
    if not text:
        return ""
    if uses_fts_syntax(text):
        return text
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())


def _fts_problem(error: sqlite3.Error) -> str | None:
    """The user-facing problem when SQLite refused a MATCH expression."""
    message = str(error)
    if message.startswith("fts5:") or "syntax error" in message or "unterminated string" in message:
        return message.removeprefix("fts5: ")
    if message.startswith("no such column"):
        column = message.split(":", 1)[-1].strip()
        return (
            f"no column {column!r} in the search index (columns: {', '.join(FTS_TEXT_COLUMNS)}); "
            "quote the text to search for it"
        )
    if "unknown special query" in message or "malformed MATCH" in message:
        return message
    return None


# Snippet markers: private-use characters that never occur in recorded text
# the markers would be confused with; turned into <mark> after escaping.
_OPEN, _CLOSE = "\ue000", "\ue001"


def _snippets(raw: str | None) -> tuple[str, str]:
    """(HTML-safe snippet with <mark>, plain snippet with [ ])."""
    raw = raw or ""
    safe = html.escape(raw, quote=True).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>")
    plain = raw.replace(_OPEN, "[").replace(_CLOSE, "]")
    return safe, plain


# --------------------------------------------------------------------------
# Rows


_JSON_COLUMNS = (
    "request_json", "response_json", "tools_offered", "tool_results_json", "input_json", "attempts_json",
)
_TEXT_COLUMNS = (
    "request_text",
    "response_text",
    "thinking_text",
    "tool_input_text",
    "tool_result_text",
    "request_json",
    "response_json",
)
# The per-request columns of a session's detail (no bodies, no texts).
_TURN_COLUMNS = (
    "id", "request_id", "session_id", "started_at", "completed_at", "model_requested", "model_used",
    "provider", "listener", "dialect", "method", "path", "streaming", "client_ip", "user_agent",
    "client", "project", "title", "status", "outcome", "success", "error", "error_type", "stop_reason",
    "partial", "input_tokens", "output_tokens", "thinking_tokens", "cache_read_tokens",
    "cache_creation_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens", "total_tokens",
    "context_tokens", "cache_hit_ratio", "thinking_estimated", "tool_call_count", "chunk_count",
    "bytes_out", "duration_ms", "ttft_ms", "provider_ms", "pre_proxy_ms", "post_proxy_ms",
    "proxy_overhead_ms", "request_bytes", "message_count", "tools_offered", "estimated_cost_usd",
    "tool_results_json", "system_sha256", "tools_sha256", "routing_rule", "attempts_json",
)
_TURNS_SQL = ", ".join(f"r.{c}" for c in _TURN_COLUMNS)


def _routing_of(turn: Mapping[str, Any]) -> dict[str, Any] | None:
    """A turn's routing (rule and attempts), or C{None} for a plain passthrough."""
    attempts = turn.get("attempts_json")
    if not attempts and not turn.get("routing_rule"):
        return None
    return {"rule": turn.get("routing_rule"), "attempts": attempts if isinstance(attempts, list) else []}


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for column in _JSON_COLUMNS:
        value = out.get(column)
        if isinstance(value, str):
            try:
                out[column] = json.loads(value)
            except ValueError:
                pass
    for column in ("success", "streaming", "partial", "cost_complete", "thinking_estimated"):
        if column in out and out[column] is not None:
            out[column] = bool(out[column])
    return out


def _turn(row: sqlite3.Row) -> dict[str, Any]:
    """A turn's row with the serving model's context window (C{None}: unknown)."""
    out = _row(row)
    out["context_window"] = context_window(out.get("model_used") or out.get("model_requested"))
    return out


# Session columns a store keeps for its own bookkeeping, never shown (the
# PostgreSQL store's time of the latest request).
INTERNAL_SESSION_COLUMNS = ("last_request_at",)


def _session(row: sqlite3.Row) -> dict[str, Any]:
    out = _row(row)
    for column in INTERNAL_SESSION_COLUMNS:
        out.pop(column, None)
    out["metadata"] = {"client": out.get("client"), "project": out.get("project"), "title": out.get("title")}
    return out


def _ordered(rows: Iterable[Any], *keys: str) -> list[dict[str, Any]]:
    """
    Result rows as dicts, sorted as SQLite's C{ORDER BY} sorts them: each
    key a column, C{-column} for descending; C{NULL} first ascending and
    last descending; text by code point.  The grouped statistics sort here
    rather than in SQL so that both stores give the same order: PostgreSQL
    puts C{NULL} the other way round and compares text by the database's
    collation.
    """
    out = [dict(r) for r in rows]
    for key in reversed(keys):
        name = key.lstrip("-")
        out.sort(
            key=lambda r: (r[name] is not None, r[name] if r[name] is not None else 0),
            reverse=key.startswith("-"),
        )
    return out


# --------------------------------------------------------------------------
# The queries


class SessionQueries:
    """
    The read model's queries, blocking, over one connection (read-only in
    the API; the command line may pass any).  Not thread-safe: one per
    thread.

    The SQL here is shared by both stores: SQLite, and PostgreSQL through a
    connection whose C{execute} takes the same C{?} placeholders and gives
    rows that index by name and position
    (L{lunaroute.sessions.postgres.PostgresQueries}).  What differs, the
    full-text search and deleting, is in the methods a store overrides:
    L{_text_filter}, L{search}, L{delete_session}; and two small SQL hooks,
    L{_week_start} (the one date computation) and L{_binary} (text by code
    point).  Everything else is SQL both understand: no date functions
    (timestamps are ISO text, cut with C{substr}), no C{NULL} order or
    text collation left to the database (explicit C{NULLS FIRST}, or
    sorted in Python by L{_ordered}), no output column names inside
    C{ORDER BY} expressions (PostgreSQL refuses them).
    """

    def __init__(self, conn: sqlite3.Connection, jsonl_dir: str | None = None) -> None:
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.jsonl_dir = jsonl_dir

    def _all(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def _match(self, sql: str, params: Any, param: str) -> list[sqlite3.Row]:
        """Run a query holding a MATCH; a malformed query is a L{BadParameter}."""
        try:
            return self._all(sql, params)
        except sqlite3.OperationalError as error:
            problem = _fts_problem(error)
            if problem is None:
                raise
            raise BadParameter(f"{param}: malformed search query: {problem}", param) from None

    # -- sessions ----------------------------------------------------------

    def list_sessions(
        self,
        filters: SessionFilters,
        sort: str = "last_activity",
        order: str = "desc",
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """
        Sessions matching C{filters}, sorted by C{sort} (a key of L{SORTS})
        in C{order} (C{asc}/C{desc}, sessions without the value last), the
        page C{limit}/C{offset}, and how many match in all.
        """
        if sort not in SORTS:
            raise BadParameter(f"sort must be one of {', '.join(SORTS)}, got {sort!r}", "sort")
        if order not in ("asc", "desc"):
            raise BadParameter(f"order must be asc or desc, got {order!r}", "order")
        where: list[str] = []
        params: list[Any] = []
        for name, column in (
            ("model", "s.model_used"),
            ("provider", "s.provider"),
            ("client", "s.client"),
            ("project", "s.project"),
        ):
            value = getattr(filters, name)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if filters.window.since is not None:
            where.append("s.last_activity >= ?")
            params.append(filters.window.since)
        if filters.window.until is not None:
            where.append("s.started_at < ?")
            params.append(filters.window.until)
        for stem, (low, high) in filters.ranges.items():
            if stem not in RANGES:
                raise BadParameter(f"no range filter on {stem!r} (ranges: {', '.join(RANGES)})", f"min_{stem}")
            bounded = RANGES[stem]
            if low is not None:
                where.append(f"{bounded} >= ?")
                params.append(low)
            if high is not None:
                where.append(f"{bounded} <= ?")
                params.append(high)
        if filters.success is not None:
            where.append("s.success = ?")
            params.append(int(filters.success))
        if filters.text_search is not None and filters.text_search.strip():
            sql, values = self._text_filter(filters.text_search)
            where.append(sql)
            params.extend(values)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        column = SORTS[sort]
        direction = "DESC" if order == "desc" else "ASC"
        total = self._match(f"SELECT COUNT(*) FROM sessions AS s {clause}", params, "text_search")[0][0]
        rows = self._match(
            f"SELECT s.* FROM sessions AS s {clause} "
            f"ORDER BY {column} IS NULL, {column} {direction}, {self._binary('s.session_id')} {direction} "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
            "text_search",
        )
        return [_session(r) for r in rows], int(total)

    def _text_filter(self, text: str) -> tuple[str, list[Any]]:
        """The condition on C{s.session_id} for sessions whose recorded text matches C{text}."""
        # The matches' rowids, then their sessions by primary key: FTS5
        # would fetch each match's whole content row (text and bodies, on
        # overflow pages) to give its session_id column.
        return (
            "s.session_id IN (SELECT r.session_id FROM session_stats AS r WHERE r.id IN "
            "(SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?))",
            [to_fts_query(text)],
        )

    def get_session(self, session_id: str) -> dict[str, Any]:
        """The session row with its C{requests} (per-turn figures, oldest first)."""
        row = self.conn.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            raise NotFound(f"no session {session_id!r}", "session_id")
        session = _session(row)
        session["requests"] = [_turn(r) for r in self._turns(session_id)]
        return session

    def _turns(self, session_id: str) -> list[sqlite3.Row]:
        return self._all(
            f"SELECT {_TURNS_SQL} FROM session_stats AS r WHERE r.session_id = ? "
            "ORDER BY COALESCE(r.started_at, r.completed_at) NULLS FIRST, r.id",
            (session_id,),
        )

    def _require_session(self, session_id: str) -> None:
        if self.conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone() is None:
            raise NotFound(f"no session {session_id!r}", "session_id")

    def turns(self, session_id: str, request_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Per-turn figures and texts of the given requests of a session (for the live tail)."""
        ids = list(request_ids)
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        rows = self._all(
            f"SELECT {_TURNS_SQL}, r.response_text, r.thinking_text FROM session_stats AS r "
            f"WHERE r.session_id = ? AND r.request_id IN ({marks}) "
            "ORDER BY COALESCE(r.started_at, r.completed_at) NULLS FIRST, r.id",
            (session_id, *ids),
        )
        return [_turn(r) for r in rows]

    def turns_after(self, session_id: str, request_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """
        Per-turn figures and texts of the session's requests recorded after
        C{request_id} (in the order they were stored), for a live tail
        reconnecting with C{Last-Event-ID}; none when that request is unknown.
        """
        rows = self._all(
            f"SELECT {_TURNS_SQL}, r.response_text, r.thinking_text FROM session_stats AS r "
            "WHERE r.session_id = ? AND r.id > (SELECT id FROM session_stats WHERE request_id = ? AND session_id = ?) "
            "ORDER BY r.id LIMIT ?",
            (session_id, request_id, session_id, limit),
        )
        return [_turn(r) for r in rows]

    def timeline(self, session_id: str) -> list[dict[str, Any]]:
        """
        The session as ordered events: per request a C{request} (at its
        start), its C{tool_call}s and a C{response} (at its end), each with
        its figures, durations and error.
        """
        self._require_session(session_id)
        rows = self._all(
            f"SELECT {_TURNS_SQL}, r.response_text, r.thinking_text FROM session_stats AS r "
            "WHERE r.session_id = ? ORDER BY COALESCE(r.started_at, r.completed_at) NULLS FIRST, r.id",
            (session_id,),
        )
        calls: dict[str, list[dict[str, Any]]] = {}
        for call in self._all(
            "SELECT * FROM tool_call_executions WHERE session_id = ? ORDER BY request_id, call_index",
            (session_id,),
        ):
            calls.setdefault(call["request_id"], []).append(_row(call))
        out: list[dict[str, Any]] = []
        for r in rows:
            turn = _row(r)
            out.append(
                {
                    "type": "request",
                    "at": turn["started_at"],
                    "request_id": turn["request_id"],
                    "model": turn["model_requested"],
                    "message_count": turn["message_count"],
                    "request_bytes": turn["request_bytes"],
                    "tools_offered": turn["tools_offered"],
                    "tool_results": turn["tool_results_json"] or [],
                    "system_sha256": turn["system_sha256"],
                    "tools_sha256": turn["tools_sha256"],
                }
            )
            for tool_call in calls.get(turn["request_id"], []):
                out.append(
                    {
                        "type": "tool_call",
                        "at": tool_call["created_at"],
                        "request_id": turn["request_id"],
                        "index": tool_call["call_index"],
                        "tool_call_id": tool_call["tool_call_id"],
                        "tool_name": tool_call["tool_name"],
                        "input": tool_call["input_json"],
                        "duration_ms": tool_call["duration_ms"],
                        "result_request_id": tool_call["result_request_id"],
                        "is_error": bool(tool_call["is_error"]) if tool_call["is_error"] is not None else None,
                    }
                )
            out.append(
                {
                    "type": "response",
                    "at": turn["completed_at"],
                    "request_id": turn["request_id"],
                    "model": turn["model_used"] or turn["model_requested"],
                    "dialect": turn["dialect"],
                    "status": turn["status"],
                    "outcome": turn["outcome"],
                    "success": turn["success"],
                    "error": turn["error"],
                    "error_type": turn["error_type"],
                    "routing": _routing_of(turn),
                    "stop_reason": turn["stop_reason"],
                    "text": turn["response_text"],
                    "thinking": turn["thinking_text"],
                    "tokens": {
                        "input": turn["input_tokens"],
                        "output": turn["output_tokens"],
                        "thinking": turn["thinking_tokens"],
                        "cache_read": turn["cache_read_tokens"],
                        "cache_write_5m": turn["cache_creation_5m_tokens"],
                        "cache_write_1h": turn["cache_creation_1h_tokens"],
                        "context": turn["context_tokens"],
                    },
                    "context_window": context_window(turn["model_used"] or turn["model_requested"]),
                    "cache_hit_ratio": turn["cache_hit_ratio"],
                    "cost_usd": turn["estimated_cost_usd"],
                    "duration_ms": turn["duration_ms"],
                    "ttft_ms": turn["ttft_ms"],
                    "provider_ms": turn["provider_ms"],
                    "proxy_overhead_ms": turn["proxy_overhead_ms"],
                    "tool_call_count": turn["tool_call_count"],
                }
            )
        return out

    def raw(self, session_id: str, request_id: str) -> dict[str, Any]:
        """The request and response bodies as recorded (credentials masked)."""
        row = self.conn.execute(
            "SELECT request_id, session_id, started_at, completed_at, method, path, dialect, status, "
            "request_json, response_json FROM session_stats WHERE request_id = ? AND session_id = ?",
            (request_id, session_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no request {request_id!r} in session {session_id!r}", "request_id")
        out = _row(row)
        # Masked when recorded; masked again in case the database was filled
        # by something else.
        out["request_json"] = scrub_secrets(out["request_json"])
        out["response_json"] = scrub_secrets(out["response_json"])
        return out

    def tools(self, session_id: str) -> list[dict[str, Any]]:
        """Per tool: calls, errors, timed calls, total and average duration."""
        self._require_session(session_id)
        rows = self._all(
            "SELECT tool_name, COUNT(*) AS calls, COUNT(CASE WHEN is_error = 1 THEN 1 END) AS errors, "
            "COUNT(duration_ms) AS timed_calls, SUM(duration_ms) AS total_duration_ms, "
            "AVG(duration_ms) AS avg_duration_ms, MAX(duration_ms) AS max_duration_ms "
            "FROM tool_call_executions WHERE session_id = ? GROUP BY tool_name",
            (session_id,),
        )
        return _ordered(rows, "-calls", "tool_name")

    def export_rows(self, session_id: str) -> dict[str, Any]:
        """The session with every request in full (bodies and texts), for export."""
        session = self.get_session(session_id)
        rows = self._all(
            "SELECT r.request_id, r.request_text, r.response_text, r.thinking_text, r.request_json, "
            "r.response_json FROM session_stats AS r WHERE r.session_id = ?",
            (session_id,),
        )
        bodies = {r["request_id"]: _row(r) for r in rows}
        for turn in session["requests"]:
            extra = bodies.get(turn["request_id"], {})
            for column in ("request_text", "response_text", "thinking_text", "request_json", "response_json"):
                value = extra.get(column)
                turn[column] = scrub_secrets(value) if column.endswith("_json") else value
        session["tool_calls"] = self._tool_calls(session_id)
        return session

    def _tool_calls(self, session_id: str) -> list[dict[str, Any]]:
        rows = [
            _row(r)
            for r in self._all("SELECT * FROM tool_call_executions WHERE session_id = ?", (session_id,))
        ]
        return _ordered(rows, "created_at", "request_id", "call_index")

    def tool_calls(self, session_id: str) -> list[dict[str, Any]]:
        """
        The session's tool calls, one row each (the request that made it,
        name, input, duration, the request that brought its result back,
        whether it failed), oldest first.  Reads no request row: cheap
        however big the recorded bodies are, unlike L{timeline}.
        """
        self._require_session(session_id)
        return self._tool_calls(session_id)

    # -- search ------------------------------------------------------------

    def search(
        self, query: str, limit: int = 20, param: str = "q", window: int | None = SEARCH_WINDOW
    ) -> list[dict[str, Any]]:
        """
        The requests (turns) whose recorded text matches C{query}, best
        first: session, request, C{snippet} (HTML-escaped, matches in
        C{<mark>}), C{snippet_text} (plain, matches in C{[ ]}) and C{rank}
        (FTS5 bm25: lower is better).  Ranked among the C{window} most
        recently recorded matching turns (every match when C{window} is
        C{None} or 0): bm25 costs about a microsecond per match, and a word
        of a client's system prompt matches every turn.
        """
        fts = to_fts_query(query)
        if not fts:
            raise BadParameter(f"{param} must not be empty", param)
        low = 0
        if window:
            # The window's oldest turn: FTS5 walks the matches newest first
            # and stops there, ranking nothing.
            edge = self._match(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                (fts, int(window)),
                param,
            )
            low = edge[0][0] + 1 if edge else 0
        # Rank (bm25 only), then make snippets for the few kept: snippet()
        # in the ranking query would run for every match of a common word.
        top = self._match(
            "SELECT rowid AS id, bm25(messages_fts) AS score FROM messages_fts "
            "WHERE messages_fts MATCH ? AND rowid >= ? ORDER BY score LIMIT ?",
            (fts, low, limit),
            param,
        )
        if not top:
            return []
        ids = [t["id"] for t in top]
        marks = ", ".join("?" for _ in ids)
        info = {
            r["id"]: r
            for r in self._all(
                "SELECT r.id, r.session_id, r.request_id, r.started_at, r.model_used, s.title, s.client, s.project "
                "FROM session_stats AS r LEFT JOIN sessions AS s ON s.session_id = r.session_id "
                f"WHERE r.id IN ({marks})",
                ids,
            )
        }
        # All the snippets in one pass over the kept hits' rowid range: a
        # query per hit would expand a prefix query (foo*) each time.  The
        # unary + keeps the IN list from FTS5, which would otherwise run the
        # match once per listed rowid.
        snippets = {
            r[0]: r[1]
            for r in self._all(
                f"SELECT rowid, snippet(messages_fts, -1, '{_OPEN}', '{_CLOSE}', '…', 16) FROM messages_fts "
                f"WHERE messages_fts MATCH ? AND rowid >= ? AND rowid <= ? AND +rowid IN ({marks})",
                (fts, min(ids), max(ids), *ids),
            )
        }
        hits = []
        for ranked in top:
            row = info.get(ranked["id"])
            if row is None:
                continue
            hit = {k: row[k] for k in row.keys() if k != "id"}
            hit["snippet"], hit["snippet_text"] = _snippets(snippets.get(ranked["id"]) or "")
            hit["rank"] = ranked["score"]
            hits.append(hit)
        return hits

    # -- statistics --------------------------------------------------------

    def _window(self, window: StatsWindow, column: str = "r.started_at") -> tuple[str, list[Any]]:
        where, params = [], []
        if window.since is not None:
            where.append(f"{column} >= ?")
            params.append(window.since)
        if window.until is not None:
            where.append(f"{column} < ?")
            params.append(window.until)
        return (f"WHERE {' AND '.join(where)}" if where else ""), params

    _TOKEN_SUMS = (
        "COUNT(*) AS requests, "
        "COALESCE(SUM(r.input_tokens), 0) AS input_tokens, "
        "COALESCE(SUM(r.output_tokens), 0) AS output_tokens, "
        "COALESCE(SUM(r.thinking_tokens), 0) AS thinking_tokens, "
        "COALESCE(SUM(r.cache_read_tokens), 0) AS cache_read_tokens, "
        "COALESCE(SUM(r.cache_creation_5m_tokens), 0) AS cache_write_5m_tokens, "
        "COALESCE(SUM(r.cache_creation_1h_tokens), 0) AS cache_write_1h_tokens, "
        "COALESCE(SUM(r.total_tokens), 0) AS total_tokens, "
        "SUM(r.estimated_cost_usd) AS cost_usd"
    )

    def stats_overview(self, window: StatsWindow) -> dict[str, Any]:
        """Totals over the window: sessions, requests, outcomes, tokens by kind, cost, latencies."""
        where, params = self._window(window)
        row = self.conn.execute(
            f"SELECT {self._TOKEN_SUMS}, COUNT(DISTINCT r.session_id) AS sessions, "
            "COUNT(CASE WHEN r.success = 1 THEN 1 END) AS successful_requests, "
            "COUNT(CASE WHEN r.success = 0 THEN 1 END) AS failed_requests, "
            "COUNT(r.estimated_cost_usd) AS priced_requests, "
            "COALESCE(SUM(r.tool_call_count), 0) AS tool_calls, "
            "AVG(r.duration_ms) AS avg_duration_ms, AVG(r.ttft_ms) AS avg_ttft_ms, "
            "AVG(r.provider_ms) AS avg_provider_ms, AVG(r.proxy_overhead_ms) AS avg_proxy_overhead_ms, "
            "SUM(r.cache_read_tokens) * 1.0 / NULLIF(SUM(r.context_tokens), 0) AS cache_hit_ratio "
            f"FROM session_stats AS r {where}",
            params,
        ).fetchone()
        return {**dict(row), **_window_dict(window)}

    def stats_tokens(self, window: StatsWindow) -> dict[str, Any]:
        """Tokens by kind, per UTC day."""
        where, params = self._window(window)
        rows = self._all(
            f"SELECT substr(r.started_at, 1, 10) AS day, {self._TOKEN_SUMS} "
            f"FROM session_stats AS r {where} GROUP BY day",
            params,
        )
        return {"days": _ordered(rows, "day"), **_window_dict(window)}

    def stats_costs(self, window: StatsWindow) -> dict[str, Any]:
        """Cost per UTC day and per model."""
        where, params = self._window(window)
        days = self._all(
            "SELECT substr(r.started_at, 1, 10) AS day, SUM(r.estimated_cost_usd) AS cost_usd, "
            "COUNT(*) AS requests, COUNT(r.estimated_cost_usd) AS priced_requests "
            f"FROM session_stats AS r {where} GROUP BY day",
            params,
        )
        models = self._all(
            "SELECT COALESCE(r.model_used, r.model_requested) AS model, SUM(r.estimated_cost_usd) AS cost_usd, "
            "COUNT(*) AS requests, COUNT(r.estimated_cost_usd) AS priced_requests "
            f"FROM session_stats AS r {where} GROUP BY model",
            params,
        )
        total = sum(r["cost_usd"] or 0.0 for r in days)
        return {
            "total_cost_usd": total,
            "days": _ordered(days, "day"),
            "models": _ordered(models, "-cost_usd", "model"),
            **_window_dict(window),
        }

    def stats_spending(self, window: StatsWindow) -> dict[str, Any]:
        """Total spend, per day with the running total, per provider, and what had no price."""
        where, params = self._window(window)
        days = self._all(
            "SELECT substr(r.started_at, 1, 10) AS day, COALESCE(SUM(r.estimated_cost_usd), 0) AS cost_usd "
            f"FROM session_stats AS r {where} GROUP BY day",
            params,
        )
        running = 0.0
        out_days = []
        for r in _ordered(days, "day"):
            running += r["cost_usd"]
            out_days.append({"day": r["day"], "cost_usd": r["cost_usd"], "cumulative_usd": running})
        providers = self._all(
            "SELECT r.provider AS provider, COALESCE(SUM(r.estimated_cost_usd), 0) AS cost_usd, COUNT(*) AS requests "
            f"FROM session_stats AS r {where} GROUP BY r.provider",
            params,
        )
        unpriced = self.conn.execute(
            f"SELECT COUNT(*) FROM session_stats AS r {where} "
            + ("AND" if where else "WHERE")
            + " r.estimated_cost_usd IS NULL",
            params,
        ).fetchone()[0]
        return {
            "total_cost_usd": running,
            "days": out_days,
            "providers": _ordered(providers, "-cost_usd", "provider"),
            "unpriced_requests": unpriced,
            **_window_dict(window),
        }

    def stats_models(self, window: StatsWindow) -> dict[str, Any]:
        """Per model: requests, sessions, tokens by kind, cost, average latencies, errors."""
        where, params = self._window(window)
        rows = self._all(
            f"SELECT COALESCE(r.model_used, r.model_requested) AS model, r.provider AS provider, "
            f"{self._TOKEN_SUMS}, COUNT(DISTINCT r.session_id) AS sessions, "
            "COUNT(CASE WHEN r.success = 0 THEN 1 END) AS failed_requests, "
            "AVG(r.ttft_ms) AS avg_ttft_ms, AVG(r.provider_ms) AS avg_provider_ms "
            f"FROM session_stats AS r {where} GROUP BY model, r.provider",
            params,
        )
        return {"models": _ordered(rows, "-requests", "model", "provider"), **_window_dict(window)}

    def stats_hours(self, window: StatsWindow) -> dict[str, Any]:
        """Requests, tokens and cost per hour of the day (UTC, 0 to 23; hours without any included)."""
        where, params = self._window(window)
        rows = {
            r["hour"]: dict(r)
            for r in self._all(
                "SELECT CAST(substr(r.started_at, 12, 2) AS INTEGER) AS hour, COUNT(*) AS requests, "
                "COALESCE(SUM(r.total_tokens), 0) AS total_tokens, SUM(r.estimated_cost_usd) AS cost_usd "
                f"FROM session_stats AS r {where} GROUP BY hour",
                params,
            )
        }
        hours = [rows.get(h, {"hour": h, "requests": 0, "total_tokens": 0, "cost_usd": None}) for h in range(24)]
        return {"hours": hours, **_window_dict(window)}

    def stats_tools(self, window: StatsWindow) -> dict[str, Any]:
        """Per tool over the window: calls, errors, sessions, total and average duration."""
        where, params = self._window(window, "t.created_at")
        rows = self._all(
            "SELECT t.tool_name AS tool_name, COUNT(*) AS calls, "
            "COUNT(CASE WHEN t.is_error = 1 THEN 1 END) AS errors, COUNT(DISTINCT t.session_id) AS sessions, "
            "COUNT(t.duration_ms) AS timed_calls, SUM(t.duration_ms) AS total_duration_ms, "
            "AVG(t.duration_ms) AS avg_duration_ms "
            f"FROM tool_call_executions AS t {where} GROUP BY t.tool_name",
            params,
        )
        return {"tools": _ordered(rows, "-calls", "tool_name"), **_window_dict(window)}

    _BUCKET_SUMS = (
        "COUNT(*) AS requests, COUNT(DISTINCT r.session_id) AS sessions, "
        "COUNT(CASE WHEN r.success = 1 THEN 1 END) AS successful_requests, "
        "COUNT(CASE WHEN r.success = 0 THEN 1 END) AS failed_requests, "
        "COALESCE(SUM(r.input_tokens), 0) AS input_tokens, "
        "COALESCE(SUM(r.output_tokens), 0) AS output_tokens, "
        "COALESCE(SUM(r.cache_read_tokens), 0) AS cache_read_tokens, "
        "COALESCE(SUM(r.cache_creation_tokens), 0) AS cache_write_tokens, "
        "COALESCE(SUM(r.total_tokens), 0) AS total_tokens, "
        "SUM(r.estimated_cost_usd) AS cost_usd, COUNT(r.estimated_cost_usd) AS priced_requests, "
        "AVG(r.duration_ms) AS avg_duration_ms, AVG(r.ttft_ms) AS avg_ttft_ms, "
        "AVG(r.provider_ms) AS avg_provider_ms, AVG(r.proxy_overhead_ms) AS avg_proxy_overhead_ms"
    )

    def _binary(self, expression: str) -> str:
        """
        C{expression} compared by code point, whatever the database's
        collation: SQLite's text comparison already is (C{BINARY}); the
        PostgreSQL store overrides it.
        """
        return expression

    def _week_start(self, day: str) -> str:
        """
        SQL for the Monday starting the week of C{day} (SQL giving a
        C{YYYY-MM-DD} text), as C{YYYY-MM-DD} text: SQLite's C{date()}; the
        PostgreSQL store overrides it.
        """
        return f"date({day}, 'weekday 0', '-6 days')"

    def _periods(self) -> dict[str, str]:
        """
        Bucket keys of L{stats_usage}: an hour, a day, the Monday starting a
        week, a month (UTC, from the stored ISO start time).
        """
        day = "substr(r.started_at, 1, 10)"
        return {
            "hours": "substr(r.started_at, 1, 13) || ':00'",
            "days": day,
            "weeks": self._week_start(day),
            "months": "substr(r.started_at, 1, 7)",
        }

    def _buckets(self, key: str, window: StatsWindow) -> list[dict[str, Any]]:
        where, params = self._window(window)
        rows = self._all(
            f"SELECT {key} AS period, {self._BUCKET_SUMS} FROM session_stats AS r {where} GROUP BY period",
            params,
        )
        out = []
        for bucket in _ordered(rows, "period"):
            judged = bucket["successful_requests"] + bucket["failed_requests"]
            bucket["success_rate"] = bucket["successful_requests"] / judged if judged else None
            out.append(bucket)
        return out

    def stats_usage(self, window: StatsWindow) -> dict[str, Any]:
        """
        Usage per UTC hour, day, week (its Monday) and month: requests,
        sessions, outcomes and success rate, tokens by kind, cost, average
        latencies (duration, TTFT, provider, proxy overhead).
        """
        return {period: self._buckets(key, window) for period, key in self._periods().items()} | _window_dict(window)

    def _grouped(self, column: str, name: str, window: StatsWindow) -> list[dict[str, Any]]:
        where, params = self._window(window)
        rows = self._all(
            f"SELECT {column} AS group_key, {self._BUCKET_SUMS}, MAX(r.started_at) AS last_seen "
            "FROM session_stats AS r LEFT JOIN sessions AS s ON s.session_id = r.session_id "
            f"{where} GROUP BY group_key",
            params,
        )
        # Costliest first (descending puts unpriced groups last), then busiest.
        return [
            {name: r["group_key"], **{k: v for k, v in r.items() if k != "group_key"}}
            for r in _ordered(rows, "-cost_usd", "-requests", "group_key")
        ]

    def stats_clients(self, window: StatsWindow) -> dict[str, Any]:
        """Per client (Claude Code, Codex, an SDK...): requests, sessions, outcomes, tokens, cost, latencies."""
        # The session's client, not the request's column: the request rows'
        # late columns sit after their bodies, and reading them walks every
        # body's overflow pages (slow on big sessions).
        return {"clients": self._grouped("s.client", "client", window), **_window_dict(window)}

    def stats_projects(self, window: StatsWindow) -> dict[str, Any]:
        """
        Per project (the working directory the client reported, the
        session's: every turn of a session counts for its project): the
        same figures as per client.
        """
        return {"projects": self._grouped("s.project", "project", window), **_window_dict(window)}

    # Upper bounds (ms) of the request-duration histogram; the last bucket is open.
    DURATION_BUCKETS_MS = (1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000)

    def stats_durations(self, window: StatsWindow) -> dict[str, Any]:
        """A histogram of request durations: per bucket C{[from_ms, to_ms)} its request count."""
        where, params = self._window(window)
        edges = self.DURATION_BUCKETS_MS
        cases = " ".join(f"WHEN r.duration_ms < {bound} THEN {index}" for index, bound in enumerate(edges))
        counts = {
            r["bucket"]: r["requests"]
            for r in self._all(
                f"SELECT CASE {cases} ELSE {len(edges)} END AS bucket, COUNT(*) AS requests "
                f"FROM session_stats AS r {where} " + ("AND" if where else "WHERE") + " r.duration_ms IS NOT NULL "
                "GROUP BY bucket",
                params,
            )
        }
        lows = (0, *edges)
        highs: tuple[int | None, ...] = (*edges, None)
        buckets = [
            {"from_ms": low, "to_ms": high, "requests": counts.get(index, 0)}
            for index, (low, high) in enumerate(zip(lows, highs, strict=True))
        ]
        return {"buckets": buckets, **_window_dict(window)}

    BLOCK_SECS = 5 * 3600

    def stats_blocks(self, window: StatsWindow) -> dict[str, Any]:
        """
        Five-hour usage blocks (as the providers' subscription limits count
        them): a block starts at the whole UTC hour of the first request
        after the previous block ended and lasts five hours.  Each block:
        C{start}, C{end}, its requests, tokens and cost, C{last_request}.
        Blocks are built from the window's first request on, so give a
        window reaching back before the block you want (a day does).
        """
        where, params = self._window(window)
        rows = self._all(
            "SELECT r.started_at AS started_at, COALESCE(r.total_tokens, 0) AS total_tokens, "
            "r.estimated_cost_usd AS cost_usd FROM session_stats AS r "
            f"{where} " + ("AND" if where else "WHERE") + " r.started_at IS NOT NULL ORDER BY r.started_at",
            params,
        )
        blocks: list[dict[str, Any]] = []
        end = None
        for r in rows:
            moment = datetime.fromisoformat(r["started_at"].replace("Z", "+00:00"))
            if end is None or moment >= end:
                start = moment.replace(minute=0, second=0, microsecond=0)
                end = start + timedelta(seconds=self.BLOCK_SECS)
                blocks.append(
                    {"start": _iso(start), "end": _iso(end), "requests": 0, "total_tokens": 0, "cost_usd": None}
                )
            block = blocks[-1]
            block["requests"] += 1
            block["total_tokens"] += r["total_tokens"]
            if r["cost_usd"] is not None:
                block["cost_usd"] = (block["cost_usd"] or 0.0) + r["cost_usd"]
            block["last_request"] = r["started_at"]
        return {"blocks": blocks, **_window_dict(window)}

    def recent_sessions(self, limit: int, window: StatsWindow) -> list[dict[str, Any]]:
        """The most recently active sessions."""
        rows, _ = self.list_sessions(SessionFilters(window=window), "last_activity", "desc", limit, 0)
        return rows

    def user_agents(self, window: StatsWindow) -> dict[str, Any]:
        """Per client and user agent: requests, sessions, tokens, cost, last seen."""
        where, params = self._window(window)
        rows = self._all(
            "SELECT r.user_agent AS user_agent, COUNT(*) AS requests, "
            "COUNT(DISTINCT r.session_id) AS sessions, COALESCE(SUM(r.total_tokens), 0) AS total_tokens, "
            "SUM(r.estimated_cost_usd) AS cost_usd, MAX(r.started_at) AS last_seen "
            f"FROM session_stats AS r {where} GROUP BY r.user_agent",
            params,
        )
        # The client from the user agent here, not the stored column: rows
        # recorded before schema 4 have none.
        return {
            "user_agents": [
                {"client": client_name(r["user_agent"]), **r} for r in _ordered(rows, "-requests", "user_agent")
            ],
            **_window_dict(window),
        }

    def models(self, window: StatsWindow) -> dict[str, Any]:
        """The models seen (for filter lists), with their provider and request count."""
        where, params = self._window(window)
        rows = self._all(
            "SELECT COALESCE(r.model_used, r.model_requested) AS model, r.provider AS provider, "
            "COUNT(*) AS requests, MAX(r.started_at) AS last_seen "
            f"FROM session_stats AS r {where} GROUP BY model, r.provider",
            params,
        )
        return {"models": _ordered(rows, "-requests", "model", "provider"), **_window_dict(window)}

    # -- deleting ----------------------------------------------------------

    def delete_session(self, session_id: str) -> dict[str, Any]:
        """
        Remove a session everywhere: its rows (sessions, requests, tool
        calls, stream metrics), its search entries and its JSONL files.
        Needs a writable connection.  Returns what was removed.
        """
        conn = self.conn
        self._require_session(session_id)
        conn.execute("BEGIN IMMEDIATE")
        try:
            fts_rows = conn.execute(
                "SELECT id, request_id, session_id, request_text, response_text, thinking_text, "
                "tool_input_text, tool_result_text FROM session_stats WHERE session_id = ?",
                (session_id,),
            ).fetchall()
            conn.executemany(
                "INSERT INTO messages_fts (messages_fts, rowid, request_id, session_id, request_text, "
                "response_text, thinking_text, tool_input_text, tool_result_text) "
                "VALUES ('delete', ?, ?, ?, ?, ?, ?, ?, ?)",
                [tuple(r) for r in fts_rows],
            )
            removed: dict[str, Any] = {
                "search_entries": len(fts_rows),
                "requests": conn.execute("DELETE FROM session_stats WHERE session_id = ?", (session_id,)).rowcount,
                "tool_calls": conn.execute(
                    "DELETE FROM tool_call_executions WHERE session_id = ?", (session_id,)
                ).rowcount,
                "stream_metrics": conn.execute(
                    "DELETE FROM stream_metrics WHERE session_id = ?", (session_id,)
                ).rowcount,
                "sessions": conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,)).rowcount,
            }
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        removed["jsonl_files"] = self._delete_files(session_id)
        return {"session_id": session_id, "removed": removed}

    def _delete_files(self, session_id: str) -> list[str]:
        """
        Remove the session's JSONL files (one file per session and start
        day, plain or compressed by retention).
        """
        if not self.jsonl_dir or not os.path.isdir(self.jsonl_dir):
            return []
        plain = session_file_name(session_id)
        removed = []
        for day in sorted(os.listdir(self.jsonl_dir)):
            folder = os.path.join(self.jsonl_dir, day)
            if os.path.islink(folder) or not os.path.isdir(folder):
                continue  # never through a symlink out of the sessions folder
            for name in (plain, plain + ".zst"):
                path = os.path.join(folder, name)
                if os.path.isfile(path) or os.path.islink(path):
                    os.remove(path)  # a symlink itself, never what it points to
                    removed.append(os.path.join(day, name))
        return removed


def _window_dict(window: StatsWindow) -> dict[str, Any]:
    return {"window": {"from": window.since, "to": window.until}}


# --------------------------------------------------------------------------
# Off the reactor


def open_read_only(db_path: str) -> sqlite3.Connection:
    """
    A read-only connection to the session database (C{mode=ro}), usable
    from the thread that opened it and others in turn.

    @raise StoreUnavailable: no database there, or not one this code reads.
    """
    if not os.path.exists(db_path):
        raise NothingRecordedYet(f"no session database at {db_path} yet (nothing recorded)")
    try:
        conn = sqlite3.connect(
            f"file:{quote(os.path.abspath(db_path))}?mode=ro", uri=True, timeout=10.0, check_same_thread=False
        )
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot read the session database: {exc}") from None
    if version == 0:
        conn.close()  # a database the gateway is creating: empty so far
        raise NothingRecordedYet(f"the session database at {db_path} is being created (nothing recorded)")
    if version != SCHEMA_VERSION:
        conn.close()
        raise StoreUnavailable(
            f"the session database has schema version {version}, this LunaRoute reads {SCHEMA_VERSION} "
            "(the gateway upgrades it when recording starts)"
        )
    return conn


@implementer(ISessionStore)
class ThreadedStore:
    """
    L{ISessionStore} over a L{SessionQueries}: each query runs in
    C{threadpool} (the reactor's by default) and fires a L{Deferred} on the
    reactor.  A store says how a thread gets its queries object and maps
    its database's errors (L{_call}); the rest is shared.

    @param reactor: provides C{callFromThread} and C{seconds} (the clock
        for C{days} windows).
    @param threadpool: where queries run; a pool with an C{inline}
        attribute (L{lunaroute.sessions.recorder.InlineThreadPool}) runs them
        at once, for tests.
    """

    def __init__(self, reactor: Any = None, threadpool: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self._threadpool = threadpool

    # -- plumbing ----------------------------------------------------------

    def _call(self, method: str, *args: Any) -> Any:
        """Run C{SessionQueries.<method>(*args)} in this thread; a store's own."""
        raise NotImplementedError

    def _run(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        pool = self._threadpool if self._threadpool is not None else self.reactor.getThreadPool()
        if getattr(pool, "inline", False):
            try:
                return succeed(fn(*args))
            except BaseException:
                return fail(Failure())
        return deferToThreadPool(self.reactor, pool, fn, *args)

    def _query(self, method: str, *args: Any) -> Deferred[Any]:
        return self._run(self._call, method, *args)

    def now(self) -> float:
        """The store's clock (the reactor's), in epoch seconds."""
        return float(self.reactor.seconds())

    def close(self) -> None:
        """Release what the store holds open."""

    # -- ISessionStore -----------------------------------------------------

    def list_sessions(
        self,
        filters: SessionFilters | None = None,
        sort: str = "last_activity",
        order: str = "desc",
        limit: int = 50,
        offset: int = 0,
    ) -> Deferred[tuple[list[dict[str, Any]], int]]:
        return self._query("list_sessions", filters or SessionFilters(), sort, order, limit, offset)

    def search(self, text: str, limit: int = 20) -> Deferred[list[dict[str, Any]]]:
        return self._query("search", text, limit)

    def get_session(self, session_id: str) -> Deferred[dict[str, Any]]:
        return self._query("get_session", session_id)

    def timeline(self, session_id: str) -> Deferred[list[dict[str, Any]]]:
        return self._query("timeline", session_id)

    def raw(self, session_id: str, request_id: str) -> Deferred[dict[str, Any]]:
        return self._query("raw", session_id, request_id)

    def tools(self, session_id: str) -> Deferred[list[dict[str, Any]]]:
        return self._query("tools", session_id)

    def export(self, session_id: str) -> Deferred[dict[str, Any]]:
        return self._query("export_rows", session_id)

    def turns(self, session_id: str, request_ids: list[str]) -> Deferred[list[dict[str, Any]]]:
        return self._query("turns", session_id, request_ids)

    def tool_calls(self, session_id: str) -> Deferred[list[dict[str, Any]]]:
        return self._query("tool_calls", session_id)

    def turns_after(self, session_id: str, request_id: str) -> Deferred[list[dict[str, Any]]]:
        return self._query("turns_after", session_id, request_id)

    def stats(self, name: str, window: StatsWindow) -> Deferred[dict[str, Any]]:
        if name not in STATS:
            raise ValueError(f"unknown statistics {name!r}")
        return self._query(STATS[name], window)

    def recent_sessions(self, limit: int, window: StatsWindow) -> Deferred[list[dict[str, Any]]]:
        return self._query("recent_sessions", limit, window)

    def delete_session(self, session_id: str) -> Deferred[dict[str, Any]]:
        return self._query("delete_session", session_id)


class SessionStore(ThreadedStore):
    """
    L{ISessionStore} over the SQLite session database: each query runs on
    its pool thread's own read-only connection.

    @param db_path: the database the SQLite writer fills.
    @param jsonl_dir: the JSONL folder, whose files L{delete_session} removes.
    """

    def __init__(
        self, db_path: str, reactor: Any = None, threadpool: Any = None, jsonl_dir: str | None = None
    ) -> None:
        super().__init__(reactor, threadpool)
        self.db_path = os.path.expanduser(db_path)
        self.jsonl_dir = os.path.expanduser(jsonl_dir) if jsonl_dir else None
        self._local = threading.local()

    def _queries(self) -> SessionQueries:
        queries = getattr(self._local, "queries", None)
        if queries is None:
            queries = SessionQueries(open_read_only(self.db_path), self.jsonl_dir)
            self._local.queries = queries
        return queries

    def _call(self, method: str, *args: Any) -> Any:
        queries = self._queries()
        try:
            return getattr(queries, method)(*args)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StoreUnavailable(f"the session database is busy: {exc}") from None
            # A replaced or corrupt file: reopen on the next query.
            self._local.queries = None
            queries.conn.close()
            raise

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        queries = getattr(self._local, "queries", None)
        if queries is not None:
            queries.conn.close()
            self._local.queries = None

    def delete_session(self, session_id: str) -> Deferred[dict[str, Any]]:
        def delete() -> dict[str, Any]:
            self._queries()  # the database must exist and be current
            conn = connect(self.db_path)
            try:
                return SessionQueries(conn, self.jsonl_dir).delete_session(session_id)
            finally:
                conn.close()

        return self._run(delete)


def make_session_store(recording: Any, reactor: Any = None) -> ThreadedStore | None:
    """
    The read model the session API, the UI and reports use for these
    C{session_recording} settings: the PostgreSQL store when
    C{postgres.enabled}, else the SQLite database when C{sqlite.enabled},
    else C{None}.
    """
    if not recording.enabled:
        return None
    jsonl_dir = os.path.expanduser(recording.jsonl_dir) if recording.jsonl_enabled else None
    postgres = getattr(recording, "postgres", None)
    if postgres is not None and postgres.enabled:
        from lunaroute.sessions.postgres import PostgresSessionStore

        return PostgresSessionStore(postgres, reactor=reactor, jsonl_dir=jsonl_dir)
    if recording.sqlite_enabled:
        return SessionStore(os.path.expanduser(recording.db_path), reactor=reactor, jsonl_dir=jsonl_dir)
    return None


# Statistics by name (the API's /api/stats/<name>, /api/user-agents,
# /api/models) -> SessionQueries method.
STATS: Mapping[str, str] = {
    "overview": "stats_overview",
    "tokens": "stats_tokens",
    "tools": "stats_tools",
    "costs": "stats_costs",
    "models": "stats_models",
    "hours": "stats_hours",
    "spending": "stats_spending",
    "user-agents": "user_agents",
    "model-list": "models",
    "usage": "stats_usage",
    "clients": "stats_clients",
    "projects": "stats_projects",
    "durations": "stats_durations",
    "blocks": "stats_blocks",
}


def check_ids(*values: tuple[str, str]) -> None:
    """
    Each C{(param, value)} must be a safe id (letters, digits, C{-}, C{_};
    1 to 255): checked before an id touches a path or a query.

    @raise BadParameter: naming the first bad one.
    """
    for param, value in values:
        if not is_valid_session_id(value):
            raise BadParameter(f"{param} must be 1 to 255 letters, digits, '-' or '_'", param)

