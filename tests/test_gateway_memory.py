"""
The gateway in memory, no sockets: GatewayApp behind its GuardedResource,
driven by C{treq.testing.StubTreq} (or raw HTTP bytes into the site's
protocol) with fake providers that fail however a test chooses and a
L{Clock}.  Whatever fails, the client gets JSON in its dialect and exactly
one finished exchange reaches the sinks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import treq
from treq.testing import StubTreq
from twisted.internet import defer, error
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import RequestNotSent, ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lunaroute.config import settings_from_mapping
from lunaroute.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from lunaroute.exchange import Exchange
from lunaroute.interfaces import IProvider
from lunaroute.providers.health import ReadinessChecker
from lunaroute.providers.http import HTTPProvider
from lunaroute.proxy.access import AccessPolicy, GuardedResource
from lunaroute.proxy.app import GatewayApp
from lunaroute.proxy.request import GatewayRequest
from lunaroute.proxy.site import QuietSite, gateway_site
from lunaroute.testing.providers import UpstreamTransport

ANTHROPIC_BODY = b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
CHAT_BODY = b'{"model":"gpt-x","messages":[{"role":"user","content":"hi"}]}'
TOKEN = "gateway-token-0123456789"


# -- fakes ---------------------------------------------------------------


class FakeResponse:
    """An IResponse whose body is C{chunks}, then C{end} (or left open if C{end} is None)."""

    def __init__(
        self,
        code: int = 200,
        chunks: tuple[bytes, ...] = (b'{"id":"msg_1"}',),
        headers: dict[bytes, list[bytes]] | None = None,
        end: BaseException | None = ResponseDone(),
    ) -> None:
        self.code = code
        self.phrase = b"OK"
        self.version = (b"HTTP", 1, 1)
        self.length = None
        self.headers = Headers(headers or {b"content-type": [b"application/json"]})
        self.chunks = chunks
        self.end = end
        self.transport = UpstreamTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)
        for chunk in self.chunks:
            protocol.dataReceived(chunk)
        if self.end is not None:
            protocol.connectionLost(Failure(self.end))


@implementer(IProvider)
class FakeProvider:
    """
    An IProvider whose C{request} answers with C{outcome}: an exception (a
    failed Deferred), a Deferred, or a response.  Records every call.
    """

    def __init__(self, name: str, provider_type: str, outcome: Any = None, settings: Any = None) -> None:
        self.name = name
        self.provider_type = provider_type
        self.has_server_key = False
        self.outcome = outcome if outcome is not None else FakeResponse()
        self.settings = settings
        self.pool = None  # in memory: no connection pool
        self.calls: list[dict[str, Any]] = []
        self.in_flight_seen: list[int] = []
        self.probes = 0
        self.probe_result: Any = None

    def request(self, method: bytes, path: str, query: bytes, headers: Headers, body: bytes) -> defer.Deferred[Any]:
        self.calls.append({"method": method, "path": path, "query": query, "headers": headers, "body": body})
        outcome = self.outcome
        if isinstance(outcome, defer.Deferred):
            return outcome
        if isinstance(outcome, BaseException):
            return defer.fail(outcome)
        return defer.succeed(outcome)

    def note_in_flight(self, count: int) -> None:
        self.in_flight_seen.append(count)

    def probe(self) -> defer.Deferred[None]:
        self.probes += 1
        if isinstance(self.probe_result, BaseException):
            return defer.fail(self.probe_result)
        return defer.succeed(None)

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)


class Gateway:
    """A GatewayApp with fakes, its guard, a StubTreq and the bookkeeping a test checks."""

    def __init__(self, config: dict[str, Any] | None = None, outcome: Any = None, providers: Any = None) -> None:
        data: dict[str, Any] = {
            "providers": {"anthropic": {"base_url": "http://a.test"}, "openai": {"base_url": "http://o.test/v1"}}
        }
        for key, value in (config or {}).items():
            if key == "providers":
                for name, extra in value.items():
                    data["providers"][name] = {**data["providers"].get(name, {}), **extra}
            else:
                data[key] = value
        self.settings = settings_from_mapping(data, env={})
        self.clock = Clock()
        self.providers = providers or {
            name: FakeProvider(name, name, outcome, self.settings.providers[name]) for name in ("anthropic", "openai")
        }
        self.exchanges: list[Exchange] = []
        self.in_flight = 0
        self.readiness = ReadinessChecker(self.clock)
        self.app = GatewayApp(
            self.settings,
            self.providers,
            self.clock,
            sinks=[self._done, self.exchanges.append],
            start_observers=[self._started],
            metrics_renderer=lambda: (b"# HELP lunaroute_up 1\n", "text/plain; version=0.0.4"),
            readiness=self.readiness,
        )
        self.resource = GuardedResource(self.app.resource(), AccessPolicy(self.settings.http_server))
        self.stub = StubTreq(self.resource)

    def _started(self, exchange: Exchange) -> None:
        self.in_flight += 1

    def _done(self, exchange: Exchange) -> None:
        self.in_flight -= 1

    @property
    def calls(self) -> int:
        return sum(len(p.calls) for p in self.providers.values())

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict[bytes, list[bytes]] | None = None
    ) -> tuple[int, Headers, bytes]:
        """One request through StubTreq, flushed; the status, headers and body."""
        d = self.stub.request(method, "http://gateway.test" + path, data=body, headers=headers or {})
        out: list[Any] = []

        def read(response: Any) -> Any:
            return treq.content(response).addCallback(lambda content: out.append((response.code, response.headers, content)))

        d.addCallback(read)
        d.addErrback(out.append)
        self.stub.flush()
        assert out, "no response"
        if isinstance(out[0], Failure):
            out[0].raiseException()
        return out[0]

    def raw(self, data: bytes) -> RawConnection:
        return RawConnection(QuietSite(self.resource, reactor=self.clock), data)


class RawConnection:
    """Raw HTTP/1.1 bytes fed into the site's protocol over a StringTransport."""

    def __init__(self, site: Any, data: bytes) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(data)

    @property
    def sent(self) -> bytes:
        return self.transport.value()

    def status(self) -> int:
        return int(self.sent.split(b" ", 2)[1])

    def body(self) -> bytes:
        return self.sent.partition(b"\r\n\r\n")[2]

    def close(self) -> None:
        self.protocol.connectionLost(Failure(error.ConnectionDone()))


