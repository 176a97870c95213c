"""
Wiring: builds the gateway's C{MultiService} from settings.

Children are started in order and stopped in an explicit order (a plain
C{MultiService} stops them all at once and swallows errors): stop listening,
let in-flight streams finish within C{shutdown_timeout_secs}, drain the
recorder, close the connection pools.
"""

from __future__ import annotations

import ipaddress
import signal
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from lunaroute.api import with_session_api
from lunaroute.config import Settings, setting_lines
from lunaroute.errors import ConfigError
from lunaroute.logs import log_observer, set_log_level
from lunaroute.metrics import GatewayMetrics
from lunaroute.pii.redactor import redactor_from_settings
from lunaroute.providers import providers_from_settings
from lunaroute.providers.health import ReadinessChecker
from lunaroute.proxy.access import AccessPolicy, GuardedResource
from lunaroute.proxy.app import GatewayApp
from lunaroute.proxy.reqlog import RequestLogPrinter
from lunaroute.proxy.site import ListenerService, gateway_site
from lunaroute.routing.plan import Router
from lunaroute.sessions.recorder import make_recorder
from lunaroute.sessions.retention import make_retention_service
from lunaroute.sessions.store import make_session_store
from lunaroute.stats import PricingTable, SessionStatsCollector
from lunaroute.twisted_compat import clear_exit_signal
from lunaroute.ui import make_ui_service, ui_url

log = Logger(observer=log_observer)


def endpoint_description(host: str, port: int) -> str:
    """A strports description for a TCP listener; IPv6 colons are escaped."""
    return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"


