"""
HTTPProvider's send step with a fake agent and a Clock: only a request that
certainly never reached the provider is sent again (no double billing), every
failure becomes a domain error, and the server key only ever goes to the base
URL's host.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import URI, RequestNotSent, ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers

from lunaroute.config import settings_from_mapping
from lunaroute.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from lunaroute.providers.http import RETRY_BACKOFF_SECS, HTTPProvider
from lunaroute.providers.url import BadTarget

SERVER_KEY = "sk-ant-server-key-never-elsewhere-0001"


class ScriptedAgent:
    """
    An IAgent whose C{request} answers with the next scripted outcome: an
    exception instance (a failed Deferred), a Deferred, or a value.
    """

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[bytes, bytes, Headers, Any]] = []

    def request(self, method: bytes, url: bytes, headers: Headers, body: Any = None) -> defer.Deferred[Any]:
        self.calls.append((method, url, headers.copy(), body))
        outcome = self.outcomes.pop(0) if self.outcomes else "response"
        if isinstance(outcome, defer.Deferred):
            return outcome
        if isinstance(outcome, BaseException):
            return defer.fail(outcome)
        return defer.succeed(outcome)


def _provider(agent: ScriptedAgent, clock: Clock, max_retries: int = 3, **extra: Any) -> HTTPProvider:
    config = settings_from_mapping(
        {
            "providers": {
                "anthropic": {
                    "base_url": "http://127.0.0.1:1000",
                    "api_key": SERVER_KEY,
                    "http_client": {"max_retries": max_retries, "timeout_secs": 30, **extra},
                }
            }
        },
        env={},
    )
    return HTTPProvider(config.providers["anthropic"], reactor=clock, agent=agent)


def _post(provider: HTTPProvider, path: str = "/v1/messages", query: bytes = b"") -> defer.Deferred[Any]:
    return provider.request(b"POST", path, query, Headers({b"x-api-key": [b"client-key"]}), b'{"model":"m"}')


def _failure_of(d: defer.Deferred[Any]) -> Failure:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the request should have failed by now"
    return failures[0]


@pytest.mark.parametrize(
    "make_failure",
    [
        lambda: error.ConnectionRefusedError(),
        lambda: error.ConnectError("no route"),
        lambda: error.DNSLookupError("up"),
        lambda: RequestNotSent(),
    ],
    ids=["refused", "connect-error", "dns", "request-not-sent"],
)
def test_never_sent_failures_are_retried_up_to_max_retries(make_failure: Any) -> None:
    """Connect failures and RequestNotSent are sent again after each backoff, max_retries times, then a retryable UpstreamUnreachable."""
    clock = Clock()
    agent = ScriptedAgent(*[make_failure() for _ in range(4)])
    d = _post(_provider(agent, clock, max_retries=3))
    settled: list[Any] = []
    d.addBoth(lambda result: settled.append(result) or result)
    assert len(agent.calls) == 1 and not settled
    for attempt, delay in enumerate(RETRY_BACKOFF_SECS, start=2):
        clock.advance(delay - 0.001)
        assert len(agent.calls) == attempt - 1, "no retry before the backoff elapsed"
        clock.advance(0.001)
        assert len(agent.calls) == attempt
    failure = _failure_of(d)
    assert failure.check(UpstreamUnreachable)
    assert failure.value.retryable is True
    assert "Failure" not in str(failure.value) and "<" not in str(failure.value)
    assert len(agent.calls) == 4
    assert not clock.getDelayedCalls()


def test_a_retry_that_succeeds_returns_the_response() -> None:
    """A RequestNotSent on a stale pooled connection, then an answer: the caller gets the answer."""
    clock = Clock()
    agent = ScriptedAgent(RequestNotSent(), "the response")
    d = _post(_provider(agent, clock))
    clock.advance(RETRY_BACKOFF_SECS[0])
    assert d.result == "the response"
    assert len(agent.calls) == 2
    assert [call[1] for call in agent.calls] == [b"http://127.0.0.1:1000/v1/messages"] * 2


def test_max_retries_zero_means_one_attempt() -> None:
    """With max_retries 0 a connect failure is reported at once."""
    clock = Clock()
    agent = ScriptedAgent(error.ConnectionRefusedError())
    failure = _failure_of(_post(_provider(agent, clock, max_retries=0)))
    assert failure.check(UpstreamUnreachable) and len(agent.calls) == 1


@pytest.mark.parametrize(
    "make_failure",
    [
        lambda: ResponseNeverReceived([Failure(error.ConnectionDone())]),
        lambda: ResponseNeverReceived([Failure(error.ConnectionLost())]),
        lambda: ResponseFailed([Failure(error.ConnectionDone())]),
        lambda: ResponseFailed([Failure(error.ConnectionLost("reset"))]),
    ],
    ids=["never-received-closed", "never-received-reset", "failed-closed", "failed-reset"],
)
def test_a_request_that_may_have_reached_the_provider_is_never_sent_again(make_failure: Any) -> None:
    """ResponseNeverReceived / ResponseFailed after the body left: exactly one agent call, a non-retryable UpstreamUnreachable (no double billing)."""
    clock = Clock()
    agent = ScriptedAgent(*[make_failure() for _ in range(4)])
    d = _post(_provider(agent, clock, max_retries=3))
    clock.advance(60)
    failure = _failure_of(d)
    assert failure.check(UpstreamUnreachable)
    assert failure.value.retryable is False
    assert len(agent.calls) == 1
    message = str(failure.value)
    assert "closed the connection" in message
    assert "Failure" not in message and "<" not in message and "[" not in message


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("kaboom"), ValueError(), KeyError("x"), error.ConnectionLost()],
    ids=["runtime", "value", "key", "connection-lost"],
)
def test_any_other_failure_is_an_upstream_error_not_a_raw_exception(exc: Exception) -> None:
    """An unexpected agent failure becomes an UpstreamError (a 502 in the client's dialect), once, without a Failure repr."""
    clock = Clock()
    agent = ScriptedAgent(exc, exc, exc, exc)
    failure = _failure_of(_post(_provider(agent, clock)))
    assert failure.check(UpstreamError)
    assert not isinstance(failure.value, UpstreamUnreachable) or failure.value.retryable is False
    assert len(agent.calls) == 1
    assert "Failure" not in str(failure.value) and "<" not in str(failure.value)


def test_no_answer_within_the_timeout_is_an_upstream_timeout_and_not_retried() -> None:
    """A provider that never answers: after timeout_secs the agent's Deferred is cancelled and UpstreamTimeout raised, once."""
    clock = Clock()
    cancelled: list[bool] = []
    pending: defer.Deferred[Any] = defer.Deferred(lambda d: cancelled.append(True))
    agent = ScriptedAgent(pending)
    d = _post(_provider(agent, clock))
    clock.advance(29.9)
    assert not d.called
    clock.advance(0.1)
    failure = _failure_of(d)
    assert failure.check(UpstreamTimeout)
    assert cancelled == [True]
    clock.advance(60)
    assert len(agent.calls) == 1


@pytest.mark.parametrize(
    "path",
    ["1/steal", ".evil.example/x", "@evil/x", "//evil/x", "http://evil/x", "evil:443", "/x\r\nHost: evil", "/x\\y"],
)
def test_hostile_path_never_reaches_the_agent(path: str) -> None:
    """A path that is not origin form fails with BadTarget before the agent (and the server key) is used."""
    clock = Clock()
    agent = ScriptedAgent()
    failure = _failure_of(_post(_provider(agent, clock), path))
    assert failure.check(BadTarget)
    assert agent.calls == []


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/messages", b"beta=true"),
        ("/@evil.example/x", b""),
        ("/:10001/steal", b""),
        ("/v1/%0d%0aHost:%20evil", b"x=%0d%0a"),
        ("/.evil.example", b"u=http://evil/"),
    ],
)
def test_the_server_key_only_goes_to_the_base_urls_host(path: str, query: bytes) -> None:
    """Whatever origin-form target, the agent is asked for 127.0.0.1:1000 over http, carrying the server key (not the client's)."""
    clock = Clock()
    agent = ScriptedAgent()
    _post(_provider(agent, clock), path, query)
    [(method, url, headers, _)] = agent.calls
    parsed = URI.fromBytes(url)
    assert (parsed.scheme, parsed.host, parsed.port) == (b"http", b"127.0.0.1", 1000)
    assert headers.getRawHeaders(b"x-api-key") == [SERVER_KEY.encode()]


