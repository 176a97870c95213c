"""
Tests for the Prometheus metrics (lunaroute.metrics): exchanges built from
captured streams are observed, the exposition is parsed back with
prometheus-client's own text parser, and the counters are checked against
hand-computed values.  Label cardinality stays bounded under random model
names.
"""

from __future__ import annotations

import random
import string
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.model import ResponseSummary
from lunaroute.exchange import Exchange, Timings
from lunaroute.metrics import OTHER, BoundedLabels, GatewayMetrics, path_family
from lunaroute.stats.pricing import PricingTable
from lunaroute.stats.session_stats import SessionStatsCollector

STREAMS = Path(__file__).parent / "fixtures" / "streams"
SONNET = "claude-sonnet-4-5-20250929"


def captured(name: str, dialect: str) -> ResponseSummary:
    """The summary the proxy's capture builds from a fixture stream."""
    capture = ResponseCapture(dialect, streaming=True, content_type="text/event-stream")
    capture.feed((STREAMS / name).read_bytes())
    return capture.finish()


def exchange(
    *,
    listener: str = "anthropic",
    dialect: str = "anthropic",
    kind: str = "conversation",
    provider: str | None = "anthropic",
    model: str | None = SONNET,
    status: int | None = 200,
    outcome: str = "ok",
    response: ResponseSummary | None = None,
    streaming: bool = True,
    path: str = "/v1/messages",
    gaps: list[float] | None = None,
    timings: Timings | None = None,
) -> Exchange:
    """A finished exchange as the proxy hands it to its observers."""
    return Exchange(
        request_id=str(uuid.uuid4()),
        session_id="s1",
        listener=listener,
        kind=kind,
        dialect=dialect,
        path=path,
        method="POST",
        timings=timings
        or Timings(received=0.0, upstream_sent=0.002, headers_received=0.3, first_byte=0.3,
                   last_byte=1.5, finished=1.503),
        provider=provider,
        model=model,
        streaming=streaming,
        status=status,
        outcome=outcome,
        response=response,
        chunk_count=len(gaps or []) + 1 if streaming else 0,
        chunk_gaps_ms=list(gaps or []),
    )


