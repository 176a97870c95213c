"""
The web UI (lunaroute.ui) in memory: StubTreq over the UI site's whole
resource (guard, pages, session API), a store running its queries inline,
sessions recorded by the real writer, one of them full of hostile text.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_session_store import CC, CX, NOON, SDK, sample_exchanges
from treq.testing import StubTreq
from twisted.internet.task import Clock

from lunaroute.api.app import LiveFeed
from lunaroute.config import settings_from_mapping
from lunaroute.sessions.recorder import InlineThreadPool
from lunaroute.sessions.store import SessionStore
from lunaroute.stats.pricing import PricingTable
from lunaroute.testing.sessions import (
    anthropic_summary,
    make_exchange,
    write_exchanges,
    write_postgres_exchanges,
)
from lunaroute.ui import CONTENT_SECURITY_POLICY, make_ui_service, ui_resource, ui_url
from lunaroute.ui.conversation import ToolResult, request_parts
from lunaroute.ui.render import safe_snippet

BASE = "http://127.0.0.1:8082"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE = "hostile-session-1"
LINK = "[click](javascript:alert(1))"


def hostile_exchanges() -> list[Any]:
    """A session whose every recorded string tries to become markup."""
    first = {
        "model": "claude-sonnet-4",
        "max_tokens": 100,
        "system": f"system {SCRIPT}",
        "messages": [{"role": "user", "content": f"{SCRIPT} and {IMG} wombat {LINK}"}],
    }
    second = {
        **first,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_h1", "name": "Bash", "input": {}}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_h1", "content": f"result {IMG}"}],
            },
        ],
    }
    return [
        make_exchange(
            HOSTILE,
            "hostile-req-1",
            first,
            anthropic_summary(
                f"answer {SCRIPT} {IMG}",
                thinking=f"thinking {IMG}",
                tool_calls=[("toolu_h1", f"Bash{IMG}", {"command": f"echo {SCRIPT}"})],
                stop_reason="tool_use",
            ),
            received=NOON + 120,
            cost_usd=0.001,
        ),
        make_exchange(
            HOSTILE,
            "hostile-req-2",
            second,
            anthropic_summary("done"),
            received=NOON + 125,
            cost_usd=0.001,
            tool_results=[{"tool_call_id": "toolu_h1", "tool_name": "Bash", "duration_ms": 900.0}],
        ),
    ]


class UI:
    """
    The UI over the sample and hostile sessions: in an SQLite database, or
    in the PostgreSQL store when given C{postgres_dsn}.
    """

    def __init__(self, tmp_path: Path, postgres_dsn: str | None = None, **config: Any) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.db = str(tmp_path / "sessions.db")
        exchanges = [*sample_exchanges(), *hostile_exchanges()]
        self.clock = Clock()
        self.clock.advance(NOON + 3600)
        self.store: Any
        if postgres_dsn is None:
            write_exchanges(self.db, exchanges)
            self.store = SessionStore(self.db, reactor=self.clock, threadpool=InlineThreadPool())
        else:
            from lunaroute.config import PostgresSettings
            from lunaroute.sessions.postgres import PostgresSessionStore

            write_postgres_exchanges(postgres_dsn, exchanges)
            self.store = PostgresSessionStore(
                PostgresSettings(enabled=True, connection_string=postgres_dsn, min_connections=0),
                reactor=self.clock, threadpool=InlineThreadPool(),
            )
        self.settings = settings_from_mapping(config, env={})
        pricing = PricingTable.load(None, {})
        self.stub = StubTreq(ui_resource(self.store, self.settings, self.clock, pricing, LiveFeed()))

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        response = await self.stub.get(BASE + path, headers=headers or {})
        body = (await response.content()).decode("utf-8")
        return response.code, body, response.headers


@pytest.fixture
def ui(tmp_path: Path) -> UI:
    return UI(tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def ui_on(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The UI over each store (the PostgreSQL one needs a test server: lunaroute.testing.postgres)."""
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    made = UI(tmp_path, dsn)
    yield made
    made.store.close()


