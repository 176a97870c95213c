"""
The twistd entry point: command-line options and C{makeService}.

C{twistd -n lunaroute --config conf/config.yaml} parses these options, and
C{lunaroute-server} reuses them.  A bad configuration ends the process with a
single readable line and exit status 1, never a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.python import usage

from lunaroute.errors import ConfigError


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
        ["log-requests", None, None, "Print every request and streamed text: true or false."],
    ]

    optFlags = [
        ["print-summary", None, "Print the session statistics summary on shutdown."],
    ]

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for option, key in (
            ("dialect", "dialect"),
            ("host", "host"),
            ("port", "port"),
            ("log-level", "log_level"),
            ("log-requests", "log_requests"),
        ):
            if self[option] is not None:
                out[key] = self[option]
        if self["print-summary"]:
            out["print_summary"] = True
        return out

    def postOptions(self) -> None:
        from lunaroute.config import load_settings

        try:
            self["settings"] = load_settings(
                self["config"], env=os.environ, overrides=self.overrides()
            )
        except ConfigError as exc:
            # One line, no usage dump and no traceback: twistd would print the
            # whole --help text before the message.
            raise SystemExit(f"lunaroute: configuration error: {exc}") from None


def makeService(options: Options, reactor: Any = None) -> Any:
    from lunaroute.service import make_gateway_service

    return make_gateway_service(options["settings"], reactor=reactor, second_signal_cuts=True)


def main(argv: list[str] | None = None) -> None:
    """
    Run the gateway in the foreground, exactly as C{twistd -n lunaroute}.
    """
    from twisted.scripts.twistd import run

    args = list(sys.argv[1:] if argv is None else argv)
    sys.argv = ["lunaroute-server", "--nodaemon", "--pidfile=", "lunaroute", *args]
    run()
