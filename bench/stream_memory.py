"""
Memory and open files per open stream (docs/deployment.md "Sizing").

Starts LunaRoute's C{FakeProvider} (its C{slow} model: 0.5 s between stream
events, so streams stay open for seconds) and one gateway, opens N
streaming requests at once over raw sockets on 127.0.0.1, waits until each
has received its first content event, then reads the gateway's VmRSS and
its count of open file descriptors, and closes everything.  Repeats for a
few N to give the slope.

    python bench/stream_memory.py                 # N = 50, 200, 400; ~30 s
    python bench/stream_memory.py --streams 100 300

Bounded: each step has a time limit; every process started is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
from run import CLIENT_HEADERS, HOST, Procs, rss_kb, start_gateway, start_upstream  # noqa: E402


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_streams(port: int, count: int, time_limit: float = 30.0) -> list[socket.socket]:
    """C{count} streaming requests, returned once each has its first content event."""
    body = json.dumps({
        "model": "claude-sonnet-4-5-slow", "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }).encode()
    raw = loadgen.build_request(port, "/v1/messages", body, CLIENT_HEADERS)
    socks = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.sendall(raw)
        sock.setblocking(False)
        socks.append(sock)
    waiting = {sock: b"" for sock in socks}
    deadline = time.monotonic() + time_limit
    while waiting and time.monotonic() < deadline:
        readable, _, _ = select.select(list(waiting), [], [], 1.0)
        for sock in readable:
            data = sock.recv(65536)
            seen = waiting[sock] + data
            if b"content_block_delta" in seen or not data:
                del waiting[sock]
            else:
                waiting[sock] = seen[-4096:]
    if waiting:
        raise RuntimeError(f"{len(waiting)} of {count} streams never started")
    return socks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 200, 400])
    parser.add_argument("--out", default=os.path.join(HERE, "stream_memory_results.json"))
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lunaroute-stream-mem-") as tmp:
        procs = Procs(tmp)
        try:
            upstream, _ = start_upstream(procs, "fake")
            port, gateway = start_gateway(
                procs, "mem", upstream, {"http_server": {"max_connections_per_client": 0}}
            )
            # Warm up (imports, pools), then the idle baseline.
            for sock in open_streams(port, 10):
                sock.close()
            time.sleep(6)
            idle_rss, idle_fds = rss_kb(gateway.pid)["VmRSS"], open_fds(gateway.pid)
            for count in args.streams:
                socks = open_streams(port, count)
                rss, fds = rss_kb(gateway.pid)["VmRSS"], open_fds(gateway.pid)
                for sock in socks:
                    sock.close()
                results.append({
                    "streams": count,
                    "rss_mib": rss / 1024,
                    "added_kib_per_stream": (rss - idle_rss) / count,
                    "fds": fds,
                    "added_fds_per_stream": (fds - idle_fds) / count,
                })
                time.sleep(6)  # the slow streams end upstream
        finally:
            procs.stop_all()
    print(f"idle: {idle_rss / 1024:.1f} MiB, {idle_fds} open files")
    print(f"{'streams':>8} {'RSS MiB':>8} {'KiB/stream':>11} {'fds':>6} {'fds/stream':>11}")
    for row in results:
        print(f"{row['streams']:8d} {row['rss_mib']:8.1f} {row['added_kib_per_stream']:11.1f} "
              f"{row['fds']:6d} {row['added_fds_per_stream']:11.2f}")
    with open(args.out, "w") as handle:
        json.dump({"idle_rss_mib": idle_rss / 1024, "idle_fds": idle_fds, "runs": results}, handle, indent=2)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
