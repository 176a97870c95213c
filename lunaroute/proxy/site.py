"""
The client-facing HTTP site and its listener.

Every open connection costs the gateway a file descriptor, and Twisted's
HTTP server on its own lets a client hold one forever: its idle timeout is
reset by every byte, so a request head sent one byte a second ("slowloris")
never times out, and nothing limits how many connections one client opens.
Here the site adds three limits, all on the injected reactor's clock:

 - a deadline for the request head (request line and headers);
 - an idle timeout between requests on a kept-alive connection (Twisted's
   own, via C{Site(timeout=...)}; it is suspended while a request is being
   answered, so long streams are not cut);
 - a cap on concurrent connections per client IP address.

It also answers, in the client's dialect, requests that never reach a
route: a malformed head (a request line or header line Twisted would refuse,
a body framing that is malformed: a C{Content-Length} that is not a number,
two of them, one beside C{Transfer-Encoding: chunked}, an unknown transfer
coding, a line past Twisted's line limit) gets a 400 and a head past
Twisted's size or header-count limits a 431, where Twisted alone writes a
bare C{400 Bad Request} with no body (or, for a long line, just closes); and
a C{Content-Length} over
C{http_server.max_request_body_bytes} gets its 413 as soon as the head is
complete, before a byte of the body is read.  Both close the connection:
after a bad head the framing of what follows is unknown, and closing is what
stops an oversized upload.  A chunked body (no C{Content-Length}) gets the
same 413 the moment it passes the limit.

L{ListenerService} listens on an endpoint and turns a failure to listen (a
taken port, an address not on this machine) into one readable line and
exit status 1 instead of a traceback.
"""

from __future__ import annotations

import re
import socket
import sys
from collections import Counter
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import IAddress, IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

from lunaroute.logs import log_observer
from lunaroute.proxy.errors import body_limit_message, error_body, listener_for_path
from lunaroute.proxy.headers import header_reader
from lunaroute.proxy.request import DEFAULT_MAX_BODY, GatewayRequest

log = Logger(observer=log_observer)

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 256

# How often (seconds) a refusal for one client address is logged.
REFUSAL_LOG_INTERVAL = 60.0

REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


_CLEAN_CLOSE = Failure(ConnectionDone())

# First bytes of the header names Content-Length and Transfer-Encoding.
_FRAMING_INITIALS = frozenset(b"cCtT")

# A request head's limits (Twisted's defaults): its bytes, without line ends,
# and its number of headers.  Past them: a 431 in the client's dialect.
HEAD_MAX_BYTES = 16384
HEAD_MAX_HEADERS = 500

# Reason phrases Twisted's table lacks.
_PHRASES = {431: b"Request Header Fields Too Large"}

# What Twisted accepts (RFC 9110/9112, and Twisted's own limits): a request
# line of a token method, a target of printable bytes up to 0xb0 and HTTP/1.0
# or 1.1; a header line of a token name, a colon, and a value without NUL,
# CR or LF.  Checked here first, in one C call each, so that what Twisted
# would refuse with a bare 400 (no body) is refused in the client's dialect.
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE = re.compile(_TCHAR + rb"+ [\x21-\xb0]+ HTTP/1\.[01]")
_HEADER_LINE = re.compile(_TCHAR + rb"+:[^\x00\r\n]*")

# Longest piece of a hostile header value quoted back in an error message.
_QUOTED_VALUE_CHARS = 64


def refusal_response(listener: str, status: int, message: str, code: str | None = None) -> bytes:
    """
    A whole response for a request refused before any route runs: the JSON
    error body of the client's dialect (L{error_body}, as a route writes it)
    and C{Connection: close}, since the connection is closed after it.
    """
    body = error_body(listener, status, message, code)
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % (status, RESPONSES.get(status) or _PHRASES.get(status, b"Error"), len(body))
    )
    return head + body


