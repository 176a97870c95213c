"""
OpenTelemetry traces of the request lifecycle, exported over OTLP/HTTP.

Off by default, and then this module is never imported: the gateway
registers nothing and pays nothing.  When on (C{telemetry.enabled}, or the
standard C{OTEL_EXPORTER_OTLP_*ENDPOINT} variables; see
L{lunaroute.config.TelemetrySettings}) it plugs into the lifecycle in two
places, and nowhere else:

  - B{the send step} (L{GatewayTracer.inject}): the headers that go upstream
    get a W3C C{traceparent} naming this request's span, so the provider's
    own traces (or a second gateway's) join the client's trace;
  - B{a sink} (L{GatewayTracer.observe}): once the exchange is finished and
    sealed, its span tree is built after the fact from the timings the
    lifecycle already keeps (L{lunaroute.exchange.Timings}, each routing
    attempt's duration), with explicit start and end times: one C{SERVER}
    span per request, children C{parse}, C{choose}, one C{CLIENT} span per
    attempt and C{relay}.  Ended spans go to a C{BatchSpanProcessor}, whose
    own thread serialises and exports them; the reactor only builds them.

The request span's ids are decided when the request starts, without any
state: its span id (and, when the client sent no C{traceparent}, its trace
id) derive from the request id (a random UUID), so the send step and the
sink, called at different times, compute the same ids (L{request_trace}).
A client's C{traceparent} is continued: its trace id is kept and its span is
the request span's parent.

No prompt or answer text goes into a span unless
C{telemetry.capture_content} is true.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    get_current_span,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from lunaroute import __version__
from lunaroute.config import TelemetrySettings
from lunaroute.exchange import Exchange
from lunaroute.logs import log_observer
from lunaroute.metrics import path_family
from lunaroute.proxy.headers import MaskedHeaders, first_value

log = Logger(observer=log_observer)

__all__ = ["GatewayTracer", "RequestTrace", "TelemetryCollector", "TelemetryService", "make_tracer", "request_trace"]

_PROPAGATOR = TraceContextTextMapPropagator()
_UNSET = Status(StatusCode.UNSET)
# With capture_content, at most this many characters of prompt or answer per span.
CONTENT_LIMIT = 16_384
# How long a stopping gateway waits for the last spans to be exported.
FLUSH_TIMEOUT_MILLIS = 5_000


@dataclass(frozen=True)
class RequestTrace:
    """
    Where one request's span sits: C{span} is its own context (trace id,
    span id, flags), C{parent} the client's span as an OpenTelemetry
    context, or C{None} when the client sent no valid C{traceparent}.
    """

    span: SpanContext
    parent: Context | None


def _derived_ids(request_id: str) -> tuple[int, int]:
    """A trace id and a span id from a request id (random, so they are too)."""
    try:
        trace_id = uuid.UUID(request_id).int
    except ValueError:
        trace_id = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=16).digest(), "big")
    digest = hashlib.blake2b(trace_id.to_bytes(16, "big"), digest_size=8, person=b"lunaroute-span").digest()
    return trace_id or 1, int.from_bytes(digest, "big") or 1


def request_trace(
    request_id: str, traceparent: str | None, tracestate: str | None, sampled: bool = True
) -> RequestTrace:
    """
    The request span's context: the client's trace continued when its
    C{traceparent} is valid (same trace id, its span as parent, its
    C{tracestate} kept), else a new trace whose id is the request id.  The
    span id always derives from the request id.  Pure: the same inputs
    give the same ids.
    """
    trace_id, span_id = _derived_ids(request_id)
    parent: Context | None = None
    state = None
    if traceparent:
        carrier = {"traceparent": traceparent}
        if tracestate:
            carrier["tracestate"] = tracestate
        context = _PROPAGATOR.extract(carrier)
        client = get_current_span(context).get_span_context()
        if client.is_valid:
            parent, trace_id, state = context, client.trace_id, client.trace_state
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return RequestTrace(SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=state), parent)


class CountingExporter(SpanExporter):
    """Counts what the wrapped exporter did, so export failures are visible in the live stats."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.exported_spans = 0
        self.failed_spans = 0

    def export(self, spans: Any) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported_spans += len(spans)
        else:
            self.failed_spans += len(spans)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _client_header(exchange: Exchange, name: str) -> str | None:
    headers = exchange.request_headers
    if isinstance(headers, MaskedHeaders):
        return headers.first(name)
    value = headers.get(name)
    return value if isinstance(value, str) else None


def _span_name(exchange: Exchange) -> str:
    """
    C{POST /v1/messages}: the route, never an unbounded path (bypassed
    requests are named by their first two segments, as in metrics).
    """
    path = exchange.path if exchange.kind != "bypass" else path_family(exchange.path)
    return f"{exchange.method} {path}"


