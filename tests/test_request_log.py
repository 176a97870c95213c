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
async def test_streamed_request_is_logged_with_text_usage_and_stop_reason(fake, start_gateway, capsys):
    """
    With logging.log_requests on, a streamed request prints its summary, the
    text as it arrives, tool calls, usage and stop reason on stdout.
    """
    gw = await start_gateway(fake, logging={"log_requests": True, "level": "debug"})
    client = gw.anthropic(api_key="sk-ant-api03-supersecretvalue42")

    def run():
        with client.messages.stream(
            model="claude-sonnet-4-5-tools", max_tokens=50,
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
            messages=[{"role": "user", "content": "hi"}],
        ) as stream:
            return stream.get_final_message()

    await in_thread(run)
    text = capsys.readouterr().out
    assert "LunaRoute request" in text
    assert "model     claude-sonnet-4-5-tools" in text
    assert "streaming yes" in text
    assert "messages  1" in text
    assert "tool      get_weather" in text
    assert "usage     in=" in text
    assert "stop      tool_use" in text
    assert "timings   " in text
    assert "supersecretvalue42" not in text


@pytest_twisted.ensureDeferred
async def test_a_translated_stream_is_printed_as_it_arrives(fake, start_gateway, capsys):
    """Claude Code on an OpenAI-only gateway: the provider's Chat stream text is printed live, then the summary."""
    gw = await start_gateway(
        fake,
        logging={"log_requests": True},
        providers={"anthropic": {"enabled": False}, "openai": {"api_key": "sk-openai-server-key-123456"}},
    )
    client = gw.anthropic()

    def run():
        with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            return "".join(stream.text_stream)

    assert await in_thread(run) == fake.reply_text
    text = capsys.readouterr().out
    box = text.index("LunaRoute request")
    # Printed live, before the response's summary, and so not repeated in it.
    assert box < text.index(fake.reply_text) < text.index("LunaRoute response")
    assert "text      " not in text
    assert "usage     in=" in text


def test_stream_text_is_printed_as_it_arrives():
    """
    The printer subscribes to the capture's parsed events: text deltas are
    written when the chunk completing their event arrives, before the stream ends.
    """
    from lunaroute.dialects.capture import ResponseCapture
    from lunaroute.exchange import Exchange, Timings

    out = io.StringIO()
    printer = RequestLogPrinter(out=out)
    exchange = Exchange(
        request_id="r1", session_id="s1", listener="anthropic", kind="conversation",
        dialect="anthropic", path="/v1/messages", method="POST", timings=Timings(received=0.0),
        streaming=True, request_json={"messages": []},
    )
    printer.started(exchange)
    capture = ResponseCapture(
        "anthropic", streaming=True, content_type="text/event-stream",
        on_event=printer.listener(exchange),
    )
    capture.feed(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hel'
    )
    assert "Hel" not in out.getvalue().split("\u2518")[-1].split("\u2514")[-1]
    capture.feed(b'lo"}}\n\n')
    assert out.getvalue().endswith("Hello")


def test_non_streaming_requests_get_no_event_listener():
    """Only streams print as they go; other responses are printed in the final box."""
    from lunaroute.exchange import Exchange, Timings

    exchange = Exchange(
        request_id="r1", session_id="s1", listener="anthropic", kind="conversation",
        dialect="anthropic", path="/v1/messages", method="POST", timings=Timings(received=0.0),
    )
    assert RequestLogPrinter(out=io.StringIO()).listener(exchange) is None
