"""
Where the gateway's time goes on the non-streaming path.

    python bench/profile_gateway.py [--seconds 10] [--stream] [--out profile.txt]

Starts C{bench/fast_upstream.py} and a plain gateway (C{twistd -n
lunaroute}), warms it up, then samples it with py-spy (C{pip install
py-spy}) while this process sends sequential keep-alive requests (bounded by
count and time).  Only the reactor thread's busy samples count (idle waits
in epoll and the idle thread pool are left out).  Prints:

  - self time grouped by area (HTTP server, HTTP client, routing, ...);
  - the functions with the most self time;
  - the functions with the most inclusive time.

Without py-spy it falls back to twistd's own cProfile support
(C{--profile --profiler=cprofile}).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
from run import CLIENT_HEADERS, Procs, child_env, request_body, start_gateway, start_upstream  # noqa: E402

# (area, substrings of a frame's file); the first match wins.
AREAS = [
    ("metrics (lunaroute.metrics, prometheus_client)", ("lunaroute/metrics.py", "prometheus_client/")),
    ("statistics (lunaroute.stats)", ("lunaroute/stats/",)),
    ("lunaroute: capture/parse of the response", ("lunaroute/dialects/",)),
    ("lunaroute: headers", ("lunaroute/proxy/headers.py",)),
    ("lunaroute: session id", ("lunaroute/dialects/session_id.py",)),
    ("lunaroute: other", ("lunaroute/",)),
    ("content-type parsing (email.*)", ("email/",)),
    ("routing (klein/werkzeug)", ("klein/", "werkzeug/")),
    (
        "HTTP client (twisted.web client)",
        ("twisted/web/_newclient.py", "twisted/web/client.py", "twisted/web/iweb.py"),
    ),
    (
        "HTTP server (twisted.web http/server)",
        (
            "twisted/web/http.py",
            "twisted/web/server.py",
            "twisted/web/resource.py",
            "twisted/protocols/basic.py",
        ),
    ),
    ("headers (twisted.web.http_headers)", ("twisted/web/http_headers.py",)),
    ("Deferreds/coroutines", ("twisted/internet/defer.py",)),
    ("reactor & sockets", ("twisted/internet/", "twisted/python/")),
    ("logging", ("twisted/logger/",)),
    ("json", ("json/",)),
    ("uuid", ("uuid.py",)),
]

# Frames that every request passes through; left out of the inclusive list.
_PLUMBING = (
    "(twisted/internet/",
    "(twisted/python/log.py",
    "(twisted/python/context.py",
    "(twisted/protocols/basic.py",
    "(twistd",
    "(twisted/scripts/",
    "(twisted/application/",
)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")


def area_of(frame: str) -> str:
    match = _FRAME.match(frame)
    path = match.group("file") if match else frame
    for area, needles in AREAS:
        if any(n in path for n in needles):
            return area
    return "other (stdlib, interpreter)"


def analyse_pyspy(raw_path: str, top: int) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    busy = 0
    with open(raw_path) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or "mainLoop" not in stack:
                continue  # other threads: the idle thread pool
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            leaf = frames[-1]
            if leaf.startswith(("EPollReactor.doPoll", "epoll")) or leaf.startswith("ReactorBase.mainLoop"):
                continue  # waiting for I/O
            n = int(count)
            busy += n
            self_time[leaf] += n
            areas[area_of(leaf)] += n
            for frame in set(frames):
                inclusive[frame] += n
    if not busy:
        return "no busy samples"
    out = [f"{busy} busy samples of the reactor thread", "", "Self time by area:"]
    for area, n in areas.most_common():
        out.append(f"  {100 * n / busy:5.1f}%  {area}")
    out += ["", f"Top {top} functions by self time:"]
    for frame, n in self_time.most_common(top):
        out.append(f"  {100 * n / busy:5.1f}%  {frame}")
    out += ["", f"Top {top} functions by inclusive time (reactor, socket and Deferred plumbing left out):"]
    shown = 0
    for frame, n in inclusive.most_common():
        if any(p in frame for p in _PLUMBING):
            continue
        out.append(f"  {100 * n / busy:5.1f}%  {frame}")
        shown += 1
        if shown >= top:
            break
    return "\n".join(out)


def drive(port: int, raw: bytes, seconds: float, limit: int = 200_000) -> int:
    client = loadgen.BlockingClient(port)
    deadline = time.monotonic() + seconds
    n = 0
    try:
        while n < limit and time.monotonic() < deadline:
            client.request(raw)
            n += 1
    finally:
        client.close()
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stream", action="store_true", help="profile streaming requests instead")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None, help="also write the report here")
    parser.add_argument("--raw", default=None, help="keep py-spy's raw (collapsed) stacks here")
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="lunaroute-profile-")
    procs = Procs(tmp)
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    try:
        upstream, _ = start_upstream(procs, "fast")
        body = request_body(args.stream)
        if os.path.exists(pyspy):
            port, proc = start_gateway(procs, "profiled", upstream, {})
            raw = loadgen.build_request(port, "/v1/messages", body, CLIENT_HEADERS)
            drive(port, raw, 3.0, 2000)  # warm-up
            out_path = os.path.join(tmp, "pyspy.txt")
            spy = subprocess.Popen(
                [
                    pyspy,
                    "record",
                    "-p",
                    str(proc.pid),
                    "-d",
                    str(int(args.seconds)),
                    "-r",
                    "1000",
                    "-f",
                    "raw",
                    "--function",
                    "-o",
                    out_path,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
            n = drive(port, raw, args.seconds)
            spy.wait(args.seconds + 60)
            report = f"py-spy, {n} sequential {'streaming' if args.stream else 'non-streaming'} requests\n"
            report += analyse_pyspy(out_path, args.top)
            if args.raw:
                shutil.copyfile(out_path, args.raw)
        else:
            import pstats

            stats_path = os.path.join(tmp, "cprofile.out")
            twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
            from run import free_port, wait_healthy

            port = free_port()
            config = os.path.join(tmp, "gw.json")
            with open(config, "w") as handle:
                json.dump(
                    {
                        "host": "127.0.0.1",
                        "port": port,
                        "providers": {"anthropic": {"base_url": f"http://127.0.0.1:{upstream}"}},
                    },
                    handle,
                )
            proc = procs.start(
                "gateway-cprofile",
                [
                    twistd,
                    "-n",
                    "--pidfile=",
                    "--profile",
                    stats_path,
                    "--profiler",
                    "cprofile",
                    "--savestats",
                    "lunaroute",
                    "--config",
                    config,
                ],
                env=child_env(),
            )
            wait_healthy(port, proc)
            raw = loadgen.build_request(port, "/v1/messages", body, CLIENT_HEADERS)
            n = drive(port, raw, args.seconds)
            procs.stop(proc)
            stats = pstats.Stats(stats_path)
            import io

            buf = io.StringIO()
            stats.stream = buf
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
            report = f"cProfile (py-spy not installed), {n} requests\n" + buf.getvalue()
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(report)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
