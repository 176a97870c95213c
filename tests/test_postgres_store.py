"""
The PostgreSQL session store (docs/postgres.md): migrations, the writer's
atomic session aggregates under concurrent gateways, the read store through
a connection pool, the backlog and retries while the database is down, the
settings, and the full-text query translation.

A real PostgreSQL (lunaroute.testing.postgres, the postgres_server and
postgres_dsn fixtures of conftest.py) backs every test that needs one.  The
read model's contract tests over both stores are in test_session_store.py.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from lunaroute.config import PostgresSettings, setting_lines, settings_from_mapping
from lunaroute.errors import ConfigError
from lunaroute.interfaces import ISessionStore, ISessionWriter
from lunaroute.proxy.app import GatewayApp
from lunaroute.secrets import mask_connection_string
from lunaroute.sessions import postgres as pg
from lunaroute.sessions.events import exchange_events
from lunaroute.sessions.postgres import (
    SCHEMA_VERSION,
    BacklogFull,
    PgConnection,
    PostgresQueries,
    PostgresSessionStore,
    PostgresWriter,
    SchemaTooNew,
    connect,
    migrate,
    to_tsquery_text,
)
from lunaroute.sessions.recorder import InlineThreadPool, RecorderService, loss_reason
from lunaroute.sessions.store import BadParameter, SessionFilters, StoreUnavailable
from lunaroute.testing.exchanges import make_exchange

NOON = 1749988800.0


def turn(session_id: str, i: int, **extra: Any) -> Any:
    """Turn C{i} of a session: its own tokens and cost, so sums tell turns apart."""
    return make_exchange(
        session_id, NOON + i, request_id=f"{session_id}-r{i}", input_tokens=100 + i, output_tokens=10 + i,
        cache_read_tokens=i, cost_usd=0.001 * (i + 1), answer=f"answer number {i}", **extra,
    )


def events(*exchanges: Any) -> list[dict[str, Any]]:
    return [event for exchange in exchanges for event in exchange_events(exchange)]


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


SUMMED = ("input_tokens", "output_tokens", "thinking_tokens", "cache_read_tokens", "cache_creation_tokens",
          "cache_creation_1h_tokens", "tool_call_count")


def assert_aggregates_are_the_sum_of_turns(dsn: str, session_id: str) -> None:
    sums = ", ".join(f"SUM({c})" for c in SUMMED)
    expected = query(dsn, f"SELECT COUNT(*), {sums}, SUM(estimated_cost_usd), MIN(COALESCE(started_at, completed_at)), "
                          "MAX(COALESCE(completed_at, started_at)) FROM session_stats WHERE session_id = %s",
                     session_id)[0]
    got = query(dsn, f"SELECT request_count, {', '.join(SUMMED)}, estimated_cost_usd, started_at, last_activity "
                     "FROM sessions WHERE session_id = %s", session_id)[0]
    assert got[:-3] == expected[:-3]
    assert got[-3] == pytest.approx(expected[-3])
    assert got[-2:] == expected[-2:]


# -- migrations ----------------------------------------------------------------


def test_migrations_are_versioned_applied_once_and_refuse_a_newer_schema(postgres_dsn: str) -> None:
    """schema_migrations lists each step; migrating again (from three threads at once) is a no-op."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                assert migrate(conn) == SCHEMA_VERSION
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = query(postgres_dsn, "SELECT version, description FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1)) and all(r[1] for r in rows)
    query(postgres_dsn, "INSERT INTO schema_migrations (version, description) VALUES (%s, 'future') RETURNING 1",
          SCHEMA_VERSION + 1)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, pytest.raises(SchemaTooNew):
        migrate(conn)


# -- the writer ----------------------------------------------------------------


def test_writer_provides_the_interface_and_replays_change_nothing(postgres_dsn: str) -> None:
    """A batch written twice (import-sessions after a live write) leaves the same rows and sums."""
    writer = PostgresWriter(postgres_dsn)
    verifyObject(ISessionWriter, writer)
    batch = events(*(turn("s1", i) for i in range(3)))
    writer.write_batch(batch)
    before = query(postgres_dsn, "SELECT * FROM sessions")
    writer.write_batch(batch)
    writer.write_batch(batch[:4])
    writer.close()
    assert query(postgres_dsn, "SELECT * FROM sessions") == before
    assert query(postgres_dsn, "SELECT request_count, input_tokens FROM sessions") == [(3, 303)]
    assert_aggregates_are_the_sum_of_turns(postgres_dsn, "s1")


def test_concurrent_gateways_writing_one_session_lose_and_double_count_nothing(postgres_dsn: str) -> None:
    """
    Six writers (six gateways) write the turns of one session at once, each
    turn's events split over several batches, some turns written twice by
    two writers: the session row is exactly the sum of its request rows,
    and equals the recomputation from them.
    """
    turns = [turn("shared", i) for i in range(60)]
    writers = [PostgresWriter(postgres_dsn) for _ in range(6)]
    writers[0].open()
    errors: list[BaseException] = []

    def gateway(index: int) -> None:
        try:
            mine = [t for i, t in enumerate(turns) if i % 6 == index or i % 10 == index]  # overlaps: replays
            for exchange in mine:
                evs = events(exchange)
                writers[index].write_batch(evs[:2])
                writers[index].write_batch(evs[2:])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=gateway, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(not w.degraded for w in writers)
    assert query(postgres_dsn, "SELECT request_count, input_tokens, output_tokens FROM sessions") == [
        (60, sum(100 + i for i in range(60)), sum(10 + i for i in range(60)))]
    assert_aggregates_are_the_sum_of_turns(postgres_dsn, "shared")
    latest = query(postgres_dsn, "SELECT last_request_id, success, cost_complete FROM sessions")
    assert latest == [("shared-r59", 1, 1)]
    before = query(postgres_dsn, "SELECT * FROM sessions")
    writers[0].recompute_sessions()
    assert query(postgres_dsn, "SELECT * FROM sessions") == before
    for writer in writers:
        writer.close()


def test_text_with_nul_characters_is_stored(postgres_dsn: str) -> None:
    """PostgreSQL text cannot hold NUL: it becomes U+FFFD instead of failing the batch."""
    writer = PostgresWriter(postgres_dsn)
    writer.write_batch(events(make_exchange("nul", NOON, request_id="nul-1", answer="a\x00b")))
    writer.close()
    assert query(postgres_dsn, "SELECT response_text FROM session_stats") == [("a\ufffdb",)]


# -- down, slow, back -------------------------------------------------------


class _Flaky:
    """Makes a writer's connection attempts fail like a database that is down, until told otherwise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        real = pg.connect

        def connect(dsn: str, *args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise psycopg.OperationalError("connection refused (test)")
            return real(dsn, *args, **kwargs)

        monkeypatch.setattr(pg, "connect", connect)


def _recorder(writer: PostgresWriter, clock: Clock, **kwargs: Any) -> RecorderService:
    service = RecorderService([writer], clock, batch_size=100, batch_interval_ms=100,
                              threadpool=InlineThreadPool(), **kwargs)
    service.startService()
    return service


def test_database_down_queues_within_the_bound_retries_with_backoff_and_catches_up(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, logged_failures: Any
) -> None:
    """
    While the database is unreachable the writer keeps the batches (the
    recorder counts nothing lost), retries 0.5 s later, then 1 s, 2 s...;
    past its bound a batch is dropped and counted as backlog_full:postgres;
    once the database answers, the next retry writes the backlog in order.
    """
    logged_failures.expect(BacklogFull)
    flaky = _Flaky(monkeypatch)
    clock = Clock()
    exchanges = [turn("down", i) for i in range(4)]
    per = len(events(exchanges[0]))
    writer = PostgresWriter(postgres_dsn, clock=clock, max_backlog_events=2 * per + 1)
    recorder = _recorder(writer, clock)
    flaky.down = True
    writer._drop_connection()  # a restart of the database closes the connections
    for exchange in exchanges[:2]:
        recorder.record(exchange)
    clock.advance(0.1)
    assert writer.degraded and writer.backlog_events == 2 * per
    status = writer.status()
    assert status["status"] == "degraded" and "connection refused" in status["reason"]
    assert status["retry_in_seconds"] == 0.5
    assert recorder.loss_counts()["writer_error:postgres"] == 0
    # Backoff: nothing is tried before it is due; each failure doubles it.
    assert not writer.retry_due(clock.seconds())
    clock.advance(0.5)  # retried (and failed) at 0.6
    assert writer.status()["retry_in_seconds"] == 1.0
    clock.advance(0.5)
    assert writer.status()["retry_in_seconds"] == 0.5
    clock.advance(0.5)
    assert writer.status()["retry_in_seconds"] == 2.0
    # More than the bound: that batch is dropped and counted.
    recorder.record(exchanges[2])
    recorder.record(exchanges[3])
    clock.advance(0.1)
    assert writer.backlog_events == 2 * per
    assert recorder.loss_counts()["backlog_full:postgres"] == 2
    assert query(postgres_dsn, "SELECT COUNT(*) FROM session_stats") == [(0,)]
    # The database is back: the next retry writes the backlog.
    flaky.down = False
    clock.advance(2.0)
    assert not writer.degraded and writer.status()["status"] == "ok"
    assert query(postgres_dsn, "SELECT request_count FROM sessions") == [(2,)]
    assert_aggregates_are_the_sum_of_turns(postgres_dsn, "down")
    recorder.stopService()


def test_a_batch_the_database_refuses_is_dropped_and_counted_not_retried(postgres_dsn: str, logged_failures: Any) -> None:
    """A content error (not a connection error) drops that batch only: no endless retry of poison."""
    logged_failures.expect(psycopg.errors.CheckViolation)
    clock = Clock()
    writer = PostgresWriter(postgres_dsn, clock=clock)
    recorder = _recorder(writer, clock)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE session_stats ADD CONSTRAINT no_poison CHECK (response_text <> 'poison')")
    recorder.record(make_exchange("p", NOON, request_id="p-1", answer="poison"))
    clock.advance(0.1)
    recorder.record(make_exchange("p", NOON + 1, request_id="p-2", answer="fine"))
    clock.advance(0.1)
    assert recorder.loss_counts()["writer_error:postgres"] == 1
    assert not writer.degraded
    assert query(postgres_dsn, "SELECT request_id FROM session_stats") == [("p-2",)]
    recorder.stopService()


def test_a_real_database_stopped_mid_load_and_restarted_loses_nothing(
    postgres_server: Any, postgres_dsn: str
) -> None:
    """
    The server itself is stopped while turns keep coming, then started
    again: every turn accepted within the bound is in the store afterwards,
    and the session's aggregates are the sum of its turns.
    """
    clock = Clock()
    writer = PostgresWriter(postgres_dsn, clock=clock, connect_timeout=2)
    recorder = _recorder(writer, clock)
    turns = [turn("crash", i) for i in range(30)]
    for exchange in turns[:10]:
        recorder.record(exchange)
    clock.advance(0.1)
    assert query(postgres_dsn, "SELECT request_count FROM sessions") == [(10,)]
    postgres_server.stop("immediate")
    try:
        for exchange in turns[10:20]:
            recorder.record(exchange)
            clock.advance(0.1)
        assert writer.degraded and writer.backlog_events > 0
    finally:
        postgres_server.start()
    for exchange in turns[20:]:
        recorder.record(exchange)
    clock.advance(60)
    clock.advance(0.1)
    assert not writer.degraded
    assert query(postgres_dsn, "SELECT request_count FROM sessions") == [(30,)]
    assert_aggregates_are_the_sum_of_turns(postgres_dsn, "crash")
    assert sum(recorder.loss_counts().values()) == 0
    recorder.stopService()


def test_open_with_the_database_down_is_not_an_error(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway starts while its database is down: degraded, retried, never a start-up failure."""
    flaky = _Flaky(monkeypatch)
    flaky.down = True
    clock = Clock()
    writer = PostgresWriter(postgres_dsn, clock=clock)
    writer.open()
    assert writer.degraded and writer.retry_due(clock.seconds() + 1)
    flaky.down = False
    clock.advance(1)
    assert writer.retry() == 0 and not writer.degraded
    writer.close()


def test_backlog_full_is_its_own_loss_reason() -> None:
    assert loss_reason("postgres", BacklogFull("full")) == "backlog_full:postgres"


# -- readiness -----------------------------------------------------------------


def test_readyz_shows_a_degraded_store_but_the_gateway_stays_ready() -> None:
    """/readyz names the store's state; a degraded store does not make the proxy unready (200)."""
    settings = settings_from_mapping({"providers": {"anthropic": {"base_url": "http://a.test"}}}, env={})
    state = {"store": "postgres", "status": "degraded", "backlog_events": 12, "reason": "connection refused"}
    app = GatewayApp(settings, {}, Clock(), store_status=lambda: state)
    stub = StubTreq(app.resource())
    out: list[Any] = []
    d = stub.get("http://gateway.test/readyz")
    d.addCallback(lambda r: treq.content(r).addCallback(lambda body: out.append((r.code, json.loads(body)))))
    stub.flush()
    code, body = out[0]
    assert body["store"] == state
    # Not ready here only because no provider is configured in this test.
    assert body["dialects"]["anthropic"]["status"] == "no_provider" and code == 503


# -- the read store ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_store_answers_through_the_pool_off_the_reactor(postgres_dsn: str) -> None:
    """PostgresSessionStore is an ISessionStore: queries in the reactor's thread pool, a pooled connection."""
    writer = PostgresWriter(postgres_dsn)
    writer.write_batch(events(*(turn("pool", i) for i in range(3))))
    writer.close()
    store = PostgresSessionStore(PostgresSettings(enabled=True, connection_string=postgres_dsn), reactor=reactor)
    try:
        verifyObject(ISessionStore, store)
        rows, total = await store.list_sessions(SessionFilters(), "last_activity", "desc", 10, 0)
        assert total == 1 and rows[0]["request_count"] == 3 and "last_request_at" not in rows[0]
        hits = await store.search("number", 5)
        assert {h["request_id"] for h in hits} == {"pool-r0", "pool-r1", "pool-r2"}
        detail = await store.get_session("pool")
        assert [r["request_id"] for r in detail["requests"]] == ["pool-r0", "pool-r1", "pool-r2"]
        removed = await store.delete_session("pool")
        assert removed["removed"]["requests"] == 3 and removed["removed"]["sessions"] == 1
    finally:
        store.close()


def test_store_of_an_unmigrated_or_unreachable_database_is_unavailable(postgres_dsn: str) -> None:
    """No tables yet, or no server: a StoreUnavailable (503) naming the store, password masked."""
    store = PostgresSessionStore(
        PostgresSettings(enabled=True, connection_string=postgres_dsn, acquire_timeout_seconds=2),
        reactor=Clock(), threadpool=InlineThreadPool(),
    )
    errors: list[Any] = []
    store.get_session("x").addErrback(errors.append)
    assert errors[0].check(StoreUnavailable) and "migrate" in errors[0].value.message
    store.close()
    dead = "postgresql://u:hunter2secret@127.0.0.1:1/none?connect_timeout=1"
    store = PostgresSessionStore(
        PostgresSettings(enabled=True, connection_string=dead, acquire_timeout_seconds=1, min_connections=0),
        reactor=Clock(), threadpool=InlineThreadPool(),
    )
    errors = []
    store.list_sessions().addErrback(errors.append)
    assert errors[0].check(StoreUnavailable)
    assert "hunter2secret" not in errors[0].value.message and "u:***@" in errors[0].value.message
    store.close()


# -- full-text queries ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wombat", "'wombat'"),
        ("TypeError: undefined", "'TypeError' & 'undefined'"),
        ("foo.py bar", "('foo' <-> 'py') & 'bar'"),
        ('"greets you"', "('greets' <-> 'you')"),
        ("capyb*", "'capyb':*"),
        ("wombat AND French", "'wombat' & 'French'"),
        ("wombat OR TypeError", "'wombat' | 'TypeError'"),
        ("hello NOT greets", "'hello' & ! 'greets'"),
        ("(a OR b) c", "( 'a' | 'b' ) & 'c'"),
    ],
)
def test_user_text_becomes_a_tsquery_with_the_fts5_meaning(text: str, expected: str) -> None:
    assert to_tsquery_text(text) == expected


