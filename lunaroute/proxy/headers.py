"""
Which headers cross the gateway, and how secrets in them are masked for logs
and recordings.
"""

from __future__ import annotations

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


def masked_headers(headers: Headers) -> dict[str, str]:
    """
    Headers as a plain dict for logs and recordings, with credentials masked
    (by L{lunaroute.secrets}, the one place that decides what is a secret).
    """
    return masked_header_items(headers.getAllRawHeaders())
