"""
How fast the web UI's pages open: the dashboard, the analytics page, the
session list and a 500-turn session whose requests carry the whole
conversation each time (about 125 MB of recorded bodies).

    python bench/ui_pages.py                       # ~30 s: build the store, time the pages
    python bench/ui_pages.py --json                # the results as JSON too (bench/ui_results.json)
    python bench/ui_pages.py --screenshots docs/images   # also the README's screenshots (1280 px)

Builds a session database through the real write path
(L{lunaroute.testing.sessions}: exchanges -> events -> SQLiteWriter): 60
sessions over 30 days from Claude Code, Codex and the SDK (several models
and projects), and one session of C{--turns} (500) turns with
C{--text-bytes} per message, each request resending the whole conversation.
Serves the UI site (guard, pages, session API) on 127.0.0.1 in this process,
then measures:

  - server: C{--repeat} sequential GETs of each page's HTML over a real
    socket (median and max, ms);
  - browser (Debian's headless Chromium over DevTools, when installed): the
    page's load event (HTML, style sheet, scripts including the chart
    library) and the moment every chart on it is drawn, from navigation
    start; the median of C{--repeat} loads, a fresh tab each.

The target (issue 14): the dashboard and a 500-turn session open in under
a second on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lunaroute.testing.sessions import (  # noqa: E402
    anthropic_summary,
    long_session_exchanges,
    make_exchange,
    write_exchanges,
)

LONG = "bench-long-session"
AGENTS = (
    ("claude-cli/2.1.197 (external, sdk-cli)", "anthropic", ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5")),
    ("codex_exec/0.169.0 (Debian 12.0.0; x86_64) dumb", "openai_responses", ("gpt-5.5", "gpt-5-codex")),
    ("Anthropic/Python 0.40.0", "anthropic", ("claude-sonnet-4-5",)),
)
PROJECTS = ("/home/me/app", "/home/me/gateway", "/home/me/website", "/srv/infra")
TOOLS = ("Read", "Bash", "Edit", "Grep", "Write", "Glob")
ALL_CHARTS_DRAWN = "[...document.querySelectorAll('figure.chart')].every(f => f.dataset.rendered)"


def build_store(db_path: str, now: float, turns: int, text_bytes: int, seed: int = 7) -> dict[str, Any]:
    """The bench's sessions, written by the real writer; returns what was built."""
    rng = random.Random(seed)
    exchanges = []
    for s in range(60):
        agent, dialect, models = AGENTS[s % len(AGENTS)]
        model = rng.choice(models)
        project = PROJECTS[s % len(PROJECTS)]
        start = now - rng.uniform(0, 30 * 86400)
        history: list[dict[str, Any]] = []
        for t in range(rng.randint(2, 12)):
            call = (f"toolu_{s}_{t}", rng.choice(TOOLS), {"path": f"{project}/src/file{t}.py"})
            history.append({"role": "user", "content": f"Primary working directory: {project}\nstep {t}: fix the parser"})
            body = {"model": model, "max_tokens": 4096, "system": "You are a coding agent.", "messages": list(history)}
            failed = rng.random() < 0.05
            exchanges.append(
                make_exchange(
                    f"bench-{s:03d}", f"bench-{s:03d}-{t:03d}", body,
                    anthropic_summary(
                        f"Done with step {t}.", model=model, input_tokens=rng.randint(20, 4000)
                        + (60000 if dialect != "anthropic" else 0),  # OpenAI's input includes its cached tokens
                        output_tokens=rng.randint(50, 2000), cache_read=rng.randint(0, 60000),
                        cache_write=rng.randint(0, 8000), tool_calls=[call], stop_reason="tool_use",
                    ),
                    received=start + t * 40, user_agent=agent, dialect=dialect,
                    provider="openai" if dialect != "anthropic" else "anthropic",
                    status=529 if failed else 200, outcome="upstream_error" if failed else "ok",
                    error="overloaded" if failed else None, cost_usd=None if failed else rng.uniform(0.001, 0.2),
                    duration=rng.uniform(1.5, 40.0),
                    tool_results=[{"tool_call_id": f"toolu_{s}_{t - 1}", "tool_name": call[1],
                                   "duration_ms": rng.uniform(50, 9000)}] if t else None,
                )
            )
            history.append({"role": "assistant", "content": f"Done with step {t}."})
    long = long_session_exchanges(
        LONG, turns, start=now - 3 * 3600, text_bytes=text_bytes, keep_messages=None, change_every=120
    )
    body_bytes = sum(len(e.request_body or b"") for e in long)
    write_exchanges(db_path, [*exchanges, *long])
    return {"sessions": 61, "requests": len(exchanges) + len(long), "long_turns": turns, "long_body_mb": body_bytes / 1e6}


def time_http(url: str, repeat: int) -> dict[str, float]:
    times = []
    size = 0
    for _ in range(repeat):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            size = len(response.read())
        times.append((time.perf_counter() - began) * 1000)
    return {"median_ms": statistics.median(times), "max_ms": max(times), "bytes": size}


