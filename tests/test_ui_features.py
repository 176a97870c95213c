"""
The UI's analytics page, charts, spend cards, long-session loading,
system-prompt/tool diffs, list export and delete, in memory: StubTreq over
the UI site's whole resource, sessions recorded by the real writer.
"""

from __future__ import annotations

import csv
import io
import json
import re
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
    long_session_exchanges,
    make_exchange,
    write_exchanges,
)
from lunaroute.ui.pages import TURN_CHUNK
from lunaroute.ui.windows import context_window

BASE = "http://127.0.0.1:8082"
LONG = "long-session-1"
LONG_TURNS = 100
FORMULA = "=HYPERLINK(\"http://evil\")"


def formula_exchange() -> Any:
    """A session whose title (its first user text) a spreadsheet would run as a formula."""
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": FORMULA}]}
    return make_exchange("formula-1", "formula-req-1", body, anthropic_summary("ok"), received=NOON + 200, cost_usd=0.002)


class UI:
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.db = str(tmp_path / "sessions.db")
        write_exchanges(
            self.db,
            [
                *sample_exchanges(),
                formula_exchange(),
                *long_session_exchanges(LONG, LONG_TURNS, start=NOON + 300, change_every=50),
            ],
        )
        self.clock = Clock()
        self.clock.advance(NOON + 3600)
        self.store = SessionStore(self.db, reactor=self.clock, threadpool=InlineThreadPool())
        self.settings = settings_from_mapping(config, env={})
        pricing = PricingTable.load(None, {})
        self.resource = _resource(self.store, self.settings, self.clock, pricing)
        self.stub = StubTreq(self.resource)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        response = await self.stub.get(BASE + path, headers=headers or {})
        return response.code, (await response.content()).decode("utf-8"), response.headers

    async def post(self, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, str]:
        response = await self.stub.post(BASE + path, data=data, headers=headers or {})
        return response.code, (await response.content()).decode("utf-8")


def _resource(store: Any, settings: Any, clock: Any, pricing: Any, readiness: Any = None) -> Any:
    from lunaroute.ui import ui_resource

    return ui_resource(store, settings, clock, pricing, LiveFeed(), readiness)


@pytest.fixture
def ui(tmp_path: Path) -> UI:
    return UI(tmp_path)


def figures(page: str) -> dict[str, str]:
    """The chart places of a page: kind -> data source."""
    return dict(re.findall(r'<figure class="chart" data-chart="([^"]+)" data-src="([^"]+)"', page))


@pytest_twisted.ensureDeferred
async def test_analytics_page_tables_and_charts(ui: UI) -> None:
    """
    /analytics: usage per period (the period picker), by model, client and
    project, tools, success per day and the duration histogram, each a
    table and a chart fed by the session API.
    """
    code, page, _ = await ui.get("/analytics?days=30")
    assert code == 200
    assert '<a href="/analytics" aria-current="page">Analytics</a>' in page
    for heading in ("Usage and cost per day", "By model", "By client", "By project", "Tools", "Request durations"):
        assert heading in page
    charts = figures(page)
    assert charts["cost-time"] == "/api/stats/usage?days=30"
    assert charts["durations"] == "/api/stats/durations?days=30"
    assert "/api/stats/clients?days=30" in page and "/api/stats/projects?days=30" in page
    assert 'data-chart="success-time"' in page
    assert '<script src="/static/vendor/chart.umd.min.js" defer></script>' in page
    # The tables: the three clients, the long session's project-less SDK peer, the Read tool.
    clients = re.search(r'<table class="figures-table client">(.*?)</table>', page, re.S)
    assert clients is not None and "Claude Code" in clients.group(1) and "Codex" in clients.group(1)
    assert '<td>Read</td><td class="num">101</td>' in page  # Claude Code's one and the long session's 100
    usage = re.search(r'<table class="figures-table usage">(.*?)</table>', page, re.S)
    assert usage is not None and "<td>2025-06-15</td>" in usage.group(1) and "<td>2025-06-12</td>" in usage.group(1)
    # Per month, and a bad period named.
    _, page, _ = await ui.get("/analytics?days=30&period=months")
    assert "Usage and cost per month" in page and "<td>2025-06</td>" in page
    code, page, _ = await ui.get("/analytics?period=fortnights")
    assert code == 400 and "period" in page


