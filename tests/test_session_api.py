"""
The session API (lunaroute.api) in memory: StubTreq over the Klein
resource, a store running its queries inline, a Clock for the live tail's
keep-alives.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from test_session_store import CC, CX, NOON, SDK, record_sample, sample_exchanges
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from lunaroute.api import RecordingOff, mount, session_api_resource
from lunaroute.api.app import KEEPALIVE_SECS, LiveFeed, SessionAPI
from lunaroute.api.openapi import openapi_document
from lunaroute.config import settings_from_mapping
from lunaroute.proxy.access import route_class
from lunaroute.sessions.recorder import InlineThreadPool
from lunaroute.sessions.store import SessionStore
from lunaroute.testing.sessions import anthropic_summary, make_exchange, write_exchanges

BASE = "http://gateway"


class Api:
    """
    The API over a store holding the sample sessions: SQLite, or the
    PostgreSQL store when given C{postgres_dsn} (the API does not know which).
    """

    def __init__(self, tmp_path: Path, postgres_dsn: str | None = None, **ui: Any) -> None:
        self.db = str(tmp_path / "sessions.db")
        self.postgres_dsn = postgres_dsn
        self.jsonl = tmp_path / "jsonl"
        self.clock = Clock()
        self.clock.advance(NOON + 3600)
        self.store: Any
        if postgres_dsn is None:
            record_sample(self.db)
            self.store = SessionStore(
                self.db, reactor=self.clock, threadpool=InlineThreadPool(), jsonl_dir=str(self.jsonl)
            )
        else:
            from lunaroute.config import PostgresSettings
            from lunaroute.sessions.postgres import PostgresSessionStore

            self.write(sample_exchanges())
            self.store = PostgresSessionStore(
                PostgresSettings(enabled=True, connection_string=postgres_dsn, min_connections=0),
                reactor=self.clock, threadpool=InlineThreadPool(), jsonl_dir=str(self.jsonl),
            )
        self.settings = settings_from_mapping({"ui": ui} if ui else {}, env={})
        self.feed = LiveFeed()
        self.api = SessionAPI(self.store, self.settings, self.clock, self.feed)
        self.stub = StubTreq(self.api.resource())

    def write(self, exchanges: list[Any]) -> None:
        """Record more exchanges into the store."""
        if self.postgres_dsn is None:
            write_exchanges(self.db, exchanges)
            return
        from lunaroute.sessions.events import exchange_events
        from lunaroute.sessions.postgres import PostgresWriter

        writer = PostgresWriter(self.postgres_dsn)
        writer.write_batch([e for x in exchanges for e in exchange_events(x)])
        writer.close()

    def execute(self, sql: str, *params: Any) -> None:
        """Change the store behind the recorder's back (C{?} placeholders)."""
        if self.postgres_dsn is None:
            conn = sqlite3.connect(self.db)
            conn.execute(sql, params)
            conn.commit()
            conn.close()
            return
        import psycopg

        with psycopg.connect(self.postgres_dsn, autocommit=True) as pg:
            pg.execute(sql.replace("?", "%s"), params)  # type: ignore[call-overload]

    def close(self) -> None:
        self.store.close()

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self.stub.get(BASE + path)
        body = await response.content()
        ctype = response.headers.getRawHeaders(b"content-type", [b""])[0]
        return response.code, (json.loads(body) if ctype.startswith(b"application/json") else body)

    async def get_with(self, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        response = await self.stub.get(BASE + path, headers=headers)
        return response.code, json.loads(await response.content())

    async def delete(self, path: str) -> tuple[int, Any]:
        response = await self.stub.delete(BASE + path)
        return response.code, json.loads(await response.content())


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The API over each store (the PostgreSQL one needs a test server: lunaroute.testing.postgres)."""
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    made = Api(tmp_path, dsn)
    yield made
    made.close()


def ids(body: dict[str, Any]) -> list[str]:
    return [s["session_id"] for s in body["sessions"]]


@pytest_twisted.ensureDeferred
async def test_the_original_guides_search_works(api: Api) -> None:
    """`/sessions?text_search=TypeError&days=7` finds the session that said it, with the total."""
    code, body = await api.get("/sessions?text_search=TypeError&days=7")
    assert code == 200
    assert ids(body) == [CX] and body["total"] == 1
    assert body["sessions"][0]["metadata"]["client"] == "Codex"


@pytest_twisted.ensureDeferred
async def test_every_filter(api: Api) -> None:
    """Each filter of GET /sessions narrows the list as documented."""
    cases = {
        "model=claude-haiku-4": [SDK],
        "provider=openai": [CX],
        "client=Claude%20Code": [CC],
        "project=%2Ftmp%2Fcx-work": [CX],
        "days=1": [CX, CC],
        "from=2025-06-12&to=2025-06-12": [SDK],
        "from=2025-06-15T12:00:30Z": [CX],
        "min_input_tokens=1000": [CX, SDK],
        "max_input_tokens=1000": [CC],
        "min_output_tokens=60": [SDK],
        "max_output_tokens=45": [CC],
        "min_total_tokens=5000&max_total_tokens=9000": [CX],
        "min_cost=0.1": [SDK],
        "max_cost=0.05": [CC],
        "min_duration_ms=10000": [SDK],
        "max_duration_ms=5000": [CX],
        "success=false": [CX],
        "success=true": [CC, SDK],
        "text_search=wombat": [SDK],
        "text_search=%22greets%20you%22": [CC],
    }
    for query, expected in cases.items():
        code, body = await api.get(f"/sessions?{query}")
        assert code == 200, (query, body)
        assert ids(body) == expected, query
        assert body["total"] == len(expected), query


@pytest_twisted.ensureDeferred
async def test_sorts_and_pages(api: Api) -> None:
    """sort/order choose the order; limit/offset page; the total is the whole count; X-Total-Count too."""
    _, body = await api.get("/sessions?sort=total_tokens&order=asc")
    assert ids(body) == [CC, CX, SDK]
    _, body = await api.get("/sessions?sort=requests")
    assert ids(body)[0] == CC
    _, body = await api.get("/sessions?sort=duration&order=desc")
    assert ids(body)[0] == SDK
    _, body = await api.get("/sessions?sort=started_at&order=asc&limit=2&offset=2")
    assert ids(body) == [CX] and body["total"] == 3 and body["limit"] == 2 and body["offset"] == 2
    _, body = await api.get("/sessions?offset=99")
    assert body["sessions"] == [] and body["total"] == 3
    response = await api.stub.get(BASE + "/sessions?limit=1")
    assert response.headers.getRawHeaders(b"x-total-count") == [b"3"]
    await response.content()


@pytest_twisted.ensureDeferred
async def test_bad_parameters_are_400s_naming_them(api: Api) -> None:
    """Every malformed or unknown parameter is a 400 whose error.param names it."""
    for query, param in (
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("days=0", "days"),
        ("days=7&from=2025-01-01", "days"),
        ("from=yesterday", "from"),
        ("to=2025-13-45", "to"),
        ("from=2025-06-15&to=2025-06-01", "from"),
        ("min_cost=cheap", "min_cost"),
        ("min_cost=nan", "min_cost"),
        ("min_total_tokens=10&max_total_tokens=5", "min_total_tokens"),
        ("success=maybe", "success"),
        ("sort=size", "sort"),
        ("order=up", "order"),
        ("min_tokens=5", "min_tokens"),
        ("text_search=%22unbalanced", "text_search"),
        ("text_search=response_text%3A%20(x", "text_search"),
    ):
        code, body = await api.get(f"/sessions?{query}")
        assert code == 400, query
        assert body["error"]["param"] == param, (query, body)
        assert body["error"]["type"] == "invalid_request_error"
        assert param in body["error"]["message"] or "search query" in body["error"]["message"]
    code, body = await api.get("/api/search?q=%22open")
    assert code == 400 and body["error"]["param"] == "q"
    assert "malformed search query" in body["error"]["message"]
    code, body = await api.get("/api/search")
    assert code == 400 and body["error"]["param"] == "q"


@pytest_twisted.ensureDeferred
async def test_unknown_ids_are_404_and_bad_ids_400(api: Api) -> None:
    """A well-formed unknown id is a 404; one with characters outside [A-Za-z0-9_-] never reaches the store."""
    for path in ("/sessions/nope", "/sessions/nope/timeline", "/sessions/nope/tools",
                 f"/sessions/{CC}/raw/nope", f"/sessions/{CX}/raw/cc-req-1", "/sessions/nope/export"):
        code, body = await api.get(path)
        assert code == 404, path
        assert body["error"]["type"] == "not_found_error"
    for path, param in (("/sessions/a.b", "session_id"), ("/sessions/%2e%2e", "session_id"),
                        (f"/sessions/{CC}/raw/x%27y", "request_id"), ("/sessions/" + "a" * 256, "session_id")):
        code, body = await api.get(path)
        assert code == 400 and body["error"]["param"] == param, path
    code, body = await api.get("/sessions/x/y/z")
    assert code == 404 and body["error"]["message"].startswith("no route for GET")
    response = await api.stub.post(BASE + "/sessions")
    assert response.code == 405
    assert json.loads(await response.content())["error"]["type"] == "method_not_allowed"


@pytest_twisted.ensureDeferred
async def test_detail_timeline_raw_tools(api: Api) -> None:
    """The detail routes answer with the store's figures; raw masks credentials."""
    code, session = await api.get(f"/sessions/{CC}")
    assert code == 200 and [r["request_id"] for r in session["requests"]] == ["cc-req-1", "cc-req-2"]
    assert session["requests"][0]["cache_creation_1h_tokens"] == 500
    _, timeline = await api.get(f"/sessions/{CC}/timeline")
    assert [e["type"] for e in timeline["events"]] == ["request", "tool_call", "response", "request", "response"]
    _, raw = await api.get(f"/sessions/{CC}/raw/cc-req-1")
    assert raw["request_json"]["system"][0]["type"] == "text"
    _, tools = await api.get(f"/sessions/{CC}/tools")
    assert tools["tools"][0]["tool_name"] == "Read" and tools["tools"][0]["avg_duration_ms"] == 1200.0
    _, hits = await api.get("/api/search?q=capybara&limit=5")
    assert hits["hits"][0]["request_id"] == "cc-req-1"
    assert "<mark>capybara</mark>" in hits["hits"][0]["snippet"]
    _, same = await api.get(f"/api/sessions/{CC}")
    assert same == session


@pytest_twisted.ensureDeferred
async def test_raw_masks_credentials_stored_by_anyone(api: Api) -> None:
    """A key written into the database by something else than the recorder is still masked."""
    api.execute(
        "UPDATE session_stats SET request_json = ? WHERE request_id = 'sdk-req-1'",
        json.dumps({"model": "m", "api_key": "sk-live-abcdefghijklmnop"}),
    )
    _, raw = await api.get(f"/sessions/{SDK}/raw/sdk-req-1")
    assert raw["request_json"]["api_key"] != "sk-live-abcdefghijklmnop"
    assert "sk-live-abcdefghijklmnop" not in json.dumps(raw)


@pytest_twisted.ensureDeferred
async def test_statistics_routes(api: Api) -> None:
    """Every stats route answers with its window; days and from/to are checked."""
    for name in (
        "overview", "tokens", "tools", "costs", "models", "hours", "spending",
        "usage", "clients", "projects", "durations", "blocks",
    ):
        code, body = await api.get(f"/api/stats/{name}?days=30")
        assert code == 200, (name, body)
        assert body["window"]["from"] == "2025-05-16T13:00:00.000Z"
    _, clients = await api.get("/api/stats/clients")
    assert {c["client"] for c in clients["clients"]} >= {"Claude Code", "Codex"}
    _, overview = await api.get("/api/stats/overview?from=2025-06-15")
    assert overview["requests"] == 3 and overview["sessions"] == 2
    _, overview = await api.get("/api/stats/overview")
    assert overview["requests"] == 4 and overview["cost_usd"] == pytest.approx(0.53)
    code, body = await api.get("/api/stats/nope")
    assert code == 404
    code, body = await api.get("/api/stats/overview?days=x")
    assert code == 400 and body["error"]["param"] == "days"
    _, recent = await api.get("/api/sessions/recent?limit=2")
    assert ids(recent) == [CX, CC]
    _, agents = await api.get("/api/user-agents?days=2")
    assert {a["client"] for a in agents["user_agents"]} == {"Claude Code", "Codex"}
    _, models = await api.get("/api/models")
    assert {m["model"] for m in models["models"]} == {"claude-sonnet-4", "gpt-5.5", "claude-haiku-4"}


@pytest_twisted.ensureDeferred
async def test_exports(api: Api) -> None:
    """json, jsonl, csv and html exports of a session, as attachments."""
    response = await api.stub.get(BASE + f"/sessions/{CC}/export?format=json")
    assert response.headers.getRawHeaders(b"content-disposition") == [
        f'attachment; filename="session_{CC}.json"'.encode()]
    exported = json.loads(await response.content())
    assert exported["requests"][1]["response_text"] == "The file greets you: hello."
    assert exported["tool_calls"][0]["tool_name"] == "Read"
    _, lines = await api.get(f"/sessions/{CC}/export?format=jsonl")
    assert [json.loads(line)["request_id"] for line in lines.splitlines()] == ["cc-req-1", "cc-req-2"]
    _, csv_body = await api.get(f"/sessions/{CC}/export?format=csv")
    rows = csv_body.decode().splitlines()
    assert rows[0].startswith("request_id,started_at") and len(rows) == 3
    code, body = await api.get(f"/sessions/{CC}/export?format=pdf")
    assert code == 400 and body["error"]["param"] == "format"


@pytest_twisted.ensureDeferred
async def test_html_export_escapes_everything_and_loads_nothing(api: Api) -> None:
    """Recorded markup is shown as text; the page has no script and a CSP forbidding fetches."""
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    api.write([make_exchange(
        "evil-1", "evil-req", {"model": "m", "messages": [{"role": "user", "content": evil}]},
        anthropic_summary(f"answer {evil}", thinking=evil, tool_calls=[("t1", "Bash", {"command": evil})]),
        received=NOON + 100)])
    _, page = await api.get("/sessions/evil-1/export?format=html")
    text = page.decode()
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert "default-src 'none'" in text
    assert not re.search(r"(src|href)=\"?https?:", text)
    _, sessions = await api.get("/sessions?text_search=alert")
    assert ids(sessions) == ["evil-1"]


@pytest_twisted.ensureDeferred
async def test_html_export_of_a_codex_session_shows_its_turns(api: Api) -> None:
    """The user side of a Responses turn (its new input, a function call's output) and the answer are on the page."""
    _, page = await api.get(f"/sessions/{CX}/export?format=html")
    text = page.decode()
    assert "say hi" in text and "TypeError: undefined is not a function" in text
    assert "overloaded_error" in text  # the error of the turn
    assert "<title>say hi</title>" in text


@pytest_twisted.ensureDeferred
async def test_no_database_is_a_503(tmp_path: Path) -> None:
    """Before anything was recorded the API says so with a 503, naming no parameter."""
    store = SessionStore(str(tmp_path / "none.db"), reactor=Clock(), threadpool=InlineThreadPool())
    api = SessionAPI(store, settings_from_mapping({}, env={}), Clock(), LiveFeed())
    response = await StubTreq(api.resource()).get(BASE + "/sessions")
    assert response.code == 503
    body = json.loads(await response.content())
    assert body["error"]["type"] == "store_unavailable" and body["error"]["param"] is None


@pytest_twisted.ensureDeferred
async def test_delete_only_when_enabled(tmp_path: Path) -> None:
    """DELETE is a 403 by default; with ui.delete_enabled it removes the session and says what went."""
    api = Api(tmp_path)
    code, body = await api.delete(f"/sessions/{CC}")
    assert code == 403 and "ui.delete_enabled" in body["error"]["message"]
    assert (await api.get(f"/sessions/{CC}"))[0] == 200

    enabled = Api(tmp_path / "on", delete_enabled=True)
    day = enabled.jsonl / "2025-06-15"
    day.mkdir(parents=True)
    (day / f"session_{CC}.jsonl").write_text("{}\n")
    code, body = await enabled.delete(f"/sessions/{CC}")
    assert code == 200
    assert body["removed"]["requests"] == 2 and body["removed"]["jsonl_files"] == [f"2025-06-15/session_{CC}.jsonl"]
    assert (await enabled.get(f"/sessions/{CC}"))[0] == 404
    assert (await enabled.get("/api/search?q=capybara"))[1]["hits"] == []
    assert (await enabled.delete(f"/sessions/{CC}"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_live_tail_pushes_exchanges_recorded_after_connecting(api: Api) -> None:
    """The SSE stream gets one event per new request of its session, none of others, and keep-alives."""
    received: list[bytes] = []
    response = await api.stub.get(BASE + f"/sessions/{CC}/events")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"text/event-stream; charset=utf-8"]
    done = treq.collect(response, received.append)
    api.stub.flush()
    assert b"".join(received).startswith(b": tailing session")
    assert api.feed.subscriber_count(CC) == 1

    api.write([
        make_exchange(CC, "cc-req-3", {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "next"}]},
                      anthropic_summary("third answer"), received=NOON + 30),
        make_exchange(SDK, "sdk-req-2", {"model": "m", "messages": [{"role": "user", "content": "other"}]},
                      anthropic_summary("not for this tail"), received=NOON + 31),
    ])
    api.feed.batch_written([(CC, "cc-req-3"), (SDK, "sdk-req-2")])
    api.feed.batch_written([(CC, "cc-req-3")])  # told twice: sent once
    api.stub.flush()
    stream = b"".join(received).decode()
    events = [block for block in stream.split("\n\n") if block.startswith("event: exchange")]
    assert len(events) == 1
    assert "id: cc-req-3" in events[0]
    data = json.loads(events[0].split("data: ", 1)[1])
    assert data["response_text"] == "third answer" and data["session_id"] == CC
    assert "not for this tail" not in stream

    api.clock.advance(KEEPALIVE_SECS)
    api.stub.flush()
    assert b"".join(received).endswith(b": keep-alive\n\n")
    # (A client leaving is tested over a real socket, test_session_api_live.)
    done.addErrback(lambda f: f.trap(CancelledError))
    done.cancel()


