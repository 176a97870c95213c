"""
Request modification: the headers and body changes a provider's
C{request_headers} and C{request_body} settings make to every request sent
to it, in the original guide's shape, for both dialects.

Pure and sans-I/O.  A provider's settings are compiled once, at start-up,
into a L{Modifier}; a template error (an unknown variable, an environment
variable not allowed) is a L{ConfigError} then, never a surprise in the
middle of a request.  Per request, L{Modifier.header_values} and
L{Modifier.modify_body} only fill in the few per-request values
(L{TemplateContext}).

Templates (every string of C{request_headers.headers} and of
C{request_body}'s values and messages)::

    ${provider}  ${model}  ${session_id}  ${request_id}  ${client}
    ${env.NAME}  (only for NAME in templates.env_allowlist)
    $${          (a literal "${")

They are filled when a request is sent.  That is not the C{${VAR}} of the
rest of the configuration file, which is replaced from the environment when
the file is loaded: inside these two blocks the loader leaves every
C{${...}} alone, and a C{${NAME}} that is not one of the variables above is
an error (write C{${env.NAME}} and allow C{NAME}), so a typo can never send
an environment variable, a secret perhaps, to a provider.  C{${env.NAME}} is
read from the environment the configuration was loaded with (once, at
start-up); an allowed variable that is unset is the empty string.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lunaroute.errors import ConfigError

if TYPE_CHECKING:
    from lunaroute.config import ProviderSettings

__all__ = [
    "DEFAULT_ENV_ALLOWLIST",
    "REFUSED_HEADERS",
    "TEMPLATE_VARIABLES",
    "Modifier",
    "Template",
    "TemplateContext",
    "compile_modifier",
    "compile_template",
    "provider_modifiers",
]

# The per-request variables, in the order the documentation lists them.
TEMPLATE_VARIABLES = ("provider", "model", "session_id", "request_id", "client")

# Used when templates.env_allowlist is not set: the names the original
# guide's examples use (${env.USER}, ${env.PROJECT_NAME}), which say who or
# what a request is for and hold no credential.
DEFAULT_ENV_ALLOWLIST = ("USER", "LOGNAME", "PROJECT_NAME")

# Headers request_headers may not set: this hop's framing and connection
# (the gateway frames the body itself), the client's and the server's
# credentials (providers.<name>.api_key is the place for a key: it is
# masked in logs and replaces the client's), and the gateway's own token.
REFUSED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "authorization",
        "x-api-key",
        "x-lunaroute-token",
    }
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^}]*)\}")
# Control characters would end a header line early (header injection from
# a client-chosen model or session id): each becomes a space.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_HEADER_VALUE = 8192
# Roles that Anthropic's Messages API takes in its top-level `system`.
_SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class TemplateContext:
    """The values of one request's template variables (C{""} when unknown)."""

    provider: str = ""
    model: str = ""
    session_id: str = ""
    request_id: str = ""
    client: str = ""


@dataclass(frozen=True)
class Template:
    """
    A compiled template: literal text and variable names, in order.  An
    C{${env.NAME}} is already literal text (its value was read at start-up).
    """

    parts: tuple[tuple[bool, str], ...]

    @property
    def constant(self) -> bool:
        return not any(is_variable for is_variable, _ in self.parts)

    def render(self, context: TemplateContext) -> str:
        return "".join(getattr(context, text) if is_variable else text for is_variable, text in self.parts)


def compile_template(
    text: str, env_allowlist: Iterable[str], env: Mapping[str, str], key: str
) -> Template:
    """
    Compile one template string.

    @param env_allowlist: the names C{${env.NAME}} may use.
    @param env: the environment the configuration was loaded with.
    @param key: the dotted key path the string came from, for errors.
    @raise ConfigError: for an unknown variable, an C{${env.NAME}} whose
        name is not allowed, or an unclosed C{${}.
    """
    allowed = frozenset(env_allowlist)
    parts: list[tuple[bool, str]] = []
    literal: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal.append(text[position : match.start()])
        position = match.end()
        name = match[1]
        if name is None:  # $${
            literal.append("${")
            continue
        name = name.strip()
        if name.startswith("env."):
            variable = name[4:]
            if not _ENV_NAME.match(variable):
                raise ConfigError(f"${{{name}}}: not a valid environment variable name", key=key)
            if variable not in allowed:
                listed = ", ".join(sorted(allowed)) or "none"
                raise ConfigError(
                    f"${{env.{variable}}}: {variable} is not in templates.env_allowlist (allowed: {listed}); "
                    "add it there to send it to the provider",
                    key=key,
                )
            literal.append(env.get(variable, ""))
        elif name in TEMPLATE_VARIABLES:
            parts.append((False, "".join(literal)))
            literal = []
            parts.append((True, name))
        else:
            hint = ""
            if _ENV_NAME.match(name.split(":-")[0]):
                hint = f"; for an environment variable write ${{env.{name.split(':-')[0]}}} and allow it in templates.env_allowlist"
            raise ConfigError(
                f"unknown template variable ${{{name}}} (known: "
                + ", ".join(f"${{{v}}}" for v in TEMPLATE_VARIABLES)
                + f", ${{env.NAME}}){hint}",
                key=key,
            )
    rest = text[position:]
    if "${" in rest:
        raise ConfigError("unclosed '${' (write $${ for a literal '${')", key=key)
    literal.append(rest)
    parts.append((False, "".join(literal)))
    return Template(tuple((is_variable, value) for is_variable, value in parts if is_variable or value))