def time_browser(base: str, pages: dict[str, str], repeat: int, shots: str | None, profile: str) -> dict[str, Any]:
    from lunaroute.testing.browser import CHROMIUM, DevTools

    if CHROMIUM is None:
        return {"skipped": "Debian's chromium is not installed"}
    out: dict[str, Any] = {}
    browser = DevTools(__import__("pathlib").Path(profile))
    try:
        for name, path in pages.items():
            loads, drawn = [], []
            for _ in range(repeat):
                browser.open(base + path)
                loads.append(browser.eval("performance.getEntriesByType('navigation')[0].loadEventEnd"))
                if browser.eval("document.querySelectorAll('figure.chart').length"):
                    browser.until(ALL_CHARTS_DRAWN)
                    drawn.append(browser.eval("performance.now()"))
            out[name] = {
                "load_ms": statistics.median(loads),
                "charts_drawn_ms": statistics.median(drawn) if drawn else None,
            }
        if shots:
            shoot(browser, base, shots)
    finally:
        browser.close()
    return out


def shoot(browser: Any, base: str, folder: str) -> None:
    """The README's screenshots: each page at 1280 x 900 (the session page at its first turns)."""
    import base64

    os.makedirs(folder, exist_ok=True)
    for name, path in (
        ("dashboard", "/?days=30"),
        ("analytics", "/analytics?days=30"),
        ("sessions", "/sessions"),
        ("search", "/sessions?text_search=parser"),
        ("session", f"/sessions/{LONG}?live=0"),
        ("diff", f"/sessions/{LONG}/diff/long-00120"),
        ("settings", "/settings"),
    ):
        browser.open(base + path)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        if browser.eval("document.querySelectorAll('figure.chart').length"):
            browser.until(ALL_CHARTS_DRAWN)
        browser.eval("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))")
        shot = browser.send("Page.captureScreenshot", {"format": "png"})
        with open(os.path.join(folder, f"{name}.png"), "wb") as f:
            f.write(base64.b64decode(shot["data"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--text-bytes", type=int, default=250, help="padding of each message of the long session")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="write bench/ui_results.json")
    parser.add_argument("--screenshots", metavar="DIR", help="write the pages' screenshots there")
    args = parser.parse_args()

    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread
    from twisted.web.server import Site

    from lunaroute.api.app import LiveFeed
    from lunaroute.config import settings_from_mapping
    from lunaroute.sessions.store import SessionStore
    from lunaroute.stats.pricing import PricingTable
    from lunaroute.ui import ui_resource

    workdir = tempfile.mkdtemp(prefix="lunaroute-ui-bench-")
    db = os.path.join(workdir, "sessions.db")
    began = time.perf_counter()
    built = build_store(db, time.time(), args.turns, args.text_bytes)
    built["build_s"] = time.perf_counter() - began
    print(f"store: {built['requests']} requests, the long session {built['long_turns']} turns / "
          f"{built['long_body_mb']:.0f} MB of bodies, built in {built['build_s']:.1f} s", flush=True)

    # As a recording gateway would run it (the settings page shows them).
    settings = settings_from_mapping(
        {"session_recording": {"enabled": True, "jsonl": {"enabled": False}, "sqlite": {"path": db}}}, env={}
    )
    store = SessionStore(db, reactor=reactor)
    site = Site(ui_resource(store, settings, reactor, PricingTable.load(None, {}), LiveFeed()))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    pages = {
        "dashboard (24 h)": "/",
        "dashboard (30 days)": "/?days=30",
        "analytics (30 days)": "/analytics?days=30",
        "sessions": "/sessions",
        f"session, {args.turns} turns": f"/sessions/{LONG}?live=0",
    }
    results: dict[str, Any] = {"store": built, "server": {}, "browser": {}}

    def measure() -> None:
        for name, path in pages.items():
            results["server"][name] = time_http(base + path, args.repeat)
        results["browser"] = time_browser(base, pages, args.repeat, args.screenshots, os.path.join(workdir, "profile"))

    def done(result: Any) -> Any:
        port.stopListening()
        reactor.stop()
        return result

    deferToThread(measure).addBoth(done)
    reactor.run()

    print(f"{'page':<28} {'server median':>14} {'server max':>11} {'HTML':>9} {'browser load':>13} {'charts drawn':>13}")
    for name in pages:
        server = results["server"].get(name, {})
        browser = results["browser"].get(name, {}) if isinstance(results["browser"], dict) else {}
        drawn = browser.get("charts_drawn_ms")
        print(
            f"{name:<28} {server.get('median_ms', 0):>11.0f} ms {server.get('max_ms', 0):>8.0f} ms "
            f"{server.get('bytes', 0) / 1024:>6.0f} KB {browser.get('load_ms', 0):>10.0f} ms "
            f"{'' if drawn is None else f'{drawn:>10.0f} ms':>13}"
        )
    if args.json:
        with open(os.path.join(HERE, "ui_results.json"), "w") as f:
            json.dump(results, f, indent=2)
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
