"""
The recorder service: takes finished exchanges from the proxy and has the
session writers store them, without ever making the relay wait.

C{record()} runs on the reactor for every request, so it only appends to a
bounded in-memory queue.  Batches (every C{batch_interval_ms}, or sooner
once C{batch_size} events are waiting) are turned into events and handed to
the writers on one dedicated thread, one batch at a time so files and
database see events in order.  If the disk stalls the queue fills up and new
exchanges are dropped and counted rather than buffered without limit; a
writer that raises is logged and counted and the others carry on.  Stopping
the service drains the queue, so every accepted exchange is on disk before
the process exits.

A writer whose database may be away for a while (the PostgreSQL store)
keeps failed batches in a bounded backlog of its own; the timer lets it
retry when its backoff says so (C{retry_due}/C{retry}), and what it drops is
counted like any other loss.

Nothing is lost silently: every exchange a writer did not store is counted
under a reason (L{RecorderService.loss_counts}), shown in C{/metrics}, the
stats endpoint and the line logged when the recorder stops.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from lunaroute.errors import ConfigError
from lunaroute.exchange import Exchange
from lunaroute.interfaces import ISessionWriter
from lunaroute.logs import log_observer
from lunaroute.pii.redactor import Redactor
from lunaroute.sessions.events import exchange_events, shared_json
from lunaroute.sessions.jsonl import JSONLWriter
from lunaroute.sessions.sqlite import SQLiteWriter

__all__ = [
    "LOSS_CLOSED",
    "LOSS_QUEUE_FULL",
    "InlineThreadPool",
    "RecorderService",
    "check_database",
    "check_directory",
    "check_writers",
    "event_count",
    "loss_reason",
    "loss_summary",
    "make_recorder",
    "make_writers",
]

log = Logger(observer=log_observer)

# Warnings about dropped events and failing writers repeat at most this
# often (seconds): a stalled disk must not also flood the log.
WARNING_INTERVAL = 10.0

DEFAULT_MAX_QUEUE_BYTES = 256 * 1024 * 1024

# Reasons an exchange was not written (the keys of loss_counts()).  Writer
# failures are "disk_full:<writer>" or "writer_error:<writer>".
LOSS_QUEUE_FULL = "queue_full"
LOSS_CLOSED = "closed"
LOSS_EVENTS = "events_error"
LOSS_RECORDER = "recorder_error"

# Error numbers that mean the disk (or the user's quota) is full.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13


def loss_reason(writer_name: str, error: BaseException) -> str:
    """
    The loss reason for a writer failure: C{disk_full:<writer>} when the
    disk or quota is full (C{ENOSPC}, C{EDQUOT}, SQLite's C{SQLITE_FULL}),
    the error's own C{loss_reason} when it has one (the PostgreSQL writer's
    C{backlog_full}), else C{writer_error:<writer>}.
    """
    own = getattr(error, "loss_reason", None)
    if isinstance(own, str):
        return f"{own}:{writer_name}"
    full = (isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS) or (
        isinstance(error, sqlite3.Error)
        and getattr(error, "sqlite_errorcode", None) is not None
        and error.sqlite_errorcode & 0xFF == _SQLITE_FULL
    )
    return f"{'disk_full' if full else 'writer_error'}:{writer_name}"


class InlineThreadPool:
    """
    A stand-in for L{ThreadPool} that runs work immediately in the calling
    thread.  With it and a L{twisted.internet.task.Clock}, recorder tests
    are deterministic: a batch is on disk when C{clock.advance()} returns.
    """

    inline = True

    def __init__(self) -> None:
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def callInThread(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        func(*args, **kwargs)

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], None],
        func: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        try:
            result = func(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class _SameThread:
    """C{callFromThread} for an inline pool: we already are on that thread."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def event_count(exchange: Exchange) -> int:
    """How many events L{exchange_events} will make of C{exchange}."""
    n = 3  # started, request_recorded, completed
    if exchange.response is not None or exchange.status is not None:
        n += 1
        if exchange.response is not None:
            n += len(exchange.response.tool_calls)
    if exchange.streaming and exchange.timings.first_byte is not None:
        n += 1
    return n


def _queued_bytes(exchange: Exchange) -> int:
    # Only a rough measure of what the queued exchange keeps alive: the
    # request body (its parsed JSON is of the same order) and the response.
    return len(exchange.request_body) + exchange.bytes_out