@pytest.mark.parametrize("text", ['"unbalanced', "wombat AND (x", "a OR", "OR a", "x)", "NEAR(a b)", "response_text: x"])
def test_malformed_or_unsupported_queries_are_bad_parameters(text: str) -> None:
    with pytest.raises(BadParameter) as caught:
        to_tsquery_text(text, "text_search")
    assert caught.value.param == "text_search"


def test_search_snippets_mark_the_match_escaped(postgres_dsn: str) -> None:
    writer = PostgresWriter(postgres_dsn)
    writer.write_batch(events(make_exchange("h", NOON, request_id="h-1", answer="use <b>zebra</b> & more")))
    writer.close()
    conn = connect(postgres_dsn)
    try:
        [hit] = PostgresQueries(PgConnection(conn)).search("zebra", 5)
    finally:
        conn.close()
    assert "&lt;b&gt;<mark>zebra</mark>&lt;/b&gt; &amp; more" in hit["snippet"]
    assert "[zebra]" in hit["snippet_text"] and isinstance(hit["rank"], float)


# -- settings ------------------------------------------------------------------


def test_postgres_settings_keys_defaults_and_masking() -> None:
    """The original's keys and defaults; ${VAR} expanded; the password never shown."""
    s = settings_from_mapping({}, env={}).session_recording.postgres
    assert (s.enabled, s.max_connections, s.min_connections, s.acquire_timeout_seconds, s.idle_timeout_seconds,
            s.max_lifetime_seconds) == (False, 5, 1, 30.0, 600.0, 1800.0)
    settings = settings_from_mapping(
        {"session_recording": {"enabled": True, "postgres": {
            "enabled": True, "connection_string": "postgresql://gw:${PGPASS}@db:5432/luna", "max_connections": 9}}},
        env={"PGPASS": "s3cretpassword"},
    )
    postgres = settings.session_recording.postgres
    assert postgres.connection_string == "postgresql://gw:s3cretpassword@db:5432/luna"
    assert postgres.max_connections == 9
    assert "s3cretpassword" not in repr(settings)
    lines = "\n".join(setting_lines(settings))
    assert "postgres postgresql://gw:***@db:5432/luna" in lines and "s3cretpassword" not in lines
    assert mask_connection_string("host=db password=abc user=x") == "host=db password=*** user=x"


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"enabled": True}, "session_recording.postgres.connection_string"),
        ({"min_connections": 6}, "session_recording.postgres.min_connections"),
        ({"max_conections": 3}, "session_recording.postgres.max_conections"),
        ({"acquire_timeout_seconds": 0}, "session_recording.postgres.acquire_timeout_seconds"),
    ],
)
def test_bad_postgres_settings_are_one_line_naming_the_key(block: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"session_recording": {"postgres": block}}, env={})
    assert key in str(caught.value) and "\n" not in str(caught.value)


