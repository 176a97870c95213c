"""
The web UI in a real browser: a gateway recording in front of the fake
provider, a session recorded through it with the anthropic SDK, and Debian's
headless Chromium loading the pages (C{--dump-dom}: the DOM after the page's
scripts ran).  Skipped, saying why, when Chromium is not installed
(C{scripts/run-tests} installs it when it runs as root).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from lunaroute.testing.helpers import in_thread
from lunaroute.ui import make_ui_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; scripts/run-tests does it as root)"
)

SESSION = "browser-session-1"
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
)
# Would change the page if it ran: the words it writes appear nowhere in its source.
SCRIPT = "<script>document.title = 'PWN' + 'ED-1'</script>"
IMG = "\"><img src=x onerror=\"document.title = 'PWN' + 'ED-2'\">"


def dump_dom(url: str, profile: Path) -> str:
    """The DOM of C{url} after its scripts ran, as headless Chromium serialises it."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            *BROWSER_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    return done.stdout.decode("utf-8")

_TRAMPOLINE = (
    "import fcntl, os, sys; "
    "a, b = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]); "
    "os.dup2(a, 3); os.dup2(b, 4); os.execv(sys.argv[3], sys.argv[3:])"
)


class DevTools:
    """
    Headless Chromium driven over the DevTools protocol on a pipe
    (C{--remote-debugging-pipe}: commands on fd 3, answers on fd 4, each a
    JSON message ended by a NUL byte), for what needs clicks and keys.
    Blocking: run it with C{in_thread}.
    """

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # A small Python trampoline gives the pipes to Chromium as fds 3 and 4
        # (no preexec_fn: this runs in a thread).
        self.process = subprocess.Popen(
            [
                sys.executable, "-c", _TRAMPOLINE, str(to_chrome_r), str(from_chrome_w), CHROMIUM,
                *BROWSER_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank",
            ],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._pending = b""
        self._next_id = 0
        self._session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session is not None and not browser:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._pending:
                chunk = os.read(self._from_chrome, 65536)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._pending += chunk
            raw, self._pending = self._pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)[
            "sessionId"
        ]
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})
        self.eval(
            "new Promise(done => document.readyState === 'complete' ? done(true) "
            ": addEventListener('load', () => done(true)))"
        )

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a Promise is awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def until(self, condition: str, limit_ms: int = 30000) -> Any:
        """Wait in the page (no sleeping here) until C{condition} is true; fails after C{limit_ms}."""
        return self.eval(
            "new Promise((done, fail) => { const start = Date.now(); const check = () => (" + condition + ") "
            f"? done(true) : Date.now() - start > {limit_ms} ? fail(new Error('timed out waiting for: ' + "
            f"{json.dumps(condition)})) : setTimeout(check, 20); check(); }})"
        )

    def key(self, key: str, code: int, text: str | None = None) -> None:
        for kind in ("keyDown", "keyUp"):
            params: dict[str, Any] = {"type": kind, "key": key, "windowsVirtualKeyCode": code}
            if text is not None and kind == "keyDown":
                params["text"] = text
            self.send("Input.dispatchKeyEvent", params)

    def close(self) -> None:
        try:
            self.send("Browser.close", browser=True)
        except RuntimeError:
            pass
        finally:
            self.process.wait(timeout=60)
            os.close(self._to_chrome)
            os.close(self._from_chrome)


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