def cards(page: str) -> dict[str, str]:
    """A page's figure cards: label -> value."""
    return dict(re.findall(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>', page))


def table_rows(page: str, kind: str) -> list[list[str]]:
    """The cells of each body row of the page's C{kind} figures table."""
    found = re.search(rf'<table class="figures-table {kind}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert found is not None, kind
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S)]


@pytest_twisted.ensureDeferred
async def test_pages_show_the_same_figures_over_each_store(ui_on: UI) -> None:
    """
    The dashboard, the list, a session and the analytics page (per day,
    week and month, by client and project, durations) over SQLite and over
    PostgreSQL: 200, with the same figures.
    """
    code, page, _ = await ui_on.get("/?days=30")
    assert code == 200
    assert cards(page) == {
        "Sessions": "4", "Requests": "6", "Tokens": "95,460", "Cost": "$0.532", "Success rate": "83%",
        "Cache hit rate": "19%", "Avg TTFT": "250 ms", "Avg proxy overhead": "3 ms", "Today": "$0.032",
        "This week": "$0.532", "This month": "$0.532", "Current 5-hour block": "$0.032",
    }
    assert [r[0] for r in table_rows(page, "tools")] == ["Bash&quot;&gt;&lt;img src=x onerror=alert(1)&gt;", "Read"]
    code, page, _ = await ui_on.get("/sessions?sort=cost")
    assert code == 200
    assert re.findall(r'<td class="title"><a href="/sessions/([^"]+)"', page) == [SDK, CC, HOSTILE, CX]
    code, page, _ = await ui_on.get(f"/sessions/{CC}")
    assert code == 200
    assert cards(page) == {"Requests": "2", "Tokens": "70", "Cost": "$0.030", "Duration": "6.0 s"}
    assert "Tool <strong>Read</strong> · 1.2 s" in page and "Let me read the capybara notes." in page
    code, page, _ = await ui_on.get("/analytics?days=30")
    assert code == 200
    days = table_rows(page, "usage")
    assert [d[:5] for d in days] == [["2025-06-15", "3", "5", "1", "80%"], ["2025-06-12", "1", "1", "0", "100%"]]
    assert [(c[0], c[2], c[5]) for c in table_rows(page, "client")] == [
        ("Anthropic Python SDK", "1", "$0.500"), ("Claude Code", "4", "$0.032"), ("Codex", "1", "—"),
    ]
    assert [(p[0], p[2]) for p in table_rows(page, "project")] == [("—", "3"), ("/tmp/cc-tool", "2"), ("/tmp/cx-work", "1")]
    durations = {d[0]: d[1] for d in table_rows(page, "durations")}
    assert (durations["1.0 s – 2.0 s"], durations["30.0 s – 1 min 0 s"]) == ("5", "1")
    for period, first in (("weeks", "2025-06-09"), ("months", "2025-06")):
        code, page, _ = await ui_on.get(f"/analytics?days=30&period={period}")
        assert code == 200, period
        assert [r[:3] for r in table_rows(page, "usage")] == [[first, "4", "6"]]


def assert_inert(page: str) -> None:
    """No recorded markup became markup: only the escaped forms are in the page."""
    assert "<script>alert" not in page
    assert "<img" not in page
    assert 'href="javascript' not in page
    assert "onerror=alert(1)&gt;" in page or "&lt;script&gt;" in page


@pytest_twisted.ensureDeferred
async def test_dashboard_shows_cards_and_recent_sessions(ui: UI) -> None:
    """The dashboard: figures for the window and the recent sessions, linked."""
    code, page, headers = await ui.get("/?days=30")
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    for label in ("Sessions", "Requests", "Tokens", "Cost", "Success rate", "Cache hit rate"):
        assert f'<div class="label">{label}</div>' in page
    assert f'href="/sessions/{CC}"' in page and f'href="/sessions/{SDK}"' in page
    assert '<a href="/?days=30" aria-current="true">' in page
    # 24 h window by default: the SDK session three days old is not in it.
    code, page, _ = await ui.get("/")
    assert code == 200 and f'href="/sessions/{SDK}"' not in page and f'href="/sessions/{CC}"' in page
    assert 'data-refresh="5"' in page


@pytest_twisted.ensureDeferred
async def test_every_page_sends_a_strict_content_security_policy(ui: UI) -> None:
    """No inline script, nothing from elsewhere, no framing: on pages, API and errors alike."""
    for path in ("/", "/sessions", f"/sessions/{CC}", "/settings", "/static/app.js", "/api/sessions", "/nowhere"):
        _, _, headers = await ui.get(path)
        assert headers.getRawHeaders(b"content-security-policy") == [CONTENT_SECURITY_POLICY.encode()]
        assert headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
        assert headers.getRawHeaders(b"x-frame-options") == [b"DENY"]
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY


@pytest_twisted.ensureDeferred
async def test_sessions_table_filters_sorts_and_pages_from_the_url(ui: UI) -> None:
    """Every filter is a query parameter mapped to the API's; sort links and pages keep the rest."""
    code, page, _ = await ui.get("/sessions")
    assert code == 200
    assert page.count('<tr><td class="time">') == 4
    for column in ("Last activity", "Client", "Project", "Title", "Model", "Requests", "Tokens", "Cost", "Duration", "Status"):
        assert f">{column}" in page
    _, page, _ = await ui.get("/sessions?client=Codex")
    assert page.count('<tr><td class="time">') == 1 and f'href="/sessions/{CX}"' in page
    assert '<input name="client" value="Codex"' in page
    _, page, _ = await ui.get("/sessions?success=false")
    assert f'href="/sessions/{CX}"' in page and f'href="/sessions/{CC}"' not in page
    # Sorting by cost, most expensive first, and the header links to the other order.
    _, page, _ = await ui.get("/sessions?sort=cost&client=")
    rows = re.findall(r'<td class="title"><a href="/sessions/([^"]+)"', page)
    assert rows[0] == SDK
    assert 'href="/sessions?sort=cost&amp;order=asc"' in page
    # Pages of one: the next link keeps the filters and moves the offset.
    _, page, _ = await ui.get("/sessions?limit=1&sort=cost")
    assert page.count('<tr><td class="time">') == 1
    assert 'href="/sessions?limit=1&amp;sort=cost&amp;offset=1"' in page
    _, page, _ = await ui.get("/sessions?limit=1&sort=cost&offset=1")
    assert 'rel="prev" href="/sessions?limit=1&amp;sort=cost"' in page
    # The range and date filters are controls too, under "More filters" (open when one is set).
    _, page, _ = await ui.get("/sessions?min_total_tokens=50&from=2025-06-15")
    assert '<details class="more-filters" open>' in page
    assert '<input type="number" name="min_total_tokens" value="50" step="1">' in page
    assert '<input type="date" name="from" value="2025-06-15">' in page
    assert f'href="/sessions/{CC}"' in page and f'href="/sessions/{SDK}"' not in page
    # A state the form does not show (limit) is kept as a hidden field.
    _, page, _ = await ui.get("/sessions?limit=2")
    assert '<input type="hidden" name="limit" value="2">' in page
    # The same list as JSON from the API, with the same parameters.
    _, page, _ = await ui.get("/sessions?client=Codex&sort=cost")
    assert 'this page on the API: <a href="/api/sessions?client=Codex&amp;sort=cost">JSON</a>' in page


@pytest_twisted.ensureDeferred
async def test_a_bad_parameter_is_a_400_page_naming_it(ui: UI) -> None:
    code, page, _ = await ui.get("/sessions?min_cost=lots")
    assert code == 400 and "min_cost must be a number" in page
    code, page, _ = await ui.get("/sessions?sort=%3Cscript%3E")
    assert code == 400 and "<script>" not in page and "&#x27;&lt;script&gt;&#x27;" in page
    code, page, _ = await ui.get("/sessions?text_search=%22unterminated")
    assert code == 400 and "malformed search query" in page


@pytest_twisted.ensureDeferred
async def test_search_shows_highlighted_snippets_linking_to_the_turn(ui: UI) -> None:
    """The search box: matching sessions, and each matching turn with its snippet and a link to it."""
    code, page, _ = await ui.get("/sessions?text_search=capybara")
    assert code == 200
    assert "<mark>capybara</mark>" in page
    assert f'href="/sessions/{CC}#turn-cc-req-1"' in page
    assert page.count('<tr><td class="time">') == 1
    assert 'value="capybara"' in page  # the box shows the query


@pytest_twisted.ensureDeferred
async def test_session_page_renders_the_conversation(ui: UI) -> None:
    """Each turn: user text, thinking collapsed, the answer, tool calls with durations and results, figures."""
    code, page, _ = await ui.get(f"/sessions/{CC}")
    assert code == 200
    assert 'id="turn-cc-req-1"' in page and 'id="turn-cc-req-2"' in page
    assert "Let me read the capybara notes." in page
    assert '<details class="thinking"><summary>Thinking</summary><div class="text">the user wants the hello file' in page
    assert "Tool <strong>Read</strong> · 1.2 s" in page
    assert "/tmp/cc-tool/hello.txt" in page
    assert '<details class="result"><summary>Result</summary>' in page
    assert "The file greets you: hello." in page
    assert "cache read 8,000" in page and "TTFT 250 ms" in page
    assert f'data-raw href="/api/sessions/{CC}/raw/cc-req-1"' in page
    assert '<dialog id="raw-dialog"' in page
    assert f'href="/api/sessions/{CC}/export?format=html"' in page
    assert '<details class="system"><summary>System prompt</summary>' in page


@pytest_twisted.ensureDeferred
async def test_exports_are_not_linked_when_disabled(tmp_path: Path) -> None:
    ui = UI(tmp_path, ui={"export_enabled": False})
    _, page, _ = await ui.get(f"/sessions/{CC}")
    assert "export?format=" not in page


@pytest_twisted.ensureDeferred
async def test_hostile_recorded_text_is_inert_on_every_page(ui: UI) -> None:
    """Titles, prompts, answers, thinking, tool names, inputs and results: all escaped, everywhere."""
    code, page, _ = await ui.get(f"/sessions/{HOSTILE}")
    assert code == 200
    assert_inert(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; and &quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "result &quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page  # the tool result
    assert "Bash&quot;&gt;&lt;img" in page  # the tool name
    assert "[click](javascript:alert(1))" in page  # a markdown link stays text
    for path in ("/", "/sessions", "/sessions?text_search=wombat", "/sessions?text_search=onerror"):
        code, page, _ = await ui.get(path)
        assert code == 200, path
        assert_inert(page)
    _, page, _ = await ui.get("/sessions?text_search=onerror")
    assert "<mark>onerror</mark>" in page


def test_safe_snippet_keeps_only_mark_tags() -> None:
    """Whatever the snippet holds, only <mark> survives as markup."""
    assert safe_snippet("a &lt;b&gt; <mark>x</mark>") == "a &lt;b&gt; <mark>x</mark>"
    assert safe_snippet('<img src=x onerror=alert(1)><mark>y</mark>') == (
        "&lt;img src=x onerror=alert(1)&gt;<mark>y</mark>"
    )
    assert safe_snippet(None) == ""


@pytest_twisted.ensureDeferred
async def test_unknown_and_bad_session_ids(ui: UI) -> None:
    code, page, _ = await ui.get("/sessions/no-such-session")
    assert code == 404 and "no session" in page
    code, page, _ = await ui.get("/sessions/bad%20id")
    assert code == 400
    code, page, _ = await ui.get("/nowhere")
    assert code == 404 and "no such page" in page


@pytest_twisted.ensureDeferred
async def test_static_files_are_shipped(ui: UI) -> None:
    code, body, headers = await ui.get("/static/app.js")
    assert code == 200 and headers.getRawHeaders(b"content-type") == [b"text/javascript; charset=utf-8"]
    assert "textContent" in body and "innerHTML" not in body.replace("never innerHTML", "")
    code, body, headers = await ui.get("/static/app.css")
    assert code == 200 and "prefers-color-scheme: dark" in body
    # An encoded '../' is refused as a request target (400) before any
    # route runs; the source next to the static files is never served.
    code, body, _ = await ui.get("/static/..%2Fpages.py")
    assert code == 400 and "import" not in body
    code, _, _ = await ui.get("/static/pages.py")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_the_session_api_is_served_under_api(ui: UI) -> None:
    code, body, _ = await ui.get("/api/sessions?client=Codex")
    assert code == 200 and [s["session_id"] for s in json.loads(body)["sessions"]] == [CX]
    code, body, _ = await ui.get("/api/search?q=capybara")
    assert code == 200 and json.loads(body)["hits"][0]["request_id"] == "cc-req-1"
    code, body, _ = await ui.get(f"/api/sessions/{CC}/raw/cc-req-1")
    assert code == 200 and json.loads(body)["request_id"] == "cc-req-1"


@pytest_twisted.ensureDeferred
async def test_token_protects_every_path_and_browsers_can_give_it(tmp_path: Path) -> None:
    """With http_server.auth_token: 401 asking for Basic auth; the token as password, Bearer or header works."""
    ui = UI(tmp_path, http_server={"auth_token": "s3cret-token"})
    for path in ("/", "/sessions", f"/sessions/{CC}", "/api/sessions", "/static/app.css"):
        code, body, headers = await ui.get(path)
        assert code == 401, path
        assert headers.getRawHeaders(b"www-authenticate")[0].startswith(b"Basic ")
        assert "capybara" not in body
    good = "Basic " + base64.b64encode(b"anyone:s3cret-token").decode()
    bad = "Basic " + base64.b64encode(b"anyone:wrong").decode()
    assert (await ui.get("/", {"Authorization": good}))[0] == 200
    assert (await ui.get("/", {"Authorization": bad}))[0] == 401
    assert (await ui.get("/", {"Authorization": "Basic !!!"}))[0] == 401
    assert (await ui.get("/api/sessions", {"Authorization": "Bearer s3cret-token"}))[0] == 200
    assert (await ui.get("/sessions", {"x-lunaroute-token": "s3cret-token"}))[0] == 200


@pytest_twisted.ensureDeferred
async def test_foreign_origins_are_refused(ui: UI) -> None:
    """A page elsewhere cannot read sessions through the user's browser; the UI's own origin can."""
    code, body, _ = await ui.get("/api/sessions", {"Origin": "https://evil.example"})
    assert code == 403 and "capybara" not in body
    code, _, _ = await ui.get("/api/sessions", {"Origin": "http://127.0.0.1:8082", "Host": "127.0.0.1:8082"})
    assert code == 200


def test_request_parts_of_each_dialect() -> None:
    """What a request adds: user text after the last assistant turn, tool results, system prompt."""
    anthropic = request_parts(
        {
            "system": [{"type": "text", "text": "be brief"}],
            "tools": [{"name": "Read"}],
            "messages": [
                {"role": "user", "content": "old question"},
                {"role": "assistant", "content": "old answer"},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "file"}], "is_error": True},
                    {"type": "text", "text": "new question"},
                ]},
            ],
        },
        "anthropic",
    )
    assert anthropic.user_texts == ["new question"]
    assert anthropic.tool_results == [ToolResult("t1", "file", True)]
    assert anthropic.system == "be brief" and anthropic.tool_names == ["Read"]
    chat = request_parts(
        {
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
                {"role": "user", "content": [{"type": "text", "text": "q2"}]},
            ],
            "tools": [{"type": "function", "function": {"name": "calc"}}],
        },
        "openai_chat",
    )
    assert chat.user_texts == ["q2"] and chat.tool_results == [ToolResult("c1", "42")]
    assert chat.system == "sys" and chat.tool_names == ["calc"]
    responses = request_parts(
        {
            "instructions": "codex rules",
            "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]},
                {"type": "function_call", "call_id": "f1", "name": "shell", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "f1", "output": "ok"},
            ],
        },
        "openai_responses",
    )
    assert responses.user_texts == [] and responses.tool_results == [ToolResult("f1", "ok")]
    assert responses.system == "codex rules"
    assert request_parts({"input": "hi"}, None).user_texts == ["hi"]
    assert request_parts("not json", "anthropic").user_texts == []


