"""
Session events in PostgreSQL: the store a team's gateways share.

The same tables and columns as the SQLite store (L{lunaroute.sessions.sqlite}),
so the one read model (L{lunaroute.sessions.store.SessionQueries}) answers
over either; only the full-text search differs: a C{tsvector} column
generated from the turn's texts, a GIN index over it, C{ts_rank_cd} for the
order and C{ts_headline} for the snippets.

Many gateways write the same session at once (a load balancer sends a
session's turns to different instances).  Each batch is one transaction:

 1. the batch's request rows are locked (C{SELECT ... FOR UPDATE}) or
    inserted (C{INSERT ... ON CONFLICT DO NOTHING}; one that another
    gateway inserted meanwhile is locked and updated instead), in request id
    order so two batches never wait on each other in a circle;
 2. each request row is brought up to date, and the difference between its
    stored and new values computed (replaying an event changes nothing:
    writes are keyed by request id);
 3. each session row gets those differences in one atomic
    C{INSERT ... ON CONFLICT DO UPDATE SET x = sessions.x + EXCLUDED.x}
    (first/last moments with C{LEAST}/C{GREATEST}, the latest request's
    columns only when it is newer than the stored one): no
    read-modify-write, so concurrent batches of one session add up.

Blocking I/O with psycopg 3, in threads: the recorder's writer thread for
writes (L{PostgresWriter}), a pool of connections (C{psycopg_pool}) used
from the reactor's thread pool for reads (L{PostgresSessionStore}).  When
the database is down or slow the writer keeps batches in a bounded backlog
and retries with exponential backoff (L{PostgresWriter.retry_due}); the
gateway's requests never wait for it.

Versioned migrations: the C{schema_migrations} table lists the steps
applied; L{migrate} applies the missing ones, each in its own transaction
under an advisory lock (several gateways starting at once migrate once).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout
from twisted.logger import Logger
from zope.interface import implementer

from lunaroute.interfaces import ISessionWriter
from lunaroute.logs import log_observer
from lunaroute.secrets import mask_connection_string
from lunaroute.sessions.sqlite import (
    _EMPTY_ROW,
    _STATS_COLUMNS,
    _SUMMED_COLUMNS,
    SchemaTooNew,
    _at,
    _Batch,
    _end,
)
from lunaroute.sessions.store import (
    _CLOSE,
    _OPEN,
    BadParameter,
    SessionQueries,
    StoreUnavailable,
    ThreadedStore,
    _snippets,
    uses_fts_syntax,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BacklogFull",
    "PgConnection",
    "PostgresQueries",
    "PostgresSessionStore",
    "PostgresWriter",
    "connect",
    "migrate",
    "schema_version",
    "to_tsquery_text",
]

log = Logger(observer=log_observer)

# --------------------------------------------------------------------------
# Schema.  Append new steps; never edit a released one.

_SEARCH_FUNCTION = r"""
CREATE FUNCTION lunaroute_search_vector(doc text) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    -- Punctuation separates words, as SQLite's unicode61 tokenizer does:
    -- "cc-tool/hello.txt" is cc, tool, hello, txt.
    RETURN to_tsvector('simple', regexp_replace(doc, '[[:punct:][:space:]]+', ' ', 'g'));
EXCEPTION WHEN OTHERS THEN
    -- A tsvector holds at most 1 MB: index the start of a huge text.
    RETURN to_tsvector('simple', regexp_replace(left(doc, 100000), '[[:punct:][:space:]]+', ' ', 'g'));
