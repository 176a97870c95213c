"""
An upstream provider reached over HTTP(S) through a persistent connection pool.

The relay needs the response bytes exactly as the provider sent them
(compressed bodies included) and must never share state between users, so
requests go straight to a pooled L{twisted.web.client.Agent}: treq's
C{HTTPClient} would add a gzip decoder and a cookie jar shared by every
client of the gateway.  treq remains the client for everything else
(tests, health checks).
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet import defer, error, task
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocol, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestNotSent,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from lunaroute.config import ProviderSettings, Settings
from lunaroute.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from lunaroute.interfaces import IProvider
from lunaroute.logs import log_observer
from lunaroute.providers.url import UpstreamBase
from lunaroute.twisted_compat import quiet_pool

log = Logger(observer=log_observer)

# The most idle connections a pool grows to when it sees that many requests
# in flight at once (see HTTPProvider.note_in_flight).
MAX_IDLE_PER_HOST = 1024

# Backoff before retrying a request that never reached the provider.
RETRY_BACKOFF_SECS = (0.1, 0.2, 0.4)

_CONNECT_FAILURES = (
    error.ConnectError,
    error.DNSLookupError,
)


@implementer(IBodyProducer)
class BytesProducer:
    """
    Produce an in-memory body in one write.

    L{twisted.web.client.FileBodyProducer} would hand the bytes over through
    the global cooperator, a reactor turn later; the body is already in
    memory, so write it at once.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IStreamClientEndpoint)
