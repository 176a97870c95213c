"""
A minimal, fast fake LLM provider for the benchmark.

The benchmark subtracts "client -> provider" from "client -> gateway ->
provider", so the provider must cost as little CPU as possible: on a 2-core
machine every microsecond it spends is taken from the gateway and the load
generator.  L{lunaroute.testing.fake_provider.FakeProvider} is faithful but
runs the whole twisted.web stack and builds every answer (about 0.4 ms of CPU
a request); this one is a raw Twisted protocol that parses just enough
HTTP/1.1 and answers with bytes prepared at start-up:

  - C{POST /v1/messages} without C{"stream": true}: the Anthropic JSON body of
    C{tests/fixtures/streams/anthropic_thinking_tools.json}
    (C{content-length}, keep-alive);
  - with C{"stream": true}: the Anthropic SSE stream of
    C{anthropic_thinking_tools.sse}, chunked, one HTTP chunk per event.  The
    headers and the first event go out at once; the remaining events follow
    after C{--stream-gap-ms} (default 2 ms), so that the client's time to
    first byte measures the path of the first event alone rather than of the
    whole body;
  - C{POST /v1/chat/completions}: the OpenAI fixtures the same way;
  - C{GET /_bench/connections}: C{{"accepted": N}}, the connections accepted
    since start (this one included), so that C{run.py} can count the
    upstream connections a proxy opened during a run;
  - anything else: a 404 JSON error.

Run: C{python bench/fast_upstream.py --port N} (prints the port on stdout).
Only 127.0.0.1 is served.
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "fixtures", "streams")

# Headers close to what the Anthropic API sends (the gateway copies them all,
# so their number matters to its cost).
_ANTHROPIC_HEADERS = (
    b"request-id: req_011CVbenchFastUpstream00000\r\n"
    b"anthropic-organization-id: 00000000-0000-4000-8000-0000000bench0\r\n"
    b"anthropic-ratelimit-requests-limit: 4000\r\n"
    b"anthropic-ratelimit-requests-remaining: 3999\r\n"
    b"anthropic-ratelimit-input-tokens-limit: 400000\r\n"
    b"anthropic-ratelimit-output-tokens-limit: 400000\r\n"
    b"via: 1.1 google\r\n"
)
_OPENAI_HEADERS = (
    b"x-request-id: req_benchfastupstream0000000000000\r\n"
    b"openai-organization: bench-org\r\n"
    b"openai-processing-ms: 1\r\n"
    b"openai-version: 2020-10-01\r\n"
    b"x-ratelimit-limit-requests: 10000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\n"
)

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


def _read_fixture(name: str) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as handle:
        return handle.read()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse_events(raw: bytes) -> list[bytes]:
    """The stream split into whole events, each ending with its blank line."""
    text = raw.replace(b"\r\n", b"\n").strip(b"\n")
    return [event + b"\n\n" for event in text.split(b"\n\n") if event.strip()]


class Answers:
    """Every response the upstream can give, as prepared bytes."""

    def __init__(self) -> None:
        self.json: dict[str, bytes] = {}
        self.stream_head: dict[str, bytes] = {}
        self.stream_rest: dict[str, bytes] = {}
        self.accepted = 0  # connections accepted since start
        for route, prefix, extra in (
            (b"/v1/messages", "anthropic_thinking_tools", _ANTHROPIC_HEADERS),
            (b"/v1/chat/completions", "openai_chat_tools", _OPENAI_HEADERS),
        ):
            key = route.decode()
            body = _read_fixture(prefix + ".json").strip()
            self.json[key] = (
                b"HTTP/1.1 200 OK\r\n"
                b"content-type: application/json\r\n"
                + extra
                + b"content-length: %d\r\n\r\n" % len(body)
                + body
            )
            events = _sse_events(_read_fixture(prefix + ".sse"))
            self.stream_head[key] = (
                b"HTTP/1.1 200 OK\r\n"
                b"content-type: text/event-stream; charset=utf-8\r\n"
                b"cache-control: no-cache\r\n"
                + extra
                + b"transfer-encoding: chunked\r\n\r\n"
                + _chunk(events[0])
            )
            self.stream_rest[key] = b"".join(_chunk(e) for e in events[1:]) + b"0\r\n\r\n"
        body = b'{"type":"error","error":{"type":"not_found_error","message":"not found"}}'
        self.not_found = (
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )


class UpstreamProtocol(Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order."""

    def __init__(self, answers: Answers, gap: float) -> None:
        self.answers = answers
        self.gap = gap
        self.buffer = b""
        self.busy = False  # a stream's tail is still to be sent
        self.closed = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.answers.accepted += 1

    def connectionLost(self, reason: object = None) -> None:
        self.closed = True

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        while not self.busy and not self.closed:
            request = self._take_request()
            if request is None:
                return
            self._answer(*request)

    def _take_request(self) -> tuple[bytes, bytes, bytes, bool] | None:
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self.transport.loseConnection()
            return None
        head = buf[:end]
        lines = head.split(b"\r\n")
        try:
            method, target, _version = lines[0].split(b" ", 2)
        except ValueError:
            self.transport.loseConnection()
            return None
        length = 0
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        start = end + 4
        if chunked:
            parsed = _dechunk(buf, start)
            if parsed is None:
                return None
            body, after = parsed
        else:
            if length > MAX_BODY:
                self.transport.loseConnection()
                return None
            if len(buf) - start < length:
                return None
            body, after = buf[start : start + length], start + length
        self.buffer = buf[after:]
        return method, target.split(b"?", 1)[0], body, close

    def _answer(self, method: bytes, path: bytes, body: bytes, close: bool) -> None:
        key = path.decode("latin-1")
        if method == b"GET" and path == b"/_bench/connections":
            count = b'{"accepted":%d}' % self.answers.accepted
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(count), count)
            )
        elif method != b"POST" or key not in self.answers.json:
            self.transport.write(self.answers.not_found)
        elif b'"stream":true' in body or b'"stream": true' in body:
            self.transport.write(self.answers.stream_head[key])
            rest = self.answers.stream_rest[key]
            if self.gap > 0:
                self.busy = True
                reactor.callLater(self.gap, self._stream_tail, rest, close)
                return
            self.transport.write(rest)
        else:
            self.transport.write(self.answers.json[key])
        if close:
            self.transport.loseConnection()

    def _stream_tail(self, rest: bytes, close: bool) -> None:
        self.busy = False
        if self.closed:
            return
        self.transport.write(rest)
        if close:
            self.transport.loseConnection()
            return
        self._process()


def _dechunk(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    """A complete chunked body at C{pos}: (body, end offset), or None."""
    parts = []
    while True:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            return None
        size = int(buf[pos:nl].split(b";", 1)[0], 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", nl)
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 4
        data_end = nl + 2 + size
        if len(buf) < data_end + 2:
            return None
        parts.append(buf[nl + 2 : data_end])
        pos = data_end + 2


class UpstreamFactory(Factory):
    noisy = False

    def __init__(self, gap: float) -> None:
        self.answers = Answers()
        self.gap = gap

    def buildProtocol(self, addr: object) -> UpstreamProtocol:
        return UpstreamProtocol(self.answers, self.gap)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--stream-gap-ms",
        type=float,
        default=2.0,
        help="delay between a stream's first event and the rest (0 = none)",
    )
    args = parser.parse_args(argv)
    port = reactor.listenTCP(
        args.port, UpstreamFactory(args.stream_gap_ms / 1000.0), backlog=1024, interface="127.0.0.1"
    )
    sys.stdout.write(f"{port.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
