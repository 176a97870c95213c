"""
C{lunaroute-server env} and C{stop} as a user runs them: subprocesses with
their own HOME, the printed exports used by the C{anthropic} SDK.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import treq

from lunaroute.testing.helpers import free_port, in_thread

SERVER = shutil.which("lunaroute-server") or str(Path(sys.executable).with_name("lunaroute-server"))

pytestmark = pytest.mark.skipif(
    not Path(SERVER).exists(), reason="lunaroute-server is not installed (pip install .)"
)


def _run(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_"))}
    env["HOME"] = str(home)
    return subprocess.run(
        [SERVER, *args], env=env, cwd=home, capture_output=True, text=True, timeout=timeout
    )


def _exports(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        assert line.startswith("export "), f"non-export line on stdout: {line!r}"
        name, _, value = line[len("export "):].partition("=")
        out[name] = value
    return out


@pytest_twisted.ensureDeferred
async def test_env_starts_reuses_and_stop_stops(fake, tmp_path):
    """
    env starts a background gateway and prints exports that work with the
    SDK; a second env reuses it; stop ends it gracefully.
    """
    import anthropic

    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"providers:\n  anthropic:\n    base_url: {fake.url}\n"
        f"session_recording:\n  enabled: true\n  sessions_dir: {tmp_path / 'sessions'}\nui:\n  port: 0\n"
    )
    first = await in_thread(_run, tmp_path, "env", "--port", str(port), "--config", str(config))
    try:
        assert first.returncode == 0, first.stderr
        # The UI (on by default with recording) at the real port env chose for "port: 0".
        ui = re.search(r"# web UI: (http://127\.0\.0\.1:(\d+))", first.stderr)
        assert ui is not None and int(ui.group(2)) != 0, first.stderr
        assert (await treq.get(ui.group(1) + "/static/app.css")).code == 200
        exports = _exports(first.stdout)
        assert exports == {
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        }
        pidfile = tmp_path / ".lunaroute" / "lunaroute.pid"
        pid = int(pidfile.read_text())
        assert (tmp_path / ".lunaroute" / "lunaroute.log").exists()

        client = anthropic.Anthropic(base_url=exports["ANTHROPIC_BASE_URL"], api_key="k", max_retries=0)
        message = await in_thread(
            client.messages.create, model="claude-sonnet-4-5", max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
        )
        assert message.content[0].text == fake.reply_text

        second = await in_thread(_run, tmp_path, "env", "--port", str(port), "--config", str(config))
        assert second.returncode == 0
        assert _exports(second.stdout) == exports
        assert "reusing" in second.stderr and f"web UI: {ui.group(1)}" in second.stderr
        assert int(pidfile.read_text()) == pid
    finally:
        stopped = await in_thread(_run, tmp_path, "stop")
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_env_reports_a_bad_config(tmp_path):
    """env with a broken config prints why on stderr and exits non-zero, with nothing on stdout."""
    (tmp_path / "bad.yaml").write_text("port: not-a-port\n")
    result = _run(tmp_path, "env", "--config", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert result.stdout == ""
    assert "port" in result.stderr and "Traceback" not in result.stderr


def test_env_reports_a_taken_port(tmp_path):
    """env on a port something else holds fails with a reason instead of hanging."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _run(tmp_path, "env", "--port", str(port), "--wait", "10")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "in use" in result.stderr


def test_stop_without_a_running_gateway(tmp_path):
    """stop with nothing running says so and succeeds."""
    result = _run(tmp_path, "stop")
    assert result.returncode == 0
    assert "no background" in result.stderr
