"""
Tests for L{lunaroute.config}: defaults, file formats, layering
(file < environment < overrides), expansion, validation messages and secret
masking.  Everything runs on explicit C{env} mappings so the developer's own
environment (ANTHROPIC_API_KEY...) cannot leak into results.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lunaroute import config as config_module
from lunaroute.config import (
    CLI_OVERRIDES,
    ENV_VARIABLES,
    ModelPricing,
    Settings,
    load_settings,
    mask_secret,
    setting_lines,
    settings_from_mapping,
)
from lunaroute.errors import (
    ConfigError,
    LunaRouteError,
    RequestError,
    RequestTooLarge,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

REPO = Path(__file__).resolve().parent.parent
LONG_KEY = "sk-ant-api03-abcdefghijklmnop-xyz4"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def config_error(
    data: Any = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data or {}, env or {}, overrides or {})
    return info.value


# --------------------------------------------------------------------------
# Defaults and files


def test_defaults() -> None:
    """An empty configuration gives the documented zero-config defaults."""
    s = settings_from_mapping({}, {"HOME": "/home/u"})
    assert (s.host, s.port, s.api_dialect, s.shutdown_timeout_secs) == (
        "127.0.0.1",
        8081,
        "both",
        30.0,
    )
    assert list(s.providers) == ["anthropic", "openai"]
    anthropic, openai = s.providers["anthropic"], s.providers["openai"]
    assert (anthropic.provider_type, anthropic.base_url, anthropic.api_key) == (
        "anthropic",
        "https://api.anthropic.com",
        None,
    )
    assert (openai.provider_type, openai.base_url, openai.api_key) == (
        "openai",
        "https://api.openai.com/v1",
        None,
    )
    assert anthropic.enabled and openai.enabled and anthropic.model is None
    client = anthropic.http_client
    assert (
        client.timeout_secs,
        client.connect_timeout_secs,
        client.pool_max_idle_per_host,
        client.pool_idle_timeout_secs,
        client.tcp_keepalive_secs,
        client.max_retries,
        client.enable_pool_metrics,
    ) == (600.0, 10.0, 32, 90.0, 60.0, 3, True)
    assert (s.logging.level, s.logging.log_requests) == ("info", False)
    assert s.http_server.max_request_body_bytes == 104_857_600
    assert (s.bypass.enabled, s.bypass.provider) == (True, None)
    rec = s.session_recording
    assert rec.enabled is False
    assert rec.sessions_dir == "/home/u/.lunaroute/sessions"
    assert (rec.jsonl_enabled, rec.jsonl_dir) == (True, "/home/u/.lunaroute/sessions")
    assert (rec.sqlite_enabled, rec.db_path) == (True, "/home/u/.lunaroute/sessions/sessions.db")
    assert (rec.batch_size, rec.batch_interval_ms, rec.max_queue_events) == (1000, 100, 10_000)
    st = s.statistics
    assert (st.session_stats_max_sessions, st.print_summary, st.pricing_file, dict(st.pricing)) == (
        100,
        False,
        None,
        {},
    )
    assert s.metrics.enabled is True
    ui = s.ui
    assert (ui.enabled, ui.host, ui.port, ui.refresh_interval) == (True, "127.0.0.1", 8082, 5)
    assert (ui.export_enabled, ui.delete_enabled, ui.log_requests) == (True, False, False)
    assert s.routing == config_module.RoutingSettings() and not s.routing and s.source is None


def test_settings_are_immutable() -> None:
    """Settings and its collections cannot be modified after loading."""
    s = settings_from_mapping({"routing": {"rules": [{"model_pattern": "x", "primary": "openai"}]}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.providers["x"] = s.providers["openai"]  # type: ignore[index]
    assert [(r.model_pattern, r.primary) for r in s.routing.rules] == [("x", "openai")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.routing.rules[0].model_pattern = "y"  # type: ignore[misc]


def test_no_path_and_no_env_is_zero_config() -> None:
    """Without a path or LUNAROUTE_CONFIG, load_settings uses the defaults and no file."""
    s = load_settings(env={})
    assert s.source is None and s.port == 8081


def test_require_file_without_any_file() -> None:
    """require_file=True refuses to run on defaults alone."""
    with pytest.raises(ConfigError, match="no configuration file given"):
        load_settings(env={}, require_file=True)


def test_lunaroute_config_env_names_the_file(tmp_path: Path) -> None:
    """LUNAROUTE_CONFIG is used when no path is passed, and recorded as source."""
    path = write(tmp_path, "c.yaml", "port: 9001\n")
    s = load_settings(env={"LUNAROUTE_CONFIG": path})
    assert s.port == 9001 and s.source == path


def test_explicit_path_beats_lunaroute_config(tmp_path: Path) -> None:
    """An explicit path wins over LUNAROUTE_CONFIG."""
    a = write(tmp_path, "a.yaml", "port: 1111\n")
    b = write(tmp_path, "b.yaml", "port: 2222\n")
    assert load_settings(a, env={"LUNAROUTE_CONFIG": b}).port == 1111


YAML_TEXT = """\
host: 0.0.0.0
port: 9000
api_dialect: openai
providers:
  openai:
    api_key: sk-file-openai-key-0001
    http_client:
      timeout_secs: 120
  other:
    provider_type: anthropic
    base_url: https://example.com/api/
logging:
  level: WARNING
session_recording:
  jsonl: false
"""
TOML_TEXT = """\
host = "0.0.0.0"
port = 9000
api_dialect = "openai"

[providers.openai]
api_key = "sk-file-openai-key-0001"
http_client = { timeout_secs = 120 }

[providers.other]
provider_type = "anthropic"
base_url = "https://example.com/api/"

[logging]
level = "WARNING"

[session_recording]
jsonl = false
"""
JSON_TEXT = """\
{"host": "0.0.0.0", "port": 9000, "api_dialect": "openai",
 "providers": {"openai": {"api_key": "sk-file-openai-key-0001",
                          "http_client": {"timeout_secs": 120}},
               "other": {"provider_type": "anthropic",
                         "base_url": "https://example.com/api/"}},
 "logging": {"level": "WARNING"},
 "session_recording": {"jsonl": false}}
