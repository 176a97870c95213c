"""
The retry policy: after one attempt on a provider, send the request again to
the same provider, move on to the next one of the plan, or give the client
what came back.  Pure functions; the delay's randomness is injected.

  - Nothing is retried once a byte has gone to the client.
  - Transient failures are retried on the same provider, up to its
    C{http_client.max_retries}, with exponential backoff and jitter
    (honouring C{retry-after}), then the next provider is tried: the
    request certainly never reached the provider (connection refused,
    connect timeout, C{RequestNotSent}), or the provider answered 429, 500,
    502, 503, 504 or 529.
  - A request that may have reached the provider without an answer (the
    connection closed after it was written, no response in time) is never
    sent to the same provider again; the next provider is tried.
  - An open circuit breaker moves on at once.
  - Client errors (400, 401, 403, 404, 413) and every other status come
    back as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from twisted.internet.defer import CancelledError

from lunaroute.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from lunaroute.routing.breaker import CircuitOpen

__all__ = [
    "CLIENT_ERROR_STATUSES",
    "FINAL",
    "NEXT_PROVIDER",
    "RETRYABLE_STATUSES",
    "RETRY_SAME",
    "SUCCESS",
    "Decision",
    "Outcome",
    "RetryPolicy",
    "backoff_delay",
    "counts_against_provider",
    "decide",
    "parse_retry_after",
    "retry_after_from_headers",
    "switch_reason",
]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
CLIENT_ERROR_STATUSES = frozenset({400, 401, 403, 404, 413})

# Decision actions.
SUCCESS = "success"  # relay it: the provider served the request
RETRY_SAME = "retry_same"  # wait delay_secs, then send to the same provider again
NEXT_PROVIDER = "next_provider"  # try the plan's next attempt now
FINAL = "final"  # give the client what came back (status or error) as it is

# Outcome.error kinds.
NOT_SENT = "not_sent"  # certainly never reached the provider (refused, connect timeout, RequestNotSent)
MAYBE_SENT = "maybe_sent"  # may have reached it: closed after writing, no answer in time
CIRCUIT_OPEN = "circuit_open"  # skipped: its breaker is open
CANCELLED = "cancelled"  # the client went away: no verdict on the provider
OTHER = "error"


@dataclass(frozen=True)
class Outcome:
    """
    How one attempt ended, as the send and relay steps saw it.

    @ivar status: the response status, if one arrived.
    @ivar error: C{None} for a response, else one of C{not_sent},
        C{maybe_sent}, C{circuit_open}, C{cancelled}, C{error}.
    @ivar detail: a readable description (for health's last error, logs).
    @ivar bytes_to_client: whether any byte of it was relayed already.
    @ivar retry_after_secs: the provider's C{retry-after}, parsed
        (L{retry_after_from_headers}).
    """

    status: int | None = None
    error: str | None = None
    detail: str | None = None
    bytes_to_client: bool = False
    retry_after_secs: float | None = None

    @classmethod
    def from_status(cls, status: int, retry_after_secs: float | None = None) -> Outcome:
        """A response arrived with C{status} (headers only; nothing relayed yet)."""
        return cls(status=status, retry_after_secs=retry_after_secs, detail=f"HTTP {status}")

    @classmethod
    def from_exception(cls, exc: BaseException) -> Outcome:
        """
        The outcome of a failed C{IProvider.request}: L{UpstreamUnreachable}
        with C{retryable} never left; without it, or L{UpstreamTimeout},
        it may have; L{lunaroute.routing.breaker.CircuitOpen} was skipped.
        """
        if isinstance(exc, CircuitOpen):
            kind = CIRCUIT_OPEN
        elif isinstance(exc, CancelledError):
            kind = CANCELLED
        elif isinstance(exc, UpstreamUnreachable):
            kind = NOT_SENT if exc.retryable else MAYBE_SENT
        elif isinstance(exc, UpstreamTimeout):
            kind = MAYBE_SENT
        elif isinstance(exc, UpstreamError):
            kind = MAYBE_SENT
        else:
            kind = OTHER
        return cls(error=kind, detail=str(exc) or type(exc).__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """
    The backoff: C{initial_delay_secs * 2**n} before the (n+1)-th retry, at
    most C{max_delay_secs}, with half of it random ("equal jitter");
    a C{retry-after} longer than C{max_retry_after_secs} is not waited for
    (the next provider is tried instead).
    """

    initial_delay_secs: float = 0.5
    max_delay_secs: float = 8.0
    max_retry_after_secs: float = 30.0


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class Decision:
    """What to do after an attempt: C{action}, after C{delay_secs} for a retry."""

    action: str
    delay_secs: float = 0.0
    why: str = ""


def backoff_delay(retries_done: int, random: Callable[[], float], policy: RetryPolicy = DEFAULT_POLICY) -> float:
    """The delay before retry number C{retries_done + 1}: half fixed, half random."""
    ceiling = min(policy.max_delay_secs, policy.initial_delay_secs * 2**retries_done)
    return ceiling / 2 + random() * ceiling / 2


def counts_against_provider(outcome: Outcome) -> bool | None:
    """
    For the circuit breaker and health: C{True} when the provider failed
    (unreachable, no answer, a 5xx), C{False} when it answered (429 and
    client errors included: the provider is up), C{None} when there is no
    verdict (skipped by its breaker, or the client went away).
    """
    if outcome.error in (CIRCUIT_OPEN, CANCELLED):
        return None
    if outcome.error is not None:
        return True
    return outcome.status is not None and outcome.status >= 500


def switch_reason(outcome: Outcome) -> str:
    """The original's switch reasons: C{rate_limit}, C{circuit_breaker} or C{service_issue}."""
    if outcome.status == 429:
        return "rate_limit"
    if outcome.error == CIRCUIT_OPEN:
        return "circuit_breaker"
    return "service_issue"


def decide(
    outcome: Outcome,
    *,
    retries_done: int,
    max_retries: int,
    has_next: bool,
    random: Callable[[], float],
    rate_limit_moves_on: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Decision:
    """
    The next step after one attempt.

    @param retries_done: how many times this provider was already retried
        for this request.
    @param max_retries: the provider's C{http_client.max_retries}.
    @param has_next: whether the plan has another attempt after this one.
    @param rate_limit_moves_on: a 429 moves to the next provider at once
        (a C{limits_alternative} rule: the alternatives are the point).
    """
    move_on = Decision(NEXT_PROVIDER if has_next else FINAL)
    if outcome.error is None and outcome.status is not None and outcome.status < 400:
        return Decision(SUCCESS)
    if outcome.bytes_to_client:
        return Decision(FINAL, why="bytes already relayed to the client")
    if outcome.error == CANCELLED:
        return Decision(FINAL, why="the client went away")
    if outcome.error == CIRCUIT_OPEN:
        return Decision(move_on.action, why="circuit breaker open")
    if outcome.error in (MAYBE_SENT, OTHER):
        return Decision(move_on.action, why="may have reached the provider: never re-sent to it")
    if outcome.error is None and outcome.status not in RETRYABLE_STATUSES:
        return Decision(FINAL, why=f"HTTP {outcome.status} is returned as it is")
    # Transient: never sent, or a retryable status.
    if outcome.status == 429 and rate_limit_moves_on and has_next:
        return Decision(NEXT_PROVIDER, why="rate-limited: alternatives next")
    if retries_done >= max_retries:
        return Decision(move_on.action, why=f"{max_retries} retries done")
    delay = backoff_delay(retries_done, random, policy)
    if outcome.retry_after_secs is not None:
        if outcome.retry_after_secs > policy.max_retry_after_secs:
            return Decision(move_on.action, why=f"retry-after {outcome.retry_after_secs:g}s is too long to wait")
        delay = max(delay, outcome.retry_after_secs)
    return Decision(RETRY_SAME, delay, why="transient failure")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """
    A C{retry-after} value in seconds from C{now}: delay-seconds, or an
    HTTP-date (C{now} is the epoch time, C{IReactorTime.seconds()}); C{None}
    when absent or unreadable.  A date in the past is 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def retry_after_from_headers(header: Callable[[str], str | None], now: float) -> float | None:
    """
    The delay a response asks for: OpenAI's C{retry-after-ms} when present,
    else C{retry-after} (see L{parse_retry_after}).

    @param header: looks a response header up by lower-case name.
    """
    millis = header("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis.strip())
        except ValueError:
            value = float("nan")
        if 0 <= value < float("inf"):
            return value / 1000
    return parse_retry_after(header("retry-after"), now)
