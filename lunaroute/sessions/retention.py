"""
Retention of recorded sessions: old JSONL files are compressed with zstd,
files past the age limit or beyond the size limit (oldest first) are
deleted, and the SQLite store forgets the requests of the deleted files and
the sessions idle for longer than the age limit, then shrinks.

Split like the rest of the recording code:

  - pure planning: L{scan_session_files} lists the files, L{plan_retention}
    decides from the files, the settings, "now" and the files open for
    writing what to compress and what to delete;
  - blocking work for a thread: L{run_file_phase} (compress, delete) and
    L{run_database_phase} (rows, search index, vacuum);
  - L{RetentionService}, a C{TimerService} of the gateway's C{MultiService}
    that runs both off the reactor every C{cleanup_interval_minutes};
    C{lunaroute-server cleanup} (L{run_cleanup}) runs them once.

A file still being written is never compressed or deleted.  The JSONL
writer holds a shared C{flock} on every file it has open; this module only
works on a file it can lock exclusively without waiting, so a busy file is
skipped (and tried again at the next run), whether the writer is in this
process or in a gateway running beside C{lunaroute-server cleanup}.  In the
gateway, the writer first closes (on its own thread) the handles of files
not written since the compression cutoff, so an idle session's file does
not stay locked forever.  While a file is compressed the lock is held: a
writer that wants to append to it waits, then finds the file gone and
starts a new one, so no line is lost.

Compression writes C{<name>.jsonl.zst} beside the file: zstd level 3 to a
temporary file in the same folder, synced, its content checked against the
original, renamed over the target in one step, then the original removed.
When a C{.jsonl.zst} of the same name exists (a session that went on after
its file was compressed), the new frame is appended after the existing
ones: zstd readers (C{zstdcat}, L{open_session_file}) read the frames one
after the other.  The compressed file keeps the original's modification
time, so its age still counts from its last event.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

import zstandard
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from lunaroute.config import RecordingSettings, RetentionSettings
from lunaroute.logs import log_observer

__all__ = [
    "COMPRESSED_SUFFIX",
    "ZSTD_LEVEL",
    "FileResult",
    "Planned",
    "RetentionPlan",
    "RetentionReport",
    "RetentionService",
    "SessionFile",
    "compress_file",
    "delete_file",
    "file_requests",
    "human_bytes",
    "make_retention_service",
    "open_session_file",
    "plan_retention",
    "read_session_bytes",
    "run_database_phase",
    "run_file_phase",
    "scan_session_files",
    "session_file_paths",
]

log = Logger(observer=log_observer)

ZSTD_LEVEL = 3
PLAIN_SUFFIX = ".jsonl"
COMPRESSED_SUFFIX = ".jsonl.zst"
DAY = 86_400.0
GB = 1024**3
_CHUNK = 1 << 20
# The compressed copy is written to a hidden temporary file beside the
# original (same file system, so the rename is atomic).
TEMP_PREFIX = ".retention-"
TEMP_SUFFIX = ".zst.tmp"


# --------------------------------------------------------------------------
# Reading: one opener for plain and compressed session files


def open_session_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """
    A binary file object with the JSON lines of a session file, plain
    (C{.jsonl}) or compressed (C{.jsonl.zst}, every frame in turn).
    Everything that reads session files back goes through here.
    """
    name = os.fspath(path)
    raw = open(name, "rb")  # noqa: SIM115 - returned to the caller
    if not name.endswith(".zst"):
        return raw
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
    except BaseException:
        raw.close()
        raise
    return io.BufferedReader(reader)


def read_session_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole (decompressed) content of a session file."""
    with open_session_file(path) as handle:
        return handle.read()


def _is_session_name(name: str) -> bool:
    return name.startswith("session_") and (name.endswith(PLAIN_SUFFIX) or name.endswith(COMPRESSED_SUFFIX))


