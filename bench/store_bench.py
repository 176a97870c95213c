"""
How fast the session store answers the usage report and full-text search
once it holds a lot of history.

    python bench/store_bench.py                      # small: 200 sessions / 4,000 turns, ~2 KB each
    python bench/store_bench.py --full               # the issue's size: 10,000 / 200,000, ~10 KB each (~2 GB)
    python bench/store_bench.py --sessions 2000 --turns 40000 --text-kb 10 --json

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
  - with C{--try-usage-index}, the report again after adding a covering
    index of the columns it reads (an experiment: the schema has no such
    index);
  - the session API (list page, session detail) only when
    C{lunaroute/sessions/store.py} exists; otherwise it says it skipped them.

Everything goes to a temporary directory removed afterwards, unless C{--db}
names a file to keep (an existing one is reused as is, skipping generation).
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


def generate(db_path: str, sessions: int, turns: int, text_kb: float, days: int, batch_events: int, seed: int) -> dict[str, Any]:
    """Write the store; returns what was written and how fast."""
    rng = random.Random(seed)
    text = TextMaker(rng)
    writer = SQLiteWriter(db_path)
    writer.open()
    per_session = [turns // sessions + (1 if index < turns % sessions else 0) for index in range(sessions)]
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


# An experiment for the store's owner: an index holding every column the
# usage report reads, so the report scans it instead of the table, whose rows
# carry the request and response bodies (the cost column, added by ALTER
# TABLE, sits after them, so reading it walks each row's overflow pages).
USAGE_INDEX = (
    "CREATE INDEX IF NOT EXISTS bench_session_stats_usage ON session_stats (started_at, completed_at, "
    "model_used, model_requested, dialect, user_agent, input_tokens, output_tokens, cache_creation_tokens, "
    "cache_read_tokens, estimated_cost_usd, session_id, request_id)"
)


def try_usage_index(db_path: str, repeat: int) -> dict[str, Any]:
    """Add L{USAGE_INDEX} to the (benchmark's own) store and time the report again."""
    import sqlite3

    conn = sqlite3.connect(db_path)
    began = time.perf_counter()
    conn.execute(USAGE_INDEX)
    conn.commit()
    built = time.perf_counter() - began
    size = conn.execute(
        "SELECT SUM(pgsize) FROM dbstat WHERE name = 'bench_session_stats_usage'"
    ).fetchone()[0] if _has_dbstat(conn) else None
    conn.close()
    result = time_report(db_path, repeat)
    result["index_build_s"] = round(built, 1)
    if size is not None:
        result["index_mb"] = round(size / 1e6, 1)
    return result


def _has_dbstat(conn: Any) -> bool:
    try:
        conn.execute("SELECT 1 FROM dbstat LIMIT 1").fetchall()
    except Exception:
        return False
    return True


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
    parser.add_argument(
        "--try-usage-index",
        action="store_true",
        help="then add a covering index for the report to the store and time it again (an experiment)",
    )
    parser.add_argument("--db", help="keep the store in this file (reused if it exists)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
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
        else:
            print(f"generating {args.sessions:,} sessions / {args.turns:,} turns, {args.text_kb:g} KB of text each",
                  file=sys.stderr)
            results["store"] = generate(
                db_path, args.sessions, args.turns, args.text_kb, args.days, args.batch_events, args.seed
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
        if args.try_usage_index:
            print("timing report daily with a covering usage index", file=sys.stderr)
            results["report_daily_with_usage_index"] = try_usage_index(db_path, args.repeat)
            results["report_daily_cli_with_usage_index"] = time_cli(db_path)
        if os.path.exists(os.path.join(REPO, "lunaroute", "sessions", "store.py")):
            results["api"] = "lunaroute/sessions/store.py exists: its list/detail timings are not wired in yet"
        else:
            results["api"] = "skipped: lunaroute/sessions/store.py (the session API's read model) is not in this tree"
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
