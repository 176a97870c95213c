"""
Per-session statistics kept in memory: what each coding-assistant session
has cost in requests, tokens, tool round-trips, time and money.

The recorder writes every exchange to disk, but answering "how is this
session going?" from disk on every UI refresh, or printing a summary when
the gateway stops, wants running totals.  L{SessionStatsCollector} is an
exchange observer that keeps them for the most recently active sessions
(an LRU, so memory stays bounded however many sessions pass through) and
for everything since start-up.

It runs before the recorder because it also fills in two fields of each
exchange the recorder stores: the estimated cost and the tool results the
request carries back (with how long each tool took on the client's side).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from lunaroute.exchange import Enrichment, Exchange
from lunaroute.logs import log_observer
from lunaroute.stats.pricing import PricingTable

log = Logger(observer=log_observer)

__all__ = ["MAX_LABEL_CHARS", "SessionStatsCollector", "SUMMARY_WIDTH", "TOKEN_KINDS"]

TOKEN_KINDS = ("input", "output", "thinking", "cache_read", "cache_creation", "cache_creation_5m", "cache_creation_1h")

# Bounds on per-session bookkeeping fed by client-controlled data, so one
# pathological session cannot grow without limit.
_MAX_PENDING_TOOL_CALLS = 512
_MAX_RESOLVED_TOOL_CALLS = 2048
_MAX_NAMES = 100  # distinct tool or model names; the rest is "other"
_MAX_SESSION_MODELS = 20  # distinct models per session (the aggregate keeps _MAX_NAMES)
_MAX_UNPRICED_MODELS = 10
_OTHER = "other"

#: Model and tool names (every label-like value the collector keeps) are cut
#: to this many characters: a client choosing a 1 MB model name must not make
#: the statistics, their JSON or the summary grow with it.
MAX_LABEL_CHARS = 200
# Tool call ids are matched exactly, so a longer one is kept as a prefix
# plus a digest of the whole id.
_MAX_ID_CHARS = 200
_ELLIPSIS = "…"

#: Characters between the borders of the shutdown summary's box: every line
#: is this wide, longer values are cut with an ellipsis.
SUMMARY_WIDTH = 96
_TOOL_COLUMN = 32

# Responses API input items the model produced (as opposed to results the
# client sends back, or user/developer messages).
_RESPONSES_CALL_TYPES = frozenset({"function_call", "custom_tool_call"})
_RESPONSES_RESULT_TYPES = frozenset({"function_call_output", "custom_tool_call_output"})


@dataclass
class _ToolTotals:
    calls: int = 0
    results: int = 0
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "results": self.results,
            "avg_duration_ms": _round(self.duration_ms / self.results) if self.results else None,
        }


@dataclass
class _Totals:
    """Running sums over a set of exchanges (one session, or all of them)."""

    max_models: int = _MAX_NAMES
    requests: int = 0
    failed_requests: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))
    thinking_estimated_tokens: int = 0
    tools: dict[str, _ToolTotals] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    timed_requests: int = 0
    total_ms: float = 0.0
    overhead_ms: float = 0.0
    provider_ms: float = 0.0
    ttft_requests: int = 0
    ttft_ms: float = 0.0
    cost_usd: float = 0.0
    cost_known_requests: int = 0
    unpriced_models: list[str] = field(default_factory=list)
    first_request_at: float | None = None
    last_request_at: float | None = None

    def add_exchange(self, exchange: Exchange) -> None:
        timings = exchange.timings
        self.requests += 1
        if not exchange.success:
            self.failed_requests += 1
        if self.first_request_at is None:
            self.first_request_at = timings.received
        self.last_request_at = timings.received
        model = _model_of(exchange)
        if model is not None:
            model = _label(model)
            key = _bounded_key(self.models, model, self.max_models)
            self.models[key] = self.models.get(key, 0) + 1

        response = exchange.response
        if response is not None:
            usage = response.usage
            self.tokens["input"] += usage.input_tokens
            self.tokens["output"] += usage.output_tokens
            self.tokens["thinking"] += usage.thinking_tokens
            self.tokens["cache_read"] += usage.cache_read_tokens
            self.tokens["cache_creation"] += usage.cache_creation_tokens
            five_minutes = usage.cache_creation_5m_tokens
            self.tokens["cache_creation_5m"] += five_minutes
            self.tokens["cache_creation_1h"] += usage.cache_creation_tokens - five_minutes
            if usage.thinking_tokens and not usage.thinking_tokens_exact:
                self.thinking_estimated_tokens += usage.thinking_tokens
            for call in response.tool_calls:
                self.tool(call.name or "unknown").calls += 1

        total, overhead = timings.total_ms, timings.proxy_overhead_ms
        if total is not None:
            self.timed_requests += 1
            self.total_ms += total
            self.overhead_ms += overhead or 0.0
            self.provider_ms += timings.provider_ms or 0.0
        if exchange.streaming and timings.ttft_ms is not None:
            self.ttft_requests += 1
            self.ttft_ms += timings.ttft_ms

        if exchange.cost_usd is None:
            name = model or "unknown"  # already cut by _label
            if name not in self.unpriced_models and len(self.unpriced_models) < _MAX_UNPRICED_MODELS:
                self.unpriced_models.append(name)
        else:
            self.cost_known_requests += 1
            self.cost_usd += exchange.cost_usd

    def add_tool_result(self, name: str, duration_ms: float) -> None:
        tool = self.tool(name)
        tool.results += 1
        tool.duration_ms += duration_ms

    def tool(self, name: str) -> _ToolTotals:
        key = _bounded_key(self.tools, _label(name), _MAX_NAMES)
        totals = self.tools.get(key)
        if totals is None:
            totals = self.tools[key] = _ToolTotals()
        return totals

    def to_dict(self) -> dict[str, Any]:
        tokens = dict(self.tokens)
        # Matches Usage.total: input + output (see its docstring for why the
        # cache counts are not in it).
        tokens["total"] = tokens["input"] + tokens["output"]
        all_priced = self.cost_known_requests == self.requests
        timed = self.timed_requests
        return {
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "first_request_at": self.first_request_at,
            "last_request_at": self.last_request_at,
            "models": dict(self.models),
            "tokens": tokens,
            # Anthropic does not count thinking separately: its share is
            # estimated from the thinking text (OpenAI's is exact).
            "thinking_estimated": self.thinking_estimated_tokens > 0,
            "thinking_estimated_tokens": self.thinking_estimated_tokens,
            "tools": {name: t.to_dict() for name, t in sorted(self.tools.items())},
            "tool_calls": sum(t.calls for t in self.tools.values()),
            "avg_response_ms": _round(self.total_ms / timed) if timed else None,
            "avg_ttft_ms": _round(self.ttft_ms / self.ttft_requests) if self.ttft_requests else None,
            "request_ms": _round(self.total_ms),
            "proxy_overhead_ms": _round(self.overhead_ms),
            "proxy_overhead_share": self.overhead_ms / self.total_ms if self.total_ms > 0 else None,
            "avg_proxy_overhead_ms": _round(self.overhead_ms / timed) if timed else None,
            "provider_ms": _round(self.provider_ms),
            "avg_provider_ms": _round(self.provider_ms / timed) if timed else None,
            "estimated_cost_usd": self.cost_usd if all_priced else None,
            "priced_cost_usd": self.cost_usd,
            "cost_known_requests": self.cost_known_requests,
            "unpriced_models": list(self.unpriced_models),
        }


@dataclass
class _Session:
    totals: _Totals = field(default_factory=lambda: _Totals(max_models=_MAX_SESSION_MODELS))
    # tool call id -> (tool name, when the response asking for it ended)
    pending: OrderedDict[str, tuple[str, float]] = field(default_factory=OrderedDict)
    # tool call ids whose result has been seen (clients resend the history).
    resolved: OrderedDict[str, None] = field(default_factory=OrderedDict)


def _round(ms: float) -> float:
    # Microsecond resolution is plenty and keeps float noise out of the API.
    return round(ms, 3)


def _bounded_key(table: dict[str, Any], name: str, limit: int) -> str:
    if name in table or len(table) < limit:
        return name
    return _OTHER


def _label(value: str) -> str:
    """C{value} cut to L{MAX_LABEL_CHARS}, ending in an ellipsis when cut."""
    if len(value) <= MAX_LABEL_CHARS:
        return value
    return value[: MAX_LABEL_CHARS - 1] + _ELLIPSIS


def _id_key(value: str) -> str:
    """A tool call id as kept for matching: itself, or a prefix and a digest of a long one."""
    if len(value) <= _MAX_ID_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{value[:64]}{_ELLIPSIS}{digest}"


def _model_of(exchange: Exchange) -> str | None:
    """The model that served the exchange: the response's, else the request's."""
    response = exchange.response
    if response is not None and response.model:
        return response.model
    return exchange.model


class SessionStatsCollector:
    """
    Running statistics per session (the C{max_sessions} most recently active
    ones) and in aggregate (every conversation exchange since start-up).

    Use L{observe} as an exchange observer, before the recorder.  Readers
    (L{snapshot}, L{sessions}, L{aggregate}, L{summary_text}) return plain,
    JSON-able dicts and strings.  Everything runs on the reactor thread.

    With C{max_sessions} 0 no session is kept: only the aggregate is
    counted, and tool durations are unknown (they need the session's
    earlier responses).
    """

    def __init__(self, max_sessions: int, pricing: PricingTable) -> None:
        if max_sessions < 0:
            raise ValueError("max_sessions must be >= 0")
        self.max_sessions = max_sessions
        self.pricing = pricing
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._aggregate = _Totals()
        self._sessions_seen = 0
        self._evicted = 0

    # -- the observer ----------------------------------------------------

    def __call__(self, exchange: Exchange) -> None:
        self.observe(exchange)

    def enrich(self, exchange: Exchange) -> Enrichment:
        """
        The enrich step of the request lifecycle: the exchange's estimated
        cost and the tool results it carries back, timed against the
        responses that asked for them (this collector remembers each
        session's pending tool calls).  Other kinds than C{conversation}
        get nothing.  Never raises.
        """
        try:
            if not exchange.is_conversation:
                return Enrichment()
            cost = self._cost(exchange)
            session = self._session(exchange.session_id)
            results = self._tool_results(exchange, session)
            if session is not None:
                self._remember_tool_calls(exchange, session)
            return Enrichment(cost_usd=cost, tool_results=tuple(results))
        except Exception:
            log.failure(
                "enriching request {request_id} failed",
                request_id=getattr(exchange, "request_id", None),
            )
            return Enrichment()

    def observe(self, exchange: Exchange) -> None:
        """
        Account for a finished (enriched and sealed) exchange: add it to
        its session and to the aggregate.  Reads the record, never changes
        it.  Other kinds than C{conversation} are ignored.  Never raises.
        """
        try:
            if not exchange.is_conversation:
                return
            session = self._session(exchange.session_id)
            if session is not None:
                session.totals.add_exchange(exchange)
            self._aggregate.add_exchange(exchange)
            for result in exchange.tool_results:
                if result["duration_ms"] is not None:
                    self._aggregate.add_tool_result(result["tool_name"] or "unknown", result["duration_ms"])
                    if session is not None:
                        session.totals.add_tool_result(result["tool_name"] or "unknown", result["duration_ms"])
        except Exception:
            log.failure(
                "session statistics failed for request {request_id}",
                request_id=getattr(exchange, "request_id", None),
            )

    def _cost(self, exchange: Exchange) -> float | None:
        response = exchange.response
        if response is None:
            # Nothing came back, so nothing was billed.
            return 0.0
        usage = response.usage
        if not (
            usage.input_tokens or usage.output_tokens or usage.cache_read_tokens or usage.cache_creation_tokens
        ):
            # A failed request with no usage costs nothing, whatever the model
            # (a typo'd model name must not make a whole session "unknown").
            return 0.0
        return self.pricing.cost_usd(usage, _model_of(exchange), response.dialect or exchange.dialect)

    def _session(self, session_id: str) -> _Session | None:
        if self.max_sessions == 0:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session()
            self._sessions_seen += 1
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
                self._evicted += 1
        else:
            self._sessions.move_to_end(session_id)
        return session

    # -- tool round-trips --------------------------------------------------

    def _remember_tool_calls(self, exchange: Exchange, session: _Session) -> None:
        response = exchange.response
        if response is None or not response.tool_calls:
            return
        timings = exchange.timings
        asked_at = timings.last_byte
        if asked_at is None:
            asked_at = timings.finished if timings.finished is not None else timings.received
        for call in response.tool_calls:
            if not call.id:
                continue
            key = _id_key(call.id)
            session.pending[key] = (_label(call.name or "unknown"), asked_at)
            session.pending.move_to_end(key)
            while len(session.pending) > _MAX_PENDING_TOOL_CALLS:
                session.pending.popitem(last=False)

    def _tool_results(self, exchange: Exchange, session: _Session | None) -> list[dict[str, Any]]:
        body = exchange.request_json
        if not isinstance(body, dict):
            return []
        names, results = _new_tool_results(body, exchange.dialect)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for call_id in results:
            if call_id in seen:
                continue
            seen.add(call_id)
            name: str | None = names.get(call_id)
            if name is not None:
                name = _label(name)
            duration: float | None = None
            if session is not None:
                key = _id_key(call_id)
                if key in session.resolved:
                    # Already counted: a retried request resends the same turn.
                    continue
                asked = session.pending.pop(key, None)
                if asked is not None:
                    name = asked[0]
                    duration = max(0.0, (exchange.timings.received - asked[1]) * 1000.0)
                session.resolved[key] = None
                while len(session.resolved) > _MAX_RESOLVED_TOOL_CALLS:
                    session.resolved.popitem(last=False)
            out.append({"tool_call_id": call_id, "tool_name": name, "duration_ms": duration})
        return out

    # -- readers -------------------------------------------------------------

    def snapshot(self, session_id: str) -> dict[str, Any] | None:
        """The statistics of one kept session, or C{None}."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        data = session.totals.to_dict()
        data["session_id"] = session_id
        data["pending_tool_calls"] = len(session.pending)
        return data

    def sessions(self) -> list[dict[str, Any]]:
        """Every kept session's statistics, most recently active first."""
        return [s for s in (self.snapshot(sid) for sid in reversed(self._sessions)) if s is not None]

    def session_ids(self) -> list[str]:
        """The kept sessions, most recently active first."""
        return list(reversed(self._sessions))

    def aggregate(self) -> dict[str, Any]:
        """Statistics over every conversation exchange since start-up."""
        data = self._aggregate.to_dict()
        data["sessions_kept"] = len(self._sessions)
        data["sessions_seen"] = self._sessions_seen
        data["sessions_evicted"] = self._evicted
        return data

    def summary_text(self) -> str:
        """The boxed shutdown summary: each kept session, then the total."""
        blocks: list[list[str]] = []
        for data in reversed(self.sessions()):  # oldest first reads naturally
            blocks.append([f"Session {data['session_id']}", *_describe(data)])
        aggregate = self.aggregate()
        title = f"All sessions ({aggregate['sessions_seen']} seen"
        if aggregate["sessions_evicted"]:
            title += f", {aggregate['sessions_evicted']} no longer kept"
        blocks.append([title + ")", *_describe(aggregate)])
        return _box("LunaRoute session summary", blocks)


# --------------------------------------------------------------------------
# Finding the tool results a request carries back


def _new_tool_results(body: dict[str, Any], dialect: str) -> tuple[dict[str, str], list[str]]:
    """
    The tool call ids whose results this request brings back in its newest
    turn, and the tool names the request's own history gives for call ids.

    Clients resend the whole conversation, so only the turn after the
    model's last answer is new; older results were counted when they were new.
    """
    if dialect == "anthropic":
        return _anthropic_results(body)
    if dialect == "openai_chat":
        return _chat_results(body)
    if dialect == "openai_responses":
        return _responses_results(body)
    return {}, []


def _results_after_last_answer(
    body: dict[str, Any],
    calls_in: Callable[[dict[str, Any]], Iterable[tuple[str, str]]],
    results_in: Callable[[dict[str, Any]], Iterable[str]],
) -> tuple[dict[str, str], list[str]]:
    """
    For message-list dialects: the result ids carried by the messages after
    the assistant's last answer (the newest turn), and the names the
    history gives those ids (the latest call with each id).

    Walks back from the end and stops once every result is named (usually
    at the last answer), so a long conversation costs what its newest turns
    do, not a walk over every message on every request.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        return {}, []
    index = len(messages) - 1
    while index >= 0:
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "assistant":
            break
        index -= 1
    results = [
        call_id
        for message in messages[index + 1:]
        if isinstance(message, dict)
        for call_id in results_in(message)
    ]
    names: dict[str, str] = {}
    unnamed = set(results)
    while unnamed and index >= 0:
        message = messages[index]
        index -= 1
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        # Within a message, as across messages, the latest call of an id wins.
        found = {call_id: name for call_id, name in calls_in(message) if call_id in unnamed}
        names.update(found)
        unnamed.difference_update(found)
    return names, results


def _anthropic_calls(message: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for block in _blocks(message.get("content")):
        if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
            yield block["id"], str(block.get("name") or "unknown")


def _anthropic_result_ids(message: dict[str, Any]) -> Iterable[str]:
    if message.get("role") != "user":
        return
    for block in _blocks(message.get("content")):
        if block.get("type") == "tool_result" and isinstance(block.get("tool_use_id"), str):
            yield block["tool_use_id"]


def _chat_calls(message: dict[str, Any]) -> Iterable[tuple[str, str]]:
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            function = call.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            yield call["id"], str(name or "unknown")


def _chat_result_ids(message: dict[str, Any]) -> Iterable[str]:
    if message.get("role") == "tool" and isinstance(message.get("tool_call_id"), str):
        yield message["tool_call_id"]


def _anthropic_results(body: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    return _results_after_last_answer(body, _anthropic_calls, _anthropic_result_ids)


def _chat_results(body: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    return _results_after_last_answer(body, _chat_calls, _chat_result_ids)


def _item_type(item: dict[str, Any]) -> str | None:
    """A Responses input item's C{type}, or C{None} when it is not a string (hostile input)."""
    kind = item.get("type")
    return kind if isinstance(kind, str) else None


def _responses_results(body: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    items = body.get("input")
    if not isinstance(items, list):
        return {}, []
    names: dict[str, str] = {}
    # The newest turn starts after the model's last non-call output (its
    # reasoning or an assistant message); calls and their outputs may
    # interleave after it.
    turn_start = 0
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        kind = _item_type(item)
        if kind in _RESPONSES_CALL_TYPES and isinstance(item.get("call_id"), str):
            names[item["call_id"]] = str(item.get("name") or "unknown")
        elif kind == "reasoning" or (kind in ("message", None) and item.get("role") == "assistant"):
            turn_start = index + 1
    results = [
        item["call_id"]
        for item in items[turn_start:]
        if isinstance(item, dict)
        and _item_type(item) in _RESPONSES_RESULT_TYPES
        and isinstance(item.get("call_id"), str)
    ]
    return names, results


def _blocks(content: Any) -> Iterator[dict[str, Any]]:
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                yield block


# --------------------------------------------------------------------------
# The boxed summary


def _int(value: int) -> str:
    return f"{value:,}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _usd(value: float) -> str:
    return f"${value:,.4f}" if value >= 0.0001 or value == 0 else f"${value:.6f}"


def _ttl_split(tokens: dict[str, int]) -> str:
    if not tokens["cache_creation_1h"]:
        return ""
    return f" ({_int(tokens['cache_creation_5m'])} for 5 min, {_int(tokens['cache_creation_1h'])} for 1 h)"


def _describe(data: dict[str, Any]) -> list[str]:
    tokens = data["tokens"]
    failed = f" ({data['failed_requests']} failed)" if data["failed_requests"] else ""
    lines = [f"  Requests:          {_int(data['requests'])}{failed}"]
    if data["models"]:
        models = ", ".join(f"{_fit(name, _TOOL_COLUMN)} ({count})" for name, count in sorted(data["models"].items()))
        lines.append(f"  Models:            {models}")
    estimated = data["thinking_estimated_tokens"]
    if not estimated:
        thinking_note = ""
    elif estimated >= tokens["thinking"]:
        thinking_note = " (estimated)"
    else:
        thinking_note = f" ({_int(estimated)} of them estimated)"
    lines += [
        "  Tokens:",
        f"    Input:           {_int(tokens['input'])}",
        f"    Output:          {_int(tokens['output'])}",
        f"    Thinking:        {_int(tokens['thinking'])}{thinking_note}",
        f"    Cache read:      {_int(tokens['cache_read'])}",
        f"    Cache creation:  {_int(tokens['cache_creation'])}{_ttl_split(tokens)}",
        f"    Total:           {_int(tokens['total'])}",
    ]
    if data["tools"]:
        lines.append(f"  Tool calls:        {_int(data['tool_calls'])}")
        width = min(_TOOL_COLUMN, max(len(name) for name in data["tools"]))
        for name, tool in data["tools"].items():
            average = tool["avg_duration_ms"]
            timing = f", avg {_ms(average)}" if average is not None else ""
            calls = "call" if tool["calls"] == 1 else "calls"
            lines.append(f"    {_fit(name, width).ljust(width)}  {_int(tool['calls'])} {calls}{timing}")
    lines.append(f"  Avg response time: {_ms(data['avg_response_ms'])}")
    share = data["proxy_overhead_share"]
    share_text = f" ({share * 100:.2f}% of request time)" if share is not None else ""
    lines.append(f"  Proxy overhead:    {_ms(data['proxy_overhead_ms'])} total{share_text}")
    lines.append(f"  Provider latency:  {_ms(data['provider_ms'])} total")
    if data["estimated_cost_usd"] is not None:
        lines.append(f"  Estimated cost:    {_usd(data['estimated_cost_usd'])}")
    else:
        unpriced = ", ".join(data["unpriced_models"]) or "unknown"
        lines.append(
            f"  Estimated cost:    unknown (no price for {unpriced}; "
            f"{_usd(data['priced_cost_usd'])} for {data['cost_known_requests']} priced requests)"
        )
    return lines


def _fit(text: str, width: int) -> str:
    """C{text} on one line of at most C{width} characters, cut with an ellipsis."""
    if len(text) > width:
        text = text[: width - 1] + _ELLIPSIS
    if not text.isprintable():
        # A newline or escape code in a model name must not break the box.
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text


def _box(title: str, blocks: list[list[str]]) -> str:
    """
    A box of fixed width (L{SUMMARY_WIDTH} between the borders), whatever
    the values: a long one is cut, never makes every line longer.
    """
    width = SUMMARY_WIDTH + 2
    rule = "═" * width
    out = [f"╔{rule}╗", f"║ {_fit(title, SUMMARY_WIDTH).ljust(width - 1)}║", f"╠{rule}╣"]
    for index, block in enumerate(blocks):
        if index:
            out.append(f"╟{'─' * width}╢")
        out.extend(f"║ {_fit(line, SUMMARY_WIDTH).ljust(width - 1)}║" for line in block)
    out.append(f"╚{rule}╝")
    return "\n".join(out)