def session_file_paths(directory: str | os.PathLike[str]) -> list[str]:
    """
    The session files under a sessions directory (C{<day>/session_*.jsonl}
    and C{.jsonl.zst}, and any at the top level), in reading order: by
    folder, then name, a session's compressed (older) part before its plain
    one.
    """
    root = os.fspath(directory)
    found: list[str] = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            try:
                found.extend(
                    inner.path
                    for inner in os.scandir(entry.path)
                    if _is_session_name(inner.name) and inner.is_file(follow_symlinks=False)
                )
            except OSError:
                continue
        elif _is_session_name(entry.name) and entry.is_file(follow_symlinks=False):
            found.append(entry.path)

    def order(path: str) -> tuple[bool, str, str, int]:
        folder, name = os.path.split(path)
        top = folder == root
        stem = name[: -len(".zst")] if name.endswith(".zst") else name
        return (top, folder, stem, 0 if name.endswith(".zst") else 1)

    return sorted(found, key=order)


# --------------------------------------------------------------------------
# Planning (pure)


@dataclass(frozen=True)
class SessionFile:
    """One session file as found on disk."""

    path: str
    size: int
    mtime: float

    @property
    def compressed(self) -> bool:
        return self.path.endswith(COMPRESSED_SUFFIX)


def scan_session_files(directory: str | os.PathLike[str]) -> list[SessionFile]:
    """The session files under C{directory} with their size and modification time."""
    files = []
    for path in session_file_paths(directory):
        try:
            info = os.stat(path)
        except OSError:
            continue  # removed meanwhile
        files.append(SessionFile(path, info.st_size, info.st_mtime))
    return files


COMPRESS = "compress"
DELETE = "delete"


@dataclass(frozen=True)
class Planned:
    """
    One thing to do: C{action} (C{compress} or C{delete}) on C{file}, the
    C{rule} that asks for it (C{age}, C{size} or C{compress}) and why, in words.
    """

    file: SessionFile
    action: str
    reason: str
    rule: str = ""


@dataclass(frozen=True)
class RetentionPlan:
    """What a retention run does, computed by L{plan_retention}."""

    actions: tuple[Planned, ...]
    in_use: tuple[SessionFile, ...]
    total_bytes: int
    limit_bytes: int

    @property
    def to_compress(self) -> list[Planned]:
        return [p for p in self.actions if p.action == COMPRESS]

    @property
    def to_delete(self) -> list[Planned]:
        return [p for p in self.actions if p.action == DELETE]

    @property
    def bytes_deleted(self) -> int:
        return sum(p.file.size for p in self.to_delete)


def plan_retention(
    files: Iterable[SessionFile],
    settings: RetentionSettings,
    now: float,
    open_paths: Iterable[str] = (),
    size_limit: bool = True,
) -> RetentionPlan:
    """
    Decide what to do with C{files} at time C{now} (epoch seconds):

      1. delete every file last written more than C{max_age_days} ago;
      2. then, while the files left weigh more than C{max_total_size_gb},
         delete the oldest (by last write);
      3. compress the plain files left that were last written more than
         C{compress_after_days} ago.

    Files in C{open_paths} (open for writing) are never touched; they count
    toward the total.  The size pass uses the sizes as they are now; the
    runner plans first without it (C{size_limit=False}), compresses, and
    applies it on the sizes that result (L{run_file_phase}).
    """
    busy = set(open_paths)
    limit = int(settings.max_total_size_gb * GB)
    age_cutoff = now - settings.max_age_days * DAY
    compress_cutoff = now - settings.compress_after_days * DAY
    ordered = sorted(files, key=lambda f: (f.mtime, f.path))
    actions: list[Planned] = []
    in_use = tuple(f for f in ordered if f.path in busy)
    kept: list[SessionFile] = []
    for f in ordered:
        if f.path not in busy and f.mtime < age_cutoff:
            actions.append(Planned(f, DELETE, f"older than {settings.max_age_days} days", "age"))
        else:
            kept.append(f)
    total = sum(f.size for f in kept)
    survivors: list[SessionFile] = []
    for f in kept:
        if size_limit and total > limit and f.path not in busy:
            actions.append(Planned(f, DELETE, f"over {settings.max_total_size_gb:g} GB, oldest first", "size"))
            total -= f.size
        else:
            survivors.append(f)
    for f in survivors:
        if not f.compressed and f.path not in busy and f.mtime < compress_cutoff:
            actions.append(Planned(f, COMPRESS, f"older than {settings.compress_after_days} days", "compress"))
    return RetentionPlan(tuple(actions), in_use, sum(f.size for f in ordered), limit)


