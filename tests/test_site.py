"""
The proxy site's connection limits, in memory: a fake clock drives the
request-head deadline and the idle timeout, L{StringTransport} stands in for
sockets; and the listener's one-line failure.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from lunaroute.config import settings_from_mapping
from lunaroute.proxy.site import (
    ListenerService,
    QuietSite,
    gateway_site,
    refusal_response,
    request_line_path,
)

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


# -- heads refused before any route runs -----------------------------------


class Recording(Resource):
    """Records every request that reaches it (none should, in the tests below)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def render_POST(self, request):
        self.requests.append(request)
        return b"reached the resource"


def _response(transport: StringTransport) -> tuple[bytes, dict[bytes, bytes], dict]:
    """The status line, the headers (lower-case names) and the JSON body of the one response written."""
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    assert int(headers[b"content-length"]) == len(body)
    return status, headers, json.loads(body)


def _assert_anthropic_error(body: dict, error_type: str) -> None:
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == error_type


def _assert_openai_error(body: dict, error_type: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["type"] == error_type


_BAD_FRAMING = [
    (b"Content-Length: -5", "Content-Length"),
    (b"Content-Length: abc", "Content-Length"),
    (b"Content-Length: 1,2", "Content-Length"),
    (b"Content-Length: ", "Content-Length"),
    (b"Content-Length: 0x10", "Content-Length"),
    (b"Content-Length: 2\r\nContent-Length: 2", "more than once"),
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked", "more than once"),
    (b"transfer-encoding: chunked\r\ncontent-length: 2", "more than once"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "more than once"),
    (b"Transfer-Encoding: gzip, chunked", "Transfer-Encoding"),
]


@pytest.mark.parametrize(("path", "dialect"), [
    (b"/v1/messages", "anthropic"),
    (b"/v1/chat/completions", "openai"),
    (b"/v1/responses?x=1", "openai"),
])
@pytest.mark.parametrize(("framing", "named"), _BAD_FRAMING, ids=[f.decode() for f, _ in _BAD_FRAMING])
def test_a_malformed_body_framing_is_a_400_in_the_paths_dialect_and_the_connection_closes(framing, named, path, dialect):
    """
    Content-Length that is not a number, two framing headers, or an unknown
    transfer coding: Twisted alone wrote a bare '400 Bad Request' with no
    body.  Now a 400 JSON error in the client's dialect, Connection: close,
    the connection closed, and nothing reaches the resource.
    """
    resource = Recording()
    site, clock = _site(resource)
    channel, transport = _connect(site)
    channel.dataReceived(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n{}")
    status, headers, body = _response(transport)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers[b"content-type"] == b"application/json" and headers[b"connection"] == b"close"
    if dialect == "anthropic":
        _assert_anthropic_error(body, "invalid_request_error")
    else:
        _assert_openai_error(body, "invalid_request_error")
    assert named in body["error"]["message"]
    assert transport.disconnecting
    # Whatever the client sends next is not parsed as HTTP.
    written = transport.value()
    channel.dataReceived(b"\r\n\r\nPOST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert transport.value() == written
    assert resource.requests == []
    assert site.malformed_requests == 1
    # A peer that does not let go is aborted, as after a timeout; the head deadline is off.
    clock.advance(channel.abortTimeout)
    assert transport.disconnected
    assert transport.value() == written and site.head_timeouts == 0


_BAD_HEADS = [
    (b"POST /v1/messages HTTP/9.9\r\nHost: x\r\n\r\n", 400, "anthropic", "request line"),
    (b"POST  /v1/messages HTTP/1.1\r\nHost: x\r\n\r\n", 400, "openai", "request line"),
    (b"POST /v1/messages HTTP/1.1 x\r\nHost: x\r\n\r\n", 400, "anthropic", "request line"),
    (b"P@ST /v1/messages HTTP/1.1\r\nHost: x\r\n\r\n", 400, "anthropic", "request line"),
    (b"POST /v1/messages/caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "anthropic", "request line"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost x\r\n\r\n", 400, "openai", "header line"),
    (b"POST /v1/messages HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, "anthropic", "header line"),
    (b"POST /v1/messages HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400, "anthropic", "header line"),
    (b"POST /v1/messages HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
     + b"\r\n", 431, "anthropic", "larger than 16384 bytes"),
    (b"POST /v1/responses HTTP/1.1\r\n" + b"".join(b"X%d: v\r\n" % i for i in range(501)) + b"\r\n",
     431, "openai", "more than 500 headers"),
]


@pytest.mark.parametrize(("head", "code", "dialect", "named"), _BAD_HEADS, ids=[n + str(i) for i, (_, _, _, n) in enumerate(_BAD_HEADS)])
def test_a_head_twisted_would_refuse_bare_is_refused_in_the_clients_dialect(head, code, dialect, named):
    """
    A malformed request line or header line, or a head over Twisted's
    limits: Twisted alone wrote a bare '400 Bad Request' with no body.  Now
    JSON in the client's dialect (from the path, when there is one), with
    Connection: close, the connection closed, nothing reaching the resource.
    """
    resource = Recording()
    site, _ = _site(resource)
    channel, transport = _connect(site)
    channel.dataReceived(head)
    status, headers, body = _response(transport)
    assert status.startswith(b"HTTP/1.1 %d " % code)
    assert headers[b"content-type"] == b"application/json" and headers[b"connection"] == b"close"
    if dialect == "anthropic":
        _assert_anthropic_error(body, "invalid_request_error")
    else:
        _assert_openai_error(body, "invalid_request_error")
    assert named in body["error"]["message"]
    assert transport.disconnecting and resource.requests == []


def test_one_blank_line_before_a_request_is_still_tolerated():
    """A client's stray CRLF before its request line (as Twisted allows once) is not a malformed request line."""
    site, _ = _site()
    channel, transport = _connect(site)
    channel.dataReceived(b"\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    transport.clear()
    # The next request on the connection is checked from its own first line.
    channel.dataReceived(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    transport.clear()
    channel.dataReceived(b"GET /v1/models HTTP/7.0\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")


class TCPLikeTransport(StringTransport):
    """Lets go of its producer twice without complaint, as a TCP transport does."""

    def unregisterProducer(self):
        self.producer = None


def test_a_refused_connection_that_also_times_out_leaves_no_call_behind():
    """
    An idle timeout shorter than abortTimeout fires after a refusal: one
    abort is armed however many ways the connection is closed, and
    connectionLost cancels it.
    """
    site, clock = _site(Recording(), idle_timeout_secs=5)
    address = IPv4Address("TCP", "10.0.0.1", 40000)
    channel = site.buildProtocol(address)
    channel.makeConnection(TCPLikeTransport(peerAddress=address))
    channel.dataReceived(b"POST /v1/messages HTTP/1.1\r\nContent-Length: -5\r\n\r\n")
    clock.advance(6)
    channel.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_a_malformed_content_length_dialect_falls_back_to_the_headers():
    """On a path that names no dialect, the headers received before the bad one decide it (anthropic-version)."""
    site, _ = _site(Recording())
    channel, transport = _connect(site)
    channel.dataReceived(
        b"POST /v1/embeddings HTTP/1.1\r\nanthropic-version: 2023-06-01\r\nContent-Length: -5\r\n\r\n"
    )
    _status, _headers, body = _response(transport)
    _assert_anthropic_error(body, "invalid_request_error")
    channel, transport = _connect(site, port=40001)
    channel.dataReceived(b"POST /v1/embeddings HTTP/1.1\r\nContent-Length: -5\r\n\r\n")
    _status, _headers, body = _response(transport)
    _assert_openai_error(body, "invalid_request_error")
    assert body["error"]["code"] == "invalid_content_length"


def test_well_formed_framing_headers_are_served():
    """The control cases: any capitalisation, 'identity' coding, and a header merely starting like them."""
    site, _ = _site(Echo())
    for head in (
        b"content-length: 2",
        b"CONTENT-LENGTH:2",
        b"Transfer-Encoding: identity\r\nContent-Length: 2",
        b"Content-Type: application/json\r\nContent-Lengthy: x\r\nContent-Length: 2",
    ):
        channel, transport = _connect(site)
        channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\n{}")
        assert transport.value().startswith(b"HTTP/1.1 200 "), head
        assert transport.value().endswith(b"BytesIO:{}")
        assert not _closing(transport)
    assert site.malformed_requests == 0


def test_a_header_line_over_twisteds_line_limit_is_a_400_not_a_silent_close():
    """Twisted closed the connection without a word on a line past 16 KB; now a 400 JSON in dialect."""
    site, _ = _site(Recording())
    channel, transport = _connect(site)
    channel.dataReceived(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    status, headers, body = _response(transport)
    assert status == b"HTTP/1.1 400 Bad Request" and headers[b"connection"] == b"close"
    _assert_anthropic_error(body, "invalid_request_error")
    assert "16384" in body["error"]["message"]
    assert transport.disconnecting


def _oversized_head(path: bytes, length: int, extra: bytes = b"") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"Content-Length: %d\r\n\r\n" % length


@pytest.mark.parametrize(("path", "dialect"), [
    (b"/v1/messages", "anthropic"),
    (b"/v1/chat/completions", "openai"),
    (b"/v1/responses", "openai"),
])
def test_a_declared_body_over_the_limit_is_a_413_as_soon_as_the_head_is_complete(path, dialect):
    """
    Content-Length over max_request_body_bytes: the 413 is written when the
    head ends (it used to wait for the whole body), in the path's dialect,
    with the route's message, Connection: close and the connection closed.
    No 100-continue invites the body; none of it is stored; the resource is
    never called.
    """
    resource = Recording()
    site, _ = _site(resource, max_request_body_bytes=1000)
    channel, transport = _connect(site)
    channel.dataReceived(_oversized_head(path, 1001, b"Expect: 100-continue\r\n"))
    status, headers, body = _response(transport)
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert headers[b"content-type"] == b"application/json" and headers[b"connection"] == b"close"
    message = "request body exceeds the 1000-byte limit"
    if dialect == "anthropic":
        _assert_anthropic_error(body, "request_too_large")
    else:
        _assert_openai_error(body, "invalid_request_error")
        assert body["error"]["code"] is None
    assert body["error"]["message"] == message
    assert b"100 Continue" not in transport.value()
    assert transport.disconnecting
    [request] = channel.requests
    assert request.content is None
    # The body that follows is neither read into the request nor answered.
    written = transport.value()
    channel.dataReceived(b"x" * 1001)
    assert transport.value() == written and request.content is None
    assert resource.requests == [] and site.oversized_requests == 1


def test_the_early_413_does_not_wait_for_body_bytes_sent_with_the_head():
    """Head and the first body bytes in one segment: still the 413 at once, the bytes dropped."""
    resource = Recording()
    site, _ = _site(resource, max_request_body_bytes=10)
    channel, transport = _connect(site)
    channel.dataReceived(_oversized_head(b"/v1/messages", 100) + b"y" * 50)
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert b"yyy" not in transport.value()
    assert channel.requests[0].content is None and resource.requests == []


def test_a_body_at_the_limit_is_served_and_the_connection_kept():
    """The control case: Content-Length equal to the limit reaches the resource."""
    site, _ = _site(Echo(), max_request_body_bytes=10)
    channel, transport = _connect(site)
    channel.dataReceived(_oversized_head(b"/echo", 10) + b"z" * 10)
    assert transport.value().startswith(b"HTTP/1.1 200 ") and transport.value().endswith(b"z" * 10)
    assert not _closing(transport) and site.oversized_requests == 0


def test_a_chunked_body_is_a_413_the_moment_it_passes_the_limit():
    """
    Without Content-Length, GatewayRequest counts the body: within the limit
    it is kept; the chunk that passes it gets the 413 (path's dialect)
    at once, what was kept is dropped, the connection closes, and the
    request never reaches the resource, though its last chunk came in the
    same bytes.  Before, the whole upload was read, then the route answered.
    """
    resource = Recording()
    site, _ = _site(resource, max_request_body_bytes=10)
    channel, transport = _connect(site)
    channel.dataReceived(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    channel.dataReceived(b"8\r\n" + b"a" * 8 + b"\r\n")
    [request] = channel.requests
    assert not request.body_too_large and request.content.getvalue() == b"a" * 8
    assert transport.value() == b""
    channel.dataReceived(b"8\r\n" + b"b" * 8 + b"\r\n" + b"0\r\n\r\n")
    assert request.body_too_large and request.content.getvalue() == b""
    status, headers, body = _response(transport)
    assert status == b"HTTP/1.1 413 Request Entity Too Large" and headers[b"connection"] == b"close"
    _assert_openai_error(body, "invalid_request_error")
    assert body["error"]["message"] == "request body exceeds the 10-byte limit"
    assert transport.disconnecting
    assert resource.requests == [] and site.oversized_requests == 1


def test_a_chunked_body_within_the_limit_is_served_and_the_next_head_has_its_own_dialect():
    """The control case, and the head kept for a chunked body's dialect is the current request's."""
    site, _ = _site(Echo(), max_request_body_bytes=10)
    channel, transport = _connect(site)
    channel.dataReceived(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 200 ") and transport.value().endswith(b"BytesIO:abcd")
    assert not _closing(transport)
    transport.clear()
    channel.dataReceived(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    channel.dataReceived(b"b\r\n" + b"a" * 11 + b"\r\n")
    _status, _headers, body = _response(transport)
    _assert_openai_error(body, "invalid_request_error")


@pytest.mark.parametrize(
    ("head", "path"),
    [
        (b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\n", "/v1/messages"),
        (b"\r\nPOST /v1/chat/completions HTTP/1.1\r\n", "/v1/chat/completions"),
        (b"GET /v1/responses HTTP/1.1", "/v1/responses"),
        (b"POST /v1/mess", ""),
        (b"POST", ""),
        (b"", ""),
        (None, ""),
        (b"POST /caf\xc3\xa9 HTTP/1.1\r\n", "/caf\xc3\xa9"),
    ],
)
def test_request_line_path(head, path):
    """The path of the request line a head starts with; '' when it is missing or arrived cut short."""
    assert request_line_path(head) == path


def test_refusal_response_is_a_whole_closing_response_with_the_error_body():
    """Status line, JSON content type and length, Connection: close, and the dialect's body (error_body)."""
    from lunaroute.proxy.errors import error_body

    response = refusal_response("openai", 413, "too big")
    assert response == (
        b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(error_body("openai", 413, "too big"))
        + error_body("openai", 413, "too big")
    )
