"""
The choose step (lunaroute.routing.plan.Router): rules by priority, matching
on model, listener and headers, strategies, markers, the default provider,
open breakers skipped; what each attempt teaches the breakers, health and
rate limits; the switch notice.  In memory, on a Clock.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer

from lunaroute.config import ProviderSettings, Settings, settings_from_mapping
from lunaroute.dialects.request_view import RequestView, parse_request
from lunaroute.errors import ConfigError, UpstreamUnreachable
from lunaroute.interfaces import IProvider
from lunaroute.routing.plan import Attempt, MarkerDialectMismatch, Router, listener_of, render_switch_notice
from lunaroute.routing.retry import FINAL, NEXT_PROVIDER, RETRY_SAME, SUCCESS, Outcome


@implementer(IProvider)
class StubProvider:
    """Only what the router reads: name, dialect and settings."""

    pool = None
    has_server_key = False

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.provider_type = settings.provider_type

    def note_in_flight(self, count: int) -> None:
        pass

    def request(self, method: bytes, path: str, query: bytes, headers: Any, body: bytes) -> Any:
        raise NotImplementedError


PROVIDERS = {
    "anthropic_backup": {"type": "anthropic", "base_url": "https://b.example", "model": "claude-backup"},
    "local": {"type": "openai", "base_url": "http://127.0.0.1:11434/v1"},
    "openai_primary": {"type": "openai", "base_url": "https://p.example/v1"},
    "openai_backup": {"type": "openai", "base_url": "https://q.example/v1"},
}


def router(rules: list[dict[str, Any]] | None = None, **routing: Any) -> tuple[Router, Clock, Settings]:
    data: dict[str, Any] = {"providers": PROVIDERS}
    if rules is not None or routing:
        data["routing"] = {"rules": rules or [], **routing}
    settings = settings_from_mapping(data)
    clock = Clock()
    providers = {name: StubProvider(p) for name, p in settings.providers.items() if p.enabled}
    return Router(settings, providers, clock, random=lambda: 0.0), clock, settings


def view(model: str, dialect: str = "anthropic", messages: list[Any] | None = None) -> RequestView:
    body = {"model": model, "messages": messages or [{"role": "user", "content": "hi"}]}
    return parse_request(dialect, json.dumps(body).encode(), lambda name: None)


def no_headers(name: str) -> str | None:
    return None


def names(plan: Any) -> list[str]:
    return [a.provider_name for a in plan.attempts]


CLAUDE_FALLBACK = {"name": "claude", "model_pattern": "^claude-", "primary": "anthropic", "fallbacks": ["anthropic_backup"]}


def test_no_rule_matches_the_default_provider_of_the_dialect() -> None:
    """Without a match each dialect goes to its own provider, as without routing."""
    r, _, _ = router([CLAUDE_FALLBACK])
    plan = r.plan(view("gpt-5", "openai_chat"), "openai", no_headers)
    assert plan.attempts == (Attempt("openai", None, "default", None),) and plan.rule_name is None
    assert names(r.plan(view("haiku"), "anthropic", no_headers)) == ["anthropic"]
    assert listener_of("openai_responses") == "openai" and listener_of("anthropic") == "anthropic"


def test_primary_then_fallbacks_with_model_override() -> None:
    """The rule's attempts in order, each with its provider's model override."""
    r, _, _ = router([CLAUDE_FALLBACK])
    plan = r.plan(view("claude-sonnet-4"), "anthropic", no_headers)
    assert plan.attempts == (
        Attempt("anthropic", "claude", "primary", None),
        Attempt("anthropic_backup", "claude", "fallback", "claude-backup"),
    )


def test_priority_then_file_order() -> None:
    """Higher priority first; equal priorities keep file order."""
    rules = [
        {"name": "low", "always": True, "primary": "anthropic"},
        {"name": "first-high", "model_pattern": "sonnet", "priority": 10, "primary": "anthropic_backup"},
        {"name": "second-high", "model_pattern": "sonnet", "priority": 10, "primary": "anthropic"},
    ]
    r, _, _ = router(rules)
    assert r.plan(view("claude-sonnet"), "anthropic", no_headers).rule_name == "first-high"
    assert r.plan(view("claude-haiku"), "anthropic", no_headers).rule_name == "low"


def test_listener_and_header_conditions() -> None:
    """Each condition given must hold; header values must match exactly."""
    rules = [
        {"name": "by-header", "header": {"X-LunaRoute-Provider": "backup"}, "primary": "anthropic_backup"},
        {"name": "openai-local", "listener": "openai", "model_pattern": "^llama", "primary": "local"},
    ]
    r, _, _ = router(rules)
    headers = {"x-lunaroute-provider": "backup"}
    assert names(r.plan(view("claude-x"), "anthropic", headers.get)) == ["anthropic_backup"]
    assert names(r.plan(view("claude-x"), "anthropic", {"x-lunaroute-provider": "other"}.get)) == ["anthropic"]
    assert names(r.plan(view("llama3", "openai_chat"), "openai", no_headers)) == ["local"]


def test_a_rule_only_sees_requests_of_its_dialect() -> None:
    """An always-rule of OpenAI providers does not capture Anthropic requests."""
    r, _, _ = router([{"name": "all-openai", "always": True, "primary": "openai_primary"}])
    assert names(r.plan(view("claude-x"), "anthropic", no_headers)) == ["anthropic"]
    assert names(r.plan(view("gpt", "openai_responses"), "openai", no_headers)) == ["openai_primary"]


def test_weighted_rule_splits_80_20_with_the_other_as_fallback() -> None:
    """The guide's weighted rule (providers defined): 80/20, each plan lists the other as fallback."""
    rule = {"name": "weighted-distribution", "model_pattern": "^gpt-.*", "strategy": "weighted_round_robin",
            "weights": {"openai_primary": 80, "openai_backup": 20}}
    r, _, _ = router([rule])
    plans = [r.plan(view("gpt-4o", "openai_chat"), "openai", no_headers) for _ in range(1000)]
    assert Counter(p.attempts[0].provider_name for p in plans) == {"openai_primary": 800, "openai_backup": 200}
    assert {tuple(a.reason for a in p.attempts) for p in plans} == {("strategy", "fallback")}


