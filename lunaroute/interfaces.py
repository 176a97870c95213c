"""
The contracts between LunaRoute's parts.

The proxy depends on these interfaces, never on concrete classes, so that
routing, translation, other stores and detectors can be added without touching
the relay.  Each implementation is declared with ``@implementer`` and checked
with ``verifyObject`` in the tests; mypy (with the mypy-zope plugin) checks
that each implementation's methods match the annotated signatures below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.web.http_headers import Headers
    from twisted.web.iweb import IResponse


class IProvider(Interface):
    """
    An upstream LLM API (Anthropic, OpenAI or a compatible backend) reached
    over a pool of persistent HTTP connections.
    """

    name = Attribute("The configured name of this provider (C{str}), e.g. 'anthropic'.")
    provider_type = Attribute(
        "The wire dialect the provider speaks (C{str}): 'anthropic' or 'openai'."
    )
    has_server_key = Attribute(
        "C{True} when a server-side API key is configured; the client's own "
        "credentials are then replaced by it."
    )
    settings = Attribute(
        "The provider's configuration (L{lunaroute.config.ProviderSettings}): "
        "callers read C{settings.http_client} (the request timeout bounds how "
        "long a stream may stay silent; C{enable_pool_metrics} selects the "
        "providers whose pool C{/metrics} reports)."
    )
    pool = Attribute(
        "The provider's L{twisted.web.client.HTTPConnectionPool}, read by the "
        "metrics for its idle-connection figures; C{None} when the provider "
        "keeps no pool."
    )

    def note_in_flight(count: int) -> None:
        """
        Told, as each request starts, how many requests to this provider are
        in flight (sent and not yet fully relayed).  A pooled provider keeps
        at least that many idle connections, so the connections of a burst
        are reused instead of closed and reopened (TIME-WAIT churn).
        """

    def request(
        method: bytes, path: str, query: bytes, headers: Headers, body: bytes
    ) -> Deferred[IResponse]:
        """
        Send one request upstream.

        @param method: the HTTP method (C{bytes}).
        @param path: the client's request path (C{str}), e.g. '/v1/messages';
            the provider maps it onto its own base URL.
        @param query: the raw query string without '?' (C{bytes}), possibly empty.
        @param headers: the end-to-end request headers to send
            (L{twisted.web.http_headers.Headers}); auth is applied by the provider.
        @param body: the request body (C{bytes}), forwarded byte for byte.
        @return: a L{Deferred} firing with an unbuffered
            L{twisted.web.iweb.IResponse} as soon as the response headers
            arrive, or failing with L{lunaroute.errors.UpstreamUnreachable}
            (its C{retryable} is C{True} only if the request never left),
            L{lunaroute.errors.UpstreamTimeout}, another
            L{lunaroute.errors.UpstreamError}, or
            L{lunaroute.providers.url.BadTarget} for a path not in origin
            form.  A request that may have reached the provider is never sent
            twice.  Cancelling it aborts the upstream connection.
        """

    def probe():
        """
        Check that the provider can be reached right now, cheaply (no model
        call, nothing billed).

        @return: a L{Deferred} firing with C{None} when it answered, or
            failing with a L{lunaroute.errors.UpstreamError} saying why not.
        """

    def close() -> Deferred[None]:
        """
        Close idle pooled connections.

        @return: a L{Deferred} firing with C{None} when they are closed.
        """


class ISessionWriter(Interface):
    """
    A sink for recorded session events (JSONL files, SQLite, ...).

    Writers are called by the recorder service from a worker thread, with
    batches; they never run on the reactor thread, so they may block.
    """

    name = Attribute("A short name for logs and metrics (C{str}), e.g. 'jsonl'.")

    def write_batch(events: list[dict[str, Any]]) -> None:
        """
        Persist a batch of events, in order.

        @param events: a C{list} of event C{dict}s, each with at least
            C{type}, C{session_id}, C{request_id} and C{timestamp}.
        @return: C{None}.  May raise any exception (disk full, permissions);
            the recorder logs and counts it and keeps serving.
        """

    def close() -> None:
        """
        Flush and release files and connections.  Called once, from the
        writer thread, after the last batch.

        @return: C{None}.
        """


class ISessionStore(Interface):
    """
    Read access to recorded sessions, for the session API and the UI.
    """

    def list_sessions(limit: int, offset: int) -> Deferred[list[dict[str, Any]]]:
        """
        @return: a L{Deferred} firing with a C{list} of session summary
            C{dict}s, newest first.
        """

    def search(text: str, limit: int) -> Deferred[list[dict[str, Any]]]:
        """
        Full-text search over request and response text.

        @return: a L{Deferred} firing with a C{list} of matching session
            summary C{dict}s.
        """


class IDetector(Interface):
    """
    Something that inspects request or response text (PII, secrets) and
    reports spans to redact.  Detectors are pure: text in, spans out.
    """

    name = Attribute("A short name for the kind of thing detected (C{str}).")

    def detect(text: str) -> list[tuple[int, int, str]]:
        """
        @param text: the text to inspect (C{str}).
        @return: a C{list} of C{(start, end, kind)} tuples, possibly empty.
        """
