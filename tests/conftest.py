"""
Shared fixtures: a fake provider on 127.0.0.1 and a gateway in front of it,
both on the real reactor (pytest-twisted), driven by the official SDKs.

SDK calls block, so tests run them with C{in_thread} (C{deferToThread}) while
the reactor keeps serving both servers.

Every test also watches Twisted's log: a failure (C{log.failure}) or any
critical event logged while it runs fails the test, unless the test declared
it with the C{logged_failures} fixture: C{logged_failures.expect(OSError)}.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher

from lunaroute.config import settings_from_mapping
from lunaroute.service import make_gateway_service
from lunaroute.testing.fake_provider import FakeProvider


class LoggedFailures:
    """
    A log observer that keeps the failures and critical events logged during
    one test, and which of them the test expects.

    A test that provokes a logged failure on purpose declares it, by exception
    type: C{logged_failures.expect(OSError)}; C{expect(message="...")} accepts
    a critical event without a failure whose text contains C{message}.  (A
    fixture rather than a marker: pytest takes a lone class passed to a marker
    for the object it decorates.)
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []
        self._types: list[type[BaseException]] = []
        self._messages: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_failure") is not None or event.get("log_level") is LogLevel.critical:
            self.events.append(event)

    def expect(self, *types: type[BaseException], message: str | None = None) -> None:
        """Declare failures of these exception types (or this message) expected."""
        self._types.extend(types)
        if message is not None:
            self._messages.append(message)

    def matching(self, *types: type[BaseException]) -> list[LogEvent]:
        """The logged failures whose exception is one of C{types}."""
        return [e for e in self.events if e.get("log_failure") is not None and e["log_failure"].check(*types)]

    def _expected(self, event: LogEvent) -> bool:
        failure = event.get("log_failure")
        if failure is not None:
            return bool(self._types) and failure.check(*self._types) is not None
        text = formatEvent(event)
        return any(m in text for m in self._messages)

    def unexpected(self) -> list[LogEvent]:
        """The logged failures and critical events no declaration covers."""
        return [e for e in self.events if not self._expected(e)]


def _describe(event: LogEvent) -> str:
    failure = event.get("log_failure")
    text = f"{event.get('log_namespace')}: {formatEvent(event)}"
    if failure is not None:
        text += "\n" + failure.getTraceback()
    return text


@pytest.fixture(autouse=True)
def logged_failures() -> Iterator[LoggedFailures]:
    """
    Fail the test when something logged a failure it did not expect: the
    gateway logs errors it survives (a broken writer, a failing observer, an
    exception in a route) instead of raising them, so without this check a
    test could pass while the gateway is quietly broken.
    """
    watcher = LoggedFailures()
    globalLogPublisher.addObserver(watcher)
    try:
        yield watcher
    finally:
        globalLogPublisher.removeObserver(watcher)
    unexpected = watcher.unexpected()
    if unexpected:
        pytest.fail(
            f"{len(unexpected)} unexpected failure(s) logged (declare expected ones with the "
            "logged_failures fixture: logged_failures.expect(SomeError)):\n\n"
            + "\n\n".join(_describe(e) for e in unexpected),
            pytrace=False,
        )


@pytest_twisted.async_yield_fixture
async def fake():
    provider = FakeProvider(reactor)
    port = provider.listen()
    provider.url = f"http://127.0.0.1:{port.getHost().port}"
    yield provider
    await provider.stop()


class RunningGateway:
    def __init__(self, service: Any, port: int) -> None:
        self.service = service
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.app = service.gateway

    def anthropic(self, **kwargs: Any) -> Any:
        import anthropic

        kwargs.setdefault("api_key", "sk-ant-client-key-123456789")
        kwargs.setdefault("max_retries", 0)
        return anthropic.Anthropic(base_url=self.url, **kwargs)

    def openai(self, **kwargs: Any) -> Any:
        import openai

        kwargs.setdefault("api_key", "sk-client-key-123456789")
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.url + "/v1", **kwargs)


def gateway_settings(fake_url: str, **extra: Any) -> Any:
    """Settings pointing both providers at the fake, on an ephemeral port."""
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        # The UI is on by default (with recording): any free port, never 8082.
        "ui": {"port": 0},
        "providers": {
            "anthropic": {"base_url": fake_url},
            "openai": {"base_url": fake_url + "/v1"},
        },
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            merged = dict(data[key])
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            data[key] = merged
        else:
            data[key] = value
    return settings_from_mapping(data, env={})


@pytest_twisted.async_yield_fixture
async def start_gateway():
    """
    A factory: C{await start_gateway(fake, **config)} starts a gateway whose
    providers point at C{fake}; every gateway is stopped after the test.
    """
    started: list[Any] = []

    async def start(fake_provider: Any, **config: Any) -> RunningGateway:
        settings = gateway_settings(fake_provider.url, **config)
        service = make_gateway_service(settings, reactor=reactor)
        service.startService()
        started.append(service)
        port = await service.listening_port()
        return RunningGateway(service, port.getHost().port)

    yield start
    for service in started:
        if service.running:
            await service.stopService()


@pytest_twisted.async_yield_fixture
async def gateway(fake, start_gateway):
    yield await start_gateway(fake)


# -- PostgreSQL (lunaroute.testing.postgres) ----------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """
    One PostgreSQL server for the whole run.  Skipped when it cannot start
    here (no initdb/pg_ctl, no psycopg), unless LUNAROUTE_REQUIRE_POSTGRES
    is set (CI): then that is a failure.
    """
    import os

    from lunaroute.testing.postgres import REQUIRE_ENV, PostgresServer, postgres_missing_reason

    missing = postgres_missing_reason()
    if missing is not None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {missing}")
        pytest.skip(missing)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_dsn(postgres_server: Any) -> Iterator[str]:
    """A fresh, empty database of the test server, dropped afterwards."""
    if not postgres_server.running:
        postgres_server.start()
    dsn = postgres_server.create_database()
    try:
        yield dsn
    finally:
        if not postgres_server.running:
            postgres_server.start()
        postgres_server.drop_database(dsn)


@pytest.fixture(params=["sqlite", "postgres"])
def queries_for(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """
    The store contract: C{queries_for(exchanges)} records them with a
    store's writer and gives its read model (a C{SessionQueries}), for
    SQLite and for PostgreSQL.
    """
    import sqlite3

    from lunaroute.sessions.store import SessionQueries
    from lunaroute.testing.sessions import write_exchanges, write_postgres_exchanges

    opened: list[Any] = []

    def make(exchanges: list[Any]) -> SessionQueries:
        if request.param == "sqlite":
            path = str(tmp_path / f"sessions-{len(opened)}.db")
            write_exchanges(path, exchanges)
            conn: Any = sqlite3.connect(path)
            opened.append(conn)
            return SessionQueries(conn, jsonl_dir=None)
        from lunaroute.sessions.postgres import PgConnection, PostgresQueries, connect

        dsn = request.getfixturevalue("postgres_dsn")
        write_postgres_exchanges(dsn, exchanges)
        conn = connect(dsn)
        opened.append(conn)
        return PostgresQueries(PgConnection(conn))

    yield make
    for conn in opened:
        conn.close()
