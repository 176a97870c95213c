"""
Shared fixtures: a fake provider on 127.0.0.1 and a gateway in front of it,
both on the real reactor (pytest-twisted), driven by the official SDKs.

SDK calls block, so tests run them with C{deferToThread} while the reactor
keeps serving both servers.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from lunaroute.config import settings_from_mapping
from lunaroute.service import make_gateway_service
from lunaroute.testing.fake_provider import FakeProvider


def free_port() -> int:
    """A TCP port nothing listens on right now (for subprocess servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call (an SDK request) off the reactor thread."""
    return deferToThread(fn, *args, **kwargs)


@pytest_twisted.async_yield_fixture
async def fake():
    provider = FakeProvider(reactor)
    port = provider.listen()
    provider.url = f"http://127.0.0.1:{port.getHost().port}"
    yield provider
    await provider.stop()


class RunningGateway:
    def __init__(self, service: Any, port: int) -> None:
        self.service = service
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.app = service.gateway

    def anthropic(self, **kwargs: Any) -> Any:
        import anthropic

        kwargs.setdefault("api_key", "sk-ant-client-key-123456789")
        kwargs.setdefault("max_retries", 0)
        return anthropic.Anthropic(base_url=self.url, **kwargs)

    def openai(self, **kwargs: Any) -> Any:
        import openai

        kwargs.setdefault("api_key", "sk-client-key-123456789")
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.url + "/v1", **kwargs)


def gateway_settings(fake_url: str, **extra: Any) -> Any:
    """Settings pointing both providers at the fake, on an ephemeral port."""
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "providers": {
            "anthropic": {"base_url": fake_url},
            "openai": {"base_url": fake_url + "/v1"},
        },
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            merged = dict(data[key])
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            data[key] = merged
        else:
            data[key] = value
    return settings_from_mapping(data, env={})


@pytest_twisted.async_yield_fixture
async def start_gateway():
    """
    A factory: C{await start_gateway(fake, **config)} starts a gateway whose
    providers point at C{fake}; every gateway is stopped after the test.
    """
    started: list[Any] = []

    async def start(fake_provider: Any, **config: Any) -> RunningGateway:
        settings = gateway_settings(fake_provider.url, **config)
        service = make_gateway_service(settings, reactor=reactor)
        service.startService()
        started.append(service)
        port = await service.listening_port()
        return RunningGateway(service, port.getHost().port)

    yield start
    for service in started:
        if service.running:
            await service.stopService()


@pytest_twisted.async_yield_fixture
async def gateway(fake, start_gateway):
    yield await start_gateway(fake)
