"""
The classify step: what an exchange's outcome was, from what the relay saw.

A pure function of plain values, so every combination is tested without a
reactor.  Outcomes: C{ok}; C{upstream_error} (the provider answered with an
error status or an error event mid-stream); C{unreachable}; C{timeout};
C{stream_error} (the provider cut the body short); C{client_disconnected};
C{interrupted} (the gateway cut the stream while stopping); C{gateway_error}
(a bug in the gateway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lunaroute.dialects.model import ResponseSummary

__all__ = ["Classification", "RelayEnd", "classify_relay", "provider_error"]


@dataclass(frozen=True)
class RelayEnd:
    """
    How a relayed body ended.

    @ivar bytes_relayed: body bytes the provider sent (all written to the client).
    @ivar upstream_lost: a sentence saying why the provider's body was cut
        short, or C{None} if it ended properly.
    @ivar timed_out: the provider went silent past the idle timeout.
    @ivar client_gone: the client went away first.
    @ivar cut_by_gateway: the gateway cut it (shutdown deadline).
    """

    bytes_relayed: int = 0
    upstream_lost: str | None = None
    timed_out: bool = False
    client_gone: bool = False
    cut_by_gateway: bool = False


@dataclass(frozen=True)
class Classification:
    outcome: str
    error: str | None = None
    error_type: str | None = None

    @property
    def complete(self) -> bool:
        """Whether the client got the whole body (so the response may be finished)."""
        return self.outcome in ("ok", "upstream_error")


def provider_error(summary: ResponseSummary | None) -> tuple[str | None, str | None]:
    """
    The provider's own error type and message from an error body or an
    in-stream error event (Anthropic C{{"type":"error","error":{...}}},
    OpenAI C{{"error":{...}}}, Responses C{response.failed}).
    """
    if summary is None or not isinstance(summary.error, dict):
        return None, None
    payload: Any = summary.error
    inner = payload.get("error")
    if isinstance(inner, dict):
        payload = inner
    elif isinstance(payload.get("response"), dict) and isinstance(payload["response"].get("error"), dict):
        payload = payload["response"]["error"]
    error_type = payload.get("type") or payload.get("code")
    message = payload.get("message")
    return (
        str(error_type)[:200] if error_type is not None else None,
        str(message)[:2000] if message is not None else None,
    )


def _bytes(n: int) -> str:
    return f"{n:,} byte" + ("" if n == 1 else "s")


def classify_relay(status: int, end: RelayEnd, summary: ResponseSummary | None) -> Classification:
    """
    The outcome of an exchange whose response headers were relayed with
    C{status}, given how the body ended and what the capture made of it.
    """
    error_type, message = provider_error(summary)
    if end.cut_by_gateway:
        return Classification(
            "interrupted",
            f"the gateway stopped before the response ended, after {_bytes(end.bytes_relayed)}",
        )
    if end.timed_out:
        return Classification(
            "timeout", f"the provider sent nothing for too long, after {_bytes(end.bytes_relayed)}"
        )
    if end.client_gone:
        return Classification(
            "client_disconnected",
            f"the client went away after {_bytes(end.bytes_relayed)} of the response",
        )
    if end.upstream_lost is not None:
        return Classification(
            "stream_error",
            f"the provider {end.upstream_lost} after {_bytes(end.bytes_relayed)}",
            error_type,
        )
    if status >= 400 or error_type is not None or message is not None:
        if message is None and error_type is None:
            return Classification("upstream_error", f"the provider answered {status}")
        return Classification("upstream_error", message or error_type, error_type)
    return Classification("ok")
