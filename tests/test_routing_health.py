"""
Provider health over a sliding window (lunaroute.routing.health), on a Clock.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from lunaroute.config import HealthSettings
from lunaroute.routing.health import DEGRADED, HEALTHY, UNHEALTHY, UNKNOWN, HealthMonitor


def monitor(**kw: object) -> tuple[HealthMonitor, Clock]:
    clock = Clock()
    return HealthMonitor(clock, HealthSettings(**kw)), clock  # type: ignore[arg-type]


def feed(m: HealthMonitor, provider: str, ok: int, failed: int, latency: float | None = None) -> None:
    for _ in range(ok):
        m.record(provider, True, latency)
    for _ in range(failed):
        m.record(provider, False, latency, error="503 from upstream")


def test_unknown_below_min_requests() -> None:
    """Nine failures are not enough to judge (min_requests 10); the tenth is."""
    m, _ = monitor()
    assert m.status("p") == UNKNOWN and m.snapshot("p").requests == 0
    feed(m, "p", 0, 9)
    assert m.status("p") == UNKNOWN
    feed(m, "p", 0, 1)
    assert m.status("p") == UNHEALTHY


@pytest.mark.parametrize(
    ("ok", "failed", "status"),
    [
        (19, 1, HEALTHY),  # 95 %: healthy at the threshold
        (18, 2, DEGRADED),  # 90 %
        (15, 5, DEGRADED),  # 75 %: not below the unhealthy threshold
        (14, 6, UNHEALTHY),  # 70 %
    ],
)
def test_thresholds(ok: int, failed: int, status: str) -> None:
    """Healthy at >= 95 %, unhealthy below 75 %, degraded in between."""
    m, _ = monitor()
    feed(m, "p", ok, failed)
    snap = m.snapshot("p")
    assert snap.status == status
    assert (snap.requests, snap.successes) == (ok + failed, ok)
    assert snap.success_rate == pytest.approx(ok / (ok + failed))


def test_old_requests_leave_the_window() -> None:
    """Failures 59 s old still count; 60 s later they are gone and fresh successes decide."""
    m, clock = monitor()
    feed(m, "p", 0, 10)
    clock.advance(59)
    assert m.status("p") == UNHEALTHY
    feed(m, "p", 10, 0)
    assert m.snapshot("p").success_rate == 0.5
    clock.advance(1)
    snap = m.snapshot("p")
    assert (snap.requests, snap.status) == (10, HEALTHY)
    clock.advance(60)
    assert m.snapshot("p").requests == 0 and m.status("p") == UNKNOWN


def test_window_is_configurable() -> None:
    """window_secs: 10 forgets after 10 s."""
    m, clock = monitor(window_secs=10, min_requests=1)
    feed(m, "p", 0, 1)
    clock.advance(9.5)
    assert m.status("p") == UNHEALTHY
    clock.advance(0.5)
    assert m.status("p") == UNKNOWN


def test_latency_and_last_error() -> None:
    """Mean and max latency over the window; the last error with its time is kept after it leaves."""
    m, clock = monitor()
    clock.advance(5)
    m.record("p", True, 0.2)
    m.record("p", True, 0.4)
    m.record("p", False, 1.2, error="connection refused")
    m.record("p", True)  # no latency known
    snap = m.snapshot("p")
    assert snap.mean_latency_secs == pytest.approx(0.6)
    assert snap.max_latency_secs == pytest.approx(1.2)
    assert (snap.last_error, snap.last_error_at) == ("connection refused", 5)
    clock.advance(120)
    snap = m.snapshot("p")
    assert snap.mean_latency_secs is None and snap.last_error == "connection refused"


def test_providers_are_independent() -> None:
    """One provider's failures do not touch another's figures."""
    m, _ = monitor()
    feed(m, "a", 0, 10)
    feed(m, "b", 10, 0)
    assert (m.status("a"), m.status("b")) == (UNHEALTHY, HEALTHY)
    assert m.providers() == ["a", "b"]


def test_memory_stays_bounded() -> None:
    """A request every 0.1 s for an hour keeps at most 60 buckets."""
    m, clock = monitor()
    for _ in range(36_000):
        m.record("p", True, 0.1)
        clock.advance(0.1)
    assert len(m._windows["p"].buckets) <= 60
    assert 590 <= m.snapshot("p").requests <= 600
