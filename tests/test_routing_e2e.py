"""
Routing through a running gateway, driven by the official anthropic SDK
against two fake providers on 127.0.0.1: fallbacks, retries, markers, the
attempts on the record and /readyz.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest
import pytest_twisted
from twisted.internet import reactor

from lunaroute.testing.fake_provider import FakeProvider
from lunaroute.testing.helpers import free_port, in_thread

BACKUP_TEXT = "Hello from the backup."


@pytest_twisted.async_yield_fixture
async def backup():
    provider = FakeProvider(reactor)
    port = provider.listen()
    provider.url = f"http://127.0.0.1:{port.getHost().port}"
    provider.default_text = BACKUP_TEXT
    provider.text_suffix = ""
    yield provider
    await provider.stop()


def _routing(primary_url: str, backup_url: str, **rule: Any) -> dict[str, Any]:
    return {
        "providers": {
            "anthropic": {"base_url": primary_url, "http_client": {"max_retries": 1}},
            # The backup's model override: the fake picks its scenario from the
            # model name, so the backup answers plainly where the primary is
            # overloaded (and the override per attempt is exercised).
            "anthropic_backup": {"provider_type": "anthropic", "base_url": backup_url, "model": "claude-sonnet-4-5"},
        },
        "routing": {
            "rules": [
                {"name": "claude-with-fallback", "model_pattern": "^claude-", "primary": "anthropic",
                 "fallbacks": ["anthropic_backup"], **rule},
            ]
        },
    }


def _client(gateway: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-client", max_retries=0)


@pytest_twisted.ensureDeferred
async def test_primary_down_the_fallback_answers_unchanged(backup, start_gateway):
    """The primary refuses connections: the backup's answer reaches the SDK as it sent it."""
    closed = f"http://127.0.0.1:{free_port()}"
    gateway = await start_gateway(backup, **_routing(closed, backup.url))
    message = await in_thread(
        _client(gateway).messages.create, model="claude-sonnet-4-5", max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert message.content[0].text == BACKUP_TEXT
    assert len(backup.requests) == 1


@pytest_twisted.ensureDeferred
async def test_primary_overloaded_is_retried_then_the_fallback_serves(fake, backup, start_gateway):
    """A 529 from the primary is retried once (max_retries 1), then the backup serves; both attempts are recorded."""
    gateway = await start_gateway(fake, **_routing(fake.url, backup.url))
    stats = gateway.service.stats
    message = await in_thread(
        _client(gateway).messages.create, model="claude-overloaded", max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-session-id": "routing-529"},
    )
    assert message.content[0].text == BACKUP_TEXT
    assert len(fake.requests) == 2  # the first try and one retry
    assert len(backup.requests) == 1
    assert json.loads(backup.requests[0].body)["model"] == "claude-sonnet-4-5"
    assert stats.snapshot("routing-529")["requests"] == 1


@pytest_twisted.ensureDeferred
async def test_attempts_and_rule_are_on_the_record(fake, backup, start_gateway):
    """The finished exchange lists each attempt (provider, status, reason) and the rule; the answering provider is the backup."""
    gateway = await start_gateway(fake, **_routing(fake.url, backup.url))
    records: list[Any] = []
    app = gateway.service.gateway
    app._sinks = (*app._sinks, records.append)
    await in_thread(
        _client(gateway).messages.create, model="claude-overloaded", max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
    )
    (record,) = records
    assert record.rule == "claude-with-fallback"
    assert record.provider == "anthropic_backup"
    assert [(a["provider"], a["status"], a["reason"]) for a in record.attempts] == [
        ("anthropic", 529, "primary"),
        ("anthropic", 529, "primary"),
        ("anthropic_backup", 200, "fallback"),
    ]


@pytest_twisted.ensureDeferred
async def test_client_errors_come_back_as_they_are(fake, backup, start_gateway):
    """A 400-class answer is the provider's verdict on the request: relayed, no fallback."""
    gateway = await start_gateway(fake, **_routing(fake.url, backup.url))
    response = await in_thread(
        httpx.post, gateway.url + "/v1/messages", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
        content=json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5}).encode(),
    )
    assert response.status_code == 400
    assert backup.requests == []


@pytest_twisted.ensureDeferred
async def test_a_marker_sends_the_request_to_the_named_provider_and_is_stripped(fake, backup, start_gateway):
    """[LUNAROUTE:anthropic_backup] in the latest user message routes there; the provider never sees the marker."""
    gateway = await start_gateway(fake, **_routing(fake.url, backup.url))
    message = await in_thread(
        _client(gateway).messages.create, model="claude-sonnet-4-5", max_tokens=20,
        messages=[{"role": "user", "content": "[LUNAROUTE:anthropic_backup] hello there"}],
    )
    assert message.content[0].text == BACKUP_TEXT
    assert fake.requests == []
    sent = json.loads(backup.requests[-1].body)
    assert "LUNAROUTE" not in json.dumps(sent)


@pytest.mark.parametrize("strategy_rule", [{"primary": None}])
def test_cross_dialect_rules_are_refused_at_start(strategy_rule, monkeypatch):
    """A rule falling back to a provider no translator reaches: one line at start."""
    from lunaroute.config import settings_from_mapping
    from lunaroute.dialects.translate import base
    from lunaroute.errors import ConfigError

    for pair in (("openai_chat", "anthropic"), ("openai_responses", "anthropic")):
        monkeypatch.delitem(base._REGISTRY, pair, raising=False)

    with pytest.raises(ConfigError) as info:
        settings_from_mapping(
            {
                "routing": {
                    "rules": [{"name": "x", "model_pattern": "^gpt-", "primary": "openai", "fallbacks": ["anthropic"]}]
                }
            },
            env={},
        )
    assert "\n" not in str(info.value) and "routing.rules" in str(info.value)


