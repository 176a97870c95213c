"""
The command line as a user meets it: C{twistd -n lunaroute} and
C{lunaroute-server} as subprocesses (start-up failures, --version, --help,
bad options, two gateways in one folder), and the option parsing in process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from twisted.scripts.twistd import ServerOptions

from lunaroute.tap import Options, flag_arguments
from lunaroute.testing.helpers import free_ports, wait_until_healthy

TWISTD = shutil.which("twistd") or str(Path(sys.executable).with_name("twistd"))
SERVER = shutil.which("lunaroute-server") or str(Path(sys.executable).with_name("lunaroute-server"))
COMMANDS = {"twistd": [TWISTD, "-n", "lunaroute"], "lunaroute-server": [SERVER]}

pytestmark = pytest.mark.skipif(
    not Path(SERVER).exists(), reason="lunaroute is not installed (pip install .)"
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_"))}


def _run(command: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60
    )


def _output_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_taken_port_is_one_line_and_exit_1(name, tmp_path):
    """A port something else listens on: one line saying so, status 1, no traceback."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _run(COMMANDS[name], "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert _output_lines(result) == [f"lunaroute: cannot listen on 127.0.0.1:{port}: Address already in use"]


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.1"])
def test_a_bad_or_foreign_host_is_one_line_and_exit_1(name, host, tmp_path):
    """An invalid address, or one that is not on this machine (TEST-NET-1): one line, status 1."""
    result = _run(COMMANDS[name], "--host", host, "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    lines = _output_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"lunaroute: cannot listen on {host}:0: ")


@pytest.mark.parametrize("command", [[SERVER, "--version"], [TWISTD, "lunaroute", "--version"]])
def test_version_prints_lunaroutes_version(command, tmp_path):
    """--version prints 'lunaroute <version>' from the package metadata."""
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"lunaroute {version('lunaroute')}"


def test_help_shows_the_run_options_and_the_commands(tmp_path):
    """lunaroute-server --help lists every foreground option and every command."""
    result = _run([SERVER], "--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in (
        "--config",
        "--host",
        "--port",
        "--dialect",
        "--log-level",
        "--log-requests",
        "--print-summary",
        "--version",
        "env",
        "stop",
        "import-sessions",
    ):
        assert option in result.stdout, option
    assert "nodaemon" not in result.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_a_bad_option_is_one_line_naming_it(name, tmp_path):
    """An unknown option: one line naming it, status 1; lunaroute-server never mentions twistd's flags."""
    result = _run(COMMANDS[name], "--bogus", cwd=tmp_path)
    assert result.returncode == 1
    lines = _output_lines(result)
    assert len(lines) == 1, lines
    assert "--bogus" in lines[0]
    if name == "lunaroute-server":
        assert lines[0].startswith("lunaroute-server: ")
        assert "nodaemon" not in lines[0] and "twistd" not in lines[0] and "pidfile" not in lines[0]


def test_a_bad_value_is_one_line_without_twistd_flags(tmp_path):
    """A bad option value (a configuration error) names the option, not --nodaemon."""
    result = _run([SERVER], "--port", "nope", cwd=tmp_path)
    assert result.returncode == 1
    lines = _output_lines(result)
    assert len(lines) == 1 and "--port" in lines[0] and "nodaemon" not in lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gateways_run_from_one_folder(tmp_path):
    """
    twistd -n lunaroute twice in one folder (different ports): both start,
    and no twistd.pid is left to collide on; lunaroute-server too.
    """
    procs = []
    try:
        commands = (COMMANDS["twistd"], COMMANDS["twistd"], COMMANDS["lunaroute-server"])
        # Distinct ports chosen at once: the gateways start before any listens.
        for command, port in zip(commands, free_ports(len(commands)), strict=True):
            proc = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=tmp_path,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            procs.append(proc)
            wait_until_healthy(f"http://127.0.0.1:{port}", proc)
        assert not (tmp_path / "twistd.pid").exists()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                assert proc.wait(30) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()


# --------------------------------------------------------------------------
# In process: the option parsing itself


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], None, False),
        (["--log-requests"], None, True),
        (["--no-log-requests"], "true", False),
        ([], "true", True),
        (["--log-requests=false"], "true", False),
        (["--log-requests=true"], None, True),
        (["--log-requests", "false"], "true", False),
        (["--log-requests", "--port", "0"], None, True),
    ],
)
def test_log_requests_is_a_flag(clean_env, args, env, expected):
    """--log-requests is a flag; --no-log-requests and the older valued forms still work."""
    if env is not None:
        clean_env.setenv("LUNAROUTE_LOG_REQUESTS", env)
    options = Options()
    options.parseOptions(args)
    assert options["settings"].logging.log_requests is expected


def test_a_bad_log_requests_value_is_a_usage_error():
    """--log-requests=maybe is refused with a readable message."""
    with pytest.raises(Exception, match="--log-requests takes no value"):
        flag_arguments(["--log-requests=maybe"])


@pytest.mark.parametrize(
    ("twistd_args", "pidfile"),
    [
        (["-n"], ""),
        (["-n", "--pidfile", "mine.pid"], os.path.abspath("mine.pid")),
        ([], os.path.abspath("twistd.pid")),
    ],
)
def test_the_default_pidfile_is_dropped_only_in_the_foreground(clean_env, twistd_args, pidfile):
    """twistd -n lunaroute writes no twistd.pid; an explicit --pidfile and daemons keep theirs."""
    config = ServerOptions()
    config.parseOptions([*twistd_args, "lunaroute", "--port", "0"])
    assert config["pidfile"] == pidfile
