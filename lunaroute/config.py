"""
LunaRoute's settings: one typed, validated, immutable object built from layers.

The gateway is meant to run with no configuration at all (both dialects,
client credentials forwarded), yet every knob can be set from a file, the
environment or the command line.  Doing all of that in one pure function gives
the rest of the code a single frozen L{Settings} value to depend on and turns
every mistake into one readable L{ConfigError} line at startup, instead of a
surprise in the middle of a streamed response.

Layers, lowest to highest precedence::

    built-in defaults < config file < environment variables < overrides (CLI)

Errors name where the bad value came from: the dotted key path for the file,
the variable name for the environment, the option (C{--port}) for overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

from lunaroute.errors import ConfigError
from lunaroute.modify import DEFAULT_ENV_ALLOWLIST, compile_modifier
from lunaroute.secrets import mask_connection_string, mask_secret

__all__ = [
    "BUILTIN_BASE_URLS",
    "CLI_OVERRIDES",
    "ENV_VARIABLES",
    "OTEL_VARIABLES",
    "TelemetrySettings",
    "BypassSettings",
    "CircuitBreakerSettings",
    "CustomPiiPattern",
    "HealthSettings",
    "HttpClientSettings",
    "HttpServerSettings",
    "LoggingSettings",
    "MetricsSettings",
    "ModelPricing",
    "PiiSettings",
    "ProviderSettings",
    "RecordingSettings",
    "RequestBodySettings",
    "RetentionSettings",
    "RoutingSettings",
    "RuleSettings",
    "Settings",
    "StatisticsSettings",
    "SwitchNotificationSettings",
    "TemplateSettings",
    "UISettings",
    "load_command_settings",
    "load_settings",
    "ui_unavailable_reason",
    "mask_secret",
    "shipped_examples_dir",
    "setting_lines",
    "settings_from_mapping",
]

DIALECTS = ("anthropic", "openai", "both")
PROVIDER_TYPES = ("anthropic", "openai")

# The two providers that always exist; their name doubles as their type.
BUILTIN_BASE_URLS: Mapping[str, str] = types.MappingProxyType(
    {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}
)

DEFAULT_SESSIONS_DIR = "~/.lunaroute/sessions"


# --------------------------------------------------------------------------
# The settings objects.  Field defaults here are THE defaults: the loader and
# the docs/example config are checked against them.


@dataclass(frozen=True)
class HttpClientSettings:
    """The connection pool and retry policy used for one upstream provider."""

    timeout_secs: float = 600.0
    connect_timeout_secs: float = 10.0
    pool_max_idle_per_host: int = 32
    pool_idle_timeout_secs: float = 90.0
    tcp_keepalive_secs: float = 60.0
    max_retries: int = 3
    enable_pool_metrics: bool = True


@dataclass(frozen=True)
class RequestBodySettings:
    """
    Changes to a provider's request bodies, in the original guide's shape:
    C{defaults} (set when absent), C{overrides} (forced), C{prepend_messages}.
    Applied by L{lunaroute.modify}; strings keep their C{${...}} templates,
    filled per request (checked at load: L{settings_from_mapping}).
    """

    defaults: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    overrides: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    prepend_messages: tuple[Mapping[str, Any], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.defaults or self.overrides or self.prepend_messages)


@dataclass(frozen=True, repr=False)
class ProviderSettings:
    """
    One upstream: a built-in (C{anthropic}, C{openai}) or a named
    third-party backend speaking one of those two dialects.

    C{api_key} is C{None} when the client's own credentials are forwarded.
    """

    name: str
    provider_type: str
    enabled: bool
    api_key: str | None
    base_url: str
    model: str | None
    http_client: HttpClientSettings
    # The guide's request modification (headers added to, and body changes
    # made to, every request to this provider; lunaroute.modify).  Header
    # values keep their ${...} templates, filled per request.
    request_headers: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    request_body: RequestBodySettings = field(default_factory=RequestBodySettings)
    # The original's per-provider override of the switch notice, used when
    # this provider serves a request another one failed (a template:
    # ${original_provider}, ${new_provider}, ${reason}, ${model}).
    switch_notification_message: str | None = None
    # Client model -> the model to ask this provider for (a rule's own
    # model_map wins; then this; then ``model``).  See docs/routing.md.
    model_map: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    # An OpenAI-compatible server without the Responses API (most of them):
    # Responses requests sent here are translated to Chat Completions.
    supports_responses: bool = True

    @property
    def has_api_key(self) -> bool:
        """Whether a server-side key replaces the client's credentials."""
        return self.api_key is not None

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: never print the key.
        return (
            f"ProviderSettings(name={self.name!r}, provider_type={self.provider_type!r}, "
            f"enabled={self.enabled!r}, api_key={mask_secret(self.api_key)!r}, "
            f"base_url={self.base_url!r}, model={self.model!r}, "
            f"http_client={self.http_client!r}, "
            # Header values may hold credentials: names only.
            f"request_headers={sorted(self.request_headers)!r}, "
            f"request_body={self.request_body!r}, "
            f"switch_notification_message={self.switch_notification_message!r}, "
            f"model_map={dict(self.model_map)!r}, supports_responses={self.supports_responses!r})"
        )


@dataclass(frozen=True)
class LoggingSettings:
    """Log verbosity (normalised to debug|info|warn|error) and request logging."""

    level: str = "info"
    log_requests: bool = False


@dataclass(frozen=True)
class HttpServerSettings:
    """
    Limits and access rules of the client-facing HTTP server: body size,
    the deadlines and per-client connection cap that keep slow or hostile
    clients from holding every socket, and who may call it.

    C{cors_allowed_origins}: browser origins allowed to call the gateway
    (requests carrying any other C{Origin} are refused with 403, so a web page
    cannot spend the operator's key).  C{auth_token}: when set, every
    non-provider route (metrics, statistics, session API) needs it as
    C{Authorization: Bearer <token>} or C{x-lunaroute-token}; the provider
    routes need it too when C{require_auth_for_proxy} is on.
    """

    max_request_body_bytes: int = 104_857_600
    header_timeout_secs: float = 10.0
    idle_timeout_secs: float = 60.0
    max_connections_per_client: int = 256
    cors_allowed_origins: tuple[str, ...] = ()
    auth_token: str | None = field(default=None, repr=False)
    require_auth_for_proxy: bool = False
    websocket_enabled: bool = True


@dataclass(frozen=True)
class BypassSettings:
    """
    Forwarding of paths the gateway does not serve itself; C{provider} names
    the provider that receives them (C{None}: the OpenAI provider if enabled,
    else the Anthropic one).
    """

    enabled: bool = True
    provider: str | None = None


PII_REDACTION_MODES = ("mask", "remove", "tokenize", "partial")


@dataclass(frozen=True)
class CustomPiiPattern:
    """One user-defined PII detector of C{session_recording.pii.custom_patterns}."""

    name: str
    pattern: str
    confidence: float = 1.0
    # None: the section's redaction_mode.
    redaction_mode: str | None = None
    placeholder: str | None = None


@dataclass(frozen=True)
class PiiSettings:
    """
    PII redaction of what is recorded and logged, in the original guide's
    shape (see docs/privacy.md and L{lunaroute.pii}).  C{detect_secrets}
    (API keys, tokens and private keys by shape), C{partial_show_chars}
    and C{apply_to_upstream} are ours.
    """

    enabled: bool = False
    detect_email: bool = True
    detect_phone: bool = True
    detect_ssn: bool = True
    detect_credit_card: bool = True
    detect_ip_address: bool = True
    detect_secrets: bool = True
    redaction_mode: str = "mask"
    hmac_secret: str | None = field(default=None, repr=False)
    min_confidence: float = 0.0
    partial_show_chars: int = 4
    # Also redact the request body sent to the provider (the model then
    # sees placeholders).  Off: what is forwarded is never changed.
    apply_to_upstream: bool = False
    custom_patterns: tuple[CustomPiiPattern, ...] = ()


@dataclass(frozen=True)
class RetentionSettings:
    """
    C{session_recording.cleanup.retention} (or the original's code form
    C{session_recording.jsonl.retention}): when session files are
    compressed and deleted, applied by L{lunaroute.sessions.retention}.
    Unset keys keep these defaults.
    """

    max_age_days: int = 30
    max_total_size_gb: float = 10.0
    compress_after_days: int = 7
    cleanup_interval_minutes: int = 60


@dataclass(frozen=True)
class PostgresSettings:
    """
    The PostgreSQL session store (C{session_recording.postgres}): one store
    many gateways write and the API, UI and reports read (docs/postgres.md).
    C{connection_string} is a libpq URL or C{key=value} string, C{${VAR}}
    expanded; it is only ever shown masked (L{mask_connection_string}).
    """

    enabled: bool = False
    connection_string: str | None = None
    max_connections: int = 5
    min_connections: int = 1
    acquire_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 600.0
    max_lifetime_seconds: float = 1800.0

    def __repr__(self) -> str:
        return (
            f"PostgresSettings(enabled={self.enabled!r}, "
            f"connection_string={mask_connection_string(self.connection_string)!r}, "
            f"max_connections={self.max_connections!r}, min_connections={self.min_connections!r}, "
            f"acquire_timeout_seconds={self.acquire_timeout_seconds!r}, "
            f"idle_timeout_seconds={self.idle_timeout_seconds!r}, "
            f"max_lifetime_seconds={self.max_lifetime_seconds!r})"
        )


@dataclass(frozen=True)
class RecordingSettings:
    """Session recording: where and how conversations are written."""

    enabled: bool
    sessions_dir: str
    jsonl_enabled: bool
    jsonl_dir: str
    sqlite_enabled: bool
    db_path: str
    batch_size: int = 1000
    batch_interval_ms: int = 100
    max_queue_events: int = 10_000
    pii: PiiSettings = field(default_factory=PiiSettings)
    # None: no retention configured (files are kept).
    retention: RetentionSettings | None = None
    postgres: PostgresSettings = field(default_factory=PostgresSettings)


