"""
End to end: the gateway started exactly as the README says,
C{twistd -n lunaroute --config <file>}, as a subprocess, driven by the SDKs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import pytest_twisted
from twisted.internet import defer

from lunaroute.testing.helpers import free_port, in_thread, twistd_lists_plugin, wait_until_healthy

TWISTD = shutil.which("twistd") or str(Path(sys.executable).with_name("twistd"))


pytestmark = pytest.mark.skipif(
    not twistd_lists_plugin(TWISTD), reason="lunaroute is not installed where twistd can see it (pip install .)"
)


def _start_twistd(tmp_path: Path, config: str, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config.replace("PORT", str(port)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_"))}
    proc = subprocess.Popen(
        [TWISTD, "-n", "lunaroute", "--config", str(config_file), *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _config(fake_url: str) -> str:
    return f"""
host: 127.0.0.1
port: PORT
ui:
  port: 0
providers:
  anthropic:
    base_url: {fake_url}
  openai:
    base_url: {fake_url}/v1
"""


@pytest_twisted.ensureDeferred
async def test_twistd_serves_sdks_and_stops_gracefully_mid_stream(fake, tmp_path):
    """
    twistd -n lunaroute serves both SDKs; on SIGTERM a stream in flight is
    allowed to finish and the process exits 0 without a traceback.
    """
    import anthropic
    import openai

    proc, url = _start_twistd(tmp_path, _config(fake.url))
    try:
        await in_thread(wait_until_healthy, url, proc)
        claude = anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0)
        message = await in_thread(
            claude.messages.create, model="claude-sonnet-4-5", max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        )
        assert message.content[0].text == fake.reply_text
        gpt = openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
        completion = await in_thread(
            gpt.chat.completions.create, model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == fake.reply_text

        fake.gate = defer.Deferred()
        first = threading.Event()

        def stream():
            with claude.messages.stream(
                model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            ) as s:
                parts = []
                for text in s.text_stream:
                    parts.append(text)
                    first.set()
                return "".join(parts)

        streamed = in_thread(stream)
        assert await in_thread(first.wait, 10)
        proc.send_signal(signal.SIGTERM)
        await in_thread(time.sleep, 0.3)
        assert proc.poll() is None, "twistd quit with a stream still in flight"
        fake.gate.callback(None)
        assert await streamed == fake.reply_text
        code = await in_thread(proc.wait, 30)
        output = proc.stdout.read()
        assert code == 0, output
        assert "Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "config, expected",
    [
        ("port: 99999\n", "port"),
        ("providers:\n  openai:\n    base_url: ftp://nope\n", "providers.openai.base_url"),
        ("bogus_key: 1\n", "bogus_key"),
        ("host: [unclosed\n", "line"),
        # Request-modification templates (docs/request-modification.md).
        ('providers:\n  anthropic:\n    request_headers:\n      headers: {X-A: "${sesion_id}"}\n',
         "providers.anthropic.request_headers.headers.X-A: unknown template variable ${sesion_id}"),
        ('providers:\n  openai:\n    request_body:\n      defaults: {user: "${env.HOME}"}\n',
         "providers.openai.request_body.defaults.user: ${env.HOME}: HOME is not in templates.env_allowlist"),
    ],
)
def test_bad_config_is_one_line_and_nonzero_exit(tmp_path, config, expected):
    """A bad config file gives one readable line naming the problem, exit 1, no traceback."""
    (tmp_path / "bad.yaml").write_text(config)
    result = subprocess.run(
        [TWISTD, "-n", "lunaroute", "--config", str(tmp_path / "bad.yaml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert expected in output


def test_bad_environment_value_is_one_line(tmp_path):
    """A bad environment value is reported by variable name."""
    env = dict(os.environ, LUNAROUTE_LOG_REQUESTS="maybe")
    result = subprocess.run(
        [TWISTD, "-n", "lunaroute"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert len(output.splitlines()) == 1 and "LUNAROUTE_LOG_REQUESTS" in output


def test_twistd_help_lists_the_plugin():
    """After pip install, twistd --help lists lunaroute."""
    out = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "lunaroute" in out


@pytest_twisted.ensureDeferred
async def test_sigkill_leaves_whole_lines_and_a_consistent_database(fake, tmp_path):
    """After SIGKILL mid-traffic the JSONL files hold whole lines and the database checks out."""
    import json
    import sqlite3

    import anthropic

    sessions = tmp_path / "sessions"
    config = _config(fake.url) + f"session_recording:\n  enabled: true\n  sessions_dir: {sessions}\n  batch_interval_ms: 10\n"
    proc, url = _start_twistd(tmp_path, config)
    try:
        await in_thread(wait_until_healthy, url, proc)
        client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
        for i in range(20):
            await in_thread(
                client.messages.create, model="claude-sonnet-4", max_tokens=5,
                messages=[{"role": "user", "content": f"turn {i}"}],
                extra_headers={"x-session-id": f"s{i % 3}"},
            )
        proc.kill()
        await in_thread(proc.wait, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
    files = list(sessions.glob("*/session_*.jsonl"))
    assert files
    for path in files:
        data = path.read_bytes()
        complete, _, _tail = data.rpartition(b"\n")
        for line in complete.splitlines():
            json.loads(line)
    db = sqlite3.connect(sessions / "sessions.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for session_id, count in db.execute("SELECT session_id, request_count FROM sessions"):
        rows = db.execute("SELECT count(*) FROM session_stats WHERE session_id=?", (session_id,)).fetchone()[0]
        assert rows == count


@pytest_twisted.ensureDeferred
async def test_zero_config_and_lunaroute_server(tmp_path):
    """
    With no config file at all (settings from the environment) both twistd
    and lunaroute-server serve both dialects; a bad request is answered
    locally without reaching any provider.
    """
    server = shutil.which("lunaroute-server") or str(Path(sys.executable).with_name("lunaroute-server"))
    for command in ([TWISTD, "-n", "lunaroute"], [server]):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_"))}
        env["LUNAROUTE_PORT"] = str(port)
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await in_thread(wait_until_healthy, url, proc)
            # (Not /readyz: it would probe the real providers.)
            health = await in_thread(httpx.get, url + "/healthz")
            assert health.status_code == 200
            bad = await in_thread(httpx.post, url + "/v1/messages", content=b"{", headers={"x-api-key": "k"})
            assert bad.status_code == 400 and bad.json()["type"] == "error"
            bad = await in_thread(httpx.post, url + "/v1/chat/completions", content=b"{")
            assert bad.status_code == 400 and "error" in bad.json()
            proc.send_signal(signal.SIGINT)
            assert await in_thread(proc.wait, 30) == 0
            assert "Traceback" not in proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest_twisted.ensureDeferred
async def test_second_stop_signal_cuts_streams_at_once(fake, tmp_path):
    """
    With a long shutdown_timeout_secs, a first SIGTERM waits for the stream in
    flight; a second one cuts it at once: the client keeps what it got, the
    body ends unterminated (never an HTML error page), and twistd exits 0
    without a traceback.
    """
    proc, url = _start_twistd(tmp_path, _config(fake.url) + "shutdown_timeout_secs: 120\n")
    try:
        await in_thread(wait_until_healthy, url, proc)
        fake.gate = defer.Deferred()
        received = bytearray()
        first = threading.Event()
        outcome: list[str] = []

        def stream() -> None:
            body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}
            try:
                with httpx.stream("POST", url + "/v1/messages", json=body,
                                  headers={"x-api-key": "k"}, timeout=30) as response:
                    for chunk in response.iter_raw():
                        received.extend(chunk)
                        first.set()
                outcome.append("complete")
            except httpx.HTTPError as exc:
                outcome.append(type(exc).__name__)

        streamed = in_thread(stream)
        assert await in_thread(first.wait, 10)
        proc.send_signal(signal.SIGTERM)
        await in_thread(time.sleep, 0.3)
        assert proc.poll() is None, "twistd quit with a stream still in flight"
        proc.send_signal(signal.SIGTERM)
        code = await in_thread(proc.wait, 15)
        await streamed
        output = proc.stdout.read()
        assert code == 0, output
        assert "Traceback" not in output
        assert outcome and outcome[0] != "complete"
        assert b"event: message_start" in received
        assert b"<html" not in received.lower()
        fake.gate.callback(None)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_freeze_startup_heap_takes_live_objects_out_of_the_collector() -> None:
    """After start-up, what lives as long as the gateway is frozen (gc.freeze): collections skip it."""
    import gc

    from lunaroute.tap import freeze_startup_heap

    assert gc.get_freeze_count() == 0
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
