"""
Unit tests of the relay pieces that need no sockets: header rules, URL
mapping, auth replacement, backpressure registration and the idle timeout.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from lunaroute.config import settings_from_mapping
from lunaroute.interfaces import IProvider
from lunaroute.providers.http import HTTPProvider
from lunaroute.proxy.headers import masked_headers, relayed_response_headers, upstream_request_headers
from lunaroute.proxy.relay import MAX_CHUNK_GAPS, RelayProtocol


class FakeRequest:
    def __init__(self):
        self.channel = object()  # connected: the client is still there
        self.written = []
        self.producer = None
        self.streaming = None

    def write(self, data):
        self.written.append(data)

    def registerProducer(self, producer, streaming):
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self):
        self.producer = None


class FakeTransport:
    def __init__(self):
        self.stopped = False

    def stopProducing(self):
        self.stopped = True

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass


def _provider(name="anthropic", **settings):
    config = settings_from_mapping({"providers": {name: settings}} if settings else {}, env={})
    return HTTPProvider(config.providers[name], reactor=Clock())


def test_provider_provides_interface():
    """HTTPProvider implements IProvider."""
    assert verifyObject(IProvider, _provider())


def test_openai_base_url_keeps_v1_once():
    """The OpenAI base URL ends in /v1, so the client's /v1 prefix is not doubled."""
    provider = _provider("openai", base_url="http://up:1/v1")
    assert provider.upstream_url("/v1/chat/completions") == b"http://up:1/v1/chat/completions"
    assert provider.upstream_url("/responses") == b"http://up:1/v1/responses"


def test_anthropic_url_and_query():
    """Anthropic paths are appended whole, with the query string kept."""
    provider = _provider("anthropic", base_url="http://up:2")
    assert provider.upstream_url("/v1/messages", b"beta=true") == b"http://up:2/v1/messages?beta=true"


def test_server_key_replaces_client_auth():
    """A configured key replaces both kinds of client credential."""
    headers = Headers({b"x-api-key": [b"client"], b"authorization": [b"Bearer client"]})
    _provider("anthropic", api_key="sk-ant-server-key-1234").apply_auth(headers)
    assert headers.getRawHeaders(b"x-api-key") == [b"sk-ant-server-key-1234"]
    assert not headers.hasHeader(b"authorization")
    headers = Headers({b"authorization": [b"Bearer client"]})
    _provider("openai", api_key="sk-server-key-123456").apply_auth(headers)
    assert headers.getRawHeaders(b"authorization") == [b"Bearer sk-server-key-123456"]


def test_client_auth_kept_without_server_key():
    """Without a server key the client's own key goes upstream untouched."""
    headers = Headers({b"x-api-key": [b"client"]})
    _provider("anthropic").apply_auth(headers)
    assert headers.getRawHeaders(b"x-api-key") == [b"client"]


def test_hop_by_hop_headers_are_dropped():
    """Connection-specific headers, and those named by Connection, stay on this hop."""
    client = Headers(
        {
            b"connection": [b"keep-alive, x-private"],
            b"x-private": [b"1"],
            b"keep-alive": [b"timeout=5"],
            b"host": [b"gateway"],
            b"content-length": [b"10"],
            b"anthropic-version": [b"2023-06-01"],
            b"transfer-encoding": [b"chunked"],
        }
    )
    out = upstream_request_headers(client)
    assert [name for name, _ in out.getAllRawHeaders()] == [b"Anthropic-Version"]
    upstream = Headers({b"content-type": [b"text/event-stream"], b"transfer-encoding": [b"chunked"],
                        b"request-id": [b"req_1"], b"retry-after": [b"3"]})
    relayed = dict(relayed_response_headers(upstream))
    assert set(relayed) == {b"Content-Type", b"Request-Id", b"Retry-After"}


def test_secrets_are_masked():
    """API keys and bearer tokens never appear in clear in recorded headers."""
    masked = masked_headers(
        Headers({b"x-api-key": [b"sk-ant-api03-abcdefghijklmnop"], b"authorization": [b"Bearer sk-proj-secretsecret99"]})
    )
    assert "abcdefghijklmnop" not in masked["x-api-key"]
    assert masked["authorization"].startswith("Bearer ")
    assert "secretsecret" not in masked["authorization"]


def test_relay_registers_upstream_as_streaming_producer():
    """The upstream transport becomes the client's producer: a slow client pauses the provider."""
    request, transport = FakeRequest(), FakeTransport()
    relay = RelayProtocol(request, Clock(), lambda chunk: None, idle_timeout=60)
    relay.makeConnection(transport)
    assert request.producer is transport and request.streaming is True
    relay.dataReceived(b"event: ping\n\n")
    assert request.written == [b"event: ping\n\n"]
    relay.connectionLost(Failure(ResponseDone()))
    assert request.producer is None
    assert relay.done.called