class GatewayService(MultiService):
    """
    The whole gateway: the proxy listener and its helpers, stopped in order.
    """

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        *,
        second_signal_cuts: bool = False,
        providers: dict[str, Any] | None = None,
    ) -> None:
        """
        @param providers: the L{IProvider}s by name; by default one
            L{lunaroute.providers.HTTPProvider} per enabled provider of
            C{settings} (benchmarks pass in-memory ones).
        """
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        # Under twistd: a second SIGINT/SIGTERM during the graceful stop cuts
        # the streams still running instead of waiting for them.
        self._second_signal_cuts = second_signal_cuts
        self.providers = providers if providers is not None else providers_from_settings(settings, reactor=reactor)
        # Services stopped after the proxy has drained, in this order.
        self.drained_services: list[Any] = []

        # The sinks, built first so the gateway receives them whole.  The
        # statistics collector also provides the enrich step (cost, tool
        # results), which runs before the record is sealed; the sinks then
        # only read it.
        statistics = settings.statistics
        self.pricing = PricingTable.load(statistics.pricing_file, statistics.pricing)
        self.stats = SessionStatsCollector(statistics.session_stats_max_sessions, self.pricing)
        # PII redaction (session_recording.pii): of the records on the
        # recorder's thread, of the request log, and of what is sent
        # upstream only with apply_to_upstream.
        self.redactor = redactor_from_settings(settings.session_recording.pii)
        self.recorder = make_recorder(settings.session_recording, reactor, self.redactor)
        # Rule-based routing, retries and fallbacks only when configured: a
        # plain gateway stays a pure passthrough (the client's own retry
        # logic sees every provider answer as it is).  A rule naming a
        # provider that is not running is a ConfigError (one line at start).
        self.router: Router | None = None
        if settings.routing:
            self.router = Router(settings, self.providers, reactor)
        self.metrics: GatewayMetrics | None = None
        if settings.metrics.enabled:
            self.metrics = GatewayMetrics()
            if self.recorder is not None:
                self.metrics.bind_recorder(self.recorder)
            self.metrics.bind_pools(self.providers)
            if self.redactor is not None:
                self.metrics.bind_pii(self.redactor)
            if self.router is not None:
                self.metrics.bind_router(self.router)
        sinks: list[Any] = [self.stats.observe]
        if self.recorder is not None:
            sinks.append(self.recorder.record)
        if self.metrics is not None:
            sinks.append(self.metrics.observe)
        # OpenTelemetry only when on: off, nothing is imported or registered.
        self.tracer = make_tracer_for(settings)
        if self.tracer is not None:
            self.tracer.redactor = self.redactor
            sinks.append(self.tracer.observe)
            if self.metrics is not None:
                from lunaroute.telemetry import TelemetryCollector

                self.metrics.registry.register(TelemetryCollector(self.tracer))

        request_log = None
        if settings.logging.log_requests:
            request_log = RequestLogPrinter(debug=settings.logging.level == "debug", redactor=self.redactor)
        self.gateway = GatewayApp(
            settings,
            self.providers,
            clock=reactor,
            sinks=sinks,
            enricher=self.stats.enrich,
            start_observers=[self.metrics.request_started] if self.metrics is not None else [],
            metrics_renderer=self.metrics.render if self.metrics is not None else None,
            socket_metrics=self.metrics,
            live_stats=self.live_stats,
            readiness=ReadinessChecker(reactor),
            request_log=request_log,
            router=self.router,
            upstream_redactor=(
                self.redactor if self.redactor is not None and settings.session_recording.pii.apply_to_upstream else None
            ),
            trace_propagator=self.tracer.inject if self.tracer is not None else None,
            store_status=self.store_status,
        )
        # The read model (SQLite or PostgreSQL), one for the API and the UI.
        self.session_store = (
            make_session_store(settings.session_recording, reactor) if self.recorder is not None else None
        )
        # The session API (/sessions, /api/...) in front of the proxy routes,
        # all behind the access guard.
        resource = GuardedResource(
            with_session_api(
                self.gateway.resource(), settings, self.recorder, reactor, self.pricing, self.session_store
            ),
            AccessPolicy(settings.http_server),
        )
        self.site = gateway_site(resource, settings.http_server, reactor)
        self.proxy_listener = ListenerService(
            serverFromString(reactor, endpoint_description(settings.host, settings.port)),
            self.site,
            f"{settings.host}:{settings.port}",
            reactor,
        )
        self.proxy_listener.setName("proxy")
        self.proxy_listener.setServiceParent(self)
        # The web UI: its own listener, the third child (None when ui.enabled
        # is false or nothing is recorded to SQLite; setting_lines says why).
        self.ui_listener = make_ui_service(
            settings, self.recorder, reactor, self.pricing, readiness=self.gateway.readiness_report,
            store=self.session_store,
        )
        if self.ui_listener is not None:
            self.ui_listener.setServiceParent(self)
        if self.recorder is not None:
            self.add_drained_service(self.recorder)
        # Session retention (a TimerService), started after the recorder whose
        # thread it uses and stopped before it.
        self.retention = make_retention_service(settings.session_recording, reactor, self.recorder)
        if self.retention is not None:
            self.retention.setServiceParent(self)
            self.drained_services.insert(0, self.retention)
            if self.metrics is not None:
                self.metrics.bind_retention(self.retention)
        if self.tracer is not None:
            from lunaroute.telemetry import TelemetryService

            self.add_drained_service(TelemetryService(self.tracer))

    def _cut_on_second_signal(self) -> None:
        try:
            _install_cut_handlers(self.reactor, self.gateway.cut_all)
        except ValueError:  # not the main thread: nothing to install
            pass

    def live_stats(self) -> dict[str, Any]:
        """What C{GET /_lunaroute/stats} shows: statistics and recording health."""
        out: dict[str, Any] = {"aggregate": self.stats.aggregate(), "sessions": self.stats.sessions()}
        if self.recorder is not None:
            out["recording"] = {
                "queue_depth": self.recorder.queue_depth,
                "dropped_events": self.recorder.dropped_events,
                "lost_exchanges": self.recorder.loss_counts(),
            }
            store = self.store_status()
            if store is not None:
                out["recording"]["store"] = store
        if self.tracer is not None:
            out["telemetry"] = self.tracer.stats()
        return out

    def store_status(self) -> dict[str, Any] | None:
        """The shared store's health for C{/readyz} (the PostgreSQL writer's), or C{None}."""
        if self.recorder is None:
            return None
        for writer in self.recorder.writers:
            status = getattr(writer, "status", None)
            if status is not None:
                result: dict[str, Any] = status()
                return result
        return None

    def listening_port(self) -> defer.Deferred[Any]:
        """
        A Deferred firing with the proxy's L{IListeningPort} once it listens
        (useful with port 0).
        """
        return self.proxy_listener.listening_port()

    def add_drained_service(self, service: Any) -> None:
        """Attach a child that must stop only after in-flight requests end."""
        service.setServiceParent(self)
        self.drained_services.append(service)

    def startService(self) -> None:
        for line in setting_lines(self.settings):
            log.info("{line}", line=line)
        if self.redactor is not None and self.redactor.tokenizes_without_secret:
            log.warn(
                "session_recording.pii: redaction_mode tokenize needs hmac_secret; without one, "
                "values are masked ([EMAIL]) instead of tokenized"
            )
        exposure = exposure_warning(self.settings)
        if exposure:
            log.warn("{warning}", warning=exposure)
        super().startService()
        log.info(
            "LunaRoute listening on http://{host}:{port}",
            host=self.settings.host,
            port=self.settings.port,
        )
        if self.ui_listener is not None:
            # The real port (ui.port 0 picks a free one).
            def listening(port: Any) -> None:
                log.info("LunaRoute UI on {url}", url=ui_url(self.settings, port.getHost().port))

            # A failed listen is reported by the listener itself.
            self.ui_listener.listening_port().addCallbacks(listening, lambda failure: None)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        self.running = False
        log.info("LunaRoute stopping")
        if self._second_signal_cuts:
            self._cut_on_second_signal()
        yield _quietly(self.proxy_listener.stopService(), "stop listening")
        if self.ui_listener is not None:
            yield _quietly(self.ui_listener.stopService(), "stop the UI listener")
        self.gateway.stop_accepting()
        yield _quietly(
            self.gateway.drain(self.settings.shutdown_timeout_secs), "drain in-flight requests"
        )
        for service in self.drained_services:
            yield _quietly(defer.maybeDeferred(service.stopService), f"stop {service.name}")
        if self.router is not None:
            self.router.stop()
        for provider in self.providers.values():
            yield _quietly(provider.close(), f"close {provider.name} pool")
        if self.session_store is not None:
            try:
                self.session_store.close()
            except Exception:
                log.failure("closing the session store failed")
        if self.settings.statistics.print_summary or self.settings.logging.level == "debug":
            try:
                log.info("session summary\n{summary}", summary=self.stats.summary_text())
            except Exception:
                log.failure("could not build the session summary")
        log.info("LunaRoute stopped")
        # twistd re-raises the stop signal on exit (status -15/143).  A
        # graceful stop that finished its work is a clean exit: status 0.
        clear_exit_signal(self.reactor)