def test_round_robin_rule_plus_fallbacks() -> None:
    rule = {"name": "rr", "always": True, "strategy": "round_robin", "providers": ["openai_primary", "openai_backup"],
            "fallbacks": ["local"]}
    r, _, _ = router([rule])
    first = r.plan(view("m", "openai_chat"), "openai", no_headers)
    second = r.plan(view("m", "openai_chat"), "openai", no_headers)
    assert names(first) == ["openai_primary", "openai_backup", "local"]
    assert names(second) == ["openai_backup", "openai_primary", "local"]


def test_open_breakers_are_skipped_and_come_back_after_the_timeout() -> None:
    """Five failures open the primary's breaker: it leaves the plans until it turns half-open."""
    r, clock, _ = router([CLAUDE_FALLBACK])
    primary = Attempt("anthropic", "claude", "primary")
    for _ in range(5):
        assert r.acquire(primary)
        r.record(primary, Outcome.from_exception(UpstreamUnreachable("refused", retryable=True)), 0.01)
    plan = r.plan(view("claude-x"), "anthropic", no_headers)
    assert names(plan) == ["anthropic_backup"] and plan.skipped == (("anthropic", "circuit_open"),)
    assert not r.acquire(primary)
    clock.advance(60)
    assert names(r.plan(view("claude-x"), "anthropic", no_headers)) == ["anthropic", "anthropic_backup"]
    assert r.acquire(primary) and not r.acquire(primary)  # one half-open probe
    r.record(primary, Outcome.from_status(200))
    assert r.acquire(primary)
    r.record(primary, Outcome.from_status(200))
    assert r.breakers["anthropic"].state == "closed"


