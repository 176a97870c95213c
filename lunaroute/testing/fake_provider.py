"""
A fake upstream LLM provider on 127.0.0.1 that speaks the Anthropic Messages,
OpenAI Chat Completions and OpenAI Responses wire formats byte for byte.

The gateway's job is to relay provider bytes unchanged, record what passed and
survive whatever a provider does mid-stream.  Testing that against the real
APIs is slow, costly and not repeatable, so the test suite, the benchmark and
hand-driven runs of the real Claude Code and Codex CLIs all point at this fake
instead.  It answers with the exact event sequences, headers and error bodies
the real providers send (the official SDKs' streaming helpers are the judge),
and lets a test choose the behaviour through the request's C{model}:

    ============== =========================================================
    keyword        behaviour (substring of the request's model; combinable)
    ============== =========================================================
    (none)         a text answer: L{FakeProvider.reply_text}
    tools          a tool call: the first tool the request offers (one the
                   model names comes first: C{fake-tools-bash} picks C{Bash}),
                   or C{get_weather} when it offers none, its input streamed
                   in pieces; a text answer once the last message is a tool
                   result, so a CLI's tool loop ends
    parallel       with C{tools}: a short text block, then two tool calls
    thinking       a thinking / reasoning block before the answer (also when
                   the request enables C{thinking} or asks for C{reasoning})
    error-midstream  an error event after two content deltas (a plain error
                   response when not streaming)
    drop           the provider closes the TCP connection after two content
                   deltas, in the middle of the chunked body (when not
                   streaming: right after reading the request, no answer)
    burst          a long answer (about 120 kB in 60 deltas) written at once;
                   with C{drop}, the stream is cut after its last content
                   delta instead of its second
    overloaded     HTTP 529 C{overloaded_error} (503 on OpenAI routes)
    rate-limit     HTTP 429 with C{retry-after: 1}
    server-error   HTTP 500
    gzip           non-streaming bodies gzip-compressed, when the request's
                   C{accept-encoding} allows it
    slow           0.5 s between stream events unless C{chunk_delay} is set
    hang           never answers (for timeout tests)
    cache          usage reports cache reads/writes (also when the body
                   mentions C{cache_control} or C{prompt_cache_key})
    ============== =========================================================

Every delay goes through the injected C{IReactorTime}, so tests driving the
fake's L{IResource} in memory can use L{twisted.internet.task.Clock}.

Run it by hand with C{python -m lunaroute.testing.fake_provider --port 9999}
(it prints the port), then e.g. C{ANTHROPIC_BASE_URL=http://127.0.0.1:9999
claude -p hi --model fake-tools-bash}.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import json
import re
import struct
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = [
    "ANTHROPIC_MODELS",
    "OPENAI_MODELS",
    "FakeProvider",
    "ReceivedRequest",
    "anthropic_error_body",
    "estimate_tokens",
    "openai_error_body",
    "main",
]

log = Logger()

JSON_CONTENT_TYPE = "application/json"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

#: Models listed by C{GET /v1/models}: (id, owner, created) for OpenAI.
OPENAI_MODELS: tuple[tuple[str, str, int], ...] = (
    ("gpt-5", "system", 1754425777),
    ("gpt-5-codex", "system", 1757527818),
    ("gpt-4o-mini", "system", 1721172741),
    ("text-embedding-3-small", "system", 1705948997),
)

#: Models listed by C{GET /v1/models} with an C{anthropic-version} header:
#: (id, display name, created_at).
ANTHROPIC_MODELS: tuple[tuple[str, str, str], ...] = (
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)

# Appended to every text answer so each stream carries multi-byte UTF-8
# (an emoji outside the BMP and CJK) in its own deltas.
_MULTIBYTE_SUFFIX = " 🌙 月光"

_THINKING_TEXT = "The user greeted me. I should answer briefly and mention where the reply comes from."
_PARALLEL_PREFACE = "I'll check both places at once."
_DEFAULT_TOOL_INPUTS = (
    {"location": "San Francisco, CA", "unit": "celsius"},
    {"location": "Tokyo, Japan", "unit": "celsius"},
)
_DEFAULT_TOOL_NAME = "get_weather"
_SAFE_COMMAND = "echo hello from the fake provider"
_SLOW_DELAY = 0.5
# A long answer in few deltas (60 words of 2,000 characters): the stream is
# written without pauses, one event after another.
_BURST_TEXT = "".join(" " + "moon" * 500 for _ in range(60))
_RATE_LIMIT = 4000
_TOKEN_LIMIT = 400000
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Leading bytes of an MP3 file (an ID3v2 tag), then bytes that are not UTF-8.
_AUDIO_HEADER = b"ID3\x04\x00\x00\x00\x00\x00\x0f"
# Reason phrases for the codes Twisted does not know (it would say "Unknown").
_REASONS = {529: b"Overloaded"}


def estimate_tokens(data: bytes | str) -> int:
    """
    The fake's deterministic token count: one token per four UTF-8 bytes,
    rounded up, never less than one.  Input tokens are this applied to the
    whole request body; output tokens to the generated text, thinking and
    tool arguments.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return max(1, (len(raw) + 3) // 4)


def _dumps(value: Any) -> str:
    """Compact JSON with raw UTF-8, as both providers put it on the wire."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def anthropic_error_body(error_type: str, message: str, request_id: str | None = None) -> bytes:
    """An Anthropic error body: C{{"type":"error","error":{...},"request_id":...}}."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return _dumps(body).encode("utf-8")


def openai_error_body(
    message: str, error_type: str = "invalid_request_error", code: str | None = None
) -> bytes:
    """An OpenAI error body: C{{"error":{"message","type","param","code"}}}."""
    error = {"message": message, "type": error_type, "param": None, "code": code}
    return _dumps({"error": error}).encode("utf-8")


@dataclass
class ReceivedRequest:
    """One request exactly as the fake received it."""

    method: str
    path: str
    #: The raw bytes after C{?} (C{b""} when there is no query string).
    query: bytes
    #: Lower-case header name to every value it was sent with, in order.
    headers: dict[str, list[str]]
    body: bytes
    #: The body parsed as JSON, or C{None} when it is empty or not JSON.
    json: Any

    def header(self, name: str) -> str | None:
        """The first value of header C{name} (any case), or C{None}."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


ResponseOverride = tuple[int, "Mapping[str, str] | Sequence[tuple[str, str]]", "bytes | str"]


@dataclass(frozen=True)
class _Scenario:
    """What the request's model (and body) asks the fake to do."""

    tools: bool = False
    parallel: bool = False
    thinking: bool = False
    error_midstream: bool = False
    drop: bool = False
    overloaded: bool = False
    rate_limited: bool = False
    server_error: bool = False
    gzip: bool = False
    slow: bool = False
    hang: bool = False
    cache: bool = False
    burst: bool = False

    @classmethod
    def parse(cls, model: str, body: Mapping[str, Any], raw: bytes) -> _Scenario:
        """Read the keywords out of C{model}, plus the body's own switches."""
        m = model.lower()
        thinking_param = body.get("thinking")
        reasoning_param = body.get("reasoning")
        thinking = (
            "thinking" in m
            or (isinstance(thinking_param, Mapping) and thinking_param.get("type") in ("enabled", "adaptive"))
            or (
                isinstance(reasoning_param, Mapping)
                and reasoning_param.get("effort") not in (None, "none", "minimal")
            )
        )
        return cls(
            tools="tools" in m,
            parallel="parallel" in m,
            thinking=thinking,
            error_midstream="error-midstream" in m,
            drop="drop" in m,
            overloaded="overloaded" in m,
            rate_limited="rate-limit" in m or "ratelimit" in m,
            server_error="server-error" in m,
            gzip="gzip" in m,
            slow="slow" in m,
            hang="hang" in m,
            burst="burst" in m,
            cache="cache" in m or b'"cache_control"' in raw or b'"prompt_cache_key"' in raw,
        )


@dataclass
class _Text:
    text: str


@dataclass
class _Thinking:
    thinking: str
    signature: str


@dataclass
class _ToolCall:
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return _dumps(self.arguments)


_Block = _Text | _Thinking | _ToolCall


@dataclass
class _Answer:
    """The dialect-neutral answer every renderer turns into its wire format."""

    model: str
    blocks: list[_Block]
    uses_tools: bool
    prompt_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    output_tokens: int
    reasoning_tokens: int


@dataclass
class _Event:
    """One SSE event before framing: its C{event:} name (or C{None}) and data."""

    name: str | None
    data: dict[str, Any] | str
    #: Carries generated content (text, thinking or tool-argument delta).
    content: bool = False


class _Ids:
    """Deterministic, realistic-looking identifiers (same sequence every run)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def make(self, prefix: str, length: int, alphabet: str = _BASE62) -> str:
        seed = f"{prefix}:{next(self._counter)}".encode()
        digest = int.from_bytes(hashlib.sha256(seed).digest(), "big")
        chars = []
        for _ in range(length):
            digest, rem = divmod(digest, len(alphabet))
            chars.append(alphabet[rem])
        return prefix + "".join(chars)

    def hex(self, prefix: str, length: int = 48) -> str:
        return self.make(prefix, length, "0123456789abcdef")


def _split_text(text: str) -> list[str]:
    """Split C{text} into word-sized deltas, at least three when it can."""
    if not text:
        return []
    pieces = re.findall(r"\s*\S+|\s+", text)
    if len(pieces) < 3 and len(text) >= 3:
        third = -(-len(text) // 3)
        pieces = [text[i : i + third] for i in range(0, len(text), third)]
    return pieces


def _split_json(text: str) -> list[str]:
    """Cut serialised JSON into about four arbitrary pieces, as models stream it."""
    size = max(1, -(-len(text) // 4))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an C{accept-encoding} value allows a gzip-coded response."""
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        quality = 1.0
        match = re.search(r"q\s*=\s*([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                quality = 0.0
        if coding.strip().lower() in ("gzip", "x-gzip", "*") and quality > 0:
            return True
    return False


def _example_value(name: str, schema: Any) -> Any:
    """A plausible, harmless value for one property of a JSON schema."""
    if not isinstance(schema, Mapping):
        return "fake"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None and isinstance(schema.get("anyOf"), list) and schema["anyOf"]:
        return _example_value(name, schema["anyOf"][0])
    if kind == "array":
        if name == "command":
            return _SAFE_COMMAND.split(" ", 1)
        return []
    if kind == "object":
        return _example_input(schema)
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return False
    if name == "command":
        return _SAFE_COMMAND
    return "fake"


def _example_input(schema: Any) -> dict[str, Any]:
    """Fill a tool's required parameters (or its first one) with example values."""
    if not isinstance(schema, Mapping):
        return {}
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    if not names:
        names = list(properties)[:1]
    return {name: _example_value(name, properties.get(name)) for name in names}


def _offered_tools(dialect: str, body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, parameter schema) of each client-side function tool the request offers."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    offered: list[tuple[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        if dialect == "anthropic":
            if isinstance(tool.get("name"), str) and "input_schema" in tool:
                offered.append((tool["name"], tool["input_schema"]))
        elif dialect == "chat":
            function = tool.get("function")
            if tool.get("type", "function") == "function" and isinstance(function, Mapping):
                if isinstance(function.get("name"), str):
                    offered.append((function["name"], function.get("parameters")))
        elif tool.get("type") == "function" and isinstance(tool.get("name"), str):
            offered.append((tool["name"], tool.get("parameters")))
    return offered


def _prefer_named_tools(offered: list[tuple[str, Any]], model: str) -> list[tuple[str, Any]]:
    """
    Move tools the model names (as a separate word: C{fake-tools-bash} names
    C{Bash}) to the front, so a CLI run can pick a harmless tool.
    """
    lowered = model.lower()

    def named(tool: tuple[str, Any]) -> bool:
        pattern = rf"(^|[-_:/.]){re.escape(tool[0].lower())}($|[-_:/.])"
        return re.search(pattern, lowered) is not None

    return sorted(offered, key=lambda tool: not named(tool))


def _last_turn_is_tool_result(dialect: str, body: Mapping[str, Any]) -> bool:
    """Whether the request's last turn hands back a tool's result."""
    if dialect == "responses":
        items = body.get("input")
        if not isinstance(items, list) or not items or not isinstance(items[-1], Mapping):
            return False
        return items[-1].get("type") in ("function_call_output", "custom_tool_call_output")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
        return False
    last = messages[-1]
    if dialect == "chat":
        return last.get("role") == "tool"
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(part, Mapping) and part.get("type") == "tool_result" for part in content
    )


class _Exchange:
    """
    One response the fake has not finished yet: it owns the request's
    delayed calls and notices when the client goes away first.
    """

    def __init__(self, provider: FakeProvider, request: Request, path: str) -> None:
        self.provider = provider
        self.request = request
        self.path = path
        self.done = False
        self.lost = False
        self.sent = bytearray()
        self._call: IDelayedCall | None = None
        provider._open.add(self)
        request.notifyFinish().addCallbacks(self._finished, self._connection_lost)

    @property
    def active(self) -> bool:
        return not (self.done or self.lost)

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run C{action} after C{delay} seconds on the provider's clock, or now."""
        if not self.active:
            return
        if delay > 0:
            self._call = self.provider.reactor.callLater(delay, self._run, action)
        else:
            action()

    def _run(self, action: Callable[[], None]) -> None:
        self._call = None
        if self.active:
            action()

    def _finished(self, _: object) -> None:
        self.provider._open.discard(self)

    def _connection_lost(self, reason: Failure) -> None:
        self.provider._open.discard(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.done:
            return
        self.lost = True
        self.provider._record_disconnect(self.path)

    def respond(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        compress: bool = False,
    ) -> None:
        """Send a whole response with a C{content-length}."""
        if not self.active:
            return
        request = self.request
        request.setResponseCode(status, _REASONS.get(status))
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        if compress:
            body = gzip.compress(body, mtime=0)
            request.responseHeaders.setRawHeaders("content-encoding", ["gzip"])
        request.responseHeaders.setRawHeaders("content-length", [str(len(body)).encode()])
        if body:
            request.write(body)
        self.finish()

    def start_stream(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        request = self.request
        request.setResponseCode(status)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        # Without a content-length Twisted sends HTTP/1.1 chunked encoding;
        # an empty write puts the status line and headers on the wire now.
        request.write(b"")

    def write(self, data: bytes) -> None:
        if self.active:
            self.sent += data
            self.request.write(data)

    def finish(self) -> None:
        if self.active:
            self.done = True
            self.request.finish()

    def drop(self) -> None:
        """Close the TCP connection without finishing the response."""
        if self.active:
            self.done = True
            self.provider.dropped_bodies.append(bytes(self.sent))
            # The channel's loseConnection, not the transport's: it
            # unregisters the channel as the transport's producer first, so a
            # close while the socket is backed up still happens once flushed.
            self.request.channel.loseConnection()


class _Streamer:
    """Writes one SSE stream event by event, honouring delay, gate and drop."""

    def __init__(
        self,
        exchange: _Exchange,
        frames: list[tuple[bytes, bool]],
        delay: float,
        drop_at_end: bool,
    ) -> None:
        self._exchange = exchange
        self._frames = frames
        self._delay = delay
        self._drop_at_end = drop_at_end
        self._position = 0
        self._gated = False

    def start(self) -> None:
        self._step()

    def _step(self) -> None:
        exchange = self._exchange
        if not exchange.active:
            return
        if self._position >= len(self._frames):
            if self._drop_at_end:
                exchange.drop()
            else:
                exchange.finish()
            return
        data, is_content = self._frames[self._position]
        self._position += 1
        exchange.write(data)
        if is_content and not self._gated:
            self._gated = True
            gate = exchange.provider.gate
            if gate is not None:
                gate.addBoth(self._gate_opened)
                return
        self._schedule()

    def _gate_opened(self, result: object) -> object:
        self._schedule()
        return result

    def _schedule(self) -> None:
        more = self._position < len(self._frames)
        self._exchange.later(self._delay if more else 0.0, self._step)


def _frame(event: _Event) -> bytes:
    data = event.data if isinstance(event.data, str) else _dumps(event.data)
    head = f"event: {event.name}\n" if event.name is not None else ""
    return f"{head}data: {data}\n\n".encode()


def _cut_midstream(events: list[_Event], after_content: int = 2) -> list[_Event]:
    """Keep events up to the C{after_content}-th content delta (or the last one)."""
    seen = 0
    last_content = -1
    for index, event in enumerate(events):
        if event.content:
            seen += 1
            last_content = index
            if seen == after_content:
                break
    return events[: last_content + 1]


class _FakeProviderResource(Resource):
    """The fake's only resource: every path and method goes to the provider."""

    isLeaf = True

    def __init__(self, provider: FakeProvider) -> None:
        super().__init__()
        self._provider = provider

    def render(self, request: Request) -> int:
        return self._provider._handle(request)


class _UnparsedFormRequest(Request):
    """A request that leaves multipart uploads unparsed: the fake reads raw bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(*args, **kwargs)


class FakeProvider:
    """
    A fake Anthropic + OpenAI upstream.  Serve L{resource} in memory, or
    L{listen} on 127.0.0.1; set the knobs below from a test at any time.
    """

    def __init__(self, reactor: IReactorTime | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = cast(IReactorTime, global_reactor)
        self.reactor: IReactorTime = reactor
        #: Every request received, in arrival order.
        self.requests: list[ReceivedRequest] = []
        #: The answer's text; each answer is this plus a multi-byte tail
        #: (see L{reply_text}).
        self.default_text: str = "Hello from the fake provider."
        #: Appended to C{default_text} so every stream carries multi-byte
        #: UTF-8 (emoji and CJK); set to C{""} for a plain answer.
        self.text_suffix: str = _MULTIBYTE_SUFFIX
        #: Seconds between SSE events (C{slow} models use 0.5 when this is 0).
        self.chunk_delay: float = 0.0
        #: Seconds to wait before answering any API request (time to first byte).
        self.response_delay: float = 0.0
        #: While set, each stream stops after its first content event until
        #: this Deferred fires (read when the stream reaches that point).
        self.gate: Deferred[Any] | None = None
        #: Paths of responses (streaming, delayed or hung) whose client
        #: connection was lost before the fake finished them.
        self.disconnects: list[str] = []
        #: C{(status, headers, body)} sent once, for the next API request
        #: (probes of C{/} do not consume it), instead of its normal answer.
        self.next_response: ResponseOverride | None = None
        #: Further overrides, used in order once C{next_response} is spent.
        self.queued_responses: list[ResponseOverride] = []
        #: Share (0 to 1) of the Anthropic cache writes reported as 1-hour
        #: writes (C{usage.cache_creation.ephemeral_1h_input_tokens}); the
        #: rest are 5-minute writes.
        self.cache_write_1h_share: float = 0.0
        #: The body bytes of each response the fake cut short by closing the
        #: connection (C{drop}, or L{stop} while it was open), in order: what
        #: a relay should have passed on.
        self.dropped_bodies: list[bytes] = []
        #: C{http://host:port} of the last L{listen}, for building client URLs.
        self.url: str | None = None
        self._ids = _Ids()
        self._open: set[_Exchange] = set()
        self._ports: list[IListeningPort] = []
        self._disconnect_waiters: list[tuple[int, Deferred[str]]] = []
        self._request_waiters: list[tuple[int, Deferred[ReceivedRequest]]] = []

    # -- public API --------------------------------------------------------

    @property
    def reply_text(self) -> str:
        """The exact text of a plain answer: C{default_text + text_suffix}."""
        return self.default_text + self.text_suffix

    def resource(self) -> IResource:
        """The fake as a twisted.web resource (for a Site or StubTreq)."""
        return _FakeProviderResource(self)

    def site(self) -> Site:
        """A quiet L{Site} serving L{resource}, that keeps upload bodies raw."""
        site = Site(self.resource(), reactor=self.reactor)
        site.requestFactory = _UnparsedFormRequest
        site.noisy = False
        return site

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> IListeningPort:
        """Listen with C{self.reactor.listenTCP}; C{getHost().port} tells the port."""
        # Twisted's annotation of listenTCP does not accept a Site (generic variance).
        listening = cast(IReactorTCP, self.reactor).listenTCP(
            port, self.site(), interface=interface  # type: ignore[arg-type]
        )
        self._ports.append(listening)
        self.url = f"http://{interface}:{cast(IPv4Address, listening.getHost()).port}"
        return listening

    def stop(self) -> Deferred[None]:
        """
        Stop every port L{listen} opened and close every connection whose
        response is still open (hung or gated), without counting those as
        client disconnects.  Fires when the ports are closed.
        """
        for exchange in list(self._open):
            exchange.drop()
        ports, self._ports = self._ports, []
        results = [succeed(port.stopListening()) for port in ports]
        done: Deferred[None] = gatherResults(results).addCallback(lambda _: None)
        return done

    def on_disconnect(self, count: int = 1) -> Deferred[str]:
        """
        A Deferred firing with the path of the C{count}-th entry of
        L{disconnects} once there is one (at once if there already is).
        """
        waiter: Deferred[str] = Deferred()
        self._disconnect_waiters.append((count, waiter))
        self._wake_waiters()
        return waiter

    def on_request(self, count: int = 1) -> Deferred[ReceivedRequest]:
        """A Deferred firing with the C{count}-th received request once it arrived."""
        waiter: Deferred[ReceivedRequest] = Deferred()
        self._request_waiters.append((count, waiter))
        self._wake_waiters()
        return waiter

    # -- internals -------------------------------------------------------

    def _wake_waiters(self) -> None:
        ready_d = [(c, d) for c, d in self._disconnect_waiters if len(self.disconnects) >= c]
        ready_r = [(c, d) for c, d in self._request_waiters if len(self.requests) >= c]
        self._disconnect_waiters = [w for w in self._disconnect_waiters if w not in ready_d]
        self._request_waiters = [w for w in self._request_waiters if w not in ready_r]
        for count, waiter in ready_d:
            waiter.callback(self.disconnects[count - 1])
        for count, waiter_r in ready_r:
            waiter_r.callback(self.requests[count - 1])

    def _record_disconnect(self, path: str) -> None:
        log.info("fake provider: client left {path} before the response ended", path=path)
        self.disconnects.append(path)
        self._wake_waiters()

    def _record(self, request: Request) -> ReceivedRequest:
        headers: dict[str, list[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            key = name.decode("latin-1").lower()
            headers.setdefault(key, []).extend(v.decode("latin-1") for v in values)
        content = request.content
        assert content is not None, "Request.gotLength made it before the request was handled"
        content.seek(0)
        body = content.read()
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        uri = request.uri
        query = uri.split(b"?", 1)[1] if b"?" in uri else b""
        received = ReceivedRequest(
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            query=query,
            headers=headers,
            body=body,
            json=parsed,
        )
        self.requests.append(received)
        return received

    def _take_override(self) -> ResponseOverride | None:
        if self.next_response is not None:
            override, self.next_response = self.next_response, None
            return override
        if self.queued_responses:
            return self.queued_responses.pop(0)
        return None

    def _handle(self, request: Request) -> int:
        received = self._record(request)
        self._wake_waiters()
        log.debug("fake provider: {method} {path}", method=received.method, path=received.path)
        exchange = _Exchange(self, request, received.path)
        if received.path == "/" and received.method in ("GET", "HEAD"):
            exchange.respond(200, [("content-type", "text/plain; charset=utf-8")], b"")
            return NOT_DONE_YET
        override = self._take_override()
        exchange.later(self.response_delay, lambda: self._dispatch(received, exchange, override))
        return NOT_DONE_YET

    def _dispatch(
        self, received: ReceivedRequest, exchange: _Exchange, override: ResponseOverride | None
    ) -> None:
        if override is not None:
            self._send_override(exchange, override)
            return
        method, path = received.method, received.path
        routes: dict[tuple[str, str], Callable[[ReceivedRequest, _Exchange], None]] = {
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
            ("POST", "/v1/chat/completions"): self._chat_completions,
            ("POST", "/chat/completions"): self._chat_completions,
            ("POST", "/v1/responses"): self._responses,
            ("POST", "/responses"): self._responses,
            ("GET", "/v1/models"): self._models,
            ("GET", "/models"): self._models,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/files"): self._files,
            ("POST", "/v1/audio/speech"): self._speech,
        }
        handler = routes.get((method, path))
        if handler is not None:
            handler(received, exchange)
            return
        for prefix in ("/v1/models/", "/models/"):
            if method == "GET" and path.startswith(prefix) and len(path) > len(prefix):
                self._model(received, exchange, path[len(prefix) :])
                return
        self._not_found(received, exchange)

    def _send_override(self, exchange: _Exchange, override: ResponseOverride) -> None:
        status, headers, body = override
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("content-type", JSON_CONTENT_TYPE))
        raw = body.encode("utf-8") if isinstance(body, str) else body
        exchange.respond(status, pairs, raw)

    # -- headers -----------------------------------------------------------

    def _reset_time(self, seconds: float) -> str:
        stamp = time.gmtime(self.reactor.seconds() + seconds)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)

    def _anthropic_headers(self, request_id: str, content_type: str) -> list[tuple[str, str]]:
        remaining = str(max(0, _RATE_LIMIT - len(self.requests)))
        reset = self._reset_time(1)
        headers = [
            ("content-type", content_type),
            ("request-id", request_id),
            ("anthropic-organization-id", "00000000-0000-4000-8000-00000000fa4e"),
            ("anthropic-ratelimit-requests-limit", str(_RATE_LIMIT)),
            ("anthropic-ratelimit-requests-remaining", remaining),
            ("anthropic-ratelimit-requests-reset", reset),
        ]
        for kind in ("input-tokens", "output-tokens", "tokens"):
            headers += [
                (f"anthropic-ratelimit-{kind}-limit", str(_TOKEN_LIMIT)),
                (f"anthropic-ratelimit-{kind}-remaining", str(_TOKEN_LIMIT)),
                (f"anthropic-ratelimit-{kind}-reset", reset),
            ]
        if content_type == SSE_CONTENT_TYPE:
            headers.append(("cache-control", "no-cache"))
        return headers

    def _openai_headers(self, content_type: str) -> list[tuple[str, str]]:
        remaining = str(max(0, 10000 - len(self.requests)))
        headers = [
            ("content-type", content_type),
            ("x-request-id", self._ids.hex("req_", 32)),
            ("openai-organization", "fake-org"),
            ("openai-processing-ms", "1"),
            ("openai-version", "2020-10-01"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", remaining),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-limit-tokens", str(_TOKEN_LIMIT)),
            ("x-ratelimit-remaining-tokens", str(_TOKEN_LIMIT)),
            ("x-ratelimit-reset-tokens", "0s"),
        ]
        if content_type == SSE_CONTENT_TYPE:
            headers.append(("cache-control", "no-cache"))
        return headers

    # -- errors ----------------------------------------------------------

    def _anthropic_error(
        self,
        exchange: _Exchange,
        status: int,
        error_type: str,
        message: str,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        request_id = self._ids.make("req_011C", 20)
        headers = self._anthropic_headers(request_id, JSON_CONTENT_TYPE)
        headers.append(("x-should-retry", "true" if status in (429, 500, 529) else "false"))
        headers.extend(extra)
        exchange.respond(status, headers, anthropic_error_body(error_type, message, request_id))

    def _openai_error(
        self,
        exchange: _Exchange,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        headers = self._openai_headers(JSON_CONTENT_TYPE) + list(extra)
        exchange.respond(status, headers, openai_error_body(message, error_type, code))

    def _not_found(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        if received.header("anthropic-version") is not None:
            self._anthropic_error(exchange, 404, "not_found_error", "Not Found")
            return
        self._openai_error(exchange, 404, f"Invalid URL ({received.method} {received.path})")

    def _scenario_error(self, dialect: str, scenario: _Scenario, exchange: _Exchange) -> bool:
        """Answer an error scenario; C{True} when the request is dealt with."""
        retry_after = [("retry-after", "1")]
        if dialect == "anthropic":
            if scenario.overloaded:
                self._anthropic_error(exchange, 529, "overloaded_error", "Overloaded")
            elif scenario.rate_limited:
                self._anthropic_error(
                    exchange,
                    429,
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization.",
                    retry_after,
                )
            elif scenario.server_error:
                self._anthropic_error(exchange, 500, "api_error", "Internal server error")
            else:
                return False
            return True
        if scenario.overloaded:
            self._openai_error(exchange, 503, "The server is overloaded or not ready yet.", "server_error")
        elif scenario.rate_limited:
            self._openai_error(
                exchange,
                429,
                "Rate limit reached for requests.",
                "requests",
                "rate_limit_exceeded",
                retry_after,
            )
        elif scenario.server_error:
            self._openai_error(
                exchange,
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
            )
        else:
            return False
        return True

    # -- the answer ------------------------------------------------------

    def _answer(
        self, dialect: str, model: str, scenario: _Scenario, body: Mapping[str, Any], raw: bytes
    ) -> _Answer:
        blocks: list[_Block] = []
        if scenario.thinking:
            signature = base64.b64encode(hashlib.sha512(_THINKING_TEXT.encode()).digest()).decode()
            blocks.append(_Thinking(_THINKING_TEXT, "Eq" + signature))
        uses_tools = scenario.tools and not _last_turn_is_tool_result(dialect, body)
        if uses_tools:
            offered = _prefer_named_tools(_offered_tools(dialect, body), model)
            count = 2 if scenario.parallel else 1
            calls: list[_ToolCall] = []
            for index in range(count):
                if offered:
                    name, schema = offered[min(index, len(offered) - 1)]
                    arguments = _example_input(schema)
                else:
                    name, arguments = _DEFAULT_TOOL_NAME, dict(_DEFAULT_TOOL_INPUTS[index])
                calls.append(_ToolCall(name, arguments))
            if scenario.parallel:
                blocks.append(_Text(_PARALLEL_PREFACE))
            blocks.extend(calls)
        else:
            blocks.append(_Text(self.reply_text + _BURST_TEXT if scenario.burst else self.reply_text))
        log.info(
            "fake provider: {dialect} answer for model {model}: {kinds}",
            dialect=dialect,
            model=model,
            kinds=", ".join(
                f"tool {b.name}" if isinstance(b, _ToolCall) else type(b).__name__.lstrip("_").lower()
                for b in blocks
            ),
        )
        prompt = estimate_tokens(raw)
        cache_read = prompt // 2 if scenario.cache else 0
        cache_creation = prompt // 8 if scenario.cache else 0
        reasoning = sum(estimate_tokens(b.thinking) for b in blocks if isinstance(b, _Thinking))
        output = reasoning + sum(
            estimate_tokens(b.text if isinstance(b, _Text) else b.arguments_json)
            for b in blocks
            if not isinstance(b, _Thinking)
        )
        return _Answer(
            model=model,
            blocks=blocks,
            uses_tools=uses_tools,
            prompt_tokens=prompt,
            cache_read_tokens=cache_read,
            cache_creation_tokens=cache_creation,
            output_tokens=output,
            reasoning_tokens=reasoning,
        )

    def _stream_delay(self, scenario: _Scenario) -> float:
        if self.chunk_delay > 0:
            return self.chunk_delay
        return _SLOW_DELAY if scenario.slow else 0.0

    def _stream(
        self,
        exchange: _Exchange,
        headers: list[tuple[str, str]],
        events: list[_Event],
        scenario: _Scenario,
    ) -> None:
        frames = [(_frame(event), event.content) for event in events]
        exchange.start_stream(200, headers)
        _Streamer(exchange, frames, self._stream_delay(scenario), scenario.drop).start()

    def _parse_json_request(
        self, received: ReceivedRequest, exchange: _Exchange, dialect: str
    ) -> Mapping[str, Any] | None:
        """The body as a JSON object with a model, or C{None} after a 400."""
        body = received.json
        problem = None
        if not isinstance(body, dict):
            problem = "The request body is not valid JSON." if received.body else "Empty body."
        elif not isinstance(body.get("model"), str):
            problem = "model: Field required"
        elif dialect in ("anthropic", "chat") and not isinstance(body.get("messages"), list):
            problem = "messages: Field required"
        if problem is None:
            return cast(Mapping[str, Any], body)
        if dialect == "anthropic":
            self._anthropic_error(exchange, 400, "invalid_request_error", problem)
        else:
            self._openai_error(exchange, 400, problem)
        return None

    # -- Anthropic ---------------------------------------------------------

    def _messages(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        body = self._parse_json_request(received, exchange, "anthropic")
        if body is None:
            return
        model = body["model"]
        scenario = _Scenario.parse(model, body, received.body)
        if scenario.hang or self._scenario_error("anthropic", scenario, exchange):
            return
        streaming = body.get("stream") is True
        if not streaming and scenario.error_midstream:
            self._anthropic_error(exchange, 529, "overloaded_error", "Overloaded")
            return
        if not streaming and scenario.drop:
            exchange.drop()
            return
        answer = self._answer("anthropic", model, scenario, body, received.body)
        message_id = self._ids.make("msg_01", 22)
        tool_ids = [self._ids.make("toolu_01", 22) for _ in answer.blocks]
        request_id = self._ids.make("req_011C", 20)
        if not streaming:
            message = self._anthropic_message(answer, message_id, tool_ids)
            compress = scenario.gzip and _accepts_gzip(received.header("accept-encoding"))
            headers = self._anthropic_headers(request_id, JSON_CONTENT_TYPE)
            exchange.later(
                self._stream_delay(scenario),
                lambda: exchange.respond(200, headers, _dumps(message).encode(), compress),
            )
            return
        events = self._anthropic_events(answer, message_id, tool_ids)
        if scenario.error_midstream or scenario.drop:
            events = _cut_midstream(events, len(events) if scenario.burst else 2)
        if scenario.error_midstream:
            error = {"type": "overloaded_error", "message": "Overloaded"}
            events.append(_Event("error", {"type": "error", "error": error}))
        self._stream(exchange, self._anthropic_headers(request_id, SSE_CONTENT_TYPE), events, scenario)

    def _anthropic_usage(self, answer: _Answer, output_tokens: int) -> dict[str, Any]:
        creation = answer.cache_creation_tokens
        one_hour = round(creation * min(1.0, max(0.0, self.cache_write_1h_share)))
        return {
            "input_tokens": answer.prompt_tokens - answer.cache_read_tokens - creation,
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": answer.cache_read_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": creation - one_hour,
                "ephemeral_1h_input_tokens": one_hour,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def _anthropic_stop_reason(self, answer: _Answer) -> str:
        return "tool_use" if answer.uses_tools else "end_turn"

    def _anthropic_blocks(self, answer: _Answer, tool_ids: list[str]) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        for index, block in enumerate(answer.blocks):
            if isinstance(block, _Thinking):
                content.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
            elif isinstance(block, _Text):
                content.append({"type": "text", "text": block.text})
            else:
                content.append(
                    {"type": "tool_use", "id": tool_ids[index], "name": block.name, "input": block.arguments}
                )
        return content

    def _anthropic_message(self, answer: _Answer, message_id: str, tool_ids: list[str]) -> dict[str, Any]:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": self._anthropic_blocks(answer, tool_ids),
            "stop_reason": self._anthropic_stop_reason(answer),
            "stop_sequence": None,
            "usage": self._anthropic_usage(answer, answer.output_tokens),
        }

    def _anthropic_events(self, answer: _Answer, message_id: str, tool_ids: list[str]) -> list[_Event]:
        start: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._anthropic_usage(answer, 1),
        }
        events = [_Event("message_start", {"type": "message_start", "message": start})]

        def delta(index: int, payload: dict[str, Any]) -> _Event:
            data = {"type": "content_block_delta", "index": index, "delta": payload}
            return _Event("content_block_delta", data, content=True)

        for index, block in enumerate(self._anthropic_blocks(answer, tool_ids)):
            if block["type"] == "thinking":
                opening: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [
                    delta(index, {"type": "thinking_delta", "thinking": piece})
                    for piece in _split_text(block["thinking"])
                ]
                deltas.append(delta(index, {"type": "signature_delta", "signature": block["signature"]}))
            elif block["type"] == "text":
                opening = {"type": "text", "text": ""}
                deltas = [
                    delta(index, {"type": "text_delta", "text": piece})
                    for piece in _split_text(block["text"])
                ]
            else:
                opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                pieces = [""] + _split_json(_dumps(block["input"]))
                deltas = [
                    delta(index, {"type": "input_json_delta", "partial_json": piece}) for piece in pieces
                ]
            start_event = {"type": "content_block_start", "index": index, "content_block": opening}
            events.append(_Event("content_block_start", start_event))
            if index == 0:
                events.append(_Event("ping", {"type": "ping"}))
            events.extend(deltas)
            stop = {"type": "content_block_stop", "index": index}
            events.append(_Event("content_block_stop", stop))
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._anthropic_stop_reason(answer), "stop_sequence": None},
            "usage": {"output_tokens": answer.output_tokens},
        }
        events.append(_Event("message_delta", message_delta))
        events.append(_Event("message_stop", {"type": "message_stop"}))
        return events

    def _count_tokens(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        body = self._parse_json_request(received, exchange, "anthropic")
        if body is None:
            return
        request_id = self._ids.make("req_011C", 20)
        payload = _dumps({"input_tokens": estimate_tokens(received.body)}).encode()
        exchange.respond(200, self._anthropic_headers(request_id, JSON_CONTENT_TYPE), payload)

    # -- OpenAI Chat Completions -----------------------------------------

    def _chat_completions(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        body = self._parse_json_request(received, exchange, "chat")
        if body is None:
            return
        model = body["model"]
        scenario = _Scenario.parse(model, body, received.body)
        if scenario.hang or self._scenario_error("chat", scenario, exchange):
            return
        streaming = body.get("stream") is True
        if not streaming and scenario.error_midstream:
            self._openai_error(exchange, 500, "Overloaded", "server_error")
            return
        if not streaming and scenario.drop:
            exchange.drop()
            return
        answer = self._answer("chat", model, scenario, body, received.body)
        completion_id = self._ids.make("chatcmpl-", 29)
        call_ids = [self._ids.make("call_", 24) for _ in answer.blocks]
        created = int(self.reactor.seconds())
        if not streaming:
            completion = self._chat_completion(answer, completion_id, call_ids, created)
            compress = scenario.gzip and _accepts_gzip(received.header("accept-encoding"))
            headers = self._openai_headers(JSON_CONTENT_TYPE)
            exchange.later(
                self._stream_delay(scenario),
                lambda: exchange.respond(200, headers, _dumps(completion).encode(), compress),
            )
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        events = self._chat_events(answer, completion_id, call_ids, created, include_usage)
        if scenario.error_midstream or scenario.drop:
            events = _cut_midstream(events, len(events) if scenario.burst else 2)
        if scenario.error_midstream:
            error = json.loads(openai_error_body("Overloaded", "server_error"))
            events.append(_Event(None, error))
        self._stream(exchange, self._openai_headers(SSE_CONTENT_TYPE), events, scenario)

    def _chat_usage(self, answer: _Answer) -> dict[str, Any]:
        return {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.output_tokens,
            "total_tokens": answer.prompt_tokens + answer.output_tokens,
            "prompt_tokens_details": {"cached_tokens": answer.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": answer.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _chat_completion(
        self, answer: _Answer, completion_id: str, call_ids: list[str], created: int
    ) -> dict[str, Any]:
        text = "".join(b.text for b in answer.blocks if isinstance(b, _Text))
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text or None,
            "refusal": None,
            "annotations": [],
        }
        calls = [
            {
                "id": call_ids[i],
                "type": "function",
                "function": {"name": b.name, "arguments": b.arguments_json},
            }
            for i, b in enumerate(answer.blocks)
            if isinstance(b, _ToolCall)
        ]
        if calls:
            message["tool_calls"] = calls
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": answer.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if answer.uses_tools else "stop",
                }
            ],
            "usage": self._chat_usage(answer),
            "service_tier": "default",
            "system_fingerprint": "fp_fake0001",
        }

    def _chat_events(
        self,
        answer: _Answer,
        completion_id: str,
        call_ids: list[str],
        created: int,
        include_usage: bool,
    ) -> list[_Event]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": answer.model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake0001",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None
            return data

        first_is_text = bool(answer.blocks) and any(isinstance(b, _Text) for b in answer.blocks)
        role = {"role": "assistant", "content": "" if first_is_text else None, "refusal": None}
        events = [_Event(None, chunk(role))]
        tool_index = 0
        for index, block in enumerate(answer.blocks):
            if isinstance(block, _Text):
                for piece in _split_text(block.text):
                    events.append(_Event(None, chunk({"content": piece}), content=True))
            elif isinstance(block, _ToolCall):
                opening = {
                    "index": tool_index,
                    "id": call_ids[index],
                    "type": "function",
                    "function": {"name": block.name, "arguments": ""},
                }
                events.append(_Event(None, chunk({"tool_calls": [opening]})))
                for piece in _split_json(block.arguments_json):
                    fragment = {"index": tool_index, "function": {"arguments": piece}}
                    events.append(_Event(None, chunk({"tool_calls": [fragment]}), content=True))
                tool_index += 1
        finish = "tool_calls" if answer.uses_tools else "stop"
        events.append(_Event(None, chunk({}, finish)))
        if include_usage:
            final = chunk({})
            final["choices"] = []
            final["usage"] = self._chat_usage(answer)
            events.append(_Event(None, final))
        events.append(_Event(None, "[DONE]"))
        return events

    # -- OpenAI Responses --------------------------------------------------

    def _responses(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        body = self._parse_json_request(received, exchange, "responses")
        if body is None:
            return
        model = body["model"]
        scenario = _Scenario.parse(model, body, received.body)
        if scenario.hang or self._scenario_error("responses", scenario, exchange):
            return
        streaming = body.get("stream") is True
        if not streaming and scenario.error_midstream:
            self._openai_error(exchange, 500, "Overloaded", "server_error")
            return
        if not streaming and scenario.drop:
            exchange.drop()
            return
        answer = self._answer("responses", model, scenario, body, received.body)
        items = self._response_items(answer, body)
        response_id = self._ids.hex("resp_")
        created = int(self.reactor.seconds())

        def response(status: str, output: list[dict[str, Any]], final: bool) -> dict[str, Any]:
            return self._response_object(answer, body, response_id, created, status, output, final)

        if not streaming:
            payload = response("completed", items, True)
            compress = scenario.gzip and _accepts_gzip(received.header("accept-encoding"))
            headers = self._openai_headers(JSON_CONTENT_TYPE)
            exchange.later(
                self._stream_delay(scenario),
                lambda: exchange.respond(200, headers, _dumps(payload).encode(), compress),
            )
            return
        events = [
            _Event("response.created", {"response": response("in_progress", [], False)}),
            _Event("response.in_progress", {"response": response("in_progress", [], False)}),
        ]
        for output_index, item in enumerate(items):
            events.extend(self._response_item_events(output_index, item))
        events.append(_Event("response.completed", {"response": response("completed", items, True)}))
        if scenario.error_midstream or scenario.drop:
            events = _cut_midstream(events, len(events) if scenario.burst else 2)
        if scenario.error_midstream:
            error = {"code": "server_error", "message": "Overloaded", "param": None}
            failed = response("failed", [], False)
            failed["error"] = {"code": "server_error", "message": "Overloaded"}
            events.append(_Event("error", error))
            events.append(_Event("response.failed", {"response": failed}))
        numbered = [
            _Event(e.name, {"type": e.name, "sequence_number": n, **cast(dict[str, Any], e.data)}, e.content)
            for n, e in enumerate(events)
        ]
        self._stream(exchange, self._openai_headers(SSE_CONTENT_TYPE), numbered, scenario)

    def _response_items(self, answer: _Answer, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        include = body.get("include")
        wants_encrypted = isinstance(include, list) and "reasoning.encrypted_content" in include
        items: list[dict[str, Any]] = []
        for block in answer.blocks:
            if isinstance(block, _Thinking):
                item: dict[str, Any] = {
                    "id": self._ids.hex("rs_"),
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": block.thinking}],
                }
                if wants_encrypted:
                    item["encrypted_content"] = block.signature
                items.append(item)
            elif isinstance(block, _Text):
                part = {"type": "output_text", "annotations": [], "logprobs": [], "text": block.text}
                items.append(
                    {
                        "id": self._ids.hex("msg_"),
                        "type": "message",
                        "status": "completed",
                        "content": [part],
                        "role": "assistant",
                    }
                )
            else:
                items.append(
                    {
                        "id": self._ids.hex("fc_"),
                        "type": "function_call",
                        "status": "completed",
                        "arguments": block.arguments_json,
                        "call_id": self._ids.make("call_", 24),
                        "name": block.name,
                    }
                )
        return items

    def _response_item_events(self, output_index: int, item: dict[str, Any]) -> list[_Event]:
        item_id = item["id"]
        where = {"item_id": item_id, "output_index": output_index}
        if item["type"] == "reasoning":
            opening = {k: v for k, v in item.items() if k != "summary"} | {"summary": []}
            text = item["summary"][0]["text"]
            part_where = where | {"summary_index": 0}
            events = [
                _Event("response.output_item.added", {"output_index": output_index, "item": opening}),
                _Event(
                    "response.reasoning_summary_part.added",
                    part_where | {"part": {"type": "summary_text", "text": ""}},
                ),
            ]
            events += [
                _Event("response.reasoning_summary_text.delta", part_where | {"delta": piece}, True)
                for piece in _split_text(text)
            ]
            events += [
                _Event("response.reasoning_summary_text.done", part_where | {"text": text}),
                _Event(
                    "response.reasoning_summary_part.done",
                    part_where | {"part": {"type": "summary_text", "text": text}},
                ),
            ]
        elif item["type"] == "message":
            part = item["content"][0]
            opening = item | {"status": "in_progress", "content": []}
            content_where = where | {"content_index": 0}
            events = [
                _Event("response.output_item.added", {"output_index": output_index, "item": opening}),
                _Event("response.content_part.added", content_where | {"part": part | {"text": ""}}),
            ]
            events += [
                _Event("response.output_text.delta", content_where | {"delta": piece, "logprobs": []}, True)
                for piece in _split_text(part["text"])
            ]
            events += [
                _Event("response.output_text.done", content_where | {"text": part["text"], "logprobs": []}),
                _Event("response.content_part.done", content_where | {"part": part}),
            ]
        else:
            opening = item | {"status": "in_progress", "arguments": ""}
            events = [_Event("response.output_item.added", {"output_index": output_index, "item": opening})]
            events += [
                _Event("response.function_call_arguments.delta", where | {"delta": piece}, True)
                for piece in _split_json(item["arguments"])
            ]
            events.append(
                _Event("response.function_call_arguments.done", where | {"arguments": item["arguments"]})
            )
        events.append(_Event("response.output_item.done", {"output_index": output_index, "item": item}))
        return events

    def _response_object(
        self,
        answer: _Answer,
        body: Mapping[str, Any],
        response_id: str,
        created: int,
        status: str,
        output: list[dict[str, Any]],
        final: bool,
    ) -> dict[str, Any]:
        reasoning = body.get("reasoning")
        usage = None
        if final:
            usage = {
                "input_tokens": answer.prompt_tokens,
                "input_tokens_details": {"cached_tokens": answer.cache_read_tokens},
                "output_tokens": answer.output_tokens,
                "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
                "total_tokens": answer.prompt_tokens + answer.output_tokens,
            }
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": answer.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {
                "effort": reasoning.get("effort") if isinstance(reasoning, Mapping) else None,
                "summary": reasoning.get("summary") if isinstance(reasoning, Mapping) else None,
            },
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    # -- models and bypass targets -----------------------------------------

    def _models(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        if received.header("anthropic-version") is not None:
            data = [
                {"type": "model", "id": model_id, "display_name": name, "created_at": created}
                for model_id, name, created in ANTHROPIC_MODELS
            ]
            payload: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"],
                "last_id": data[-1]["id"],
            }
            request_id = self._ids.make("req_011C", 20)
            headers = self._anthropic_headers(request_id, JSON_CONTENT_TYPE)
        else:
            payload = {
                "object": "list",
                "data": [
                    {"id": model_id, "object": "model", "created": created, "owned_by": owner}
                    for model_id, owner, created in OPENAI_MODELS
                ],
            }
            headers = self._openai_headers(JSON_CONTENT_TYPE)
        exchange.respond(200, headers, _dumps(payload).encode())

    def _model(self, received: ReceivedRequest, exchange: _Exchange, model_id: str) -> None:
        if received.header("anthropic-version") is not None:
            for known, name, created in ANTHROPIC_MODELS:
                if known == model_id:
                    payload = {"type": "model", "id": known, "display_name": name, "created_at": created}
                    request_id = self._ids.make("req_011C", 20)
                    headers = self._anthropic_headers(request_id, JSON_CONTENT_TYPE)
                    exchange.respond(200, headers, _dumps(payload).encode())
                    return
            self._anthropic_error(exchange, 404, "not_found_error", f"model: {model_id}")
            return
        for known, owner, created_at in OPENAI_MODELS:
            if known == model_id:
                model = {"id": known, "object": "model", "created": created_at, "owned_by": owner}
                exchange.respond(200, self._openai_headers(JSON_CONTENT_TYPE), _dumps(model).encode())
                return
        self._openai_error(exchange, 404, f"The model '{model_id}' does not exist", code="model_not_found")

    def _embeddings(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        body = self._parse_json_request(received, exchange, "embeddings")
        if body is None:
            return
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        as_base64 = body.get("encoding_format") == "base64"
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) and 0 < dimensions <= 3072 else 8
        data = []
        for index, text in enumerate(texts):
            digest = hashlib.sha256(_dumps(text).encode()).digest()
            vector = [round((digest[i % len(digest)] - 128) / 128, 6) for i in range(size)]
            embedding: list[float] | str = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = estimate_tokens(_dumps(inputs))
        payload = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        exchange.respond(200, self._openai_headers(JSON_CONTENT_TYPE), _dumps(payload).encode())

    def _files(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        content_type = received.header("content-type") or ""
        if not content_type.lower().startswith("multipart/form-data"):
            self._openai_error(exchange, 400, "Expected a multipart/form-data upload.")
            return
        envelope = f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n".encode()
        message = message_from_bytes(envelope + received.body)
        fields: dict[str, bytes] = {}
        filename = None
        file_bytes: bytes | None = None
        parts = message.get_payload() if message.is_multipart() else []
        for part in cast(list[Message], parts):
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if not isinstance(name, str) or not isinstance(payload, bytes):
                continue
            if name == "file":
                filename = part.get_filename() or "upload"
                file_bytes = payload
            else:
                fields[name] = payload
        if file_bytes is None:
            self._openai_error(exchange, 400, "Missing file.", code=None)
            return
        purpose = fields.get("purpose", b"user_data").decode("utf-8", "replace")
        file_object = {
            "id": self._ids.make("file-", 22),
            "object": "file",
            "bytes": len(file_bytes),
            "created_at": int(self.reactor.seconds()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        exchange.respond(200, self._openai_headers(JSON_CONTENT_TYPE), _dumps(file_object).encode())

    def _speech(self, received: ReceivedRequest, exchange: _Exchange) -> None:
        body = self._parse_json_request(received, exchange, "speech")
        if body is None:
            return
        audio = self.speech_bytes(str(body.get("input", "")))
        headers = self._openai_headers("audio/mpeg")
        exchange.respond(200, headers, audio)

    @staticmethod
    def speech_bytes(text: str) -> bytes:
        """The deterministic "MP3" C{/v1/audio/speech} returns for C{text}."""
        seed = hashlib.sha256(text.encode("utf-8")).digest()
        return _AUDIO_HEADER + bytes(range(256)) + seed * 8


class Options(usage.Options):
    """Command line of C{python -m lunaroute.testing.fake_provider}."""

    optParameters = [
        ["port", "p", 0, "TCP port to listen on (0 picks a free one).", int],
        ["interface", "i", "127.0.0.1", "Address to listen on."],
        ["text", "t", None, "Text of plain answers."],
        ["chunk-delay", "d", 0.0, "Seconds between streamed events.", float],
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake standalone; print the port it listens on to stdout."""
    from twisted.internet import reactor as global_reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as error:
        sys.stderr.write(f"{error}\n{options}")
        raise SystemExit(2) from None
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    provider = FakeProvider(cast(IReactorTime, global_reactor))
    if options["text"] is not None:
        provider.default_text = options["text"]
    provider.chunk_delay = options["chunk-delay"]
    port = cast(IPv4Address, provider.listen(options["port"], options["interface"]).getHost()).port
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    base = f"http://{options['interface']}:{port}"
    log.info(
        "fake provider on {base}: ANTHROPIC_BASE_URL={base} OPENAI_BASE_URL={base}/v1; "
        "pick scenarios with the model name (tools, thinking, slow, ...)",
        base=base,
    )
    cast(Any, global_reactor).run()


if __name__ == "__main__":
    main()
