"""
How fast the session store answers the usage report and full-text search
once it holds a lot of history.

    python bench/store_bench.py                      # small: 200 sessions / 4,000 turns, ~2 KB each
    python bench/store_bench.py --full               # the issue's size: 10,000 / 200,000, ~10 KB each (~2 GB)
    python bench/store_bench.py --sessions 2000 --turns 40000 --text-kb 10 --json
    python bench/store_bench.py --db /tmp/store.db --proxy   # reuse (and upgrade) a store, time the gateway too

Generates a store through the real write path: hand-built exchanges
(L{lunaroute.testing.exchanges.make_exchange}) turned into events by
L{lunaroute.sessions.events.exchange_events} and written by
L{lunaroute.sessions.sqlite.SQLiteWriter} in batches of C{--batch-events}
(1,000, the recorder's default).  The text is made of a fixed vocabulary
(English, code identifiers, paths, error messages) drawn with a Zipf-like
skew, so the index has common and rare words like a real one.  Sessions are
spread over C{--days} (365) ending on 2025-12-31, with a few minutes between
turns; models, clients and cache traffic are mixed.

Then times, on this thread, with a read-only connection like the CLI's:

  - C{report daily} over the whole year: the query, the grouping and the
    table (L{lunaroute.sessions.reports}), the median and worst of C{--repeat}
    runs; and one run of the installed C{lunaroute-server report daily
    --json} (process start-up included) when it is on the PATH;
  - the FTS5 search of C{lunaroute-server search}: p50/p95/max over
    C{--queries} queries (single common and rare words, prefixes, phrases,
    C{AND}, a column filter), 20 hits each with snippets, ranked among the
    most recent matches (L{reports.SEARCH_WINDOW}) as by default, then
    ranking every match as with C{--all};
  - the session API's read model (L{lunaroute.sessions.store.SessionQueries},
    what the HTTP handlers run in the thread pool): list pages (the default,
    its next and a deep page, every sort both ways, the filters; 50 rows
    each), search (C{GET /api/search}, 20 hits with snippets), the session
    list filtered by a search, and the longest session's detail and
    timeline (C{--long-turns}, 500 turns by default);
  - with C{--proxy}: a recording gateway (C{twistd}, recording into the
    store) in front of C{bench/fast_upstream.py}, sequential requests
    straight to the upstream and through the gateway, in alternating
    blocks without and with another process querying the gateway's session
    API back to back: the gateway's added p50 in each case.

Everything goes to a temporary directory removed afterwards, unless C{--db}
names a file to keep.  An existing one is reused, skipping generation;
when an older LunaRoute wrote it, its schema is first upgraded as the
gateway would do on start, and the upgrade is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from lunaroute.sessions import reports  # noqa: E402
from lunaroute.sessions.events import exchange_events  # noqa: E402
from lunaroute.sessions.sqlite import SQLiteWriter  # noqa: E402
from lunaroute.testing.exchanges import CLAUDE_CODE_AGENT, CODEX_AGENT, SDK_AGENT, make_exchange  # noqa: E402

END = datetime(2025, 12, 31, 23, 0, tzinfo=UTC).timestamp()

ENGLISH = (
    "the a to of and in is it that for you this with on be not are as can we have if but or "
    "function test error file line value return call change code fix bug build run check add "
    "update remove use need should would could make sure first then now here there when what "
    "why how which because instead still also only just again before after into from about "
    "parser config server client request response session token cache stream model tool "
    "query index table column row database migration schema timeout retry connection socket "
    "thread reactor deferred callback errback handler listener provider gateway proxy upstream "
    "latency throughput memory disk queue batch writer reader search report daily weekly cost"
).split()
CODE = (
    "def class import self None True False async await yield lambda raise except finally "
    "assert isinstance dict list tuple str int float bytes json yaml sqlite3 pytest twisted "
    "klein treq deferToThread callLater addCallback addErrback inlineCallbacks write_batch "
    "exchange_events fts_query snippet bm25 MATCH SELECT FROM WHERE GROUP ORDER LIMIT JOIN "
    "parse_iso iso_utc render_table split_blocks usage_row client_of open_command"
).split()
PATHS = (
    "lunaroute/cli.py lunaroute/sessions/sqlite.py lunaroute/sessions/recorder.py "
    "lunaroute/proxy/relay.py tests/test_reports.py docs/performance.md README.md setup.py "
    "src/main.rs src/lib.rs package.json webpack.config.js Makefile Dockerfile"
).split()
ERRORS = (
    "TypeError: 'NoneType' object is not subscriptable|KeyError: 'session_id'|"
    "sqlite3.OperationalError: database is locked|ConnectionRefusedError: [Errno 111]|"
    "AssertionError: assert 82 <= 80|ValueError: invalid literal for int() with base 10|"
    "RecursionError: maximum recursion depth exceeded|TimeoutError: upstream did not answer"
).split("|")
RARE = [f"{a}{b}" for a in ("zeta", "quasar", "nimbus", "fjord", "kelvin", "obsidian") for b in range(100)]
VOCABULARY = ENGLISH + CODE + PATHS + RARE

MODELS = [
    ("claude-sonnet-4-5-20250929", "anthropic", CLAUDE_CODE_AGENT, 60),
    ("claude-opus-4-1-20250805", "anthropic", CLAUDE_CODE_AGENT, 10),
    ("claude-haiku-4-5-20251001", "anthropic", SDK_AGENT, 15),
    ("gpt-5", "openai_chat", CODEX_AGENT, 15),
]

QUERIES = [
    "error",
    "parser",
    "timeout",
    "deferred",
    "quasar42",
    "fjord7",
    "obsidian99",
    "migrat*",
    "sess*",
    '"database is locked"',
    '"not subscriptable"',
    "reactor AND thread",
    "cache AND cost AND report",
    "response_text: snippet",
    "kelvin3 OR nimbus5",
]


class TextMaker:
    """Text of a given size from the vocabulary, common words far more often than rare ones."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(VOCABULARY))]

    def words(self, size: int) -> str:
        out: list[str] = []
        length = 0
        while length < size:
            if self.rng.random() < 0.03:
                chunk = self.rng.choice(ERRORS)
            else:
                chunk = " ".join(self.rng.choices(VOCABULARY, self.weights, k=12))
            out.append(chunk)
            length += len(chunk) + 1
        return " ".join(out)[:size]