END
$$
"""

_CONTEXT_SQL = (
    "CASE WHEN dialect LIKE 'openai%' THEN input_tokens "
    "ELSE input_tokens + cache_read_tokens + cache_creation_tokens END"
)

_V1: tuple[str, ...] = (
    """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        started_at TEXT,
        last_activity TEXT,
        model_used TEXT,
        provider TEXT,
        listener TEXT,
        request_count BIGINT NOT NULL DEFAULT 0,
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        thinking_tokens BIGINT NOT NULL DEFAULT 0,
        cache_read_tokens BIGINT NOT NULL DEFAULT 0,
        cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
        total_tokens BIGINT GENERATED ALWAYS AS (input_tokens + output_tokens) STORED,
        tool_call_count BIGINT NOT NULL DEFAULT 0,
        success INTEGER,
        duration_ms DOUBLE PRECISION,
        user_agent TEXT,
        client_ip TEXT,
        estimated_cost_usd DOUBLE PRECISION,
        cost_complete INTEGER,
        success_count BIGINT NOT NULL DEFAULT 0,
        failed_count BIGINT NOT NULL DEFAULT 0,
        priced_count BIGINT NOT NULL DEFAULT 0,
        last_request_id TEXT,
        cache_creation_1h_tokens BIGINT NOT NULL DEFAULT 0,
        client TEXT,
        project TEXT,
        title TEXT,
        last_request_at TEXT
    )
    """,
    "CREATE INDEX sessions_started_at ON sessions (started_at)",
    "CREATE INDEX sessions_last_activity ON sessions (last_activity)",
    "CREATE INDEX sessions_model_used ON sessions (model_used)",
    "CREATE INDEX sessions_client ON sessions (client)",
    "CREATE INDEX sessions_project ON sessions (project)",
    _SEARCH_FUNCTION,
    f"""
    CREATE TABLE session_stats (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        thinking_tokens BIGINT NOT NULL DEFAULT 0,
        cache_read_tokens BIGINT NOT NULL DEFAULT 0,
        cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
        total_tokens BIGINT GENERATED ALWAYS AS (input_tokens + output_tokens) STORED,
        thinking_estimated INTEGER,
        tool_call_count BIGINT NOT NULL DEFAULT 0,
        chunk_count BIGINT,
        bytes_out BIGINT,
        duration_ms DOUBLE PRECISION,
        ttft_ms DOUBLE PRECISION,
        provider_ms DOUBLE PRECISION,
        pre_proxy_ms DOUBLE PRECISION,
        post_proxy_ms DOUBLE PRECISION,
        proxy_overhead_ms DOUBLE PRECISION,
        request_bytes BIGINT,
        message_count BIGINT,
        tools_offered TEXT,
        request_text TEXT,
        response_text TEXT,
        thinking_text TEXT,
        request_json TEXT,
        response_json TEXT,
        estimated_cost_usd DOUBLE PRECISION,
        tool_results_json TEXT,
        cache_creation_1h_tokens BIGINT NOT NULL DEFAULT 0,
        cache_creation_5m_tokens BIGINT GENERATED ALWAYS AS (cache_creation_tokens - cache_creation_1h_tokens) STORED,
        context_tokens BIGINT GENERATED ALWAYS AS ({_CONTEXT_SQL}) STORED,
        cache_hit_ratio DOUBLE PRECISION GENERATED ALWAYS AS (
            CASE WHEN ({_CONTEXT_SQL}) > 0
                 THEN cache_read_tokens::double precision / ({_CONTEXT_SQL}) END
        ) STORED,
        error_type TEXT,
        system_sha256 TEXT,
        tools_sha256 TEXT,
        client TEXT,
        project TEXT,
        title TEXT,
        tool_input_text TEXT,
        tool_result_text TEXT,
        routing_rule TEXT,
        attempts_json TEXT,
        search_vector tsvector GENERATED ALWAYS AS (lunaroute_search_vector(
            coalesce(request_text, '') || ' ' || coalesce(response_text, '') || ' ' ||
            coalesce(thinking_text, '') || ' ' || coalesce(tool_input_text, '') || ' ' ||
            coalesce(tool_result_text, '')
        )) STORED
    )
    """,
    "CREATE INDEX session_stats_session ON session_stats (session_id, started_at)",
    "CREATE INDEX session_stats_started_at ON session_stats (started_at)",
    "CREATE INDEX session_stats_search ON session_stats USING GIN (search_vector)",
    """
    CREATE TABLE tool_call_executions (
        request_id TEXT NOT NULL,
        call_index INTEGER NOT NULL,
        tool_call_id TEXT,
        session_id TEXT NOT NULL,
        tool_name TEXT,
        input_json TEXT,
        duration_ms DOUBLE PRECISION,
        created_at TEXT,
        result_request_id TEXT,
        is_error INTEGER,
        PRIMARY KEY (request_id, call_index)
    )
    """,
    "CREATE INDEX tool_call_executions_session ON tool_call_executions (session_id, tool_call_id)",
    "CREATE INDEX tool_call_executions_tool ON tool_call_executions (tool_name)",
    """
    CREATE TABLE stream_metrics (
        request_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        ttft_ms DOUBLE PRECISION,
        chunk_count BIGINT,
        event_count BIGINT,
        bytes_out BIGINT,
        stream_ms DOUBLE PRECISION,
        chunk_gap_mean_ms DOUBLE PRECISION,
        chunk_gap_p50_ms DOUBLE PRECISION,
        chunk_gap_p95_ms DOUBLE PRECISION,
        chunk_gap_max_ms DOUBLE PRECISION
    )
    """,
    "CREATE INDEX stream_metrics_session ON stream_metrics (session_id)",
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

# (description, statements) per version, in order.
MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sessions, requests, tool calls, stream metrics and the search index (SQLite schema 6)", _V1),
)
SCHEMA_VERSION = len(MIGRATIONS)

# Any constant both sides agree on: the advisory lock migrations hold.
_MIGRATION_LOCK = 0x4C554E41

_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The highest migration applied (0 for an empty database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[Any], target: int = SCHEMA_VERSION) -> int:
    """
    Apply the missing migrations up to C{target}, each in its own
    transaction under an advisory lock, and return the resulting version.
    C{conn} must be in autocommit mode.

    @raise SchemaTooNew: the database was migrated by a newer LunaRoute.
    """
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(_MIGRATIONS_TABLE)
            version = schema_version(conn)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"database schema version {version} is newer than this LunaRoute understands ({SCHEMA_VERSION})"
                )
            if version >= target:
                return version
            description, statements = MIGRATIONS[version]
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)", (version + 1, description)
            )
        log.info("PostgreSQL session store migrated to schema version {version}", version=version + 1)


class _NumberLoader(Loader):
    """
    C{numeric} results (C{SUM} of integers, C{AVG}) as Python numbers the
    JSON encoder takes, as SQLite gives them: an C{int} when whole, else a
    C{float}.
    """

    def load(self, data: Any) -> Any:
        text = bytes(data).decode("ascii")
        try:
            return int(text)
        except ValueError:
            return float(text)


class _Row(dict):
    """A result row that indexes by column name and by position, as C{sqlite3.Row}."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return dict.__getitem__(self, key)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    description = cursor.description
    if description is None:
        return tuple
    names = [column.name for column in description]

    def make(values: Sequence[Any]) -> _Row:
        return _Row(zip(names, values, strict=True))

    return make


def configure(conn: psycopg.Connection[Any]) -> None:
    """Set a connection up for the read model: rows by name, numbers as SQLite gives them."""
    conn.adapters.register_loader("numeric", _NumberLoader)
    conn.row_factory = _row_factory


def connect(dsn: str, connect_timeout: float = 30.0, migrate_to: int | None = SCHEMA_VERSION) -> psycopg.Connection[Any]:
    """
    An autocommit connection to the store, set up by L{configure} and its
    schema brought up to C{migrate_to} (C{None}: not migrated).
    """
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout)))
    try:
        configure(conn)
        if migrate_to is not None:
            migrate(conn, migrate_to)
    except BaseException:
        conn.close()
        raise
    return conn