@pytest_twisted.ensureDeferred
async def test_a_reconnecting_tail_gets_what_it_missed_after_last_event_id(api: Api) -> None:
    """With Last-Event-ID the tail first sends the session's requests recorded after that one; a bad id is a 400."""
    received: list[bytes] = []
    response = await api.stub.get(BASE + f"/sessions/{CC}/events", headers={"Last-Event-ID": "cc-req-1"})
    done = treq.collect(response, received.append)
    api.stub.flush()
    stream = b"".join(received).decode()
    assert [line for line in stream.splitlines() if line.startswith("id: ")] == ["id: cc-req-2"]
    api.feed.batch_written([(CC, "cc-req-2")])  # already sent: not again
    api.stub.flush()
    assert b"".join(received).decode().count("event: exchange") == 1
    done.addErrback(lambda f: f.trap(CancelledError))
    done.cancel()
    code, body = await api.get_with(f"/sessions/{CC}/events", {"Last-Event-ID": "../x"})
    assert code == 400 and body["error"]["param"] == "Last-Event-ID"


@pytest_twisted.ensureDeferred
async def test_openapi_describes_every_route(api: Api) -> None:
    """Each Klein route (and method) appears in /api/openapi.json, which is OpenAPI 3.1."""
    code, document = await api.get("/api/openapi.json")
    assert code == 200 and document == openapi_document() and document["openapi"] == "3.1.0"
    for rule in SessionAPI.app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        if "{name}" in path:
            continue  # /api/stats/<name>: listed name by name
        assert path in document["paths"], path
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            assert method.lower() in document["paths"][path], (path, method)
    for name in ("overview", "tokens", "tools", "costs", "models", "hours", "spending"):
        assert f"/api/stats/{name}" in document["paths"]


