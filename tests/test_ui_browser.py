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
import shutil
import subprocess
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
# Would change the page if it ran: the words it writes appear nowhere in its source.
SCRIPT = "<script>document.title = 'PWN' + 'ED-1'</script>"
IMG = "\"><img src=x onerror=\"document.title = 'PWN' + 'ED-2'\">"


def dump_dom(url: str, profile: Path) -> str:
    """The DOM of C{url} after its scripts ran, as headless Chromium serialises it."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
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


@pytest_twisted.ensureDeferred
async def test_pages_render_in_chromium_and_hostile_text_stays_text(fake: Any, start_gateway: Any, tmp_path: Path) -> None:
    """
    Sessions list, search and the conversation render in a real browser;
    the recorded <script> and onerror never run (the title they would set
    is absent) and no <img> element is created.
    """
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
    try:
        port = (await ui.listening_port()).getHost().port
        base = f"http://127.0.0.1:{port}"
        client = gateway.anthropic(default_headers={"x-session-id": SESSION})
        await in_thread(
            client.messages.create,
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": f"capybara {SCRIPT} {IMG}"}],
        )
        await service.recorder.flush()

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
