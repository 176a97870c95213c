"""
The real Claude Code and Codex CLIs, run as a user would against a gateway
(for the tests that use them).  C{scripts/install-clis.sh} installs them
under C{.cache/npm} in the checkout the tests run from
(C{LUNAROUTE_CLI_BIN} names another folder); without them the tests that
need them skip, and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["CLAUDE", "CODEX", "run_claude", "run_codex"]

BIN = Path(os.environ.get("LUNAROUTE_CLI_BIN") or Path.cwd() / ".cache" / "npm" / "node_modules" / ".bin")


def _find(tool: str) -> str | None:
    local = BIN / tool
    if local.exists():
        return str(local)
    return shutil.which(tool)


CLAUDE = _find("claude")
CODEX = _find("codex")


def _require(path: str | None, name: str) -> str:
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} CLI is not installed (scripts/install-clis.sh)")
        pytest.skip(f"{name} CLI is not installed (run scripts/install-clis.sh)")
    return path


def _clean_env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TERM", "TMPDIR", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["HOME"] = str(home)
    return env


def run_claude(gateway_url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    claude = _require(CLAUDE, "Claude Code")
    env = _clean_env(home)
    env.update(
        ANTHROPIC_BASE_URL=gateway_url,
        ANTHROPIC_API_KEY="sk-ant-dummy-key-for-tests",
        # Keeps Claude Code from reaching anything but the base URL.
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        CLAUDE_CODE_MAX_RETRIES="0",
    )
    return subprocess.run(
        [claude, "-p", *args, "--output-format", "json"],
        env=env, cwd=home, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def run_codex(
    gateway_url: str, home: Path, prompt: str, model: str = "gpt-5-codex", websockets: bool = False
) -> subprocess.CompletedProcess[str]:
    codex = _require(CODEX, "Codex")
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'''model = "{model}"
model_provider = "lunaroute"

[model_providers.lunaroute]
name = "LunaRoute"
base_url = "{gateway_url}/v1"
wire_api = "responses"
env_key = "LUNAROUTE_TEST_KEY"
{"supports_websockets = true" if websockets else ""}

[analytics]
enabled = false

[features]
plugins = false
'''
    )
    env = _clean_env(home)
    env.update(CODEX_HOME=str(codex_home), LUNAROUTE_TEST_KEY="sk-dummy-codex-key")
    return subprocess.run(
        [codex, "exec", "--skip-git-repo-check", prompt],
        env=env, cwd=home, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
