"""
LunaRoute's domain exceptions.

Every failure the gateway raises on purpose is a L{LunaRouteError}, so callers
can tell "we decided this is wrong" (bad configuration, bad client input, an
unreachable upstream) apart from programming errors.  Each subclass carries
just enough structure for the layer that reports it: the key path for
configuration problems, the HTTP status and API error type for client errors.
"""

from __future__ import annotations


class LunaRouteError(Exception):
    """Base class of every error LunaRoute raises deliberately."""


class ConfigError(LunaRouteError):
    """
    The configuration is invalid.

    The message is always one readable line that starts with the offending
    key path (or environment variable, or command-line option), e.g.
    C{providers.openai.base_url: must be an http(s) URL, got 'ftp://x'}, because
    it is shown as-is to an operator at startup.

    @ivar key: what was wrong - a dotted key path, an environment variable name
        or a command-line option - or C{None} when the error is not about one
        key (an unreadable file, say).
    @ivar problem: the message without the key prefix.
    """

    key: str | None
    problem: str

    def __init__(self, problem: str, key: str | None = None) -> None:
        # Operators read this in a terminal or a log line: never let a
        # multi-line parser message split it.
        problem = problem.replace("\r", " ").replace("\n", " ")
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class UpstreamError(LunaRouteError):
    """
    An upstream provider could not be used.

    @ivar provider: the configured provider name, when known.
    """

    provider: str | None

    def __init__(self, message: str = "upstream error", *, provider: str | None = None) -> None:
        self.provider = provider
        super().__init__(message)


class UpstreamUnreachable(UpstreamError):
    """
    The upstream refused the connection, failed DNS or TLS, or dropped it.

    @ivar retryable: C{True} only when the request certainly never reached
        the provider (so sending it again cannot bill it twice).
    """

    def __init__(
        self, message: str = "upstream unreachable", *, provider: str | None = None, retryable: bool = False
    ) -> None:
        self.retryable = retryable
        super().__init__(message, provider=provider)


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer (or stopped answering) within the timeout."""


class RequestError(LunaRouteError):
    """
    The client sent something the gateway will not forward.

    @ivar status: the HTTP status to answer with.
    @ivar error_type: the API error type to put in the error body, in the
        vocabulary both Anthropic and OpenAI clients understand.
    @ivar message: the human-readable explanation.
    """

    # Class-level defaults so subclasses only restate what differs.
    status: int = 400
    error_type: str = "invalid_request_error"

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None) -> None:
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type
        self.message = message
        super().__init__(message)


class RequestTooLarge(RequestError):
    """The request body exceeds C{http_server.max_request_body_bytes}."""

    status = 413
    error_type = "request_too_large"