_Compile = Callable[[str, str], Template]


class _ValueTemplate:
    """A JSON-like value whose strings are templates (a body default, an override, a message)."""

    def __init__(self, value: Any, compile_: _Compile, key: str) -> None:
        self._value = self._compile(value, compile_, key)

    @classmethod
    def _compile(cls, value: Any, compile_: _Compile, key: str) -> Any:
        if isinstance(value, str):
            return compile_(value, key)
        if isinstance(value, Mapping):
            return {name: cls._compile(item, compile_, f"{key}.{name}") for name, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [cls._compile(item, compile_, f"{key}[{index}]") for index, item in enumerate(value)]
        return value

    def render(self, context: TemplateContext) -> Any:
        return self._render(self._value, context)

    @classmethod
    def _render(cls, value: Any, context: TemplateContext) -> Any:
        if isinstance(value, Template):
            return value.render(context)
        if isinstance(value, dict):
            return {name: cls._render(item, context) for name, item in value.items()}
        if isinstance(value, list):
            return [cls._render(item, context) for item in value]
        return value


class Modifier:
    """
    One provider's compiled request modification (see L{compile_modifier}).
    False when the provider changes nothing.
    """

    def __init__(
        self,
        headers: Iterable[tuple[str, Template]] = (),
        defaults: Mapping[str, _ValueTemplate] = types.MappingProxyType({}),
        overrides: Mapping[str, _ValueTemplate] = types.MappingProxyType({}),
        prepend_messages: Iterable[tuple[str, _ValueTemplate]] = (),
    ) -> None:
        self.headers = tuple((name.encode("ascii"), template) for name, template in headers)
        self.defaults = dict(defaults)
        self.overrides = dict(overrides)
        self.prepend_messages = tuple(prepend_messages)

    def __bool__(self) -> bool:
        return bool(self.headers or self.changes_body)

    @property
    def changes_body(self) -> bool:
        return bool(self.defaults or self.overrides or self.prepend_messages)

    def header_values(self, context: TemplateContext) -> list[tuple[bytes, bytes]]:
        """
        The headers to set (replacing any the client sent under the same
        name), as bytes.  A header whose value renders empty (an unset
        allowed environment variable, say) is left out.
        """
        out = []
        for name, template in self.headers:
            value = _CONTROL.sub(" ", template.render(context)).strip()[:_MAX_HEADER_VALUE]
            if value:
                out.append((name, value.encode("utf-8")))
        return out

    def modify_body(self, dialect: str | None, body: bytes, context: TemplateContext) -> bytes | None:
        """
        The body with this provider's defaults, overrides and prepended
        messages applied, re-serialised; C{None} when nothing changed (the
        caller then sends the client's bytes untouched) or when the body is
        not a JSON object of a known dialect.

        @param dialect: C{anthropic}, C{openai_chat} or C{openai_responses}
            (the body's wire format: the provider's).
        """
        if not self.changes_body or dialect not in ("anthropic", "openai_chat", "openai_responses"):
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        changed = False
        for name, value in self.defaults.items():
            if name not in data:
                data[name] = value.render(context)
                changed = True
        for name, value in self.overrides.items():
            forced = value.render(context)
            if name not in data or not _same(data[name], forced):
                data[name] = forced
                changed = True
        if self.prepend_messages:
            changed = _prepend(
                dialect, data, [(role, message.render(context)) for role, message in self.prepend_messages]
            ) or changed
        if not changed:
            return None
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (C{1}, C{1.0} and C{true} are three different values there)."""
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    return type(a) is type(b) and a == b


def _prepend(dialect: str, data: dict[str, Any], messages: list[tuple[str, dict[str, Any]]]) -> bool:
    """Put configured messages before the client's, where each dialect keeps them; whether it did."""
    if dialect == "anthropic":
        system = [message["content"] for role, message in messages if role in _SYSTEM_ROLES]
        turns = [message for role, message in messages if role not in _SYSTEM_ROLES]
        if system:
            data["system"] = _prepend_system(system, data.get("system"))
        if turns:
            existing = data.get("messages")
            data["messages"] = turns + (existing if isinstance(existing, list) else [])
        return True
    if dialect == "openai_chat":
        existing = data.get("messages")
        data["messages"] = [message for _, message in messages] + (existing if isinstance(existing, list) else [])
        return True
    # Responses: a turn continuing a stored response (previous_response_id,
    # as Codex sends over its WebSocket) already has them earlier in its
    # conversation; prepending again would repeat them every turn.
    if data.get("previous_response_id"):
        return False
    existing = data.get("input")
    if isinstance(existing, str):
        existing = [{"role": "user", "content": existing}]
    elif not isinstance(existing, list):
        existing = []
    data["input"] = [message for _, message in messages] + existing
    return True


def _prepend_system(parts: list[Any], existing: Any) -> Any:
    """Anthropic's C{system}: a string stays a string when it can, blocks stay blocks."""
    if all(isinstance(part, str) for part in parts) and (existing is None or isinstance(existing, str)):
        return "\n\n".join([*parts, *([existing] if existing else [])])
    blocks: list[Any] = []
    for part in parts:
        blocks.extend([{"type": "text", "text": part}] if isinstance(part, str) else part)
    if isinstance(existing, str) and existing:
        blocks.append({"type": "text", "text": existing})
    elif isinstance(existing, list):
        blocks.extend(existing)
    return blocks


def compile_modifier(
    provider: ProviderSettings, env_allowlist: Iterable[str], env: Mapping[str, str]
) -> Modifier:
    """
    Compile a provider's C{request_headers} and C{request_body} settings.

    @param env_allowlist: C{templates.env_allowlist}.
    @param env: the environment the configuration was loaded with (only
        the allowed names are read).
    @raise ConfigError: one line naming the key, for a template error or a
        header the gateway does not let configuration set.
    """
    allowlist = tuple(env_allowlist)
    prefix = f"providers.{provider.name}"

    def compile_(text: str, key: str) -> Template:
        return compile_template(text, allowlist, env, key)

    headers = []
    for name, value in provider.request_headers.items():
        key = f"{prefix}.request_headers.headers.{name}"
        if name.lower() in REFUSED_HEADERS:
            if name.lower() in ("authorization", "x-api-key"):
                why = f"credentials are set with {prefix}.api_key (masked in logs, replaces the client's)"
            else:
                why = "the gateway sets it for each hop"
            raise ConfigError(f"this header cannot be set by request_headers: {why}", key=key)
        headers.append((name, compile_(value, key)))
    body = provider.request_body
    defaults = {
        name: _ValueTemplate(value, compile_, f"{prefix}.request_body.defaults.{name}")
        for name, value in body.defaults.items()
    }
    overrides = {
        name: _ValueTemplate(value, compile_, f"{prefix}.request_body.overrides.{name}")
        for name, value in body.overrides.items()
    }
    messages = []
    for index, message in enumerate(body.prepend_messages):
        key = f"{prefix}.request_body.prepend_messages[{index}]"
        messages.append((str(message.get("role", "")).strip().lower(), _ValueTemplate(_thaw(message), compile_, key)))
    return Modifier(headers, defaults, overrides, messages)


def _thaw(value: Any) -> Any:
    """A frozen settings value (mapping proxies, tuples) as plain JSON-like data."""
    if isinstance(value, Mapping):
        return {name: _thaw(item) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(item) for item in value]
    return value


def provider_modifiers(
    providers: Iterable[ProviderSettings], env_allowlist: Iterable[str], env: Mapping[str, str]
) -> dict[str, Modifier]:
    """The compiled L{Modifier} of each provider that changes anything, by name."""
    allowlist = tuple(env_allowlist)
    compiled = {provider.name: compile_modifier(provider, allowlist, env) for provider in providers}
    return {name: modifier for name, modifier in compiled.items() if modifier}