@dataclass
class _BatchResult:
    """What one batch did, computed in the writer thread."""

    events: int = 0
    failures: list[tuple[str, Failure]] = field(default_factory=list)
    # Exchanges not written, by reason.
    lost: dict[str, int] = field(default_factory=dict)
    # (session id, request id) of the exchanges handed to the writers.
    written: list[tuple[str, str]] = field(default_factory=list)

    def lose(self, reason: str, n: int) -> None:
        if n > 0:
            self.lost[reason] = self.lost.get(reason, 0) + n

    def failed(self, where: str) -> None:
        """Keep the exception being handled (in an C{except} block) as C{where}'s failure."""
        failure = Failure()
        failure.cleanFailure()
        self.failures.append((where, failure))

    def take_lost(self, writer: Any, name: str) -> None:
        """
        Count what C{writer} dropped on its own: a writer with a backlog
        (PostgreSQL) may drop older batches while retrying.
        """
        take_lost = getattr(writer, "take_lost", None)
        if take_lost is not None:
            self.lose(f"writer_error:{name}", take_lost())


def _lost_in(error: BaseException, batch: list[Exchange]) -> int:
    """
    How many of the batch's exchanges a failed C{write_batch} did not store:
    those the error names (C{request_ids}, see L{SessionFilesError}), else
    all of them.
    """
    named = getattr(error, "request_ids", None)
    if named is None:
        return len(batch)
    lost = frozenset(named)
    return sum(1 for exchange in batch if exchange.request_id in lost)