def _json(body: bytes) -> Any:
    return json.loads(body)


def _is_anthropic_error(body: bytes) -> bool:
    parsed = _json(body)
    return parsed.get("type") == "error" and isinstance(parsed["error"]["message"], str)


def _is_openai_error(body: bytes) -> bool:
    parsed = _json(body)
    return set(parsed) == {"error"} and isinstance(parsed["error"]["message"], str)


def _json_body(raw_body: bytes) -> Any:
    """The JSON of a raw response body, chunked or not."""
    if raw_body.startswith(b"{"):
        return json.loads(raw_body)
    size, _, rest = raw_body.partition(b"\r\n")
    return json.loads(rest[: int(size, 16)])


def test_fake_provider_provides_the_interface() -> None:
    """The fake used here is a real IProvider."""
    assert verifyObject(IProvider, FakeProvider("anthropic", "anthropic"))


# -- every failure in the client's dialect, one exchange ------------------

FAILURES = [
    (RequestNotSent(), 500),
    (RuntimeError("kaboom"), 500),
    (ValueError(), 500),
    (UpstreamTimeout("anthropic sent no response within 600s", provider="x"), 504),
    (UpstreamUnreachable("anthropic unreachable: connection refused", provider="x"), 502),
    (UpstreamError("anthropic request failed: boom", provider="x"), 502),
]


@pytest.mark.parametrize(("failure", "status"), FAILURES, ids=lambda v: type(v).__name__ if not isinstance(v, int) else str(v))
@pytest.mark.parametrize(
    ("path", "body", "is_dialect"),
    [
        ("/v1/messages", ANTHROPIC_BODY, _is_anthropic_error),
        ("/v1/chat/completions", CHAT_BODY, _is_openai_error),
        ("/v1/responses", b'{"model":"gpt-x","input":"hi"}', _is_openai_error),
    ],
    ids=["anthropic", "chat", "responses"],
)
def test_provider_failure_is_json_in_the_client_dialect_with_one_exchange(
    failure: BaseException, status: int, path: str, body: bytes, is_dialect: Any, logged_failures: Any
) -> None:
    """Any provider failure (RequestNotSent, a bug, a timeout...) is a JSON error in the path's dialect, never HTML; one exchange, in-flight back to 0."""
    if status == 500:
        # A provider breaking its contract is a bug: answered, and logged.
        logged_failures.expect(type(failure))
    gateway = Gateway(outcome=failure)
    code, headers, content = gateway.call("POST", path, body, {b"content-type": [b"application/json"]})
    assert code == status
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert b"<html" not in content.lower() and b"Processing Failed" not in content
    assert is_dialect(content)
    assert len(gateway.exchanges) == 1
    exchange = gateway.exchanges[0]
    assert exchange.status == status and exchange.outcome != "ok"
    assert exchange.error and "Failure" not in exchange.error and "<" not in exchange.error
    assert gateway.in_flight == 0
    assert gateway.app.in_flight == {}