@pytest_twisted.ensureDeferred
async def test_dashboard_charts_and_spend_cards(ui: UI) -> None:
    """
    The dashboard's charts (hourly for 24 h, daily beyond) and the spend
    today, this week, this month and in the current five-hour block.
    """
    _, page, _ = await ui.get("/")
    charts = figures(page)
    assert set(charts) >= {"tokens-time", "cost-time", "models", "hours", "tools", "latency-time"}
    assert 'data-chart="tokens-time" data-src="/api/stats/usage?days=1" data-period="hours"' in page
    _, page, _ = await ui.get("/?days=30")
    assert 'data-chart="tokens-time" data-src="/api/stats/usage?days=30" data-period="days"' in page
    cards = dict(re.findall(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>', page))
    # Today (Sunday 2025-06-15, 13:00 UTC): the Claude Code turns, the formula
    # session and the 100 long turns (0.001 * n each); the SDK turn was Thursday.
    long_cost = sum(0.001 * n for n in range(1, LONG_TURNS + 1))
    today = 0.03 + 0.002 + long_cost
    assert cards["Today"] == f"${today:,.2f}"
    assert cards["This week"] == f"${today + 0.5:,.2f}"  # Monday 06-09 on: the SDK turn too
    assert cards["This month"] == cards["This week"]
    # The block started at 12:00 with the first turn of the day.
    assert cards["Current 5-hour block"] == f"${today:,.2f}"
    assert "12:00–17:00 UTC" in page
    # Four hours later than the block's end, no block is running.
    ui.clock.advance(9 * 3600)
    _, page, _ = await ui.get("/")
    assert "no request in the last five hours" in page
    # The chart library and the chart script are shipped files.
    code, script, headers = await ui.get("/static/vendor/chart.umd.min.js")
    assert code == 200 and "Chart.js v4" in script[:200]
    assert headers.getRawHeaders(b"content-type") == [b"text/javascript; charset=utf-8"]
    code, script, _ = await ui.get("/static/charts.js")
    assert code == 200 and "innerHTML" not in script
    assert (await ui.get("/static/vendor/other.js"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_session_page_charts_and_lazy_turns(ui: UI) -> None:
    """
    A long session shows its first turns in full and the others as
    placeholders with their figures and a link to their chunk; ?turn=N
    renders N's chunk; the chunk route renders any range.
    """
    code, page, _ = await ui.get(f"/sessions/{LONG}?live=0")
    assert code == 200
    charts = figures(page)
    assert charts["context"] == f"/api/sessions/{LONG}/timeline"
    assert set(charts) >= {"context", "cumulative-cost", "waterfall"}
    assert 'data-window="200000"' in page  # claude-sonnet-4-5's window
    full = re.findall(r'<section class="turn" id="turn-long-(\d+)"', page)
    pending = re.findall(r'<section class="turn pending" id="turn-long-(\d+)"', page)
    assert len(full) == TURN_CHUNK and len(pending) == LONG_TURNS - TURN_CHUNK
    assert full[0] == "00001" and pending[0] == f"{TURN_CHUNK + 1:05d}"
    assert f'href="/sessions/{LONG}/turns?start={TURN_CHUNK}&amp;count={TURN_CHUNK}"' in page
    assert 'max="100"' in page and 'id="jump-turn"' in page
    # A full turn shows the tool result the next request carried back.
    turn2 = page[page.index('id="turn-long-00002"') : page.index('id="turn-long-00003"')]
    assert "contents of file 2" in turn2 and "question 2" in turn2
    # The placeholder still has its figures.
    turn90 = page[page.index('id="turn-long-00090"') :]
    assert 'class="figures"' in turn90[:2000] and "answer 90" not in turn90
    # ?turn=90: its chunk (81-100) in full.
    _, page, _ = await ui.get(f"/sessions/{LONG}?live=0&turn=90")
    assert '<section class="turn" id="turn-long-00090"' in page and 'data-jump="90"' in page
    assert '<section class="turn pending" id="turn-long-00001"' in page
    code, _, _ = await ui.get(f"/sessions/{LONG}?turn=101")
    assert code == 400
    # The chunk route: turns 41 to 80 only, their last result from turn 81.
    code, chunk, _ = await ui.get(f"/sessions/{LONG}/turns?start=40&count=40")
    assert code == 200
    assert re.findall(r'<section class="turn" id="turn-long-(\d+)"', chunk)[::39] == ["00041", "00080"]
    assert 'class="turn pending"' not in chunk and "contents of file 80" in chunk
    # A short session has no jump control and no placeholder.
    _, page, _ = await ui.get(f"/sessions/{CC}?live=0")
    assert 'class="turn pending"' not in page and "jump-turn" not in page


@pytest_twisted.ensureDeferred
async def test_system_prompt_and_tool_changes_link_to_their_diff(ui: UI) -> None:
    """
    Turn 50 changed the system prompt, turn 51 the tool definitions: each
    says so with the cache-write it paid and a link to the diff, which
    shows the changed lines.
    """
    _, page, _ = await ui.get(f"/sessions/{LONG}?live=0&turn=50")
    turn50 = page[page.index('id="turn-long-00050"') : page.index('id="turn-long-00051"')]
    assert "The system prompt changed since turn #49" in turn50
    assert "cache write 2,000 tokens" in turn50
    assert f'<a class="diff-link" href="/sessions/{LONG}/diff/long-00050">Diff</a>' in turn50
    turn51 = page[page.index('id="turn-long-00051"') : page.index('id="turn-long-00052"')]
    assert "The tool definitions changed since turn #50" in turn51
    assert "changed since" not in page[page.index('id="turn-long-00052"') : page.index('id="turn-long-00053"')]
    code, diff, _ = await ui.get(f"/sessions/{LONG}/diff/long-00050")
    assert code == 200
    assert '<span class="add">+You are Claude Code, an interactive CLI tool that helps users with software engineering tasks. Revision 1.</span>' in diff
    assert '<span class="del">-You are Claude Code, an interactive CLI tool that helps users with software engineering tasks.</span>' in diff
    _, diff, _ = await ui.get(f"/sessions/{LONG}/diff/long-00051")
    assert '<span class="add">+  &quot;description&quot;: &quot;Run a shell command (revision 1).&quot;,</span>' in diff
    assert (await ui.get(f"/sessions/{LONG}/diff/cc-req-1"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_export_of_the_filtered_list_as_csv_and_json(ui: UI) -> None:
    """Every matching session (not one page), the filters applied, formulas defused."""
    code, body, headers = await ui.get("/sessions.csv?limit=2&sort=cost")
    assert code == 200 and headers.getRawHeaders(b"content-type") == [b"text/csv; charset=utf-8"]
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["session_id"] for r in rows] == [LONG, SDK]  # the two costliest
    _, body, headers = await ui.get("/sessions.csv")
    assert headers.getRawHeaders(b"content-disposition") == [b'attachment; filename="sessions.csv"']
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 5
    formula = next(r for r in rows if r["session_id"] == "formula-1")
    assert formula["title"] == "'" + FORMULA
    _, body, _ = await ui.get("/sessions.json?client=Codex")
    data = json.loads(body)
    assert data["total"] == 1 and [s["session_id"] for s in data["sessions"]] == [CX]
    _, page, _ = await ui.get("/sessions?client=Codex")
    assert 'href="/sessions.csv?client=Codex" download>CSV</a>' in page
    assert (await ui.get("/sessions.csv?bogus=1"))[0] == 400


@pytest_twisted.ensureDeferred
async def test_delete_needs_the_setting_and_the_csrf_token(tmp_path: Path) -> None:
    """
    Without ui.delete_enabled no form and a 403; with it, a POST without the
    page's token or with another session's token is refused (403), from
    another origin too; with it, the session is gone.
    """
    off = UI(tmp_path / "off")
    _, page, _ = await off.get(f"/sessions/{CC}?live=0")
    assert 'class="delete"' not in page
    assert (await off.post(f"/sessions/{CC}/delete", {"csrf": "x"}))[0] == 403

    ui = UI(tmp_path / "on", ui={"delete_enabled": True})
    _, page, _ = await ui.get(f"/sessions/{CC}?live=0")
    match = re.search(r'<form class="delete" method="post" action="/sessions/([^"]+)/delete".*?name="csrf" value="([0-9a-f]{64})"', page)
    assert match is not None and match.group(1) == CC
    token = match.group(2)
    _, other, _ = await ui.get(f"/sessions/{CX}?live=0")
    other_token = re.search(r'name="csrf" value="([0-9a-f]{64})"', other)
    assert other_token is not None and other_token.group(1) != token

    code, body = await ui.post(f"/sessions/{CC}/delete", {})
    assert code == 403 and "CSRF" in body
    code, body = await ui.post(f"/sessions/{CC}/delete", {"csrf": other_token.group(1)})
    assert code == 403
    code, body = await ui.post(f"/sessions/{CC}/delete", {"csrf": token}, {"Origin": "http://evil.example"})
    assert code == 403 and "cross-origin" in body
    assert (await ui.get(f"/sessions/{CC}?live=0"))[0] == 200

    code, body = await ui.post(f"/sessions/{CC}/delete", {"csrf": token}, {"Origin": BASE})
    assert code == 200 and "was deleted: 2 requests, 1 tool calls" in body
    assert (await ui.get(f"/sessions/{CC}?live=0"))[0] == 404
    assert (await ui.get(f"/sessions/{CX}?live=0"))[0] == 200
    # GET never deletes.
    assert (await ui.get(f"/sessions/{CX}/delete?csrf={other_token.group(1)}"))[0] == 405


def test_context_windows_of_known_models() -> None:
    """The longest matching prefix; unknown or missing models have none."""
    assert context_window("claude-sonnet-4-5-20250929") == 200_000
    assert context_window("gpt-5.5") == 400_000
    assert context_window("gpt-4.1-mini") == 1_047_576
    assert context_window("openai/gpt-4o") == 128_000
    assert context_window("llama-3") is None and context_window(None) is None


@pytest_twisted.ensureDeferred
async def test_settings_page_shows_provider_status(tmp_path: Path, logged_failures: Any) -> None:
    """The proxy's /readyz report on the settings page, every value escaped; a failing check is said, not raised."""
    ui = UI(tmp_path)

    async def report() -> dict[str, Any]:
        return {
            "status": "not_ready",
            "dialects": {
                "anthropic": {"provider": "anthropic", "status": "ready"},
                "openai": {"provider": "openai<b>", "status": "unreachable", "reason": "connection refused <script>"},
            },
            "providers": {"backup": {"circuit_breaker": "open", "health": "unhealthy", "last_error": None}},
        }

    stub = StubTreq(_resource(ui.store, ui.settings, ui.clock, PricingTable.load(None, {}), readiness=report))
    page = (await (await stub.get(BASE + "/settings")).content()).decode()
    assert '<span class="badge fail">not_ready</span>' in page
    assert '<tr><th>anthropic</th><td>anthropic</td><td><span class="badge ok">ready</span>' in page
    assert "openai&lt;b&gt;" in page and "connection refused &lt;script&gt;" in page and "<script>" not in page
    assert "circuit_breaker: open, health: unhealthy" in page

    async def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    logged_failures.expect(RuntimeError)
    stub = StubTreq(_resource(ui.store, ui.settings, ui.clock, PricingTable.load(None, {}), readiness=broken))
    response = await stub.get(BASE + "/settings")
    assert response.code == 200 and "The readiness check failed" in (await response.content()).decode()


@pytest_twisted.ensureDeferred
async def test_a_recording_gateway_runs_its_ui_by_default(fake: Any, start_gateway: Any, tmp_path: Path) -> None:
    """
    ui.enabled is on by default: a gateway recording to SQLite has its UI
    listening (port 0 here), whose settings page shows the proxy's readiness.
    """
    import treq

    gateway = await start_gateway(
        fake, session_recording={"enabled": True, "sessions_dir": str(tmp_path / "sessions")}
    )
    listener = gateway.service.ui_listener
    assert listener is not None
    port = (await listener.listening_port()).getHost().port
    response = await treq.get(f"http://127.0.0.1:{port}/settings")
    page = (await response.content()).decode()
    assert response.code == 200 and "<h2>Providers</h2>" in page
    assert '<tr><th>anthropic</th><td>anthropic</td><td><span class="badge ok">ready</span>' in page
    plain = await start_gateway(fake)
    assert plain.service.ui_listener is None  # recording is off by default: no second port


@pytest_twisted.ensureDeferred
async def test_raw_exchange_download_and_the_curl_base(ui: UI) -> None:
    """The raw viewer's Download is the recorded exchange as a JSON file (masked); its cURL targets the proxy."""
    code, body, headers = await ui.get(f"/sessions/{CC}/raw/cc-req-1")
    assert code == 200
    assert headers.getRawHeaders(b"content-disposition") == [f'attachment; filename="{CC}_cc-req-1.json"'.encode()]
    raw = json.loads(body)
    assert raw["request_id"] == "cc-req-1" and raw["request_json"]["messages"]
    assert "sk-ant-secret-key-0123456789" not in body
    assert (await ui.get(f"/sessions/{CC}/raw/cx-req-1"))[0] == 404
    _, page, _ = await ui.get(f"/sessions/{CC}?live=0")
    assert f'data-download-base="/sessions/{CC}/raw/" data-proxy="http://127.0.0.1:8081"' in page
    assert '<button type="button" data-copy="raw-curl">Copy as cURL</button>' in page
