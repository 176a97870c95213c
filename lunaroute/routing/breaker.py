"""
A circuit breaker per provider: stop sending to a provider that keeps failing,
and find out, with a few probes, when it has recovered.

States and transitions (the settings are L{CircuitBreakerSettings})::

    closed --failure_threshold consecutive failures--> open
    open --open_timeout_secs (a timer on the injected clock)--> half_open
    half_open --success_threshold successes--> closed
    half_open --any failure--> open

While open, L{CircuitBreaker.allow} says no at once: the provider is skipped
without a connection attempt.  While half-open, at most
C{half_open_max_requests} probes are in flight at a time.

Two ways to use it:

  - the plain API the request lifecycle needs: C{allow()} before sending,
    then exactly one of C{record_success()}, C{record_failure()} or
    C{release()} (neither: the client went away) for each C{allow()} that
    said yes;
  - L{CircuitBreaker.guard}: wrap a function returning a L{Deferred}; the
    breaker is consulted first (failing fast with L{CircuitOpen}) and the
    Deferred's outcome is recorded.

Listeners (C{add_listener}) hear every transition, for the
C{lunaroute_circuit_breaker_state} gauge and C{_transitions_total} counter;
a listener that raises is logged and never breaks the breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from lunaroute.config import CircuitBreakerSettings
from lunaroute.errors import UpstreamError
from lunaroute.logs import log_observer

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "STATE_VALUES", "CircuitBreaker", "CircuitOpen"]

log = Logger(observer=log_observer)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

# The numbers the original exports as lunaroute_circuit_breaker_state.
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}

T = TypeVar("T")
Listener = Callable[[str, str, str], None]


class CircuitOpen(UpstreamError):
    """
    The provider's breaker is open (or its half-open probes are all in
    flight): the request was not sent.

    @ivar retry_at: the clock time the breaker turns half-open, or C{None}
        when it is half-open already.
    """

    def __init__(self, provider: str, retry_at: float | None) -> None:
        self.retry_at = retry_at
        super().__init__(f"{provider}: circuit breaker open, provider skipped", provider=provider)


class CircuitBreaker:
    """
    The breaker of one provider.

    @ivar name: the provider's name (for listeners, logs and errors).
    """

    def __init__(self, name: str, clock: IReactorTime, settings: CircuitBreakerSettings) -> None:
        self.name = name
        self._clock = clock
        self._settings = settings
        self._state = CLOSED
        self._failures = 0
        self._successes = 0
        self._probes = 0
        self._timer: IDelayedCall | None = None
        self._opened_at: float | None = None
        self._listeners: list[Listener] = []

    # -- reading

    @property
    def state(self) -> str:
        """C{closed}, C{open} or C{half_open}."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures in a row while closed (reset by a success or a transition)."""
        return self._failures

    @property
    def retry_at(self) -> float | None:
        """While open, the clock time it turns half-open; else C{None}."""
        if self._state != OPEN or self._opened_at is None:
            return None
        return self._opened_at + self._settings.open_timeout_secs

    def available(self) -> bool:
        """
        Whether a request could be let through now, without reserving
        anything: for planning which providers to try.  Use L{allow} right
        before actually sending.
        """
        if not self._settings.enabled or self._state == CLOSED:
            return True
        if self._state == HALF_OPEN:
            return self._probes < self._settings.half_open_max_requests
        return False

    # -- the plain API

    def allow(self) -> bool:
        """
        Whether to send a request now.  Yes while closed; while half-open,
        yes for up to C{half_open_max_requests} probes in flight (the slot is
        taken; give it back with one of the C{record_*} methods or
        L{release}); no while open.
        """
        if not self._settings.enabled or self._state == CLOSED:
            return True
        if self._state == HALF_OPEN and self._probes < self._settings.half_open_max_requests:
            self._probes += 1
            return True
        return False

    def record_success(self) -> None:
        """The provider answered (see L{lunaroute.routing.retry.counts_against_provider})."""
        if self._state == CLOSED:
            self._failures = 0
        elif self._state == HALF_OPEN:
            self._give_back_probe()
            self._successes += 1
            if self._successes >= self._settings.success_threshold:
                self._transition(CLOSED)
        # Open: a late answer to a request sent before the breaker opened
        # changes nothing; the timer decides when to probe.

    def record_failure(self) -> None:
        """The provider failed (unreachable, timed out, or a 5xx answer)."""
        if self._state == CLOSED:
            self._failures += 1
            if self._settings.enabled and self._failures >= self._settings.failure_threshold:
                self._transition(OPEN)
        elif self._state == HALF_OPEN:
            self._give_back_probe()
            self._transition(OPEN)

    def release(self) -> None:
        """
        A request let through ended with no verdict on the provider (the
        client went away first): give its probe slot back.
        """
        if self._state == HALF_OPEN:
            self._give_back_probe()

    # -- the Deferred guard

    def guard(
        self,
        factory: Callable[[], defer.Deferred[T]],
        is_failure: Callable[[T], bool] = lambda result: False,
        is_verdict: Callable[[Failure], bool] = lambda failure: not failure.check(defer.CancelledError),
    ) -> defer.Deferred[T]:
        """
        Call C{factory} if the breaker allows it and record the outcome of the
        Deferred it returns.

        @param is_failure: whether a result counts as a failure of the
            provider (e.g. a response with status 503); the result is passed
            on either way.
        @param is_verdict: whether an error counts against the provider;
            by default every error except a cancellation (which releases the
            slot instead).
        @return: a Deferred with C{factory}'s outcome, or failing at once
            with L{CircuitOpen} (C{factory} not called).
        """
        if not self.allow():
            return defer.fail(CircuitOpen(self.name, self.retry_at))
        try:
            d = factory()
        except BaseException:
            self.record_failure()
            return defer.fail()

        def succeeded(result: T) -> T:
            if is_failure(result):
                self.record_failure()
            else:
                self.record_success()
            return result

        def failed(failure: Failure) -> Failure:
            if is_verdict(failure):
                self.record_failure()
            else:
                self.release()
            return failure

        d.addCallbacks(succeeded, failed)
        return d

    # -- listeners and lifetime

    def add_listener(self, listener: Listener) -> None:
        """Call C{listener(name, old_state, new_state)} on every transition."""
        self._listeners.append(listener)

    def stop(self) -> None:
        """Cancel the pending open -> half-open timer (at shutdown)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- internals

    def _give_back_probe(self) -> None:
        if self._probes > 0:
            self._probes -= 1

    def _half_open(self) -> None:
        self._timer = None
        if self._state == OPEN:
            self._transition(HALF_OPEN)

    def _transition(self, new: str) -> None:
        old = self._state
        self._state = new
        self._failures = 0
        self._successes = 0
        self._probes = 0
        self.stop()
        if new == OPEN:
            self._opened_at = self._clock.seconds()
            self._timer = self._clock.callLater(self._settings.open_timeout_secs, self._half_open)
        else:
            self._opened_at = None
        log.info("circuit breaker of {provider}: {old} -> {new}", provider=self.name, old=old, new=new)
        for listener in list(self._listeners):
            try:
                listener(self.name, old, new)
            except Exception:
                log.failure("circuit breaker listener failed for {provider}", provider=self.name)