def _sql(query: str) -> str:
    """A query written with SQLite's C{?} placeholders, for psycopg (C{%s})."""
    return query.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """
    A psycopg connection that takes the read model's SQL as written for
    SQLite: C{?} placeholders, rows by name or position.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        self._cache: dict[str, str] = {}

    def execute(self, query: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> Any:
        if isinstance(params, Mapping):
            return self.raw.execute(query, params)
        values = list(params)
        if not values:
            return self.raw.execute(query)
        converted = self._cache.get(query)
        if converted is None:
            converted = self._cache[query] = _sql(query)
        return self.raw.execute(converted, values)

    def close(self) -> None:
        self.raw.close()


# --------------------------------------------------------------------------
# Full-text queries

# ASCII punctuation and white space: what the index treats as separators
# (PostgreSQL's [[:punct:][:space:]] under any locale).
_SEPARATORS = re.compile(r"[\s!-/:-@\[-`{-~]+")
_TOKENS = re.compile(r'"([^"]*)"|(")|(\()|(\))|([^\s()"]+)')
_COLUMN = re.compile(r"^-?\{?(request_text|response_text|thinking_text|tool_input_text|tool_result_text)\b.*:")


def _pieces(word: str) -> list[str]:
    return [piece for piece in _SEPARATORS.split(word) if piece]


def _lexemes(pieces: list[str], prefix: bool = False) -> str:
    quoted = [f"'{piece}'" for piece in pieces]
    if prefix:
        quoted[-1] += ":*"
    return quoted[0] if len(quoted) == 1 else "(" + " <-> ".join(quoted) + ")"


def to_tsquery_text(text: str, param: str = "q") -> str:
    """
    The C{to_tsquery('simple', ...)} text for what a user typed, with the
    meaning the SQLite store's FTS5 gives it: plain words must all occur
    (punctuation splits a word into a phrase of its parts, as the index
    does); with FTS5 syntax, C{"a phrase"}, C{prefix*}, C{AND}, C{OR},
    C{NOT} and parentheses work too.  Column filters and C{NEAR} do not.

    @raise BadParameter: malformed (an unterminated quote, unbalanced
        parentheses, an operator without an operand) or nothing to look for.
    """
    text = text.strip()

    def bad(problem: str) -> BadParameter:
        return BadParameter(f"{param}: malformed search query: {problem}", param)

    if not uses_fts_syntax(text):
        operands = [_lexemes(pieces) for pieces in map(_pieces, text.split()) if pieces]
        if not operands:
            raise BadParameter(f"{param} must contain a word to search for", param)
        return " & ".join(operands)
    out: list[str] = []
    depth = 0
    last = "start"  # start | operand | operator | open

    def operand(value: str) -> None:
        nonlocal last
        if last in ("operand",):
            out.append("&")
        out.append(value)
        last = "operand"

    for match in _TOKENS.finditer(text.lstrip("^")):
        phrase, stray, opening, closing, word = match.groups()
        if stray is not None:
            raise bad("unterminated string")
        if phrase is not None:
            pieces = _pieces(phrase)
            if pieces:
                operand(_lexemes(pieces))
        elif opening is not None:
            if last == "operand":
                out.append("&")
            out.append("(")
            depth += 1
            last = "open"
        elif closing is not None:
            if depth == 0 or last in ("operator", "open"):
                raise bad("unbalanced parentheses")
            out.append(")")
            depth -= 1
            last = "operand"
        elif word in ("AND", "OR"):
            if last != "operand":
                raise bad(f"{word} needs a term on each side")
            out.append("&" if word == "AND" else "|")
            last = "operator"
        elif word == "NOT":
            out.append("& !" if last == "operand" else "!")
            last = "operator"
        elif word == "NEAR" or word.startswith("NEAR("):
            raise bad("NEAR is not supported by the PostgreSQL store (use a phrase in quotes)")
        elif _COLUMN.match(word):
            raise bad("column filters are not supported by the PostgreSQL store")
        else:
            prefix = word.endswith("*")
            pieces = _pieces(word.rstrip("*"))
            if pieces:
                operand(_lexemes(pieces, prefix))
    if depth:
        raise bad("unbalanced parentheses")
    if last in ("operator", "open"):
        raise bad("the query ends with an operator")
    if not out:
        raise BadParameter(f"{param} must contain a word to search for", param)
    return " ".join(out)


# --------------------------------------------------------------------------
# Reading

_HEADLINE_OPTIONS = f"StartSel={_OPEN}, StopSel={_CLOSE}, MaxWords=28, MinWords=10, ShortWord=2, MaxFragments=1"
# The turn's texts for ts_headline.  Its parser would drop anything that
# looks like an HTML tag from the snippet: < and > are swapped for
# control characters it takes for blanks first, and back afterwards
# (L{_UNTAG}).
_DOCUMENT = (
    "translate(left(concat_ws(' … ', NULLIF(r.request_text, ''), NULLIF(r.response_text, ''), "
    "NULLIF(r.thinking_text, ''), NULLIF(r.tool_input_text, ''), NULLIF(r.tool_result_text, '')), 200000), "
    "'<>', E'\\x01\\x02')"
)
_UNTAG = {0x01: "<", 0x02: ">"}


class PostgresQueries(SessionQueries):
    """
    The read model over PostgreSQL: the shared queries, with its own search
    and delete, and PostgreSQL's SQL for the few hooks
    (L{SessionQueries._week_start}, L{SessionQueries._binary}).
    """

    def __init__(self, conn: PgConnection, jsonl_dir: str | None = None) -> None:
        self.conn = conn  # type: ignore[assignment]
        self.jsonl_dir = jsonl_dir

    def _match(self, sql: str, params: Any, param: str) -> list[Any]:
        try:
            return self._all(sql, params)
        except psycopg.errors.SyntaxError as error:
            raise BadParameter(f"{param}: malformed search query: {error}", param) from None

    def _week_start(self, day: str) -> str:
        # date_trunc's weeks are ISO weeks: they start on Monday, as SQLite's
        # date(day, 'weekday 0', '-6 days') does.
        return f"to_char(date_trunc('week', CAST({day} AS date)), 'YYYY-MM-DD')"

    def _binary(self, expression: str) -> str:
        return f'{expression} COLLATE "C"'

    def _text_filter(self, text: str) -> tuple[str, list[Any]]:
        return (
            "s.session_id IN (SELECT r.session_id FROM session_stats AS r "
            "WHERE r.search_vector @@ to_tsquery('simple', ?))",
            [to_tsquery_text(text, "text_search")],
        )

    def search(
        self, query: str, limit: int = 20, param: str = "q", window: int | None = 5_000
    ) -> list[dict[str, Any]]:
        """
        As L{SessionQueries.search}: the turns matching C{query}, best
        first, ranked among the C{window} most recently recorded matches;
        C{rank} is C{-ts_rank_cd} (lower is better, as bm25).
        """
        hits = []
        for row in self.search_rows(query, limit, param, window):
            hit = {k: row[k] for k in ("session_id", "request_id", "started_at", "model_used", "title", "client",
                                       "project")}
            hit["snippet"], hit["snippet_text"] = _snippets(row["snippet"])
            hit["rank"] = float(row["score"])
            hits.append(hit)
        return hits

    def search_rows(
        self, query: str, limit: int = 20, param: str = "q", window: int | None = 5_000
    ) -> list[Any]:
        """
        The ranked hits as rows: C{id}, C{score}, C{session_id},
        C{request_id}, C{started_at}, C{model_used}, C{model_requested},
        the session's C{title}, C{client}, C{project}, and C{snippet}
        (matches between the store's private-use markers).
        """
        if not query.strip():
            raise BadParameter(f"{param} must not be empty", param)
        tsquery = to_tsquery_text(query, param)
        rows = self._match(
            f"""
            WITH q AS (SELECT to_tsquery('simple', ?) AS q),
            matched AS (
                SELECT r.id, r.search_vector FROM session_stats AS r, q
                WHERE r.search_vector @@ q.q ORDER BY r.id DESC LIMIT ?
            ),
            ranked AS (
                SELECT m.id, -ts_rank_cd(m.search_vector, q.q) AS score FROM matched AS m, q
                ORDER BY score, m.id DESC LIMIT ?
            )
            SELECT ranked.id AS id, ranked.score AS score, r.session_id, r.request_id, r.started_at,
                   r.completed_at, r.model_used, r.model_requested, s.title, s.client, s.project,
                   ts_headline('simple', {_DOCUMENT}, q.q, ?) AS snippet
            FROM ranked JOIN session_stats AS r ON r.id = ranked.id
            LEFT JOIN sessions AS s ON s.session_id = r.session_id, q
            ORDER BY ranked.score, ranked.id DESC
            """,
            (tsquery, window or None, int(limit), _HEADLINE_OPTIONS),
            param,
        )
        for row in rows:
            row["snippet"] = (row["snippet"] or "").translate(_UNTAG)
        return rows

    def more_matches_than(self, query: str, window: int, param: str = "q") -> bool:
        """Whether more than C{window} turns match C{query} (a search then ranked only the most recent)."""
        rows = self._match(
            "SELECT COUNT(*) FROM (SELECT 1 FROM session_stats WHERE search_vector @@ to_tsquery('simple', ?) "
            "LIMIT ?) AS m",
            (to_tsquery_text(query, param), int(window) + 1),
            param,
        )
        return int(rows[0][0]) > window

    def delete_session(self, session_id: str) -> dict[str, Any]:
        """Remove a session's rows (its search entries go with them) and its JSONL files."""
        self._require_session(session_id)
        raw = self.conn.raw  # type: ignore[attr-defined]
        with raw.transaction():
            requests = raw.execute("DELETE FROM session_stats WHERE session_id = %s", (session_id,)).rowcount
            removed: dict[str, Any] = {
                "search_entries": requests,
                "requests": requests,
                "tool_calls": raw.execute(
                    "DELETE FROM tool_call_executions WHERE session_id = %s", (session_id,)
                ).rowcount,
                "stream_metrics": raw.execute(
                    "DELETE FROM stream_metrics WHERE session_id = %s", (session_id,)
                ).rowcount,
                "sessions": raw.execute("DELETE FROM sessions WHERE session_id = %s", (session_id,)).rowcount,
            }
        removed["jsonl_files"] = self._delete_files(session_id)
        return {"session_id": session_id, "removed": removed}


class PostgresSessionStore(ThreadedStore):
    """
    L{ISessionStore} over the PostgreSQL store: queries run in the
    reactor's thread pool on connections from a C{psycopg_pool} pool
    (C{min_connections} to C{max_connections}; waiting at most
    C{acquire_timeout_seconds} for one, else a C{StoreUnavailable}, 503).
    The pool opens on the first query, so a database that is down at
    start-up delays nothing.

    @param settings: a L{lunaroute.config.PostgresSettings}.
    """

    def __init__(
        self, settings: Any, reactor: Any = None, threadpool: Any = None, jsonl_dir: str | None = None
    ) -> None:
        super().__init__(reactor, threadpool)
        self.settings = settings
        self.jsonl_dir = jsonl_dir
        self._lock = threading.Lock()
        self._opened = False
        self._schema_checked = False
        self.pool = ConnectionPool(
            settings.connection_string,
            min_size=settings.min_connections,
            max_size=settings.max_connections,
            timeout=settings.acquire_timeout_seconds,
            max_idle=settings.idle_timeout_seconds,
            max_lifetime=settings.max_lifetime_seconds,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(settings.acquire_timeout_seconds))},
            configure=configure,
            open=False,
            name="lunaroute-store",
        )

    def _open(self) -> None:
        with self._lock:
            if not self._opened:
                self.pool.open(wait=False)
                self._opened = True

    def _call(self, method: str, *args: Any) -> Any:
        self._open()
        where = mask_connection_string(self.settings.connection_string)
        try:
            with self.pool.connection() as conn:
                if not self._schema_checked:
                    version = schema_version(conn)
                    if version != SCHEMA_VERSION:
                        raise StoreUnavailable(
                            f"the PostgreSQL session store has schema version {version}, this LunaRoute reads "
                            f"{SCHEMA_VERSION} (run lunaroute-server migrate, or start a gateway recording to it)"
                        )
                    self._schema_checked = True
                return getattr(PostgresQueries(PgConnection(conn), self.jsonl_dir), method)(*args)
        except PoolTimeout:
            raise StoreUnavailable(
                f"no connection to the PostgreSQL session store ({where}) within "
                f"{self.settings.acquire_timeout_seconds:g}s"
            ) from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"the PostgreSQL session store ({where}) is unavailable: {exc}") from None

    def close(self) -> None:
        """Close the pool's connections."""
        self.pool.close(timeout=1.0)


