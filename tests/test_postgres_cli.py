"""
The command line of the PostgreSQL store: C{lunaroute-server migrate} and
C{lunaroute-server import-sessions --postgres} (from the JSONL files, or
C{--from-sqlite} from an SQLite session database).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_session_store import sample_exchanges

from lunaroute.cli import main
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.jsonl import JSONLWriter
from lunaroute.sessions.store import SessionFilters, SessionQueries, StatsWindow
from lunaroute.testing.sessions import write_exchanges

psycopg = pytest.importorskip("psycopg")

from lunaroute.sessions.postgres import SCHEMA_VERSION, PgConnection, PostgresQueries, connect  # noqa: E402


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


def sessions_of(queries: SessionQueries) -> list[dict[str, Any]]:
    rows, _ = queries.list_sessions(SessionFilters(), "started_at", "asc", 100, 0)
    return rows


def postgres_queries(dsn: str) -> PostgresQueries:
    return PostgresQueries(PgConnection(connect(dsn)))


def test_migrate_creates_then_finds_the_schema_current(capsys: pytest.CaptureFixture[str], postgres_dsn: str) -> None:
    code, out, _ = run(capsys, "migrate", "--postgres", postgres_dsn)
    assert code == 0 and f"schema version {SCHEMA_VERSION} of {SCHEMA_VERSION} (upgraded from 0)" in out
    code, out, _ = run(capsys, "migrate", "--postgres", postgres_dsn)
    assert code == 0 and "already current" in out


def test_migrate_of_an_unreachable_database_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "migrate", "--postgres", "postgresql://gw:topsecretpw@127.0.0.1:1/x?connect_timeout=1")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "migrate failed (postgresql://gw:***@127.0.0.1:1/x" in err
    assert "topsecretpw" not in err


def test_migrate_sqlite_when_no_postgres_is_configured(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "migrate", "--db-path", str(tmp_path / "s.db"))
    assert code == 0 and "schema version" in out and "created" in out


def test_import_jsonl_into_postgres_equals_the_sqlite_store_and_twice_is_a_no_op(
    capsys: pytest.CaptureFixture[str], postgres_dsn: str, tmp_path: Path
) -> None:
    """The JSONL files imported into PostgreSQL give the sessions the SQLite writer gives; again, nothing new."""
    jsonl = tmp_path / "sessions"
    writer = JSONLWriter(str(jsonl))
    writer.write_batch([e for x in sample_exchanges() for e in exchange_events(x)])
    writer.close()
    sqlite_db = str(tmp_path / "s.db")
    write_exchanges(sqlite_db, sample_exchanges())
    code, out, _ = run(capsys, "import-sessions", "--sessions-dir", str(jsonl), "--postgres", postgres_dsn)
    assert code == 0 and "4 requests (" in out and "in 3 sessions imported" in out
    pg = postgres_queries(postgres_dsn)
    assert sessions_of(pg) == sessions_of(SessionQueries(sqlite3.connect(sqlite_db)))
    code, out, _ = run(capsys, "import-sessions", "--sessions-dir", str(jsonl), "--postgres", postgres_dsn)
    assert code == 0 and "0 requests" in out and "4 requests" in out  # all skipped
    assert sessions_of(pg) == sessions_of(SessionQueries(sqlite3.connect(sqlite_db)))


def test_copy_an_sqlite_store_into_postgres(capsys: pytest.CaptureFixture[str], postgres_dsn: str, tmp_path: Path) -> None:
    """--from-sqlite copies requests, tool calls and stream metrics; the sessions are recomputed from them."""
    sqlite_db = str(tmp_path / "s.db")
    write_exchanges(sqlite_db, sample_exchanges())
    code, out, _ = run(capsys, "import-sessions", "--postgres", postgres_dsn, "--from-sqlite", sqlite_db,
                       "--batch-size", "2")
    assert code == 0 and "4 requests in 3 sessions copied" in out
    pg, lite = postgres_queries(postgres_dsn), SessionQueries(sqlite3.connect(sqlite_db))
    assert sessions_of(pg) == sessions_of(lite)
    assert pg.stats_tools(StatsWindow()) == lite.stats_tools(StatsWindow())
    assert [h["request_id"] for h in pg.search("capybara", 5)] == ["cc-req-1"]
    code, out, _ = run(capsys, "import-sessions", "--postgres", postgres_dsn, "--from-sqlite", sqlite_db)
    assert code == 0 and "0 requests" in out and "4 skipped" in out


def test_from_sqlite_needs_postgres(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "import-sessions", "--from-sqlite", str(tmp_path / "s.db"))
    assert code == 1 and "--postgres" in err