def test_request_not_sent_through_the_real_provider_is_a_502_after_retries() -> None:
    """HTTPProvider retries RequestNotSent, then the client gets a 502 Anthropic error and one exchange (outcome unreachable)."""

    class AlwaysNotSent:
        calls = 0

        def request(self, *args: Any) -> defer.Deferred[Any]:
            AlwaysNotSent.calls += 1
            return defer.fail(RequestNotSent())

    gateway = Gateway(config={"providers": {"anthropic": {"http_client": {"max_retries": 2}}}})
    provider = HTTPProvider(gateway.settings.providers["anthropic"], reactor=gateway.clock, agent=AlwaysNotSent())
    gateway.app.providers["anthropic"] = provider
    d = gateway.stub.post("http://gateway.test/v1/messages", data=ANTHROPIC_BODY)
    for _ in range(3):
        gateway.clock.advance(1)
        gateway.stub.flush()
    response = d.result
    content: list[bytes] = []
    treq.content(response).addCallback(content.append)
    gateway.stub.flush()
    assert response.code == 502 and _is_anthropic_error(content[0])
    assert AlwaysNotSent.calls == 3
    [exchange] = gateway.exchanges
    assert exchange.outcome == "unreachable" and exchange.status == 502
    assert gateway.in_flight == 0


def test_success_records_one_ok_exchange() -> None:
    """A plain answer is relayed as sent and recorded once as ok."""
    gateway = Gateway()
    code, _, content = gateway.call("POST", "/v1/messages", ANTHROPIC_BODY)
    assert (code, content) == (200, b'{"id":"msg_1"}')
    assert [e.outcome for e in gateway.exchanges] == ["ok"]
    assert gateway.in_flight == 0


@pytest.mark.parametrize(
    "header", [b"user-agent", b"x-session-id", b"x-api-key", b"x-claude-code-session-id", b"anthropic-version"]
)
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions", "/v1/embeddings", "/nowhere"])
def test_latin1_header_bytes_never_give_an_html_500(header: bytes, path: str) -> None:
    """A latin-1 byte in User-Agent, a session header or the key header: 200 or a JSON error, never HTML."""
    gateway = Gateway()
    body = ANTHROPIC_BODY if "messages" in path else CHAT_BODY
    code, headers, content = gateway.call("POST", path, body, {header: [b"caf\xe9-\xff-\x80"]})
    assert code < 500
    assert b"<html" not in content.lower()
    if code != 200:
        assert headers.getRawHeaders(b"content-type") == [b"application/json"]
        _json(content)
    assert len(gateway.exchanges) == gateway.calls
    assert gateway.in_flight == 0


@pytest.mark.parametrize(
    ("path", "is_dialect"),
    [("/v1/messages", _is_anthropic_error), ("/v1/chat/completions", _is_openai_error)],
)
@pytest.mark.parametrize(
    "body",
    [b"[" * 1000 + b"]" * 1000, b'{"model":"m","messages":' + b"[" * 5000 + b"]" * 5000 + b"}", b"{not json", b"[]"],
    ids=["deep-1000", "deep-5000-inside", "not-json", "array"],
)
def test_bad_bodies_are_a_400_in_dialect_and_nothing_is_sent(path: str, is_dialect: Any, body: bytes) -> None:
    """JSON nested 1000+ deep (RecursionError before) or not a JSON object: 400 JSON in dialect, no provider call."""
    gateway = Gateway()
    code, headers, content = gateway.call("POST", path, body)
    assert code == 400
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert is_dialect(content)
    assert gateway.calls == 0


