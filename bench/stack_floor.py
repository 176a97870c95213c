"""
The least a proxy on LunaRoute's fixed stack does per request: the floor
under the hot path's CPU target.

A C{twisted.web} server (the same C{Site} class LunaRoute's proxy is built on)
whose one resource forwards every request to the upstream with
C{twisted.web.client.Agent} over a persistent C{HTTPConnectionPool}, copies
the status and headers back and streams the body through as it arrives.  No
parsing, statistics, metrics, guard, routing or recording: what is left is the
cost of the stack the brief fixes (twisted.web's server, Agent and its pool,
Deferreds, the reactor and the sockets).

C{bench/hot_path_cpu.py --configs floor,default} runs it in the same harness as
the gateway (same client, same upstream, same CPU accounting), so that
LunaRoute's own share of the CPU per request is the difference.

It is a benchmark fixture, not a product: it forwards every header but the
hop-by-hop ones and does no error handling beyond answering 502.  It takes the
three shortcuts LunaRoute takes too, so that the floor is not flattered by waste
the gateway does not have: no access log line per request, no form
parsing of POST bodies (C{parsePOSTFormSubmission=False}), and one client
endpoint per origin (C{Agent.usingEndpointFactory}; a plain C{Agent} builds
one per request, IDNA-checking the host each time).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.internet.endpoints import HostnameEndpoint
from twisted.web import resource, server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

# The same trivial body producer the gateway uses (no LunaRoute logic in it).
from lunaroute.providers.http import BytesProducer

_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host", b"te", b"trailer",
        b"upgrade", b"proxy-connection"}


class _Relay(protocol.Protocol):
    def __init__(self, request: server.Request) -> None:
        self.request = request

    def dataReceived(self, data: bytes) -> None:
        self.request.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.request.finish()


class _Forward(resource.Resource):
    isLeaf = True

    def __init__(self, agent: Agent, origin: bytes) -> None:
        super().__init__()
        self.agent = agent
        self.origin = origin

    def render(self, request: server.Request) -> Any:
        assert request.content is not None
        body = request.content.read()
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in _HOP:
                headers.setRawHeaders(name, values)
        assert request.method is not None and request.uri is not None
        d = self.agent.request(request.method, self.origin + request.uri, headers, BytesProducer(body))

        def respond(response: Any) -> None:
            request.setResponseCode(response.code)
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() not in _HOP:
                    request.responseHeaders.setRawHeaders(name, values)
            response.deliverBody(_Relay(request))

        def failed(_failure: Any) -> None:
            request.setResponseCode(502)
            request.finish()

        d.addCallbacks(respond, failed)
        return server.NOT_DONE_YET


class _OneEndpointPerOrigin:
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.endpoints: dict[Any, Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.host, uri.port)
        if key not in self.endpoints:
            self.endpoints[key] = HostnameEndpoint(self.reactor, uri.host, uri.port)
        return self.endpoints[key]


class _QuietSite(server.Site):
    def log(self, request: Any) -> None:
        pass


class FloorService:
    """Shaped like the gateway service as C{hot_path_cpu.py} uses it."""

    recorder = None

    def __init__(self, reactor: Any, upstream: str) -> None:
        self.reactor = reactor
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 32
        agent = Agent.usingEndpointFactory(reactor, _OneEndpointPerOrigin(reactor), pool=pool)
        self.site = _QuietSite(_Forward(agent, upstream.encode("ascii")), parsePOSTFormSubmission=False)
        self.site.displayTracebacks = False
        self._port: Any = None

    def startService(self) -> None:
        self._port = self.reactor.listenTCP(0, self.site, interface="127.0.0.1")

    def stopService(self) -> Any:
        return self._port.stopListening()

    async def listening_port(self) -> Any:
        return self._port


def main(argv: list[str] | None = None) -> int:
    """C{python bench/stack_floor.py --port N --upstream http://127.0.0.1:M} (a reference target of run.py)."""
    import argparse

    from twisted.internet import reactor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args(argv)
    service = FloorService(reactor, args.upstream)
    service.site.noisy = False
    reactor.listenTCP(args.port, service.site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
