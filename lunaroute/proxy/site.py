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

L{ListenerService} listens on an endpoint and turns a failure to listen (a
taken port, an address not on this machine) into one readable line and
exit status 1 instead of a traceback.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.interfaces import IAddress, IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

from lunaroute.logs import log_observer
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


class GatewayChannel(HTTPChannel):
    """
    An L{HTTPChannel} whose request heads must arrive within
    C{site.header_timeout_secs}: counted from the connection opening for the
    first request, and from the first byte of each later request on a
    kept-alive connection (so an idle keep-alive connection is left to the
    idle timeout).  A late head gets a 408 and the connection is closed.
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

    def dataReceived(self, data: bytes) -> None:
        if self._awaiting_head and self._head_deadline is None:
            self._arm_head_deadline()
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._awaiting_head = False
        self._cancel_head_deadline()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        # Set before the base class replays pipelined bytes, which may
        # complete the next head at once.
        self._awaiting_head = True
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
        transport: Any = self.transport
        if self.abortTimeout is not None and transport is not None:
            self._abort_call = self.callLater(self.abortTimeout, transport.abortConnection)
        self.loseConnection()


class QuietSite(Site):
    """
    The gateway's site: no per-request access log (the request log is ours,
    and an access line per streamed request is noise on the hot path), the
    body limit of L{GatewayRequest}, and the connection limits above.

    @ivar head_timeouts: connections closed because their request head was
        late.
    @ivar refused_connections: connections closed on accept because their
        client already had C{max_connections_per_client} open.
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
