"""
Many gateways, one PostgreSQL store, end to end: three C{twistd -n
lunaroute} processes record one session's turns (sent round-robin and at
the same time with the official anthropic SDK, against the fake provider)
into one database; the session's aggregates equal the sum of its turns and
what the SDK was told.  The real Claude Code CLI does the same through nginx
balancing round-robin over three gateways: the session's figures are the
sum of its turns and Claude Code's own tokens and C{total_cost_usd}.  And a
gateway whose database goes away keeps serving, says so in C{/readyz}, and
catches up when it returns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer

from lunaroute.testing.helpers import free_ports, in_thread, twistd_lists_plugin, wait_until_healthy

TWISTD = shutil.which("twistd") or str(Path(sys.executable).with_name("twistd"))

pytestmark = pytest.mark.skipif(
    not twistd_lists_plugin(TWISTD), reason="lunaroute is not installed where twistd can see it (pip install .)"
)

SESSION = "team-session-0001"


def _config(fake_url: str, port: int, dsn: str) -> str:
    return f"""
host: 127.0.0.1
port: {port}
shutdown_timeout_secs: 10
ui:
  port: 0
providers:
  anthropic:
    base_url: {fake_url}
session_recording:
  enabled: true
  jsonl: false
  sqlite: false
  batch_interval_ms: 20
  postgres:
    enabled: true
    connection_string: "{dsn}"
    acquire_timeout_seconds: 5
"""


def _start(tmp_path: Path, name: str, fake_url: str, port: int, dsn: str) -> tuple[subprocess.Popen[str], str]:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.yaml").write_text(_config(fake_url, port, dsn))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_"))}
    env["HOME"] = str(folder)
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "lunaroute", "--config", str(folder / "config.yaml")],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except psycopg.errors.UndefinedTable:
            pass  # no gateway has created the schema yet (it does on its first write)
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _turn(url: str, text: str, stream: bool) -> Any:
    import anthropic

    client = anthropic.Anthropic(
        base_url=url, api_key="sk-ant-test-key-123456", max_retries=0, default_headers={"x-session-id": SESSION}
    )
    messages = [{"role": "user", "content": text}]
    if stream:
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=messages) as s:
            return s.get_final_message().usage
    return client.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=messages).usage


def _rows(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


@pytest_twisted.ensureDeferred
async def test_three_gateways_one_database_one_session(fake: Any, postgres_dsn: str, tmp_path: Path) -> None:
    """
    Nine turns of one session, three per gateway, the gateways' turns sent
    at the same time: one session row whose figures are the sum of its nine
    request rows and of the usage the SDK reported; any gateway's session
    API shows it (the API reads the shared store).
    """
    ports = free_ports(3)
    gateways = [_start(tmp_path, f"gw{i}", fake.url, port, postgres_dsn) for i, port in enumerate(ports)]
    outputs: list[str] = []
    try:
        for proc, url in gateways:
            await in_thread(wait_until_healthy, url, proc)

        async def gateway_turns(index: int) -> list[Any]:
            url = gateways[index][1]
            usages = []
            for n in range(3):
                usages.append(await in_thread(_turn, url, f"turn {n} via gateway {index} " * (index + 1), n == 1))
            return usages

        results = await defer.gatherResults(
            [defer.ensureDeferred(gateway_turns(i)) for i in range(3)], consumeErrors=True
        )
        usages = [u for per_gateway in results for u in per_gateway]
        want_input = sum(u.input_tokens for u in usages)
        want_output = sum(u.output_tokens for u in usages)

        def recorded() -> bool:
            code, body = _get(f"{gateways[2][1]}/sessions/{SESSION}")
            return code == 200 and body.get("request_count") == 9

        await in_thread(_wait_for, recorded, "the nine turns in the shared store")
        code, body = await in_thread(_get, f"{gateways[0][1]}/sessions/{SESSION}")
        assert code == 200 and len(body["requests"]) == 9
        assert body["input_tokens"] == want_input and body["output_tokens"] == want_output
        code, ready = await in_thread(_get, f"{gateways[1][1]}/readyz")
        assert code == 200 and ready["store"]["status"] == "ok"
        code, stats = await in_thread(_get, f"{gateways[1][1]}/_lunaroute/stats")
        assert code == 200 and stats["recording"]["store"]["backlog_events"] == 0
    finally:
        for proc, _ in gateways:
            outputs.append(_stop(proc))
    for out in outputs:
        assert "Traceback" not in out, out
    sums = _rows(
        postgres_dsn,
        "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(estimated_cost_usd), "
        "COUNT(DISTINCT listener) FROM session_stats WHERE session_id = %s",
        SESSION,
    )[0]
    session = _rows(
        postgres_dsn,
        "SELECT request_count, input_tokens, output_tokens, cache_read_tokens, estimated_cost_usd, success "
        "FROM sessions WHERE session_id = %s",
        SESSION,
    )[0]
    assert session[:4] == sums[:4] == (9, want_input, want_output, sums[3])
    assert session[4] == pytest.approx(sums[4]) and session[5] == 1


@pytest_twisted.ensureDeferred
async def test_database_down_requests_succeed_readyz_degraded_then_it_catches_up(
    fake: Any, postgres_server: Any, postgres_dsn: str, tmp_path: Path
) -> None:
    """
    The database stops while a gateway serves: its requests still succeed,
    /readyz stays 200 and reports the store degraded with its backlog;
    once the database is back the backlog is written and nothing is lost.
    """
    [port] = free_ports(1)
    proc, url = _start(tmp_path, "gw", fake.url, port, postgres_dsn)
    out = ""
    try:
        await in_thread(wait_until_healthy, url, proc)
        await in_thread(_turn, url, "before", False)
        await in_thread(_wait_for, lambda: _rows(postgres_dsn, "SELECT COUNT(*) FROM session_stats")[0][0] == 1,
                        "the first turn")
        postgres_server.stop("immediate")
        try:
            for n in range(3):
                usage = await in_thread(_turn, url, f"while down {n}", n == 1)
                assert usage.output_tokens > 0

            def degraded() -> bool:
                code, body = _get(f"{url}/readyz")
                return code == 200 and body["store"]["status"] == "degraded" and body["store"]["backlog_events"] > 0

            await in_thread(_wait_for, degraded, "/readyz to report the store degraded")
        finally:
            postgres_server.start()

        def caught_up() -> bool:
            code, body = _get(f"{url}/readyz")
            return code == 200 and body["store"]["status"] == "ok"

        # The backoff is at most a few seconds after this few failures.
        await in_thread(_wait_for, caught_up, "the store to catch up", 60)
    finally:
        out = _stop(proc)
    assert "Traceback" not in out, out
    assert _rows(postgres_dsn, "SELECT request_count FROM sessions WHERE session_id = %s", SESSION) == [(4,)]
    assert _rows(postgres_dsn, "SELECT COUNT(*) FROM session_stats") == [(4,)]


# -- Claude Code through nginx, three gateways, one database --------------------------------

REPO = Path(__file__).resolve().parent.parent


def _nginx_conf(gateway_ports: list[int], listen: int) -> str:
    """
    deploy/compose/nginx.conf in front of the three gateways on 127.0.0.1,
    balancing in turn (round-robin) rather than by open connections, one
    worker: each request of one keep-alive client connection goes to the
    next gateway.
    """
    text = (REPO / "deploy" / "compose" / "nginx.conf").read_text()
    servers = "".join(f"server 127.0.0.1:{port};\n        " for port in gateway_ports)
    for old, new in (
        ("least_conn;", ""),
        ("server gateway-1:8081;\n        server gateway-2:8081;\n        ", servers),
        ("listen 8081;", f"listen 127.0.0.1:{listen};"),
        ("worker_processes auto;", "worker_processes 1;"),
    ):
        assert old in text, f"deploy/compose/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


def _requests_served(url: str) -> float:
    """The sum of lunaroute_requests_total over its labels, from a gateway's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("lunaroute_requests_total{"))


