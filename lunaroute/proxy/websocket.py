"""
Codex's Responses WebSocket: C{GET /v1/responses} (or C{/responses}) with
C{Upgrade: websocket}, served with autobahn's Twisted WebSocket.

Each client text frame is a C{response.create} request (the Responses
request's fields plus C{"type": "response.create"}).  It is forwarded to the
OpenAI provider as an HTTP streaming C{POST /v1/responses}; every SSE event of
the answer goes back to the client as one text frame (the event's JSON
data), as it arrives.  Turns on one socket run one after another.  A client
closing the socket cancels the turn in flight (the provider connection is
aborted).  Each turn is recorded as one exchange, like its HTTP twin.

A provider answer that is not a stream (an HTTP error) is sent as one
C{{"type": "error", "status": ..., "error": {...}}} frame, the shape Codex
maps back onto an HTTP error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.request_view import parse_request, replace_model
from lunaroute.dialects.sse import SSEParser
from lunaroute.dialects.translate.base import StreamTranslator
from lunaroute.dialects.translate.common import ENDED_EARLY
from lunaroute.errors import LunaRouteError, UpstreamError
from lunaroute.interfaces import IProvider
from lunaroute.logs import log_observer
from lunaroute.proxy.errors import first_header, status_for
from lunaroute.proxy.headers import MaskedHeaders, first_value, header_reader
from lunaroute.proxy.outcome import provider_error
from lunaroute.proxy.translating import MAX_JSON_BYTES, events_from_json
from lunaroute.routing.markers import strip_markers
from lunaroute.routing.plan import Plan

if TYPE_CHECKING:
    from lunaroute.proxy.app import GatewayApp

log = Logger(observer=log_observer)

__all__ = ["responses_socket_resource", "wants_websocket", "error_frame", "response_create_body"]

_CLEAN = Failure(ConnectionDone())
_ENDED_EARLY = ENDED_EARLY.encode()

# Ping an idle socket this often; a peer that does not answer within the
# timeout is dropped.
PING_INTERVAL_SECS = 30.0
PING_TIMEOUT_SECS = 30.0
# The close code of a socket the stopping gateway closes: a normal closure
# (autobahn's public sendClose allows 1000 or 3000-4999, not 1001).
GATEWAY_STOPPING = 1000


def wants_websocket(request: Any) -> bool:
    """Whether an HTTP request asks to be upgraded to a WebSocket."""
    upgrade = first_header(request, b"upgrade") or ""
    return "websocket" in upgrade.lower()


def error_frame(status: int, message: str, code: str | None = None,
                error_type: str = "invalid_request_error") -> bytes:
    """A wrapped error event, as the Responses WebSocket sends one."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
    return json.dumps({"type": "error", "status": status, "error": error}).encode()


def response_create_body(payload: bytes) -> bytes | None:
    """
    The HTTP body of a C{response.create} frame: its fields without
    C{type}, streaming.  C{None} for a frame of another type (such as
    C{response.processed}), which needs no answer.  Raises C{ValueError} when
    the frame is not a JSON object.
    """
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("a frame must be a JSON object")
    if data.get("type") != "response.create":
        return None
    body = {key: value for key, value in data.items() if key != "type"}
    body["stream"] = True
    return json.dumps(body, ensure_ascii=False).encode()


