"""
Peer gateways measured by C{bench/run.py} next to LunaRoute (C{--peers}):

  - C{litellm}: the LiteLLM proxy (PyPI C{litellm[proxy]}), in its own venv
    under C{.cache/bench-peers/litellm-venv}, never in the project's venv.
    One process serves two targets: C{litellm} (its unified Anthropic
    Messages route, C{POST /v1/messages}, model C{anthropic/<model>} with
    C{api_base} at the fake upstream) and C{litellm-passthrough} (its
    Anthropic pass-through route, C{POST /anthropic/v1/messages});
  - C{ccr}: claude-code-router (npm C{@musistudio/claude-code-router}) in its
    own npm prefix under C{.cache/bench-peers/ccr-npm}, with one provider
    whose C{api_base_url} is the fake upstream and the C{Anthropic}
    transformer (requests and answers passed through unchanged).

Their exact configurations are the files in C{bench/peers/}; C{@UPSTREAM@}
and C{@PORT@} are filled in at start.  A peer that cannot be installed or
started is skipped with a note; nothing here stops the run.

Also: L{check_answer}, which checks that a target's answers are valid
Anthropic messages (and whether they are byte-identical to the upstream's)
before it is timed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import loadgen

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIGS = os.path.join(HERE, "peers")
DEFAULT_DIR = os.path.join(REPO, ".cache", "bench-peers")
HOST = "127.0.0.1"

LITELLM_SPEC = "litellm[proxy]"
CCR_PACKAGE = "@musistudio/claude-code-router"
KNOWN = ("litellm", "ccr")


class PeerUnavailable(Exception):
    """A peer could not be installed or started (the message says why)."""


@dataclass
class Peer:
    """A started peer: its process and the targets (name -> port, path) it serves."""

    name: str
    proc: Any
    targets: dict[str, tuple[int, str]]
    info: dict[str, Any] = field(default_factory=dict)


def parse_peers(value: str) -> list[str]:
    """C{--peers litellm,ccr} as a list; raises ValueError on an unknown name."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    return names


def fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def read_env_file(path: str, **values: str) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), placeholders filled."""
    env = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            env[key.strip()] = fill(value.strip(), **values)
    return env


def _run(argv: list[str], timeout: float, log: str) -> None:
    with open(log, "ab") as handle:
        out = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
    if out.returncode != 0:
        raise PeerUnavailable(f"{' '.join(argv[:4])} ... exited with {out.returncode} (log: {log})")


# --------------------------------------------------------------------------
# LiteLLM


def litellm_venv(peers_dir: str) -> str:
    return os.path.join(peers_dir, "litellm-venv")


def install_litellm(peers_dir: str, python: str) -> str:
    """The venv's litellm executable, installing it first when missing."""
    venv = litellm_venv(peers_dir)
    exe = os.path.join(venv, "bin", "litellm")
    if os.path.exists(exe):
        return exe
    os.makedirs(peers_dir, exist_ok=True)
    log = os.path.join(peers_dir, "litellm-install.log")
    print(f"  installing {LITELLM_SPEC} into {venv} (log: {log})")
    try:
        _run([python, "-m", "venv", venv], 300, log)
        _run([os.path.join(venv, "bin", "pip"), "install", "-q", LITELLM_SPEC], 1200, log)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"cannot install {LITELLM_SPEC}: {exc}") from None
    if not os.path.exists(exe):
        raise PeerUnavailable(f"{LITELLM_SPEC} installed no litellm executable in {venv}")
    return exe


