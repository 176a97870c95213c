"""
Which attempts need translating, with which translator, and which model
the provider is asked for: pure decisions for the choose and send steps.

A provider speaks one dialect: an C{anthropic} provider speaks Anthropic
Messages; an C{openai} provider speaks Chat Completions, and the Responses
API too unless its C{supports_responses} is false.  A request whose dialect
the provider speaks goes through untouched; any other is translated by the
translator registered for the pair
(L{lunaroute.dialects.translate.base.translator_for}), or refused with a
line naming the missing translator.  Nothing here knows one translator from
another, so a new direction needs only its registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lunaroute.dialects.translate  # noqa: F401  (registers the shipped translators)
from lunaroute.dialects.translate.base import Translator, translator_for
from lunaroute.errors import RequestError

__all__ = [
    "NoTranslator",
    "client_dialects",
    "default_provider",
    "missing_translator",
    "provider_dialect",
    "resolve_model",
    "translation_for",
]

# The request dialects each listener (dialect family) receives.
_CLIENT_DIALECTS = {
    "anthropic": ("anthropic",),
    "openai": ("openai_chat", "openai_responses"),
}


class NoTranslator(RequestError):
    """
    The request would need translating for its provider, and no translator
    for the pair is registered (400, nothing sent).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400, error_type="invalid_request_error")


def client_dialects(listener: str) -> tuple[str, ...]:
    """The request dialects a listener (C{anthropic} or C{openai}) receives."""
    return _CLIENT_DIALECTS.get(listener, ())


def _supports_responses(settings: Any) -> bool:
    return bool(getattr(settings, "supports_responses", True))


def provider_dialect(source: str | None, provider_type: str, settings: Any = None) -> str | None:
    """
    The dialect to send a C{source} request in to a provider of
    C{provider_type} (whose C{settings} may say C{supports_responses:
    false}): C{None} when the provider speaks C{source} itself (or the body
    is not a model call the gateway reads), so nothing is translated.
    """
    if source is None:
        return None
    if provider_type == "anthropic":
        return None if source == "anthropic" else "anthropic"
    if source == "anthropic":
        return "openai_chat"
    if source == "openai_responses" and not _supports_responses(settings):
        return "openai_chat"
    return None


def missing_translator(source: str, target: str, provider_name: str) -> str:
    """The sentence for a request no registered translator can carry."""
    if source == "openai_responses" and target == "openai_chat":
        why = f"provider {provider_name!r} does not take Responses API requests (supports_responses: false)"
    else:
        why = f"provider {provider_name!r} speaks {target}"
    return f"{why} and this version has no translator from {source} to {target}"


def translation_for(source: str | None, provider: Any) -> Translator | None:
    """
    The translator an attempt on C{provider} (an L{IProvider}, or anything
    with C{name}, C{provider_type} and maybe C{settings}) needs for a
    C{source} request: C{None} for passthrough.

    @raise NoTranslator: translation is needed and none is registered.
    """
    target = provider_dialect(source, provider.provider_type, getattr(provider, "settings", None))
    if target is None or source is None:
        return None
    translator = translator_for(source, target)
    if translator is None:
        raise NoTranslator(missing_translator(source, target, provider.name))
    return translator


def can_serve(source: str | None, provider_type: str, settings: Any = None) -> bool:
    """Whether a provider can take a C{source} request (itself, or through a registered translator)."""
    target = provider_dialect(source, provider_type, settings)
    return target is None or (source is not None and translator_for(source, target) is not None)


def default_provider(settings: Any, listener: str, source: str | None) -> Any:
    """
    Without a rule: the provider of the request's own dialect
    (L{lunaroute.config.Settings.provider_for}); when none is enabled, the
    provider of the other dialect if a translator can carry C{source} there
    (one OpenAI-compatible provider serving Claude Code).  C{None} when
    neither can.
    """
    own = settings.provider_for(listener)
    if own is not None or source is None:
        return own
    other = settings.provider_for("openai" if listener == "anthropic" else "anthropic")
    if other is not None and can_serve(source, other.provider_type, other):
        return other
    return None


def resolve_model(
    client_model: str | None, provider: Any, rule_map: Mapping[str, str] | None = None
) -> str | None:
    """
    The model to ask the provider for, or C{None} to keep the client's.

    Precedence: the rule's C{model_map} entry for the client's model, then
    the provider's C{model_map} entry, then the provider's C{model}.
    """
    if client_model is not None:
        if rule_map and client_model in rule_map:
            return rule_map[client_model]
        provider_map = getattr(provider, "model_map", None)
        if provider_map and client_model in provider_map:
            mapped: str = provider_map[client_model]
            return mapped
    model: str | None = getattr(provider, "model", None)
    return model
