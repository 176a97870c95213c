"""
Request modification (lunaroute.modify): templates, their start-up errors,
and the body changes for each dialect, as pure functions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lunaroute.config import setting_lines, settings_from_mapping
from lunaroute.errors import ConfigError
from lunaroute.modify import (
    DEFAULT_ENV_ALLOWLIST,
    Modifier,
    TemplateContext,
    compile_modifier,
    compile_template,
    provider_modifiers,
)

CONTEXT = TemplateContext(
    provider="anthropic", model="claude-sonnet-4-5", session_id="s-1", request_id="r-1", client="Claude Code"
)


def modifier(provider: str = "anthropic", env: dict[str, str] | None = None, **block: Any) -> Modifier:
    """The compiled modifier of one provider configured with C{block} (request_headers/request_body)."""
    settings = settings_from_mapping({"providers": {provider: block}}, env or {})
    templates = settings.templates
    return compile_modifier(settings.providers[provider], templates.env_allowlist, templates.env)


def config_error(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(data, env or {})
    return str(caught.value)


def headers_of(block: dict[str, str], env: dict[str, str] | None = None, **templates: Any) -> dict[bytes, bytes]:
    data: dict[str, Any] = {"providers": {"openai": {"request_headers": {"headers": block}}}}
    if templates:
        data["templates"] = templates
    settings = settings_from_mapping(data, env or {})
    built = compile_modifier(settings.providers["openai"], settings.templates.env_allowlist, settings.templates.env)
    return dict(built.header_values(CONTEXT))


# --------------------------------------------------------------------------
# Templates


def test_every_template_variable_is_filled_per_request() -> None:
    """${provider}, ${model}, ${session_id}, ${request_id}, ${client} take the request's values."""
    template = compile_template(
        "${provider}/${model}/${session_id}/${request_id}/${client}", (), {}, "k"
    )
    assert template.render(CONTEXT) == "anthropic/claude-sonnet-4-5/s-1/r-1/Claude Code"
    assert template.render(TemplateContext(provider="openai")) == "openai////"


def test_env_variables_are_read_at_start_up_only_when_allowed() -> None:
    """${env.NAME} is the value NAME had when the configuration was loaded, for allowed names only."""
    template = compile_template("dev-${env.USER}-${ session_id }", ("USER",), {"USER": "ada"}, "k")
    assert template.render(CONTEXT) == "dev-ada-s-1"
    assert compile_template("${env.USER}", ("USER",), {}, "k").render(CONTEXT) == ""
    with pytest.raises(ConfigError) as caught:
        compile_template("${env.ANTHROPIC_API_KEY}", ("USER",), {"ANTHROPIC_API_KEY": "sk-ant-x"}, "a.b")
    assert str(caught.value) == (
        "a.b: ${env.ANTHROPIC_API_KEY}: ANTHROPIC_API_KEY is not in templates.env_allowlist "
        "(allowed: USER); add it there to send it to the provider"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${sesion_id}", "unknown template variable ${sesion_id} (known: ${provider}, ${model}, ${session_id}, "
         "${request_id}, ${client}, ${env.NAME}); for an environment variable write ${env.sesion_id} and allow "
         "it in templates.env_allowlist"),
        ("${HOME:-x}", "unknown template variable ${HOME:-x} (known: ${provider}, ${model}, ${session_id}, "
         "${request_id}, ${client}, ${env.NAME}); for an environment variable write ${env.HOME} and allow it in "
         "templates.env_allowlist"),
        ("${a b}", "unknown template variable ${a b} (known: ${provider}, ${model}, ${session_id}, "
         "${request_id}, ${client}, ${env.NAME})"),
        ("${env.A-B}", "${env.A-B}: not a valid environment variable name"),
        ("x ${model", "unclosed '${' (write $${ for a literal '${')"),
    ],
)
def test_template_mistakes_are_one_line_naming_the_key(text: str, problem: str) -> None:
    """An unknown variable, a bad env name or an unclosed ${ is a ConfigError naming the key."""
    with pytest.raises(ConfigError) as caught:
        compile_template(text, ("USER",), {}, "providers.x.request_headers.headers.X-A")
    assert str(caught.value) == f"providers.x.request_headers.headers.X-A: {problem}"


def test_a_literal_dollar_brace_is_written_doubled() -> None:
    """$${ is a literal ${ (and $ alone is just a dollar)."""
    template = compile_template("cost $5, $${HOME} ${model}", (), {}, "k")
    assert template.render(CONTEXT) == "cost $5, ${HOME} claude-sonnet-4-5"
    assert compile_template("plain", (), {}, "k").constant


