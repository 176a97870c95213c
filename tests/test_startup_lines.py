"""
What the start-up log says: only what runs, and a warning when the gateway
is reachable beyond this machine.  Also the access settings' validation.
"""

from __future__ import annotations

import pytest

from lunaroute.config import setting_lines, settings_from_mapping
from lunaroute.errors import ConfigError
from lunaroute.service import exposure_warning, is_loopback


def test_ui_line_says_whether_the_ui_runs_and_why_not():
    """The start-up log names the UI's URL when it runs, and the missing setting when it does not."""

    def ui_line(data):
        lines = [line for line in setting_lines(settings_from_mapping(data, env={})) if line.startswith("ui:")]
        assert len(lines) == 1
        return lines[0]

    assert ui_line({}) == "ui: off (ui.enabled: false)"
    assert "session_recording.enabled: true" in ui_line({"ui": {"enabled": True}})
    assert "session_recording.sqlite.enabled: true" in ui_line(
        {"ui": {"enabled": True}, "session_recording": {"enabled": True, "sqlite": {"enabled": False}}}
    )
    assert ui_line(
        {"ui": {"enabled": True, "port": 9123}, "session_recording": {"enabled": True}}
    ) == "ui: on, http://127.0.0.1:9123"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_binding_gives_no_warning(host):
    """On loopback only this machine can connect: nothing to warn about."""
    assert is_loopback(host)
    assert exposure_warning(settings_from_mapping({"host": host}, env={})) is None


def test_binding_beyond_loopback_warns_and_names_the_setting():
    """0.0.0.0 exposes /metrics and stats: one line naming http_server.auth_token."""
    warning = exposure_warning(settings_from_mapping({"host": "0.0.0.0"}, env={}))
    assert warning is not None and "\n" not in warning
    assert "/metrics" in warning and "/_lunaroute/stats" in warning
    assert "http_server.auth_token" in warning


def test_with_a_token_the_warning_says_what_is_protected():
    """With a token set, the warning says the gateway's own routes need it."""
    settings = settings_from_mapping(
        {"host": "0.0.0.0", "http_server": {"auth_token": "t0ken"}}, env={}
    )
    warning = exposure_warning(settings)
    assert warning is not None and "need the gateway token" in warning
    assert "require_auth_for_proxy" in warning


def test_access_settings_from_environment():
    """Origins come comma-separated from the environment; the token is never shown."""
    settings = settings_from_mapping(
        {},
        env={
            "LUNAROUTE_CORS_ALLOWED_ORIGINS": "http://localhost:3000, https://app.example",
            "LUNAROUTE_AUTH_TOKEN": "s3cret-token-value",
        },
    )
    assert settings.http_server.cors_allowed_origins == ("http://localhost:3000", "https://app.example")
    assert settings.http_server.auth_token == "s3cret-token-value"
    assert "s3cret-token-value" not in repr(settings)


@pytest.mark.parametrize("origin", ["localhost:3000", "http://x/path", "ftp://x", ""])
def test_a_malformed_origin_is_one_readable_line(origin):
    """A bad origin names the key and the expected shape."""
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"http_server": {"cors_allowed_origins": [origin]}}, env={})
    message = str(info.value)
    assert message.startswith("http_server.cors_allowed_origins")
    assert "\n" not in message


def test_routing_line_says_whether_rules_apply():
    """The start-up lines name the routing rules when routing runs, and say when it is off."""
    off = "\n".join(setting_lines(settings_from_mapping({}, env={})))
    assert "routing: off" in off
    on = "\n".join(
        setting_lines(
            settings_from_mapping(
                {
                    "providers": {"anthropic_backup": {"provider_type": "anthropic", "base_url": "http://127.0.0.1:9"}},
                    "routing": {"rules": [{"name": "claude", "model_pattern": "^claude-", "primary": "anthropic",
                                           "fallbacks": ["anthropic_backup"]}]},
                },
                env={},
            )
        )
    )
    assert "routing: 1 rule(s) (claude); retries and fallbacks on" in on


def test_translation_line_says_where_a_dialect_without_provider_goes(monkeypatch):
    """
    Claude Code on an OpenAI-only gateway: the start-up log says Anthropic
    requests are translated for the openai provider, and that a keyless one
    gets no credentials; nothing is said when each dialect has its own.
    """

    def translation(data):
        return [line for line in setting_lines(settings_from_mapping(data, env={})) if line.startswith("translation:")]

    assert translation({}) == []
    keyless = translation({"providers": {"anthropic": {"enabled": False}}})
    assert keyless == [
        "translation: anthropic requests go to provider openai (openai), translated; it has no api_key, so they are "
        "sent without credentials (the client's anthropic credentials are never forwarded to another dialect's provider)"
    ]
    keyed = translation({"providers": {"anthropic": {"enabled": False}, "openai": {"api_key": "sk-x"}}})
    assert keyed == ["translation: anthropic requests go to provider openai (openai), translated"]
    # Without a Chat -> Anthropic translator an Anthropic-only gateway serves no OpenAI requests.
    from lunaroute.dialects.translate import base

    monkeypatch.delitem(base._REGISTRY, ("openai_chat", "anthropic"), raising=False)
    assert translation({"providers": {"openai": {"enabled": False}}}) == []
    provider_line = next(
        line for line in setting_lines(settings_from_mapping(
            {"providers": {"openai": {"model_map": {"a": "b"}, "supports_responses": False}}}, env={}
        )) if line.startswith("provider openai")
    )
    assert ", model_map of 1, no Responses API," in provider_line