def test_no_ui_service_when_disabled_or_nothing_recorded() -> None:
    assert make_ui_service(settings_from_mapping({}, env={}), object(), Clock()) is None
    enabled_only = settings_from_mapping({"ui": {"enabled": True}}, env={})
    assert make_ui_service(enabled_only, None, Clock()) is None


def test_ui_url_brackets_ipv6() -> None:
    assert ui_url(settings_from_mapping({"ui": {"host": "::1"}}, env={})) == "http://[::1]:8082"
    assert ui_url(settings_from_mapping({}, env={}), 9000) == "http://127.0.0.1:9000"


def test_a_taken_ui_port_is_one_line_and_exit_1(tmp_path: Path, logged_failures: Any) -> None:
    """Like the proxy: listening on a taken ui.port ends start-up with SystemExit(1)."""
    from twisted.internet import reactor

    from lunaroute.sessions.recorder import make_recorder

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = settings_from_mapping(
            {
                "ui": {"enabled": True, "port": port},
                "session_recording": {
                    "enabled": True,
                    "jsonl": {"enabled": False},
                    "sqlite": {"path": str(tmp_path / "s.db")},
                },
            },
            env={},
        )
        recorder = make_recorder(settings.session_recording, reactor)
        service = make_ui_service(settings, recorder, reactor)
        assert service is not None and service.name == "ui"
        with pytest.raises(SystemExit) as exited:
            service.startService()
        assert exited.value.code == 1
        assert service.failure_line(OSError("Address already in use")).startswith(
            f"lunaroute: cannot listen on 127.0.0.1:{port} (ui):"
        )