"""


@pytest.mark.parametrize(
    "name, text",
    [
        ("c.yaml", YAML_TEXT),
        ("c.yml", YAML_TEXT),
        ("c.toml", TOML_TEXT),
        ("c.json", JSON_TEXT),
        ("c.conf", YAML_TEXT),
    ],
)
def test_file_formats(tmp_path: Path, name: str, text: str) -> None:
    """YAML, TOML and JSON files (by extension; others read as YAML) give the same settings."""
    path = write(tmp_path, name, text)
    s = load_settings(path, env={})
    assert s.source == path
    assert (s.host, s.port, s.api_dialect, s.logging.level) == ("0.0.0.0", 9000, "openai", "warn")
    assert s.providers["openai"].api_key == "sk-file-openai-key-0001"
    assert s.providers["openai"].http_client.timeout_secs == 120.0
    other = s.providers["other"]
    assert (other.provider_type, other.base_url, other.enabled) == (
        "anthropic",
        "https://example.com/api",
        True,
    )
    assert list(s.providers) == ["anthropic", "openai", "other"]
    assert s.session_recording.jsonl_enabled is False


def test_empty_yaml_file_is_defaults(tmp_path: Path) -> None:
    """A file holding only comments is the same as no settings."""
    path = write(tmp_path, "c.yaml", "# nothing\n")
    assert dataclasses.replace(load_settings(path, env={}), source=None) == settings_from_mapping({})


def test_null_and_empty_sections_mean_default() -> None:
    """null values and empty sections leave the defaults in place."""
    s = settings_from_mapping({"port": None, "logging": None, "providers": {"openai": None}})
    assert s.port == 8081 and s.logging.level == "info" and s.providers["openai"].enabled


@pytest.mark.parametrize("name", ["config.yaml", "config.example.yaml"])
def test_shipped_configs_load(name: str) -> None:
    """Both shipped config files load and equal the built-in defaults."""
    env = {"HOME": "/home/u"}
    loaded = load_settings(str(REPO / "conf" / name), env=env)
    assert dataclasses.replace(loaded, source=None) == settings_from_mapping({}, env)


def test_fake_provider_config_points_both_providers_at_the_fake() -> None:
    """conf/fake-provider.yaml (the README's keyless setup) sends both dialects to the fake on 9999."""
    loaded = load_settings(str(REPO / "conf" / "fake-provider.yaml"), env={"HOME": "/home/u"})
    assert loaded.port == 8081
    assert loaded.providers["anthropic"].base_url == "http://127.0.0.1:9999"
    assert loaded.providers["openai"].base_url == "http://127.0.0.1:9999/v1"
    readme = (REPO / "README.md").read_text()
    assert "python -m lunaroute.testing.fake_provider --port 9999" in readme
    assert "--config conf/fake-provider.yaml" in readme


def test_docs_list_every_env_variable_and_option() -> None:
    """docs/configuration.md mentions every environment variable, CLI option and top-level key."""
    text = (REPO / "docs" / "configuration.md").read_text()
    for variable in ENV_VARIABLES:
        assert f"`{variable}`" in text, variable
    for _key, option in CLI_OVERRIDES.values():
        assert f"`{option}`" in text, option
    for field in dataclasses.fields(Settings):
        if field.name not in ("providers", "source"):
            assert f"`{field.name}" in text, field.name


def test_example_lists_every_key() -> None:
    """conf/config.example.yaml spells out every key the loader accepts."""
    text = (REPO / "conf" / "config.example.yaml").read_text()
    keys = set(config_module._TOP_KEYS) | set(config_module._PROVIDER_KEYS)
    keys |= set(config_module._HTTP_CLIENT_KEYS)
    for section in config_module._SECTIONS.values():
        keys |= set(section)
    for key in keys:
        assert f"{key}:" in text, key


# --------------------------------------------------------------------------
# Precedence: file < env < overrides

LAYERED = [
    # (file data, env var, env value, override key, override value, getter, file/env/override expectations)
    (
        {"host": "10.0.0.1"},
        "LUNAROUTE_HOST",
        "10.0.0.2",
        "host",
        "10.0.0.3",
        lambda s: s.host,
        ("10.0.0.1", "10.0.0.2", "10.0.0.3"),
    ),
    ({"port": 1001}, "LUNAROUTE_PORT", "1002", "port", 1003, lambda s: s.port, (1001, 1002, 1003)),
    (
        {"api_dialect": "openai"},
        "LUNAROUTE_DIALECT",
        "anthropic",
        "dialect",
        "both",
        lambda s: s.api_dialect,
        ("openai", "anthropic", "both"),
    ),
    (
        {"logging": {"level": "error"}},
        "LUNAROUTE_LOG_LEVEL",
        "warn",
        "log_level",
        "trace",
        lambda s: s.logging.level,
        ("error", "warn", "debug"),
    ),
    (
        {"logging": {"log_requests": True}},
        "LUNAROUTE_LOG_REQUESTS",
        "no",
        "log_requests",
        True,
        lambda s: s.logging.log_requests,
        (True, False, True),
    ),
]


@pytest.mark.parametrize("data, variable, env_value, option, override_value, get, expected", LAYERED)
def test_precedence_file_env_override(
    data: dict[str, Any],
    variable: str,
    env_value: str,
    option: str,
    override_value: Any,
    get: Any,
    expected: tuple[Any, Any, Any],
) -> None:
    """For each layered key the file beats the default, env beats the file and overrides beat env."""
    assert get(settings_from_mapping(data)) == expected[0]
    assert get(settings_from_mapping(data, {variable: env_value})) == expected[1]
    assert get(settings_from_mapping(data, {variable: env_value}, {option: override_value})) == expected[2]


def test_none_overrides_are_ignored() -> None:
    """Overrides set to None (argparse's 'not given') do not replace lower layers."""
    s = settings_from_mapping({"port": 1234}, {}, {"port": None, "host": None})
    assert s.port == 1234 and s.host == "127.0.0.1"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize(
    "suffix, key, file_value, env_value, expected",
    [
        ("TIMEOUT_SECS", "timeout_secs", 100, "200.5", 200.5),
        ("CONNECT_TIMEOUT_SECS", "connect_timeout_secs", 5, "7", 7.0),
        ("POOL_MAX_IDLE", "pool_max_idle_per_host", 4, "8", 8),
        ("POOL_IDLE_TIMEOUT_SECS", "pool_idle_timeout_secs", 30, "45", 45.0),
        ("TCP_KEEPALIVE_SECS", "tcp_keepalive_secs", 20, "0", 0.0),
        ("MAX_RETRIES", "max_retries", 1, "5", 5),
        ("ENABLE_POOL_METRICS", "enable_pool_metrics", True, "off", False),
    ],
)
def test_provider_pool_env(
    provider: str, suffix: str, key: str, file_value: Any, env_value: str, expected: Any
) -> None:
    """LUNAROUTE_<PROVIDER>_<NAME> overrides that provider's http_client key from the file."""
    data = {"providers": {provider: {"http_client": {key: file_value}}}}
    from_file = settings_from_mapping(data).providers[provider].http_client
    assert getattr(from_file, key) == file_value
    env = {f"LUNAROUTE_{provider.upper()}_{suffix}": env_value}
    s = settings_from_mapping(data, env)
    assert getattr(s.providers[provider].http_client, key) == expected
    other = "openai" if provider == "anthropic" else "anthropic"
    assert getattr(s.providers[other].http_client, key) == getattr(config_module.HttpClientSettings(), key)


@pytest.mark.parametrize(
    "provider, variable", [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")]
)
def test_api_key_env_beats_file(provider: str, variable: str) -> None:
    """The standard API key variables fill the built-in provider's key and win over the file."""
    assert settings_from_mapping({}, {variable: "sk-env"}).providers[provider].api_key == "sk-env"
    data = {"providers": {provider: {"api_key": "sk-file"}}}
    assert settings_from_mapping(data).providers[provider].api_key == "sk-file"
    assert settings_from_mapping(data, {variable: " sk-env\n"}).providers[provider].api_key == ("sk-env")


def test_empty_env_variable_counts_as_unset() -> None:
    """An environment variable set to '' does not replace the file's value."""
    data = {"port": 1234, "providers": {"anthropic": {"api_key": "sk-file"}}}
    s = settings_from_mapping(data, {"LUNAROUTE_PORT": "", "ANTHROPIC_API_KEY": ""})
    assert s.port == 1234 and s.providers["anthropic"].api_key == "sk-file"


def test_recording_env(tmp_path: Path) -> None:
    """The session recording env variables override the file's recording settings."""
    data = {
        "session_recording": {
            "enabled": False,
            "sessions_dir": str(tmp_path / "file"),
            "jsonl": {"enabled": True, "directory": str(tmp_path / "j")},
            "sqlite": {"enabled": True, "path": str(tmp_path / "file.db")},
        }
    }
    env = {
        "LUNAROUTE_ENABLE_SESSION_RECORDING": "1",
        "LUNAROUTE_SESSIONS_DIR": str(tmp_path / "env"),
        "LUNAROUTE_ENABLE_JSONL_WRITER": "false",
        "LUNAROUTE_ENABLE_SQLITE_WRITER": "NO",
        "LUNAROUTE_SESSIONS_DB_PATH": str(tmp_path / "env.db"),
    }
    rec = settings_from_mapping(data, env).session_recording
    assert rec.enabled is True
    assert rec.sessions_dir == str(tmp_path / "env")
    # The JSONL writer keeps the file's own directory; only its switch changed.
    assert (rec.jsonl_enabled, rec.jsonl_dir) == (False, str(tmp_path / "j"))
    assert (rec.sqlite_enabled, rec.db_path) == (False, str(tmp_path / "env.db"))


def test_recording_paths_follow_sessions_dir(tmp_path: Path) -> None:
    """Without their own paths, JSONL and SQLite live in sessions_dir."""
    rec = settings_from_mapping({}, {"LUNAROUTE_SESSIONS_DIR": str(tmp_path)}).session_recording
    assert rec.jsonl_dir == str(tmp_path)
    assert rec.db_path == os.path.join(str(tmp_path), "sessions.db")


def test_recording_directory_alias(tmp_path: Path) -> None:
    """`directory` is accepted as the original project's name for sessions_dir."""
    rec = settings_from_mapping({"session_recording": {"directory": str(tmp_path)}}).session_recording
    assert rec.sessions_dir == str(tmp_path)


def test_bypass_env() -> None:
    """LUNAROUTE_BYPASS_ENABLED and LUNAROUTE_BYPASS_PROVIDER override the file."""
    data = {"bypass": {"enabled": True, "provider": "anthropic"}}
    s = settings_from_mapping(
        data, {"LUNAROUTE_BYPASS_ENABLED": "off", "LUNAROUTE_BYPASS_PROVIDER": "openai"}
    )
    assert (s.bypass.enabled, s.bypass.provider) == (False, "openai")


def test_ui_env() -> None:
    """The UI env variables are accepted and validated."""
    env = {
        "LUNAROUTE_UI_ENABLED": "yes",
        "LUNAROUTE_UI_HOST": "0.0.0.0",
        "LUNAROUTE_UI_PORT": "9999",
        "LUNAROUTE_UI_REFRESH_INTERVAL": "10",
    }
    ui = settings_from_mapping({"ui": {"port": 1}}, env).ui
    assert (ui.enabled, ui.host, ui.port, ui.refresh_interval) == (True, "0.0.0.0", 9999, 10)


@pytest.mark.parametrize(
    "text, expected",
    [(v, True) for v in ("true", "TRUE", "1", "yes", "Yes", "on", "ON")]
    + [(v, False) for v in ("false", "False", "0", "no", "NO", "off", "Off")],
)
def test_boolean_spellings(text: str, expected: bool) -> None:
    """Booleans accept true/1/yes/on and false/0/no/off in any case, in files and env."""
    assert settings_from_mapping({"metrics": {"enabled": text}}).metrics.enabled is expected
    assert settings_from_mapping({}, {"LUNAROUTE_LOG_REQUESTS": text}).logging.log_requests is expected


# --------------------------------------------------------------------------
# Expansion


def test_variable_expansion() -> None:
    """${VAR} and ${VAR:-default} are expanded from env in any string value."""
    data = {
        "host": "${BIND}",
        "port": "${PORT:-8500}",
        "providers": {
            "openai": {"base_url": "https://${GW_HOST}/v1", "model": "${MODEL:-gpt-x}"},
        },
        "routing": {"rules": [{"name": "${BIND}-${MISSING}", "primary": "openai"}]},
    }
    s = settings_from_mapping(data, {"BIND": "0.0.0.0", "GW_HOST": "gw.local", "MODEL": ""})
    assert s.host == "0.0.0.0" and s.port == 8500
    assert s.providers["openai"].base_url == "https://gw.local/v1"
    # As in the shell, the default also applies to a variable set to "".
    assert s.providers["openai"].model == "gpt-x"
    assert s.routing.rules[0].name == "0.0.0.0-"


def test_unset_variable_leaves_api_key_unconfigured() -> None:
    """api_key: ${UNSET} expands to '' which means no server key (client credentials forwarded)."""
    data = {"providers": {"anthropic": {"api_key": "${MY_KEY}"}}}
    assert settings_from_mapping(data, {}).providers["anthropic"].api_key is None
    assert settings_from_mapping(data, {"MY_KEY": "k"}).providers["anthropic"].api_key == "k"


def test_env_values_are_not_expanded_again() -> None:
    """A value taken from the environment is used literally."""
    s = settings_from_mapping({}, {"ANTHROPIC_API_KEY": "${X}", "X": "no"})
    assert s.providers["anthropic"].api_key == "${X}"


def test_tilde_expansion(tmp_path: Path) -> None:
    """~ in path values is expanded from HOME and paths become absolute."""
    home = str(tmp_path)
    data = {
        "session_recording": {
            "sessions_dir": "~/s",
            "jsonl": {"directory": "~/j"},
            "sqlite": {"path": "~/db/x.db"},
        },
        "statistics": {"pricing_file": "~/prices.yaml"},
    }
    s = settings_from_mapping(data, {"HOME": home})
    rec = s.session_recording
    assert rec.sessions_dir == os.path.join(home, "s")
    assert rec.jsonl_dir == os.path.join(home, "j")
    assert rec.db_path == os.path.join(home, "db", "x.db")
    assert s.statistics.pricing_file == os.path.join(home, "prices.yaml")
    relative = settings_from_mapping({"session_recording": {"sessions_dir": "rel"}})
    assert relative.session_recording.sessions_dir == os.path.abspath("rel")


def test_tilde_in_config_path(tmp_path: Path) -> None:
    """A ~ in the config path itself is expanded."""
    write(tmp_path, "c.yaml", "port: 4321\n")
    s = load_settings("~/c.yaml", env={"HOME": str(tmp_path)})
    assert s.port == 4321 and s.source == str(tmp_path / "c.yaml")


# --------------------------------------------------------------------------
# Providers and helpers


def test_custom_provider_and_provider_for() -> None:
    """Named providers are typed; provider_for prefers the same-named provider, else the first enabled of that type."""
    data = {
        "providers": {
            "anthropic": {"enabled": False},
            "backend-a": {"provider_type": "anthropic", "base_url": "http://a.local", "model": "m"},
            "backend-b": {"provider_type": "anthropic", "base_url": "http://b.local"},
        }
    }
    s = settings_from_mapping(data)
    assert s.provider_for("anthropic").name == "backend-a"
    assert s.provider_for("openai").name == "openai"
    assert s.providers["backend-a"].model == "m"
    none_left = settings_from_mapping({"providers": {"openai": {"enabled": False}}})
    assert none_left.provider_for("openai") is None


@pytest.mark.parametrize(
    "dialect, anthropic, openai",
    [("both", True, True), ("anthropic", True, False), ("OpenAI", False, True)],
)
def test_serves_dialect(dialect: str, anthropic: bool, openai: bool) -> None:
    """serves_anthropic / serves_openai follow api_dialect (case-insensitive)."""
    s = settings_from_mapping({"api_dialect": dialect})
    assert (s.serves_anthropic, s.serves_openai) == (anthropic, openai)


def test_pricing_table() -> None:
    """Pricing entries become ModelPricing with optional cache prices."""
    data = {"statistics": {"pricing": {"claude-*": {"input": 3, "output": "15", "cache_read": 0.3}}}}
    pricing = settings_from_mapping(data).statistics.pricing
    assert pricing["claude-*"] == ModelPricing(input=3.0, output=15.0, cache_write=None, cache_read=0.3)


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "<none>"),
        ("", "<none>"),
        ("short", "***"),
        ("exactly12chr", "***"),
        (LONG_KEY, "sk-a…xyz4"),
    ],
)
def test_mask_secret(value: str | None, expected: str) -> None:
    """Secrets show only first and last four characters when longer than 12, else ***."""
    assert mask_secret(value) == expected


