"""
The proxy site's connection limits, in memory: a fake clock drives the
request-head deadline and the idle timeout, L{StringTransport} stands in for
sockets; and the listener's one-line failure.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from lunaroute.config import settings_from_mapping
from lunaroute.proxy.site import ListenerService, QuietSite, gateway_site

REQUEST = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"


class Ok(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"ok"


class Slow(Resource):
    """A response that stays open until the test finishes it (a long stream)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def render_GET(self, request):
        request.write(b"first chunk")
        self.requests.append(request)
        return NOT_DONE_YET


def _site(resource=None, **limits) -> tuple[QuietSite, Clock]:
    clock = Clock()
    limits.setdefault("header_timeout_secs", 10)
    limits.setdefault("idle_timeout_secs", 60)
    site = QuietSite(resource or Ok(), reactor=clock, **limits)
    return site, clock


def _connect(site: QuietSite, host: str = "10.0.0.1", port: int = 40000):
    address = IPv4Address("TCP", host, port)
    channel = site.buildProtocol(address)
    if channel is None:
        return None, None
    transport = StringTransport(peerAddress=address)
    channel.makeConnection(transport)
    return channel, transport


def _closing(transport: StringTransport) -> bool:
    return transport.disconnecting or transport.disconnected


def test_a_head_sent_a_byte_a_second_is_cut_at_the_deadline():
    """A slowloris client dribbling its head gets a 408 and is closed after header_timeout_secs."""
    site, clock = _site()
    channel, transport = _connect(site)
    head = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    for i in range(9):
        channel.dataReceived(head[i : i + 1])
        clock.advance(1)
    assert not _closing(transport)
    channel.dataReceived(head[9:10])
    clock.advance(1)
    assert _closing(transport)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert site.head_timeouts == 1


def test_a_silent_connection_is_cut_at_the_head_deadline():
    """A connection that sends nothing is closed after header_timeout_secs, not the idle timeout."""
    site, clock = _site(header_timeout_secs=5)
    _channel, transport = _connect(site)
    clock.advance(4.9)
    assert not _closing(transport)
    clock.advance(0.2)
    assert _closing(transport)


def test_a_prompt_head_is_answered_and_the_connection_kept_until_idle():
    """
    A head in time is served; the kept-alive connection then stays open past
    the head deadline (no bytes: it is idle, not slow) and is closed by the
    idle timeout.
    """
    site, clock = _site(header_timeout_secs=10, idle_timeout_secs=60)
    channel, transport = _connect(site)
    channel.dataReceived(REQUEST)
    assert b"200 OK" in transport.value() and transport.value().endswith(b"ok")
    clock.advance(59)
    assert not _closing(transport)
    clock.advance(2)
    assert _closing(transport)
    assert site.head_timeouts == 0


def test_the_next_head_on_a_kept_alive_connection_has_its_own_deadline():
    """After an idle pause, a second head that dribbles is cut header_timeout_secs after its first byte."""
    site, clock = _site(header_timeout_secs=10, idle_timeout_secs=60)
    channel, transport = _connect(site)
    channel.dataReceived(REQUEST)
    clock.advance(30)
    for byte in b"GET /ok HTTP/1.1\r\nHo":
        if _closing(transport):
            break
        channel.dataReceived(bytes([byte]))
        clock.advance(1)
    assert _closing(transport)
    assert transport.value().endswith(b"408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")


def test_pipelined_requests_are_served():
    """Two requests in one segment are both answered and leave no deadline behind."""
    site, clock = _site()
    channel, transport = _connect(site)
    channel.dataReceived(REQUEST + REQUEST)
    assert transport.value().count(b"200 OK") == 2
    clock.advance(30)
    assert not _closing(transport)


def test_a_long_response_is_not_cut_by_either_timeout():
    """While a response streams (no client bytes), neither the head deadline nor the idle timeout fires."""
    slow = Slow()
    site, clock = _site(slow, header_timeout_secs=10, idle_timeout_secs=60)
    channel, transport = _connect(site)
    channel.dataReceived(REQUEST)
    assert b"first chunk" in transport.value()
    clock.advance(600)
    assert not _closing(transport)
    slow.requests[0].finish()
    assert not _closing(transport)
    clock.advance(61)
    assert _closing(transport)


def test_connections_beyond_the_per_client_cap_are_refused():
    """The cap counts open connections per IP; other IPs are unaffected; a closed one frees a slot."""
    site, _clock = _site(max_connections_per_client=3)
    held = [_connect(site, "10.0.0.1", 40000 + i) for i in range(3)]
    assert all(channel is not None for channel, _ in held)
    refused, _ = _connect(site, "10.0.0.1", 41000)
    assert refused is None
    assert site.refused_connections == 1
    other, _ = _connect(site, "10.0.0.2", 41000)
    assert other is not None
    channel, transport = held[0]
    transport.loseConnection()
    channel.connectionLost(None)
    again, _ = _connect(site, "10.0.0.1", 41001)
    assert again is not None
    assert site.connections_per_client["10.0.0.1"] == 3


def test_a_zero_cap_means_no_cap():
    """max_connections_per_client 0 accepts any number."""
    site, _clock = _site(max_connections_per_client=0)
    assert all(_connect(site, "10.0.0.1", 40000 + i)[0] is not None for i in range(300))


