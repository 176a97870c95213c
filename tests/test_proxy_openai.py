"""
The OpenAI side of the gateway (Chat Completions, Responses, models), driven
by the official C{openai} SDK.
"""

from __future__ import annotations

import httpx
import openai
import pytest
import pytest_twisted

from lunaroute.testing.helpers import in_thread


@pytest_twisted.ensureDeferred
async def test_chat_completion_non_streaming(gateway, fake):
    """chat.completions.create returns the provider's answer; the client's bearer key is forwarded."""
    client = gateway.openai()
    completion = await in_thread(
        client.chat.completions.create,
        model="gpt-4.1",
        messages=[{"role": "user", "content": "hello"}],
    )
    assert completion.choices[0].message.content == fake.reply_text
    seen = fake.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == ["Bearer sk-client-key-123456789"]


@pytest_twisted.ensureDeferred
async def test_chat_stream_with_tools_and_usage(gateway, fake):
    """Streamed tool_call fragments and the include_usage chunk arrive intact."""
    client = gateway.openai()

    def run():
        stream = client.chat.completions.create(
            model="gpt-4.1-tools",
            stream=True,
            stream_options={"include_usage": True},
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            messages=[{"role": "user", "content": "weather?"}],
        )
        return list(stream)

    chunks = await in_thread(run)
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        for choice in chunk.choices
        for call in (choice.delta.tool_calls or [])
    )
    assert arguments
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)


@pytest_twisted.ensureDeferred
async def test_chat_stream_text(gateway, fake):
    """A streamed chat answer concatenates to the provider's text, unicode included."""
    client = gateway.openai()

    def run():
        stream = client.chat.completions.create(
            model="gpt-4.1", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert await in_thread(run) == fake.reply_text


@pytest_twisted.ensureDeferred
async def test_responses_stream(gateway, fake):
    """The Responses API stream (Codex's wire format) reaches the SDK complete."""
    client = gateway.openai()

    def run():
        with client.responses.stream(model="gpt-5-codex", input="hello") as stream:
            for _event in stream:
                pass
            return stream.get_final_response()

    final = await in_thread(run)
    assert final.output_text == fake.reply_text
    assert final.usage.output_tokens > 0
    assert fake.requests[-1].path == "/v1/responses"


@pytest_twisted.ensureDeferred
async def test_responses_alias_without_v1(gateway, fake):
    """POST /responses (Codex with a base URL lacking /v1) works like /v1/responses."""
    response = await in_thread(
        httpx.post, gateway.url + "/responses",
        json={"model": "gpt-5", "input": "hi"},
        headers={"authorization": "Bearer k"},
    )
    assert response.status_code == 200
    assert response.json()["object"] == "response"


@pytest_twisted.ensureDeferred
async def test_models_list(gateway, fake):
    """GET /v1/models is forwarded to the OpenAI provider."""
    client = gateway.openai()
    models = await in_thread(lambda: list(client.models.list()))
    assert models


@pytest_twisted.ensureDeferred
async def test_invalid_json_in_openai_dialect(gateway, fake):
    """Bad JSON on an OpenAI route gets an OpenAI-shaped 400."""
    before = len(fake.requests)
    response = await in_thread(
        httpx.post, gateway.url + "/v1/chat/completions", content=b"[1,",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert len(fake.requests) == before


@pytest_twisted.ensureDeferred
async def test_openai_sdk_sees_502_for_unreachable_provider(fake, start_gateway):
    """An unreachable OpenAI provider is a 502 with an OpenAI error body."""
    from lunaroute.testing.helpers import free_port

    gw = await start_gateway(
        fake,
        providers={"openai": {"base_url": f"http://127.0.0.1:{free_port()}/v1",
                              "http_client": {"max_retries": 0}}},
    )
    client = gw.openai()
    with pytest.raises(openai.APIStatusError) as info:
        await in_thread(
            client.chat.completions.create, model="gpt-4.1",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_unreachable"
