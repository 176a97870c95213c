"""
Tests for the per-session statistics (lunaroute.stats.session_stats):
token and cost totals from captured streams, tool round-trip durations on a
Clock, the LRU bound, and the shutdown summary.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.model import ResponseSummary, ToolCall, Usage
from lunaroute.exchange import Exchange, Timings
from lunaroute.stats import session_stats as _stats
from lunaroute.stats.pricing import PricingTable
from lunaroute.stats.session_stats import SessionStatsCollector

FIXTURES = Path(__file__).parent / "fixtures"
STREAMS = FIXTURES / "streams"
CLIENTS = FIXTURES / "clients"

ANTHROPIC_COST = 0.0109236  # see test_pricing.test_anthropic_stream_cost
RESPONSES_COST = 0.003507
CHAT_COST = 0.000704


@pytest.fixture(scope="module")
def pricing() -> PricingTable:
    return PricingTable.load()


def captured(name: str, dialect: str) -> ResponseSummary:
    """The summary the proxy's capture builds from a fixture stream."""
    capture = ResponseCapture(dialect, streaming=True, content_type="text/event-stream")
    capture.feed((STREAMS / name).read_bytes())
    return capture.finish()


def timings_at(start: float, pre: float = 0.002, provider: float = 1.0, post: float = 0.001) -> Timings:
    """Timings of a request received at C{start} with the given phases (seconds)."""
    sent = start + pre
    return Timings(
        received=start,
        upstream_sent=sent,
        headers_received=sent + 0.1,
        first_byte=sent + 0.1,
        last_byte=sent + provider,
        finished=sent + provider + post,
    )


def observe(collector: SessionStatsCollector, ex: Exchange) -> None:
    """The lifecycle's last steps: enrich, seal the record, hand it to the sink."""
    ex.complete(collector.enrich(ex))
    collector.observe(ex)


def exchange(
    session_id: str = "s1",
    *,
    dialect: str = "anthropic",
    response: ResponseSummary | None = None,
    request_json: dict[str, Any] | None = None,
    timings: Timings | None = None,
    kind: str = "conversation",
    model: str | None = None,
    status: int | None = 200,
    outcome: str = "ok",
) -> Exchange:
    """A finished exchange as the proxy hands it to its observers."""
    listener = "anthropic" if dialect == "anthropic" else "openai"
    return Exchange(
        request_id=str(uuid.uuid4()),
        session_id=session_id,
        listener=listener,
        kind=kind,
        dialect=dialect,
        path="/v1/messages" if listener == "anthropic" else "/v1/responses",
        method="POST",
        timings=timings or timings_at(0.0),
        provider=listener,
        model=model or (response.model if response else None),
        streaming=True,
        status=status,
        outcome=outcome,
        request_json=request_json if request_json is not None else {"model": model or "m", "messages": []},
        response=response,
    )


def anthropic_tool_result_request(*tool_use_ids: str) -> dict[str, Any]:
    """A Messages request whose newest user turn returns these tool results."""
    return {
        "model": "claude-sonnet-4-5-20250929",
        "messages": [
            {"role": "user", "content": "What's the weather in Tokyo and Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": i, "name": "get_weather", "input": {}} for i in tool_use_ids
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": i, "content": "sunny"} for i in tool_use_ids
                ],
            },
        ],
    }


# -- tokens and cost -------------------------------------------------------


def test_anthropic_session_tokens_and_cost(pricing: PricingTable) -> None:
    """
    Two Claude turns in one session add up: every token kind doubles, the
    thinking figure is flagged as estimated, and the cost is twice the
    hand-computed cost of one turn.
    """
    stats = SessionStatsCollector(100, pricing)
    for start in (0.0, 10.0):
        ex = exchange(response=captured("anthropic_thinking_tools.sse", "anthropic"), timings=timings_at(start))
        observe(stats, ex)
        assert ex.cost_usd == pytest.approx(ANTHROPIC_COST)
    snap = stats.snapshot("s1")
    assert snap is not None
    assert snap["requests"] == 2
    assert snap["tokens"] == {
        "input": 2494,
        "output": 374,
        "thinking": 50,
        "cache_read": 16384,
        "cache_creation": 1024,
        "cache_creation_5m": 1024,
        "cache_creation_1h": 0,
        "total": 2868,
    }
    assert snap["thinking_estimated"] is True
    assert snap["estimated_cost_usd"] == pytest.approx(2 * ANTHROPIC_COST)
    assert snap["cost_known_requests"] == 2
    assert snap["models"] == {"claude-sonnet-4-5-20250929": 2}
    assert snap["tools"]["get_weather"]["calls"] == 4
    json.dumps(snap)  # plain data for the API