def scrape(metrics: GatewayMetrics) -> dict[str, Any]:
    """Render and parse the exposition: family name -> family."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(body.decode("utf-8"))}


def sample(families: dict[str, Any], name: str, **labels: str) -> float | None:
    """The value of the sample C{name} with exactly these labels, if any."""
    for family in families.values():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def label_sets(families: dict[str, Any], family: str, sample_name: str) -> list[dict[str, str]]:
    return [s.labels for s in families[family].samples if s.name == sample_name]


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


# -- counters from captured streams ---------------------------------------------


def test_request_token_cost_and_tool_counters(metrics: GatewayMetrics) -> None:
    """
    After the statistics observer priced it, one Claude turn from the
    captured stream shows up as one 200 request, every token kind at the
    stream's counts, the hand-computed cost, and two get_weather calls.
    """
    stats = SessionStatsCollector(10, PricingTable.load())
    ex = exchange(response=captured("anthropic_thinking_tools.sse", "anthropic"))
    metrics.request_started(ex)
    ex.complete(stats.enrich(ex))
    stats.observe(ex)
    metrics.observe(ex)
    f = scrape(metrics)
    labels = {"listener": "anthropic", "provider": "anthropic", "model": SONNET}
    assert sample(f, "lunaroute_requests_total", status="200", **labels) == 1
    assert sample(f, "lunaroute_requests_success_total", **labels) == 1
    assert sample(f, "lunaroute_tokens_total", type="input", model=SONNET) == 1247
    assert sample(f, "lunaroute_tokens_total", type="output", model=SONNET) == 187
    assert sample(f, "lunaroute_tokens_total", type="thinking", model=SONNET) == 25
    assert sample(f, "lunaroute_tokens_total", type="cache_read", model=SONNET) == 8192
    assert sample(f, "lunaroute_tokens_total", type="cache_creation", model=SONNET) == 512
    assert sample(f, "lunaroute_tokens_prompt_total", provider="anthropic", model=SONNET) == 1247
    assert sample(f, "lunaroute_tokens_completion_total", provider="anthropic", model=SONNET) == 187
    assert sample(f, "lunaroute_estimated_cost_usd_total", provider="anthropic", model=SONNET) == pytest.approx(
        0.0109236
    )
    assert sample(f, "lunaroute_tool_calls_total", provider="anthropic", tool="get_weather") == 2
    assert sample(f, "lunaroute_in_flight_requests") == 0
    assert sample(f, "lunaroute_streaming_requests_total", provider="anthropic", model=SONNET) == 1


def test_openai_counters_and_unpriced_models(metrics: GatewayMetrics) -> None:
    """
    OpenAI exchanges count their exact reasoning tokens; an exchange whose
    model has no price adds no cost but counts as unpriced.
    """
    stats = SessionStatsCollector(10, PricingTable.load())
    chat = exchange(listener="openai", dialect="openai_chat", provider="openai", model="gpt-4.1",
                    response=captured("openai_chat_tools.sse", "openai_chat"), path="/v1/chat/completions")
    responses = exchange(listener="openai", dialect="openai_responses", provider="openai", model="gpt-5",
                         response=captured("openai_responses_tools.sse", "openai_responses"))
    unpriced = exchange(listener="openai", dialect="openai_responses", provider="openai",
                        model="house-model", response=ResponseSummary(
                            dialect="openai_responses", model="house-model",
                            usage=captured("openai_chat_tools.sse", "openai_chat").usage))
    for ex in (chat, responses, unpriced):
        ex.complete(stats.enrich(ex))
        stats.observe(ex)
        metrics.observe(ex)
    f = scrape(metrics)
    assert sample(f, "lunaroute_tokens_total", type="thinking", model="gpt-5") == 192
    assert sample(f, "lunaroute_tokens_total", type="cache_read", model="gpt-4.1") == 256
    assert sample(f, "lunaroute_estimated_cost_usd_total", provider="openai", model="gpt-4.1") == pytest.approx(
        0.000704
    )
    assert sample(f, "lunaroute_estimated_cost_usd_total", provider="openai", model="gpt-5") == pytest.approx(
        0.003507
    )
    assert sample(f, "lunaroute_estimated_cost_usd_total", provider="openai", model="house-model") is None
    assert sample(f, "lunaroute_unpriced_requests_total", model="house-model") == 1
    assert sample(f, "lunaroute_tool_calls_total", provider="openai", tool="get_weather") == 3


def test_histograms_from_timings(metrics: GatewayMetrics) -> None:
    """
    Request duration, proxy overhead, time to first token and each gap
    between streamed chunks are observed in seconds.
    """
    ex = exchange(response=captured("anthropic_thinking_tools.sse", "anthropic"), gaps=[10.0, 20.0, 30.0])
    metrics.observe(ex)
    f = scrape(metrics)
    labels = {"listener": "anthropic", "provider": "anthropic", "model": SONNET}
    assert sample(f, "lunaroute_request_duration_seconds_count", **labels) == 1
    assert sample(f, "lunaroute_request_duration_seconds_sum", **labels) == pytest.approx(1.503)
    assert sample(f, "lunaroute_proxy_overhead_seconds_sum", listener="anthropic",
                  provider="anthropic") == pytest.approx(0.005)
    assert sample(f, "lunaroute_streaming_ttft_seconds_sum", provider="anthropic",
                  model=SONNET) == pytest.approx(0.3)
    assert sample(f, "lunaroute_streaming_chunk_latency_seconds_count", provider="anthropic") == 3
    assert sample(f, "lunaroute_streaming_chunk_latency_seconds_sum", provider="anthropic") == pytest.approx(0.06)
    assert sample(f, "lunaroute_streaming_chunk_latency_seconds_bucket", provider="anthropic", le="0.025") == 2
    assert sample(f, "lunaroute_streaming_chunks_total", provider="anthropic") == 4
    assert sample(f, "lunaroute_streaming_duration_seconds_sum", provider="anthropic",
                  model=SONNET) == pytest.approx(1.2)


def test_tool_duration_histogram(metrics: GatewayMetrics) -> None:
    """Tool results carrying a duration feed the tool duration histogram."""
    ex = exchange(response=None)
    ex.tool_results = [
        {"tool_call_id": "a", "tool_name": "Read", "duration_ms": 1500.0},
        {"tool_call_id": "b", "tool_name": "Read", "duration_ms": None},
    ]
    metrics.observe(ex)
    f = scrape(metrics)
    assert sample(f, "lunaroute_tool_duration_seconds_count", tool="Read") == 1
    assert sample(f, "lunaroute_tool_duration_seconds_sum", tool="Read") == pytest.approx(1.5)


# -- outcomes ----------------------------------------------------------------------


def test_in_flight_gauge(metrics: GatewayMetrics) -> None:
    """
    In-flight rises when a request goes upstream and falls when it ends; an
    exchange that never started (or is observed twice) does not push it
    below zero.
    """
    first, second = exchange(), exchange()
    metrics.request_started(first)
    metrics.request_started(second)
    metrics.request_started(second)  # a repeated call counts once
    assert sample(scrape(metrics), "lunaroute_in_flight_requests") == 2
    metrics.observe(first)
    metrics.observe(first)
    metrics.observe(exchange())
    assert sample(scrape(metrics), "lunaroute_in_flight_requests") == 1
    metrics.observe(second)
    assert sample(scrape(metrics), "lunaroute_in_flight_requests") == 0


def test_upstream_errors_disconnects_and_failures(metrics: GatewayMetrics) -> None:
    """
    Unreachable, timeout and stream errors count per provider and kind; a
    client leaving counts as a disconnect; a 429 counts as a rate limit;
    every failure counts in requests_failure by outcome.
    """
    cases = [
        ("unreachable", 502),
        ("timeout", 504),
        ("timeout", 504),
        ("stream_error", 200),
        ("client_disconnected", None),
        ("upstream_error", 429),
    ]
    for outcome, status in cases:
        metrics.observe(exchange(outcome=outcome, status=status, response=None))
    f = scrape(metrics)
    assert sample(f, "lunaroute_upstream_errors_total", provider="anthropic", kind="unreachable") == 1
    assert sample(f, "lunaroute_upstream_errors_total", provider="anthropic", kind="timeout") == 2
    assert sample(f, "lunaroute_upstream_errors_total", provider="anthropic", kind="stream_error") == 1
    assert sample(f, "lunaroute_client_disconnects_total") == 1
    assert sample(f, "lunaroute_rate_limits_total", provider="anthropic") == 1
    base = {"listener": "anthropic", "provider": "anthropic"}
    assert sample(f, "lunaroute_requests_total", model=OTHER, status="504", **base) == 2
    assert sample(f, "lunaroute_requests_total", model=OTHER, status="none", **base) == 1
    assert sample(f, "lunaroute_requests_failure_total", model=OTHER, error_type="timeout", **base) == 2
    assert sample(f, "lunaroute_requests_failure_total", model=OTHER, error_type="upstream_error", **base) == 1
    assert sample(f, "lunaroute_requests_success_total", model=OTHER, **base) is None


def test_every_kind_is_counted_but_only_conversations_have_tokens(metrics: GatewayMetrics) -> None:
    """
    count_tokens, model lists and bypassed requests count as requests; only
    conversations add tokens.  Bypass requests also count by path family.
    """
    usage_response = captured("anthropic_thinking_tools.sse", "anthropic")
    metrics.observe(exchange(kind="count_tokens", response=usage_response, streaming=False))
    metrics.observe(exchange(kind="models", model=None, response=None, streaming=False, path="/v1/models"))
    metrics.observe(exchange(kind="bypass", listener="openai", provider="openai", model=None, response=None,
                             streaming=False, path="/v1/embeddings"))
    metrics.observe(exchange(kind="bypass", listener="openai", provider="openai", model=None, response=None,
                             streaming=False, path="/v1/audio/speech?format=mp3", status=400,
                             outcome="upstream_error"))
    f = scrape(metrics)
    assert sum(s.value for s in f["lunaroute_requests"].samples if s.name == "lunaroute_requests_total") == 4
    assert label_sets(f, "lunaroute_tokens", "lunaroute_tokens_total") == []
    assert sample(f, "lunaroute_bypass_requests_total", provider="openai", path_family="/v1/embeddings",
                  status="200") == 1
    assert sample(f, "lunaroute_bypass_requests_total", provider="openai", path_family="/v1/audio",
                  status="400") == 1


def test_path_family() -> None:
    """The bypass path family is the first two clean path segments."""
    assert path_family("/v1/embeddings") == "/v1/embeddings"
    assert path_family("/v1/files/file-abc/content") == "/v1/files"
    assert path_family("/") == "/"
    assert path_family("/v1/" + "x" * 500) == "/v1/other"
    assert path_family("/v1/a b") == "/v1/other"


# -- bounded cardinality -------------------------------------------------------------


def test_random_model_names_keep_series_bounded() -> None:
    """
    Ten thousand random model names, accepted by a permissive backend,
    create at most max_label_values model series per metric; the rest is
    reported as "other", and nothing is lost from the totals.
    """
    metrics = GatewayMetrics(max_label_values=100)
    rng = random.Random(7)
    for _ in range(10_000):
        name = "".join(rng.choices(string.ascii_lowercase + string.digits + "-.", k=24))
        metrics.observe(exchange(model=name, response=None, streaming=False))
    f = scrape(metrics)
    requests = label_sets(f, "lunaroute_requests", "lunaroute_requests_total")
    models = {labels["model"] for labels in requests}
    assert len(models) <= 101 and OTHER in models
    assert len(requests) <= 101
    total = sum(s.value for s in f["lunaroute_requests"].samples if s.name == "lunaroute_requests_total")
    assert total == 10_000
    series = sum(len(family.samples) for family in f.values())
    assert series < 5_000


def test_failed_random_models_do_not_use_up_the_budget() -> None:
    """
    Model names the provider rejected are reported as "other" and leave
    room for real models that succeed later.
    """
    metrics = GatewayMetrics(max_label_values=5)
    for n in range(50):
        metrics.observe(exchange(model=f"junk-{n}", status=404, outcome="upstream_error", response=None))
    metrics.observe(exchange(model=SONNET, response=None))
    f = scrape(metrics)
    models = {labels["model"] for labels in label_sets(f, "lunaroute_requests", "lunaroute_requests_total")}
    assert models == {OTHER, SONNET}


def test_bounded_labels_helper() -> None:
    """The first N values pass, later ones become other; None is unknown."""
    labels = BoundedLabels(max_values=2, max_length=5)
    assert labels("tool", "Read") == "Read"
    assert labels("tool", "Write") == "Write"
    assert labels("tool", "Bash") == OTHER
    assert labels("tool", "Read") == "Read"
    assert labels("tool", None) == "unknown"
    assert labels("model", "a-very-long-name") == "a-ver"
    assert labels("model", "new", admit=False) == OTHER


# -- bindings and robustness -------------------------------------------------------


def test_recorder_figures_are_read_at_scrape_time(metrics: GatewayMetrics) -> None:
    """The recorder's queue depth and drop count are read when scraped."""
    recorder = SimpleNamespace(queue_depth=7, dropped_events=3)
    metrics.bind_recorder(recorder)
    f = scrape(metrics)
    assert sample(f, "lunaroute_recorder_queue_depth") == 7
    assert sample(f, "lunaroute_recorder_dropped_events_total") == 3
    recorder.queue_depth, recorder.dropped_events = 0, 5
    f = scrape(metrics)
    assert sample(f, "lunaroute_recorder_queue_depth") == 0
    assert sample(f, "lunaroute_recorder_dropped_events_total") == 5


