"""
Who may use the UI site, and the headers every UI answer carries.

The proxy's L{GuardedResource} classifies paths for the proxy (C{/} is a
health probe there); on the UI every path shows recorded data, so this guard
applies the same rules to all of them, with the proxy's L{AccessPolicy}:

  - the request target must be origin form (C{/path?query});
  - when the UI listens on loopback, the C{Host} header must name this
    machine (C{localhost}, C{127.0.0.1}, C{[::1]}): a web page whose own
    name was made to resolve to 127.0.0.1 ("DNS rebinding") would otherwise
    be same-origin with the UI and read it;
  - a browser C{Origin} must be this site itself or one listed in
    C{http_server.cors_allowed_origins} (a page elsewhere cannot read or
    delete sessions through the user's browser);
  - with C{ui.auth_token} or C{http_server.auth_token} set (the first
    wins), every request needs it: as on the proxy (C{Authorization: Bearer}, C{x-lunaroute-token}), or as the
    password of HTTP Basic authentication, which browsers ask for by
    themselves (any user name).

Every answer gets a strict Content-Security-Policy (scripts, styles and
connections from this site only, no inline script, no frames, no plugins),
C{nosniff}, no referrer and no framing.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource

from lunaroute.config import HttpServerSettings
from lunaroute.logs import log_observer
from lunaroute.providers.url import BadTarget, split_target
from lunaroute.proxy.access import TOKEN_HEADER, AccessPolicy, token_presented

__all__ = ["CONTENT_SECURITY_POLICY", "UIGuard", "is_loopback_host"]

log = Logger(observer=log_observer)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

_SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: a browser sends "Origin: null" with a
    # form POST under no-referrer, and this guard refuses foreign origins;
    # no URL of the UI (a search, a session id) ever reaches another site.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


def is_loopback_host(host_header: bytes | None) -> bool:
    """Whether a C{Host} header names this machine: C{localhost}, C{*.localhost}, 127.0.0.0/8, C{[::1]}."""
    if not host_header:
        return False
    host = host_header.decode("latin-1").strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain(request: Any, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return (message + "\n").encode("utf-8")


class UIGuard(Resource):
    """Checks target, origin and token for every UI request, then renders C{inner}."""

    isLeaf = True

    def __init__(
        self,
        inner: IResource,
        http_server: HttpServerSettings,
        *,
        log_requests: bool = False,
        loopback_only: bool = False,
        token: str | None = None,
    ) -> None:
        super().__init__()
        self._loopback_only = loopback_only
        self._inner = inner
        self._policy = AccessPolicy(http_server)
        token = token or http_server.auth_token
        self._token = token.encode("utf-8") if token else None
        self._log_requests = log_requests

    def _token_presented(self, request: Any) -> bool:
        """The token as C{x-lunaroute-token}, C{Authorization: Bearer}, or the password of Basic auth."""
        assert self._token is not None
        return token_presented(request.requestHeaders, self._token, basic_password=True)

    def _same_site(self, request: Any, origin: str) -> bool:
        host = request.getHeader(b"host")
        if not host:
            return False
        host_text = host.decode("latin-1")
        return origin in (f"http://{host_text}", f"https://{host_text}")

    def render(self, request: Any) -> Any:
        for name, value in _SECURITY_HEADERS:
            request.setHeader(name, value)
        if self._log_requests:
            request.notifyFinish().addBoth(self._logged, request)
        try:
            split_target(request.uri)
        except BadTarget as exc:
            return _plain(request, 400, exc.message)
        if self._loopback_only and not is_loopback_host(request.getHeader(b"host")):
            return _plain(
                request,
                421,
                "this UI listens on loopback and answers only requests for localhost, 127.0.0.1 or [::1] "
                "(the Host header names another machine)",
            )
        origin_header = request.getHeader(b"origin")
        if origin_header is not None:
            origin = origin_header.decode("latin-1")
            if not self._same_site(request, origin) and not self._policy.origin_allowed(origin):
                return _plain(
                    request,
                    403,
                    f"cross-origin requests from {origin[:200]!r} are not allowed "
                    "(list the origin in http_server.cors_allowed_origins)",
                )
        if self._token is not None and not self._token_presented(request):
            request.setHeader(b"www-authenticate", b'Basic realm="LunaRoute UI", charset="UTF-8"')
            return _plain(
                request,
                401,
                "the LunaRoute UI needs the gateway token (http_server.auth_token): as the password "
                "your browser asks for, or Authorization: Bearer <token>",
            )
        request.requestHeaders.removeHeader(TOKEN_HEADER)
        request.requestHeaders.removeHeader(b"authorization")
        return self._inner.render(request)

    def _logged(self, result: Any, request: Any) -> None:
        log.info(
            "ui {method} {path} {code}",
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1", "replace")[:200],
            code=request.code,
        )