def test_one_hour_cache_writes_are_counted_and_priced_apart(pricing: PricingTable) -> None:
    """
    1-hour cache writes show in their own token count, the summary and the
    cost: 1000 written for 5 minutes and 3000 for an hour on Sonnet 4.5 cost
    (10*3 + 1000*3.75 + 3000*6) / 1e6.
    """
    stats = SessionStatsCollector(100, pricing)
    usage = Usage(input_tokens=10, cache_creation_tokens=4000, cache_creation_1h_tokens=3000)
    response = ResponseSummary(dialect="anthropic", model="claude-sonnet-4-5", usage=usage)
    ex = exchange(response=response)
    observe(stats, ex)
    assert ex.cost_usd == pytest.approx((10 * 3 + 1000 * 3.75 + 3000 * 6) / 1e6)
    tokens = stats.aggregate()["tokens"]
    assert (tokens["cache_creation"], tokens["cache_creation_5m"], tokens["cache_creation_1h"]) == (4000, 1000, 3000)
    assert "Cache creation:  4,000 (1,000 for 5 min, 3,000 for 1 h)" in stats.summary_text()


def test_openai_reasoning_tokens_are_exact(pricing: PricingTable) -> None:
    """
    OpenAI's reasoning_tokens are reported, not estimated, so the session
    is not flagged; its cost follows OpenAI's cached-input accounting.
    """
    stats = SessionStatsCollector(100, pricing)
    ex = exchange(
        dialect="openai_responses",
        response=captured("openai_responses_tools.sse", "openai_responses"),
        request_json={"model": "gpt-5", "input": "hi"},
    )
    observe(stats, ex)
    snap = stats.snapshot("s1")
    assert snap is not None
    assert snap["tokens"]["thinking"] == 192
    assert snap["tokens"]["cache_read"] == 1536
    assert snap["thinking_estimated"] is False
    assert snap["estimated_cost_usd"] == pytest.approx(RESPONSES_COST)


def test_unknown_price_makes_session_cost_unknown(pricing: PricingTable) -> None:
    """
    One exchange with an unpriced model makes the session's estimated cost
    None (never a partial sum shown as the total); the priced part and the
    count of priced requests are still reported.
    """
    stats = SessionStatsCollector(100, pricing)
    observe(stats, exchange(response=captured("anthropic_thinking_tools.sse", "anthropic")))
    mystery = ResponseSummary(dialect="anthropic", model="claude-mystery-9", usage=Usage(100, 50))
    ex = exchange(response=mystery)
    observe(stats, ex)
    assert ex.cost_usd is None
    snap = stats.snapshot("s1")
    assert snap is not None
    assert snap["estimated_cost_usd"] is None
    assert snap["cost_known_requests"] == 1
    assert snap["priced_cost_usd"] == pytest.approx(ANTHROPIC_COST)
    assert snap["unpriced_models"] == ["claude-mystery-9"]
    assert stats.aggregate()["estimated_cost_usd"] is None


def test_failed_request_without_usage_costs_nothing(pricing: PricingTable) -> None:
    """
    A request that never got a response, or got an error without usage,
    is billed nothing: its cost is 0, even for a model with no price.
    """
    stats = SessionStatsCollector(100, pricing)
    unreachable = exchange(response=None, model="no-such-model", status=502, outcome="unreachable")
    rejected = exchange(
        response=ResponseSummary(dialect="anthropic", model=None), model="no-such-model", status=404,
        outcome="upstream_error",
    )
    observe(stats, unreachable)
    observe(stats, rejected)
    assert unreachable.cost_usd == 0.0 and rejected.cost_usd == 0.0
    snap = stats.snapshot("s1")
    assert snap is not None
    assert snap["failed_requests"] == 2
    assert snap["estimated_cost_usd"] == 0.0


def test_non_conversation_exchanges_are_ignored(pricing: PricingTable) -> None:
    """Token counting, model lists and bypass requests are not session traffic."""
    stats = SessionStatsCollector(100, pricing)
    for kind in ("count_tokens", "models", "bypass"):
        ex = exchange(kind=kind, response=captured("anthropic_thinking_tools.sse", "anthropic"))
        observe(stats, ex)
        assert ex.cost_usd is None
    assert stats.sessions() == []
    assert stats.aggregate()["requests"] == 0


