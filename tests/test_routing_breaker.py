"""
The circuit breaker (lunaroute.routing.breaker), driven by a Clock only:
every transition, half-open probing, the Deferred guard and the listeners.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from lunaroute.config import CircuitBreakerSettings
from lunaroute.errors import UpstreamUnreachable
from lunaroute.routing.breaker import CLOSED, HALF_OPEN, OPEN, STATE_VALUES, CircuitBreaker, CircuitOpen


def make(clock: Clock | None = None, **kw: object) -> tuple[CircuitBreaker, Clock, list[tuple[str, str, str]]]:
    clock = clock or Clock()
    breaker = CircuitBreaker("p", clock, CircuitBreakerSettings(**kw))  # type: ignore[arg-type]
    seen: list[tuple[str, str, str]] = []
    breaker.add_listener(lambda name, old, new: seen.append((name, old, new)))
    return breaker, clock, seen


def open_it(breaker: CircuitBreaker, n: int = 5) -> None:
    for _ in range(n):
        assert breaker.allow()
        breaker.record_failure()


def test_defaults_are_the_originals() -> None:
    """5 failures, 2 successes, 60 s open, one probe at a time."""
    assert CircuitBreakerSettings() == CircuitBreakerSettings(True, 5, 2, 60.0, 1)
    assert STATE_VALUES == {"closed": 0, "open": 1, "half_open": 2}


def test_closed_opens_after_failure_threshold_consecutive_failures() -> None:
    """Four failures keep it closed; the fifth opens it and it then refuses at once."""
    breaker, _, seen = make()
    open_it(breaker, 4)
    assert breaker.state == CLOSED and breaker.consecutive_failures == 4 and seen == []
    breaker.record_failure()
    assert breaker.state == OPEN and seen == [("p", CLOSED, OPEN)]
    assert not breaker.allow() and not breaker.available()


def test_a_success_resets_the_failure_count() -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker, _, _ = make()
    open_it(breaker, 4)
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    open_it(breaker, 4)
    assert breaker.state == CLOSED


def test_open_turns_half_open_after_the_timeout_on_the_clock() -> None:
    """The timer runs on the injected clock: 59.9 s still open, 60 s half-open (listener told)."""
    breaker, clock, seen = make()
    clock.advance(100)
    open_it(breaker)
    assert breaker.retry_at == 160
    clock.advance(59.9)
    assert breaker.state == OPEN and not breaker.allow()
    clock.advance(0.1)
    assert breaker.state == HALF_OPEN and breaker.retry_at is None
    assert seen == [("p", CLOSED, OPEN), ("p", OPEN, HALF_OPEN)]


def test_half_open_lets_only_half_open_max_requests_probes_through() -> None:
    """One probe by default: a second request is refused while the first is in flight."""
    breaker, clock, _ = make()
    open_it(breaker)
    clock.advance(60)
    assert breaker.available()
    assert breaker.allow()
    assert not breaker.available() and not breaker.allow()


def test_half_open_with_two_probes_and_released_slots() -> None:
    """half_open_max_requests: 2 lets two through; release() gives a slot back without a verdict."""
    breaker, clock, _ = make(half_open_max_requests=2)
    open_it(breaker)
    clock.advance(60)
    assert breaker.allow() and breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.state == HALF_OPEN and breaker.allow()


def test_half_open_closes_after_success_threshold_successes() -> None:
    """Two successful probes close it; the first alone does not."""
    breaker, clock, seen = make()
    open_it(breaker)
    clock.advance(60)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the slot came back with the verdict
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow()
    assert seen[-1] == ("p", HALF_OPEN, CLOSED)


def test_half_open_failure_opens_again_for_another_timeout() -> None:
    """A failed probe reopens it; it probes again a full open_timeout_secs later."""
    breaker, clock, seen = make(open_timeout_secs=30)
    open_it(breaker)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == OPEN and seen[-1] == ("p", HALF_OPEN, OPEN)
    clock.advance(29)
    assert breaker.state == OPEN
    clock.advance(1)
    assert breaker.state == HALF_OPEN


def test_late_answers_while_open_change_nothing() -> None:
    """Requests sent before it opened that finish while open neither close nor extend it."""
    breaker, clock, seen = make()
    open_it(breaker)
    breaker.record_success()
    breaker.record_failure()
    breaker.release()
    assert breaker.state == OPEN and len(seen) == 1
    clock.advance(60)
    assert breaker.state == HALF_OPEN


def test_disabled_breaker_never_opens() -> None:
    """enabled: false: failures are counted but every request is allowed."""
    breaker, clock, seen = make(enabled=False)
    open_it(breaker, 20)
    assert breaker.state == CLOSED and breaker.allow() and breaker.available() and seen == []


def test_stop_cancels_the_timer() -> None:
    """At shutdown nothing stays scheduled on the reactor."""
    breaker, clock, _ = make()
    open_it(breaker)
    assert clock.getDelayedCalls()
    breaker.stop()
    assert clock.getDelayedCalls() == []


def test_a_failing_listener_is_logged_and_the_breaker_carries_on(logged_failures) -> None:  # type: ignore[no-untyped-def]
    """Metrics must never break routing: the listener's error is logged, the transition happens."""
    logged_failures.expect(ZeroDivisionError)
    breaker, _, seen = make(failure_threshold=1)
    breaker.add_listener(lambda *args: 1 / 0)  # type: ignore[func-returns-value]
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == OPEN and seen == [("p", CLOSED, OPEN)]
    assert len(logged_failures.matching(ZeroDivisionError)) == 1