@pytest_twisted.ensureDeferred
async def test_dashboard_custom_window(ui: UI) -> None:
    """from/to pick any dates; the link to the list keeps them; a bad date is a 400 naming it."""
    code, page, _ = await ui.get("/?from=2025-06-12&to=2025-06-12")
    assert code == 200
    assert f'href="/sessions/{SDK}"' in page and f'href="/sessions/{CC}"' not in page
    assert 'name="from" value="2025-06-12"' in page and 'aria-current="true"' not in page
    assert 'href="/sessions?from=2025-06-12&amp;to=2025-06-12"' in page
    code, page, _ = await ui.get("/?from=yesterday")
    assert code == 400 and "from" in page
    code, page, _ = await ui.get("/?days=1&from=2025-06-12")
    assert code == 400 and "give days or from, not both" in page


@pytest_twisted.ensureDeferred
async def test_session_page_tails_its_session(ui: UI) -> None:
    """The page names the session's event stream for its script, and the live tail answers on the UI port."""
    # An hour after its last turn: not followed, unless asked.
    _, page, _ = await ui.get(f"/sessions/{CC}")
    assert "data-events" not in page
    _, page, _ = await ui.get(f"/sessions/{CC}?live=1")
    assert f'data-events="/api/sessions/{CC}/events"' in page
    assert '<p id="live" class="live" hidden>' in page
    # Active a minute ago: followed, unless ?live=0.
    ui.clock.advance(-3600 + 60 + 125)
    _, page, _ = await ui.get(f"/sessions/{HOSTILE}")
    assert f'data-events="/api/sessions/{HOSTILE}/events"' in page
    _, page, _ = await ui.get(f"/sessions/{HOSTILE}?live=0")
    assert "data-events" not in page
    code, _, _ = await ui.get(f"/sessions/{HOSTILE}?live=maybe")
    assert code == 400