# -- request targets (raw bytes: StubTreq cannot send these) ---------------


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET 1/steal HTTP/1.1",
        b"POST 1/steal HTTP/1.1",
        b"POST .evil.example/v1/messages HTTP/1.1",
        b"POST @evil/v1/messages HTTP/1.1",
        b"POST //evil.example/v1/messages HTTP/1.1",
        b"POST http://evil.example/v1/messages HTTP/1.1",
        b"GET https://evil.example/v1/models HTTP/1.1",
        b"CONNECT evil.example:443 HTTP/1.1",
        b"POST /v1/messages\\..\\x HTTP/1.1",
        b"POST /v1/%ff%fe HTTP/1.1",
    ],
)
def test_odd_request_targets_are_a_400_json_and_never_forwarded(request_line: bytes) -> None:
    """Relative, '@host', '//host', absolute-form and CONNECT targets get 400 JSON; the provider is never called."""
    gateway = Gateway()
    raw = gateway.raw(
        request_line
        + b"\r\nHost: gateway.test\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(ANTHROPIC_BODY)).encode()
        + b"\r\n\r\n"
        + ANTHROPIC_BODY
    )
    assert raw.status() == 400, raw.sent
    assert b"<html" not in raw.sent.lower()
    parsed = _json_body(raw.body())
    assert "error" in parsed
    assert gateway.calls == 0
    assert gateway.exchanges == []


def test_non_ascii_request_line_is_refused_by_the_http_parser() -> None:
    """A raw non-ASCII target never reaches a route: Twisted's parser answers a bare 400 (no HTML), nothing forwarded."""
    gateway = Gateway()
    raw = gateway.raw(b"POST /v1/caf\xc3\xa9 HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 2\r\n\r\n{}")
    assert raw.status() == 400
    assert b"<html" not in raw.sent.lower()
    assert gateway.calls == 0 and gateway.exchanges == []


@pytest.mark.parametrize(
    ("path", "is_dialect"),
    [("/v1/messages", _is_anthropic_error), ("/v1/chat/completions", _is_openai_error), ("/v1/embeddings", _is_openai_error)],
)
def test_an_oversized_body_gets_the_routes_413_from_the_connection_early(path: str, is_dialect: Any) -> None:
    """
    The 413 the connection sends for a Content-Length over the limit (from
    the head alone) and for a chunked body the moment it passes the limit
    has the very body the route sends when it sees the request after its
    whole body (as behind a plain Twisted channel); none is forwarded or
    recorded, and the connection is closed.
    """
    gateway = Gateway({"http_server": {"max_request_body_bytes": 100}})
    head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: gateway.test\r\ncontent-type: application/json\r\n"
    chunked = head + b"transfer-encoding: chunked\r\n\r\n" + b"c8\r\n" + b"x" * 200 + b"\r\n0\r\n\r\n"
    route_only = Site(gateway.resource, reactor=gateway.clock)
    route_only.requestFactory = GatewayRequest
    route_only.max_request_body_bytes = 100  # type: ignore[attr-defined]
    routed = RawConnection(route_only, chunked)
    assert routed.status() == 413 and not routed.transport.disconnecting
    size, _, chunk = routed.body().partition(b"\r\n")
    route_body = chunk[: int(size, 16)]
    site = gateway_site(gateway.resource, gateway.settings.http_server, gateway.clock)
    for early in (RawConnection(site, head + b"content-length: 200\r\n\r\n"), RawConnection(site, chunked)):
        assert early.status() == 413
        assert early.body() == route_body
        assert is_dialect(early.body())
        assert b"connection: close" in early.sent.lower() and early.transport.disconnecting
    assert gateway.calls == 0 and gateway.exchanges == []


def test_origin_form_raw_request_is_forwarded_with_its_query() -> None:
    """The control case: 'POST /v1/messages?beta=true' reaches the provider with its query."""
    gateway = Gateway()
    raw = gateway.raw(
        b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: "
        + str(len(ANTHROPIC_BODY)).encode()
        + b"\r\n\r\n"
        + ANTHROPIC_BODY
    )
    assert raw.status() == 200
    [call] = gateway.providers["anthropic"].calls
    assert (call["path"], call["query"]) == ("/v1/messages", b"beta=true")


