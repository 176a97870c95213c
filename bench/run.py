"""
LunaRoute benchmark: direct-to-provider versus through the gateway, on
127.0.0.1 against a fast fake provider.

    python bench/run.py [--quick] [--requests N] [--out bench/results.json]
                        [--peers litellm,ccr]

Starts, each as its own process:

  - the upstream: C{bench/fast_upstream.py} (default) or LunaRoute's own
    C{FakeProvider} (C{--upstream fake});
  - nginx as a reference reverse proxy, when C{nginx} is on the PATH;
  - C{twisted-floor}: the bare stack LunaRoute is built on
    (C{bench/stack_floor.py}: twisted.web's server forwarding with Agent
    over a persistent pool, nothing else), the floor under its numbers;
  - the gateway (C{twistd -n lunaroute}) in five configurations: C{plain}
    (defaults), C{recording} (JSONL + SQLite into a temporary directory),
    C{no-metrics} (C{metrics.enabled: false}), C{routing} (ten rules) and
    C{translation} (no Anthropic provider: every Messages request translated
    to the upstream's Chat Completions and back, L{translation_config});
  - with C{--peers}, peer gateways (C{bench/peer_targets.py}): the LiteLLM
    proxy (targets C{litellm} and C{litellm-passthrough}) and
    claude-code-router (C{ccr}), each installed in its own directory under
    C{.cache/bench-peers} and configured from C{bench/peers/}; a peer that
    cannot be installed or started is skipped with a note.

checks that every target answers valid Anthropic messages (and whether
they are byte-identical to the upstream's), then measures, for every
target:

  1. memory (gateways): VmRSS after a warm-up, after 10,000 and after 20,000
     requests (a mix of plain and streaming requests over 1,000 sessions);
  2. sequential latency of non-streaming requests over one keep-alive
     connection (p50/p90/p99), targets interleaved in rounds so drift hits
     them alike;
  3. time to first body byte of streams, the same way;
  4. the latency of a large (~100 KB, Claude Code sized) request;
  5. throughput at 16 and 64 connections (wrk when installed, else the
     asyncio generator of C{bench/loadgen.py}), and of streams at 16, with
     the sockets each run left in TIME-WAIT on the upstream's port
     (connection churn) and on the target's;
  6. the recorder's own throughput (C{bench/recorder_throughput.py}).

"Added" numbers are the target's percentile minus the direct percentile.
Prints tables and writes everything to JSON.  Every loop is bounded by a
request count and a time limit; all processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
import peer_targets  # noqa: E402

PY = sys.executable
HOST = "127.0.0.1"

CLIENT_HEADERS = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json"),
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"),
    ("x-api-key", "sk-ant-api03-bench-not-a-real-key-0000000000000000"),
    ("User-Agent", "claude-cli/2.0.14 (external, cli)"),
    ("x-app", "cli"),
    ("anthropic-dangerous-direct-browser-access", "true"),
]


# --------------------------------------------------------------------------
# Request bodies


def _tool(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to run"},
                "timeout": {"type": "number", "description": "Optional timeout in ms"},
            },
            "required": ["command"],
        },
    }


def request_body(stream: bool, session: int = 0, history_kb: int = 0) -> bytes:
    """
    A Claude Code shaped Anthropic request: system prompt, tools, a short
    conversation (about 3 KB), or with C{history_kb} of earlier turns.
    """
    messages: list[dict[str, Any]] = []
    filler = (
        "Here is the file you asked about. It defines the relay, the capture and "
        "the recorder, and each of them is tested on its own. "
    )
    turn = 0
    while sum(len(json.dumps(m)) for m in messages) < history_kb * 1024:
        messages.append(
            {"role": "user", "content": [{"type": "text", "text": f"Step {turn}: " + filler * 8}]}
        )
        messages.append({"role": "assistant", "content": [{"type": "text", "text": filler * 6}]})
        turn += 1
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's the weather in Tokyo and Paris? Use the tool for both."}
            ],
        }
    )
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": stream,
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude. " * 6,
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": messages,
        "tools": [
            _tool("Bash", "Executes a given bash command in a persistent shell session. " * 4),
            _tool("get_weather", "Get the current weather in a given location. " * 4),
        ],
        "metadata": {
            "user_id": f"user_{'ab' * 32}_account_00000000-0000-4000-8000-000000000000"
            f"_session_00000000-0000-4000-8000-{session:012d}"
        },
        "temperature": 1,
    }
    if not stream:
        del body["stream"]
    return json.dumps(body, separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# Processes


# By default the gateway runs this checkout's code (PYTHONPATH=<repo>), not
# whatever copy of lunaroute happens to be installed; --installed switches.
USE_CHECKOUT = True

# The request path of each target: "/v1/messages" unless a peer serves the
# Anthropic Messages API elsewhere (LiteLLM's pass-through route).
ROUTES: dict[str, str] = {}


def route(name: str) -> str:
    return ROUTES.get(name, "/v1/messages")


def child_env() -> dict[str, str]:
    """Environment of the servers: no credentials or LunaRoute settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNAROUTE_", "ANTHROPIC_", "OPENAI_"))}
    if USE_CHECKOUT:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def lunaroute_source(cwd: str) -> str:
    """Where the servers import lunaroute from (as they will see it)."""
    out = subprocess.run(
        [PY, "-c", "import os, lunaroute; print(os.path.dirname(lunaroute.__file__))"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(),
        timeout=60,
    )
    return out.stdout.strip() or out.stderr.strip()[-200:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Procs:
    """The subprocesses this run started; stopped by pid at the end."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.tmp, f"{name}.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or self.tmp, env=env)
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)

    def log_tail(self, name: str, n: int = 20) -> str:
        try:
            with open(os.path.join(self.tmp, f"{name}.log"), "rb") as handle:
                return b"\n".join(handle.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    wait_port(port, proc, timeout)
    client = loadgen.BlockingClient(port, timeout=5)
    try:
        raw = loadgen.build_request(port, "/healthz", b"", method="GET")
        deadline = time.monotonic() + timeout
        while client.request(raw).status != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("gateway never became healthy")
            time.sleep(0.1)
    finally:
        client.close()


def start_upstream(procs: Procs, kind: str) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    if kind == "fast":
        argv = [PY, os.path.join(HERE, "fast_upstream.py"), "--port", str(port)]
    else:
        argv = [PY, "-m", "lunaroute.testing.fake_provider", "--port", str(port)]
    proc = procs.start(f"upstream-{kind}", argv, env=child_env())
    wait_port(port, proc)
    return port, proc


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_max_body_size 100m;
    client_body_buffer_size 1m;
    upstream llm {{
        server 127.0.0.1:{upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://llm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def start_nginx(procs: Procs, upstream: int) -> tuple[int, subprocess.Popen[bytes]] | None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        return None
    prefix = os.path.join(procs.tmp, "nginx")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(prefix, "tmp", sub), exist_ok=True)
        os.chmod(os.path.join(prefix, "tmp", sub), 0o777)
    port = free_port()
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write(NGINX_CONF.format(prefix=prefix, upstream=upstream, port=port))
    proc = procs.start("nginx", [nginx, "-p", prefix, "-e", os.path.join(prefix, "error.log"), "-c", conf])
    wait_port(port, proc)
    return port, proc


def routing_config(upstream: int, rules: int = 10) -> dict[str, Any]:
    """
    Ten routing rules with regexes, the last one matching the benchmark's
    Claude model (primary plus a fallback that is never needed): what issue
    19 asks to cost within 0.05 ms of passthrough.
    """
    base = f"http://{HOST}:{upstream}"
    providers: dict[str, Any] = {
        "anthropic": {"base_url": base},
        "openai": {"base_url": base + "/v1"},
        "anthropic_backup": {"provider_type": "anthropic", "base_url": base},
    }
    rule_list = [
        {"name": f"no-match-{n}", "model_pattern": f"^claude-(opus|haiku)-{n}(\\.[0-9]+)?-.*$",
         "primary": "anthropic", "fallbacks": ["anthropic_backup"]}
        for n in range(rules - 1)
    ]
    rule_list.append({"name": "claude", "model_pattern": "^claude-", "primary": "anthropic",
                      "fallbacks": ["anthropic_backup"]})
    return {"providers": providers, "routing": {"rules": rule_list}}


def translation_config(upstream: int) -> dict[str, Any]:
    """
    Claude Code on an OpenAI-compatible server (issue 16): no Anthropic
    provider, so every Messages request is translated to Chat Completions
    and the upstream's Chat answer back to Anthropic, streams event by event.
    """
    base = f"http://{HOST}:{upstream}"
    return {
        "providers": {
            "anthropic": {"enabled": False},
            "openai": {"base_url": base + "/v1", "api_key": "sk-bench-translation"},
        }
    }


def start_gateway(
    procs: Procs, name: str, upstream: int, extra: dict[str, Any]
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    config: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "providers": {
            "anthropic": {"base_url": f"http://{HOST}:{upstream}"},
            "openai": {"base_url": f"http://{HOST}:{upstream}/v1"},
        },
    }
    config.update(extra)
    path = os.path.join(procs.tmp, f"gateway-{name}.json")
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2)
    twistd = os.path.join(os.path.dirname(PY), "twistd")
    if not os.path.exists(twistd):
        twistd = shutil.which("twistd") or "twistd"
    proc = procs.start(
        f"gateway-{name}", [twistd, "-n", "--pidfile=", "lunaroute", "--config", path], env=child_env()
    )
    try:
        wait_healthy(port, proc)
    except RuntimeError as exc:
        raise RuntimeError(f"gateway {name}: {exc}\n{procs.log_tail(f'gateway-{name}')}") from None
    return port, proc


# --------------------------------------------------------------------------
# /proc


def rss_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU of C{pid} and its children (nginx workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except OSError:
            pass
    return total


def upstream_accepted(port: int, local_ports: list[int]) -> int | None:
    """
    Connections C{bench/fast_upstream.py} accepted so far, this request's
    included (None for another upstream).  The local port of the request's
    connection is appended to C{local_ports}: its TIME-WAIT is not the
    target's.
    """
    try:
        raw = peer_targets.fetch(
            port, "/_bench/connections", b"", [], timeout=10, method="GET", local_ports=local_ports
        )
        head, _, body = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return None
        return int(json.loads(body)["accepted"])
    except (OSError, ValueError, KeyError):
        return None


TCP_TIME_WAIT = "06"


def time_wait_sockets(ports: set[int], exclude: Collection[int] = ()) -> set[tuple[str, str]]:
    """
    The TCP sockets now in TIME-WAIT with either end on one of C{ports}, as
    (local, remote) address pairs from /proc/net/tcp and tcp6 (the same as
    C{ss -tan state time-wait}).  A closed connection stays in TIME-WAIT on
    the side that closed it first for 60 s; the difference of two snapshots
    is what a run left behind.  Sockets with a port in C{exclude} (the
    benchmark's own connections) are left out.
    """
    found: set[tuple[str, str]] = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table_path) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != TCP_TIME_WAIT:
                continue
            local, remote = fields[1], fields[2]
            lport, rport = int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)
            if (lport in ports or rport in ports) and lport not in exclude and rport not in exclude:
                found.add((local, remote))
    return found


def cpu_probe() -> float:
    """
    Milliseconds for a fixed pure-Python loop (best of 3): how fast this
    (virtual) CPU runs Python right now.  Cloud cores vary over time; the
    probe, taken at every phase, tells a slow machine from a slow gateway.
    """
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 2)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info["python"] = platform.python_version()
    try:
        import twisted

        info["twisted"] = twisted.__version__
    except ImportError:
        pass
    for tool, argv in (("nginx", ["nginx", "-v"]), ("wrk", ["wrk", "--version"])):
        if shutil.which(tool):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            info[tool] = (out.stdout + out.stderr).strip().splitlines()[0]
    return info


# --------------------------------------------------------------------------
# Measurements


def settle(pids: list[int], timeout: float = 30.0, interval: float = 0.2, idle_share: float = 0.03) -> float:
    """
    Wait until the processes are (nearly) idle: a recording gateway keeps
    writing after its load ended, and must not steal the CPU of the next
    measurement.  Returns the seconds waited.
    """
    start = time.monotonic()
    before = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() - start < timeout:
        time.sleep(interval)
        after = sum(cpu_seconds(p) for p in pids)
        if (after - before) / interval < idle_share:
            break
        before = after
    return time.monotonic() - start


def timed_rounds(
    targets: dict[str, int],
    make_raw: Any,
    warmup: int,
    n: int,
    rounds: int,
    time_limit: float,
    quiet_pids: list[int] | None = None,
) -> dict[str, list[loadgen.Timed]]:
    """
    Sequential requests, one keep-alive connection per target: C{warmup}
    untimed ones each, then C{n} each in C{rounds} interleaved blocks (the
    target order rotates every round).  Stops early past C{time_limit}.
    Before each block, waits for C{quiet_pids} to be idle.
    """
    clients = {name: loadgen.BlockingClient(port) for name, port in targets.items()}
    raws = {name: make_raw(port, route(name)) for name, port in targets.items()}
    results: dict[str, list[loadgen.Timed]] = {name: [] for name in targets}
    deadline = time.monotonic() + time_limit
    try:
        for name, client in clients.items():
            for _ in range(warmup):
                client.request(raws[name])
        names = list(targets)
        per_round = max(1, n // rounds)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if quiet_pids:
                    settle(quiet_pids)
                client, raw, out = clients[name], raws[name], results[name]
                for _ in range(per_round):
                    timed = client.request(raw)
                    if timed.status != 200:
                        raise RuntimeError(f"{name}: status {timed.status}")
                    out.append(timed)
            if time.monotonic() > deadline:
                print(f"  (time limit reached after {r + 1} of {rounds} rounds)")
                break
    finally:
        for name, client in clients.items():
            if client.reconnects:
                print(
                    f"  ({name}: {client.reconnects} idle connections closed by the server, reopened untimed)"
                )
            client.close()
    return results


WRK_SCRIPT = """
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
"""


def _wrk_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    tmp: str, port: int, body: bytes, conns: int, duration: float, tag: str, path: str = "/v1/messages"
) -> dict[str, Any]:
    body_path = os.path.join(tmp, f"wrk-{tag}.json")
    with open(body_path, "wb") as handle:
        handle.write(body)
    script = os.path.join(tmp, f"wrk-{tag}.lua")
    headers = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in CLIENT_HEADERS)
    with open(script, "w") as handle:
        handle.write(WRK_SCRIPT.format(body=body_path, headers=headers))
    argv = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, int(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        script,
        f"http://{HOST}:{port}{path}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    text = out.stdout
    result: dict[str, Any] = {"client": "wrk -t1", "raw": text}
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    result["rps"] = float(match.group(1)) if match else None
    match = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    result["requests"] = int(match.group(1)) if match else None
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    result["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: (.*)", text)
    result["socket_errors"] = match.group(1).strip() if match else None
    for q in ("50", "90", "99"):
        match = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", text, re.M)
        result[f"p{q}_ms"] = _wrk_ms(match.group(1)) if match else None
    return result


def run_pyload(
    port: int, body: bytes, conns: int, duration: float, path: str = "/v1/messages"
) -> dict[str, Any]:
    raw = loadgen.build_request(port, path, body, CLIENT_HEADERS)
    res = loadgen.run_load(port, [raw], conns, duration=duration, keep_latencies=True)
    summary = loadgen.summarize_ms(res.latencies)
    return {
        "client": "bench/loadgen.py (asyncio)",
        "rps": res.rps,
        "requests": res.requests,
        "non_2xx": res.non_2xx,
        "socket_errors": res.errors,
        "p50_ms": summary.get("p50"),
        "p90_ms": summary.get("p90"),
        "p99_ms": summary.get("p99"),
    }


def throughput(
    tmp: str,
    port: int,
    pid_of: list[int],
    body: bytes,
    conns: int,
    duration: float,
    tag: str,
    use_wrk: bool,
    quiet_pids: list[int] | None = None,
    path: str = "/v1/messages",
    upstream_port: int | None = None,
) -> dict[str, Any]:
    """
    One load run against C{port}: requests/s, latency percentiles, the
    server's CPU per request and, with C{upstream_port}, the sockets the run
    left in TIME-WAIT (L{time_wait_sockets}): C{time_wait_upstream}, on the
    upstream's port (connections to the provider closed during the run, by
    either side; for C{direct} these are the load client's own connections),
    and C{time_wait_client}, on the target's port (client connections);
    and C{upstream_connections_opened}, the connections the upstream
    accepted during the run (C{bench/fast_upstream.py} only).
    """
    if quiet_pids:
        settle(quiet_pids)
    tw_ports: dict[str, int] = {}
    if upstream_port is not None:
        tw_ports["upstream"] = upstream_port
        if port != upstream_port:
            tw_ports["client"] = port
    own_ports: list[int] = []
    accepted_before = upstream_accepted(upstream_port, own_ports) if upstream_port is not None else None
    tw_before = {key: time_wait_sockets({p}) for key, p in tw_ports.items()}
    cpu0 = sum(cpu_seconds(pid) for pid in pid_of)
    t0 = time.perf_counter()
    if use_wrk:
        result = run_wrk(tmp, port, body, conns, duration, tag, path)
    else:
        result = run_pyload(port, body, conns, duration, path)
    wall = time.perf_counter() - t0
    cpu = sum(cpu_seconds(pid) for pid in pid_of) - cpu0
    # Closes the end of the load set off (a proxy dropping the upstream
    # connections of requests wrk left in flight) take a moment to reach
    # TIME-WAIT: count them in this run, not the next.
    time.sleep(0.5)
    if accepted_before is not None and upstream_port is not None:
        accepted_after = upstream_accepted(upstream_port, own_ports)
        if accepted_after is not None:
            # The second count's own request is one more accepted connection.
            result["upstream_connections_opened"] = accepted_after - accepted_before - 1
    for key, before in tw_before.items():
        result[f"time_wait_{key}"] = len(time_wait_sockets({tw_ports[key]}, own_ports) - before)
    if result.get("requests"):
        result["server_cpu_us_per_request"] = cpu / result["requests"] * 1e6
        result["server_cpu_share"] = cpu / wall
    return result


def combine_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several throughput runs, keeping each run's numbers."""
    out: dict[str, Any] = {"client": runs[0]["client"], "runs": runs}
    for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "server_cpu_us_per_request", "server_cpu_share"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
    out["requests"] = sum(r.get("requests") or 0 for r in runs)
    out["non_2xx"] = sum(r.get("non_2xx") or 0 for r in runs)
    errors = [r.get("socket_errors") for r in runs if r.get("socket_errors")]
    out["socket_errors"] = errors or None
    out["rps_runs"] = [round(r["rps"] or 0) for r in runs]
    for key in ("time_wait_upstream", "time_wait_client", "upstream_connections_opened"):
        counts = [r[key] for r in runs if r.get(key) is not None]
        if counts:
            out[key] = round(sum(counts) / len(counts))
            out[f"{key}_runs"] = counts
    return out


def soak(port: int, pid: int, checkpoints: list[int], time_limit: float) -> list[dict[str, Any]]:
    """
    Mixed load over 16 connections: 1,000 sessions, every fourth request
    streaming.  VmRSS is read at each cumulative request count in
    C{checkpoints} (the first one is the warm-up).
    """
    requests = [
        loadgen.build_request(port, "/v1/messages", request_body(i % 4 == 3, session=i), CLIENT_HEADERS)
        for i in range(1000)
    ]
    out = []
    done = 0
    deadline = time.monotonic() + time_limit
    for target in checkpoints:
        remaining = max(0.0, deadline - time.monotonic())
        res = loadgen.run_load(port, requests, 16, count=target - done, duration=remaining)
        done += res.requests
        time.sleep(0.5)  # let the recorder flush its last batch
        mem = rss_kb(pid)
        out.append(
            {
                "requests": done,
                "rss_kb": mem["VmRSS"],
                "hwm_kb": mem["VmHWM"],
                "errors": res.errors,
                "non_2xx": res.non_2xx,
                "rps": round(res.rps, 1),
            }
        )
        print(f"    {done:>6} requests: VmRSS {mem['VmRSS'] / 1024:.1f} MiB ({res.rps:.0f} req/s)")
        if done < target:
            print("    (time limit reached)")
            break
    return out


def recording_check(sessions_dir: str) -> dict[str, Any]:
    """How much the recording gateway actually wrote."""
    lines = files = 0
    db_rows = None
    for root, _dirs, names in os.walk(sessions_dir):
        for name in names:
            if name.endswith(".jsonl"):
                files += 1
                with open(os.path.join(root, name), "rb") as handle:
                    lines += sum(1 for _ in handle)
    db = os.path.join(sessions_dir, "sessions.db")
    if os.path.exists(db):
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                db_rows = conn.execute("SELECT COUNT(*) FROM session_stats").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            db_rows = f"unreadable: {exc}"
    return {"jsonl_files": files, "jsonl_events": lines, "sqlite_exchanges": db_rows}


def metrics_served(port: int) -> bool:
    client = loadgen.BlockingClient(port, timeout=5)
    try:
        return client.request(loadgen.build_request(port, "/metrics", b"", method="GET")).status == 200
    except (OSError, loadgen.ProtocolError):
        return False
    finally:
        client.close()


# --------------------------------------------------------------------------
# Report


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    for row in cells:
        lines.append(" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    out = []
    targets = list(results["latency"])
    lat, ttfb = results["latency"], results["ttfb"]
    rows = []
    for name in targets:
        lt, t = lat[name], ttfb.get(name, {})
        rows.append(
            [
                name,
                lt["p50"],
                lt["p90"],
                lt["p99"],
                lt.get("added_p50"),
                lt.get("added_p99"),
                t.get("ttfb", {}).get("p50"),
                t.get("ttfb", {}).get("p99"),
                t.get("added_ttfb_p50"),
                t.get("added_ttfb_p99"),
                t.get("added_total_p50"),
            ]
        )
    out.append("Sequential latency over one keep-alive connection (ms)")
    out.append(
        table(
            [
                "target",
                "p50",
                "p90",
                "p99",
                "+p50",
                "+p99",
                "TTFB p50",
                "TTFB p99",
                "+TTFB p50",
                "+TTFB p99",
                "+stream end p50",
            ],
            rows,
        )
    )
    if results.get("large_body"):
        out.append("")
        out.append(f"Large request ({results['large_body_kb']} KB body), non-streaming (ms)")
        out.append(
            table(
                ["target", "p50", "p99", "+p50", "+p99"],
                [
                    [n, r["p50"], r["p99"], r.get("added_p50"), r.get("added_p99")]
                    for n, r in results["large_body"].items()
                ],
            )
        )
    thr = results.get("throughput", {})
    if thr:
        out.append("")
        out.append(
            f"Throughput ({next(iter(thr.values()))['c16']['client']}; mean of 2 runs of "
            f"{results['params']['wrk_seconds'] / 2:.0f} s, in opposite target order)"
        )
        rows = []
        for name, r in thr.items():
            c16, c64, st = r["c16"], r["c64"], r["stream_c16"]
            rows.append(
                [
                    name,
                    f"{c16['rps']:.0f} ({'/'.join(map(str, c16.get('rps_runs', [])))})",
                    fmt(c16.get("p99_ms"), 2),
                    f"{c64['rps']:.0f} ({'/'.join(map(str, c64.get('rps_runs', [])))})",
                    fmt(c64.get("p99_ms"), 2),
                    f"{st['rps']:.0f}",
                    fmt(c16.get("server_cpu_us_per_request"), 0),
                    fmt(c64.get("server_cpu_us_per_request"), 0),
                    fmt(c16.get("time_wait_upstream")),
                    fmt(c64.get("time_wait_upstream")),
                    fmt(c64.get("time_wait_client")),
                    fmt(c64.get("upstream_connections_opened")),
                    str((c16["non_2xx"] or 0) + (c64["non_2xx"] or 0) + (st["non_2xx"] or 0)),
                ]
            )
        out.append(
            table(
                [
                    "target",
                    "rps c16 (runs)",
                    "p99 ms c16",
                    "rps c64 (runs)",
                    "p99 ms c64",
                    "stream rps c16",
                    "server CPU us/req c16",
                    "c64",
                    "TIME-WAIT upstream c16",
                    "c64",
                    "TIME-WAIT client c64",
                    "upstream conns opened c64",
                    "non-2xx",
                ],
                rows,
            )
        )
        out.append(
            "TIME-WAIT: sockets a run left in TIME-WAIT (mean per run), on the upstream's port "
            "(connections to the provider closed during the run; for direct, the load client's own) "
            "and on the target's port (client connections); upstream connections opened: accepted by the "
            "upstream during the run (for direct, the load client's own)"
        )
    mem = results.get("memory", {})
    if mem:
        out.append("")
        out.append("Gateway memory (VmRSS, MiB)")
        rows = []
        for name, m in mem.items():
            points = m["points"]
            row = [name, m["idle_rss_kb"] / 1024]
            row += [p["rss_kb"] / 1024 for p in points]
            row.append((points[-1]["rss_kb"] - points[1]["rss_kb"]) / 1024 if len(points) > 2 else None)
            row.append(m.get("final_rss_kb", 0) / 1024)
            rows.append(row)
        counts = [f"after {p['requests']}" for p in next(iter(mem.values()))["points"]]
        out.append(
            table(
                ["gateway", "idle", *counts, "growth, last step", "end of run"],
                [[r[0], *[fmt(v, 1) for v in r[1:]]] for r in rows],
            )
        )
    rec = results.get("recorder_throughput")
    if rec and "combined" in rec:
        out.append("")
        c = rec["combined"]
        out.append(
            f"Recorder: {c['exchanges_per_s']:.0f} exchanges/s, {c['events_per_s']:.0f} events/s to JSONL+SQLite "
            f"(events + both writers, {rec['events_per_exchange']:.1f} events per exchange)"
        )
        if "service" in rec:
            s = rec["service"]
            out.append(
                f"RecorderService at {s['offered_rate']} exchanges/s offered for {s['seconds']} s: "
                f"{s['written_events']} events written, {s['dropped_events']} dropped, "
                f"max queue {s['max_queue_depth']} events, drain {s['drain_ms']:.0f} ms"
            )
    if results.get("cpu_probe_ms"):
        probes = ", ".join(f"{k} {v:.1f}" for k, v in results["cpu_probe_ms"].items())
        out.append("")
        out.append(f"CPU probe (ms for a fixed Python loop, lower is faster): {probes}")
    peers = results.get("peers")
    if peers:
        out.append("")
        out.append("Peers")
        for name, info in peers.items():
            routes = ", ".join(f"{t} {v['path']}" for t, v in info.get("targets", {}).items())
            extra = f", node {info['node']}" if info.get("node") else ""
            out.append(
                f"  {name}: {info.get('package')} {info.get('version')}{extra}; config {info.get('config')}; "
                f"targets {routes or 'none'}; RSS at the end {info.get('final_rss_kb', 0) / 1024:.1f} MiB"
            )
    answers = results.get("answers")
    if answers:
        out.append("")
        out.append("Answers (checked before timing, against the upstream's own bodies)")
        for name, checked in answers.items():
            if "error" in checked:
                out.append(f"  {name}: INVALID: {checked['error']}")
            else:
                out.append(f"  {name}: JSON {checked['plain']}, stream {checked['stream']}")
    for note in results.get("notes", []):
        out.append(f"note: {note}")
    return "\n".join(out)


def added(target: dict[str, float], direct: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {f"added_{prefix}{q}": target[q] - direct[q] for q in ("p50", "p90", "p99")}


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="LunaRoute benchmark (127.0.0.1 only)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about a minute)")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="timed sequential requests per target (default 3000; --quick 300)",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    parser.add_argument(
        "--upstream",
        choices=("fast", "fake"),
        default="fast",
        help="bench/fast_upstream.py or LunaRoute's FakeProvider",
    )
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the asyncio load generator even if wrk is installed"
    )
    parser.add_argument("--no-recorder", action="store_true", help="skip bench/recorder_throughput.py")
    parser.add_argument("--wrk-seconds", type=float, default=None)
    parser.add_argument(
        "--peers",
        default="",
        help="peer gateways to measure in the same run, comma-separated: litellm, ccr (default none)",
    )
    parser.add_argument(
        "--peers-dir",
        default=peer_targets.DEFAULT_DIR,
        help="where the peers are installed (default .cache/bench-peers)",
    )
    parser.add_argument(
        "--installed",
        action="store_true",
        help="run the installed lunaroute rather than this checkout's code",
    )
    args = parser.parse_args(argv)
    try:
        peer_names = peer_targets.parse_peers(args.peers)
    except ValueError as exc:
        parser.error(str(exc))
    global USE_CHECKOUT
    USE_CHECKOUT = not args.installed

    quick = args.quick
    n = args.requests or (300 if quick else 3000)
    wrk_seconds = args.wrk_seconds or (3.0 if quick else 10.0)
    checkpoints = [200, 1000, 2000] if quick else [1000, 10000, 20000]
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    started = time.time()

    tmp = tempfile.mkdtemp(prefix="lunaroute-bench-")
    procs = Procs(tmp)
    # SIGTERM stops the run through its finally: every process it started
    # is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results: dict[str, Any] = {
        "machine": machine_info(),
        "params": {
            "quick": quick,
            "requests": n,
            "wrk_seconds": wrk_seconds,
            "soak_checkpoints": checkpoints,
            "upstream": args.upstream,
            "peers": peer_names,
            "load_client": "wrk -t1" if use_wrk else "bench/loadgen.py (asyncio)",
            "body_bytes": len(request_body(False)),
            "stream_body_bytes": len(request_body(True)),
        },
        "notes": [],
        "cpu_probe_ms": {"start": cpu_probe()},
    }
    results["lunaroute_source"] = lunaroute_source(tmp)
    print(f"machine: {results['machine']}")
    print(f"lunaroute from: {results['lunaroute_source']}")
    try:
        # -- upstream baseline check ----------------------------------------
        if not quick:
            print("upstream check: FakeProvider vs bench/fast_upstream.py, direct")
            check = {}
            for kind in ("fake", "fast"):
                port, proc = start_upstream(procs, kind)
                seq = timed_rounds(
                    {kind: port},
                    lambda p, path: loadgen.build_request(p, path, request_body(False), CLIENT_HEADERS),
                    200,
                    1000,
                    1,
                    60,
                )
                thr = throughput(tmp, port, [proc.pid], request_body(False), 16, 3, f"check-{kind}", use_wrk)
                check[kind] = {
                    "p50_ms": loadgen.summarize_ms([t.total for t in seq[kind]])["p50"],
                    "rps_c16": thr["rps"],
                    "cpu_us_per_request": thr.get("server_cpu_us_per_request"),
                }
                procs.stop(proc)
                print(
                    f"  {kind}: p50 {check[kind]['p50_ms']:.3f} ms, {thr['rps']:.0f} req/s at 16 connections, {check[kind]['cpu_us_per_request'] or 0:.0f} us CPU/request"
                )
            results["upstream_check"] = check

        upstream, upstream_proc = start_upstream(procs, args.upstream)
        targets: dict[str, int] = {"direct": upstream}
        pids: dict[str, int] = {"direct": upstream_proc.pid}
        if not args.no_nginx:
            started_nginx = start_nginx(procs, upstream)
            if started_nginx is None:
                results["notes"].append("nginx not installed: no reference proxy")
            else:
                targets["nginx"], pids["nginx"] = started_nginx[0], started_nginx[1].pid
        floor_port = free_port()
        floor = procs.start(
            "twisted-floor",
            [PY, os.path.join(HERE, "stack_floor.py"), "--port", str(floor_port),
             "--upstream", f"http://{HOST}:{upstream}"],
            env=child_env(),
        )
        wait_port(floor_port, floor)
        targets["twisted-floor"], pids["twisted-floor"] = floor_port, floor.pid
        sessions_dir = os.path.join(tmp, "sessions")
        configs = {
            "gateway": {},
            "gateway+recording": {"session_recording": {"enabled": True, "sessions_dir": sessions_dir}},
            "gateway-metrics": {"metrics": {"enabled": False}},
            "gateway+routing": routing_config(upstream),
            "gateway+translation": translation_config(upstream),
        }
        gateways = []
        for name, extra in configs.items():
            port, proc = start_gateway(procs, name.replace("+", "-plus-"), upstream, extra)
            targets[name], pids[name] = port, proc.pid
            gateways.append(name)
        peer_started: dict[str, peer_targets.Peer] = {}
        for peer_name in peer_names:
            print(f"peer {peer_name}: starting")
            try:
                peer = peer_targets.start_peer(
                    peer_name, procs, upstream, args.peers_dir, PY, free_port, wait_port
                )
            except (peer_targets.PeerUnavailable, OSError, subprocess.SubprocessError) as exc:
                note = f"peer {peer_name} skipped: {str(exc).splitlines()[0]}"
                print(f"  {note}")
                results["notes"].append(note)
                continue
            peer_started[peer_name] = peer
            for tname, (tport, tpath) in peer.targets.items():
                targets[tname], pids[tname] = tport, peer.proc.pid
                ROUTES[tname] = tpath
        time.sleep(0.5)

        quiet = list(pids.values())
        if "nginx" in pids:
            quiet += _children(pids["nginx"])
        # A peer that is busy while idle (timers, background tasks) would make
        # every settle() wait its full timeout: leave it out of the wait.
        for peer_name, peer in peer_started.items():
            share = peer_targets.idle_cpu_share([peer.proc.pid], cpu_seconds)
            peer.info["idle_cpu_share"] = round(share, 3)
            if share >= 0.03:
                quiet = [p for p in quiet if p != peer.proc.pid]
                results["notes"].append(
                    f"peer {peer_name} uses {share:.0%} of a core while idle: not waited for between blocks"
                )

        # -- answers: every target must answer valid Anthropic messages -----
        print("answers: checking every target against the upstream's own answers")
        reference = peer_targets.reference_bodies(
            upstream, "/v1/messages", request_body(False), request_body(True), CLIENT_HEADERS
        )
        results["answers"] = {}
        for name in list(targets):
            if name == "direct":
                continue
            try:
                checked = peer_targets.check_answer(
                    targets[name],
                    route(name),
                    request_body(False),
                    request_body(True),
                    CLIENT_HEADERS,
                    reference,
                )
            except (ValueError, OSError, loadgen.ProtocolError) as exc:
                checked = {"error": str(exc)[:300]}
                if name in gateways or name in ("nginx", "twisted-floor"):
                    results["notes"].append(f"{name}: invalid answer: {checked['error']}")
                else:
                    results["notes"].append(f"peer target {name} skipped: invalid answer: {checked['error']}")
                    del targets[name]
            results["answers"][name] = checked
            print(f"  {name}: {checked}")
        results["peers"] = {
            peer_name: {
                **peer.info,
                "targets": {
                    t: {"port": p, "path": path} for t, (p, path) in peer.targets.items() if t in targets
                },
            }
            for peer_name, peer in peer_started.items()
        }
        results["targets"] = {
            name: {"port": port, "pid": pids[name], "path": route(name)} for name, port in targets.items()
        }

        results["cpu_probe_ms"]["memory"] = cpu_probe()
        # -- 1. memory ----------------------------------------------------
        results["memory"] = {}
        for name in gateways:
            settle(quiet)
            idle = rss_kb(pids[name])["VmRSS"]
            print(f"memory soak {name}: idle VmRSS {idle / 1024:.1f} MiB")
            points = soak(targets[name], pids[name], checkpoints, 240 if not quick else 60)
            results["memory"][name] = {"idle_rss_kb": idle, "points": points}

        results["cpu_probe_ms"]["latency"] = cpu_probe()
        # -- 2. latency -----------------------------------------------------
        print(f"latency: {n} sequential non-streaming requests per target")
        body = request_body(False)
        seq = timed_rounds(
            targets,
            lambda p, path: loadgen.build_request(p, path, body, CLIENT_HEADERS),
            300 if not quick else 50,
            n,
            10,
            180,
            quiet,
        )
        lat = {name: loadgen.summarize_ms([t.total for t in timed]) for name, timed in seq.items()}
        for name in targets:
            if name != "direct":
                lat[name].update(added(lat[name], lat["direct"]))
        results["latency"] = lat

        results["cpu_probe_ms"]["ttfb"] = cpu_probe()
        # -- 3. TTFB of streams ---------------------------------------------
        n_stream = max(100, n // 2)
        print(f"ttfb: {n_stream} sequential streams per target")
        sbody = request_body(True)
        seq = timed_rounds(
            targets,
            lambda p, path: loadgen.build_request(p, path, sbody, CLIENT_HEADERS),
            100 if not quick else 20,
            n_stream,
            10,
            180,
            quiet,
        )
        ttfb: dict[str, Any] = {}
        for name, timed in seq.items():
            ttfb[name] = {
                "ttfb": loadgen.summarize_ms([t.ttfb for t in timed]),
                "total": loadgen.summarize_ms([t.total for t in timed]),
            }
        for name in targets:
            if name != "direct":
                ttfb[name].update(added(ttfb[name]["ttfb"], ttfb["direct"]["ttfb"], "ttfb_"))
                ttfb[name].update(added(ttfb[name]["total"], ttfb["direct"]["total"], "total_"))
        results["ttfb"] = ttfb

        results["cpu_probe_ms"]["large"] = cpu_probe()
        # -- 4. large request ------------------------------------------------
        large_kb = 100
        big = request_body(False, history_kb=large_kb)
        results["large_body_kb"] = round(len(big) / 1024)
        n_large = max(100, n // 4)
        print(f"large request: {len(big) // 1024} KB body, {n_large} requests per target")
        large_targets = {
            k: v for k, v in targets.items() if k in ("direct", "nginx", "twisted-floor", "gateway") or k not in gateways
        }
        seq = timed_rounds(
            large_targets,
            lambda p, path: loadgen.build_request(p, path, big, CLIENT_HEADERS),
            50,
            n_large,
            5,
            120,
            quiet,
        )
        large = {name: loadgen.summarize_ms([t.total for t in timed]) for name, timed in seq.items()}
        for name in large:
            if name != "direct":
                large[name].update(added(large[name], large["direct"]))
        results["large_body"] = large

        results["cpu_probe_ms"]["throughput"] = cpu_probe()
        # -- 5. throughput ----------------------------------------------------
        # Two passes over all targets (the second in reverse order), each run
        # half of --wrk-seconds; the mean is reported, both runs are kept.
        passes = 2
        run_seconds = wrk_seconds / passes
        loads = (("c16", body, 16), ("c64", body, 64), ("stream_c16", sbody, 16))
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {tag: [] for tag, _, _ in loads} for name in targets
        }
        for p in range(passes):
            order = list(targets) if p % 2 == 0 else list(reversed(targets))
            for name in order:
                print(
                    f"throughput {name} (pass {p + 1}/{passes}): 16 and 64 connections, streams at 16, {run_seconds:.0f} s each"
                )
                for tag, b, conns in loads:
                    r = throughput(
                        tmp,
                        targets[name],
                        [pids[name]],
                        b,
                        conns,
                        run_seconds,
                        f"{name}-{tag}",
                        use_wrk,
                        quiet,
                        route(name),
                        upstream,
                    )
                    r.pop("raw", None)
                    runs[name][tag].append(r)
                    print(
                        f"  {tag}: {r['rps']:.0f} req/s, non-2xx {r['non_2xx']}, errors {r['socket_errors']}, "
                        f"TIME-WAIT upstream {r.get('time_wait_upstream')} client {r.get('time_wait_client')}, "
                        f"upstream connections opened {r.get('upstream_connections_opened')}"
                    )
        results["throughput"] = {
            name: {tag: combine_runs(rs) for tag, rs in by_tag.items()} for name, by_tag in runs.items()
        }
        results["time_wait"] = {
            name: {
                f"{key}_{tag}": thr.get(f"time_wait_{key}")
                for tag, thr in by_tag.items()
                for key in ("upstream", "client")
                if thr.get(f"time_wait_{key}") is not None
            }
            | {
                f"upstream_connections_opened_{tag}": thr["upstream_connections_opened"]
                for tag, thr in by_tag.items()
                if thr.get("upstream_connections_opened") is not None
            }
            for name, by_tag in results["throughput"].items()
        }

        for name in gateways:
            results["memory"][name]["final_rss_kb"] = rss_kb(pids[name])["VmRSS"]
        for peer_name, peer in peer_started.items():
            results["peers"][peer_name]["final_rss_kb"] = sum(
                rss_kb(p)["VmRSS"] for p in [peer.proc.pid, *_children(peer.proc.pid)]
            )

        results["cpu_probe_ms"]["end"] = cpu_probe()

        # -- what the configurations really did --------------------------
        time.sleep(0.5)
        results["recording"] = recording_check(sessions_dir)
        results["metrics_served"] = {name: metrics_served(targets[name]) for name in gateways}
        if not results["recording"]["jsonl_events"]:
            results["notes"].append(
                "gateway+recording wrote no session events: recording is not wired into this build, "
                "so its numbers measure the same code path as 'gateway'"
            )
        if not results["metrics_served"].get("gateway"):
            results["notes"].append(
                "GET /metrics is not served with metrics enabled: metrics are not wired into this build, "
                "so 'gateway-metrics' measures the same code path as 'gateway'"
            )

        # -- 6. recorder throughput ---------------------------------------
        if not args.no_recorder:
            print("recorder throughput")
            argv_rec = [PY, os.path.join(HERE, "recorder_throughput.py"), "--json"]
            if quick:
                argv_rec.append("--quick")
            out = subprocess.run(argv_rec, capture_output=True, text=True, timeout=300, cwd=tmp)
            if out.returncode == 0:
                results["recorder_throughput"] = json.loads(out.stdout)
            else:
                results["notes"].append(
                    f"recorder_throughput.py failed: {out.stderr.strip().splitlines()[-1:]}"
                )

        for name in gateways:
            rc = procs.stop(procs_by_pid(procs, pids[name]))
            results.setdefault("exit_status", {})[name] = rc
        stopped = [
            line
            for line in procs.log_tail("gateway-gateway-plus-recording", 50).splitlines()
            if "session recorder stopped" in line
        ]
        if stopped:
            results["recording"]["recorder_log"] = stopped[-1].split("] ", 1)[-1]
    finally:
        procs.stop_all()

    results["elapsed_s"] = round(time.time() - started, 1)
    print()
    print(report(results))
    print(f"\nelapsed {results['elapsed_s']} s; results in {args.out}")
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def procs_by_pid(procs: Procs, pid: int) -> subprocess.Popen[bytes]:
    for _, proc in procs.procs:
        if proc.pid == pid:
            return proc
    raise KeyError(pid)


if __name__ == "__main__":
    sys.exit(main())
