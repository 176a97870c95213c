"""
Where redaction is applied: the recorded events, the request log, and (only
with C{pii.apply_to_upstream}) the request body sent to the provider.

Recorded events are redacted on the recorder's thread, while
L{lunaroute.sessions.events.exchange_events} builds them and before any
writer sees them, so the JSONL files, the SQLite tables and their full-text
index (and the API and UI, which read the store) only ever hold redacted
text, and the proxy does no extra work per request.

Failures fail closed: a value whose redaction raises is replaced by
C{"[REDACTION_FAILED]"} (an empty list or object for a list or object), the
record is still written with everything else, and the failure is counted
(C{lunaroute_pii_failures_total{where="record"}}).  Text is dropped rather
than written unredacted.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger

from lunaroute.errors import RequestError
from lunaroute.logs import log_observer
from lunaroute.pii.redactor import Redactor

__all__ = [
    "FAILED",
    "RedactionFailed",
    "redact_request_body",
    "redact_text_or_drop",
    "redact_value",
]

log = Logger(observer=log_observer)

FAILED = "[REDACTION_FAILED]"

def _failed_value(value: Any) -> Any:
    if isinstance(value, list):
        return []
    if isinstance(value, dict):
        return {}
    return FAILED


def redact_value(value: Any, redactor: Redactor, where: str = "record") -> Any:
    """
    C{value} (a string or JSON-like data) redacted, or, when redaction
    raises, dropped: C{"[REDACTION_FAILED]"} for a string, an empty list or
    object for a list or object (so readers of the event keep their types).
    The failure is logged and counted under C{where}; it never raises.
    """
    try:
        return redactor.redact_json(value)
    except Exception:
        log.failure("PII redaction failed in {where}; the value is dropped, not stored", where=where)
        redactor.count_failure(where)
        return _failed_value(value)


def redact_text_or_drop(text: str, redactor: Redactor, where: str) -> str:
    """C{redactor.redact_text(text)}, or L{FAILED} (counted under C{where}) if that raises."""
    try:
        return redactor.redact_text(text)
    except Exception:
        log.failure("PII redaction failed in {where}; the text is not shown", where=where)
        redactor.count_failure(where)
        return FAILED


class RedactionFailed(RequestError):
    """
    C{pii.apply_to_upstream} is on and the request body could not be
    redacted: it is not sent (fail closed), the client gets a 500.
    """

    status = 500
    error_type = "api_error"


def redact_request_body(body: bytes, redactor: Redactor) -> bytes:
    """
    The request body to send upstream with C{pii.apply_to_upstream}: a JSON
    body with its strings redacted, re-serialised; the very same bytes when
    nothing was found (so an untouched request stays byte for byte); a body
    that is not JSON (empty, binary) unchanged.

    @raise RedactionFailed: a detector failed (counted under C{upstream}):
        the request must not leave unredacted.
    """
    if not body:
        return body
    try:
        value = json.loads(body)
    except ValueError:
        return body
    try:
        redacted = redactor.redact_json(value)
    except Exception:
        log.failure("PII redaction of a request body failed; the request is not sent")
        redactor.count_failure("upstream")
        raise RedactionFailed("PII redaction of the request failed; it was not sent") from None
    if redacted is value:
        return body
    return json.dumps(redacted, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
