"""
What translating Claude Code to an OpenAI-compatible model costs, on this thread.

    python bench/translate_cost.py [--number N]

Measures with timeit (best of 5 repeats, N loops each):

  - C{request}: L{messages_request_to_chat} on the real Claude Code request
    fixture (tests/fixtures/clients/claude_code_messages_tool_result_request.json,
    24 tools, ~90 KB), plus encoding the result as JSON;
  - C{stream event}: L{ChatToAnthropicStream.feed} over every chunk of
    tests/fixtures/streams/openai_chat_tools.sse (text, two parallel tool
    calls, usage, [DONE]), divided by the number of chunks: the time added
    per streamed event;
  - the same for the other directions' stream converters: the Anthropic
    stream fixture (thinking, text, two interleaved tool calls) into Chat
    chunks and into Responses events, and the Chat fixture into Responses
    events; and their request translations (the real Codex request into
    Messages and into Chat, the Claude Code request's Chat form back into
    Messages).

The figures are written by hand to docs/translation.md; the target is under
50 us per streamed event.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lunaroute.dialects.sse import SSEParser
from lunaroute.dialects.translate.anthropic_to_chat import (
    ChatToAnthropicStream,
    dumps_request,
    messages_request_to_chat,
)
from lunaroute.dialects.translate.base import StreamTranslator
from lunaroute.dialects.translate.chat_to_anthropic import AnthropicToChatStream, chat_request_to_messages
from lunaroute.dialects.translate.responses_to_anthropic import (
    AnthropicToResponsesStream,
    responses_request_to_messages,
)
from lunaroute.dialects.translate.responses_to_chat import ResponsesEventWriter, responses_request_to_chat

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def events(name: str) -> list[Any]:
    """A stream fixture as parsed data lines (and the [DONE] marker)."""
    sse = SSEParser()
    parsed = sse.feed((FIXTURES / "streams" / name).read_bytes()) + sse.close()
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in parsed]


def per_event(make: Callable[[], StreamTranslator], chunks: list[Any], number: int) -> float:
    """Seconds per event to feed ``chunks`` through a fresh converter (best of 5)."""

    def run() -> None:
        converter = make()
        for chunk in chunks:
            converter.feed(chunk)
        converter.close()

    return min(timeit.repeat(run, number=number, repeat=5)) / number / len(chunks)


def per_call(fn: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def other_directions(number: int) -> None:
    """The Chat -> Anthropic and Responses directions (issue 16, second part)."""
    anthropic = events("anthropic_thinking_tools.sse")
    chat = events("openai_chat_tools.sse")
    streams = [
        ("Anthropic -> Chat chunks", lambda: AnthropicToChatStream("gpt-4.1"), anthropic),
        ("Anthropic -> Responses events", lambda: AnthropicToResponsesStream("gpt-5.5"), anthropic),
        ("Chat -> Responses events", lambda: ResponsesEventWriter("gpt-5.5"), chat),
    ]
    for label, make, chunks in streams:
        print(f"stream {label}: {per_event(make, chunks, number) * 1e6:.1f} us per event ({len(chunks)} events)")
    codex = json.loads((FIXTURES / "clients" / "codex_responses_function_call_output_request.json").read_text())
    claude = json.loads((FIXTURES / "clients" / "claude_code_messages_tool_result_request.json").read_text())
    as_chat = messages_request_to_chat(claude, model="gpt-4.1")
    requests = [
        ("Codex request -> Messages", lambda: dumps_request(responses_request_to_messages(codex, "claude-sonnet-4-5"))),
        ("Codex request -> Chat", lambda: dumps_request(responses_request_to_chat(codex, "qwen3-coder"))),
        ("Chat request (Claude Code's, 24 tools) -> Messages",
         lambda: dumps_request(chat_request_to_messages(as_chat, "claude-sonnet-4-5"))),
    ]
    for label, fn in requests:
        print(f"request {label}: {per_call(fn, max(1, number // 10)) * 1e6:.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()

    body = json.loads((FIXTURES / "clients" / "claude_code_messages_tool_result_request.json").read_text())
    sse = SSEParser()
    events = sse.feed((FIXTURES / "streams" / "openai_chat_tools.sse").read_bytes()) + sse.close()
    chunks: list[Any] = [e.data if e.data == "[DONE]" else json.loads(e.data) for e in events]

    def translate_request() -> None:
        dumps_request(messages_request_to_chat(body, model="gpt-4.1"))

    def translate_stream() -> None:
        converter = ChatToAnthropicStream("claude-opus-4-8")
        for chunk in chunks:
            converter.feed(chunk)

    number = max(1, args.number // 10)
    request = min(timeit.repeat(translate_request, number=number, repeat=5)) / number
    stream = min(timeit.repeat(translate_stream, number=args.number, repeat=5)) / args.number
    print(f"request ({len(json.dumps(body)) // 1024} KB, {len(body['tools'])} tools): {request * 1e6:.0f} us")
    print(f"stream: {stream / len(chunks) * 1e6:.1f} us per event ({len(chunks)} events)")
    other_directions(args.number)


if __name__ == "__main__":
    main()