def request_line_path(head: bytes | None) -> str:
    """
    The path of the request line that starts C{head}
    (C{b"POST /v1/messages?beta=true HTTP/1.1\\r\\n..."}: C{"/v1/messages"}),
    or C{""} when there is none (or only part of it); for choosing the
    dialect of an error only, so any bytes are accepted.
    """
    if not head:
        return ""
    head = head.lstrip(b"\r\n")
    end = head.find(b"\r\n")
    parts = (head if end < 0 else head[:end]).split(b" ", 2)
    if end < 0 and len(parts) < 3:
        # The request line arrived in pieces: its path may be cut short.
        return ""
    if len(parts) < 2:
        return ""
    return parts[1].partition(b"?")[0].decode("latin-1")


def _no_header(name: str) -> str | None:
    return None


def _quoted(value: bytes) -> str:
    text = value[:_QUOTED_VALUE_CHARS].decode("latin-1")
    return repr(text + "..." if len(value) > _QUOTED_VALUE_CHARS else text)


class GatewayChannel(HTTPChannel):
    """
    An L{HTTPChannel} whose request heads must arrive within
    C{site.header_timeout_secs}: counted from the connection opening for the
    first request, and from the first byte of each later request on a
    kept-alive connection (so an idle keep-alive connection is left to the
    idle timeout).  A late head gets a 408 and the connection is closed.

    A head that frames its body badly gets a 400, and one whose
    C{Content-Length} is over C{site.max_request_body_bytes} a 413, in the
    client's dialect, and the connection is closed (see the module
    docstring).  The dialect comes from the request line's path, as for a
    route, or else from the headers received so far
    (L{listener_for_path}).
    """

    site: QuietSite
    client_host: str | None = None
    _head_deadline: Any = None
    _awaiting_head = True

    _host: IAddress | None = None

    def getHost(self) -> IAddress:
        """
        This connection's local address, asked of the socket once: Twisted's
        request asks on every request (a C{getsockname} system call each),
        and it cannot change while the connection lives.
        """
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.client_connected(self.client_host)
        self._awaiting_head = True
        self._arm_head_deadline()

    # The first bytes received of the current request head, kept (not
    # parsed, not copied) until the head is complete: only a refusal reads
    # the request line's path from them, to choose the dialect.
    _head_start: bytes | None = None
    # Whether the current head has declared its body's length
    # (Content-Length, or Transfer-Encoding: chunked).
    _body_framed = False
    # A request was refused and the connection is closing: what the client
    # still sends is not HTTP this channel can frame, and is not parsed.
    _refused = False
    # Bytes and headers of the current head so far (see headerReceived).
    _head_bytes = 0
    _head_headers = 0

    # The head limits are this class's own (HEAD_MAX_BYTES, HEAD_MAX_HEADERS,
    # Twisted's values), checked in headerReceived so that an oversized head
    # is refused in the client's dialect; Twisted's own checks, which would
    # answer a bare 400 first, are set out of the way.
    totalHeadersSize = sys.maxsize
    maxHeaders = sys.maxsize

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_head:
            if self._head_deadline is None:
                self._arm_head_deadline()
            if self._head_start is None:
                self._head_start = data
                if not self._request_line_ok(data):
                    return
        HTTPChannel.dataReceived(self, data)

    def _request_line_ok(self, data: bytes) -> bool:
        """
        Check the request line at the start of C{data} (the first bytes of a
        head) as Twisted will (L{_REQUEST_LINE}), and refuse it in the
        client's dialect if Twisted would refuse it with a bare 400.  Once
        per request; a line not complete in these bytes, or a request
        pipelined behind another, is left to Twisted.
        """
        start = 2 if data.startswith(b"\r\n") else 0  # one stray CRLF is allowed
        end = data.find(b"\r\n", start)
        if end < 0 or not self.persistent:
            return True
        self._head_bytes = end - start
        if _REQUEST_LINE.fullmatch(data, start, end) is not None:
            return True
        self._refuse(
            400,
            "malformed request line: expected METHOD /path HTTP/1.1 (printable ASCII, one space apart)",
            "invalid_request_line",
        )
        return False

    def headerReceived(self, line: bytes) -> bool:
        """
        Refuse a malformed header line, one header too many, or a malformed
        C{Content-Length} or C{Transfer-Encoding}, in the client's dialect,
        before Twisted refuses it with a bare 400.  Beyond the one regular
        expression, every other header costs one set look-up of its first
        byte (Twisted never passes an empty line): this runs for every
        header of every request.
        A header name is a token, so Twisted's C{Content-Length} is exactly
        these 14 bytes before a colon.
        """
        if _HEADER_LINE.fullmatch(line) is None:
            self._refuse(
                400,
                "malformed header line: expected Name: value (a token name, no NUL, CR or LF)",
                "invalid_header",
            )
            return False
        self._head_headers += 1
        self._head_bytes += len(line)
        if self._head_headers > HEAD_MAX_HEADERS:
            self._refuse(431, f"the request has more than {HEAD_MAX_HEADERS} headers", "header_too_large")
            return False
        if self._head_bytes > HEAD_MAX_BYTES:
            self._refuse(431, f"the request head is larger than {HEAD_MAX_BYTES} bytes", "header_too_large")
            return False
        if line[0] in _FRAMING_INITIALS and (
            (line[14:15] == b":" and line[:14].lower() == b"content-length")
            or (line[17:18] == b":" and line[:17].lower() == b"transfer-encoding")
        ):
            refusal = self._framing_error(line)
            if refusal is not None:
                self._refuse(400, refusal[0], refusal[1])
                return False
        ok: bool = HTTPChannel.headerReceived(self, line)
        return ok

    def _framing_error(self, line: bytes) -> tuple[str, str] | None:
        """
        Why a C{Content-Length} or C{Transfer-Encoding} header C{line} is
        refused (the message and the OpenAI error code), or C{None}: the
        same cases Twisted refuses.
        """
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        if len(name) == 14:
            if not value.isdigit():
                return (
                    f"invalid Content-Length header {_quoted(value)}: it must be a number of bytes",
                    "invalid_content_length",
                )
        else:
            coding = value.lower()
            if coding == b"identity":
                return None
            if coding != b"chunked":
                return (
                    f"unsupported Transfer-Encoding {_quoted(value)}: only chunked is accepted",
                    "invalid_transfer_encoding",
                )
        if self._body_framed:
            return (
                "the request declares the length of its body more than once (Content-Length, "
                "Transfer-Encoding: chunked); send exactly one of them",
                "conflicting_body_length",
            )
        self._body_framed = True
        return None

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request line or header line past C{MAX_LENGTH}: a 400 (Twisted just closes)."""
        self._refuse(
            400,
            f"a request line or header line is longer than {self.MAX_LENGTH} bytes",
            "header_too_large",
        )

    def allHeadersReceived(self) -> None:
        self._awaiting_head = False
        self._cancel_head_deadline()
        self._body_framed = False
        self._head_bytes = self._head_headers = 0
        length = self.length
        if length is not None:
            if length > self.site.max_request_body_bytes:
                # Refused before the body: Twisted's allHeadersReceived would
                # hand the length to the request and may answer 100-continue.
                self._refuse_oversized()
                return
            self._head_start = None
        # else a chunked body: _head_start is kept (until requestDone) for
        # the dialect of a 413 if the body passes the limit (body_over_limit).
        super().allHeadersReceived()

    def body_over_limit(self, request: Any) -> None:
        """
        The body of C{request}, which had no C{Content-Length} (chunked), has
        just passed C{site.max_request_body_bytes} (L{GatewayRequest} counts
        it): answer the 413 now and close, instead of reading the rest of
        the upload.  The request is never handed to a route, even if its
        last chunk is among the bytes being parsed.
        """
        self._refuse_oversized()

    def requestDone(self, request: Any) -> None:
        # Set before the base class replays pipelined bytes, which may
        # complete the next head at once.
        self._awaiting_head = True
        self._head_start = None
        super().requestDone(request)

    _abort_call: Any = None

    def connectionLost(self, reason: Failure = _CLEAN_CLOSE) -> None:
        self._cancel_head_deadline()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        self.site.client_disconnected(self.client_host)
        super().connectionLost(reason)

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.callLater(self.site.header_timeout_secs, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            if self._head_deadline.active():
                self._head_deadline.cancel()
            self._head_deadline = None

    def _refuse_oversized(self) -> None:
        site = self.site
        site.oversized_requests += 1
        log.debug(
            "refused a request from {client}: its body is over "
            "http_server.max_request_body_bytes",
            client=self.client_host,
        )
        self._refuse(413, body_limit_message(site.max_request_body_bytes), None)

    def _refuse(self, status: int, message: str, code: str | None) -> None:
        """
        Answer the current request with C{status} and C{message} in its
        dialect (chosen from its path and the headers received so far, as a
        route would), then close the connection and ignore what the client
        still sends.
        """
        self._cancel_head_deadline()
        if status in (400, 431):
            self.site.malformed_requests += 1
            log.debug(
                "refused a malformed request head from {client}: {message}",
                client=self.client_host,
                message=message,
            )
        # While a head or a body is read, the last request is the current one.
        header = header_reader(self.requests[-1].requestHeaders) if self.requests else _no_header
        listener = listener_for_path(request_line_path(self._head_start), header)
        self._head_start = None
        if self.transport is not None:
            self.transport.write(refusal_response(listener, status, message, code))
        # The rest of the connection is not HTTP we can frame: nothing more
        # of it is parsed (a real transport also stops reading on close).
        self._refused = True
        self._close()

    def _close(self) -> None:
        """
        Close after what is buffered is written, as Twisted does, and abort
        if the peer has not let go within C{abortTimeout}.
        """
        transport: Any = self.transport
        if self.abortTimeout is not None and transport is not None and self._abort_call is None:
            self._abort_call = self.callLater(self.abortTimeout, transport.abortConnection)
        self.loseConnection()

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        self.site.head_timeouts += 1
        log.debug(
            "closed a connection from {client}: no complete request head within {secs:g}s",
            client=self.client_host,
            secs=self.site.header_timeout_secs,
        )
        if self.transport is not None:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.timeoutConnection()

    def timeoutConnection(self) -> None:
        """
        Close a timed-out connection (idle, or late head): as Twisted does,
        close after what is buffered is written and abort if the peer has not
        let go within C{abortTimeout}; but logged at debug level, since every
        idle keep-alive connection ends this way.
        """
        log.debug("closing a timed-out connection from {client}", client=self.client_host)
        self._close()


class QuietSite(Site):
    """
    The gateway's site: no per-request access log (the request log is ours,
    and an access line per streamed request is noise on the hot path), the
    body limit of L{GatewayRequest}, and the connection limits above.

    @ivar head_timeouts: connections closed because their request head was
        late.
    @ivar refused_connections: connections closed on accept because their
        client already had C{max_connections_per_client} open.
    @ivar malformed_requests: connections closed with a 400 or 431 because
        their request head was malformed (request line, header line, body
        framing, a line too long) or over the head limits.
    @ivar oversized_requests: connections closed with a 413 because their
        C{Content-Length}, or their chunked body so far, was over
        C{max_request_body_bytes}.
    """

    noisy = False
    protocol = GatewayChannel  # type: ignore[assignment]
    requestFactory = GatewayRequest

    def __init__(
        self,
        resource: IResource,
        *,
        max_request_body_bytes: int = DEFAULT_MAX_BODY,
        header_timeout_secs: float = DEFAULT_HEADER_TIMEOUT,
        idle_timeout_secs: float = DEFAULT_IDLE_TIMEOUT,
        max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, timeout=idle_timeout_secs, **kwargs)
        self.max_request_body_bytes = max_request_body_bytes
        self.header_timeout_secs = header_timeout_secs
        self.max_connections_per_client = max_connections_per_client
        self.connections_per_client: Counter[str] = Counter()
        self.head_timeouts = 0
        self.refused_connections = 0
        self.malformed_requests = 0
        self.oversized_requests = 0
        self._last_refusal_logged: dict[str, float] = {}

    def log(self, request: Any) -> None:
        pass

    def buildProtocol(self, addr: IAddress | None) -> Any:
        host = getattr(addr, "host", None)
        cap = self.max_connections_per_client
        if cap and host is not None and self.connections_per_client[host] >= cap:
            # Returning None makes the listening port close the socket at once.
            self.refused_connections += 1
            self._log_refusal(host)
            return None
        channel = super().buildProtocol(addr)
        channel.client_host = host
        return channel

    def client_connected(self, host: str | None) -> None:
        """Count an accepted connection from C{host} (C{None}: not an IP client)."""
        if host is not None:
            self.connections_per_client[host] += 1

    def client_disconnected(self, host: str | None) -> None:
        """Forget a closed connection from C{host}."""
        if host is None:
            return
        self.connections_per_client[host] -= 1
        if self.connections_per_client[host] <= 0:
            del self.connections_per_client[host]
            self._last_refusal_logged.pop(host, None)

    def _log_refusal(self, host: str) -> None:
        now = self.reactor.seconds()
        last = self._last_refusal_logged.get(host)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            return
        self._last_refusal_logged[host] = now
        log.warn(
            "refusing connections from {client}: it already has {cap} open "
            "(http_server.max_connections_per_client)",
            client=host,
            cap=self.max_connections_per_client,
        )


def gateway_site(resource: IResource, http_server: Any, reactor: Any) -> QuietSite:
    """
    The site for the proxy, configured from C{settings.http_server} (an
    L{lunaroute.config.HttpServerSettings}).
    """
    # Bodies are forwarded as bytes: Twisted's form decoding of POSTs
    # (content-type parsing on every request, multipart splitting of uploads)
    # would be wasted work.
    return QuietSite(
        resource,
        reactor=reactor,
        parsePOSTFormSubmission=False,
        max_request_body_bytes=http_server.max_request_body_bytes,
        header_timeout_secs=http_server.header_timeout_secs,
        idle_timeout_secs=http_server.idle_timeout_secs,
        max_connections_per_client=http_server.max_connections_per_client,
    )


def cannot_listen(host: str, port: int) -> str | None:
    """
    Why a TCP listener on C{host}:C{port} would fail right now (the OS's
    words), or C{None}.  Binds and closes a socket the way Twisted's TCP port
    does (C{SO_REUSEADDR}, IPv6 for an address with a colon), so start-up can
    report a taken port or a foreign address in one line before twistd runs.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except (OSError, UnicodeError, OverflowError) as exc:
            return cannot_listen_reason(exc)
    return None