# -- browsers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "is_dialect"),
    [("/v1/messages", _is_anthropic_error), ("/v1/chat/completions", _is_openai_error)],
)
def test_cross_site_request_is_refused_in_dialect(path: str, is_dialect: Any) -> None:
    """A text/plain POST with 'Origin: https://evil.example' is a 403 in dialect and never forwarded."""
    gateway = Gateway()
    code, headers, content = gateway.call(
        "POST",
        path,
        ANTHROPIC_BODY,
        {b"origin": [b"https://evil.example"], b"content-type": [b"text/plain"]},
    )
    assert code == 403 and is_dialect(content)
    assert not headers.hasHeader(b"access-control-allow-origin")
    assert gateway.calls == 0 and gateway.exchanges == []


def test_origin_is_refused_even_for_admin_and_health_routes() -> None:
    """A page on another origin cannot read /metrics or the stats either."""
    gateway = Gateway()
    for path in ("/metrics", "/_lunaroute/stats"):
        code, _, _ = gateway.call("GET", path, headers={b"origin": [b"https://evil.example"]})
        assert code == 403


def test_allowed_origin_gets_cors_headers_and_is_forwarded() -> None:
    """An origin in http_server.cors_allowed_origins is forwarded and gets access-control-allow-origin."""
    gateway = Gateway({"http_server": {"cors_allowed_origins": ["http://localhost:3000"]}})
    code, headers, _ = gateway.call(
        "POST", "/v1/messages", ANTHROPIC_BODY, {b"origin": [b"http://localhost:3000"]}
    )
    assert code == 200
    assert headers.getRawHeaders(b"access-control-allow-origin") == [b"http://localhost:3000"]
    assert b"Origin" in b",".join(headers.getRawHeaders(b"vary", []))
    assert gateway.calls == 1
    code, _, _ = gateway.call("POST", "/v1/messages", ANTHROPIC_BODY, {b"origin": [b"http://localhost:3001"]})
    assert code == 403 and gateway.calls == 1


def test_allowed_origin_preflight_is_answered_without_forwarding() -> None:
    """An OPTIONS preflight from an allowed origin gets 204 with allow-methods/allow-headers; nothing is forwarded."""
    gateway = Gateway({"http_server": {"cors_allowed_origins": ["http://localhost:3000"]}})
    code, headers, content = gateway.call(
        "OPTIONS",
        "/v1/messages",
        headers={
            b"origin": [b"http://localhost:3000"],
            b"access-control-request-method": [b"POST"],
            b"access-control-request-headers": [b"content-type, x-api-key, anthropic-version"],
        },
    )
    assert code == 204 and content == b""
    assert headers.getRawHeaders(b"access-control-allow-origin") == [b"http://localhost:3000"]
    assert b"POST" in headers.getRawHeaders(b"access-control-allow-methods")[0]
    allowed = headers.getRawHeaders(b"access-control-allow-headers")[0].lower()
    assert b"x-api-key" in allowed and b"content-type" in allowed
    assert gateway.calls == 0


def test_providers_cors_headers_are_not_relayed() -> None:
    """A provider's own access-control-* headers do not reach the client: CORS is the gateway's policy."""
    response = FakeResponse(
        headers={b"content-type": [b"application/json"], b"access-control-allow-origin": [b"*"]}
    )
    gateway = Gateway(outcome=response)
    _, headers, _ = gateway.call("POST", "/v1/messages", ANTHROPIC_BODY)
    assert not headers.hasHeader(b"access-control-allow-origin")


# -- gateway token -------------------------------------------------------


def test_admin_routes_need_the_token_health_does_not() -> None:
    """With auth_token, /metrics and /_lunaroute/stats are 401 without it and 200 with Bearer or x-lunaroute-token; health stays open."""
    gateway = Gateway({"http_server": {"auth_token": TOKEN}})
    for path in ("/metrics", "/_lunaroute/stats"):
        code, headers, content = gateway.call("GET", path)
        assert code == 401 and _json(content)["error"]
        assert headers.hasHeader(b"www-authenticate")
        code, _, _ = gateway.call("GET", path, headers={b"authorization": [b"Bearer wrong-token"]})
        assert code == 401
        code, _, _ = gateway.call("GET", path, headers={b"authorization": [f"Bearer {TOKEN}".encode()]})
        assert code == 200
        code, _, _ = gateway.call("GET", path, headers={b"x-lunaroute-token": [TOKEN.encode()]})
        assert code == 200
    assert gateway.call("GET", "/healthz")[0] == 200
    assert gateway.call("GET", "/readyz")[0] == 200


