"""
The real judges: the Claude Code and Codex CLIs from npm, run against the
gateway in front of the fake provider.  C{scripts/install-clis.sh} installs
them under C{.cache/npm}; without them these tests skip (and fail in CI).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from lunaroute.testing.clis import run_claude, run_codex
from lunaroute.testing.helpers import in_thread


def _messages_requests(fake):
    return [r for r in fake.requests if r.path == "/v1/messages"]


@pytest_twisted.ensureDeferred
async def test_claude_code_completes_through_gateway(gateway, fake, tmp_path):
    """claude -p completes via the gateway, and its session id is the one it sent."""
    result = await in_thread(run_claude, gateway.url, tmp_path, "say hi")
    assert result.returncode == 0, result.stderr + result.stdout
    output = json.loads(result.stdout)
    assert output["result"] == fake.reply_text
    requests = _messages_requests(fake)
    assert requests, "Claude Code sent no /v1/messages"
    sent = requests[-1]
    assert sent.query == b"beta=true"
    assert sent.header("user-agent").startswith("claude-cli/")
    user_id = json.loads(sent.json["metadata"]["user_id"])
    assert user_id["session_id"] == output["session_id"]
    assert sent.header("x-claude-code-session-id") == output["session_id"]
    assert sent.header("x-api-key") == "sk-ant-dummy-key-for-tests"


async def _read_tool_loop(gateway_url: str, fake: Any, home: Path) -> None:
    """Claude Code reads a file with its Read tool; the tool_result reaches the provider."""
    (home / "notes.txt").write_text("lunaroute tool test\n")
    result = await in_thread(
        run_claude, gateway_url, home, "read notes.txt", "--model", "claude-sonnet-4-5-tools-read"
    )
    assert result.returncode == 0, result.stderr + result.stdout
    requests = _messages_requests(fake)
    assert len(requests) >= 2
    last_user = requests[-1].json["messages"][-1]
    kinds = [block.get("type") for block in last_user["content"] if isinstance(block, dict)]
    assert "tool_result" in kinds


@pytest_twisted.ensureDeferred
async def test_claude_code_tool_loop(gateway, fake, tmp_path):
    """A tool_use for Read is executed by Claude Code and its tool_result comes back through the gateway."""
    await _read_tool_loop(gateway.url, fake, tmp_path)


@pytest_twisted.ensureDeferred
async def test_codex_exec_completes_through_gateway(gateway, fake, tmp_path):
    """codex exec streams /v1/responses through the gateway and prints the answer."""
    result = await in_thread(run_codex, gateway.url, tmp_path, "say hi")
    assert result.returncode == 0, result.stderr + result.stdout
    assert fake.reply_text in result.stdout
    sent = [r for r in fake.requests if r.path == "/v1/responses"][-1]
    assert sent.json["stream"] is True
    assert sent.header("authorization") == "Bearer sk-dummy-codex-key"
    match = re.search(r"session id:\s*([0-9a-f-]+)", result.stderr)
    assert match, result.stderr
    assert sent.header("session-id") == match.group(1)


@pytest_twisted.ensureDeferred
async def test_claude_code_session_recorded_under_its_own_id(fake, start_gateway, tmp_path):
    """Two claude -p turns of one session are recorded under the session id Claude Code reports."""
    sessions = tmp_path / "sessions"
    gw = await start_gateway(fake, session_recording={"enabled": True, "sessions_dir": str(sessions)})
    home = tmp_path / "home"
    home.mkdir()
    first = await in_thread(run_claude, gw.url, home, "say hi")
    assert first.returncode == 0, first.stderr + first.stdout
    session_id = json.loads(first.stdout)["session_id"]
    second = await in_thread(run_claude, gw.url, home, "again", "--resume", session_id)
    assert second.returncode == 0, second.stderr + second.stdout
    assert json.loads(second.stdout)["session_id"] == session_id
    await gw.service.stopService()
    files = sorted(sessions.glob("*/session_*.jsonl"))
    assert [f.name for f in files] == [f"session_{session_id}.jsonl"]
    import sqlite3

    db = sqlite3.connect(sessions / "sessions.db")
    count = db.execute("SELECT request_count FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    assert count is not None and count[0] >= 2


@pytest_twisted.ensureDeferred
async def test_codex_session_recorded_under_its_own_id(fake, start_gateway, tmp_path):
    """A codex exec run is recorded under the session id Codex prints."""
    sessions = tmp_path / "sessions"
    gw = await start_gateway(fake, session_recording={"enabled": True, "sessions_dir": str(sessions)})
    result = await in_thread(run_codex, gw.url, tmp_path, "say hi")
    assert result.returncode == 0, result.stderr
    session_id = re.search(r"session id:\s*([0-9a-f-]+)", result.stderr).group(1)
    await gw.service.stopService()
    assert [f.name for f in sessions.glob("*/session_*.jsonl")] == [f"session_{session_id}.jsonl"]


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"])
@pytest_twisted.ensureDeferred
async def test_estimated_cost_agrees_with_claude_code(gateway, fake, tmp_path, model):
    """Our estimated cost for a Claude Code session equals the total_cost_usd Claude Code reports."""
    import httpx

    result = await in_thread(run_claude, gateway.url, tmp_path, "say hi", "--model", model)
    assert result.returncode == 0, result.stderr + result.stdout
    output = json.loads(result.stdout)
    stats = (await in_thread(httpx.get, gateway.url + "/_lunaroute/stats")).json()
    session = next(s for s in stats["sessions"] if s["session_id"] == output["session_id"])
    assert output["total_cost_usd"] > 0
    assert session["estimated_cost_usd"] == pytest.approx(output["total_cost_usd"], rel=1e-6)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-opus-4-1"])
@pytest_twisted.ensureDeferred
async def test_estimated_cost_agrees_with_claude_code_on_one_hour_cache_writes(gateway, fake, tmp_path, model):
    """
    With half of the cache writes reported as 1-hour writes (billed at 2x
    input, 5-minute ones at 1.25x), our estimate still equals Claude Code's
    total_cost_usd, which prices each lifetime at its own rate.
    """
    import httpx

    fake.cache_write_1h_share = 0.5
    result = await in_thread(run_claude, gateway.url, tmp_path, "say hi", "--model", model)
    assert result.returncode == 0, result.stderr + result.stdout
    output = json.loads(result.stdout)
    stats = (await in_thread(httpx.get, gateway.url + "/_lunaroute/stats")).json()
    session = next(s for s in stats["sessions"] if s["session_id"] == output["session_id"])
    assert session["tokens"]["cache_creation_1h"] > 0
    assert session["tokens"]["cache_creation_5m"] > 0
    assert session["estimated_cost_usd"] == pytest.approx(output["total_cost_usd"], rel=1e-6)


@pytest_twisted.ensureDeferred
async def test_claude_code_tool_loop_completes_while_its_primary_is_down(fake, start_gateway, tmp_path):
    """
    With a routing rule whose primary refuses connections, the real Claude
    Code CLI still completes a Read tool loop: every request falls back to
    the backup provider, and the tool result reaches it.
    """
    from lunaroute.testing.helpers import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    gateway = await start_gateway(
        fake,
        providers={
            "anthropic": {"base_url": closed, "http_client": {"max_retries": 0}},
            "anthropic_backup": {"provider_type": "anthropic", "base_url": fake.url},
        },
        routing={"rules": [{"name": "claude", "model_pattern": "^claude-", "primary": "anthropic",
                            "fallbacks": ["anthropic_backup"]}]},
    )
    await _read_tool_loop(gateway.url, fake, tmp_path)


def _ws_frames(gateway) -> dict[str, float]:
    """lunaroute_ws_frames_total by direction, from the gateway's metrics."""
    text = gateway.app.socket_metrics.render()[0].decode()
    frames = {}
    for direction in ("in", "out"):
        pattern = r'lunaroute_ws_frames_total\{direction="' + direction + r'"\} ([0-9.]+)'
        match = re.search(pattern, text)
        frames[direction] = float(match.group(1)) if match else 0.0
    return frames


