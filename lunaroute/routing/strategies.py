"""
The strategies a rule can spread its requests with.  Each turns the rule's
providers into an order to try them in (the first is where the request goes,
the rest are its fallbacks), skipping providers that cannot take a request
now (an open circuit breaker, as C{available} says).

  - L{RoundRobin}: each request starts at the next provider.
  - L{SmoothWeightedRoundRobin}: nginx's smooth weighted round robin; with
    weights 80/20 the picks go A A B A A A A B A A ...: every run of
    C{sum(weights)} picks (and, for 80/20, every run of 10) is within one of
    the weights, never bursts of the heavy provider.
  - L{LimitsAlternative}: primaries first, unless rate-limited; while a
    primary is rate-limited (a 429: for its C{retry-after}, else 60, 120,
    240 s on consecutive 429s) its traffic goes to the alternatives; it comes
    back when the limit expires.  L{RateLimits} holds those limits, per
    provider, shared by every rule.

Pure state machines: the clock is injected, nothing is scheduled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "BACKOFF_DOUBLINGS",
    "LimitsAlternative",
    "RateLimits",
    "RoundRobin",
    "SmoothWeightedRoundRobin",
    "Strategy",
]

Available = Callable[[str], bool]


def _everyone(name: str) -> bool:
    return True


class RoundRobin:
    """Each call starts one provider further along the list."""

    def __init__(self, providers: Sequence[str]) -> None:
        if not providers:
            raise ValueError("round robin needs at least one provider")
        self.providers = tuple(providers)
        self._next = 0

    def order(self, available: Available = _everyone) -> tuple[str, ...]:
        """
        The available providers, starting with the next in turn; the turn
        moves past the one chosen (so an unavailable provider's turns are
        shared evenly by the others).
        """
        count = len(self.providers)
        rotated = [self.providers[(self._next + i) % count] for i in range(count)]
        usable = tuple(name for name in rotated if available(name))
        if usable:
            self._next = (self.providers.index(usable[0]) + 1) % count
        return usable


class SmoothWeightedRoundRobin:
    """
    nginx's smooth weighted round robin: on each pick every available
    provider's current weight grows by its weight, the largest is chosen and
    loses the total.  Integer weights use integers; others exact fractions,
    so no rounding drifts the split.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        if not weights or any(w <= 0 for w in weights.values()):
            raise ValueError("weights must be positive numbers")
        exact: dict[str, int | Fraction]
        if all(float(w).is_integer() for w in weights.values()):
            exact = {name: int(w) for name, w in weights.items()}
        else:
            exact = {name: Fraction(w) for name, w in weights.items()}
        self.weights = exact
        self._current: dict[str, int | Fraction] = dict.fromkeys(exact, 0)

    def pick(self, available: Available = _everyone) -> str | None:
        """The next provider, among the available ones (C{None} if none)."""
        total: int | Fraction = 0
        best: str | None = None
        current = self._current
        for name, weight in self.weights.items():
            if not available(name):
                continue
            current[name] += weight
            total += weight
            if best is None or current[name] > current[best]:
                best = name
        if best is not None:
            current[best] -= total
        return best

    def order(self, available: Available = _everyone) -> tuple[str, ...]:
        """The pick first, then the other available providers, heaviest first."""
        first = self.pick(available)
        if first is None:
            return ()
        rest = sorted(
            (name for name in self.weights if name != first and available(name)),
            key=lambda name: -self.weights[name],
        )
        return (first, *rest)


# A 429 without retry-after keeps the provider out for base * 2**(n-1) on
# the n-th in a row, up to base * 2**BACKOFF_DOUBLINGS: 60, 120, 240, 240...
BACKOFF_DOUBLINGS = 2


class RateLimits:
    """
    Which providers are rate-limited, and until when, on the injected clock.
    One per router: a provider limited under one rule is limited for all.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._consecutive: dict[str, int] = {}

    def record_rate_limit(self, provider: str, retry_after_secs: float | None, base_secs: float = 60.0) -> float:
        """
        A 429 from C{provider}: limited for C{retry_after_secs} when the
        provider said so, else for the backoff (C{base_secs} doubling on
        each consecutive 429, at most four times it).

        @return: the clock time the limit expires.
        """
        count = self._consecutive.get(provider, 0) + 1
        self._consecutive[provider] = count
        if retry_after_secs is None:
            duration = base_secs * 2 ** min(count - 1, BACKOFF_DOUBLINGS)
        else:
            duration = max(0.0, retry_after_secs)
        until = self._clock.seconds() + duration
        self._until[provider] = until
        return until

    def record_success(self, provider: str) -> None:
        """C{provider} served a request: the next 429 starts the backoff again at C{base_secs}."""
        self._consecutive.pop(provider, None)

    def limited_until(self, provider: str) -> float | None:
        """The clock time C{provider}'s limit expires, or C{None} if it is not limited."""
        until = self._until.get(provider)
        if until is None:
            return None
        if self._clock.seconds() >= until:
            del self._until[provider]
            return None
        return until

    def is_limited(self, provider: str) -> bool:
        """Whether C{provider} is rate-limited now."""
        return self.limited_until(provider) is not None


class LimitsAlternative:
    """
    Primaries while they are not rate-limited, then the alternatives.  The
    rate-limited ones come last (when everything is limited the request
    still goes somewhere and the client sees the provider's own 429).
    """

    def __init__(
        self,
        primaries: Sequence[str],
        alternatives: Sequence[str],
        limits: RateLimits,
        backoff_base_secs: float = 60.0,
    ) -> None:
        if not primaries or not alternatives:
            raise ValueError("limits_alternative needs primary and alternative providers")
        self.primaries = tuple(primaries)
        self.alternatives = tuple(alternatives)
        self.limits = limits
        self.backoff_base_secs = backoff_base_secs

    def order(self, available: Available = _everyone) -> tuple[str, ...]:
        """Unlimited primaries, unlimited alternatives, then the limited ones (all available)."""
        names = tuple(dict.fromkeys((*self.primaries, *self.alternatives)))
        usable = [name for name in names if available(name)]
        free = [name for name in usable if not self.limits.is_limited(name)]
        return (*free, *(name for name in usable if name not in free))


Strategy = RoundRobin | SmoothWeightedRoundRobin | LimitsAlternative