def test_proxy_routes_stay_open_unless_required() -> None:
    """Without require_auth_for_proxy the provider routes need no token; the token header still never goes upstream."""
    gateway = Gateway({"http_server": {"auth_token": TOKEN}})
    code, _, _ = gateway.call("POST", "/v1/messages", ANTHROPIC_BODY, {b"x-lunaroute-token": [TOKEN.encode()]})
    assert code == 200
    [call] = gateway.providers["anthropic"].calls
    assert not call["headers"].hasHeader(b"x-lunaroute-token")


def test_proxy_routes_need_the_token_when_required_and_it_is_not_forwarded() -> None:
    """With require_auth_for_proxy, /v1/messages is 401 (in dialect) without the token; with it, the token never reaches the provider."""
    gateway = Gateway({"http_server": {"auth_token": TOKEN, "require_auth_for_proxy": True}})
    code, _, content = gateway.call("POST", "/v1/messages", ANTHROPIC_BODY, {b"x-api-key": [b"sk-client"]})
    assert code == 401 and _is_anthropic_error(content) and gateway.calls == 0
    code, _, _ = gateway.call(
        "POST",
        "/v1/messages",
        ANTHROPIC_BODY,
        {b"authorization": [f"Bearer {TOKEN}".encode()], b"x-api-key": [b"sk-client"]},
    )
    assert code == 200
    code, _, _ = gateway.call(
        "POST", "/v1/chat/completions", CHAT_BODY, {b"x-lunaroute-token": [TOKEN.encode()]}
    )
    assert code == 200
    for provider in gateway.providers.values():
        for call in provider.calls:
            sent = b"".join(v for _, values in call["headers"].getAllRawHeaders() for v in values)
            assert TOKEN.encode() not in sent
    assert gateway.providers["anthropic"].calls[0]["headers"].getRawHeaders(b"x-api-key") == [b"sk-client"]


# -- model rewrite -------------------------------------------------------


def test_configured_model_replaces_the_clients_and_nothing_else() -> None:
    """providers.anthropic.model: the provider receives that model; every other byte of the body is as sent."""
    gateway = Gateway({"providers": {"anthropic": {"model": "claude-configured"}}})
    body = b'{ "stream" : false , "model":"claude-client",\n"max_tokens":5,"messages":[{"role":"user","content":"caf\xc3\xa9","model":"inner"}]}'
    code, _, _ = gateway.call("POST", "/v1/messages", body)
    assert code == 200
    [call] = gateway.providers["anthropic"].calls
    assert call["body"] == body.replace(b'"claude-client"', b'"claude-configured"')
    # OpenAI had no configured model: its body is untouched.
    gateway.call("POST", "/v1/chat/completions", CHAT_BODY)
    assert gateway.providers["openai"].calls[0]["body"] == CHAT_BODY


def test_body_is_forwarded_byte_for_byte_without_a_configured_model() -> None:
    """With no configured model, the request body reaches the provider unchanged."""
    gateway = Gateway()
    body = b'{"model" :"claude-client" ,"max_tokens":5,"messages":[]}  '
    gateway.call("POST", "/v1/messages", body)
    assert gateway.providers["anthropic"].calls[0]["body"] == body


# -- readiness -----------------------------------------------------------


def test_readyz_is_200_when_probes_succeed_and_probes_are_cached() -> None:
    """/readyz probes each served provider once; a second call within 5 s of Clock time probes nothing; later ones probe again."""
    gateway = Gateway()
    code, _, content = gateway.call("GET", "/readyz")
    assert code == 200 and _json(content)["status"] == "ready"
    assert [p.probes for p in gateway.providers.values()] == [1, 1]
    gateway.clock.advance(4.9)
    assert gateway.call("GET", "/readyz")[0] == 200
    assert [p.probes for p in gateway.providers.values()] == [1, 1]
    gateway.clock.advance(0.2)
    assert gateway.call("GET", "/readyz")[0] == 200
    assert [p.probes for p in gateway.providers.values()] == [2, 2]


def test_readyz_is_503_with_the_reason_when_providers_cannot_be_reached() -> None:
    """When no provider answers its probe, /readyz is 503 and names each provider and why."""
    gateway = Gateway()
    for provider in gateway.providers.values():
        provider.probe_result = UpstreamUnreachable("connection refused", provider=provider.name)
    code, _, content = gateway.call("GET", "/readyz")
    assert code == 503
    report = _json(content)
    assert report["status"] == "not_ready"
    assert report["dialects"]["anthropic"] == {
        "provider": "anthropic",
        "status": "unreachable",
        "reason": "connection refused",
    }
    # The failure is cached too; once the provider is back and the cache expired, ready again.
    for provider in gateway.providers.values():
        provider.probe_result = None
    assert gateway.call("GET", "/readyz")[0] == 503
    gateway.clock.advance(5)
    assert gateway.call("GET", "/readyz")[0] == 200


