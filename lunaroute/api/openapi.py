"""
The OpenAPI 3.1 description of the session API, written by hand (served at
C{/api/openapi.json}).  A test checks that it names every route the Klein
app serves, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def _param(name: str, description: str, schema: dict[str, Any], where: str = "query") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": where, "description": description, "schema": schema}
    if where == "path":
        out["required"] = True
    return out


_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,255}$"}
_SESSION_ID = _param("session_id", "The session id (letters, digits, - and _).", _ID, "path")
_REQUEST_ID = _param("request_id", "The request id (letters, digits, - and _).", _ID, "path")
_WINDOW = [
    _param("days", "Only the last N days (1 to 36500).", {"type": "integer", "minimum": 1}),
    _param("from", "From this ISO date or date-time (UTC when no offset).", {"type": "string"}),
    _param("to", "Up to this ISO date (inclusive: the whole day) or date-time (exclusive).", {"type": "string"}),
]
_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "404": {"$ref": "#/components/responses/NotFound"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}


def _ok(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}},
        **_ERRORS,
    }


def _get(summary: str, params: list[dict[str, Any]], responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def _range_params() -> list[dict[str, Any]]:
    out = []
    for stem, what in (
        ("input_tokens", "input tokens"),
        ("output_tokens", "output tokens"),
        ("total_tokens", "total tokens (input + output)"),
        ("cost", "estimated cost in USD"),
        ("duration_ms", "wall-clock duration in ms"),
    ):
        for bound, word in (("min", "at least"), ("max", "at most")):
            out.append(_param(f"{bound}_{stem}", f"Sessions with {word} this many {what}.", {"type": "number"}))
    return out


def _session_paths(prefix: str) -> dict[str, Any]:
    list_params = [
        _param("text_search", "Full-text search over every recorded word (see docs/session-api.md).", {"type": "string"}),
        _param("model", "Exact model id the provider reported.", {"type": "string"}),
        _param("provider", "Provider name.", {"type": "string"}),
        _param("client", "Client: Claude Code, Codex, OpenCode, an SDK name.", {"type": "string"}),
        _param("project", "Working directory the client reported.", {"type": "string"}),
        *_WINDOW,
        *_range_params(),
        _param("success", "true: every request succeeded; false: at least one failed.", {"type": "boolean"}),
        _param(
            "sort", "Sort key.",
            {"type": "string", "enum": ["started_at", "last_activity", "total_tokens", "cost", "duration", "requests"],
             "default": "last_activity"},
        ),
        _param("order", "Sort order.", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}),
        _param("limit", "Page size (1 to 1000).", {"type": "integer", "default": 50}),
        _param("offset", "Rows to skip.", {"type": "integer", "default": 0}),
    ]
    return {
        prefix: _get(
            "List sessions (filters, sort, page); total count in the body and X-Total-Count.",
            list_params,
            _ok("A page of sessions.", {"$ref": "#/components/schemas/SessionPage"}),
        ),
        f"{prefix}/{{session_id}}": {
            **_get("One session with its per-request figures.", [_SESSION_ID], _ok("The session.")),
            "delete": {
                "summary": "Delete a session (rows, search entries, JSONL files); only with ui.delete_enabled.",
                "parameters": [_SESSION_ID],
                "responses": {
                    "200": {"description": "What was removed."},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                    **_ERRORS,
                },
            },
        },
        f"{prefix}/{{session_id}}/timeline": _get(
            "Requests, tool calls and responses in order, with durations and errors.",
            [_SESSION_ID],
            _ok("The timeline."),
        ),
        f"{prefix}/{{session_id}}/raw/{{request_id}}": _get(
            "A request and its response as recorded (credentials masked).",
            [_SESSION_ID, _REQUEST_ID],
            _ok("The bodies."),
        ),
        f"{prefix}/{{session_id}}/tools": _get(
            "Per tool: calls, errors, total and average duration.", [_SESSION_ID], _ok("Tool figures.")
        ),
        f"{prefix}/{{session_id}}/export": _get(
            "The session as a file.",
            [_SESSION_ID, _param("format", "File format.", {"type": "string", "enum": ["json", "jsonl", "csv", "html"],
                                                             "default": "json"})],
            {
                "200": {
                    "description": "The file (Content-Disposition: attachment).",
                    "content": {
                        "application/json": {},
                        "application/x-ndjson": {},
                        "text/csv": {},
                        "text/html": {},
                    },
                },
                "403": {"$ref": "#/components/responses/Forbidden"},
                **_ERRORS,
            },
        ),
        f"{prefix}/{{session_id}}/events": _get(
            "Server-Sent Events: one `exchange` event per request of the session recorded after connecting.",
            [_SESSION_ID],
            {"200": {"description": "An event stream.", "content": {"text/event-stream": {}}}, **_ERRORS},
        ),
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the session API."""
    paths: dict[str, Any] = {}
    paths.update(_session_paths("/sessions"))
    paths.update(_session_paths("/api/sessions"))
    paths["/api/search"] = _get(
        "Full-text search: the best matching requests with highlighted snippets.",
        [
            _param("q", "The query (FTS5 syntax or plain words).", {"type": "string"}),
            _param("limit", "Hits (1 to 1000).", {"type": "integer", "default": 20}),
        ],
        _ok("Hits, best first.", {"$ref": "#/components/schemas/SearchResult"}),
    )
    for name, summary in (
        ("overview", "Totals: sessions, requests, outcomes, tokens by kind, cost, latencies, cache hit ratio."),
        ("tokens", "Tokens by kind per UTC day."),
        ("tools", "Per tool: calls, errors, sessions, durations."),
        ("costs", "Cost per UTC day and per model."),
        ("models", "Per model: requests, sessions, tokens, cost, latencies."),
        ("hours", "Requests, tokens and cost per hour of the day (UTC)."),
        ("spending", "Total spend, per day with running total, per provider, unpriced requests."),
        ("usage", "Per UTC hour, day, week and month: requests, success rate, tokens, cost, latencies."),
        ("clients", "Per client: requests, sessions, outcomes, tokens, cost, latencies."),
        ("projects", "Per project: requests, sessions, outcomes, tokens, cost, latencies."),
        ("durations", "A histogram of request durations."),
        ("blocks", "Five-hour usage blocks: start, end, requests, tokens, cost."),
    ):
        paths[f"/api/stats/{name}"] = _get(summary, list(_WINDOW), _ok(summary))
    paths["/api/sessions/recent"] = _get(
        "The most recently active sessions.",
        [_param("limit", "How many (1 to 1000).", {"type": "integer", "default": 10}), *_WINDOW],
        _ok("Sessions."),
    )
    paths["/api/user-agents"] = _get("Per client and user agent: requests, sessions, tokens, cost.", list(_WINDOW),
                                     _ok("User agents."))
    paths["/api/models"] = _get("The models seen, with provider and request count.", list(_WINDOW), _ok("Models."))
    paths["/api/openapi.json"] = {"get": {"summary": "This document.", "responses": {"200": {"description": "OpenAPI 3.1"}}}}
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                },
            }
        },
    }

    def response(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LunaRoute session API",
            "version": "1",
            "description": "Recorded sessions, full-text search, statistics and a live tail. See docs/session-api.md.",
        },
        "security": [{}, {"bearer": []}, {"token": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "http_server.auth_token"},
                "token": {"type": "apiKey", "in": "header", "name": "x-lunaroute-token"},
            },
            "schemas": {
                "Error": error,
                "SessionPage": {
                    "type": "object",
                    "properties": {
                        "sessions": {"type": "array", "items": {"type": "object"}},
                        "total": {"type": "integer"},
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "sort": {"type": "string"},
                        "order": {"type": "string"},
                    },
                },
                "SearchResult": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string"},
                        "hits": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "session_id": {"type": "string"},
                                    "request_id": {"type": "string"},
                                    "snippet": {"type": "string", "description": "HTML-escaped, matches in <mark>"},
                                    "snippet_text": {"type": "string", "description": "plain, matches in [ ]"},
                                    "rank": {"type": "number", "description": "bm25: lower is better"},
                                },
                            },
                        },
                    },
                },
            },
            "responses": {
                "BadRequest": response("A bad parameter (named in error.param) or a malformed search query."),
                "NotFound": response("No such session, request or route, or recording is off."),
                "Forbidden": response("Deleting or exporting is disabled in the configuration."),
                "Unavailable": response("The session database cannot be read."),
            },
        },
    }
