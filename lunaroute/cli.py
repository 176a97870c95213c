"""
C{lunaroute-server}: the console script users of the original LunaRoute know.

    lunaroute-server [options]            run in the foreground (= twistd -n lunaroute)
    lunaroute-server --help | --version
    lunaroute-server env [--host H] [--port P] [--config F]
                                          start in the background, print exports
    lunaroute-server stop                 stop the background gateway
    lunaroute-server import-sessions ...  rebuild the SQLite store from JSONL
                                          (--postgres: fill the PostgreSQL store)
    lunaroute-server migrate ...          create or upgrade the session store's schema
    lunaroute-server report KIND ...      usage reports (daily, weekly, monthly, session, blocks)
    lunaroute-server search QUERY ...     full-text search over the recorded turns

C{eval $(lunaroute-server env)} must work in bash and zsh, so C{env} prints
only C{export} lines on stdout; everything for a person goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from lunaroute.errors import ConfigError

if TYPE_CHECKING:
    from lunaroute.config import Settings

STATE_DIR_NAME = ".lunaroute"


def refresh_plugin_cache() -> None:
    """
    Let Twisted scan for plugins once, so it writes C{dropin.cache} with
    LunaRoute's plugin in it (a wheel install cannot run code to do this).
    """
    from twisted.plugin import IPlugin, getPlugins

    list(getPlugins(IPlugin))


def state_dir() -> Path:
    return Path(os.path.expanduser("~")) / STATE_DIR_NAME


def _say(message: str) -> None:
    print(f"# {message}", file=sys.stderr)


def _fail(message: str) -> NoReturn:
    print(f"lunaroute-server: {message}", file=sys.stderr)
    raise SystemExit(1)


def _client_host(host: str) -> str:
    """The address a client on this machine uses for a listening host."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _url(host: str, port: int) -> str:
    host = _client_host(host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=timeout) as response:
            return response.status == 200 and json.load(response).get("status") == "ok"
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the gateway could not listen there (a clearer message than twistd's), or None."""
    from lunaroute.proxy.site import cannot_listen

    return cannot_listen(host, port)


def _free_port(host: str) -> int:
    """A port free on C{host} now (for a UI configured with port 0)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _settings(args: argparse.Namespace) -> Settings:
    from lunaroute.config import load_settings

    overrides = {"host": args.host, "port": args.port}
    try:
        return load_settings(args.config, env=os.environ, overrides=overrides)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")


def cmd_env(args: argparse.Namespace) -> None:
    from lunaroute.config import ui_unavailable_reason

    settings = _settings(args)
    url = _url(settings.host, settings.port)
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    pidfile = directory / "lunaroute.pid"
    logfile = directory / "lunaroute.log"
    addrfile = directory / "lunaroute.addr"
    uifile = directory / "lunaroute.ui"
    ui_off = ui_unavailable_reason(settings)
    ui_url = None

    running = _read_pid(pidfile)
    if _healthy(url):
        _say(f"LunaRoute is already running at {url}; reusing it")
    elif running is not None:
        where = addrfile.read_text().strip() if addrfile.exists() else "another address"
        _fail(
            f"a background LunaRoute (pid {running}) is already running on {where}; "
            "run 'lunaroute-server stop' first"
        )
    else:
        problem = _cannot_listen(settings.host, settings.port)
        if problem:
            _fail(f"cannot listen on {settings.host}:{settings.port}: {problem}")
        argv = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(logfile),
            "lunaroute",
            "--host",
            settings.host,
            "--port",
            str(settings.port),
        ]
        if args.config:
            argv += ["--config", args.config]
        child_env = None
        if ui_off is None:
            # The UI's port is chosen here when it is 0, so the URL printed is the real one.
            ui_port = settings.ui.port or _free_port(settings.ui.host)
            problem = _cannot_listen(settings.ui.host, ui_port)
            if problem:
                _fail(f"cannot listen on {settings.ui.host}:{ui_port} (ui): {problem}")
            ui_url = _url(settings.ui.host, ui_port)
            child_env = {**os.environ, "LUNAROUTE_UI_PORT": str(ui_port)}
        # twistd daemonises: the parent returns once the child started (or
        # reports why it could not).
        result = subprocess.run(argv, capture_output=True, text=True, env=child_env)
        if result.returncode != 0:
            lines = [
                line.strip()
                for line in (result.stderr + result.stdout).splitlines()
                if line.strip() and "look at log file" not in line
            ]
            detail = " ".join(lines) or f"twistd exited with status {result.returncode}"
            _fail(f"could not start LunaRoute: {detail} (log: {logfile})")
        deadline = time.monotonic() + args.wait
        while not _healthy(url, timeout=0.5):
            if time.monotonic() > deadline:
                _fail(f"LunaRoute did not start accepting connections at {url}; see {logfile}")
            if _read_pid(pidfile) is None and time.monotonic() > deadline - args.wait + 2:
                _fail(f"LunaRoute exited during start-up; see {logfile}")
            time.sleep(0.1)
        addrfile.write_text(f"{settings.host}:{settings.port}\n")
        if ui_url:
            uifile.write_text(ui_url + "\n")
        else:
            uifile.unlink(missing_ok=True)
        _say(f"LunaRoute started at {url} (pid {_read_pid(pidfile)}, log {logfile})")
    if ui_url is None and ui_off is None and uifile.exists():
        ui_url = uifile.read_text().strip()  # the running gateway's
    if ui_url:
        _say(f"web UI: {ui_url}")
    elif ui_off is not None:
        _say(f"web UI: off ({ui_off})")
    print(f"export ANTHROPIC_BASE_URL={url}")
    print(f"export OPENAI_BASE_URL={url}/v1")


def cmd_stop(args: argparse.Namespace) -> None:
    pidfile = state_dir() / "lunaroute.pid"
    pid = _read_pid(pidfile)
    if pid is None:
        _say("no background LunaRoute is running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _say(f"LunaRoute (pid {pid}) stopped")
            (state_dir() / "lunaroute.addr").unlink(missing_ok=True)
            (state_dir() / "lunaroute.ui").unlink(missing_ok=True)
            return
        time.sleep(0.1)
    _fail(f"LunaRoute (pid {pid}) did not stop within {args.timeout:g}s")


def cmd_import_sessions(args: argparse.Namespace) -> None:
    from lunaroute.sessions.importer import run_import

    raise SystemExit(run_import(args))


def cmd_cleanup(args: argparse.Namespace) -> None:
    from lunaroute.sessions.retention import run_cleanup

    raise SystemExit(run_cleanup(args))


def cmd_migrate(args: argparse.Namespace) -> None:
    from lunaroute.sessions.importer import run_migrate

    raise SystemExit(run_migrate(args))


def cmd_report(args: argparse.Namespace) -> None:
    from lunaroute.sessions.reports import run_report

    raise SystemExit(run_report(args))


def cmd_search(args: argparse.Namespace) -> None:
    from lunaroute.sessions.reports import run_search

    raise SystemExit(run_search(args))


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: a bad argument is one line (and status 2), not usage plus a line."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """
    List the options of a foreground run (those of C{twistd -n lunaroute},
    read from L{lunaroute.tap.Options}) in the help; twistd parses them.
    """
    from lunaroute.tap import Options

    run = parser.add_argument_group(
        "run options (lunaroute-server [options]: run in the foreground, as 'twistd -n lunaroute')"
    )
    for long, short, _default, doc in Options.optParameters:
        names = [f"--{long}"] + ([f"-{short}"] if short else [])
        run.add_argument(*names, metavar=str(long).upper().replace("-", "_"), help=doc)
    for long, short, doc in Options.optFlags:
        names = [f"--{long}"] + ([f"-{short}"] if short else [])
        run.add_argument(*names, action="store_true", help=doc)
    run.add_argument("--version", action="store_true", help="print LunaRoute's version and exit")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lunaroute-server",
        usage="lunaroute-server [run options]\n"
        "       lunaroute-server {env,stop,import-sessions,cleanup,migrate,report,search} [options]",
        description="LLM API gateway for Claude Code, Codex CLI and the Anthropic/OpenAI SDKs. "
        "With no command it runs in the foreground; a command manages a background "
        "gateway or the session store ('lunaroute-server COMMAND --help' for its options).",
    )
    _add_run_options(parser)
    sub = parser.add_subparsers(
        dest="command",
        title="commands",
        metavar="{env,stop,import-sessions,cleanup,migrate,report,search}",
        prog="lunaroute-server",
        parser_class=_CommandParser,
    )

    env = sub.add_parser("env", help="start in the background and print export lines for eval")
    env.add_argument("--host", help="interface to listen on (default from config, 127.0.0.1)")
    env.add_argument("--port", type=int, help="port (default from config, 8081)")
    env.add_argument("--config", "-c", help="config file")
    env.add_argument("--wait", type=float, default=30.0, help="seconds to wait for start-up")
    env.set_defaults(func=cmd_env)

    stop = sub.add_parser("stop", help="stop the gateway started by 'env'")
    stop.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to exit")
    stop.set_defaults(func=cmd_stop)

    imp = sub.add_parser(
        "import-sessions",
        help="rebuild or complete the SQLite session store from the JSONL files",
        description="Add to the SQLite session database every recorded request it is missing "
        "(after a crash, a full disk or with SQLite recording off). Running it again changes nothing.",
    )
    imp.add_argument("--sessions-dir", help="JSONL sessions directory (default from config)")
    imp.add_argument("--db-path", help="SQLite database (default <sessions-dir>/sessions.db)")
    imp.add_argument("--config", "-c", help="config file to take the defaults from")
    imp.add_argument("--batch-size", type=int, default=500, help="events per transaction")
    imp.add_argument(
        "--skip-existing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip requests already in the database and add the missing ones, even in sessions "
        "it partly holds (default: on); --no-skip-existing applies every event again",
    )
    imp.add_argument("--dry-run", action="store_true", help="read and count, write nothing")
    imp.add_argument(
        "--postgres",
        nargs="?",
        const="",
        metavar="DSN",
        help="import into the PostgreSQL store instead: this connection string, or alone the configured "
        "session_recording.postgres.connection_string",
    )
    imp.add_argument(
        "--from-sqlite",
        metavar="PATH",
        help="with --postgres: copy this SQLite session database's rows instead of reading the JSONL files",
    )
    imp.set_defaults(func=cmd_import_sessions)

    cleanup = sub.add_parser(
        "cleanup",
        help="apply session retention now: compress old JSONL files, delete expired sessions",
        description="Apply session_recording.cleanup.retention once (the defaults when it is not "
        "configured): compress JSONL files not written for compress_after_days with zstd, delete "
        "files older than max_age_days or beyond max_total_size_gb (oldest first) and their "
        "sessions' database rows. Files a running gateway is writing are left alone. "
        "See docs/retention.md.",
    )
    cleanup.add_argument("--config", "-c", help="config file (default: $LUNAROUTE_CONFIG or the built-in defaults)")
    cleanup.add_argument(
        "--dry-run", action="store_true", help="show what would be compressed or deleted and the space freed; change nothing"
    )
    cleanup.set_defaults(func=cmd_cleanup)
    mig = sub.add_parser(
        "migrate",
        help="create or upgrade the session store's schema (PostgreSQL when configured, else SQLite)",
        description="Apply the missing schema migrations to the PostgreSQL store (session_recording.postgres, "
        "or --postgres) or to the SQLite database. Gateways do this themselves at start; this lets an "
        "operator do it first. Running it again changes nothing.",
    )
    mig.add_argument("--config", "-c", help="config file to take the store from")
    mig.add_argument("--postgres", metavar="DSN", help="the PostgreSQL store to migrate")
    mig.add_argument("--db-path", help="the SQLite database to migrate")
    mig.set_defaults(func=cmd_migrate)

    from lunaroute.sessions.reports import add_report_options, add_search_options

    report = sub.add_parser(
        "report",
        help="token and cost reports: daily, weekly, monthly, session, blocks (5-hour windows)",
        description="Usage from the recorded requests (the provider's own usage figures), grouped by "
        "day, ISO week, month, session or 5-hour billing block. See docs/reports.md.",
    )
    add_report_options(report)
    report.set_defaults(func=cmd_report)

    search = sub.add_parser(
        "search",
        help="full-text search over every recorded turn, with snippets",
        description="Find recorded turns (request, response and thinking text) with an FTS5 query; "
        "each hit names its session and request and the command to open it. See docs/reports.md.",
    )
    add_search_options(search)
    search.set_defaults(func=cmd_search)
    return parser


def main(argv: list[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    commands = {"env", "stop", "import-sessions", "cleanup", "migrate", "report", "search"}
    if args_list and args_list[0] in commands:
        args = _parser().parse_args(args_list)
        args.func(args)
        return
    run_args = args_list[: args_list.index("--")] if "--" in args_list else args_list
    if "-h" in run_args or "--help" in run_args:
        _parser().print_help()
        return
    if "--version" in run_args:
        from lunaroute.tap import lunaroute_version

        print(f"lunaroute {lunaroute_version()}")
        return
    from lunaroute.tap import main as run_server

    refresh_plugin_cache()
    run_server(args_list)


if __name__ == "__main__":
    main()