def test_repr_and_summary_never_show_keys() -> None:
    """ProviderSettings repr, Settings repr and setting_lines mask the API key."""
    s = settings_from_mapping({}, {"ANTHROPIC_API_KEY": LONG_KEY})
    provider = s.providers["anthropic"]
    assert provider.api_key == LONG_KEY
    assert LONG_KEY not in repr(provider) and "sk-a…xyz4" in repr(provider)
    assert LONG_KEY not in repr(s)
    lines = setting_lines(s)
    assert all(LONG_KEY not in line and "\n" not in line for line in lines)
    assert any("sk-a…xyz4" in line for line in lines)
    assert any("client credentials forwarded" in line for line in lines)


# --------------------------------------------------------------------------
# Validation errors: one line, naming the key path / env var / option

ERRORS = [
    # (data, env, overrides, exact message)
    ({"prot": 1}, {}, {}, "prot: unknown key (did you mean 'port'?)"),
    ({"logging": {"levle": "info"}}, {}, {}, "logging.levle: unknown key (did you mean 'level'?)"),
    (
        {"providers": {"openai": {"http_client": {"timeout": 5}}}},
        {},
        {},
        "providers.openai.http_client.timeout: unknown key (did you mean 'timeout_secs'?)",
    ),
    ({"metrics": {"zzz": 1}}, {}, {}, "metrics.zzz: unknown key (expected one of: enabled)"),
    (
        {"session_recording": {"sqlite": {"file": "x"}}},
        {},
        {},
        "session_recording.sqlite.file: unknown key (expected one of: enabled, path)",
    ),
    ({"logging": "info"}, {}, {}, "logging: expected a mapping, got 'info'"),
    (
        {"metrics": {"enabled": "maybe"}},
        {},
        {},
        "metrics.enabled: expected a boolean (true/false/1/0/yes/no/on/off), got 'maybe'",
    ),
    (
        {},
        {"LUNAROUTE_LOG_REQUESTS": "maybe"},
        {},
        "LUNAROUTE_LOG_REQUESTS: expected a boolean (true/false/1/0/yes/no/on/off), got 'maybe'",
    ),
    (
        {"session_recording": {"jsonl": "sometimes"}},
        {},
        {},
        "session_recording.jsonl: expected a boolean (true/false/1/0/yes/no/on/off), got 'sometimes'",
    ),
    ({"port": "eighty"}, {}, {}, "port: expected an integer, got 'eighty'"),
    ({"port": True}, {}, {}, "port: expected an integer, got True"),
    ({}, {"LUNAROUTE_PORT": "80.5"}, {}, "LUNAROUTE_PORT: expected an integer, got '80.5'"),
    ({"port": 70000}, {}, {}, "port: must be between 0 and 65535, got 70000"),
    ({"port": -1}, {}, {}, "port: must be between 0 and 65535, got -1"),
    ({}, {}, {"port": 70000}, "--port: must be between 0 and 65535, got 70000"),
    ({"ui": {"port": 65536}}, {}, {}, "ui.port: must be between 0 and 65535, got 65536"),
    ({"api_dialect": "gemini"}, {}, {}, "api_dialect: must be one of anthropic, openai, both; got 'gemini'"),
    (
        {},
        {"LUNAROUTE_DIALECT": "x"},
        {},
        "LUNAROUTE_DIALECT: must be one of anthropic, openai, both; got 'x'",
    ),
    ({}, {}, {"dialect": "x"}, "--dialect: must be one of anthropic, openai, both; got 'x'"),
    (
        {"providers": {"openai": {"base_url": "ftp://x"}}},
        {},
        {},
        "providers.openai.base_url: must be an http(s) URL, got 'ftp://x'",
    ),
    (
        {"providers": {"openai": {"base_url": "api.openai.com"}}},
        {},
        {},
        "providers.openai.base_url: must be an http(s) URL, got 'api.openai.com'",
    ),
    (
        {"logging": {"level": "loud"}},
        {},
        {},
        "logging.level: must be one of trace, debug, info, warn, warning, error; got 'loud'",
    ),
    (
        {},
        {},
        {"log_level": "loud"},
        "--log-level: must be one of trace, debug, info, warn, warning, error; got 'loud'",
    ),
    (
        {"providers": {"minimax": {"base_url": "https://m.example"}}},
        {},
        {},
        "providers.minimax.provider_type: required for a provider not named anthropic or openai "
        "(anthropic or openai)",
    ),
    (
        {"providers": {"anthropc": {"base_url": "https://m.example"}}},
        {},
        {},
        "providers.anthropc.provider_type: required for a provider not named anthropic or openai "
        "(did you mean 'anthropic'?)",
    ),
    (
        {"providers": {"m": {"provider_type": "anthropic"}}},
        {},
        {},
        "providers.m.base_url: required for a provider not named anthropic or openai",
    ),
    (
        {"providers": {"m": {"provider_type": "gemini", "base_url": "http://x"}}},
        {},
        {},
        "providers.m.provider_type: must be one of anthropic, openai; got 'gemini'",
    ),
    (
        {"providers": {"bad name": {}}},
        {},
        {},
        "providers.bad name: provider names must start with a letter or digit and contain only "
        "letters, digits, '_', '.' and '-'",
    ),
    (
        {"bypass": {"provider": "opnai"}},
        {},
        {},
        "bypass.provider: unknown provider 'opnai' (did you mean 'openai'?)",
    ),
    (
        {},
        {"LUNAROUTE_BYPASS_PROVIDER": "zzz"},
        {},
        "LUNAROUTE_BYPASS_PROVIDER: unknown provider 'zzz' (configured: anthropic, openai)",
    ),
    (
        {"bypass": {"provider": "openai"}, "providers": {"openai": {"enabled": False}}},
        {},
        {},
        "bypass.provider: provider 'openai' is disabled",
    ),
    (
        {"providers": {"anthropic": {"http_client": {"timeout_secs": 0}}}},
        {},
        {},
        "providers.anthropic.http_client.timeout_secs: must be greater than 0, got 0",
    ),
    (
        {},
        {"LUNAROUTE_OPENAI_MAX_RETRIES": "-1"},
        {},
        "LUNAROUTE_OPENAI_MAX_RETRIES: must be at least 0, got -1",
    ),
    (
        {},
        {"LUNAROUTE_ANTHROPIC_TIMEOUT_SECS": "soon"},
        {},
        "LUNAROUTE_ANTHROPIC_TIMEOUT_SECS: expected a number, got 'soon'",
    ),
    (
        {"session_recording": {"batch_size": 0}},
        {},
        {},
        "session_recording.batch_size: must be at least 1, got 0",
    ),
    (
        {"http_server": {"max_request_body_bytes": 0}},
        {},
        {},
        "http_server.max_request_body_bytes: must be at least 1, got 0",
    ),
    ({"host": ["a"]}, {}, {}, "host: expected a string, got a list"),
    ({"host": " "}, {}, {}, "host: must not be empty"),
    (
        {"providers": {"openai": {"api_key": 12345}}},
        {},
        {},
        "providers.openai.api_key: expected a string, got 12345",
    ),
    (
        {"session_recording": {"directory": "/a", "sessions_dir": "/b"}},
        {},
        {},
        "session_recording.directory: alias of sessions_dir; set only one of them",
    ),
    (
        {"statistics": {"pricing": {"m": {"input": 1}}}},
        {},
        {},
        "statistics.pricing.m.output: required (USD per million tokens)",
    ),
    (
        {"statistics": {"pricing": {"m": {"input": 1, "output": -2}}}},
        {},
        {},
        "statistics.pricing.m.output: must be at least 0, got -2",
    ),
    (
        {"statistics": {"pricing": {"m": {"input": 1, "output": 2, "cahce_read": 1}}}},
        {},
        {},
        "statistics.pricing.m.cahce_read: unknown key (did you mean 'cache_read'?)",
    ),
    ({"routing": ["x"]}, {}, {}, "routing: expected a mapping, got a list"),
    (
        {},
        {},
        {"colour": "red"},
        "colour: unknown override (expected one of: host, port, dialect, log_level, log_requests, print_summary)",
    ),
]


