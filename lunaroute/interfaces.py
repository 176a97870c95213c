"""
The contracts between LunaRoute's parts.

The proxy depends on these interfaces, never on concrete classes, so that
routing, translation, other stores and detectors can be added without touching
the relay.  Each implementation is declared with ``@implementer`` and checked
with ``verifyObject`` in the tests; mypy (with the mypy-zope plugin) checks
that each implementation's methods match the annotated signatures below.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    Read access to recorded sessions: the one read path of the session API,
    the UI and the command line.  Every method returns a L{Deferred}; the
    query runs off the reactor.  Failures are
    L{lunaroute.sessions.store.StoreError}s: C{BadParameter} (a bad sort,
    order or a malformed search query, naming the parameter), C{NotFound}
    (no such session or request), C{StoreUnavailable} (no readable
    database).  Ids must have been checked
    (L{lunaroute.dialects.session_id.is_valid_session_id}) by the caller.
    """

    def list_sessions(
        filters: Any, sort: str, order: str, limit: int, offset: int
    ) -> Deferred[tuple[list[dict[str, Any]], int]]:
        """
        Sessions matching C{filters} (L{lunaroute.sessions.store.SessionFilters}),
        sorted by C{sort} (C{started_at}, C{last_activity}, C{total_tokens},
        C{cost}, C{duration}, C{requests}) in C{order} (C{asc}/C{desc}).

        @return: a L{Deferred} firing with C{(page, total)}: the session
            summary C{dict}s from C{offset}, at most C{limit}, and how many
            sessions match in all.
        """

    def search(text: str, limit: int) -> Deferred[list[dict[str, Any]]]:
        """
        Full-text search over every recorded word (FTS5 syntax, or plain
        words).

        @return: a L{Deferred} firing with up to C{limit} hits, best first,
            each a C{dict} with C{session_id}, C{request_id}, C{snippet}
            (HTML-escaped, matches in C{<mark>}), C{snippet_text} and C{rank}.
        """

    def get_session(session_id: str) -> Deferred[dict[str, Any]]:
        """
        @return: a L{Deferred} firing with the session summary and its
            C{requests} (per-turn figures, oldest first).
        """

    def timeline(session_id: str) -> Deferred[list[dict[str, Any]]]:
        """
        @return: a L{Deferred} firing with the session's C{request},
            C{tool_call} and C{response} events in order.
        """

    def raw(session_id: str, request_id: str) -> Deferred[dict[str, Any]]:
        """
        @return: a L{Deferred} firing with the request's C{request_json} and
            C{response_json} as recorded, credentials masked.
        """

    def tools(session_id: str) -> Deferred[list[dict[str, Any]]]:
        """
        @return: a L{Deferred} firing with one C{dict} per tool: calls,
            errors, total and average duration.
        """

    def export(session_id: str) -> Deferred[dict[str, Any]]:
        """
        @return: a L{Deferred} firing with the session, every request in
            full (texts and bodies, masked) and its tool calls.
        """

    def turns(session_id: str, request_ids: list[str]) -> Deferred[list[dict[str, Any]]]:
        """
        @return: a L{Deferred} firing with the per-turn figures and texts of
            those requests of the session that are stored (the live tail).
        """

    def tool_calls(session_id: str) -> Deferred[list[dict[str, Any]]]:
        """
        @return: a L{Deferred} firing with the session's tool calls, one
            row each (C{request_id}, C{tool_call_id}, C{tool_name},
            C{input_json}, C{duration_ms}, C{result_request_id},
            C{is_error}), oldest first, without reading the request rows.
        """

    def turns_after(session_id: str, request_id: str) -> Deferred[list[dict[str, Any]]]:
        """
        @return: a L{Deferred} firing with the per-turn figures and texts of
            the session's requests stored after C{request_id} (none when it
            is unknown): what a live tail missed while disconnected.
        """

    def stats(name: str, window: Any) -> Deferred[dict[str, Any]]:
        """
        Aggregates over a L{lunaroute.sessions.store.StatsWindow}: C{name} is
        C{overview}, C{tokens}, C{tools}, C{costs}, C{models}, C{hours},
        C{spending}, C{usage}, C{clients}, C{projects}, C{durations},
        C{blocks}, C{user-agents} or C{model-list}.

        @return: a L{Deferred} firing with a JSON-ready C{dict}.
        """

    def recent_sessions(limit: int, window: Any) -> Deferred[list[dict[str, Any]]]:
        """
        @return: a L{Deferred} firing with the C{limit} most recently active
            sessions in the window.
        """

    def delete_session(session_id: str) -> Deferred[dict[str, Any]]:
        """
        Remove a session's rows, search entries and JSONL files.

        @return: a L{Deferred} firing with what was removed (counts per
            table, file names).
        """


class IDetector(Interface):
    """
    Something that inspects request or response text (PII, secrets) and
    reports spans to redact.  Detectors are pure: text in, spans out; they
    keep no state between calls, so one instance serves every thread.
    """

    name = Attribute("A short name for the detector (C{str}), e.g. C{email}.")
    kinds = Attribute("The kinds of span it reports (C{tuple} of C{str}), e.g. C{('EMAIL',)}.")

    def detect(text: str) -> Sequence[tuple[int, int, str, float]]:
        """
        @param text: the text to inspect (C{str}).
        @return: a C{list} of C{(start, end, kind, confidence)} tuples
            (L{lunaroute.pii.detectors.Detection}), C{text[start:end]}
            being a C{kind} (C{EMAIL}, C{PHONE}...) with a C{confidence}
            between 0 and 1; possibly empty, in any order, possibly
            overlapping (the redactor resolves overlaps).
        """