@pytest_twisted.ensureDeferred
async def test_log_requests_logs_one_line_per_ui_request(tmp_path: Path) -> None:
    from twisted.logger import formatEvent, globalLogPublisher

    events: list[Any] = []
    globalLogPublisher.addObserver(events.append)
    try:
        quiet = UI(tmp_path / "a")
        await quiet.get("/sessions")
        assert not [e for e in events if formatEvent(e).startswith("ui GET")]
        loud = UI(tmp_path / "b", ui={"log_requests": True})
        await loud.get("/sessions?client=Codex")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [formatEvent(e) for e in events if formatEvent(e).startswith("ui ")] == ["ui GET /sessions 200"]


@pytest_twisted.ensureDeferred
async def test_on_loopback_only_requests_for_this_machine_are_answered(tmp_path: Path) -> None:
    """DNS rebinding: a page at evil.example resolving to 127.0.0.1 sends Host: evil.example, and gets nothing."""
    ui = UI(tmp_path / "loopback")
    code, body, _ = await ui.get("/api/sessions", {"Host": "evil.example:8082"})
    assert code == 421 and "capybara" not in body
    code, body, _ = await ui.get("/", {"Host": "evil.example:8082", "Origin": "http://evil.example:8082"})
    assert code == 421
    assert (await ui.get("/", {"Host": "localhost:8082"}))[0] == 200
    # Listening beyond loopback, any name may reach it (protect it with the token).
    wide = UI(tmp_path / "wide", ui={"host": "0.0.0.0"})
    assert (await wide.get("/", {"Host": "gateway.lan:8082"}))[0] == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        (b"127.0.0.1:8082", True), (b"localhost", True), (b"LOCALHOST:1", True), (b"app.localhost:8082", True),
        (b"[::1]:8082", True), (b"::1", True), (b"127.1.2.3", True), (b"evil.example", False),
        (b"10.0.0.1:8082", False), (b"[::2]:1", False), (b"", False), (None, False), (b"[::1", False),
    ],
)
def test_is_loopback_host(host: bytes | None, loopback: bool) -> None:
    from lunaroute.ui.guard import is_loopback_host

    assert is_loopback_host(host) is loopback