@pytest_twisted.ensureDeferred
async def test_codex_exec_over_websocket(gateway, fake, tmp_path):
    """With supports_websockets, codex exec runs its turn over the gateway's WebSocket."""
    result = await in_thread(run_codex, gateway.url, tmp_path, "say hi", websockets=True)
    assert result.returncode == 0, result.stderr + result.stdout
    assert fake.reply_text in result.stdout
    frames = _ws_frames(gateway)
    assert frames["in"] >= 1 and frames["out"] > frames["in"], frames
    assert "Falling back" not in result.stderr
    sent = [r for r in fake.requests if r.path == "/v1/responses"][-1]
    assert sent.json["stream"] is True and "type" not in sent.json
    assert sent.header("authorization") == "Bearer sk-dummy-codex-key"


@pytest_twisted.ensureDeferred
async def test_codex_falls_back_to_http_when_websockets_are_off(fake, start_gateway, tmp_path):
    """websocket_enabled: false answers the upgrade 426 and Codex completes over HTTP."""
    gw = await start_gateway(fake, http_server={"websocket_enabled": False})
    result = await in_thread(run_codex, gw.url, tmp_path, "say hi", websockets=True)
    assert result.returncode == 0, result.stderr + result.stdout
    assert fake.reply_text in result.stdout
    assert _ws_frames(gw) == {"in": 0.0, "out": 0.0}
    assert [r.method for r in fake.requests if r.path == "/v1/responses"][-1] == "POST"


