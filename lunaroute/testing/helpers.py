"""
Small helpers for tests and hand-driven runs that drive LunaRoute from
blocking code (the official SDKs, subprocesses) while the reactor runs.

They live in the package, beside the fake provider, so the test modules import
them like any other module instead of importing C{tests/conftest.py} (which
pytest loads under its own name and which is not importable once the package
is installed elsewhere, as under tox).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

__all__ = ["free_port", "free_ports", "in_thread", "twistd_lists_plugin", "wait_until_healthy"]


def free_port() -> int:
    """A TCP port nothing listens on right now (for subprocess servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """Run a blocking call (an SDK request) off the reactor thread."""
    return deferToThread(fn, *args, **kwargs)


def free_ports(count: int) -> list[int]:
    """
    C{count} distinct TCP ports nothing listens on right now: all are bound
    at once before any is released, so the same port is never handed out
    twice (as separate L{free_port} calls in a row may).
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_until_healthy(url: str, proc: Any, timeout: float = 30) -> None:
    """
    Block until C{url}/healthz answers 200, for a gateway started as the
    subprocess C{proc} (a L{subprocess.Popen} with text stdout); fail with
    its output if it exits first, or after C{timeout} seconds.
    """
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited early: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not start listening")


def twistd_lists_plugin(twistd: str) -> bool:
    """Whether C{twistd --help} lists the lunaroute plugin (the package is installed where it looks)."""
    import subprocess

    try:
        out = subprocess.run([twistd, "--help"], capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return "lunaroute" in out.stdout