def test_figures_read_plainly() -> None:
    """Counts, money, durations, ratios and times as the pages show them; unknown is a dash."""
    from lunaroute.ui.render import cost, duration, integer, moment, percent

    assert [integer(v) for v in (1234567, None, True, "x")] == ["1,234,567", "—", "—", "—"]
    assert [cost(v) for v in (0, 0.00042, 0.0171, 12.5, 1234.5, None)] == [
        "$0", "$0.0004", "$0.017", "$12.50", "$1,234.50", "—",
    ]
    assert [duration(v) for v in (250, 1200, 125_000, 7_260_000, None)] == [
        "250 ms", "1.2 s", "2 min 5 s", "2 h 1 min", "—",
    ]
    assert [percent(v) for v in (0.5, None)] == ["50%", "—"]
    assert [moment(v) for v in ("2025-06-15T14:03:07.412Z", None, "")] == ["2025-06-15 14:03:07", "—", "—"]


@pytest_twisted.ensureDeferred
async def test_a_codex_session_page(ui: UI) -> None:
    """Codex (Responses): the user's words, its injected context collapsed, its developer prompt as system, the error."""
    code, page, _ = await ui.get(f"/sessions/{CX}")
    assert code == 200
    assert '<div class="msg user"><div class="who">User</div><div class="text">say hi</div></div>' in page
    assert '<details class="context"><summary>Context the client added: environment_context</summary>' in page
    assert "&lt;cwd&gt;/tmp/cx-work&lt;/cwd&gt;" in page
    assert re.search(r'<details class="system"><summary>System prompt</summary><pre>[^<]*You are Codex', page)
    assert '<p class="error">overloaded_error: server overloaded</p>' in page