def test_readyz_probe_that_hangs_times_out_on_the_clock() -> None:
    """A probe that never answers is 'no answer within 5s' after 5 s of Clock time, and concurrent checks share one probe."""
    gateway = Gateway({"api_dialect": "anthropic"})
    provider = gateway.providers["anthropic"]
    hung: defer.Deferred[None] = defer.Deferred()
    provider.probe = lambda: hung  # type: ignore[method-assign]
    first = gateway.readiness.check(provider)
    second = gateway.readiness.check(provider)
    assert not first.called
    gateway.clock.advance(5)
    assert first.result == second.result == "no answer within 5s"


# -- client gone, shutdown cut (raw transport) -----------------------------


def _stream_response() -> FakeResponse:
    return FakeResponse(
        chunks=(b"event: message_start\ndata: {}\n\n",),
        headers={b"content-type": [b"text/event-stream"]},
        end=None,
    )


def _post_bytes(body: bytes = b'{"model":"claude-x","stream":true}') -> bytes:
    return (
        b"POST /v1/messages HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def test_client_leaving_mid_stream_stops_upstream_and_records_once() -> None:
    """The client's connection drops mid-stream: the upstream body is stopped, one client_disconnected exchange, in-flight 0."""
    response = _stream_response()
    gateway = Gateway(outcome=response)
    raw = gateway.raw(_post_bytes())
    assert b"event: message_start" in raw.sent
    assert gateway.in_flight == 1
    raw.protocol.connectionLost(Failure(error.ConnectionLost()))
    assert response.transport.stopped
    [exchange] = gateway.exchanges
    assert exchange.outcome == "client_disconnected"
    assert gateway.in_flight == 0 and gateway.app.in_flight == {}


def test_drain_deadline_cuts_the_stream_without_html_or_terminator() -> None:
    """At the shutdown deadline a stream is cut: the client has the bytes so far, no HTML, no chunked terminator; one interrupted exchange."""
    response = _stream_response()
    gateway = Gateway(outcome=response)
    raw = gateway.raw(_post_bytes())
    drained = gateway.app.drain(0.5)
    gateway.clock.advance(0.4)
    assert not response.transport.stopped
    gateway.clock.advance(0.1)
    assert response.transport.stopped
    assert raw.transport.disconnecting
    raw.close()
    assert drained.called
    sent = raw.sent
    assert b"event: message_start\ndata: {}\n\n" in sent
    assert not sent.endswith(b"0\r\n\r\n")
    assert b"<html" not in sent.lower() and b"Processing Failed" not in sent
    [exchange] = gateway.exchanges
    assert exchange.outcome == "interrupted"
    assert exchange.error is not None and "Failure" not in exchange.error
    assert gateway.in_flight == 0


def test_cut_before_the_provider_answers_is_a_503_in_dialect() -> None:
    """Stopping while the provider has not answered: the send is cancelled and the client gets a 503 JSON error."""
    pending: defer.Deferred[Any] = defer.Deferred()
    gateway = Gateway(outcome=pending)
    raw = gateway.raw(_post_bytes())
    assert raw.sent == b""
    gateway.app.cut_all()
    assert raw.status() == 503
    assert _is_anthropic_error(json.dumps(_json_body(raw.body())).encode())
    [exchange] = gateway.exchanges
    assert exchange.outcome == "interrupted"
    assert gateway.in_flight == 0


def test_provider_dropping_mid_stream_keeps_the_bytes_and_ends_without_terminator() -> None:
    """The provider closes mid-body: the client has every byte, the connection closes without '0\\r\\n\\r\\n', the error is a sentence."""
    chunks = (b"event: message_start\ndata: {}\n\n", b"event: ping\ndata: {}\n\n")
    response = FakeResponse(
        chunks=chunks,
        headers={b"content-type": [b"text/event-stream"]},
        end=ResponseFailed([Failure(error.ConnectionDone())]),
    )
    gateway = Gateway(outcome=response)
    raw = gateway.raw(_post_bytes())
    assert raw.transport.disconnecting
    raw.close()
    sent = raw.sent
    for chunk in chunks:
        assert chunk in sent
    assert not sent.endswith(b"0\r\n\r\n")
    [exchange] = gateway.exchanges
    assert exchange.outcome == "stream_error"
    total = sum(len(c) for c in chunks)
    assert exchange.error == f"the provider closed the connection after {total:,} bytes"


class BackedUpTransport(FileDescriptor):
    """
    A transport with Twisted's real write buffering and producer logic
    (L{FileDescriptor}) whose socket accepts nothing until C{drain} is
    called: a client that is slow to read.
    """

    def __init__(self) -> None:
        super().__init__(reactor=Clock())
        self.connected = 1
        self.accepting = False
        self.received = bytearray()
        self.lost: Failure | None = None
        self.protocol: Any = None

    def writeSomeData(self, data: bytes) -> int:
        if not self.accepting:
            return 0
        self.received += data
        return len(data)

    def startWriting(self) -> None:
        pass

    def stopWriting(self) -> None:
        pass

    def startReading(self) -> None:
        pass

    def stopReading(self) -> None:
        pass

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40001)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8081)

    def abortConnection(self) -> None:
        if self.lost is None:
            self.connectionLost(Failure(error.ConnectionAborted()))

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason
        super().connectionLost(reason)
        self.protocol.connectionLost(reason)

    def drain(self) -> None:
        """Let the client read everything, as the reactor would drive it."""
        self.accepting = True
        for _ in range(100):
            if self.lost is not None:
                return
            why = self.doWrite()
            if why:
                self.connectionLost(Failure(why))
                return
            if not self.dataBuffer and not self._tempDataBuffer:
                return


