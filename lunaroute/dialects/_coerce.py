"""Defensive readers for provider JSON.

Accumulators must never raise on odd input (a proxy in front of another
proxy, a new API version, a truncated object), so every field is read
through these helpers, which fall back to a neutral value on a wrong type.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_dict", "as_int", "as_list", "as_str", "opt_str"]


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
