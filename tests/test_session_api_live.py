"""
The session API through a running gateway: the anthropic SDK talks to the
fake provider through it with recording on, and the API answers over a real
socket, guarded by the gateway token, with a live tail that receives an
exchange recorded after it connected.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from lunaroute.api import with_session_api
from lunaroute.proxy.access import AccessPolicy, GuardedResource
from lunaroute.testing.helpers import in_thread

SESSION = "5e0c1a2b-3d4e-4f50-8a9b-0c1d2e3f4a5b"
USER_ID = json.dumps({"device_id": "cd" * 32, "account_uuid": "", "session_id": SESSION})
TOKEN = "api-token-0123456789abcdef"


def mount_api(gw: Any) -> None:
    """What service.py does once the lead wires it (see lunaroute.api's docstring)."""
    service = gw.service
    settings = service.settings
    service.site.resource = GuardedResource(
        with_session_api(service.gateway.resource(), settings, service.recorder, reactor, service.pricing),
        AccessPolicy(settings.http_server),
    )


class Tail(Protocol):
    """A raw HTTP client reading an event stream until told to hang up."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data = b""
        self.waiting: list[tuple[bytes, Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for marker, d in list(self.waiting):
            if marker in self.data:
                self.waiting.remove((marker, d))
                d.callback(None)

    def wait_for(self, marker: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if marker in self.data:
            d.callback(None)
        else:
            self.waiting.append((marker, d))
        return d.addTimeout(20, reactor)


async def turn(gw: Any, text: str) -> None:
    client = gw.anthropic()
    await in_thread(
        client.messages.create, model="claude-sonnet-4", max_tokens=50, metadata={"user_id": USER_ID},
        system="You are helpful.\nWorking directory: /srv/project-x",
        messages=[{"role": "user", "content": text}],
    )


async def until(predicate: Any) -> None:
    """Let the reactor run (no wall-clock wait) until predicate() holds."""
    for _ in range(10_000):
        if predicate():
            return
        await task.deferLater(reactor, 0, lambda: None)
    raise AssertionError("condition never held")


@pytest_twisted.ensureDeferred
async def test_sdk_session_is_listed_searched_and_tailed_through_the_gateway(fake, start_gateway, tmp_path):
    """Record with the SDK, find it with the original's curl, tail it live, all behind the token."""
    gw = await start_gateway(
        fake,
        session_recording={"enabled": True, "sessions_dir": str(tmp_path / "sessions")},
        http_server={"auth_token": TOKEN},
    )
    mount_api(gw)
    await turn(gw, "why does my parser raise TypeError on empty input?")
    await gw.service.recorder.flush()
    headers = {"authorization": f"Bearer {TOKEN}"}

    response = await treq.get(gw.url + "/sessions?text_search=TypeError&days=7")
    assert response.code == 401
    await response.content()
    response = await treq.get(gw.url + "/sessions?text_search=TypeError&days=7", headers=headers)
    assert response.code == 200
    body = await response.json()
    assert [s["session_id"] for s in body["sessions"]] == [SESSION] and body["total"] == 1
    session = body["sessions"][0]
    assert session["client"] == "Anthropic Python SDK"
    assert session["project"] == "/srv/project-x"
    assert session["title"] == "why does my parser raise TypeError on empty input?"

    # A live tail, then a second turn recorded after it connected.
    tail = Tail(f"/sessions/{SESSION}/events")
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", gw.port), tail)
    await tail.wait_for(b": tailing session")
    await turn(gw, "and with a capybara in it?")
    await tail.wait_for(b"event: exchange")
    await tail.wait_for(b"}\n\n")
    event = tail.data.split(b"event: exchange", 1)[1]
    data = json.loads(event.split(b"data: ", 1)[1].split(b"\n\n", 1)[0])
    assert data["session_id"] == SESSION and data["request_id"]
    assert data["response_text"]
    assert b"event: exchange" not in event.split(b"\n\n", 1)[1]  # the first turn was not replayed

    response = await treq.get(gw.url + f"/sessions/{SESSION}/timeline", headers=headers)
    timeline = await response.json()
    assert [e["type"] for e in timeline["events"]] == ["request", "response", "request", "response"]
    response = await treq.get(gw.url + f"/sessions/{SESSION}/raw/{data['request_id']}", headers=headers)
    raw = await response.json()
    assert raw["request_json"]["messages"][0]["content"] == "and with a capybara in it?"
    response = await treq.get(gw.url + "/api/search?q=capybara", headers=headers)
    hits = (await response.json())["hits"]
    assert hits[0]["request_id"] == data["request_id"] and "<mark>capybara</mark>" in hits[0]["snippet"]

    # The client hangs up: the tail is dropped.
    feed_size = _subscribers(gw)
    assert feed_size == 1
    tail.transport.loseConnection()
    await until(lambda: _subscribers(gw) == 0)


def _subscribers(gw: Any) -> int:
    return sum(cb.__self__.subscriber_count(SESSION) for cb in gw.service.recorder.listeners())


@pytest_twisted.ensureDeferred
async def test_session_api_answers_404_json_when_recording_is_off(fake, start_gateway):
    """No recorder: the API's paths say recording is off; the provider routes still work."""
    gw = await start_gateway(fake)
    mount_api(gw)
    response = await treq.get(gw.url + "/sessions")
    assert response.code == 404
    assert (await response.json())["error"]["type"] == "recording_disabled"
    response = await treq.get(gw.url + "/healthz")
    assert response.code == 200
    await response.content()