def litellm_version(peers_dir: str) -> str:
    py = os.path.join(litellm_venv(peers_dir), "bin", "python")
    out = subprocess.run(
        [py, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip() or "unknown"


def start_litellm(
    procs: Any,
    upstream: int,
    peers_dir: str,
    python: str,
    free_port: Callable[[], int],
    wait_port: Callable[..., None],
) -> Peer:
    exe = install_litellm(peers_dir, python)
    base = f"http://{HOST}:{upstream}"
    home = os.path.join(procs.tmp, "litellm-home")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(CONFIGS, "litellm.yaml")) as handle:
        config = fill(handle.read(), UPSTREAM=base)
    config_path = os.path.join(home, "config.yaml")
    with open(config_path, "w") as handle:
        handle.write(config)
    env = _clean_env()
    env.update(read_env_file(os.path.join(CONFIGS, "litellm.env"), UPSTREAM=base))
    env["HOME"] = home
    port = free_port()
    argv = [exe, "--config", config_path, "--host", HOST, "--port", str(port), "--num_workers", "1"]
    proc = procs.start("peer-litellm", argv, cwd=home, env=env)
    try:
        wait_port(port, proc, timeout=180.0)
    except RuntimeError as exc:
        procs.stop(proc)
        raise PeerUnavailable(f"litellm did not start: {exc}\n{procs.log_tail('peer-litellm')}") from None
    return Peer(
        "litellm",
        proc,
        {"litellm": (port, "/v1/messages"), "litellm-passthrough": (port, "/anthropic/v1/messages")},
        {
            "package": LITELLM_SPEC,
            "version": litellm_version(peers_dir),
            "config": "bench/peers/litellm.yaml",
            "env": "bench/peers/litellm.env",
            "argv": ["litellm", *argv[1:]],
        },
    )


# --------------------------------------------------------------------------
# claude-code-router


def ccr_prefix(peers_dir: str) -> str:
    return os.path.join(peers_dir, "ccr-npm")


def install_ccr(peers_dir: str) -> str:
    """The prefix's ccr executable, installing it first when missing."""
    prefix = ccr_prefix(peers_dir)
    exe = os.path.join(prefix, "bin", "ccr")
    if os.path.exists(exe):
        return exe
    npm = shutil.which("npm")
    if npm is None:
        raise PeerUnavailable("npm is not installed")
    os.makedirs(peers_dir, exist_ok=True)
    log = os.path.join(peers_dir, "ccr-install.log")
    print(f"  installing {CCR_PACKAGE} into {prefix} (log: {log})")
    try:
        _run([npm, "install", "-g", "--prefix", prefix, CCR_PACKAGE], 900, log)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"cannot install {CCR_PACKAGE}: {exc}") from None
    if not os.path.exists(exe):
        raise PeerUnavailable(f"{CCR_PACKAGE} installed no ccr executable in {prefix}")
    return exe