# --------------------------------------------------------------------------
# Writing

_SESSION_SUMS = (*_SUMMED_COLUMNS, "request_count", "success_count", "failed_count", "priced_count")
# The columns taken from a session's most recent request.
_LATEST_COLUMNS = ("model_used", "provider", "listener", "user_agent", "client_ip", "client", "last_request_id",
                   "last_request_at")
_SESSION_INSERT_COLUMNS = (
    "session_id", "started_at", "last_activity", *_SESSION_SUMS, "success", "estimated_cost_usd",
    "cost_complete", *_LATEST_COLUMNS, "project", "title",
)
_DURATION = "round(extract(epoch from ({end}::text::timestamptz - {start}::text::timestamptz)) * 1000)"
_NEWER = (
    "(sessions.last_request_id IS NULL OR sessions.last_request_id = EXCLUDED.last_request_id OR "
    "(EXCLUDED.last_request_at IS NOT NULL, COALESCE(EXCLUDED.last_request_at, ''), EXCLUDED.last_request_id) > "
    "(sessions.last_request_at IS NOT NULL, COALESCE(sessions.last_request_at, ''), sessions.last_request_id))"
)
_UPSERT_SESSION = (
    f"INSERT INTO sessions ({', '.join(_SESSION_INSERT_COLUMNS)}, duration_ms) VALUES ("
    + ", ".join(f"%({c})s" for c in _SESSION_INSERT_COLUMNS)
    + ", "
    + _DURATION.format(end="%(last_activity)s", start="%(started_at)s")
    + ") ON CONFLICT (session_id) DO UPDATE SET "
    + ", ".join(f"{c} = sessions.{c} + EXCLUDED.{c}" for c in _SESSION_SUMS)
    + ", started_at = LEAST(sessions.started_at, EXCLUDED.started_at)"
    + ", last_activity = GREATEST(sessions.last_activity, EXCLUDED.last_activity)"
    + ", duration_ms = "
    + _DURATION.format(
        end="GREATEST(sessions.last_activity, EXCLUDED.last_activity)",
        start="LEAST(sessions.started_at, EXCLUDED.started_at)",
    )
    + ", success = CASE WHEN sessions.failed_count + EXCLUDED.failed_count > 0 THEN 0 "
    "WHEN sessions.success_count + EXCLUDED.success_count > 0 THEN 1 END"
    + ", estimated_cost_usd = CASE WHEN sessions.priced_count + EXCLUDED.priced_count > 0 "
    "THEN COALESCE(sessions.estimated_cost_usd, 0) + %(cost_delta)s::double precision END"
    + ", cost_complete = (sessions.request_count + EXCLUDED.request_count = "
    "sessions.priced_count + EXCLUDED.priced_count)::int"
    + "".join(
        f", {c} = CASE WHEN {_NEWER} THEN EXCLUDED.{c} ELSE sessions.{c} END" for c in _LATEST_COLUMNS
    )
    + f", project = CASE WHEN {_NEWER} AND EXCLUDED.project IS NOT NULL THEN EXCLUDED.project "
    "ELSE COALESCE(sessions.project, %(project_any)s::text) END"
    + ", title = CASE WHEN EXCLUDED.title IS NOT NULL AND (sessions.title IS NULL OR "
    "(%(title_at)s::text IS NOT NULL AND %(title_at)s::text <= sessions.started_at)) "
    "THEN EXCLUDED.title ELSE sessions.title END"
)