@pytest_twisted.ensureDeferred
async def test_readyz_lists_each_provider_with_its_breaker_and_health(fake, backup, start_gateway):
    """With routing, /readyz lists every provider's circuit breaker state and health."""
    gateway = await start_gateway(fake, **_routing(fake.url, backup.url))
    response = await in_thread(httpx.get, gateway.url + "/readyz")
    assert response.status_code == 200
    providers = response.json()["providers"]
    assert set(providers) >= {"anthropic", "anthropic_backup"}
    assert providers["anthropic"]["circuit_breaker"] == "closed"


@pytest_twisted.ensureDeferred
async def test_fallbacks_retries_and_breakers_are_in_the_metrics(fake, backup, start_gateway):
    """/metrics counts the retry and the fallback, and shows each provider's breaker state and health."""
    gateway = await start_gateway(fake, **_routing(fake.url, backup.url))
    await in_thread(
        _client(gateway).messages.create, model="claude-overloaded", max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
    )
    text = (await in_thread(httpx.get, gateway.url + "/metrics")).text
    assert 'lunaroute_fallback_triggered_total{from_provider="anthropic",to_provider="anthropic_backup"} 1.0' in text
    assert 'lunaroute_retries_total{provider="anthropic"} 1.0' in text
    assert 'lunaroute_circuit_breaker_state{provider="anthropic"} 0.0' in text
    assert 'lunaroute_provider_health_status{provider="anthropic_backup"}' in text


@pytest_twisted.ensureDeferred
async def test_a_primary_failing_mid_stream_is_not_retried_elsewhere(fake, backup, start_gateway):
    """
    Once bytes reached the client, a provider dropping the stream is not
    retried or replaced: the client gets what was sent and an error, and
    the backup never sees the request (no duplicate output).
    """
    gateway = await start_gateway(fake, **_routing(fake.url, backup.url))
    got: list[str] = []

    def stream() -> str:
        try:
            with _client(gateway).messages.stream(
                model="claude-drop", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
            ) as s:
                for text in s.text_stream:
                    got.append(text)
        except Exception as exc:  # the SDK reports the cut body
            return type(exc).__name__
        return "complete"

    assert await in_thread(stream) != "complete"
    assert got  # the deltas sent before the drop arrived
    assert backup.requests == []
    assert len(fake.requests) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_streams_while_the_primary_breaker_opens(fake, backup, start_gateway):
    """
    Eight streams at once against an overloaded primary: its breaker opens
    part-way (threshold 3), the later attempts skip it at once, and every
    stream is served whole by the backup.
    """
    from twisted.internet import defer

    config = _routing(fake.url, backup.url)
    config["routing"]["circuit_breaker"] = {"failure_threshold": 3, "open_timeout_secs": 60}
    # The fake answers "server-error" models with a 500: a failure the breaker counts.
    gateway = await start_gateway(fake, **config)

    def stream(n: int) -> str:
        with _client(gateway).messages.stream(
            model="claude-server-error", max_tokens=20, messages=[{"role": "user", "content": f"hi {n}"}]
        ) as s:
            return "".join(s.text_stream)

    texts = await defer.gatherResults([in_thread(stream, n) for n in range(8)])
    assert texts == [BACKUP_TEXT] * 8
    states = (await in_thread(httpx.get, gateway.url + "/readyz")).json()["providers"]
    assert states["anthropic"]["circuit_breaker"] == "open"
    assert len(backup.requests) == 8


@pytest_twisted.ensureDeferred
async def test_attempts_are_visible_in_the_session_api(fake, backup, start_gateway, tmp_path):
    """With recording on, the session API's timeline shows the rule and each attempt of a fallback."""
    config = _routing(fake.url, backup.url)
    config["session_recording"] = {"enabled": True, "sessions_dir": str(tmp_path / "sessions")}
    gateway = await start_gateway(fake, **config)
    await in_thread(
        _client(gateway).messages.create, model="claude-overloaded", max_tokens=20,
        messages=[{"role": "user", "content": "hi"}], extra_headers={"x-session-id": "routed-session"},
    )
    await gateway.service.recorder.flush()
    timeline = (await in_thread(httpx.get, gateway.url + "/sessions/routed-session/timeline")).json()
    responses = [item for item in timeline["events"] if item["type"] == "response"]
    routing = responses[-1]["routing"]
    assert routing["rule"] == "claude-with-fallback"
    assert [(a["provider"], a["status"]) for a in routing["attempts"]] == [
        ("anthropic", 529), ("anthropic", 529), ("anthropic_backup", 200)
    ]


@pytest_twisted.ensureDeferred
async def test_the_switch_notice_reaches_the_fallback_once(fake, backup, start_gateway):
    """
    With provider_switch_notification, the request the backup serves carries
    the rendered notice (original and new provider, the reason) once, at
    the end of the conversation; the primary's requests carry none.
    """
    config = _routing(fake.url, backup.url)
    config["routing"]["provider_switch_notification"] = {
        "default_message": "NOTE: answered by ${new_provider} instead of ${original_provider} (${reason})."
    }
    gateway = await start_gateway(fake, **config)
    message = await in_thread(
        _client(gateway).messages.create, model="claude-overloaded", max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
    )
    assert message.content[0].text == BACKUP_TEXT
    sent = json.dumps(json.loads(backup.requests[0].body))
    assert sent.count("NOTE: answered by anthropic_backup instead of anthropic") == 1
    assert all("NOTE: answered" not in request.body.decode() for request in fake.requests)
    assert json.loads(backup.requests[0].body)["messages"][0]["content"]  # the user's turn is kept
