"""Defensive readers for provider JSON.

Accumulators must never raise on odd input (a proxy in front of another
proxy, a new API version, a truncated object), so every field is read
through these helpers, which fall back to a neutral value on a wrong type.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

__all__ = ["as_dict", "as_int", "as_list", "as_str", "copy_json", "json_keeper", "opt_str"]

_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def copy_json(value: Any) -> Any:
    """
    A deep copy of parsed JSON (dicts, lists and scalars), several times
    cheaper than C{copy.deepcopy}, which the stream taps ran on every event
    that opens a message, block or item.  Anything else is deep-copied the
    general way.
    """
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) in _IMMUTABLE else copy_json(item) for key, item in value.items()}
    if kind is list:
        return [item if type(item) in _IMMUTABLE else copy_json(item) for item in value]
    if kind in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


def _keep(value: Any) -> Any:
    return value


def json_keeper(owned: bool) -> Callable[[Any], Any]:
    """
    How an accumulator keeps the event data it holds on to: as it is when
    C{owned} (the caller hands each event's data over and never uses it
    again), else a deep copy (L{copy_json}), so the summary cannot change if
    the caller reuses the data.
    """
    return _keep if owned else copy_json


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty dict."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else an empty list."""
    return value if isinstance(value, list) else []


def as_int(value: Any, default: int = 0) -> int:
    """``value`` as an int; bools, None and junk give ``default``."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def as_str(value: Any) -> str:
    """``value`` if it is a str, else ``""``."""
    return value if isinstance(value, str) else ""


def opt_str(value: Any) -> str | None:
    """``value`` if it is a str, else None."""
    return value if isinstance(value, str) else None