@dataclass(frozen=True)
class ModelPricing:
    """
    USD per million tokens for models matching a pattern.  Cache prices are
    C{None} when not configured, leaving the rule to the statistics code.
    """

    input: float
    output: float
    cache_write: float | None = None
    cache_read: float | None = None
    cache_write_1h: float | None = None
    # The optional long-context tier, checked by the pricing table when it
    # is built: above (prompt tokens) and the rates that apply past it.
    long_context: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StatisticsSettings:
    """Per-session statistics and cost estimation."""

    session_stats_max_sessions: int = 100
    print_summary: bool = False
    pricing_file: str | None = None
    pricing: Mapping[str, ModelPricing] = field(default_factory=lambda: types.MappingProxyType({}))


@dataclass(frozen=True)
class MetricsSettings:
    """Whether Prometheus-style metrics are collected and served."""

    enabled: bool = True


DEFAULT_OTLP_TRACES_ENDPOINT = "http://localhost:4318/v1/traces"


@dataclass(frozen=True)
class TelemetrySettings:
    """
    OpenTelemetry traces (L{lunaroute.telemetry}): off unless
    C{telemetry.enabled} or an C{OTEL_EXPORTER_OTLP_*ENDPOINT} variable
    turns them on.  C{endpoint} is the full OTLP/HTTP traces URL
    (C{.../v1/traces}); C{headers} go with every export (a backend's API
    key: never logged).  Prompt and answer text reach spans only with
    C{capture_content}.
    """

    enabled: bool = False
    endpoint: str = DEFAULT_OTLP_TRACES_ENDPOINT
    service_name: str = "lunaroute"
    capture_content: bool = False
    headers: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}), repr=False)