@pytest.mark.parametrize("data, env, overrides, message", ERRORS)
def test_validation_errors(
    data: dict[str, Any], env: dict[str, str], overrides: dict[str, Any], message: str
) -> None:
    """Each invalid setting raises ConfigError with one exact line starting with its key path, env var or option."""
    error = config_error(data, env, overrides)
    assert str(error) == message
    assert "\n" not in str(error)
    assert error.key == message.split(": ", 1)[0]
    assert isinstance(error, LunaRouteError)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.yaml", "port: 1\nlogging:\n  level: [info\n", "bad.yaml: line 4: invalid YAML: "),
        ("bad.yaml", "port: 1\nhost: a\nport: 2\n", "bad.yaml: line 3: invalid YAML: duplicate key 'port'"),
        ("bad.toml", "port = 1\nhost = \n", "bad.toml: line 2: invalid TOML: "),
        ("bad.json", '{"port": 1,\n "host": }\n', "bad.json: line 2: invalid JSON: "),
        ("list.yaml", "- 1\n- 2\n", "list.yaml: the top level must be a mapping of settings, got a list"),
    ],
)
def test_file_syntax_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    """Unparsable files give one line naming the file and the line number."""
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(path[: -len(name)] + message)
    assert "\n" not in str(info.value)


def test_missing_file_explicit(tmp_path: Path) -> None:
    """A path passed explicitly that does not exist is an error, not zero-config."""
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_settings(missing, env={})
    assert str(info.value) == f"config file not found: {missing}"


