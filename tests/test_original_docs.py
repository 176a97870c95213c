"""
The original LunaRoute's server README and Claude Code guide, used as a new
user would use them (docs/original/, mapped in docs/original-docs-map.md).

Every ```yaml block of both documents is written to a file and the gateway is
started on it as a subprocess (C{twistd -n lunaroute --config <file> --port
<free>}, C{${VAR}}s unset): it must answer C{/healthz} and stop cleanly on
SIGTERM.  The one block refused on purpose (L{REFUSED}, a deliberate
difference) must instead stop at once with exactly one line naming the key.

Then the recipes that exist today: the jq queries of "Tip 3" over files the
gateway really recorded, the session file names of "Tip 2", the
C{curl .../healthz} answer of "Common Issues", the Prometheus scrape config
of "Tip 4", and the guide's C{--config examples/configs/...} commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_twisted
import yaml

from lunaroute.config import load_settings, settings_from_mapping
from lunaroute.errors import ConfigError
from lunaroute.testing.helpers import free_ports, in_thread, twistd_lists_plugin

REPO = Path(__file__).resolve().parent.parent
ORIGINAL = REPO / "docs" / "original"
README = "lunaroute-server-README.md"
GUIDE = "claude-code-guide.md"
BIN = Path(sys.executable).parent
TWISTD = shutil.which("twistd") or str(BIN / "twistd")
SERVER = shutil.which("lunaroute-server") or str(BIN / "lunaroute-server")


def fenced_blocks(document: str, language: str) -> list[tuple[int, str]]:
    """(line of the opening fence, text) of every ```language block of a document."""
    lines = (ORIGINAL / document).read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == f"```{language}":
            end = index + 1
            while lines[end].strip() != "```":
                end += 1
            blocks.append((index + 1, "\n".join(lines[index + 1 : end]) + "\n"))
            index = end
        index += 1
    return blocks


def section_block(document: str, heading: str) -> str:
    """The first fenced block after a heading line (any language)."""
    text = (ORIGINAL / document).read_text()
    after = text[text.index(heading) :]
    found = re.search(r"```[a-z]*\n(.*?)```", after, re.S)
    assert found is not None, heading
    return found[1]


YAML_BLOCKS = [(doc, line, text) for doc in (README, GUIDE) for line, text in fenced_blocks(doc, "yaml")]

# Blocks refused on purpose, for good (a deliberate difference, see
# docs/original-docs-map.md): (document, fence line) -> (the key named in
# the one-line refusal, what the line says).
REFUSED: dict[tuple[str, int], tuple[str, str]] = {
    # Its weights name providers the block never defines.
    (GUIDE, 327): ("routing.rules[1].weights.openai_primary", "unknown provider 'openai_primary'"),  # 9. Routing
}

def block_id(doc: str, line: int) -> str:
    short = "readme" if doc == README else "guide"
    if (doc, line) in REFUSED:
        return f"{short}-{line}-refused-{REFUSED[(doc, line)][0].split('.')[-1]}"
    return f"{short}-{line}"


needs_install = pytest.mark.skipif(
    not twistd_lists_plugin(TWISTD), reason="lunaroute is not installed where twistd can see it (pip install .)"
)


# --------------------------------------------------------------------------
# All the subprocess gateways of this module, started at once (fast), each in
# its own empty directory with HOME pointing there (so ~/.lunaroute and
# ./sessions land in it), without any LUNAROUTE_/ANTHROPIC_/OPENAI_ variable.


@dataclass
class Run:
    argv: list[str]
    cwd: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    healthy: bool = False
    healthz: str | None = None  # the body `curl http://localhost:<port>/healthz` printed
    metrics: httpx.Response | None = None
    returncode: int | None = None
    output: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_")) and k != "PII_SECRET"
    }
    env["HOME"] = str(home)
    # The example configurations that record also start the UI (on by
    # default): any free port, so the gateways of this module never collide.
    env["LUNAROUTE_UI_PORT"] = "0"
    return env


