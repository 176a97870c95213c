"""
The retry policy (lunaroute.routing.retry): what is retried on the same
provider, what moves on, what is final; backoff with injected jitter;
retry-after in seconds and as an HTTP-date.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from twisted.internet.defer import CancelledError

from lunaroute.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from lunaroute.routing.breaker import CircuitOpen
from lunaroute.routing.retry import (
    FINAL,
    NEXT_PROVIDER,
    RETRY_SAME,
    SUCCESS,
    Outcome,
    RetryPolicy,
    backoff_delay,
    counts_against_provider,
    decide,
    parse_retry_after,
    retry_after_from_headers,
    switch_reason,
)


def step(outcome: Outcome, retries_done: int = 0, has_next: bool = True, **kw: object) -> tuple[str, float]:
    d = decide(outcome, retries_done=retries_done, max_retries=3, has_next=has_next, random=lambda: 0.0, **kw)  # type: ignore[arg-type]
    return d.action, d.delay_secs


@pytest.mark.parametrize("status", [200, 201, 304])
def test_success_is_relayed(status: int) -> None:
    assert step(Outcome.from_status(status))[0] == SUCCESS


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_transient_statuses_are_retried_on_the_same_provider_then_moved_on(status: int) -> None:
    """Up to max_retries on the same provider, then the next one (or final when none is left)."""
    outcome = Outcome.from_status(status)
    assert [step(outcome, n)[0] for n in range(4)] == [RETRY_SAME] * 3 + [NEXT_PROVIDER]
    assert step(outcome, 3, has_next=False)[0] == FINAL


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 501])
def test_client_errors_and_other_statuses_are_final(status: int) -> None:
    """Returned as they are, even with a fallback available."""
    assert step(Outcome.from_status(status)) == (FINAL, 0.0)


def test_never_sent_is_retried_but_maybe_sent_is_never_resent_to_the_same_provider() -> None:
    """Connection refused: retried; closed after writing or timed out: next provider at once."""
    refused = Outcome.from_exception(UpstreamUnreachable("refused", retryable=True))
    assert step(refused)[0] == RETRY_SAME
    for exc in (UpstreamUnreachable("closed", retryable=False), UpstreamTimeout("slow"), UpstreamError("odd")):
        outcome = Outcome.from_exception(exc)
        assert step(outcome)[0] == NEXT_PROVIDER
        assert step(outcome, has_next=False)[0] == FINAL


def test_nothing_is_retried_once_bytes_reached_the_client() -> None:
    """A stream that failed midway: the client has what was sent and an error, no duplicate."""
    assert step(Outcome(status=529, bytes_to_client=True))[0] == FINAL
    assert step(Outcome(error="maybe_sent", bytes_to_client=True))[0] == FINAL


def test_open_breaker_and_cancelled() -> None:
    """An open breaker moves on at once; a client that left ends it."""
    assert step(Outcome.from_exception(CircuitOpen("p", 60.0)))[0] == NEXT_PROVIDER
    assert step(Outcome.from_exception(CancelledError()))[0] == FINAL


def test_exponential_backoff_with_injected_jitter() -> None:
    """0.5, 1, 2, 4, 8, 8 s ceilings; half fixed, half random."""
    assert [backoff_delay(n, lambda: 0.0) for n in range(6)] == [0.25, 0.5, 1, 2, 4, 4]
    assert [backoff_delay(n, lambda: 1.0) for n in range(6)] == [0.5, 1, 2, 4, 8, 8]
    assert backoff_delay(1, lambda: 0.5, RetryPolicy(initial_delay_secs=2)) == 3.0


def test_retry_after_is_honoured_and_too_long_moves_on() -> None:
    """retry-after 5 waits 5 s (longer than the backoff); retry-after 120 tries the next provider."""
    assert step(Outcome.from_status(503, retry_after_secs=5)) == (RETRY_SAME, 5)
    assert step(Outcome.from_status(503, retry_after_secs=0)) == (RETRY_SAME, 0.25)
    assert step(Outcome.from_status(429, retry_after_secs=120))[0] == NEXT_PROVIDER
    assert step(Outcome.from_status(429, retry_after_secs=120), has_next=False)[0] == FINAL


def test_limits_alternative_moves_on_at_the_first_429() -> None:
    assert step(Outcome.from_status(429), rate_limit_moves_on=True)[0] == NEXT_PROVIDER
    assert step(Outcome.from_status(429), rate_limit_moves_on=True, has_next=False)[0] == RETRY_SAME
    assert step(Outcome.from_status(503), rate_limit_moves_on=True)[0] == RETRY_SAME


def test_parse_retry_after_seconds_and_http_dates() -> None:
    """Both forms of RFC 9110; nonsense is None; the past is 0."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 1, 1, 12, 1, 30, tzinfo=UTC), usegmt=True)
    assert later == "Thu, 01 Jan 2026 12:01:30 GMT"
    assert parse_retry_after(later, now) == 90
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after(" 12 ", now) == 12 and parse_retry_after("1.5", now) == 1.5
    for bad in (None, "", "soon", "nan", "inf", "Thu, 01 Jan 2026 12:01:30"):
        assert parse_retry_after(bad, now) is None, bad
    assert parse_retry_after("-3", now) == 0


def test_retry_after_ms_wins() -> None:
    """OpenAI's retry-after-ms is more precise than retry-after."""
    headers = {"retry-after-ms": "1500", "retry-after": "2"}
    assert retry_after_from_headers(headers.get, 0) == 1.5
    assert retry_after_from_headers({"retry-after-ms": "x", "retry-after": "2"}.get, 0) == 2
    assert retry_after_from_headers({}.get, 0) is None


def test_what_counts_against_a_provider() -> None:
    """5xx and transport errors count; 429 and 4xx do not (the provider is up); skips and cancels have no verdict."""
    assert counts_against_provider(Outcome.from_status(503)) is True
    assert counts_against_provider(Outcome.from_exception(UpstreamTimeout("x"))) is True
    assert counts_against_provider(Outcome.from_status(429)) is False
    assert counts_against_provider(Outcome.from_status(401)) is False
    assert counts_against_provider(Outcome.from_exception(CircuitOpen("p", None))) is None
    assert counts_against_provider(Outcome(error="cancelled")) is None


def test_switch_reasons() -> None:
    assert switch_reason(Outcome.from_status(429)) == "rate_limit"
    assert switch_reason(Outcome.from_exception(CircuitOpen("p", None))) == "circuit_breaker"
    assert switch_reason(Outcome.from_status(529)) == "service_issue"
