"""
Slowloris over real sockets: one "attacker" address opens many connections
that each send a single header byte; the gateway closes those beyond the
per-client cap at once and keeps serving everyone else.
"""

from __future__ import annotations

import select
import socket
import time

import httpx
import pytest
import pytest_twisted

from lunaroute.testing.helpers import in_thread

ATTACKER = "127.0.0.2"
ATTACKS = 50
CAP = 10


def _second_loopback_address() -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((ATTACKER, 0))
        except OSError:
            return False
    return True


pytestmark = pytest.mark.skipif(
    not _second_loopback_address(), reason=f"{ATTACKER} is not a local address here (Linux routes 127/8)"
)


def _open_slow_connections(port: int) -> list[socket.socket]:
    sockets = []
    for _ in range(ATTACKS):
        sock = socket.socket()
        sock.bind((ATTACKER, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"G")
        sockets.append(sock)
    return sockets


def _closed_by_server(sockets: list[socket.socket], expected: int, limit: float = 10.0) -> int:
    """How many sockets the server closed, waiting (bounded) until C{expected} are."""
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + limit
    while len(closed) < expected and time.monotonic() < deadline:
        waiting = [s for s in sockets if s not in closed]
        readable, _, _ = select.select(waiting, [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(1024)
            except ConnectionResetError:
                data = b""
            if not data:
                closed.add(sock)
    return len(closed)


@pytest_twisted.ensureDeferred
async def test_slow_connections_beyond_the_cap_are_closed_and_others_are_served(fake, start_gateway):
    """
    50 connections from one address dribbling a header: 40 are closed on
    accept (cap 10), the other 10 wait for their head deadline, and a normal
    client on another address gets its answer meanwhile.
    """
    gw = await start_gateway(
        fake, http_server={"max_connections_per_client": CAP, "header_timeout_secs": 60}
    )
    sockets = await in_thread(_open_slow_connections, gw.port)
    try:
        closed = await in_thread(_closed_by_server, sockets, ATTACKS - CAP)
        assert closed == ATTACKS - CAP
        assert gw.service.site.connections_per_client[ATTACKER] == CAP
        response = await in_thread(httpx.get, gw.url + "/healthz", timeout=10)
        assert response.status_code == 200
    finally:
        for sock in sockets:
            sock.close()
