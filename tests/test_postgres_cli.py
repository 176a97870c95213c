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
from lunaroute.sessions.postgres import SCHEMA_VERSION, PgConnection, PostgresQueries, connect
from lunaroute.sessions.store import SessionFilters, SessionQueries, StatsWindow
from lunaroute.testing.sessions import write_exchanges


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


# -- report and search over PostgreSQL ------------------------------------------


def _record_report_sample(dsn: str, tmp_path: Path) -> Path:
    from test_reports import EXCHANGES, record

    from lunaroute.sessions.postgres import PostgresWriter
    from lunaroute.testing.exchanges import make_exchange

    sqlite_db = tmp_path / "reports.db"
    record(sqlite_db, EXCHANGES)
    writer = PostgresWriter(dsn)
    for spec in EXCHANGES:
        spec = dict(spec)
        writer.write_batch(exchange_events(make_exchange(spec.pop("session_id"), spec.pop("received"), **spec)))
    writer.close()
    return sqlite_db


@pytest.mark.parametrize("kind", ["daily", "weekly", "monthly", "session", "blocks"])
def test_reports_over_postgres_equal_the_sqlite_ones(kind: str, postgres_dsn: str, tmp_path: Path) -> None:
    """lunaroute-server report --postgres: the same figures, row for row, as over the SQLite store."""
    import io
    import json
    from datetime import UTC, datetime

    from test_reports import args

    from lunaroute.sessions.reports import run_report

    sqlite_db = _record_report_sample(postgres_dsn, tmp_path)
    now = datetime(2025, 7, 2, 11, 0, tzinfo=UTC)
    outputs = []
    for options in ({"db_path": str(sqlite_db)}, {"db_path": None, "postgres": postgres_dsn}):
        out = io.StringIO()
        assert run_report(args(sqlite_db, kind, breakdown=True, model=None, **options), out=out, now=now) == 0
        outputs.append(json.loads(out.getvalue()))
    assert outputs[0] == outputs[1]
    filtered = io.StringIO()
    assert run_report(args(sqlite_db, kind, db_path=None, postgres=postgres_dsn, model="opus", project="x"),
                      out=filtered, now=now) == 0


def test_search_command_over_postgres(postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import json
    import os

    from test_reports import search_args

    from lunaroute.sessions.reports import run_search

    for name in [k for k in os.environ if k.startswith("LUNAROUTE_")]:
        monkeypatch.delenv(name)
    sqlite_db = _record_report_sample(postgres_dsn, tmp_path)
    out = io.StringIO()
    assert run_search(search_args(sqlite_db, "umbrella", db_path=None, postgres=postgres_dsn), out=out) == 0
    hits = json.loads(out.getvalue())["hits"]
    assert [(h["session_id"], h["request_id"]) for h in hits] == [("s4", "r6")]
    assert "[umbrella]" in hits[0]["snippet"]
    bad = io.StringIO()
    assert run_search(search_args(sqlite_db, '"unbalanced', db_path=None, postgres=postgres_dsn), out=bad) == 2
