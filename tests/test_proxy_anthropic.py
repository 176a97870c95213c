"""
The Anthropic side of the gateway, driven by the official C{anthropic} SDK
and by raw HTTP where byte-level fidelity is the point.
"""

from __future__ import annotations

import gzip
import json
import threading

import anthropic
import httpx
import pytest
import pytest_twisted
from twisted.internet import defer

from lunaroute.testing.helpers import in_thread


@pytest_twisted.ensureDeferred
async def test_non_streaming_message_through_sdk(gateway, fake):
    """A plain messages.create gets the provider's answer, with the client's key forwarded."""
    client = gateway.anthropic()
    message = await in_thread(
        client.messages.create,
        model="claude-sonnet-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello"}],
    )
    assert message.content[0].text == fake.reply_text
    assert message.model == "claude-sonnet-4-5"
    seen = fake.requests[-1]
    assert seen.path == "/v1/messages"
    # Recent SDKs send the key as a bearer token, older ones as x-api-key.
    sent = seen.header("x-api-key") or seen.header("authorization")
    assert sent.endswith("sk-ant-client-key-123456789")
    assert seen.headers["anthropic-version"]


@pytest_twisted.ensureDeferred
async def test_request_body_and_query_are_forwarded_byte_for_byte(gateway, fake):
    """Odd spacing, key order and the ?beta=true query reach the provider unchanged."""
    body = b'{ "stream":false,"model" : "claude-x",  "max_tokens":5,"messages":[{"role":"user","content":"caf\\u00e9 \xe2\x98\x95"}]}'
    response = await in_thread(
        httpx.post,
        gateway.url + "/v1/messages?beta=true",
        content=body,
        headers={
            "content-type": "application/json",
            "x-api-key": "k",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
            "x-claude-code-session-id": "abc",
            "connection": "keep-alive, x-hop",
            "x-hop": "must-not-pass",
            "te": "trailers",
        },
    )
    assert response.status_code == 200
    seen = fake.requests[-1]
    assert seen.body == body
    assert seen.query == b"beta=true"
    assert seen.headers["anthropic-beta"] == [
        "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    ]
    assert seen.headers["x-claude-code-session-id"] == ["abc"]
    assert "x-hop" not in seen.headers
    assert "te" not in seen.headers


@pytest_twisted.ensureDeferred
async def test_server_key_replaces_client_credentials(fake, start_gateway):
    """With a server key configured, the client's x-api-key and Authorization are replaced."""
    gw = await start_gateway(fake, providers={"anthropic": {"api_key": "sk-ant-server-999999999"}})
    client = gw.anthropic(
        api_key="sk-ant-client", default_headers={"authorization": "Bearer client-token"}
    )
    await in_thread(
        client.messages.create,
        model="claude-sonnet-4-5",
        max_tokens=10,
        messages=[{"role": "user", "content": "hi"}],
    )
    seen = fake.requests[-1]
    assert seen.headers["x-api-key"] == ["sk-ant-server-999999999"]
    assert "authorization" not in seen.headers


@pytest_twisted.ensureDeferred
async def test_bearer_token_is_forwarded_unchanged(gateway, fake):
    """ANTHROPIC_AUTH_TOKEN-style clients keep their Authorization header."""
    import anthropic as sdk

    client = sdk.Anthropic(base_url=gateway.url, auth_token="oauth-token-abc", max_retries=0)
    await in_thread(
        client.messages.create,
        model="claude-sonnet-4-5",
        max_tokens=10,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert fake.requests[-1].headers["authorization"] == ["Bearer oauth-token-abc"]


@pytest_twisted.ensureDeferred
async def test_streaming_with_tools_and_thinking(gateway, fake):
    """The SDK's stream helper rebuilds thinking (with signature) and tool_use input."""
    client = gateway.anthropic()

    def run():
        with client.messages.stream(
            model="claude-opus-4-1-thinking-tools",
            max_tokens=1000,
            thinking={"type": "enabled", "budget_tokens": 500},
            tools=[
                {
                    "name": "get_weather",
                    "description": "weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ],
            messages=[{"role": "user", "content": "weather in Paris?"}],
        ) as stream:
            return list(stream), stream.get_final_message()

    events, final = await in_thread(run)
    kinds = [block.type for block in final.content]
    assert "thinking" in kinds
    thinking = next(b for b in final.content if b.type == "thinking")
    assert thinking.signature
    tool = next(b for b in final.content if b.type == "tool_use")
    assert isinstance(tool.input, dict) and tool.input
    assert final.stop_reason == "tool_use"
    assert any(e.type == "content_block_delta" for e in events)


@pytest_twisted.ensureDeferred
async def test_stream_headers_and_bytes_relayed(gateway, fake):
    """A raw stream comes back with the provider's SSE content type and the exact event bytes."""
    body = json.dumps(
        {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": True,
         "messages": [{"role": "user", "content": "hi"}]}
    )

    def run():
        direct = httpx.post(
            fake.url + "/v1/messages", content=body,
            headers={"content-type": "application/json", "x-api-key": "k"},
        )
        via = httpx.post(
            gateway.url + "/v1/messages", content=body,
            headers={"content-type": "application/json", "x-api-key": "k"},
        )
        return direct, via

    direct, via = await in_thread(run)
    assert via.headers["content-type"].startswith("text/event-stream")
    assert via.headers.get("request-id")

    def without_ids(text):
        return [line for line in text.splitlines() if '"id"' not in line]

    assert without_ids(via.text) == without_ids(direct.text)
    assert "event: message_stop" in via.text


@pytest_twisted.ensureDeferred
async def test_count_tokens(gateway, fake):
    """count_tokens is forwarded and answered."""
    client = gateway.anthropic()
    result = await in_thread(
        client.messages.count_tokens,
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "count me"}],
    )
    assert result.input_tokens > 0
    assert fake.requests[-1].path == "/v1/messages/count_tokens"


@pytest_twisted.ensureDeferred
async def test_provider_error_status_and_body_pass_through(gateway, fake):
    """A 529 stays a 529 with the provider's JSON."""
    client = gateway.anthropic()
    with pytest.raises(anthropic.APIStatusError) as info:
        await in_thread(
            client.messages.create,
            model="claude-overloaded",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"


@pytest_twisted.ensureDeferred
async def test_invalid_json_is_rejected_in_anthropic_dialect(gateway, fake):
    """Bad JSON gets a 400 invalid_request_error and nothing reaches the provider."""
    before = len(fake.requests)
    response = await in_thread(
        httpx.post, gateway.url + "/v1/messages", content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert len(fake.requests) == before


@pytest_twisted.ensureDeferred
async def test_missing_model_is_rejected(gateway, fake):
    """A body without a model is a 400 through the SDK too."""
    response = await in_thread(
        httpx.post, gateway.url + "/v1/messages",
        json={"max_tokens": 5, "messages": []},
    )
    assert response.status_code == 400
    assert "model" in response.json()["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_unreachable_upstream_is_502(fake, start_gateway):
    """A provider that refuses connections gives a 502 in the client's dialect."""
    from lunaroute.testing.helpers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    gw = await start_gateway(
        fake, providers={"anthropic": {"base_url": dead, "http_client": {"max_retries": 0}}}
    )
    client = gw.anthropic()
    with pytest.raises(anthropic.APIStatusError) as info:
        await in_thread(
            client.messages.create, model="claude-x", max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error"


@pytest_twisted.ensureDeferred
async def test_upstream_timeout_is_504(fake, start_gateway):
    """A provider that never answers gives a 504 after the configured timeout."""
    gw = await start_gateway(
        fake, providers={"anthropic": {"http_client": {"timeout_secs": 0.3}}}
    )
    response = await in_thread(
        httpx.post, gw.url + "/v1/messages",
        json={"model": "claude-hang", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "k"},
        timeout=10,
    )
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"


@pytest_twisted.ensureDeferred
async def test_slow_stream_events_arrive_before_the_stream_ends(gateway, fake):
    """
    The first events reach the client while the provider is still holding
    the rest back: nothing is buffered until the end.
    """
    fake.gate = defer.Deferred()
    first_text = threading.Event()
    client = gateway.anthropic()

    def run():
        texts = []
        with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
        ) as stream:
            for text in stream.text_stream:
                texts.append(text)
                first_text.set()
        return "".join(texts)

    result = in_thread(run)
    got_first = await in_thread(first_text.wait, 10)
    assert got_first, "no event reached the client while the provider held the stream"
    assert not result.called
    fake.gate.callback(None)
    text = await result
    assert text == fake.reply_text


@pytest_twisted.ensureDeferred
async def test_client_disconnect_cancels_upstream(gateway, fake):
    """When the client hangs up mid-stream the provider sees its connection close."""
    fake.gate = defer.Deferred()
    lost = fake.on_disconnect()

    def run():
        with httpx.stream(
            "POST", gateway.url + "/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": "k"},
        ) as response:
            for _chunk in response.iter_bytes():
                break

    await in_thread(run)
    await lost
    assert fake.disconnects


@pytest_twisted.ensureDeferred
async def test_gzip_body_reaches_client_intact(gateway, fake):
    """A gzip-encoded provider body is relayed compressed and decodes correctly."""
    body = {"model": "claude-gzip", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}

    def run():
        raw = httpx.post(
            gateway.url + "/v1/messages", json=body,
            headers={"accept-encoding": "gzip", "x-api-key": "k"},
        )
        return raw

    raw = await in_thread(run)
    assert raw.headers.get("content-encoding") == "gzip"
    assert raw.json()["content"][0]["text"] == fake.reply_text
    assert gzip  # imported for clarity of intent

    client = gateway.anthropic()
    message = await in_thread(
        client.messages.create, model="claude-gzip", max_tokens=10,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert message.content[0].text == fake.reply_text


@pytest_twisted.ensureDeferred
async def test_provider_dropping_mid_stream_is_not_hidden(gateway, fake):
    """If the provider cuts a stream short, the client's connection is cut too (not finished as if complete)."""

    def run():
        with httpx.stream(
            "POST", gateway.url + "/v1/messages",
            json={"model": "claude-sonnet-4-5-drop", "max_tokens": 10, "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": "k"},
        ) as response:
            return b"".join(response.iter_bytes())

    with pytest.raises(httpx.HTTPError):
        await in_thread(run)
    assert not gateway.app.in_flight
