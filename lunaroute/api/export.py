"""
A session as a file: JSON (everything), JSONL (one request a line), CSV
(one request a row, figures only) or one self-contained HTML page of the
conversation that opens offline.  Pure: data in, bytes out.

In the HTML every recorded string is escaped (it is what a model and its
tools wrote: anything at all) and the page loads nothing: no script, no
external style or font, and a Content-Security-Policy that forbids them.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["CSV_COLUMNS", "FORMATS", "export_csv", "export_html", "export_json", "export_jsonl", "spreadsheet_cell"]

FORMATS = {
    "json": ("application/json", "json"),
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "html": ("text/html; charset=utf-8", "html"),
}

CSV_COLUMNS = (
    "request_id", "started_at", "completed_at", "model_requested", "model_used", "provider", "status",
    "outcome", "success", "stop_reason", "error", "input_tokens", "output_tokens", "thinking_tokens",
    "cache_read_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens", "context_tokens",
    "cache_hit_ratio", "total_tokens", "estimated_cost_usd", "duration_ms", "ttft_ms", "provider_ms",
    "proxy_overhead_ms", "tool_call_count", "system_sha256", "tools_sha256",
)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def export_json(session: Mapping[str, Any]) -> bytes:
    return json.dumps(session, ensure_ascii=False, indent=2, default=str).encode("utf-8")


def export_jsonl(session: Mapping[str, Any]) -> bytes:
    """One line per request (its figures, texts and bodies)."""
    return "".join(_dumps(turn) + "\n" for turn in session.get("requests", [])).encode("utf-8")


# What makes a spreadsheet run a cell as a formula: = + - @ (and their
# full-width forms, which some locales accept), or a tab, carriage return or
# line feed before them; leading spaces are skipped by some spreadsheets.
_FORMULA_START = frozenset("=+-@\uff1d\uff0b\uff0d\uff20\t\r\n")


def spreadsheet_cell(value: Any) -> Any:
    """C{value}, or a text that could run as a spreadsheet formula quoted with a leading C{'}."""
    if isinstance(value, str) and value.lstrip(" \u00a0\u3000")[:1] in _FORMULA_START and value.strip(" "):
        return "'" + value
    return value


def export_csv(session: Mapping[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for turn in session.get("requests", []):
        writer.writerow([spreadsheet_cell(turn.get(column)) for column in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


# -- HTML -------------------------------------------------------------------

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.3rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}
dt{color:#666}.turn{border-top:1px solid #ddd;padding:.5rem 0}.meta{color:#666;font-size:.85rem}
.user,.assistant{white-space:pre-wrap;padding:.5rem .8rem;border-radius:6px;margin:.4rem 0}
.user{background:#eef4ff}.assistant{background:#f4f4f4}.error{color:#a00}
pre{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:.4rem;font-size:.85rem}
details{margin:.3rem 0}summary{cursor:pointer;color:#555}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, Mapping) and part.get("type") == "tool_result":
                inner = part.get("content")
                out.append("[tool result] " + "\n".join(_texts(inner)) if not isinstance(inner, str) else
                           "[tool result] " + inner)
    return out


def _new_user_text(body: Any) -> str:
    """The user side of a turn: what the request adds after the last assistant message."""
    if not isinstance(body, Mapping):
        return ""
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    start = 0
    for index, message in enumerate(messages):
        if isinstance(message, Mapping) and (
            message.get("role") == "assistant" or message.get("type") in ("function_call", "custom_tool_call")
        ):
            start = index + 1
    parts: list[str] = []
    for message in messages[start:]:
        if not isinstance(message, Mapping):
            continue
        if message.get("type") in ("function_call_output", "custom_tool_call_output"):
            output = message.get("output")
            parts.append("[tool result] " + (output if isinstance(output, str) else _dumps(output)))
        elif message.get("role") in ("user", "tool"):
            parts += _texts(message.get("content"))
    return "\n\n".join(p for p in parts if p)


def export_html(session: Mapping[str, Any]) -> bytes:
    """The conversation as one offline page; every recorded value escaped."""
    title = session.get("title") or session.get("session_id")
    rows = [
        ("Session", session.get("session_id")),
        ("Client", session.get("client")),
        ("Project", session.get("project")),
        ("Model", session.get("model_used")),
        ("Started", session.get("started_at")),
        ("Last activity", session.get("last_activity")),
        ("Requests", session.get("request_count")),
        ("Tokens (input / output)", f"{session.get('input_tokens')} / {session.get('output_tokens')}"),
        ("Estimated cost (USD)", session.get("estimated_cost_usd")),
    ]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1><dl>",
    ]
    out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows]
    out.append("</dl>")
    calls: dict[str, list[Mapping[str, Any]]] = {}
    for call in session.get("tool_calls", []):
        calls.setdefault(str(call.get("request_id")), []).append(call)
    for turn in session.get("requests", []):
        out.append('<section class="turn">')
        out.append(
            f'<div class="meta">{_e(turn.get("started_at"))} · {_e(turn.get("model_used") or turn.get("model_requested"))}'
            f' · {_e(turn.get("input_tokens"))} in / {_e(turn.get("output_tokens"))} out'
            f' · {_e(turn.get("duration_ms"))} ms</div>'
        )
        user = _new_user_text(turn.get("request_json"))
        if user:
            out.append(f'<div class="user">{_e(user)}</div>')
        if turn.get("thinking_text"):
            out.append(f"<details><summary>Thinking</summary><pre>{_e(turn['thinking_text'])}</pre></details>")
        if turn.get("response_text"):
            out.append(f'<div class="assistant">{_e(turn["response_text"])}</div>')
        for call in calls.get(str(turn.get("request_id")), []):
            out.append(
                f"<details><summary>Tool call: {_e(call.get('tool_name'))}"
                f" ({_e(call.get('duration_ms'))} ms)</summary><pre>{_e(_dumps(call.get('input_json')))}</pre></details>"
            )
        if turn.get("error"):
            out.append(f'<div class="error">Error: {_e(turn["error"])}</div>')
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out).encode("utf-8")