def test_timing_totals_and_overhead_share(pricing: PricingTable) -> None:
    """
    Response time is received->finished; proxy overhead is the time before
    forwarding plus after the last upstream byte, reported as a total and as
    a share of the request time, next to the provider's latency.
    """
    stats = SessionStatsCollector(100, pricing)
    observe(stats, exchange(timings=timings_at(0.0, pre=0.002, provider=1.0, post=0.003)))
    observe(stats, exchange(timings=timings_at(5.0, pre=0.004, provider=3.0, post=0.001)))
    snap = stats.snapshot("s1")
    assert snap is not None
    assert snap["avg_response_ms"] == pytest.approx((1005 + 3005) / 2)
    assert snap["proxy_overhead_ms"] == pytest.approx(10.0)
    assert snap["proxy_overhead_share"] == pytest.approx(10.0 / 4010.0)
    assert snap["provider_ms"] == pytest.approx(4000.0)
    assert snap["avg_ttft_ms"] == pytest.approx((102 + 104) / 2)


# -- tool round-trips --------------------------------------------------------


def test_tool_duration_from_response_to_result() -> None:
    """
    A tool's duration runs from the last byte of the response that asked for
    it to the arrival of the request carrying its result, both on the clock.
    """
    clock = Clock()
    stats = SessionStatsCollector(100, PricingTable.load())
    clock.advance(100)
    asking = Timings(received=clock.seconds())
    clock.advance(0.002)
    asking.upstream_sent = clock.seconds()
    clock.advance(1.5)
    asking.first_byte = asking.headers_received = clock.seconds()
    clock.advance(0.5)
    asking.last_byte = clock.seconds()
    asking.finished = clock.seconds()
    first = exchange(response=captured("anthropic_thinking_tools.sse", "anthropic"), timings=asking)
    observe(stats, first)
    assert first.tool_results == []

    clock.advance(2.5)  # the client runs both tools
    answer = exchange(
        request_json=anthropic_tool_result_request("toolu_01A09q90qw90lq917835lq9", "toolu_01B7aXgQkxB3nR8M2pZ4c6Yv"),
        timings=Timings(received=clock.seconds()),
    )
    observe(stats, answer)
    assert answer.tool_results == [
        {"tool_call_id": "toolu_01A09q90qw90lq917835lq9", "tool_name": "get_weather", "duration_ms": 2500.0},
        {"tool_call_id": "toolu_01B7aXgQkxB3nR8M2pZ4c6Yv", "tool_name": "get_weather", "duration_ms": 2500.0},
    ]
    snap = stats.snapshot("s1")
    assert snap is not None
    assert snap["tools"] == {"get_weather": {"calls": 2, "results": 2, "avg_duration_ms": 2500.0}}
    assert snap["pending_tool_calls"] == 0
    assert stats.aggregate()["tools"]["get_weather"]["avg_duration_ms"] == 2500.0


def test_resent_history_is_not_counted_twice() -> None:
    """
    Clients resend the whole conversation: a retried request with the same
    tool results, or a later request with them in older turns, adds nothing.
    """
    clock = Clock()
    stats = SessionStatsCollector(100, PricingTable.load())
    timings = Timings(received=0.0, upstream_sent=0.0, last_byte=1.0, finished=1.0)
    observe(stats, exchange(response=captured("anthropic_thinking_tools.sse", "anthropic"), timings=timings))
    clock.advance(4)
    body = anthropic_tool_result_request("toolu_01A09q90qw90lq917835lq9")
    first = exchange(request_json=body, timings=Timings(received=clock.seconds()))
    retry = exchange(request_json=body, timings=Timings(received=clock.seconds() + 1))
    observe(stats, first)
    observe(stats, retry)
    later_body = json.loads(json.dumps(body))
    later_body["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": "Sunny in Tokyo."}]},
        {"role": "user", "content": "Thanks!"},
    ]
    later = exchange(request_json=later_body, timings=Timings(received=clock.seconds() + 2))
    observe(stats, later)
    assert [r["duration_ms"] for r in first.tool_results] == [3000.0]
    assert retry.tool_results == [] and later.tool_results == []
    snap = stats.snapshot("s1")
    assert snap is not None
    assert snap["tools"]["get_weather"]["results"] == 1