# The reference definition of a session row from its request rows, run
# when a change is not a difference (a request moved to another session,
# its start rewritten), as the SQLite writer does.
_RECOMPUTE_SESSION = f"""
WITH reqs AS (
    SELECT *, COALESCE(started_at, completed_at) AS at FROM session_stats WHERE session_id = %(sid)s
), latest AS (
    SELECT * FROM reqs ORDER BY at DESC NULLS LAST, request_id DESC LIMIT 1
), agg AS (
    SELECT MIN(at) AS first_at, MAX(COALESCE(completed_at, at)) AS last_at, COUNT(*) AS n,
           {", ".join(f"SUM({c}) AS {c}" for c in _SUMMED_COLUMNS)},
           MIN(success) AS success, SUM(estimated_cost_usd) AS cost, COUNT(estimated_cost_usd) AS priced,
           COUNT(CASE WHEN success = 1 THEN 1 END) AS successes,
           COUNT(CASE WHEN success = 0 THEN 1 END) AS failures
    FROM reqs
)
INSERT INTO sessions (session_id, started_at, last_activity, request_count, {", ".join(_SUMMED_COLUMNS)},
    success, duration_ms, estimated_cost_usd, cost_complete, success_count, failed_count, priced_count,
    model_used, provider, listener, user_agent, client_ip, client, last_request_id, last_request_at,
    project, title)
SELECT %(sid)s, agg.first_at, agg.last_at, agg.n, {", ".join(f"agg.{c}" for c in _SUMMED_COLUMNS)},
    agg.success, {_DURATION.format(end="agg.last_at", start="agg.first_at")}, agg.cost,
    (agg.n = agg.priced)::int, agg.successes, agg.failures, agg.priced,
    COALESCE(latest.model_used, latest.model_requested), latest.provider, latest.listener, latest.user_agent,
    latest.client_ip, latest.client, latest.request_id, latest.at,
    (SELECT project FROM reqs WHERE project IS NOT NULL ORDER BY at DESC NULLS LAST, request_id DESC LIMIT 1),
    (SELECT title FROM reqs WHERE title IS NOT NULL ORDER BY at NULLS FIRST, request_id LIMIT 1)
FROM agg, latest
ON CONFLICT (session_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in (
        "started_at", "last_activity", "request_count", *_SUMMED_COLUMNS, "success", "duration_ms",
        "estimated_cost_usd", "cost_complete", "success_count", "failed_count", "priced_count", "model_used",
        "provider", "listener", "user_agent", "client_ip", "client", "last_request_id", "last_request_at",
        "project", "title"))}
"""

_STORED_SQL = (
    "SELECT id, request_id, session_id, started_at, completed_at, model_used, model_requested, provider, listener, "
    f"user_agent, client_ip, {', '.join(_SUMMED_COLUMNS)}, success, estimated_cost_usd, client, project, title "
    "FROM session_stats WHERE request_id = ANY(%s) ORDER BY request_id FOR UPDATE"
)
_INSERT_STATS = (
    f"INSERT INTO session_stats ({', '.join(_STATS_COLUMNS)}) VALUES ({', '.join('%s' for _ in _STATS_COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING id"
)


