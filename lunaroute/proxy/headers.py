"""
Which headers cross the gateway, and how secrets in them are masked for logs
and recordings.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

from lunaroute.config import mask_secret

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

# Not forwarded upstream: the agent sets Host and Content-Length itself.
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length"}

SECRET_HEADERS = frozenset(
    {b"authorization", b"x-api-key", b"proxy-authorization", b"cookie", b"set-cookie", b"api-key"}
)


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
    """
    drop = HOP_BY_HOP | _connection_tokens(upstream)
    return [
        (name, list(values))
        for name, values in upstream.getAllRawHeaders()
        if name.lower() not in drop
    ]


def masked_headers(headers: Headers) -> dict[str, str]:
    """
    Headers as a plain dict for logs and recordings, with credentials masked.
    """
    out: dict[str, str] = {}
    for name, values in headers.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        value = ", ".join(v.decode("latin-1") for v in values)
        if name.lower() in SECRET_HEADERS:
            scheme, _, rest = value.partition(" ")
            if rest and scheme.lower() in ("bearer", "basic"):
                value = f"{scheme} {mask_secret(rest)}"
            else:
                value = mask_secret(value)
        out[key] = value
    return out