def test_every_provider_open_gives_an_empty_plan() -> None:
    r, _, _ = router([CLAUDE_FALLBACK])
    for name in ("anthropic", "anthropic_backup"):
        for _ in range(5):
            r.record(Attempt(name, "claude", "primary"), Outcome.from_status(503))
    plan = r.plan(view("claude-x"), "anthropic", no_headers)
    assert plan.attempts == () and len(plan.skipped) == 2
    assert r.retry_at(plan) == 60
    assert r.retry_at(r.plan(view("gpt", "openai_chat"), "openai", no_headers)) is None


def test_without_routing_the_default_provider_is_never_skipped() -> None:
    """A plain passthrough gateway keeps sending to its only provider; the breaker is still kept for /readyz."""
    r, _, settings = router()
    assert not settings.routing
    for _ in range(5):
        r.record(Attempt("anthropic", None, "default"), Outcome.from_status(529))
    assert r.breakers["anthropic"].state == "open"
    assert names(r.plan(view("claude-x"), "anthropic", no_headers)) == ["anthropic"]
    assert r.states()["anthropic"]["circuit_breaker"] == "open"


# --------------------------------------------------------------------------
# markers


def marked(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "do it"}, {"type": "text", "text": text}]}]


def test_marker_sends_to_the_named_provider_before_rules() -> None:
    """[LUNAROUTE:anthropic_backup] wins over the matching rule, with the provider's model override."""
    r, _, _ = router([CLAUDE_FALLBACK])
    plan = r.plan(view("claude-x", messages=marked("[LUNAROUTE:anthropic_backup]")), "anthropic", no_headers)
    assert plan.attempts == (Attempt("anthropic_backup", None, "marker", "claude-backup"),)
    assert plan.marker is not None and plan.marker.provider == "anthropic_backup"


def test_clear_and_unknown_markers_route_normally() -> None:
    r, _, _ = router([CLAUDE_FALLBACK])
    cleared = r.plan(view("claude-x", messages=marked("[LUNAROUTE:clear]")), "anthropic", no_headers)
    assert cleared.rule_name == "claude" and cleared.marker is not None and cleared.marker.clear
    unknown = r.plan(view("claude-x", messages=marked("[LUNAROUTE:nope]")), "anthropic", no_headers)
    assert unknown.rule_name == "claude"


def without_translators_to_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    """These checks are about a pair with no translator: make sure none is registered."""
    from lunaroute.dialects.translate import base

    for pair in (("openai_chat", "anthropic"), ("openai_responses", "anthropic")):
        monkeypatch.delitem(base._REGISTRY, pair, raising=False)