# --------------------------------------------------------------------------
# Doing (blocking: run in a thread)


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return (info.st_ino, info.st_dev)


def _still_at(fd: int, path: str) -> bool:
    try:
        at_path = os.stat(path)
    except OSError:
        return False
    return _identity(fd) == (at_path.st_ino, at_path.st_dev)


def _lock_exclusive(path: str) -> int | None:
    """
    An open descriptor of C{path} holding an exclusive lock, or C{None} when
    the file is in use (a writer holds its shared lock) or gone.
    """
    try:
        # Never through a symlink (one swapped in after the scan could
        # point out of the sessions folder).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if not _still_at(fd, path):
        os.close(fd)
        return None
    return fd


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compress_file(path: str, level: int = ZSTD_LEVEL) -> tuple[str, int, int] | None:
    """
    Compress the plain session file C{path} into C{path + ".zst"} (see the
    module docstring for how) and remove it.  Returns C{(target, bytes
    before, compressed bytes added)}, or C{None} when the file is in use,
    gone or empty (nothing changed).

    @raise OSError: or C{zstandard.ZstdError}; nothing is removed then.
    """
    fd = _lock_exclusive(path)
    if fd is None:
        return None
    try:
        info = os.fstat(fd)
        if info.st_size == 0:
            # Nothing to compress, and most likely a file a writer has just
            # created and is about to lock: taking it away would make the
            # writer start over (and, again and again, give up on a batch).
            return None
        directory = os.path.dirname(path)
        target = path + ".zst"
        tmp_fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(tmp_fd, "w+b") as out:
                if os.path.lexists(target):
                    # O_NOFOLLOW: a symlink there is an error, never read.
                    with os.fdopen(os.open(target, os.O_RDONLY | os.O_NOFOLLOW), "rb") as earlier:
                        shutil.copyfileobj(earlier, out, _CHUNK)
                start = out.tell()
                digest = hashlib.sha256()
                compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
                with compressor.stream_writer(out, closefd=False) as writer:
                    while chunk := os.read(fd, _CHUNK):
                        digest.update(chunk)
                        writer.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                # We hold the exclusive lock and writers take a shared one
                # before appending, so the size cannot have changed; a
                # writer that ignores locks would be caught here.
                if os.fstat(fd).st_size != info.st_size:
                    raise OSError(f"{path} changed while it was compressed; left as it is")
                out.seek(start)
                check = hashlib.sha256()
                reader = zstandard.ZstdDecompressor().stream_reader(out, read_across_frames=True, closefd=False)
                while chunk := reader.read(_CHUNK):
                    check.update(chunk)
                if check.digest() != digest.digest():
                    raise OSError(f"compressed copy of {path} does not read back the same; left as it is")
                added = out.seek(0, os.SEEK_END) - start
            os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _sync_directory(directory)
        os.unlink(path)
        _sync_directory(directory)
        return target, info.st_size, added
    finally:
        os.close(fd)


def file_requests(path: str) -> dict[str, set[str]]:
    """The request ids of a session file, by session id (bad lines skipped)."""
    found: dict[str, set[str]] = {}
    with open_session_file(path) as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            session_id, request_id = event.get("session_id"), event.get("request_id")
            if isinstance(session_id, str) and isinstance(request_id, str):
                found.setdefault(session_id, set()).add(request_id)
    return found