def _probe(run: Run) -> None:
    try:
        if httpx.get(run.url + "/healthz", timeout=1).status_code != 200:
            return
    except httpx.HTTPError:
        return
    run.healthy = True
    if shutil.which("curl"):
        curl = subprocess.run(
            ["curl", "-s", f"http://localhost:{run.port}/healthz"], capture_output=True, text=True, timeout=10
        )
        run.healthz = curl.stdout
    else:
        run.healthz = httpx.get(run.url + "/healthz", timeout=5).text
    run.metrics = httpx.get(run.url + "/metrics", timeout=5)


def _run_all(runs: dict[str, Run], deadline_secs: float = 90) -> None:
    for run in runs.values():
        run.log = run.cwd / "output.log"
        with open(run.log, "wb") as log:
            run.proc = subprocess.Popen(run.argv, cwd=run.cwd, env=_env(run.cwd), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + deadline_secs
    waiting = list(runs.values())
    while waiting and time.monotonic() < deadline:
        for run in list(waiting):
            assert run.proc is not None
            if run.proc.poll() is not None:
                waiting.remove(run)
                continue
            _probe(run)
            if run.healthy:
                waiting.remove(run)
        time.sleep(0.05)
    for run in runs.values():
        assert run.proc is not None
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
    for run in runs.values():
        assert run.proc is not None and run.log is not None
        try:
            run.returncode = run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.returncode = run.proc.wait()
        run.output = run.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    started: dict[str, Run] = {}
    # Distinct ports, all chosen at once: gateways start in parallel here.
    ports = iter(free_ports(len(YAML_BLOCKS) + 2))
    for doc, line, text in YAML_BLOCKS:
        home = tmp_path_factory.mktemp(block_id(doc, line))
        (home / "config.yaml").write_text(text)
        port = next(ports)
        started[block_id(doc, line)] = Run(
            [TWISTD, "-n", "lunaroute", "--config", "config.yaml", "--port", str(port)], home, port
        )
    # The guide's "Option 3" command, from a directory without examples/.
    for name, command in (("server-example", [SERVER]), ("twistd-example", [TWISTD, "-n", "lunaroute"])):
        home = tmp_path_factory.mktemp(name)
        port = next(ports)
        started[name] = Run(
            [*command, "--config", "examples/configs/claude-code-proxy.yaml", "--port", str(port)], home, port
        )
    _run_all(started)
    yield started


def _output_lines(run: Run) -> list[str]:
    return [line for line in run.output.splitlines() if line.strip()]


@needs_install
@pytest.mark.parametrize(
    ("doc", "line"),
    [pytest.param(doc, line, id=block_id(doc, line)) for doc, line, _ in YAML_BLOCKS],
)
def test_every_yaml_block_starts_the_gateway_or_is_refused_on_purpose(
    runs: dict[str, Run], doc: str, line: int
) -> None:
    """
    Each YAML example of the README and the guide starts the gateway
    (healthz ok, exit 0 on SIGTERM), or, for a feature still being built,
    stops with exactly one line naming the key and 'not available'.
    """
    run = runs[block_id(doc, line)]
    if (doc, line) in REFUSED:
        key, says = REFUSED[(doc, line)]
        lines = _output_lines(run)
        assert run.returncode not in (0, None) and not run.healthy, run.output
        assert len(lines) == 1, run.output
        assert f"{key}: " in lines[0] and says in lines[0], lines[0]
        return
    assert run.healthy, run.output
    assert run.returncode == 0, run.output
    assert "Traceback" not in run.output
    assert "not applied yet" not in run.output and "not available" not in run.output


def test_the_block_census_is_what_the_tables_describe() -> None:
    """15 YAML blocks (2 in the README, 13 in the guide); every table entry is one of them."""
    assert len(YAML_BLOCKS) == 15
    assert sum(1 for doc, _, _ in YAML_BLOCKS if doc == README) == 2
    located = {(doc, line) for doc, line, _ in YAML_BLOCKS}
    assert set(REFUSED) <= located


@pytest.mark.parametrize(
    ("doc", "line"),
    [pytest.param(doc, line, id=block_id(doc, line)) for doc, line, _ in YAML_BLOCKS],
)
def test_every_yaml_block_loads_in_process_the_same_way(doc: str, line: int) -> None:
    """The loader's verdict on each block, without a subprocess (and warnings where expected)."""
    text = dict(((d, n), t) for d, n, t in YAML_BLOCKS)[(doc, line)]
    data = yaml.safe_load(text)
    if (doc, line) in REFUSED:
        key, says = REFUSED[(doc, line)]
        with pytest.raises(ConfigError) as info:
            settings_from_mapping(data, {"HOME": "/nonexistent"})
        assert info.value.key == key and says in info.value.problem
        return
    settings_from_mapping(data, {"HOME": "/nonexistent"})


def test_the_readme_stats_limit_is_the_statistics_setting() -> None:
    """The README's `session_stats_max_sessions: 100` and the guide's `50` set our statistics limit."""
    limits = [
        settings_from_mapping(yaml.safe_load(text)).statistics.session_stats_max_sessions
        for _, _, text in YAML_BLOCKS
        if "session_stats_max_sessions" in text and "pii" not in text
    ]
    assert sorted(limits) == [50, 100, 100]


# --------------------------------------------------------------------------
# examples/configs


EXAMPLES = sorted((REPO / "examples" / "configs").glob("*.yaml"))


def test_the_guide_names_only_examples_we_ship() -> None:
    """Every examples/configs/<name> the guide mentions exists, plus one per routing strategy and Claude Code on OpenAI."""
    guide = (ORIGINAL / GUIDE).read_text()
    named = set(re.findall(r"examples/configs/([\w.-]+\.yaml)", guide))
    named |= {f"{name}.yaml" for name in re.findall(r"^# ([\w-]+)\.yaml$", guide, re.M)}
    assert named == {
        "claude-code-proxy.yaml",
        "claude-code-proxy-with-recording.yaml",
        "development.yaml",
        "privacy-first.yaml",
        "multi-provider.yaml",
    }
    shipped = {path.name for path in EXAMPLES}
    ours = {"round_robin.yaml", "weighted_round_robin.yaml", "limits_alternative.yaml", "claude-code-on-openai.yaml"}
    assert named | ours == shipped


def test_examples_shown_in_the_guide_are_copied_as_shown() -> None:
    """development, privacy-first and multi-provider are the guide's blocks, key for key."""
    blocks = {text.splitlines()[0].lstrip("# ").strip(): yaml.safe_load(text) for _, _, text in YAML_BLOCKS}
    for name in ("development.yaml", "privacy-first.yaml", "multi-provider.yaml"):
        assert yaml.safe_load((REPO / "examples" / "configs" / name).read_text()) == blocks[name], name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    """Each shipped example loads with our loader."""
    settings = load_settings(str(path), env={"HOME": "/nonexistent"})
    assert settings.port == 8081


@needs_install
@pytest.mark.parametrize("name", ["server-example", "twistd-example"])
def test_the_guides_example_command_works_from_any_directory(runs: dict[str, Run], name: str) -> None:
    """
    `lunaroute-server --config examples/configs/claude-code-proxy.yaml` (and
    the twistd form) from a directory without examples/: the installed copy
    is used and said so; healthz answers; SIGTERM stops it with status 0.
    """
    run = runs[name]
    assert run.healthy and run.returncode == 0, run.output
    assert "claude-code-proxy.yaml (the example shipped with LunaRoute)" in run.output
    assert f"listening on 127.0.0.1:{run.port}, dialect anthropic" in run.output


# --------------------------------------------------------------------------
# Common Issues: curl .../healthz; Tip 4: the Prometheus scrape config


@needs_install
def test_curl_healthz_prints_exactly_what_the_guide_says(runs: dict[str, Run]) -> None:
    """`curl http://localhost:8081/healthz` prints `{"status":"ok"}` (the guide's "Should return")."""
    expected = re.search(r"# Should return: (\S+)", (ORIGINAL / GUIDE).read_text())
    assert expected is not None and expected[1] == '{"status":"ok"}'
    healthy = [run for run in runs.values() if run.healthy]
    assert healthy
    for run in healthy:
        assert run.healthz == expected[1]


@needs_install
def test_the_guides_scrape_config_matches_our_metrics_endpoint(runs: dict[str, Run]) -> None:
    """Tip 4's job scrapes localhost:8081/metrics: our default port and a Prometheus text endpoint."""
    guide_job = yaml.safe_load(section_block(GUIDE, "### Tip 4"))["scrape_configs"][0]
    ours = yaml.safe_load((REPO / "docs" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert guide_job["metrics_path"] == ours["metrics_path"] == "/metrics"
    assert guide_job["job_name"] == ours["job_name"] == "lunaroute"
    (guide_target,) = guide_job["static_configs"][0]["targets"]
    (our_target,) = ours["static_configs"][0]["targets"]
    default_port = settings_from_mapping({}).port
    assert guide_target.rsplit(":", 1)[1] == our_target.rsplit(":", 1)[1] == str(default_port)
    run = runs[block_id(README, 225)]
    assert run.metrics is not None and run.metrics.status_code == 200
    assert run.metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE lunaroute_" in run.metrics.text


# --------------------------------------------------------------------------
# Tips 2 and 3: session files and the jq recipes, over real recordings.

SESSIONS = {
    "alpha": "5a1e0c7e-0000-4000-8000-00000000000a",
    "beta": "5a1e0c7e-0000-4000-8000-00000000000b",
}


def _user_id(session: str) -> str:
    # Current Claude Code: metadata.user_id is a JSON string holding session_id.
    return json.dumps({"device_id": "cd" * 32, "account_uuid": "", "session_id": session})


async def _record_two_sessions(fake: Any, start_gateway: Any, home: Path) -> dict[str, int]:
    """Three requests (two in alpha, one in beta); the tokens the SDK saw per session."""
    gw = await start_gateway(
        fake, session_recording={"enabled": True, "sessions_dir": str(home / ".lunaroute" / "sessions")}
    )
    client = gw.anthropic()
    seen = {name: 0 for name in SESSIONS}
    for name, prompt in (("alpha", "first question"), ("alpha", "a second, longer question " * 8), ("beta", "hi")):
        message = await in_thread(
            client.messages.create, model="claude-sonnet-4-5", max_tokens=64,
            metadata={"user_id": _user_id(SESSIONS[name])},
            messages=[{"role": "user", "content": prompt}],
        )
        seen[name] += message.usage.input_tokens + message.usage.output_tokens
    await gw.service.stopService()  # flushes the recorder
    return seen


def _bash(script: str, home: Path) -> str:
    # TZ=UTC: our day folders are UTC days (see docs/original-docs-map.md).
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TZ": "UTC"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
@pytest_twisted.ensureDeferred
async def test_tip3_jq_recipes_count_the_recorded_tokens(fake, start_gateway, tmp_path):
    """
    The guide's two jq recipes, run verbatim with the real jq over files the
    gateway recorded: today's total tokens, and the most expensive session.
    """
    seen = await _record_two_sessions(fake, start_gateway, tmp_path)
    assert seen["alpha"] > seen["beta"] > 0
    out = _bash(section_block(GUIDE, "### Tip 3"), tmp_path)
    total, _, rest = out.partition("\n")
    assert int(total) == seen["alpha"] + seen["beta"]
    assert json.loads(rest) == {"session": SESSIONS["alpha"], "tokens": seen["alpha"]}


@pytest_twisted.ensureDeferred
async def test_tip2_session_files_are_where_the_guide_looks(fake, start_gateway, tmp_path):
    """
    Files are `~/.lunaroute/sessions/<day>/session_<id>.jsonl`, the glob of
    Tip 2's `tail -f`; the day is the UTC day of the session's first event
    (the guide's `$(date +%Y-%m-%d)` is that day with TZ=UTC, or `date -u`).
    """
    await _record_two_sessions(fake, start_gateway, tmp_path)
    root = tmp_path / ".lunaroute" / "sessions"
    files = sorted(root.glob("*/session_*.jsonl"))
    assert [f.name for f in files] == [f"session_{SESSIONS['alpha']}.jsonl", f"session_{SESSIONS['beta']}.jsonl"]
    for path in files:
        first = json.loads(path.read_text().splitlines()[0])
        stamp = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).astimezone(UTC)
        assert path.parent.name == stamp.date().isoformat()
    listed = _bash("ls ~/.lunaroute/sessions/$(date +%Y-%m-%d)/session_*.jsonl", tmp_path).split()
    assert sorted(listed) == [str(f) for f in files]
    assert _bash("ls ~/.lunaroute/sessions/$(date -u +%Y-%m-%d)/", tmp_path).split() == [f.name for f in files]