def test_openai_chat_tool_results() -> None:
    """Chat Completions results are role "tool" messages with tool_call_id."""
    clock = Clock()
    stats = SessionStatsCollector(100, PricingTable.load())
    response = captured("openai_chat_tools.sse", "openai_chat")
    asked = Timings(received=0.0, upstream_sent=0.0, last_byte=2.0, finished=2.0)
    observe(stats, exchange(dialect="openai_chat", response=response, timings=asked))
    clock.advance(2.75)
    body = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "call_Xk2sL9vQp3mN7rT1yB4wZ8cD", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_Xk2sL9vQp3mN7rT1yB4wZ8cD", "content": "sunny"},
        ],
    }
    answer = exchange(dialect="openai_chat", request_json=body, timings=Timings(received=clock.seconds()))
    observe(stats, answer)
    assert answer.tool_results == [
        {"tool_call_id": "call_Xk2sL9vQp3mN7rT1yB4wZ8cD", "tool_name": "get_weather", "duration_ms": 750.0}
    ]
    snap = stats.snapshot("s1")
    assert snap is not None
    # Two calls asked for, one answered so far.
    assert snap["tools"]["get_weather"] == {"calls": 2, "results": 1, "avg_duration_ms": 750.0}
    assert snap["pending_tool_calls"] == 1


def test_responses_function_call_output_from_codex() -> None:
    """
    The Responses API returns results as function_call_output items; the
    captured Codex request is matched to the function_call the session's
    previous response asked for.
    """
    clock = Clock()
    stats = SessionStatsCollector(100, PricingTable.load())
    body = json.loads((CLIENTS / "codex_responses_function_call_output_request.json").read_text())
    call = ToolCall(id="call_2c080e03cdb44346aef5", name="exec_command", input={}, raw_input="{}")
    previous = ResponseSummary(
        dialect="openai_responses", model="gpt-5.1-codex", tool_calls=[call], usage=Usage(100, 10, 0, 0, 0, True)
    )
    clock.advance(50)
    asked = Timings(received=clock.seconds() - 3, upstream_sent=clock.seconds() - 3, last_byte=clock.seconds())
    asked.finished = clock.seconds()
    observe(stats, exchange("codex", dialect="openai_responses", response=previous, timings=asked))
    clock.advance(0.25)
    answer = exchange("codex", dialect="openai_responses", request_json=body,
                      timings=Timings(received=clock.seconds()))
    observe(stats, answer)
    assert answer.tool_results == [
        {"tool_call_id": "call_2c080e03cdb44346aef5", "tool_name": "exec_command", "duration_ms": 250.0}
    ]


def test_responses_items_with_a_hostile_type_are_skipped() -> None:
    """An input item whose type is an object or a list (hostile input) is no call and no result; nothing raises."""
    stats = SessionStatsCollector(100, PricingTable.load())
    body = {
        "model": "gpt-5",
        "input": [
            {"type": {"x": 1}, "call_id": "c1", "name": "shell"},
            {"type": ["function_call_output"], "call_id": "c1", "output": "ok"},
            {"type": "function_call_output", "call_id": "c2", "output": "ok"},
        ],
    }
    answer = exchange("codex", dialect="openai_responses", request_json=body)
    observe(stats, answer)
    assert answer.tool_results == [{"tool_call_id": "c2", "tool_name": None, "duration_ms": None}]


def test_result_for_unseen_call_is_reported_without_duration() -> None:
    """
    Claude Code's captured tool_result request, for a call the gateway never
    saw (it started mid-session): the result is reported with the tool name
    taken from the request's own history and an unknown duration.
    """
    stats = SessionStatsCollector(100, PricingTable.load())
    body = json.loads((CLIENTS / "claude_code_messages_tool_result_request.json").read_text())
    answer = exchange(request_json=body)
    observe(stats, answer)
    assert answer.tool_results == [
        {"tool_call_id": "toolu_7b822992361b4217a664682a", "tool_name": "Read", "duration_ms": None}
    ]
    snap = stats.snapshot("s1")
    assert snap is not None
    assert snap["tools"] == {}