def delete_file(path: str, requests: dict[str, set[str]] | None = None) -> bool:
    """
    Remove a session file unless it is in use; when C{requests} is given,
    fill it with the file's request ids (by session) first, so the database
    can follow.  Returns whether the file was removed.
    """
    fd = _lock_exclusive(path)
    if fd is None:
        return False
    try:
        if requests is not None:
            try:
                found = file_requests(path)
            except (OSError, zstandard.ZstdError, EOFError) as exc:
                # A damaged file is still deleted when its time comes (else
                # it would stay forever, and count toward the size limit);
                # its sessions' rows go when they are idle past max_age_days.
                log.warn("retention: {path} cannot be read ({error}); deleted all the same", path=path, error=exc)
                found = {}
            for session_id, ids in found.items():
                requests.setdefault(session_id, set()).update(ids)
        os.unlink(path)
        return True
    finally:
        os.close(fd)


@dataclass
class FileResult:
    """What the file phase did (or, in a dry run, would do)."""

    compressed: list[tuple[str, int, int]] = field(default_factory=list)
    deleted: list[tuple[str, int, str]] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: dict[str, set[str]] = field(default_factory=dict)

    @property
    def bytes_freed(self) -> int:
        return sum(before - after for _, before, after in self.compressed) + sum(
            size for _, size, _ in self.deleted
        )


def _apply(plan_items: Iterable[Planned], result: FileResult, stop: Callable[[], bool]) -> None:
    for item in plan_items:
        if stop():
            return
        path = item.file.path
        try:
            if item.action == COMPRESS:
                done = compress_file(path)
                if done is None:
                    result.in_use.append(path)
                else:
                    result.compressed.append((path, done[1], done[2]))
            else:
                if delete_file(path, result.requests):
                    result.deleted.append((path, item.file.size, item.reason))
                else:
                    result.in_use.append(path)
        except (OSError, zstandard.ZstdError) as exc:
            result.errors.append(f"{item.action} {path}: {exc}")