def test_injected_context_is_told_apart_from_what_the_user_wrote() -> None:
    parts = request_parts(
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nbe careful\n</system-reminder>"},
            {"type": "text", "text": "fix <b>the</b> bug"},
        ]}]},
        "anthropic",
    )
    assert parts.user_texts == ["fix <b>the</b> bug"]
    assert parts.context_texts == ["<system-reminder>\nbe careful\n</system-reminder>"]


@pytest_twisted.ensureDeferred
async def test_settings_page_shows_the_running_configuration_with_secrets_masked(tmp_path: Path) -> None:
    ui = UI(
        tmp_path,
        providers={"anthropic": {"api_key": "sk-ant-server-secret-key-0123456789"}},
        http_server={"auth_token": "tok-secret-9876543210"},
        ui={"enabled": True, "refresh_interval": 9},
        session_recording={"enabled": True},
    )
    auth = {"Authorization": "Bearer tok-secret-9876543210"}
    code, page, _ = await ui.get("/settings", auth)
    assert code == 200
    assert "ui: on, http://127.0.0.1:8082" in page and "session recording: on" in page
    assert "<th>ui.refresh_interval</th><td>9 s</td>" in page
    assert "<th>token</th><td>set (http_server.auth_token)</td>" in page
    assert "sk-ant-server-secret-key-0123456789" not in page and "tok-secret-9876543210" not in page
    assert '<a href="/settings" aria-current="page">Settings</a>' in page


