"""
Who may use the gateway, checked before any route runs.

  - The request target must be origin form (C{/path?query}): nothing a
    client sends can move a provider's key to another host.
  - Browsers: coding assistants and SDKs send no C{Origin}; browsers always
    do on cross-origin requests.  A request whose C{Origin} is not in
    C{http_server.cors_allowed_origins} is refused (403) and never
    forwarded, so a web page cannot spend the operator's key; allowed
    origins get CORS headers and their preflights answered.
  - C{http_server.auth_token}: when set, the gateway's own routes (metrics,
    statistics, the session API) need it, and with
    C{require_auth_for_proxy} the provider routes too.  Health probes stay
    open.  The token never travels upstream.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web.resource import IResource, Resource

from lunaroute.config import HttpServerSettings
from lunaroute.providers.url import BadTarget, split_target
from lunaroute.proxy.errors import first_header, listener_for_path, write_error
from lunaroute.proxy.headers import header_reader

__all__ = ["AccessPolicy", "GuardedResource", "route_class", "token_presented"]

HEALTH_PATHS = frozenset({b"/healthz", b"/readyz", b"/"})
ADMIN_PREFIXES = (b"/metrics", b"/_lunaroute/", b"/api/")

TOKEN_HEADER = b"x-lunaroute-token"

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")

_PREFLIGHT_MAX_AGE = b"600"
_ALLOWED_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def route_class(path: bytes, method: bytes = b"GET") -> str:
    """
    C{health} (a GET or HEAD of a probe path), C{admin} (the gateway's own
    data: metrics, statistics, the session API under C{/sessions} and
    C{/api/}) or C{proxy} (everything that may be forwarded: any other method on
    a probe path goes to the bypass provider, so it is proxy too).
    """
    if path in HEALTH_PATHS:
        return "health" if method in (b"GET", b"HEAD") else "proxy"
    if path == b"/metrics" or path.startswith(ADMIN_PREFIXES) or path == b"/sessions" or path.startswith(b"/sessions/"):
        return "admin"
    return "proxy"


class AccessPolicy:
    """The access rules of one gateway, from C{http_server} settings."""

    def __init__(self, settings: HttpServerSettings) -> None:
        self._origins = frozenset(settings.cors_allowed_origins)
        self._any_origin = "*" in self._origins
        token = settings.auth_token
        self._token = token.encode("utf-8") if token else None
        self._token_for_proxy = settings.require_auth_for_proxy

    def origin_allowed(self, origin: str) -> bool:
        return self._any_origin or origin.lower() in self._origins or origin in self._origins

    def needs_token(self, kind: str) -> bool:
        if self._token is None:
            return False
        return kind == "admin" or (kind == "proxy" and self._token_for_proxy)

    def token_presented(self, request: Any) -> bool:
        """
        Whether the request carries the gateway token.  A token sent as
        C{Authorization: Bearer} is removed, so it never reaches a provider.
        """
        assert self._token is not None
        return token_presented(request.requestHeaders, self._token, remove_bearer=True)


def token_presented(
    headers: Any, token: bytes, *, remove_bearer: bool = False, basic_password: bool = False
) -> bool:
    """
    Whether C{headers} carry C{token} (compared in constant time), as
    C{x-lunaroute-token}, as C{Authorization: Bearer}, or with
    C{basic_password} as the password of HTTP Basic (what a browser sends
    when it prompts).  C{remove_bearer}: an C{Authorization} header that
    carried the token is removed, so it never reaches a provider.
    """
    for value in headers.getRawHeaders(TOKEN_HEADER, []):
        if hmac.compare_digest(value.strip(), token):
            return True
    for value in headers.getRawHeaders(b"authorization", []):
        scheme, _, credential = value.strip().partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer" and hmac.compare_digest(credential.strip(), token):
            if remove_bearer:
                headers.removeHeader(b"authorization")
            return True
        if basic_password and scheme == b"basic":
            try:
                decoded = base64.b64decode(credential.strip(), validate=True)
            except (binascii.Error, ValueError):
                continue
            if hmac.compare_digest(decoded.partition(b":")[2], token):
                return True
    return False


class GuardedResource(Resource):
    """
    Checks target, origin and token, then hands the request to the gateway's
    Klein resource.  Refusals are answered in the path's dialect.
    """

    isLeaf = True

    def __init__(self, inner: IResource, policy: AccessPolicy) -> None:
        super().__init__()
        self._inner = inner
        self._policy = policy

    def render(self, request: Any) -> Any:
        path = request.path if isinstance(request.path, bytes) else b""
        listener = listener_for_path(
            path.decode("latin-1"), header_reader(request.requestHeaders)
        )
        try:
            split_target(request.uri)
            if b"%" in path:
                decoded = unquote_to_bytes(path)
                decoded.decode("utf-8")
                if _CONTROL.search(decoded):
                    raise BadTarget("the request path contains an encoded control character")
        except BadTarget as exc:
            return write_error(request, listener, 400, exc.message, "invalid_request_target")
        except UnicodeDecodeError:
            return write_error(
                request, listener, 400, "the request path is not valid UTF-8", "invalid_request_target"
            )

        origin = first_header(request, b"origin")
        if origin is not None:
            if not self._policy.origin_allowed(origin):
                return write_error(
                    request,
                    listener,
                    403,
                    f"cross-origin requests from {origin[:200]!r} are not allowed "
                    "(list the origin in http_server.cors_allowed_origins)",
                    "origin_not_allowed",
                )
            self._allow_origin(request, origin)
            if request.method == b"OPTIONS" and request.requestHeaders.hasHeader(
                b"access-control-request-method"
            ):
                return self._preflight(request)

        kind = route_class(path, request.method)
        if self._policy.needs_token(kind) and not self._policy.token_presented(request):
            request.setHeader(b"www-authenticate", b'Bearer realm="lunaroute"')
            return write_error(
                request,
                listener,
                401,
                "this route needs the gateway token (Authorization: Bearer <token> "
                "or x-lunaroute-token)",
                "gateway_token_required",
            )
        request.requestHeaders.removeHeader(TOKEN_HEADER)
        return self._inner.render(request)

    @staticmethod
    def _allow_origin(request: Any, origin: str) -> None:
        request.setHeader(b"access-control-allow-origin", origin.encode("latin-1"))
        request.setHeader(b"access-control-expose-headers", b"*")
        request.setHeader(b"vary", b"Origin")

    @staticmethod
    def _preflight(request: Any) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-methods", _ALLOWED_METHODS)
        asked = request.requestHeaders.getRawHeaders(b"access-control-request-headers")
        if asked:
            request.setHeader(b"access-control-allow-headers", b", ".join(asked))
        request.setHeader(b"access-control-max-age", _PREFLIGHT_MAX_AGE)
        return b""
