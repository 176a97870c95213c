"""
What OpenTelemetry tracing costs a request (docs/telemetry.md,
docs/performance.md "OpenTelemetry").

Three gateways in front of C{bench/fast_upstream.py}, all on 127.0.0.1:
C{off} (the default), C{on} (spans exported over OTLP/HTTP to a collector
in this process, which only counts what arrives) and C{on, collector down}
(the endpoint refuses connections: export failures must not reach
requests).  Sequential keep-alive requests, interleaved in rounds, a plain
and a streaming body each; then the gateways' CPU per request under a
bounded concurrent load.  Prints a table and writes JSON.

    python bench/telemetry_overhead.py                # ~1 minute on 2 cores
    python bench/telemetry_overhead.py --requests 500 # quicker

Every loop is bounded by a count and a time limit; every process started
is stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
from run import (  # noqa: E402
    CLIENT_HEADERS,
    HOST,
    Procs,
    cpu_seconds,
    free_port,
    request_body,
    rss_kb,
    start_gateway,
    start_upstream,
    timed_rounds,
)


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and counts (the bench measures the gateway, not a backend)."""

    exports = 0
    bytes_received = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        type(self).exports += 1
        type(self).bytes_received += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed sequential requests per target and body")
    parser.add_argument("--load", type=int, default=3000, help="requests of the concurrent CPU run, per target")
    parser.add_argument("--out", default=os.path.join(HERE, "telemetry_results.json"))
    args = parser.parse_args(argv)

    collector = ThreadingHTTPServer((HOST, 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    collector_url = f"http://{HOST}:{collector.server_address[1]}"
    closed_url = f"http://{HOST}:{free_port()}"
    results: dict[str, Any] = {"requests": args.requests}
    with tempfile.TemporaryDirectory(prefix="lunaroute-otel-bench-") as tmp:
        procs = Procs(tmp)
        try:
            upstream, _ = start_upstream(procs, "fast")
            configs = {
                "off": {},
                "on": {"telemetry": {"enabled": True, "endpoint": collector_url}},
                "on, collector down": {"telemetry": {"enabled": True, "endpoint": closed_url}},
            }
            targets: dict[str, int] = {}
            pids: dict[str, int] = {}
            for name, extra in configs.items():
                port, proc = start_gateway(procs, name.replace(", ", "-").replace(" ", "-"), upstream, extra)
                targets[name], pids[name] = port, proc.pid
            for label, stream in (("plain", False), ("stream", True)):
                body = request_body(stream)
                timed = timed_rounds(
                    targets,
                    lambda p, path, body=body: loadgen.build_request(p, path, body, CLIENT_HEADERS),
                    200,
                    args.requests,
                    4,
                    120,
                )
                for name, runs in timed.items():
                    results.setdefault(name, {})[label] = loadgen.summarize_ms([t.total for t in runs])
            # CPU per request under a bounded concurrent load (16 connections).
            for name, port in targets.items():
                raw = loadgen.build_request(port, "/v1/messages", request_body(False), CLIENT_HEADERS)
                before = cpu_seconds(pids[name])
                load = loadgen.run_load(port, [raw], 16, args.load, 120)
                spent = cpu_seconds(pids[name]) - before
                results[name]["cpu_us_per_request"] = spent / max(1, load.requests) * 1e6
                results[name]["rps_c16"] = load.rps
                results[name]["rss_mib"] = rss_kb(pids[name]).get("VmRSS", 0) / 1024
            # Let the last batch leave (the processor exports every 5 s).
            time.sleep(6)
        finally:
            procs.stop_all()
            collector.shutdown()
    results["collector"] = {"exports": _Collector.exports, "bytes": _Collector.bytes_received}
    base = results["off"]
    print(f"{'target':22} {'plain p50':>10} {'+':>7} {'stream p50':>11} {'+':>7} {'p99 plain':>10} {'CPU us/req':>11}")
    for name in configs:
        row = results[name]
        plain, stream = row["plain"], row["stream"]
        print(
            f"{name:22} {plain['p50']:10.3f} {plain['p50'] - base['plain']['p50']:+7.3f} "
            f"{stream['p50']:11.3f} {stream['p50'] - base['stream']['p50']:+7.3f} {plain['p99']:10.3f} "
            f"{row['cpu_us_per_request']:11.0f}"
        )
    print(f"collector received {_Collector.exports} exports, {_Collector.bytes_received} bytes")
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