# --------------------------------------------------------------------------
# At configuration load


def test_the_default_env_allowlist_is_the_guides_names() -> None:
    """Without templates.env_allowlist, the names the guide uses (USER, PROJECT_NAME) are allowed."""
    assert {"USER", "PROJECT_NAME"} <= set(DEFAULT_ENV_ALLOWLIST)
    s = settings_from_mapping({}, {"USER": "ada", "HOME": "/home/ada"})
    assert s.templates.env_allowlist == DEFAULT_ENV_ALLOWLIST
    assert dict(s.templates.env) == {"USER": "ada"}
    # The values are never printed (an operator may allow a credential).
    assert "ada" not in repr(s.templates)


def test_env_allowlist_replaces_the_default() -> None:
    """templates.env_allowlist (a list or a comma-separated string) is the whole allow-list."""
    env = {"USER": "ada", "TEAM": "core"}
    assert headers_of({"X-Team": "${env.TEAM}"}, env, env_allowlist=["TEAM"]) == {b"X-Team": b"core"}
    assert headers_of({"X-Team": "${env.TEAM}"}, env, env_allowlist="TEAM, USER") == {b"X-Team": b"core"}
    error = config_error(
        {"templates": {"env_allowlist": ["TEAM"]},
         "providers": {"openai": {"request_headers": {"headers": {"X-Dev": "${env.USER}"}}}}},
        env,
    )
    assert error == (
        "providers.openai.request_headers.headers.X-Dev: ${env.USER}: USER is not in templates.env_allowlist "
        "(allowed: TEAM); add it there to send it to the provider"
    )
    assert config_error({"templates": {"env_allowlist": ["bad-name"]}}) == (
        "templates.env_allowlist: expected environment variable names like 'USER', got 'bad-name'"
    )
    assert config_error({"templates": {"env_alowlist": []}}) == (
        "templates.env_alowlist: unknown key (did you mean 'env_allowlist'?)"
    )


def test_a_config_typo_cannot_send_a_secret_from_the_environment() -> None:
    """
    ${VAR} is expanded at load everywhere else in the file; inside
    request_headers and request_body it is not, and a name that is not a
    template variable is an error: the key's value never reaches a header.
    """
    env = {"OPENAI_API_KEY": "sk-proj-secret", "session_id": "from-env"}
    error = config_error(
        {"providers": {"openai": {"request_headers": {"headers": {"X-Key": "${OPENAI_API_KEY}"}}}}}, env
    )
    assert error.startswith("providers.openai.request_headers.headers.X-Key: unknown template variable ${OPENAI_API_KEY}")
    assert "sk-proj-secret" not in error
    error = config_error(
        {"providers": {"openai": {"request_body": {"defaults": {"user": "${env.OPENAI_API_KEY}"}}}}}, env
    )
    assert error.startswith("providers.openai.request_body.defaults.user: ${env.OPENAI_API_KEY}: OPENAI_API_KEY is not in")
    # ${session_id} stays a template (not the environment's session_id) and
    # ${VAR} outside these blocks is still expanded at load.
    s = settings_from_mapping(
        {"providers": {"openai": {"api_key": "${OPENAI_API_KEY}",
                                  "request_headers": {"headers": {"X-S": "${session_id}"}}}}},
        env,
    )
    assert s.providers["openai"].api_key == "sk-proj-secret"
    assert s.providers["openai"].request_headers["X-S"] == "${session_id}"


def test_template_errors_in_body_values_and_messages_name_their_key() -> None:
    """Strings nested in defaults, overrides and prepended messages are templates too."""
    assert config_error(
        {"providers": {"anthropic": {"request_body": {"overrides": {"metadata": {"user_id": "${user}"}}}}}}
    ).startswith("providers.anthropic.request_body.overrides.metadata.user_id: unknown template variable ${user}")
    assert config_error(
        {"providers": {"anthropic": {"request_body": {"prepend_messages": [
            {"role": "user", "content": [{"type": "text", "text": "${modle}"}]}]}}}}
    ).startswith("providers.anthropic.request_body.prepend_messages[0].content[0].text: unknown template variable")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Authorization", "credentials are set with providers.openai.api_key (masked in logs, replaces the client's)"),
        ("x-api-key", "credentials are set with providers.openai.api_key (masked in logs, replaces the client's)"),
        ("Host", "the gateway sets it for each hop"),
        ("Content-Length", "the gateway sets it for each hop"),
        ("Transfer-Encoding", "the gateway sets it for each hop"),
        ("Connection", "the gateway sets it for each hop"),
    ],
)
def test_hop_by_hop_and_credential_headers_cannot_be_configured(name: str, why: str) -> None:
    """request_headers may not set framing, hop-by-hop or credential headers."""
    assert config_error({"providers": {"openai": {"request_headers": {"headers": {name: "x"}}}}}) == (
        f"providers.openai.request_headers.headers.{name}: this header cannot be set by request_headers: {why}"
    )


