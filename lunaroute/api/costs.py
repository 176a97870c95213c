"""
A request's cost split by kind of token (input, output, cache reads, 5-minute
and 1-hour cache writes), for the session API: where did the money go?

Only the total is recorded (C{estimated_cost_usd}); the split is computed
when asked, from the recorded token counts and today's pricing table, with
the same rules as L{lunaroute.stats.pricing.cost_for_price} (a test checks
that the parts add up to it).  Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lunaroute.stats.pricing import PricingTable

__all__ = ["cost_by_kind"]

_PER_TOKEN = 1_000_000.0


def _count(turn: Mapping[str, Any], key: str) -> int:
    value = turn.get(key)
    return max(0, int(value)) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def cost_by_kind(turn: Mapping[str, Any], pricing: PricingTable) -> dict[str, float] | None:
    """
    C{{"input", "output", "cache_read", "cache_write_5m", "cache_write_1h"}}
    in USD for one request row (its token columns, C{model_used} or
    C{model_requested}, C{dialect}), or C{None} when the model has no price.
    """
    price = pricing.price_for(turn.get("model_used") or turn.get("model_requested"))
    if price is None:
        return None
    input_tokens = _count(turn, "input_tokens")
    cache_read = _count(turn, "cache_read_tokens")
    creation = _count(turn, "cache_creation_tokens")
    one_hour = min(_count(turn, "cache_creation_1h_tokens"), creation)
    dialect = turn.get("dialect") or "anthropic"
    if str(dialect).startswith("openai"):
        prompt = max(input_tokens, cache_read)
        input_tokens = max(0, input_tokens - cache_read)
    else:
        prompt = input_tokens + cache_read + creation
    rates = price.rates_for(prompt)
    return {
        "input": input_tokens * rates.input / _PER_TOKEN,
        "output": _count(turn, "output_tokens") * rates.output / _PER_TOKEN,
        "cache_read": cache_read * rates.cache_read / _PER_TOKEN,
        "cache_write_5m": (creation - one_hour) * rates.cache_write / _PER_TOKEN,
        "cache_write_1h": one_hour * rates.cache_write_1h / _PER_TOKEN,
    }
