"""An in-memory L{IProvider}, response and body transport for tests and benchmarks of the send and relay steps."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from zope.interface import implementer

from lunaroute.interfaces import IProvider

__all__ = ["CannedProvider", "CannedResponse", "UpstreamTransport"]


class UpstreamTransport:
    """
    The transport a relay gets for the provider's body (set C{protocol}
    before use); remembers being stopped, and ends the body as Twisted
    does when its connection is aborted.
    """

    def __init__(self) -> None:
        self.stopped = False
        self.protocol: Any = None

    def stopProducing(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.protocol.connectionLost(Failure(ResponseFailed([Failure(error.ConnectionAborted())])))

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


class _SteadyTransport:
    """The body transport of a L{CannedResponse}: never paused, never stopped early."""

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


class CannedResponse:
    """
    An C{IResponse} stand-in whose body is C{reads}, delivered at once (one
    C{dataReceived} per item, as network reads would come) and then ended
    with C{ResponseDone}, as Agent ends a whole body.
    """

    def __init__(self, code: int, headers: Headers, reads: list[bytes], phrase: bytes = b"OK") -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = None
        self.reads = reads

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(_SteadyTransport())
        for data in self.reads:
            protocol.dataReceived(data)
        protocol.connectionLost(Failure(ResponseDone()))


@implementer(IProvider)
class CannedProvider:
    """
    A provider built from its settings that answers every request with the
    same C{response} object (an C{IResponse} stand-in) and records each
    call's path, query, headers and body in C{calls}.
    """

    def __init__(self, settings: Any, response: Any) -> None:
        self.settings = settings
        self.name = settings.name
        self.provider_type = settings.provider_type
        self.has_server_key = bool(settings.api_key)
        self.response = response
        self.pool = None
        self.calls: list[dict[str, Any]] = []

    def request(self, method: bytes, path: str, query: bytes, headers: Headers, body: bytes) -> Any:
        self.calls.append({"path": path, "query": query, "headers": headers, "body": body})
        return defer.succeed(self.response)

    def note_in_flight(self, count: int) -> None:
        pass

    def probe(self) -> Any:
        return defer.succeed(None)

    def close(self) -> Any:
        return defer.succeed(None)
