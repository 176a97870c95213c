"""
Per-exchange counter increments are added to prometheus-client's counters
when the registry is read (issue 19: one locked call per counter per request
before).  Whoever reads the registry sees exactly what per-call increments
would have given.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lunaroute.dialects.model import ResponseSummary, ToolCall, Usage
from lunaroute.exchange import Exchange, Timings
from lunaroute.metrics import GatewayMetrics


@contextmanager
def frozen_time() -> Iterator[None]:
    """_created samples hold time.time() at a series' birth: make it fixed."""
    with mock.patch("time.time", return_value=1764614400.25):
        yield


def _direct_count(self: GatewayMetrics, metric: Any, *values: str, amount: int = 1) -> None:
    (metric.labels(*values) if values else metric).inc(amount)


def direct_metrics(monkeypatch: pytest.MonkeyPatch) -> GatewayMetrics:
    """A GatewayMetrics that increments every counter at once, as before."""
    monkeypatch.setattr(GatewayMetrics, "_count", _direct_count)
    return GatewayMetrics()


def _exchange(
    *, provider: str = "anthropic", model: str = "claude-sonnet-4-5", status: int = 200, outcome: str = "ok",
    streaming: bool = False, tokens: tuple[int, int] = (100, 20), tools: tuple[str, ...] = (),
    total: float = 1.503, tool_results: tuple[tuple[str, float], ...] = (),
) -> Exchange:
    summary = ResponseSummary(
        dialect="anthropic", model=model,
        tool_calls=[ToolCall(id=f"t{i}", name=name, input={}, raw_input="{}") for i, name in enumerate(tools)],
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1], cache_read_tokens=tokens[0] // 3),
    )
    return Exchange(
        request_id=str(uuid.uuid4()), session_id="s1", listener="anthropic", kind="conversation",
        dialect="anthropic", path="/v1/messages", method="POST",
        timings=Timings(received=0.0, upstream_sent=0.0021, headers_received=0.3, first_byte=0.31,
                        last_byte=total - 0.003, finished=total),
        provider=provider, model=model, streaming=streaming, status=status, outcome=outcome,
        response=summary, chunk_count=5 if streaming else 0, chunk_gaps_ms=[1.5, 2.25] if streaming else [],
        cost_usd=0.0123 if status == 200 else None,
        tool_results=[{"tool_name": name, "duration_ms": ms} for name, ms in tool_results],
    )


EXCHANGES = st.lists(
    st.builds(
        _exchange,
        provider=st.sampled_from(["anthropic", "openai"]),
        model=st.sampled_from(["claude-sonnet-4-5", "gpt-5", "claude-haiku-4-5"]),
        status=st.sampled_from([200, 200, 429, 500]),
        outcome=st.sampled_from(["ok", "ok", "upstream_error", "client_disconnected", "timeout"]),
        streaming=st.booleans(),
        tokens=st.tuples(st.integers(0, 10**6), st.integers(0, 10**5)),
        tools=st.lists(st.sampled_from(["Bash", "Read", "Edit"]), max_size=3).map(tuple),
        total=st.floats(0.004, 120.0),
        tool_results=st.lists(
            st.tuples(st.sampled_from(["Bash", "Read"]), st.floats(0.0, 60_000.0)), max_size=2
        ).map(tuple),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(exchanges=EXCHANGES)
def test_metrics_body_is_byte_for_byte_the_per_call_one(monkeypatch: pytest.MonkeyPatch, exchanges: list[Exchange]) -> None:
    """Any sequence of exchanges: /metrics is the same bytes as incrementing each counter per call."""
    with frozen_time():
        pending = GatewayMetrics()
        with monkeypatch.context() as patch:
            direct = direct_metrics(patch)
            for exchange in exchanges:
                direct.request_started(exchange)
                direct.observe(exchange)
        for exchange in exchanges:
            pending.request_started(exchange)
            pending.observe(exchange)
        assert pending.render()[0] == direct.render()[0]


def test_any_reader_of_the_registry_sees_the_pending_updates() -> None:
    """get_sample_value reads through the registry too: nothing is stale, and a second read adds nothing twice."""
    metrics = GatewayMetrics()
    for _ in range(3):
        metrics.observe(_exchange(tokens=(100, 20), total=2.0))
    labels = {"listener": "anthropic", "provider": "anthropic", "model": "claude-sonnet-4-5", "status": "200"}
    assert metrics.registry.get_sample_value("lunaroute_requests_total", labels) == 3.0
    assert metrics.registry.get_sample_value("lunaroute_requests_total", labels) == 3.0
    duration = {"listener": "anthropic", "provider": "anthropic", "model": "claude-sonnet-4-5"}
    assert metrics.registry.get_sample_value("lunaroute_request_duration_seconds_count", duration) == 3.0
    assert metrics.registry.get_sample_value("lunaroute_request_duration_seconds_sum", duration) == 6.0


def test_an_unscraped_gateway_keeps_one_pending_amount_per_series() -> None:
    """Without a scrape, 5,000 exchanges leave one pending amount per labelled series, not per exchange."""
    metrics = GatewayMetrics()
    for index in range(5_000):
        metrics.observe(_exchange(model=("claude-sonnet-4-5", "gpt-5")[index % 2], tools=("Bash",)))
    assert len(metrics._pending.amounts) < 30
    labels = {"listener": "anthropic", "provider": "anthropic", "model": "gpt-5", "status": "200"}
    assert metrics.registry.get_sample_value("lunaroute_requests_total", labels) == 2_500
    assert metrics._pending.amounts == {}
