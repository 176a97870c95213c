"""
C{lunaroute-server}: the console script users of the original LunaRoute know.

With no sub-command it runs the gateway in the foreground, with the same
options as C{twistd -n lunaroute}.
"""

from __future__ import annotations

import sys


def refresh_plugin_cache() -> None:
    """
    Let Twisted scan for plugins once, so it writes C{dropin.cache} with
    LunaRoute's plugin in it (a wheel install cannot run code to do this).
    """
    from twisted.plugin import IPlugin, getPlugins

    list(getPlugins(IPlugin))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    from lunaroute.tap import main as run_server

    refresh_plugin_cache()
    run_server(args)


if __name__ == "__main__":
    main()