def test_tool_calls_are_per_session() -> None:
    """A result in another session does not match this session's call."""
    stats = SessionStatsCollector(100, PricingTable.load())
    asked = Timings(received=0.0, upstream_sent=0.0, last_byte=1.0, finished=1.0)
    observe(stats, exchange("a", response=captured("anthropic_thinking_tools.sse", "anthropic"), timings=asked))
    other = exchange("b", request_json=anthropic_tool_result_request("toolu_01A09q90qw90lq917835lq9"),
                     timings=Timings(received=3.0))
    observe(stats, other)
    assert other.tool_results[0]["duration_ms"] is None
    assert stats.snapshot("a")["pending_tool_calls"] == 2  # type: ignore[index]


# -- the LRU -------------------------------------------------------------------


def test_lru_keeps_the_most_recently_active_sessions(pricing: PricingTable) -> None:
    """
    Beyond max_sessions the least recently active session is evicted; a
    session that keeps talking stays.  The aggregate still counts everything.
    """
    stats = SessionStatsCollector(3, pricing)
    for n, session in enumerate(["a", "b", "c", "a", "d", "e"]):
        observe(stats, exchange(session, timings=timings_at(float(n))))
    assert stats.session_ids() == ["e", "d", "a"]
    assert stats.snapshot("b") is None and stats.snapshot("c") is None
    assert stats.snapshot("a")["requests"] == 2  # type: ignore[index]
    aggregate = stats.aggregate()
    assert aggregate["requests"] == 6
    assert aggregate["sessions_kept"] == 3
    assert aggregate["sessions_seen"] == 5
    assert aggregate["sessions_evicted"] == 2


def test_lru_bound_holds_under_many_sessions(pricing: PricingTable) -> None:
    """Ten thousand one-request sessions never keep more than the bound."""
    stats = SessionStatsCollector(100, pricing)
    for n in range(10_000):
        observe(stats, exchange(f"session-{n}"))
    assert len(stats.sessions()) == 100
    assert stats.session_ids()[0] == "session-9999"
    assert stats.aggregate()["requests"] == 10_000


def test_zero_sessions_keeps_only_the_aggregate(pricing: PricingTable) -> None:
    """With session_stats_max_sessions 0 no session is kept, the total is."""
    stats = SessionStatsCollector(0, pricing)
    ex = exchange(response=captured("anthropic_thinking_tools.sse", "anthropic"))
    observe(stats, ex)
    assert stats.sessions() == []
    assert ex.cost_usd == pytest.approx(ANTHROPIC_COST)
    assert stats.aggregate()["requests"] == 1


# -- robustness and output ---------------------------------------------------------


