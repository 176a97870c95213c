"""
The UI's charts, analytics page, long sessions, diffs, list export and
delete in Debian's headless Chromium, driven over the DevTools protocol.
One browser for the whole module (one test walking through the pages):
sessions recorded by the real writer (a 500-turn one among them, and one
whose model name and text are hostile), the UI site listening on a free
port.  Skipped, saying why, when Chromium is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_session_store import CC, NOON, sample_exchanges
from twisted.internet import reactor
from twisted.web.server import Site

from lunaroute.api.app import LiveFeed
from lunaroute.config import settings_from_mapping
from lunaroute.sessions.store import SessionStore
from lunaroute.stats.pricing import PricingTable
from lunaroute.testing.browser import CHROMIUM, DevTools
from lunaroute.testing.helpers import in_thread
from lunaroute.testing.sessions import (
    anthropic_summary,
    long_session_exchanges,
    make_exchange,
    write_exchanges,
)
from lunaroute.ui import ui_resource

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; scripts/run-tests does it as root)"
)

LONG = "long-browser-1"
TURNS = 500
HOSTILE_MODEL = "claude-x<img src=x onerror=\"document.title='PWN'+'ED'\">"

ALL_CHARTS_DRAWN = (
    "[...document.querySelectorAll('figure.chart')].every(f => f.dataset.rendered)"
)
# Per chart: its kind, its label count (or 'error') and whether its canvas holds any drawn pixel.
CHART_STATE = """
[...document.querySelectorAll('figure.chart')].map(f => {
  const c = f.querySelector('canvas');
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = false;
  for (let i = 3; i < data.length; i += 4) { if (data[i] !== 0) { painted = true; break; } }
  return [f.dataset.chart, f.dataset.rendered, painted && c.width > 0];
})
"""


def hostile_exchange() -> Any:
    body = {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": "<script>document.title='PWN'+'ED'</script>"}]}
    return make_exchange(
        "hostile-chart-1", "hostile-chart-req", body,
        anthropic_summary("<img src=x onerror=\"document.title='PWN'+'ED'\">", model=HOSTILE_MODEL),
        received=NOON + 30, cost_usd=0.01,
    )


def walk(base: str, profile: Path) -> dict[str, Any]:
    """Everything the test looks at, in one browser."""
    browser = DevTools(profile)
    seen: dict[str, Any] = {}
    try:
        # Analytics: every chart drawn from the API's JSON, the hostile model name only as pixels.
        browser.open(base + "/analytics?days=3650")
        browser.until(ALL_CHARTS_DRAWN)
        seen["analytics_charts"] = browser.eval(CHART_STATE)
        seen["analytics_images"] = browser.eval("document.images.length")
        seen["analytics_title"] = browser.eval("document.title")

        browser.navigate(base + "/?days=3650")
        browser.until(ALL_CHARTS_DRAWN)
        seen["dashboard_charts"] = browser.eval(CHART_STATE)

        # The 500-turn session: 40 turns in full, the rest placeholders.
        browser.navigate(base + f"/sessions/{LONG}?live=0")
        seen["load_ms"] = browser.eval(
            "(() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventStart; })()"
        )
        seen["turns"] = browser.eval("document.querySelectorAll('section.turn').length")
        seen["pending"] = browser.eval("document.querySelectorAll('section.turn.pending').length")
        browser.until(ALL_CHARTS_DRAWN)
        seen["session_charts"] = browser.eval(CHART_STATE)
        # j/k walk the turns.
        browser.key("j", 74, "j")
        browser.key("j", 74, "j")
        seen["after_jj"] = browser.eval("document.querySelector('section.turn.selected').dataset.index")
        browser.key("k", 75, "k")
        seen["after_k"] = browser.eval("document.querySelector('section.turn.selected').dataset.index")
        # Scrolled to the end, the last chunk loads by itself.
        browser.eval("window.scrollTo(0, document.body.scrollHeight), true")
        browser.until("!document.getElementById('turn-long-00500').classList.contains('pending')")
        seen["last_turn_text"] = browser.eval("document.getElementById('turn-long-00500').textContent")
        # Jump to turn 250: its chunk loads, it is selected and focused, the URL says so.
        browser.eval(
            "document.getElementById('jump-turn').value = '250', "
            "document.querySelector('form.jump').requestSubmit(), true"
        )
        browser.until("document.activeElement && document.activeElement.id === 'turn-long-00250'")
        seen["jumped"] = browser.eval(
            "[document.activeElement.classList.contains('pending'), document.activeElement.classList.contains('selected'),"
            " document.activeElement.textContent.includes('answer 250'), location.search]"
        )
        seen["pending_after"] = browser.eval("document.querySelectorAll('section.turn.pending').length")
        # The raw viewer of turn 250: the request as a cURL command replaying it through the gateway, a download link.
        browser.eval("document.querySelector('#turn-long-00250 a[data-raw]').click(), true")
        browser.until("document.getElementById('raw-curl').textContent.includes('LUNAROUTE_JSON')")
        seen["curl"] = browser.eval("document.getElementById('raw-curl').textContent")
        seen["download"] = browser.eval("document.getElementById('raw-download').getAttribute('href')")
        browser.key("Escape", 27)

        # The diff of turn 100 (the system prompt changed), one click from the turn.
        browser.navigate(base + f"/sessions/{LONG}?live=0&turn=100")
        seen["diff_note"] = browser.eval(
            "document.querySelector('#turn-long-00100 p.changed').textContent"
        )
        browser.click_and_wait("document.querySelector('#turn-long-00100 a.diff-link').click(), true")
        seen["diff"] = browser.eval(
            "[location.pathname, [...document.querySelectorAll('pre.diff span.add')].map(s => s.textContent)]"
        )

        # The filtered list as CSV, fetched as the link would.
        browser.navigate(base + "/sessions?sort=cost")
        href = browser.eval("document.querySelector('p.exports a[href^=\"/sessions.csv\"]').getAttribute('href')")
        seen["csv_href"] = href
        seen["csv"] = browser.eval(f"fetch({href!r}).then(r => r.text())")

        # Delete: without the page's token refused; with the form, the session is gone.
        browser.navigate(base + f"/sessions/{CC}?live=0")
        # A same-origin POST (so the Origin check passes) with a made-up token, and with none.
        seen["forged"] = browser.eval(
            f"Promise.all([fetch('/sessions/{CC}/delete', {{method: 'POST', body: new URLSearchParams({{csrf: 'f'.repeat(64)}})}}),"
            f" fetch('/sessions/{CC}/delete', {{method: 'POST'}})])"
            ".then(rs => Promise.all(rs.map(r => r.text().then(t => [r.status, t.includes('CSRF')]))))"
        )
        browser.eval("window.confirm = () => true, true")
        browser.click_and_wait("document.querySelector('form.delete button').click(), true")
        seen["deleted_page"] = browser.eval("document.querySelector('main').textContent")
        seen["after_delete"] = browser.eval(f"fetch('/sessions/{CC}').then(r => r.status)")
        return seen
    finally:
        browser.close()


@pytest_twisted.ensureDeferred
async def test_charts_long_sessions_diffs_export_and_delete_in_chromium(tmp_path: Path) -> None:
    db = str(tmp_path / "sessions.db")
    write_exchanges(db, [*sample_exchanges(), hostile_exchange(), *long_session_exchanges(LONG, TURNS, start=NOON + 600, change_every=100)])
    store = SessionStore(db, reactor=reactor)
    settings = settings_from_mapping({"ui": {"delete_enabled": True}}, env={})
    site = Site(ui_resource(store, settings, reactor, PricingTable.load(None, {}), LiveFeed()))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        seen = await in_thread(walk, f"http://127.0.0.1:{port.getHost().port}", tmp_path / "profile")
    finally:
        await port.stopListening()

    for place in ("analytics_charts", "dashboard_charts", "session_charts"):
        charts = seen[place]
        assert charts, place
        for kind, rendered, painted in charts:
            assert rendered not in ("error", None) and int(rendered) > 0 and painted, (place, kind, rendered)
    assert {c[0] for c in seen["analytics_charts"]} >= {"cost-time", "groups", "durations", "success-time", "tools"}
    assert {c[0]: c[1] for c in seen["session_charts"]} == {"context": "500", "cumulative-cost": "500", "waterfall": "500"}
    assert seen["analytics_images"] == 0 and "PWNED" not in seen["analytics_title"]

    assert seen["turns"] == TURNS and seen["pending"] == TURNS - 40
    assert seen["load_ms"] < 5000  # measured properly in bench/ui_pages.py; here only a sanity bound
    assert (seen["after_jj"], seen["after_k"]) == ("2", "1")
    assert "answer 500" in seen["last_turn_text"]
    assert seen["jumped"] == [False, True, True, "?live=0&turn=250"]
    # The first 40, 241-280 and 481-500 at least (chunks near the viewport load too).
    assert seen["pending_after"] <= TURNS - 40 - 40 - 20

    curl = seen["curl"].splitlines()
    assert curl[0] == "curl -sS 'http://127.0.0.1:8081/v1/messages' \\"
    assert "  --data-binary @- <<'LUNAROUTE_JSON'" in curl and curl[-1] == "LUNAROUTE_JSON"
    assert json.loads(curl[-2])["messages"][-1]["content"][1]["text"].startswith("question 250")
    assert seen["download"] == f"/sessions/{LONG}/raw/long-00250"

    assert "The system prompt changed since turn #99" in seen["diff_note"]
    path, added = seen["diff"]
    assert path == f"/sessions/{LONG}/diff/long-00100"
    assert any("Revision 1." in line for line in added)

    assert seen["csv_href"] == "/sessions.csv?sort=cost"
    lines = seen["csv"].splitlines()
    assert lines[0].startswith("session_id,started_at,last_activity,client,project,title")
    assert lines[1].startswith(LONG + ",") and len(lines) == 1 + 5

    assert seen["forged"] == [[403, True], [403, True]]
    assert f"Session {CC} was deleted" in seen["deleted_page"]
    assert seen["after_delete"] == 404
