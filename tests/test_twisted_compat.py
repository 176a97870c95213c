"""
The private Twisted names LunaRoute relies on, each used in exactly one
function of L{lunaroute.twisted_compat}.  If a Twisted release renames one,
these tests fail (instead of the gateway failing in production).
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet.task import Clock
from twisted.web import client

from lunaroute import twisted_compat

PACKAGE = Path(twisted_compat.__file__).parent


def test_quiet_pool_replaces_the_pool_factory_with_a_silent_one():
    """The pool builds its per-connection factory from C{_factory}; ours is not noisy."""
    pool = client.HTTPConnectionPool(Clock(), persistent=True)
    assert issubclass(pool._factory, client._HTTP11ClientFactory)
    twisted_compat.quiet_pool(pool)
    assert pool._factory.noisy is False
    assert issubclass(pool._factory, client._HTTP11ClientFactory)


def test_idle_connection_count_reads_the_pools_connection_lists():
    """Idle connections live in C{pool._connections}: a dict of lists keyed by origin."""
    pool = client.HTTPConnectionPool(Clock(), persistent=True)
    assert isinstance(pool._connections, dict)
    assert twisted_compat.idle_connection_count(pool) == 0
    pool._connections[(b"http", b"h", 80)] = [object(), object()]
    assert twisted_compat.idle_connection_count(pool) == 2


def test_the_reactor_remembers_the_exit_signal_and_we_can_clear_it():
    """twistd reads C{reactor._exitSignal} to re-raise the stop signal; clearing it means exit 0."""
    from twisted.internet import base

    assert hasattr(base.ReactorBase, "_exitSignal")

    class FakeReactor:
        _exitSignal = 15

    reactor = FakeReactor()
    twisted_compat.clear_exit_signal(reactor)
    assert reactor._exitSignal is None


def test_no_other_module_uses_a_private_twisted_name():
    """Only twisted_compat may touch Twisted's private names."""
    private = re.compile(
        r"_HTTP11ClientFactory|\._factory\b|\._connections\b|_exitSignal|_waitingForPort|"
        r"\._disconnected\b|from twisted[\w.]* import [^\n]*\b_[A-Za-z]"
    )
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "twisted_compat.py" and private.search(path.read_text())
    ]
    assert offenders == []