def _clean(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class _SessionChange:
    """What a batch adds to one session row: differences, and the candidates for its other columns."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.sums = dict.fromkeys(_SESSION_SUMS, 0)
        self.cost_delta = 0.0
        self.started_at: str | None = None
        self.last_activity: str | None = None
        self.latest: tuple[tuple[bool, str, str], Mapping[str, Any]] | None = None
        self.title: tuple[str, str] | None = None  # (at, title)
        self.project_any: str | None = None

    def apply(self, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> None:
        sums = self.sums
        if old is None:
            sums["request_count"] += 1
        for column in _SUMMED_COLUMNS:
            sums[column] += (new[column] or 0) - ((old[column] or 0) if old is not None else 0)
        was = old["success"] if old is not None else None
        sums["success_count"] += (new["success"] == 1) - (was == 1)
        sums["failed_count"] += (new["success"] == 0) - (was == 0)
        cost, old_cost = new["estimated_cost_usd"], old["estimated_cost_usd"] if old is not None else None
        sums["priced_count"] += (cost is not None) - (old_cost is not None)
        self.cost_delta += (cost or 0.0) - (old_cost or 0.0)
        at, end = _at(new), _end(new)
        if at is not None and (self.started_at is None or at < self.started_at):
            self.started_at = at
        if end is not None and (self.last_activity is None or end > self.last_activity):
            self.last_activity = end
        key = (at is not None, at or "", new["request_id"])
        if self.latest is None or key > self.latest[0]:
            self.latest = (key, new)
        if new["title"] is not None and (self.title is None or (at or "") < self.title[0]):
            self.title = (at or "", new["title"])
        if new["project"] is not None and self.project_any is None:
            self.project_any = new["project"]

    def params(self) -> dict[str, Any]:
        assert self.latest is not None
        latest = self.latest[1]
        sums = self.sums
        out: dict[str, Any] = {"session_id": self.session_id, **sums}
        out["started_at"], out["last_activity"] = self.started_at, self.last_activity
        out["success"] = 0 if sums["failed_count"] > 0 else (1 if sums["success_count"] > 0 else None)
        out["estimated_cost_usd"] = self.cost_delta if sums["priced_count"] > 0 else None
        out["cost_delta"] = self.cost_delta
        out["cost_complete"] = int(sums["request_count"] == sums["priced_count"])
        model = latest["model_used"]
        out["model_used"] = model if model is not None else latest["model_requested"]
        for column in ("provider", "listener", "user_agent", "client_ip", "client"):
            out[column] = latest[column]
        out["last_request_id"] = latest["request_id"]
        out["last_request_at"] = _at(latest)
        out["project"] = latest["project"]
        out["project_any"] = self.project_any
        out["title"] = self.title[1] if self.title else None
        out["title_at"] = (self.title[0] or None) if self.title else None
        return out


class BacklogFull(Exception):
    """The database is unavailable and the writer's backlog is at its bound: this batch is dropped."""

    loss_reason = "backlog_full"


def _transient(error: BaseException) -> bool:
    """A failure that retrying later may cure (the database down, restarting, slow, a deadlock)."""
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout)


def _exchanges(events: list[dict[str, Any]]) -> int:
    return len({event.get("request_id") for event in events if isinstance(event, Mapping)}) or 1


