"""
What counts as a credential, and how one is shown: the one place that decides.

Logs, recordings, metrics and the UI all mask through these functions, so a
header or key that is a secret in one of them is a secret in all of them.
A name is a secret when one of its words (split on C{-}, C{_} and camelCase)
is a credential word: C{x-api-key}, C{X-Auth-Token}, C{x-goog-api-key},
C{Authorization}, C{Cookie}, C{client_secret}, C{accessToken}.  Counting
words (not substrings) keeps C{max_tokens} or C{input_tokens} readable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "SECRET_NAME_MEMO",
    "SECRET_NAME_MEMO_MAX",
    "is_secret_name",
    "mask_connection_string",
    "mask_secret",
    "mask_value",
    "masked_header_items",
]

# Words that make a name a credential's name.
_SECRET_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "auth",
        "authorization",
        "authentication",
        "cookie",
        "password",
        "passwd",
        "credential",
        "credentials",
    }
)
# Whole names that are credentials although no single word says so.
_SECRET_NAMES = frozenset({"set_cookie", "proxy_authorization", "xapikey"})
# Names with a credential word that are not credentials (request fields the
# recordings should keep readable).
_NOT_SECRET_NAMES = frozenset(
    {"prompt_cache_key", "idempotency_key", "cache_key", "x_stainless_retry_count"}
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[-_.\s]+")

# Values already masked by this module (so masking twice changes nothing).
_MASKED_SUFFIXES = ("***", "<none>")


# The answers of is_secret_name, remembered in a plain dict: the same few
# dozen names recur in every request and body, and a dict lookup costs a
# fraction of a cached call (scrub_secrets reads it inline while walking
# every recorded body).  Bounded: once full, other names are answered by the
# cached rule and not remembered, and neither are names longer than a name
# (a client's odd body must not pin megabytes).  Entries are never removed,
# so a reader on another thread never sees a name vanish between "in" and
# "[]".  Read it, never write it, outside this module.
SECRET_NAME_MEMO: dict[str, bool] = {}
SECRET_NAME_MEMO_MAX = 4096
_MEMO_NAME_MAX_CHARS = 128


def is_secret_name(name: str) -> bool:
    """Whether a header or JSON key of this name holds a credential (remembered, see above)."""
    secret = SECRET_NAME_MEMO.get(name)
    if secret is None:
        secret = _is_secret_name(name)
        if len(SECRET_NAME_MEMO) < SECRET_NAME_MEMO_MAX and len(name) <= _MEMO_NAME_MAX_CHARS:
            SECRET_NAME_MEMO[name] = secret
    return secret


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    words = _SPLIT.split(_CAMEL.sub("_", name).lower())
    joined = "_".join(words)
    if joined in _NOT_SECRET_NAMES:
        return False
    if joined in _SECRET_NAMES:
        return True
    return any(word in _SECRET_WORDS for word in words)


def mask_secret(value: str | None) -> str:
    """
    Render a secret so it can be logged: C{sk-a…xyz4} for long values, C{***}
    for short ones (whose ends would reveal too much), C{<none>} when unset.
    """
    if not value:
        return "<none>"
    if len(value) > 12:
        return f"{value[:4]}…{value[-4:]}"
    return "***"


_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/?#@]*):([^@/?#]*)@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def mask_connection_string(value: str | None) -> str:
    """
    A database connection string as it may be logged: the password of a
    URL (C{postgresql://user:***@host/db}), a C{password=} parameter of a
    URL query or a C{key=value} string replaced by C{***}.  C{<none>} when
    unset.
    """
    if not value:
        return "<none>"
    if "://" in value:
        masked = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:***@", value)
        return _QUERY_PASSWORD.sub(lambda m: f"{m.group(1)}***", masked)
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}***", value)


def mask_value(value: Any) -> Any:
    """
    Mask one credential value.  An auth scheme (C{Bearer}, C{Basic}) stays
    readable; a value this module already masked is returned unchanged.
    Non-strings become C{***} (C{None} stays C{None}).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        return "***"
    if "…" in value or value.endswith(_MASKED_SUFFIXES):
        return value
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() in ("bearer", "basic", "token", "digest"):
        return f"{scheme} {mask_secret(rest.strip())}"
    return mask_secret(value)


def masked_header_items(items: Iterable[tuple[bytes, Iterable[bytes]]]) -> dict[str, str]:
    """
    Raw header pairs (as L{twisted.web.http_headers.Headers.getAllRawHeaders}
    yields them) as a plain C{dict} of lower-case name to value, with every
    credential masked and undecodable bytes kept readable.
    """
    out: dict[str, str] = {}
    for name, values in items:
        key = name.decode("latin-1").lower()
        if type(values) is list and len(values) == 1:  # nearly every header
            value = values[0].decode("latin-1")
        else:
            value = ", ".join(v.decode("latin-1") for v in values)
        if is_secret_name(key):
            value = mask_value(value)
        out[key] = value
    return out
