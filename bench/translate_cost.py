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
    per streamed event.

The figures are written by hand to docs/translation.md; the target is under
50 us per streamed event.
"""

from __future__ import annotations

import argparse
import json
import timeit
from pathlib import Path
from typing import Any

from lunaroute.dialects.sse import SSEParser
from lunaroute.dialects.translate.anthropic_to_chat import (
    ChatToAnthropicStream,
    dumps_request,
    messages_request_to_chat,
)

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


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


if __name__ == "__main__":
    main()
