"""
Request modification through a running gateway: the official anthropic and
openai SDKs talk to it, the fake provider records what it received, and the
recorded session shows the client's body beside what was sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest_twisted
import yaml
from twisted.internet import reactor

from lunaroute.config import settings_from_mapping
from lunaroute.service import make_gateway_service
from lunaroute.testing.fake_provider import FakeProvider
from lunaroute.testing.helpers import in_thread

REPO = Path(__file__).resolve().parent.parent
SESSION = "5b0e8f4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

BODY_BLOCK = {
    "defaults": {"temperature": 0.7, "max_tokens": 4096},
    "overrides": {"top_p": 0.9},
    "prepend_messages": [{"role": "user", "content": "You are helping with local development. Be concise."}],
}
HEADERS_BLOCK = {
    "headers": {
        "X-Developer-ID": "${env.USER}",
        "X-Session-Context": "claude-code-${session_id}",
        "X-Route": "${provider}|${model}|${client}",
        "X-Request": "${request_id}",
        "X-Request-Source": "lunaroute-local",
    }
}


class Gateways:
    """Starts gateways on settings built with a chosen environment; stops them all after the test."""

    def __init__(self) -> None:
        self.started: list[Any] = []

    async def start(self, data: dict[str, Any], env: dict[str, str] | None = None) -> Any:
        settings = settings_from_mapping({"host": "127.0.0.1", "port": 0, **data}, env or {})
        service = make_gateway_service(settings, reactor=reactor)
        service.startService()
        self.started.append(service)
        port = await service.listening_port()
        service.url = f"http://127.0.0.1:{port.getHost().port}"
        return service


@pytest_twisted.async_yield_fixture
async def gateways():
    running = Gateways()
    yield running
    for service in running.started:
        if service.running:
            await service.stopService()


@pytest_twisted.async_yield_fixture
async def backup():
    provider = FakeProvider(reactor)
    port = provider.listen()
    provider.url = f"http://127.0.0.1:{port.getHost().port}"
    yield provider
    await provider.stop()


def _providers(fake_url: str, **anthropic: Any) -> dict[str, Any]:
    return {
        "anthropic": {"base_url": fake_url, **anthropic},
        "openai": {"base_url": fake_url + "/v1"},
    }


def _recording(tmp_path: Path) -> dict[str, Any]:
    return {"enabled": True, "sessions_dir": str(tmp_path / "sessions"), "sqlite": False}


def _recorded_requests(tmp_path: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted((tmp_path / "sessions").glob("*/*.jsonl")):
        events += [json.loads(line) for line in path.read_text().splitlines()]
    return [event for event in events if event["type"] == "request_recorded"]


def _anthropic(service: Any) -> Any:
    import anthropic

    return anthropic.Anthropic(base_url=service.url, api_key="sk-ant-client-key-123456789", max_retries=0)


def _openai(service: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=service.url + "/v1", api_key="sk-client-key-123456789", max_retries=0)


@pytest_twisted.ensureDeferred
async def test_anthropic_sdk_request_reaches_the_provider_modified_and_both_bodies_are_recorded(
    fake, gateways, tmp_path
):
    """Headers templated, defaults/overrides/prepend applied; the record keeps the client's body and the sent one."""
    gw = await gateways.start(
        {
            "providers": _providers(fake.url, request_headers=HEADERS_BLOCK, request_body=BODY_BLOCK),
            "session_recording": _recording(tmp_path),
        },
        env={"USER": "ada", "HOME": str(tmp_path)},
    )
    message = await in_thread(
        _anthropic(gw).messages.create,
        model="claude-sonnet-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello"}],
        metadata={"user_id": json.dumps({"session_id": SESSION})},
    )
    assert message.content[0].text == fake.reply_text
    seen = fake.requests[-1]
    assert seen.header("x-developer-id") == "ada"
    assert seen.header("x-session-context") == f"claude-code-{SESSION}"
    assert seen.header("x-route") == "anthropic|claude-sonnet-4-5|Anthropic Python SDK"
    assert seen.header("x-request-source") == "lunaroute-local"
    # The client's own credentials still go through.
    assert (seen.header("x-api-key") or seen.header("authorization") or "").endswith("sk-ant-client-key-123456789")
    sent = seen.json
    assert sent["max_tokens"] == 100 and sent["temperature"] == 0.7 and sent["top_p"] == 0.9
    assert sent["messages"] == [
        {"role": "user", "content": "You are helping with local development. Be concise."},
        {"role": "user", "content": "hello"},
    ]
    await gw.stopService()

    [recorded] = _recorded_requests(tmp_path)
    assert recorded["request_id"] == seen.header("x-request")
    assert "top_p" not in recorded["request_json"] and len(recorded["request_json"]["messages"]) == 1
    assert recorded["upstream_request_json"] == sent
    assert recorded["upstream_path"] == "/v1/messages"