# -- wiring --------------------------------------------------------------------


def test_the_configured_postgres_store_is_the_one_the_api_and_ui_read(postgres_dsn: str) -> None:
    """With postgres enabled (SQLite off) the read model is the PostgreSQL store; the UI and API run."""
    from lunaroute.api import RecordingOff, session_api_resource
    from lunaroute.config import ui_unavailable_reason
    from lunaroute.sessions.recorder import make_writers
    from lunaroute.sessions.store import SessionStore, make_session_store

    settings = settings_from_mapping(
        {"session_recording": {"enabled": True, "jsonl": False, "sqlite": False,
                               "postgres": {"enabled": True, "connection_string": postgres_dsn}},
         "ui": {"enabled": True}},
        env={},
    )
    recording = settings.session_recording
    store = make_session_store(recording, Clock())
    assert isinstance(store, PostgresSessionStore)
    store.close()
    assert [w.name for w in make_writers(recording, Clock())] == ["postgres"]
    assert ui_unavailable_reason(settings) is None
    recorder = RecorderService([], Clock(), threadpool=InlineThreadPool())
    api_store = make_session_store(recording, Clock())
    assert not isinstance(session_api_resource(settings, recorder, Clock(), store=api_store), RecordingOff)
    assert api_store is not None
    api_store.close()
    sqlite_only = settings_from_mapping({"session_recording": {"enabled": True}}, env={})
    assert isinstance(make_session_store(sqlite_only.session_recording, Clock()), SessionStore)


