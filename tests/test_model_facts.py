"""The context windows the session API reports beside each turn's context size."""

from __future__ import annotations

import pytest

from lunaroute.stats.models import context_window


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("claude-sonnet-4-5-20250929", 200_000),
        ("claude-haiku-4-5-20251001", 200_000),
        ("claude-opus-4-1-20250805", 200_000),
        ("claude-opus-4-6", 1_000_000),
        ("claude-sonnet-4-6", 1_000_000),
        ("claude-opus-5", 1_000_000),
        ("claude-sonnet-4-5[1m]", 1_000_000),
        ("anthropic/claude-sonnet-4-5", 200_000),
        ("Claude-Opus-4-7", 1_000_000),
        ("gpt-5.1-codex", 400_000),
        ("gpt-4.1-mini", 1_047_576),
        ("gpt-4o-2024-08-06", 128_000),
        ("o1-mini", 128_000),
        ("o3", 200_000),
        ("llama3.1:8b", None),
        ("", None),
        (None, None),
    ],
)
def test_context_window_by_model(model: str | None, window: int | None) -> None:
    assert context_window(model) == window