def generate(
    db_path: str, sessions: int, turns: int, text_kb: float, days: int, batch_events: int, seed: int, long_turns: int = 0
) -> dict[str, Any]:
    """
    Write the store; returns what was written and how fast.  With
    C{long_turns}, the middle session has that many turns (the others share
    the rest), for the session detail timing.
    """
    rng = random.Random(seed)
    text = TextMaker(rng)
    writer = SQLiteWriter(db_path)
    writer.open()
    long_turns = min(long_turns, turns - (sessions - 1)) if sessions > 1 else 0
    rest, others = turns - long_turns, sessions - (1 if long_turns else 0)
    per_session = [rest // others + (1 if index < rest % others else 0) for index in range(others)]
    if long_turns:
        per_session.insert(sessions // 2, long_turns)
    # Session starts spread over the period, in time order.
    starts = sorted(END - rng.random() * days * 86400 for _ in range(sessions))
    size = int(text_kb * 1024)
    batch: list[dict[str, Any]] = []
    written_turns = 0
    text_bytes = 0
    began = time.perf_counter()
    for index, (start, count) in enumerate(zip(starts, per_session, strict=True)):
        model, dialect, agent, _ = rng.choices(MODELS, [m[3] for m in MODELS])[0]
        session_id = f"bench-{index:06d}-{rng.getrandbits(32):08x}"
        moment = start
        for turn in range(count):
            # The request carries the conversation so far (about 2/3 of the
            # text, stored in request_text and request_json), the answer the rest.
            user = text.words(max(40, size * 2 // 3))
            answer = text.words(max(40, size // 3))
            cached = rng.randint(0, 60_000) if turn else 0
            input_tokens = rng.randint(50, 3_000)
            output_tokens = rng.randint(20, 2_000)
            cost = None if rng.random() < 0.01 else round(
                (input_tokens * 3 + output_tokens * 15 + cached * 0.3) / 1e6, 6
            )
            exchange = make_exchange(
                session_id,
                moment,
                model=model,
                dialect=dialect,
                user_agent=agent,
                user_text=user,
                answer=answer,
                input_tokens=input_tokens + (cached if dialect.startswith("openai") else 0),
                output_tokens=output_tokens,
                cache_read_tokens=cached,
                cache_creation_tokens=rng.randint(0, 4_000) if dialect == "anthropic" else 0,
                cost_usd=cost,
            )
            batch.extend(exchange_events(exchange))
            text_bytes += len(user) + len(answer)
            written_turns += 1
            moment += rng.uniform(20, 240)
            if len(batch) >= batch_events:
                writer.write_batch(batch)
                batch = []
        if index % 500 == 0:
            elapsed = time.perf_counter() - began
            print(f"  {written_turns:,} turns written ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    if batch:
        writer.write_batch(batch)
    writer.close()
    elapsed = time.perf_counter() - began
    return {
        "sessions": sessions,
        "turns": written_turns,
        "text_mb": round(text_bytes / 1e6, 1),
        "write_s": round(elapsed, 1),
        "turns_per_s": round(written_turns / elapsed, 1),
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


def time_report(db_path: str, repeat: int) -> dict[str, Any]:
    """C{report daily} over the year, in process: query, grouping and table."""
    zone = reports.parse_timezone("UTC")
    low, high = reports.day_bounds(reports.parse_day("2025-01-01"), reports.parse_day("2025-12-31"), zone)
    runs = []
    phases: dict[str, list[float]] = {"query": [], "group_and_render": []}
    rows_seen = requests = 0
    for _ in range(repeat):
        began = time.perf_counter()
        conn = reports.connect_readonly(db_path)
        rows, _notes = reports.query_usage_rows(conn, low=low, high=high)
        conn.close()
        queried = time.perf_counter()
        report = reports.build_report("daily", rows, zone)
        reports.render_report(report)
        done = time.perf_counter()
        phases["query"].append(queried - began)
        phases["group_and_render"].append(done - queried)
        runs.append(done - began)
        rows_seen = len(rows)
        requests = sum(row.requests for row in rows)
    return {
        "requests": requests,
        "summed_rows": rows_seen,
        "median_ms": _ms(statistics.median(runs)),
        "max_ms": _ms(max(runs)),
        "query_median_ms": _ms(statistics.median(phases["query"])),
        "group_and_render_median_ms": _ms(statistics.median(phases["group_and_render"])),
    }


def upgrade(db_path: str) -> dict[str, Any] | None:
    """
    Bring an existing store (written by an older LunaRoute) to this schema
    version as the gateway does on start (L{lunaroute.sessions.sqlite.connect}),
    timed; None when it is up to date.  Drops the covering index older runs
    of this benchmark added by hand (C{--try-usage-index}), which schema 5
    makes part of the schema.
    """
    import sqlite3

    from lunaroute.sessions.sqlite import SCHEMA_VERSION, connect

    conn = sqlite3.connect(db_path, isolation_level=None)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        conn.close()
        return None
    conn.execute("DROP INDEX IF EXISTS bench_session_stats_usage")
    conn.close()
    began = time.perf_counter()
    connect(db_path).close()
    return {"from": version, "to": SCHEMA_VERSION, "seconds": round(time.perf_counter() - began, 1)}


def time_cli(db_path: str) -> dict[str, Any] | None:
    """One run of the installed command, process start-up included."""
    server = shutil.which("lunaroute-server")
    if server is None:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNAROUTE_")}
    began = time.perf_counter()
    result = subprocess.run(
        [server, "report", "daily", "--json", "--db-path", db_path, "--since", "2025-01-01", "--until", "2025-12-31",
         "-z", "UTC"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        return {"error": result.stderr.strip()}
    days = len(json.loads(result.stdout)["rows"])
    return {"wall_ms": _ms(elapsed), "days": days}


def time_search(db_path: str, count: int, window: int | None = reports.SEARCH_WINDOW) -> dict[str, Any]:
    """The search as C{lunaroute-server search} runs it (C{window} None: as with C{--all})."""
    conn = reports.connect_readonly(db_path)
    times: list[float] = []
    per_query: dict[str, list[float]] = {}
    hits = windowed = 0
    try:
        # One untimed pass so the first query does not pay for a cold cache alone.
        for query in QUERIES:
            reports.query_search(conn, query, 20, window)
        for index in range(count):
            query = QUERIES[index % len(QUERIES)]
            began = time.perf_counter()
            found = reports.query_search(conn, query, 20, window)
            elapsed = time.perf_counter() - began
            hits += len(found.hits)
            windowed += found.windowed
            times.append(elapsed)
            per_query.setdefault(query, []).append(elapsed)
    finally:
        conn.close()
    slowest = max(per_query, key=lambda q: statistics.median(per_query[q]))
    return {
        "queries": count,
        "p50_ms": _ms(percentile(times, 0.50)),
        "p95_ms": _ms(percentile(times, 0.95)),
        "max_ms": _ms(max(times)),
        "mean_hits": round(hits / count, 1),
        "window": window,
        "queries_past_the_window": windowed,
        "slowest_query": slowest,
        "slowest_median_ms": _ms(statistics.median(per_query[slowest])),
    }


def _spread(times: list[float]) -> dict[str, Any]:
    return {
        "n": len(times),
        "p50_ms": _ms(percentile(times, 0.50)),
        "p95_ms": _ms(percentile(times, 0.95)),
        "max_ms": _ms(max(times)),
    }


def _most_common(conn: Any, column: str) -> Any:
    row = conn.execute(
        f"SELECT {column} FROM sessions WHERE {column} IS NOT NULL GROUP BY {column} ORDER BY COUNT(*) DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def longest_session(conn: Any) -> tuple[str, int]:
    """
    The generated session with the most turns (C{--long-turns}); in a store
    this benchmark did not generate, the longest one.  The gateway's own
    session (C{--proxy} records into the store) is not one of ours.
    """
    for where in ("WHERE session_id LIKE 'bench-%'", ""):
        row = conn.execute(
            f"SELECT session_id, request_count FROM sessions {where} ORDER BY request_count DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            return str(row[0]), int(row[1])
    raise RuntimeError("the store holds no session")


def time_api(db_path: str, repeat: int, queries: int) -> dict[str, Any]:
    """
    The session API's read model (L{lunaroute.sessions.store.SessionQueries},
    what the HTTP handlers call in the thread pool) on a read-only
    connection: list pages, search, the longest session's detail and
    timeline.  Timed in process, without HTTP (the handler's JSON encoding
    of the answer is not included).
    """
    from lunaroute.sessions import store

    conn = store.open_read_only(db_path)
    q = store.SessionQueries(conn)
    results: dict[str, Any] = {}
    try:
        total = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        client, model = _most_common(conn, "client"), _most_common(conn, "model_used")
        last = conn.execute("SELECT MAX(last_activity) FROM sessions").fetchone()[0]
        month_ago = datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp() - 30 * 86400
        since = datetime.fromtimestamp(month_ago, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        # The pages a UI asks for: the default (most recently active first)
        # and its next pages, every sort both ways, and the filters.
        Filters = store.SessionFilters
        cases: list[tuple[str, Any, str, str, int]] = [
            ("default", Filters(), "last_activity", "desc", 0),
            ("page 2", Filters(), "last_activity", "desc", 50),
            ("deep page", Filters(), "last_activity", "desc", max(0, total // 2)),
        ]
        for sort in store.SORTS:
            for order in ("desc", "asc"):
                cases.append((f"sort {sort} {order}", Filters(), sort, order, 0))
        cases += [
            ("client", Filters(client=client), "last_activity", "desc", 0),
            ("model", Filters(model=model), "last_activity", "desc", 0),
            ("last 30 days", Filters(window=store.StatsWindow(since=since)), "last_activity", "desc", 0),
            ("cost >= 1", Filters(ranges={"cost": (1.0, None)}), "cost", "desc", 0),
            ("failed", Filters(success=False), "last_activity", "desc", 0),
        ]
        for case in cases:  # untimed pass: a warm cache, as for a running UI
            q.list_sessions(case[1], case[2], case[3], 50, case[4])
        times: list[float] = []
        per_case: dict[str, list[float]] = {}
        for index in range(max(queries, len(cases))):
            name, filters, sort, order, offset = cases[index % len(cases)]
            began = time.perf_counter()
            q.list_sessions(filters, sort, order, 50, offset)
            elapsed = time.perf_counter() - began
            times.append(elapsed)
            per_case.setdefault(name, []).append(elapsed)
        slowest = max(per_case, key=lambda n: statistics.median(per_case[n]))
        results["list_page"] = {
            **_spread(times),
            "sessions": total,
            "page": 50,
            "cases": len(cases),
            "slowest_case": slowest,
            "slowest_median_ms": _ms(statistics.median(per_case[slowest])),
        }

        # Search (GET /api/search, 20 hits with snippets).
        for query in QUERIES:
            q.search(query, 20)
        times, per_query = [], {}
        for index in range(queries):
            query = QUERIES[index % len(QUERIES)]
            began = time.perf_counter()
            q.search(query, 20)
            elapsed = time.perf_counter() - began
            times.append(elapsed)
            per_query.setdefault(query, []).append(elapsed)
        slowest = max(per_query, key=lambda n: statistics.median(per_query[n]))
        results["search"] = {
            **_spread(times),
            "slowest_query": slowest,
            "slowest_median_ms": _ms(statistics.median(per_query[slowest])),
        }

        # The session list filtered by a search (GET /sessions?text_search=),
        # a rare word and a phrase (informative: not one of the targets).
        times = []
        for index in range(max(4, queries // 10)):
            text = ("obsidian99", '"database is locked"')[index % 2]
            began = time.perf_counter()
            q.list_sessions(Filters(text_search=text), "last_activity", "desc", 50, 0)
            times.append(time.perf_counter() - began)
        results["list_text_search"] = _spread(times)

        # The longest session: GET /sessions/<id> and /sessions/<id>/timeline.
        session_id, turns = longest_session(conn)
        q.get_session(session_id)
        q.timeline(session_id)
        detail, timeline, both = [], [], []
        for _ in range(repeat):
            began = time.perf_counter()
            q.get_session(session_id)
            middle = time.perf_counter()
            events = q.timeline(session_id)
            done = time.perf_counter()
            detail.append(middle - began)
            timeline.append(done - middle)
            both.append(done - began)
        results["session_detail"] = {
            "turns": turns,
            "timeline_events": len(events),
            "detail_median_ms": _ms(statistics.median(detail)),
            "timeline_median_ms": _ms(statistics.median(timeline)),
            "both_median_ms": _ms(statistics.median(both)),
            "both_max_ms": _ms(max(both)),
        }
    finally:
        conn.close()
    return results


# The API requests of the concurrent query load (C{--api-load}): what a UI
# left open on the session list and a search page would ask, back to back.
def api_load_paths(db_path: str) -> list[str]:
    import sqlite3
    from urllib.parse import quote

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        session_id, _ = longest_session(conn)
    finally:
        conn.close()
    return [
        "/sessions?limit=50",
        "/sessions?limit=50&offset=50&sort=cost",
        "/api/search?q=" + quote("timeout") + "&limit=20",
        "/api/search?q=" + quote('"database is locked"') + "&limit=20",
        f"/sessions/{session_id}",
        f"/sessions/{session_id}/timeline",
        "/api/stats/overview?days=30",
    ]


def api_load(port: int, db_path: str) -> int:
    """Query the gateway's session API back to back until killed (a child process)."""
    sys.path.insert(0, HERE)
    import loadgen

    client = loadgen.BlockingClient(port, timeout=120)
    raws = [loadgen.build_request(port, path, b"", method="GET") for path in api_load_paths(db_path)]
    done = 0
    while True:
        for raw in raws:
            timed = client.request(raw)
            if timed.status != 200:
                print(f"api load: status {timed.status}", file=sys.stderr, flush=True)
                return 1
            done += 1
        if done == len(raws):
            print("ready", flush=True)


def time_proxy_under_api_load(db_path: str, requests: int, rounds: int) -> dict[str, Any]:
    """
    A recording gateway (twistd, SQLite into C{db_path}) in front of
    C{bench/fast_upstream.py}: sequential non-streaming requests straight
    to the upstream and through the gateway, in interleaved blocks, with
    and without another process querying the gateway's session API back to
    back; the gateway's added p50 in each case.
    """
    sys.path.insert(0, HERE)
    import loadgen
    import run

    tmp = tempfile.mkdtemp(prefix="lunaroute-store-bench-proxy-")
    procs = run.Procs(tmp)
    out: dict[str, Any] = {}
    try:
        upstream, _ = run.start_upstream(procs, "fast")
        sessions_dir = os.path.join(tmp, "sessions")
        port, gateway = run.start_gateway(
            procs,
            "recording",
            upstream,
            {
                "session_recording": {
                    "enabled": True,
                    "sessions_dir": sessions_dir,
                    "sqlite": {"enabled": True, "path": db_path},
                }
            },
        )
        body = run.request_body(stream=False)
        targets = {"direct": upstream, "gateway": port}
        clients = {name: loadgen.BlockingClient(p) for name, p in targets.items()}
        raws = {
            name: loadgen.build_request(p, "/v1/messages", body, run.CLIENT_HEADERS) for name, p in targets.items()
        }
        samples: dict[str, dict[str, list[float]]] = {
            "idle": {"direct": [], "gateway": []},
            "api_load": {"direct": [], "gateway": []},
        }
        loaded_blocks = 0
        for name, client in clients.items():
            for _ in range(50):
                client.request(raws[name])
        per_block = max(1, requests // rounds)
        for block in range(rounds * 2):
            state = ("idle", "api_load")[block % 2]
            loader = None
            if state == "api_load":
                loader = subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--api-load", str(port), "--db", db_path],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run.child_env(),
                )
                assert loader.stdout is not None
                if loader.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"api load did not start: {loader.stderr.read() if loader.stderr else ''}")
            try:
                for i in range(per_block):
                    for name in (("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")):
                        timed = clients[name].request(raws[name])
                        if timed.status != 200:
                            raise RuntimeError(f"{name}: status {timed.status}")
                        samples[state][name].append(timed.total)
            finally:
                if loader is not None:
                    loader.terminate()
                    loader.wait(30)
                    loaded_blocks += 1
        for client in clients.values():
            client.close()
        for state, by_target in samples.items():
            direct = statistics.median(by_target["direct"])
            through = statistics.median(by_target["gateway"])
            out[state] = {
                "requests": len(by_target["gateway"]),
                "direct_p50_ms": round(direct * 1000, 3),
                "gateway_p50_ms": round(through * 1000, 3),
                "added_p50_ms": round((through - direct) * 1000, 3),
                "gateway_p95_ms": round(percentile(by_target["gateway"], 0.95) * 1000, 3),
            }
        out["api_load_blocks"] = loaded_blocks
        out["api_load_paths"] = api_load_paths(db_path)
        out["added_p50_difference_ms"] = round(out["api_load"]["added_p50_ms"] - out["idle"]["added_p50_ms"], 3)
        procs.stop(gateway)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=4_000, help="turns (requests) in all")
    parser.add_argument("--text-kb", type=float, default=2.0, help="request + response text per turn")
    parser.add_argument("--full", action="store_true", help="10,000 sessions / 200,000 turns / 10 KB (~2 GB)")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--batch-events", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5, help="report runs")
    parser.add_argument("--queries", type=int, default=150, help="timed FTS queries")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--long-turns", type=int, default=500, help="turns of the one long session")
    parser.add_argument("--db", help="keep the store in this file (reused if it exists)")
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="then time a recording gateway's added latency with and without a concurrent API query load "
        "(writes a few hundred requests into the store)",
    )
    parser.add_argument("--proxy-requests", type=int, default=1_000, help="per state (idle, API load)")
    parser.add_argument("--proxy-rounds", type=int, default=5)
    parser.add_argument("--api-load", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.api_load:
        return api_load(args.api_load, os.path.abspath(args.db))
    if args.full:
        args.sessions, args.turns, args.text_kb = 10_000, 200_000, 10.0
    if args.sessions < 1 or args.turns < args.sessions:
        parser.error("need at least one session and one turn per session")

    workdir = None
    if args.db:
        db_path = os.path.abspath(args.db)
    else:
        workdir = tempfile.mkdtemp(prefix="lunaroute-store-bench-")
        db_path = os.path.join(workdir, "sessions.db")
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        if os.path.exists(db_path):
            results["store"] = {"reused": db_path}
            print("upgrading the store's schema (if older)", file=sys.stderr)
            results["upgrade"] = upgrade(db_path)
        else:
            print(f"generating {args.sessions:,} sessions / {args.turns:,} turns, {args.text_kb:g} KB of text each",
                  file=sys.stderr)
            results["store"] = generate(
                db_path, args.sessions, args.turns, args.text_kb, args.days, args.batch_events, args.seed,
                args.long_turns,
            )
        results["store"]["db_mb"] = round(
            sum(os.path.getsize(db_path + suffix) for suffix in ("", "-wal") if os.path.exists(db_path + suffix))
            / 1e6, 1,
        )
        print("timing report daily over the year", file=sys.stderr)
        results["report_daily"] = time_report(db_path, args.repeat)
        results["report_daily_cli"] = time_cli(db_path)
        print("timing FTS queries", file=sys.stderr)
        results["search"] = time_search(db_path, args.queries)
        print("timing FTS queries with --all", file=sys.stderr)
        results["search_all"] = time_search(db_path, max(len(QUERIES), args.queries // 3), None)
        print("timing the session API's queries", file=sys.stderr)
        results["api"] = time_api(db_path, args.repeat, args.queries)
        if args.proxy:
            print("timing the recording gateway with and without an API query load", file=sys.stderr)
            results["proxy_under_api_load"] = time_proxy_under_api_load(
                db_path, args.proxy_requests, args.proxy_rounds
            )
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for section, value in results.items():
            print(f"{section}: {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