def _install_cut_handlers(reactor: Any, cut: Any) -> None:
    """
    Make the next SIGINT or SIGTERM cut in-flight streams at once (the
    recorder still flushes what it accepted), without a traceback.
    """

    def handler(signum: int, frame: Any) -> None:
        log.warn("second stop signal: cutting in-flight requests now")
        reactor.callFromThread(cut)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def is_loopback(host: str) -> bool:
    """Whether C{host} only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(settings: Settings) -> str | None:
    """
    One line for the start-up log when the gateway listens beyond loopback:
    what anyone who can reach the port can read, and the setting that
    protects it.
    """
    if is_loopback(settings.host):
        return None
    if settings.http_server.auth_token:
        guarded = "need the gateway token (http_server.auth_token)"
        if not settings.http_server.require_auth_for_proxy:
            guarded += "; the provider routes do not (http_server.require_auth_for_proxy: false)"
        return f"listening on {settings.host}, beyond loopback: /metrics, /_lunaroute/stats and /sessions {guarded}"
    return (
        f"listening on {settings.host}, beyond loopback: /metrics, /_lunaroute/stats and /sessions are readable "
        "by anyone who can reach this port, and so is the proxy; set http_server.auth_token "
        "(and http_server.require_auth_for_proxy) to protect them"
    )


def make_tracer_for(settings: Settings) -> Any:
    """
    The L{lunaroute.telemetry.GatewayTracer} when telemetry is on, else
    C{None} (and OpenTelemetry is not even imported).

    @raise ConfigError: telemetry is on but the optional packages are missing.
    """
    if not settings.telemetry.enabled:
        return None
    try:
        from lunaroute.telemetry import make_tracer
    except ImportError as exc:
        raise ConfigError(
            f"telemetry is on but OpenTelemetry is not installed ({exc.name or exc}): "
            "pip install 'lunaroute[otel]', or turn telemetry.enabled (and OTEL_EXPORTER_OTLP_ENDPOINT) off"
        ) from None
    types = {name: provider.provider_type for name, provider in settings.providers.items()}
    return make_tracer(settings.telemetry, types)


def _quietly(d: defer.Deferred[Any], what: str) -> defer.Deferred[Any]:
    def report(failure: Any) -> None:
        log.failure("shutdown step failed: {what}", failure, what=what)

    return d.addErrback(report)


def make_gateway_service(
    settings: Settings, reactor: Any = None, *, second_signal_cuts: bool = False
) -> GatewayService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    set_log_level(settings.logging.level)
    try:
        return GatewayService(settings, reactor, second_signal_cuts=second_signal_cuts)
    except ConfigError as exc:
        # Raised while loading the pricing table: one line, like other config errors.
        raise SystemExit(f"lunaroute: configuration error: {exc}") from None
