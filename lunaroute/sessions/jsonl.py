"""
Session events as JSON lines, one file per session per starting day.

Plain files are the format people grep, tail and feed to C{jq}, and the one
the database can be rebuilt from (C{lunaroute-server import-sessions}).
Layout: C{<directory>/<YYYY-MM-DD>/session_<id>.jsonl}, the date being the
UTC day the session's first recorded event happened.  A session that runs
past midnight, or across a gateway restart, keeps appending to that file.

Crash safety: each batch is appended to each file with a single C{write}
call of whole lines, so a process killed between calls leaves only whole
lines; a file whose tail is torn anyway (disk full mid-write) is cut back to
its last complete line before anything is appended to it.

A file moved or deleted while the gateway runs is noticed at the next batch
for it (its open handle no longer is the file at its path) and created
again, so events always go to a file that exists where it is expected.

Retention (L{lunaroute.sessions.retention}) compresses and deletes old
files.  While a file is open here it holds a shared C{flock}; retention only
touches a file it can lock exclusively without waiting, so a file being
written is never compressed or deleted, by this process or another (a
C{lunaroute-server cleanup} run beside the gateway).  A handle opened while
retention works on its file waits for it, then finds its path again.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from lunaroute.interfaces import ISessionWriter
from lunaroute.logs import log_observer
from lunaroute.sessions.events import json_dumps, json_text

__all__ = ["JSONLWriter", "SessionFilesError", "encode_event", "session_file_name"]

log = Logger(observer=log_observer)

# How many earlier day folders are searched for a session's existing file
# after a restart.  Sessions idle for longer than this start a new file.
LOOKBACK_DAYS = 7

# Open handles kept between batches, so a session's file is opened once, not
# once per batch: enough for every session a busy shared gateway has going
# at once (an evicted one is simply reopened).  Far below the usual
# descriptor limits.
MAX_OPEN_FILES = 256

# Remembered session → file mappings (a dict entry is cheap, but a gateway
# that runs for months must not grow it forever).
MAX_KNOWN_SESSIONS = 10_000


# Characters a session id may keep in its file name.  fullmatch, not a `$`
# anchor: `$` would also accept a trailing newline.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")

# Most file systems allow 255 bytes per name.  Ids up to this length keep
# their plain name (session_<id>.jsonl.zst, once retention compressed it,
# is then at most 255 bytes); longer ones are cut and given a hash of the
# whole id.
MAX_PLAIN_ID = 255 - len("session_") - len(".jsonl.zst")
_CUT_ID = 200


def session_file_name(session_id: Any) -> str:
    """
    The file name for a session, always a single path component shorter
    than 256 bytes.

    An id that is not safe in a path (anything but letters, digits, C{-} and
    C{_}: C{/}, C{..}, NUL, control characters, ...) is replaced by a hash
    of itself, so it still gets a stable file of its own but can never
    traverse directories.  A safe id too long for a file name is cut to
    200 characters followed by C{~} and a hash of the whole id (C{~} cannot
    occur in a safe id, so the name cannot be another session's).  The
    events inside always carry the full id.
    """
    if isinstance(session_id, str) and _SAFE_ID.fullmatch(session_id):
        if len(session_id) <= MAX_PLAIN_ID:
            return f"session_{session_id}.jsonl"
        digest = hashlib.sha256(session_id.encode("ascii")).hexdigest()
        return f"session_{session_id[:_CUT_ID]}~{digest[:16]}.jsonl"
    digest = hashlib.sha256(repr(session_id).encode("utf-8", "backslashreplace")).hexdigest()
    return f"session_unsafe-{digest[:32]}.jsonl"


class SessionFilesError(OSError):
    """
    Some session files of a batch could not be written (the others were).

    An C{OSError} with the first error's C{errno}, message and file name,
    plus C{request_ids}: the requests with at least one event not written,
    so the recorder counts exactly the exchanges that were lost.
    """

    def __init__(self, first: OSError, request_ids: frozenset[str]) -> None:
        super().__init__(first.errno, first.strerror or str(first), first.filename)
        self.request_ids = request_ids


# Event fields that hold bodies: serialised through json_text(), so the
# SQLite writer reuses the text, and written last on the line, so the short
# fields stay at the start where C{head} and C{cut} see them.
_BODY_FIELDS = ("request_json", "response_json", "input")
_BODY_KEYS = {key: json_text(key) + ":" for key in _BODY_FIELDS}
# A tuple: isinstance() with one is faster than with `dict | list`.
_BODY_TYPES = (dict, list)


def encode_event(event: dict[str, Any]) -> bytes:
    """
    One event as one UTF-8 line ending in a newline.

    C{json.dumps} escapes newlines inside strings, so the line can never be
    split; C{NaN} and C{Infinity} become C{null}; lone surrogates (from odd client JSON) cannot be encoded as UTF-8
    and become C{\\uXXXX} escapes, which is still valid JSON.  Bodies
    (C{request_json}, C{response_json}, a tool call's C{input}) come last.
    """
    bodies = [key for key in _BODY_FIELDS if isinstance(event.get(key), _BODY_TYPES)]
    if not bodies:
        text = json_dumps(event)
    else:
        rest = {key: value for key, value in event.items() if key not in bodies}
        head = json_dumps(rest)[:-1]
        parts = [head]
        for key in bodies:
            parts.append(("," if len(parts) > 1 or head != "{" else "") + _BODY_KEYS[key])
            parts.append(json_text(event[key]))
        parts.append("}")
        text = "".join(parts)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def _event_day(event: dict[str, Any]) -> date:
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            return date.fromisoformat(stamp[:10])
        except ValueError:
            pass
    # An event without a usable timestamp still has to go somewhere.
    return datetime.now(UTC).date()


def _trim_torn_tail(handle: io.FileIO) -> None:
    """Cut an existing file back to its last complete line."""
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        return
    if os.pread(handle.fileno(), 1, size - 1) == b"\n":
        return
    keep = 0
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(handle.fileno(), end - start, start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            keep = start + at + 1
            break
        end = start
    os.ftruncate(handle.fileno(), keep)
    log.warn(
        "cut {n} bytes of an incomplete last line from {path}",
        n=size - keep,
        path=handle.name,
    )


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return (info.st_ino, info.st_dev)


def _still_at(identity: tuple[int, int], path: str) -> bool:
    """Whether the file of that C{(inode, device)} is still the one found at C{path}."""
    try:
        at_path = os.stat(path)
    except OSError:
        return False
    return identity == (at_path.st_ino, at_path.st_dev)


# How often the writer re-opens a session file that retention took away
# while the writer waited for it (see JSONLWriter._open_locked).
_REOPEN_ATTEMPTS = 20


@implementer(ISessionWriter)
class JSONLWriter:
    """
    Appends session events to C{<directory>/<day>/session_<id>.jsonl}.

    Not thread-safe: the recorder calls it from its single writer thread.
    """

    name = "jsonl"

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self._paths: OrderedDict[str, str] = OrderedDict()
        self._files: OrderedDict[str, io.FileIO] = OrderedDict()
        self._identities: dict[str, tuple[int, int]] = {}

    # -- where a session lives --------------------------------------------

    def path_for(self, session_id: Any, day: date) -> str:
        """
        The file of C{session_id}: the one already used or found on disk in
        the last L{LOOKBACK_DAYS} day folders, else a new one under C{day}.
        """
        file_name = session_file_name(session_id)
        known = self._paths.get(file_name)
        if known is not None:
            self._paths.move_to_end(file_name)
            return known
        path = None
        for back in range(LOOKBACK_DAYS + 1):
            candidate = os.path.join(
                self.directory, (day - timedelta(days=back)).isoformat(), file_name
            )
            if os.path.exists(candidate):
                path = candidate
                break
        if path is None:
            path = os.path.join(self.directory, day.isoformat(), file_name)
        self._paths[file_name] = path
        if len(self._paths) > MAX_KNOWN_SESSIONS:
            self._paths.popitem(last=False)
        return path

    def _handle(self, path: str) -> io.FileIO:
        handle = self._files.get(path)
        if handle is not None:
            if _still_at(self._identities[path], path):
                self._files.move_to_end(path)
                return handle
            log.warn("session file {path} was moved or deleted; creating it again", path=path)
            self._forget(path)
        handle = self._open_locked(path)
        try:
            _trim_torn_tail(handle)
        except OSError:
            handle.close()
            raise
        self._files[path] = handle
        self._identities[path] = _identity(handle.fileno())
        while len(self._files) > MAX_OPEN_FILES:
            old_path, old = self._files.popitem(last=False)
            self._identities.pop(old_path, None)
            old.close()
        return handle

    def _open_locked(self, path: str) -> io.FileIO:
        """
        Open C{path} for appending with a shared lock held: retention
        compressing or deleting that file (an exclusive lock) is waited for,
        and if it took the file away, the file is created again.  Each
        retry follows a compression or deletion that finished, so a few
        are plenty for retention's schedule; the bound only stops a loop
        against something that keeps replacing the file.
        """
        for _attempt in range(_REOPEN_ATTEMPTS):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # Unbuffered: our single write() per batch goes straight to the
            # kernel, so no half-flushed buffer can split a line.  Readable
            # too, to check the tail left by an earlier run.
            handle = open(path, "a+b", buffering=0)  # noqa: SIM115 - cached, closed in close()
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
                if _still_at(_identity(handle.fileno()), path):
                    return handle
            except OSError:
                handle.close()
                raise
            handle.close()
        raise OSError(f"session file {path} keeps being replaced")

    def open_paths(self) -> frozenset[str]:
        """The files open for appending now (retention leaves them alone)."""
        return frozenset(self._files)

    def release_files_written_before(self, cutoff: float) -> frozenset[str]:
        """
        Close the handles of files last written before C{cutoff} (epoch
        seconds), so that retention can compress them; they are opened again
        if their session goes on.  Returns the paths still open.
        """
        for path, handle in list(self._files.items()):
            try:
                written = os.fstat(handle.fileno()).st_mtime
            except OSError:
                written = 0.0
            if written < cutoff:
                self._forget(path)
        return self.open_paths()

    def _forget(self, path: str) -> None:
        self._identities.pop(path, None)
        handle = self._files.pop(path, None)
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass

    # -- ISessionWriter ----------------------------------------------------

    def write_batch(self, events: list[dict[str, Any]]) -> None:
        """
        Append the events, grouped by file, one write per file.  If one file
        fails the others are still written, then a L{SessionFilesError}
        (the first error, and which requests were not written) is raised.
        """
        lines: dict[str, list[bytes]] = {}
        requests: dict[str, set[str]] = {}
        # An exchange's events share their session and (nearly always)
        # their day: find each file once per batch, not once per event.
        paths: dict[tuple[Any, Any], str] = {}
        for event in events:
            session_id, stamp = event.get("session_id"), event.get("timestamp")
            place = (session_id, stamp[:10]) if type(stamp) is str and type(session_id) is str else None
            path = paths.get(place) if place is not None else None
            if path is None:
                path = self.path_for(session_id, _event_day(event))
                if place is not None:
                    paths[place] = path
            chunks = lines.get(path)
            if chunks is None:
                chunks = lines[path] = []
            chunks.append(encode_event(event))
            request_id = event.get("request_id")
            if isinstance(request_id, str):
                ids = requests.get(path)
                if ids is None:
                    ids = requests[path] = set()
                ids.add(request_id)
        first_error: OSError | None = None
        failed: set[str] = set()
        for path, chunks in lines.items():
            try:
                self._append(path, b"".join(chunks))
            except OSError as exc:
                self._forget(path)
                failed |= requests.get(path, set())
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise SessionFilesError(first_error, frozenset(failed))

    def _append(self, path: str, data: bytes) -> None:
        handle = self._handle(path)
        fd = handle.fileno()
        done = 0
        try:
            view = memoryview(data)
            # A regular file takes the whole buffer in one call; the loop only
            # matters for short writes (e.g. the disk filling up).
            while view:
                written = os.write(fd, view)
                done += written
                view = view[written:]
        except OSError:
            # Take back a partial batch so the file still ends on a whole line.
            try:
                os.ftruncate(fd, os.fstat(fd).st_size - done)
            except OSError:
                pass
            raise

    def close(self) -> None:
        """Close every open file."""
        self._identities.clear()
        while self._files:
            _, handle = self._files.popitem()
            try:
                handle.close()
            except OSError:
                log.failure("closing a session file failed")