def _binary_or_skip(path: str | None, what: str) -> str:
    from lunaroute.testing.postgres import REQUIRE_ENV

    if path is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {what} is not installed")
        pytest.skip(f"{what} is not installed")
    return path


def _session_row(dsn: str, session_id: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute("SELECT * FROM sessions WHERE session_id = %s", (session_id,))
        [row] = cursor.fetchall()
        assert cursor.description is not None
        return {column.name: value for column, value in zip(cursor.description, row, strict=True)}


def _wait_for_balancer(url: str, balancer: subprocess.Popen[str]) -> None:
    """Until nginx answers (a gateway's /healthz through it); its error output if it exits first."""

    def answers() -> bool:
        if balancer.poll() is not None:
            assert balancer.stderr is not None
            raise AssertionError(f"nginx exited: {balancer.stderr.read()}")
        try:
            return _get(f"{url}/healthz")[0] == 200
        except OSError:
            return False

    _wait_for(answers, "nginx to answer", 15)


@pytest_twisted.ensureDeferred
async def test_claude_code_through_nginx_round_robin_on_three_gateways(
    fake: Any, postgres_dsn: str, tmp_path: Path
) -> None:
    """
    The real Claude Code CLI drives one session through nginx, which sends
    each request to the next of three C{twistd} gateways recording to one
    database: a Read tool loop (two model calls), the session resumed for a
    plain answer (one), then another tool loop (two).  Whatever Claude Code
    sends besides (its C{HEAD /} check at start), the five model calls reach
    all three gateways; the session row counts each once, equals its
    recomputation from its request rows (the sum of its turns), and its
    tokens and cost are the ones Claude Code reports (C{usage},
    C{total_cost_usd}, per run).
    """
    from lunaroute.testing.clis import CLAUDE, run_claude

    _binary_or_skip(CLAUDE, "the Claude Code CLI (scripts/install-clis.sh)")
    nginx = _binary_or_skip(shutil.which("nginx"), "nginx")
    ports = free_ports(4)
    listen = ports.pop()
    balancer_url = f"http://127.0.0.1:{listen}"
    gateways = [_start(tmp_path, f"gw{i}", fake.url, port, postgres_dsn) for i, port in enumerate(ports)]
    conf = tmp_path / "nginx.conf"
    conf.write_text(_nginx_conf(ports, listen))
    directives = f"daemon off; pid {tmp_path}/nginx.pid;"
    with (tmp_path / "access.log").open("w") as access:
        balancer = subprocess.Popen(
            [nginx, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf), "-g", directives],
            stdout=access, stderr=subprocess.PIPE, text=True,
        )
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("lunaroute on three gateways\n")
    runs: list[dict[str, Any]] = []
    outputs: list[str] = []
    try:
        for proc, url in gateways:
            await in_thread(wait_until_healthy, url, proc)
        await in_thread(_wait_for_balancer, balancer_url, balancer)
        session_id = None
        for prompt, model in (
            ("read notes.txt", "claude-sonnet-4-5-tools-read"),
            ("say hi", "claude-sonnet-4-5"),
            ("read notes.txt again", "claude-sonnet-4-5-tools-read"),
        ):
            resume = ("--resume", session_id) if session_id else ()
            result = await in_thread(run_claude, balancer_url, home, prompt, "--model", model, *resume)
            assert result.returncode == 0, result.stderr + result.stdout
            output = json.loads(result.stdout)
            session_id = session_id or output["session_id"]
            assert output["session_id"] == session_id
            runs.append(output)
        calls = [r for r in fake.requests if r.path == "/v1/messages"]
        assert len(calls) == 5, [r.json.get("model") for r in calls]
        assert {r.header("x-claude-code-session-id") for r in calls} == {session_id}

        # Each gateway relayed some of the model calls (lunaroute_requests_total), none twice.
        served = [await in_thread(_requests_served, url) for _, url in gateways]
        assert sum(served) == len(calls) and min(served) >= 1, (served, (tmp_path / "access.log").read_text())

        def recorded() -> bool:
            code, body = _get(f"{gateways[1][1]}/sessions/{session_id}")
            return code == 200 and body.get("request_count") == len(calls)

        # Any gateway's session API reads the shared store.
        await in_thread(_wait_for, recorded, "every model call in the shared store")
        code, body = await in_thread(_get, f"{gateways[2][1]}/sessions/{session_id}")
        assert code == 200 and len(body["requests"]) == len(calls)
        api_cost = body["estimated_cost_usd"]
    finally:
        balancer.terminate()
        await in_thread(balancer.wait, 30)
        assert balancer.stderr is not None
        balancer.stderr.close()
        for proc, _ in gateways:
            outputs.append(_stop(proc))
    for out in outputs:
        assert "Traceback" not in out, out

    from lunaroute.sessions.postgres import PostgresWriter

    columns = ("request_count", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
               "cache_creation_1h_tokens", "thinking_tokens", "tool_call_count", "success_count", "priced_count")
    session = _rows(postgres_dsn, f"SELECT {', '.join(columns)}, estimated_cost_usd, success, cost_complete "
                                  "FROM sessions WHERE session_id = %s", session_id)[0]
    sums = _rows(
        postgres_dsn,
        "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_creation_tokens), "
        "SUM(cache_creation_1h_tokens), SUM(thinking_tokens), SUM(tool_call_count), "
        "COUNT(CASE WHEN success = 1 THEN 1 END), COUNT(estimated_cost_usd), SUM(estimated_cost_usd) "
        "FROM session_stats WHERE session_id = %s",
        session_id,
    )[0]
    figures = dict(zip(columns, session, strict=False))
    assert session[:len(columns)] == sums[:len(columns)]
    assert figures["request_count"] == figures["success_count"] == figures["priced_count"] == len(calls)
    assert figures["tool_call_count"] == 2
    assert session[-2:] == (1, 1)
    assert session[len(columns)] == pytest.approx(sums[-1], rel=1e-9)

    # The row written a difference at a time by three gateways is the reference one.
    # (The cost up to the order its five terms were added in.)
    before = _session_row(postgres_dsn, session_id)
    writer = PostgresWriter(postgres_dsn)
    try:
        await in_thread(writer.recompute_sessions)
    finally:
        writer.close()
    after = _session_row(postgres_dsn, session_id)
    assert after.pop("estimated_cost_usd") == pytest.approx(before.pop("estimated_cost_usd"), rel=1e-9)
    assert after == before

    # What Claude Code counted and paid for, run by run.
    usage = [r["usage"] for r in runs]
    assert figures["input_tokens"] == sum(u["input_tokens"] for u in usage)
    assert figures["output_tokens"] == sum(u["output_tokens"] for u in usage)
    assert figures["cache_read_tokens"] == sum(u["cache_read_input_tokens"] for u in usage)
    assert figures["cache_creation_tokens"] == sum(u["cache_creation_input_tokens"] for u in usage)
    claude_cost = sum(r["total_cost_usd"] for r in runs)
    assert claude_cost > 0
    assert session[len(columns)] == pytest.approx(claude_cost, rel=1e-6)
    assert api_cost == pytest.approx(claude_cost, rel=1e-6)