def test_an_endless_stream_keeps_a_bounded_list_of_chunk_gaps():
    """Every chunk is relayed and counted, but only the first MAX_CHUNK_GAPS gaps are kept."""
    clock = Clock()
    request, transport = FakeRequest(), FakeTransport()
    relay = RelayProtocol(request, clock, lambda chunk: None, idle_timeout=60)
    relay.makeConnection(transport)
    for _ in range(MAX_CHUNK_GAPS + 500):
        clock.advance(0.001)
        relay.dataReceived(b"x")
    assert relay.chunks == MAX_CHUNK_GAPS + 500 and len(request.written) == MAX_CHUNK_GAPS + 500
    assert len(relay.gaps_ms) == MAX_CHUNK_GAPS


def test_relay_aborts_a_silent_upstream():
    """A stream that goes silent for the timeout is aborted."""
    clock = Clock()
    request, transport = FakeRequest(), FakeTransport()
    relay = RelayProtocol(request, clock, lambda chunk: None, idle_timeout=5)
    relay.makeConnection(transport)
    clock.advance(4)
    relay.dataReceived(b"x")
    clock.advance(4)
    assert not transport.stopped
    clock.advance(2)
    assert transport.stopped and relay.timed_out


def test_cancelling_relay_stops_upstream():
    """Cancelling (client gone) closes the upstream connection at once."""
    request, transport = FakeRequest(), FakeTransport()
    relay = RelayProtocol(request, Clock(), lambda chunk: None, idle_timeout=60)
    relay.makeConnection(transport)
    relay.done.addErrback(lambda f: None)
    relay.done.cancel()
    assert transport.stopped


def test_tap_failure_never_reaches_the_client(logged_failures):
    """A tap that raises does not stop the bytes; the failure is logged."""
    logged_failures.expect(ValueError)
    request, transport = FakeRequest(), FakeTransport()

    def broken(chunk):
        raise ValueError("boom")

    relay = RelayProtocol(request, Clock(), broken, idle_timeout=60)
    relay.makeConnection(transport)
    relay.dataReceived(b"one")
    relay.dataReceived(b"two")
    relay.connectionLost(Failure(ResponseDone()))
    assert request.written == [b"one", b"two"]
    assert relay.done.called and relay.failure is None
    assert logged_failures.matching(ValueError)


def test_tap_sees_every_chunk_in_order_but_not_before_the_first_write():
    """The first chunk's tap work waits for the next chunk; nothing is lost or reordered."""
    request, transport = FakeRequest(), FakeTransport()
    tapped = []
    relay = RelayProtocol(request, Clock(), tapped.append, idle_timeout=60)
    relay.makeConnection(transport)
    relay.dataReceived(b"a")
    assert request.written == [b"a"] and tapped == []
    relay.dataReceived(b"b")
    assert tapped == [b"a", b"b"]
    relay.dataReceived(b"c")
    relay.connectionLost(Failure(ResponseDone()))
    assert tapped == [b"a", b"b", b"c"]


def test_single_chunk_body_is_tapped_at_the_end():
    """A one-chunk body still reaches the tap when the body ends."""
    request, transport = FakeRequest(), FakeTransport()
    tapped = []
    relay = RelayProtocol(request, Clock(), tapped.append, idle_timeout=60)
    relay.makeConnection(transport)
    relay.dataReceived(b"only")
    relay.connectionLost(Failure(ResponseDone()))
    assert tapped == [b"only"]


def test_connect_failure_is_retried_after_backoff():
    """A request that never reached the provider is sent again after 100 ms, on the injected clock."""
    from twisted.internet import defer, error

    clock = Clock()
    attempts = []

    class Agent:
        def request(self, method, url, headers, body):
            attempts.append(url)
            if len(attempts) == 1:
                return defer.fail(error.ConnectionRefusedError())
            return defer.succeed("response")

    config = settings_from_mapping({"providers": {"anthropic": {"base_url": "http://up:1"}}}, env={})
    provider = HTTPProvider(config.providers["anthropic"], reactor=clock, agent=Agent())
    d = provider.request(b"POST", "/v1/messages", b"", Headers(), b"{}")
    settled: list = []
    d.addBoth(settled.append)
    assert len(attempts) == 1 and not settled
    clock.advance(0.1)
    assert len(attempts) == 2
    assert settled == ["response"]
    clock.advance(1000)  # the request timeout was cancelled: nothing left to fire
    assert not clock.getDelayedCalls()


def test_idle_timer_is_not_touched_per_chunk_but_still_counts_from_the_last_one():
    """
    Chunks do not reschedule the idle timer (issue 19: a reset per chunk was
    per-chunk work); when it fires it waits on for what is left since the
    last chunk, so a stream is still aborted exactly C{idle_timeout} after it.
    """
    clock = Clock()
    request, transport = FakeRequest(), FakeTransport()
    relay = RelayProtocol(request, clock, lambda chunk: None, idle_timeout=5)
    relay.makeConnection(transport)
    (timer,) = clock.getDelayedCalls()
    for _ in range(3):
        clock.advance(1)
        relay.dataReceived(b"x")
    assert clock.getDelayedCalls() == [timer] and timer.getTime() == 5
    clock.advance(2)  # t=5: the first timer fires, the stream was idle 2 s only
    assert not transport.stopped
    clock.advance(2.5)  # t=7.5
    assert not transport.stopped
    clock.advance(0.5)  # t=8: 5 s after the last chunk
    assert transport.stopped and relay.timed_out
    assert clock.getDelayedCalls() == []
