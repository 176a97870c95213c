"""
Provider health: the success rate and latency of each provider over a
sliding window, for C{/readyz}, the C{lunaroute_provider_health_status} and
C{lunaroute_provider_success_rate} gauges, and the operator.

The window is kept as 60 buckets (each C{window_secs / 60} long), so memory
stays bounded however many requests pass: a request stops counting between
C{window_secs - window_secs/60} and C{window_secs} after it finished.

Status, as the original's: C{unknown} with fewer than C{min_requests} in the
window; else C{healthy} at a success rate of C{healthy_threshold} or more,
C{unhealthy} below C{unhealthy_threshold}, C{degraded} in between.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from lunaroute.config import HealthSettings

__all__ = ["DEGRADED", "HEALTHY", "HEALTH_VALUES", "UNHEALTHY", "UNKNOWN", "HealthMonitor", "ProviderHealth"]

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
UNKNOWN = "unknown"

# Values for the lunaroute_provider_health_status gauge.
HEALTH_VALUES = {HEALTHY: 1.0, DEGRADED: 0.5, UNHEALTHY: 0.0, UNKNOWN: -1.0}

BUCKETS = 60


@dataclass(frozen=True)
class ProviderHealth:
    """
    One provider's figures over the window, at one moment.

    @ivar success_rate: successes / requests, C{None} with no requests.
    @ivar mean_latency_secs: over the requests that reported a latency.
    @ivar last_error: the latest error recorded (ever, not only in the
        window), with C{last_error_at} its clock time.
    """

    status: str
    requests: int
    successes: int
    success_rate: float | None
    mean_latency_secs: float | None
    max_latency_secs: float | None
    last_error: str | None
    last_error_at: float | None


class _Bucket:
    __slots__ = ("failures", "index", "latency_count", "latency_max", "latency_sum", "successes")

    def __init__(self, index: int) -> None:
        self.index = index
        self.successes = 0
        self.failures = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self.latency_max = 0.0


class _Window:
    def __init__(self) -> None:
        self.buckets: deque[_Bucket] = deque()
        self.last_error: str | None = None
        self.last_error_at: float | None = None


class HealthMonitor:
    """Success rate and latency per provider, on the injected clock."""

    def __init__(self, clock: IReactorTime, settings: HealthSettings) -> None:
        self._clock = clock
        self._settings = settings
        self._width = settings.window_secs / BUCKETS
        self._windows: dict[str, _Window] = {}

    def record(
        self, provider: str, ok: bool, latency_secs: float | None = None, error: str | None = None
    ) -> None:
        """
        One finished attempt on C{provider}: C{ok} when the provider
        served it (see L{lunaroute.routing.retry.counts_against_provider}),
        its latency if known, and the error text of a failure.
        """
        now = self._clock.seconds()
        window = self._windows.get(provider)
        if window is None:
            window = self._windows[provider] = _Window()
        index = math.floor(now / self._width)
        self._expire(window, index)
        if window.buckets and window.buckets[-1].index == index:
            bucket = window.buckets[-1]
        else:
            bucket = _Bucket(index)
            window.buckets.append(bucket)
        if ok:
            bucket.successes += 1
        else:
            bucket.failures += 1
            if error is not None:
                window.last_error = error
                window.last_error_at = now
        if latency_secs is not None:
            bucket.latency_sum += latency_secs
            bucket.latency_count += 1
            bucket.latency_max = max(bucket.latency_max, latency_secs)

    def snapshot(self, provider: str) -> ProviderHealth:
        """C{provider}'s figures now (all zero and C{unknown} if never seen)."""
        window = self._windows.get(provider)
        if window is None:
            return ProviderHealth(UNKNOWN, 0, 0, None, None, None, None, None)
        self._expire(window, math.floor(self._clock.seconds() / self._width))
        successes = sum(b.successes for b in window.buckets)
        requests = successes + sum(b.failures for b in window.buckets)
        latencies = sum(b.latency_count for b in window.buckets)
        rate = successes / requests if requests else None
        return ProviderHealth(
            status=self._status(requests, rate),
            requests=requests,
            successes=successes,
            success_rate=rate,
            mean_latency_secs=sum(b.latency_sum for b in window.buckets) / latencies if latencies else None,
            max_latency_secs=max((b.latency_max for b in window.buckets if b.latency_count), default=None),
            last_error=window.last_error,
            last_error_at=window.last_error_at,
        )

    def status(self, provider: str) -> str:
        """C{healthy}, C{degraded}, C{unhealthy} or C{unknown}."""
        return self.snapshot(provider).status

    def providers(self) -> list[str]:
        """The providers something was recorded for, in first-seen order."""
        return list(self._windows)

    def _status(self, requests: int, rate: float | None) -> str:
        if rate is None or requests < self._settings.min_requests:
            return UNKNOWN
        if rate >= self._settings.healthy_threshold:
            return HEALTHY
        if rate < self._settings.unhealthy_threshold:
            return UNHEALTHY
        return DEGRADED

    @staticmethod
    def _expire(window: _Window, current: int) -> None:
        # Keep the current bucket and the BUCKETS - 1 before it.
        while window.buckets and window.buckets[0].index <= current - BUCKETS:
            window.buckets.popleft()
