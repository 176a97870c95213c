"""
Routing strategies (lunaroute.routing.strategies): round robin, smooth
weighted round robin, and rate-limit alternatives on a Clock.
"""

from __future__ import annotations

from collections import Counter

import pytest
from twisted.internet.task import Clock

from lunaroute.routing.strategies import LimitsAlternative, RateLimits, RoundRobin, SmoothWeightedRoundRobin


def test_round_robin_rotates_and_orders_the_rest_as_fallbacks() -> None:
    """Each request starts one further; the others follow as its fallbacks."""
    rr = RoundRobin(["a", "b", "c"])
    assert [rr.order() for _ in range(4)] == [("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"), ("a", "b", "c")]


def test_round_robin_shares_an_unavailable_providers_turns_evenly() -> None:
    """With b skipped, a and c alternate (c does not get b's turns too)."""
    rr = RoundRobin(["a", "b", "c"])
    firsts = [rr.order(lambda n: n != "b")[0] for _ in range(6)]
    assert firsts == ["a", "c", "a", "c", "a", "c"]
    assert RoundRobin(["a"]).order(lambda n: False) == ()


@pytest.mark.parametrize(
    "weights",
    [
        {"openai_primary": 80, "openai_backup": 20},
        {"a": 5, "b": 1, "c": 1},
        {"a": 50, "b": 30, "c": 20},
        {"a": 3, "b": 2},
        {"a": 1, "b": 1, "c": 1, "d": 1},
        {"a": 2.5, "b": 1.5},
    ],
    ids=lambda w: "-".join(f"{v}" for v in w.values()),
)
def test_weighted_split_is_exact_and_smooth(weights: dict[str, float]) -> None:
    """
    Over 10,000 picks each provider is within 1% of its weight, and every
    run of sum(weights) consecutive picks is within one of the weights.
    """
    wrr = SmoothWeightedRoundRobin(weights)
    picks = [wrr.pick() for _ in range(10_000)]
    total = sum(weights.values())
    counts = Counter(picks)
    for name, weight in weights.items():
        assert abs(counts[name] / 10_000 - weight / total) <= 0.01, (name, counts)
    window = int(total) if float(total).is_integer() else int(total * 2)
    scale = window / total
    for start in range(0, 10_000 - window):
        seen = Counter(picks[start : start + window])
        for name, weight in weights.items():
            assert abs(seen[name] - weight * scale) <= 1, (start, seen)


def test_weighted_80_20_over_every_window_of_ten() -> None:
    """The issue's check: any 10 consecutive requests split 8/2 (within one); never bursts."""
    wrr = SmoothWeightedRoundRobin({"openai_primary": 80, "openai_backup": 20})
    picks = [wrr.pick() for _ in range(10_000)]
    for start in range(len(picks) - 10):
        backups = picks[start : start + 10].count("openai_backup")
        assert 1 <= backups <= 3
    assert picks[:5] == ["openai_primary", "openai_primary", "openai_backup", "openai_primary", "openai_primary"]


def test_weighted_order_skips_unavailable_and_lists_fallbacks_by_weight() -> None:
    """An open breaker takes a provider out of the rotation; the rest keep their ratio."""
    wrr = SmoothWeightedRoundRobin({"a": 60, "b": 30, "c": 10})
    assert wrr.order()[1:] in (("b", "c"), ("a", "c"), ("a", "b"))
    picks = Counter(wrr.order(lambda n: n != "a")[0] for _ in range(4000))
    assert picks["a"] == 0 and picks["b"] == 3000 and picks["c"] == 1000
    assert wrr.order(lambda n: False) == ()


def test_weights_must_be_positive() -> None:
    """The config refuses them first; the class refuses them too."""
    with pytest.raises(ValueError):
        SmoothWeightedRoundRobin({"a": 0})
    with pytest.raises(ValueError):
        RoundRobin([])


# --------------------------------------------------------------------------
# limits_alternative


def setup() -> tuple[LimitsAlternative, RateLimits, Clock]:
    clock = Clock()
    limits = RateLimits(clock)
    return LimitsAlternative(["primary"], ["alt1", "alt2"], limits), limits, clock


def test_primary_first_while_not_limited() -> None:
    strategy, _, _ = setup()
    assert strategy.order() == ("primary", "alt1", "alt2")


def test_rate_limited_primary_sends_traffic_to_alternatives_until_retry_after() -> None:
    """429 with retry-after 30: alternatives for 30 s, then the primary again."""
    strategy, limits, clock = setup()
    assert limits.record_rate_limit("primary", 30) == 30
    assert strategy.order() == ("alt1", "alt2", "primary")
    clock.advance(29.9)
    assert strategy.order()[0] == "alt1"
    clock.advance(0.1)
    assert strategy.order() == ("primary", "alt1", "alt2") and limits.limited_until("primary") is None


def test_backoff_without_retry_after_is_60_120_240() -> None:
    """Consecutive 429s with no retry-after: 60, 120, 240, then 240 again."""
    _, limits, clock = setup()
    durations = []
    for _ in range(4):
        until = limits.record_rate_limit("primary", None)
        durations.append(until - clock.seconds())
        clock.advance(until - clock.seconds())
        assert not limits.is_limited("primary")
    assert durations == [60, 120, 240, 240]


def test_a_success_restarts_the_backoff() -> None:
    """After the primary serves a request again, the next 429 is 60 s, not 240."""
    _, limits, clock = setup()
    limits.record_rate_limit("primary", None)
    clock.advance(60)
    limits.record_rate_limit("primary", None)
    clock.advance(120)
    limits.record_success("primary")
    assert limits.record_rate_limit("primary", None) == clock.seconds() + 60


def test_rule_backoff_base_and_retry_after_zero() -> None:
    """exponential_backoff_base_secs scales the backoff; retry-after 0 limits for no time."""
    clock = Clock()
    limits = RateLimits(clock)
    strategy = LimitsAlternative(["p"], ["a"], limits, backoff_base_secs=10)
    limits.record_rate_limit("p", None, strategy.backoff_base_secs)
    assert limits.limited_until("p") == 10
    limits.record_rate_limit("p", 0)
    assert strategy.order() == ("p", "a")


def test_everything_limited_still_gives_an_order_and_skips_unavailable() -> None:
    """All limited: they are all returned (the client sees the real 429); open breakers are left out."""
    strategy, limits, _ = setup()
    for name in ("primary", "alt1", "alt2"):
        limits.record_rate_limit(name, 10)
    assert strategy.order() == ("primary", "alt1", "alt2")
    assert strategy.order(lambda n: n != "alt1") == ("primary", "alt2")