@pytest_twisted.ensureDeferred
async def test_openai_sdk_chat_and_responses_are_modified_in_their_own_shape(fake, gateways, tmp_path):
    """Chat Completions gets the messages first in messages, Responses first in input; headers on both."""
    gw = await gateways.start(
        {
            "providers": {
                "anthropic": {"base_url": fake.url},
                "openai": {
                    "base_url": fake.url + "/v1",
                    "request_headers": {"headers": {"X-Project-ID": "${env.PROJECT_NAME}", "X-Model": "${model}"}},
                    "request_body": {
                        "defaults": {"temperature": 0.3},
                        "prepend_messages": [{"role": "system", "content": "Project ${env.PROJECT_NAME}."}],
                    },
                },
            },
            "session_recording": _recording(tmp_path),
        },
        env={"PROJECT_NAME": "myapp"},
    )
    client = _openai(gw)
    completion = await in_thread(
        client.chat.completions.create, model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content
    chat = fake.requests[-1]
    assert chat.path == "/v1/chat/completions"
    assert chat.header("x-project-id") == "myapp" and chat.header("x-model") == "gpt-4o-mini"
    assert chat.json["temperature"] == 0.3
    assert chat.json["messages"] == [{"role": "system", "content": "Project myapp."}, {"role": "user", "content": "hi"}]

    def stream() -> str:
        with client.responses.stream(model="gpt-5", input="hello", temperature=1.0) as events:
            return events.get_final_response().output_text

    assert await in_thread(stream)
    responses = fake.requests[-1]
    assert responses.path == "/v1/responses" and responses.header("x-project-id") == "myapp"
    # The client's temperature wins over the default.
    assert responses.json["temperature"] == 1.0
    assert responses.json["input"] == [
        {"role": "system", "content": "Project myapp."},
        {"role": "user", "content": "hello"},
    ]
    await gw.stopService()
    records = {record["upstream_path"]: record for record in _recorded_requests(tmp_path)}
    chat_record, responses_record = records["/v1/chat/completions"], records["/v1/responses"]
    assert chat_record["request_json"]["messages"] == [{"role": "user", "content": "hi"}]
    assert chat_record["upstream_request_json"] == chat.json
    assert responses_record["request_json"]["input"] == "hello"
    assert responses_record["upstream_request_json"] == responses.json


@pytest_twisted.ensureDeferred
async def test_unmodified_requests_stay_byte_for_byte(fake, gateways, tmp_path):
    """
    A provider without modification, and a body the configured changes
    leave as it is, reach the provider byte for byte, and nothing is
    recorded as a separate upstream body.
    """
    gw = await gateways.start(
        {
            "providers": {
                "anthropic": {"base_url": fake.url,
                              "request_body": {"defaults": {"max_tokens": 4096}, "overrides": {"top_p": 0.9}}},
                "openai": {"base_url": fake.url + "/v1", "request_headers": {"headers": {"X-A": "1"}}},
            },
            "session_recording": _recording(tmp_path),
        }
    )
    headers = {"content-type": "application/json", "x-api-key": "k", "anthropic-version": "2023-06-01"}
    odd = b'{ "stream":false,"model" : "claude-x",  "max_tokens":5, "top_p": 0.9,"messages":[{"role":"user","content":"caf\\u00e9"}]}'
    response = await in_thread(httpx.post, gw.url + "/v1/messages", content=odd, headers=headers)
    assert response.status_code == 200
    assert fake.requests[-1].body == odd
    chat = b'{"model":  "gpt-x", "messages": [{"role": "user", "content": "hi"}] }'
    response = await in_thread(
        httpx.post, gw.url + "/v1/chat/completions", content=chat,
        headers={"content-type": "application/json", "authorization": "Bearer k"},
    )
    assert response.status_code == 200
    assert fake.requests[-1].body == chat and fake.requests[-1].header("x-a") == "1"
    # count_tokens gets no body changes (its API takes no sampling fields).
    count = b'{"model":"claude-x", "messages":[{"role":"user","content":"hi"}]}'
    response = await in_thread(httpx.post, gw.url + "/v1/messages/count_tokens", content=count, headers=headers)
    assert response.status_code == 200 and fake.requests[-1].body == count
    # Headers go with every request to the provider, model lists included.
    response = await in_thread(httpx.get, gw.url + "/v1/models", headers={"authorization": "Bearer k"})
    assert response.status_code == 200 and fake.requests[-1].path == "/v1/models"
    assert fake.requests[-1].header("x-a") == "1"
    await gw.stopService()
    for recorded in _recorded_requests(tmp_path):
        assert "upstream_request_json" not in recorded


@pytest_twisted.ensureDeferred
async def test_the_model_template_is_the_model_sent(fake, gateways):
    """${model} is what the provider is asked for: the provider's model_map applied, passed through or translated."""
    template = {"request_headers": {"headers": {"X-Model": "${model}"}}}
    gw = await gateways.start(
        {"providers": {
            "anthropic": {"base_url": fake.url, "model_map": {"claude-x": "claude-mapped"}, **template},
            "openai": {"enabled": False},
        }}
    )
    headers = {"content-type": "application/json", "x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    response = await in_thread(httpx.post, gw.url + "/v1/messages", content=body, headers=headers)
    assert response.status_code == 200
    assert fake.requests[-1].json["model"] == "claude-mapped" and fake.requests[-1].header("x-model") == "claude-mapped"
    # An OpenAI request on this Anthropic-only gateway is translated; unmapped, its own model is sent.
    chat = b'{"model":"gpt-x","messages":[{"role":"user","content":"hi"}]}'
    response = await in_thread(
        httpx.post, gw.url + "/v1/chat/completions", content=chat,
        headers={"content-type": "application/json", "authorization": "Bearer k"},
    )
    assert response.status_code == 200
    assert fake.requests[-1].path == "/v1/messages"
    assert fake.requests[-1].json["model"] == "gpt-x" and fake.requests[-1].header("x-model") == "gpt-x"


@pytest_twisted.ensureDeferred
async def test_each_routing_attempt_gets_its_own_providers_changes(fake, backup, gateways):
    """With routing, the primary and the fallback each get their own headers and body changes."""
    gw = await gateways.start(
        {
            "providers": {
                "anthropic": {"base_url": fake.url, "http_client": {"max_retries": 0},
                              "request_headers": {"headers": {"X-Via": "${provider}"}},
                              "request_body": {"overrides": {"top_p": 0.1}}},
                "anthropic_backup": {"provider_type": "anthropic", "base_url": backup.url,
                                     "model": "claude-sonnet-4-5",
                                     "request_headers": {"headers": {"X-Via": "${provider} ${model}"}},
                                     "request_body": {"overrides": {"top_p": 0.2}}},
            },
            "routing": {"rules": [{"name": "r", "model_pattern": "^claude-", "primary": "anthropic",
                                   "fallbacks": ["anthropic_backup"]}]},
        }
    )
    message = await in_thread(
        _anthropic(gw).messages.create, model="claude-overloaded", max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert message.content[0].text
    primary, fallback = fake.requests[-1], backup.requests[-1]
    assert primary.header("x-via") == "anthropic" and primary.json["top_p"] == 0.1
    assert fallback.header("x-via") == "anthropic_backup claude-sonnet-4-5" and fallback.json["top_p"] == 0.2
    assert fallback.json["model"] == "claude-sonnet-4-5"


def _guide_block(heading: str) -> str:
    text = (REPO / "docs" / "original" / "claude-code-guide.md").read_text()
    after = text[text.index(heading):]
    found = re.search(r"```yaml\n(.*?)```", after, re.S)
    assert found is not None
    return found[1]


@pytest_twisted.ensureDeferred
async def test_the_guides_custom_headers_example_does_what_it_says(fake, gateways, tmp_path):
    """The guide's "Custom Headers & Request Modifications" block, as written, modifies Claude's requests."""
    data = yaml.safe_load(_guide_block("### 10. **Custom Headers & Request Modifications**"))
    data["providers"]["anthropic"]["base_url"] = fake.url
    gw = await gateways.start(data, env={"USER": "grace", "HOME": str(tmp_path)})
    await in_thread(
        _anthropic(gw).messages.create, model="claude-sonnet-4-5", max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        metadata={"user_id": json.dumps({"session_id": SESSION})},
    )
    seen = fake.requests[-1]
    assert seen.header("x-developer-id") == "grace"
    assert seen.header("x-session-context") == f"claude-code-{SESSION}"
    assert seen.header("x-request-source") == "lunaroute-local"
    assert seen.json["temperature"] == 0.7 and seen.json["top_p"] == 0.9 and seen.json["max_tokens"] == 50
    assert seen.json["messages"][0] == {
        "role": "user", "content": "You are helping with local development. Be concise."
    }
    # Use Case 6: ${env.PROJECT_NAME} (unset here: the header is left out, set: sent).
    data = yaml.safe_load(_guide_block("### Use Case 6: Cost Attribution"))
    data["providers"]["anthropic"]["base_url"] = fake.url
    for env, expected in (({}, None), ({"PROJECT_NAME": "myapp"}, "myapp")):
        gw = await gateways.start(data, env=env)
        await in_thread(
            _anthropic(gw).messages.create, model="claude-sonnet-4-5", max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
        )
        assert fake.requests[-1].header("x-project-id") == expected