# --------------------------------------------------------------------------
# guard(): the Deferred-based form


def test_guard_records_success_and_failure_from_the_deferred() -> None:
    """Errbacks count as failures, callbacks as successes; results and errors pass through."""
    breaker, _, _ = make(failure_threshold=2)
    ok = breaker.guard(lambda: defer.succeed("answer"))
    assert ok.result == "answer"  # type: ignore[attr-defined]
    for _ in range(2):
        d = breaker.guard(lambda: defer.fail(UpstreamUnreachable("down", provider="p")))
        failures: list[object] = []
        d.addErrback(failures.append)
        assert failures
    assert breaker.state == OPEN


def test_guard_fails_fast_with_circuit_open_without_calling_the_factory() -> None:
    """An open breaker: CircuitOpen at once, carrying when it will probe again."""
    breaker, clock, _ = make(failure_threshold=1)
    breaker.guard(lambda: defer.fail(RuntimeError("x"))).addErrback(lambda f: None)
    called: list[bool] = []

    def factory() -> defer.Deferred[str]:
        called.append(True)
        return defer.succeed("x")

    errors: list[CircuitOpen] = []
    breaker.guard(factory).addErrback(lambda f: errors.append(f.value))
    assert called == [] and errors[0].retry_at == 60 and errors[0].provider == "p"


def test_guard_uses_is_failure_for_results() -> None:
    """A result the caller calls a failure (a 503 response, say) counts against the provider."""
    breaker, _, _ = make(failure_threshold=1)
    d = breaker.guard(lambda: defer.succeed(503), is_failure=lambda status: status >= 500)
    assert d.result == 503  # type: ignore[attr-defined]
    assert breaker.state == OPEN


def test_guard_cancellation_releases_the_probe_without_a_verdict() -> None:
    """The client went away during a half-open probe: the slot is freed, the state unchanged."""
    breaker, clock, _ = make(failure_threshold=1)
    breaker.guard(lambda: defer.fail(RuntimeError("x"))).addErrback(lambda f: None)
    clock.advance(60)
    pending: defer.Deferred[str] = defer.Deferred()
    d = breaker.guard(lambda: pending)
    assert not breaker.available()
    d.cancel()
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    assert breaker.state == HALF_OPEN and breaker.available()


def test_guard_factory_raising_is_a_failure() -> None:
    """A factory that raises synchronously is recorded and returned as a failed Deferred."""
    breaker, _, _ = make(failure_threshold=1)

    def boom() -> defer.Deferred[str]:
        raise ValueError("bad")

    errors: list[object] = []
    breaker.guard(boom).addErrback(lambda f: errors.append(f.type))
    assert errors == [ValueError] and breaker.state == OPEN


@pytest.mark.parametrize("probes", [1, 3])
def test_concurrent_requests_while_it_opens(probes: int) -> None:
    """
    Ten requests in flight when it opens: the stragglers' failures do not
    extend it; after the timeout exactly `probes` requests go through.
    """
    breaker, clock, seen = make(half_open_max_requests=probes)
    pending = [defer.Deferred() for _ in range(10)]  # type: ignore[var-annotated]
    guarded = [breaker.guard(lambda d=d: d) for d in pending]
    for d in guarded:
        d.addErrback(lambda f: None)
    for d in pending:
        d.errback(RuntimeError("down"))
    assert breaker.state == OPEN and len(seen) == 1
    clock.advance(60)
    allowed = sum(breaker.allow() for _ in range(10))
    assert allowed == probes
