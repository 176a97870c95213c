"""
Many gateways, one PostgreSQL store, end to end: three C{twistd -n
lunaroute} processes record one session's turns (sent round-robin and at
the same time with the official anthropic SDK, against the fake provider)
into one database; the session's aggregates equal the sum of its turns and
what the SDK was told.  And a gateway whose database goes away keeps
serving, says so in C{/readyz}, and catches up when it returns.
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
        if check():
            return
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