@implementer(ISessionWriter)
class PostgresWriter:
    """
    Writes session events into the PostgreSQL store, from the recorder's
    writer thread, one connection, one transaction per batch.

    When the database cannot be reached (or a statement times out) the
    batch is kept, with later ones, in a backlog of at most
    C{max_backlog_events} events, and written when it answers again:
    retried after C{backoff_initial} seconds, doubling to
    C{backoff_max}, by the recorder calling L{retry} when L{retry_due} says
    so (and by the next batch).  A batch that does not fit the backlog is
    dropped (L{BacklogFull}, counted by the recorder as
    C{backlog_full:postgres}); one the database refuses for its content is
    dropped and counted (C{writer_error:postgres}).

    @param clock: provides C{seconds()} (the reactor, or a
        L{twisted.internet.task.Clock} in tests).
    """

    name = "postgres"
    loss_reasons = ("backlog_full",)

    def __init__(
        self,
        dsn: str,
        clock: Any = None,
        max_backlog_events: int = 10_000,
        connect_timeout: float = 30.0,
        statement_timeout: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self._clock = clock
        self.max_backlog_events = max_backlog_events
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._conn: psycopg.Connection[Any] | None = None
        self._backlog: deque[list[dict[str, Any]]] = deque()
        self.backlog_events = 0
        self._backoff = 0.0
        self._next_retry = 0.0
        self.problem: str | None = None
        self.lost_exchanges = 0
        self._unreported_lost = 0
        self.recovered_batches = 0

    # -- state -------------------------------------------------------------

    def _now(self) -> float:
        return float(self._clock.seconds()) if self._clock is not None else time.time()

    @property
    def degraded(self) -> bool:
        """Whether the last attempt failed (or batches wait in the backlog)."""
        return self.problem is not None or bool(self._backlog)

    def status(self) -> dict[str, Any]:
        """What C{/readyz} shows of the store: C{ok} or C{degraded}, with the backlog and why."""
        out: dict[str, Any] = {
            "store": "postgres",
            "status": "degraded" if self.degraded else "ok",
            "backlog_events": self.backlog_events,
            "max_backlog_events": self.max_backlog_events,
        }
        if self.problem is not None:
            out["reason"] = self.problem
            out["retry_in_seconds"] = max(0.0, round(self._next_retry - self._now(), 3))
        return out

    def retry_due(self, now: float) -> bool:
        """Whether the recorder should call L{retry} now (a backlog waits and its backoff is over)."""
        return (bool(self._backlog) or self.problem is not None) and now >= self._next_retry

    def _failed(self, error: BaseException) -> None:
        first = self.problem is None
        self._backoff = self.backoff_initial if first else min(self.backoff_max, self._backoff * 2)
        self._next_retry = self._now() + self._backoff
        self.problem = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        self._drop_connection()
        if first:
            log.warn(
                "PostgreSQL session store unavailable ({problem}): keeping batches (at most {bound} events) "
                "and retrying",
                problem=self.problem,
                bound=self.max_backlog_events,
            )

    def _recovered(self) -> None:
        if self.problem is not None:
            log.info("PostgreSQL session store available again; its backlog is written")
        self.problem = None
        self._backoff = 0.0
        self._next_retry = 0.0

    # -- ISessionWriter ----------------------------------------------------

    def open(self) -> None:
        """Connect and migrate at start-up; a database that is down is retried later, not an error."""
        try:
            self._connection()
        except Exception as error:
            if not _transient(error):
                raise
            self._failed(error)

    def open_or_raise(self) -> None:
        """Connect and migrate now, failing if the database cannot be reached (the command line)."""
        self._connection()

    def write_batch(self, events: list[dict[str, Any]]) -> None:
        if self._backlog or self.problem is not None:
            self._enqueue(events)
            if self._now() >= self._next_retry:
                self.retry()
            return
        try:
            self._write(events)
        except Exception as error:
            if not _transient(error):
                raise
            self._failed(error)
            self._enqueue(events)

    def retry(self) -> int:
        """
        Write the backlog, oldest first, until it is empty or the database
        fails again.  Returns how many exchanges were dropped because the
        database refused their batch (not for being unreachable).
        """
        lost = 0
        if not self._backlog and self.problem is not None:
            try:
                self._connection()
            except Exception as error:
                if not _transient(error):
                    raise
                self._failed(error)
                return 0
        while self._backlog:
            batch = self._backlog[0]
            try:
                self._write(batch)
            except Exception as error:
                if _transient(error):
                    self._failed(error)
                    self.lost_exchanges += lost
                    self._unreported_lost += lost
                    return lost
                log.failure("PostgreSQL session store refused a batch; dropped")
                lost += _exchanges(batch)
            self._backlog.popleft()
            self.backlog_events -= len(batch)
            self.recovered_batches += 1
        self._recovered()
        self.lost_exchanges += lost
        self._unreported_lost += lost
        return lost

    def take_lost(self) -> int:
        """
        Exchanges dropped from the backlog (refused by the database) since
        the last call, for the recorder to count: a retry may run inside
        L{write_batch}, whose own batch is not the one lost.
        """
        lost, self._unreported_lost = self._unreported_lost, 0
        return lost

    def pending_exchanges(self) -> int:
        """Exchanges waiting in the backlog."""
        return sum(_exchanges(batch) for batch in self._backlog)

    def _enqueue(self, events: list[dict[str, Any]]) -> None:
        if self._backlog and self.backlog_events + len(events) > self.max_backlog_events:
            raise BacklogFull(
                f"the PostgreSQL session store is unavailable and {self.backlog_events} events wait already"
            )
        self._backlog.append(events)
        self.backlog_events += len(events)

    def close(self) -> None:
        if self._backlog:
            try:
                self.retry()
            except Exception:
                log.failure("writing the PostgreSQL backlog at shutdown failed")
        if self._backlog:
            log.warn(
                "PostgreSQL session store still unavailable at shutdown: {n} event(s) not written",
                n=self.backlog_events,
            )
        self._drop_connection()

    # -- the connection ----------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = connect(self.dsn, self.connect_timeout)
            try:
                conn.execute(f"SET statement_timeout = {int(self.statement_timeout * 1000)}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _write(self, events: list[dict[str, Any]]) -> None:
        batch = _Batch(events)
        if not batch.rows and not batch.tool_calls:
            return
        for attempt in range(3):
            conn = self._connection()
            try:
                with conn.transaction():
                    self._apply(conn, batch)
                return
            except psycopg.errors.TransactionRollback:
                # A deadlock or serialization failure with another gateway's
                # batch: nothing was written; try again at once.
                if attempt == 2:
                    raise
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self._drop_connection()
                raise

    # -- rows --------------------------------------------------------------

    def _apply(self, conn: psycopg.Connection[Any], batch: _Batch) -> None:
        ids = sorted(batch.rows)
        stored = {row["request_id"]: row for row in conn.execute(_STORED_SQL, (ids,)).fetchall()}
        created: set[str] = set()
        # New rows in the order they were recorded (their ids order the
        # search window and the live tail); a deadlock with a batch inserting
        # the same new ids the other way round is retried.
        for request_id in batch.rows:
            if request_id in stored:
                continue
            new = dict(_EMPTY_ROW)
            new.update(batch.rows[request_id])
            new["request_id"] = request_id
            inserted = conn.execute(_INSERT_STATS, [_clean(new[c]) for c in _STATS_COLUMNS]).fetchone()
            if inserted is not None:
                created.add(request_id)
        raced = [i for i in ids if i not in stored and i not in created]
        if raced:
            # Inserted by another gateway since we looked: update those.
            stored.update({row["request_id"]: row for row in conn.execute(_STORED_SQL, (raced,)).fetchall()})

        changes: list[tuple[Any, dict[str, Any]]] = []
        updates: dict[tuple[str, ...], list[list[Any]]] = {}
        for request_id in ids:
            columns = batch.rows[request_id]
            if request_id in created:
                new = dict(_EMPTY_ROW)
                new.update(columns)
                new["request_id"] = request_id
                changes.append((None, new))
                continue
            old = stored[request_id]
            new = dict(old)
            new.update(columns)
            names = tuple(columns)
            updates.setdefault(names, []).append([*(_clean(v) for v in columns.values()), request_id])
            changes.append((old, new))
        with conn.cursor() as cursor:
            for names, params in updates.items():
                sets = ", ".join(f"{c} = %s" for c in names)
                cursor.executemany(f"UPDATE session_stats SET {sets} WHERE request_id = %s", params)
            if batch.tool_calls:
                cursor.executemany(
                    "INSERT INTO tool_call_executions (request_id, call_index, tool_call_id, session_id, tool_name, "
                    "input_json, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (request_id, call_index) DO UPDATE SET tool_call_id = EXCLUDED.tool_call_id, "
                    "session_id = EXCLUDED.session_id, tool_name = EXCLUDED.tool_name, "
                    "input_json = EXCLUDED.input_json, created_at = EXCLUDED.created_at",
                    [[_clean(v) for v in call] for _, call in sorted(batch.tool_calls.items())],
                )
            if batch.tool_results:
                cursor.executemany(
                    "UPDATE tool_call_executions SET duration_ms = %s, result_request_id = %s, "
                    "is_error = COALESCE(is_error, 0) WHERE session_id = %s AND tool_call_id = %s",
                    batch.tool_results,
                )
            if batch.tool_errors:
                cursor.executemany(
                    "UPDATE tool_call_executions SET is_error = 1 WHERE session_id = %s AND tool_call_id = %s",
                    batch.tool_errors,
                )
            for request_id, stream in sorted(batch.streams.items()):
                names = ("request_id", *stream)
                sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in stream) or "session_id = EXCLUDED.session_id"
                cursor.execute(
                    f"INSERT INTO stream_metrics ({', '.join(names)}) VALUES ({', '.join('%s' for _ in names)}) "
                    f"ON CONFLICT (request_id) DO UPDATE SET {sets}",
                    [request_id, *stream.values()],
                )
        self._update_sessions(conn, changes)

    def _update_sessions(self, conn: psycopg.Connection[Any], changes: list[tuple[Any, dict[str, Any]]]) -> None:
        totals: dict[str, _SessionChange] = {}
        recompute: set[str] = set()
        for old, new in changes:
            session_id = new["session_id"]
            if old is not None and (
                old["session_id"] != session_id
                or _at(old) != _at(new)
                or (_end(old) is not None and (_end(new) is None or _end(new) < _end(old)))
            ):
                recompute.add(old["session_id"])
                recompute.add(session_id)
                continue
            change = totals.get(session_id)
            if change is None:
                change = totals[session_id] = _SessionChange(session_id)
            change.apply(old, new)
        for session_id in sorted(totals):
            if session_id not in recompute:
                params = totals[session_id].params()
                conn.execute(_UPSERT_SESSION, {k: _clean(v) for k, v in params.items()})
        for session_id in sorted(recompute):
            self._recompute_session(conn, session_id)

    def _recompute_session(self, conn: psycopg.Connection[Any], session_id: str) -> None:
        # Wait for other batches of the session first; the recomputation's
        # own snapshot then sees what they committed.
        conn.execute("SELECT 1 FROM sessions WHERE session_id = %s FOR UPDATE", (session_id,))
        count = conn.execute("SELECT COUNT(*) FROM session_stats WHERE session_id = %s", (session_id,)).fetchone()
        if not count or not count[0]:
            conn.execute("DELETE FROM sessions WHERE session_id = %s", (session_id,))
            return
        conn.execute(_RECOMPUTE_SESSION, {"sid": session_id})

    def recompute_sessions(self) -> None:
        """Recompute every session row from its requests (the reference definition)."""
        conn = self._connection()
        with conn.transaction():
            for (session_id,) in conn.execute("SELECT session_id FROM sessions ORDER BY session_id").fetchall():
                self._recompute_session(conn, session_id)


# --------------------------------------------------------------------------
# Copying an SQLite store

_TOOL_CALL_COLUMNS = ("request_id", "call_index", "tool_call_id", "session_id", "tool_name", "input_json",
                      "duration_ms", "created_at", "result_request_id", "is_error")
_STREAM_COLUMNS = ("request_id", "session_id", "ttft_ms", "chunk_count", "event_count", "bytes_out", "stream_ms",
                   "chunk_gap_mean_ms", "chunk_gap_p50_ms", "chunk_gap_p95_ms", "chunk_gap_max_ms")


def _copy_sql(table: str, columns: tuple[str, ...], key: tuple[str, ...], overwrite: bool) -> str:
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    action = f"DO UPDATE SET {updates}" if overwrite else "DO NOTHING"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('%s' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(key)}) {action}"
    )