class SocketConversation:
    """
    The conversation of a socket's last response, so that a turn continuing
    it (C{previous_response_id} and only the new input items, as Codex sends
    on its WebSocket) can be sent whole to a provider that keeps no state:
    a turn translated for Anthropic, where C{previous_response_id} means
    nothing.  Pure: the socket tells it each turn's body and each completed
    response.
    """

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._items: list[Any] | None = None
        self._pending: list[Any] | None = None

    def full_input(self, body: dict[str, Any]) -> list[Any] | None:
        """
        The turn's whole input: the new items, after the last response's
        conversation when C{previous_response_id} names it.  C{None} when the
        turn continues a response this socket does not hold.
        """
        items = body.get("input")
        new = [{"type": "message", "role": "user", "content": items}] if isinstance(items, str) else items
        if not isinstance(new, list):
            new = []
        previous = body.get("previous_response_id")
        if not previous:
            return list(new)
        if previous != self.last_id or self._items is None:
            return None
        return [*self._items, *new]

    def expanded(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """C{body} with its whole input and no C{previous_response_id}; C{None} when unknown."""
        full = self.full_input(body)
        if full is None:
            return None
        out = {key: value for key, value in body.items() if key != "previous_response_id"}
        out["input"] = full
        return out

    def started(self, body: dict[str, Any]) -> None:
        """A turn with C{body} is sent."""
        self._pending = self.full_input(body)

    def completed(self, response: Any) -> None:
        """The turn's C{response.completed} arrived: it is now the conversation to continue."""
        if not isinstance(response, dict):
            return
        output = response.get("output")
        if self._pending is None or not isinstance(output, list):
            self.last_id, self._items = None, None
            return
        self.last_id = response.get("id") if isinstance(response.get("id"), str) else None
        self._items = [*self._pending, *output]


def _accept_deflate(offers: list[Any]) -> Any:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def responses_socket_resource(app: GatewayApp, request: Any) -> WebSocketResource:
    """The resource that takes C{request}'s connection over as a WebSocket."""
    limit = app.settings.http_server.max_request_body_bytes
    factory = _SocketFactory(app, request)
    factory.setProtocolOptions(
        maxMessagePayloadSize=limit,
        maxFramePayloadSize=limit,
        autoPingInterval=PING_INTERVAL_SECS,
        autoPingTimeout=PING_TIMEOUT_SECS,
        perMessageCompressionAccept=_accept_deflate,
        # A protocol error (such as a frame over the limit) is answered with
        # its close code (1009: too big) before the connection closes.
        failByDrop=False,
    )
    return WebSocketResource(factory)


class _SocketFactory(WebSocketServerFactory):
    """Builds the one socket of one upgrade request."""

    def __init__(self, app: GatewayApp, upgrade: Any) -> None:
        super().__init__()
        self._app = app
        self._upgrade = upgrade

    def buildProtocol(self, addr: Any) -> ResponsesSocket:
        socket = ResponsesSocket(self._app, self._upgrade)
        socket.factory = self
        return socket


# Turns a socket may queue behind the one running.  Codex sends one
# response.create and waits for its answer; a client sending frames without
# waiting would otherwise hold every one of them (each up to the body limit)
# in memory until its turn.
MAX_QUEUED_TURNS = 8


class ResponsesSocket(WebSocketServerProtocol):
    """One client's socket: runs its turns in order (at most L{MAX_QUEUED_TURNS} waiting)."""

    def __init__(self, app: GatewayApp, upgrade: Any) -> None:
        super().__init__()
        self.app = app
        self.upgrade = upgrade
        self.headers: Headers = upgrade.requestHeaders
        self._turns: defer.DeferredLock = defer.DeferredLock()
        self._current: _Turn | None = None
        self.conversation = SocketConversation()
        self.closed = False
        self._opened = False
        #: Fires once the socket's connection is gone.
        self.lost: defer.Deferred[None] = defer.Deferred()

    def onOpen(self) -> None:
        self._opened = True
        self.app.sockets.add(self)
        metrics = self.app.socket_metrics
        if metrics is not None:
            metrics.socket_opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        metrics = self.app.socket_metrics
        if metrics is not None:
            metrics.socket_frame("in")
        if isBinary:
            self.sendMessage(error_frame(400, "binary frames are not supported"))
            return
        if len(self._turns.waiting) >= MAX_QUEUED_TURNS:
            self.sendMessage(
                error_frame(
                    429,
                    f"{MAX_QUEUED_TURNS} turns are already waiting on this socket: "
                    "wait for a response before sending the next request",
                    "too_many_queued_turns",
                    "rate_limit_error",
                )
            )
            return
        self._turns.run(self._run_turn, payload).addErrback(
            lambda f: log.failure("WebSocket turn failed", f)
        )

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = True
        self.app.sockets.discard(self)
        metrics = self.app.socket_metrics
        if self._opened and metrics is not None:
            self._opened = False
            metrics.socket_closed()
        if self._current is not None:
            self._current.cancel()

    def connectionLost(self, reason: Failure = _CLEAN) -> None:
        super().connectionLost(reason)
        # The HTTP channel handed its connection over and never saw it end:
        # tell it, so it forgets the connection (the per-client cap counts it).
        channel = getattr(self.upgrade, "channel", None)
        if channel is not None:
            try:
                channel.connectionLost(reason)
            except Exception:
                log.failure("ending the upgraded HTTP channel failed")
        if not self.lost.called:
            self.lost.callback(None)

    def going_away(self) -> None:
        """The gateway is stopping: close the socket (no turn is in flight by now)."""
        if not self.closed:
            self.sendClose(code=GATEWAY_STOPPING, reason="the gateway is stopping")

    def send_frame(self, data: bytes) -> None:
        if not self.closed:
            self.sendMessage(data, isBinary=False)
            metrics = self.app.socket_metrics
            if metrics is not None:
                metrics.socket_frame("out")

    def _run_turn(self, payload: bytes) -> defer.Deferred[None]:
        if self.closed:
            return defer.succeed(None)
        turn = _Turn(self, payload)
        self._current = turn
        flight = _TurnFlight(turn)
        d = defer.ensureDeferred(turn.run())
        # Tracked with the HTTP requests, so a stopping gateway waits for
        # the turn (and cuts it at the deadline).
        self.app.in_flight[d] = flight

        def done(result: Any) -> Any:
            self._current = None
            self.app.in_flight.pop(d, None)
            flight.finished.callback(None)
            return result

        return d.addBoth(done)


class _TurnFlight:
    """A turn as the gateway's drain sees it: C{finished}, and C{cut} at the deadline."""

    def __init__(self, turn: _Turn) -> None:
        self.turn = turn
        self.finished: defer.Deferred[None] = defer.Deferred()

    def cut(self) -> None:
        self.turn.cancel(by_gateway=True)


class _Turn:
    """One C{response.create} frame: send, relay frames, record."""

    def __init__(self, socket: ResponsesSocket, payload: bytes) -> None:
        self.socket = socket
        self.payload = payload
        self.sending: defer.Deferred[Any] | None = None
        self.body: _EventRelay | None = None
        self.cancelled = False
        self.by_gateway = False
        # The provider's key on a translated turn (redacted from its frames).
        self._secret: bytes | None = None

    def cancel(self, by_gateway: bool = False) -> None:
        self.cancelled = True
        self.by_gateway = by_gateway
        if self.sending is not None:
            self.sending.cancel()
        if self.body is not None:
            self.body.abort()

    async def run(self) -> None:
        socket = self.socket
        app = socket.app
        clock = app.clock
        received = clock.seconds()
        try:
            body = response_create_body(self.payload)
        except ValueError:
            socket.send_frame(error_frame(400, "the frame is not a JSON object"))
            return
        if body is None:
            return
        try:
            body = app.redact_upstream(body)  # only with pii.apply_to_upstream
        except LunaRouteError as exc:
            status, code = status_for(exc)
            socket.send_frame(error_frame(status, str(exc), code, "server_error"))
            return
        upgrade = socket.upgrade
        header = header_reader(upgrade.requestHeaders)
        view = parse_request("openai_responses", body, header)
        # choose (routing per turn, as on HTTP) and modify
        provider: IProvider | None
        try:
            plan = app.plan_turn(view, header)
        except LunaRouteError as exc:
            status, code = status_for(exc)
            socket.send_frame(error_frame(status, str(exc), code, "server_error"))
            return
        if plan is not None:
            if plan.marker is not None:
                body = strip_markers(view.dialect, body)
            provider = app.providers[plan.attempts[0].provider_name]
        else:
            provider = app.turn_provider()
            if provider is None:
                socket.send_frame(error_frame(503, "no enabled openai provider is configured"))
                return
            configured = getattr(getattr(provider, "settings", None), "model", None)
            translated = app.turn_translator(view, provider) is not None
            if configured and view.json is not None and view.model != configured and not translated:
                body = replace_model(body, configured)
        body, view = self._stateless(body, view, provider, plan, header)
        exchange = app.start_socket_exchange(upgrade, view, provider, body, received)
        if plan is not None:
            exchange.rule = plan.rule_name
        try:
            await self._send(exchange, provider, body, view, plan)
        except Exception as exc:
            log.failure("WebSocket turn on {path} failed unexpectedly", path=exchange.path)
            exchange.outcome = "gateway_error"
            exchange.error = f"internal gateway error: {type(exc).__name__}"
        finally:
            app.finish_exchange(exchange)

    def _stateless(
        self, body: bytes, view: Any, provider: IProvider, plan: Plan | None, header: Callable[[str], str | None]
    ) -> tuple[bytes, Any]:
        """
        A turn that continues the socket's last response goes whole to a
        provider that keeps no state (any attempt translated): the
        conversation so far replaces C{previous_response_id}.  The socket
        notes every turn's input to continue it later.
        """
        app = self.socket.app
        conversation = self.socket.conversation
        data = view.json if isinstance(view.json, dict) else {}
        providers = [app.providers[a.provider_name] for a in plan.attempts] if plan is not None else [provider]
        if data.get("previous_response_id") and any(app.turn_translator(view, p) for p in providers):
            whole = conversation.expanded(data)
            if whole is not None:
                body = json.dumps(whole, ensure_ascii=False).encode()
                view = parse_request("openai_responses", body, header)
                data = whole
        conversation.started(data)
        return body, view

    def _send_frame(self, data: bytes) -> None:
        """A frame to the client; a completed response becomes the socket's conversation."""
        if b'"response.completed"' in data:
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            if isinstance(event, dict) and event.get("type") == "response.completed":
                self.socket.conversation.completed(event.get("response"))
        self.socket.send_frame(self._redact(data))

    def _redact(self, data: bytes) -> bytes:
        """A translated turn's frame without the provider's own key, should its answer echo it."""
        secret = self._secret
        if secret is not None and secret in data:
            return data.replace(secret, b"[redacted]")
        return data

    async def _send(
        self, exchange: Any, provider: IProvider, body: bytes, view: Any, plan: Plan | None
    ) -> None:
        socket = self.socket
        app = socket.app
        clock = app.clock
        timings = exchange.timings
        turn_request = _TurnRequest(socket.headers)
        timings.upstream_sent = clock.seconds()
        try:
            if plan is not None:
                response, provider = await app.send_turn(turn_request, self, exchange, view, body, plan)
                exchange.provider = provider.name
            else:
                path, query, headers, body = app.upstream_request(turn_request, exchange, view, provider, body)
                self.sending = provider.request(b"POST", path, query, headers, body)
                response = await self.sending
        except defer.CancelledError:
            self._interrupted(exchange)
            return
        except (UpstreamError, LunaRouteError) as exc:
            status, code = status_for(exc)
            exchange.status = status
            if isinstance(exc, UpstreamError):
                exchange.outcome = "timeout" if status == 504 else "unreachable"
            else:
                exchange.outcome = "bad_request"
            exchange.error = str(exc)
            socket.send_frame(error_frame(status, str(exc), code, "server_error"))
            return
        finally:
            self.sending = None
        timings.headers_received = clock.seconds()
        exchange.status = response.code
        exchange.response_headers = MaskedHeaders(response.headers)
        content_type = first_value(response.headers, b"content-type") or ""
        # A turn another dialect's provider answered (Codex on Claude): the
        # capture reads the provider's dialect (its usage and model for the
        # record and the cost), the client gets Responses events.
        translator = app.turn_translator(view, provider)
        if translator is not None:
            key = getattr(getattr(provider, "settings", None), "api_key", None)
            self._secret = key.encode() if isinstance(key, str) and len(key) >= 8 else None
        capture = ResponseCapture(
            translator.target if translator is not None else "openai_responses",
            streaming=True,
            content_type=content_type,
            content_encoding=first_value(response.headers, b"content-encoding"),
        )
        streaming = 200 <= response.code < 300 and "text/event-stream" in content_type
        stream = translator.stream(view.model or "") if translator is not None and streaming else None
        keep = MAX_JSON_BYTES if translator is not None and 200 <= response.code < 300 else 65536
        relay = _EventRelay(self._send_frame if streaming else None, capture.feed, clock.seconds, stream, keep)
        self.body = relay
        if self.cancelled:
            relay.aborted = True
        response.deliverBody(relay)
        try:
            await relay.done
        finally:
            self.body = None
            timings.first_byte = relay.first_byte
            timings.last_byte = relay.last_byte
            exchange.bytes_out = relay.bytes
            exchange.chunk_count = relay.chunks
            exchange.response = capture.finish()
        if relay.aborted:
            self._interrupted(exchange)
        elif not streaming and translator is not None and 200 <= response.code < 300:
            self._replay_json(exchange, translator, view, relay)
        elif not streaming:
            exchange.outcome = "upstream_error" if response.code >= 400 else "ok"
            message = relay.raw.decode("utf-8", "replace")[:4000]
            try:
                parsed = json.loads(relay.raw)
                error = parsed.get("error") if isinstance(parsed, dict) else None
            except ValueError:
                error = None
            if translator is not None:
                error = translator.error(parsed if error is not None else None, response.code).get("error")
            if not isinstance(error, dict):
                error = {"type": "server_error", "message": message}
            socket.send_frame(self._redact(json.dumps({"type": "error", "status": response.code, "error": error}).encode()))
        elif relay.translation_failed:
            exchange.outcome, exchange.error = "gateway_error", relay.translation_failed
            socket.send_frame(error_frame(502, relay.translation_failed, None, "server_error"))
        elif relay.lost:
            exchange.outcome, exchange.error = "upstream_error", "the provider's stream was cut"
            if not relay.failure_sent:
                socket.send_frame(error_frame(502, "the provider's stream was cut", None, "server_error"))
        else:
            # The provider's in-stream error event (its status was 200), or a
            # translated stream that ended before its finish reason: the
            # client got a failed response; the record says so too.
            in_stream_type, in_stream_message = provider_error(exchange.response)
            if in_stream_type is not None or in_stream_message is not None:
                exchange.outcome = "upstream_error"
                exchange.error = in_stream_message or in_stream_type
                exchange.error_type = in_stream_type
            elif relay.ended_early:
                exchange.outcome = "stream_error"
                exchange.error = ENDED_EARLY + " (no finish reason before the end of its body)"
        timings.finished = clock.seconds()

    def _replay_json(self, exchange: Any, translator: Any, view: Any, relay: _EventRelay) -> None:
        """
        A translated turn answered 2xx with one JSON object (a provider that
        ignored C{stream: true}): replayed to the socket as the Responses
        events it translates to, or a 502 error frame if it is not JSON.
        """
        try:
            parsed = json.loads(relay.raw) if not relay.truncated else None
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            exchange.outcome, exchange.status = "gateway_error", 502
            exchange.error = "the provider's answer is not a JSON object"
            self.socket.send_frame(error_frame(502, exchange.error, None, "server_error"))
            return
        stream = translator.stream(view.model or "")
        frames = b"".join(stream.feed(event) for event in events_from_json(translator.target, parsed)) + stream.close()
        parser = SSEParser()
        for event in parser.feed(frames) + parser.close():
            if event.data and event.data != "[DONE]":
                self._send_frame(event.data.encode("utf-8"))
        exchange.outcome = "ok"

    def _interrupted(self, exchange: Any) -> None:
        if self.by_gateway:
            exchange.outcome = "interrupted"
            exchange.error = "the gateway stopped before the turn finished"
            self.socket.send_frame(error_frame(503, "the gateway is shutting down", "shutting_down", "server_error"))
        else:
            exchange.outcome, exchange.error = "client_disconnected", "the client went away"


class _TurnRequest:
    """
    A turn as the send step sees a request: a C{POST} with the upgrade
    request's headers, less the WebSocket handshake's, as a JSON body that
    asks for an event stream.
    """

    method = b"POST"

    def __init__(self, upgrade_headers: Headers) -> None:
        headers = Headers()
        for name, values in upgrade_headers.getAllRawHeaders():
            if name.lower() not in _HANDSHAKE_HEADERS and not name.lower().startswith(b"sec-websocket-"):
                headers.setRawHeaders(name, values)
        headers.setRawHeaders(b"content-type", [b"application/json"])
        headers.setRawHeaders(b"accept", [b"text/event-stream"])
        self.requestHeaders = headers


_HANDSHAKE_HEADERS = frozenset({b"upgrade", b"connection", b"origin", b"content-length"})


class _EventRelay(Protocol):
    """
    Reads a provider response body: with C{send}, each SSE event's data goes
    out as one frame; without, the body is kept (an error answer).
    """

    def __init__(
        self,
        send: Callable[[bytes], None] | None,
        on_chunk: Callable[[bytes], Any],
        now: Callable[[], float],
        stream: StreamTranslator | None = None,
        keep: int = 65536,
    ) -> None:
        self._send = send
        # How much of a body that is not streamed is kept (an error's, or
        # a translated turn's whole JSON answer).
        self._keep = keep
        self.truncated = False
        self._on_chunk = on_chunk
        self._now = now
        self._parser = SSEParser()
        # A translated turn: each provider event goes through the stream
        # translator, whose Responses SSE frames are split into events again.
        self._stream = stream
        self._translated = SSEParser() if stream is not None else None
        self.done: defer.Deferred[None] = defer.Deferred()
        self.raw = bytearray()
        self.bytes = 0
        self.chunks = 0
        self.first_byte: float | None = None
        self.last_byte: float | None = None
        self.aborted = False
        self.lost = False
        # A translated turn: why the translator failed (the turn is cut), and
        # whether the provider's stream ended before its finish reason.
        self.translation_failed: str | None = None
        self.ended_early = False
        # The translator's close already sent the turn's terminal event
        # (response.failed): no second error frame (Codex would take it for
        # the next turn's).
        self.failure_sent = False

    def connectionMade(self) -> None:
        if self.aborted:
            self.abort()

    def abort(self) -> None:
        self.aborted = True
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        now = self._now()
        if self.first_byte is None:
            self.first_byte = now
        self.last_byte = now
        self.bytes += len(data)
        self.chunks += 1
        try:
            self._on_chunk(data)
        except Exception:
            log.failure("capturing a WebSocket turn failed")
        if self._send is None:
            if len(self.raw) < self._keep:
                self.raw += data
            else:
                self.truncated = True
            return
        self._emit(self._parser.feed(data))

    def _emit(self, events: list[Any]) -> None:
        """Send the provider's events as frames (translated first, for a translated turn)."""
        self._emit_frames(self._translate(events) if self._stream is not None else events)

    def _translate(self, events: list[Any]) -> list[Any]:
        """The provider's events as the client's (a translated turn)."""
        assert self._stream is not None and self._translated is not None
        out: list[Any] = []
        for event in events:
            data = event.data
            if not data:
                continue
            try:
                parsed: Any = data if data == "[DONE]" else json.loads(data)
            except ValueError:
                continue
            if isinstance(parsed, (dict, str)) and self.translation_failed is None:
                try:
                    out.extend(self._translated.feed(self._stream.feed(parsed)))
                except Exception:
                    log.failure("translating a WebSocket turn's stream failed")
                    self.translation_failed = "the gateway could not translate the provider's stream"
                    transport: Any = self.transport
                    if transport is not None:
                        transport.stopProducing()
        return out

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        from twisted.web.client import ResponseDone

        if self._send is not None and not self.aborted:
            self._emit(self._parser.close())
            if self._stream is not None and self._translated is not None and self.translation_failed is None:
                closing = self._stream.close()
                self.failure_sent = _ENDED_EARLY in closing
                self.ended_early = self.failure_sent and reason.check(ResponseDone) is not None
                tail = self._translated.feed(closing) + self._translated.close()
                self._emit_frames(tail)
        if not reason.check(ResponseDone) and not self.aborted and self.translation_failed is None:
            self.lost = True
        self.done.callback(None)

    def _emit_frames(self, events: list[Any]) -> None:
        """Send events that are already the client's, each event's data one frame."""
        assert self._send is not None
        for event in events:
            if event.data and event.data != "[DONE]":
                self._send(event.data.encode("utf-8"))