def test_observe_never_raises(pricing: PricingTable, logged_failures: Any) -> None:
    """
    Malformed request bodies, missing fields and a failing pricing table
    are logged, never raised into the proxy.
    """
    logged_failures.expect(AttributeError, RuntimeError)

    class BrokenPricing:
        def cost_usd(self, *args: Any) -> float:
            raise RuntimeError("boom")

    stats = SessionStatsCollector(10, pricing)
    weird_bodies: list[Any] = [
        {"messages": "not a list"},
        {"messages": [None, 3, {"role": "user", "content": [None, {"type": "tool_result"}]}]},
        {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": 5}]}]},
        {"input": [{"type": "function_call_output", "call_id": None}]},
    ]
    for body in weird_bodies:
        observe(stats, exchange(request_json=body, response=captured("anthropic_thinking_tools.sse", "anthropic")))
    broken = SessionStatsCollector(10, BrokenPricing())  # type: ignore[arg-type]
    observe(broken, exchange(response=captured("anthropic_thinking_tools.sse", "anthropic")))
    stats.observe(None)  # type: ignore[arg-type]


def test_summary_text(pricing: PricingTable) -> None:
    """
    The boxed summary shows each session and the aggregate: requests, the
    token breakdown with Anthropic thinking marked as estimated, tools with
    their average duration, response time, overhead share and cost.
    """
    stats = SessionStatsCollector(100, pricing)
    asked = Timings(received=0.0, upstream_sent=0.002, first_byte=0.5, last_byte=1.0, finished=1.001)
    observe(stats, exchange("claude-1", response=captured("anthropic_thinking_tools.sse", "anthropic"),
                           timings=asked))
    observe(stats, exchange("claude-1", request_json=anthropic_tool_result_request(
        "toolu_01A09q90qw90lq917835lq9", "toolu_01B7aXgQkxB3nR8M2pZ4c6Yv"), timings=timings_at(3.0)))
    observe(stats, exchange("codex-1", dialect="openai_responses",
                           response=captured("openai_responses_tools.sse", "openai_responses"),
                           request_json={"input": "hi"}))
    text = stats.summary_text()
    lines = text.splitlines()
    assert lines[0].startswith("╔") and lines[-1].startswith("╚")
    assert len({len(line) for line in lines}) == 1  # a closed box
    assert "Session claude-1" in text and "Session codex-1" in text and "All sessions (2 seen)" in text
    assert "Thinking:        25 (estimated)" in text
    assert "Thinking:        192 " in text  # the exact OpenAI figure, no note
    assert "Thinking:        217 (25 of them estimated)" in text  # the aggregate mixes both
    assert "get_weather  2 calls, avg 2,000.0 ms" in text
    assert "Estimated cost:    $0.0109" in text
    assert f"Estimated cost:    ${ANTHROPIC_COST + RESPONSES_COST:,.4f}" in text
    assert "% of request time" in text
    assert "Requests:          2" in text


def test_summary_text_with_unknown_cost(pricing: PricingTable) -> None:
    """An unpriced model shows as unknown cost with the model named, never $0."""
    stats = SessionStatsCollector(100, pricing)
    observe(stats, exchange(response=ResponseSummary(dialect="anthropic", model="claude-x", usage=Usage(10, 10))))
    text = stats.summary_text()
    assert "unknown (no price for claude-x" in text
    assert "$0.0000 for 0 priced requests" in text


# -- bounded memory from hostile values ------------------------------------


def _hostile(model: str, tool: str = "Bash", session_id: str = "s1", call_id: str = "toolu_1") -> Exchange:
    """An Anthropic turn naming C{model} and asking for C{tool} with id C{call_id}."""
    response = ResponseSummary(
        dialect="anthropic", model=model, usage=Usage(input_tokens=10, output_tokens=10),
        tool_calls=[ToolCall(id=call_id, name=tool, input={}, raw_input="{}")],
    )
    return exchange(session_id, response=response, model=model)


def test_one_megabyte_model_name_gives_a_narrow_summary(pricing: PricingTable) -> None:
    """
    A 1 MB model name (and tool name) is cut in the statistics and in the
    summary, which stays a fixed-width box whose lines are all short (it
    used to pad every line to the longest value: 2.8 GB for this).
    """
    stats = SessionStatsCollector(100, pricing)
    huge = "claude-sonnet-4-5-" + "x" * 1_000_000
    observe(stats, _hostile(huge, tool="T" * 1_000_000))
    observe(stats, exchange(response=captured("anthropic_thinking_tools.sse", "anthropic")))
    snap = stats.snapshot("s1")
    assert snap is not None
    assert max(len(name) for name in snap["models"]) <= 200
    assert max(len(name) for name in snap["tools"]) <= 200
    assert snap["estimated_cost_usd"] is not None  # still priced by its family
    text = stats.summary_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) < 200
    assert len({len(line) for line in lines}) == 1  # still a closed box
    assert "…" in text
    assert len(text) < 20_000


def test_summary_width_does_not_follow_the_values(pricing: PricingTable) -> None:
    """The box has the same width for short and long values, and control characters cannot break it."""
    short = SessionStatsCollector(10, pricing)
    observe(short, exchange(response=captured("anthropic_thinking_tools.sse", "anthropic")))
    long = SessionStatsCollector(10, pricing)
    observe(long, _hostile("m\n" + "y" * 500, tool="tool\x1b[31m" + "z" * 300))
    widths = {len(line) for text in (short.summary_text(), long.summary_text()) for line in text.splitlines()}
    assert len(widths) == 1
    assert "\x1b" not in long.summary_text()


def test_many_huge_model_names_keep_the_statistics_small(pricing: PricingTable) -> None:
    """
    60 distinct 1 MB model names, tool names and tool call ids in one
    session keep the collector's JSON (what /_lunaroute/stats serves) small;
    it used to reach 16.8 MB.
    """
    stats = SessionStatsCollector(100, pricing)
    for n in range(60):
        filler = chr(ord("a") + n % 26) * 1_000_000
        observe(stats, _hostile(f"{n}-{filler}", tool=f"{n}-{filler}", call_id=f"{n}-{filler}"))
    body = json.dumps({"aggregate": stats.aggregate(), "sessions": stats.sessions()})
    assert len(body) < 100_000
    session = stats.snapshot("s1")
    assert session is not None
    assert len(session["models"]) <= 21  # a per-session bound, the rest folded into "other"
    assert session["models"]["other"] == 40
    assert sum(stats.aggregate()["models"].values()) == 60


