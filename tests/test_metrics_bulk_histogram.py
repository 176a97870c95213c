"""
The chunk-gap histogram observed a stream at a time (issue 19): the /metrics
exposition is byte for byte the one of prometheus-client's Histogram
observed once per gap, as before.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

import lunaroute.metrics as metrics_module
from lunaroute.exchange import Exchange, Timings
from lunaroute.metrics import BulkHistogram, GatewayMetrics

NAME = "lunaroute_streaming_chunk_latency_seconds"
HELP = "Gaps between consecutive streamed chunks."
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@contextmanager
def frozen_time() -> Iterator[None]:
    """_created samples hold time.time() at a series' birth: make it fixed."""
    with mock.patch("time.time", return_value=1764614400.25):
        yield


class PerGapHistogram:
    """The way before: a registered Histogram observed once per gap."""

    def __init__(self, name: str, documentation: str, labelname: str, buckets: Any,
                 registry: CollectorRegistry) -> None:
        self.histogram = Histogram(name, documentation, [labelname], buckets=buckets, registry=registry)

    def observe_ms(self, value: str, amounts_ms: Iterable[float]) -> None:
        child = self.histogram.labels(value)
        for gap in amounts_ms:
            child.observe(gap / 1000.0)


GAPS = st.one_of(
    st.sampled_from([b * 1000.0 for b in BUCKETS]),  # exactly on a bound
    st.floats(min_value=0.0, max_value=60_000.0),
    st.floats(min_value=-5.0, max_value=0.0),
    st.sampled_from([0.0, 1e-9, 30_000.0001, 1e12, math.inf]),
)
STREAMS = st.lists(
    st.tuples(st.sampled_from(["anthropic", "openai", "other"]), st.lists(GAPS, max_size=30)),
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(STREAMS, st.integers(0, 12))
def test_exposition_equals_a_histogram_observed_per_gap(
    streams: list[tuple[str, list[float]]], scrape_at: int
) -> None:
    with frozen_time():
        old, new = CollectorRegistry(), CollectorRegistry()
        before = PerGapHistogram(NAME, HELP, "provider", BUCKETS, old)
        after = BulkHistogram(NAME, HELP, "provider", BUCKETS, new)
        for i, (provider, gaps) in enumerate(streams):
            if i == scrape_at:
                assert generate_latest(new) == generate_latest(old)
            if gaps:  # as GatewayMetrics: a stream without gaps adds no series
                before.observe_ms(provider, gaps)
                after.observe_ms(provider, gaps)
        assert generate_latest(new) == generate_latest(old)


def test_nan_is_summed_but_in_no_bucket_like_histogram() -> None:
    with frozen_time():
        old, new = CollectorRegistry(), CollectorRegistry()
        PerGapHistogram(NAME, HELP, "provider", BUCKETS, old).observe_ms("p", [math.nan, 2.0])
        BulkHistogram(NAME, HELP, "provider", BUCKETS, new).observe_ms("p", [math.nan, 2.0])
        assert generate_latest(new) == generate_latest(old)
        assert b'_count{provider="p"} 1.0' in generate_latest(new)


def test_the_name_is_still_taken_in_the_registry() -> None:
    registry = CollectorRegistry()
    BulkHistogram(NAME, HELP, "provider", BUCKETS, registry)
    with pytest.raises(ValueError):
        Histogram(NAME, HELP, ["provider"], buckets=BUCKETS, registry=registry)


def _exchange(provider: str, gaps: list[float]) -> Exchange:
    return Exchange(
        request_id=str(uuid.uuid4()), session_id="s1", listener="anthropic", kind="conversation",
        dialect="anthropic", path="/v1/messages", method="POST",
        timings=Timings(received=0.0, upstream_sent=0.002, headers_received=0.3, first_byte=0.3,
                        last_byte=1.5, finished=1.503),
        provider=provider, model="claude-sonnet-4-5", streaming=True, status=200, outcome="ok",
        chunk_count=len(gaps) + 1, chunk_gaps_ms=gaps,
    )


def test_gateway_metrics_render_the_same_bytes_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole /metrics body, with the old per-gap histogram in its place."""
    streams = [("anthropic", [1.0, 4.2, 0.3, 250.0]), ("openai", []), ("openai", [12.5] * 22),
               ("anthropic", [0.0, 5.0, 30_000.0, 31_000.0])]
    with frozen_time():
        new = GatewayMetrics()
        with monkeypatch.context() as patch:
            patch.setattr(metrics_module, "BulkHistogram", PerGapHistogram)
            old = GatewayMetrics()
        for provider, gaps in streams:
            for metrics in (new, old):
                metrics.observe(_exchange(provider, list(gaps)))
        assert isinstance(new.streaming_chunk_latency, BulkHistogram)
        assert isinstance(old.streaming_chunk_latency, PerGapHistogram)
        body = new.render()[0]
        assert body == old.render()[0]
        assert b'lunaroute_streaming_chunk_latency_seconds_count{provider="openai"} 22.0' in body
