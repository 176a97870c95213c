"""
Prometheus metrics for the gateway, served at C{GET /metrics}.

Operators watch a gateway for the same few things: is traffic flowing and
succeeding, how slow is the provider, how much does the gateway itself add,
what is being spent, and is anything backing up.  L{GatewayMetrics} turns
each finished L{Exchange} into those figures.  It owns a private
C{CollectorRegistry} (so nothing else in the process leaks into the
exposition and tests can build as many as they like) and reuses the metric
names of the original LunaRoute so existing dashboards keep working.

Two rules shape the code:

  - Label values that come from clients (model names, tool names, paths)
    are bounded: each label keeps the first N distinct values and reports
    the rest as C{other}, so a client cannot create unbounded series.
  - Metrics are off the relay's critical path in spirit: nothing here may
    raise into the caller.  Failures are logged and counted.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from twisted.logger import Logger

from lunaroute.exchange import Exchange
from lunaroute.logs import log_observer
from lunaroute.twisted_compat import idle_connection_count

log = Logger(observer=log_observer)

__all__ = ["BoundedLabels", "BulkHistogram", "GatewayMetrics", "OTHER", "path_family"]

OTHER = "other"
UNKNOWN = "unknown"

# Outcomes that mean the provider could not be used (as opposed to answering
# with an error status, or the client leaving).
_UPSTREAM_ERROR_KINDS = frozenset({"unreachable", "timeout", "stream_error"})

# Buckets, in seconds, sized for what each histogram measures.
_REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TOOL_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")


class BoundedLabels:
    """
    Keep label values bounded: per label name, the first C{max_values}
    distinct values are reported as themselves and anything later as
    C{other}.  Values are also cut to C{max_length} characters, and C{None}
    or empty becomes C{unknown}.

    C{admit=False} reports a value as itself only if it was admitted
    before; metrics use it for model names on failed requests, so a client
    sending random model names (which the provider rejects) cannot use up
    the budget that real models need.
    """

    def __init__(self, max_values: int = 100, max_length: int = 128) -> None:
        if max_values < 1:
            raise ValueError("max_values must be >= 1")
        self.max_values = max_values
        self.max_length = max_length
        self._seen: dict[str, set[str]] = {}

    def __call__(self, label: str, value: Any, admit: bool = True) -> str:
        if value is None or value == "":
            return UNKNOWN
        text = str(value)[: self.max_length]
        seen = self._seen.setdefault(label, set())
        if text in seen:
            return text
        if admit and len(seen) < self.max_values:
            seen.add(text)
            return text
        return OTHER

    def values(self, label: str) -> frozenset[str]:
        """The values admitted so far for C{label}."""
        return frozenset(self._seen.get(label, ()))


def path_family(path: str) -> str:
    """
    The first two segments of a request path (C{/v1/embeddings},
    C{/v1/audio}), the grouping used for bypassed requests; segments that do
    not look like path words become C{other}.
    """
    segments = [s for s in path.split("?", 1)[0].split("/") if s][:2]
    if not segments:
        return "/"
    return "/" + "/".join(s if _SEGMENT.match(s) else OTHER for s in segments)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


class BulkHistogram:
    """
    A histogram with one label, observed many values at a time: the same
    exposition as prometheus-client's C{Histogram} (names, help, buckets,
    C{_count}, C{_sum}, C{_created}, series order), for a fraction of the
    cost of one locked C{observe} per value (a stream's chunk gaps).

    An unregistered C{Histogram} with the same definition gives the shape
    of the exposition (and each series' C{_created}, its child being created
    when the series is); the values are this object's.  Its C{observe}
    never runs, so its own values stay at zero.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelname: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._shape = Histogram(name, documentation, [labelname], buckets=buckets, registry=None)
        self._labelname = labelname
        self._bounds = [float(bound) for bound in buckets] + [math.inf]
        # Per label value: the count of each bucket (not cumulative), then the sum.
        self._series: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_ms(self, value: str, amounts_ms: Iterable[float]) -> None:
        """Observe each of C{amounts_ms} (milliseconds) in seconds, as C{Histogram.observe} would."""
        bounds = self._bounds
        last = len(bounds)
        where = bisect.bisect_left
        with self._lock:
            series = self._series.get(value)
            if series is None:
                self._shape.labels(value)
                series = self._series[value] = [0.0] * (last + 1)
            total = series[last]
            for amount_ms in amounts_ms:
                amount = amount_ms / 1000.0
                # Added one by one, as observe() does: the same float sum.
                total += amount
                i = where(bounds, amount)
                if i < last and amount <= bounds[i]:  # (NaN: no bucket)
                    series[i] += 1.0
            series[last] = total

    def describe(self) -> Iterable[Metric]:
        return self._shape.describe()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            families = list(self._shape.collect())
            # Per label value: the cumulative bucket counts, as Histogram
            # reports them (the last is the count), and the sum.
            totals = {
                value: (list(itertools.accumulate(series[:-1])), series[-1])
                for value, series in self._series.items()
            }
        for family in families:
            position: dict[str, int] = {}
            samples = []
            for sample in family.samples:
                value = sample.labels[self._labelname]
                cumulative, total = totals[value]
                if sample.name.endswith("_bucket"):
                    index = position.get(value, 0)
                    position[value] = index + 1
                    sample = sample._replace(value=cumulative[index])
                elif sample.name.endswith("_count"):
                    sample = sample._replace(value=cumulative[-1])
                elif sample.name.endswith("_sum"):
                    sample = sample._replace(value=total)
                samples.append(sample)
            family.samples = samples
        return families


class _Pending:
    """
    Counter increments not yet added to their counters: C{amounts} maps a
    C{(metric, label values)} key to the whole number to add, filled on the
    reactor thread per finished exchange.  Registered first in the
    registry, it adds them when the registry is collected (C{/metrics}, or
    any reader of the registry), before the counters report.  An C{inc()}
    takes a lock and checks its argument on every call; a dict update costs
    a tenth of that, an exchange makes ten or more, and a scrape adds each
    key's sum once.

    The exposition is exactly what per-call increments give: the amounts are
    whole numbers, whose sum is the same in any order.  Only for code on the
    reactor thread, as the gateway's observers are.  The dict holds one
    entry per labelled series (bounded by L{BoundedLabels}), however long
    nobody scrapes.  Histograms are observed at once: replaying their values
    at a scrape would cost the same per value, only later and all at once.
    """

    def __init__(self, children: dict[tuple[Any, tuple[str, ...]], Any]) -> None:
        self.children = children
        self.amounts: dict[tuple[Any, tuple[str, ...]], int] = {}

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        self.flush()
        return iter(())

    def flush(self) -> None:
        """Add every pending increment to its counter."""
        amounts, self.amounts = self.amounts, {}
        children = self.children
        for key, amount in amounts.items():
            children[key].inc(amount)


class _RoutingCollector:
    """Reads each provider's circuit breaker and health when Prometheus scrapes."""

    def __init__(self) -> None:
        self.router: Any = None

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("lunaroute_circuit_breaker_state", "", labels=["provider"])
        yield GaugeMetricFamily("lunaroute_provider_health_status", "", labels=["provider"])
        yield GaugeMetricFamily("lunaroute_provider_success_rate", "", labels=["provider"])

    def collect(self) -> Iterator[Metric]:
        router = self.router
        if router is None:
            return
        from lunaroute.routing.breaker import STATE_VALUES
        from lunaroute.routing.health import HEALTH_VALUES

        state = GaugeMetricFamily(
            "lunaroute_circuit_breaker_state",
            "Circuit breaker state per provider: 0 closed, 1 open, 2 half-open.",
            labels=["provider"],
        )
        health = GaugeMetricFamily(
            "lunaroute_provider_health_status",
            "Provider health: 1 healthy, 0.5 degraded, 0 unhealthy, -1 unknown (too few requests).",
            labels=["provider"],
        )
        rate = GaugeMetricFamily(
            "lunaroute_provider_success_rate",
            "Share of successful requests per provider over the health window.",
            labels=["provider"],
        )
        try:
            for name, figures in router.states().items():
                state.add_metric([name], float(STATE_VALUES.get(figures["circuit_breaker"], -1)))
                health.add_metric([name], float(HEALTH_VALUES.get(figures["health"], -1.0)))
                if figures.get("success_rate") is not None:
                    rate.add_metric([name], float(figures["success_rate"]))
        except Exception:
            log.failure("reading the routing state failed")
        yield state
        yield health
        yield rate


class _RecorderCollector:
    """Reads the recorder's queue figures when Prometheus scrapes."""

    def __init__(self) -> None:
        self.recorder: Any = None

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry can detect clashes at registration.
        yield GaugeMetricFamily("lunaroute_recorder_queue_depth", "")
        yield CounterMetricFamily("lunaroute_recorder_dropped_events", "")
        yield CounterMetricFamily("lunaroute_recorder_written_events", "")
        yield CounterMetricFamily("lunaroute_recorder_write_failures", "")
        yield CounterMetricFamily("lunaroute_recorder_lost_exchanges", "", labels=["reason"])
        yield GaugeMetricFamily("lunaroute_session_store_degraded", "", labels=["store"])
        yield GaugeMetricFamily("lunaroute_session_store_backlog_events", "", labels=["store"])

    def collect(self) -> Iterator[Metric]:
        recorder = self.recorder
        if recorder is None:
            return
        yield from self._figures(recorder)
        yield from self._stores(recorder)
        loss_counts = getattr(recorder, "loss_counts", None)
        if loss_counts is None:
            return
        try:
            lost = CounterMetricFamily(
                "lunaroute_recorder_lost_exchanges",
                "Exchanges not written by a session writer, by reason (queue_full, closed, "
                "disk_full:<writer>, writer_error:<writer>, events_error, recorder_error).",
                labels=["reason"],
            )
            for reason, count in sorted(loss_counts().items()):
                lost.add_metric([str(reason)], float(count))
            yield lost
        except Exception:
            log.failure("reading the recorder's loss counts failed")

    def _stores(self, recorder: Any) -> Iterator[Metric]:
        """The shared stores' state (the PostgreSQL writer's C{status()}), when one is recording."""
        try:
            statuses = [w.status() for w in getattr(recorder, "writers", ()) if hasattr(w, "status")]
            if not statuses:
                return
            degraded = GaugeMetricFamily(
                "lunaroute_session_store_degraded",
                "1 while the shared session store cannot be written (batches wait in its backlog), else 0.",
                labels=["store"],
            )
            backlog = GaugeMetricFamily(
                "lunaroute_session_store_backlog_events",
                "Recording events waiting for the shared session store to come back.",
                labels=["store"],
            )
            for status in statuses:
                store = str(status.get("store", UNKNOWN))
                degraded.add_metric([store], 1.0 if status.get("status") == "degraded" else 0.0)
                backlog.add_metric([store], float(status.get("backlog_events", 0)))
            yield degraded
            yield backlog
        except Exception:
            log.failure("reading the session store's state failed")

    def _figures(self, recorder: Any) -> Iterator[Metric]:
        figures = (
            (GaugeMetricFamily, "lunaroute_recorder_queue_depth", "queue_depth",
             "Recording events accepted but not yet handed to the writers."),
            (CounterMetricFamily, "lunaroute_recorder_dropped_events", "dropped_events",
             "Recording events dropped because the queue was full or closed."),
            (CounterMetricFamily, "lunaroute_recorder_written_events", "written_events",
             "Recording events written by every writer."),
            (CounterMetricFamily, "lunaroute_recorder_write_failures", "write_failures",
             "Failed writer calls."),
        )
        for family, name, attribute, documentation in figures:
            try:
                value = getattr(recorder, attribute, None)
                if value is None:
                    continue
                yield family(name, documentation, value=float(value))
            except Exception:
                log.failure("reading recorder figure {attribute} failed", attribute=attribute)


class _RetentionCollector:
    """Reads the session retention service's counters when Prometheus scrapes."""

    def __init__(self) -> None:
        self.service: Any = None

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("lunaroute_retention_runs", "")
        yield CounterMetricFamily("lunaroute_retention_errors", "")
        yield CounterMetricFamily("lunaroute_retention_files", "", labels=["action"])
        yield CounterMetricFamily("lunaroute_retention_sessions_deleted", "")
        yield CounterMetricFamily("lunaroute_retention_bytes_freed", "")

    def collect(self) -> Iterator[Metric]:
        service = self.service
        if service is None:
            return
        try:
            yield CounterMetricFamily(
                "lunaroute_retention_runs", "Session retention runs.", value=float(service.runs)
            )
            yield CounterMetricFamily(
                "lunaroute_retention_errors",
                "Session retention failures (a file, the database, or a whole run); requests are unaffected.",
                value=float(service.errors),
            )
            files = CounterMetricFamily(
                "lunaroute_retention_files", "Session files compressed or deleted by retention.", labels=["action"]
            )
            files.add_metric(["compressed"], float(service.files_compressed))
            files.add_metric(["deleted"], float(service.files_deleted))
            yield files
            yield CounterMetricFamily(
                "lunaroute_retention_sessions_deleted",
                "Sessions removed from the database by retention.",
                value=float(service.sessions_deleted),
            )
            yield CounterMetricFamily(
                "lunaroute_retention_bytes_freed",
                "Bytes freed by retention (compression, deleted files, database space).",
                value=float(service.bytes_freed),
            )
        except Exception:
            log.failure("reading the retention figures failed")


class _PiiCollector:
    """Reads the PII redactor's counters when Prometheus scrapes."""

    def __init__(self) -> None:
        self.redactor: Any = None

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("lunaroute_pii_redactions", "", labels=["kind"])
        yield CounterMetricFamily("lunaroute_pii_failures", "", labels=["where"])

    def collect(self) -> Iterator[Metric]:
        redactor = self.redactor
        if redactor is None:
            return
        try:
            redactions = CounterMetricFamily(
                "lunaroute_pii_redactions",
                "Values redacted from what is recorded and logged (and sent, with apply_to_upstream), by kind.",
                labels=["kind"],
            )
            for kind, count in sorted(redactor.counts().items()):
                redactions.add_metric([str(kind)], float(count))
            failures = CounterMetricFamily(
                "lunaroute_pii_failures",
                "Redactions that failed (the text was dropped, never stored unredacted), by where: "
                "record, request_log, upstream.",
                labels=["where"],
            )
            counted = {"record": 0, "request_log": 0, "upstream": 0, **redactor.failures()}
            for where, count in sorted(counted.items()):
                failures.add_metric([str(where)], float(count))
            yield redactions
            yield failures
        except Exception:
            log.failure("reading the PII redactor's counters failed")


class _PoolCollector:
    """Reads idle connection counts from the providers' connection pools."""

    def __init__(self) -> None:
        self.providers: list[tuple[str, Any]] = []

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("http_pool_connections_idle", "")
        yield GaugeMetricFamily("http_pool_max_idle_per_host", "")

    def collect(self) -> Iterator[Metric]:
        if not self.providers:
            return
        idle = GaugeMetricFamily(
            "http_pool_connections_idle",
            "Idle persistent connections kept in the provider's pool.",
            labels=["provider"],
        )
        limit = GaugeMetricFamily(
            "http_pool_max_idle_per_host",
            "The most idle connections the pool keeps per host.",
            labels=["provider"],
        )
        for name, provider in self.providers:
            pool = getattr(provider, "pool", None)
            if pool is None:
                continue
            try:
                idle.add_metric([name], float(idle_connection_count(pool)))
                per_host = getattr(pool, "maxPersistentPerHost", None)
                if per_host is not None:
                    limit.add_metric([name], float(per_host))
            except Exception:
                log.failure("reading the connection pool of {provider} failed", provider=name)
        yield idle
        yield limit


class GatewayMetrics:
    """
    The gateway's metric families on a private registry.

    Wire L{request_started} as a start observer and L{observe} as the last
    exchange observer (after the statistics observer, which sets
    C{exchange.cost_usd}); serve L{render} at C{/metrics}.
    """

    def __init__(self, registry: CollectorRegistry | None = None, max_label_values: int = 100) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.labels = BoundedLabels(max_label_values)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._started: set[str] = set()
        r = self.registry
        # First in the registry, so that the counters report after it adds.
        self._pending = _Pending(self._children)
        r.register(self._pending)

        self.requests = Counter(
            "lunaroute_requests", "Requests handled, by HTTP status.",
            ["listener", "provider", "model", "status"], registry=r,
        )
        self.requests_success = Counter(
            "lunaroute_requests_success", "Requests the provider answered with a 2xx/3xx status.",
            ["listener", "provider", "model"], registry=r,
        )
        self.requests_failure = Counter(
            "lunaroute_requests_failure", "Requests that failed, by outcome.",
            ["listener", "provider", "model", "error_type"], registry=r,
        )
        self.request_duration = Histogram(
            "lunaroute_request_duration_seconds", "Time from receiving a request to finishing its response.",
            ["listener", "provider", "model"], buckets=_REQUEST_BUCKETS, registry=r,
        )
        self.proxy_overhead = Histogram(
            "lunaroute_proxy_overhead_seconds",
            "Time spent in the gateway: before forwarding plus after the last upstream byte.",
            ["listener", "provider"], buckets=_OVERHEAD_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "lunaroute_in_flight_requests", "Requests forwarded upstream and not finished yet.", registry=r,
        )
        self.tokens = Counter(
            "lunaroute_tokens", "Tokens reported by providers (Anthropic thinking is estimated).",
            ["type", "model"], registry=r,
        )
        self.tokens_prompt = Counter(
            "lunaroute_tokens_prompt", "Input (prompt) tokens as the provider counts them.",
            ["provider", "model"], registry=r,
        )
        self.tokens_completion = Counter(
            "lunaroute_tokens_completion", "Output (completion) tokens, thinking included.",
            ["provider", "model"], registry=r,
        )
        self.cost = Counter(
            "lunaroute_estimated_cost_usd", "Estimated cost in USD from the pricing table.",
            ["provider", "model"], registry=r,
        )
        self.unpriced = Counter(
            "lunaroute_unpriced_requests", "Requests with usage whose model has no price.",
            ["model"], registry=r,
        )
        self.tool_calls = Counter(
            "lunaroute_tool_calls", "Tool calls requested by the model.", ["provider", "tool"], registry=r,
        )
        self.tool_duration = Histogram(
            "lunaroute_tool_duration_seconds",
            "Time from the response asking for a tool to the request carrying its result.",
            ["tool"], buckets=_TOOL_BUCKETS, registry=r,
        )
        self.streaming_requests = Counter(
            "lunaroute_streaming_requests", "Streaming requests.", ["provider", "model"], registry=r,
        )
        self.streaming_chunks = Counter(
            "lunaroute_streaming_chunks", "Body chunks relayed on streaming responses.", ["provider"], registry=r,
        )
        self.streaming_ttft = Histogram(
            "lunaroute_streaming_ttft_seconds", "Time from receiving a streaming request to its first byte.",
            ["provider", "model"], buckets=_TTFT_BUCKETS, registry=r,
        )
        self.streaming_chunk_latency = BulkHistogram(
            "lunaroute_streaming_chunk_latency_seconds", "Gaps between consecutive streamed chunks.",
            "provider", buckets=_CHUNK_BUCKETS, registry=r,
        )
        self.streaming_duration = Histogram(
            "lunaroute_streaming_duration_seconds", "Time from the first to the last streamed byte.",
            ["provider", "model"], buckets=_REQUEST_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "lunaroute_upstream_errors", "Provider failures: unreachable, timeout, stream_error.",
            ["provider", "kind"], registry=r,
        )
        self.rate_limits = Counter(
            "lunaroute_rate_limits", "Responses with status 429 from the provider.", ["provider"], registry=r,
        )
        self.client_disconnects = Counter(
            "lunaroute_client_disconnects", "Requests abandoned by the client before the response ended.",
            registry=r,
        )
        self.bypass_requests = Counter(
            "lunaroute_bypass_requests", "Requests proxied verbatim on the bypass path.",
            ["provider", "path_family", "status"], registry=r,
        )
        self.metrics_errors = Counter(
            "lunaroute_metrics_errors", "Failures while recording metrics (the request was unaffected).",
            registry=r,
        )
        self.breaker_transitions = Counter(
            "lunaroute_circuit_breaker_transitions", "Circuit breaker state changes.",
            ["provider", "from_state", "to_state"], registry=r,
        )
        self.fallbacks = Counter(
            "lunaroute_fallback_triggered", "Requests served by another provider than the plan's first.",
            ["from_provider", "to_provider"], registry=r,
        )
        self.retries = Counter(
            "lunaroute_retries", "Attempts sent again to the same provider (routing retries).",
            ["provider"], registry=r,
        )
        self.ws_connections = Gauge(
            "lunaroute_ws_connections", "Open client WebSockets (Codex's Responses WebSocket).", registry=r,
        )
        self.ws_frames = Counter(
            "lunaroute_ws_frames", "WebSocket text frames, by direction (in: from the client, out: to it).",
            ["direction"], registry=r,
        )
        self._recorder = _RecorderCollector()
        self._pools = _PoolCollector()
        self._routing = _RoutingCollector()
        self._retention = _RetentionCollector()
        self._pii = _PiiCollector()
        r.register(self._recorder)
        r.register(self._retention)
        r.register(self._pii)
        r.register(self._pools)
        r.register(self._routing)

    # -- observers -------------------------------------------------------

    def request_started(self, exchange: Exchange) -> None:
        """A request is about to go upstream: one more in flight."""
        try:
            if exchange.request_id not in self._started:
                self._started.add(exchange.request_id)
                self.in_flight.inc()
        except Exception:
            self._failed("request_started")

    def __call__(self, exchange: Exchange) -> None:
        self.observe(exchange)

    def socket_opened(self) -> None:
        """A client WebSocket opened.  Never raises."""
        try:
            self.ws_connections.inc()
        except Exception:
            self._failed("socket_opened")

    def socket_closed(self) -> None:
        """A client WebSocket closed.  Never raises."""
        try:
            self.ws_connections.dec()
        except Exception:
            self._failed("socket_closed")

    def socket_frame(self, direction: str) -> None:
        """One text frame in (C{"in"}) or out (C{"out"}).  Never raises."""
        try:
            self.ws_frames.labels(direction=direction).inc()
        except Exception:
            self._failed("socket_frame")

    def observe(self, exchange: Exchange) -> None:
        """Account for a finished exchange of any kind.  Never raises."""
        try:
            self._observe(exchange)
        except Exception:
            self._failed("observe")

    def _failed(self, where: str) -> None:
        log.failure("metrics {where} failed", where=where)
        try:
            self.metrics_errors.inc()
        except Exception:
            pass

    def _child(self, metric: Any, *values: str) -> Any:
        """
        The labelled child of a metric (the metric itself when it has no
        labels), cached: C{labels()} validates and locks on every call, and
        this runs for every request.  Label values are bounded, so the cache
        is too.
        """
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values) if values else metric
        return child

    def _count(self, metric: Any, *values: str, amount: int = 1) -> None:
        """Add C{amount} to C{metric}'s child for C{values}, when the registry is next read."""
        key = (metric, values)
        if key not in self._children:
            # Made now, as inc() would: its series (and _created) starts here.
            self._child(metric, *values)
        amounts = self._pending.amounts
        amounts[key] = amounts.get(key, 0) + amount

    def _observe(self, exchange: Exchange) -> None:
        if exchange.request_id in self._started:
            self._started.discard(exchange.request_id)
            self.in_flight.dec()

        label = self.labels
        listener = label("listener", exchange.listener)
        provider = label("provider", exchange.provider)
        # Model names come from clients: only a request the provider accepted
        # may add a new one (see BoundedLabels).
        model = label("model", exchange.model, admit=exchange.success)
        status = label("status", exchange.status if exchange.status is not None else "none")
        timings = exchange.timings

        self._count(self.requests, listener, provider, model, status)
        if exchange.success:
            self._count(self.requests_success, listener, provider, model)
        else:
            error_type = exchange.outcome if exchange.outcome != "ok" else "upstream_error"
            self._count(self.requests_failure, listener, provider, model, label("error_type", error_type))

        total = _seconds(timings.total_ms)
        if total is not None:
            self._child(self.request_duration, listener, provider, model).observe(total)
        overhead = _seconds(timings.proxy_overhead_ms)
        if overhead is not None:
            self._child(self.proxy_overhead, listener, provider).observe(overhead)

        if exchange.outcome in _UPSTREAM_ERROR_KINDS:
            self._count(self.upstream_errors, provider, exchange.outcome)
        elif exchange.outcome == "client_disconnected":
            self._count(self.client_disconnects)
        if exchange.status == 429:
            self._count(self.rate_limits, provider)

        if exchange.kind == "bypass":
            family = label("path_family", path_family(exchange.path))
            self._count(self.bypass_requests, provider, family, status)

        if exchange.attempts:
            self._observe_attempts(exchange)
        if exchange.streaming:
            self._observe_stream(exchange, provider, model)
        if exchange.is_conversation:
            self._observe_usage(exchange, provider, model)

    def _observe_attempts(self, exchange: Exchange) -> None:
        label = self.labels
        previous = None
        for attempt in exchange.attempts:
            name = attempt.get("provider")
            if name == previous and attempt.get("error") != "circuit_open":
                self._count(self.retries, label("provider", name))
            previous = name
        first = exchange.attempts[0].get("provider")
        if exchange.success and exchange.provider != first:
            self._count(self.fallbacks, label("provider", first), label("provider", exchange.provider))

    def _observe_stream(self, exchange: Exchange, provider: str, model: str) -> None:
        timings = exchange.timings
        self._count(self.streaming_requests, provider, model)
        if exchange.chunk_count:
            self._count(self.streaming_chunks, provider, amount=exchange.chunk_count)
        ttft = _seconds(timings.ttft_ms)
        if ttft is not None:
            self._child(self.streaming_ttft, provider, model).observe(ttft)
        if exchange.chunk_gaps_ms:
            self.streaming_chunk_latency.observe_ms(provider, exchange.chunk_gaps_ms)
        if timings.first_byte is not None and timings.last_byte is not None:
            self._child(self.streaming_duration, provider, model).observe(
                max(0.0, timings.last_byte - timings.first_byte)
            )

    def _observe_usage(self, exchange: Exchange, provider: str, model: str) -> None:
        # Tool results come with the request, whatever the response was.
        for result in exchange.tool_results:
            duration = _seconds(result.get("duration_ms"))
            if duration is not None:
                self._child(self.tool_duration, self.labels("tool", result.get("tool_name"))).observe(duration)
        response = exchange.response
        if response is None:
            return
        usage = response.usage
        counts = (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("thinking", usage.thinking_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_creation", usage.cache_creation_tokens),
        )
        for kind, count in counts:
            if count > 0:
                self._count(self.tokens, kind, model, amount=count)
        if usage.input_tokens > 0:
            self._count(self.tokens_prompt, provider, model, amount=usage.input_tokens)
        if usage.output_tokens > 0:
            self._count(self.tokens_completion, provider, model, amount=usage.output_tokens)

        if exchange.cost_usd is not None:
            if exchange.cost_usd > 0:
                self._child(self.cost, provider, model).inc(exchange.cost_usd)
        elif usage.input_tokens or usage.output_tokens or usage.cache_read_tokens or usage.cache_creation_tokens:
            self._count(self.unpriced, model)

        for call in response.tool_calls:
            self._count(self.tool_calls, provider, self.labels("tool", call.name))

    # -- bindings ----------------------------------------------------------

    def bind_router(self, router: Any) -> None:
        """
        Report the router's breakers and health at scrape time, and count
        every breaker transition as it happens.
        """
        self._routing.router = router
        for breaker in router.breakers.values():
            breaker.add_listener(self.breaker_transition)

    def breaker_transition(self, provider: str, old: str, new: str) -> None:
        try:
            self._child(self.breaker_transitions, self.labels("provider", provider), old, new).inc()
        except Exception:
            self._failed("breaker_transition")

    def bind_recorder(self, recorder: Any) -> None:
        """
        Report C{recorder.queue_depth} and C{recorder.dropped_events} (and
        C{written_events}, C{write_failures} and C{loss_counts()} as
        C{lunaroute_recorder_lost_exchanges_total{reason}} when present),
        read at scrape time.
        """
        self._recorder.recorder = recorder

    def bind_retention(self, service: Any) -> None:
        """
        Report the session retention service's counters (C{runs},
        C{errors}, C{files_compressed}, C{files_deleted},
        C{sessions_deleted}, C{bytes_freed}), read at scrape time.
        """
        self._retention.service = service

    def bind_pii(self, redactor: Any) -> None:
        """
        Report C{redactor.counts()} as C{lunaroute_pii_redactions_total{kind}}
        and C{redactor.failures()} as C{lunaroute_pii_failures_total{where}},
        read at scrape time.
        """
        self._pii.redactor = redactor

    def bind_pools(self, providers: Mapping[str, Any] | Iterable[Any]) -> None:
        """
        Report the connection pools of the providers whose
        C{settings.http_client.enable_pool_metrics} is on.
        """
        try:
            items = providers.items() if isinstance(providers, Mapping) else (
                (getattr(p, "name", None) or UNKNOWN, p) for p in providers
            )
            chosen: list[tuple[str, Any]] = []
            for name, provider in items:
                settings = getattr(provider, "settings", None)
                client = getattr(settings, "http_client", None)
                if getattr(client, "enable_pool_metrics", False):
                    chosen.append((str(getattr(provider, "name", None) or name), provider))
            self._pools.providers = chosen
        except Exception:
            self._failed("bind_pools")

    # -- exposition --------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        try:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        except Exception:
            self._failed("render")
            return b"# metrics are temporarily unavailable\n", CONTENT_TYPE_LATEST