def test_a_refused_batch_in_the_backlog_is_counted_when_the_next_batch_retries_it(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, logged_failures: Any
) -> None:
    """Under steady traffic the backlog is retried inside the next write: a batch refused then still counts."""
    logged_failures.expect(psycopg.errors.CheckViolation)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("ALTER TABLE session_stats ADD CONSTRAINT no_poison CHECK (response_text <> 'poison')")
    flaky = _Flaky(monkeypatch)
    clock = Clock()
    writer = PostgresWriter(postgres_dsn, clock=clock)
    recorder = _recorder(writer, clock)
    flaky.down = True
    writer._drop_connection()
    recorder.record(make_exchange("q", NOON, request_id="q-1", answer="poison"))
    clock.advance(0.1)
    recorder.record(make_exchange("q", NOON + 1, request_id="q-2", answer="fine"))
    clock.advance(0.1)
    assert writer.backlog_events > 0
    flaky.down = False
    recorder.record(make_exchange("q", NOON + 2, request_id="q-3", answer="also fine"))
    clock.advance(1.0)  # one tick: the new batch, and the backlog retried before it
    assert not writer.degraded
    assert recorder.loss_counts()["writer_error:postgres"] == 1
    assert query(postgres_dsn, "SELECT request_id FROM session_stats ORDER BY id") == [("q-2",), ("q-3",)]
    recorder.stopService()