def test_pool_metrics_only_where_enabled(metrics: GatewayMetrics) -> None:
    """
    Idle connections are reported for providers with enable_pool_metrics
    on, from the pool's connection lists; others (and pool-less fakes) are
    skipped.
    """

    def provider(name: str, enabled: bool, connections: dict[Any, list[Any]] | None) -> Any:
        pool = None if connections is None else SimpleNamespace(_connections=connections, maxPersistentPerHost=32)
        settings = SimpleNamespace(http_client=SimpleNamespace(enable_pool_metrics=enabled))
        return SimpleNamespace(name=name, settings=settings, pool=pool)

    metrics.bind_pools(
        {
            "anthropic": provider("anthropic", True, {("https", "a", 443): [object(), object()]}),
            "openai": provider("openai", False, {("https", "o", 443): [object()]}),
            "fake": provider("fake", True, None),
        }
    )
    f = scrape(metrics)
    assert sample(f, "http_pool_connections_idle", provider="anthropic") == 2
    assert sample(f, "http_pool_connections_idle", provider="openai") is None
    assert sample(f, "http_pool_max_idle_per_host", provider="anthropic") == 32


def test_observe_and_render_never_raise(metrics: GatewayMetrics, logged_failures: Any) -> None:
    """
    A malformed exchange or a broken collector is logged and counted, never
    raised into the proxy; /metrics still answers.
    """
    logged_failures.expect(AttributeError, RuntimeError)
    broken = exchange()
    broken.response = "not a summary"  # type: ignore[assignment]
    metrics.observe(broken)
    metrics.observe(None)  # type: ignore[arg-type]
    metrics.request_started(None)  # type: ignore[arg-type]
    assert sample(scrape(metrics), "lunaroute_metrics_errors_total") == 3

    class Exploding:
        def collect(self) -> Any:
            raise RuntimeError("boom")

    metrics.registry.register(Exploding())
    body, content_type = metrics.render()
    assert body.startswith(b"#") and content_type.startswith("text/plain")


def test_each_instance_has_its_own_registry() -> None:
    """Two gateways in one process (tests) do not clash or share counts."""
    first, second = GatewayMetrics(), GatewayMetrics(CollectorRegistry())
    first.observe(exchange(response=None))
    assert sample(scrape(first), "lunaroute_requests_total", listener="anthropic", provider="anthropic",
                  model=SONNET, status="200") == 1
    assert sample(scrape(second), "lunaroute_requests_total", listener="anthropic", provider="anthropic",
                  model=SONNET, status="200") is None
