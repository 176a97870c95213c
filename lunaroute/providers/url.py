"""
Upstream URLs, built from parsed parts.

The provider's scheme, host and port come from its configured base URL and
nothing a client sends may change them: a request target is accepted only in
origin form (C{/path?query}, printable ASCII), and the URL is assembled from
components and parsed back to prove where it points before it is used.
Gluing the client's target onto the base URL as a string let C{1/steal}
reach port 10001 and C{.evil.example/x} another host, with the server key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

from twisted.web.client import URI

from lunaroute.errors import RequestError

__all__ = ["BadTarget", "UpstreamBase", "split_target"]

# Bytes not allowed in a path or query: anything but printable ASCII, and
# '#' or '\' (which some parsers treat as the end of the path).
_FORBIDDEN = re.compile(rb"[^\x21-\x7e]|[#\\]")


# A '.' or '..' path segment, once percent-decoded ('%2e%2e', and '%2f' or
# '%5c' as the separators around it).
_DOT_SEGMENT = re.compile(rb"(?:^|[/\\])\.\.?(?:[/\\]|$)")

_MAX_CHECKED_URLS = 512


class BadTarget(RequestError):
    """The request target is not an origin-form C{/path[?query]}."""

    status = 400


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """
    Split a request target into C{(path, query)}, refusing anything but
    origin form: absolute form (C{http://host/x}), authority form (C{CONNECT
    host:443}), relative paths, C{//host}, control characters, non-ASCII,
    and C{.} or C{..} path segments (percent-encoded too).

    @raise BadTarget: with a message naming the problem.
    """
    if not target.startswith(b"/"):
        raise BadTarget("the request target must be a path starting with '/'")
    if target.startswith(b"//"):
        raise BadTarget("the request target must not start with '//'")
    bad = _FORBIDDEN.search(target)
    if bad is not None:
        raise BadTarget(f"the request target contains a forbidden byte 0x{bad.group()[0]:02x}")
    path, _, query = target.partition(b"?")
    # A provider's paths have no dot segments.  Any server normalising them
    # (or decoding '%2f' first) would let '/v1/../../admin' climb out of the
    # base URL's path prefix with the server key: refused, decoded or not.
    if (b"." in path or b"%" in path) and _DOT_SEGMENT.search(unquote_to_bytes(path)):
        raise BadTarget("the request path must not contain '.' or '..' segments")
    return path, query


@dataclass(frozen=True)
class UpstreamBase:
    """
    A provider's base URL, parsed once: scheme, authority and path prefix.
    """

    scheme: str
    netloc: str
    host: bytes
    port: int
    prefix: str
    # Checked URLs by (path, query): clients send the same few targets
    # (/v1/messages?beta=true) over and over.  Bounded.
    _checked: dict[tuple[bytes, bytes], bytes] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def parse(cls, base_url: str) -> UpstreamBase:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        checked = URI.fromBytes(urlunsplit((parts.scheme, parts.netloc, "/", "", "")).encode("ascii"))
        return cls(
            scheme=parts.scheme,
            netloc=parts.netloc,
            host=checked.host,
            port=checked.port,
            prefix=parts.path.rstrip("/"),
        )

    def url(self, path: bytes, query: bytes = b"") -> bytes:
        """
        The upstream URL for an origin-form C{path} (and raw C{query}): the
        base's scheme and authority, the base's path prefix followed by
        C{path}.  Checked by parsing it back.

        @raise BadTarget: if C{path} is not origin form, or the result would
            not point at this base's scheme, host and port.
        """
        key = (path, query)
        url = self._checked.get(key)
        if url is None:
            url = self._build(path, query)
            if len(self._checked) >= _MAX_CHECKED_URLS:
                self._checked.clear()
            self._checked[key] = url
        return url

    def _build(self, path: bytes, query: bytes) -> bytes:
        split_target(path + (b"?" + query if query else b""))
        url = urlunsplit(
            (self.scheme, self.netloc, self.prefix + path.decode("ascii"), query.decode("ascii"), "")
        ).encode("ascii")
        parsed = URI.fromBytes(url)
        if (parsed.scheme.decode("ascii"), parsed.host, parsed.port) != (self.scheme, self.host, self.port):
            raise BadTarget("the request target would leave the provider's origin")
        return url
