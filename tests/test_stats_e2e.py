"""
Statistics, cost and Prometheus metrics through the running gateway, after
real SDK and CLI requests.
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from lunaroute.testing.helpers import in_thread


def _samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples, name, **labels) -> float:
    total = 0.0
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            total += sample.value
    return total


@pytest_twisted.ensureDeferred
async def test_metrics_count_real_sdk_requests(gateway, fake):
    """/metrics, parsed with prometheus-client's parser, counts requests, tokens, tools and errors."""
    claude = gateway.anthropic()
    for _ in range(3):
        await in_thread(
            claude.messages.create, model="claude-sonnet-4-5", max_tokens=20,
            messages=[{"role": "user", "content": "hi"}],
        )

    def tool_stream():
        with claude.messages.stream(
            model="claude-sonnet-4-5-tools", max_tokens=50,
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
            messages=[{"role": "user", "content": "weather"}],
        ) as s:
            return s.get_final_message()

    final = await in_thread(tool_stream)
    gpt = gateway.openai()
    completion = await in_thread(
        gpt.chat.completions.create, model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
    )
    response = await in_thread(httpx.get, gateway.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert _value(samples, "lunaroute_requests_total", listener="anthropic", model="claude-sonnet-4-5", status="200") == 3
    assert _value(samples, "lunaroute_requests_total", listener="openai", provider="openai", status="200") == 1
    assert _value(samples, "lunaroute_tool_calls_total", tool="get_weather") == 1
    assert _value(samples, "lunaroute_tokens_total", type="output", model="claude-sonnet-4-5-tools") == final.usage.output_tokens
    assert _value(samples, "lunaroute_tokens_total", type="input", model="gpt-4.1") == completion.usage.prompt_tokens
    assert _value(samples, "lunaroute_in_flight_requests") == 0
    assert _value(samples, "lunaroute_streaming_ttft_seconds_count") >= 1
    assert _value(samples, "lunaroute_request_duration_seconds_count") == 5
    assert _value(samples, "lunaroute_proxy_overhead_seconds_count") == 5
    assert _value(samples, "lunaroute_estimated_cost_usd_total", model="claude-sonnet-4-5") > 0


@pytest_twisted.ensureDeferred
async def test_metrics_count_disconnects_and_upstream_errors(fake, start_gateway):
    """A client that leaves and an unreachable provider show up in their counters."""
    from lunaroute.testing.helpers import free_port

    gw = await start_gateway(
        fake, providers={"openai": {"base_url": f"http://127.0.0.1:{free_port()}/v1",
                                    "http_client": {"max_retries": 0}}}
    )
    fake.gate = defer.Deferred()
    lost = fake.on_disconnect()

    def leave_early():
        with httpx.stream(
            "POST", gw.url + "/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]},
        ) as r:
            for _ in r.iter_bytes():
                break

    await in_thread(leave_early)
    await lost
    await in_thread(httpx.post, gw.url + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []})
    samples = _samples((await in_thread(httpx.get, gw.url + "/metrics")).text)
    assert _value(samples, "lunaroute_client_disconnects_total") == 1
    assert _value(samples, "lunaroute_upstream_errors_total", provider="openai", kind="unreachable") == 1


@pytest_twisted.ensureDeferred
async def test_live_stats_and_recorded_cost(fake, start_gateway, tmp_path):
    """Per-session stats are served while running, and the cost is stored with the session."""
    sessions = tmp_path / "sessions"
    gw = await start_gateway(fake, session_recording={"enabled": True, "sessions_dir": str(sessions)})
    client = gw.anthropic()
    message = await in_thread(
        client.messages.create, model="claude-sonnet-4-5", max_tokens=20,
        messages=[{"role": "user", "content": "hi"}], extra_headers={"x-session-id": "cost-session"},
    )
    stats = (await in_thread(httpx.get, gw.url + "/_lunaroute/stats")).json()
    session = next(s for s in stats["sessions"] if s["session_id"] == "cost-session")
    usage = message.usage
    expected = (usage.input_tokens * 3.0 + usage.output_tokens * 15.0) / 1_000_000
    assert session["requests"] == 1
    assert session["estimated_cost_usd"] == pytest.approx(expected)
    await gw.service.stopService()
    db = sqlite3.connect(sessions / "sessions.db")
    stored = db.execute(
        "SELECT estimated_cost_usd FROM sessions WHERE session_id='cost-session'"
    ).fetchone()[0]
    assert stored == pytest.approx(expected)
    finals = [
        json.loads(line) for f in sessions.glob("*/session_cost-session.jsonl")
        for line in f.read_text().splitlines() if '"final_stats"' in line
    ]
    assert finals[0]["final_stats"]["estimated_cost_usd"] == pytest.approx(expected)


@pytest_twisted.ensureDeferred
async def test_unknown_model_cost_is_unknown_not_zero(gateway, fake):
    """A model missing from the pricing table shows cost as unknown, never $0."""
    client = gateway.anthropic()
    await in_thread(
        client.messages.create, model="mystery-model-9", max_tokens=5,
        messages=[{"role": "user", "content": "hi"}], extra_headers={"x-session-id": "mystery"},
    )
    stats = (await in_thread(httpx.get, gateway.url + "/_lunaroute/stats")).json()
    session = next(s for s in stats["sessions"] if s["session_id"] == "mystery")
    assert session["estimated_cost_usd"] is None


@pytest_twisted.ensureDeferred
async def test_shutdown_summary_is_printed_when_asked(fake, start_gateway):
    """With statistics.print_summary the stop logs the per-session and aggregate summary."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        gw = await start_gateway(fake, statistics={"print_summary": True})
        client = gw.anthropic()
        await in_thread(
            client.messages.create, model="claude-sonnet-4-5", max_tokens=5,
            messages=[{"role": "user", "content": "hi"}], extra_headers={"x-session-id": "summary-session"},
        )
        await gw.service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    summaries = [e["summary"] for e in events if "summary" in e]
    assert summaries
    assert "summary-session" in summaries[0]
    assert "Estimated cost" in summaries[0]