def test_missing_file_from_env(tmp_path: Path) -> None:
    """A LUNAROUTE_CONFIG naming a missing file is an error too."""
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(env={"LUNAROUTE_CONFIG": missing})


def test_unknown_key_in_file_names_path(tmp_path: Path) -> None:
    """Unknown keys in a real file are reported with their dotted path."""
    path = write(tmp_path, "c.yaml", "providers:\n  openai:\n    base_ulr: http://x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value) == "providers.openai.base_ulr: unknown key (did you mean 'base_url'?)"


# --------------------------------------------------------------------------
# The error hierarchy


def test_config_error_is_one_line() -> None:
    """ConfigError prefixes the key and folds newlines so the message stays one line."""
    error = ConfigError("bad\nvalue", key="a.b")
    assert str(error) == "a.b: bad value" and error.key == "a.b" and error.problem == "bad value"
    assert str(ConfigError("no key")) == "no key" and ConfigError("x").key is None


def test_error_hierarchy() -> None:
    """Upstream and request errors derive from LunaRouteError with their documented attributes."""
    assert issubclass(UpstreamUnreachable, UpstreamError)
    assert issubclass(UpstreamTimeout, UpstreamError)
    assert issubclass(UpstreamError, LunaRouteError)
    assert UpstreamTimeout("slow", provider="openai").provider == "openai"
    plain = RequestError("bad json")
    assert (plain.status, plain.error_type, plain.message) == (400, "invalid_request_error", "bad json")
    custom = RequestError("nope", status=422, error_type="x")
    assert (custom.status, custom.error_type) == (422, "x")
    too_large = RequestTooLarge("too big")
    assert isinstance(too_large, RequestError)
    assert (too_large.status, too_large.error_type, str(too_large)) == (413, "request_too_large", "too big")


# --------------------------------------------------------------------------
# The original's keys: top-level session_stats_max_sessions, and keys of
# features still being built (accepted, checked, never silently ignored).


def test_top_level_session_stats_max_sessions_is_the_statistics_setting() -> None:
    """The original README's top-level key sets statistics.session_stats_max_sessions."""
    assert settings_from_mapping({"session_stats_max_sessions": 50}).statistics.session_stats_max_sessions == 50
    both = {"session_stats_max_sessions": "50", "statistics": {"session_stats_max_sessions": 50}}
    assert settings_from_mapping(both).statistics.session_stats_max_sessions == 50


def test_top_level_and_statistics_limits_that_differ_are_one_line_naming_both() -> None:
    """Both spellings with different values: one line naming both keys."""
    error = config_error({"statistics": {"session_stats_max_sessions": 100}, "session_stats_max_sessions": 50})
    assert str(error) == (
        "session_stats_max_sessions: conflicts with statistics.session_stats_max_sessions (50 vs 100): "
        "they are the same setting; set only one of them"
    )


def test_a_bad_top_level_limit_names_the_top_level_key() -> None:
    """A bad value given at the top level is reported under the key the user wrote."""
    assert str(config_error({"session_stats_max_sessions": -1})) == (
        "session_stats_max_sessions: must be at least 0, got -1"
    )


GUIDE_PII = {
    "enabled": False,
    "detect_email": True,
    "detect_ip_address": "no",
    "redaction_mode": "tokenize",
    "hmac_secret": "${PII_SECRET}",
    "custom_patterns": [
        {"name": "api_key", "pattern": "sk-[a-zA-Z0-9]{32,}", "confidence": 0.95,
         "redaction_mode": "mask", "placeholder": "[API_KEY]"},
    ],
}


def test_pii_block_is_parsed_in_the_guides_shape() -> None:
    """session_recording.pii is kept, typed and frozen; our own keys have their defaults."""
    s = settings_from_mapping({"session_recording": {"pii": GUIDE_PII}}, {"PII_SECRET": "s3cret-value"})
    pii = s.session_recording.pii
    assert (pii.enabled, pii.detect_email, pii.detect_phone, pii.detect_ip_address) == (False, True, True, False)
    assert (pii.redaction_mode, pii.hmac_secret) == ("tokenize", "s3cret-value")
    assert "s3cret-value" not in repr(s)
    (pattern,) = pii.custom_patterns
    assert (pattern.name, pattern.pattern, pattern.confidence, pattern.redaction_mode, pattern.placeholder) == (
        "api_key", "sk-[a-zA-Z0-9]{32,}", 0.95, "mask", "[API_KEY]",
    )
    assert (pii.detect_secrets, pii.partial_show_chars, pii.apply_to_upstream) == (True, 4, False)
    assert settings_from_mapping({}).session_recording.pii == config_module.PiiSettings()


def test_pii_enabled_starts_and_says_so() -> None:
    """enabled: true is no longer refused; the start-up lines say redaction is on and how."""
    s = settings_from_mapping(
        {"session_recording": {"enabled": True, "pii": {**GUIDE_PII, "enabled": True, "partial_show_chars": 2,
                                                        "detect_secrets": False, "apply_to_upstream": True}}},
        {"PII_SECRET": ""},
    )
    pii = s.session_recording.pii
    assert (pii.enabled, pii.partial_show_chars, pii.detect_secrets, pii.apply_to_upstream) == (True, 2, False, True)
    assert (
        "PII redaction: on (tokenize, no hmac_secret: masking; records and request log, and requests sent upstream)"
        in config_module.setting_lines(s)
    )


@pytest.mark.parametrize(
    ("pii", "message"),
    [
        ({"redaction_mode": "blur"}, "session_recording.pii.redaction_mode: must be one of mask, remove, tokenize, partial; got 'blur'"),
        ({"detect_emails": True}, "session_recording.pii.detect_emails: unknown key (did you mean 'detect_email'?)"),
        ({"custom_patterns": [{"name": "x", "pattern": "("}]}, "session_recording.pii.custom_patterns[0].pattern: invalid regular expression: missing ), unterminated subpattern at position 0"),
        ({"custom_patterns": [{"pattern": "x"}]}, "session_recording.pii.custom_patterns[0].name: required"),
        ({"custom_patterns": [{"name": "x", "pattern": "x", "confidence": 2}]}, "session_recording.pii.custom_patterns[0].confidence: must be between 0 and 1, got 2"),
        ("yes", "session_recording.pii: expected a mapping, got 'yes'"),
        ({"partial_show_chars": -1}, "session_recording.pii.partial_show_chars: must be at least 0, got -1"),
        ({"detect_secrets": "maybe"}, "session_recording.pii.detect_secrets: expected a boolean (true/false/1/0/yes/no/on/off), got 'maybe'"),
    ],
)
def test_pii_block_is_checked(pii: Any, message: str) -> None:
    """Mistakes in the pii block are one line each."""
    assert str(config_error({"session_recording": {"pii": pii}})) == message


def test_request_headers_keep_their_templates() -> None:
    """request_headers templates are not expanded from the environment at load (lunaroute.modify fills them)."""
    block = {"headers": {"X-Session-Context": "claude-code-${session_id}", "X-Developer-ID": "${env.USER}"}}
    s = settings_from_mapping({"providers": {"anthropic": {"request_headers": block}}}, {"session_id": "nope"})
    assert dict(s.providers["anthropic"].request_headers) == block["headers"]
    s = settings_from_mapping({"providers": {"anthropic": {"request_headers": {"headers": {}}}}})
    assert dict(s.providers["anthropic"].request_headers) == {}
    # Header values are never printed (they may hold credentials).
    assert "claude-code" not in repr(settings_from_mapping(
        {"providers": {"anthropic": {"request_headers": block}}}).providers["anthropic"])


def test_request_body_is_checked() -> None:
    """request_body in the guide's shape is accepted; its mistakes are one line each."""
    body = {"defaults": {"temperature": 0.7}, "overrides": {"top_p": 0.9},
            "prepend_messages": [{"role": "user", "content": "Be concise."}]}
    parsed = settings_from_mapping({"providers": {"openai": {"request_body": body}}}).providers["openai"].request_body
    assert parsed.prepend_messages == ({"role": "user", "content": "Be concise."},) and parsed
    assert dict(parsed.defaults) == {"temperature": 0.7} and dict(parsed.overrides) == {"top_p": 0.9}
    assert not settings_from_mapping({"providers": {"openai": {"request_body": {}}}}).providers["openai"].request_body
    bad = {"prepend_messages": [{"role": "user"}]}
    assert str(config_error({"providers": {"openai": {"request_body": bad}}})) == (
        "providers.openai.request_body.prepend_messages[0].content: expected the message text "
        "(or a list of content blocks), got None"
    )
    assert str(config_error({"providers": {"openai": {"request_headers": {"headers": {"bad name": "x"}}}}})) == (
        "providers.openai.request_headers.headers.bad name: not a valid HTTP header name"
    )


def test_retention_keeps_defaults_for_unset_keys_and_is_applied() -> None:
    """cleanup.retention: partial config keeps the defaults (the original's bug: they became null); no pending warning."""
    s = settings_from_mapping({"session_recording": {"cleanup": {"retention": {"max_total_size_gb": 5}}}})
    assert s.session_recording.retention == config_module.RetentionSettings(
        max_age_days=30, max_total_size_gb=5.0, compress_after_days=7, cleanup_interval_minutes=60
    )
    assert "session retention: compress after 7 day(s), delete after 30 day(s) or beyond 5 GB, checked every 60 min" in (
        setting_lines(s)
    )
    assert settings_from_mapping({}).session_recording.retention is None
    assert str(config_error({"session_recording": {"cleanup": {"retention": {"max_age_days": 0}}}})) == (
        "session_recording.cleanup.retention.max_age_days: must be at least 1, got 0"
    )
    assert str(config_error({"session_recording": {"cleanup": {"retain": {}}}})) == (
        "session_recording.cleanup.retain: unknown key (expected one of: retention)"
    )


def test_retention_in_the_originals_code_form_jsonl_retention() -> None:
    """session_recording.jsonl.retention (the original's code and example) is the same setting, max_size_mb included."""
    s = settings_from_mapping(
        {"session_recording": {"jsonl": {"enabled": True, "retention": {"max_age_days": 14, "max_size_mb": 1024}}}}
    )
    assert s.session_recording.retention == config_module.RetentionSettings(
        max_age_days=14, max_total_size_gb=1.0, compress_after_days=7, cleanup_interval_minutes=60
    )
    assert s.session_recording.jsonl_enabled
    partial = settings_from_mapping({"session_recording": {"jsonl": {"retention": {"compress_after_days": 1}}}})
    assert partial.session_recording.retention == config_module.RetentionSettings(compress_after_days=1)
    assert str(config_error({"session_recording": {"jsonl": {"retention": {"max_age_days": 0}}}})) == (
        "session_recording.jsonl.retention.max_age_days: must be at least 1, got 0"
    )
    for both in (
        {"cleanup": {"retention": {}}, "jsonl": {"retention": {}}},
        {"jsonl": {"retention": {}}, "cleanup": {"retention": {}}},
    ):
        assert str(config_error({"session_recording": both})) == (
            "session_recording.jsonl.retention: alias of session_recording.cleanup.retention; set only one of them"
        )
    # An empty cleanup block after the alias does not undo it, in either order.
    for order in ({"jsonl": {"retention": {"max_age_days": 9}}, "cleanup": {}},
                  {"cleanup": {}, "jsonl": {"retention": {"max_age_days": 9}}}):
        assert settings_from_mapping({"session_recording": order}).session_recording.retention == (
            config_module.RetentionSettings(max_age_days=9)
        )
    sizes = {"cleanup": {"retention": {"max_size_mb": 10, "max_total_size_gb": 1}}}
    assert str(config_error({"session_recording": sizes})) == (
        "session_recording.cleanup.retention.max_size_mb: alias of max_total_size_gb (in MB); set only one of them"
    )


def test_routing_rules_are_typed_and_warned_about() -> None:
    """Routing rules load typed and frozen, with one start-up warning line until they are wired."""
    data = {
        "providers": {
            "anthropic_backup": {"type": "anthropic", "base_url": "https://backup.example"},
            "openai_primary": {"provider_type": "openai", "base_url": "https://a.example/v1"},
            "openai_backup": {"provider_type": "openai", "base_url": "https://b.example/v1"},
        },
        "routing": {
            "rules": [
                {"name": "claude-with-fallback", "model_pattern": "^claude-.*", "primary": "anthropic",
                 "fallbacks": ["anthropic_backup"], "priority": 5, "header": {"X-Team": "core"}},
                {"name": "weighted", "model_pattern": "^gpt-.*", "strategy": "weighted-round-robin",
                 "weights": {"openai_primary": 80, "openai_backup": 20.5}},
            ]
        },
    }
    s = settings_from_mapping(data)
    first, second = s.routing.rules
    assert (first.name, first.index, first.priority, first.primary, first.fallbacks) == (
        "claude-with-fallback", 0, 5, "anthropic", ("anthropic_backup",)
    )
    assert dict(first.header) == {"x-team": "core"} and first.targets == ("anthropic", "anthropic_backup")
    assert (second.strategy, dict(second.weights)) == ("weighted_round_robin", {"openai_primary": 80, "openai_backup": 20.5})
    assert s.providers["anthropic_backup"].provider_type == "anthropic"
    assert s.routing.circuit_breaker == config_module.CircuitBreakerSettings(True, 5, 2, 60.0, 1)
    assert s.routing.health_monitor == config_module.HealthSettings(60.0, 10, 0.95, 0.75)
    assert s.routing.provider_switch_notification is None
    with pytest.raises(TypeError):
        second.weights["openai_primary"] = 1  # type: ignore[index]


def test_routing_sections_are_typed() -> None:
    """circuit_breaker, health_monitor and provider_switch_notification become typed settings."""
    s = settings_from_mapping(
        {
            "routing": {
                "circuit_breaker": {"failure_threshold": 3, "open_timeout_secs": 5, "half_open_max_requests": 2},
                "health_monitor": {"window_secs": 30, "min_requests": 4, "unhealthy_threshold": 0.5},
                "provider_switch_notification": {"default_message": "from ${original_provider} to ${new_provider}"},
            }
        },
        {"new_provider": "X", "original_provider": "Y"},
    )
    assert s.routing.circuit_breaker == config_module.CircuitBreakerSettings(True, 3, 2, 5.0, 2)
    assert s.routing.health_monitor == config_module.HealthSettings(30.0, 4, 0.95, 0.5)
    notice = s.routing.provider_switch_notification
    # Templates are filled per request, never from the environment.
    assert notice == config_module.SwitchNotificationSettings(True, "from ${original_provider} to ${new_provider}")
    assert settings_from_mapping({"routing": {"provider_switch_notification": {}}}).routing.provider_switch_notification == (
        config_module.SwitchNotificationSettings(True, config_module.DEFAULT_SWITCH_MESSAGE)
    )
    provider = settings_from_mapping(
        {"providers": {"b": {"type": "openai", "base_url": "https://b.example/v1",
                             "switch_notification_message": "Using ${new_provider} due to ${reason}"}}},
        {"new_provider": "X"},
    ).providers["b"]
    assert provider.switch_notification_message == "Using ${new_provider} due to ${reason}"


_TWO_OPENAI = {
    "ob": {"provider_type": "openai", "base_url": "https://b.example/v1"},
    "off": {"provider_type": "openai", "base_url": "https://c.example/v1", "enabled": False},
}


def without_translators_to_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    """These checks are about a pair with no translator: make sure none is registered."""
    from lunaroute.dialects.translate import base

    for pair in (("openai_chat", "anthropic"), ("openai_responses", "anthropic")):
        monkeypatch.delitem(base._REGISTRY, pair, raising=False)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"model_pattern": "^gpt-.*"}, "routing.rules[0]: needs a target: primary (with optional fallbacks) or a strategy (round_robin, weighted_round_robin, limits_alternative)"),
        ({"model_pattern": "(", "primary": "openai"}, "routing.rules[0].model_pattern: invalid regular expression: missing ), unterminated subpattern at position 0"),
        ({"strategy": "weighted_round_robin", "weights": {"a": 0}}, "routing.rules[0].weights.a: must be greater than 0, got 0"),
        ({"strategy": "weighted_round_robin", "weights": {"openai": -3}}, "routing.rules[0].weights.openai: must be greater than 0, got -3"),
        ({"strategy": "weighted_round_robin", "weights": {"openai": "lots"}}, "routing.rules[0].weights.openai: expected a number, got 'lots'"),
        ({"strategy": "weighted_round_robin"}, "routing.rules[0].weights: required by strategy weighted_round_robin"),
        ({"strategy": "round-robin"}, "routing.rules[0].providers: required by strategy round_robin"),
        ({"strategy": "random", "primary": "x"}, "routing.rules[0].strategy: must be one of round_robin, weighted_round_robin, limits_alternative, round-robin, weighted-round-robin, limits-alternative; got 'random'"),
        ({"primary": "x", "fallback": ["y"]}, "routing.rules[0].fallback: unknown key (did you mean 'fallbacks'?)"),
        ({"primary": "x", "listener": "gemini"}, "routing.rules[0].listener: must be one of anthropic, openai; got 'gemini'"),
        ({"strategy": "round_robin", "providers": ["openai"], "primary": "openai"}, "routing.rules[0].primary: a rule has either primary or a strategy, not both (strategy round_robin)"),
        ({"primary": "openai", "weights": {"openai": 1}}, "routing.rules[0].weights: only used by strategy weighted_round_robin"),
        ({"primary": "opena"}, "routing.rules[0].primary: unknown provider 'opena' (did you mean 'openai'?); define it under providers"),
        ({"primary": "openai", "fallbacks": ["ob", "zzz"]}, "routing.rules[0].fallbacks: unknown provider 'zzz' (configured: anthropic, openai, ob, off); define it under providers"),
        ({"strategy": "weighted_round_robin", "weights": {"openai": 80, "openai_backup": 20}}, "routing.rules[0].weights.openai_backup: unknown provider 'openai_backup' (did you mean 'openai'?); define it under providers"),
        ({"primary": "openai", "fallbacks": ["off"]}, "routing.rules[0].fallbacks: provider 'off' is disabled"),
        ({"primary": "openai", "model_map": {"claude-x": 5}}, "routing.rules[0].model_map.claude-x: expected a string, got 5"),
        ({"primary": "openai", "fallbacks": ["ob"], "model_map": {"gpt-5": "llama"}}, "routing.rules[0].model_map: a rule's model_map applies to its translated attempts (providers of another dialect than its requests), and this rule has none; use the provider's model_map"),
        ({"primary": "openai", "exponential_backoff_base_secs": 0}, "routing.rules[0].exponential_backoff_base_secs: must be greater than 0, got 0"),
        ({"primary": "openai", "header": {"bad header": "x"}}, "routing.rules[0].header.bad header: not a valid HTTP header name"),
    ],
)
def test_routing_rules_are_checked(rule: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed rule, or one naming a provider that cannot serve it, is one line naming it."""
    without_translators_to_anthropic(monkeypatch)
    assert str(config_error({"providers": _TWO_OPENAI, "routing": {"rules": [rule]}})) == message


def test_rules_may_mix_dialects_where_a_translator_exists() -> None:
    """
    Claude Code's requests may go to an OpenAI provider (Messages -> Chat is
    registered): as a rule's primary with listener anthropic, or as a fallback
    of an Anthropic primary.  Model maps are read per rule and per provider.
    """
    s = settings_from_mapping(
        {
            "providers": {
                **_TWO_OPENAI,
                "ob": {**_TWO_OPENAI["ob"], "model_map": {"claude-sonnet-4-5": "gpt-5"}, "supports_responses": False},
            },
            "routing": {
                "rules": [
                    {"primary": "ob", "listener": "anthropic", "model_map": {"claude-haiku-4-5": "gpt-5-mini"}},
                    {"primary": "anthropic", "fallbacks": ["openai"]},
                ]
            },
        },
        env={},
    )
    assert s.routing.rules[0].model_map == {"claude-haiku-4-5": "gpt-5-mini"}
    assert s.routing.rules[1].fallbacks == ("openai",)
    ob = s.providers["ob"]
    assert ob.model_map == {"claude-sonnet-4-5": "gpt-5"} and ob.supports_responses is False
    assert s.providers["openai"].supports_responses is True and s.providers["openai"].model_map == {}
    # And the other way: OpenAI requests (Chat and Responses) on Anthropic.
    back = settings_from_mapping(
        {
            "providers": _TWO_OPENAI,
            "routing": {
                "rules": [
                    {"primary": "openai", "fallbacks": ["anthropic"]},
                    {"primary": "anthropic", "listener": "openai"},
                ]
            },
        },
        env={},
    )
    assert back.routing.rules[0].fallbacks == ("anthropic",) and back.routing.rules[1].primary == "anthropic"


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"model_map": ["gpt-5"]}, "providers.openai.model_map: expected a mapping, got a list"),
        ({"model_map": {"claude-x": ""}}, "providers.openai.model_map.claude-x: must not be empty"),
        ({"supports_responses": "maybe"}, "providers.openai.supports_responses: expected a boolean (true/false/1/0/yes/no/on/off), got 'maybe'"),
    ],
)
def test_translation_provider_keys_are_checked(provider: dict[str, Any], message: str) -> None:
    """A bad model_map or supports_responses is one line naming the key."""
    assert str(config_error({"providers": {"openai": provider}})) == message


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"rule": []}, "routing.rule: unknown key (did you mean 'rules'?)"),
        ({"rules": {"a": 1}}, "routing.rules: expected a list of rules, got a mapping"),
        ({"rules": [{"name": "a", "primary": "openai"}, {"name": "a", "primary": "openai"}]},
         "routing.rules[1].name: rule name 'a' is also the name of rules[0]; names must be unique"),
        ({"circuit_breaker": {"failure_threshold": 0}}, "routing.circuit_breaker.failure_threshold: must be at least 1, got 0"),
        ({"circuit_breaker": {"open_timeout": 5}}, "routing.circuit_breaker.open_timeout: unknown key (did you mean 'open_timeout_secs'?)"),
        ({"health_monitor": {"healthy_threshold": 1.5}}, "routing.health_monitor.healthy_threshold: must be between 0 and 1, got 1.5"),
        ({"health_monitor": {"healthy_threshold": 0.5}}, "routing.health_monitor.unhealthy_threshold: must not be above healthy_threshold (0.75 > 0.5)"),
        ({"provider_switch_notification": {"enabled": "maybe"}}, "routing.provider_switch_notification.enabled: expected a boolean (true/false/1/0/yes/no/on/off), got 'maybe'"),
    ],
)
def test_routing_sections_are_checked(routing: dict[str, Any], message: str) -> None:
    """Keys under routing are checked too: a typo is never stored and ignored."""
    assert str(config_error({"routing": routing})) == message


def test_provider_type_alias() -> None:
    """`type` is the original's spelling of provider_type; giving both is one line."""
    assert str(config_error({"providers": {"x": {"type": "gemini", "base_url": "https://x.example"}}})) == (
        "providers.x.type: must be one of anthropic, openai; got 'gemini'"
    )
    assert str(
        config_error({"providers": {"x": {"type": "openai", "provider_type": "openai", "base_url": "https://x.example"}}})
    ) == "providers.x.type: alias of provider_type; set only one of them"


