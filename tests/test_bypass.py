"""
Bypass (paths the gateway does not serve itself go verbatim to one provider),
path aliases and the request body limit, driven by the official SDKs.
"""

from __future__ import annotations

import io

import anthropic
import httpx
import openai
import pytest
import pytest_twisted

from lunaroute.testing.helpers import in_thread


@pytest_twisted.ensureDeferred
async def test_embeddings_are_bypassed_to_openai(gateway, fake):
    """embeddings.create works through the gateway and reaches the provider unchanged."""
    client = gateway.openai()
    result = await in_thread(client.embeddings.create, model="text-embedding-3-small", input="hello")
    assert result.data and len(result.data[0].embedding) > 0
    seen = fake.requests[-1]
    assert seen.path == "/v1/embeddings"
    assert seen.header("authorization") == "Bearer sk-client-key-123456789"


@pytest_twisted.ensureDeferred
async def test_multipart_file_upload_byte_for_byte(gateway, fake):
    """A multipart upload reaches the provider byte for byte."""
    client = gateway.openai()
    payload = bytes(range(256)) * 64
    uploaded = await in_thread(
        client.files.create, file=("data.jsonl", io.BytesIO(payload)), purpose="batch"
    )
    seen = fake.requests[-1]
    assert seen.path == "/v1/files"
    assert payload in seen.body
    assert uploaded.bytes == len(payload)
    assert uploaded.filename == "data.jsonl"


@pytest_twisted.ensureDeferred
async def test_binary_audio_response_unchanged(gateway, fake):
    """audio.speech's binary body comes back exactly as the provider sent it."""
    from lunaroute.testing.fake_provider import FakeProvider

    client = gateway.openai()
    response = await in_thread(
        client.audio.speech.create, model="tts-1", voice="alloy", input="hello there"
    )
    assert response.content == FakeProvider.speech_bytes("hello there")


@pytest_twisted.ensureDeferred
async def test_raw_bypass_matches_direct(gateway, fake):
    """Any method on an unknown path is relayed with status, headers and body intact."""

    def run():
        direct = httpx.get(fake.url + "/v1/unknown/thing?x=1", headers={"authorization": "Bearer k"})
        via = httpx.get(gateway.url + "/v1/unknown/thing?x=1", headers={"authorization": "Bearer k"})
        return direct, via

    direct, via = await in_thread(run)
    assert via.status_code == direct.status_code == 404
    assert via.content == direct.content
    assert fake.requests[-1].query == b"x=1"


@pytest_twisted.ensureDeferred
async def test_bypass_to_anthropic_for_message_batches(fake, start_gateway):
    """bypass.provider anthropic sends /v1/messages/batches to the Anthropic provider."""
    gw = await start_gateway(fake, bypass={"provider": "anthropic"})
    await in_thread(
        httpx.post, gw.url + "/v1/messages/batches", json={"requests": []},
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )
    assert fake.requests[-1].path == "/v1/messages/batches"


@pytest_twisted.ensureDeferred
async def test_bypass_off_gives_404_in_dialect(fake, start_gateway):
    """With bypass off, unknown paths are a 404 in the dialect of the path."""
    gw = await start_gateway(fake, bypass={"enabled": False})
    before = len(fake.requests)
    client = gw.openai()
    with pytest.raises(openai.NotFoundError) as info:
        await in_thread(client.embeddings.create, model="text-embedding-3-small", input="x")
    assert info.value.status_code == 404
    response = await in_thread(
        httpx.post, gw.url + "/v1/messages/batches", json={}, headers={"anthropic-version": "2023-06-01"}
    )
    assert response.status_code == 404
    assert response.json()["type"] == "error"
    assert len(fake.requests) == before


@pytest_twisted.ensureDeferred
async def test_models_alias_without_v1(gateway, fake):
    """GET /models behaves like GET /v1/models."""
    direct = await in_thread(httpx.get, gateway.url + "/v1/models", headers={"authorization": "Bearer k"})
    alias = await in_thread(httpx.get, gateway.url + "/models", headers={"authorization": "Bearer k"})
    assert alias.status_code == 200
    assert alias.json()["data"] == direct.json()["data"]


@pytest_twisted.ensureDeferred
async def test_oversized_body_is_413_and_never_forwarded(fake, start_gateway):
    """A body over max_request_body_bytes gets 413 in the client's dialect and never reaches the provider."""
    gw = await start_gateway(fake, http_server={"max_request_body_bytes": 1000})
    before = len(fake.requests)
    client = gw.anthropic()
    with pytest.raises(anthropic.APIStatusError) as info:
        await in_thread(
            client.messages.create, model="claude-sonnet-4-5", max_tokens=5,
            messages=[{"role": "user", "content": "x" * 5000}],
        )
    assert info.value.status_code == 413
    assert info.value.body["error"]["type"] == "request_too_large"
    oai = gw.openai()
    with pytest.raises(openai.APIStatusError) as info2:
        await in_thread(
            oai.chat.completions.create, model="gpt-4.1",
            messages=[{"role": "user", "content": "x" * 5000}],
        )
    assert info2.value.status_code == 413

    def chunked():
        def body():
            for _ in range(10):
                yield b"y" * 500

        return httpx.post(gw.url + "/v1/embeddings", content=body(), headers={"authorization": "Bearer k"})

    response = await in_thread(chunked)
    assert response.status_code == 413
    assert len(fake.requests) == before


@pytest_twisted.ensureDeferred
async def test_bypassed_calls_are_counted_but_not_recorded(fake, start_gateway, tmp_path):
    """Bypassed requests appear in metrics by path family and never as recorded sessions."""
    from prometheus_client.parser import text_string_to_metric_families

    sessions = tmp_path / "sessions"
    gw = await start_gateway(fake, session_recording={"enabled": True, "sessions_dir": str(sessions)})
    client = gw.openai()
    for _ in range(2):
        await in_thread(client.embeddings.create, model="text-embedding-3-small", input="hello")
    text = (await in_thread(httpx.get, gw.url + "/metrics")).text
    count = sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "lunaroute_bypass_requests_total" and s.labels.get("path_family") == "/v1/embeddings"
    )
    assert count == 2
    await gw.service.stopService()
    assert not list(sessions.glob("*/session_*.jsonl"))
