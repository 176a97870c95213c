"""
The session API over sessions the real Claude Code and Codex CLIs recorded
through the gateway: client, project and title as each CLI reports them,
and full-text search with snippets down to a tool's result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from test_session_api_live import mount_api

from lunaroute.testing.clis import run_claude, run_codex
from lunaroute.testing.helpers import in_thread


async def api_get(gw: Any, path: str) -> Any:
    response = await treq.get(gw.url + path)
    assert response.code == 200, (path, await response.text())
    return await response.json()


@pytest_twisted.ensureDeferred
async def test_claude_code_tool_loop_is_searchable_down_to_the_tool_result(fake, start_gateway, tmp_path: Path):
    """
    claude -p runs a Read the fake asks for (of a file named "fake", which
    does not exist): the session is Claude Code's, in its folder, and the
    tool result Claude Code sent back is found, counted as an error.
    """
    gw = await start_gateway(fake, session_recording={"enabled": True, "sessions_dir": str(tmp_path / "sessions")})
    mount_api(gw)
    home = tmp_path / "home"
    home.mkdir()
    result = await in_thread(run_claude, gw.url, home, "read the file please", "--model", "claude-sonnet-4-5-tools-read")
    assert result.returncode == 0, result.stderr + result.stdout
    await gw.service.recorder.flush()

    listed = await api_get(gw, "/sessions?client=Claude%20Code")
    assert listed["total"] == 1
    session = listed["sessions"][0]
    assert session["project"] == str(home)
    assert session["title"] == "read the file please"
    assert session["request_count"] >= 2

    found = await api_get(gw, "/api/search?q=tool_result_text%3A%20%22does%20not%20exist%22")
    hit = found["hits"][0]
    assert hit["session_id"] == session["session_id"]
    assert "File <mark>does not exist</mark>." in hit["snippet"]
    found = await api_get(gw, "/api/search?q=tool_input_text%3A%20Read")
    assert found["hits"][0]["session_id"] == session["session_id"]
    tools = await api_get(gw, f"/sessions/{session['session_id']}/tools")
    assert [(t["tool_name"], t["calls"], t["errors"], t["timed_calls"]) for t in tools["tools"]] == [("Read", 1, 1, 1)]
    timeline = await api_get(gw, f"/sessions/{session['session_id']}/timeline")
    assert "tool_call" in [e["type"] for e in timeline["events"]]


@pytest_twisted.ensureDeferred
async def test_codex_session_has_its_client_project_and_title(fake, start_gateway, tmp_path: Path):
    """codex exec: client Codex, project from its <environment_context>, title its prompt, searchable."""
    gw = await start_gateway(fake, session_recording={"enabled": True, "sessions_dir": str(tmp_path / "sessions")})
    mount_api(gw)
    home = tmp_path / "home"
    home.mkdir()
    result = await in_thread(run_codex, gw.url, home, "explain the pangolin scales")
    assert result.returncode == 0, result.stderr
    session_id = re.search(r"session id:\s*([0-9a-f-]+)", result.stderr).group(1)
    await gw.service.recorder.flush()

    session = await api_get(gw, f"/sessions/{session_id}")
    assert session["client"] == "Codex"
    assert session["project"] == str(home)
    assert session["title"] == "explain the pangolin scales"
    listed = await api_get(gw, "/sessions?text_search=pangolin&client=Codex")
    assert [s["session_id"] for s in listed["sessions"]] == [session_id]
    found = await api_get(gw, "/api/search?q=pangolin")
    assert found["hits"][0]["session_id"] == session_id
    assert "<mark>pangolin</mark>" in found["hits"][0]["snippet"]