def test_refusals_are_logged_once_a_minute_per_client():
    """A flood of refused connections gives one warning per client per minute, not one per socket."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        site, clock = _site(max_connections_per_client=1, header_timeout_secs=1000, idle_timeout_secs=1000)
        _connect(site, "10.0.0.1")
        for i in range(50):
            _connect(site, "10.0.0.1", 50000 + i)
        clock.advance(61)
        _connect(site, "10.0.0.1", 51000)
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if "refusing connections" in e.get("log_format", "")]
    assert len(warnings) == 2
    assert site.refused_connections == 51


def test_the_site_takes_its_limits_from_settings():
    """gateway_site applies every http_server setting and the idle timeout reaches each channel."""
    settings = settings_from_mapping(
        {
            "http_server": {
                "max_request_body_bytes": 123,
                "header_timeout_secs": 3,
                "idle_timeout_secs": 7,
                "max_connections_per_client": 9,
            }
        },
        env={},
    )
    clock = Clock()
    site = gateway_site(Ok(), settings.http_server, clock)
    assert (site.max_request_body_bytes, site.header_timeout_secs, site.max_connections_per_client) == (
        123,
        3,
        9,
    )
    channel, _ = _connect(site)
    assert channel.timeOut == 7
    assert clock.getDelayedCalls()


# --------------------------------------------------------------------------
# The listener


class RefusingEndpoint:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def listen(self, factory):
        return defer.fail(self.error)


class LaterEndpoint:
    def __init__(self) -> None:
        self.result: defer.Deferred = defer.Deferred()

    def listen(self, factory):
        return self.result


def test_a_taken_port_ends_start_up_with_one_line():
    """A synchronous listen failure logs one readable line and raises SystemExit(1)."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    error = CannotListenError("127.0.0.1", 8081, OSError(98, "Address already in use"))
    service = ListenerService(RefusingEndpoint(error), object(), "127.0.0.1:8081")
    try:
        with pytest.raises(SystemExit) as exit_info:
            service.privilegedStartService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert exit_info.value.code == 1
    lines = [e["line"] for e in events if "line" in e]
    assert lines == ["lunaroute: cannot listen on 127.0.0.1:8081: Address already in use"]


def test_listening_port_fires_once_listening():
    """listening_port() fires with the port, whether asked before or after listening."""
    endpoint = LaterEndpoint()
    service = ListenerService(endpoint, object(), "127.0.0.1:0")
    service.startService()
    early = service.listening_port()
    assert not early.called
    port = object()
    endpoint.result.callback(port)
    assert early.result is port
    assert service.listening_port().result is port


# --------------------------------------------------------------------------
# The settings


def test_connection_limit_defaults():
    """Without configuration: 10 s head deadline, 60 s idle timeout, 256 connections per client."""
    http_server = settings_from_mapping({}, env={}).http_server
    assert (
        http_server.header_timeout_secs,
        http_server.idle_timeout_secs,
        http_server.max_connections_per_client,
    ) == (10.0, 60.0, 256)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"header_timeout_secs": 0}, "http_server.header_timeout_secs: must be greater than 0, got 0"),
        ({"idle_timeout_secs": "soon"}, "http_server.idle_timeout_secs: expected a number, got 'soon'"),
        ({"max_connections_per_client": -1}, "http_server.max_connections_per_client: must be at least 0, got -1"),
        ({"max_connections_per_client": 1.5}, "http_server.max_connections_per_client: expected an integer, got 1.5"),
    ],
)
def test_bad_connection_limits_are_one_line(values, message):
    """A bad limit is one ConfigError line naming the key."""
    from lunaroute.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        settings_from_mapping({"http_server": values}, env={})
    assert str(error.value) == message


def test_timeouts_close_quietly_and_abort_a_peer_that_does_not_let_go():
    """
    An idle timeout is not an info line per connection (every kept-alive
    connection ends this way); a peer that does not close is aborted after
    abortTimeout.
    """
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        site, clock = _site(header_timeout_secs=10, idle_timeout_secs=60)
        channel, transport = _connect(site)
        channel.dataReceived(REQUEST)
        clock.advance(61)
        assert transport.disconnecting and not transport.disconnected
        clock.advance(channel.abortTimeout)
        assert transport.disconnected
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if "Timing out client" in e.get("log_format", "")]


class Echo(Resource):
    """Answers with the body it received and the kind of buffer that held it."""

    isLeaf = True

    def render_POST(self, request):
        return type(request.content).__name__.encode() + b":" + request.content.read()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_body_within_the_limit_is_kept_in_memory_not_a_temporary_file(chunked, monkeypatch):
    """
    Twisted keeps bodies of 100,000 bytes or more (and chunked ones) in a
    temporary file; the gateway reads every body into memory anyway, so the
    file was only extra system calls on every long Claude Code request.
    """
    import tempfile

    def no_files(*args, **kwargs):
        raise AssertionError("a temporary file was created for the body")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_files)
    site, _ = _site(Echo())
    channel, transport = _connect(site)
    body = b"x" * 150_000
    if chunked:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        wire = head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    else:
        wire = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    channel.dataReceived(wire)
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"BytesIO:" + body in answer
