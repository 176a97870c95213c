"""
The ingress: Klein routes for the Anthropic and OpenAI APIs, forwarding each
request to its provider with full fidelity and relaying the answer as it
streams, while a tap beside the stream rebuilds what passed for the recorder,
statistics and metrics.

One request is a short pipeline of named steps (see docs/architecture.md):

    parse (dialects.request_view) -> choose (a provider) -> modify (model
    rewrite) -> send (IProvider) -> relay (RelayProtocol) -> classify
    (proxy.outcome) -> enrich + record (ExchangeRecord) -> sinks

Domain errors raised before anything was sent are turned into an error in
the client's dialect in one place (L{GatewayApp.domain_error}); once a request
went upstream, the lifecycle answers every failure itself and produces
exactly one finished record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from typing import Protocol as Protocol_

from klein import Klein
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import HTTPException

from lunaroute.config import Settings
from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.errors import openai_error_body
from lunaroute.dialects.request_view import RequestView, bounded, parse_request, replace_model
from lunaroute.dialects.session_id import new_session_id
from lunaroute.dialects.translate.base import Translator
from lunaroute.dialects.translate.errors import UntranslatableField
from lunaroute.dialects.translate.validate import check_messages_request
from lunaroute.errors import LunaRouteError, UpstreamError, UpstreamUnreachable
from lunaroute.exchange import Enrichment, Exchange, Timings
from lunaroute.interfaces import IProvider
from lunaroute.logs import debug_enabled, log_observer
from lunaroute.modify import TemplateContext, provider_modifiers
from lunaroute.pii.records import redact_request_body
from lunaroute.pii.redactor import Redactor
from lunaroute.proxy.errors import (
    NoProvider,
    body_limit_message,
    first_header,
    listener_for_path,
    listener_for_request,
    status_for,
    write_error,
)
from lunaroute.proxy.headers import (
    MaskedHeaders,
    first_value,
    header_reader,
    relayed_response_headers,
    upstream_request_headers,
)
from lunaroute.proxy.outcome import Classification, RelayEnd, classify_relay
from lunaroute.proxy.relay import RelayProtocol
from lunaroute.proxy.translating import (
    TranslatingRelay,
    encode_body,
    encode_json,
    estimate_input_tokens,
    translated_request_headers,
    translated_response_headers,
)
from lunaroute.proxy.websocket import responses_socket_resource, wants_websocket
from lunaroute.routing.markers import strip_markers
from lunaroute.routing.notice import inject_switch_notice
from lunaroute.routing.plan import Attempt, Plan, Router
from lunaroute.routing.retry import (
    CANCELLED,
    CIRCUIT_OPEN,
    FINAL,
    NOT_SENT,
    RETRY_SAME,
    SUCCESS,
    Outcome,
    retry_after_from_headers,
)
from lunaroute.routing.translation import (
    default_provider,
    provider_dialect,
    resolve_model,
    translation_for,
)
from lunaroute.sessions.events import client_name

log = Logger(observer=log_observer)

ExchangeObserver = Callable[[Exchange], None]

# After a stream is cut, the client gets what was relayed; one that does not
# read it within this many seconds has its connection aborted.
CUT_GRACE_SECS = 30.0

# A relayed stream is parsed for the record in passes of this many bytes
# (and at its end), not chunk by chunk (see ResponseCapture's bulk_bytes).
TAP_BULK_BYTES = 16 * 1024

__all__ = ["ExchangeObserver", "GatewayApp", "listener_for_path"]


class Flight(Protocol_):
    """What a stopping gateway needs of a request (or WebSocket turn) in flight."""

    finished: defer.Deferred[None]

    def cut(self) -> None: ...


class _InFlight:
    """
    One request being forwarded: lets a stopping gateway cut it (the relay
    if the body is streaming, the pending send otherwise).
    """

    def __init__(self) -> None:
        self.relay: RelayProtocol | None = None
        self.sending: defer.Deferred[Any] | None = None
        self.cut_requested = False
        self.finished: defer.Deferred[None] = defer.Deferred()

    def cut(self) -> None:
        self.cut_requested = True
        if self.relay is not None:
            self.relay.cut()
        elif self.sending is not None:
            self.sending.cancel()


class GatewayApp:
    """
    The proxy's HTTP surface.  Providers, sinks and helpers are passed in,
    so tests drive it in memory (C{treq.testing.StubTreq}) with fakes and a
    L{twisted.internet.task.Clock}.

    @param sinks: called in order with each finished, sealed exchange
        (statistics, recorder, metrics); each is best effort and none can
        change the record.
    @param enricher: the enrich step: C{exchange -> Enrichment} (cost, tool
        results), run once before the record is sealed.
    @param start_observers: called when a request is about to go upstream.
    @param metrics_renderer: C{() -> (body, content type)} for C{/metrics}.
    @param live_stats: C{() -> dict} for C{/_lunaroute/stats}.
    @param readiness: a L{lunaroute.providers.health.ReadinessChecker}.
    @param request_log: the pretty request log printer, if enabled.
    @param router: the L{lunaroute.routing.plan.Router} when C{routing} is
        configured: it chooses the attempts (rules, markers, strategies,
        breakers) and says after each whether to retry, fall back or answer.
        Without one, each request goes to its dialect's provider once and
        whatever it answers is relayed as it is (pure passthrough).
    @param socket_metrics: the L{lunaroute.metrics.GatewayMetrics} counting
        client WebSockets and their frames, if metrics are on.
    @param upstream_redactor: with C{session_recording.pii.apply_to_upstream},
        the L{lunaroute.pii.Redactor} applied to each request body before
        anything reads it (see L{redact_upstream}).
    @param trace_propagator: C{(exchange, headers) -> None}, called with the
        headers of each upstream attempt (L{lunaroute.telemetry}: the
        C{traceparent}), when telemetry is on.
    @param store_status: C{() -> dict | None}: the shared session store's
        health (the PostgreSQL writer's C{ok}/C{degraded} and backlog), shown
        by C{/readyz} without making the gateway unready.
    """

    app = Klein()

    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, IProvider],
        clock: IReactorTime,
        *,
        sinks: Iterable[ExchangeObserver] = (),
        enricher: Callable[[Exchange], Enrichment] | None = None,
        start_observers: Iterable[ExchangeObserver] = (),
        metrics_renderer: Callable[[], tuple[bytes, str]] | None = None,
        live_stats: Callable[[], dict[str, Any]] | None = None,
        readiness: Any = None,
        request_log: Any = None,
        router: Router | None = None,
        socket_metrics: Any = None,
        upstream_redactor: Redactor | None = None,
        trace_propagator: Callable[[Exchange, Headers], None] | None = None,
        store_status: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.clock = clock
        self._sinks = tuple(sinks)
        self._enricher = enricher
        self._start_observers = tuple(start_observers)
        self._metrics_renderer = metrics_renderer
        self._live_stats = live_stats
        self._readiness = readiness
        self._store_status = store_status
        self.request_log = request_log
        self._router = router
        self._upstream_redactor = upstream_redactor
        # GatewayMetrics (socket_opened/closed/frame) for WebSocket turns.
        self.socket_metrics = socket_metrics
        self.in_flight: dict[defer.Deferred[Any], Flight] = {}
        # Requests in flight per provider name (for the pools' sizing).
        self._provider_load: dict[str, int] = {}
        self._accepting = True
        # Keyless providers already warned about (translated requests).
        self._warned_keyless: set[str] = set()
        # Open client WebSockets (lunaroute.proxy.websocket), closed once
        # in-flight requests (and WebSocket turns) have drained on stop.
        self.sockets: set[Any] = set()
        # Each provider's request_headers / request_body, compiled once.
        self._modifiers = provider_modifiers(
            settings.providers.values(), settings.templates.env_allowlist, settings.templates.env
        )
        self._trace_propagator = trace_propagator

    def upstream_headers(self, client: Headers, exchange: Exchange) -> Headers:
        """The headers of an upstream attempt: the client's end-to-end ones (and the trace context)."""
        headers = upstream_request_headers(client)
        if self._trace_propagator is not None:
            self._trace_propagator(exchange, headers)
        return headers

    def resource(self) -> Any:
        """The gateway's resource: Klein's routes, with the hot ones dispatched directly (L{HotRoutes})."""
        return HotRoutes(self, self.app.resource())

    def render_hot(self, request: Any, listener: str, dialect: str) -> Any:
        """
        Render C{POST /v1/messages}, C{/v1/chat/completions} or
        C{/v1/responses} as Klein renders their routes (the same handler,
        error handlers in the same order, cancelled when the client leaves,
        finished once), without URL mapping on every request.
        """
        finished: list[bool] = []

        def mark_finished(_: Any) -> None:
            finished.append(True)

        request.notifyFinish().addBoth(mark_finished)
        d = defer.maybeDeferred(self.forward, request, listener, dialect)
        request.notifyFinish().addErrback(lambda _: d.cancel())

        def failed(failure: Any, handlers: tuple[tuple[type[BaseException], Any], ...]) -> Any:
            if finished:
                if not failure.check(defer.CancelledError):
                    log.failure("Unhandled Error Processing Request.", failure)
                return None
            for index, (kind, handler) in enumerate(handlers):
                if failure.check(kind):
                    return defer.maybeDeferred(handler, request, failure).addErrback(
                        failed, handlers[index + 1:]
                    )
            request.processingFailed(failure)
            return None

        def write(result: Any) -> None:
            if isinstance(result, str):
                result = result.encode("utf-8")
            if isinstance(result, bytes):
                request.write(result)
            if not finished:
                request.finish()

        d.addErrback(failed, (
            (LunaRouteError, self.domain_error),
            (HTTPException, self.routing_error),
            (Exception, self.unexpected_error),
        ))
        d.addCallback(write)
        d.addErrback(lambda failure: log.failure("Unhandled Error writing response", failure))
        return NOT_DONE_YET

    # -- provider choice -------------------------------------------------

    def provider_for(self, provider_type: str) -> IProvider | None:
        """The provider that serves a dialect, chosen as L{Settings.provider_for} says."""
        chosen = self.settings.provider_for(provider_type)
        return self.providers.get(chosen.name) if chosen is not None else None

    def _default_provider(self, listener: str, dialect: str | None) -> IProvider | None:
        """
        Without routing: the provider of the request's dialect, or, when none
        is enabled, one of the other dialect a translator reaches.
        """
        chosen = default_provider(self.settings, listener, dialect)
        return self.providers.get(chosen.name) if chosen is not None else None

    def _serves(self, listener: str) -> bool:
        dialect = self.settings.api_dialect
        return dialect == "both" or dialect == listener

    def bypass_provider(self) -> IProvider | None:
        name = self.settings.bypass.provider
        if name:
            return self.providers.get(name) or self.provider_for(name)
        return self.provider_for("openai") or self.provider_for("anthropic")

    # -- errors ----------------------------------------------------------

    @app.handle_errors(LunaRouteError)
    def domain_error(self, request: Any, failure: Any) -> bytes:
        """A domain error raised by a route: an error in the client's dialect."""
        exc = failure.value
        status, code = status_for(exc)
        message = getattr(exc, "message", None) or str(exc)
        return write_error(request, listener_for_request(request), status, message, code)

    @app.handle_errors(HTTPException)
    def routing_error(self, request: Any, failure: Any) -> bytes:
        """No route matched (404) or the method is not served there (405)."""
        exc = failure.value
        status = exc.code or 404
        path = request.path.decode("utf-8", "replace")
        if status == 405:
            message = f"{request.method.decode('latin-1')} is not allowed on {path}"
        else:
            message = f"no route for {request.method.decode('latin-1')} {path}"
        return write_error(request, listener_for_request(request), status, message)

    @app.handle_errors(Exception)
    def unexpected_error(self, request: Any, failure: Any) -> bytes:
        """A bug: logged, and still a JSON error in the client's dialect."""
        log.failure("unexpected error handling {method} {path}", failure,
                    method=request.method, path=request.path)
        return write_error(
            request, listener_for_request(request), 500, "internal gateway error", "internal_error"
        )

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
    async def readyz(self, request: Any) -> bytes:
        """
        Ready when, for some served dialect, a provider is configured and
        answers (a cached connection probe); the body says which and why.
        """
        body = await self.readiness_report()
        request.setHeader(b"content-type", b"application/json")
        if body["status"] != "ready":
            request.setResponseCode(503)
        return json.dumps(body, default=str).encode()

    async def readiness_report(self) -> dict[str, Any]:
        """What C{/readyz} answers (also shown on the web UI's settings page)."""
        report: dict[str, Any] = {}
        ready = False
        for listener in ("anthropic", "openai"):
            if not self._serves(listener):
                continue
            provider = self._default_provider(listener, "anthropic" if listener == "anthropic" else "openai_chat")
            if provider is None:
                report[listener] = {"provider": None, "status": "no_provider"}
                continue
            problem = await self._readiness.check(provider) if self._readiness is not None else None
            if problem is None and self._router is not None:
                problem = self._router_problem(listener)
            report[listener] = {
                "provider": provider.name,
                "status": "ready" if problem is None else "unreachable",
                **({"reason": problem} if problem else {}),
            }
            ready = ready or problem is None
        if not self._accepting:
            ready = False
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "dialects": report}
        if self._router is not None:
            body["providers"] = self._router.states()
        # A degraded session store (recording queues and retries) is shown,
        # but the proxy still serves: it does not make the gateway unready.
        store = self._store_status() if self._store_status is not None else None
        if store is not None:
            body["store"] = store
        return body

    def _router_problem(self, listener: str) -> str | None:
        """Why routing cannot serve a dialect now (every breaker of its providers open), or None."""
        assert self._router is not None
        names = [name for name, p in self.providers.items() if p.provider_type == listener]
        open_ = [name for name in names if not self._router.breakers[name].available()]
        if names and len(open_) == len(names):
            return f"circuit breaker open for {', '.join(open_)}"
        return None

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: Any) -> bytes:
        if self._metrics_renderer is None:
            return write_error(request, "openai", 404, "metrics are disabled")
        body, content_type = self._metrics_renderer()
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return body

    @app.route("/_lunaroute/stats", methods=["GET"])
    def live_stats(self, request: Any) -> bytes:
        """Session statistics while running: the aggregate and each kept session."""
        request.setHeader(b"content-type", b"application/json")
        if self._live_stats is None:
            return b'{"aggregate":null,"sessions":[]}'
        return json.dumps(self._live_stats(), default=str).encode()

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
    def responses_websocket(self, request: Any) -> Any:
        # Codex opens a WebSocket here when its provider has
        # supports_websockets; served by lunaroute.proxy.websocket.  Without
        # an upgrade, or with WebSockets off, 426 makes it fall back to HTTP
        # streaming at once (a 404 costs it seven retries).
        if self.settings.http_server.websocket_enabled and wants_websocket(request):
            if not self._serves("openai"):
                return write_error(
                    request, "openai", 404,
                    f"/v1/responses is not served: api_dialect is {self.settings.api_dialect}",
                )
            return responses_socket_resource(self, request)
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
        listener = "anthropic" if first_header(request, b"anthropic-version") else "openai"
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
        listener = listener_for_request(request)
        provider = self.bypass_provider() if self.settings.bypass.enabled else None
        if provider is None:
            path = request.path.decode("utf-8", "replace")
            return write_error(
                request, listener, 404, f"no route for {request.method.decode('latin-1')} {path}"
            )
        return self.forward(
            request, listener, None, kind="bypass", parse_json=False, provider=provider
        )

    # -- forwarding ------------------------------------------------------

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
            return write_error(
                request, listener, 404, f"{path} is not served: api_dialect is {self.settings.api_dialect}"
            )
        if getattr(request, "body_too_large", False):
            limit = self.settings.http_server.max_request_body_bytes
            return write_error(request, listener, 413, body_limit_message(limit))
        received = self.clock.seconds()
        body = self.redact_upstream(request.content.read() if request.content is not None else b"")
        header = header_reader(request.requestHeaders)
        # parse (raises BadRequestBody: a 400 via domain_error, nothing sent)
        view = parse_request(dialect, body, header, parse_json=parse_json)
        parsed = self.clock.seconds()
        # choose
        plan = self._plan(view, listener, header) if provider is None else None
        if plan is not None:
            if plan.marker is not None:
                body = strip_markers(view.dialect, body)
            provider = self.providers[plan.attempts[0].provider_name]
        if provider is None:
            provider = self._default_provider(listener, view.dialect if parse_json else None)
        if provider is None:
            raise NoProvider(f"no enabled {listener} provider is configured")
        # modify: the model maps or the provider's configured model replace
        # the client's (with a plan, per attempt in the send step; for a
        # translated request, in the translation).
        settings = getattr(provider, "settings", None)
        if plan is None and view.json is not None and settings is not None:
            configured = resolve_model(view.model, settings)
            translated = provider_dialect(view.dialect, provider.provider_type, settings) is not None
            if configured and view.model != configured and not translated:
                body = replace_model(body, configured)

        flight = _InFlight()
        name = provider.name
        load = self._provider_load[name] = self._provider_load.get(name, 0) + 1
        provider.note_in_flight(load)
        d = defer.ensureDeferred(
            self._run(request, flight, listener, view, provider, body, received, kind, plan, parsed)
        )
        self.in_flight[d] = flight

        def untrack(result: Any) -> Any:
            self._provider_load[name] -= 1
            self.in_flight.pop(d, None)
            if not flight.finished.called:
                flight.finished.callback(None)
            return result

        d.addBoth(untrack)
        return d

    async def _run(
        self,
        request: Any,
        flight: _InFlight,
        listener: str,
        view: RequestView,
        provider: IProvider,
        body: bytes,
        received: float,
        kind: str,
        plan: Plan | None = None,
        parsed: float | None = None,
    ) -> bytes | None:
        """
        Send, relay, classify and record one request.  Answers every failure
        itself, in the client's dialect, and hands exactly one finished
        exchange to the sinks.
        """
        exchange = self._start_exchange(request, listener, view, provider, body, received, kind)
        exchange.timings.parsed = parsed
        if plan is not None:
            exchange.rule = plan.rule_name
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        try:
            return await self._send_and_relay(request, flight, exchange, view, provider, body, gone, plan)
        except defer.CancelledError:
            # Klein cancels the handler when the client goes away.
            if exchange.outcome == "ok" and exchange.error is None:
                exchange.outcome, exchange.error = "client_disconnected", "the client went away"
            raise
        except Exception as exc:
            log.failure("forwarding {path} failed unexpectedly", path=exchange.path)
            exchange.outcome = "gateway_error"
            exchange.error = f"internal gateway error: {type(exc).__name__}"
            if not request.startedWriting and not gone:
                exchange.status = 500
                return write_error(request, listener, 500, "internal gateway error", "internal_error")
            await self._end_incomplete(request, gone)
            return None
        finally:
            self._finish(exchange)

    def redact_upstream(self, body: bytes) -> bytes:
        """
        The request body with PII redacted when C{pii.apply_to_upstream} is
        on (before it is parsed, so routing, the provider and the record all
        see the redacted request; the model then sees placeholders), else
        C{body} itself.  A body with nothing to redact stays byte for byte.

        @raise RedactionFailed: redaction failed; the request is not sent
            (answered with a 500 in the client's dialect).
        """
        if self._upstream_redactor is None:
            return body
        return redact_request_body(body, self._upstream_redactor)

    def start_socket_exchange(
        self, upgrade: Any, view: RequestView, provider: IProvider, body: bytes, received: float
    ) -> Exchange:
        """The exchange of one WebSocket turn, as its HTTP twin would start it."""
        exchange = self._start_exchange(upgrade, "openai", view, provider, body, received, "conversation")
        exchange.method = "POST"
        return exchange

    def plan_turn(self, view: RequestView, header: Callable[[str], str | None]) -> Plan | None:
        """The choose step of one WebSocket turn (see L{_plan})."""
        return self._plan(view, "openai", header)

    def _plan(self, view: RequestView, listener: str, header: Callable[[str], str | None]) -> Plan | None:
        """
        The choose step with routing: the request's plan of attempts, or
        C{None} without routing (or for a body the gateway does not read).
        Raises L{NoProvider} when every provider of the plan is skipped.
        """
        if self._router is None or view.json is None:
            return None
        plan = self._router.plan(view, listener, header)
        if not plan.attempts:
            skipped = ", ".join(name for name, why in plan.skipped if why == "circuit_open") or "none"
            raise NoProvider(f"no provider can take this request now (circuit open: {skipped})")
        return plan

    async def send_turn(
        self, request: Any, flight: Any, exchange: Exchange, view: RequestView, body: bytes, plan: Plan
    ) -> tuple[Any, IProvider]:
        """
        The send step of one WebSocket turn with routing, as for HTTP:
        C{request} carries the turn's C{method} and C{requestHeaders};
        C{flight.sending} holds the pending attempt (for cancelling).
        """
        assert self._router is not None
        return await self._send_plan(request, flight, exchange, view, body, b"", plan, self._router)

    def turn_provider(self) -> IProvider | None:
        """
        The provider of a WebSocket turn without routing: the OpenAI one, or,
        when none is enabled, the provider a translator reaches (Codex on Claude).
        """
        return self._default_provider("openai", "openai_responses")

    def turn_translator(self, view: RequestView, provider: IProvider) -> Translator | None:
        """The translator a turn sent to C{provider} needs (C{None}: passthrough)."""
        return self._translation(view, provider)

    def finish_exchange(self, exchange: Exchange) -> None:
        """Enrich, seal and hand a finished exchange to the sinks (WebSocket turns)."""
        self._finish(exchange)

    def _start_exchange(
        self,
        request: Any,
        listener: str,
        view: RequestView,
        provider: IProvider,
        body: bytes,
        received: float,
        kind: str,
    ) -> Exchange:
        exchange = Exchange(
            request_id=str(uuid.uuid4()),
            session_id=view.session_id or new_session_id(),
            listener=listener,
            kind=kind,
            dialect=view.dialect or listener,
            path=request.path.decode("utf-8", "replace"),
            method=request.method.decode("latin-1"),
            timings=Timings(received=received),
            provider=provider.name,
            model=view.model_label,
            streaming=view.stream,
            client_ip=_client_ip(request),
            user_agent=bounded(first_header(request, b"user-agent")),
            request_body=body,
            request_json=view.json,
            request_headers=MaskedHeaders(request.requestHeaders),
        )
        if self.request_log is not None:
            try:
                self.request_log.started(exchange)
            except Exception:
                log.failure("request log failed")
        for observer in self._start_observers:
            try:
                observer(exchange)
            except Exception:
                log.failure("start observer {observer!r} failed", observer=observer)
        return exchange

    async def _send_and_relay(
        self,
        request: Any,
        flight: _InFlight,
        exchange: Exchange,
        view: RequestView,
        provider: IProvider,
        body: bytes,
        gone: list[bool],
        plan: Plan | None = None,
    ) -> bytes | None:
        clock = self.clock
        timings = exchange.timings
        listener = exchange.listener

        # send
        query = request.uri.partition(b"?")[2]
        timings.upstream_sent = clock.seconds()
        try:
            if plan is not None and self._router is not None:
                response, provider = await self._send_plan(
                    request, flight, exchange, view, body, query, plan, self._router
                )
                exchange.provider = provider.name
            else:
                path, query, headers, payload = self.upstream_request(request, exchange, view, provider, body, query)
                flight.sending = provider.request(request.method, path, query, headers, payload)
                response = await flight.sending
        except _EstimateLocally as local:
            try:
                return self._estimate_tokens(request, exchange, view, local.provider)
            except UntranslatableField as exc:
                # A body the estimate cannot read: the 400 a provider would give.
                status, code = status_for(exc)
                exchange.status = status
                exchange.outcome, exchange.error = "bad_request", str(exc)
                return write_error(request, listener, status, str(exc), code)
        except UpstreamError as exc:
            status, code = status_for(exc)
            exchange.status = status
            exchange.outcome = "timeout" if status == 504 else "unreachable"
            exchange.error = str(exc)
            return write_error(request, listener, status, str(exc), code)
        except defer.CancelledError:
            if not flight.cut_requested:
                raise
            exchange.status = 503
            exchange.outcome, exchange.error = "interrupted", "the gateway stopped before the provider answered"
            return write_error(request, listener, 503, "the gateway is shutting down", "shutting_down")
        except LunaRouteError as exc:
            # The provider refused the request before sending (a bad target).
            status, code = status_for(exc)
            exchange.status = status
            exchange.outcome, exchange.error = "bad_request", str(exc)
            return write_error(request, listener, status, str(exc), code)
        finally:
            flight.sending = None

        # relay
        timings.headers_received = clock.seconds()
        exchange.status = response.code
        request.setResponseCode(response.code, response.phrase or None)
        translator = self._translation(view, provider)
        relay: RelayProtocol
        capture: ResponseCapture | None
        if translator is not None:
            relay, capture = self._translating_relay(request, exchange, view, provider, response, translator)
        else:
            # Relay exactly the provider's headers; no default content type.
            request.defaultContentType = None
            for name, values in relayed_response_headers(response.headers):
                request.responseHeaders.setRawHeaders(name, values)

            capture = None
            if view.dialect is not None:
                capture = ResponseCapture(
                    view.dialect,
                    streaming=view.stream,
                    content_type=first_value(response.headers, b"content-type"),
                    content_encoding=first_value(response.headers, b"content-encoding"),
                    on_event=self.request_log.listener(exchange) if self.request_log is not None else None,
                    bulk_bytes=TAP_BULK_BYTES,
                )
            on_chunk = capture.feed if capture is not None else _ignore
            relay = RelayProtocol(request, clock, on_chunk, idle_timeout=_idle_timeout(provider))
        flight.relay = relay
        if flight.cut_requested:
            relay.cut_by_gateway = True
        response.deliverBody(relay)
        try:
            await relay.done
        finally:
            # Whatever happens next, what the relay saw goes into the record.
            self._collect(exchange, relay, capture, response)

        # classify
        end = RelayEnd(
            bytes_relayed=relay.bytes,
            upstream_lost=relay.lost,
            timed_out=relay.timed_out,
            client_gone=bool(gone),
            cut_by_gateway=relay.cut_by_gateway,
        )
        verdict: Classification = classify_relay(response.code, end, exchange.response)
        exchange.outcome, exchange.error, exchange.error_type = (
            verdict.outcome,
            verdict.error,
            verdict.error_type,
        )
        if isinstance(relay, TranslatingRelay) and relay.translation_error is not None:
            exchange.error = relay.translation_error
            if verdict.outcome == "ok":
                exchange.outcome = "gateway_error"
                exchange.status = 502
        elif isinstance(relay, TranslatingRelay) and relay.ended_early is not None and verdict.outcome == "ok":
            exchange.outcome, exchange.error = "stream_error", relay.ended_early
        if verdict.complete:
            # The client gets the end of its response before any bookkeeping.
            timings.finished = clock.seconds()
            request.finish()
        elif not gone:
            await self._end_incomplete(request, gone)
        return None

    async def _send_plan(
        self,
        request: Any,
        flight: _InFlight,
        exchange: Exchange,
        view: RequestView,
        body: bytes,
        query: bytes,
        plan: Plan,
        router: Router,
    ) -> tuple[Any, IProvider]:
        """
        The send step with routing: try the plan's attempts in order, retry
        on the same provider or fall back as the router decides, and return
        the response to relay with the provider that gave it.  Nothing has
        been relayed yet, so any attempt may still be replaced.  Raises the
        last L{UpstreamError} when no attempt produced a response.
        """
        clock = self.clock
        index = retries = 0
        first_failure: Outcome | None = None
        last_error: UpstreamError | None = None
        attempts = plan.attempts
        while index < len(attempts):
            attempt = attempts[index]
            provider = self.providers[attempt.provider_name]
            # Built before the breaker is asked: a request that cannot be
            # translated is the client's 400, and no probe slot is taken.
            path, attempt_query, headers, payload = self._attempt_request(
                request, exchange, view, provider, body, query, plan, router, index, first_failure
            )
            if not router.acquire(attempt):
                outcome = Outcome(error=CIRCUIT_OPEN, detail="circuit breaker open")
                exchange.attempts.append(_attempt_record(attempt, outcome, None))
                first_failure = first_failure or outcome
                last_error = UpstreamUnreachable(
                    f"{provider.name}: circuit breaker open", provider=provider.name
                )
                index, retries = index + 1, 0
                continue
            started = clock.seconds()
            flight.sending = provider.request(request.method, path, attempt_query, headers, payload)
            response = None
            try:
                response = await flight.sending
                outcome = Outcome.from_status(
                    response.code, retry_after_from_headers(header_reader(response.headers), clock.seconds())
                )
            except defer.CancelledError:
                router.record(attempt, Outcome(error=CANCELLED))
                raise
            except UpstreamError as exc:
                outcome = Outcome.from_exception(exc)
                last_error = exc
            finally:
                flight.sending = None
            elapsed = clock.seconds() - started
            router.record(attempt, outcome, elapsed)
            exchange.attempts.append(_attempt_record(attempt, outcome, elapsed))
            # HTTPProvider already retried a request that never left.
            done = retries
            if outcome.error == NOT_SENT:
                done = max(retries, provider.settings.http_client.max_retries)
            decision = router.decide(plan, index, outcome, done)
            if decision.action in (SUCCESS, FINAL):
                if response is not None:
                    return response, provider
                assert last_error is not None
                raise last_error
            first_failure = first_failure or outcome
            if response is not None:
                _discard_body(response)
            if decision.action == RETRY_SAME:
                await task.deferLater(clock, decision.delay_secs)
                retries += 1
                continue
            index, retries = index + 1, 0
        if last_error is not None:
            raise last_error
        raise NoProvider("no provider can take this request now")

    def upstream_request(
        self,
        request: Any,
        exchange: Exchange,
        view: RequestView,
        provider: IProvider,
        payload: bytes,
        query: bytes = b"",
    ) -> tuple[str, bytes, Any, bytes]:
        """
        What a request without routing (an HTTP request or a WebSocket turn)
        sends to C{provider}: (path, query, headers, body).  Passthrough:
        the client's end-to-end headers and C{payload} (its model already
        replaced by L{forward}); translated: the translator's request for
        the mapped model.  Either way with the provider's request
        modification (L{_modify}).  Raises
        L{lunaroute.dialects.translate.errors.UntranslatableField}, or
        L{_EstimateLocally} (C{count_tokens} for a provider without one).
        """
        mapped = resolve_model(view.model, getattr(provider, "settings", None))
        translator = self._translation(view, provider)
        if translator is not None:
            if exchange.kind == "count_tokens":
                raise _EstimateLocally(provider)
            path, headers, body = self._translated_request(
                request, exchange, provider, translator, view.json or {}, mapped
            )
            body = self._modify(provider, exchange, headers, path, body, mapped or view.model, translator.target)
            return path, b"", headers, body
        headers = self.upstream_headers(request.requestHeaders, exchange)
        body = self._modify(provider, exchange, headers, exchange.path, payload, mapped or view.model, exchange.dialect)
        return exchange.path, query, headers, body

    def _modify(
        self,
        provider: IProvider,
        exchange: Exchange,
        headers: Any,
        path: str,
        payload: bytes,
        model: str | None,
        dialect: str | None,
    ) -> bytes:
        """
        The modify step's per-attempt part: C{provider}'s C{request_headers}
        set on C{headers} (in place) and its C{request_body} applied to
        C{payload}, which is in C{dialect} (the provider's own for a
        translated attempt) (L{lunaroute.modify}).  A changed body is
        recorded as the provider's view (C{exchange.upstream_body}); without
        changes the payload's bytes go unchanged.
        """
        modifier = self._modifiers.get(provider.name)
        if modifier is None:
            return payload
        context = TemplateContext(
            provider=provider.name,
            model=model or "",
            session_id=exchange.session_id,
            request_id=exchange.request_id,
            client=client_name(exchange.user_agent) or "",
        )
        for name, value in modifier.header_values(context):
            headers.setRawHeaders(name, [value])
        if exchange.kind == "conversation":
            changed = modifier.modify_body(dialect, payload, context)
            if changed is not None:
                exchange.upstream_body, exchange.upstream_path = changed, path
                return changed
        return payload

    def _attempt_request(
        self,
        request: Any,
        exchange: Exchange,
        view: RequestView,
        provider: IProvider,
        body: bytes,
        query: bytes,
        plan: Plan,
        router: Router,
        index: int,
        first_failure: Outcome | None,
    ) -> tuple[str, bytes, Any, bytes]:
        """
        What attempt C{index} of C{plan} sends to C{provider}: (path, query,
        headers, body).  Passthrough: the client's bytes with the attempt's
        model and, on a fallback, the switch notice.  Translated: the
        translator's request (L{_translated_request}).  Either way with the
        provider's request modification (L{_modify}).  Raises
        L{lunaroute.dialects.translate.errors.UntranslatableField}, or
        L{_EstimateLocally} (C{count_tokens} for a provider without one).
        """
        attempt = plan.attempts[index]
        translator = self._translation(view, provider)
        if translator is not None:
            if exchange.kind == "count_tokens":
                raise _EstimateLocally(provider)
            source = self._attempt_source(view, body, plan, router, index, first_failure)
            path, headers, payload = self._translated_request(
                request, exchange, provider, translator, source, attempt.model
            )
            model = attempt.model or view.model
            return path, b"", headers, self._modify(provider, exchange, headers, path, payload, model, translator.target)
        exchange.upstream_body = exchange.upstream_path = None
        payload = body
        if attempt.model and view.json is not None and view.model != attempt.model:
            payload = replace_model(payload, attempt.model)
        if index > 0 and first_failure is not None:
            notice = router.switch_notice(plan, index, first_failure, view.model or "")
            if notice:
                payload = inject_switch_notice(view.dialect, payload, notice)
        headers = self.upstream_headers(request.requestHeaders, exchange)
        model = attempt.model or view.model
        return exchange.path, query, headers, self._modify(provider, exchange, headers, exchange.path, payload, model, exchange.dialect)

    # -- translation (the send and relay steps of a translated attempt) ----

    def _translation(self, view: RequestView, provider: IProvider) -> Translator | None:
        """The translator an attempt on C{provider} needs (C{None}: passthrough); raises L{NoTranslator}."""
        if view.json is None:
            return None
        return translation_for(view.dialect, provider)

    def _attempt_source(
        self, view: RequestView, body: bytes, plan: Plan, router: Router, index: int, first_failure: Outcome | None
    ) -> dict[str, Any]:
        """
        The client's request as JSON for a translated attempt: the parsed
        body, unless the modify step changed the bytes (a marker stripped)
        or a fallback adds the switch notice (both rare: parsed again).
        """
        changed = body
        if index > 0 and first_failure is not None:
            notice = router.switch_notice(plan, index, first_failure, view.model or "")
            if notice:
                changed = inject_switch_notice(view.dialect, changed, notice)
        if changed is body and plan.marker is None and view.json is not None:
            return view.json
        parsed = json.loads(changed)
        return parsed if isinstance(parsed, dict) else {}

    def _translated_request(
        self,
        request: Any,
        exchange: Exchange,
        provider: IProvider,
        translator: Translator,
        source: dict[str, Any],
        model: str | None,
    ) -> tuple[str, Any, bytes]:
        """
        The provider's request for a translated attempt: (path, headers,
        body).  Raises L{lunaroute.dialects.translate.errors.UntranslatableField}
        (a 400 naming the field; nothing sent).  The exchange keeps the
        provider's view (C{upstream_body}, C{upstream_path}).
        """
        dropped: list[str] = []
        try:
            translated = translator.request(source, model, dropped)
            if translated.get("messages") == []:
                # Both dialects refuse an empty conversation, naming their own field.
                field = "input" if translator.source == "openai_responses" else "messages"
                raise UntranslatableField(field, "holds no message to send")
            payload = encode_body(translated, source)
        except RecursionError:
            # Within the parser's nesting limit, but not with the frames a translation adds.
            raise UntranslatableField("body", "is nested too deeply to translate") from None
        if dropped:
            log.debug(
                "translating {source} to {target} for {provider} dropped {fields}",
                source=translator.source, target=translator.target, provider=provider.name,
                fields=", ".join(dropped[:20]),
            )
        if not getattr(provider, "has_server_key", True) and provider.name not in self._warned_keyless:
            self._warned_keyless.add(provider.name)
            log.warn(
                "provider {provider} has no api_key: translated {source} requests go to it without "
                "credentials (the client's are never sent to another dialect's provider); fine for "
                "Ollama or vLLM, an error for a provider that needs a key",
                provider=provider.name, source=translator.source,
            )
        exchange.upstream_body = payload
        exchange.upstream_path = translator.target_path
        headers = translated_request_headers(request.requestHeaders, translator.source, translator.target)
        if self._trace_propagator is not None:
            self._trace_propagator(exchange, headers)
        return translator.target_path, headers, payload

    def _translating_relay(
        self,
        request: Any,
        exchange: Exchange,
        view: RequestView,
        provider: IProvider,
        response: Any,
        translator: Translator,
    ) -> tuple[TranslatingRelay, ResponseCapture]:
        """
        Headers and relay for a translated attempt's answer: the client gets
        its own content type; the capture reads the provider's dialect (its
        usage, its model, for the record and the cost).
        """
        content_type = first_value(response.headers, b"content-type")
        content_encoding = first_value(response.headers, b"content-encoding")
        provider_streams = 200 <= response.code < 300 and (content_type or "").lower().startswith("text/event-stream")
        # A stream to a client that did not ask for one is refused (a 502
        # naming why), never handed to a client that expects one JSON object.
        streaming = provider_streams and bool(view.stream)
        request.defaultContentType = None
        for name, values in translated_response_headers(response.headers):
            request.responseHeaders.setRawHeaders(name, values)
        # A client that asked for a stream gets one even when the provider
        # answered 2xx JSON (a server that ignores stream: true).
        client_stream = bool(view.stream) and 200 <= response.code < 300
        request.setHeader(b"content-type", b"text/event-stream" if streaming or client_stream else b"application/json")
        if streaming or client_stream:
            request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-lunaroute-translated", f"{translator.source}->{translator.target}".encode())
        hint = None
        if not getattr(provider, "has_server_key", True):
            hint = (
                f"LunaRoute: provider {provider.name!r} has no api_key configured, and the client's "
                f"{translator.source} credentials are never forwarded to a {translator.target} provider"
            )
        relay = TranslatingRelay(
            request, self.clock, _idle_timeout(provider),
            translator=translator, client_model=view.model or "", status=response.code,
            streaming=streaming, content_type=content_type, content_encoding=content_encoding, no_key_hint=hint,
            secret=getattr(getattr(provider, "settings", None), "api_key", None), client_stream=client_stream,
            on_provider_event=(
                self.request_log.listener(exchange, translator.target) if self.request_log is not None else None
            ),
        )
        capture = relay.capture
        return relay, capture

    def _estimate_tokens(self, request: Any, exchange: Exchange, view: RequestView, provider: IProvider) -> bytes:
        """
        C{count_tokens} for a provider without one: answered here with an
        estimate (L{estimate_input_tokens}), marked so in a header and in
        the record's response headers.
        """
        body = view.json or {}
        try:
            check_messages_request(body)
            tokens = estimate_input_tokens(body)
        except RecursionError:
            raise UntranslatableField("body", "is nested too deeply to count") from None
        exchange.provider = provider.name
        exchange.status = 200
        exchange.upstream_body = exchange.upstream_path = None
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-lunaroute-estimated", b"true")
        exchange.response_headers = {"content-type": "application/json", "x-lunaroute-estimated": "true"}
        return encode_json({"input_tokens": tokens})

    async def _end_incomplete(self, request: Any, gone: list[bool]) -> None:
        """
        End a response whose body is incomplete: the client first gets every
        byte already relayed, then the connection closes without the chunked
        terminator, so it knows the body was cut.  Returns once the
        connection is gone (so nothing finishes the response after all).
        """
        channel = getattr(request, "channel", None)
        transport = getattr(channel, "transport", None)
        if transport is None or gone:
            return
        closed = request.notifyFinish()
        # Through the request (its channel), not the transport: the channel
        # is the transport's producer, and a transport whose producer was
        # paused by a full buffer (a slow client) never closes after
        # flushing while that producer stays registered.
        request.loseConnection()
        abort: IDelayedCall = self.clock.callLater(CUT_GRACE_SECS, transport.abortConnection)
        try:
            await closed
        except Exception:
            pass
        finally:
            if abort.active():
                abort.cancel()

    def _collect(
        self,
        exchange: Exchange,
        relay: RelayProtocol,
        capture: ResponseCapture | None,
        response: Any,
    ) -> None:
        """Gather what the relay saw, once the client has its answer."""
        exchange.response_headers = MaskedHeaders(response.headers)
        timings = exchange.timings
        timings.first_byte = relay.first_byte
        timings.last_byte = relay.last_byte
        exchange.bytes_out = relay.client_bytes if isinstance(relay, TranslatingRelay) else relay.bytes
        exchange.chunk_count = relay.chunks
        exchange.chunk_gaps_ms = relay.gaps_ms
        if capture is not None:
            exchange.response = capture.finish()

    def _finish(self, exchange: Exchange) -> None:
        """
        Enrich and seal the exchange, then hand the finished record to the
        request log and the sinks.  They are best effort: none of them may
        break or delay the response.
        """
        timings = exchange.timings
        if timings.finished is None:
            timings.finished = self.clock.seconds()
        enrichment = None
        if self._enricher is not None:
            try:
                enrichment = self._enricher(exchange)
            except Exception:
                log.failure("enriching {request_id} failed", request_id=exchange.request_id)
        exchange.complete(enrichment)
        if debug_enabled():
            self._log_debug(exchange)
        if self.request_log is not None:
            try:
                self.request_log.finished(exchange)
            except Exception:
                log.failure("request log failed")
        for sink in self._sinks:
            try:
                sink(exchange)
            except Exception:
                log.failure("exchange sink {sink!r} failed", sink=sink)

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
        then cut the ones still running (their clients get what was relayed
        and a connection that ends without the body's terminator).
        """
        flights = list(self.in_flight.values())
        if not flights:
            self.close_sockets()
            return defer.succeed(None)
        log.info("waiting up to {timeout}s for {n} in-flight request(s)", timeout=timeout, n=len(flights))
        waiter = defer.DeferredList([_observe(f.finished) for f in flights], consumeErrors=True)
        call = self.clock.callLater(timeout, self.cut_all)

        def done(_: Any) -> None:
            if call.active():
                call.cancel()
            self.close_sockets()

        return waiter.addBoth(done)

    def close_sockets(self) -> None:
        """Close every client WebSocket (close code 1000); their turns have ended."""
        for socket in list(self.sockets):
            try:
                socket.going_away()
            except Exception:
                log.failure("closing a WebSocket failed")

    def cut_all(self) -> None:
        """Cut every in-flight request now (shutdown deadline, or a second stop signal)."""
        for flight in list(self.in_flight.values()):
            flight.cut()


class HotRoutes(Resource):
    """
    The gateway's routes: the three conversation routes Claude Code, Codex
    and the SDKs call on every turn are found by a dict lookup on the exact
    method and path (L{GatewayApp.render_hot}); everything else goes
    through Klein's URL map.  Klein's routing (URL parts, binding and
    matching a Werkzeug map per request) was about a tenth of the gateway's
    own CPU per request.
    """

    isLeaf = True

    _HOT = {
        b"/v1/messages": ("anthropic", "anthropic"),
        b"/v1/chat/completions": ("openai", "openai_chat"),
        b"/v1/responses": ("openai", "openai_responses"),
    }

    def __init__(self, gateway: GatewayApp, routes: Any) -> None:
        super().__init__()
        self._gateway = gateway
        self._routes = routes

    def render(self, request: Any) -> Any:
        if request.method == b"POST":
            hot = self._HOT.get(request.path)
            if hot is not None:
                return self._gateway.render_hot(request, *hot)
        return self._routes.render(request)


class _EstimateLocally(Exception):
    """The send step's answer to C{count_tokens} for a provider that has none: estimate here."""

    def __init__(self, provider: IProvider) -> None:
        super().__init__(provider.name)
        self.provider = provider


def _observe(d: defer.Deferred[None]) -> defer.Deferred[None]:
    """A Deferred that fires when C{d} does, without taking its result."""
    waiter: defer.Deferred[None] = defer.Deferred()

    def fire(result: Any) -> Any:
        if not waiter.called:
            waiter.callback(None)
        return result

    d.addBoth(fire)
    return waiter


def _ignore(chunk: bytes) -> None:
    pass


class _DiscardBody(Protocol):
    """Reads a response body nobody will see, so its connection goes back to the pool."""

    def dataReceived(self, data: bytes) -> None:
        pass


def _discard_body(response: Any) -> None:
    response.deliverBody(_DiscardBody())


def _attempt_record(attempt: Attempt, outcome: Outcome, elapsed: float | None) -> dict[str, Any]:
    """One attempt as the exchange records it (session API, UI)."""
    return {
        "provider": attempt.provider_name,
        "rule": attempt.rule_name,
        "reason": attempt.reason,
        "status": outcome.status,
        "error": outcome.error,
        "detail": outcome.detail,
        "duration_ms": round(elapsed * 1000.0, 3) if elapsed is not None else None,
    }


def _client_ip(request: Any) -> str | None:
    peer = request.getClientAddress()
    return getattr(peer, "host", None)


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _idle_timeout(provider: IProvider) -> float:
    """How long a stream may stay silent: the provider's request timeout."""
    settings = getattr(provider, "settings", None)
    return settings.http_client.timeout_secs if settings is not None else 600.0
