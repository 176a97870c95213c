"""
Turn one finished L{Exchange} into the session events every writer stores.

The JSONL files and the SQLite database are two views of the same events:
the SQLite writer builds its rows from these dicts alone, so that the
database can be rebuilt from the JSONL files.  This module is pure (no I/O,
no clock of its own unless asked) so the recorder can call it from its
writer thread and tests can call it directly.

Event names follow the original project: C{started}, C{request_recorded},
C{stream_started}, C{response_recorded}, C{tool_call_recorded} and
C{completed}.  Credentials are masked here, before any writer sees them.
"""

from __future__ import annotations

import hashlib
import io
import json
import json.encoder
import math
import pickle
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from lunaroute.exchange import Exchange
from lunaroute.pii.records import redact_value
from lunaroute.pii.redactor import Redactor
from lunaroute.secrets import SECRET_NAME_MEMO, is_secret_name, mask_value

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "EVENT_TYPES",
    "client_name",
    "exchange_events",
    "finite_json",
    "iso_timestamp",
    "json_dumps",
    "json_text",
    "request_facts",
    "request_text",
    "scrub_secrets",
    "strings_text",
    "shared_json",
    "tool_names",
]

# Bumped when an event's shape changes incompatibly, so an importer can tell
# old files from new ones.
EVENT_SCHEMA_VERSION = 1

EVENT_TYPES = (
    "started",
    "request_recorded",
    "stream_started",
    "response_recorded",
    "tool_call_recorded",
    "completed",
)

# --------------------------------------------------------------------------
# Secrets: what is one, and how it is shown, is decided by lunaroute.secrets
# (the same rules as the request log and the UI).

_mask_value = mask_value

_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def scrub_secrets(value: Any) -> Any:
    """
    Return C{value} (JSON-like data) with every value stored under a
    credential-like key (C{api_key}, C{x-api-key}, C{authorization}, ...)
    masked, at any depth.  Containers without a secret inside are returned as
    they are (shared, not copied): this walks every request body on the
    recorder thread, so the common case must stay cheap (no call per leaf).
    """
    kind = type(value)
    if kind is dict or (kind not in _CONTAINERS and isinstance(value, Mapping)):
        out = None
        known = SECRET_NAME_MEMO
        for key, item in value.items():
            if type(key) is str and (known[key] if key in known else is_secret_name(key)):
                new = _mask_value(item)
            elif type(item) in _SCALARS:
                continue
            else:
                new = scrub_secrets(item)
            if new is not item:
                if out is None:
                    out = dict(value)
                out[key] = new
        return value if out is None else out
    if kind is list or kind is tuple:
        items = None
        for index, item in enumerate(value):
            if type(item) in _SCALARS:
                continue
            new = scrub_secrets(item)
            if new is not item:
                if items is None:
                    items = list(value)
                items[index] = new
        return value if items is None else items
    return value


# --------------------------------------------------------------------------
# Numbers JSON can hold


