"""
Which headers cross the gateway, and how secrets in them are masked for logs
and recordings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from twisted.web.http_headers import Headers

from lunaroute.secrets import masked_header_items

# RFC 9110 section 7.6.1 connection-specific headers, plus the ones that
# describe this hop's framing (the gateway re-frames the body itself).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Not forwarded upstream: the agent sets Host and Content-Length itself, and
# the gateway's own token is for the gateway only.
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"x-lunaroute-token"}


def first_value(headers: Headers, name: bytes) -> str | None:
    """
    A header's first value, decoded as latin-1: any byte is accepted, so a
    hostile or odd header never raises (a C{str} name would make Twisted
    decode as UTF-8).
    """
    values = headers.getRawHeaders(name)
    if not values:
        return None
    value = values[0]
    return value.decode("latin-1") if isinstance(value, bytes) else value


def header_reader(headers: Headers) -> Callable[[str], str | None]:
    """Looks a header of C{headers} up by lower-case name (see L{first_value})."""
    return lambda name: first_value(headers, name.encode("ascii"))


def _connection_tokens(headers: Headers) -> set[bytes]:
    """Headers named in C{Connection} are hop-by-hop for this message too."""
    tokens: set[bytes] = set()
    for value in headers.getRawHeaders(b"connection", []):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def upstream_request_headers(client: Headers) -> Headers:
    """
    The client's end-to-end headers, to send upstream.
    """
    drop = _REQUEST_DROP | _connection_tokens(client)
    out = Headers()
    for name, values in client.getAllRawHeaders():
        if name.lower() not in drop:
            out.setRawHeaders(name, list(values))
    return out


def relayed_response_headers(upstream: Headers) -> list[tuple[bytes, list[bytes]]]:
    """
    The provider's end-to-end response headers, to send back to the client.
    The provider's CORS headers are dropped: whether a browser origin may
    read the gateway's answers is the gateway's policy, not the provider's.
    """
    drop = HOP_BY_HOP | _connection_tokens(upstream)
    return [
        (name, list(values))
        for name, values in upstream.getAllRawHeaders()
        if name.lower() not in drop and not name.lower().startswith(b"access-control-")
    ]


class MaskedHeaders(Mapping[str, str]):
    """
    A read-only view of a message's headers, credentials masked, computed
    the first time it is read: the request path only keeps a reference, and
    the masking runs where the headers are used (the recorder's thread, the
    debug log), not on every request.  The L{Headers} must not change after
    (true once the request was sent and the response received).
    """

    __slots__ = ("_headers", "_masked")

    def __init__(self, headers: Headers) -> None:
        self._headers = headers
        self._masked: dict[str, str] | None = None

    def _view(self) -> dict[str, str]:
        masked = self._masked
        if masked is None:
            masked = self._masked = masked_header_items(self._headers.getAllRawHeaders())
        return masked

    def __getitem__(self, name: str) -> str:
        return self._view()[name]

    def first(self, name: str) -> str | None:
        """One header's first value, unmasked and without building the view (not for credentials)."""
        return first_value(self._headers, name.encode("ascii"))

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def __repr__(self) -> str:
        return repr(self._view())

    def copy(self) -> dict[str, str]:
        """The masked headers as a new plain C{dict} (cheaper than C{dict(view)})."""
        return dict(self._view())


def masked_headers(headers: Headers) -> dict[str, str]:
    """
    Headers as a plain dict for logs and recordings, with credentials masked
    (by L{lunaroute.secrets}, the one place that decides what is a secret).
    """
    return masked_header_items(headers.getAllRawHeaders())