@dataclass(frozen=True)
class UISettings:
    """The web UI (L{lunaroute.ui}): its own listener, and what the session API allows."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8082
    refresh_interval: int = 5
    export_enabled: bool = True
    delete_enabled: bool = False
    log_requests: bool = False
    # The UI's own token; when unset the UI takes http_server.auth_token.
    auth_token: str | None = field(default=None, repr=False)


ROUTING_STRATEGIES = ("round_robin", "weighted_round_robin", "limits_alternative")
LISTENERS = ("anthropic", "openai")


@dataclass(frozen=True)
class RuleSettings:
    """
    One C{routing.rules} entry: when it matches (every condition given must
    hold; none given matches every request) and where the request goes.

    @ivar index: the rule's position in the file (ties of C{priority} keep
        file order).
    @ivar model_pattern: a regular expression searched in the requested
        model (checked to compile at start).
    @ivar listener: C{anthropic} or C{openai}: the dialect family the
        request arrived in.
    @ivar header: lower-case header name -> the exact value it must have.
    @ivar weights: provider name -> positive weight, in file order.
    @ivar exponential_backoff_base_secs: C{limits_alternative}: how long a
        primary stays rate-limited after a 429 without C{retry-after}
        (doubling on each consecutive 429, up to four times this).
    """

    name: str
    index: int = 0
    priority: int = 0
    model_pattern: str | None = None
    listener: str | None = None
    header: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    always: bool = False
    primary: str | None = None
    fallbacks: tuple[str, ...] = ()
    strategy: str | None = None
    providers: tuple[str, ...] = ()
    weights: Mapping[str, float] = field(default_factory=lambda: types.MappingProxyType({}))
    primary_providers: tuple[str, ...] = ()
    alternative_providers: tuple[str, ...] = ()
    exponential_backoff_base_secs: float = 60.0
    # Client model -> provider model for this rule's attempts (wins over the
    # provider's own model_map and model).
    model_map: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def targets(self) -> tuple[str, ...]:
        """Every provider the rule may send to, each once, in the order written."""
        names = (
            *((self.primary,) if self.primary else ()),
            *self.providers,
            *self.weights,
            *self.primary_providers,
            *self.alternative_providers,
            *self.fallbacks,
        )
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class CircuitBreakerSettings:
    """
    C{routing.circuit_breaker}: one breaker per provider.  Closed until
    C{failure_threshold} consecutive failures; then open (the provider is
    skipped) for C{open_timeout_secs}; then half-open, letting
    C{half_open_max_requests} probes through at a time; closed again after
    C{success_threshold} successes, open again on a failure.
    """

    enabled: bool = True
    failure_threshold: int = 5
    success_threshold: int = 2
    open_timeout_secs: float = 60.0
    half_open_max_requests: int = 1


@dataclass(frozen=True)
class HealthSettings:
    """
    C{routing.health_monitor}: a provider's success rate over the last
    C{window_secs}; with at least C{min_requests} in the window it is healthy
    at C{healthy_threshold} or above, unhealthy below C{unhealthy_threshold},
    degraded in between (unknown with fewer requests).
    """

    window_secs: float = 60.0
    min_requests: int = 10
    healthy_threshold: float = 0.95
    unhealthy_threshold: float = 0.75


DEFAULT_SWITCH_MESSAGE = (
    "IMPORTANT: Please inform the user that due to temporary service constraints, their request "
    "is being handled by an alternative AI service provider. Then proceed to fulfill their "
    "original request completely and professionally."
)


@dataclass(frozen=True)
class SwitchNotificationSettings:
    """
    C{routing.provider_switch_notification}, the original's shape: a note
    for the user, injected once when a fallback serves a request.  The
    message is a template (C{${original_provider}}, C{${new_provider}},
    C{${reason}}, C{${model}}), never expanded from the environment.
    """

    enabled: bool = True
    default_message: str = DEFAULT_SWITCH_MESSAGE


@dataclass(frozen=True)
class RoutingSettings:
    """
    The C{routing} section.  False when the file has none (or an empty
    one): every request then goes to the provider of its dialect.
    """

    rules: tuple[RuleSettings, ...] = ()
    circuit_breaker: CircuitBreakerSettings = field(default_factory=CircuitBreakerSettings)
    health_monitor: HealthSettings = field(default_factory=HealthSettings)
    # None: no notice (the section was not given).
    provider_switch_notification: SwitchNotificationSettings | None = None
    configured: bool = False

    def __bool__(self) -> bool:
        return self.configured


@dataclass(frozen=True)
class TemplateSettings:
    """
    C{templates}: what request-modification templates may read.
    C{env_allowlist} names the environment variables C{${env.NAME}} may
    use (L{lunaroute.modify.DEFAULT_ENV_ALLOWLIST} when not configured);
    C{env} holds their values from the environment the configuration was
    loaded with (never printed: an operator may allow a credential).
    """

    env_allowlist: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}), repr=False)


@dataclass(frozen=True)
class Settings:
    """
    Everything the gateway is configured with.

    @ivar source: the configuration file used, or C{None} (zero-config).
    """

    host: str
    port: int
    api_dialect: str
    shutdown_timeout_secs: float
    providers: Mapping[str, ProviderSettings]
    logging: LoggingSettings
    http_server: HttpServerSettings
    bypass: BypassSettings
    session_recording: RecordingSettings
    statistics: StatisticsSettings
    metrics: MetricsSettings
    ui: UISettings
    routing: RoutingSettings
    source: str | None = None
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)

    @property
    def serves_anthropic(self) -> bool:
        """Whether the Anthropic Messages API endpoints are exposed."""
        return self.api_dialect in ("anthropic", "both")

    @property
    def serves_openai(self) -> bool:
        """Whether the OpenAI Chat Completions API endpoints are exposed."""
        return self.api_dialect in ("openai", "both")

    def provider_for(self, provider_type: str) -> ProviderSettings | None:
        """
        The provider that serves requests of C{provider_type}: the enabled
        provider named like the type, else the first enabled one of that type
        (built-ins first, then named providers in file order), else C{None}.
        """
        named = self.providers.get(provider_type)
        if named is not None and named.enabled and named.provider_type == provider_type:
            return named
        for provider in self.providers.values():
            if provider.enabled and provider.provider_type == provider_type:
                return provider
        return None


# --------------------------------------------------------------------------
# Where each setting can come from.

_Path = tuple[str, ...]

# Environment variable -> key path.  Public (as dotted paths) so the CLI help
# and the documentation tests can enumerate them.
_ENV_TABLE: dict[str, _Path] = {
    "LUNAROUTE_HOST": ("host",),
    "LUNAROUTE_PORT": ("port",),
    "LUNAROUTE_DIALECT": ("api_dialect",),
    "LUNAROUTE_LOG_LEVEL": ("logging", "level"),
    "LUNAROUTE_LOG_REQUESTS": ("logging", "log_requests"),
    "ANTHROPIC_API_KEY": ("providers", "anthropic", "api_key"),
    "OPENAI_API_KEY": ("providers", "openai", "api_key"),
    "LUNAROUTE_BYPASS_ENABLED": ("bypass", "enabled"),
    "LUNAROUTE_BYPASS_PROVIDER": ("bypass", "provider"),
    "LUNAROUTE_ENABLE_SESSION_RECORDING": ("session_recording", "enabled"),
    "LUNAROUTE_SESSIONS_DIR": ("session_recording", "sessions_dir"),
    "LUNAROUTE_ENABLE_JSONL_WRITER": ("session_recording", "jsonl", "enabled"),
    "LUNAROUTE_ENABLE_SQLITE_WRITER": ("session_recording", "sqlite", "enabled"),
    "LUNAROUTE_SESSIONS_DB_PATH": ("session_recording", "sqlite", "path"),
    "LUNAROUTE_AUTH_TOKEN": ("http_server", "auth_token"),
    "LUNAROUTE_CORS_ALLOWED_ORIGINS": ("http_server", "cors_allowed_origins"),
    "LUNAROUTE_UI_ENABLED": ("ui", "enabled"),
    "LUNAROUTE_UI_HOST": ("ui", "host"),
    "LUNAROUTE_UI_PORT": ("ui", "port"),
    "LUNAROUTE_UI_REFRESH_INTERVAL": ("ui", "refresh_interval"),
}
_POOL_ENV_SUFFIXES = {
    "TIMEOUT_SECS": "timeout_secs",
    "CONNECT_TIMEOUT_SECS": "connect_timeout_secs",
    "POOL_MAX_IDLE": "pool_max_idle_per_host",
    "POOL_IDLE_TIMEOUT_SECS": "pool_idle_timeout_secs",
    "TCP_KEEPALIVE_SECS": "tcp_keepalive_secs",
    "MAX_RETRIES": "max_retries",
    "ENABLE_POOL_METRICS": "enable_pool_metrics",
}
for _provider in BUILTIN_BASE_URLS:
    for _suffix, _key in _POOL_ENV_SUFFIXES.items():
        _ENV_TABLE[f"LUNAROUTE_{_provider.upper()}_{_suffix}"] = (
            "providers",
            _provider,
            "http_client",
            _key,
        )

ENV_VARIABLES: Mapping[str, str] = types.MappingProxyType(
    {name: ".".join(path) for name, path in _ENV_TABLE.items()}
)

# Override key (as passed by the command line) -> (key path, option name).
_OVERRIDE_TABLE: dict[str, tuple[_Path, str]] = {
    "host": (("host",), "--host"),
    "port": (("port",), "--port"),
    "dialect": (("api_dialect",), "--dialect"),
    "log_level": (("logging", "level"), "--log-level"),
    "log_requests": (("logging", "log_requests"), "--log-requests"),
    "print_summary": (("statistics", "print_summary"), "--print-summary"),
}
CLI_OVERRIDES: Mapping[str, tuple[str, str]] = types.MappingProxyType(
    {name: (".".join(path), option) for name, (path, option) in _OVERRIDE_TABLE.items()}
)

# The file's shape.  Providers, pricing and routing are handled separately
# because their keys are user-chosen names.
_TOP_SCALARS = ("host", "port", "api_dialect", "shutdown_timeout_secs")
_SECTIONS: dict[str, tuple[str, ...]] = {
    "logging": ("level", "log_requests"),
    "http_server": (
        "max_request_body_bytes",
        "header_timeout_secs",
        "idle_timeout_secs",
        "max_connections_per_client",
        "cors_allowed_origins",
        "auth_token",
        "require_auth_for_proxy",
        "websocket_enabled",
    ),
    "bypass": ("enabled", "provider"),
    "session_recording": (
        "enabled",
        "sessions_dir",
        "directory",
        "jsonl",
        "sqlite",
        "postgres",
        "batch_size",
        "batch_interval_ms",
        "max_queue_events",
        "pii",
        # Checked now, built by the privacy and storage work.
        "cleanup",
    ),
    "statistics": ("session_stats_max_sessions", "print_summary", "pricing_file", "pricing"),
    "metrics": ("enabled",),
    "telemetry": ("enabled", "endpoint", "service_name", "capture_content", "headers"),
    "ui": (
        "enabled",
        "host",
        "port",
        "refresh_interval",
        "export_enabled",
        "delete_enabled",
        "log_requests",
        "auth_token",
    ),
    # Request-modification templates (lunaroute.modify).
    "templates": ("env_allowlist",),
}
# `session_stats_max_sessions` at the top level is the original's spelling
# of statistics.session_stats_max_sessions.
_TOP_KEYS = (*_TOP_SCALARS, "providers", *_SECTIONS, "routing", "session_stats_max_sessions")
_PROVIDER_KEYS = (
    "provider_type",
    # The original's spelling of provider_type (its routing documents).
    "type",
    "enabled",
    "api_key",
    "base_url",
    "model",
    "http_client",
    "request_headers",
    "request_body",
    "switch_notification_message",
    "model_map",
    "supports_responses",
)
# Provider keys whose strings are templates filled per request
# (${session_id}, ${model}, ${new_provider}...): ${VAR} expansion leaves
# them alone.
_TEMPLATE_KEYS = ("request_headers", "request_body", "switch_notification_message")
_PII_FLAGS = (
    "enabled",
    "detect_email",
    "detect_phone",
    "detect_ssn",
    "detect_credit_card",
    "detect_ip_address",
    "detect_secrets",
    "apply_to_upstream",
)
_PII_KEYS = (
    *_PII_FLAGS,
    "redaction_mode",
    "hmac_secret",
    "min_confidence",
    "partial_show_chars",
    "custom_patterns",
)
_PII_PATTERN_KEYS = tuple(f.name for f in dataclasses.fields(CustomPiiPattern))
# max_size_mb: the original example's spelling of the size limit (in MB).
_RETENTION_KEYS = (*(f.name for f in dataclasses.fields(RetentionSettings)), "max_size_mb")
_REQUEST_BODY_KEYS = tuple(f.name for f in dataclasses.fields(RequestBodySettings))
# routing: the rule list is checked now; the other sections the routing work
# will read (breaker, health, switch notice) are kept as written.
_ROUTING_KEYS = ("rules", "circuit_breaker", "health_monitor", "provider_switch_notification")
_RULE_KEYS = (
    "name",
    "priority",
    "model_pattern",
    "listener",
    "header",
    "always",
    "primary",
    "fallbacks",
    "strategy",
    "providers",
    "weights",
    "primary_providers",
    "alternative_providers",
    "exponential_backoff_base_secs",
    "model_map",
)
# What each strategy needs besides itself.
_STRATEGY_NEEDS = {
    "round_robin": ("providers",),
    "weighted_round_robin": ("weights",),
    "limits_alternative": ("primary_providers", "alternative_providers"),
}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HTTP_CLIENT_KEYS = tuple(f.name for f in dataclasses.fields(HttpClientSettings))
_POSTGRES_KEYS = tuple(f.name for f in dataclasses.fields(PostgresSettings))
_WRITER_KEYS = {"jsonl": ("enabled", "directory", "retention"), "sqlite": ("enabled", "path"), "postgres": _POSTGRES_KEYS}
_PRICING_RATES = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
_PRICING_KEYS = (*_PRICING_RATES, "long_context")
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
}


# --------------------------------------------------------------------------
# Value checks.  Each raises _Invalid with the problem only; the caller
# prefixes the key path / variable / option it came from.


class _Invalid(Exception):
    """A value failed a check."""


def _show(value: Any) -> str:
    """A short, single-line rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    """The YAML-ish name of a value's type, for 'expected X, got a Y' messages."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return _show(value)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise _Invalid(f"expected a boolean (true/false/1/0/yes/no/on/off), got {_kind(value)}")


def _range_problem(number: float, low: float | None, high: float | None, exclusive: bool) -> str | None:
    if exclusive and low is not None and number <= low:
        return f"must be greater than {low:g}, got {number:g}"
    if low is not None and high is not None and not low <= number <= high:
        return f"must be between {low:g} and {high:g}, got {number:g}"
    if low is not None and number < low:
        return f"must be at least {low:g}, got {number:g}"
    return None


def _integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        # bool is an int subclass; `port: true` is a mistake, not 1.
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = int(value.strip(), 10)
            except ValueError:
                raise _Invalid(f"expected an integer, got {_show(value)}") from None
        else:
            raise _Invalid(f"expected an integer, got {_kind(value)}")
        problem = _range_problem(number, low, high, exclusive=False)
        if problem:
            raise _Invalid(problem)
        return number

    return convert


def _number(low: float | None = None, *, exclusive: bool = False) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _Invalid(f"expected a number, got {_show(value)}") from None
        else:
            raise _Invalid(f"expected a number, got {_kind(value)}")
        if not math.isfinite(number):
            raise _Invalid(f"expected a finite number, got {_show(value)}")
        problem = _range_problem(number, low, None, exclusive)
        if problem:
            raise _Invalid(problem)
        return number

    return convert


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise _Invalid("must not be empty")
    return value.strip()


def _optional_text(value: Any) -> str | None:
    # An empty string (typically an unset ${VAR}) means "not configured".
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    return value.strip() or None


def _origins(value: Any) -> tuple[str, ...]:
    """
    Browser origins (C{scheme://host[:port]}, or C{null}), as a list or a
    comma-separated string (from an environment variable).
    """
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected a list of origins, got {_kind(value)}")
    origins = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _Invalid(f"expected origins like 'http://localhost:3000', got {_show(item)}")
        origin = item.strip().rstrip("/")
        if origin != "null" and origin != "*":
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise _Invalid(
                    f"expected origins like 'http://localhost:3000' (scheme://host[:port]), got {_show(item)}"
                )
        origins.append(origin.lower() if origin != "null" else origin)
    return tuple(origins)


def _choice(options: Mapping[str, str]) -> Callable[[Any], str]:
    listed = ", ".join(dict.fromkeys(options))

    def convert(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return options[value.strip().lower()]
        raise _Invalid(f"must be one of {listed}; got {_kind(value)}")

    return convert


def _url(value: Any) -> str | None:
    text = _optional_text(value)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _Invalid(f"must be an http(s) URL, got {_show(text)}")
    # Paths are appended to it, so a trailing slash would double up.
    return text.rstrip("/")


def _expand_home(path: str, env: Mapping[str, str]) -> str:
    # Prefer HOME from the supplied environment so loading stays a pure
    # function of its inputs; fall back to the process for ~user forms.
    if (path == "~" or path.startswith("~/")) and env.get("HOME"):
        return env["HOME"] + path[1:]
    return os.path.expanduser(path)


def _path(env: Mapping[str, str]) -> Callable[[Any], str | None]:
    def convert(value: Any) -> str | None:
        text = _optional_text(value)
        if text is None:
            return None
        return os.path.abspath(_expand_home(text, env))

    return convert


def _suggest(name: Any, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------
# ${VAR} expansion

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


_ENV_TEMPLATE = re.compile(r"\$\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)")


def _expand_variables(value: Any, env: Mapping[str, str], path: tuple[Any, ...] = ()) -> Any:
    """
    Replace C{${VAR}} and C{${VAR:-default}} in every string of a parsed file.
    As in the shell, the default applies when VAR is unset or empty, and an
    unset VAR without a default becomes the empty string.

    C{${env.NAME}} is the request-modification template form (filled per
    request, allow-listed); anywhere else it would be sent as it is (an
    C{api_key} of C{"${env.KEY}"}), so it is an error naming the key.
    """
    if isinstance(value, str):
        found = _ENV_TEMPLATE.search(value)
        if found:
            raise ConfigError(
                f"${{env.{found[1]}}} is a request-time template, used only in providers.<name>.request_headers "
                f"and request_body; here write ${{{found[1]}}} (read from the environment when the file is loaded)",
                key=_dotted(path) or None,
            )
        return _VARIABLE.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), value)
    if isinstance(value, Mapping):
        return {key: _expand_variables(item, env, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_variables(item, env, (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",))
                for index, item in enumerate(value)]
    return value


def _expand_file(data: Mapping[Any, Any], env: Mapping[str, str]) -> dict[Any, Any]:
    """
    L{_expand_variables} over a whole file, except the request-modification
    blocks of providers: their C{${session_id}}-style templates are filled
    per request by that feature, not from the environment at start-up.
    """
    expanded: dict[Any, Any] = {}
    for key, value in data.items():
        if key == "providers" and isinstance(value, Mapping):
            expanded[key] = {
                name: (
                    {
                        item_key: item
                        if item_key in _TEMPLATE_KEYS
                        else _expand_variables(item, env, (key, name, item_key))
                        for item_key, item in body.items()
                    }
                    if isinstance(body, Mapping)
                    else _expand_variables(body, env, (key, name))
                )
                for name, body in value.items()
            }
        elif key == "routing" and isinstance(value, Mapping):
            expanded[key] = {
                item_key: item
                if item_key == "provider_switch_notification"
                else _expand_variables(item, env, (key, item_key))
                for item_key, item in value.items()
            }
        else:
            expanded[key] = _expand_variables(value, env, (key,))
    return expanded


def _freeze(value: Any) -> Any:
    """Make a parsed structure immutable, so Settings really is frozen."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


# --------------------------------------------------------------------------
# The layered store: flat key paths -> raw values, plus where each came from.


class _Layers:
    def __init__(self) -> None:
        self.values: dict[_Path, Any] = {}
        self.origins: dict[_Path, str] = {}
        # Built-ins always exist and come first; others in file order.
        self.provider_names: list[str] = list(BUILTIN_BASE_URLS)

    def set(self, path: _Path, value: Any, origin: str | None = None) -> None:
        self.values[path] = value
        if origin is None:
            self.origins.pop(path, None)
        else:
            self.origins[path] = origin

    def label(self, path: _Path) -> str:
        return self.origins.get(path) or ".".join(path)

    def fail(self, path: _Path, problem: str) -> NoReturn:
        raise ConfigError(problem, key=self.label(path))

    def get(self, path: _Path, default: Any, convert: Callable[[Any], Any]) -> Any:
        # Defaults go through the same conversion so they get normalised
        # (float(600), ~ expansion) exactly like configured values.
        try:
            return convert(self.values.get(path, default))
        except _Invalid as exc:
            self.fail(path, str(exc))


def _dotted(path: Iterable[Any]) -> str:
    return ".".join(str(part) for part in path)


def _require_mapping(value: Any, path: _Path) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping, got {_kind(value)}", key=_dotted(path))
    return value


def _check_keys(mapping: Mapping[Any, Any], path: _Path, allowed: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in allowed:
            hint = _suggest(key, allowed) or f" (expected one of: {', '.join(allowed)})"
            raise ConfigError(f"unknown key{hint}", key=_dotted((*path, key)))


def _flatten_file(data: Mapping[Any, Any], layers: _Layers) -> None:
    """Check the file's shape and record each value under its key path."""
    _check_keys(data, (), _TOP_KEYS)
    for key, value in data.items():
        # `null` (or an empty YAML section) means "use the default".
        if value is None:
            continue
        if key == "session_stats_max_sessions":
            continue  # after the statistics section, which it must agree with
        if key == "providers":
            _flatten_providers(value, layers)
        elif key == "routing":
            layers.set((key,), _require_mapping(value, (key,)))
        elif key in _SECTIONS:
            _flatten_section(key, value, layers)
        else:
            layers.set((key,), value)
    _flatten_top_level_stats_limit(data, layers)


def _flatten_top_level_stats_limit(data: Mapping[Any, Any], layers: _Layers) -> None:
    """
    The original's top-level C{session_stats_max_sessions} is the same
    setting as C{statistics.session_stats_max_sessions}; both given with
    different values is a mistake worth one line.
    """
    top = data.get("session_stats_max_sessions")
    if top is None:
        return
    path = ("statistics", "session_stats_max_sessions")
    if path in layers.values:
        nested = layers.values[path]
        try:
            same = _integer(0)(top) == _integer(0)(nested)
        except _Invalid:
            same = False
        if not same:
            raise ConfigError(
                f"conflicts with statistics.session_stats_max_sessions ({_show(top)} vs {_show(nested)}): "
                "they are the same setting; set only one of them",
                key="session_stats_max_sessions",
            )
        return
    layers.set(path, top, origin="session_stats_max_sessions")


def _flatten_section(name: str, value: Any, layers: _Layers) -> None:
    section = _require_mapping(value, (name,))
    _check_keys(section, (name,), _SECTIONS[name])
    for key, item in section.items():
        if item is None:
            continue
        path = (name, key)
        if path == ("session_recording", "directory"):
            # `directory` is the original project's name for sessions_dir.
            if section.get("sessions_dir") is not None:
                raise ConfigError(
                    "alias of sessions_dir; set only one of them",
                    key="session_recording.directory",
                )
            layers.set((name, "sessions_dir"), item, origin="session_recording.directory")
        elif name == "session_recording" and key in ("pii", "cleanup"):
            # Nested blocks, checked when built.
            if key == "cleanup" and layers.origins.get(path) == "session_recording.jsonl":
                # jsonl.retention came first and holds the policy; an empty
                # cleanup block must not replace it (both set is an error).
                _check_keys(_require_mapping(item, path), path, ("retention",))
                continue
            layers.set(path, item)
        elif name == "session_recording" and key in _WRITER_KEYS:
            if isinstance(item, Mapping):
                _check_keys(item, path, _WRITER_KEYS[key])
                for sub, sub_value in item.items():
                    if sub_value is None:
                        continue
                    if sub == "retention":
                        # The original's code form of cleanup.retention.
                        if isinstance(section.get("cleanup"), Mapping) and section["cleanup"].get("retention") is not None:
                            raise ConfigError(
                                "alias of session_recording.cleanup.retention; set only one of them",
                                key="session_recording.jsonl.retention",
                            )
                        layers.set((name, "cleanup"), {"retention": sub_value}, origin="session_recording.jsonl")
                    else:
                        layers.set((*path, sub), sub_value)
            else:
                # Short form `jsonl: true` is the same as `jsonl: {enabled: true}`.
                layers.set((*path, "enabled"), item, origin=_dotted(path))
        else:
            layers.set(path, item)


def _flatten_providers(value: Any, layers: _Layers) -> None:
    providers = _require_mapping(value, ("providers",))
    for name, body in providers.items():
        if not isinstance(name, str) or not _PROVIDER_NAME.match(name):
            raise ConfigError(
                "provider names must start with a letter or digit and contain only "
                "letters, digits, '_', '.' and '-'",
                key=_dotted(("providers", name)),
            )
        if name not in layers.provider_names:
            layers.provider_names.append(name)
        if body is None:
            continue
        path = ("providers", name)
        _check_keys(_require_mapping(body, path), path, _PROVIDER_KEYS)
        if body.get("type") is not None and body.get("provider_type") is not None:
            raise ConfigError("alias of provider_type; set only one of them", key=_dotted((*path, "type")))
        for key, item in body.items():
            if item is None:
                continue
            if key == "type":
                layers.set((*path, "provider_type"), item, origin=_dotted((*path, "type")))
            elif key in _TEMPLATE_KEYS:
                layers.set((*path, key), item)  # a nested block, checked when built
            elif key == "http_client":
                client_path = (*path, key)
                client = _require_mapping(item, client_path)
                _check_keys(client, client_path, _HTTP_CLIENT_KEYS)
                for sub, sub_value in client.items():
                    if sub_value is not None:
                        layers.set((*client_path, sub), sub_value)
            else:
                layers.set((*path, key), item)


def _apply_env(env: Mapping[str, str], layers: _Layers) -> None:
    for variable, path in _ENV_TABLE.items():
        raw = env.get(variable)
        # `export LUNAROUTE_PORT=` should not be an error: empty means unset.
        if raw is None or not raw.strip():
            continue
        layers.set(path, raw, origin=variable)


def _apply_overrides(overrides: Mapping[str, Any], layers: _Layers) -> None:
    for name, value in overrides.items():
        # argparse leaves options that were not given as None.
        if value is None:
            continue
        if name not in _OVERRIDE_TABLE:
            raise ConfigError(
                f"unknown override (expected one of: {', '.join(_OVERRIDE_TABLE)})",
                key=str(name),
            )
        path, option = _OVERRIDE_TABLE[name]
        layers.set(path, value, origin=option)


# --------------------------------------------------------------------------
# Building the typed objects


def _build_providers(layers: _Layers) -> dict[str, ProviderSettings]:
    defaults = HttpClientSettings()
    checks: dict[str, Callable[[Any], Any]] = {
        "timeout_secs": _number(0, exclusive=True),
        "connect_timeout_secs": _number(0, exclusive=True),
        "pool_max_idle_per_host": _integer(0),
        "pool_idle_timeout_secs": _number(0, exclusive=True),
        "tcp_keepalive_secs": _number(0),
        "max_retries": _integer(0),
        "enable_pool_metrics": _bool,
    }
    providers: dict[str, ProviderSettings] = {}
    for name in layers.provider_names:
        path = ("providers", name)
        builtin = name in BUILTIN_BASE_URLS
        provider_type = layers.get(
            (*path, "provider_type"),
            name if builtin else None,
            lambda v: None if v is None else _choice({t: t for t in PROVIDER_TYPES})(v),
        )
        if provider_type is None:
            hint = _suggest(name, BUILTIN_BASE_URLS) or " (anthropic or openai)"
            layers.fail(
                (*path, "provider_type"),
                f"required for a provider not named anthropic or openai{hint}",
            )
        base_url = layers.get((*path, "base_url"), BUILTIN_BASE_URLS.get(name), _url)
        if base_url is None:
            layers.fail((*path, "base_url"), "required for a provider not named anthropic or openai")
        client_path = (*path, "http_client")
        client = HttpClientSettings(
            **{
                key: layers.get((*client_path, key), getattr(defaults, key), check)
                for key, check in checks.items()
            }
        )
        providers[name] = ProviderSettings(
            name=name,
            provider_type=provider_type,
            enabled=layers.get((*path, "enabled"), True, _bool),
            api_key=layers.get((*path, "api_key"), None, _optional_text),
            base_url=base_url,
            model=layers.get((*path, "model"), None, _optional_text),
            http_client=client,
            request_headers=_build_request_headers(
                layers.values.get((*path, "request_headers"), {}), (*path, "request_headers")
            ),
            request_body=_build_request_body(layers.values.get((*path, "request_body"), {}), (*path, "request_body")),
            switch_notification_message=layers.get((*path, "switch_notification_message"), None, _optional_text),
            model_map=_build_model_map(layers.values.get((*path, "model_map")), (*path, "model_map")),
            supports_responses=layers.get((*path, "supports_responses"), True, _bool),
        )
    return providers


def _build_model_map(raw: Any, path: _Path) -> Mapping[str, str]:
    """A C{model_map}: client model name -> the provider's model name, both non-empty strings."""
    if raw is None:
        return types.MappingProxyType({})
    mapping = _require_mapping(raw, path)
    out: dict[str, str] = {}
    for name, target in mapping.items():
        if not isinstance(name, str) or not name:
            raise ConfigError("model names must be non-empty strings", key=_dotted((*path, str(name))))
        out[name] = _checked(target, (*path, name), _text)
    return types.MappingProxyType(out)


def _build_recording(layers: _Layers, env: Mapping[str, str]) -> RecordingSettings:
    section = "session_recording"
    path = _path(env)
    sessions_dir = layers.get((section, "sessions_dir"), DEFAULT_SESSIONS_DIR, path)
    if sessions_dir is None:
        layers.fail((section, "sessions_dir"), "must not be empty")
    jsonl_dir = layers.get((section, "jsonl", "directory"), None, path) or sessions_dir
    db_path = layers.get((section, "sqlite", "path"), None, path) or os.path.join(sessions_dir, "sessions.db")
    return RecordingSettings(
        enabled=layers.get((section, "enabled"), False, _bool),
        sessions_dir=sessions_dir,
        jsonl_enabled=layers.get((section, "jsonl", "enabled"), True, _bool),
        jsonl_dir=jsonl_dir,
        sqlite_enabled=layers.get((section, "sqlite", "enabled"), True, _bool),
        db_path=db_path,
        batch_size=layers.get((section, "batch_size"), 1000, _integer(1)),
        batch_interval_ms=layers.get((section, "batch_interval_ms"), 100, _integer(1)),
        max_queue_events=layers.get((section, "max_queue_events"), 10_000, _integer(1)),
        pii=_build_pii(layers.values[(section, "pii")]) if (section, "pii") in layers.values else PiiSettings(),
        retention=(
            _build_retention(
                layers.values[(section, "cleanup")],
                ("session_recording", "jsonl")
                if layers.origins.get((section, "cleanup")) == "session_recording.jsonl"
                else ("session_recording", "cleanup"),
            )
            if (section, "cleanup") in layers.values
            else None
        ),
        postgres=_build_postgres(layers),
    )


def _build_postgres(layers: _Layers) -> PostgresSettings:
    path = ("session_recording", "postgres")
    defaults = PostgresSettings()
    settings = PostgresSettings(
        enabled=layers.get((*path, "enabled"), False, _bool),
        connection_string=layers.get((*path, "connection_string"), None, _optional_text),
        max_connections=layers.get((*path, "max_connections"), defaults.max_connections, _integer(1)),
        min_connections=layers.get((*path, "min_connections"), defaults.min_connections, _integer(0)),
        acquire_timeout_seconds=layers.get(
            (*path, "acquire_timeout_seconds"), defaults.acquire_timeout_seconds, _number(0, exclusive=True)
        ),
        idle_timeout_seconds=layers.get(
            (*path, "idle_timeout_seconds"), defaults.idle_timeout_seconds, _number(0, exclusive=True)
        ),
        max_lifetime_seconds=layers.get(
            (*path, "max_lifetime_seconds"), defaults.max_lifetime_seconds, _number(0, exclusive=True)
        ),
    )
    if settings.enabled and not settings.connection_string:
        layers.fail((*path, "connection_string"), "must be set when session_recording.postgres.enabled is true")
    if settings.min_connections > settings.max_connections:
        layers.fail(
            (*path, "min_connections"),
            f"must not exceed max_connections ({settings.max_connections}), got {settings.min_connections}",
        )
    return settings


def _checked(value: Any, path: Iterable[Any], convert: Callable[[Any], Any]) -> Any:
    """C{convert(value)}, a failure reported as one line naming C{path}."""
    try:
        return convert(value)
    except _Invalid as exc:
        raise ConfigError(str(exc), key=_dotted(path)) from None


def _regex(value: Any) -> str:
    text = _text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise _Invalid(f"invalid regular expression: {exc}") from None
    return text


def _pii_regex(value: Any) -> str:
    from lunaroute.pii.detectors import backtracking_risk

    text = _regex(value)
    risk = backtracking_risk(text)
    if risk is not None:
        raise _Invalid(f"pattern could backtrack catastrophically and stall recording: {risk}; rewrite it")
    return text


def _fraction(value: Any) -> float:
    number = _number(0)(value)
    if number > 1:
        raise _Invalid(f"must be between 0 and 1, got {number:g}")
    return number


def _names(value: Any) -> tuple[str, ...]:
    """A list of provider names (a lone name is a list of one)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise _Invalid(f"expected a non-empty list of provider names, got {_kind(value)}")
    return tuple(_text(item) for item in value)


def _build_pii(raw: Any) -> PiiSettings:
    base = ("session_recording", "pii")
    section = _require_mapping(raw, base)
    _check_keys(section, base, _PII_KEYS)
    defaults = PiiSettings()
    values: dict[str, Any] = {}
    for key in _PII_FLAGS:
        values[key] = _checked(section.get(key, getattr(defaults, key)), (*base, key), _bool)
    mode_choice = _choice({m: m for m in PII_REDACTION_MODES})
    values["redaction_mode"] = _checked(section.get("redaction_mode", defaults.redaction_mode), (*base, "redaction_mode"), mode_choice)
    values["hmac_secret"] = _checked(section.get("hmac_secret"), (*base, "hmac_secret"), _optional_text)
    values["min_confidence"] = _checked(
        section.get("min_confidence", defaults.min_confidence), (*base, "min_confidence"), _fraction
    )
    values["partial_show_chars"] = _checked(
        section.get("partial_show_chars", defaults.partial_show_chars), (*base, "partial_show_chars"), _integer(0)
    )
    raw_patterns = section.get("custom_patterns") or []
    if not isinstance(raw_patterns, (list, tuple)):
        raise ConfigError(f"expected a list of patterns, got {_kind(raw_patterns)}", key=_dotted((*base, "custom_patterns")))
    patterns = []
    for index, entry in enumerate(raw_patterns):
        where = (*base, f"custom_patterns[{index}]")
        entry = _require_mapping(entry, where)
        _check_keys(entry, where, _PII_PATTERN_KEYS)
        for required in ("name", "pattern"):
            if entry.get(required) is None:
                raise ConfigError("required", key=_dotted((*where, required)))
        patterns.append(
            CustomPiiPattern(
                name=_checked(entry["name"], (*where, "name"), _text),
                pattern=_checked(entry["pattern"], (*where, "pattern"), _pii_regex),
                confidence=_checked(entry.get("confidence", 1.0), (*where, "confidence"), _fraction),
                redaction_mode=_checked(
                    entry.get("redaction_mode"),
                    (*where, "redaction_mode"),
                    lambda v: None if v is None else mode_choice(v),
                ),
                placeholder=_checked(entry.get("placeholder"), (*where, "placeholder"), _optional_text),
            )
        )
    values["custom_patterns"] = tuple(patterns)
    return PiiSettings(**values)


def _build_retention(raw: Any, base: _Path = ("session_recording", "cleanup")) -> RetentionSettings | None:
    cleanup = _require_mapping(raw, base)
    _check_keys(cleanup, base, ("retention",))
    raw_retention = cleanup.get("retention")
    if raw_retention is None:
        return None
    where = (*base, "retention")
    retention = _require_mapping(raw_retention, where)
    _check_keys(retention, where, _RETENTION_KEYS)
    defaults = RetentionSettings()
    checks: dict[str, Callable[[Any], Any]] = {
        "max_age_days": _integer(1),
        "max_total_size_gb": _number(0, exclusive=True),
        "compress_after_days": _integer(0),
        "cleanup_interval_minutes": _integer(1),
    }
    values = {
        key: _checked(retention.get(key, getattr(defaults, key)), (*where, key), check)
        for key, check in checks.items()
    }
    if retention.get("max_size_mb") is not None:
        if retention.get("max_total_size_gb") is not None:
            raise ConfigError(
                "alias of max_total_size_gb (in MB); set only one of them", key=_dotted((*where, "max_size_mb"))
            )
        size_mb = _checked(retention["max_size_mb"], (*where, "max_size_mb"), _number(0, exclusive=True))
        values["max_total_size_gb"] = size_mb / 1024
    return RetentionSettings(**values)


def _build_request_headers(raw: Any, path: _Path) -> Mapping[str, str]:
    block = _require_mapping(raw, path)
    _check_keys(block, path, ("headers",))
    headers = _require_mapping(block.get("headers") or {}, (*path, "headers"))
    out: dict[str, str] = {}
    for name, value in headers.items():
        where = (*path, "headers", str(name))
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ConfigError("not a valid HTTP header name", key=_dotted(where))
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"expected a string, got {_kind(value)}", key=_dotted(where))
        out[name] = str(value)
    return types.MappingProxyType(out)


def _build_request_body(raw: Any, path: _Path) -> RequestBodySettings:
    block = _require_mapping(raw, path)
    _check_keys(block, path, _REQUEST_BODY_KEYS)
    defaults = _require_mapping(block.get("defaults") or {}, (*path, "defaults"))
    overrides = _require_mapping(block.get("overrides") or {}, (*path, "overrides"))
    raw_messages = block.get("prepend_messages") or []
    if not isinstance(raw_messages, (list, tuple)):
        raise ConfigError(f"expected a list of messages, got {_kind(raw_messages)}", key=_dotted((*path, "prepend_messages")))
    messages = []
    for index, message in enumerate(raw_messages):
        where = (*path, f"prepend_messages[{index}]")
        message = _require_mapping(message, where)
        _checked(message.get("role"), (*where, "role"), _text)
        if not isinstance(message.get("content"), (str, list)):
            raise ConfigError(
                f"expected the message text (or a list of content blocks), got {_kind(message.get('content'))}",
                key=_dotted((*where, "content")),
            )
        messages.append(_freeze(message))
    return RequestBodySettings(
        defaults=_freeze(defaults), overrides=_freeze(overrides), prepend_messages=tuple(messages)
    )


_STRATEGY_CHOICE = _choice(
    {**{s: s for s in ROUTING_STRATEGIES}, **{s.replace("_", "-"): s for s in ROUTING_STRATEGIES}}
)


def _build_rule(rule: Mapping[Any, Any], index: int) -> RuleSettings:
    """One rule, checked for shape and values (provider names come later)."""
    where: _Path = ("routing", f"rules[{index}]")
    _check_keys(rule, where, _RULE_KEYS)
    checks: dict[str, Callable[[Any], Any]] = {
        "name": _text,
        "priority": _integer(),
        "model_pattern": _regex,
        "listener": _choice({t: t for t in LISTENERS}),
        "always": _bool,
        "primary": _text,
        "fallbacks": _names,
        "providers": _names,
        "primary_providers": _names,
        "alternative_providers": _names,
        "strategy": _STRATEGY_CHOICE,
        "exponential_backoff_base_secs": _number(0, exclusive=True),
    }
    values: dict[str, Any] = {
        key: _checked(rule[key], (*where, key), check) for key, check in checks.items() if rule.get(key) is not None
    }
    if rule.get("header") is not None:
        header = _require_mapping(rule["header"], (*where, "header"))
        matches: dict[str, str] = {}
        for name, value in header.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise ConfigError("not a valid HTTP header name", key=_dotted((*where, "header", str(name))))
            matches[name.lower()] = _checked(value, (*where, "header", name), _text)
        values["header"] = types.MappingProxyType(matches)
    if rule.get("model_map") is not None:
        values["model_map"] = _build_model_map(rule["model_map"], (*where, "model_map"))
    if rule.get("weights") is not None:
        raw_weights = _require_mapping(rule["weights"], (*where, "weights"))
        if not raw_weights:
            raise ConfigError("expected at least one provider: weight", key=_dotted((*where, "weights")))
        values["weights"] = types.MappingProxyType(
            {
                str(name): _checked(weight, (*where, "weights", str(name)), _number(0, exclusive=True))
                for name, weight in raw_weights.items()
            }
        )
    strategy = values.get("strategy")
    if strategy is None:
        if values.get("primary") is None:
            raise ConfigError(
                "needs a target: primary (with optional fallbacks) or a strategy "
                f"({', '.join(ROUTING_STRATEGIES)})",
                key=_dotted(where),
            )
    else:
        for needed in _STRATEGY_NEEDS[strategy]:
            if values.get(needed) is None:
                raise ConfigError(f"required by strategy {strategy}", key=_dotted((*where, needed)))
        if values.get("primary") is not None:
            raise ConfigError(
                f"a rule has either primary or a strategy, not both (strategy {strategy})",
                key=_dotted((*where, "primary")),
            )
    for key in ("providers", "weights", "primary_providers", "alternative_providers"):
        if key in values and key not in _STRATEGY_NEEDS.get(strategy or "", ()):
            raise ConfigError(
                f"only used by strategy {_NEEDED_BY[key]}" + (f", not {strategy}" if strategy else ""),
                key=_dotted((*where, key)),
            )
    values.setdefault("name", f"rule-{index}")
    return RuleSettings(index=index, **values)


# The strategy that reads each strategy-only key.
_NEEDED_BY = {needed: strategy for strategy, keys in _STRATEGY_NEEDS.items() for needed in keys}


def _rule_target_paths(rule: RuleSettings) -> Iterable[tuple[str, _Path]]:
    """(provider name, key path) of every provider a rule names, in file order."""
    where: _Path = ("routing", f"rules[{rule.index}]")
    if rule.primary:
        yield rule.primary, (*where, "primary")
    for key in ("providers", "primary_providers", "alternative_providers", "fallbacks"):
        for name in getattr(rule, key):
            yield name, (*where, key)
    for name in rule.weights:
        yield name, (*where, "weights", name)


def _resolve_rule_providers(rules: tuple[RuleSettings, ...], providers: Mapping[str, ProviderSettings]) -> None:
    """
    Every provider a rule names is configured and enabled (checked for all
    rules first), then every provider can take the rule's requests: those
    of its C{listener}, or without one, of the dialect its first provider
    speaks.  A provider of another dialect needs a registered translator
    (see docs/translation.md) for at least one of those request dialects.
    """
    for rule in rules:
        for name, path in _rule_target_paths(rule):
            provider = providers.get(name)
            if provider is None:
                hint = _suggest(name, providers) or f" (configured: {', '.join(providers)})"
                raise ConfigError(
                    f"unknown provider {name!r}{hint}; define it under providers", key=_dotted(path)
                )
            if not provider.enabled:
                raise ConfigError(f"provider {name!r} is disabled", key=_dotted(path))
    # Imported here: the translators live in dialects/, which config does
    # not otherwise need (and routing imports config).
    from lunaroute.routing.translation import can_serve, client_dialects, provider_dialect

    for rule in rules:
        first: ProviderSettings | None = None
        for name, path in _rule_target_paths(rule):
            provider = providers[name]
            if first is None:
                first = provider
            listener = rule.listener or first.provider_type
            sources = client_dialects(listener)
            if any(can_serve(source, provider.provider_type, provider) for source in sources):
                continue
            targets = sorted({provider_dialect(source, provider.provider_type, provider) or "" for source in sources})
            key = path if provider is not first or rule.listener is None else ("routing", f"rules[{rule.index}]", "listener")
            raise ConfigError(
                f"provider {name!r} speaks {provider.provider_type} and this rule takes {listener} requests"
                + ("" if rule.listener else f" (its first provider {first.name!r} speaks {listener})")
                + f": translation from {' or '.join(sources)} to {', '.join(targets)} is not available in this "
                "version (no translator for it)",
                key=_dotted(key),
            )
        if rule.model_map and first is not None:
            listener = rule.listener or first.provider_type
            translated = any(
                provider_dialect(source, providers[name].provider_type, providers[name]) is not None
                for name, _ in _rule_target_paths(rule)
                for source in client_dialects(listener)
            )
            if not translated:
                raise ConfigError(
                    "a rule's model_map applies to its translated attempts (providers of another dialect "
                    "than its requests), and this rule has none; use the provider's model_map",
                    key=_dotted(("routing", f"rules[{rule.index}]", "model_map")),
                )


def _build_section(raw: Any, path: _Path, cls: type[Any], checks: Mapping[str, Callable[[Any], Any]]) -> Any:
    section = _require_mapping(raw, path)
    _check_keys(section, path, tuple(checks))
    defaults = cls()
    return cls(
        **{
            key: _checked(section[key], (*path, key), check) if section.get(key) is not None else getattr(defaults, key)
            for key, check in checks.items()
        }
    )


def _build_routing(raw: Any, providers: Mapping[str, ProviderSettings]) -> RoutingSettings:
    """
    The C{routing} section (the original guide's shape: rules with
    C{model_pattern}, C{primary} + C{fallbacks}, or a C{strategy} with its
    providers or C{weights}; breaker, health and switch-notice settings),
    typed and frozen.  Every provider a rule names must be configured and
    enabled, and able to take the rule's requests (directly or through a
    registered translator).
    """
    routing = _require_mapping(raw, ("routing",))
    _check_keys(routing, ("routing",), _ROUTING_KEYS)
    raw_rules = routing.get("rules")
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, (list, tuple)):
        raise ConfigError(f"expected a list of rules, got {_kind(raw_rules)}", key="routing.rules")
    rules = tuple(
        _build_rule(_require_mapping(rule, ("routing", f"rules[{index}]")), index)
        for index, rule in enumerate(raw_rules)
    )
    seen: dict[str, int] = {}
    for rule in rules:
        if rule.name in seen:
            raise ConfigError(
                f"rule name {rule.name!r} is also the name of rules[{seen[rule.name]}]; names must be unique",
                key=f"routing.rules[{rule.index}].name",
            )
        seen[rule.name] = rule.index
    _resolve_rule_providers(rules, providers)

    breaker_raw = routing.get("circuit_breaker")
    breaker = (
        CircuitBreakerSettings()
        if breaker_raw is None
        else _build_section(
            breaker_raw,
            ("routing", "circuit_breaker"),
            CircuitBreakerSettings,
            {
                "enabled": _bool,
                "failure_threshold": _integer(1),
                "success_threshold": _integer(1),
                "open_timeout_secs": _number(0, exclusive=True),
                "half_open_max_requests": _integer(1),
            },
        )
    )
    health_raw = routing.get("health_monitor")
    health = (
        HealthSettings()
        if health_raw is None
        else _build_section(
            health_raw,
            ("routing", "health_monitor"),
            HealthSettings,
            {
                "window_secs": _number(0, exclusive=True),
                "min_requests": _integer(1),
                "healthy_threshold": _fraction,
                "unhealthy_threshold": _fraction,
            },
        )
    )
    if health.unhealthy_threshold > health.healthy_threshold:
        raise ConfigError(
            f"must not be above healthy_threshold ({health.unhealthy_threshold:g} > {health.healthy_threshold:g})",
            key="routing.health_monitor.unhealthy_threshold",
        )
    notice_raw = routing.get("provider_switch_notification")
    notice = (
        None
        if notice_raw is None
        else _build_section(
            notice_raw,
            ("routing", "provider_switch_notification"),
            SwitchNotificationSettings,
            {"enabled": _bool, "default_message": _text},
        )
    )
    return RoutingSettings(
        rules=rules,
        circuit_breaker=breaker,
        health_monitor=health,
        provider_switch_notification=notice,
        configured=bool(routing),
    )


def _build_pricing(raw: Any) -> Mapping[str, ModelPricing]:
    base = ("statistics", "pricing")
    table = _require_mapping(raw, base)
    prices: dict[str, ModelPricing] = {}
    for pattern, entry in table.items():
        entry_path = (*base, str(pattern))
        entry = _require_mapping(entry, entry_path)
        _check_keys(entry, entry_path, _PRICING_KEYS)
        values: dict[str, Any] = {}
        tier = entry.get("long_context")
        if tier is not None:
            tier = types.MappingProxyType(dict(_require_mapping(tier, (*entry_path, "long_context"))))
        values["long_context"] = tier
        for key in _PRICING_RATES:
            item = entry.get(key)
            if item is None:
                if key in ("input", "output"):
                    raise ConfigError("required (USD per million tokens)", key=_dotted((*entry_path, key)))
                values[key] = None
                continue
            try:
                values[key] = _number(0)(item)
            except _Invalid as exc:
                raise ConfigError(str(exc), key=_dotted((*entry_path, key))) from None
        prices[str(pattern)] = ModelPricing(**values)
    return types.MappingProxyType(prices)


def _build_http_server(layers: _Layers) -> HttpServerSettings:
    defaults = HttpServerSettings()
    checks: dict[str, Callable[[Any], Any]] = {
        "max_request_body_bytes": _integer(1),
        "header_timeout_secs": _number(0, exclusive=True),
        "idle_timeout_secs": _number(0, exclusive=True),
        # 0 turns the cap off.
        "max_connections_per_client": _integer(0),
        "cors_allowed_origins": _origins,
        "auth_token": _optional_text,
        "require_auth_for_proxy": _bool,
        "websocket_enabled": _bool,
    }
    return HttpServerSettings(
        **{
            key: layers.get(("http_server", key), getattr(defaults, key), check)
            for key, check in checks.items()
        }
    )


def _build(layers: _Layers, env: Mapping[str, str], source: str | None) -> Settings:
    providers = _build_providers(layers)

    bypass_provider = layers.get(("bypass", "provider"), None, _optional_text)
    if bypass_provider is not None:
        if bypass_provider not in providers:
            hint = _suggest(bypass_provider, providers) or (f" (configured: {', '.join(providers)})")
            layers.fail(("bypass", "provider"), f"unknown provider {bypass_provider!r}{hint}")
        if not providers[bypass_provider].enabled:
            layers.fail(("bypass", "provider"), f"provider {bypass_provider!r} is disabled")

    ui_defaults = UISettings()
    statistics_defaults = StatisticsSettings()
    return Settings(
        host=layers.get(("host",), "127.0.0.1", _text),
        port=layers.get(("port",), 8081, _integer(0, 65535)),
        api_dialect=layers.get(("api_dialect",), "both", _choice({d: d for d in DIALECTS})),
        shutdown_timeout_secs=layers.get(("shutdown_timeout_secs",), 30, _number(0)),
        providers=types.MappingProxyType(providers),
        logging=LoggingSettings(
            level=layers.get(("logging", "level"), "info", _choice(_LEVELS)),
            log_requests=layers.get(("logging", "log_requests"), False, _bool),
        ),
        http_server=_build_http_server(layers),
        bypass=BypassSettings(
            enabled=layers.get(("bypass", "enabled"), True, _bool), provider=bypass_provider
        ),
        session_recording=_build_recording(layers, env),
        statistics=StatisticsSettings(
            session_stats_max_sessions=layers.get(
                ("statistics", "session_stats_max_sessions"),
                statistics_defaults.session_stats_max_sessions,
                _integer(0),
            ),
            print_summary=layers.get(("statistics", "print_summary"), False, _bool),
            pricing_file=layers.get(("statistics", "pricing_file"), None, _path(env)),
            pricing=_build_pricing(layers.values.get(("statistics", "pricing"), {})),
        ),
        metrics=MetricsSettings(enabled=layers.get(("metrics", "enabled"), True, _bool)),
        ui=UISettings(
            enabled=layers.get(("ui", "enabled"), ui_defaults.enabled, _bool),
            host=layers.get(("ui", "host"), ui_defaults.host, _text),
            port=layers.get(("ui", "port"), ui_defaults.port, _integer(0, 65535)),
            refresh_interval=layers.get(
                ("ui", "refresh_interval"), ui_defaults.refresh_interval, _integer(1)
            ),
            export_enabled=layers.get(("ui", "export_enabled"), ui_defaults.export_enabled, _bool),
            delete_enabled=layers.get(("ui", "delete_enabled"), ui_defaults.delete_enabled, _bool),
            log_requests=layers.get(("ui", "log_requests"), ui_defaults.log_requests, _bool),
            auth_token=layers.get(("ui", "auth_token"), ui_defaults.auth_token, _optional_text),
        ),
        routing=_build_routing(layers.values.get(("routing",), {}), providers),
        source=source,
        templates=_build_templates(layers, env),
        telemetry=_build_telemetry(layers, env),
    )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_names(value: Any) -> tuple[str, ...]:
    """Environment variable names, as a list or a comma-separated string."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected a list of environment variable names, got {_kind(value)}")
    names = []
    for item in value:
        if not isinstance(item, str) or not _ENV_NAME.match(item.strip()):
            raise _Invalid(f"expected environment variable names like 'USER', got {_show(item)}")
        names.append(item.strip())
    return tuple(dict.fromkeys(names))


def _build_templates(layers: _Layers, env: Mapping[str, str]) -> TemplateSettings:
    allowlist = layers.get(("templates", "env_allowlist"), DEFAULT_ENV_ALLOWLIST, _env_names)
    return TemplateSettings(
        env_allowlist=allowlist,
        env=types.MappingProxyType({name: env[name] for name in allowlist if name in env}),
    )


# The standard OpenTelemetry variables LunaRoute reads (environment wins over
# the file, as for LUNAROUTE_* variables).
OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
)