def finite_json(value: Any) -> Any:
    """
    C{value} with every C{NaN}, C{Infinity} and C{-Infinity} (which Python's
    C{json.loads} accepts in a request body) replaced by C{None}, as
    JavaScript's C{JSON.stringify} does, so what the writers store parses
    with strict JSON parsers.  Only called after a strict C{json.dumps} has
    refused the value, so the common case pays nothing; containers are
    copied only where something changed.
    """
    kind = type(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if kind is dict or (kind not in _CONTAINERS and isinstance(value, Mapping)):
        out = None
        for key, item in value.items():
            new = finite_json(item)
            if new is not item:
                if out is None:
                    out = dict(value)
                out[key] = new
        return value if out is None else out
    if kind is list or kind is tuple:
        items = None
        for index, item in enumerate(value):
            new = finite_json(item)
            if new is not item:
                if items is None:
                    items = list(value)
                items[index] = new
        return value if items is None else items
    return value


# --------------------------------------------------------------------------
# JSON text, serialised once per batch

# The big values of an event (bodies, tool inputs) are stored by both
# writers: inside the JSONL line and in their own SQLite column.  While a
# shared_json() block is open on a thread, json_text() remembers the text of
# each value it serialised (by identity, keeping the value alive so its id
# cannot be reused), so the second writer gets it for free.
_shared = threading.local()


@contextmanager
def shared_json() -> Iterator[None]:
    """
    Within the block, L{json_text} serialises each value (by identity) once
    on this thread.  The recorder opens one per batch around its writers.
    """
    previous = getattr(_shared, "cache", None)
    _shared.cache = {}
    try:
        yield
    finally:
        _shared.cache = previous


def _make_encoder() -> Callable[[Any], str]:
    """
    Compact, not ASCII-escaped, strict JSON (C{NaN} raises C{ValueError}).
    C{json.dumps} with these options builds a new encoder on every call,
    which costs as much as encoding a small event: build the C encoder once.
    Cycles are not looked for: event values come from JSON or from us.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain way
        return lambda value: json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
        )
    encode = make(None, str, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(encode(value, 0))


_encode = _make_encoder()


def _dumps(value: Any) -> str:
    try:
        return _encode(value)
    except ValueError:
        # NaN or Infinity (Python's json.loads accepts them in a request
        # body) are not JSON: store them as null so strict parsers read it.
        return _encode(finite_json(value))


def _share_text(value: Any, text: str) -> None:
    """Tell the open L{shared_json} block that C{value} serialises as C{text}."""
    cache = getattr(_shared, "cache", None)
    if cache is not None:
        cache[id(value)] = (value, text)


def _upstream_request(exchange: Exchange, clean: Callable[[Any], Any]) -> dict[str, Any]:
    """
    The provider's view of the request, when it differs from the client's:
    C{upstream_request_json} (secrets masked; the body as text when it is
    not JSON) and C{upstream_path}.  Nothing when the client's bytes went
    unchanged.
    """
    raw = exchange.upstream_body
    if raw is None:
        return {}
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw.decode("utf-8", "replace")
    return {"upstream_request_json": clean(value), "upstream_path": exchange.upstream_path}


def _has_nan(raw: bytes) -> bool:
    """
    Whether C{raw} holds C{NaN}: from one capital N to the next (memchr,
    and capital N is rare in text), where a three-byte search steps
    through a big body only a few bytes at a time.  Many capitals: the
    plain search.
    """
    at = raw.find(b"N")
    for _ in range(64):
        if at < 0:
            return False
        if raw.startswith(b"NaN", at):
            return True
        at = raw.find(b"N", at + 1)
    return b"NaN" in raw


def _body_text(raw: bytes) -> str | None:
    """
    The request body's own bytes as the JSON text of its parsed value (the
    proxy parsed exactly these bytes), when they can stand for it on one
    line: UTF-8, an object, no line break, no C{NaN}/C{Infinity} (which
    strict JSON has not).  Spares serialising a body of up to megabytes
    again; C{None} means "serialise it".
    """
    if not raw.startswith(b"{") or b"\n" in raw or b"\r" in raw or _has_nan(raw) or b"Infinity" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def json_dumps(value: Any) -> str:
    """
    C{value} as compact JSON text like L{json_text}, without the batch's
    cache: for values no other writer serialises (a whole event, or an
    event without its bodies), where remembering the text only costs.
    """
    return _dumps(value)


def json_text(value: Any) -> str:
    """
    C{value} as compact JSON text (not ASCII-escaped; C{NaN} and
    C{Infinity} as C{null}), from the batch's cache when L{shared_json} is
    active and the same object was serialised before.
    """
    cache = getattr(_shared, "cache", None)
    if cache is None or type(value) not in _CONTAINERS:
        return _dumps(value)
    hit = cache.get(id(value))
    if hit is not None:
        return hit[1]
    text = _dumps(value)
    cache[id(value)] = (value, text)
    return text


# --------------------------------------------------------------------------
# Request text, for full-text search


def _content_text(content: Any) -> list[str]:
    """Text parts of a message's content in any of the three dialects."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif (type(part) is dict or isinstance(part, Mapping)) and part.get("type") in (
                "text",
                "input_text",
                "output_text",
            ):
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
    return out


def _turn_start(messages: list[Any]) -> int:
    """
    Where the request's new turn starts: just after its last assistant
    message (or Codex function call) before the last message, 0 when it
    has none.  Clients resend
    the whole conversation with every request; what comes before was
    recorded with an earlier request.
    """
    # A trailing assistant message is a prefill (the start of the answer
    # asked for), not an earlier turn.
    end = len(messages) - 1 if messages and _role(messages[-1]) == "assistant" else len(messages)
    # From the end: the last turn is near it, the history can be long.
    for index in range(end - 1, -1, -1):
        message = messages[index]
        if _role(message) == "assistant" or (
            (type(message) is dict or isinstance(message, Mapping))
            and message.get("type") in ("function_call", "custom_tool_call")
        ):
            return index + 1
    return 0


