"""
The request log (logging.log_requests): a boxed summary per request and the
streamed text as it arrives, with secrets masked at debug level.
"""

from __future__ import annotations

import io

import pytest_twisted

from lunaroute.proxy.reqlog import RequestLogPrinter
from lunaroute.testing.helpers import in_thread


@pytest_twisted.ensureDeferred
async def test_streamed_request_is_logged_with_text_usage_and_stop_reason(fake, start_gateway):
    """A streamed request prints its summary, the text as it arrives, tool calls, usage and stop reason."""
    gw = await start_gateway(fake, logging={"log_requests": True, "level": "debug"})
    out = io.StringIO()
    gw.app.request_log = RequestLogPrinter(out=out, debug=True)
    client = gw.anthropic(api_key="sk-ant-api03-supersecretvalue42")

    def run():
        with client.messages.stream(
            model="claude-sonnet-4-5-tools", max_tokens=50,
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
            messages=[{"role": "user", "content": "hi"}],
        ) as stream:
            return stream.get_final_message()

    await in_thread(run)
    text = out.getvalue()
    assert "LunaRoute request" in text
    assert "model     claude-sonnet-4-5-tools" in text
    assert "streaming yes" in text
    assert "messages  1" in text
    assert "tool      get_weather" in text
    assert "usage     in=" in text
    assert "stop      tool_use" in text
    assert "timings   " in text
    assert "supersecretvalue42" not in text


def test_stream_text_is_printed_as_it_arrives():
    """Text deltas are written when their chunk arrives, before the stream ends."""
    from lunaroute.exchange import Exchange, Timings

    out = io.StringIO()
    printer = RequestLogPrinter(out=out)
    exchange = Exchange(
        request_id="r1", session_id="s1", listener="anthropic", kind="conversation",
        dialect="anthropic", path="/v1/messages", method="POST", timings=Timings(received=0.0),
        streaming=True, request_json={"messages": []},
    )
    printer.started(exchange)
    printer.chunk(
        exchange,
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hel',
        None,
    )
    assert "Hel" not in out.getvalue().split("└")[-1]
    printer.chunk(exchange, b'lo"}}\n\n', None)
    assert out.getvalue().endswith("Hello")