def ccr_version(peers_dir: str) -> str:
    path = os.path.join(ccr_prefix(peers_dir), "lib", "node_modules", *CCR_PACKAGE.split("/"), "package.json")
    try:
        with open(path) as handle:
            return str(json.load(handle).get("version", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "none"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def start_ccr(
    procs: Any,
    upstream: int,
    peers_dir: str,
    free_port: Callable[[], int],
    wait_port: Callable[..., None],
) -> Peer:
    exe = install_ccr(peers_dir)
    base = f"http://{HOST}:{upstream}"
    port = free_port()
    # ccr reads ~/.claude-code-router/config.json and keeps its pid file and
    # logs there: a HOME of its own in the run's temporary directory.
    home = os.path.join(procs.tmp, "ccr-home")
    conf_dir = os.path.join(home, ".claude-code-router")
    os.makedirs(conf_dir, exist_ok=True)
    with open(os.path.join(CONFIGS, "ccr-config.json")) as handle:
        config = fill(handle.read().replace('"@PORT@"', str(port)), UPSTREAM=base)
    with open(os.path.join(conf_dir, "config.json"), "w") as handle:
        handle.write(config)
    env = _clean_env()
    env["HOME"] = home
    env.update({"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    proc = procs.start("peer-ccr", [exe, "start"], cwd=home, env=env)
    try:
        wait_port(port, proc, timeout=60.0)
    except RuntimeError as exc:
        procs.stop(proc)
        raise PeerUnavailable(f"ccr did not start: {exc}\n{procs.log_tail('peer-ccr')}") from None
    return Peer(
        "ccr",
        proc,
        {"ccr": (port, "/v1/messages")},
        {
            "package": CCR_PACKAGE,
            "version": ccr_version(peers_dir),
            "node": node_version(),
            "config": "bench/peers/ccr-config.json",
            "argv": ["ccr", "start"],
        },
    )


def _clean_env() -> dict[str, str]:
    """The caller's environment without provider credentials or LunaRoute settings."""
    drop = ("LUNAROUTE_", "ANTHROPIC_", "OPENAI_", "LITELLM_", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def start_peer(
    name: str,
    procs: Any,
    upstream: int,
    peers_dir: str,
    python: str,
    free_port: Callable[[], int],
    wait_port: Callable[..., None],
) -> Peer:
    if name == "litellm":
        return start_litellm(procs, upstream, peers_dir, python, free_port, wait_port)
    if name == "ccr":
        return start_ccr(procs, upstream, peers_dir, free_port, wait_port)
    raise PeerUnavailable(f"unknown peer {name}")


# --------------------------------------------------------------------------
# Answers


def _split_head(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return status, headers, body


def _dechunk(body: bytes) -> bytes:
    out = []
    pos = 0
    while True:
        nl = body.index(b"\r\n", pos)
        size = int(body[pos:nl].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[nl + 2 : nl + 2 + size])
        pos = nl + 2 + size + 2


def fetch(
    port: int,
    path: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    timeout: float = 30.0,
    method: str = "POST",
    local_ports: list[int] | None = None,
) -> bytes:
    """
    One request on a fresh connection; the whole raw answer (head and body),
    read up to the end its framing gives (C{content-length} or the last
    chunk), not to the connection's close, which some servers delay.  The
    connection's local port is appended to C{local_ports} when given.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        if local_ports is not None:
            local_ports.append(sock.getsockname()[1])
        sock.sendall(loadgen.build_request(port, path, body, headers, method))
        buf = b""
        while True:
            data = sock.recv(65536)
            if not data:
                raise ValueError(f"connection closed after {len(buf)} bytes")
            buf += data
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            _status, fields, rest = _split_head(buf)
            if "chunked" in fields.get("transfer-encoding", "").lower():
                if loadgen._chunked_end(rest, 0)[0] >= 0:
                    return buf
            elif "content-length" in fields:
                if len(rest) >= int(fields["content-length"]):
                    return buf
            else:
                raise ValueError("answer without content-length or chunked encoding")


def sse_events(text: bytes) -> list[tuple[str, Any]]:
    """(event name, parsed data) of each SSE event."""
    events = []
    for block in text.replace(b"\r\n", b"\n").split(b"\n\n"):
        name = ""
        data = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads(b"\n".join(data))))
    return events


def _body(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = _split_head(raw)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    return status, headers, body


def check_answer(
    port: int,
    path: str,
    plain_body: bytes,
    stream_body: bytes,
    headers: Sequence[tuple[str, str]],
    reference: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """
    Send one non-streaming and one streaming request to the target and check
    that it answers valid Anthropic messages: a JSON C{message} with its
    content blocks, and an SSE stream from C{message_start} to
    C{message_stop} whose events carry the same data.  With C{reference}
    (the upstream's own bodies, C{{"plain": ..., "stream": ...}}), also says
    whether the bodies are byte-identical, or equal once parsed.  Raises
    ValueError when an answer is not a valid message.
    """
    out: dict[str, Any] = {}
    status, _headers, body = _body(fetch(port, path, plain_body, headers))
    if status != 200:
        raise ValueError(f"status {status}: {body[:200]!r}")
    message = json.loads(body)
    if message.get("type") != "message" or message.get("role") != "assistant":
        raise ValueError(f"not an Anthropic message: {body[:200]!r}")
    if not isinstance(message.get("content"), list) or not message["content"]:
        raise ValueError("message without content blocks")
    out["plain"] = _compare(body, reference.get("plain") if reference else None, json.loads)

    status, headers_s, body = _body(fetch(port, path, stream_body, headers))
    if status != 200 or "text/event-stream" not in headers_s.get("content-type", ""):
        raise ValueError(f"stream: status {status}, content-type {headers_s.get('content-type')!r}")
    events = sse_events(body)
    names = [name for name, _ in events]
    if not names or names[0] != "message_start" or names[-1] != "message_stop":
        raise ValueError(f"stream: events {names[:3]} ... {names[-2:]}")
    out["stream"] = _compare(body, reference.get("stream") if reference else None, sse_events)
    out["stream_events"] = len(events)
    return out


def _compare(body: bytes, reference: bytes | None, parse: Callable[[bytes], Any]) -> str:
    if reference is None:
        return "valid"
    if body == reference:
        return "byte-identical"
    if parse(body) == parse(reference):
        return "equal once parsed"
    return "valid, different content"


def reference_bodies(
    port: int, path: str, plain_body: bytes, stream_body: bytes, headers: Sequence[tuple[str, str]]
) -> dict[str, bytes]:
    """The upstream's own answers, to compare the targets' with."""
    return {
        "plain": _body(fetch(port, path, plain_body, headers))[2],
        "stream": _body(fetch(port, path, stream_body, headers))[2],
    }


def idle_cpu_share(pids: list[int], cpu_seconds: Callable[[int], float], seconds: float = 1.0) -> float:
    """The share of one core the processes use while nobody sends them anything."""
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(seconds)
    return (sum(cpu_seconds(p) for p in pids) - before) / seconds
