"""
OpenTelemetry traces (lunaroute.telemetry): the span tree of a request built
from its exchange, the W3C trace context continued from the client and
passed to the provider, no prompt text unless asked, nothing at all when
off, and one real OTLP/HTTP export to a collector on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from twisted.internet import defer, reactor
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from lunaroute import service as service_module
from lunaroute.config import TelemetrySettings, settings_from_mapping
from lunaroute.dialects.model import ResponseSummary, Usage
from lunaroute.errors import ConfigError
from lunaroute.exchange import Exchange, Timings
from lunaroute.service import make_gateway_service
from lunaroute.telemetry import make_tracer, request_trace
from lunaroute.testing.fake_provider import FakeProvider
from lunaroute.testing.helpers import in_thread

PROMPT = "the secret prompt text 4711"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def memory_tracer(capture_content: bool = False) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer = make_tracer(
        TelemetrySettings(enabled=True, service_name="gw-test", capture_content=capture_content),
        {"anthropic": "anthropic", "openai": "openai", "backup": "anthropic"},
        SimpleSpanProcessor(exporter),
    )
    return tracer, exporter


@pytest.fixture
def traced(monkeypatch):
    """Gateways started in this test trace to an in-memory exporter (returned)."""
    made: list[Any] = []

    def fake_make(settings):
        if not settings.telemetry.enabled:
            return None
        tracer, exporter = memory_tracer(settings.telemetry.capture_content)
        made.append(exporter)
        return tracer

    monkeypatch.setattr(service_module, "make_tracer_for", fake_make)
    return made


def by_name(spans) -> dict[str, Any]:
    return {span.name: span for span in spans}


# -- the span tree of one exchange (pure: times given) -------------------


def routed_exchange(traceparent: str = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01") -> Exchange:
    timings = Timings(received=100.0)
    timings.parsed = 100.001
    timings.upstream_sent = 100.003
    timings.headers_received = 100.5
    timings.first_byte = 100.5
    timings.last_byte = 101.25
    timings.finished = 101.26
    exchange = Exchange(
        request_id="0b5e1d62-1d39-4a5f-9a43-2b7c3f6c9f10",
        session_id="sess-1",
        listener="anthropic",
        kind="conversation",
        dialect="anthropic",
        path="/v1/messages",
        method="POST",
        timings=timings,
        provider="backup",
        model="claude-sonnet-4-5",
        streaming=True,
        status=200,
        request_json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": PROMPT}]},
        request_headers={"traceparent": traceparent},
        rule="claude-with-fallback",
        attempts=[
            {"provider": "anthropic", "rule": "r", "reason": "primary", "status": 529, "error": None,
             "detail": "HTTP 529", "duration_ms": 200.0},
            {"provider": "backup", "rule": "r", "reason": "fallback", "status": 200, "error": None,
             "detail": None, "duration_ms": 250.0},
        ],
        response=ResponseSummary(
            dialect="anthropic", model="claude-sonnet-4-5-20250929", response_id="msg_1", text="the answer",
            stop_reason="end_turn", usage=Usage(input_tokens=12, output_tokens=34, cache_read_tokens=5),
        ),
    )
    exchange.complete()
    return exchange


def test_span_tree_of_a_routed_exchange() -> None:
    """One SERVER span, children parse/choose/one CLIENT span per attempt/relay, at the lifecycle's times."""
    tracer, exporter = memory_tracer()
    exchange = routed_exchange()
    tracer.observe(exchange)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["parse", "choose", "send anthropic", "send backup", "relay", "POST /v1/messages"]
    names = by_name(spans)
    root = names["POST /v1/messages"]
    assert root.kind is SpanKind.SERVER
    # The client's trace is continued: same trace id, its span is the parent.
    assert root.context.trace_id == int(CLIENT_TRACE, 16)
    assert root.parent.span_id == int(CLIENT_SPAN, 16) and root.parent.is_remote
    for name in ("parse", "choose", "send anthropic", "send backup", "relay"):
        assert names[name].parent.span_id == root.context.span_id, name
        assert names[name].context.trace_id == root.context.trace_id
    assert (root.start_time, root.end_time) == (100_000_000_000, 101_260_000_000)
    assert (names["parse"].start_time, names["parse"].end_time) == (100_000_000_000, 100_001_000_000)
    assert (names["choose"].start_time, names["choose"].end_time) == (100_001_000_000, 100_003_000_000)
    first, second = names["send anthropic"], names["send backup"]
    assert first.kind is SpanKind.CLIENT and second.kind is SpanKind.CLIENT
    assert first.start_time == 100_003_000_000 and first.end_time == 100_203_000_000
    # The last attempt ends when the answer's headers arrived.
    assert second.end_time == 100_500_000_000 and second.start_time == 100_250_000_000
    assert first.status.status_code is StatusCode.ERROR and first.attributes["http.response.status_code"] == 529
    assert first.attributes["error.type"] == "529" and first.status.description == "HTTP 529"
    assert second.status.status_code is StatusCode.UNSET
    assert (names["relay"].start_time, names["relay"].end_time) == (100_500_000_000, 101_250_000_000)
    attributes = root.attributes
    assert attributes["gen_ai.system"] == "anthropic"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "claude-sonnet-4-5"
    assert attributes["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert attributes["gen_ai.usage.output_tokens"] == 34
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 5
    assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attributes["session.id"] == "sess-1"
    assert attributes["lunaroute.stream"] is True
    assert attributes["lunaroute.outcome"] == "ok"
    assert attributes["lunaroute.routing.rule"] == "claude-with-fallback"
    assert attributes["http.response.status_code"] == 200
    assert root.resource.attributes["service.name"] == "gw-test"
    # No prompt or answer text without capture_content.
    for span in spans:
        for value in span.attributes.values():
            assert PROMPT not in str(value) and "the answer" not in str(value)


def test_capture_content_puts_prompt_and_answer_on_the_span() -> None:
    """With capture_content the request span carries the prompt and the answer."""
    tracer, exporter = memory_tracer(capture_content=True)
    tracer.observe(routed_exchange())
    root = by_name(exporter.get_finished_spans())["POST /v1/messages"]
    assert PROMPT in root.attributes["gen_ai.input.messages"]
    assert json.loads(root.attributes["gen_ai.input.messages"])["messages"][0]["content"] == PROMPT
    assert root.attributes["gen_ai.output.messages"] == "the answer"


def test_unsampled_client_trace_exports_nothing_and_says_so_upstream() -> None:
    """A client traceparent with the sampled flag off: no spans, and flags 00 go upstream."""
    tracer, exporter = memory_tracer()
    unsampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"
    headers = Headers({b"traceparent": [unsampled.encode()]})
    exchange = routed_exchange(unsampled)
    tracer.inject(exchange, headers)
    (sent,) = headers.getRawHeaders(b"traceparent")
    assert sent.startswith(f"00-{CLIENT_TRACE}-".encode()) and sent.endswith(b"-00")
    tracer.observe(exchange)
    assert exporter.get_finished_spans() == ()


def test_the_sdk_sampler_variable_is_honoured(monkeypatch) -> None:
    """OTEL_TRACES_SAMPLER=always_off: no spans are built, and upstream is told the trace is not sampled."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    tracer, exporter = memory_tracer()
    headers = Headers()
    exchange = routed_exchange("")
    tracer.inject(exchange, headers)
    assert headers.getRawHeaders(b"traceparent")[0].endswith(b"-00")
    tracer.observe(exchange)
    assert exporter.get_finished_spans() == ()
    assert tracer.traced_requests == 0


def test_an_invalid_client_traceparent_starts_a_new_trace_upstream() -> None:
    """A malformed traceparent is replaced by the request's own, and its tracestate is dropped."""
    tracer, _ = memory_tracer()
    headers = Headers({b"traceparent": [b"00-not-a-trace-id-01"], b"tracestate": [b"vendor=x"]})
    exchange = routed_exchange("00-not-a-trace-id-01")
    tracer.inject(exchange, headers)
    (sent,) = headers.getRawHeaders(b"traceparent")
    assert sent.decode() == "00-" + exchange.request_id.replace("-", "") + "-" + sent.decode().split("-")[2] + "-01"
    assert headers.getRawHeaders(b"tracestate") is None


def test_bypassed_requests_are_named_by_path_family() -> None:
    """Span names stay bounded: a bypassed /v1/files/<id> is named by its first two segments."""
    tracer, exporter = memory_tracer()
    exchange = Exchange(
        request_id="r-bypass", session_id="s", listener="openai", kind="bypass", dialect="openai",
        path="/v1/files/file-abc123/content", method="GET", timings=Timings(received=5.0),
    )
    exchange.complete()
    tracer.observe(exchange)
    (root,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert root.name == "GET /v1/files"
    assert root.attributes["url.path"] == "/v1/files/file-abc123/content"
    assert "gen_ai.operation.name" not in root.attributes


def test_request_trace_is_derived_from_the_request_id() -> None:
    """The same request gets the same ids at send time and at the end; a bad traceparent starts a new trace."""
    request_id = "0b5e1d62-1d39-4a5f-9a43-2b7c3f6c9f10"
    first = request_trace(request_id, None, None)
    assert first == request_trace(request_id, None, None)
    assert first.parent is None
    assert f"{first.span.trace_id:032x}" == request_id.replace("-", "")
    assert request_trace("another", None, None).span.span_id != first.span.span_id
    broken = request_trace(request_id, "00-zz-not-a-trace", None)
    assert broken.parent is None and broken.span.trace_id == first.span.trace_id
    continued = request_trace(request_id, f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "vendor=x")
    assert continued.span.trace_id == int(CLIENT_TRACE, 16)
    assert continued.span.span_id == first.span.span_id
    assert continued.span.trace_state.get("vendor") == "x"


def test_a_failing_span_build_is_counted_not_raised(logged_failures) -> None:
    """A broken exchange never raises into the gateway: counted and logged."""
    logged_failures.expect(AttributeError)
    tracer, exporter = memory_tracer()
    broken: Any = SimpleNamespace(request_id="r-1")  # no timings
    tracer.observe(broken)
    assert tracer.failed_requests == 1
    assert tracer.stats()["failed_requests"] == 1


# -- through the running gateway ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_streamed_request_is_traced_and_the_provider_gets_the_trace(fake, start_gateway, traced):
    """An SDK stream with a client traceparent: one span tree, and the provider is told the request span."""
    gateway = await start_gateway(fake, telemetry={"enabled": True})
    client = gateway.anthropic(default_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                                                "tracestate": "vendor=abc"})

    def stream() -> Any:
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=20,
                                    messages=[{"role": "user", "content": PROMPT}]) as s:
            return s.get_final_message()

    final = await in_thread(stream)
    (exporter,) = traced
    spans = by_name(exporter.get_finished_spans())
    root = spans["POST /v1/messages"]
    assert root.context.trace_id == int(CLIENT_TRACE, 16)
    assert root.parent.span_id == int(CLIENT_SPAN, 16)
    assert set(spans) == {"parse", "choose", "send anthropic", "relay", "POST /v1/messages"}
    for name, span in spans.items():
        if span is not root:
            assert span.parent.span_id == root.context.span_id, name
            assert root.start_time <= span.start_time <= span.end_time <= root.end_time, name
    assert spans["parse"].end_time <= spans["choose"].start_time
    assert spans["send anthropic"].end_time <= spans["relay"].start_time
    assert root.attributes["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    assert root.attributes["gen_ai.response.model"] == final.model
    assert root.attributes["lunaroute.stream"] is True
    assert root.attributes["lunaroute.cost_usd"] > 0
    # The provider received a traceparent naming the request span, in the client's trace.
    received = fake.requests[-1]
    version, trace_id, parent_id, flags = received.header("traceparent").split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
    assert int(parent_id, 16) == root.context.span_id
    assert received.header("tracestate") == "vendor=abc"
    assert all(PROMPT not in str(v) for s in spans.values() for v in s.attributes.values())
    stats = gateway.service.live_stats()
    assert stats["telemetry"]["traced_requests"] == 1


@pytest_twisted.async_yield_fixture
async def backup():
    provider = FakeProvider(reactor)
    port = provider.listen()
    provider.url = f"http://127.0.0.1:{port.getHost().port}"
    yield provider
    await provider.stop()


@pytest_twisted.ensureDeferred
async def test_each_routed_attempt_is_a_span_and_carries_the_trace(fake, backup, start_gateway, traced):
    """Primary overloaded, the fallback answers: one CLIENT span per attempt, both providers told the request span."""
    gateway = await start_gateway(fake, telemetry={"enabled": True}, **{
        "providers": {
            "anthropic": {"base_url": fake.url, "http_client": {"max_retries": 0}},
            "anthropic_backup": {"provider_type": "anthropic", "base_url": backup.url, "model": "claude-sonnet-4-5"},
        },
        "routing": {"rules": [{"name": "fallback", "model_pattern": "^claude-", "primary": "anthropic",
                               "fallbacks": ["anthropic_backup"]}]},
    })
    await in_thread(gateway.anthropic().messages.create, model="claude-overloaded", max_tokens=10,
                    messages=[{"role": "user", "content": "hi"}])
    (exporter,) = traced
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.kind is SpanKind.SERVER)
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [s.name for s in attempts] == ["send anthropic", "send anthropic_backup"]
    assert attempts[0].attributes["http.response.status_code"] == 529
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].attributes["http.response.status_code"] == 200
    assert attempts[0].end_time <= attempts[1].start_time
    assert root.attributes["lunaroute.routing.rule"] == "fallback"
    assert root.attributes["lunaroute.provider"] == "anthropic_backup"
    assert root.status.status_code is StatusCode.UNSET
    for provider in (fake, backup):
        _, trace_id, parent_id, _ = provider.requests[-1].header("traceparent").split("-")
        assert int(trace_id, 16) == root.context.trace_id and int(parent_id, 16) == root.context.span_id


