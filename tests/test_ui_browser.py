"""
The web UI in a real browser: a gateway recording in front of the fake
provider, a session recorded through it with the anthropic SDK, and Debian's
headless Chromium loading the pages (C{--dump-dom}: the DOM after the page's
scripts ran).  Skipped, saying why, when Chromium is not installed
(C{scripts/run-tests} installs it when it runs as root).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from lunaroute.testing.browser import CHROMIUM, DevTools, dump_dom
from lunaroute.testing.helpers import in_thread
from lunaroute.ui import make_ui_service

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; scripts/run-tests does it as root)"
)

SESSION = "browser-session-1"
# Would change the page if it ran: the words it writes appear nowhere in its source.
SCRIPT = "<script>document.title = 'PWN' + 'ED-1'</script>"
IMG = "\"><img src=x onerror=\"document.title = 'PWN' + 'ED-2'\">"


async def recorded_ui(fake: Any, start_gateway: Any, tmp_path: Path) -> tuple[str, Any]:
    """A recording gateway in front of C{fake}, its UI listening, one hostile session recorded with the SDK."""
    gateway = await start_gateway(
        fake,
        session_recording={
            "enabled": True,
            "jsonl": {"enabled": False},
            "sqlite": {"enabled": True, "path": str(tmp_path / "sessions.db")},
        },
        ui={"enabled": True, "port": 0},
    )
    service = gateway.service
    ui = make_ui_service(service.settings, service.recorder, reactor, service.pricing)
    assert ui is not None
    ui.startService()
    port = (await ui.listening_port()).getHost().port
    client = gateway.anthropic(default_headers={"x-session-id": SESSION})
    await in_thread(
        client.messages.create,
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": f"capybara {SCRIPT} {IMG}"}],
    )
    await service.recorder.flush()
    ui.gateway_url = gateway.url
    ui.recorder = service.recorder
    return f"http://127.0.0.1:{port}", ui


@pytest_twisted.ensureDeferred
async def test_pages_render_in_chromium_and_hostile_text_stays_text(fake: Any, start_gateway: Any, tmp_path: Path) -> None:
    """
    Sessions list, search and the conversation render in a real browser;
    the recorded <script> and onerror never run (the title they would set
    is absent) and no <img> element is created.
    """
    base, ui = await recorded_ui(fake, start_gateway, tmp_path)
    try:
        listing = await in_thread(dump_dom, base + "/sessions", tmp_path / "profile")
        assert f'href="/sessions/{SESSION}"' in listing
        assert "claude-sonnet-4-5" in listing
        assert "PWNED" not in listing and "<img" not in listing

        hits = await in_thread(dump_dom, base + "/sessions?text_search=capybara", tmp_path / "profile")
        assert "<mark>capybara</mark>" in hits
        assert re.search(rf'href="/sessions/{SESSION}#turn-[^"]+"', hits)
        assert "PWNED" not in hits and "<img" not in hits

        page = await in_thread(dump_dom, base + f"/sessions/{SESSION}?live=0", tmp_path / "profile")
        title = re.search(r"<title>(.*?)</title>", page, re.S)
        assert title is not None and "PWNED" not in title.group(1)
        assert "<img" not in page and "PWNED" not in page
        # The user's text is on the page as text, the answer of the fake provider too.
        assert html.escape(f"capybara {SCRIPT}", quote=False) in page
        assert 'class="msg assistant"' in page
        assert '<dialog id="raw-dialog"' in page

        # The raw viewer, opened by the page's script (#raw-<request id>):
        # the recorded JSON fetched from the API and shown as text.
        detail = await treq.json_content(await treq.get(base + f"/api/sessions/{SESSION}"))
        request_id = detail["requests"][0]["request_id"]
        raw = await in_thread(dump_dom, base + f"/sessions/{SESSION}?live=0#raw-{request_id}", tmp_path / "profile")
        assert re.search(r'<dialog id="raw-dialog"[^>]* open', raw)
        shown = re.search(r'<pre id="raw-request">(.*?)</pre>', raw, re.S)
        assert shown is not None and '"model": "claude-sonnet-4-5"' in shown.group(1)
        assert "capybara &lt;script&gt;" in shown.group(1)
        assert "<img" not in raw and "PWNED" not in raw
    finally:
        await ui.stopService()


def drive_raw_viewer(url: str, profile: Path) -> dict[str, Any]:
    browser = DevTools(profile)
    try:
        browser.open(url)
        seen: dict[str, Any] = {}
        browser.eval("document.querySelector('a[data-raw]').click(), true")
        browser.until("document.getElementById('raw-request').textContent.includes('capybara')")
        seen["open_after_click"] = browser.eval("document.getElementById('raw-dialog').open")
        seen["request_text"] = browser.eval("document.getElementById('raw-request').textContent")
        seen["images"] = browser.eval("document.images.length")
        browser.key("Escape", 27)
        browser.until("!document.getElementById('raw-dialog').open")
        seen["open_after_escape"] = browser.eval("document.getElementById('raw-dialog').open")
        browser.key("/", 191, "/")
        seen["focused"] = browser.eval("document.activeElement.id")
        seen["title"] = browser.eval("document.title")
        return seen
    finally:
        browser.close()


@pytest_twisted.ensureDeferred
async def test_raw_viewer_opens_on_click_and_escape_closes_it(fake: Any, start_gateway: Any, tmp_path: Path) -> None:
    """Clicking Raw shows the recorded request as text; ESC closes the viewer; '/' focuses the search box."""
    base, ui = await recorded_ui(fake, start_gateway, tmp_path)
    try:
        seen = await in_thread(drive_raw_viewer, base + f"/sessions/{SESSION}?live=0", tmp_path / "devtools")
    finally:
        await ui.stopService()
    assert seen["open_after_click"] is True
    assert f"capybara {SCRIPT}" in seen["request_text"]  # shown as text, JSON-escaped quotes aside
    assert seen["images"] == 0
    assert seen["open_after_escape"] is False
    assert seen["focused"] == "search"
    assert "PWNED" not in seen["title"]


def watch_live(url: str, profile: Path, opened: Any) -> dict[str, Any]:
    browser = DevTools(profile)
    try:
        browser.open(url)
        turns = browser.eval("document.querySelectorAll('.turn').length")
        # The page's event stream is open (so subscribed) before the next turn is recorded.
        browser.until("document.querySelector('.conversation').dataset.live === 'open'")
        opened()
        browser.until("!document.getElementById('live').hidden")
        banner = browser.eval("document.getElementById('live-text').textContent")
        href = browser.eval("document.getElementById('live-show').getAttribute('href')")
        return {"turns": turns, "banner": banner, "href": href}
    finally:
        browser.close()


@pytest_twisted.ensureDeferred
async def test_an_active_session_page_announces_new_turns(fake: Any, start_gateway: Any, tmp_path: Path) -> None:
    """While its page is open, a turn recorded in the session is announced, with a link to it."""
    from twisted.internet.defer import Deferred, gatherResults

    base, ui = await recorded_ui(fake, start_gateway, tmp_path)
    gateway_url = ui.gateway_url
    page_open: Deferred[None] = Deferred()
    try:
        watching = in_thread(
            watch_live, base + f"/sessions/{SESSION}", tmp_path / "live", lambda: reactor.callFromThread(page_open.callback, None)
        )
        await page_open
        import anthropic

        client = anthropic.Anthropic(
            base_url=gateway_url, api_key="sk-ant-client-key-123456789", max_retries=0,
            default_headers={"x-session-id": SESSION},
        )
        second = await in_thread(
            client.messages.create, model="claude-sonnet-4-5", max_tokens=16,
            messages=[{"role": "user", "content": "and now?"}],
        )
        assert second.content
        await ui.recorder.flush()
        (seen,) = await gatherResults([watching])
    finally:
        await ui.stopService()
    assert seen["turns"] == 1
    assert seen["banner"] == "1 new turn recorded."
    assert seen["href"].startswith("#turn-")
