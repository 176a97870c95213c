"""
What the gateway knows of a model besides its price: its context window.

The window is the most tokens a request's prompt plus its answer may hold;
the session API puts it beside each turn's context size so a long session's
growth (and its compactions) can be read against it.  The figures are the
providers' published ones (Anthropic's "Context windows" page and model
overview, OpenAI's model pages, read 2026-11); a model none of the patterns
matches has no known window (C{None}), never a guess.
"""

from __future__ import annotations

import fnmatch
import functools

__all__ = ["context_window"]

# Checked in order, first match wins: (glob on the lower-cased model name,
# window in tokens).  Anthropic lists the models with a 1M-token window by
# name; "other Claude models ... have a 200k-token context window".
_WINDOWS: tuple[tuple[str, int], ...] = (
    ("claude-fable-5*", 1_000_000),
    ("claude-mythos-5*", 1_000_000),
    ("claude-opus-5*", 1_000_000),
    ("claude-sonnet-5*", 1_000_000),
    ("claude-opus-4-6*", 1_000_000),
    ("claude-opus-4-7*", 1_000_000),
    ("claude-opus-4-8*", 1_000_000),
    ("claude-sonnet-4-6*", 1_000_000),
    ("claude-*", 200_000),
    # OpenAI: the GPT-5 family 400k, GPT-4.1 about 1M, GPT-4o 128k, the o
    # series 200k.
    ("gpt-5*", 400_000),
    ("gpt-4.1*", 1_047_576),
    ("gpt-4o*", 128_000),
    ("o1-mini*", 128_000),
    ("o1*", 200_000),
    ("o3*", 200_000),
    ("o4-mini*", 200_000),
    ("codex-mini*", 200_000),
)


@functools.lru_cache(maxsize=512)
def context_window(model: str | None) -> int | None:
    """
    The context window of C{model} in tokens, or C{None} when unknown.  A
    C{vendor/} prefix (C{anthropic/claude-...}) and Claude Code's C{[1m]}
    suffix (an explicit 1M window) are understood.
    """
    if not model:
        return None
    name = model.strip().lower()
    if name.endswith("[1m]"):
        return 1_000_000
    name = name.rsplit("/", 1)[-1]
    for pattern, window in _WINDOWS:
        if fnmatch.fnmatchcase(name, pattern):
            return window
    return None