def test_probe_heads_the_base_url_and_explains_failures() -> None:
    """probe() sends one HEAD to the base URL's origin; a refused connection is a readable UpstreamUnreachable."""
    clock = Clock()
    agent = ScriptedAgent(error.ConnectionRefusedError())
    failure = _failure_of(_provider(agent, clock).probe())
    assert failure.check(UpstreamUnreachable)
    assert "Failure" not in str(failure.value)
    [(method, url, headers, body)] = agent.calls
    assert (method, url, body) == (b"HEAD", b"http://127.0.0.1:1000/", None)
    assert not headers.hasHeader(b"x-api-key")


@pytest.mark.parametrize(
    "agent_failure",
    [
        # While the connection is being opened.
        lambda: error.ConnectingCancelledError(None),
        # After the request was written: Agent aborts the connection.
        lambda: ResponseNeverReceived([Failure(defer.CancelledError())]),
    ],
    ids=["during-connect", "provider-has-the-request"],
)
def test_a_client_leaving_is_a_cancellation_not_a_retry(agent_failure: Any, logged_failures: Any) -> None:
    """
    Cancelling the send, whatever Twisted reports for it (ConnectingCancelledError
    while connecting; ResponseNeverReceived([CancelledError]) once the request
    was written), is a cancellation: no retry after the backoff, so no
    upstream call with nobody waiting, nothing logged as a failure, and no
    "closed the connection without answering" that would count against the
    provider's circuit breaker (found when wrk stopping 64 connections at
    once opened both breakers of a healthy provider).
    """
    clock = Clock()

    def cancel(d: defer.Deferred[Any]) -> None:
        d.errback(agent_failure())

    pending: defer.Deferred[Any] = defer.Deferred(cancel)
    agent = ScriptedAgent(pending)
    d = _post(_provider(agent, clock))
    d.cancel()
    assert _failure_of(d).check(defer.CancelledError)
    clock.advance(sum(RETRY_BACKOFF_SECS) * 10)
    assert len(agent.calls) == 1
    assert logged_failures.events == []


