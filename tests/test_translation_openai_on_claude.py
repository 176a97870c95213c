"""
The openai SDK on Claude through the running gateway: Chat Completions and
the Responses API translated for an Anthropic-only gateway (the fake on
127.0.0.1 speaking Messages), JSON and streams with tools, errors in
OpenAI's terms, and the record of a translated exchange.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import pytest_twisted

from lunaroute.testing.helpers import in_thread

SERVER_KEY = "sk-ant-server-key-0123456789"
CLIENT_KEY = "sk-openai-client-key-0123456789"
WEATHER_PARAMS = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}


def anthropic_only() -> dict[str, Any]:
    return {"providers": {"openai": {"enabled": False}, "anthropic": {"api_key": SERVER_KEY}}}


def client(gateway: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


def messages_requests(fake: Any) -> list[Any]:
    return [r for r in fake.requests if r.path == "/v1/messages"]


@pytest_twisted.ensureDeferred
async def test_chat_completions_are_served_by_claude(fake, start_gateway):
    """chat.completions.create: a Messages request with the server key only; a chat.completion back."""
    gateway = await start_gateway(fake, **anthropic_only())
    completion = await in_thread(
        client(gateway).chat.completions.create, model="claude-sonnet-4-5", max_tokens=64,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == fake.reply_text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    [sent] = messages_requests(fake)
    assert sent.json["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert sent.header("x-api-key") == SERVER_KEY and sent.header("authorization") is None


@pytest_twisted.ensureDeferred
async def test_the_chat_stream_helper_accepts_a_translated_stream_with_tools(fake, start_gateway):
    """chat.completions.stream with a tool: get_final_completion has the call, the usage chunk arrives."""
    gateway = await start_gateway(fake, **anthropic_only())
    sdk = client(gateway)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMS}}]

    def turn() -> Any:
        with sdk.chat.completions.stream(
            model="claude-sonnet-4-5-tools", max_tokens=128, tools=tools,
            messages=[{"role": "user", "content": "weather in Paris?"}],
            stream_options={"include_usage": True},
        ) as stream:
            return stream.get_final_completion()

    final = await in_thread(turn)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "fake"}
    assert final.usage is not None and final.usage.completion_tokens > 0
    sent = messages_requests(fake)[-1].json
    assert sent["stream"] is True and sent["tools"][0]["name"] == "get_weather"


@pytest_twisted.ensureDeferred
async def test_the_responses_stream_helper_accepts_a_translated_stream_with_tools(fake, start_gateway):
    """responses.stream with a function tool: the final response has the call and usage."""
    gateway = await start_gateway(fake, **anthropic_only())
    sdk = client(gateway)
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMS, "strict": False}]

    def turn() -> Any:
        with sdk.responses.stream(
            model="claude-sonnet-4-5-tools", instructions="be brief", input="weather in Paris?", tools=tools,
        ) as stream:
            return stream.get_final_response()

    final = await in_thread(turn)
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "fake"}
    assert final.status == "completed" and final.usage is not None and final.usage.output_tokens > 0
    sent = messages_requests(fake)[-1].json
    assert sent["system"] and sent["tools"][0]["name"] == "get_weather"

    plain = await in_thread(sdk.responses.create, model="claude-sonnet-4-5", input="hi")
    assert plain.output_text == fake.reply_text


@pytest_twisted.ensureDeferred
async def test_claudes_errors_reach_the_openai_sdk_in_its_terms(fake, start_gateway):
    """A 429 from Claude is openai's RateLimitError, for Chat and for Responses."""
    gateway = await start_gateway(fake, **anthropic_only())
    sdk = client(gateway)
    with pytest.raises(openai.RateLimitError) as chat_error:
        await in_thread(
            sdk.chat.completions.create, model="claude-rate-limit", max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert chat_error.value.status_code == 429
    with pytest.raises(openai.RateLimitError):
        await in_thread(sdk.responses.create, model="claude-rate-limit", input="hi")


@pytest_twisted.ensureDeferred
async def test_a_translated_chat_exchange_is_recorded_with_the_providers_usage(fake, start_gateway):
    """The record: the client's Chat body, the Messages body sent, Claude's usage and model."""
    gateway = await start_gateway(fake, **anthropic_only())
    seen: list[Any] = []
    gateway.app._sinks = (*gateway.app._sinks, seen.append)
    completion = await in_thread(
        client(gateway).chat.completions.create, model="claude-sonnet-4-5", max_tokens=32,
        messages=[{"role": "user", "content": "hi"}],
    )
    (exchange,) = seen
    assert exchange.dialect == "openai_chat" and exchange.upstream_path == "/v1/messages"
    assert json.loads(exchange.upstream_body)["messages"][0]["role"] == "user"
    assert exchange.response is not None and exchange.response.usage is not None
    assert exchange.response.usage.output_tokens == completion.usage.completion_tokens