def _remove_stale_temp_files(directory: str, now: float) -> None:
    """Remove what a compression killed midway left (a day-old hidden temporary file)."""
    try:
        folders = [entry.path for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for folder in [directory, *folders]:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(TEMP_SUFFIX):
                try:
                    if entry.stat().st_mtime < now - DAY:
                        os.unlink(entry.path)
                except OSError:
                    pass


def run_file_phase(
    directory: str,
    settings: RetentionSettings,
    now: float,
    open_paths: Iterable[str] = (),
    stop: Callable[[], bool] = lambda: False,
) -> FileResult:
    """
    Apply the retention plan to the files under C{directory}: deletions by
    age and compressions first, then the size limit again on the sizes that
    result (so compressing can spare files the first plan would delete).
    """
    result = FileResult()
    _remove_stale_temp_files(directory, now)
    busy = frozenset(open_paths)
    first = plan_retention(scan_session_files(directory), settings, now, busy, size_limit=False)
    _apply(first.actions, result, stop)
    second = plan_retention(scan_session_files(directory), settings, now, busy)
    attempted = {path for path, _, _ in result.compressed} | set(result.in_use)
    _apply([p for p in second.to_delete if p.rule == "size" and p.file.path not in attempted], result, stop)
    result.in_use.extend(f.path for f in first.in_use)
    return result


# Requests deleted per transaction.  Deleting a request costs about as much
# as indexing its text did (external-content FTS): a few milliseconds for a
# Claude Code turn.  In the gateway each chunk is one call on the writers'
# thread, so recording batches go in between and a first run over months of
# sessions never holds recording up for long.
DELETE_CHUNK = 200


def idle_cutoff(settings: RetentionSettings, now: float) -> str:
    """The last activity before which a session is past C{max_age_days}, as the events write times."""
    cutoff = datetime.fromtimestamp(now - settings.max_age_days * DAY, UTC)
    return cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _chunks(ids: Iterable[str]) -> list[list[str]]:
    ordered = sorted(set(ids))
    return [ordered[start:start + DELETE_CHUNK] for start in range(0, len(ordered), DELETE_CHUNK)]


def run_database_phase(
    writer: Any, request_ids: Iterable[str], settings: RetentionSettings, now: float, full_vacuum: bool = True
) -> dict[str, int]:
    """
    On the database writer's connection (an L{SQLiteWriter}): remove the
    requests of the deleted files and of the sessions idle for more than
    C{max_age_days}, with their search entries, L{DELETE_CHUNK} per
    transaction; recompute or remove their sessions; then give the space
    back (L{SQLiteWriter.reclaim_space}; C{full_vacuum} allows the one-time
    C{VACUUM} of a database made before incremental vacuum).  Returns the
    counts and the bytes the file shrank by.
    """
    ids = set(request_ids) | set(writer.request_ids_idle_before(idle_cutoff(settings, now)))
    removed = {"requests": 0, "sessions": 0, "bytes_freed": 0}
    for chunk in _chunks(ids):
        done = writer.delete_requests(chunk)
        removed["requests"] += done["requests"]
        removed["sessions"] += done["sessions"]
    if removed["requests"]:
        removed["bytes_freed"] = writer.reclaim_space(full_vacuum)
    return removed


# --------------------------------------------------------------------------
# One run, reported


@dataclass
class RetentionReport:
    """The outcome of one retention run."""

    files: FileResult = field(default_factory=FileResult)
    requests_deleted: int = 0
    sessions_deleted: int = 0
    db_bytes_freed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return self.files.bytes_freed + self.db_bytes_freed

    @property
    def error_count(self) -> int:
        return len(self.errors) + len(self.files.errors)

    def summary(self) -> str:
        """The one line a run logs."""
        files = self.files
        return (
            f"compressed {len(files.compressed)} file(s), deleted {len(files.deleted)} file(s), "
            f"removed {self.requests_deleted} request(s) and {self.sessions_deleted} session(s) "
            f"from the database; freed {human_bytes(self.bytes_freed)}; "
            f"{len(set(files.in_use))} file(s) in use skipped; {self.error_count} error(s)"
        )


def human_bytes(n: float) -> str:
    """C{1536} -> C{"1.5 KB"} (binary units)."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _database_phase_with_own_writer(db_path: str, request_ids: set[str], settings: RetentionSettings, now: float) -> dict[str, int]:
    from lunaroute.sessions.sqlite import SQLiteWriter

    writer = SQLiteWriter(db_path)
    try:
        return run_database_phase(writer, request_ids, settings, now)
    finally:
        writer.close()


def _all_ids(requests: dict[str, set[str]]) -> set[str]:
    ids: set[str] = set()
    for request_ids in requests.values():
        ids |= request_ids
    return ids


# --------------------------------------------------------------------------
# The service


class RetentionService(TimerService):
    """
    Runs retention at start-up and then every C{cleanup_interval_minutes},
    off the reactor: the JSONL writer releases idle files on its own thread,
    the files are compressed and deleted on this service's thread, and the
    database rows go on the writer's thread with the writer's connection
    (between two batches), or on this service's thread with a connection of
    its own when the gateway does not record to SQLite itself.

    A run that fails is logged and counted (L{errors}, C{/metrics}) and the
    next one still happens; requests never wait for it.

    @param clock: schedules the runs and gives "now"; with a threadpool
        whose C{inline} attribute is true (tests) everything runs at once
        on the caller's thread, so a L{twisted.internet.task.Clock} drives it.
    """

    name = "retention"

    def __init__(
        self,
        recording: RecordingSettings,
        retention: RetentionSettings,
        clock: Any,
        recorder: Any = None,
        threadpool: Any = None,
    ) -> None:
        super().__init__(retention.cleanup_interval_minutes * 60.0, self.run_once)
        self.clock = clock
        self._clock: Any = clock
        self.recording = recording
        self.retention = retention
        self.recorder = recorder
        self._own_pool = threadpool is None
        self._pool = threadpool if threadpool is not None else ThreadPool(1, 1, name="lunaroute-retention")
        self._stop = threading.Event()
        self._current: Deferred[Any] | None = None
        self._waiters: list[Deferred[RetentionReport | None]] = []
        self.runs = 0
        self.errors = 0
        self.files_compressed = 0
        self.files_deleted = 0
        self.sessions_deleted = 0
        self.bytes_freed = 0
        self.last_report: RetentionReport | None = None

    # -- threads -------------------------------------------------------------

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if getattr(self._pool, "inline", False):
            try:
                return succeed(fn(*args))
            except BaseException:
                return fail(Failure())
        return deferToThreadPool(self._clock, self._pool, fn, *args)

    def _writer(self, name: str) -> Any:
        if self.recorder is None:
            return None
        return self.recorder.writer(name)

    # -- one run ---------------------------------------------------------------

    def run_once(self) -> Deferred[RetentionReport | None]:
        """
        One retention run; the Deferred fires with its report (C{None} if
        the run failed), never with a failure.  Called while a run is going,
        it starts none and fires (with C{None}) when that run is done.
        """
        if self._current is not None:
            # A run is going (the start-up one, say): fire when it is done.
            waiter: Deferred[RetentionReport | None] = Deferred()
            self._waiters.append(waiter)
            return waiter
        now = float(self._clock.seconds())
        report = RetentionReport()
        recording = self.recording

        d: Deferred[Any]
        jsonl = self._writer("jsonl")
        if not recording.jsonl_enabled:
            d = succeed(None)
        else:
            if jsonl is not None:
                # Files idle past either cutoff are let go, so both rules can apply.
                idle_days = min(self.retention.compress_after_days, self.retention.max_age_days)
                cutoff = now - idle_days * DAY
                d = self.recorder.call_in_writer_thread(jsonl.release_files_written_before, cutoff)
            else:
                d = succeed(frozenset())
            d.addCallback(
                lambda open_paths: self._in_thread(
                    run_file_phase,
                    os.path.expanduser(recording.jsonl_dir),
                    self.retention,
                    now,
                    open_paths,
                    self._stop.is_set,
                )
            )

            def files_done(result: FileResult) -> None:
                report.files = result

            def files_failed(failure: Failure) -> None:
                report.errors.append(f"files: {failure.getErrorMessage()}")
                log.failure("session retention: compressing or deleting files failed", failure)

            d.addCallbacks(files_done, files_failed)

        def database(_: Any) -> Deferred[Any] | None:
            ids = _all_ids(report.files.requests)
            sqlite_writer = self._writer("sqlite")
            if sqlite_writer is not None:
                return self._database_on_writer_thread(sqlite_writer, ids, now)
            db_path = os.path.expanduser(recording.db_path)
            if recording.sqlite_enabled and os.path.exists(db_path):
                return self._in_thread(_database_phase_with_own_writer, db_path, ids, self.retention, now)
            return None

        def database_done(removed: dict[str, int] | None) -> None:
            if removed:
                report.requests_deleted = removed["requests"]
                report.sessions_deleted = removed["sessions"]
                report.db_bytes_freed = removed["bytes_freed"]

        def database_failed(failure: Failure) -> None:
            report.errors.append(f"database: {failure.getErrorMessage()}")
            log.failure("session retention: cleaning the database failed", failure)

        d.addCallback(database)
        d.addCallbacks(database_done, database_failed)
        d.addCallback(lambda _: self._finished(report))
        d.addErrback(self._failed)
        d.addBoth(self._release_waiters)
        if not d.called:
            self._current = d
        return d

    def _release_waiters(self, result: Any) -> Any:
        self._current = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        return result

    @inlineCallbacks
    def _database_on_writer_thread(self, writer: Any, ids: set[str], now: float) -> Any:
        """
        L{run_database_phase} as a series of short calls on the writers'
        thread (one per chunk), so recording batches run in between; and
        no full VACUUM, which would hold recording up for as long as it
        rewrites the file (docs/retention.md).
        """
        call = self.recorder.call_in_writer_thread
        idle = yield call(writer.request_ids_idle_before, idle_cutoff(self.retention, now))
        removed = {"requests": 0, "sessions": 0, "bytes_freed": 0}
        for chunk in _chunks(ids | set(idle)):
            done = yield call(writer.delete_requests, chunk)
            removed["requests"] += done["requests"]
            removed["sessions"] += done["sessions"]
        if removed["requests"]:
            removed["bytes_freed"] = yield call(writer.reclaim_space, False)
        return removed

    def _finished(self, report: RetentionReport) -> RetentionReport:
        self.runs += 1
        self.last_report = report
        self.errors += report.error_count
        self.files_compressed += len(report.files.compressed)
        self.files_deleted += len(report.files.deleted)
        self.sessions_deleted += report.sessions_deleted
        self.bytes_freed += report.bytes_freed
        for problem in report.files.errors:
            log.warn("session retention: {problem}", problem=problem)
        log.info("session retention: {summary}", summary=report.summary(), bytes_freed=report.bytes_freed)
        return report

    def _failed(self, failure: Failure) -> None:
        self.runs += 1
        self.errors += 1
        log.failure("session retention run failed (the next run is in {minutes} min)", failure,
                    minutes=self.retention.cleanup_interval_minutes)
        return None

    # -- IService ---------------------------------------------------------------

    def startService(self) -> None:
        self._stop.clear()
        if self._own_pool:
            self._pool.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        """Stop scheduling, let a run in progress stop after its current file, and wait for it."""
        self._stop.set()
        d: Deferred[None] = super().stopService()

        def stop_pool(result: Any) -> Any:
            if self._own_pool:
                self._pool.stop()
            return result

        d.addBoth(stop_pool)
        return d


def make_retention_service(recording: RecordingSettings, clock: Any, recorder: Any = None) -> RetentionService | None:
    """The retention service for the settings, or C{None} when no retention is configured."""
    if recording.retention is None:
        return None
    return RetentionService(recording, recording.retention, clock, recorder)



# --------------------------------------------------------------------------
# lunaroute-server cleanup


def _shown(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return path


def _idle_request_ids_read_only(db_path: str, settings: RetentionSettings, now: float) -> set[tuple[str, str]]:
    """(session id, request id) of the sessions idle past the age limit, read only (for a dry run)."""
    cutoff = datetime.fromtimestamp(now - settings.max_age_days * DAY, UTC)
    cutoff_text = cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    conn = sqlite3.connect(f"file:{quote(os.path.abspath(db_path))}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = conn.execute(
            "SELECT r.session_id, r.request_id FROM session_stats AS r "
            "JOIN sessions AS s ON s.session_id = r.session_id WHERE s.last_activity < ?",
            (cutoff_text,),
        ).fetchall()
    finally:
        conn.close()
    return {(row[0], row[1]) for row in rows}


def run_cleanup(args: Any, out: Any = None, now: float | None = None) -> int:
    """
    The C{lunaroute-server cleanup} command: show (C{--dry-run}) or apply
    the retention policy of the configuration once.  Returns the exit status.
    """
    import sys
    import time

    from lunaroute.config import load_command_settings
    from lunaroute.sessions.sqlite import SchemaTooNew

    out = out or sys.stdout
    settings = load_command_settings(args.config)
    if settings is None:
        return 1
    recording = settings.session_recording
    retention = recording.retention
    if retention is None:
        retention = RetentionSettings()
        print(
            "no session_recording.cleanup.retention in the configuration: using the defaults",
            file=out,
        )
    now = time.time() if now is None else now
    root = os.path.expanduser(recording.jsonl_dir)
    db_path = os.path.expanduser(recording.db_path)
    use_db = recording.sqlite_enabled and os.path.exists(db_path)
    files = scan_session_files(root) if recording.jsonl_enabled else []
    print(
        f"policy: compress after {retention.compress_after_days} day(s), delete after "
        f"{retention.max_age_days} day(s) or beyond {retention.max_total_size_gb:g} GB (oldest first)",
        file=out,
    )
    print(
        f"sessions: {root} ({len(files)} file(s), {human_bytes(sum(f.size for f in files))})"
        + (f"; database: {db_path} ({human_bytes(os.path.getsize(db_path))})" if use_db else ""),
        file=out,
    )
    if args.dry_run:
        return _dry_run(files, retention, now, root, db_path if use_db else None, out)
    report = RetentionReport()
    if recording.jsonl_enabled:
        report.files = run_file_phase(root, retention, now)
    if use_db:
        try:
            removed = _database_phase_with_own_writer(db_path, _all_ids(report.files.requests), retention, now)
        except (sqlite3.Error, OSError, SchemaTooNew) as exc:
            report.errors.append(f"database: {exc}")
        else:
            report.requests_deleted = removed["requests"]
            report.sessions_deleted = removed["sessions"]
            report.db_bytes_freed = removed["bytes_freed"]
    for path, before, added in report.files.compressed:
        print(f"compressed  {_shown(path, root)}  {human_bytes(before)} -> {human_bytes(added)}", file=out)
    for path, size, reason in report.files.deleted:
        print(f"deleted     {_shown(path, root)}  {human_bytes(size)}  ({reason})", file=out)
    for path in sorted(set(report.files.in_use)):
        print(f"in use      {_shown(path, root)}  (left alone; being written)", file=out)
    for problem in report.files.errors + report.errors:
        print(f"error: {problem}", file=sys.stderr)
    print(report.summary(), file=out)
    return 1 if report.error_count else 0


def _dry_run(
    files: list[SessionFile], retention: RetentionSettings, now: float, root: str, db_path: str | None, out: Any
) -> int:
    # As the run does it: age and compression first, then the size limit
    # (here on the sizes before compression: an upper bound).
    first = plan_retention(files, retention, now, size_limit=False)
    by_size = [p for p in plan_retention(files, retention, now).to_delete if p.rule == "size"]
    actions = [*first.actions, *by_size]
    doomed: set[tuple[str, str]] = set()
    for item in actions:
        verb = "compress" if item.action == COMPRESS else "delete"
        reason = item.reason + ("; before compression" if item.rule == "size" and first.to_compress else "")
        print(f"{verb:<10}  {_shown(item.file.path, root)}  {human_bytes(item.file.size)}  ({reason})", file=out)
        if item.action == DELETE:
            try:
                for session_id, ids in file_requests(item.file.path).items():
                    doomed.update((session_id, request_id) for request_id in ids)
            except (OSError, zstandard.ZstdError):
                pass
    if db_path is not None:
        try:
            doomed |= _idle_request_ids_read_only(db_path, retention, now)
        except sqlite3.Error as exc:
            print(f"error: database: {exc}", file=out)
    compress = first.to_compress
    deleted = [p for p in actions if p.action == DELETE]
    deleted_bytes = sum(p.file.size for p in deleted)
    sessions = {session_id for session_id, _ in doomed}
    print(
        f"dry run, nothing changed: would compress {len(compress)} file(s) "
        f"({human_bytes(sum(p.file.size for p in compress))}), delete {len(deleted)} file(s) "
        f"({human_bytes(deleted_bytes)})"
        + (f" and {len(doomed)} request(s) of {len(sessions)} session(s) from the database" if db_path else "")
        + f"; would free {human_bytes(deleted_bytes)} plus what compression saves (typically 80-90%)",
        file=out,
    )
    if compress and by_size:
        print("(the size limit is checked again after compressing: fewer files may be deleted)", file=out)
    return 0