@pytest_twisted.ensureDeferred
async def test_mount_sends_api_paths_to_the_api_and_the_rest_to_the_gateway(api: Api) -> None:
    """/sessions, /sessions/... and /api/... reach the API; /v1/... and /sessionsX the gateway."""

    class Gateway(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            return b"gateway"

    stub = StubTreq(mount(api.api.resource(), Gateway()))
    for path, to_api in (("/sessions", True), (f"/sessions/{CC}", True), ("/api/models", True),
                         ("/v1/messages", False), ("/sessionsX", False), ("/healthz", False)):
        response = await stub.get(BASE + path)
        body = await response.content()
        assert (body != b"gateway") is to_api, path
    assert route_class(b"/sessions") == route_class(b"/sessions/x/timeline") == "admin"
    assert route_class(b"/api/stats/overview") == "admin"
    assert route_class(b"/sessionsX") == "proxy"


@pytest_twisted.ensureDeferred
async def test_recording_off_answers_404_json(tmp_path: Path) -> None:
    """Without the SQLite recorder the API's paths say so in a JSON 404."""
    settings = settings_from_mapping({}, env={})
    resource = session_api_resource(settings, None, Clock())
    assert isinstance(resource, RecordingOff)
    response = await StubTreq(resource).get(BASE + "/sessions")
    assert response.code == 404
    assert json.loads(await response.content())["error"]["type"] == "recording_disabled"
    on = settings_from_mapping(
        {"session_recording": {"enabled": True, "sessions_dir": str(tmp_path), "sqlite": {"enabled": False}}}, env={}
    )
    assert isinstance(session_api_resource(on, object(), Clock()), RecordingOff)


def test_cost_by_kind_adds_up_to_the_pricing_tables_cost() -> None:
    """The split by kind sums to cost_for_price for Anthropic and OpenAI counting, long context included."""
    from lunaroute.api.costs import cost_by_kind
    from lunaroute.dialects.model import Usage
    from lunaroute.stats.pricing import PricingTable

    pricing = PricingTable.load()
    for model, dialect, usage in (
        ("claude-sonnet-4-5", "anthropic", Usage(1200, 300, 0, 9000, 1500, False, 500)),
        ("claude-sonnet-4-5", "anthropic", Usage(150_000, 300, 0, 60_000, 0)),  # long context
        ("gpt-5", "openai_responses", Usage(5000, 50, 10, 4000, 0)),
    ):
        turn = {"model_used": model, "dialect": dialect, "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens, "cache_read_tokens": usage.cache_read_tokens,
                "cache_creation_tokens": usage.cache_creation_tokens,
                "cache_creation_1h_tokens": usage.cache_creation_1h_tokens}
        parts = cost_by_kind(turn, pricing)
        assert parts is not None
        assert sum(parts.values()) == pytest.approx(pricing.cost_usd(usage, model, dialect)), model
    assert cost_by_kind({"model_used": "no-such-model"}, pricing) is None


@pytest_twisted.ensureDeferred
async def test_requests_and_timeline_carry_cost_by_kind(api: Api) -> None:
    """Each request of a session and each timeline response says what its tokens cost, by kind."""
    _, session = await api.get(f"/sessions/{CC}")
    parts = session["requests"][0]["cost_by_kind"]
    assert set(parts) == {"input", "output", "cache_read", "cache_write_5m", "cache_write_1h"}
    assert parts["cache_write_1h"] > 0 and parts["cache_read"] > 0
    _, timeline = await api.get(f"/sessions/{CC}/timeline")
    responses = [e for e in timeline["events"] if e["type"] == "response"]
    assert responses[0]["cost_by_kind"] == pytest.approx(parts)
    # OpenAI's input includes the cached tokens: only the 1,000 uncached pay the input rate.
    _, other = await api.get(f"/sessions/{CX}")
    assert other["requests"][0]["cost_by_kind"]["input"] == pytest.approx(1000 * 5.0 / 1e6)
    assert other["requests"][0]["cost_by_kind"]["cache_read"] == pytest.approx(4000 * 0.5 / 1e6)