def request_text(body: Mapping[str, Any] | None) -> str:
    """
    The text a request adds to its conversation, for search: the system
    prompt (and system or developer messages) when the conversation has no
    assistant turn yet, then the user, system and developer text after its
    last assistant turn, joined by blank lines.

    Earlier turns are left out (each was recorded with the request that
    brought it, so a word is indexed once, not once per later turn), and so
    are tool results (recorded as C{tool_result_text}) and images.
    """
    if not isinstance(body, Mapping):
        return ""
    parts: list[str] = []
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")  # OpenAI Responses
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list):
        messages = []
    start = _turn_start(messages)
    if start == 0:
        for key in ("system", "instructions"):
            parts += _content_text(body.get(key))
    for message in messages[start:]:
        if _role(message) in ("user", "system", "developer"):
            parts += _content_text(message.get("content"))
    return "\n\n".join(p for p in parts if p)


def tool_names(body: Mapping[str, Any] | None) -> list[str]:
    """Names of the tools a request offers the model, in every dialect."""
    if not isinstance(body, Mapping) or not isinstance(body.get("tools"), list):
        return []
    names: list[str] = []
    for tool in body["tools"]:
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function")
        name = tool.get("name")
        if name is None and isinstance(function, Mapping):
            name = function.get("name")  # OpenAI Chat
        if name is None:
            name = tool.get("type")  # built-in tools: web_search, ...
        if isinstance(name, str):
            names.append(name)
    return names


# --------------------------------------------------------------------------
# What the session API shows about a request: where it came from, what it
# is about, and whether the cached prefix changed.

TITLE_MAX_CHARS = 120

# A text part that is one tagged block is context the client injected
# (Claude Code's <system-reminder>, Codex's <environment_context> and
# <user_instructions>), not what the user typed.
_TAGGED_BLOCK = re.compile(r"^\s*<([A-Za-z][\w-]*)[^>]*>.*</\1>\s*$", re.DOTALL)
# Claude Code's system prompt: " - Primary working directory: /path" (older
# versions: "Working directory: /path").
_CLAUDE_CWD = re.compile(r"^[ \t-]*(?:Primary working directory|Working directory): *(\S[^\n]*?)\s*$", re.MULTILINE)
# Codex's <environment_context> user message.
_CODEX_CWD = re.compile(r"<cwd>([^<\n]+)</cwd>")

_CLIENTS = (
    ("claude-cli/", "Claude Code"),
    ("claude-code/", "Claude Code"),
    ("codex_exec/", "Codex"),
    ("codex_cli_rs/", "Codex"),
    ("codex-tui/", "Codex"),
    ("codex/", "Codex"),
    ("opencode/", "OpenCode"),
    ("anthropic/python", "Anthropic Python SDK"),
    ("anthropic/js", "Anthropic TypeScript SDK"),
    ("openai/python", "OpenAI Python SDK"),
    ("openai/js", "OpenAI Node SDK"),
)


def client_name(user_agent: str | None) -> str | None:
    """
    The client a user agent names: C{Claude Code}, C{Codex}, C{OpenCode},
    an official SDK (C{Anthropic Python SDK}, ...), else the agent's first
    product token (C{curl}), or C{None} without a user agent.
    """
    if not isinstance(user_agent, str) or not user_agent.strip():
        return None
    lowered = user_agent.strip().lower()
    for prefix, name in _CLIENTS:
        if lowered.startswith(prefix):
            return name
    product = user_agent.strip().split()[0].split("/")[0]
    return product[:60] or None


def strings_text(value: Any, limit: int = 1_000_000) -> str:
    """
    The string leaves of JSON-like data (a tool call's input, a tool
    result's content), one per line, for the full-text index: escapes such
    as C{\\n} would glue words together in JSON text.
    """
    out: list[str] = []
    size = 0
    stack = [value]
    while stack and size < limit:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            size += len(item)
        elif isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
    return "\n".join(out)


