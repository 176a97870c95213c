"""
Wiring: builds the gateway's C{MultiService} from settings.

Children are started in order and stopped in an explicit order (a plain
C{MultiService} stops them all at once and swallows errors): stop listening,
let in-flight streams finish within C{shutdown_timeout_secs}, drain the
recorder, close the connection pools.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from lunaroute.config import Settings, setting_lines
from lunaroute.errors import ConfigError
from lunaroute.logs import log_observer, set_log_level
from lunaroute.metrics import GatewayMetrics
from lunaroute.providers import providers_from_settings
from lunaroute.proxy.app import GatewayApp
from lunaroute.proxy.reqlog import RequestLogPrinter
from lunaroute.proxy.site import ListenerService, gateway_site
from lunaroute.sessions.recorder import make_recorder
from lunaroute.stats import PricingTable, SessionStatsCollector

log = Logger(observer=log_observer)


def endpoint_description(host: str, port: int) -> str:
    """A strports description for a TCP listener; IPv6 colons are escaped."""
    return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"


class GatewayService(MultiService):
    """
    The whole gateway: the proxy listener and its helpers, stopped in order.
    """

    def __init__(self, settings: Settings, reactor: Any) -> None:
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.providers = providers_from_settings(settings, reactor=reactor)
        request_log = None
        if settings.logging.log_requests:
            request_log = RequestLogPrinter(debug=settings.logging.level == "debug")
        self.gateway = GatewayApp(
            settings, self.providers, clock=reactor, request_log=request_log
        )
        self.site = gateway_site(self.gateway.resource(), settings.http_server, reactor)
        self.proxy_listener = ListenerService(
            serverFromString(reactor, endpoint_description(settings.host, settings.port)),
            self.site,
            f"{settings.host}:{settings.port}",
            reactor,
        )
        self.proxy_listener.setName("proxy")
        self.proxy_listener.setServiceParent(self)
        # Services stopped after the proxy has drained, in this order.
        self.drained_services: list[Any] = []
        # Observers run in this order: statistics first (it fills in the
        # exchange's cost and tool results), then the recorder, then metrics.
        statistics = settings.statistics
        self.pricing = PricingTable.load(statistics.pricing_file, statistics.pricing)
        self.stats = SessionStatsCollector(statistics.session_stats_max_sessions, self.pricing)
        self.gateway.observers.append(self.stats.observe)
        self.gateway.stats = self.stats
        self.recorder = make_recorder(settings.session_recording, reactor)
        if self.recorder is not None:
            self.add_drained_service(self.recorder)
            self.gateway.observers.append(self.recorder.record)
        self.metrics: GatewayMetrics | None = None
        if settings.metrics.enabled:
            self.metrics = GatewayMetrics()
            self.gateway.start_observers.append(self.metrics.request_started)
            self.gateway.observers.append(self.metrics.observe)
            self.gateway.metrics_renderer = self.metrics.render
            if self.recorder is not None:
                self.metrics.bind_recorder(self.recorder)
            self.metrics.bind_pools(self.providers)

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
        super().startService()
        log.info(
            "LunaRoute listening on http://{host}:{port}",
            host=self.settings.host,
            port=self.settings.port,
        )

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        self.running = False
        log.info("LunaRoute stopping")
        yield _quietly(self.proxy_listener.stopService(), "stop listening")
        self.gateway.stop_accepting()
        yield _quietly(
            self.gateway.drain(self.settings.shutdown_timeout_secs), "drain in-flight requests"
        )
        for service in self.drained_services:
            yield _quietly(defer.maybeDeferred(service.stopService), f"stop {service.name}")
        for provider in self.providers.values():
            yield _quietly(provider.close(), f"close {provider.name} pool")
        if self.settings.statistics.print_summary or self.settings.logging.level == "debug":
            try:
                log.info("session summary\n{summary}", summary=self.stats.summary_text())
            except Exception:
                log.failure("could not build the session summary")
        log.info("LunaRoute stopped")
        # twistd re-raises the stop signal on exit (status -15/143).  A
        # graceful stop that finished its work is a clean exit: status 0.
        if getattr(self.reactor, "_exitSignal", None) is not None:
            self.reactor._exitSignal = None


def _quietly(d: defer.Deferred[Any], what: str) -> defer.Deferred[Any]:
    def report(failure: Any) -> None:
        log.failure("shutdown step failed: {what}", failure, what=what)

    return d.addErrback(report)


def make_gateway_service(settings: Settings, reactor: Any = None) -> GatewayService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    set_log_level(settings.logging.level)
    try:
        return GatewayService(settings, reactor)
    except ConfigError as exc:
        # Raised while loading the pricing table: one line, like other config errors.
        raise SystemExit(f"lunaroute: configuration error: {exc}") from None
