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


@pytest_twisted.ensureDeferred
async def test_hot_routes_skip_klein_url_map(gateway, monkeypatch):
    """
    POST /v1/messages (and the other conversation routes) are dispatched by
    a dict lookup, not by binding and matching Klein's URL map; other paths
    still go through the map.
    """
    from werkzeug.routing import Map

    binds: list[str] = []
    real_bind = Map.bind

    def counting_bind(self, *args, **kwargs):
        binds.append(kwargs.get("path_info") or "")
        return real_bind(self, *args, **kwargs)

    monkeypatch.setattr(Map, "bind", counting_bind)
    response = await in_thread(
        httpx.post,
        gateway.url + "/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": "sk-test", "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200
    assert binds == []
    health = await in_thread(httpx.get, gateway.url + "/healthz")
    assert health.status_code == 200
    assert binds == ["/healthz"]


@pytest_twisted.ensureDeferred
async def test_hot_route_errors_match_klein_routes(gateway, monkeypatch, logged_failures):
    """
    A bug while forwarding is a 500 in the client's dialect on a hot route
    exactly as on a route Klein dispatches (count_tokens runs the same step),
    and a bad body is the same 400.
    """
    from lunaroute.proxy.app import GatewayApp

    def broken(self, *args, **kwargs):
        raise RuntimeError("boom")

    headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
    bad = await in_thread(httpx.post, gateway.url + "/v1/messages", content=b"{nope", headers=headers)
    bad_klein = await in_thread(
        httpx.post, gateway.url + "/v1/messages/count_tokens", content=b"{nope", headers=headers
    )
    assert bad.status_code == bad_klein.status_code == 400
    assert bad.json() == bad_klein.json()
    assert bad.json()["type"] == "error"

    logged_failures.expect(RuntimeError)
    monkeypatch.setattr(GatewayApp, "forward", broken)
    hot = await in_thread(httpx.post, gateway.url + "/v1/messages", json={}, headers=headers)
    routed = await in_thread(httpx.post, gateway.url + "/v1/messages/count_tokens", json={}, headers=headers)
    assert hot.status_code == routed.status_code == 500
    assert hot.json() == routed.json()
    assert hot.json()["error"]["type"] == "api_error"
    chat = await in_thread(httpx.post, gateway.url + "/v1/chat/completions", json={}, headers=headers)
    assert chat.status_code == 500
    assert chat.json()["error"]["code"] == "internal_error"