def test_marker_naming_a_provider_no_translator_reaches_is_a_400(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a Chat Completions -> Anthropic translator a marker cannot send there."""
    without_translators_to_anthropic(monkeypatch)
    r, _, _ = router([])
    marked_chat = view("gpt-5", "openai_chat", messages=marked("[LUNAROUTE:anthropic_backup]"))
    with pytest.raises(MarkerDialectMismatch) as info:
        r.plan(marked_chat, "openai", no_headers)
    assert info.value.status == 400
    assert "no translator from openai_chat to anthropic" in info.value.message


def test_marker_naming_the_other_dialect_is_translated() -> None:
    """Claude Code's marker may name an OpenAI provider: Messages -> Chat is registered."""
    r, _, _ = router([])
    plan = r.plan(view("claude-x", messages=marked("[LUNAROUTE:openai_primary]")), "anthropic", no_headers)
    assert plan.attempts == (Attempt("openai_primary", None, "marker", None),)


def test_cross_dialect_rule_and_model_maps() -> None:
    """
    A rule with listener anthropic sends Claude Code to OpenAI providers;
    the rule's model_map wins over the provider's, which wins over its model;
    the rule's map is for translated attempts only (never a GPT name to Anthropic).
    """
    r, _, _ = router(
        [{"name": "claude-on-gpt", "listener": "anthropic", "primary": "openai_primary",
          "fallbacks": ["local", "anthropic_backup"], "model_map": {"claude-sonnet-4-5": "gpt-5"}}],
    )
    r.providers["local"].settings = _with(
        r.providers["local"].settings, model_map={"claude-sonnet-4-5": "qwen3", "claude-haiku": "llama"},
        model="fallback-model",
    )
    plan = r.plan(view("claude-sonnet-4-5"), "anthropic", no_headers)
    assert plan.attempts == (
        Attempt("openai_primary", "claude-on-gpt", "primary", "gpt-5"),
        Attempt("local", "claude-on-gpt", "fallback", "gpt-5"),
        Attempt("anthropic_backup", "claude-on-gpt", "fallback", "claude-backup"),
    )
    haiku = r.plan(view("claude-haiku"), "anthropic", no_headers)
    assert [a.model for a in haiku.attempts] == [None, "llama", "claude-backup"]
    other = r.plan(view("claude-opus"), "anthropic", no_headers)
    assert [a.model for a in other.attempts] == [None, "fallback-model", "claude-backup"]
    # The rule takes only its listener's requests: OpenAI clients go to their default.
    assert names(r.plan(view("claude-sonnet-4-5", "openai_chat"), "openai", no_headers)) == ["openai"]


def test_providers_no_translator_reaches_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Without a rule, a request goes to the other dialect's provider only when
    a translator reaches it: Claude Code to the lone Anthropic provider yes,
    an OpenAI request (no Chat -> Anthropic translator here) gets no plan.
    """
    without_translators_to_anthropic(monkeypatch)
    r, _, _ = router([{"name": "mixed", "listener": "anthropic", "primary": "anthropic_backup", "fallbacks": ["local"]}])
    plan = r.plan(view("x"), "anthropic", no_headers)
    assert names(plan) == ["anthropic_backup", "local"]
    settings = settings_from_mapping(
        {"providers": {"anthropic": {"enabled": False}, "openai": {"enabled": False},
                       "anthropic_backup": PROVIDERS["anthropic_backup"]}}
    )
    providers = {name: StubProvider(p) for name, p in settings.providers.items() if p.enabled}
    lonely = Router(settings, providers, Clock())
    assert names(lonely.plan(view("claude-x"), "anthropic", no_headers)) == ["anthropic_backup"]
    assert lonely.plan(view("gpt-5", "openai_chat"), "openai", no_headers).attempts == ()


def _with(settings: ProviderSettings, **changes: Any) -> ProviderSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


# --------------------------------------------------------------------------
# send: decisions and what is recorded


def test_decide_uses_the_providers_max_retries_and_the_plan() -> None:
    """529 on the primary: retried 3 times (max_retries), then the fallback; its own 529s then final."""
    r, _, _ = router([CLAUDE_FALLBACK])
    plan = r.plan(view("claude-x"), "anthropic", no_headers)
    overloaded = Outcome.from_status(529)
    assert [r.decide(plan, 0, overloaded, n).action for n in range(4)] == [RETRY_SAME] * 3 + [NEXT_PROVIDER]
    assert r.decide(plan, 1, overloaded, 3).action == FINAL
    assert r.decide(plan, 1, Outcome.from_status(200), 0).action == SUCCESS
    assert r.decide(plan, 0, overloaded, 0).delay_secs == 0.25  # random() == 0: the fixed half


def test_limits_alternative_end_to_end_on_the_clock() -> None:
    """A 429 from the primary: the alternative at once, for retry-after; then the primary again."""
    rule = {"name": "limits", "always": True, "strategy": "limits_alternative",
            "primary_providers": ["openai_primary"], "alternative_providers": ["openai_backup"],
            "exponential_backoff_base_secs": 30}
    r, clock, _ = router([rule])
    plan = r.plan(view("gpt", "openai_chat"), "openai", no_headers)
    assert names(plan) == ["openai_primary", "openai_backup"]
    limited = Outcome.from_status(429, retry_after_secs=20)
    assert r.decide(plan, 0, limited, 0).action == NEXT_PROVIDER
    r.record(plan.attempts[0], limited)
    assert names(r.plan(view("gpt", "openai_chat"), "openai", no_headers)) == ["openai_backup", "openai_primary"]
    clock.advance(20)
    assert names(r.plan(view("gpt", "openai_chat"), "openai", no_headers))[0] == "openai_primary"
    # Without retry-after: the rule's base (30 s), doubled for a second 429 in a row.
    r.record(plan.attempts[0], Outcome.from_status(429))
    assert r.rate_limits.limited_until("openai_primary") == clock.seconds() + 60
    clock.advance(60)
    r.record(plan.attempts[0], Outcome.from_status(200))
    r.record(plan.attempts[0], Outcome.from_status(429))
    assert r.rate_limits.limited_until("openai_primary") == clock.seconds() + 30
    assert r.breakers["openai_primary"].state == "closed"  # a 429 is not a failure of the provider


def test_record_feeds_health_and_cancellations_release() -> None:
    r, _, _ = router([CLAUDE_FALLBACK])
    attempt = Attempt("anthropic", "claude", "primary")
    for _ in range(10):
        r.record(attempt, Outcome.from_status(200), 0.5)
    r.record(attempt, Outcome.from_status(503), 0.1)
    state = r.states()["anthropic"]
    assert state["health"] == "degraded" and state["last_error"] == "HTTP 503"
    r.record(attempt, Outcome(error="cancelled"))
    assert r.health.snapshot("anthropic").requests == 11


def test_switch_notice() -> None:
    """Only when a fallback served; the serving provider's own message first; the original's reason words."""
    r, _, _ = router([CLAUDE_FALLBACK], provider_switch_notification={
        "default_message": "${original_provider} -> ${new_provider} (${reason}, ${model})"})
    plan = r.plan(view("claude-x"), "anthropic", no_headers)
    assert r.switch_notice(plan, 0, Outcome.from_status(529), "claude-x") is None
    assert r.switch_notice(plan, 1, Outcome.from_status(429), "claude-x") == (
        "anthropic -> anthropic_backup (high demand, claude-x)"
    )
    assert render_switch_notice("${reason}", "a", "b", "circuit_breaker", "m") == "service maintenance"
    plain, _, _ = router([CLAUDE_FALLBACK])
    assert plain.switch_notice(plan, 1, Outcome.from_status(429), "m") is None


def test_rules_naming_providers_that_are_not_running_are_refused() -> None:
    """The router is given the running providers; a rule naming another one is a config error."""
    settings = settings_from_mapping({"providers": PROVIDERS, "routing": {"rules": [CLAUDE_FALLBACK]}})
    with pytest.raises(ConfigError) as info:
        Router(settings, {"anthropic": StubProvider(settings.providers["anthropic"])}, Clock())
    assert str(info.value) == "routing.rules[0]: provider 'anthropic_backup' is not running (disabled?)"


def test_stop_cancels_breaker_timers() -> None:
    r, clock, _ = router([CLAUDE_FALLBACK])
    for _ in range(5):
        r.record(Attempt("anthropic", "claude", "primary"), Outcome.from_status(500))
    assert clock.getDelayedCalls()
    r.stop()
    assert clock.getDelayedCalls() == []


def test_every_yaml_block_of_the_routing_doc_loads() -> None:
    """docs/routing.md's examples are configs the loader accepts (and the router builds)."""
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parent.parent / "docs" / "routing.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 7
    for block in blocks:
        settings = settings_from_mapping(yaml.safe_load(block), {"HOME": "/nonexistent"})
        providers = {name: StubProvider(p) for name, p in settings.providers.items() if p.enabled}
        Router(settings, providers, Clock()).stop()
