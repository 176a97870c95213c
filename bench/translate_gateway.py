"""
What translation adds inside the gateway: a Claude Code sized request
translated to Chat Completions versus the same request passed through, and
the cost per streamed event of the converting relay versus the plain one.

    python bench/translate_gateway.py [--requests N] [--events N]

In-process, no sockets, so only the gateway's own work is measured: the
L{GatewayApp} behind C{treq.testing.StubTreq}, with an in-memory provider
that answers at once with a canned body (an Anthropic message for the
passthrough, a chat.completion for the translated run; SSE streams of N
text chunks for the stream runs).  Runs are interleaved in rounds so drift
hits both alike.  Prints the p50/p90 of each and the difference:

  - request: POST /v1/messages with the real Claude Code request fixture
    (tests/fixtures/clients/claude_code_messages_tool_result_request.json,
    24 tools), JSON answer (target: p50 under 1 ms above passthrough);
  - stream: one streamed answer of N events; (translated - passthrough) / N
    is the added cost per event (target: under 50 us).

Numbers go to docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from lunaroute.config import settings_from_mapping
from lunaroute.proxy.app import GatewayApp
from lunaroute.testing.providers import CannedProvider, CannedResponse

FIXTURE = (
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "clients" / "claude_code_messages_tool_result_request.json"
)

ANTHROPIC_MESSAGE = json.dumps(
    {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 9000, "output_tokens": 3},
    }
).encode()
CHAT_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-5",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9000, "completion_tokens": 3},
    }
).encode()


def anthropic_stream(events: int) -> bytes:
    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    out = [ev("message_start", {"type": "message_start", "message": json.loads(ANTHROPIC_MESSAGE) | {"content": []}})]
    out.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}))
    for i in range(events):
        out.append(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": f"word{i} "}}))
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": events}}))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def chat_stream(events: int) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-5",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(data)}\n\n".encode()

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": f"word{i} "}) for i in range(events)]
    out.append(chunk({}, "stop"))
    usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-5", "choices": [],
             "usage": {"prompt_tokens": 9000, "completion_tokens": events}}
    out.append(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
    return b"".join(out)


def _answer(body: bytes, content_type: bytes, pieces: int) -> CannedResponse:
    """The provider's answer: the body in one read, or one read per SSE event."""
    # One network read per event, as a provider's stream arrives.
    reads = [body] if pieces <= 1 else [frame + b"\n\n" for frame in body.split(b"\n\n")[:-1]]
    return CannedResponse(200, Headers({b"content-type": [content_type]}), reads)


def _gateway(translated: bool, answer: CannedResponse) -> StubTreq:
    if translated:
        providers = {"anthropic": {"enabled": False}, "openai": {"base_url": "http://o.test/v1", "api_key": "sk-x"}}
    else:
        providers = {"anthropic": {"base_url": "http://a.test", "api_key": "sk-ant-x"}, "openai": {"enabled": False}}
    settings = settings_from_mapping({"providers": providers}, env={})
    gateway = GatewayApp(
        settings, {n: CannedProvider(p, answer) for n, p in settings.providers.items() if p.enabled}, Clock()
    )
    return StubTreq(gateway.resource())


def _timed(stub: StubTreq, body: bytes) -> float:
    out: list[Any] = []
    started = time.perf_counter()
    d = stub.request("POST", "http://gateway.test/v1/messages", data=body,
                     headers={b"content-type": [b"application/json"], b"x-api-key": [b"sk-ant-client"]})
    d.addCallback(lambda r: treq.content(r).addCallback(out.append))
    stub.flush()
    elapsed = time.perf_counter() - started
    assert out and out[0], "no answer"
    return elapsed


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _compare(label: str, plain: StubTreq, translated: StubTreq, body: bytes, rounds: int) -> tuple[float, float]:
    for _ in range(20):  # warm up both
        _timed(plain, body)
        _timed(translated, body)
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(_timed(plain, body))
        b.append(_timed(translated, body))
    p50a, p50b = statistics.median(a), statistics.median(b)
    print(f"{label}: passthrough p50 {p50a * 1e3:.3f} ms p90 {_pct(a, 0.9) * 1e3:.3f} ms; "
          f"translated p50 {p50b * 1e3:.3f} ms p90 {_pct(b, 0.9) * 1e3:.3f} ms; "
          f"added p50 {(p50b - p50a) * 1e3:.3f} ms")
    return p50a, p50b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()

    fixture = json.loads(FIXTURE.read_text())
    large = json.dumps(fixture).encode()
    print(f"request body: {len(large) // 1024} KB, {len(fixture['tools'])} tools, {len(fixture['messages'])} messages")
    _compare(
        "JSON request", _gateway(False, _answer(ANTHROPIC_MESSAGE, b"application/json", 1)),
        _gateway(True, _answer(CHAT_COMPLETION, b"application/json", 1)), large, args.requests,
    )
    small = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]}).encode()
    events = args.events
    a, b = _compare(
        f"stream of {events} events",
        _gateway(False, _answer(anthropic_stream(events), b"text/event-stream", events)),
        _gateway(True, _answer(chat_stream(events), b"text/event-stream", events)),
        small, max(20, args.requests // 10),
    )
    print(f"added per streamed event: {(b - a) / events * 1e6:.1f} us")


if __name__ == "__main__":
    main()
