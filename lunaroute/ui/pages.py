"""
The UI's pages (Klein): the dashboard, the session list with search, one
session's conversation, and the shipped static files.  Pages are rendered on
the server from the session store (L{ISessionStore}, queries off the
reactor); the small shipped script only adds the raw viewer, keyboard keys
and auto-refresh, and writes recorded text with C{textContent} only.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import hmac
import importlib.resources
import io
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote

from klein import Klein
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException

from lunaroute.api.app import LIST_PARAMS, list_query
from lunaroute.api.costs import cost_by_kind
from lunaroute.api.export import spreadsheet_cell
from lunaroute.api.params import WINDOW_PARAMS, Params
from lunaroute.config import setting_lines
from lunaroute.interfaces import ISessionStore
from lunaroute.logs import log_observer
from lunaroute.sessions.events import iso_timestamp
from lunaroute.sessions.store import (
    MAX_LIMIT,
    SORTS,
    NothingRecordedYet,
    StatsWindow,
    StoreError,
    check_ids,
    make_window,
    parse_moment,
)
from lunaroute.stats.pricing import PricingTable
from lunaroute.ui.conversation import ToolResult, request_parts
from lunaroute.ui.render import (
    SESSION_COLUMNS,
    cards,
    chart,
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
from lunaroute.ui.windows import context_window

__all__ = ["STATIC_FILES", "UIPages"]

log = Logger(observer=log_observer)

# The files under lunaroute/ui/static that are served, with their types.
STATIC_FILES = {
    "app.css": b"text/css; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "charts.js": b"text/javascript; charset=utf-8",
    "vendor/chart.umd.min.js": b"text/javascript; charset=utf-8",
}

WINDOWS = ((1, "24 h"), (7, "7 days"), (30, "30 days"))
PAGE_SIZE = 50
# A session active this recently is followed live on its page (unless ?live=0).
ACTIVE_SECS = 30 * 60.0
_CURRENT = ' aria-current="true"'
SEARCH_HITS = 20
# A session page shows this many turns in full; the others load as they come
# into view (GET /sessions/<id>/turns), so a 500-turn session opens fast.
TURN_CHUNK = 40
# How long, and for how many sessions, the lazily loaded turns and diffs
# reuse the figures the session page read.
SESSION_CACHE_SECS = 120.0
SESSION_CACHE_SIZE = 8
# The most sessions one export of the list holds.
EXPORT_MAX = 100_000
LIST_CSV_COLUMNS = (
    "session_id", "started_at", "last_activity", "client", "project", "title", "model_used", "provider",
    "request_count", "input_tokens", "output_tokens", "cache_read_tokens", "total_tokens",
    "estimated_cost_usd", "duration_ms", "success",
)


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



def _form_field(request: Any, name: bytes) -> str:
    """
    A field of a POSTed form (C{application/x-www-form-urlencoded}), else of
    the query string.  The UI's site, like the proxy's, does not have
    Twisted decode request bodies into C{request.args}
    (C{parsePOSTFormSubmission=False}), so the form's body is read here.
    """
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type == b"application/x-www-form-urlencoded" and request.content is not None:
        request.content.seek(0)
        fields = parse_qs(request.content.read(64 * 1024), keep_blank_values=True)
        request.content.seek(0)
        if name in fields:
            return fields[name][0].decode("latin-1")
    return (request.args.get(name) or [b""])[0].decode("latin-1")

class UIPages:
    """
    @param store: the read model.
    @param settings: the gateway's settings (C{ui.refresh_interval},
        C{ui.export_enabled}).
    @param clock: the reactor's time (for C{days} windows).
    @param pricing: prices for each turn's cost by kind.
    """

    app = Klein()

    def __init__(
        self,
        store: ISessionStore,
        settings: Any,
        clock: IReactorTime,
        pricing: PricingTable,
        readiness: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.store = store
        self.readiness = readiness
        self.settings = settings
        self.clock = clock
        self.pricing = pricing
        self._assets = {name: _static(name) for name in STATIC_FILES}
        # Keys the CSRF tokens of delete forms; new at each start.
        self._secret = os.urandom(32)
        self._session_cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def resource(self) -> Any:
        return self.app.resource()

    # -- errors ------------------------------------------------------------

    def _error_page(self, request: Any, status: int, message: str) -> bytes:
        body = f'<h1>{status}</h1><p class="error">{e(message)}</p><p><a href="/sessions">All sessions</a></p>'
        return _html(request, layout(f"Error {status}", body), status)

    @app.handle_errors(StoreError)
    def store_error(self, request: Any, failure: Any) -> bytes:
        exc = failure.value
        if isinstance(exc, NothingRecordedYet):
            return self._nothing_recorded(request)
        return self._error_page(request, exc.status, exc.message)

    def _nothing_recorded(self, request: Any) -> bytes:
        """
        What a page shows before the first session is recorded (no database
        yet): the lists empty, a session 404, the dashboard a hint.
        """
        path = request.path.decode("utf-8", "replace")
        if path == "/sessions.csv":
            request.setHeader(b"content-type", b"text/csv; charset=utf-8")
            request.setHeader(b"content-disposition", b'attachment; filename="sessions.csv"')
            return (",".join(LIST_CSV_COLUMNS) + "\r\n").encode("utf-8")
        if path == "/sessions.json":
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-disposition", b'attachment; filename="sessions.json"')
            return b'{"sessions": [], "total": 0, "exported": 0}'
        if path.startswith("/sessions/"):
            return self._error_page(request, 404, "no such session (nothing has been recorded yet)")
        titles = {"/": "Dashboard", "/sessions": "Sessions", "/analytics": "Analytics"}
        title = titles.get(path, "LunaRoute")
        body = (
            f"<h1>{e(title)}</h1><p class=\"empty\">No session recorded yet. Point Claude Code, Codex or an SDK at "
            "the gateway and its sessions appear here.</p>"
        )
        return _html(request, layout(title, body, current=path if path in titles else ""))

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
    @app.route("/static/vendor/<vendored>", methods=["GET"])
    def static(self, request: Any, name: str | None = None, vendored: str | None = None) -> bytes:
        name = name if vendored is None else f"vendor/{vendored}"
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
        query = {"from": p.values.get("from"), "to": p.values.get("to")} if custom else {"days": days}
        span = _window_days(window, self.clock.seconds())
        period = "hours" if span <= 2 else "days"
        tools = await self.store.stats("tools", window)
        body = (
            f'<div class="heading"><h1>Dashboard</h1><nav class="picker" aria-label="Window">{picker}</nav></div>'
            f"{figures}<h2>Spend</h2>{await self._spend_cards()}"
            '<div class="charts">'
            + chart("tokens-time", query_url("/api/stats/usage", query), f"Tokens per {period[:-1]}", period=period)
            + chart("cost-time", query_url("/api/stats/usage", query), f"Cost per {period[:-1]}", period=period)
            + chart("models", query_url("/api/stats/models", query), "Tokens and cost per model")
            + chart("hours", query_url("/api/stats/hours", query), "Requests by hour of day (UTC)")
            + chart("tools", query_url("/api/stats/tools", query), "Top tools: calls, errors, average duration")
            + chart(
                "latency-time",
                query_url("/api/stats/usage", query),
                "Provider latency, time to first token and proxy overhead (averages)",
                period=period,
            )
            + "</div>"
            + f"<h2>Top tools</h2>{_tool_table(tools.get('tools', [])[:10])}"
            + f"<h2>Recent sessions</h2>{session_table(recent)}"
            f'<p><a href="{e(all_sessions)}">All sessions of this window</a> · '
            f'<a href="{e(query_url("/analytics", query))}">Analytics of this window</a></p>'
        )
        return _html(
            request, layout("Dashboard", body, current="/", refresh=self.settings.ui.refresh_interval, charts=True)
        )

    async def _spend_cards(self) -> str:
        """Cost today, this week (from Monday), this month (UTC) and in the current five-hour block."""
        now = self.clock.seconds()
        today = datetime.fromtimestamp(now, UTC).date()
        starts = (
            ("Today", today),
            ("This week", today - timedelta(days=today.weekday())),
            ("This month", today.replace(day=1)),
        )
        items = []
        for label, start in starts:
            figures = await self.store.stats("overview", StatsWindow(since=parse_moment(start.isoformat(), "from")))
            items.append((label, cost(figures.get("cost_usd")), f"{integer(figures.get('requests'))} requests"))
        blocks = (await self.store.stats("blocks", make_window(now, 1))).get("blocks") or []
        current = blocks[-1] if blocks else None
        if current is not None and parse_moment(current["end"], "end") > iso_timestamp(now):
            items.append(
                (
                    "Current 5-hour block",
                    cost(current.get("cost_usd")),
                    f"{moment(current['start'])[11:16]}–{moment(current['end'])[11:16]} UTC · "
                    f"{integer(current.get('requests'))} requests",
                )
            )
        else:
            items.append(("Current 5-hour block", "—", "no request in the last five hours"))
        return cards(items)

    # -- analytics -----------------------------------------------------------

    @app.route("/analytics", methods=["GET"])
    async def analytics(self, request: Any) -> bytes:
        """Usage and cost by period, model, client and project; tools; success per day; durations."""
        p = Params(request, (*WINDOW_PARAMS, "period"))
        custom = "from" in p.values or "to" in p.values
        days = p.integer("days", None if custom else 30, 1, 36500)
        window = p.window(self.clock.seconds()) if custom else make_window(self.clock.seconds(), days)
        period = p.choice("period", PERIODS, "days")
        query = {"from": p.values.get("from"), "to": p.values.get("to")} if custom else {"days": days}
        usage = await self.store.stats("usage", window)
        models = await self.store.stats("models", window)
        clients = await self.store.stats("clients", window)
        projects = await self.store.stats("projects", window)
        tools = await self.store.stats("tools", window)
        durations = await self.store.stats("durations", window)
        picker = "".join(
            f'<a href="{e(query_url("/analytics", {"days": n, "period": period}))}"'
            f'{_CURRENT if n == days and not custom else ""}>{label}</a>'
            for n, label in (*WINDOWS, (90, "90 days"), (365, "year"))
        )
        periods = "".join(
            f'<a href="{e(query_url("/analytics", {**query, "period": key}))}"{_CURRENT if key == period else ""}>{label}</a>'
            for key, label in PERIODS.items()
        )
        usage_src = query_url("/api/stats/usage", query)
        body = (
            '<div class="heading"><h1>Analytics</h1>'
            f'<nav class="picker" aria-label="Window">{picker}</nav></div>'
            f'<h2 id="usage">Usage and cost per {PERIODS[period]}</h2>'
            f'<nav class="picker periods" aria-label="Period">{periods}</nav>'
            '<div class="charts">'
            + chart("cost-time", usage_src, f"Cost per {PERIODS[period]}", period=period)
            + chart("tokens-time", usage_src, f"Tokens per {PERIODS[period]}", period=period)
            + chart("requests-time", usage_src, f"Requests per {PERIODS[period]}", period=period)
            + chart("success-time", usage_src, "Success rate per day", period="days")
            + "</div>"
            + _usage_table(usage.get(period, []), PERIODS[period])
            + '<h2 id="models">By model</h2><div class="charts">'
            + chart("models", query_url("/api/stats/models", query), "Tokens and cost per model")
            + "</div>"
            + _group_table(models.get("models", []), "model", "Model")
            + '<h2 id="clients">By client</h2><div class="charts">'
            + chart("groups", query_url("/api/stats/clients", query), "Requests and cost per client", key="client")
            + "</div>"
            + _group_table(clients.get("clients", []), "client", "Client")
            + '<h2 id="projects">By project</h2><div class="charts">'
            + chart("groups", query_url("/api/stats/projects", query), "Requests and cost per project", key="project")
            + "</div>"
            + _group_table(projects.get("projects", []), "project", "Project")
            + '<h2 id="tools">Tools</h2><div class="charts">'
            + chart("tools", query_url("/api/stats/tools", query), "Calls, errors and average duration per tool")
            + "</div>"
            + _tool_table(tools.get("tools", []))
            + '<h2 id="durations">Request durations</h2><div class="charts">'
            + chart("durations", query_url("/api/stats/durations", query), "Requests by duration")
            + "</div>"
            + _duration_table(durations.get("buckets", []))
        )
        return _html(request, layout("Analytics", body, current="/analytics", charts=True))

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
            + '<p class="exports">Export every matching session: '
            + f'<a href="{e(query_url("/sessions.csv", {**state, "offset": ""}))}" download>CSV</a> · '
            + f'<a href="{e(query_url("/sessions.json", {**state, "offset": ""}))}" download>JSON</a>'
            + f' · this page on the API: <a href="{e(query_url("/api/sessions", state))}">JSON</a></p>'
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

    @app.route("/sessions.csv", methods=["GET"])
    @app.route("/sessions.json", methods=["GET"])
    async def export_list(self, request: Any) -> bytes:
        """
        Every session the list's filters match (not just one page), as CSV or
        JSON, in the list's order; at most L{EXPORT_MAX} rows.
        """
        p = Params(request, LIST_PARAMS)
        filters, sort, order, limit, offset = list_query(p, self.clock.seconds())
        if "limit" not in p.values:
            limit = EXPORT_MAX
        rows: list[dict[str, Any]] = []
        total = 0
        while len(rows) < limit:
            page, total = await self.store.list_sessions(
                filters, sort, order, min(MAX_LIMIT, limit - len(rows)), offset + len(rows)
            )
            rows += page
            if not page or offset + len(rows) >= total:
                break
        as_csv = request.path.endswith(b".csv")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-total-count", str(total).encode("ascii"))
        request.setHeader(
            b"content-disposition", b'attachment; filename="sessions.' + (b"csv" if as_csv else b"json") + b'"'
        )
        if not as_csv:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"sessions": rows, "total": total, "exported": len(rows)}, ensure_ascii=False, default=str).encode()
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(LIST_CSV_COLUMNS)
        for row in rows:
            writer.writerow([spreadsheet_cell(row.get(column)) for column in LIST_CSV_COLUMNS])
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        return out.getvalue().encode("utf-8")

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

        def field(name: str, label: str, kind: str, step: str = "") -> str:
            step_attr = f' step="{step}"' if step else ""
            return (
                f'<label>{e(label)}<input type="{kind}" name="{name}" value="{e(state.get(name, ""))}"{step_attr}></label>'
            )

        ranges = [
            (f"{bound}_{stem}", f"{bound.capitalize()} {label}", step)
            for stem, label, step in (
                ("total_tokens", "tokens", "1"),
                ("input_tokens", "input tokens", "1"),
                ("output_tokens", "output tokens", "1"),
                ("cost", "cost ($)", "any"),
                ("duration_ms", "duration (ms)", "any"),
            )
            for bound in ("min", "max")
        ]
        more_names = ["from", "to", *(name for name, _, _ in ranges)]
        more = (
            '<details class="more-filters"' + (" open" if any(state.get(n) for n in more_names) else "") + ">"
            "<summary>More filters</summary><div class=\"more\">"
            + field("from", "Active from (UTC)", "date")
            + field("to", "to (inclusive)", "date")
            + "".join(field(name, label, "number", step) for name, label, step in ranges)
            + "</div></details>"
        )
        shown = {"text_search", "client", "model", "provider", "project", "days", "success", "sort", "order", *more_names}
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
            + more
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
    async def settings_page(self, request: Any) -> bytes:
        """The running configuration as the start-up log summarises it (secrets masked), read-only."""
        Params(request, ())
        status = await self._provider_status()
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
            f"{status}"
            f'<h2>Web UI</h2><div class="table-wrap"><table class="settings">{rows}</table></div>'
        )
        return _html(request, layout("Settings", body, current="/settings"))

    async def _provider_status(self) -> str:
        """The providers' readiness, as the proxy's C{/readyz} reports it now."""
        if self.readiness is None:
            return ""
        try:
            report = await self.readiness()
        except Exception:
            log.failure("UI: the readiness report failed")
            return '<h2>Providers</h2><p class="error">The readiness check failed (logged).</p>'
        rows = []
        for dialect, facts in sorted((report.get("dialects") or {}).items()):
            state = str(facts.get("status") or "—")
            badge = "ok" if state == "ready" else "fail"
            rows.append(
                f"<tr><th>{e(dialect)}</th><td>{e(facts.get('provider') or '—')}</td>"
                f'<td><span class="badge {badge}">{e(state)}</span></td><td>{e(facts.get("reason") or "")}</td></tr>'
            )
        for name, facts in sorted((report.get("providers") or {}).items()):
            if isinstance(facts, Mapping):
                detail = ", ".join(f"{k}: {v}" for k, v in facts.items() if v is not None)
                rows.append(f"<tr><th>{e(name)}</th><td colspan=\"3\">{e(detail)}</td></tr>")
        overall = str(report.get("status") or "—")
        return (
            f'<h2>Providers</h2><p>Ready: <span class="badge {"ok" if overall == "ready" else "fail"}">{e(overall)}</span>'
            ' <span class="meta">(the proxy\'s <code>/readyz</code>, now)</span></p>'
            f'<div class="table-wrap"><table class="settings providers">{"".join(rows)}</table></div>'
        )

    # -- one session -----------------------------------------------------------

    @app.route("/sessions/<session_id>", methods=["GET"])
    async def session(self, request: Any, session_id: str) -> bytes:
        check_ids(("session_id", session_id))
        p = Params(request, ("live", "turn"))
        session = await self._session(session_id, fresh=True)
        turns = session.get("requests", [])
        jump = p.integer("turn", None, 1, max(1, len(turns)))
        start = ((jump - 1) // TURN_CHUNK) * TURN_CHUNK if jump else 0
        live = p.flag("live")
        if live is None:
            live = self._active(session)
        calls = await self._calls(session_id)
        page = await self._turns_html(session_id, turns, calls, start, start + TURN_CHUNK)
        sid = quote(session_id, safe="")
        jump_form = ""
        if len(turns) > TURN_CHUNK:
            jump_form = (
                f'<form class="jump" action="/sessions/{e(sid)}" method="get">'
                f'<label>Jump to turn <input type="number" name="turn" id="jump-turn" min="1" max="{len(turns)}" '
                f'value="{jump or ""}" required></label> <button type="submit">Go</button>'
                f' <span class="meta">{integer(len(turns))} turns; each loads as it comes into view</span></form>'
            )
        body = (
            self._session_head(session)
            + self._session_charts(session)
            + '<p id="live" class="live" hidden><span id="live-text"></span> <a href="" id="live-show">Show</a></p>'
            + jump_form
            + f'<div class="conversation" data-raw-base="/api/sessions/{e(sid)}/raw/"'
            + f' data-download-base="/sessions/{e(sid)}/raw/" data-proxy="{e(self._proxy_url())}"'
            + (f' data-jump="{jump}"' if jump else "")
            + (f' data-events="/api/sessions/{e(sid)}/events"' if live else "")
            + f">{page}</div>"
            + _RAW_DIALOG
        )
        title = session.get("title") or session_id
        return _html(request, layout(str(title), body, current="/sessions", charts=True))

    @app.route("/sessions/<session_id>/turns", methods=["GET"])
    async def turn_chunk(self, request: Any, session_id: str) -> bytes:
        """
        Turns C{start} (0-based) to C{start + count} of a session, as the
        session page renders them: the page's script fetches these for the
        turns it shows as placeholders (long sessions load lazily).
        """
        check_ids(("session_id", session_id))
        p = Params(request, ("start", "count"))
        start = p.integer("start", 0, 0, 10**9)
        count = p.integer("count", TURN_CHUNK, 1, 200)
        session = await self._session(session_id, fresh=False)
        turns = session.get("requests", [])
        calls = await self._calls(session_id)
        page = await self._turns_html(session_id, turns, calls, start, start + count, placeholders=False)
        sid = quote(session_id, safe="")
        body = (
            f'<p><a href="/sessions/{e(sid)}">{e(session.get("title") or session_id)}</a>: turns '
            f"{integer(start + 1)} to {integer(min(len(turns), start + count))} of {integer(len(turns))}</p>"
            f'<div class="conversation" data-raw-base="/api/sessions/{e(sid)}/raw/"'
            f' data-download-base="/sessions/{e(sid)}/raw/" data-proxy="{e(self._proxy_url())}">{page}</div>'
            + _RAW_DIALOG
        )
        return _html(request, layout(str(session.get("title") or session_id), body, current="/sessions"))

    def _proxy_url(self) -> str:
        """Where the gateway's proxy listens, as a client on this machine reaches it (for "Copy as cURL")."""
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.settings.port}"

    @app.route("/sessions/<session_id>/raw/<request_id>", methods=["GET"])
    async def raw_download(self, request: Any, session_id: str, request_id: str) -> bytes:
        """One exchange as recorded (credentials masked), as a JSON file to save."""
        check_ids(("session_id", session_id), ("request_id", request_id))
        Params(request, ())
        raw = await self.store.raw(session_id, request_id)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(
            b"content-disposition", f'attachment; filename="{session_id}_{request_id}.json"'.encode("ascii")
        )
        return json.dumps(raw, ensure_ascii=False, indent=2, default=str).encode("utf-8")

    async def _calls(self, session_id: str) -> dict[str, list[dict[str, Any]]]:
        """The session's tool calls by the request that made them."""
        calls: dict[str, list[dict[str, Any]]] = {}
        for call in await self.store.tool_calls(session_id):
            calls.setdefault(str(call.get("request_id")), []).append(call)
        for made in calls.values():
            made.sort(key=lambda c: c.get("call_index") or 0)
        return calls

    async def _session(self, session_id: str, fresh: bool) -> dict[str, Any]:
        """
        The session with its turns' figures: fresh for the session page,
        else (its lazily loaded turns, diffs) the copy the page read in the
        last L{SESSION_CACHE_SECS}: reading 500 turns' figures means reading
        past their recorded bodies.
        """
        now = self.clock.seconds()
        cached = self._session_cache.get(session_id)
        if not fresh and cached is not None and now - cached[0] < SESSION_CACHE_SECS:
            return cached[1]
        session: dict[str, Any] = await self.store.get_session(session_id)
        self._session_cache[session_id] = (now, session)
        while len(self._session_cache) > SESSION_CACHE_SIZE:
            self._session_cache.pop(next(iter(self._session_cache)))
        return session

    async def _bodies(self, session_id: str, request_ids: Sequence[str]) -> dict[str, Any]:
        """The recorded request bodies of these requests (masked), by request id."""
        def missing(failure: Any) -> None:
            failure.trap(StoreError)  # deleted meanwhile: that turn shows its figures only
            return None

        raws = await gatherResults([self.store.raw(session_id, rid).addErrback(missing) for rid in request_ids])
        return {str(raw.get("request_id")): raw.get("request_json") for raw in raws if raw}

    async def _turns_html(
        self,
        session_id: str,
        turns: Sequence[Mapping[str, Any]],
        calls: Mapping[str, Sequence[Mapping[str, Any]]],
        start: int,
        stop: int,
        *,
        placeholders: bool = True,
    ) -> str:
        """
        Turns C{start} to C{stop} (0-based) in full, from their texts and
        request bodies; with C{placeholders}, every other turn as a
        placeholder (its figures and a link to load it).
        """
        chunk = list(turns[start:stop])
        ids = [str(t.get("request_id")) for t in chunk]
        result_ids = {
            str(c.get("result_request_id"))
            for rid in ids
            for c in calls.get(rid, ())
            if c.get("result_request_id") and str(c.get("result_request_id")) not in ids
        }
        texts = {str(t.get("request_id")): t for t in await self.store.turns(session_id, ids)} if ids else {}
        bodies = await self._bodies(session_id, [*ids, *sorted(result_ids)])
        dialects = {str(t.get("request_id")): t.get("dialect") for t in turns}
        parts_of = {rid: request_parts(body, dialects.get(rid)) for rid, body in bodies.items()}
        results: dict[str, ToolResult] = {}
        for parts in parts_of.values():
            for result in parts.tool_results:
                results[result.call_id] = result
        out = []
        first = start if not placeholders else 0
        last = stop if not placeholders else len(turns)
        for index in range(first, min(last, len(turns))):
            turn = turns[index]
            rid = str(turn.get("request_id"))
            previous = turns[index - 1] if index > 0 else None
            changed = _changes(previous, turn)
            if start <= index < stop:
                full = {**turn, **{k: v for k, v in texts.get(rid, {}).items() if k in ("response_text", "thinking_text")}}
                parts = parts_of.get(rid) or request_parts(None, turn.get("dialect"))
                out.append(self._turn(session_id, index + 1, full, parts, calls.get(rid, []), changed))
            else:
                out.append(self._placeholder(session_id, index + 1, turn, changed))
        page = "".join(out)
        # Tool results arrive with a later request: pair them with their call.
        for call_id, result in results.items():
            marker = f"<!--result:{e(call_id)}-->"
            if marker in page:
                page = page.replace(marker, self._result(result), 1)
        return page

    def _figures(self, turn: Mapping[str, Any]) -> str:
        by_kind = cost_by_kind(turn, self.pricing)
        kinds = ""
        if by_kind:
            kinds = " (" + ", ".join(f"{k.replace('_', ' ')} {cost(v)}" for k, v in by_kind.items() if v) + ")"
        return (
            f"in {integer(turn.get('input_tokens'))} · out {integer(turn.get('output_tokens'))}"
            f" · cache read {integer(turn.get('cache_read_tokens'))}"
            f" · cache write {integer(turn.get('cache_creation_tokens'))}"
            f" · context {integer(turn.get('context_tokens'))} · cache hit {percent(turn.get('cache_hit_ratio'))}"
            f" · cost {cost(turn.get('estimated_cost_usd'))}{kinds}"
            f" · TTFT {duration(turn.get('ttft_ms'))} · provider {duration(turn.get('provider_ms'))}"
            f" · overhead {duration(turn.get('proxy_overhead_ms'))}"
        )

    def _turn_header(self, session_id: str, number: int, turn: Mapping[str, Any]) -> str:
        rid = str(turn.get("request_id"))
        raw_url = f"/api/sessions/{quote(session_id, safe='')}/raw/{quote(rid, safe='')}"
        return (
            f'<header><a class="turn-no" href="#turn-{e(rid)}">#{number}</a> '
            f'<span class="meta">{e(moment(turn.get("started_at")))} · {e(turn.get("model_used") or turn.get("model_requested") or "—")}'
            f" · {e(turn.get('status') or '—')} · {e(turn.get('stop_reason') or turn.get('outcome') or '')}</span> "
            f'<a class="raw" data-raw href="{e(raw_url)}">Raw</a></header>'
            f'<p class="figures">{e(self._figures(turn))}</p>'
        )

    def _changed_note(
        self, session_id: str, number: int, turn: Mapping[str, Any], changed: Sequence[str], link: bool = True
    ) -> str:
        """What changed since the previous turn, the cache writes it cost, and (with C{link}) a link to the diff."""
        if not changed:
            return ""
        by_kind = cost_by_kind(turn, self.pricing) or {}
        written = sum(v for k, v in by_kind.items() if k.startswith("cache_write") and v)
        what = " and ".join(changed)
        diff_url = f"/sessions/{quote(session_id, safe='')}/diff/{quote(str(turn.get('request_id')), safe='')}"
        return (
            f'<p class="changed">{e(what.capitalize())} changed since turn #{number - 1} · '
            f"cache write {e(integer(turn.get('cache_creation_tokens')))} tokens, {e(cost(written) if by_kind else '—')}"
            + (f' · <a class="diff-link" href="{e(diff_url)}">Diff</a>' if link else "")
            + "</p>"
        )

    def _placeholder(self, session_id: str, number: int, turn: Mapping[str, Any], changed: Sequence[str]) -> str:
        rid = str(turn.get("request_id"))
        start = ((number - 1) // TURN_CHUNK) * TURN_CHUNK
        url = f"/sessions/{quote(session_id, safe='')}/turns?start={start}&count={TURN_CHUNK}"
        return (
            f'<section class="turn pending" id="turn-{e(rid)}" data-index="{number}" tabindex="-1">'
            + self._turn_header(session_id, number, turn)
            + self._changed_note(session_id, number, turn, changed)
            + f'<p class="load"><a data-load href="{e(url)}">Show turns {start + 1} to {start + TURN_CHUNK}</a></p></section>'
        )

    # -- diff of the system prompt and tools between two turns ---------------

    @app.route("/sessions/<session_id>/diff/<request_id>", methods=["GET"])
    async def diff(self, request: Any, session_id: str, request_id: str) -> bytes:
        """The system prompt and tool definitions of a turn against the previous turn's, as unified diffs."""
        check_ids(("session_id", session_id), ("request_id", request_id))
        Params(request, ())
        session = await self._session(session_id, fresh=False)
        turns = session.get("requests", [])
        index = next((i for i, t in enumerate(turns) if t.get("request_id") == request_id), None)
        if index is None:
            return self._error_page(request, 404, f"no request {request_id!r} in this session")
        turn = turns[index]
        sid = quote(session_id, safe="")
        back = f'/sessions/{e(sid)}?turn={index + 1}#turn-{e(quote(request_id, safe=""))}'
        if index == 0:
            body = f'<h1>Turn #1</h1><p>The first turn has no previous turn to compare with.</p><p><a href="{back}">Back</a></p>'
            return _html(request, layout("Diff", body, current="/sessions"))
        previous = turns[index - 1]
        bodies = await self._bodies(session_id, [str(previous.get("request_id")), request_id])
        before, after = bodies.get(str(previous.get("request_id"))), bodies.get(request_id)
        old_parts = request_parts(before, previous.get("dialect"))
        new_parts = request_parts(after, turn.get("dialect"))
        sections = [
            ("System prompt", old_parts.system or "", new_parts.system or ""),
            ("Tool definitions", _tools_text(before), _tools_text(after)),
        ]
        out = [
            f"<h1>Turn #{index + 1} against turn #{index}</h1>",
            f'<p><a href="{back}">Back to the turn</a></p>',
            self._changed_note(session_id, index + 1, turn, _changes(previous, turn), link=False) or '<p class="meta">Neither the system prompt nor the tools changed.</p>',
        ]
        for title, old, new in sections:
            out.append(f"<h2>{e(title)}</h2>{_diff_html(old, new, f'turn #{index}', f'turn #{index + 1}')}")
        return _html(request, layout("Diff", "".join(out), current="/sessions"))

    # -- deleting ------------------------------------------------------------

    def csrf_token(self, session_id: str) -> str:
        """The token a delete form of this session carries (keyed by this process's secret)."""
        return hmac.new(self._secret, b"delete:" + session_id.encode("utf-8"), hashlib.sha256).hexdigest()

    @app.route("/sessions/<session_id>/delete", methods=["POST"])
    async def delete(self, request: Any, session_id: str) -> bytes:
        """
        Delete a session (C{ui.delete_enabled}): a POST carrying the form's
        C{csrf} token, which only a page of this UI holds.
        """
        check_ids(("session_id", session_id))
        if not self.settings.ui.delete_enabled:
            return self._error_page(request, 403, "deleting sessions is disabled (set ui.delete_enabled: true)")
        presented = _form_field(request, b"csrf")
        if not hmac.compare_digest(presented, self.csrf_token(session_id)):
            return self._error_page(
                request, 403, "this delete did not come from this UI's page (missing or wrong CSRF token)"
            )
        removed = await self.store.delete_session(session_id)
        self._session_cache.pop(session_id, None)
        counts = removed.get("removed", {})
        log.info("ui: deleted session {session}", session=session_id)
        body = (
            f"<h1>Deleted</h1><p>Session <code>{e(session_id)}</code> was deleted: "
            f"{integer(counts.get('requests'))} requests, {integer(counts.get('tool_calls'))} tool calls, "
            f"{integer(len(counts.get('jsonl_files') or []))} JSONL files.</p>"
            '<p><a href="/sessions">All sessions</a></p>'
        )
        return _html(request, layout("Deleted", body, current="/sessions"))

    def _session_charts(self, session: Mapping[str, Any]) -> str:
        sid = quote(str(session.get("session_id")), safe="")
        src = f"/api/sessions/{sid}/timeline"
        window = context_window(session.get("model_used"))
        return (
            '<details class="session-charts" open><summary>Charts</summary><div class="charts">'
            + chart("context", src, "Context size per turn" + (f" (model window {integer(window)})" if window else ""), window=window)
            + chart("cumulative-cost", src, "Cumulative cost")
            + chart("waterfall", src, "Model time and tool time per turn (seconds since the start)")
            + "</div></details>"
        )

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
            f"{figures}{export}{self._delete_form(sid)}"
        )

    def _delete_form(self, session_id: str) -> str:
        """With C{ui.delete_enabled}: a POST form carrying this session's CSRF token."""
        if not self.settings.ui.delete_enabled:
            return ""
        return (
            f'<form class="delete" method="post" action="/sessions/{e(quote(session_id, safe=""))}/delete" '
            'data-confirm="Delete this session and its recorded files? This cannot be undone.">'
            f'<input type="hidden" name="csrf" value="{e(self.csrf_token(session_id))}">'
            '<button type="submit" class="danger">Delete session</button></form>'
        )

    def _turn(
        self,
        session_id: str,
        number: int,
        turn: Mapping[str, Any],
        parts: Any,
        calls: Sequence[Mapping[str, Any]],
        changed: Sequence[str],
    ) -> str:
        rid = str(turn.get("request_id"))
        system_changed = "the system prompt" in changed
        out = [
            f'<section class="turn" id="turn-{e(rid)}" data-index="{number}" tabindex="-1">'
            + self._turn_header(session_id, number, turn)
            + self._changed_note(session_id, number, turn, changed)
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
        if parts.tool_names and (number == 1 or "the tool definitions" in changed):
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
    '<button type="button" data-copy="raw-curl">Copy as cURL</button> '
    '<a id="raw-download" href="" download>Download</a> '
    '<button type="button" data-close>Close (Esc)</button></div>'
    '<p id="raw-status" class="meta"></p>'
    '<h3>Request</h3><pre id="raw-request"></pre><h3>Response</h3><pre id="raw-response"></pre>'
    '<details><summary>As cURL (to replay through this gateway; the key from your environment)</summary>'
    '<pre id="raw-curl"></pre></details></dialog>'
)


