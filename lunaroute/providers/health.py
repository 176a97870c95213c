"""
Provider readiness for C{/readyz}: can each provider be reached right now?

A probe is one C{HEAD} of the provider's base URL through its own connection
pool (any HTTP answer, even 404, proves the provider is reachable; no model
is called, nothing is billed).  Results are cached for a few seconds so a
busy orchestrator probing C{/readyz} does not turn into provider traffic, and
concurrent checks share one probe.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

__all__ = ["ReadinessChecker"]

DEFAULT_TTL_SECS = 5.0
DEFAULT_PROBE_TIMEOUT_SECS = 5.0


class ReadinessChecker:
    """
    Caches each provider's last probe result (C{None} when reachable, else
    a sentence saying why not) for C{ttl} seconds of C{clock} time.
    """

    def __init__(
        self,
        clock: IReactorTime,
        ttl: float = DEFAULT_TTL_SECS,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT_SECS,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._probe_timeout = probe_timeout
        self._results: dict[str, tuple[float, str | None]] = {}
        self._pending: dict[str, defer.Deferred[str | None]] = {}

    def check(self, provider: Any) -> defer.Deferred[str | None]:
        """
        @return: a Deferred firing with C{None} if C{provider} is reachable,
            or a reason; it never fails.
        """
        now = self._clock.seconds()
        cached = self._results.get(provider.name)
        if cached is not None and now - cached[0] < self._ttl:
            return defer.succeed(cached[1])
        pending = self._pending.get(provider.name)
        if pending is None:
            pending = self._probe(provider)
            # A probe that already finished (it failed or answered at once)
            # has stored its result; keeping it as pending would serve that
            # result for good, past the TTL.
            if not pending.called:
                self._pending[provider.name] = pending
        waiter: defer.Deferred[str | None] = defer.Deferred()

        def share(result: Any) -> Any:
            waiter.callback(result)
            return result

        pending.addBoth(share)
        return waiter

    def _probe(self, provider: Any) -> defer.Deferred[str | None]:
        name = provider.name
        try:
            d = defer.maybeDeferred(provider.probe)
        except Exception as exc:  # pragma: no cover - maybeDeferred catches
            d = defer.fail(exc)
        d.addTimeout(self._probe_timeout, self._clock)

        def reachable(_: Any) -> None:
            return None

        def unreachable(failure: Any) -> str:
            if failure.check(defer.TimeoutError, defer.CancelledError):
                return f"no answer within {self._probe_timeout:g}s"
            message = failure.getErrorMessage()
            return message if message and not message.startswith("[") else failure.type.__name__

        def remember(result: str | None) -> str | None:
            self._results[name] = (self._clock.seconds(), result)
            self._pending.pop(name, None)
            return result

        d.addCallbacks(reachable, unreachable)
        d.addCallback(remember)
        return d
