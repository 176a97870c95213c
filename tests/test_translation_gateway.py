"""
Translation wired into the running gateway: the official anthropic SDK
against a gateway whose only provider speaks OpenAI Chat Completions (the
fake on 127.0.0.1), JSON and streams with tools, errors in the client's
dialect, count_tokens estimated, a cross-dialect fallback mid-session, and
the record of a translated exchange.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anthropic
import pytest
import pytest_twisted

from lunaroute.dialects.model import Usage
from lunaroute.stats.pricing import PricingTable
from lunaroute.testing.helpers import in_thread

SERVER_KEY = "sk-openai-server-key-0123456789"
CLIENT_KEY = "sk-ant-client-key-0123456789"
SESSION = "5b8f7c2e-0d1a-4e3b-9c6d-7a2e1f0b3c4d"
USER_ID = json.dumps({"device_id": "cd" * 32, "account_uuid": "", "session_id": SESSION})
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a place",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


def openai_only(**extra: Any) -> dict[str, Any]:
    """Claude Code on an OpenAI-compatible server: one openai provider, no routing."""
    config: dict[str, Any] = {
        "providers": {"anthropic": {"enabled": False}, "openai": {"api_key": SERVER_KEY}},
    }
    config.update(extra)
    return config


def client(gateway: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


def chat_requests(fake: Any) -> list[Any]:
    return [r for r in fake.requests if r.path == "/v1/chat/completions"]


@pytest_twisted.ensureDeferred
async def test_messages_create_is_served_by_an_openai_provider(fake, start_gateway):
    """
    messages.create through an OpenAI-only gateway: the fake gets a Chat
    Completions request with the server key and none of the client's
    Anthropic headers; the SDK gets an Anthropic message.
    """
    gateway = await start_gateway(fake, **openai_only())
    message = await in_thread(
        client(gateway).messages.create, model="claude-sonnet-4-5", max_tokens=64,
        system="Be brief.", messages=[{"role": "user", "content": "hi"}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == fake.reply_text
    assert message.model == "claude-sonnet-4-5" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    [sent] = chat_requests(fake)
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.json["max_tokens"] == 64 and sent.query == b""
    assert sent.header("authorization") == f"Bearer {SERVER_KEY}"
    assert sent.header("x-api-key") is None and sent.header("anthropic-version") is None
    assert sent.header("accept-encoding") == "identity"


@pytest_twisted.ensureDeferred
async def test_the_stream_helpers_accept_a_translated_stream_with_tools(fake, start_gateway):
    """messages.stream with tools: get_final_message has the tool call; text_stream yields the text."""
    gateway = await start_gateway(fake, **openai_only())
    sdk = client(gateway)

    def tool_turn() -> Any:
        with sdk.messages.stream(
            model="claude-sonnet-4-5-tools", max_tokens=128, tools=[WEATHER],
            messages=[{"role": "user", "content": "weather in Paris?"}],
        ) as stream:
            return stream.get_final_message()

    final = await in_thread(tool_turn)
    [call] = [block for block in final.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"location": "fake"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens > 0
    sent = chat_requests(fake)[-1].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["tools"][0]["function"]["name"] == "get_weather"

    def text_turn() -> str:
        with sdk.messages.stream(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            return "".join(stream.text_stream)

    assert await in_thread(text_turn) == fake.reply_text


@pytest_twisted.ensureDeferred
async def test_provider_errors_reach_the_sdk_in_anthropic_form(fake, start_gateway):
    """A 429 is an anthropic RateLimitError; a bad request field is a 400 naming it, nothing sent."""
    gateway = await start_gateway(fake, **openai_only())
    sdk = client(gateway)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await in_thread(
            sdk.messages.create, model="claude-rate-limit", max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert limited.value.status_code == 429
    assert limited.value.response.headers.get("retry-after") == "1"
    before = len(fake.requests)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await in_thread(
            sdk.messages.create, model="claude-sonnet-4-5", max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}]},
        )
    assert "mcp_servers" in str(bad.value)
    assert len(fake.requests) == before


@pytest_twisted.ensureDeferred
async def test_an_error_mid_stream_becomes_an_anthropic_error_event(fake, start_gateway):
    """The provider's error chunk after two deltas: the SDK raises from the stream, text so far arrived."""
    gateway = await start_gateway(fake, **openai_only())
    seen: list[str] = []

    def turn() -> None:
        with client(gateway).messages.stream(
            model="claude-error-midstream", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            for text in stream.text_stream:
                seen.append(text)

    with pytest.raises(anthropic.APIStatusError):
        await in_thread(turn)
    assert seen


@pytest_twisted.ensureDeferred
async def test_count_tokens_on_an_openai_provider_is_estimated_and_marked(fake, start_gateway):
    """count_tokens is answered by the gateway (the fake never sees it), with x-lunaroute-estimated."""
    gateway = await start_gateway(fake, **openai_only())
    raw = await in_thread(
        client(gateway).messages.with_raw_response.count_tokens, model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "how many tokens is this? " * 40}],
    )
    assert raw.headers["x-lunaroute-estimated"] == "true"
    counted = raw.parse()
    assert 200 < counted.input_tokens < 400
    assert fake.requests == []