@pytest_twisted.ensureDeferred
async def test_without_client_trace_the_trace_id_is_the_request_id(fake, start_gateway, traced):
    """No traceparent from the client: a new trace whose id is the request id, sent upstream."""
    gateway = await start_gateway(fake, telemetry={"enabled": True})
    await in_thread(gateway.openai().chat.completions.create, model="gpt-4.1",
                    messages=[{"role": "user", "content": "hi"}])
    (exporter,) = traced
    root = by_name(exporter.get_finished_spans())["POST /v1/chat/completions"]
    assert root.parent is None
    assert f"{root.context.trace_id:032x}" == root.attributes["lunaroute.request_id"].replace("-", "")
    assert root.attributes["gen_ai.system"] == "openai"
    _, trace_id, parent_id, _ = fake.requests[-1].header("traceparent").split("-")
    assert int(trace_id, 16) == root.context.trace_id and int(parent_id, 16) == root.context.span_id


@pytest_twisted.ensureDeferred
async def test_telemetry_off_sends_the_clients_trace_headers_untouched(fake, gateway):
    """Off (the default): no tracer, and the client's traceparent goes upstream as it came."""
    assert gateway.service.tracer is None
    assert gateway.app._trace_propagator is None
    header = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    await in_thread(gateway.openai(default_headers={"traceparent": header}).chat.completions.create,
                    model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
    assert fake.requests[-1].header("traceparent") == header
    assert "telemetry" not in gateway.service.live_stats()


def test_off_by_default_imports_no_opentelemetry() -> None:
    """Zero overhead when off: building a gateway does not even import OpenTelemetry."""
    code = (
        "import sys\n"
        "from lunaroute.config import settings_from_mapping\n"
        "from lunaroute.service import make_gateway_service\n"
        "service = make_gateway_service(settings_from_mapping({'port': 0}, env={}))\n"
        "assert service.tracer is None\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'lunaroute.telemetry'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_missing_opentelemetry_is_one_config_line(monkeypatch) -> None:
    """Telemetry on without the optional packages: one readable line, no traceback."""
    monkeypatch.setitem(sys.modules, "lunaroute.telemetry", None)
    settings = settings_from_mapping({"port": 0, "telemetry": {"enabled": True}}, env={})
    with pytest.raises(ConfigError, match=r"pip install 'lunaroute\[otel\]'"):
        service_module.make_tracer_for(settings)
    with pytest.raises(SystemExit, match="configuration error: telemetry is on"):
        make_gateway_service(settings, reactor=reactor)


# -- configuration -------------------------------------------------------------


def test_telemetry_settings_from_file_and_otel_variables() -> None:
    """The section, then OTEL_* over it; OTEL_SDK_DISABLED wins; bad values name their source."""
    assert settings_from_mapping({}, env={}).telemetry.enabled is False
    from_file = settings_from_mapping(
        {"telemetry": {"enabled": True, "endpoint": "http://collector:4318", "service_name": "gw-a",
                       "headers": {"X-Api-Key": "${KEY}"}}}, env={"KEY": "k-123"}).telemetry
    assert from_file.endpoint == "http://collector:4318/v1/traces"
    assert from_file.service_name == "gw-a" and dict(from_file.headers) == {"x-api-key": "k-123"}
    assert "k-123" not in repr(from_file)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example:4318/",
        "OTEL_SERVICE_NAME": "gw-env",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20t,x-b=2",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    }
    from_env = settings_from_mapping({}, env=env).telemetry
    assert from_env.enabled and from_env.endpoint == "https://otel.example:4318/v1/traces"
    assert from_env.service_name == "gw-env" and from_env.capture_content
    assert dict(from_env.headers) == {"authorization": "Bearer t", "x-b": "2"}
    traces = settings_from_mapping({}, env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:1/custom"}).telemetry
    assert traces.enabled and traces.endpoint == "http://c:1/custom"
    assert not settings_from_mapping({"telemetry": {"enabled": True}}, env={"OTEL_SDK_DISABLED": "true"}).telemetry.enabled
    assert not settings_from_mapping({"telemetry": {"enabled": True}}, env={"OTEL_TRACES_EXPORTER": "none"}).telemetry.enabled
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT: must be an http"):
        settings_from_mapping({}, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})
    with pytest.raises(ConfigError, match="telemetry.enabled: expected a boolean"):
        settings_from_mapping({"telemetry": {"enabled": "maybe"}}, env={})
    with pytest.raises(ConfigError, match="telemetry.headers"):
        settings_from_mapping({"telemetry": {"headers": ["x"]}}, env={})


# -- one real export over OTLP/HTTP ------------------------------------------------


class FakeCollector(Resource):
    """An OTLP/HTTP traces endpoint: keeps each POSTed ExportTraceServiceRequest."""

    isLeaf = True

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.exports: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        self.arrived: defer.Deferred[None] = defer.Deferred()

    def render_POST(self, request: Any) -> bytes:
        assert request.path == b"/v1/traces"
        message = ExportTraceServiceRequest()
        message.ParseFromString(request.content.read())
        self.exports.append(message)
        self.content_types.append(request.getHeader(b"content-type").decode())
        if not self.arrived.called:
            self.arrived.callback(None)
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/x-protobuf")
        return b""


@pytest_twisted.ensureDeferred
async def test_spans_are_exported_over_otlp_http(fake, start_gateway):
    """The real exporter (BatchSpanProcessor, OTLP/HTTP protobuf) delivers the request's spans to a collector."""
    collector = FakeCollector()
    port = reactor.listenTCP(0, Site(collector), interface="127.0.0.1")
    try:
        gateway = await start_gateway(fake, telemetry={
            "enabled": True, "endpoint": f"http://127.0.0.1:{port.getHost().port}",
            "service_name": "gw-otlp", "headers": {"x-collector-key": "k1"}})
        await in_thread(gateway.anthropic().messages.create, model="claude-sonnet-4-5", max_tokens=10,
                        messages=[{"role": "user", "content": "hi"}])
        # Stopping flushes the batch (in a thread, so the reactor serves the collector).
        await gateway.service.stopService()
        await collector.arrived
    finally:
        await port.stopListening()
    assert collector.content_types[0] == "application/x-protobuf"
    spans = []
    services = set()
    for export in collector.exports:
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
    assert services == {"gw-otlp"}
    names = {span.name for span in spans}
    assert {"POST /v1/messages", "parse", "choose", "send anthropic", "relay"} <= names
    root = next(span for span in spans if span.name == "POST /v1/messages")
    attributes = {a.key: a.value for a in root.attributes}
    assert attributes["gen_ai.request.model"].string_value == "claude-sonnet-4-5"
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0
    assert gateway.service.tracer.exporter.exported_spans == len(spans)
    # The same counts in the gateway's Prometheus exposition.
    from prometheus_client.parser import text_string_to_metric_families

    samples = {sample.name: sample.value for family in text_string_to_metric_families(
        gateway.service.metrics.render()[0].decode()) for sample in family.samples}
    assert samples["lunaroute_telemetry_exported_spans_total"] == len(spans)
    assert samples["lunaroute_telemetry_traced_requests_total"] == 1
    assert samples["lunaroute_telemetry_failed_spans_total"] == 0


@pytest_twisted.ensureDeferred
async def test_a_refusing_collector_is_counted_and_requests_are_unaffected(fake, start_gateway):
    """The collector answers 400: the request still succeeds, and the lost spans are counted."""
    collector = FakeCollector(status=400)
    port = reactor.listenTCP(0, Site(collector), interface="127.0.0.1")
    try:
        gateway = await start_gateway(fake, telemetry={
            "enabled": True, "endpoint": f"http://127.0.0.1:{port.getHost().port}/v1/traces"})
        message = await in_thread(gateway.anthropic().messages.create, model="claude-sonnet-4-5", max_tokens=10,
                                  messages=[{"role": "user", "content": "hi"}])
        assert message.content[0].text
        await gateway.service.stopService()
        await collector.arrived
    finally:
        await port.stopListening()
    stats = gateway.service.tracer.stats()
    assert stats["exported_spans"] == 0
    assert stats["failed_spans"] == 5  # the request span and parse, choose, send, relay