def cannot_listen_reason(error: BaseException) -> str:
    """The OS's words for why listening failed ("Address already in use")."""
    cause = getattr(error, "socketError", None) or error
    text = getattr(cause, "strerror", None) or str(cause)
    return text.rstrip(".")


class ListenerService(Service):
    """
    Listens on C{endpoint} with C{factory} while running.

    When the endpoint fails at once (as TCP does for a taken port or an
    address not on this machine), start-up ends with one log line naming
    C{address} and the reason, and C{SystemExit(1)}: twistd then exits with
    status 1, without its traceback.  A failure reported later is logged in
    one line and stops the reactor.
    """

    def __init__(
        self, endpoint: IStreamServerEndpoint, factory: Any, address: str, reactor: Any = None
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.address = address
        self.reactor = reactor
        self._listening: defer.Deferred[IListeningPort] | None = None
        self._port: IListeningPort | None = None
        self._waiters: list[defer.Deferred[IListeningPort]] = []

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        starting = True
        failed: list[Failure] = []

        def listening(port: IListeningPort) -> None:
            self._port = port
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(port)

        def failure(reason: Failure) -> None:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.errback(reason)
            if starting:
                failed.append(reason)
                return
            log.error("{line}", line=self.failure_line(reason.value))
            reactor = self.reactor
            if reactor is None:
                from twisted.internet import reactor
            if getattr(reactor, "running", False):
                reactor.stop()

        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(listening, failure)
        starting = False
        if failed:
            log.error("{line}", line=self.failure_line(failed[0].value))
            raise SystemExit(1)

    def failure_line(self, error: BaseException | None) -> str:
        """The one line shown when listening failed."""
        if isinstance(error, CannotListenError):
            return f"lunaroute: cannot listen on {self.address}: {cannot_listen_reason(error)}"
        return f"lunaroute: cannot listen on {self.address}: {error}"

    def listening_port(self) -> defer.Deferred[IListeningPort]:
        """A Deferred firing with the L{IListeningPort} once listening."""
        if self._port is not None:
            return defer.succeed(self._port)
        waiter: defer.Deferred[IListeningPort] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        port, self._port, self._listening = self._port, None, None
        if port is None:
            return defer.succeed(None)
        stopped: defer.Deferred[None] = defer.maybeDeferred(port.stopListening)  # type: ignore[call-overload]
        return stopped