def test_a_connection_the_provider_closed_is_still_its_failure() -> None:
    """The same exception with the provider's own reason stays UpstreamUnreachable."""
    clock = Clock()
    agent = ScriptedAgent(ResponseNeverReceived([Failure(error.ConnectionDone())]))
    failure = _failure_of(_post(_provider(agent, clock)))
    assert failure.check(UpstreamUnreachable)
    assert "closed the connection" in str(failure.value)


def test_a_relay_whose_client_already_left_aborts_instead_of_crashing() -> None:
    """
    The body starts after the client's request was cleaned up (channel None):
    the relay stops the upstream transport rather than failing with an
    AttributeError in registerProducer.
    """
    from twisted.internet.testing import StringTransport

    from lunaroute.proxy.relay import RelayProtocol

    class GoneRequest:
        channel = None

        def registerProducer(self, producer: Any, streaming: bool) -> None:
            raise AssertionError("must not register on a request whose client left")

    class Upstream(StringTransport):
        stopped = False

        def stopProducing(self) -> None:
            self.stopped = True

    relay = RelayProtocol(GoneRequest(), Clock(), lambda chunk: None, idle_timeout=600)
    transport = Upstream()
    relay.makeConnection(transport)
    assert transport.stopped


def test_the_idle_pool_grows_to_the_concurrency_seen_within_bounds() -> None:
    """
    With 64 requests in flight and pool_max_idle_per_host 32, the pool keeps
    64 idle connections (not closing half of them after each burst); the
    configured value is the floor and MAX_IDLE_PER_HOST the ceiling.
    """
    from lunaroute.providers.http import MAX_IDLE_PER_HOST

    provider = _provider(ScriptedAgent(), Clock(), pool_max_idle_per_host=32)
    assert provider.pool.maxPersistentPerHost == 32
    provider.note_in_flight(10)
    assert provider.pool.maxPersistentPerHost == 32
    provider.note_in_flight(64)
    assert provider.pool.maxPersistentPerHost == 64
    provider.note_in_flight(5)
    assert provider.pool.maxPersistentPerHost == 64
    provider.note_in_flight(MAX_IDLE_PER_HOST + 1)
    assert provider.pool.maxPersistentPerHost == 64


def test_a_client_leaving_during_the_backoff_cancels_the_retry(logged_failures: Any) -> None:
    """Cancelled while waiting to retry a refused connection: no second send, ever."""
    clock = Clock()
    agent = ScriptedAgent(error.ConnectionRefusedError())
    d = _post(_provider(agent, clock))
    assert len(agent.calls) == 1
    d.cancel()
    assert _failure_of(d).check(defer.CancelledError)
    clock.advance(sum(RETRY_BACKOFF_SECS) * 10)
    assert len(agent.calls) == 1
    assert clock.getDelayedCalls() == []


def test_a_client_leaving_during_a_retry_cancels_that_send() -> None:
    """Cancelled while the retry is in flight: the pending send itself is cancelled."""
    clock = Clock()
    cancelled = []
    second: defer.Deferred[Any] = defer.Deferred(lambda d: cancelled.append(True))
    agent = ScriptedAgent(error.ConnectionRefusedError(), second)
    d = _post(_provider(agent, clock))
    clock.advance(RETRY_BACKOFF_SECS[0])
    assert len(agent.calls) == 2
    d.cancel()
    assert cancelled == [True]
    assert _failure_of(d).check(defer.CancelledError)
