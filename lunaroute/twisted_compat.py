"""
The few places LunaRoute needs something Twisted has no public API for.

Each is one small function here, and tests/test_twisted_compat.py fails if a
Twisted release renames what it relies on, so an upgrade breaks a test, not
the gateway.  Nothing else in LunaRoute touches a private Twisted name.
"""

from __future__ import annotations

from typing import Any

from twisted.web import client

__all__ = ["clear_exit_signal", "idle_connection_count", "quiet_pool"]


class _QuietHTTP11ClientFactory(client._HTTP11ClientFactory):
    # Twisted logs "Starting factory ..." for every new pooled connection.
    noisy = False


def quiet_pool(pool: client.HTTPConnectionPool) -> None:
    """
    Make C{pool} open its connections without the "Starting factory" /
    "Stopping factory" log lines Twisted writes for each (one per upstream
    connection is noise in the gateway's log).
    """
    pool._factory = _QuietHTTP11ClientFactory


def idle_connection_count(pool: client.HTTPConnectionPool) -> int:
    """
    How many idle connections C{pool} keeps for reuse (for the
    C{http_pool_connections_idle} metric).  The pool keeps them in a dict of
    lists keyed by C{(scheme, host, port)}.
    """
    connections = pool._connections
    return sum(len(c) for c in connections.values())


def clear_exit_signal(reactor: Any) -> None:
    """
    twistd re-raises the signal that stopped the reactor when it exits, so a
    graceful SIGTERM stop ends with status 143.  After a stop that finished
    its work the exit should be clean (status 0): forget the signal.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None
