"""
The twistd entry point: command-line options and C{makeService}.

C{twistd -n lunaroute --config conf/config.yaml} parses these options, and
C{lunaroute-server} reuses them.  Whatever goes wrong before the gateway
runs - a bad option, a bad configuration, a port already taken, an address
not on this machine - ends the process with a single readable line and exit
status 1, never a traceback or twistd's whole help text.

In the foreground (C{twistd -n}) no C{twistd.pid} is written unless
C{--pidfile} names one, so several gateways can run from one folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.python import usage

from lunaroute.errors import ConfigError

# twistd's own default for --pidfile.
TWISTD_DEFAULT_PIDFILE = "twistd.pid"

_BOOLEAN_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def lunaroute_version() -> str:
    """LunaRoute's version, from the installed package's metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lunaroute")
    except PackageNotFoundError:
        return "unknown (not installed)"


def program_name() -> str:
    """How the user started us, for messages: C{lunaroute-server} or C{twistd lunaroute}."""
    if os.path.basename(sys.argv[0] if sys.argv else "") == "lunaroute-server":
        return "lunaroute-server"
    return "twistd lunaroute"


def flag_arguments(args: Sequence[str]) -> list[str]:
    """
    Accept the older valued forms of C{--log-requests} (C{--log-requests=false},
    C{--log-requests true}) by rewriting them to the flags
    C{--log-requests} / C{--no-log-requests}.

    @raise usage.UsageError: for a value that is not a boolean word.
    """
    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--":
            out.extend(items[i:])
            break
        value: str | None = None
        if arg.startswith("--log-requests="):
            value = arg.partition("=")[2]
            if value.strip().lower() not in _BOOLEAN_WORDS:
                raise usage.UsageError(
                    f"--log-requests takes no value (got {value!r}); "
                    "use --log-requests or --no-log-requests"
                )
        elif arg == "--log-requests" and i + 1 < len(items) and items[i + 1].lower() in _BOOLEAN_WORDS:
            i += 1
            value = items[i]
        if value is None:
            out.append(arg)
        else:
            out.append("--log-requests" if _BOOLEAN_WORDS[value.strip().lower()] else "--no-log-requests")
        i += 1
    return out


class Options(usage.Options):
    """
    LunaRoute: an LLM API gateway for Claude Code, Codex CLI and the SDKs.
    """

    synopsis = "[options]"
    longdesc = (
        "Proxy the Anthropic and OpenAI APIs with full fidelity, record sessions "
        "and count tokens. Settings come from defaults < config file < environment "
        "< these options."
    )

    optParameters = [
        ["config", "c", None, "Config file (YAML or TOML). Default: $LUNAROUTE_CONFIG, else none."],
        ["dialect", None, None, "API dialect to accept: anthropic, openai or both."],
        ["host", None, None, "Interface to listen on (default 127.0.0.1)."],
        ["port", "p", None, "Port to listen on (default 8081)."],
        ["log-level", None, None, "Log level: debug, info, warn or error."],
    ]

    optFlags = [
        ["log-requests", None, "Print every request and its streamed text."],
        ["no-log-requests", None, "Do not print requests (overrides the config file)."],
        ["print-summary", None, "Print the session statistics summary on shutdown."],
    ]

    def opt_version(self) -> None:
        """Print LunaRoute's version and exit."""
        print(f"lunaroute {lunaroute_version()}")
        raise SystemExit(0)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            super().parseOptions(flag_arguments(options))
        except usage.UsageError as exc:
            # One line: twistd would print its whole --help text (and its
            # own flags, like --nodaemon) before the message.
            raise SystemExit(
                f"{program_name()}: {exc} (see '{program_name()} --help')"
            ) from None

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for option, key in (
            ("dialect", "dialect"),
            ("host", "host"),
            ("port", "port"),
            ("log-level", "log_level"),
        ):
            if self[option] is not None:
                out[key] = self[option]
        if self["log-requests"] and self["no-log-requests"]:
            raise usage.UsageError("--log-requests and --no-log-requests contradict each other")
        if self["log-requests"]:
            out["log_requests"] = True
        elif self["no-log-requests"]:
            out["log_requests"] = False
        if self["print-summary"]:
            out["print_summary"] = True
        return out

    def postOptions(self) -> None:
        from lunaroute.config import load_settings

        overrides = self.overrides()
        try:
            self["settings"] = load_settings(self["config"], env=os.environ, overrides=overrides)
        except ConfigError as exc:
            # One line, no usage dump and no traceback: twistd would print the
            # whole --help text before the message.
            raise SystemExit(f"lunaroute: configuration error: {exc}") from None
        self._no_default_pidfile_in_foreground()

    def _no_default_pidfile_in_foreground(self) -> None:
        """
        In the foreground twistd's C{twistd.pid} only makes a second gateway
        started from the same folder refuse to start ("Another twistd server
        is running"): drop it unless C{--pidfile} named another file.  A
        daemon keeps it, since that is how it is stopped.
        """
        parent = self.parent
        if parent is None:
            return
        if parent.get("nodaemon") and parent.get("pidfile") == TWISTD_DEFAULT_PIDFILE:
            parent["pidfile"] = ""


def makeService(options: Options, reactor: Any = None) -> Any:
    from lunaroute.service import make_gateway_service

    settings = options["settings"]
    if reactor is None:
        # Checked here, before twistd starts logging or daemonizes, so the
        # reason reaches the terminal as one line.  (The listener itself
        # also reports a failure in one line, for the rare race.)
        from lunaroute.proxy.site import cannot_listen

        problem = cannot_listen(settings.host, settings.port)
        if problem:
            raise SystemExit(f"lunaroute: cannot listen on {settings.host}:{settings.port}: {problem}")
        from lunaroute.config import ui_unavailable_reason

        if ui_unavailable_reason(settings) is None:
            problem = cannot_listen(settings.ui.host, settings.ui.port)
            if problem:
                raise SystemExit(
                    f"lunaroute: cannot listen on {settings.ui.host}:{settings.ui.port} (ui): {problem}"
                )
        from twisted.internet import reactor as running_reactor

        running_reactor.callWhenRunning(freeze_startup_heap)
    return make_gateway_service(settings, reactor=reactor, second_signal_cuts=True)


def freeze_startup_heap() -> None:
    """
    Move everything alive once the gateway has started (modules, settings,
    routes, metric families: objects that live as long as the process) out
    of the cyclic garbage collector's reach (C{gc.freeze}), after one last
    collection.  The collections that requests trigger then scan only what
    requests allocate: measured at 31 → 6 µs of collector time per request
    (docs/performance.md, "Hot path and recording, 2026-12-01").
    """
    import gc

    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> None:
    """
    Run the gateway in the foreground, exactly as C{twistd -n lunaroute}.
    """
    from twisted.scripts.twistd import ServerOptions, runApp

    args = list(sys.argv[1:] if argv is None else argv)
    config = ServerOptions()
    try:
        config.parseOptions(["--nodaemon", "--pidfile=", "lunaroute", *args])
    except usage.UsageError as exc:
        raise SystemExit(f"lunaroute-server: {exc} (see 'lunaroute-server --help')") from None
    runApp(config)
