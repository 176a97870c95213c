"""
Query-string parameters of the session API, checked in one place: each
accessor returns a typed value or raises L{BadParameter} naming the
parameter, and a parameter the route does not know is refused too (a typo
such as C{min_token=} must not silently return everything).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from lunaroute.sessions.store import BadParameter, StatsWindow, make_window, parse_moment

__all__ = ["Params"]

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class Params:
    """The query parameters of one request (the last value of each wins)."""

    def __init__(self, request: Any, allowed: Iterable[str]) -> None:
        self.values: dict[str, str] = {}
        args = getattr(request, "args", None) or {}
        allowed = frozenset(allowed)
        for raw_name, raw_values in args.items():
            name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else str(raw_name)
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise BadParameter(f"unknown parameter {name[:60]!r} (this route takes: {known})", name[:60])
            value = raw_values[-1] if raw_values else b""
            try:
                self.values[name] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                raise BadParameter(f"{name} is not valid UTF-8", name) from None

    def text(self, name: str, max_length: int = 1000) -> str | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if len(value) > max_length:
            raise BadParameter(f"{name} is longer than {max_length} characters", name)
        return value

    def integer(self, name: str, default: int | None = None, low: int | None = None, high: int | None = None) -> Any:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value.strip())
        except ValueError:
            raise BadParameter(f"{name} must be an integer, got {value[:40]!r}", name) from None
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise BadParameter(f"{name} must be {bounds}, got {number}", name)
        return number

    def number(self, name: str) -> float | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        try:
            number = float(value.strip())
        except ValueError:
            raise BadParameter(f"{name} must be a number, got {value[:40]!r}", name) from None
        if not math.isfinite(number):
            raise BadParameter(f"{name} must be a finite number", name)
        return number

    def flag(self, name: str) -> bool | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise BadParameter(f"{name} must be true or false, got {value[:40]!r}", name)

    def choice(self, name: str, choices: Iterable[str], default: str) -> str:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        options = list(choices)
        if value not in options:
            raise BadParameter(f"{name} must be one of {', '.join(options)}, got {value[:40]!r}", name)
        return value

    def window(self, now: float) -> StatsWindow:
        """C{days} (1 to 36500), or C{from}/C{to} ISO dates; not both."""
        days = self.integer("days", low=1, high=36500)
        since, until = self.text("from", 64), self.text("to", 64)
        if days is not None and since is not None:
            raise BadParameter("give days or from, not both", "days")
        window = make_window(
            now,
            days,
            parse_moment(since, "from") if since is not None else None,
            parse_moment(until, "to", end=True) if until is not None else None,
        )
        if window.since is not None and window.until is not None and window.since >= window.until:
            raise BadParameter("from must be before to", "from")
        return window


WINDOW_PARAMS = ("days", "from", "to")
