"""
The web UI: its own site on C{ui.host}:C{ui.port} (default
C{127.0.0.1:8082}), the third child of the gateway's C{MultiService}.

It serves the pages (L{lunaroute.ui.pages.UIPages}) and, under C{/api/...},
the session API (L{lunaroute.api.app.SessionAPI}) over the same store, all
behind L{lunaroute.ui.guard.UIGuard} (target, origin, C{http_server.auth_token},
Content-Security-Policy).  It runs when C{ui.enabled} is true and sessions
are recorded to SQLite (there is nothing to show otherwise; the start-up log
says which is missing, see L{lunaroute.config.ui_unavailable_reason}).

Wiring, in C{lunaroute/service.py}::

    from lunaroute.ui import make_ui_service
    self.ui_listener = make_ui_service(settings, self.recorder, reactor, self.pricing)
    if self.ui_listener is not None:
        self.ui_listener.setServiceParent(self)

and stopped with the proxy's listener in C{stopService}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.web.resource import IResource

from lunaroute.api import PathDispatch
from lunaroute.api.app import LiveFeed, SessionAPI
from lunaroute.config import ui_unavailable_reason
from lunaroute.interfaces import ISessionStore
from lunaroute.proxy.site import ListenerService, gateway_site
from lunaroute.sessions.store import make_session_store
from lunaroute.stats.pricing import PricingTable
from lunaroute.ui.guard import CONTENT_SECURITY_POLICY, UIGuard, is_loopback_host
from lunaroute.ui.pages import UIPages

__all__ = ["CONTENT_SECURITY_POLICY", "make_ui_service", "ui_resource", "ui_url"]


def _is_ui_api_path(path: bytes) -> bool:
    """The UI site serves the session API under C{/api/...} only."""
    return path.startswith(b"/api/")


def ui_resource(
    store: ISessionStore,
    settings: Any,
    clock: Any,
    pricing: PricingTable,
    feed: LiveFeed | None = None,
    readiness: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> IResource:
    """
    The UI site's whole resource: guard, then API or pages.  C{readiness}
    gives the proxy's C{/readyz} report for the settings page.
    """
    api = SessionAPI(store, settings, clock, feed, pricing).resource()
    pages = UIPages(store, settings, clock, pricing, readiness).resource()
    return UIGuard(
        PathDispatch(_is_ui_api_path, api, pages),
        settings.http_server,
        log_requests=settings.ui.log_requests,
        loopback_only=is_loopback_host(settings.ui.host.encode("utf-8")),
        token=settings.ui.auth_token,
    )


def ui_url(settings: Any, port: int | None = None) -> str:
    """Where the UI is, as a browser opens it."""
    host = settings.ui.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.ui.port if port is None else port}"


def make_ui_service(
    settings: Any,
    recorder: Any,
    reactor: Any,
    pricing: PricingTable | None = None,
    readiness: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    store: Any = None,
) -> ListenerService | None:
    """
    The UI's listener service, or C{None} when it does not run
    (C{ui.enabled: false}, or no recording to SQLite).  Listening fails
    like the proxy's: one line naming C{ui.host}:C{ui.port} and exit 1.
    """
    if ui_unavailable_reason(settings) is not None or recorder is None:
        return None
    recording = settings.session_recording
    if pricing is None:
        pricing = PricingTable.load(settings.statistics.pricing_file, settings.statistics.pricing)
    if store is None:
        store = make_session_store(recording, reactor)
    if store is None:
        return None
    feed = LiveFeed()
    feed.attach(recorder)
    site = gateway_site(ui_resource(store, settings, reactor, pricing, feed, readiness), settings.http_server, reactor)
    host = settings.ui.host
    endpoint = serverFromString(reactor, f"tcp:{settings.ui.port}:interface={host.replace(':', chr(92) + ':')}")
    service = ListenerService(endpoint, site, f"{host}:{settings.ui.port} (ui)", reactor)
    service.setName("ui")
    return service