def test_examples_path_falls_back_to_the_shipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config examples/configs/<name> away from a checkout loads the installed example."""
    monkeypatch.chdir(tmp_path)
    s = load_settings("examples/configs/claude-code-proxy.yaml", env={"HOME": str(tmp_path)})
    assert s.source == os.path.join(config_module.shipped_examples_dir(), "claude-code-proxy.yaml")
    assert s.api_dialect == "anthropic" and s.port == 8081
    assert setting_lines(s)[0] == f"config: {s.source} (the example shipped with LunaRoute)"
    # A local file of that name wins; other paths never fall back.
    local = tmp_path / "examples" / "configs"
    local.mkdir(parents=True)
    (local / "claude-code-proxy.yaml").write_text("port: 9999\n")
    assert load_settings("examples/configs/claude-code-proxy.yaml", env={}).port == 9999
    for missing in ("configs/claude-code-proxy.yaml", "examples/configs/nope.yaml", "/examples/configs/development.yaml"):
        with pytest.raises(ConfigError, match="config file not found"):
            load_settings(missing, env={})


def test_every_shipped_example_is_in_the_source_tree() -> None:
    """The installed examples are the checkout's examples/configs, file for file."""
    installed = Path(config_module.shipped_examples_dir())
    source = REPO / "examples" / "configs"
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in source.iterdir())
    for path in source.iterdir():
        assert (installed / path.name).read_text() == path.read_text(), path.name


def test_every_yaml_block_of_the_readme_loads() -> None:
    """The README's YAML examples are real configuration: each one loads (with its ${VAR}s set)."""
    import re as _re

    import yaml as _yaml

    readme = (REPO / "README.md").read_text()
    blocks = _re.findall(r"```yaml\n(.*?)```", readme, _re.S)
    assert blocks
    for block in blocks:
        variables = {name: "x" for name in _re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", block)}
        settings_from_mapping(_yaml.safe_load(block), env=variables)