def _system(provider_type: str | None, dialect: str) -> str:
    if provider_type:
        return provider_type
    return "anthropic" if dialect == "anthropic" else "openai"


def _bounded(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "…"


def _input_messages(body: Mapping[str, Any] | None, redactor: Any = None) -> str | None:
    """
    The prompt of a request body (system and messages, or Responses input),
    as JSON; redacted (before it is cut short) with a PII C{redactor}.
    """
    if not body:
        return None
    picked: Any = {key: body[key] for key in ("system", "instructions", "messages", "input") if key in body}
    if not picked:
        return None
    if redactor is not None:
        from lunaroute.pii.records import redact_value

        picked = redact_value(picked, redactor, "record")
    return _bounded(json.dumps(picked, ensure_ascii=False, default=str))


class GatewayTracer:
    """
    Builds each finished exchange's span tree and hands it to a span
    processor; adds the C{traceparent} to upstream requests.

    @param provider_types: provider name -> C{anthropic} or C{openai}, for
        C{gen_ai.system}.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        processor: SpanProcessor,
        provider_types: Mapping[str, str] | None = None,
        exporter: CountingExporter | None = None,
    ) -> None:
        self.settings = settings
        self.capture_content = settings.capture_content
        # The PII redactor (session_recording.pii) applied to captured
        # content; set by the service.
        self.redactor: Any = None
        # The SDK's provider only for what it reads from the environment:
        # the sampler (OTEL_TRACES_SAMPLER) and the resource
        # (OTEL_RESOURCE_ATTRIBUTES).  Spans are built as ReadableSpans
        # directly (see _spans).
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name, "service.version": __version__}),
            shutdown_on_exit=False,
        )
        self.processor = processor
        self._scope = InstrumentationScope("lunaroute", __version__)
        self._provider_types = dict(provider_types or {})
        self.exporter = exporter
        self.traced_requests = 0
        self.failed_requests = 0

    # -- the send step ---------------------------------------------------

    def _trace(self, request_id: str, traceparent: str | None, tracestate: str | None) -> RequestTrace:
        trace = request_trace(request_id, traceparent, tracestate)
        # Ask the configured sampler (OTEL_TRACES_SAMPLER; by default the
        # parent's decision, else sampled) so the flag sent upstream says
        # whether this span will be exported.
        result = self.provider.sampler.should_sample(trace.parent, trace.span.trace_id, "request", SpanKind.SERVER)
        if result.decision is not Decision.RECORD_AND_SAMPLE:
            trace = request_trace(request_id, traceparent, tracestate, sampled=False)
        return trace

    def inject(self, exchange: Exchange, headers: Headers) -> None:
        """
        Set C{traceparent} on the headers about to go upstream, naming this
        request's span.  They were copied from the client, so the client's
        own C{traceparent} is read from them, and its C{tracestate} stays
        (dropped when its C{traceparent} was invalid, as W3C says).
        """
        trace = self._trace(
            exchange.request_id, first_value(headers, b"traceparent"), first_value(headers, b"tracestate")
        )
        span = trace.span
        value = f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"
        headers.setRawHeaders(b"traceparent", [value.encode("ascii")])
        if trace.parent is None:
            headers.removeHeader(b"tracestate")

    # -- the sink --------------------------------------------------------

    def observe(self, exchange: Exchange) -> None:
        """Build and end the exchange's spans (a failure is counted, never raised)."""
        try:
            if self._spans(exchange):
                self.traced_requests += 1
        except Exception:
            self.failed_requests += 1
            log.failure("building the spans of {request_id} failed", request_id=exchange.request_id)

    def _spans(self, exchange: Exchange) -> bool:
        """
        The span tree, built after the fact as finished C{ReadableSpan}s with
        the lifecycle's times: cheaper than starting and ending live spans
        (no locks, no per-span sampling), which matters on the reactor.
        Returns whether the request was sampled (and its spans built).
        """
        timings = exchange.timings
        trace = self._trace(
            exchange.request_id, _client_header(exchange, "traceparent"), _client_header(exchange, "tracestate")
        )
        root = trace.span
        if not root.trace_flags.sampled:
            return False
        parent = get_current_span(trace.parent).get_span_context() if trace.parent is not None else None
        end = timings.finished if timings.finished is not None else timings.received
        parsed = timings.parsed if timings.parsed is not None else timings.received
        sent = timings.upstream_sent
        self._child(root, "parse", timings.received, parsed, {"lunaroute.dialect": exchange.dialect})
        choose: dict[str, Any] = {"lunaroute.provider": exchange.provider or ""}
        if exchange.rule:
            choose["lunaroute.routing.rule"] = exchange.rule
        self._child(root, "choose", parsed, sent if sent is not None else end, choose)
        if sent is not None:
            self._attempt_spans(exchange, root, sent, end)
        if timings.headers_received is not None:
            relay_end = timings.last_byte if timings.last_byte is not None else end
            relay = {
                "lunaroute.bytes_out": exchange.bytes_out,
                "lunaroute.chunks": exchange.chunk_count,
            }
            self._child(root, "relay", timings.headers_received, max(relay_end, timings.headers_received), relay)
        failed = exchange.outcome != "ok" and not (
            exchange.outcome == "upstream_error" and exchange.status is not None and exchange.status < 500
        )
        status = _UNSET
        if failed or (exchange.status is not None and exchange.status >= 500):
            status = Status(StatusCode.ERROR, exchange.error or exchange.outcome)
        self.processor.on_end(
            ReadableSpan(
                name=_span_name(exchange),
                context=root,
                parent=parent,
                resource=self.provider.resource,
                attributes=self._request_attributes(exchange),
                kind=SpanKind.SERVER,
                status=status,
                start_time=_ns(timings.received),
                end_time=_ns(max(end, timings.received)),
                instrumentation_scope=self._scope,
            )
        )
        return True

    def _child(
        self,
        root: SpanContext,
        name: str,
        start: float,
        end: float,
        attributes: Mapping[str, Any],
        kind: SpanKind = SpanKind.INTERNAL,
        error: str | None = None,
    ) -> None:
        context = SpanContext(
            root.trace_id,
            random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=root.trace_flags,
            trace_state=root.trace_state,
        )
        self.processor.on_end(
            ReadableSpan(
                name=name,
                context=context,
                parent=root,
                resource=self.provider.resource,
                attributes=attributes,
                kind=kind,
                status=Status(StatusCode.ERROR, error) if error is not None else _UNSET,
                start_time=_ns(start),
                end_time=_ns(max(start, end)),
                instrumentation_scope=self._scope,
            )
        )

    def _attempt_spans(self, exchange: Exchange, root: SpanContext, sent: float, end: float) -> None:
        """
        One C{CLIENT} span per attempt.  Their durations are exact; their
        starts are laid back to back from the upstream send, the last one
        ending when the answer's headers arrived (a retry's backoff shows as
        the gap before it).
        """
        timings = exchange.timings
        answered = timings.headers_received
        attempts = exchange.attempts or [
            {
                "provider": exchange.provider,
                "status": exchange.status if answered is not None else None,
                "error": None if answered is not None else exchange.outcome,
                "detail": None if answered is not None else exchange.error,
                "duration_ms": ((answered if answered is not None else end) - sent) * 1000.0,
            }
        ]
        starts: list[float] = []
        cursor = sent
        for attempt in attempts:
            starts.append(cursor)
            cursor += (attempt.get("duration_ms") or 0.0) / 1000.0
        last = attempts[-1]
        if answered is not None and last.get("duration_ms") is not None:
            starts[-1] = max(starts[-1], answered - last["duration_ms"] / 1000.0)
        for start, attempt in zip(starts, attempts, strict=True):
            provider = attempt.get("provider") or ""
            attributes: dict[str, Any] = {
                "lunaroute.provider": provider,
                "gen_ai.system": _system(self._provider_types.get(provider), exchange.dialect),
            }
            if attempt.get("status") is not None:
                attributes["http.response.status_code"] = attempt["status"]
            if attempt.get("reason"):
                attributes["lunaroute.attempt.reason"] = attempt["reason"]
            # A client span fails on an error or an HTTP error status (4xx/5xx).
            error = attempt.get("error")
            status = attempt.get("status")
            if not error and isinstance(status, int) and status >= 400:
                error = str(status)
            if error:
                attributes["error.type"] = str(error)
            duration = (attempt.get("duration_ms") or 0.0) / 1000.0
            self._child(
                root,
                f"send {provider}",
                start,
                start + duration,
                attributes,
                kind=SpanKind.CLIENT,
                error=(attempt.get("detail") or str(error)) if error else None,
            )

    def _plain(self, text: str) -> str:
        """C{text} redacted like the records when PII redaction is on (the client's IP, its user agent)."""
        if self.redactor is None:
            return text
        from lunaroute.pii.records import redact_text_or_drop

        return redact_text_or_drop(text, self.redactor, "record")

    def _request_attributes(self, exchange: Exchange) -> dict[str, Any]:
        provider_type = self._provider_types.get(exchange.provider or "")
        attributes: dict[str, Any] = {
            "http.request.method": exchange.method,
            "url.path": exchange.path,
            "lunaroute.request_id": exchange.request_id,
            "lunaroute.kind": exchange.kind,
            "lunaroute.outcome": exchange.outcome,
            "lunaroute.stream": exchange.streaming,
            "gen_ai.system": _system(provider_type, exchange.dialect),
            "session.id": exchange.session_id,
            "gen_ai.conversation.id": exchange.session_id,
        }
        if exchange.provider:
            attributes["lunaroute.provider"] = exchange.provider
        if exchange.status is not None:
            attributes["http.response.status_code"] = exchange.status
        if exchange.client_ip:
            attributes["client.address"] = self._plain(exchange.client_ip)
        if exchange.user_agent:
            attributes["user_agent.original"] = self._plain(exchange.user_agent)
        if exchange.outcome != "ok":
            attributes["error.type"] = exchange.error_type or exchange.outcome
        if exchange.is_conversation:
            attributes["gen_ai.operation.name"] = "chat"
        if exchange.model:
            attributes["gen_ai.request.model"] = exchange.model
        if exchange.cost_usd is not None:
            attributes["lunaroute.cost_usd"] = exchange.cost_usd
        if exchange.rule:
            attributes["lunaroute.routing.rule"] = exchange.rule
        response = exchange.response
        if response is not None:
            if response.model:
                attributes["gen_ai.response.model"] = response.model
            if response.response_id:
                attributes["gen_ai.response.id"] = response.response_id
            if response.stop_reason:
                attributes["gen_ai.response.finish_reasons"] = (response.stop_reason,)
            usage = response.usage
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cache_read_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
            if usage.cache_creation_tokens:
                attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_creation_tokens
            if response.tool_calls:
                attributes["lunaroute.tool_calls"] = tuple(call.name for call in response.tool_calls)
        if self.capture_content:
            # With session_recording.pii on, captured content is redacted
            # like the records: a trace backend is one more store.
            prompt = _input_messages(exchange.request_json, self.redactor)
            if prompt is not None:
                attributes["gen_ai.input.messages"] = prompt
            if response is not None and response.text:
                text = response.text
                if self.redactor is not None:
                    from lunaroute.pii.records import redact_text_or_drop

                    text = redact_text_or_drop(text, self.redactor, "record")
                attributes["gen_ai.output.messages"] = _bounded(text)
        return attributes

    # -- stopping --------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What C{/_lunaroute/stats} shows under C{telemetry}."""
        out: dict[str, Any] = {
            "endpoint": self.settings.endpoint,
            "traced_requests": self.traced_requests,
            "failed_requests": self.failed_requests,
        }
        if self.exporter is not None:
            out["exported_spans"] = self.exporter.exported_spans
            out["failed_spans"] = self.exporter.failed_spans
        return out

    def shutdown(self) -> None:
        """Export what is queued (bounded wait), then stop the processor's thread. Blocks."""
        self.processor.force_flush(FLUSH_TIMEOUT_MILLIS)
        self.processor.shutdown()


class TelemetryCollector:
    """
    The tracer's counts in the gateway's Prometheus registry (read at
    scrape time), so a collector that stopped accepting spans shows on the
    dashboards that watch the gateway.
    """

    def __init__(self, tracer: GatewayTracer) -> None:
        self.tracer = tracer

    def describe(self) -> Any:
        return list(self._families(zero=True))

    def collect(self) -> Any:
        return list(self._families(zero=False))

    def _families(self, zero: bool) -> Any:
        from prometheus_client.core import CounterMetricFamily

        tracer = self.tracer
        exporter = tracer.exporter
        figures = (
            ("lunaroute_telemetry_traced_requests", "Requests whose spans were built.", tracer.traced_requests),
            ("lunaroute_telemetry_failed_requests", "Requests whose spans could not be built (logged).",
             tracer.failed_requests),
            ("lunaroute_telemetry_exported_spans", "Spans the collector accepted.",
             exporter.exported_spans if exporter is not None else 0),
            ("lunaroute_telemetry_failed_spans", "Spans the exporter could not deliver.",
             exporter.failed_spans if exporter is not None else 0),
        )
        for name, documentation, value in figures:
            yield CounterMetricFamily(name, documentation, value=0 if zero else value)


class TelemetryService(Service):
    """Stops the tracer after the proxy has drained: the last spans are exported off the reactor."""

    name = "telemetry"

    def __init__(self, tracer: GatewayTracer) -> None:
        self.tracer = tracer

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return threads.deferToThread(self.tracer.shutdown)


def make_tracer(
    settings: TelemetrySettings,
    provider_types: Mapping[str, str] | None = None,
    processor: SpanProcessor | None = None,
) -> GatewayTracer:
    """
    The gateway's tracer: spans exported by a C{BatchSpanProcessor} (its
    own thread) to C{settings.endpoint} over OTLP/HTTP (protobuf), unless a
    C{processor} is given (tests pass one with an in-memory exporter).
    """
    exporter = None
    if processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = CountingExporter(OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers)))
        processor = BatchSpanProcessor(exporter)
    return GatewayTracer(settings, processor, provider_types, exporter)
