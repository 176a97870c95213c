"""
Context windows of well-known models (tokens), for the session page's
context chart: the line the context size approaches before a client
compacts.  Pure; an unknown model has none (no line drawn).
"""

from __future__ import annotations

__all__ = ["context_window"]

# Longest prefix first wins; the default window of each family (Claude's
# 1M-token beta is opt-in per request, so 200k is what most sessions have).
_WINDOWS = (
    ("claude-", 200_000),
    ("gpt-5", 400_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("gemini-", 1_048_576),
)


def context_window(model: object) -> int | None:
    """The context window of C{model} (a model name as recorded), or C{None} when unknown."""
    if not isinstance(model, str):
        return None
    name = model.strip().lower().rsplit("/", 1)[-1]
    best: tuple[int, int] | None = None
    for prefix, size in _WINDOWS:
        if name.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), size)
    return best[1] if best else None
