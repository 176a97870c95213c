"""
The session API: recorded sessions, search, statistics and a live tail as
JSON over HTTP, on the proxy port (C{/sessions...}, C{/api/...}).

One Klein app over an L{ISessionStore}; every route checks its parameters
(L{Params}) and ids before they reach the store, and every failure is
answered in one place as C{{"error": {"message", "type", "param"}}}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException

from lunaroute.api.costs import cost_by_kind
from lunaroute.api.export import FORMATS, export_csv, export_html, export_json, export_jsonl
from lunaroute.api.openapi import openapi_document
from lunaroute.api.params import WINDOW_PARAMS, Params
from lunaroute.interfaces import ISessionStore
from lunaroute.logs import log_observer
from lunaroute.sessions.store import (
    MAX_LIMIT,
    RANGES,
    SORTS,
    BadParameter,
    SessionFilters,
    StoreError,
    check_ids,
)
from lunaroute.stats.pricing import PricingTable

__all__ = ["KEEPALIVE_SECS", "LIST_PARAMS", "LiveFeed", "SessionAPI", "json_error", "list_query"]

log = Logger(observer=log_observer)

KEEPALIVE_SECS = 15.0

_LIST_PARAMS = (
    "text_search", "model", "provider", "client", "project", "success", "sort", "order", "limit",
    "offset", *WINDOW_PARAMS,
    *(f"{bound}_{stem}" for stem in RANGES for bound in ("min", "max")),
)

_STATS_NAMES = (
    "overview", "tokens", "tools", "costs", "models", "hours", "spending",
    "usage", "clients", "projects", "durations", "blocks",
)


LIST_PARAMS = _LIST_PARAMS


def list_query(p: Params, now: float) -> tuple[SessionFilters, str, str, int, int]:
    """
    The filters, sort, order, limit and offset of a session list from its
    query parameters (C{GET /sessions}, and the UI's sessions page), or
    L{BadParameter} naming the wrong one.
    """
    ranges = {}
    for stem in RANGES:
        low, high = p.number(f"min_{stem}"), p.number(f"max_{stem}")
        if low is not None and high is not None and low > high:
            raise BadParameter(f"min_{stem} is greater than max_{stem}", f"min_{stem}")
        if low is not None or high is not None:
            ranges[stem] = (low, high)
    filters = SessionFilters(
        text_search=p.text("text_search"),
        model=p.text("model", 200),
        provider=p.text("provider", 200),
        client=p.text("client", 200),
        project=p.text("project", 4096),
        window=p.window(now),
        ranges=ranges,
        success=p.flag("success"),
    )
    sort = p.choice("sort", SORTS, "last_activity")
    order = p.choice("order", ("asc", "desc"), "desc")
    limit = p.integer("limit", 50, 1, MAX_LIMIT)
    offset = p.integer("offset", 0, 0, 10**9)
    return filters, sort, order, limit, offset


def json_error(request: Any, status: int, message: str, error_type: str, param: str | None = None) -> bytes:
    """Answer C{status} with the API's error body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps({"error": {"message": message, "type": error_type, "param": param}}).encode("utf-8")


def _json(request: Any, value: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")


class LiveFeed:
    """
    Who is tailing which session.  Subscribed once to the recorder
    (L{RecorderService.add_listener}); for each written batch, every
    subscriber of a session in it gets that session's new request ids.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[[list[str]], None]]] = {}

    def attach(self, recorder: Any) -> None:
        recorder.add_listener(self.batch_written)

    def subscribe(self, session_id: str, callback: Callable[[list[str]], None]) -> Callable[[], None]:
        """Call C{callback} with new request ids of C{session_id}; returns the unsubscribe function."""
        self._subscribers.setdefault(session_id, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(session_id, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._subscribers.pop(session_id, None)

        return unsubscribe

    def subscriber_count(self, session_id: str) -> int:
        return len(self._subscribers.get(session_id, ()))

    def batch_written(self, written: list[tuple[str, str]]) -> None:
        by_session: dict[str, list[str]] = {}
        for session_id, request_id in written:
            if session_id in self._subscribers:
                by_session.setdefault(session_id, []).append(request_id)
        for session_id, request_ids in by_session.items():
            for callback in list(self._subscribers.get(session_id, ())):
                callback(request_ids)


class SessionAPI:
    """
    The session API over C{store}.

    @param store: the read model (L{ISessionStore}).
    @param settings: the gateway's settings (C{ui.delete_enabled},
        C{ui.export_enabled}).
    @param clock: the reactor's time (keep-alives of the live tail).
    @param feed: where the live tail learns of new exchanges; C{None}
        serves no live tail (404).
    @param pricing: prices for the per-request C{cost_by_kind}; by default
        the table the settings describe (C{statistics.pricing_file},
        C{statistics.pricing}).
    """

    app = Klein()

    def __init__(
        self,
        store: ISessionStore,
        settings: Any,
        clock: IReactorTime,
        feed: LiveFeed | None = None,
        pricing: PricingTable | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.feed = feed
        if pricing is None:
            statistics = settings.statistics
            pricing = PricingTable.load(statistics.pricing_file, statistics.pricing)
        self.pricing = pricing

    def with_costs(self, turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add each request row's C{cost_by_kind} (see L{cost_by_kind})."""
        for turn in turns:
            turn["cost_by_kind"] = cost_by_kind(turn, self.pricing)
        return turns

    def resource(self) -> Any:
        return self.app.resource()

    # -- errors ------------------------------------------------------------

    @app.handle_errors(StoreError)
    def store_error(self, request: Any, failure: Any) -> bytes:
        exc = failure.value
        return json_error(request, exc.status, exc.message, exc.error_type, exc.param)

    @app.handle_errors(HTTPException)
    def routing_error(self, request: Any, failure: Any) -> bytes:
        status = failure.value.code or 404
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode("latin-1")
        if status == 405:
            return json_error(request, 405, f"{method} is not allowed on {path}", "method_not_allowed")
        return json_error(request, status, f"no route for {method} {path}", "not_found_error")

    @app.handle_errors(Exception)
    def unexpected_error(self, request: Any, failure: Any) -> bytes:
        log.failure("session API error on {method} {path}", failure, method=request.method, path=request.path)
        return json_error(request, 500, "internal error in the session API", "api_error")

    # -- sessions ----------------------------------------------------------

    @app.route("/sessions", methods=["GET"])
    @app.route("/api/sessions", methods=["GET"])
    async def list_sessions(self, request: Any) -> bytes:
        filters, sort, order, limit, offset = list_query(Params(request, _LIST_PARAMS), self.clock.seconds())
        rows, total = await self.store.list_sessions(filters, sort, order, limit, offset)
        request.setHeader(b"x-total-count", str(total).encode("ascii"))
        return _json(
            request,
            {"sessions": rows, "total": total, "limit": limit, "offset": offset, "sort": sort, "order": order},
        )

    @app.route("/sessions/<session_id>", methods=["GET"])
    @app.route("/api/sessions/<session_id>", methods=["GET"])
    async def get_session(self, request: Any, session_id: str) -> bytes:
        check_ids(("session_id", session_id))
        Params(request, ())
        session = await self.store.get_session(session_id)
        self.with_costs(session["requests"])
        return _json(request, session)

    @app.route("/sessions/<session_id>/timeline", methods=["GET"])
    @app.route("/api/sessions/<session_id>/timeline", methods=["GET"])
    async def timeline(self, request: Any, session_id: str) -> bytes:
        check_ids(("session_id", session_id))
        Params(request, ())
        events = await self.store.timeline(session_id)
        for event in events:
            if event["type"] == "response":
                tokens = event["tokens"]
                event["cost_by_kind"] = cost_by_kind(
                    {
                        "model_used": event["model"],
                        "dialect": event.get("dialect"),
                        "input_tokens": tokens["input"],
                        "output_tokens": tokens["output"],
                        "cache_read_tokens": tokens["cache_read"],
                        "cache_creation_tokens": (tokens["cache_write_5m"] or 0) + (tokens["cache_write_1h"] or 0),
                        "cache_creation_1h_tokens": tokens["cache_write_1h"],
                    },
                    self.pricing,
                )
        return _json(request, {"session_id": session_id, "events": events})

    @app.route("/sessions/<session_id>/raw/<request_id>", methods=["GET"])
    @app.route("/api/sessions/<session_id>/raw/<request_id>", methods=["GET"])
    async def raw(self, request: Any, session_id: str, request_id: str) -> bytes:
        check_ids(("session_id", session_id), ("request_id", request_id))
        Params(request, ())
        return _json(request, await self.store.raw(session_id, request_id))

    @app.route("/sessions/<session_id>/tools", methods=["GET"])
    @app.route("/api/sessions/<session_id>/tools", methods=["GET"])
    async def tools(self, request: Any, session_id: str) -> bytes:
        check_ids(("session_id", session_id))
        Params(request, ())
        return _json(request, {"session_id": session_id, "tools": await self.store.tools(session_id)})

    @app.route("/sessions/<session_id>/export", methods=["GET"])
    @app.route("/api/sessions/<session_id>/export", methods=["GET"])
    async def export(self, request: Any, session_id: str) -> bytes:
        check_ids(("session_id", session_id))
        p = Params(request, ("format",))
        fmt = p.choice("format", FORMATS, "json")
        if not getattr(self.settings.ui, "export_enabled", True):
            return json_error(request, 403, "export is disabled (ui.export_enabled: false)", "permission_error")
        session = await self.store.export(session_id)
        self.with_costs(session["requests"])
        render = {"json": export_json, "jsonl": export_jsonl, "csv": export_csv, "html": export_html}[fmt]
        body = render(session)
        content_type, extension = FORMATS[fmt]
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(
            b"content-disposition", f'attachment; filename="session_{session_id}.{extension}"'.encode("ascii")
        )
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-store")
        return body

    @app.route("/sessions/<session_id>", methods=["DELETE"])
    @app.route("/api/sessions/<session_id>", methods=["DELETE"])
    async def delete_session(self, request: Any, session_id: str) -> bytes:
        check_ids(("session_id", session_id))
        Params(request, ())
        if not self.settings.ui.delete_enabled:
            return json_error(
                request, 403, "deleting sessions is disabled (set ui.delete_enabled: true)", "permission_error"
            )
        return _json(request, await self.store.delete_session(session_id))

    # -- search and statistics ---------------------------------------------

    @app.route("/api/search", methods=["GET"])
    async def search(self, request: Any) -> bytes:
        p = Params(request, ("q", "limit"))
        query = p.text("q")
        if query is None:
            raise BadParameter("q is required: the text to search for", "q")
        limit = p.integer("limit", 20, 1, MAX_LIMIT)
        return _json(request, {"query": query, "hits": await self.store.search(query, limit)})

    @app.route("/api/stats/<name>", methods=["GET"])
    async def stats(self, request: Any, name: str) -> bytes:
        if name not in _STATS_NAMES:
            return json_error(
                request, 404, f"no statistics {name[:40]!r} (try: {', '.join(_STATS_NAMES)})", "not_found_error"
            )
        p = Params(request, WINDOW_PARAMS)
        return _json(request, await self.store.stats(name, p.window(self.clock.seconds())))

    @app.route("/api/sessions/recent", methods=["GET"])
    async def recent(self, request: Any) -> bytes:
        p = Params(request, ("limit", *WINDOW_PARAMS))
        limit = p.integer("limit", 10, 1, MAX_LIMIT)
        window = p.window(self.clock.seconds())
        return _json(request, {"sessions": await self.store.recent_sessions(limit, window)})

    @app.route("/api/user-agents", methods=["GET"])
    async def user_agents(self, request: Any) -> bytes:
        p = Params(request, WINDOW_PARAMS)
        return _json(request, await self.store.stats("user-agents", p.window(self.clock.seconds())))

    @app.route("/api/models", methods=["GET"])
    async def models(self, request: Any) -> bytes:
        p = Params(request, WINDOW_PARAMS)
        return _json(request, await self.store.stats("model-list", p.window(self.clock.seconds())))

    @app.route("/api/openapi.json", methods=["GET"])
    def openapi(self, request: Any) -> bytes:
        Params(request, ())
        return _json(request, openapi_document())

    # -- the live tail -------------------------------------------------------

    @app.route("/sessions/<session_id>/events", methods=["GET"])
    @app.route("/api/sessions/<session_id>/events", methods=["GET"])
    def events(self, request: Any, session_id: str) -> Any:
        """
        Server-Sent Events: one C{exchange} event per request of the session
        recorded after the client connected (its per-turn figures and
        texts, C{id:} the request id), and a comment every 15 s to keep
        proxies from closing the stream.  A client reconnecting with
        C{Last-Event-ID} first gets what was recorded after that request.
        """
        check_ids(("session_id", session_id))
        Params(request, ())
        if self.feed is None:
            return json_error(request, 404, "the live tail needs the session recorder", "not_found_error")
        raw_last = request.getHeader(b"last-event-id")
        last = raw_last.decode("latin-1").strip() if raw_last else None
        if last:
            check_ids(("Last-Event-ID", last))
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(b": tailing session " + session_id.encode("ascii") + b"\n\n")
        tail = _Tail(self, request, session_id)
        if last:
            tail.catch_up(last)
        return tail.done


def _line(value: Any) -> bytes:
    """A value on one SSE line (a line break would end the field)."""
    return str(value).replace("\r", " ").replace("\n", " ").encode("utf-8")


class _Tail:
    """One client tailing one session: writes each new exchange as an SSE event."""

    def __init__(self, api: SessionAPI, request: Any, session_id: str) -> None:
        self.api = api
        self.request = request
        self.session_id = session_id
        self.closed = False
        self.sent: set[str] = set()
        self.done: Deferred[None] = Deferred(lambda d: self.close())
        assert api.feed is not None
        self._unsubscribe = api.feed.subscribe(session_id, self.new_requests)
        self._keepalive = LoopingCall(self._ping)
        self._keepalive.clock = api.clock
        self._keepalive.start(KEEPALIVE_SECS, now=False)

    def _ping(self) -> None:
        if not self.closed:
            self.request.write(b": keep-alive\n\n")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._unsubscribe()
        if self._keepalive.running:
            self._keepalive.stop()

    def catch_up(self, last_request_id: str) -> None:
        """Send what was recorded after C{last_request_id} (a reconnecting client's Last-Event-ID)."""
        d = ensureDeferred(self._write(self.api.store.turns_after(self.session_id, last_request_id)))
        d.addErrback(lambda f: log.failure("live tail of {session} failed", f, session=self.session_id))

    def new_requests(self, request_ids: list[str]) -> None:
        fresh = [r for r in request_ids if r not in self.sent]
        if not fresh:
            return
        d = ensureDeferred(self._send(fresh))
        d.addErrback(lambda f: log.failure("live tail of {session} failed", f, session=self.session_id))

    async def _send(self, request_ids: list[str]) -> None:
        await self._write(self.api.store.turns(self.session_id, request_ids))

    async def _write(self, pending: Deferred[list[dict[str, Any]]]) -> None:
        turns = self.api.with_costs(await pending)
        if self.closed:
            return
        for turn in turns:
            if turn["request_id"] in self.sent:
                continue
            self.sent.add(turn["request_id"])
            data = json.dumps(turn, ensure_ascii=False, default=str)
            self.request.write(
                b"event: exchange\nid: " + _line(turn["request_id"]) + b"\ndata: "
                + data.encode("utf-8") + b"\n\n"
            )
