"""
HTTP/1.1 clients for the benchmark: a blocking keep-alive client that times
one request at a time (latency, time to first body byte), and an asyncio
load generator with an exact request count (memory soak, and throughput when
wrk is not installed).

Both speak just enough HTTP/1.1 for the answers the benchmark gets
(C{content-length} or chunked bodies) and only ever connect to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HOST = "127.0.0.1"


def build_request(
    port: int,
    path: str,
    body: bytes,
    headers: Sequence[tuple[str, str]] = (),
    method: str = "POST",
) -> bytes:
    """The raw bytes of one keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _chunked_end(buf: bytearray | bytes, pos: int) -> tuple[int, int]:
    """
    Walk the chunked body in C{buf} from C{pos}.  Returns (end, pos): C{end}
    is the offset just past the body when it is complete, else -1, and
    C{pos} where to resume once more bytes arrived.
    """
    while True:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            return -1, pos
        size = int(bytes(buf[pos:nl]).split(b";", 1)[0], 16)
        if size == 0:
            if buf[nl + 2 : nl + 4] == b"\r\n":
                return nl + 4, pos
            trailer_end = buf.find(b"\r\n\r\n", nl + 2)
            if trailer_end < 0:
                return -1, pos
            return trailer_end + 4, pos
        nxt = nl + 2 + size + 2
        if len(buf) < nxt:
            return -1, pos
        pos = nxt


class ProtocolError(Exception):
    pass


class ClosedBeforeAnswer(ProtocolError):
    """The server closed the connection before sending any byte of the answer."""


@dataclass
class Timed:
    """One timed request: status, seconds to first body byte and to the end."""

    status: int
    ttfb: float
    total: float
    body_bytes: int


class BlockingClient:
    """
    One persistent connection; C{request()} sends a request and reads the
    whole answer, timing it with C{perf_counter}.  Reconnects (untimed) when
    the server closed the connection.
    """

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.reconnects = 0

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _closed_by_peer(self) -> bool:
        """Whether the server closed this idle connection (a peek, no wait)."""
        assert self.sock is not None
        # select() first: with a timeout set, socket.recv() waits for data
        # whatever its flags.
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def request(self, raw: bytes) -> Timed:
        """
        Send C{raw} and read the whole answer.  Servers close idle keep-alive
        connections (uvicorn and Node after 5 s) while other targets of an
        interleaved round run: such a connection is replaced, untimed, and
        a request the server dropped before answering is sent once more on
        a new connection (timed from its new start).
        """
        if self.sock is not None and self._closed_by_peer():
            self.close()
            self.reconnects += 1
        reused = self.sock is not None
        try:
            return self._request_once(raw)
        except (ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            self.close()
            self.reconnects += 1
            return self._request_once(raw)

    def _request_once(self, raw: bytes) -> Timed:
        if self.sock is None:
            self.sock = self._connect()
        sock = self.sock
        buf = bytearray()
        head_end = -1
        t_first = 0.0
        recv = sock.recv_into
        chunk = bytearray(65536)
        view = memoryview(chunk)
        t0 = time.perf_counter()
        sock.sendall(raw)
        status = 0
        length = -1
        chunked = False
        close = False
        body_start = 0
        scan = 0
        while True:
            n = recv(view)
            now = time.perf_counter()
            if n == 0:
                self.close()
                if not buf:
                    raise ClosedBeforeAnswer("connection closed before the answer")
                raise ProtocolError("connection closed mid-response")
            buf += view[:n]
            if head_end < 0:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                body_start = scan = head_end + 4
                head = bytes(buf[:head_end]).split(b"\r\n")
                status = int(head[0].split(b" ", 2)[1])
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding":
                        chunked = b"chunked" in value.lower()
                    elif name == b"connection":
                        close = value.strip().lower() == b"close"
                if not chunked and length < 0:
                    length = 0 if status in (204, 304) else -1
                    if length < 0:
                        raise ProtocolError("response without length")
            if not t_first and len(buf) > body_start:
                t_first = now
            if chunked:
                end, scan = _chunked_end(buf, scan)
                if end >= 0:
                    break
            elif len(buf) - body_start >= length:
                end = body_start + length
                break
        if not t_first:
            t_first = now
        if end != len(buf):
            self.close()
            raise ProtocolError("unexpected bytes after the response")
        if close:
            self.close()
            self.reconnects += 1
        return Timed(status, t_first - t0, now - t0, end - body_start)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


def summarize_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min/max of seconds, in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50) * 1000,
        "p90": percentile(ordered, 90) * 1000,
        "p99": percentile(ordered, 99) * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
        "min": ordered[0] * 1000,
        "max": ordered[-1] * 1000,
    }


# --------------------------------------------------------------------------
# asyncio load generator


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    non_2xx: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    chunked = False
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line[:-2].split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            await reader.readexactly(size + 2)
    elif length:
        await reader.readexactly(length)
    return status, close


async def _worker(
    port: int,
    next_request: Callable[[], bytes | None],
    result: LoadResult,
    deadline: float,
    keep_latencies: bool,
) -> None:
    reader = writer = None
    try:
        while time.monotonic() < deadline:
            raw = next_request()
            if raw is None:
                return
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 22)
            t0 = time.perf_counter()
            try:
                writer.write(raw)
                status, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                result.errors += 1
                writer.close()
                reader = writer = None
                continue
            if keep_latencies:
                result.latencies.append(time.perf_counter() - t0)
            result.requests += 1
            if not 200 <= status < 300:
                result.non_2xx += 1
            if close:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run(
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    count: int | None,
    duration: float,
    keep_latencies: bool,
) -> LoadResult:
    result = LoadResult()
    issued = 0

    def next_request() -> bytes | None:
        nonlocal issued
        if count is not None and issued >= count:
            return None
        raw = requests[issued % len(requests)]
        issued += 1
        return raw

    start = time.perf_counter()
    deadline = time.monotonic() + duration
    await asyncio.gather(
        *(_worker(port, next_request, result, deadline, keep_latencies) for _ in range(concurrency))
    )
    result.seconds = time.perf_counter() - start
    return result


def run_load(
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    count: int | None = None,
    duration: float = 60.0,
    keep_latencies: bool = False,
) -> LoadResult:
    """
    Send C{requests} (cycled) over C{concurrency} keep-alive connections until
    C{count} requests were sent, or C{duration} seconds passed, whichever
    comes first.
    """
    return asyncio.run(_run(port, requests, concurrency, count, duration, keep_latencies))