@pytest_twisted.ensureDeferred
async def test_a_session_falls_back_across_dialects_mid_way(fake, backup, start_gateway):
    """
    Turn 1 is served by the Anthropic primary as it is; the primary is then
    overloaded (529), and turn 2 of the same conversation is translated to the
    OpenAI fallback under the rule's model_map.
    """
    gateway = await start_gateway(
        fake,
        providers={
            "anthropic": {"base_url": backup.url, "http_client": {"max_retries": 0}},
            "openai": {"api_key": SERVER_KEY},
        },
        routing={"rules": [{"name": "claude", "model_pattern": "^claude-", "primary": "anthropic",
                            "fallbacks": ["openai"], "model_map": {"claude-sonnet-4-5": "gpt-5"}}]},
    )
    sdk = client(gateway)
    history: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    first = await in_thread(sdk.messages.create, model="claude-sonnet-4-5", max_tokens=32, messages=history)
    assert first.content[0].text == backup.reply_text and len(backup.requests) == 1
    overloaded = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    backup.next_response = (529, {"content-type": "application/json"}, overloaded)

    history += [{"role": "assistant", "content": first.content[0].text}, {"role": "user", "content": "and now?"}]

    def second_turn() -> Any:
        with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=32, messages=history) as stream:
            return stream.get_final_message()

    second = await in_thread(second_turn)
    assert second.content[0].text == fake.reply_text and second.model == "claude-sonnet-4-5"
    [sent] = chat_requests(fake)
    assert sent.json["model"] == "gpt-5"
    assert [m["role"] for m in sent.json["messages"]] == ["user", "assistant", "user"]
    assert sent.header("authorization") == f"Bearer {SERVER_KEY}" and sent.header("x-api-key") is None
    assert len(backup.requests) == 2


@pytest_twisted.async_yield_fixture
async def backup():
    from twisted.internet import reactor

    from lunaroute.testing.fake_provider import FakeProvider

    provider = FakeProvider(reactor)
    port = provider.listen()
    provider.url = f"http://127.0.0.1:{port.getHost().port}"
    provider.default_text = "Hello from the Anthropic primary."
    provider.text_suffix = ""
    yield provider
    await provider.stop()


@pytest_twisted.ensureDeferred
async def test_a_translated_exchange_is_recorded_with_both_views(fake, start_gateway, tmp_path):
    """
    JSONL keeps the client's body and the provider's (upstream_request_json,
    upstream_path); usage is the provider's, the model used is the serving
    model and the cost is priced for it; SQLite has the same model and cost.
    """
    sessions = tmp_path / "sessions"
    gateway = await start_gateway(
        fake,
        session_recording={"enabled": True, "sessions_dir": str(sessions)},
        providers={"anthropic": {"enabled": False},
                   "openai": {"api_key": SERVER_KEY, "model_map": {"claude-sonnet-4-5": "gpt-5"}}},
    )
    await in_thread(
        client(gateway).messages.create, model="claude-sonnet-4-5", max_tokens=32,
        metadata={"user_id": USER_ID}, messages=[{"role": "user", "content": "record me"}],
    )
    await gateway.service.stopService()

    [path] = sorted(sessions.glob("*/session_*.jsonl"))
    events = [json.loads(line) for line in Path(path).read_text().splitlines()]
    [recorded] = [e for e in events if e.get("type") == "request_recorded" or "request_json" in e]
    assert recorded["request_json"]["model"] == "claude-sonnet-4-5"
    assert recorded["upstream_path"] == "/v1/chat/completions"
    assert recorded["upstream_request_json"]["model"] == "gpt-5"
    assert recorded["upstream_request_json"]["messages"] == [{"role": "user", "content": "record me"}]
    [final] = [e for e in events if e.get("final_stats")]
    assert final["model_used"] == "gpt-5"
    tokens = final["final_stats"]["tokens"]
    [sent] = chat_requests(fake)
    assert tokens["input"] > 0 and tokens["output"] > 0
    expected = PricingTable.load(None, {}).cost_usd(
        Usage(input_tokens=tokens["input"], output_tokens=tokens["output"]), "gpt-5", "openai_chat"
    )
    assert final["final_stats"]["estimated_cost_usd"] == pytest.approx(expected)

    db = sqlite3.connect(sessions / "sessions.db")
    row = db.execute(
        "SELECT model_used, provider, estimated_cost_usd FROM sessions WHERE session_id = ?", (SESSION,)
    ).fetchone()
    assert row[0] == "gpt-5" and row[1] == "openai" and row[2] == pytest.approx(expected)


@pytest_twisted.ensureDeferred
async def test_a_marker_sends_claude_code_to_the_openai_provider_translated(fake, start_gateway):
    """[LUNAROUTE:openai] in Claude Code's turn: translated for the OpenAI provider, the marker stripped."""
    gateway = await start_gateway(
        fake, providers={"openai": {"api_key": SERVER_KEY, "model": "gpt-5"}}, routing={"rules": []}
    )
    message = await in_thread(
        client(gateway).messages.create, model="claude-sonnet-4-5", max_tokens=32,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>[LUNAROUTE:openai]</system-reminder>"},
            {"type": "text", "text": "hello there"},
        ]}],
    )
    assert message.content[0].text == fake.reply_text
    [sent] = fake.requests
    assert sent.path == "/v1/chat/completions" and sent.json["model"] == "gpt-5"
    assert sent.json["messages"] == [{"role": "user", "content": "hello there"}]
