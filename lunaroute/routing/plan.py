"""
The choose step: from the configured rules, a request's model, listener,
headers and marker, an ordered L{Plan} of attempts (provider, rule, why).

Order of precedence:

  1. a C{[LUNAROUTE:<name>]} marker in the latest user turn naming an
     enabled provider that can take the request (its own dialect, or the
     other one through a registered translator): that provider alone (a
     marker naming a provider no translator reaches is refused with 400;
     an unknown or disabled name is ignored, as in the original);
  2. the first matching rule, by C{priority} (higher first) then file
     order.  A rule matches when each condition it gives holds: its
     C{model_pattern} is found in the model, its C{listener} is the
     request's, each C{header} has exactly that value (C{always: true} or no
     condition at all: every request).  A rule only sees requests of its
     C{listener}, or without one, of the dialect its first provider speaks.
     Its attempts: C{primary} then C{fallbacks}, or its strategy's order
     then C{fallbacks};
  3. the default provider of the request's dialect (as without routing),
     or, when none is enabled, one of the other dialect a translator
     reaches (L{lunaroute.routing.translation.default_provider}).

Each attempt carries the model to ask its provider for
(L{lunaroute.routing.translation.resolve_model}: the rule's C{model_map}
for a translated attempt, then the provider's C{model_map}, then the
provider's C{model}).  An attempt on a
provider that could only take the request through a translator this
version lacks is left out (C{no_translator} in C{Plan.skipped}).

Providers whose circuit breaker is open are left out of the plan (listed in
C{Plan.skipped}); an empty plan means nothing can serve the request now.
Without a C{routing} section the default provider is never left out (its
breaker is still kept, for C{/readyz}), so a plain passthrough gateway
behaves as before.

The L{Router} also keeps what the attempts teach: breakers, health, rate
limits (L{Router.record}), and says what to do after each attempt
(L{Router.decide}, the policy of L{lunaroute.routing.retry}).
"""

from __future__ import annotations

import random as random_module
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from lunaroute.config import RuleSettings, Settings
from lunaroute.dialects.request_view import RequestView
from lunaroute.errors import ConfigError, RequestError
from lunaroute.interfaces import IProvider
from lunaroute.logs import log_observer
from lunaroute.routing.breaker import CircuitBreaker
from lunaroute.routing.health import HealthMonitor
from lunaroute.routing.markers import Marker, find_marker
from lunaroute.routing.retry import (
    DEFAULT_POLICY,
    Decision,
    Outcome,
    RetryPolicy,
    counts_against_provider,
    decide,
    switch_reason,
)
from lunaroute.routing.strategies import (
    LimitsAlternative,
    RateLimits,
    RoundRobin,
    SmoothWeightedRoundRobin,
    Strategy,
)
from lunaroute.routing.translation import (
    NoTranslator,
    can_serve,
    default_provider,
    missing_translator,
    provider_dialect,
    resolve_model,
)

__all__ = ["Attempt", "MarkerDialectMismatch", "Plan", "Router", "listener_of", "render_switch_notice"]

log = Logger(observer=log_observer)

# Why an attempt is in the plan.
MARKER = "marker"
PRIMARY = "primary"
STRATEGY = "strategy"
FALLBACK = "fallback"
DEFAULT = "default"


def listener_of(dialect: str | None) -> str:
    """The listener (dialect family) of a request dialect: C{anthropic} or C{openai}."""
    return "anthropic" if dialect == "anthropic" else "openai"


class MarkerDialectMismatch(RequestError):
    """A marker names a provider of the other dialect that no translator reaches (400)."""


@dataclass(frozen=True)
class Attempt:
    """
    One provider to try.

    @ivar provider_name: the configured provider.
    @ivar rule_name: the rule that chose it (C{None}: marker or default).
    @ivar reason: C{marker}, C{primary}, C{strategy}, C{fallback} or
        C{default}.
    @ivar model: the model to ask the provider for (model maps, then the
        provider's C{model}; C{None}: keep the client's).
    """

    provider_name: str
    rule_name: str | None
    reason: str
    model: str | None = None


@dataclass(frozen=True)
class Plan:
    """
    The ordered attempts for one request.

    @ivar skipped: C{(provider, why)} for providers left out (C{circuit_open}).
    @ivar marker: the marker found in the request, if any (its stripping is
        the modify step's: L{lunaroute.routing.markers.strip_markers}).
    """

    attempts: tuple[Attempt, ...]
    rule_name: str | None = None
    skipped: tuple[tuple[str, str], ...] = ()
    marker: Marker | None = None