def test_markdown_of_answers_is_readable_and_inert() -> None:
    """Code blocks, inline code, bold, headings; links and HTML stay text; nothing from the text becomes a tag."""
    from lunaroute.ui.render import markdown_html

    text = (
        "## Plan\n**Bold** and `x < y`\n```python\nprint('<b>')\n```\n"
        "[click](javascript:alert(1)) <img src=x onerror=alert(1)> **<script>alert(1)</script>**"
    )
    out = markdown_html(text)
    assert '<strong class="h2">Plan</strong>' in out
    assert "<strong>Bold</strong> and <code>x &lt; y</code>" in out
    assert '<pre class="code"><code>print(&#x27;&lt;b&gt;&#x27;)\n</code></pre>' in out
    assert "[click](javascript:alert(1))" in out and "<a" not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "<strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong>" in out
    tags = set(re.findall(r"</?([a-z0-9]+)", out))
    assert tags <= {"strong", "code", "pre"}
    assert markdown_html(None) == ""


@pytest_twisted.ensureDeferred
async def test_ui_auth_token_is_the_uis_own(tmp_path: Path) -> None:
    """ui.auth_token protects the UI instead of the gateway's token; it is never shown."""
    ui = UI(tmp_path, http_server={"auth_token": "gateway-token-1"}, ui={"auth_token": "ui-token-22"})
    assert "ui-token-22" not in repr(ui.settings.ui)
    assert (await ui.get("/"))[0] == 401
    assert (await ui.get("/", {"Authorization": "Bearer gateway-token-1"}))[0] == 401
    assert (await ui.get("/", {"Authorization": "Bearer ui-token-22"}))[0] == 200
    basic = "Basic " + base64.b64encode(b"me:ui-token-22").decode()
    code, page, _ = await ui.get("/settings", {"Authorization": basic})
    assert code == 200 and "<th>token</th><td>set (ui.auth_token)</td>" in page and "ui-token-22" not in page