def _otlp_headers(value: Any) -> dict[str, str]:
    """
    Export headers: a mapping (the file) or C{key=value,key=value} (the
    C{OTEL_EXPORTER_OTLP_HEADERS} format, values percent-encoded).
    """
    from urllib.parse import unquote

    if isinstance(value, str):
        pairs: dict[str, Any] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            name, sep, raw = item.partition("=")
            if not sep or not name.strip():
                raise _Invalid("expected key=value pairs separated by commas")
            pairs[name.strip()] = unquote(raw.strip())
        value = pairs
    if not isinstance(value, Mapping):
        raise _Invalid(f"expected a mapping of header names to values, got {_kind(value)}")
    out: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise _Invalid(f"{_show(name)} is not a valid HTTP header name")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise _Invalid(f"header {name}: expected a string, got {_kind(item)}")
        out[name.lower()] = str(item)
    return out


def _traces_url(base: str) -> str:
    """C{OTEL_EXPORTER_OTLP_ENDPOINT} is a base URL: traces go to its C{/v1/traces}."""
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def _build_telemetry(layers: _Layers, env: Mapping[str, str]) -> TelemetrySettings:
    """
    The C{telemetry} section, then the standard C{OTEL_*} variables over it:
    an OTLP endpoint variable turns tracing on, C{OTEL_SDK_DISABLED=true} or
    C{OTEL_TRACES_EXPORTER=none} turns it off whatever the file says.
    """
    defaults = TelemetrySettings()
    section = "telemetry"

    def variable(name: str) -> str | None:
        raw = env.get(name)
        return raw.strip() if raw is not None and raw.strip() else None

    enabled = layers.get((section, "enabled"), defaults.enabled, _bool)
    endpoint = layers.get((section, "endpoint"), None, _url)
    endpoint = _traces_url(endpoint) if endpoint else defaults.endpoint
    for name, convert in (
        ("OTEL_EXPORTER_OTLP_ENDPOINT", _traces_url),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", str),
    ):
        raw = variable(name)
        if raw is not None:
            url = _checked(raw, (name,), _url)
            endpoint, enabled = convert(url), True
    headers = layers.get((section, "headers"), {}, _otlp_headers)
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        raw = variable(name)
        if raw is not None:
            headers = {**headers, **_checked(raw, (name,), _otlp_headers)}
    service_name = variable("OTEL_SERVICE_NAME") or layers.get(
        (section, "service_name"), defaults.service_name, _text
    )
    capture = layers.get((section, "capture_content"), defaults.capture_content, _bool)
    raw_capture = variable("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    if raw_capture is not None:
        capture = _checked(raw_capture, ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",), _bool)
    disabled = variable("OTEL_SDK_DISABLED")
    if disabled is not None and _checked(disabled, ("OTEL_SDK_DISABLED",), _bool):
        enabled = False
    if (variable("OTEL_TRACES_EXPORTER") or "").lower() == "none":
        enabled = False
    return TelemetrySettings(
        enabled=enabled,
        endpoint=endpoint,
        service_name=service_name,
        capture_content=capture,
        headers=types.MappingProxyType(headers),
    )


# --------------------------------------------------------------------------
# Public entry points

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


def settings_from_mapping(
    data: Mapping[str, Any],
    env: Mapping[str, str] = _EMPTY,
    overrides: Mapping[str, Any] = _EMPTY,
    *,
    source: str | None = None,
) -> Settings:
    """
    Build L{Settings} from an already-parsed configuration mapping (the file's
    content), an environment and command-line overrides.  Pure: no file or
    process-environment access (beyond C{~user} lookups and the working
    directory for relative paths).

    @raise ConfigError: on any invalid or unknown setting.
    """
    data = _require_mapping(data, ()) if data is not None else {}
    layers = _Layers()
    _flatten_file(_expand_file(data, env), layers)
    _apply_env(env, layers)
    _apply_overrides(overrides, layers)
    settings = _build(layers, env, source)
    _check_templates(settings)
    return settings


def _check_templates(settings: Settings) -> None:
    """
    Compile every provider's request modification once, so a template
    mistake (an unknown variable, an environment variable not allowed) or a
    header that cannot be set is one line at start-up.
    """
    for provider in settings.providers.values():
        compile_modifier(provider, settings.templates.env_allowlist, settings.templates.env)


def load_settings(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    require_file: bool = False,
) -> Settings:
    """
    Load the settings: built-in defaults, then the file at C{path} (or
    C{$LUNAROUTE_CONFIG}), then C{env} (default: C{os.environ}), then
    C{overrides} from the command line.

    With no path and no C{LUNAROUTE_CONFIG} the defaults are used
    (zero-config) unless C{require_file} is set.  A named file that does not
    exist is always an error: silently running with defaults would hide a typo.

    @raise ConfigError: on a missing/unreadable/unparsable file or any invalid
        setting.
    """
    env = os.environ if env is None else env
    if path is None:
        path = env.get("LUNAROUTE_CONFIG") or None
    if path is None:
        if require_file:
            raise ConfigError("no configuration file given (pass a path or set LUNAROUTE_CONFIG)")
        return settings_from_mapping({}, env, overrides or _EMPTY)
    full_path = os.path.abspath(_expand_home(path, env))
    if not os.path.exists(full_path):
        # `--config examples/configs/<name>` as the guide writes it, run
        # away from a checkout: use the copy installed with the package.
        shipped = shipped_example(path)
        if shipped is not None:
            full_path = shipped
    data = _read_file(full_path, shown=path)
    return settings_from_mapping(data, env, overrides or _EMPTY, source=full_path)


_EXAMPLE_PATH = re.compile(r"^(?:\./)*examples/configs/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)$")


def load_command_settings(path: str | None, program: str = "lunaroute-server") -> Settings | None:
    """
    The settings of a command-line subcommand (C{cleanup}, C{import-sessions},
    C{migrate}): from C{path} and the environment, or C{None} after printing
    the configuration error as one line on stderr (the command then exits 1).
    """
    import sys

    try:
        return load_settings(path, env=os.environ)
    except ConfigError as exc:
        print(f"{program}: configuration error: {exc}", file=sys.stderr)
        return None


def shipped_examples_dir() -> str:
    """
    Where the example configurations (C{examples/configs/} of the source
    tree) are installed: C{lunaroute/examples/configs/} inside the package.
    Run from a source checkout without installing, the checkout's own
    C{examples/configs/}.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "examples", "configs")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(package), "examples", "configs")


def shipped_example(path: str) -> str | None:
    """
    The installed copy of C{examples/configs/<name>} when C{path} is of that
    form (relative, as the documentation writes it) and the copy exists,
    else C{None}.
    """
    found = _EXAMPLE_PATH.match(path.replace(os.sep, "/"))
    if found is None:
        return None
    candidate = os.path.join(shipped_examples_dir(), found["name"])
    return candidate if os.path.isfile(candidate) else None


# --------------------------------------------------------------------------
# Files


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            continue  # unhashable keys are rejected later by the shape checks
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_file(path: str, *, shown: str) -> Mapping[str, Any]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {shown}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {shown}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not valid UTF-8") from None

    extension = os.path.splitext(path)[1].lower()
    if extension == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            found = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
            if found:
                detail = message[: found.start()]
                raise ConfigError(f"{shown}: line {found[1]}: invalid TOML: {detail}") from None
            raise ConfigError(f"{shown}: invalid TOML: {message}") from None
    elif extension == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{shown}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    else:
        # .yaml, .yml and anything else: YAML is a superset of JSON anyway.
        try:
            data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            detail = exc.problem or exc.context or "syntax error"
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise ConfigError(f"{shown}: {where}invalid YAML: {detail}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{shown}: invalid YAML: {exc}") from None

    if data is None:  # an empty or all-comments file
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{shown}: the top level must be a mapping of settings, got {_kind(data)}")
    return data


# --------------------------------------------------------------------------
# Startup summary


def _onoff(flag: bool) -> str:
    return "on" if flag else "off"


def _modification_summary(provider: ProviderSettings) -> str:
    """What a provider's request_headers / request_body change, by name only (values may hold secrets)."""
    body = provider.request_body
    parts = []
    if provider.request_headers:
        parts.append("headers " + ", ".join(provider.request_headers))
    if body.defaults:
        parts.append("body defaults " + ", ".join(body.defaults))
    if body.overrides:
        parts.append("body overrides " + ", ".join(body.overrides))
    if body.prepend_messages:
        parts.append(f"{len(body.prepend_messages)} prepended message(s)")
    return "; ".join(parts)


def _translation_lines(settings: Settings) -> list[str]:
    """
    A line for each served dialect with no provider of its own that the
    other dialect's provider serves through translation (saying when that
    provider has no key: the client's credentials are never forwarded).
    """
    from lunaroute.routing.translation import default_provider

    lines = []
    for listener, source in (("anthropic", "anthropic"), ("openai", "openai_chat")):
        if settings.api_dialect not in (listener, "both") or settings.provider_for(listener) is not None:
            continue
        other = default_provider(settings, listener, source)
        if other is None:
            continue
        line = f"translation: {listener} requests go to provider {other.name} ({other.provider_type}), translated"
        if not other.api_key:
            line += (
                f"; it has no api_key, so they are sent without credentials (the client's {listener} "
                "credentials are never forwarded to another dialect's provider)"
            )
        lines.append(line)
    return lines


def setting_lines(settings: Settings) -> list[str]:
    """A short human-readable summary for the startup log; secrets masked."""
    config = settings.source or "none (built-in defaults)"
    if settings.source and os.path.dirname(settings.source) == shipped_examples_dir():
        config += " (the example shipped with LunaRoute)"
    lines = [
        f"config: {config}",
        f"listening on {settings.host}:{settings.port}, dialect {settings.api_dialect}",
    ]
    for provider in settings.providers.values():
        if not provider.enabled:
            lines.append(f"provider {provider.name}: disabled")
            continue
        key = (
            f"server key {mask_secret(provider.api_key)}"
            if provider.api_key
            else "client credentials forwarded"
        )
        model = f", model {provider.model}" if provider.model else ""
        if provider.model_map:
            model += f", model_map of {len(provider.model_map)}"
        if provider.provider_type == "openai" and not provider.supports_responses:
            model += ", no Responses API"
        client = provider.http_client
        lines.append(
            f"provider {provider.name} ({provider.provider_type}): {provider.base_url}, {key}{model}, "
            f"timeout {client.timeout_secs:g}s, connect {client.connect_timeout_secs:g}s, "
            f"retries {client.max_retries}"
        )
        changes = _modification_summary(provider)
        if changes:
            lines.append(f"provider {provider.name}: request modification: {changes}")
    lines.extend(_translation_lines(settings))
    routing = settings.routing
    if routing:
        names = ", ".join(rule.name for rule in routing.rules) or "no rules"
        breaker = routing.circuit_breaker
        lines.append(
            f"routing: {len(routing.rules)} rule(s) ({names}); retries and fallbacks on; circuit breakers "
            + (f"open after {breaker.failure_threshold} failures" if breaker.enabled else "off")
        )
    else:
        lines.append("routing: off (each request goes to the provider of its dialect, answers relayed as they are)")
    bypass = settings.bypass
    lines.append(
        f"bypass: {_onoff(bypass.enabled)}"
        + (f" (provider {bypass.provider})" if bypass.enabled and bypass.provider else "")
    )
    recording = settings.session_recording
    if recording.enabled:
        writers = []
        if recording.jsonl_enabled:
            writers.append(f"jsonl {recording.jsonl_dir}")
        if recording.sqlite_enabled:
            writers.append(f"sqlite {recording.db_path}")
        if recording.postgres.enabled:
            writers.append(f"postgres {mask_connection_string(recording.postgres.connection_string)}")
        lines.append(f"session recording: on ({', '.join(writers) or 'no writers'})")
    else:
        lines.append("session recording: off")
    retention = recording.retention
    if retention is not None:
        lines.append(
            f"session retention: compress after {retention.compress_after_days} day(s), delete after "
            f"{retention.max_age_days} day(s) or beyond {retention.max_total_size_gb:g} GB, "
            f"checked every {retention.cleanup_interval_minutes} min"
        )
    pii = recording.pii
    if pii.enabled:
        lines.append(
            f"PII redaction: on ({pii.redaction_mode}"
            f"{', no hmac_secret: masking' if pii.redaction_mode == 'tokenize' and not pii.hmac_secret else ''}; "
            f"records and request log{', and requests sent upstream' if pii.apply_to_upstream else ''})"
        )
    lines.append(
        f"logging: level {settings.logging.level}, "
        f"request logging {_onoff(settings.logging.log_requests)}; "
        f"metrics {_onoff(settings.metrics.enabled)}"
    )
    telemetry = settings.telemetry
    if telemetry.enabled:
        content = "prompt text captured" if telemetry.capture_content else "no prompt text"
        lines.append(
            f"telemetry: on, OTLP/HTTP traces to {telemetry.endpoint} as {telemetry.service_name} ({content})"
        )
    else:
        lines.append("telemetry: off")
    reason = ui_unavailable_reason(settings)
    if reason is None:
        host = f"[{settings.ui.host}]" if ":" in settings.ui.host else settings.ui.host
        lines.append(f"ui: on, http://{host}:{settings.ui.port}")
    else:
        lines.append(f"ui: off ({reason})")
    return lines


def ui_unavailable_reason(settings: Settings) -> str | None:
    """
    Why the web UI does not run with these settings (C{ui.enabled: false},
    or no recording to SQLite, which is all it shows), or C{None} when it runs.
    """
    if not settings.ui.enabled:
        return "ui.enabled: false"
    recording = settings.session_recording
    if not recording.enabled:
        return "it shows recorded sessions: set session_recording.enabled: true"
    if not recording.sqlite_enabled and not recording.postgres.enabled:
        return "it reads the session database: set session_recording.sqlite.enabled: true"
    return None
