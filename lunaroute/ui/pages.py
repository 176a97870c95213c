"""
The UI's pages (Klein): the dashboard, the session list with search, one
session's conversation, and the shipped static files.  Pages are rendered on
the server from the session store (L{ISessionStore}, queries off the
reactor); the small shipped script only adds the raw viewer, keyboard keys
and auto-refresh, and writes recorded text with C{textContent} only.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException

from lunaroute.api.app import LIST_PARAMS, list_query
from lunaroute.api.costs import cost_by_kind
from lunaroute.api.params import WINDOW_PARAMS, Params
from lunaroute.config import setting_lines
from lunaroute.interfaces import ISessionStore
from lunaroute.logs import log_observer
from lunaroute.sessions.store import SORTS, StoreError, check_ids, make_window
from lunaroute.stats.pricing import PricingTable
from lunaroute.ui.conversation import ToolResult, request_parts
from lunaroute.ui.render import (
    SESSION_COLUMNS,
    cards,
    cost,
    duration,
    e,
    integer,
    layout,
    markdown_html,
    moment,
    percent,
    pretty_json,
    query_url,
    safe_snippet,
    session_table,
    session_url,
    status_badge,
)

__all__ = ["STATIC_FILES", "UIPages"]

log = Logger(observer=log_observer)

# The files under lunaroute/ui/static that are served, with their types.
STATIC_FILES = {
    "app.css": b"text/css; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
}

WINDOWS = ((1, "24 h"), (7, "7 days"), (30, "30 days"))
PAGE_SIZE = 50
# A session active this recently is followed live on its page (unless ?live=0).
ACTIVE_SECS = 30 * 60.0
_CURRENT = ' aria-current="true"'
SEARCH_HITS = 20


def _html(request: Any, page: bytes, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return page


def _token_state(settings: Any) -> str:
    """Which token protects the UI (never the token itself)."""
    if settings.ui.auth_token:
        return "set (ui.auth_token)"
    if settings.http_server.auth_token:
        return "set (http_server.auth_token)"
    return "not set"


def _static(name: str) -> bytes:
    return importlib.resources.files("lunaroute.ui").joinpath("static", name).read_bytes()


class UIPages:
    """
    @param store: the read model.
    @param settings: the gateway's settings (C{ui.refresh_interval},
        C{ui.export_enabled}).
    @param clock: the reactor's time (for C{days} windows).
    @param pricing: prices for each turn's cost by kind.
    """

    app = Klein()

    def __init__(self, store: ISessionStore, settings: Any, clock: IReactorTime, pricing: PricingTable) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.pricing = pricing
        self._assets = {name: _static(name) for name in STATIC_FILES}

    def resource(self) -> Any:
        return self.app.resource()

    # -- errors ------------------------------------------------------------

    def _error_page(self, request: Any, status: int, message: str) -> bytes:
        body = f'<h1>{status}</h1><p class="error">{e(message)}</p><p><a href="/sessions">All sessions</a></p>'
        return _html(request, layout(f"Error {status}", body), status)

    @app.handle_errors(StoreError)
    def store_error(self, request: Any, failure: Any) -> bytes:
        exc = failure.value
        return self._error_page(request, exc.status, exc.message)

    @app.handle_errors(HTTPException)
    def routing_error(self, request: Any, failure: Any) -> bytes:
        status = failure.value.code or 404
        if status == 405:
            return self._error_page(request, 405, "this page only answers GET")
        return self._error_page(request, status, "no such page")

    @app.handle_errors(Exception)
    def unexpected_error(self, request: Any, failure: Any) -> bytes:
        log.failure("UI error on {method} {path}", failure, method=request.method, path=request.path)
        return self._error_page(request, 500, "internal error in the UI (logged)")

    # -- static files ------------------------------------------------------

    @app.route("/static/<name>", methods=["GET"])
    def static(self, request: Any, name: str) -> bytes:
        if name not in STATIC_FILES:
            return self._error_page(request, 404, "no such file")
        request.setHeader(b"content-type", STATIC_FILES[name])
        request.setHeader(b"cache-control", b"no-cache")
        return self._assets[name]

    # -- dashboard -----------------------------------------------------------

    @app.route("/", methods=["GET"])
    async def dashboard(self, request: Any) -> bytes:
        p = Params(request, WINDOW_PARAMS)
        custom = "from" in p.values or "to" in p.values
        days = p.integer("days", None if custom else 1, 1, 36500)
        window = p.window(self.clock.seconds()) if custom else make_window(self.clock.seconds(), days)
        overview = await self.store.stats("overview", window)
        recent = await self.store.recent_sessions(10, window)
        picker = "".join(
            f'<a href="/?days={n}"{_CURRENT if n == days and not custom else ""}>{label}</a>' for n, label in WINDOWS
        ) + (
            '<form class="custom" action="/" method="get">'
            f'<label>From <input type="date" name="from" value="{e(p.values.get("from", ""))}"></label> '
            f'<label>to <input type="date" name="to" value="{e(p.values.get("to", ""))}"></label> '
            '<button type="submit">Show</button></form>'
        )
        all_sessions = query_url(
            "/sessions", {"from": p.values.get("from"), "to": p.values.get("to")} if custom else {"days": days}
        )
        requests = overview.get("requests") or 0
        success = (overview.get("successful_requests") or 0) / requests if requests else None
        figures = cards(
            [
                ("Sessions", integer(overview.get("sessions")), ""),
                ("Requests", integer(requests), f"{integer(overview.get('failed_requests'))} failed"),
                (
                    "Tokens",
                    integer(overview.get("total_tokens")),
                    f"{integer(overview.get('cache_read_tokens'))} cache read",
                ),
                ("Cost", cost(overview.get("cost_usd")), f"{integer(overview.get('priced_requests'))} priced requests"),
                ("Success rate", percent(success), ""),
                ("Cache hit rate", percent(overview.get("cache_hit_ratio")), "cache read / prompt"),
                ("Avg TTFT", duration(overview.get("avg_ttft_ms")), ""),
                ("Avg proxy overhead", duration(overview.get("avg_proxy_overhead_ms")), ""),
            ]
        )
        body = (
            f'<div class="heading"><h1>Dashboard</h1><nav class="picker" aria-label="Window">{picker}</nav></div>'
            f"{figures}<h2>Recent sessions</h2>{session_table(recent)}"
            f'<p><a href="{e(all_sessions)}">All sessions of this window</a></p>'
        )
        return _html(request, layout("Dashboard", body, current="/", refresh=self.settings.ui.refresh_interval))

    # -- sessions ------------------------------------------------------------

    @app.route("/sessions", methods=["GET"])
    async def sessions(self, request: Any) -> bytes:
        p = Params(request, LIST_PARAMS)
        filters, sort, order, limit, offset = list_query(p, self.clock.seconds())
        if "limit" not in p.values:
            limit = PAGE_SIZE
        rows, total = await self.store.list_sessions(filters, sort, order, limit, offset)
        state = dict(p.values)
        hits_html = ""
        if filters.text_search:
            hits = await self.store.search(filters.text_search, SEARCH_HITS)
            hits_html = self._hits(hits)
        body = (
            f'<div class="heading"><h1>Sessions</h1><p class="count">{integer(total)} matching</p></div>'
            + self._filters(state)
            + hits_html
            + session_table(rows, self._sortable_head(state, sort, order))
            + self._pager(state, total, limit, offset)
            + f'<p class="exports">This list as <a href="{e(query_url("/api/sessions", state))}">JSON</a></p>'
        )
        return _html(
            request,
            layout(
                "Sessions",
                body,
                current="/sessions",
                search=filters.text_search or "",
                refresh=self.settings.ui.refresh_interval,
            ),
        )

    def _filters(self, state: Mapping[str, str]) -> str:
        def text(name: str, label: str, placeholder: str = "") -> str:
            return (
                f'<label>{e(label)}<input name="{name}" value="{e(state.get(name, ""))}" '
                f'placeholder="{e(placeholder)}"></label>'
            )

        def select(name: str, label: str, options: list[tuple[str, str]]) -> str:
            current = state.get(name, "")
            opts = "".join(
                f'<option value="{e(v)}"{" selected" if v == current else ""}>{e(t)}</option>' for v, t in options
            )
            return f'<label>{e(label)}<select name="{name}">{opts}</select></label>'

        shown = {"text_search", "client", "model", "provider", "project", "days", "success", "sort", "order"}
        hidden = "".join(
            f'<input type="hidden" name="{e(k)}" value="{e(v)}">'
            for k, v in state.items()
            if k not in shown and k != "offset"
        )
        return (
            '<form class="filters" action="/sessions" method="get">'
            + text("text_search", "Search", 'words, "a phrase", prefix*')
            + text("client", "Client", "Claude Code, Codex")
            + text("model", "Model")
            + text("provider", "Provider")
            + text("project", "Project", "/path/to/project")
            + select("days", "Active in", [("", "any time"), ("1", "24 h"), ("7", "7 days"), ("30", "30 days")])
            + select("success", "Status", [("", "any"), ("true", "ok"), ("false", "failed")])
            + select("sort", "Sort", [("", "last activity"), *((s, s.replace("_", " ")) for s in SORTS if s != "last_activity")])
            + select("order", "Order", [("", "descending"), ("asc", "ascending")])
            + hidden
            + '<button type="submit">Apply</button> <a href="/sessions">Clear</a></form>'
        )

    @staticmethod
    def _hits(hits: Sequence[Mapping[str, Any]]) -> str:
        if not hits:
            return '<section class="hits"><h2>Matching turns</h2><p class="empty">No turn matches.</p></section>'
        items = "".join(
            '<li class="hit">'
            f'<a href="{e(session_url(str(h.get("session_id")), str(h.get("request_id"))))}">'
            f"{e(h.get('title') or h.get('session_id'))}</a> "
            f'<span class="meta">{e(moment(h.get("started_at")))} · {e(h.get("client") or "—")} · '
            f"{e(h.get('model_used') or '—')}</span>"
            f'<p class="snippet">{safe_snippet(h.get("snippet"))}</p></li>'
            for h in hits
        )
        return f'<section class="hits"><h2>Matching turns</h2><ol>{items}</ol></section>'

    @staticmethod
    def _sortable_head(state: Mapping[str, str], sort: str, order: str) -> str:
        cells = []
        for label, key in SESSION_COLUMNS:
            if key is None:
                cells.append(f"<th>{e(label)}</th>")
                continue
            next_order = "asc" if key == sort and order == "desc" else "desc"
            params = {**state, "sort": key, "order": next_order, "offset": ""}
            arrow = (" ▼" if order == "desc" else " ▲") if key == sort else ""
            cells.append(f'<th><a href="{e(query_url("/sessions", params))}">{e(label)}{arrow}</a></th>')
        return "".join(cells)

    @staticmethod
    def _pager(state: Mapping[str, str], total: int, limit: int, offset: int) -> str:
        if total <= limit and offset == 0:
            return ""
        links = []
        if offset > 0:
            links.append(
                f'<a rel="prev" href="{e(query_url("/sessions", {**state, "offset": max(0, offset - limit) or ""}))}">← Newer</a>'
            )
        shown_to = min(total, offset + limit)
        links.append(f"<span>{integer(offset + 1 if total else 0)}–{integer(shown_to)} of {integer(total)}</span>")
        if offset + limit < total:
            links.append(f'<a rel="next" href="{e(query_url("/sessions", {**state, "offset": offset + limit}))}">Older →</a>')
        return '<nav class="pager">' + " ".join(links) + "</nav>"

    # -- settings ------------------------------------------------------------

    @app.route("/settings", methods=["GET"])
    def settings_page(self, request: Any) -> bytes:
        """The running configuration as the start-up log summarises it (secrets masked), read-only."""
        Params(request, ())
        lines = "".join(f"<li>{e(line)}</li>" for line in setting_lines(self.settings))
        ui = self.settings.ui
        rows = "".join(
            f"<tr><th>{e(name)}</th><td>{e(value)}</td></tr>"
            for name, value in (
                ("ui.host", ui.host),
                ("ui.port", ui.port),
                ("ui.refresh_interval", f"{ui.refresh_interval} s"),
                ("ui.export_enabled", str(ui.export_enabled).lower()),
                ("ui.delete_enabled", str(ui.delete_enabled).lower()),
                ("ui.log_requests", str(ui.log_requests).lower()),
                ("token", _token_state(self.settings)),
            )
        )
        body = (
            '<h1>Settings</h1><p class="meta">Read-only: change them in the configuration file or the '
            "environment and restart.</p>"
            f'<h2>Running</h2><ul class="settings">{lines}</ul>'
            f'<h2>Web UI</h2><div class="table-wrap"><table class="settings">{rows}</table></div>'
        )
        return _html(request, layout("Settings", body, current="/settings"))

    # -- one session -----------------------------------------------------------

    @app.route("/sessions/<session_id>", methods=["GET"])
    async def session(self, request: Any, session_id: str) -> bytes:
        check_ids(("session_id", session_id))
        p = Params(request, ("live",))
        session = await self.store.export(session_id)
        live = p.flag("live")
        if live is None:
            live = self._active(session)
        calls: dict[str, list[Mapping[str, Any]]] = {}
        for call in session.get("tool_calls", []):
            calls.setdefault(str(call.get("request_id")), []).append(call)
        results: dict[str, ToolResult] = {}
        turns_html = []
        previous_system = None
        for number, turn in enumerate(session.get("requests", []), 1):
            parts = request_parts(turn.get("request_json"), turn.get("dialect"))
            for result in parts.tool_results:
                results[result.call_id] = result
            system_changed = previous_system is not None and turn.get("system_sha256") != previous_system
            previous_system = turn.get("system_sha256")
            turns_html.append(self._turn(session_id, number, turn, parts, calls.get(str(turn.get("request_id")), []), system_changed))
        # Tool results arrive with a later request: pair them with their call.
        page = "".join(turns_html)
        for call_id, result in results.items():
            marker = f"<!--result:{e(call_id)}-->"
            if marker in page:
                page = page.replace(marker, self._result(result), 1)
        body = (
            self._session_head(session)
            + '<p id="live" class="live" hidden><span id="live-text"></span> <a href="" id="live-show">Show</a></p>'
            + f'<div class="conversation" data-raw-base="/api/sessions/{e(quote(session_id, safe=""))}/raw/"'
            + (f' data-events="/api/sessions/{e(quote(session_id, safe=""))}/events"' if live else "")
            + f">{page}</div>"
            + _RAW_DIALOG
        )
        title = session.get("title") or session_id
        return _html(request, layout(str(title), body, current="/sessions"))

    def _active(self, session: Mapping[str, Any]) -> bool:
        """Whether the session was active in the last L{ACTIVE_SECS} (its page then follows it live)."""
        last = session.get("last_activity")
        if not isinstance(last, str):
            return False
        try:
            moment_secs = datetime.fromisoformat(last).timestamp()
        except ValueError:
            return False
        return self.clock.seconds() - moment_secs < ACTIVE_SECS

    def _session_head(self, s: Mapping[str, Any]) -> str:
        sid = str(s.get("session_id"))
        export = ""
        if getattr(self.settings.ui, "export_enabled", True):
            base = "/api/sessions/" + e(sid) + "/export?format="
            export = (
                f'<p class="exports">Export: <a href="{base}html">HTML</a> · <a href="{base}json">JSON</a> · '
                f'<a href="{base}jsonl">JSONL</a> · <a href="{base}csv">CSV</a></p>'
            )
        figures = cards(
            [
                ("Requests", integer(s.get("request_count")), ""),
                ("Tokens", integer(s.get("total_tokens")), f"{integer(s.get('cache_read_tokens'))} cache read"),
                ("Cost", cost(s.get("estimated_cost_usd")), "" if s.get("cost_complete", True) else "some turns unpriced"),
                ("Duration", duration(s.get("duration_ms")), ""),
            ]
        )
        return (
            f'<div class="heading"><h1 class="session-title">{e(s.get("title") or sid)}</h1>{status_badge(s.get("success"))}</div>'
            f'<dl class="facts"><dt>Session</dt><dd><code>{e(sid)}</code></dd>'
            f"<dt>Client</dt><dd>{e(s.get('client') or '—')}</dd>"
            f"<dt>Project</dt><dd>{e(s.get('project') or '—')}</dd>"
            f"<dt>Model</dt><dd>{e(s.get('model_used') or '—')}</dd>"
            f"<dt>Started</dt><dd>{e(moment(s.get('started_at')))} UTC</dd>"
            f"<dt>Last activity</dt><dd>{e(moment(s.get('last_activity')))} UTC</dd></dl>"
            f"{figures}{export}"
        )

    def _turn(
        self,
        session_id: str,
        number: int,
        turn: Mapping[str, Any],
        parts: Any,
        calls: Sequence[Mapping[str, Any]],
        system_changed: bool,
    ) -> str:
        rid = str(turn.get("request_id"))
        raw_url = f"/api/sessions/{quote(session_id, safe='')}/raw/{quote(rid, safe='')}"
        by_kind = cost_by_kind(turn, self.pricing)
        kinds = ""
        if by_kind:
            kinds = " (" + ", ".join(f"{k.replace('_', ' ')} {cost(v)}" for k, v in by_kind.items() if v) + ")"
        figures = (
            f"in {integer(turn.get('input_tokens'))} · out {integer(turn.get('output_tokens'))}"
            f" · cache read {integer(turn.get('cache_read_tokens'))}"
            f" · cache write {integer(turn.get('cache_creation_tokens'))}"
            f" · context {integer(turn.get('context_tokens'))} · cache hit {percent(turn.get('cache_hit_ratio'))}"
            f" · cost {cost(turn.get('estimated_cost_usd'))}{kinds}"
            f" · TTFT {duration(turn.get('ttft_ms'))} · provider {duration(turn.get('provider_ms'))}"
            f" · overhead {duration(turn.get('proxy_overhead_ms'))}"
        )
        out = [
            f'<section class="turn" id="turn-{e(rid)}" tabindex="-1">'
            f'<header><a class="turn-no" href="#turn-{e(rid)}">#{number}</a> '
            f'<span class="meta">{e(moment(turn.get("started_at")))} · {e(turn.get("model_used") or turn.get("model_requested") or "—")}'
            f" · {e(turn.get('status') or '—')} · {e(turn.get('stop_reason') or turn.get('outcome') or '')}</span> "
            f'<a class="raw" data-raw href="{e(raw_url)}">Raw</a></header>'
            f'<p class="figures">{e(figures)}</p>'
        ]
        attempts = turn.get("attempts_json")
        if isinstance(attempts, list) and attempts:
            steps = " → ".join(
                f"{a.get('provider')} {a.get('status') or a.get('error') or ''}".strip()
                for a in attempts
                if isinstance(a, Mapping)
            )
            rule = turn.get("routing_rule")
            by = f" by rule {rule}" if rule else ""
            out.append(f'<p class="routing">{e(f"routed{by}: {steps}")}</p>')
        if parts.system and (number == 1 or system_changed):
            label = "System prompt" + (" (changed since the previous turn)" if system_changed else "")
            out.append(f'<details class="system"><summary>{e(label)}</summary><pre>{e(parts.system)}</pre></details>')
        if parts.tool_names and number == 1:
            out.append(
                f'<details class="tools-offered"><summary>{len(parts.tool_names)} tools offered</summary>'
                f"<p>{e(', '.join(parts.tool_names))}</p></details>"
            )
        for text in parts.context_texts:
            tag = text.strip()[1:].split(">", 1)[0]
            out.append(
                f'<details class="context"><summary>Context the client added: {e(tag)}</summary>'
                f"<pre>{e(text)}</pre></details>"
            )
        for text in parts.user_texts:
            out.append(f'<div class="msg user"><div class="who">User</div><div class="text">{e(text)}</div></div>')
        if turn.get("thinking_text"):
            out.append(
                '<details class="thinking"><summary>Thinking</summary>'
                f'<div class="text">{e(turn.get("thinking_text"))}</div></details>'
            )
        if turn.get("response_text"):
            out.append(
                f'<div class="msg assistant"><div class="who">Assistant</div><div class="text md">{markdown_html(turn.get("response_text"))}</div></div>'
            )
        for call in calls:
            state = " error" if call.get("is_error") else ""
            out.append(
                f'<div class="tool{state}"><div class="tool-head">Tool <strong>{e(call.get("tool_name"))}</strong>'
                f' · {e(duration(call.get("duration_ms")))}</div>'
                f'<details><summary>Input</summary><pre>{e(pretty_json(call.get("input_json")))}</pre></details>'
                f"<!--result:{e(call.get('tool_call_id'))}--></div>"
            )
        error = turn.get("error")
        if error:
            kind = str(turn.get("error_type") or "error")
            text = str(error) if str(error).startswith(kind) else f"{kind}: {error}"
            out.append(f'<p class="error">{e(text)}</p>')
        out.append("</section>")
        return "".join(out)

    @staticmethod
    def _result(result: ToolResult) -> str:
        label = "Result (error)" if result.is_error else "Result"
        return f'<details class="result"><summary>{label}</summary><pre>{e(result.text)}</pre></details>'


_RAW_DIALOG = (
    '<dialog id="raw-dialog" aria-label="Raw request and response">'
    '<div class="dialog-head"><strong>Raw exchange</strong> '
    '<button type="button" data-copy="raw-request">Copy request</button> '
    '<button type="button" data-copy="raw-response">Copy response</button> '
    '<button type="button" data-close>Close (Esc)</button></div>'
    '<p id="raw-status" class="meta"></p>'
    '<h3>Request</h3><pre id="raw-request"></pre><h3>Response</h3><pre id="raw-response"></pre></dialog>'
)
