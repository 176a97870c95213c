"""
C{lunaroute-server import-sessions}: rebuild or fill the SQLite session store
from the JSONL files, after a crash, an upgrade or with SQLite recording off;
with C{--postgres}, fill the PostgreSQL store from the JSONL files or (with
C{--from-sqlite}) from an SQLite session database.

The SQLite writer builds every row from events alone and upserts by request
id, so feeding it the JSONL events gives the same database the gateway would
have written live, and importing twice changes nothing.

What is already there is skipped request by request, not session by
session: after a crash (or a disk that filled up) the database may hold part
of a session, and the import adds exactly the requests it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO


@dataclass
class ImportReport:
    files: int = 0
    sessions: int = 0
    requests: int = 0
    events: int = 0
    skipped_requests: int = 0
    skipped_events: int = 0
    failed_lines: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        verb = "would import" if dry_run else "imported"
        return (
            f"{self.files} files; {self.requests} requests ({self.events} events) in "
            f"{self.sessions} sessions {verb}; {self.skipped_requests} requests "
            f"({self.skipped_events} events) skipped as already present; "
            f"{self.failed_lines} bad lines"
        )


def session_files(directory: Path) -> list[Path]:
    """
    The JSONL session files under a sessions directory, oldest day first,
    plain (C{.jsonl}) and compressed by retention (C{.jsonl.zst}).
    """
    from lunaroute.sessions.retention import session_file_paths

    return [Path(path) for path in session_file_paths(directory)]


def read_events(path: Path, report: ImportReport) -> Iterator[dict[str, Any]]:
    """
    The events of one file.  A bad line is reported with its file and line
    number and skipped; a torn last line (a killed writer) is skipped quietly.
    """
    import zstandard

    from lunaroute.sessions.retention import read_session_bytes

    try:
        data = read_session_bytes(path)
    except (OSError, zstandard.ZstdError, EOFError) as exc:
        # A damaged compressed file: reported, the other files imported.
        report.failed_lines += 1
        report.problems.append(f"{path}: cannot be read: {exc}")
        return
    lines = data.split(b"\n")
    torn_tail = not data.endswith(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
            for key in ("type", "session_id", "request_id"):
                if not isinstance(event.get(key), str):
                    raise ValueError(f"missing {key}")
        except ValueError as exc:
            if torn_tail and number == len(lines):
                continue
            report.failed_lines += 1
            report.problems.append(f"{path}:{number}: {exc}")
            continue
        yield event


# Request ids looked up per query (SQLite allows 999+ parameters).
_LOOKUP_CHUNK = 500


class _ExistingRequests:
    """
    Which requests the database already holds complete (a row with its
    C{completed} event applied), looked up per file so memory stays flat
    however big the database is.  A request with a row but no completion
    (never the case for rows the gateway wrote, each request being one
    transaction) is imported again, which the upserts make harmless.
    """

    def __init__(self, db_path: Path) -> None:
        self._conn: sqlite3.Connection | None = None
        if db_path.exists():
            try:
                self._conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
                self._conn.execute("SELECT 1 FROM session_stats LIMIT 1").fetchall()
            except sqlite3.Error:
                self.close()

    def among(self, request_ids: list[str]) -> set[str]:
        if self._conn is None:
            return set()
        found: set[str] = set()
        for start in range(0, len(request_ids), _LOOKUP_CHUNK):
            chunk = request_ids[start:start + _LOOKUP_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = self._conn.execute(
                f"SELECT request_id FROM session_stats WHERE completed_at IS NOT NULL "
                f"AND request_id IN ({marks})",
                chunk,
            )
            found.update(row[0] for row in rows)
        return found

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _PostgresExisting:
    """L{_ExistingRequests} for the PostgreSQL store."""

    def __init__(self, dsn: str) -> None:
        from lunaroute.sessions.postgres import connect

        self._conn = connect(dsn)

    def among(self, request_ids: list[str]) -> set[str]:
        rows = self._conn.execute(
            "SELECT request_id FROM session_stats WHERE completed_at IS NOT NULL AND request_id = ANY(%s)",
            (request_ids,),
        ).fetchall()
        return {row[0] for row in rows}

    def close(self) -> None:
        self._conn.close()


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, out: TextIO) -> None:
        self._total = total
        self._out = out
        self._enabled = out.isatty() and total > 0

    def update(self, done: int, label: str) -> None:
        if not self._enabled:
            return
        width = 30
        filled = int(width * done / self._total)
        bar = "#" * filled + "-" * (width - filled)
        self._out.write(f"\r[{bar}] {done}/{self._total} {label[:40]:<40}")
        self._out.flush()

    def close(self) -> None:
        if self._enabled:
            self._out.write("\n")
            self._out.flush()


def import_sessions(
    sessions_dir: Path,
    db_path: Path,
    *,
    batch_size: int = 500,
    skip_existing: bool = True,
    dry_run: bool = False,
    progress_out: TextIO | None = None,
    postgres_dsn: str | None = None,
) -> ImportReport:
    """
    Import the JSONL files under C{sessions_dir} into C{db_path}, or into
    the PostgreSQL store at C{postgres_dsn} when given.

    @param skip_existing: leave out the requests the database already holds
        (checked per request id, so a session recorded partly is completed);
        when false every event is applied again.
    """
    from lunaroute.sessions.sqlite import SQLiteWriter

    report = ImportReport()
    files = session_files(sessions_dir)
    existing: Any = None
    writer: Any = None
    if postgres_dsn is not None:
        from lunaroute.sessions.postgres import PostgresWriter

        if not dry_run:
            writer = PostgresWriter(postgres_dsn)
            writer.open_or_raise()
        existing = _PostgresExisting(postgres_dsn) if skip_existing else None
    else:
        existing = _ExistingRequests(db_path) if skip_existing else None
        writer = None if dry_run else SQLiteWriter(str(db_path))
        if writer is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            writer.open()
    progress = _Progress(len(files), progress_out or sys.stderr)
    batch: list[dict[str, Any]] = []
    seen_sessions: set[str] = set()
    seen_requests: set[str] = set()
    try:
        for index, path in enumerate(files, start=1):
            report.files += 1
            progress.update(index, path.name)
            by_request: dict[str, list[dict[str, Any]]] = {}
            for event in read_events(path, report):
                by_request.setdefault(event["request_id"], []).append(event)
            present = existing.among(list(by_request)) if existing is not None else set()
            for request_id, request_events in by_request.items():
                if request_id in present:
                    report.skipped_requests += 1
                    report.skipped_events += len(request_events)
                    continue
                if request_id not in seen_requests:
                    seen_requests.add(request_id)
                    report.requests += 1
                for event in request_events:
                    if event["session_id"] not in seen_sessions:
                        seen_sessions.add(event["session_id"])
                        report.sessions += 1
                report.events += len(request_events)
                for event in request_events:
                    batch.append(event)
                    if len(batch) >= batch_size:
                        if writer is not None:
                            writer.write_batch(batch)
                        batch = []
        if batch and writer is not None:
            writer.write_batch(batch)
    finally:
        progress.close()
        if existing is not None:
            existing.close()
        if writer is not None:
            writer.close()
    return report


def copy_sqlite_to_postgres(
    db_path: Path,
    dsn: str,
    *,
    batch_size: int = 500,
    skip_existing: bool = True,
    dry_run: bool = False,
) -> ImportReport:
    """
    Copy an SQLite session database's rows (requests, tool calls, stream
    metrics) into the PostgreSQL store, then recompute the sessions they
    belong to from their requests.  With C{skip_existing} a request already
    there is left as it is; otherwise it is overwritten.
    """
    from lunaroute.sessions.postgres import PostgresWriter, copy_rows
    from lunaroute.sessions.sqlite import connect as sqlite_connect

    report = ImportReport(files=1)
    source = sqlite_connect(str(db_path))
    writer = None if dry_run else PostgresWriter(dsn)
    try:
        if writer is not None:
            writer.open_or_raise()
        copied = copy_rows(source, writer, batch_size=batch_size, skip_existing=skip_existing)
        report.requests, report.skipped_requests, report.sessions = copied
    finally:
        source.close()
        if writer is not None:
            writer.close()
    return report


def run_import(args: argparse.Namespace) -> int:
    """The C{import-sessions} command; returns the exit status."""
    from lunaroute.config import load_command_settings

    settings = load_command_settings(args.config)
    if settings is None:
        return 1
    recording = settings.session_recording
    if args.sessions_dir:
        sessions_dir = Path(os.path.expanduser(args.sessions_dir))
        db_path = Path(os.path.expanduser(args.db_path)) if args.db_path else sessions_dir / "sessions.db"
    else:
        sessions_dir = Path(recording.jsonl_dir)
        db_path = Path(os.path.expanduser(args.db_path)) if args.db_path else Path(recording.db_path)
    if args.batch_size < 1:
        print("lunaroute-server: --batch-size must be at least 1", file=sys.stderr)
        return 1
    postgres = getattr(args, "postgres", None)
    from_sqlite = getattr(args, "from_sqlite", None)
    if from_sqlite is not None and postgres is None:
        print("lunaroute-server: --from-sqlite copies into PostgreSQL: give --postgres too", file=sys.stderr)
        return 1
    if postgres is not None:
        return _run_postgres_import(args, recording, sessions_dir, postgres, from_sqlite)
    if not sessions_dir.is_dir():
        print(f"lunaroute-server: sessions directory not found: {sessions_dir}", file=sys.stderr)
        return 1
    try:
        report = import_sessions(
            sessions_dir,
            db_path,
            batch_size=args.batch_size,
            skip_existing=args.skip_existing,
            dry_run=args.dry_run,
        )
    except (OSError, sqlite3.Error) as exc:
        print(f"lunaroute-server: import failed: {exc}", file=sys.stderr)
        return 1
    for problem in report.problems:
        print(f"bad line: {problem}", file=sys.stderr)
    print(("dry run: " if args.dry_run else "") + report.summary(args.dry_run) + f" (database {db_path})")
    return 0


def postgres_dsn_for(option: str, recording: Any) -> str | None:
    """C{--postgres DSN}, or (C{--postgres} alone) the configured store's connection string."""
    return option or recording.postgres.connection_string


