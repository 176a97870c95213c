"""
The ingress: Klein routes for the Anthropic and OpenAI APIs, forwarding each
request to its provider with full fidelity and relaying the answer as it
streams, while a tap beside the stream rebuilds what passed for the recorder,
statistics and metrics.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from lunaroute.config import Settings
from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.errors import anthropic_error_body, openai_error_body
from lunaroute.dialects.session_id import extract_session_id, new_session_id
from lunaroute.errors import UpstreamTimeout, UpstreamUnreachable
from lunaroute.exchange import Exchange, Timings
from lunaroute.interfaces import IProvider
from lunaroute.logs import debug_enabled, log_observer
from lunaroute.proxy.headers import (
    masked_headers,
    relayed_response_headers,
    upstream_request_headers,
)
from lunaroute.proxy.relay import RelayProtocol

log = Logger(observer=log_observer)

ExchangeObserver = Callable[[Exchange], None]

# Anthropic's error type for each status the gateway itself answers with.
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


def error_body(listener: str, status: int, message: str, code: str | None = None) -> bytes:
    """An error body in the dialect the client speaks."""
    if listener == "anthropic":
        return anthropic_error_body(_ANTHROPIC_ERROR_TYPES.get(status, "api_error"), message)
    return openai_error_body(message, _OPENAI_ERROR_TYPES.get(status, "server_error"), code)


def listener_for_path(path: str, header: Callable[[str], str | None]) -> str:
    """
    Guess the dialect of a request the gateway has no route for, so that even
    a 404 speaks the client's language.
    """
    if path.startswith("/v1/messages") or path.startswith("/v1/complete"):
        return "anthropic"
    if header("anthropic-version") or header("x-api-key"):
        return "anthropic"
    return "openai"


class GatewayApp:
    """
    The proxy's HTTP surface.  Providers and observers are injected, so tests
    drive it in memory with fakes and a L{twisted.internet.task.Clock}.
    """

    app = Klein()

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, IProvider],
        clock: IReactorTime,
        observers: Iterable[ExchangeObserver] = (),
        request_log: Any = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.clock = clock
        self.observers: list[ExchangeObserver] = list(observers)
        # Called when a request is about to go upstream (in-flight gauges).
        self.start_observers: list[ExchangeObserver] = []
        # Renders the Prometheus exposition: () -> (body, content type).
        self.metrics_renderer: Callable[[], tuple[bytes, str]] | None = None
        # The session statistics collector, when there is one (read-only here).
        self.stats: Any = None
        self.request_log = request_log
        self.in_flight: set[defer.Deferred[Any]] = set()
        self._accepting = True

    def resource(self) -> Any:
        return self.app.resource()

    # -- provider choice -------------------------------------------------

    def provider_for(self, provider_type: str) -> IProvider | None:
        """The provider that serves a dialect, chosen as L{Settings.provider_for} says."""
        chosen = self.settings.provider_for(provider_type)
        return self.providers.get(chosen.name) if chosen is not None else None

    def _serves(self, listener: str) -> bool:
        dialect = self.settings.api_dialect
        return dialect == "both" or dialect == listener

    # -- routes ----------------------------------------------------------

    @app.route("/", methods=["HEAD", "GET"])
    def root(self, request: Any) -> bytes:
        # Claude Code probes HEAD / before its first request.
        request.setHeader(b"content-type", b"application/json")
        if request.method == b"HEAD":
            return b""
        return json.dumps({"name": "lunaroute", "status": "ok"}).encode()

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return b'{"status":"ok"}'

    @app.route("/readyz", methods=["GET", "HEAD"])
    def readyz(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        report: dict[str, Any] = {}
        ready = False
        for listener in ("anthropic", "openai"):
            if not self._serves(listener):
                continue
            provider = self.provider_for(listener)
            report[listener] = {
                "provider": provider.name if provider else None,
                "status": "ready" if provider else "no_provider",
            }
            ready = ready or provider is not None
        if not self._accepting:
            ready = False
        if not ready:
            request.setResponseCode(503)
        return json.dumps(
            {"status": "ready" if ready else "not_ready", "dialects": report}
        ).encode()

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: Any) -> bytes:
        if self.metrics_renderer is None:
            return self._error(request, "openai", 404, "metrics are disabled")
        body, content_type = self.metrics_renderer()
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return body

    @app.route("/_lunaroute/stats", methods=["GET"])
    def live_stats(self, request: Any) -> bytes:
        """Session statistics while running: the aggregate and each kept session."""
        request.setHeader(b"content-type", b"application/json")
        if self.stats is None:
            return b'{"aggregate":null,"sessions":[]}'
        return json.dumps(
            {"aggregate": self.stats.aggregate(), "sessions": self.stats.sessions()}, default=str
        ).encode()

    @app.route("/v1/messages", methods=["POST"])
    def messages(self, request: Any) -> Any:
        return self.forward(request, "anthropic", "anthropic")

    @app.route("/v1/messages/count_tokens", methods=["POST"])
    def count_tokens(self, request: Any) -> Any:
        return self.forward(request, "anthropic", "anthropic", kind="count_tokens")

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat_completions(self, request: Any) -> Any:
        return self.forward(request, "openai", "openai_chat")

    @app.route("/v1/responses", methods=["POST"])
    @app.route("/responses", methods=["POST"])
    def responses(self, request: Any) -> Any:
        return self.forward(request, "openai", "openai_responses")

    @app.route("/v1/responses", methods=["GET"])
    @app.route("/responses", methods=["GET"])
    def responses_websocket(self, request: Any) -> bytes:
        # Codex can open a WebSocket here first; 426 makes it fall back to
        # HTTP streaming at once (a 404 costs it seven retries).
        request.setResponseCode(426)
        request.setHeader(b"content-type", b"application/json")
        return openai_error_body(
            "WebSocket transport is not supported by this gateway; use HTTP streaming",
            "invalid_request_error",
            "websocket_not_supported",
        )

    @app.route("/v1/models", methods=["GET"])
    @app.route("/models", methods=["GET"])
    def models(self, request: Any) -> Any:
        listener = "anthropic" if _header(request, "anthropic-version") else "openai"
        if self.settings.api_dialect != "both":
            listener = self.settings.api_dialect
        return self.forward(request, listener, None, kind="models", parse_json=False)

    @app.route("/", branch=True)
    def other_paths(self, request: Any) -> Any:
        """
        Everything without a route of its own (embeddings, files, audio,
        batches, unknown paths) is bypassed verbatim to one provider, or is a
        404 in the path's dialect when bypass is off.
        """
        path = request.path.decode("utf-8", "replace")
        listener = listener_for_path(path, lambda n: _header(request, n))
        provider = self.bypass_provider() if self.settings.bypass.enabled else None
        if provider is None:
            return self._error(
                request, listener, 404, f"no route for {request.method.decode()} {path}"
            )
        return self.forward(
            request, listener, None, kind="bypass", parse_json=False, provider=provider
        )

    def bypass_provider(self) -> IProvider | None:
        name = self.settings.bypass.provider
        if name:
            return self.providers.get(name) or self.provider_for(name)
        return self.provider_for("openai") or self.provider_for("anthropic")

    # -- forwarding ------------------------------------------------------

    def _error(
        self, request: Any, listener: str, status: int, message: str, code: str | None = None
    ) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return error_body(listener, status, message, code)

    def forward(
        self,
        request: Any,
        listener: str,
        dialect: str | None,
        *,
        kind: str = "conversation",
        parse_json: bool = True,
        provider: IProvider | None = None,
    ) -> Any:
        if kind != "bypass" and not self._serves(listener):
            path = request.path.decode("utf-8", "replace")
            return self._error(
                request, listener, 404, f"{path} is not served: api_dialect is {self.settings.api_dialect}"
            )
        if getattr(request, "body_too_large", False):
            limit = self.settings.http_server.max_request_body_bytes
            return self._error(
                request, listener, 413, f"request body exceeds the {limit}-byte limit"
            )
        d = defer.ensureDeferred(
            self._forward(
                request, listener, dialect, kind=kind, parse_json=parse_json, provider=provider
            )
        )
        self.in_flight.add(d)
        d.addBoth(self._untrack, d)
        return d

    def _untrack(self, result: Any, d: defer.Deferred[Any]) -> Any:
        self.in_flight.discard(d)
        return result

    async def _forward(
        self,
        request: Any,
        listener: str,
        dialect: str | None,
        *,
        kind: str,
        parse_json: bool,
        provider: IProvider | None,
    ) -> bytes | None:
        clock = self.clock
        timings = Timings(received=clock.seconds())
        path = request.path.decode("utf-8", "replace")
        request_id = str(uuid.uuid4())
        body = request.content.read() if request.content is not None else b""
        body_json: dict[str, Any] | None = None
        if parse_json:
            try:
                parsed = json.loads(body)
            except ValueError as exc:
                return self._error(request, listener, 400, f"request body is not valid JSON: {exc}")
            if not isinstance(parsed, dict):
                return self._error(request, listener, 400, "request body must be a JSON object")
            body_json = parsed
            if not isinstance(body_json.get("model"), str) or not body_json["model"]:
                return self._error(request, listener, 400, "model: field required")

        if provider is None:
            provider = self.provider_for(listener)
        if provider is None:
            return self._error(
                request, listener, 503, f"no enabled {listener} provider is configured"
            )

        def header(name: str) -> str | None:
            return _header(request, name)

        session_id = extract_session_id(body_json, header) or new_session_id()
        streaming = bool(body_json and body_json.get("stream"))
        exchange = Exchange(
            request_id=request_id,
            session_id=session_id,
            listener=listener,
            kind=kind,
            dialect=dialect or listener,
            path=path,
            method=request.method.decode("ascii", "replace"),
            timings=timings,
            provider=provider.name,
            model=body_json.get("model") if body_json else None,
            streaming=streaming,
            client_ip=_client_ip(request),
            user_agent=header("user-agent"),
            request_body=body,
            request_json=body_json,
            request_headers=masked_headers(request.requestHeaders),
        )
        if self.request_log is not None:
            self.request_log.started(exchange)
        for observer in self.start_observers:
            try:
                observer(exchange)
            except Exception:
                log.failure("start observer {observer!r} failed", observer=observer)

        headers = upstream_request_headers(request.requestHeaders)
        query = request.uri.partition(b"?")[2]
        timings.upstream_sent = clock.seconds()
        try:
            response = await provider.request(request.method, path, query, headers, body)
        except UpstreamTimeout as exc:
            exchange.outcome, exchange.error = "timeout", str(exc)
            result = self._error(request, listener, 504, str(exc), "upstream_timeout")
            exchange.status = 504
            self._finish(exchange)
            return result
        except UpstreamUnreachable as exc:
            exchange.outcome, exchange.error = "unreachable", str(exc)
            result = self._error(request, listener, 502, str(exc), "upstream_unreachable")
            exchange.status = 502
            self._finish(exchange)
            return result
        except defer.CancelledError:
            exchange.outcome, exchange.error = "client_disconnected", "client went away"
            self._finish(exchange)
            raise

        timings.headers_received = clock.seconds()
        exchange.status = response.code
        if response.code >= 400:
            exchange.outcome = "upstream_error"
        request.setResponseCode(response.code, response.phrase or None)
        # Relay exactly the provider's headers; no default content type.
        request.defaultContentType = None
        for name, values in relayed_response_headers(response.headers):
            request.responseHeaders.setRawHeaders(name, values)

        capture = None
        if dialect is not None:
            capture = ResponseCapture(
                dialect,
                streaming=streaming,
                content_type=_first(response.headers, b"content-type"),
                content_encoding=_first(response.headers, b"content-encoding"),
            )
        on_chunk = self._chunk_handler(capture, exchange)
        relay = RelayProtocol(request, clock, on_chunk, idle_timeout=_idle_timeout(provider))
        response.deliverBody(relay)
        try:
            await relay.done
        except defer.CancelledError:
            exchange.outcome, exchange.error = "client_disconnected", "client went away mid-response"
            self._collect(exchange, relay, capture, response)
            self._finish(exchange)
            raise
        if relay.timed_out or relay.failure is not None:
            if relay.timed_out:
                exchange.outcome, exchange.error = "timeout", "upstream stopped sending"
            elif _client_gone(request):
                exchange.outcome, exchange.error = "client_disconnected", "client went away mid-response"
            else:
                exchange.outcome = "stream_error"
                exchange.error = f"upstream body cut short: {relay.failure.getErrorMessage()}"
            # The status is already sent; dropping the connection is the
            # only way left to tell the client the body is incomplete.
            if request.channel is not None and request.channel.transport is not None:
                request.channel.transport.abortConnection()
        elif not _client_gone(request):
            # The client gets the end of its response before any bookkeeping.
            timings.finished = clock.seconds()
            request.finish()
        self._collect(exchange, relay, capture, response)
        self._finish(exchange)
        return None

    def _chunk_handler(
        self, capture: ResponseCapture | None, exchange: Exchange
    ) -> Callable[[bytes], None]:
        request_log = self.request_log
        if request_log is not None:
            return lambda chunk: request_log.chunk(exchange, chunk, capture)
        if capture is None:
            return lambda chunk: None
        return capture.feed

    def _collect(
        self,
        exchange: Exchange,
        relay: RelayProtocol,
        capture: ResponseCapture | None,
        response: Any,
    ) -> None:
        """Gather what the relay saw, once the client has its answer."""
        exchange.response_headers = masked_headers(response.headers)
        timings = exchange.timings
        timings.first_byte = relay.first_byte
        timings.last_byte = relay.last_byte
        exchange.bytes_out = relay.bytes
        exchange.chunk_count = relay.chunks
        exchange.chunk_gaps_ms = relay.gaps_ms
        if capture is not None:
            exchange.response = capture.finish()

    def _finish(self, exchange: Exchange) -> None:
        """
        Hand the finished exchange to the observers.  They are best effort:
        none of them may break or delay the client's response.
        """
        timings = exchange.timings
        if timings.finished is None:
            timings.finished = self.clock.seconds()
        if debug_enabled():
            self._log_debug(exchange)
        if self.request_log is not None:
            try:
                self.request_log.finished(exchange)
            except Exception:
                log.failure("request log failed")
        for observer in self.observers:
            try:
                observer(exchange)
            except Exception:
                log.failure("exchange observer {observer!r} failed", observer=observer)

    def _log_debug(self, exchange: Exchange) -> None:
        timings = exchange.timings
        log.debug(
            "{method} {path} -> {status} ({outcome}) pre-proxy {pre} ms, provider {provider_ms} ms, "
            "post-proxy {post} ms; request headers {request_headers}; response headers {response_headers}",
            method=exchange.method,
            path=exchange.path,
            status=exchange.status,
            outcome=exchange.outcome,
            pre=_fmt_ms(timings.pre_proxy_ms),
            provider_ms=_fmt_ms(timings.provider_ms),
            post=_fmt_ms(timings.post_proxy_ms),
            request_headers=exchange.request_headers,
            response_headers=exchange.response_headers,
        )

    # -- shutdown --------------------------------------------------------

    def stop_accepting(self) -> None:
        self._accepting = False

    def drain(self, timeout: float) -> defer.Deferred[None]:
        """
        Wait for in-flight requests to finish, at most C{timeout} seconds;
        then cancel (abort) the ones still running.
        """
        pending = list(self.in_flight)
        if not pending:
            return defer.succeed(None)
        log.info("waiting up to {timeout}s for {n} in-flight request(s)", timeout=timeout, n=len(pending))
        waiter = defer.DeferredList(
            [_quiet(d) for d in pending], consumeErrors=True
        )

        def expire() -> None:
            for d in list(self.in_flight):
                d.cancel()

        call = self.clock.callLater(timeout, expire)

        def done(_: Any) -> None:
            if call.active():
                call.cancel()

        waiter.addBoth(done)
        return waiter


def _quiet(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """A Deferred that fires when C{d} does, without consuming its result."""
    waiter: defer.Deferred[Any] = defer.Deferred()

    def relay(result: Any) -> Any:
        if not waiter.called:
            waiter.callback(None)
        return result

    d.addBoth(relay)
    return waiter


def _header(request: Any, name: str) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    return values[0] if isinstance(values[0], str) else values[0].decode("latin-1")


def _first(headers: Any, name: bytes) -> str | None:
    values = headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


def _client_ip(request: Any) -> str | None:
    peer = request.getClientAddress()
    return getattr(peer, "host", None)


def _client_gone(request: Any) -> bool:
    return bool(getattr(request, "_disconnected", False))


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _idle_timeout(provider: IProvider) -> float:
    """How long a stream may stay silent: the provider's request timeout."""
    settings = getattr(provider, "settings", None)
    return settings.http_client.timeout_secs if settings is not None else 600.0