def test_disabled_providers_are_checked_and_only_changing_providers_get_a_modifier() -> None:
    """A mistake in a disabled provider still stops start-up; providers without changes have no modifier."""
    assert config_error(
        {"providers": {"openai": {"enabled": False, "request_headers": {"headers": {"X": "${nope}"}}}}}
    ).startswith("providers.openai.request_headers.headers.X: unknown template variable")
    s = settings_from_mapping({"providers": {"openai": {"request_headers": {"headers": {"X-A": "1"}}}}})
    assert set(provider_modifiers(s.providers.values(), (), {})) == {"openai"}


# --------------------------------------------------------------------------
# Headers


def test_headers_are_rendered_and_sanitised() -> None:
    """Values are rendered per request; control characters cannot split a header; empty values are left out."""
    built = modifier(
        "openai",
        {"PROJECT_NAME": ""},
        request_headers={"headers": {"X-Model": "${model}", "X-Project": "${env.PROJECT_NAME}", "X-N": 7}},
    )
    evil = TemplateContext(model="gpt\r\nX-Injected: 1")
    assert built.header_values(evil) == [(b"X-Model", b"gpt  X-Injected: 1"), (b"X-N", b"7")]
    assert not built.changes_body and built


# --------------------------------------------------------------------------
# Bodies, per dialect

BODY = {
    "defaults": {"temperature": 0.7, "max_tokens": 4096},
    "overrides": {"top_p": 0.9},
    "prepend_messages": [{"role": "user", "content": "Be concise (${client})."}],
}


def apply(dialect: str, body: dict[str, Any] | bytes, **block: Any) -> dict[str, Any] | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = modifier(request_body=block or BODY).modify_body(dialect, raw, CONTEXT)
    return None if out is None else json.loads(out)


