"""
CPU time per request of the gateway's hot path, measured so that other load on
the machine does not move it much.

    python bench/hot_path_cpu.py [--requests 2000] [--rounds 3] [--profile]

The gateway runs in this script's own child process: the real
L{lunaroute.service.GatewayService} (the same wiring as C{twistd lunaroute}:
statistics, metrics, the access guard, the session API in front of the proxy
routes, the request log off) listening on 127.0.0.1, in front of
C{bench/fast_upstream.py}.  A separate client process sends Claude Code shaped
Anthropic requests over one keep-alive connection (C{bench/loadgen.py}),
non-streaming and streaming.

The number reported is the gateway process's own CPU time (user + system of
all its threads, C{resource.getrusage(RUSAGE_SELF)}) over N requests divided
by N.  The client and the upstream are other processes, so their CPU is not
counted, and CPU time (unlike wall time) barely moves when other processes
compete for the cores.  With recording on, the measurement ends only once the
recorder has written everything (its writer thread's CPU counts), and the
reactor thread's own share (C{time.thread_time}) is shown apart.

Configurations, run in alternation, C{--rounds} times each (the median is
reported):

  - C{default}: statistics and metrics on, recording off;
  - C{recording}: the same with session recording (JSONL and SQLite) into a
    temporary directory;
  - C{floor} (on request): not the gateway but the bare stack it is built on,
    C{bench/stack_floor.py} (twisted.web's server forwarding with Agent over a
    persistent pool, nothing else): the floor under the gateway's numbers.

C{--profile} runs cProfile in the gateway during the timed requests of one
extra round and prints the functions with the most own time, with their
calls per request (deterministic counts; the times are cProfile's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
from run import CLIENT_HEADERS, Procs, child_env, request_body, start_upstream  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "recording": {"session_recording": {"enabled": True}},
    # Only for experiments: the same with fewer, larger batches.
    "recording-1s": {"session_recording": {"enabled": True, "batch_interval_ms": 1000}},
    # Only for experiments: what metrics, statistics and both cost.
    "no-metrics": {"metrics": {"enabled": False}},
    "no-stats": {"statistics": {"session_stats_max_sessions": 0}},
    "lean": {"metrics": {"enabled": False}, "statistics": {"session_stats_max_sessions": 0}},
    # The bare stack: twisted.web's server and Agent forwarding, nothing else
    # (bench/stack_floor.py); the floor under the gateway's numbers.
    "floor": {"floor": True},
}


# --------------------------------------------------------------------------
# The client (its own process): warm up, wait for "go", send, say "done".


# Conversation history added to every request body (--history-kb), passed to
# the client process through the environment.
HISTORY_KB = int(os.environ.get("BENCH_HISTORY_KB", "0"))


def client_main(port: int, stream: bool, warmup: int, requests: int, sessions: int) -> None:
    raws = [
        loadgen.build_request(
            port, "/v1/messages", request_body(stream, session=i, history_kb=HISTORY_KB), CLIENT_HEADERS
        )
        for i in range(sessions)
    ]
    client = loadgen.BlockingClient(port)
    for i in range(warmup):
        client.request(raws[i % sessions])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    for i in range(requests):
        client.request(raws[i % sessions])
    client.close()
    sys.stdout.write("done\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------
# The gateway (its own process): serve, measure its own CPU time.


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sys() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _time_steps(service: Any, steps: dict[str, float]) -> None:
    """
    Wrap the gateway's own steps (parse, start, upstream headers, collect,
    enrich, each sink) to add up their reactor-thread CPU time in C{steps}.
    Bench only: it replaces attributes of the running gateway.
    """
    from lunaroute.proxy import app as app_module

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                steps[name] = steps.get(name, 0.0) + time.thread_time() - start

        return wrapper

    gateway = service.gateway
    gateway._sinks = tuple(timed(f"sink {getattr(f, '__qualname__', f)}", f) for f in gateway._sinks)
    gateway._enricher = timed("enrich", gateway._enricher)
    gateway._start_observers = tuple(
        timed(f"start observer {getattr(f, '__qualname__', f)}", f) for f in gateway._start_observers
    )
    for name in ("_start_exchange", "upstream_headers", "_collect"):
        setattr(gateway, name, timed(name.lstrip("_"), getattr(gateway, name)))
    app_module.parse_request = timed("parse_request", app_module.parse_request)  # type: ignore[attr-defined]
    from lunaroute.dialects.capture import ResponseCapture

    ResponseCapture.feed = timed("tap (capture.feed)", ResponseCapture.feed)  # type: ignore[method-assign]
    # Coarser spans, which include the steps above: the request's
    # synchronous front (guard, routes, parse, start, headers, and handing
    # the request to Agent, which writes it to a pooled connection), the
    # provider's send alone, and the relay's end (collect, enrich, sinks).
    from lunaroute.proxy.relay import RelayProtocol

    site_resource = service.site.resource
    site_resource.render = timed("[span] front: site resource render", site_resource.render)
    for provider in gateway.providers.values():
        provider.request = timed("[span] provider.request (Agent send)", provider.request)
    RelayProtocol.connectionLost = timed(  # type: ignore[method-assign]
        "[span] relay end (connectionLost)", RelayProtocol.connectionLost
    )
    RelayProtocol.dataReceived = timed(  # type: ignore[method-assign]
        "[span] relay dataReceived", RelayProtocol.dataReceived
    )


def gateway_main(
    config_path: str, phases: list[tuple[str, bool, int, int]], profile: bool, sessions: int, steps_on: bool = False
) -> None:
    from twisted.internet import defer, reactor, task
    from twisted.internet.protocol import ProcessProtocol

    from lunaroute.config import load_settings
    from lunaroute.service import make_gateway_service

    with open(config_path) as handle:
        floor = json.load(handle).get("floor")
    if floor:
        # The bare stack (bench/stack_floor.py), not the gateway.
        from stack_floor import FloorService

        service: Any = FloorService(reactor, floor)
    else:
        service = make_gateway_service(load_settings(config_path, env={}), reactor)
    results: dict[str, Any] = {}
    steps: dict[str, float] = {}
    if steps_on and not floor:
        _time_steps(service, steps)
    # Time in the cyclic garbage collector (all threads), by generation.
    import gc

    gc_time = [0.0, 0.0, 0.0]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.thread_time()
        else:
            gc_time[info["generation"]] += time.thread_time() - gc_started[0]

    gc.callbacks.append(on_gc)
    writer_profile: list[Any] = []
    writer_cpu = [0.0]
    if service.recorder is not None:
        # The writer thread's own CPU time, batch by batch.
        recorder = service.recorder
        timed_batch = recorder._write_batch

        def timed_write_batch(batch: Any) -> Any:
            start = time.thread_time()
            try:
                return timed_batch(batch)
            finally:
                writer_cpu[0] += time.thread_time() - start

        recorder._write_batch = timed_write_batch  # type: ignore[method-assign]
    if profile and service.recorder is not None:
        # The recorder's writer thread gets its own profiler (cProfile sees
        # one thread): wrap the batch function it runs there.
        import cProfile

        recorder = service.recorder
        write_batch = recorder._write_batch
        writer_profiler = cProfile.Profile()
        writer_profile.append(writer_profiler)

        def profiled_write_batch(batch: Any) -> Any:
            return writer_profile[0].runcall(write_batch, batch)

        recorder._write_batch = profiled_write_batch  # type: ignore[method-assign]

    class Client(ProcessProtocol):
        def __init__(self) -> None:
            self.done: defer.Deferred[None] = defer.Deferred()
            self.buffer = b""
            self.start = self.start_thread = self.start_sys = self.start_writer = 0.0
            self.start_gc = [0.0, 0.0, 0.0]
            self.profiler: Any = None

        def outReceived(self, data: bytes) -> None:
            self.buffer += data
            while b"\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\n")
                if line == b"ready":
                    if profile:
                        import cProfile

                        self.profiler = cProfile.Profile()
                        self.profiler.enable()
                    self.start, self.start_thread, self.start_sys = _cpu(), time.thread_time(), _sys()
                    self.start_writer = writer_cpu[0]
                    self.start_gc = list(gc_time)
                    steps.clear()
                    self.transport.write(b"go\n")
                elif line == b"done":
                    self.done.callback(None)

        def errReceived(self, data: bytes) -> None:
            sys.stderr.write(data.decode(errors="replace"))

    async def drained() -> None:
        recorder = service.recorder
        if recorder is None:
            return
        await recorder.flush()
        while recorder.queue_depth:
            await task.deferLater(reactor, 0.01)
            await recorder.flush()

    async def run() -> None:
        port = (await service.listening_port()).getHost().port
        for name, stream, warmup, requests in phases:
            client = Client()
            argv = [sys.executable, __file__, "--client", str(port), str(int(stream)), str(warmup),
                    str(requests), str(sessions)]
            reactor.spawnProcess(client, sys.executable, argv, env=child_env())
            await client.done
            thread = time.thread_time() - client.start_thread
            await drained()
            total = _cpu() - client.start
            system = _sys() - client.start_sys
            writer = writer_cpu[0] - client.start_writer
            collected = [1e6 * (a - b) / requests for a, b in zip(gc_time, client.start_gc, strict=True)]
            if client.profiler is not None:
                client.profiler.disable()
                results[name + ":profile"] = _profile_lines(client.profiler, requests)
                if writer_profile:
                    results[name + ":profile"] += ["", "recorder writer thread:"]
                    results[name + ":profile"] += _profile_lines(writer_profile[0], requests)
                    import cProfile

                    writer_profile[0] = cProfile.Profile()
            results[name] = {
                "requests": requests,
                "cpu_us": 1e6 * total / requests,
                "reactor_thread_us": 1e6 * thread / requests,
                "system_us": 1e6 * system / requests,
                "writer_thread_us": 1e6 * writer / requests,
                "gc_us": collected,
                "steps_us": {k: round(1e6 * v / requests, 1) for k, v in steps.items()},
            }
        if service.recorder is not None:
            results["recorded_dropped"] = service.recorder.dropped_events

    def go() -> None:
        service.startService()
        # As twistd's makeService arranges (lunaroute.tap), when present.
        try:
            from lunaroute.tap import freeze_startup_heap
        except ImportError:
            pass
        else:
            freeze_startup_heap()
        d = defer.ensureDeferred(run())

        def stop(result: Any) -> Any:
            if isinstance(result, Exception) or hasattr(result, "value"):
                results["error"] = str(getattr(result, "value", result))
            return defer.maybeDeferred(service.stopService).addBoth(lambda _: reactor.stop())

        d.addBoth(stop)

    reactor.callWhenRunning(go)
    reactor.run()
    sys.stdout.write("RESULT " + json.dumps(results) + "\n")


def _profile_lines(profiler: Any, requests: int, top: int = 35) -> list[str]:
    import pstats

    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.replace(REPO + "/", "")
        for marker in ("site-packages/", "lib/python3.11/"):
            if marker in short:
                short = short.split(marker, 1)[1]
        rows.append((tt, ct, nc, f"{short}:{line}({func})"))
    # Time spent waiting in epoll is idle, not work: left out of the total.
    rows = [r for r in rows if "select.epoll" not in r[3]]
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows) or 1.0
    header = f"{'own %':>6} {'own us/req':>10} {'incl us/req':>11} {'calls/req':>9}  function"
    out = ["by own time:", header]
    for tt, ct, nc, name in rows[:top]:
        out.append(
            f"{100 * tt / total:6.1f} {1e6 * tt / requests:10.1f} {1e6 * ct / requests:11.1f} "
            f"{nc / requests:9.2f}  {name}"
        )
    out += ["", "LunaRoute, Klein and Werkzeug functions by inclusive time:", header]
    ours = [r for r in rows if r[3].startswith(("lunaroute/", "klein/", "werkzeug/"))]
    ours.sort(key=lambda r: r[1], reverse=True)
    for tt, ct, nc, name in ours[:top]:
        out.append(
            f"{100 * tt / total:6.1f} {1e6 * tt / requests:10.1f} {1e6 * ct / requests:11.1f} "
            f"{nc / requests:9.2f}  {name}"
        )
    return out


# --------------------------------------------------------------------------
# The driver: upstream, then each configuration in alternation.


def run_config(tmp: str, upstream: int, name: str, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    env = child_env()
    if name.endswith("@base"):
        # The same configuration on another checkout's code (an A/B run).
        name = name[: -len("@base")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.baseline, env.get("PYTHONPATH")) if p)
    sessions_dir = tempfile.mkdtemp(prefix="sessions-", dir=tmp)
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "providers": {"anthropic": {"base_url": f"http://127.0.0.1:{upstream}"}},
        "ui": {"enabled": False},
    }
    extra = json.loads(json.dumps(CONFIGS[name]))
    if extra.get("floor"):
        extra["floor"] = f"http://127.0.0.1:{upstream}"
    if "session_recording" in extra:
        extra["session_recording"]["sessions_dir"] = sessions_dir
    config.update(extra)
    path = os.path.join(tmp, f"{name}.json")
    with open(path, "w") as handle:
        json.dump(config, handle)
    phases = [
        ["json", False, args.warmup, args.requests],
        ["stream", True, args.warmup // 2, args.requests // 2],
    ]
    argv = [sys.executable, __file__, "--gateway", path, json.dumps(phases), str(int(profile)), str(args.sessions),
            str(int(args.steps))]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    shutil.rmtree(sessions_dir, ignore_errors=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise RuntimeError(f"gateway {name} gave no result:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed non-streaming requests (streams: half)")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=4, help="distinct session ids, in rotation")
    parser.add_argument("--configs", default="default,recording")
    parser.add_argument("--profile", action="store_true", help="one more round per configuration under cProfile")
    parser.add_argument("--out", default=None, help="also write the results (JSON) here")
    parser.add_argument(
        "--history-kb", type=int, default=0,
        help="KB of conversation history in every request body (100: a Claude Code sized 102 KB body)",
    )
    parser.add_argument(
        "--steps", action="store_true",
        help="also time LunaRoute's own steps (parse, start, headers, collect, enrich, each sink) per request",
    )
    parser.add_argument(
        "--baseline", default=None,
        help="another checkout (e.g. from git archive): each configuration also runs on its code, as NAME@base",
    )
    args = parser.parse_args(argv)
    os.environ["BENCH_HISTORY_KB"] = str(args.history_kb)
    names = [n for n in args.configs.split(",") if n]
    if args.baseline:
        names = [n for name in names for n in (f"{name}@base", name)]

    tmp = tempfile.mkdtemp(prefix="lunaroute-hotpath-")
    procs = Procs(tmp)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    profiles: dict[str, dict[str, Any]] = {}
    try:
        upstream, _ = start_upstream(procs, "fast")
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                runs[name].append(run_config(tmp, upstream, name, args, profile=False))
                r = runs[name][-1]
                print(
                    f"round {round_ + 1} {name:10s} json {r['json']['cpu_us']:7.1f} us "
                    f"(reactor {r['json']['reactor_thread_us']:6.1f}, writer {r['json']['writer_thread_us']:5.1f}, "
                    f"sys {r['json']['system_us']:5.1f}, gc {sum(r['json']['gc_us']):5.1f})  "
                    f"stream {r['stream']['cpu_us']:7.1f} us "
                    f"(reactor {r['stream']['reactor_thread_us']:6.1f}, sys {r['stream']['system_us']:5.1f})",
                    flush=True,
                )
        if args.profile:
            for name in names:
                profiles[name] = run_config(tmp, upstream, name, args, profile=True)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    summary: dict[str, Any] = {}
    print()
    print(f"CPU per request (median of {args.rounds}; gateway process, all threads; reactor thread alone)")
    for name in names:
        if not runs[name]:
            continue
        row: dict[str, Any] = {}
        for phase in ("json", "stream"):
            cpu = statistics.median(r[phase]["cpu_us"] for r in runs[name])
            reactor_ = statistics.median(r[phase]["reactor_thread_us"] for r in runs[name])
            row[phase] = {"cpu_us": round(cpu, 1), "reactor_thread_us": round(reactor_, 1),
                          "all": [round(r[phase]["cpu_us"], 1) for r in runs[name]]}
            print(f"  {name:10s} {phase:6s} {cpu:7.1f} us  (reactor thread {reactor_:6.1f} us)  "
                  f"runs: {', '.join(f'{v:.0f}' for v in row[phase]['all'])}")
        row["dropped"] = [r.get("recorded_dropped") for r in runs[name]]
        if args.steps:
            for phase in ("json", "stream"):
                named = sorted({k for r in runs[name] for k in r[phase].get("steps_us", {})})
                medians = {k: statistics.median(r[phase]["steps_us"].get(k, 0.0) for r in runs[name]) for k in named}
                row[phase]["steps_us"] = medians
                print(f"    {phase} steps (us/request): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in medians.items())
                      + f"; together {sum(medians.values()):.1f}")
        summary[name] = row
    for suffix in ("@base", ""):
        if "default" + suffix in summary and "recording" + suffix in summary:
            for phase in ("json", "stream"):
                off, on = summary["default" + suffix][phase]["cpu_us"], summary["recording" + suffix][phase]["cpu_us"]
                print(f"  recording on vs off{suffix}, {phase}: {100 * (on - off) / off:+.0f}%")
    for name, result in profiles.items():
        for phase in ("json", "stream"):
            print(f"\ncProfile, {name}, {phase} ({result[phase]['requests']} requests):")
            print("\n".join(result[phase + ":profile"]))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"summary": summary, "runs": runs}, handle, indent=2)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(int(sys.argv[2]), bool(int(sys.argv[3])), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--gateway":
        gateway_main(sys.argv[2], [tuple(p) for p in json.loads(sys.argv[3])], bool(int(sys.argv[4])),
                     int(sys.argv[5]), bool(int(sys.argv[6])))
    else:
        sys.exit(main())