class _Rule:
    """A rule ready to match: its pattern compiled, its strategy's state."""

    def __init__(self, settings: RuleSettings, dialect: str, strategy: Strategy | None) -> None:
        self.settings = settings
        self.name = settings.name
        self.dialect = dialect
        self.pattern = re.compile(settings.model_pattern) if settings.model_pattern is not None else None
        self.header = tuple(settings.header.items())
        self.strategy = strategy

    def matches(self, model: str | None, listener: str, header: Callable[[str], str | None]) -> bool:
        if listener != self.dialect:
            return False
        rule = self.settings
        if rule.listener is not None and rule.listener != listener:
            return False
        if self.pattern is not None and (model is None or self.pattern.search(model) is None):
            return False
        return all(header(name) == value for name, value in self.header)

    def order(self, available: Callable[[str], bool]) -> list[tuple[str, str]]:
        rule = self.settings
        if self.strategy is None:
            first = [(rule.primary, PRIMARY)] if rule.primary else []
        else:
            first = [(name, STRATEGY if i == 0 else FALLBACK) for i, name in enumerate(self.strategy.order(available))]
        names = {name for name, _ in first}
        return [*first, *((name, FALLBACK) for name in rule.fallbacks if name not in names)]


class Router:
    """
    The routing state of one gateway: rules, one breaker per provider,
    health, rate limits.

    @ivar breakers: provider name -> its L{CircuitBreaker}.
    @ivar health: the L{HealthMonitor} of every provider.
    @ivar rate_limits: the providers' rate limits (L{RateLimits}).
    """

    def __init__(
        self,
        settings: Settings,
        providers_by_name: Mapping[str, IProvider],
        clock: IReactorTime,
        random: Callable[[], float] = random_module.random,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self.settings = settings
        self.providers = dict(providers_by_name)
        self._clock = clock
        self._random = random
        self._policy = policy
        routing = settings.routing
        self.breakers = {name: CircuitBreaker(name, clock, routing.circuit_breaker) for name in self.providers}
        self.health = HealthMonitor(clock, routing.health_monitor)
        self.rate_limits = RateLimits(clock)
        rules = []
        for rule in sorted(routing.rules, key=lambda r: (-r.priority, r.index)):
            missing = [name for name in rule.targets if name not in self.providers]
            if missing:
                raise ConfigError(
                    f"provider {missing[0]!r} is not running (disabled?)", key=f"routing.rules[{rule.index}]"
                )
            dialect = rule.listener or self.providers[rule.targets[0]].provider_type
            rules.append(_Rule(rule, dialect, self._strategy(rule)))
        self._rules = tuple(rules)
        self._by_name = {rule.name: rule for rule in rules}

    def _strategy(self, rule: RuleSettings) -> Strategy | None:
        if rule.strategy == "round_robin":
            return RoundRobin(rule.providers)
        if rule.strategy == "weighted_round_robin":
            return SmoothWeightedRoundRobin(rule.weights)
        if rule.strategy == "limits_alternative":
            return LimitsAlternative(
                rule.primary_providers, rule.alternative_providers, self.rate_limits, rule.exponential_backoff_base_secs
            )
        return None

    # -- choose

    def plan(self, view: RequestView, listener: str, header: Callable[[str], str | None]) -> Plan:
        """
        The attempts for one request.

        @param view: the parsed request (its C{json} is read for a marker).
        @param listener: C{anthropic} or C{openai} (L{listener_of}).
        @param header: looks a request header up by lower-case name.
        @raise MarkerDialectMismatch: a marker names a provider of the other
            dialect.
        """
        marker = find_marker(view.dialect, view.json) if view.json is not None else None
        if marker is not None and marker.provider is not None:
            chosen = self.providers.get(marker.provider)
            if chosen is None:
                log.warn("marker names unknown or disabled provider {name}; routing normally", name=marker.provider)
            elif not can_serve(view.dialect, chosen.provider_type, getattr(chosen, "settings", None)):
                target = provider_dialect(view.dialect, chosen.provider_type, getattr(chosen, "settings", None))
                raise MarkerDialectMismatch(
                    f"[LUNAROUTE:{marker.provider}] names a provider that speaks {chosen.provider_type}: "
                    + missing_translator(view.dialect or listener, target or chosen.provider_type, chosen.name)
                )
            else:
                return self._build([(marker.provider, MARKER)], None, marker, True, view)
        for rule in self._rules:
            if rule.matches(view.model, listener, header):
                return self._build(rule.order(self._available), rule.name, marker, True, view, rule.settings)
        default = default_provider(self.settings, listener, view.dialect)
        if default is None or default.name not in self.providers:
            return Plan((), None, (), marker)
        return self._build([(default.name, DEFAULT)], None, marker, bool(self.settings.routing), view)

    def _available(self, name: str) -> bool:
        return self.breakers[name].available()

    def _build(
        self,
        order: list[tuple[str, str]],
        rule_name: str | None,
        marker: Marker | None,
        skip_open: bool,
        view: RequestView,
        rule: RuleSettings | None = None,
    ) -> Plan:
        attempts = []
        skipped = []
        missing: list[str] = []
        for name, reason in order:
            provider = self.providers[name]
            settings = provider.settings
            if not can_serve(view.dialect, provider.provider_type, settings):
                target = provider_dialect(view.dialect, provider.provider_type, settings) or ""
                missing.append(missing_translator(view.dialect or "", target, name))
                skipped.append((name, "no_translator"))
                continue
            if skip_open and not self.breakers[name].available():
                skipped.append((name, "circuit_open"))
                continue
            # A rule's model_map names other-dialect models: translated attempts only.
            translated = provider_dialect(view.dialect, provider.provider_type, settings) is not None
            model = resolve_model(view.model, settings, rule.model_map if rule is not None and translated else None)
            attempts.append(Attempt(name, rule_name, reason, model))
        if not attempts and missing and len(missing) == len(skipped):
            raise NoTranslator(missing[0])
        return Plan(tuple(attempts), rule_name, tuple(skipped), marker)

    # -- send

    def acquire(self, attempt: Attempt) -> bool:
        """
        Right before sending C{attempt}: whether its breaker lets it through
        (taking a half-open probe slot).  C{False}: skip it (record
        C{Outcome(error="circuit_open")}) and go on with the plan.  Every
        C{True} must be followed by one L{record}.
        """
        return self.breakers[attempt.provider_name].allow()

    def record(self, attempt: Attempt, outcome: Outcome, latency_secs: float | None = None) -> None:
        """
        What one attempt taught: the provider's breaker and health, and its
        rate limit on a 429 (for C{limits_alternative}; the rule's backoff
        base when the attempt came from such a rule, else 60 s).
        """
        name = attempt.provider_name
        breaker = self.breakers[name]
        verdict = counts_against_provider(outcome)
        if verdict is None:
            if outcome.error == "cancelled":
                breaker.release()
            return
        if verdict:
            breaker.record_failure()
        else:
            breaker.record_success()
        self.health.record(name, not verdict, latency_secs, error=outcome.detail if verdict else None)
        if outcome.status == 429:
            rule = self._by_name.get(attempt.rule_name or "")
            base = rule.settings.exponential_backoff_base_secs if rule is not None else 60.0
            self.rate_limits.record_rate_limit(name, outcome.retry_after_secs, base)
        elif not verdict:
            self.rate_limits.record_success(name)

    def decide(self, plan: Plan, index: int, outcome: Outcome, retries_done: int) -> Decision:
        """
        After attempt C{plan.attempts[index]} ended with C{outcome} (its
        C{retries_done}-th retry): retry it, move on, stop, or relay.
        """
        attempt = plan.attempts[index]
        rule = self._by_name.get(attempt.rule_name or "")
        return decide(
            outcome,
            retries_done=retries_done,
            max_retries=self.providers[attempt.provider_name].settings.http_client.max_retries,
            has_next=index + 1 < len(plan.attempts),
            random=self._random,
            rate_limit_moves_on=rule is not None and rule.settings.strategy == "limits_alternative",
            policy=self._policy,
        )

    def switch_notice(self, plan: Plan, served_index: int, first_failure: Outcome, model: str) -> str | None:
        """
        The note for the user when a fallback served the request
        (C{routing.provider_switch_notification}; the serving provider's
        C{switch_notification_message} first), or C{None}.
        """
        notice = self.settings.routing.provider_switch_notification
        if notice is None or not notice.enabled or served_index == 0 or not plan.attempts:
            return None
        served = plan.attempts[served_index]
        template = self.providers[served.provider_name].settings.switch_notification_message or notice.default_message
        return render_switch_notice(
            template, plan.attempts[0].provider_name, served.provider_name, switch_reason(first_failure), model
        )

    def retry_at(self, plan: Plan) -> float | None:
        """
        For an empty plan (every candidate's breaker open): the clock time
        the first of them turns half-open (for a C{retry-after}), or C{None}.
        """
        times = [self.breakers[name].retry_at for name, why in plan.skipped if why == "circuit_open"]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def stop(self) -> None:
        """Cancel the breakers' timers (at shutdown)."""
        for breaker in self.breakers.values():
            breaker.stop()

    def states(self) -> dict[str, dict[str, Any]]:
        """For C{/readyz}: each provider's breaker state, health and last error."""
        out: dict[str, dict[str, Any]] = {}
        for name, breaker in self.breakers.items():
            health = self.health.snapshot(name)
            out[name] = {
                "circuit_breaker": breaker.state,
                "health": health.status,
                "success_rate": health.success_rate,
                "last_error": health.last_error,
                "rate_limited_until": self.rate_limits.limited_until(name),
            }
        return out


# The original's user-facing words for each reason.
_REASON_TEXT = {
    "rate_limit": "high demand",
    "service_issue": "a temporary service issue",
    "circuit_breaker": "service maintenance",
}


def render_switch_notice(template: str, original_provider: str, new_provider: str, reason: str, model: str) -> str:
    """Fill a switch-notice template's C{${original_provider}}, C{${new_provider}}, C{${reason}}, C{${model}}."""
    return (
        template.replace("${original_provider}", original_provider)
        .replace("${new_provider}", new_provider)
        .replace("${reason}", _REASON_TEXT.get(reason, reason))
        .replace("${model}", model)
    )