def test_anthropic_defaults_overrides_and_prepended_messages() -> None:
    """Defaults fill what is absent, overrides replace, messages go first; the client's values win over defaults."""
    out = apply("anthropic", {"model": "m", "max_tokens": 100, "top_p": 0.5,
                              "messages": [{"role": "user", "content": "hi"}]})
    assert out == {
        "model": "m",
        "max_tokens": 100,
        "top_p": 0.9,
        "messages": [{"role": "user", "content": "Be concise (Claude Code)."}, {"role": "user", "content": "hi"}],
        "temperature": 0.7,
    }


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        (None, "Local dev."),
        ("You are Claude Code.", "Local dev.\n\nYou are Claude Code."),
        (
            [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            [{"type": "text", "text": "Local dev."},
             {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        ),
    ],
)
def test_anthropic_system_messages_go_to_the_system_field(system: Any, expected: Any) -> None:
    """Anthropic has no system role in messages: a prepended system message goes before the system prompt."""
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if system is not None:
        body["system"] = system
    out = apply("anthropic", body, prepend_messages=[{"role": "system", "content": "Local dev."}])
    assert out is not None
    assert out["system"] == expected
    assert out["messages"] == [{"role": "user", "content": "hi"}]


def test_openai_chat_messages_are_prepended_system_role_included() -> None:
    """Chat Completions: every prepended message goes first in messages, roles as written."""
    out = apply(
        "openai_chat",
        {"model": "gpt-5", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]},
        prepend_messages=[{"role": "system", "content": "Local dev for ${provider}."}],
        overrides={"temperature": 0.2},
    )
    assert out == {
        "model": "gpt-5",
        "messages": [{"role": "system", "content": "Local dev for anthropic."},
                     {"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        "temperature": 0.2,
    }


def test_responses_messages_are_prepended_to_input() -> None:
    """Responses: prepended to the input list; a string input becomes its user message."""
    block = {"prepend_messages": [{"role": "developer", "content": "Local dev."}], "defaults": {"store": False}}
    out = apply("openai_responses", {"model": "gpt-5", "input": "hi"}, **block)
    assert out == {"model": "gpt-5", "input": [{"role": "developer", "content": "Local dev."},
                                               {"role": "user", "content": "hi"}], "store": False}
    listed = apply("openai_responses", {"model": "gpt-5", "input": [{"type": "message", "role": "user",
                                                                   "content": [{"type": "input_text", "text": "hi"}]}]},
                   **block)
    assert listed is not None and listed["input"][0] == {"role": "developer", "content": "Local dev."}
    assert len(listed["input"]) == 2
    # A turn that continues a stored response had them in its first turn.
    follow_up = apply("openai_responses", {"model": "gpt-5", "previous_response_id": "resp_1", "input": "more"},
                      prepend_messages=block["prepend_messages"])
    assert follow_up is None


def test_an_unchanged_body_is_not_reserialised() -> None:
    """When every default is present and every override already holds, the client's bytes are kept (None)."""
    raw = b'{ "model":"m",  "temperature":0.1, "top_p" : 0.9, "messages":[]}'
    built = modifier(request_body={"defaults": {"temperature": 0.7}, "overrides": {"top_p": 0.9}})
    assert built.modify_body("anthropic", raw, CONTEXT) is None
    # Not JSON, not an object, or no dialect (bypass, models): left alone.
    assert built.modify_body("anthropic", b"[1]", CONTEXT) is None
    assert built.modify_body("anthropic", b"{nope", CONTEXT) is None
    assert built.modify_body(None, b'{"model":"m"}', CONTEXT) is None
    assert modifier(request_headers={"headers": {"X": "1"}}).modify_body("anthropic", raw, CONTEXT) is None


def test_a_modified_body_keeps_unicode_and_is_compact() -> None:
    """Re-serialised as compact UTF-8 JSON (no \\u escapes for non-ASCII text)."""
    built = modifier(request_body={"overrides": {"top_p": 0.9}})
    out = built.modify_body("openai_chat", '{"model": "m", "messages": [{"role": "user", "content": "café ☕"}]}'.encode(), CONTEXT)
    assert out == '{"model":"m","messages":[{"role":"user","content":"café ☕"}],"top_p":0.9}'.encode()


def test_the_start_up_summary_names_what_each_provider_changes() -> None:
    """One start-up line per modifying provider, header names only (values may be secrets)."""
    s = settings_from_mapping(
        {"templates": {"env_allowlist": ["TEAM_TOKEN"]},
         "providers": {"anthropic": {"request_headers": {"headers": {"X-Team": "${env.TEAM_TOKEN}"}},
                                     "request_body": BODY}}},
        {"TEAM_TOKEN": "tok-very-secret"},
    )
    lines = setting_lines(s)
    assert (
        "provider anthropic: request modification: headers X-Team; body defaults temperature, max_tokens; "
        "body overrides top_p; 1 prepended message(s)"
    ) in lines
    assert not any("tok-very-secret" in line for line in lines)
    assert not any(line.startswith("provider openai: request modification") for line in lines)


def test_an_override_is_compared_as_json() -> None:
    """An override of 1 changes a client's 1.0 or true (different JSON), and equal nested values change nothing."""
    built = modifier(request_body={"overrides": {"n": 1, "meta": {"a": [1, 2]}}})
    same = b'{"model":"m","n":1,"meta":{"a":[1,2]}}'
    assert built.modify_body("openai_chat", same, CONTEXT) is None
    for other in (b'{"model":"m","n":1.0,"meta":{"a":[1,2]}}', b'{"model":"m","n":true,"meta":{"a":[1,2]}}'):
        out = built.modify_body("openai_chat", other, CONTEXT)
        assert out is not None and json.loads(out)["n"] == 1 and type(json.loads(out)["n"]) is int


def test_env_template_form_outside_modification_blocks_is_an_error() -> None:
    """${env.NAME} elsewhere in the file would be sent literally (an api_key of "${env.KEY}"): one line instead."""
    assert config_error({"providers": {"anthropic": {"api_key": "${env.ANTHROPIC_API_KEY}"}}}) == (
        "providers.anthropic.api_key: ${env.ANTHROPIC_API_KEY} is a request-time template, used only in "
        "providers.<name>.request_headers and request_body; here write ${ANTHROPIC_API_KEY} (read from the "
        "environment when the file is loaded)"
    )
    assert config_error({"http_server": {"cors_allowed_origins": ["http://a", "${env.ORIGIN}"]}}).startswith(
        "http_server.cors_allowed_origins[1]: ${env.ORIGIN} is a request-time template"
    )
