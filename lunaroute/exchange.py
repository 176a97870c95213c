"""
The record of one request/response exchange, as the proxy hands it to the
recorder, statistics and metrics in a single call once the stream has ended.

Plain data, no I/O: everything downstream of the relay works on this.  The
lifecycle fills an L{Exchange} in as the request goes, enriches it once
(L{Enrichment}: cost and tool results) and seals it (L{Exchange.complete});
from then on it is a finished record that no sink can change, so the
recorder can read it on its own thread while metrics read it on the reactor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any

from lunaroute.dialects.model import ResponseSummary


class _Sealable:
    """
    Attribute assignment raises once L{seal} was called.  Sealing swaps the
    instance's class for a subclass that refuses assignment, so the many
    assignments made while a request is in flight cost nothing extra.
    """

    sealed = False

    def seal(self) -> None:
        self.__class__ = _sealed_class(type(self))


def _refuse(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot set {name!r}: the exchange record is finished")


_SEALED_CLASSES: dict[type, type] = {}


def _sealed_class(cls: type[_Sealable]) -> type:
    """The read-only twin of C{cls} (made once per class)."""
    if cls.sealed:
        return cls
    sealed = _SEALED_CLASSES.get(cls)
    if sealed is None:
        sealed = _SEALED_CLASSES[cls] = type(
            cls.__name__, (cls,), {"sealed": True, "__setattr__": _refuse, "__module__": cls.__module__}
        )
    return sealed


@dataclass(frozen=True)
class Enrichment:
    """
    What the enrich step adds to an exchange: the estimated cost in USD
    (C{None} when the model has no price) and the tool results the request
    carries back, each C{{"tool_call_id", "tool_name", "duration_ms"}}
    (duration C{None} if unknown).
    """

    cost_usd: float | None = None
    tool_results: tuple[dict[str, Any], ...] = ()


@dataclass
class Timings(_Sealable):
    """
    Reactor timestamps (seconds) of one exchange's milestones; C{None} for a
    milestone that was never reached.
    """

    received: float
    upstream_sent: float | None = None
    # End of the parse step (choose and modify run from here to upstream_sent).
    parsed: float | None = None
    headers_received: float | None = None
    first_byte: float | None = None
    last_byte: float | None = None
    finished: float | None = None

    def _ms(self, start: float | None, end: float | None) -> float | None:
        if start is None or end is None:
            return None
        return max(0.0, (end - start) * 1000.0)

    @property
    def total_ms(self) -> float | None:
        return self._ms(self.received, self.finished)

    @property
    def pre_proxy_ms(self) -> float | None:
        """Time spent in the gateway before the request went upstream."""
        return self._ms(self.received, self.upstream_sent)

    @property
    def provider_ms(self) -> float | None:
        """Provider latency: request sent to last byte received."""
        end = self.last_byte if self.last_byte is not None else self.headers_received
        return self._ms(self.upstream_sent, end)

    @property
    def post_proxy_ms(self) -> float | None:
        """Time spent in the gateway after the last upstream byte."""
        end = self.last_byte if self.last_byte is not None else self.headers_received
        return self._ms(end, self.finished)

    @property
    def ttft_ms(self) -> float | None:
        """Time from receiving the request to the first response byte."""
        return self._ms(self.received, self.first_byte)

    @property
    def proxy_overhead_ms(self) -> float | None:
        pre, post = self.pre_proxy_ms, self.post_proxy_ms
        if pre is None:
            return None
        return pre + (post or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_ms": self.total_ms,
            "pre_proxy_ms": self.pre_proxy_ms,
            "provider_ms": self.provider_ms,
            "post_proxy_ms": self.post_proxy_ms,
            "proxy_overhead_ms": self.proxy_overhead_ms,
            "ttft_ms": self.ttft_ms,
        }


@dataclass
class Exchange(_Sealable):
    """
    Everything the gateway learnt about one request.

    C{listener} is the ingress dialect (C{anthropic} or C{openai});
    C{dialect} the wire format of the body (C{anthropic}, C{openai_chat},
    C{openai_responses}).  C{outcome} is C{ok}, C{upstream_error} (the
    provider answered non-2xx), C{unreachable}, C{timeout},
    C{client_disconnected} or C{stream_error}.  C{kind} is C{conversation}
    for a model call (recorded and counted in session statistics), or
    C{count_tokens}, C{models} or C{bypass}, which only metrics look at.
    """

    request_id: str
    session_id: str
    listener: str
    kind: str
    dialect: str
    path: str
    method: str
    timings: Timings
    provider: str | None = None
    model: str | None = None
    streaming: bool = False
    status: int | None = None
    outcome: str = "ok"
    error: str | None = None
    # The provider's own error type (e.g. overloaded_error, rate_limit_error)
    # when it reported one, in a body or an in-stream error event.
    error_type: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    request_body: bytes = b""
    request_json: dict[str, Any] | None = None
    # What was sent to the provider when it differs from the client's body
    # (translated to another dialect, or modified by request_body settings),
    # with the provider path it went to; None when the client's bytes went
    # unchanged.  Recorded beside the client's body (the provider's view).
    upstream_body: bytes | None = None
    upstream_path: str | None = None
    # Credentials masked (lunaroute.secrets); the proxy passes lazy views
    # (proxy.headers.MaskedHeaders) so masking runs where headers are read.
    request_headers: Mapping[str, str] = field(default_factory=dict)
    response_headers: Mapping[str, str] = field(default_factory=dict)
    response: ResponseSummary | None = None
    bytes_out: int = 0
    chunk_count: int = 0
    chunk_gaps_ms: list[float] = field(default_factory=list)
    # With routing: the rule that chose the attempts, and each attempt
    # ({"provider", "rule", "reason", "status", "error", "detail",
    # "duration_ms"}), in order; C{provider} above is the one that answered.
    rule: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # Set by the enrich step (see Enrichment) just before sealing.
    cost_usd: float | None = None
    tool_results: list[dict[str, Any]] = field(default_factory=list)

    def complete(self, enrichment: Enrichment | None = None) -> None:
        """
        Take the enrich step's results and seal the record (and its
        timings): sinks get an exchange nothing can change any more.
        """
        if enrichment is not None:
            self.cost_usd = enrichment.cost_usd
            self.tool_results = [dict(result) for result in enrichment.tool_results]
        self.timings.seal()
        self.seal()

    @property
    def is_conversation(self) -> bool:
        return self.kind == "conversation"

    @property
    def success(self) -> bool:
        return self.outcome == "ok" and self.status is not None and self.status < 400