def test_cut_response_to_a_slow_client_still_closes_once_flushed() -> None:
    """A dropped stream whose bytes are backed up in the client's socket buffer: once the client reads them, the connection closes (no terminator), not after the 30 s abort."""
    chunks = tuple(b"data: " + b"m" * 16_000 + b"\n\n" for _ in range(12))
    response = FakeResponse(
        chunks=chunks,
        headers={b"content-type": [b"text/event-stream"]},
        end=ResponseFailed([Failure(error.ConnectionDone())]),
    )
    gateway = Gateway(outcome=response)
    site = QuietSite(gateway.resource, reactor=gateway.clock)
    transport = BackedUpTransport()
    protocol = site.buildProtocol(transport.getPeer())
    transport.protocol = protocol
    protocol.makeConnection(transport)
    protocol.dataReceived(_post_bytes())
    assert transport.producerPaused, "the client's buffer should be full"
    transport.drain()
    assert transport.lost is not None, "the connection should close once the client has read everything"
    assert transport.lost.check(error.ConnectionDone), "closed cleanly, not aborted"
    body = bytes(transport.received).partition(b"\r\n\r\n")[2]
    assert b"".join(chunks) in body.replace(b"\r\n", b"\n") or all(chunk in body for chunk in chunks)
    assert not body.endswith(b"0\r\n\r\n")
    [exchange] = gateway.exchanges
    assert exchange.outcome == "stream_error"
    assert gateway.in_flight == 0


def test_providers_are_told_how_many_requests_are_in_flight() -> None:
    """
    Each request tells its provider how many of its requests are in flight
    (so the pool keeps that many idle connections): two held requests are
    seen as 1 then 2; once both finish, the next one counts 1 again.
    """
    held: list[defer.Deferred[Any]] = [defer.Deferred(), defer.Deferred()]
    gateway = Gateway()
    provider = gateway.providers["anthropic"]
    provider.outcome = held[0]
    first = gateway.stub.request("POST", "http://gateway.test/v1/messages", data=ANTHROPIC_BODY)
    provider.outcome = held[1]
    second = gateway.stub.request("POST", "http://gateway.test/v1/messages", data=ANTHROPIC_BODY)
    gateway.stub.flush()
    assert provider.in_flight_seen == [1, 2]
    for d in held:
        d.errback(UpstreamUnreachable("down", provider="anthropic"))
    gateway.stub.flush()
    assert first.called and second.called
    provider.outcome = FakeResponse()
    gateway.call("POST", "/v1/messages", ANTHROPIC_BODY)
    assert provider.in_flight_seen == [1, 2, 1]
