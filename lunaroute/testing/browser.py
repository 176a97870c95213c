"""
Headless Chromium for the UI's browser tests and the UI benchmark: Debian's
C{chromium} (no extra Python package), either dumping a page's DOM after its
scripts ran (L{dump_dom}) or driven over the DevTools protocol on a pipe
(L{DevTools}: clicks, keys, JavaScript, navigation).  Blocking: call it from
a thread (L{lunaroute.testing.helpers.in_thread}) in Twisted tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["BROWSER_FLAGS", "CHROMIUM", "DevTools", "dump_dom"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

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
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session is not None and not browser:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if "method" in reply:
                self.events.append(reply)
            elif reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _message(self) -> dict[str, Any]:
        """The next message from Chromium (a reply or an event)."""
        while b"\0" not in self._pending:
            chunk = os.read(self._from_chrome, 65536)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._pending += chunk
        raw, self._pending = self._pending.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def wait_event(self, method: str) -> dict[str, Any]:
        """The first event C{method} of this page seen since the last L{clear_events} (waits for it)."""
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    del self.events[: index + 1]
                    return event
            message = self._message()
            if "method" in message:
                self.events.append(message)

    def clear_events(self) -> None:
        self.events.clear()

    def navigate(self, url: str) -> None:
        """Load C{url} in the open page and wait for its load event."""
        self.clear_events()
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def click_and_wait(self, expression: str) -> None:
        """Run C{expression} (a click that leaves the page) and wait for the next page's load event."""
        self.clear_events()
        self.eval(expression)
        self.wait_event("Page.loadEventFired")

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)[
            "sessionId"
        ]
        self.send("Page.enable")
        self.navigate(url)

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
