"""
The gateway's own routes: health, readiness, the HEAD / probe, unknown paths
and dialect restriction.
"""

from __future__ import annotations

import httpx
import pytest_twisted

from lunaroute.testing.helpers import in_thread


@pytest_twisted.ensureDeferred
async def test_healthz(gateway):
    """/healthz answers {"status":"ok"}."""
    response = await in_thread(httpx.get, gateway.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest_twisted.ensureDeferred
async def test_readyz_reports_each_dialect(gateway):
    """/readyz lists the provider serving each dialect."""
    response = await in_thread(httpx.get, gateway.url + "/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["dialects"]["anthropic"]["provider"] == "anthropic"
    assert body["dialects"]["openai"]["provider"] == "openai"


@pytest_twisted.ensureDeferred
async def test_readyz_is_503_without_providers(fake, start_gateway):
    """With every provider disabled nothing can be served: 503."""
    gw = await start_gateway(
        fake, providers={"anthropic": {"enabled": False}, "openai": {"enabled": False}}
    )
    response = await in_thread(httpx.get, gw.url + "/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"


@pytest_twisted.ensureDeferred
async def test_head_root_probe(gateway):
    """Claude Code's HEAD / probe gets a 200 with no body."""
    response = await in_thread(httpx.head, gateway.url + "/")
    assert response.status_code == 200
    assert response.content == b""


@pytest_twisted.ensureDeferred
async def test_anthropic_only_dialect_hides_openai_routes(fake, start_gateway):
    """api_dialect anthropic: the OpenAI routes are 404 in OpenAI's error shape."""
    gw = await start_gateway(fake, api_dialect="anthropic")
    response = await in_thread(
        httpx.post, gw.url + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []}
    )
    assert response.status_code == 404
    assert "error" in response.json() and "message" in response.json()["error"]
    readyz = await in_thread(httpx.get, gw.url + "/readyz")
    assert "openai" not in readyz.json()["dialects"]