def copy_rows(
    source: Any, writer: PostgresWriter | None, batch_size: int = 500, skip_existing: bool = True
) -> tuple[int, int, int]:
    """
    Copy the rows of an SQLite session database (C{source}, a current
    C{sqlite3} connection) into the writer's PostgreSQL store, one
    transaction per C{batch_size} requests, and recompute the sessions
    touched.  C{writer} C{None}: count only.

    @return: C{(requests copied, requests skipped as present, sessions)}.
    """
    copied = skipped = 0
    sessions: set[str] = set()
    conn = writer._connection() if writer is not None else None
    last_id = 0
    columns = ", ".join(_STATS_COLUMNS)
    while True:
        rows = source.execute(
            f"SELECT id, {columns} FROM session_stats WHERE id > ? ORDER BY id LIMIT ?", (last_id, batch_size)
        ).fetchall()
        if not rows:
            break
        last_id = rows[-1][0]
        ids = [row[1] for row in rows]
        request_ids = {row[1]: row[2] for row in rows}
        if conn is None:
            copied += len(rows)
            sessions.update(request_ids.values())
            continue
        with conn.transaction():
            present: set[str] = set()
            if skip_existing:
                present = {r[0] for r in conn.execute(
                    "SELECT request_id FROM session_stats WHERE request_id = ANY(%s)", (ids,)).fetchall()}
            fresh = [row for row in rows if row[1] not in present]
            skipped += len(rows) - len(fresh)
            if fresh:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        _copy_sql("session_stats", _STATS_COLUMNS, ("request_id",), not skip_existing),
                        [[_clean(v) for v in row[1:]] for row in fresh],
                    )
                    fresh_ids = [row[1] for row in fresh]
                    marks = ", ".join("?" for _ in fresh_ids)
                    calls = source.execute(
                        f"SELECT {', '.join(_TOOL_CALL_COLUMNS)} FROM tool_call_executions "
                        f"WHERE request_id IN ({marks})", fresh_ids).fetchall()
                    if calls:
                        cursor.executemany(
                            _copy_sql("tool_call_executions", _TOOL_CALL_COLUMNS, ("request_id", "call_index"),
                                      not skip_existing),
                            [[_clean(v) for v in call] for call in calls],
                        )
                    streams = source.execute(
                        f"SELECT {', '.join(_STREAM_COLUMNS)} FROM stream_metrics WHERE request_id IN ({marks})",
                        fresh_ids).fetchall()
                    if streams:
                        cursor.executemany(
                            _copy_sql("stream_metrics", _STREAM_COLUMNS, ("request_id",), not skip_existing),
                            [list(stream) for stream in streams],
                        )
                touched = sorted({row[2] for row in fresh})
                for session_id in touched:
                    writer._recompute_session(conn, session_id)  # type: ignore[union-attr]
                sessions.update(touched)
            copied += len(fresh)
    return copied, skipped, len(sessions)