PERIODS = {"hours": "hour", "days": "day", "weeks": "week", "months": "month"}


def _window_days(window: StatsWindow, now: float) -> float:
    """How many days a window spans (an open end is now, an open start a long time)."""
    try:
        since = datetime.fromisoformat(window.since.replace("Z", "+00:00")).timestamp() if window.since else 0.0
        until = datetime.fromisoformat(window.until.replace("Z", "+00:00")).timestamp() if window.until else now
    except ValueError:
        return 36500.0
    return (until - since) / 86400.0


_NUM_TD = '<td class="num">'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1, css: str = "") -> str:
    """A table of already-escaped cells; the columns from C{numeric_from} on are numbers."""
    if not rows:
        return '<p class="empty">Nothing in this window.</p>'
    header = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join((_NUM_TD if i >= numeric_from else "<td>") + f"{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f'<div class="table-wrap"><table class="figures-table {css}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>'


def _usage_table(rows: Sequence[Mapping[str, Any]], period: str) -> str:
    return _table(
        [period.capitalize(), "Sessions", "Requests", "Failed", "Success", "Tokens", "Cache read", "Cost", "Avg duration"],
        [
            [
                e(str(r.get("period", "")).replace("T", " ")),
                integer(r.get("sessions")),
                integer(r.get("requests")),
                integer(r.get("failed_requests")),
                percent(r.get("success_rate")),
                integer(r.get("total_tokens")),
                integer(r.get("cache_read_tokens")),
                e(cost(r.get("cost_usd"))),
                e(duration(r.get("avg_duration_ms"))),
            ]
            for r in reversed(rows)
        ],
        css="usage",
    )


def _group_table(rows: Sequence[Mapping[str, Any]], key: str, label: str) -> str:
    return _table(
        [label, "Sessions", "Requests", "Failed", "Tokens", "Cost", "Avg TTFT", "Avg provider"],
        [
            [
                e(r.get(key) or "—"),
                integer(r.get("sessions")),
                integer(r.get("requests")),
                integer(r.get("failed_requests")),
                integer(r.get("total_tokens")),
                e(cost(r.get("cost_usd"))),
                e(duration(r.get("avg_ttft_ms"))),
                e(duration(r.get("avg_provider_ms"))),
            ]
            for r in rows
        ],
        css=key,
    )


def _tool_table(rows: Sequence[Mapping[str, Any]]) -> str:
    return _table(
        ["Tool", "Calls", "Errors", "Sessions", "Avg duration", "Total duration"],
        [
            [
                e(r.get("tool_name") or "—"),
                integer(r.get("calls")),
                integer(r.get("errors")),
                integer(r.get("sessions")),
                e(duration(r.get("avg_duration_ms"))),
                e(duration(r.get("total_duration_ms"))),
            ]
            for r in rows
        ],
        css="tools",
    )


def _duration_table(rows: Sequence[Mapping[str, Any]]) -> str:
    return _table(
        ["Duration", "Requests"],
        [
            [
                e(f"≥ {duration(r['from_ms'])}" if r.get("to_ms") is None else f"{duration(r['from_ms'])} – {duration(r['to_ms'])}"),
                integer(r.get("requests")),
            ]
            for r in rows
        ],
        css="durations",
    )


def _changes(previous: Mapping[str, Any] | None, turn: Mapping[str, Any]) -> list[str]:
    """What changed from the previous turn: the system prompt, the tool definitions (by their hashes)."""
    if previous is None:
        return []
    changed = []
    for key, what in (("system_sha256", "the system prompt"), ("tools_sha256", "the tool definitions")):
        if previous.get(key) and turn.get(key) and previous.get(key) != turn.get(key):
            changed.append(what)
    return changed


def _tools_text(body: Any) -> str:
    """A request's tool definitions as stable, diffable text (one tool after another, keys sorted)."""
    tools = body.get("tools") if isinstance(body, Mapping) else None
    if not isinstance(tools, list):
        return ""
    return "\n".join(json.dumps(tool, ensure_ascii=False, indent=2, sort_keys=True, default=str) for tool in tools)


def _diff_html(old: str, new: str, old_name: str, new_name: str) -> str:
    """A unified diff of two texts, every line escaped, added and removed lines marked."""
    if old == new:
        return '<p class="meta">Unchanged.</p>'
    lines = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm="", n=3):
        kind = "hunk" if line.startswith("@@") else "add" if line.startswith("+") else "del" if line.startswith("-") else "same"
        if line.startswith(("+++", "---")):
            kind = "file"
        lines.append(f'<span class="{kind}">{e(line)}</span>')
    return '<pre class="diff">' + "\n".join(lines) + "</pre>"
