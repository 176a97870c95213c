"""
The session API (L{lunaroute.api.app.SessionAPI}) and how it is mounted in
front of the gateway's own routes.

Wiring, in C{lunaroute/service.py} (two lines)::

    from lunaroute.api import with_session_api
    resource = GuardedResource(
        with_session_api(self.gateway.resource(), settings, self.recorder, reactor, self.pricing),
        AccessPolicy(settings.http_server),
    )

C{GuardedResource} stays outermost, so target, origin and
C{http_server.auth_token} checks apply to the API (its paths are admin
routes, see L{lunaroute.proxy.access.route_class}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.resource import IResource, Resource

from lunaroute.api.app import LiveFeed, SessionAPI, json_error
from lunaroute.sessions.store import make_session_store

__all__ = ["LiveFeed", "PathDispatch", "RecordingOff", "SessionAPI", "is_api_path", "mount", "with_session_api"]


def is_api_path(path: bytes) -> bool:
    """C{/sessions}, C{/sessions/...} and C{/api/...}: the session API's paths."""
    return path == b"/sessions" or path.startswith(b"/sessions/") or path.startswith(b"/api/")


class PathDispatch(Resource):
    """
    Renders C{matched} for the paths C{predicate} accepts and C{other} for
    the rest; both are leaves (Klein resources route on the whole path).
    """

    isLeaf = True

    def __init__(self, predicate: Callable[[bytes], bool], matched: IResource, other: IResource) -> None:
        super().__init__()
        self._predicate = predicate
        self._matched = matched
        self._other = other

    def render(self, request: Any) -> Any:
        path = request.path if isinstance(request.path, bytes) else b""
        target = self._matched if self._predicate(path) else self._other
        return target.render(request)


def mount(api_resource: IResource, gateway_resource: IResource) -> IResource:
    """
    One resource: the session API's paths (L{is_api_path}) go to
    C{api_resource}, everything else to C{gateway_resource}.  Both are
    rendered as leaves (Klein resources route on the whole path).
    """
    return PathDispatch(is_api_path, api_resource, gateway_resource)


class RecordingOff(Resource):
    """The session API's paths when nothing is recorded to a database: a JSON 404 saying so."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return json_error(
            request,
            404,
            "the session API needs session recording to SQLite or PostgreSQL "
            "(session_recording.enabled and session_recording.sqlite.enabled or .postgres.enabled)",
            "recording_disabled",
        )


def session_api_resource(
    settings: Any, recorder: Any, reactor: Any, pricing: Any = None, store: Any = None
) -> IResource:
    """
    The session API over the recorder's database (C{store}, or the one
    L{make_session_store} gives: PostgreSQL or SQLite), or L{RecordingOff}
    when recording to a database is off.  C{pricing}: the gateway's
    L{PricingTable} (loaded from the settings when not given).
    """
    recording = settings.session_recording
    if recorder is None:
        return RecordingOff()
    if store is None:
        store = make_session_store(recording, reactor)
    if store is None:
        return RecordingOff()
    feed = LiveFeed()
    feed.attach(recorder)
    return SessionAPI(store, settings, reactor, feed, pricing).resource()


def with_session_api(
    gateway_resource: IResource, settings: Any, recorder: Any, reactor: Any, pricing: Any = None, store: Any = None
) -> IResource:
    """The gateway's resource with the session API mounted in front (see the module docstring)."""
    return mount(session_api_resource(settings, recorder, reactor, pricing, store), gateway_resource)