class RecorderService(Service):
    """
    Queues exchanges and writes them in batches, off the reactor thread.

    Metrics: L{queue_depth} (events waiting), C{dropped_events} (events
    refused by a full or closed queue), C{written_events} (events of batches
    every writer accepted), C{write_failures} (failed writer calls, with
    C{write_failures_by_writer}) and L{loss_counts} (exchanges not written,
    by reason, whatever the cause).

    @param clock: schedules the flushes; it must also provide
        C{IReactorFromThreads} (the real reactor does) unless C{threadpool}
        is an L{InlineThreadPool}.
    @param threadpool: where batches run; by default a dedicated
        C{ThreadPool(1, 1)} that the service starts and stops.  A pool passed
        in is not started or stopped here.
    @param redactor: a L{lunaroute.pii.Redactor} (C{session_recording.pii}):
        the events are made with it, on the writer thread, so no writer
        ever sees unredacted text.
    """

    name = "recorder"

    def __init__(
        self,
        writers: list[ISessionWriter],
        clock: IReactorTime,
        batch_size: int = 1000,
        batch_interval_ms: int = 100,
        max_queue_events: int = 10_000,
        threadpool: Any = None,
        max_queue_bytes: int | None = DEFAULT_MAX_QUEUE_BYTES,
        redactor: Redactor | None = None,
    ) -> None:
        if batch_size < 1 or batch_interval_ms <= 0 or max_queue_events < 1:
            raise ValueError("batch_size, batch_interval_ms and max_queue_events must be positive")
        self.writers = list(writers)
        self.clock = clock
        self.batch_size = batch_size
        self.batch_interval = batch_interval_ms / 1000.0
        self.max_queue_events = max_queue_events
        self.max_queue_bytes = max_queue_bytes
        inline = getattr(threadpool, "inline", False)
        if IReactorFromThreads.providedBy(clock):
            self._threads: Any = clock
        elif inline:
            self._threads = _SameThread()
        else:
            raise ValueError("a clock without callFromThread needs an InlineThreadPool")
        self._own_pool = threadpool is None
        self._pool = threadpool if threadpool is not None else ThreadPool(1, 1, name="lunaroute-recorder")

        self._queue: deque[tuple[Exchange, int, int]] = deque()
        self._queued_events = 0
        self._queued_bytes = 0
        self._in_flight: Deferred[None] | None = None
        self._flush_call: IDelayedCall | None = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._closed = False
        self._stopping: Deferred[None] | None = None
        self._last_drop_warning: float | None = None
        self._dropped_since_warning = 0
        self._last_failure_log: dict[str, float] = {}
        self._listeners: list[Callable[[list[tuple[str, str]]], None]] = []
        # PII redaction of the events, on the writer thread (lunaroute.pii).
        self.redactor = redactor

        self.dropped_events = 0
        self.written_events = 0
        self.write_failures = 0
        self.write_failures_by_writer: dict[str, int] = {}
        # Known reasons start at 0, so dashboards see the series before a loss.
        self._lost: dict[str, int] = {LOSS_QUEUE_FULL: 0, LOSS_CLOSED: 0}
        for writer in self.writers:
            name = getattr(writer, "name", repr(writer))
            self._lost[f"disk_full:{name}"] = 0
            self._lost[f"writer_error:{name}"] = 0
            for reason in getattr(writer, "loss_reasons", ()):
                self._lost[f"{reason}:{name}"] = 0

    # -- metrics -----------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Events accepted but not yet handed to the writers."""
        return self._queued_events

    def loss_counts(self) -> dict[str, int]:
        """
        Exchanges not written, by reason: C{queue_full} (refused because the
        queue was full), C{closed} (recorded after the recorder stopped),
        C{disk_full:<writer>} and C{writer_error:<writer>} (that writer
        failed the batch holding them), C{events_error} (they could not be
        turned into events), C{recorder_error} (a bug in the recorder).  An
        exchange that two writers failed counts once for each.  A copy:
        safe to keep or change.
        """
        return dict(self._lost)

    def _count_loss(self, reason: str, n: int) -> None:
        if n > 0:
            self._lost[reason] = self._lost.get(reason, 0) + n

    # -- listeners ---------------------------------------------------------

    def add_listener(self, callback: Callable[[list[tuple[str, str]]], None]) -> None:
        """
        Call C{callback} on the reactor after each batch is written, with the
        C{(session_id, request_id)} of its exchanges (the live tail of the
        session API reads their rows then).  An exchange a writer failed is
        included: a listener reading the database finds no row for it.  A
        callback that raises is logged; the recorder carries on.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[list[tuple[str, str]]], None]) -> None:
        """Stop calling C{callback}; unknown callbacks are ignored."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def listeners(self) -> tuple[Callable[[list[tuple[str, str]]], None], ...]:
        """The callbacks L{add_listener} registered, in order."""
        return tuple(self._listeners)

    def _notify(self, written: list[tuple[str, str]]) -> None:
        for callback in list(self._listeners):
            try:
                callback(written)
            except Exception:
                log.failure("a session recorder listener failed")

    # -- the hot path ------------------------------------------------------

    def record(self, exchange: Exchange) -> None:
        """
        Accept a finished exchange for recording.  O(1), never blocks, never
        raises; exchanges that are not conversations (token counting, model
        lists) are not recorded.
        """
        try:
            if not exchange.is_conversation:
                return
            n = event_count(exchange)
            size = _queued_bytes(exchange)
            if self._closed:
                self._drop(n, LOSS_CLOSED)
                return
            if self._queued_events + n > self.max_queue_events or (
                self.max_queue_bytes is not None
                and self._queue
                and self._queued_bytes + size > self.max_queue_bytes
            ):
                self._drop(n, LOSS_QUEUE_FULL)
                return
            self._queue.append((exchange, n, size))
            self._queued_events += n
            self._queued_bytes += size
            if self._queued_events >= self.batch_size and self.running:
                self._schedule_flush()
        except Exception:
            log.failure("recording an exchange failed")

    def _drop(self, n: int, reason: str) -> None:
        self.dropped_events += n
        self._count_loss(reason, 1)
        self._dropped_since_warning += n
        now = self.clock.seconds()
        if self._last_drop_warning is None or now - self._last_drop_warning >= WARNING_INTERVAL:
            log.warn(
                "session recording queue is full ({depth} events waiting): dropped "
                "{n} event(s), {total} in all"
                if reason == LOSS_QUEUE_FULL
                else "session recorder is stopped: dropped {n} event(s), {total} in all",
                depth=self._queued_events,
                n=self._dropped_since_warning,
                total=self.dropped_events,
            )
            self._last_drop_warning = now
            self._dropped_since_warning = 0

    def _schedule_flush(self) -> None:
        # Never flush inside record(): it runs in the proxy's observer loop.
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.clock.callLater(0, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_call = None
        self._tick()

    def _tick(self) -> None:
        # An exception would stop the LoopingCall for good: log it instead.
        try:
            self._flush()
        except Exception:
            log.failure("starting a session recording batch failed")

    # -- batches -----------------------------------------------------------

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._threads, self._pool, fn, *args)

    def _take_batch(self) -> list[Exchange]:
        batch: list[Exchange] = []
        events = 0
        while self._queue and events < self.batch_size:
            exchange, n, size = self._queue.popleft()
            self._queued_events -= n
            self._queued_bytes -= size
            events += n
            batch.append(exchange)
        return batch

    def _flush(self) -> Deferred[None] | None:
        """Start writing the next batch unless one is already being written."""
        if self._in_flight is None and not self._queue:
            return self._retry_writers()
        if self._in_flight is not None or not self._queue:
            return self._in_flight
        batch = self._take_batch()
        d = self._in_thread(self._write_batch, batch)
        self._in_flight = d
        d.addBoth(self._batch_done, len(batch))
        return d

    def _retry_writers(self) -> Deferred[None] | None:
        """
        Let writers that keep a backlog while their database is down (the
        PostgreSQL writer) retry, when their backoff says so; on the writer
        thread, like a batch.
        """
        now = self.clock.seconds()
        due: list[Any] = []
        for writer in self.writers:
            retry_due = getattr(writer, "retry_due", None)
            if retry_due is not None and retry_due(now):
                due.append(writer)
        if not due:
            return None
        d = self._in_thread(self._retry_in_thread, due)
        self._in_flight = d
        d.addBoth(self._batch_done)
        return d

    def _retry_in_thread(self, writers: list[Any]) -> _BatchResult:
        result = _BatchResult()
        for writer in writers:
            name = getattr(writer, "name", repr(writer))
            try:
                writer.retry()
            except Exception:
                result.failed(name)
            result.take_lost(writer, name)
        return result

    def _write_batch(self, batch: list[Exchange]) -> _BatchResult:
        """Runs in the writer thread: make the events, give them to each writer."""
        # Each body is serialised once (or not at all: a request body's own
        # bytes are its JSON text), whichever writer gets to it first.
        with shared_json():
            return self._write_events(batch)

    def _write_events(self, batch: list[Exchange]) -> _BatchResult:
        result = _BatchResult()
        events: list[dict[str, Any]] = []
        made: list[Exchange] = []
        for exchange in batch:
            try:
                # PII redaction happens here, on this thread, as the events
                # are made: it fails closed value by value (a detector
                # failure drops that value, counted), so the exchange is
                # still written.
                if self.redactor is None:
                    events.extend(exchange_events(exchange))
                else:
                    events.extend(exchange_events(exchange, redactor=self.redactor))
            except Exception:
                result.failed("events")
                result.lose(LOSS_EVENTS, 1)
            else:
                made.append(exchange)
        result.events = len(events)
        result.written = [(exchange.session_id, exchange.request_id) for exchange in made]
        if not events:
            return result
        for writer in self.writers:
            name = getattr(writer, "name", repr(writer))
            try:
                writer.write_batch(events)
            except Exception as error:
                result.lose(loss_reason(name, error), _lost_in(error, made))
                result.failed(name)
            result.take_lost(writer, name)
        return result

    def _batch_done(self, result: _BatchResult | Failure, exchanges: int = 0) -> None:
        self._in_flight = None
        if isinstance(result, Failure):
            # Only a bug in this module gets here; the writers' own errors
            # are in the result.
            log.failure("session recording batch failed", failure=result)
            self.write_failures += 1
            self._count_loss(LOSS_RECORDER, exchanges)
        else:
            if not result.failures:
                self.written_events += result.events
            for reason, n in result.lost.items():
                self._count_loss(reason, n)
            for writer_name, failure in result.failures:
                self._writer_failed(writer_name, failure, result.events)
            if result.written and self._listeners:
                self._notify(result.written)
        # A burst may have queued more than one batch: keep going promptly.
        if self._queued_events >= self.batch_size and self.running:
            self._schedule_flush()

    def _writer_failed(self, writer_name: str, failure: Failure, events: int) -> None:
        self.write_failures += 1
        self.write_failures_by_writer[writer_name] = self.write_failures_by_writer.get(writer_name, 0) + 1
        now = self.clock.seconds()
        last = self._last_failure_log.get(writer_name)
        if last is None or now - last >= WARNING_INTERVAL:
            self._last_failure_log[writer_name] = now
            log.failure(
                "session writer {writer} failed ({count} failure(s) so far, "
                "{events} event(s) in the batch)",
                failure=failure,
                writer=writer_name,
                count=self.write_failures_by_writer[writer_name],
                events=events,
            )

    # -- thread-side lifecycle ---------------------------------------------

    def _open_writers(self) -> _BatchResult:
        """Let writers that can (SQLite: schema upgrade) open at start-up."""
        result = _BatchResult()
        for writer in self.writers:
            opener = getattr(writer, "open", None)
            if opener is None:
                continue
            try:
                opener()
            except Exception:
                failure = Failure()
                failure.cleanFailure()
                result.failures.append((getattr(writer, "name", repr(writer)), failure))
        return result

    def _close_writers(self) -> _BatchResult:
        result = _BatchResult()
        for writer in self.writers:
            try:
                writer.close()
            except Exception:
                failure = Failure()
                failure.cleanFailure()
                result.failures.append((getattr(writer, "name", repr(writer)), failure))
        return result

    # -- IService ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._own_pool:
            self._pool.start()
        d = self._in_thread(self._open_writers)
        self._in_flight = d
        d.addBoth(self._batch_done)
        self._loop.start(self.batch_interval, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Stop the timer, write everything still queued (in as many batches as
        it takes), close the writers and the thread pool.  The Deferred fires
        when all accepted events are on disk.
        """
        if self._stopping is not None:
            return self._stopping
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._stopping = self._shut_down()
        return self._stopping

    @inlineCallbacks
    def _shut_down(self) -> Any:
        if self._own_pool and not self._pool.started:
            # Stopped without having been started: the queue still has to
            # reach the disk.
            self._pool.start()
        try:
            yield self._drain()
            self._closed = True
            result = yield self._in_thread(self._close_writers)
            for writer_name, failure in result.failures:
                self._writer_failed(writer_name, failure, 0)
        finally:
            self._closed = True
            if self._own_pool:
                self._pool.stop()
        lost = self.loss_counts()
        log.info(
            "session recorder stopped: {written} event(s) written, {dropped} exchange(s) "
            "dropped{reasons}, {failures} writer failure(s)",
            written=self.written_events,
            dropped=sum(lost.values()),
            reasons=loss_summary(lost),
            failures=self.write_failures,
            lost=lost,
        )

    @inlineCallbacks
    def _drain(self) -> Any:
        while True:
            if self._in_flight is not None:
                yield _when_done(self._in_flight)
                continue
            if not self._queue:
                return
            self._flush()

    def writer(self, name: str) -> ISessionWriter | None:
        """The writer called C{name} (C{"jsonl"}, C{"sqlite"}), if any."""
        for writer in self.writers:
            if getattr(writer, "name", None) == name:
                return writer
        return None

    def call_in_writer_thread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run C{fn(*args)} on the writers' thread, between two batches (never
        during one), and fire with its result: how retention asks the JSONL
        writer which files are open and deletes database rows on the
        writer's own connection.  Keep C{fn} short: batches wait for it.
        """
        if getattr(self._pool, "inline", False):
            try:
                return succeed(fn(*args))
            except BaseException:
                return fail(Failure())
        return self._in_thread(fn, *args)

    def flush(self) -> Deferred[None]:
        """
        Write everything queued now (for tests and for a future admin
        command); fires when the queue is empty.
        """
        return self._drain()


def loss_summary(lost: dict[str, int]) -> str:
    """C{" (disk_full:jsonl 3, queue_full 1)"} for the stop line; empty when nothing was lost."""
    if not any(lost.values()):
        return ""
    parts = [f"{reason} {n}" for reason, n in sorted(lost.items()) if n]
    return " (" + ", ".join(parts) + ")"


def _when_done(d: Deferred[Any]) -> Deferred[None]:
    """A Deferred that fires when C{d} does, leaving C{d}'s result alone."""
    if d.called:
        return succeed(None)
    waiter: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        waiter.callback(None)
        return result

    d.addBoth(fire)
    return waiter


# --------------------------------------------------------------------------
# Wiring


def make_writers(recording_settings: Any, clock: Any = None) -> list[ISessionWriter]:
    """The writers C{session_recording} enables: JSONL, SQLite, PostgreSQL, any of them or none."""
    writers: list[ISessionWriter] = []
    if recording_settings.jsonl_enabled:
        writers.append(JSONLWriter(os.path.expanduser(recording_settings.jsonl_dir)))
    if recording_settings.sqlite_enabled:
        writers.append(SQLiteWriter(os.path.expanduser(recording_settings.db_path)))
    postgres = getattr(recording_settings, "postgres", None)
    if postgres is not None and postgres.enabled:
        from lunaroute.sessions.postgres import PostgresWriter

        writers.append(
            PostgresWriter(
                postgres.connection_string,
                clock=clock,
                max_backlog_events=recording_settings.max_queue_events,
                connect_timeout=postgres.acquire_timeout_seconds,
            )
        )
    return writers


def check_postgres_driver(recording_settings: Any) -> None:
    """
    With C{session_recording.postgres.enabled}, psycopg and psycopg_pool
    must be installed (C{pip install lunaroute[postgres]}) and the
    connection string must parse: L{ConfigError} otherwise.  The database
    itself may be down at start-up.
    """
    postgres = getattr(recording_settings, "postgres", None)
    if postgres is None or not postgres.enabled:
        return
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the PostgreSQL store needs psycopg and psycopg_pool: pip install 'lunaroute[postgres]'",
            key="session_recording.postgres.enabled",
        ) from None
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(postgres.connection_string)
    except psycopg.Error as exc:
        # libpq's message names the bad part, never the password.
        problem = (str(exc).strip().splitlines() or ["malformed"])[0]
        raise ConfigError(f"not a valid connection string: {problem}", key="session_recording.postgres.connection_string") from None