def _run_postgres_import(
    args: argparse.Namespace, recording: Any, sessions_dir: Path, option: str, from_sqlite: str | None
) -> int:
    import psycopg

    from lunaroute.secrets import mask_connection_string

    dsn = postgres_dsn_for(option, recording)
    if not dsn:
        print(
            "lunaroute-server: --postgres needs a connection string, or session_recording.postgres."
            "connection_string in the config",
            file=sys.stderr,
        )
        return 1
    where = mask_connection_string(dsn)
    try:
        if from_sqlite is not None:
            source = Path(os.path.expanduser(from_sqlite))
            if not source.is_file():
                print(f"lunaroute-server: SQLite database not found: {source}", file=sys.stderr)
                return 1
            report = copy_sqlite_to_postgres(
                source, dsn, batch_size=args.batch_size, skip_existing=args.skip_existing, dry_run=args.dry_run
            )
            verb = "would copy" if args.dry_run else "copied"
            print(
                ("dry run: " if args.dry_run else "")
                + f"{report.requests} requests in {report.sessions} sessions {verb} from {source}; "
                f"{report.skipped_requests} skipped as already present (database {where})"
            )
            return 0
        if not sessions_dir.is_dir():
            print(f"lunaroute-server: sessions directory not found: {sessions_dir}", file=sys.stderr)
            return 1
        report = import_sessions(
            sessions_dir, Path(), batch_size=args.batch_size, skip_existing=args.skip_existing,
            dry_run=args.dry_run, postgres_dsn=dsn,
        )
    except (OSError, sqlite3.Error, psycopg.Error) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"lunaroute-server: import failed ({where}): {first}", file=sys.stderr)
        return 1
    for problem in report.problems:
        print(f"bad line: {problem}", file=sys.stderr)
    print(("dry run: " if args.dry_run else "") + report.summary(args.dry_run) + f" (database {where})")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    """The C{migrate} command: create or upgrade the session store's schema; returns the exit status."""
    from lunaroute.config import load_command_settings
    from lunaroute.secrets import mask_connection_string

    settings = load_command_settings(args.config)
    if settings is None:
        return 1
    recording = settings.session_recording
    dsn = args.postgres or (recording.postgres.connection_string if recording.postgres.enabled else None)
    if dsn and not args.db_path:
        import psycopg

        from lunaroute.sessions.postgres import SCHEMA_VERSION, SchemaTooNew, migrate, schema_version

        where = mask_connection_string(dsn)
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                before = schema_version(conn)
                after = migrate(conn)
        except (psycopg.Error, SchemaTooNew) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"lunaroute-server: migrate failed ({where}): {first}", file=sys.stderr)
            return 1
        change = f"upgraded from {before}" if before != after else "already current"
        print(f"postgres {where}: schema version {after} of {SCHEMA_VERSION} ({change})")
        return 0
    from lunaroute.sessions.sqlite import SCHEMA_VERSION as SQLITE_VERSION
    from lunaroute.sessions.sqlite import SchemaTooNew as SQLiteTooNew
    from lunaroute.sessions.sqlite import connect as sqlite_connect

    path = os.path.expanduser(args.db_path) if args.db_path else recording.db_path
    try:
        exists = os.path.exists(path)
        before = 0
        if exists:
            probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                before = probe.execute("PRAGMA user_version").fetchone()[0]
            finally:
                probe.close()
        database = sqlite_connect(path)
        database.close()
    except (OSError, sqlite3.Error, SQLiteTooNew) as exc:
        print(f"lunaroute-server: migrate failed ({path}): {exc}", file=sys.stderr)
        return 1
    change = f"upgraded from {before}" if before != SQLITE_VERSION else "already current"
    print(f"sqlite {path}: schema version {SQLITE_VERSION} ({change if exists else 'created'})")
    return 0