def test_a_malformed_connection_string_stops_start_up_with_one_line() -> None:
    """A connection string libpq cannot parse is a configuration error naming the key, the password unshown."""
    from lunaroute.service import make_gateway_service

    settings = settings_from_mapping(
        {"session_recording": {"enabled": True, "jsonl": False, "sqlite": False, "postgres": {
            "enabled": True, "connection_string": "host=db password=hunter2secret port=5432 nonsense"}}},
        env={},
    )
    with pytest.raises(SystemExit) as caught:
        make_gateway_service(settings, Clock())
    message = str(caught.value)
    assert "session_recording.postgres.connection_string" in message and "nonsense" in message
    assert "hunter2secret" not in message and "\n" not in message


def test_metrics_show_the_store_degraded_with_its_backlog(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics: lunaroute_session_store_degraded and _backlog_events follow the PostgreSQL writer."""
    from lunaroute.metrics import GatewayMetrics

    flaky = _Flaky(monkeypatch)
    clock = Clock()
    writer = PostgresWriter(postgres_dsn, clock=clock)
    recorder = _recorder(writer, clock)
    metrics = GatewayMetrics()
    metrics.bind_recorder(recorder)

    def scrape() -> str:
        return metrics.render()[0].decode()

    assert 'lunaroute_session_store_degraded{store="postgres"} 0.0' in scrape()
    flaky.down = True
    writer._drop_connection()
    recorder.record(turn("m", 1))
    clock.advance(0.1)
    text = scrape()
    assert 'lunaroute_session_store_degraded{store="postgres"} 1.0' in text
    assert f'lunaroute_session_store_backlog_events{{store="postgres"}} {float(writer.backlog_events)}' in text
    assert writer.backlog_events > 0
    flaky.down = False
    clock.advance(1.0)
    assert 'lunaroute_session_store_backlog_events{store="postgres"} 0.0' in scrape()
    recorder.stopService()
