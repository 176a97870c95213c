"""
PII and secret redaction of what the gateway records and logs
(C{session_recording.pii}): detectors implementing L{IDetector}, the
redactor (text and JSON), and where it is applied.  See docs/privacy.md.
"""

from lunaroute.pii.detectors import (
    CreditCardDetector,
    Detection,
    EmailDetector,
    IpAddressDetector,
    PatternDetector,
    PhoneDetector,
    SecretDetector,
    SsnDetector,
    luhn_valid,
)
from lunaroute.pii.redactor import (
    Redactor,
    apply_spans,
    find_spans,
    hkdf_sha256,
    redact_json,
    redactor_from_settings,
    resolve_overlaps,
)

__all__ = [
    "CreditCardDetector",
    "Detection",
    "EmailDetector",
    "IpAddressDetector",
    "PatternDetector",
    "PhoneDetector",
    "Redactor",
    "SecretDetector",
    "SsnDetector",
    "apply_spans",
    "find_spans",
    "hkdf_sha256",
    "luhn_valid",
    "redact_json",
    "redactor_from_settings",
    "resolve_overlaps",
]