def _sha256(value: Any) -> str:
    """
    A fingerprint of JSON-like data: equal values (same keys in the same
    order) give equal hashes.  Pickle protocol 5 without its memo (so object
    identity plays no part) serialises a 60 kB tool list five times faster
    than JSON; what matters is comparing turns, not reproducing the hash
    elsewhere.
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True
    try:
        pickler.dump(value)
        data = buffer.getvalue()
    except (RecursionError, pickle.PicklingError, TypeError, ValueError):
        data = _dumps(value).encode("utf-8", "backslashreplace")
    return hashlib.sha256(data).hexdigest()


def _messages(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")
    return messages if isinstance(messages, list) else []


def _role(message: Any) -> str | None:
    if type(message) is not dict and not isinstance(message, Mapping):
        return None
    role = message.get("role")
    return role if isinstance(role, str) else None


def _result_text(content: Any) -> str:
    """A tool result's text: its text parts (not their C{type} keys), or its strings."""
    if isinstance(content, list):
        return "\n".join(_content_text(content))
    return strings_text(content)


def _tool_results(messages: list[Any]) -> tuple[str, list[str]]:
    """
    The tool results this request brings back: those after its last
    assistant turn (earlier ones were indexed with the request that brought
    them), in the three dialects, and the ids of the calls whose result
    is marked as an error (Anthropic's C{is_error}).
    """
    start = _turn_start(messages)
    parts: list[str] = []
    errors: list[str] = []
    for message in messages[start:]:
        if type(message) is not dict and not isinstance(message, Mapping):
            continue
        kind = message.get("type")
        if kind in ("function_call_output", "custom_tool_call_output"):
            parts.append(_result_text(message.get("output")))
        elif _role(message) == "tool":  # OpenAI Chat
            parts.append(_result_text(message.get("content")))
        elif _role(message) == "user" and isinstance(message.get("content"), list):
            for part in message["content"]:
                if (type(part) is dict or isinstance(part, Mapping)) and part.get("type") == "tool_result":
                    parts.append(_result_text(part.get("content")))
                    if part.get("is_error") is True and isinstance(part.get("tool_use_id"), str):
                        errors.append(part["tool_use_id"])
    return "\n\n".join(p for p in parts if p), errors


def _title(messages: list[Any]) -> str | None:
    for message in messages:
        if _role(message) != "user":
            continue
        for text in _content_text(message.get("content")):
            if not text.strip() or _TAGGED_BLOCK.match(text):
                continue
            line = " ".join(text.split())
            if len(line) > TITLE_MAX_CHARS:
                line = line[: TITLE_MAX_CHARS - 1].rstrip() + "…"
            return line
    return None


def _system_parts(body: Mapping[str, Any]) -> list[Any]:
    parts: list[Any] = []
    for key in ("system", "instructions"):
        if body.get(key) is not None:
            parts.append(body[key])
    for message in _messages(body):
        if _role(message) in ("system", "developer"):
            parts.append(message.get("content"))
    return parts


def _project(body: Mapping[str, Any], system: list[Any]) -> str | None:
    for part in system:
        for text in _content_text(part):
            found = _CLAUDE_CWD.search(text)
            if found:
                return found.group(1)[:1000]
    for message in _messages(body):
        if _role(message) in ("user", "developer", "system"):
            for text in _content_text(message.get("content")):
                if "<cwd>" in text:
                    found = _CODEX_CWD.search(text)
                    if found:
                        return found.group(1).strip()[:1000]
    return None


