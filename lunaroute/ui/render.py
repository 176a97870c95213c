"""
The UI's HTML, built from Python strings.  Every value that comes from a
recording (titles, prompts, answers, tool inputs and outputs, model names,
project paths, ids) is hostile: it goes through L{e} (C{html.escape}, quotes
included) before it is placed in a page, in text and in attributes alike.
The only markup taken from the store is a search snippet's C{<mark>}, and
L{safe_snippet} rebuilds it from escaped text.  Pure: values in, text out.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

__all__ = [
    "chart",
    "cost",
    "duration",
    "e",
    "integer",
    "layout",
    "moment",
    "percent",
    "query_url",
    "safe_snippet",
    "session_url",
]


def e(value: Any) -> str:
    """C{value} as HTML text, safe in element content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def integer(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "—"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


def cost(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "—"
    amount = float(value)
    if amount == 0:
        return "$0"
    if amount < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.3f}"


def duration(ms: Any) -> str:
    if ms is None or isinstance(ms, bool):
        return "—"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    if minutes < 60:
        return f"{minutes:.0f} min {seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f} h {minutes:.0f} min"


def percent(ratio: Any) -> str:
    if ratio is None or isinstance(ratio, bool):
        return "—"
    return f"{float(ratio) * 100:.0f}%"


def moment(iso: Any) -> str:
    """A stored ISO-8601 UTC time as C{2025-06-15 14:03:07} (UTC)."""
    if not isinstance(iso, str) or not iso:
        return "—"
    return iso.replace("T", " ")[:19]


def session_url(session_id: str, request_id: str | None = None) -> str:
    url = "/sessions/" + quote(session_id, safe="")
    if request_id:
        url += "#turn-" + quote(request_id, safe="")
    return url


def query_url(path: str, params: Mapping[str, Any]) -> str:
    """C{path} with the non-empty C{params} as its query string."""
    kept = [(k, str(v)) for k, v in params.items() if v is not None and v != ""]
    return path + ("?" + urlencode(kept) if kept else "")


_MARK = re.compile(r"(</?mark>)")


def safe_snippet(snippet: str | None) -> str:
    """
    A search snippet from the session API (HTML-escaped text with the
    matches in C{<mark>}) made safe however it was built: everything but
    the C{<mark>} tags is unescaped and escaped again, so only those tags
    can reach the page.
    """
    out = []
    for piece in _MARK.split(snippet or ""):
        if piece in ("<mark>", "</mark>"):
            out.append(piece)
        else:
            out.append(e(html.unescape(piece)))
    return "".join(out)


_FENCE = re.compile(r"^```[^\n`]*\n(.*?)^```[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)([^*\n]+?)(?<=\S)\*\*")
_HEADING = re.compile(r"^(#{1,6}) +(.+)$", re.M)


def _inline_markdown(escaped: str) -> str:
    pieces = _INLINE_CODE.split(escaped)
    out = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append(f"<code>{piece}</code>")
        else:
            piece = _HEADING.sub(lambda m: f'<strong class="h{len(m.group(1))}">{m.group(2)}</strong>', piece)
            out.append(_BOLD.sub(r"<strong>\1</strong>", piece))
    return "".join(out)


def markdown_html(text: str | None) -> str:
    """
    The few markdown forms that make an answer readable: fenced code
    blocks, inline code, bold and headings.  The text is escaped first and
    the result holds only tags written here, without attributes from the
    text: links stay text (C{[x](javascript:...)} is shown, never followed),
    raw HTML stays text.
    """
    escaped = e(text)
    out = []
    last = 0
    for match in _FENCE.finditer(escaped):
        out.append(_inline_markdown(escaped[last : match.start()]))
        out.append(f'<pre class="code"><code>{match.group(1)}</code></pre>')
        last = match.end()
    out.append(_inline_markdown(escaped[last:]))
    return "".join(out)


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


_NAV = (("/", "Dashboard"), ("/sessions", "Sessions"), ("/analytics", "Analytics"), ("/settings", "Settings"))
_CURRENT_PAGE = ' aria-current="page"'


_CHART_SCRIPTS = (
    '<script src="/static/vendor/chart.umd.min.js" defer></script><script src="/static/charts.js" defer></script>'
)


def chart(kind: str, src: str, title: str, **attrs: Any) -> str:
    """
    A chart's place: C{/static/charts.js} draws chart C{kind} on its canvas
    from the JSON at C{src} (the session API).  C{attrs} become C{data-*}
    attributes (escaped).
    """
    extra = "".join(f' data-{k.replace("_", "-")}="{e(v)}"' for k, v in attrs.items() if v is not None)
    return (
        f'<figure class="chart" data-chart="{e(kind)}" data-src="{e(src)}"{extra}>'
        f'<figcaption>{e(title)}</figcaption><div class="canvas"><canvas role="img" aria-label="{e(title)}"></canvas></div>'
        "</figure>"
    )


def layout(
    title: str, body: str, *, current: str = "", search: str = "", refresh: int = 0, charts: bool = False
) -> bytes:
    """
    A whole page: head (the shipped style sheet and script, and the chart
    scripts when C{charts}), navigation, C{body} (already HTML).
    """
    nav = "".join(
        f'<a href="{href}"{_CURRENT_PAGE if href == current else ""}>{label}</a>' for href, label in _NAV
    )
    refresh_attr = f' data-refresh="{int(refresh)}"' if refresh > 0 else ""
    page = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · LunaRoute</title>"
        '<link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/app.js" defer></script>'
        f"{_CHART_SCRIPTS if charts else ''}</head><body{refresh_attr}>"
        '<header class="top"><a class="brand" href="/">LunaRoute</a>'
        f"<nav>{nav}</nav>"
        '<form class="search" action="/sessions" method="get" role="search">'
        f'<input type="search" name="text_search" id="search" placeholder="Search every session  ( / )" value="{e(search)}" aria-label="Search every session">'
        "</form></header>"
        f"<main>{body}</main></body></html>\n"
    )
    return page.encode("utf-8")


