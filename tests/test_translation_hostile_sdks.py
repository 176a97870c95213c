"""
The official SDKs' stream helpers on translated streams with parallel tool
calls, thinking/reasoning and stop sequences, through the running gateway
against the fake provider on 127.0.0.1: anthropic's messages.stream on an
OpenAI-only gateway, openai's chat.completions.stream and responses.stream
on an Anthropic-only gateway; and no credential of the client's dialect
reaches a provider of the other.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest_twisted

from lunaroute.testing.helpers import in_thread

OPENAI_KEY = "sk-openai-server-key-0123456789"
ANTHROPIC_KEY = "sk-ant-server-key-0123456789"
CLIENT_ANTHROPIC = "sk-ant-client-key-abcdefghij"
CLIENT_OPENAI = "sk-openai-client-key-abcdefghij"
WEATHER_SCHEMA = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
TIME_SCHEMA = {"type": "object", "properties": {"zone": {"type": "string"}}}
HOSTILE_HEADERS = {
    "anthropic-beta": "interleaved-thinking-2025-05-14",
    "anthropic-dangerous-direct-browser-access": "true",
    "openai-organization": "org-client",
    "openai-project": "proj-client",
    "cookie": "session=client-cookie",
}


def openai_only() -> dict[str, Any]:
    return {"providers": {"anthropic": {"enabled": False}, "openai": {"api_key": OPENAI_KEY}}}


def anthropic_only() -> dict[str, Any]:
    return {"providers": {"openai": {"enabled": False}, "anthropic": {"api_key": ANTHROPIC_KEY}}}


def assert_no_client_credentials(sent: Any, server_header: str, server_value: str) -> None:
    """Only the provider's own key; none of the client's credentials, dialect headers or cookies."""
    assert sent.header(server_header) == server_value
    for name in ("x-api-key", "authorization", "cookie", "anthropic-beta", "anthropic-dangerous-direct-browser-access",
                 "openai-organization", "openai-project"):
        if name == server_header:
            continue
        assert sent.header(name) is None, name
    raw = json.dumps(sent.json)
    for secret in (CLIENT_ANTHROPIC, CLIENT_OPENAI, "client-cookie"):
        assert secret not in raw


@pytest_twisted.ensureDeferred
async def test_anthropic_stream_helper_with_parallel_calls_thinking_and_stop_sequences(fake, start_gateway):
    """messages.stream on an OpenAI-only gateway: two tool calls, thinking enabled, stop sequences."""
    gateway = await start_gateway(fake, **openai_only())
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_ANTHROPIC, max_retries=0,
                              default_headers=HOSTILE_HEADERS)
    tools = [
        {"name": "get_weather", "description": "w", "input_schema": WEATHER_SCHEMA},
        {"name": "get_time", "description": "t", "input_schema": TIME_SCHEMA},
    ]

    def turn() -> Any:
        with sdk.messages.stream(
            model="claude-parallel-tools-thinking", max_tokens=2048, tools=tools,
            thinking={"type": "enabled", "budget_tokens": 1024}, stop_sequences=["STOP", "END"],
            messages=[{"role": "user", "content": "weather and time?"}],
        ) as stream:
            texts = list(stream.text_stream)
            return texts, stream.get_final_message()

    texts, final = await in_thread(turn)
    calls = [block for block in final.content if block.type == "tool_use"]
    assert len(calls) == 2 and len({call.id for call in calls}) == 2
    assert all(isinstance(call.input, dict) for call in calls)
    assert final.stop_reason == "tool_use" and "".join(texts) == "".join(
        block.text for block in final.content if block.type == "text"
    )
    # Reasoning from the other model is dropped, never an unsigned thinking block.
    assert not [block for block in final.content if block.type == "thinking" and not block.signature]
    sent = [r for r in fake.requests if r.path == "/v1/chat/completions"][-1]
    assert sent.json["stop"] == ["STOP", "END"]
    assert [t["function"]["name"] for t in sent.json["tools"]] == ["get_weather", "get_time"]
    assert_no_client_credentials(sent, "authorization", f"Bearer {OPENAI_KEY}")


@pytest_twisted.ensureDeferred
async def test_openai_chat_stream_helper_with_parallel_calls_and_reasoning(fake, start_gateway):
    """chat.completions.stream on an Anthropic-only gateway: two calls with their arguments, the stop list."""
    gateway = await start_gateway(fake, **anthropic_only())
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_OPENAI, max_retries=0,
                        default_headers=HOSTILE_HEADERS)
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
        {"type": "function", "function": {"name": "get_time", "parameters": TIME_SCHEMA}},
    ]

    def turn() -> Any:
        with sdk.chat.completions.stream(
            model="claude-parallel-tools-thinking", max_completion_tokens=4096, tools=tools, stop=["STOP"],
            reasoning_effort="low", messages=[{"role": "user", "content": "weather and time?"}],
        ) as stream:
            for _ in stream:
                pass
            return stream.get_final_completion()

    final = await in_thread(turn)
    choice = final.choices[0]
    calls = choice.message.tool_calls or []
    assert len(calls) == 2 and choice.finish_reason == "tool_calls"
    assert all(isinstance(json.loads(call.function.arguments), dict) for call in calls)
    sent = [r for r in fake.requests if r.path == "/v1/messages"][-1]
    assert sent.json["stop_sequences"] == ["STOP"] and sent.json["thinking"]["type"] == "enabled"
    assert_no_client_credentials(sent, "x-api-key", ANTHROPIC_KEY)


@pytest_twisted.ensureDeferred
async def test_openai_responses_stream_helper_with_parallel_calls_and_reasoning(fake, start_gateway):
    """responses.stream on an Anthropic-only gateway: reasoning item, two function calls, completed."""
    gateway = await start_gateway(fake, **anthropic_only())
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_OPENAI, max_retries=0,
                        default_headers=HOSTILE_HEADERS)
    tools = [
        {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": False},
        {"type": "function", "name": "get_time", "parameters": TIME_SCHEMA, "strict": False},
    ]

    def turn() -> Any:
        with sdk.responses.stream(
            model="claude-parallel-tools-thinking", input="weather and time?", tools=tools,
            reasoning={"effort": "low"}, max_output_tokens=4096,
        ) as stream:
            kinds = [event.type for event in stream]
            return kinds, stream.get_final_response()

    kinds, final = await in_thread(turn)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    types = [item.type for item in final.output]
    assert types.count("function_call") == 2 and "reasoning" in types
    assert all(isinstance(json.loads(item.arguments), dict) for item in final.output if item.type == "function_call")
    sent = [r for r in fake.requests if r.path == "/v1/messages"][-1]
    assert_no_client_credentials(sent, "x-api-key", ANTHROPIC_KEY)