@pytest_twisted.ensureDeferred
async def test_codex_tool_call_over_websocket(gateway, fake, tmp_path):
    """A Codex tool loop over the WebSocket: the tool's output goes back on the same socket."""
    result = await in_thread(
        run_codex, gateway.url, tmp_path, "list files", "gpt-5-codex-tools-exec_command-shell", True
    )
    assert result.returncode == 0, result.stderr + result.stdout
    sent = [r for r in fake.requests if r.path == "/v1/responses"]
    assert len(sent) >= 2, [r.json.get("model") for r in sent]
    kinds = [item.get("type") for item in sent[-1].json["input"] if isinstance(item, dict)]
    assert "function_call_output" in kinds, kinds
    frames = _ws_frames(gateway)
    assert frames["in"] >= 2, frames


def _chat_requests(fake):
    return [r for r in fake.requests if r.path == "/v1/chat/completions"]


@pytest_twisted.ensureDeferred
async def test_claude_code_tool_loops_on_an_openai_only_gateway(fake, start_gateway, tmp_path):
    """
    Claude Code on an OpenAI-compatible server: the gateway's only provider
    speaks Chat Completions.  The real CLI completes a Read tool loop and a
    Bash tool loop; every model call reached the fake translated (never as
    /v1/messages), and each tool's result came back as a tool message.
    """
    gateway = await start_gateway(
        fake, providers={"anthropic": {"enabled": False}, "openai": {"api_key": "sk-openai-server-key"}}
    )
    (tmp_path / "notes.txt").write_text("lunaroute tool test\n")
    result = await in_thread(
        run_claude, gateway.url, tmp_path, "read notes.txt", "--model", "claude-sonnet-4-5-tools-read"
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["result"] == fake.reply_text
    chats = _chat_requests(fake)
    assert len(chats) >= 2 and not _messages_requests(fake)
    asked = [c for c in chats if "tools-read" in c.json["model"]]
    calls = [call for c in asked for m in c.json["messages"] for call in m.get("tool_calls") or []]
    assert [call["function"]["name"] for call in calls][:1] == ["Read"]
    results = [m for m in asked[-1].json["messages"] if m["role"] == "tool"]
    assert results and results[-1]["tool_call_id"] == calls[-1]["id"]
    assert all(c.header("x-api-key") is None for c in chats)

    result = await in_thread(
        run_claude, gateway.url, tmp_path, "say hello with echo", "--model", "claude-sonnet-4-5-tools-bash",
        "--allowedTools", "Bash",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    bash = [c for c in _chat_requests(fake) if "tools-bash" in c.json["model"]]
    tool_messages = [m for m in bash[-1].json["messages"] if m["role"] == "tool"]
    assert tool_messages and "hello from the fake provider" in tool_messages[-1]["content"]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("websockets", [False, True], ids=["http", "websocket"])
async def test_codex_tool_call_on_an_anthropic_only_gateway(fake, start_gateway, tmp_path, websockets):
    """
    Codex on Claude: the gateway's only provider speaks Anthropic.  The real
    CLI completes a tool call over HTTP and over its WebSocket; every model
    call reached the fake as /v1/messages with the gateway's key (never the
    client's OpenAI key), and the tool's output went back as a tool_result.
    """
    gateway = await start_gateway(
        fake, providers={"openai": {"enabled": False}, "anthropic": {"api_key": "sk-ant-server-key-123456"}}
    )
    result = await in_thread(
        run_codex, gateway.url, tmp_path, "list files", "claude-sonnet-4-5-tools-exec_command-shell", websockets
    )
    assert result.returncode == 0, result.stderr + result.stdout
    sent = _messages_requests(fake)
    assert len(sent) >= 2 and not [r for r in fake.requests if r.path == "/v1/responses"]
    kinds = [
        block.get("type")
        for message in sent[-1].json["messages"]
        if isinstance(message.get("content"), list)
        for block in message["content"]
    ]
    assert "tool_use" in kinds and "tool_result" in kinds, kinds
    assert all(r.header("authorization") is None for r in sent)
    assert all(r.header("x-api-key") == "sk-ant-server-key-123456" for r in sent)
    frames = _ws_frames(gateway)
    assert (frames["in"] >= 2) if websockets else (frames["in"] == 0), frames