def request_facts(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    What the session API shows about a request, from its body:
    C{system_sha256} and C{tools_sha256} (SHA-256 fingerprints of the system
    prompt and of the tool definitions, C{None} when absent: a change
    between turns explains a cache miss), C{title} (the first user text
    that is not injected context, on one line, cut to 120 characters),
    C{project} (the working directory Claude Code states in its system
    prompt, or Codex in its C{<environment_context>} message) and
    C{tool_result_text} (the tool results it brings back, for search) and
    C{tool_error_ids} (the tool calls whose result it marks as an error).
    """
    if not isinstance(body, Mapping):
        return {"system_sha256": None, "tools_sha256": None, "title": None, "project": None,
                "tool_result_text": "", "tool_error_ids": []}
    system = _system_parts(body)
    tools = body.get("tools")
    messages = _messages(body)
    result_text, error_ids = _tool_results(messages)
    return {
        "system_sha256": _sha256(system) if system else None,
        "tools_sha256": _sha256(tools) if isinstance(tools, list) and tools else None,
        "title": _title(messages) if messages else (
            _title([{"role": "user", "content": body["input"]}]) if isinstance(body.get("input"), str) else None
        ),
        "project": _project(body, system),
        "tool_result_text": result_text,
        "tool_error_ids": error_ids,
    }


def _message_count(body: Mapping[str, Any] | None) -> int:
    if not isinstance(body, Mapping):
        return 0
    for key in ("messages", "input"):
        value = body.get(key)
        if isinstance(value, list):
            return len(value)
        if isinstance(value, str):
            return 1
    return 0


# --------------------------------------------------------------------------
# Timestamps


def iso_timestamp(seconds: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds: C{2025-01-31T23:59:59.123Z}."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_iso() -> str:
    return iso_timestamp(time.time())


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 3)


def _gap_summary(gaps: list[float]) -> dict[str, float] | None:
    """Mean, median, 95th percentile and max of the gaps between chunks."""
    if not gaps:
        return None
    ordered = sorted(gaps)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "mean": round(sum(ordered) / len(ordered), 3),
        "p50": round(pick(0.5), 3),
        "p95": round(pick(0.95), 3),
        "max": round(ordered[-1], 3),
    }


# --------------------------------------------------------------------------
# The events


def _header_dict(headers: Mapping[str, str]) -> dict[str, str]:
    """A new plain dict of headers: C{copy()} when the mapping has one (a dict, L{MaskedHeaders})."""
    copy = getattr(headers, "copy", None)
    if callable(copy):
        copied = copy()
        if type(copied) is dict:
            return copied
    return dict(headers)


def exchange_events(
    exchange: Exchange, now_iso: Callable[[], str] | None = None, redactor: Redactor | None = None
) -> list[dict[str, Any]]:
    """
    The events that record C{exchange}, in order, with secrets masked.

    @param now_iso: returns the current time as an ISO string; used only for
        a milestone the exchange never reached (an exchange that is recorded
        always has C{received}, and normally C{finished}).
    @param redactor: PII redaction (C{session_recording.pii}) of everything
        people and tools wrote: the bodies (before the title, search text
        and project are taken from them, so a value cut short in a title
        cannot escape), headers, the response's text, thinking, tool calls
        and errors, and the client's IP.  Ids, timestamps, models and
        figures are left alone.  A value whose redaction fails is dropped
        and counted (L{lunaroute.pii.records.redact_value}).  A new content
        field must go through C{clean} or C{plain} below.
    """
    now = now_iso or _now_iso
    t = exchange.timings
    masked: dict[int, tuple[Any, Any]] = {}

    def clean(value: Any) -> Any:
        # Secrets are masked in the containers only (the events' own keys
        # are never credential names), each object once even when it
        # appears in several events (a tool call's input is in the response
        # message, the response event and its own event).
        if type(value) not in _CONTAINERS:
            return value
        hit = masked.get(id(value))
        if hit is None:
            scrubbed = scrub_secrets(value)
            if redactor is not None:
                scrubbed = redact_value(scrubbed, redactor)
            hit = masked[id(value)] = (value, scrubbed)
        return hit[1]

    def plain(value: str | None) -> str | None:
        if redactor is None or not value:
            return value
        redacted: str = redact_value(value, redactor)
        return redacted

    def stamp(*candidates: float | None) -> str:
        for seconds in candidates:
            if seconds is not None:
                return iso_timestamp(seconds)
        return now()

    def event(kind: str, at: str, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "session_id": exchange.session_id,
            "request_id": exchange.request_id,
            "timestamp": at,
            "schema_version": EVENT_SCHEMA_VERSION,
            **fields,
        }

    received_at = stamp(t.received)
    end_at = stamp(t.last_byte, t.headers_received, t.finished, t.received)
    finished_at = stamp(t.finished, t.last_byte, t.received)

    summary = exchange.response
    usage = summary.usage if summary is not None else None
    body = clean(exchange.request_json)
    if body is not None and body is exchange.request_json:
        # Nothing was masked: the body's bytes are its JSON text.
        text = _body_text(exchange.request_body)
        if text is not None:
            _share_text(body, text)
    events: list[dict[str, Any]] = [
        event(
            "started",
            received_at,
            model_requested=exchange.model,
            provider=exchange.provider,
            listener=exchange.listener,
            dialect=exchange.dialect,
            streaming=exchange.streaming,
            client_ip=plain(exchange.client_ip),
            user_agent=plain(exchange.user_agent),
            client=plain(client_name(exchange.user_agent)),
            method=exchange.method,
            # The query string is the client's: it can hold anything.
            path=plain(exchange.path),
        ),
        event(
            "request_recorded",
            received_at,
            **request_facts(body),
            request_text=request_text(body),
            request_json=body,
            body_bytes=len(exchange.request_body),
            message_count=_message_count(body),
            tools=tool_names(body),
            request_headers=clean(_header_dict(exchange.request_headers)),
            **_upstream_request(exchange, clean),
        ),
    ]

    # Only a stream that produced a byte has a time to first token.
    if exchange.streaming and t.first_byte is not None:
        events.append(event("stream_started", stamp(t.first_byte), ttft_ms=_round(t.ttft_ms)))

    tool_calls = summary.tool_calls if summary is not None else []
    if summary is not None or exchange.status is not None:
        events.append(
            event(
                "response_recorded",
                end_at,
                status=exchange.status,
                model_used=summary.model if summary is not None else None,
                response_id=summary.response_id if summary is not None else None,
                response_text=plain(summary.text) if summary is not None else "",
                thinking=plain(summary.thinking) if summary is not None else "",
                response_json=clean(summary.message) if summary is not None else None,
                response_error=clean(summary.error) if summary is not None else None,
                stop_reason=summary.stop_reason if summary is not None else None,
                partial=summary.partial if summary is not None else False,
                streaming=summary.streaming if summary is not None else exchange.streaming,
                provider_latency_ms=_round(t.provider_ms),
                pre_proxy_ms=_round(t.pre_proxy_ms),
                post_proxy_ms=_round(t.post_proxy_ms),
                proxy_overhead_ms=_round(t.proxy_overhead_ms),
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                thinking_tokens=usage.thinking_tokens if usage else 0,
                cache_read_tokens=usage.cache_read_tokens if usage else 0,
                cache_creation_tokens=usage.cache_creation_tokens if usage else 0,
                cache_creation_1h_tokens=usage.cache_creation_1h_tokens if usage else 0,
                thinking_tokens_exact=usage.thinking_tokens_exact if usage else False,
                tool_input_text="\n\n".join(
                    f"{call.name or ''}\n{strings_text(clean(call.input))}" for call in tool_calls
                ),
                tool_calls=[
                    {"id": call.id, "name": call.name, "input": clean(call.input)} for call in tool_calls
                ],
                chunk_count=exchange.chunk_count,
                event_count=summary.event_count if summary is not None else 0,
                bytes_out=exchange.bytes_out,
                chunk_gap_ms=_gap_summary(exchange.chunk_gaps_ms),
                response_headers=clean(_header_dict(exchange.response_headers)),
            )
        )

    for index, call in enumerate(tool_calls):
        events.append(
            event(
                "tool_call_recorded",
                end_at,
                index=index,
                tool_name=call.name,
                tool_call_id=call.id,
                input=clean(call.input),
            )
        )

    input_tokens = usage.input_tokens if usage else 0
    output_tokens = usage.output_tokens if usage else 0
    events.append(
        event(
            "completed",
            finished_at,
            success=exchange.success,
            outcome=exchange.outcome,
            error=plain(exchange.error),
            error_type=exchange.error_type,
            status=exchange.status,
            # With routing: the rule and each attempt (provider, status or
            # error, duration); empty for a plain passthrough.
            routing_rule=exchange.rule,
            attempts=[clean(dict(attempt)) for attempt in exchange.attempts],
            finish_reason=summary.stop_reason if summary is not None else None,
            model_used=summary.model if summary is not None else None,
            final_stats={
                "tokens": {
                    "input": input_tokens,
                    "output": output_tokens,
                    "thinking": usage.thinking_tokens if usage else 0,
                    "cache_read": usage.cache_read_tokens if usage else 0,
                    "cache_creation": usage.cache_creation_tokens if usage else 0,
                    "cache_creation_1h": usage.cache_creation_1h_tokens if usage else 0,
                    "total": input_tokens + output_tokens,
                    "thinking_estimated": bool(usage and not usage.thinking_tokens_exact),
                },
                "estimated_cost_usd": exchange.cost_usd,
                "duration_ms": _round(t.total_ms),
                "proxy_overhead_ms": _round(t.proxy_overhead_ms),
                "provider_ms": _round(t.provider_ms),
                "ttft_ms": _round(t.ttft_ms) if t.first_byte is not None else None,
                "tool_calls": len(tool_calls),
                "tool_results": [clean(dict(result)) for result in exchange.tool_results],
            },
        )
    )
    return events