def _first_problem(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def check_directory(directory: str, key: str) -> None:
    """
    Make sure C{directory} exists (creating it) and a file can be created in
    it, by creating and removing one.  Raises L{ConfigError} naming C{key}
    otherwise: better one clear line at start-up than a gateway that says
    "recording: on" and writes nothing.
    """
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory!r}: {_first_problem(exc)}", key=key) from None
    if not os.path.isdir(directory):
        raise ConfigError(f"{directory!r} is not a directory", key=key)
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".lunaroute-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write in {directory!r}: {_first_problem(exc)}", key=key) from None


def check_database(db_path: str, key: str) -> None:
    """
    Make sure the session database can be opened for writing: its folder can
    be created and written (SQLite adds C{-wal} and C{-journal} files beside
    it) and an existing file is an SQLite database.  Raises L{ConfigError}
    naming C{key}.
    """
    if db_path == ":memory:":
        return
    check_directory(os.path.dirname(os.path.abspath(db_path)), key)
    if not os.path.exists(db_path):
        return
    if os.path.isdir(db_path):
        raise ConfigError(f"{db_path!r} is a directory, not a database file", key=key)
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True)
        try:
            # Reads the header only: cheap even for a big database.
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {db_path!r}: {exc}", key=key) from None


def _setting_key(recording_settings: Any, which: str) -> str:
    """The config key the user set for the JSONL folder or the database path."""
    sessions_dir = recording_settings.sessions_dir
    if which == "jsonl":
        if recording_settings.jsonl_dir == sessions_dir:
            return "session_recording.sessions_dir"
        return "session_recording.jsonl.directory"
    if recording_settings.db_path == os.path.join(sessions_dir, "sessions.db"):
        return "session_recording.sessions_dir"
    return "session_recording.sqlite.path"


