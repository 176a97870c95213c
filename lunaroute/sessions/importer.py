"""
C{lunaroute-server import-sessions}: rebuild or fill the SQLite session store
from the JSONL files, after a crash, an upgrade or with SQLite recording off.

The SQLite writer builds every row from events alone and upserts by request
id, so feeding it the JSONL events gives the same database the gateway would
have written live, and importing twice changes nothing.
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

from lunaroute.errors import ConfigError


@dataclass
class ImportReport:
    files: int = 0
    sessions: int = 0
    events: int = 0
    skipped_sessions: int = 0
    skipped_events: int = 0
    failed_lines: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        verb = "would import" if dry_run else "imported"
        return (
            f"{self.files} files, {self.sessions} sessions, {self.events} events {verb}; "
            f"{self.skipped_sessions} sessions ({self.skipped_events} events) skipped as already "
            f"present; {self.failed_lines} bad lines"
        )


def session_files(directory: Path) -> list[Path]:
    """The JSONL session files under a sessions directory, oldest day first."""
    return sorted(directory.glob("*/session_*.jsonl")) + sorted(directory.glob("session_*.jsonl"))


def read_events(path: Path, report: ImportReport) -> Iterator[dict[str, Any]]:
    """
    The events of one file.  A bad line is reported with its file and line
    number and skipped; a torn last line (a killed writer) is skipped quietly.
    """
    data = path.read_bytes()
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


def _existing_sessions(db_path: Path) -> set[str]:
    if not db_path.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            return {row[0] for row in conn.execute("SELECT session_id FROM sessions")}
    except sqlite3.Error:
        return set()


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
) -> ImportReport:
    from lunaroute.sessions.sqlite import SQLiteWriter

    report = ImportReport()
    files = session_files(sessions_dir)
    existing = _existing_sessions(db_path) if skip_existing else set()
    writer = None if dry_run else SQLiteWriter(str(db_path))
    if writer is not None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        writer.open()
    progress = _Progress(len(files), progress_out or sys.stderr)
    batch: list[dict[str, Any]] = []
    seen_sessions: set[str] = set()
    try:
        for index, path in enumerate(files, start=1):
            report.files += 1
            progress.update(index, path.name)
            events = list(read_events(path, report))
            by_session: dict[str, list[dict[str, Any]]] = {}
            for event in events:
                by_session.setdefault(event["session_id"], []).append(event)
            for session_id, session_events in by_session.items():
                if session_id in existing:
                    report.skipped_sessions += 1
                    report.skipped_events += len(session_events)
                    continue
                if session_id not in seen_sessions:
                    seen_sessions.add(session_id)
                    report.sessions += 1
                report.events += len(session_events)
                for event in session_events:
                    batch.append(event)
                    if len(batch) >= batch_size:
                        if writer is not None:
                            writer.write_batch(batch)
                        batch = []
        if batch and writer is not None:
            writer.write_batch(batch)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    return report


def run_import(args: argparse.Namespace) -> int:
    """The C{import-sessions} command; returns the exit status."""
    from lunaroute.config import load_settings

    try:
        settings = load_settings(args.config, env=os.environ)
    except ConfigError as exc:
        print(f"lunaroute-server: configuration error: {exc}", file=sys.stderr)
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