def cards(items: Iterable[tuple[str, str, str]]) -> str:
    """Figure cards: (label, value, note), all plain text."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{e(label)}</div><div class="value">{e(value)}</div>'
            f'<div class="note">{e(note)}</div></div>'
            for label, value, note in items
        )
        + "</div>"
    )


def status_badge(success: Any) -> str:
    if success is None:
        return '<span class="badge">—</span>'
    return '<span class="badge ok">ok</span>' if success else '<span class="badge fail">failed</span>'


def session_rows(sessions: Iterable[Mapping[str, Any]]) -> str:
    """Table rows of sessions: time, client, project, title, model, requests, tokens, cost, duration, status."""
    rows = []
    for s in sessions:
        url = session_url(str(s.get("session_id", "")))
        title = s.get("title") or s.get("session_id")
        rows.append(
            "<tr>"
            f'<td class="time">{e(moment(s.get("last_activity") or s.get("started_at")))}</td>'
            f"<td>{e(s.get('client') or '—')}</td>"
            f'<td class="project">{e(s.get("project") or "—")}</td>'
            f'<td class="title"><a href="{e(url)}">{e(title)}</a></td>'
            f"<td>{e(s.get('model_used') or '—')}</td>"
            f'<td class="num">{integer(s.get("request_count"))}</td>'
            f'<td class="num">{integer(s.get("total_tokens"))}</td>'
            f'<td class="num">{e(cost(s.get("estimated_cost_usd")))}</td>'
            f'<td class="num">{e(duration(s.get("duration_ms")))}</td>'
            f"<td>{status_badge(s.get('success'))}</td>"
            "</tr>"
        )
    return "".join(rows)


SESSION_COLUMNS = (
    ("Last activity", "last_activity"),
    ("Client", None),
    ("Project", None),
    ("Title", None),
    ("Model", None),
    ("Requests", "requests"),
    ("Tokens", "total_tokens"),
    ("Cost", "cost"),
    ("Duration", "duration"),
    ("Status", None),
)


def session_table(sessions: Sequence[Mapping[str, Any]], header_cells: str | None = None) -> str:
    if not sessions:
        return '<p class="empty">No sessions.</p>'
    head = header_cells or "".join(f"<th>{e(label)}</th>" for label, _ in SESSION_COLUMNS)
    return (
        '<div class="table-wrap"><table class="sessions"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + session_rows(sessions)
        + "</tbody></table></div>"
    )