def check_writers(recording_settings: Any) -> None:
    """
    Check, before anything starts, that every enabled writer can write
    where it is told to; raise L{ConfigError} naming the key otherwise.
    """
    if recording_settings.jsonl_enabled:
        check_directory(
            os.path.expanduser(recording_settings.jsonl_dir), _setting_key(recording_settings, "jsonl")
        )
    if recording_settings.sqlite_enabled:
        check_database(
            os.path.expanduser(recording_settings.db_path), _setting_key(recording_settings, "sqlite")
        )
    check_postgres_driver(recording_settings)


def make_recorder(
    recording_settings: Any, clock: IReactorTime, redactor: Redactor | None = None
) -> RecorderService | None:
    """
    A recorder for the settings, or C{None} when recording is disabled or
    no writer is enabled.  C{redactor}: PII redaction of every event before
    the writers see it.

    @raise ConfigError: a sessions directory or database cannot be created
        or written (see L{check_writers}).
    """
    if not recording_settings.enabled:
        return None
    check_postgres_driver(recording_settings)
    writers = make_writers(recording_settings, clock)
    if not writers:
        log.warn("session recording is enabled but no writer (jsonl, sqlite, postgres) is; nothing is recorded")
        return None
    check_writers(recording_settings)
    return RecorderService(
        writers,
        clock,
        batch_size=recording_settings.batch_size,
        batch_interval_ms=recording_settings.batch_interval_ms,
        max_queue_events=recording_settings.max_queue_events,
        redactor=redactor,
    )