class _KeepAliveEndpoint:
    """
    Wrap an endpoint so that its TCP connections use keep-alive probes:
    long thinking pauses must not let a NAT or load balancer drop the socket.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, factory: Any) -> defer.Deferred[IProtocol]:
        def enable_keepalive(protocol: IProtocol) -> IProtocol:
            transport = getattr(protocol, "transport", None)
            # A TLS connection wraps the TCP transport; walk down to it.
            for _ in range(3):
                if transport is None:
                    break
                if hasattr(transport, "setTcpKeepAlive"):
                    try:
                        transport.setTcpKeepAlive(1)
                    except OSError:
                        pass
                    break
                transport = getattr(transport, "transport", None)
            return protocol

        return self._endpoint.connect(factory).addCallback(enable_keepalive)


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    def __init__(self, reactor: Any, connect_timeout: float, keepalive: bool) -> None:
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._tls_policy = BrowserLikePolicyForHTTPS()
        # One endpoint per origin, built once: constructing one (IDNA host
        # encoding, TLS options) on every request was a visible share of the
        # gateway's per-request CPU.
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._new_endpoint(uri)
        return endpoint

    def _new_endpoint(self, uri: Any) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, uri.host, uri.port, timeout=self._connect_timeout
        )
        if uri.scheme == b"https":
            creator = self._tls_policy.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        if self._keepalive:
            endpoint = _KeepAliveEndpoint(endpoint)
        return endpoint


def _never_sent(failure: Failure) -> bool:
    """
    True only when the request certainly never reached the provider, so that
    sending it again cannot run (and bill) it twice: the connection could not
    be made, or Twisted says the request was not sent (a pooled connection
    found closed before writing).  A connection that closed or reset after
    the request was written (C{ResponseNeverReceived}) may have been read,
    so it is never retried.
    """
    return bool(failure.check(*_CONNECT_FAILURES, RequestNotSent))


@implementer(IProvider)
class HTTPProvider:
    """
    One configured provider: its base URL, auth rule and connection pool.
    """

    def __init__(
        self,
        settings: ProviderSettings,
        reactor: Any = None,
        agent: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.settings = settings
        self.name = settings.name
        self.provider_type = settings.provider_type
        self.has_server_key = bool(settings.api_key)
        self._clock: IReactorTime = reactor
        self._base = UpstreamBase.parse(settings.base_url)
        client = settings.http_client
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        quiet_pool(self.pool)
        self.pool.maxPersistentPerHost = client.pool_max_idle_per_host
        self.pool.cachedConnectionTimeout = int(client.pool_idle_timeout_secs)
        # Twisted retries idempotent requests on a dead pooled connection
        # itself; POSTs are retried below, only when they never left.
        self.pool.retryAutomatically = True
        if agent is None:
            agent = Agent.usingEndpointFactory(
                reactor,
                _EndpointFactory(
                    reactor,
                    client.connect_timeout_secs,
                    keepalive=client.tcp_keepalive_secs > 0,
                ),
                pool=self.pool,
            )
        self._agent = agent
        self._timeout = client.timeout_secs
        self._max_retries = client.max_retries

    def __repr__(self) -> str:
        return f"<HTTPProvider {self.name} {self.provider_type} {self.settings.base_url}>"

    def upstream_url(self, path: str, query: bytes = b"") -> bytes:
        """
        Map a client path onto this provider's base URL, from parsed parts:
        no target can change the scheme, host or port (see
        L{lunaroute.providers.url}).

        OpenAI base URLs end in C{/v1} (as in the OpenAI SDK), so the client's
        C{/v1} prefix is dropped for them; Anthropic base URLs are the bare
        origin and take the client's path whole.

        @raise lunaroute.providers.url.BadTarget: for a path not in origin form.
        """
        raw = path.encode("utf-8")
        if self.provider_type == "openai" and self._base.prefix and (
            raw == b"/v1" or raw.startswith(b"/v1/")
        ):
            raw = raw[3:] or b"/"
        return self._base.url(raw, query)

    def apply_auth(self, headers: Headers) -> None:
        """
        With a server key, replace whatever credentials the client sent;
        without one, leave the client's own key untouched.
        """
        key = self.settings.api_key
        if not key:
            return
        headers.removeHeader(b"x-api-key")
        headers.removeHeader(b"authorization")
        if self.provider_type == "anthropic":
            headers.setRawHeaders(b"x-api-key", [key.encode("utf-8")])
        else:
            headers.setRawHeaders(b"authorization", [b"Bearer " + key.encode("utf-8")])

    def note_in_flight(self, count: int) -> None:
        """
        Keep as many idle connections as requests were seen in flight at
        once (C{pool_max_idle_per_host} is the floor, L{MAX_IDLE_PER_HOST}
        the ceiling): with 64 concurrent clients and a cap of 32, half the
        connections were closed after each response and reopened for the
        next (hundreds of sockets in TIME-WAIT, lower throughput).  Idle
        connections still expire after C{pool_idle_timeout_secs}.
        """
        if self.pool.maxPersistentPerHost < count <= MAX_IDLE_PER_HOST:
            self.pool.maxPersistentPerHost = count

    def request(
        self, method: bytes, path: str, query: bytes, headers: Headers, body: bytes
    ) -> defer.Deferred[IResponse]:
        try:
            url = self.upstream_url(path, query)
        except Exception as exc:
            return defer.fail(exc)
        self.apply_auth(headers)
        return self._send(method, url, headers, body, 0)

    def _send(self, method: bytes, url: bytes, headers: Headers, body: bytes, attempt: int) -> defer.Deferred[IResponse]:
        """
        Send once; when that fails before the request left
        (L{UpstreamUnreachable} with C{retryable}) and retries remain, send
        again after the backoff.  Plain Deferreds rather than a coroutine:
        this runs for every request, and cancelling the result cancels
        whatever is pending (the send, or the backoff's timer).
        """
        d = self._request_once(method, url, headers, body)
        if attempt < self._max_retries:
            d.addErrback(self._retry, method, url, headers, body, attempt)
        return d

    def _retry(
        self, failure: Failure, method: bytes, url: bytes, headers: Headers, body: bytes, attempt: int
    ) -> Failure | defer.Deferred[IResponse]:
        exc = failure.value
        if not isinstance(exc, UpstreamUnreachable) or not exc.retryable:
            return failure
        delay = RETRY_BACKOFF_SECS[min(attempt, len(RETRY_BACKOFF_SECS) - 1)]
        log.info(
            "retrying {provider} in {delay}s after {reason} ({attempt}/{max})",
            provider=self.name,
            delay=delay,
            reason=str(exc),
            attempt=attempt + 1,
            max=self._max_retries,
        )
        wait: defer.Deferred[None] = task.deferLater(self._clock, delay)
        return wait.addCallback(lambda _: self._send(method, url, headers, body, attempt + 1))

    def _request_once(
        self, method: bytes, url: bytes, headers: Headers, body: bytes
    ) -> defer.Deferred[IResponse]:
        producer = BytesProducer(body) if body or method not in (b"GET", b"HEAD") else None
        d = self._agent.request(method, url, headers, producer)
        timed_out = []

        def on_timeout() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self._clock.callLater(self._timeout, on_timeout)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        def translate(failure: Failure) -> Failure:
            if timed_out:
                raise UpstreamTimeout(
                    f"{self.name} sent no response within {self._timeout:g}s",
                    provider=self.name,
                )
            if failure.check(defer.CancelledError, UpstreamError):
                return failure
            if failure.check(error.ConnectingCancelledError) or _cancelled_in_flight(failure):
                # The caller cancelled (the client went away) while the
                # connection was being opened, or while the provider had the
                # request (Twisted reports ResponseNeverReceived wrapping the
                # CancelledError): a cancellation, never a failure to retry
                # nor a verdict on the provider (its circuit breaker).
                raise defer.CancelledError()
            if failure.check(*_CONNECT_FAILURES, RequestNotSent):
                raise UpstreamUnreachable(
                    f"{self.name} unreachable: {_describe(failure)}",
                    provider=self.name,
                    retryable=_never_sent(failure),
                )
            if failure.check(ResponseNeverReceived, ResponseFailed):
                raise UpstreamUnreachable(
                    f"{self.name} closed the connection without answering: {_describe(failure)}",
                    provider=self.name,
                )
            raise UpstreamError(
                f"{self.name} request failed: {_describe(failure)}", provider=self.name
            )

        d.addBoth(done)
        d.addErrback(translate)
        return d

    def probe(self) -> defer.Deferred[None]:
        """
        Check the provider can be reached: a C{HEAD} of its base URL through
        the pool (any HTTP status proves it; nothing is billed).
        """
        url = self._base.url(b"/")
        d = self._agent.request(b"HEAD", url, Headers({b"user-agent": [b"lunaroute-readyz"]}), None)

        def drain(response: IResponse) -> defer.Deferred[Any]:
            return treq.content(response)

        def explain(failure: Failure) -> None:
            raise UpstreamUnreachable(_describe(failure), provider=self.name)

        d.addCallback(drain)
        d.addCallbacks(lambda _: None, explain)
        return d

    def close(self) -> defer.Deferred[None]:
        return self.pool.closeCachedConnections()


def _cancelled_in_flight(failure: Failure) -> bool:
    """Whether Agent's failure is our own cancellation of a request already sent."""
    if not failure.check(ResponseNeverReceived, ResponseFailed):
        return False
    reasons = getattr(failure.value, "reasons", None) or []
    return any(isinstance(reason, Failure) and reason.check(defer.CancelledError) for reason in reasons)


def _describe(failure: Failure) -> str:
    """A readable sentence for a failure, never a C{Failure} repr."""
    if failure.check(ResponseNeverReceived, ResponseFailed, RequestNotSent):
        reasons = getattr(failure.value, "reasons", None) or []
        if reasons:
            inner = reasons[0]
            if inner.check(error.ConnectionDone):
                return "the connection was closed"
            if inner.check(error.ConnectionLost):
                return "the connection was lost (reset)"
            return inner.getErrorMessage() or inner.type.__name__
        if failure.check(RequestNotSent):
            return "the request could not be sent on a closed connection"
    message = failure.getErrorMessage()
    return message if message and not message.startswith("[") else getattr(failure.type, "__name__", "error")


def providers_from_settings(settings: Settings, reactor: Any = None) -> dict[str, HTTPProvider]:
    """
    Build one L{HTTPProvider} for each enabled provider in the settings.
    """
    return {
        name: HTTPProvider(p, reactor=reactor)
        for name, p in settings.providers.items()
        if p.enabled
    }