def test_long_tool_call_ids_still_time_their_results() -> None:
    """A tool call id longer than the kept form still matches its result exactly."""
    stats = SessionStatsCollector(10, PricingTable([]))
    long_id = "toolu_" + "q" * 100_000
    other_id = "toolu_" + "q" * 99_999 + "r"
    observe(stats, _hostile("m", tool="Read", call_id=long_id))
    follow_up = {
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": other_id, "content": "x"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": long_id, "content": "x"}]},
        ]
    }
    ex = exchange(request_json=follow_up, timings=timings_at(5.0))
    observe(stats, ex)
    timed = {r["tool_call_id"]: r for r in ex.tool_results}
    assert timed[long_id]["tool_name"] == "Read" and timed[long_id]["duration_ms"] is not None
    assert timed[other_id]["duration_ms"] is None


def test_sinks_get_a_sealed_record_they_cannot_change(pricing: PricingTable) -> None:
    """
    After the enrich step the record is sealed: a sink assigning to it (or
    to its timings) raises, so the recorder's thread and metrics read the
    same values.
    """
    import dataclasses

    stats = SessionStatsCollector(10, pricing)
    ex = exchange(response=captured("anthropic_thinking_tools.sse", "anthropic"))
    observe(stats, ex)
    assert ex.sealed and ex.cost_usd == pytest.approx(ANTHROPIC_COST)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.cost_usd = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.timings.finished = 1.0


def test_observe_only_reads_the_record(pricing: PricingTable) -> None:
    """observe() accounts what the enrich step put on the record; it computes nothing itself."""
    stats = SessionStatsCollector(10, pricing)
    ex = exchange(response=captured("anthropic_thinking_tools.sse", "anthropic"))
    ex.complete()  # sealed without enrichment: no cost on the record
    stats.observe(ex)
    assert stats.aggregate()["estimated_cost_usd"] in (0, 0.0, None)


# -- the newest turn's tool results, found from the end ---------------------

_IDS = st.sampled_from(["a", "b", "c", "d"])
_ANTHROPIC_BLOCK = st.one_of(
    st.builds(lambda i, n: {"type": "tool_use", "id": i, "name": n}, _IDS, st.sampled_from(["Read", "Bash", "Edit"])),
    st.builds(lambda i: {"type": "tool_result", "tool_use_id": i}, _IDS),
    st.just({"type": "text", "text": "hi"}),
    st.just("not a block"),
)
_ANTHROPIC_MESSAGE = st.one_of(
    st.builds(lambda role, blocks: {"role": role, "content": blocks},
              st.sampled_from(["user", "assistant"]), st.lists(_ANTHROPIC_BLOCK, max_size=4)),
    st.just("not a message"),
)


def _forward_reference(body: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The plain definition: every call's name from the start (latest wins), results after the last answer."""
    names: dict[str, str] = {}
    last = -1
    messages = body["messages"]
    for index, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "assistant":
            last = index
            names.update(_stats._anthropic_calls(message))
    results = [i for m in messages[last + 1:] if isinstance(m, dict) for i in _stats._anthropic_result_ids(m)]
    return names, results


@settings(max_examples=300, deadline=None)
@given(st.lists(_ANTHROPIC_MESSAGE, max_size=12))
def test_newest_results_found_from_the_end_match_the_forward_definition(messages: list[Any]) -> None:
    """
    The enrich step walks back from the end and stops once the newest turn's
    results are named (a long conversation must not cost a walk over every
    message per request): same ids, and the same name for each as a walk
    over the whole history would give.
    """
    body = {"messages": messages}
    names, results = _stats._anthropic_results(body)
    want_names, want_results = _forward_reference(body)
    assert results == want_results
    assert names == {i: want_names[i] for i in results if i in want_names}


def test_the_enrich_step_does_not_walk_the_history_before_the_named_results() -> None:
    """Messages before the answer that named every result are never read."""

    class Untouchable(dict):  # type: ignore[type-arg]
        def get(self, *args: Any) -> Any:
            raise AssertionError("an old message was read")

    old = [Untouchable(role="assistant", content=[]) for _ in range(50)]
    body = {
        "messages": [
            *old,
            {"role": "user", "content": "go on"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ]
    }
    assert _stats._anthropic_results(body) == ({"t1": "Read"}, ["t1"])
