"""
Error responses in the client's dialect: the one place a failure becomes HTTP.

Whatever fails (bad input, an unreachable provider, a bug), the client gets
the error body its SDK expects: Anthropic's C{{"type":"error","error":{...}}}
or OpenAI's C{{"error":{...}}}, with the matching status.  Never Twisted's
HTML error page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lunaroute.dialects.errors import anthropic_error_body, openai_error_body
from lunaroute.errors import (
    LunaRouteError,
    RequestError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from lunaroute.proxy.headers import first_value, header_reader

__all__ = [
    "NoProvider",
    "body_limit_message",
    "error_body",
    "first_header",
    "listener_for_path",
    "listener_for_request",
    "status_for",
    "write_error",
]

# Anthropic's error type for each status the gateway itself answers with.
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    431: "invalid_request_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class NoProvider(RequestError):
    """No enabled provider serves the request's dialect."""

    status = 503
    error_type = "no_provider"


def error_body(listener: str, status: int, message: str, code: str | None = None) -> bytes:
    """An error body in the dialect the client speaks."""
    if listener == "anthropic":
        return anthropic_error_body(_ANTHROPIC_ERROR_TYPES.get(status, "api_error"), message)
    return openai_error_body(message, _OPENAI_ERROR_TYPES.get(status, "server_error"), code)


def body_limit_message(limit: int) -> str:
    """
    The message of the 413 for a body over C{http_server.max_request_body_bytes}
    (C{limit}), the same whether the route or the connection answers it.
    """
    return f"request body exceeds the {limit}-byte limit"


def first_header(request: Any, name: bytes) -> str | None:
    """A request header's first value (see L{first_value})."""
    return first_value(request.requestHeaders, name)


def listener_for_path(path: str, header: Callable[[str], str | None]) -> str:
    """
    The dialect of a request, from its path or, failing that, its headers,
    so that even a 404 speaks the client's language.
    """
    if path.startswith("/v1/messages") or path.startswith("/v1/complete"):
        return "anthropic"
    if path.startswith("/v1/chat") or path.startswith("/v1/responses") or path.startswith("/responses"):
        return "openai"
    if header("anthropic-version") or header("x-api-key"):
        return "anthropic"
    return "openai"


def listener_for_request(request: Any) -> str:
    path = request.path.decode("latin-1") if isinstance(request.path, bytes) else str(request.path)
    return listener_for_path(path, header_reader(request.requestHeaders))


def status_for(exc: BaseException) -> tuple[int, str | None]:
    """The HTTP status and OpenAI error code for a domain error."""
    if isinstance(exc, RequestError):
        return exc.status, exc.error_type
    if isinstance(exc, UpstreamTimeout):
        return 504, "upstream_timeout"
    if isinstance(exc, UpstreamUnreachable):
        return 502, "upstream_unreachable"
    if isinstance(exc, UpstreamError):
        return 502, "upstream_error"
    if isinstance(exc, LunaRouteError):
        return 500, "gateway_error"
    return 500, "internal_error"


def write_error(
    request: Any, listener: str, status: int, message: str, code: str | None = None
) -> bytes:
    """Set the status and content type on C{request}; return the error body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return error_body(listener, status, message, code)
