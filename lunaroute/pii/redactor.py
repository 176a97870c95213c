"""
Redaction: what replaces a detected span, and the walk over text and JSON.

The pure parts are plain functions (L{find_spans}, L{resolve_overlaps},
L{apply_spans}, L{redact_json}, L{hkdf_sha256}); L{Redactor} puts them
together with the configured detectors and modes and counts what it did,
for C{/metrics}.

Modes (C{session_recording.pii.redaction_mode}, or per custom pattern):

  - C{mask}: C{[EMAIL]} (a custom pattern's C{placeholder} if it has one);
  - C{remove}: nothing;
  - C{tokenize}: C{[EMAIL:a3f8e9d2]}, the first 8 hex digits of
    HMAC-SHA256 over the value with a key derived by HKDF-SHA256 from
    C{hmac_secret}: the same value always gives the same token (across
    restarts and gateways sharing the secret), so sessions stay analysable,
    and the value cannot be recovered without the secret.  Without a secret
    tokenize masks (the service warns at start-up);
  - C{partial}: the last C{partial_show_chars} characters,
    C{[CREDIT_CARD:…1111]}; a value too short to show that much of (at most
    twice as long) is masked.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lunaroute.pii.detectors import (
    CreditCardDetector,
    Detection,
    EmailDetector,
    IpAddressDetector,
    PatternDetector,
    PhoneDetector,
    SecretDetector,
    SsnDetector,
)

__all__ = [
    "Redactor",
    "apply_spans",
    "find_spans",
    "hkdf_sha256",
    "redact_json",
    "redactor_from_settings",
    "resolve_overlaps",
]

MODES = ("mask", "remove", "tokenize", "partial")
_HKDF_SALT = b"lunaroute-pii-v1"
_HKDF_INFO = b"tokenize"


def hkdf_sha256(secret: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF (RFC 5869) with SHA-256: extract a key from C{secret}, expand it to C{length} bytes."""
    if length > 255 * 32:
        raise ValueError("HKDF-SHA256 cannot produce more than 8160 bytes")
    prk = hmac.new(salt or bytes(32), secret, hashlib.sha256).digest()
    out, block = b"", b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def find_spans(text: str, detectors: Iterable[Any], min_confidence: float = 0.0) -> list[Detection]:
    """Every detection of every detector at or above C{min_confidence}, overlaps resolved."""
    found: list[Detection] = []
    for detector in detectors:
        for span in detector.detect(text):
            if span.confidence >= min_confidence and span.end > span.start:
                found.append(span)
    if len(found) < 2:
        return found
    return resolve_overlaps(found)


def resolve_overlaps(spans: Iterable[Detection]) -> list[Detection]:
    """
    The spans to redact when detections overlap: overlapping detections
    become one span covering all of them (nothing any detector found is
    left in the text), labelled with the winner's kind and confidence: the
    longest, then the most confident, then the earliest.  The result is
    sorted by start and has no overlaps.
    """
    kept: list[Detection] = []
    cluster: list[Detection] = []
    end = -1
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if cluster and span.start >= end:
            kept.append(_merged(cluster, end))
            cluster = []
        cluster.append(span)
        end = max(end, span.end) if len(cluster) > 1 else span.end
    if cluster:
        kept.append(_merged(cluster, end))
    return kept


def _merged(cluster: list[Detection], end: int) -> Detection:
    """One span from C{cluster[0].start} to C{end}, of the winner's kind."""
    if len(cluster) == 1:
        return cluster[0]
    winner = min(cluster, key=lambda s: (-(s.end - s.start), -s.confidence, s.start))
    return winner._replace(start=cluster[0].start, end=end)


def apply_spans(text: str, spans: Sequence[Detection], replace: Callable[[Detection, str], str]) -> str:
    """C{text} with each (sorted, non-overlapping) span replaced by C{replace(span, value)}."""
    parts: list[str] = []
    last = 0
    for span in spans:
        parts.append(text[last : span.start])
        parts.append(replace(span, text[span.start : span.end]))
        last = span.end
    parts.append(text[last:])
    return "".join(parts)


_CONTAINERS = (dict, list)


def redact_json(value: Any, redact_text: Callable[[str], str]) -> Any:
    """
    C{value} (JSON-like data) with C{redact_text} applied to every string
    value at any depth; keys, numbers and structure are kept.  Containers
    where nothing changed are returned as they are (not copied).  A string
    that holds JSON (an OpenAI tool call's C{arguments}) and contains
    something to redact is parsed, walked and serialised again, so it stays
    valid JSON even when a value spans an escape sequence.
    """
    return map_strings(value, lambda text: _redact_string(text, redact_text))


def map_strings(value: Any, replace: Callable[[str], str]) -> Any:
    """
    C{value} (JSON-like: dicts, lists, tuples, strings, scalars) with each
    string replaced by C{replace(string)}, visited in order (dict values,
    then list items, depth first; keys are kept).  Containers are copied
    only where something changed, so a value nothing changes comes back as
    the same object.
    """
    kind = type(value)
    if kind is str:
        new = replace(value)
        return value if new == value else new
    if kind is dict or (kind not in _CONTAINERS and isinstance(value, Mapping)):
        out = None
        for key, item in value.items():
            if type(item) not in _WALKED:
                continue
            changed = map_strings(item, replace)
            if changed is not item:
                if out is None:
                    out = dict(value)
                out[key] = changed
        return value if out is None else out
    if kind is list or kind is tuple:
        items = None
        for index, item in enumerate(value):
            if type(item) not in _WALKED:
                continue
            changed = map_strings(item, replace)
            if changed is not item:
                if items is None:
                    items = list(value)
                items[index] = changed
        return value if items is None else items
    return value


_WALKED = frozenset({str, dict, list, tuple})
_SEPARATOR = "\x00"


def _collect(value: Any, texts: list[str]) -> None:
    """Append the strings of C{value} to C{texts}, in the order L{map_strings} visits them."""

    def keep(text: str) -> str:
        texts.append(text)
        return text

    map_strings(value, keep)


def _redact_string(text: str, redact_text: Callable[[str], str]) -> str:
    new = redact_text(text)
    if new == text:
        return text
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
        try:
            inner = json.loads(text)
        except ValueError:
            return new
        if isinstance(inner, (dict, list)):
            walked = redact_json(inner, redact_text)
            return json.dumps(walked, ensure_ascii=False, separators=(",", ":"))
    return new


class Redactor:
    """
    The configured detectors and modes, thread-safe counters included.

    @param detectors: L{IDetector} providers.
    @param mode: the default redaction mode.
    @param modes: a mode per kind (custom patterns' own modes).
    @param placeholders: a mask placeholder per kind (custom patterns').
    """

    def __init__(
        self,
        detectors: Sequence[Any],
        *,
        mode: str = "mask",
        hmac_secret: str | None = None,
        min_confidence: float = 0.0,
        partial_show_chars: int = 4,
        modes: Mapping[str, str] | None = None,
        placeholders: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in MODES or any(m not in MODES for m in (modes or {}).values()):
            raise ValueError(f"redaction modes are {', '.join(MODES)}")
        self.detectors = tuple(detectors)
        self._joinable = tuple(d for d in self.detectors if getattr(d, "joinable", False))
        self._each = tuple(d for d in self.detectors if not getattr(d, "joinable", False))
        self.mode = mode
        self.min_confidence = min_confidence
        self.partial_show_chars = partial_show_chars
        self.modes = dict(modes or {})
        self.placeholders = dict(placeholders or {})
        self._key = hkdf_sha256(hmac_secret.encode("utf-8"), _HKDF_SALT, _HKDF_INFO) if hmac_secret else None
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._failures: dict[str, int] = {}

    @property
    def tokenizes_without_secret(self) -> bool:
        """Whether some mode is C{tokenize} but there is no secret (so it masks)."""
        return self._key is None and "tokenize" in (self.mode, *self.modes.values())

    # -- text --------------------------------------------------------------

    def spans(self, text: str) -> list[Detection]:
        """The resolved detections of C{text}."""
        return find_spans(text, self.detectors, self.min_confidence)

    def redact_text(self, text: str) -> str:
        """C{text} with every detection replaced according to its mode."""
        if not text:
            return text
        spans = self.spans(text)
        if not spans:
            return text
        self._count(span.kind for span in spans)
        return apply_spans(text, spans, self.replacement)

    def redact_json(self, value: Any) -> Any:
        """
        What L{redact_json} with L{redact_text} gives, faster: the strings
        of C{value} are joined (separated by a NUL, which no built-in
        pattern crosses: their C{joinable} attribute) and each built-in
        detector scans the joined text once, rather than paying its fixed
        cost on each of the hundreds of small strings of a request body.
        Other detectors (custom patterns) run on each string by itself.
        """
        if type(value) is str:
            return _redact_string(value, self.redact_text)
        texts: list[str] = []
        _collect(value, texts)
        if not texts:
            return value
        local: dict[int, list[Detection]] = {}
        if self._joinable:
            joined = _SEPARATOR.join(texts)
            spans = find_spans(joined, self._joinable, self.min_confidence)
            if spans:
                self._split_back(texts, spans, local)
        for detector in self._each:
            # A custom pattern on each string; a plain search first (in C)
            # keeps the hundreds of strings without a match cheap.
            search = getattr(detector, "search", None)
            for index, text in enumerate(texts):
                if not text or (search is not None and not search(text)):
                    continue
                for span in detector.detect(text):
                    if span.confidence >= self.min_confidence and span.end > span.start:
                        local.setdefault(index, []).append(span)
        if not local:
            return value
        new_texts = list(texts)
        for index, spans in local.items():
            if len(spans) > 1:
                spans = resolve_overlaps(spans)
            self._count(span.kind for span in spans)
            new_texts[index] = self._apply(texts[index], spans)
        replacements = iter(new_texts)
        return map_strings(value, lambda _: next(replacements))

    @staticmethod
    def _split_back(texts: list[str], spans: list[Detection], local: dict[int, list[Detection]]) -> None:
        """Add to C{local} (by string index) the spans of the joined text, in each string's offsets."""
        starts: list[int] = []
        offset = 0
        for text in texts:
            starts.append(offset)
            offset += len(text) + len(_SEPARATOR)
        for span in spans:
            index = bisect.bisect_right(starts, span.start) - 1
            while index < len(texts) and starts[index] < span.end:
                base = starts[index]
                start = max(span.start, base) - base
                end = min(span.end, base + len(texts[index])) - base
                if end > start:
                    local.setdefault(index, []).append(span._replace(start=start, end=end))
                index += 1

    def _apply(self, text: str, spans: list[Detection]) -> str:
        """C{text} with C{spans} replaced; a string holding JSON is walked instead."""
        stripped = text.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            try:
                inner = json.loads(text)
            except ValueError:
                pass
            else:
                if isinstance(inner, (dict, list)):
                    walked = redact_json(inner, self._redact_uncounted)
                    return json.dumps(walked, ensure_ascii=False, separators=(",", ":"))
        return apply_spans(text, spans, self.replacement)

    def _redact_uncounted(self, text: str) -> str:
        # Inside a JSON string already counted in the joined text.
        spans = self.spans(text) if text else []
        return apply_spans(text, spans, self.replacement) if spans else text

    def replacement(self, span: Detection, value: str) -> str:
        """What replaces C{value}, a detected C{span.kind}."""
        mode = self.modes.get(span.kind, self.mode)
        if mode == "remove":
            return ""
        if mode == "tokenize" and self._key is not None:
            digest = hmac.new(self._key, f"{span.kind}\x00{value}".encode("utf-8", "surrogatepass"), hashlib.sha256)
            return f"[{span.kind}:{digest.hexdigest()[:8]}]"
        if mode == "partial":
            shown = self.partial_show_chars
            if shown > 0 and len(value) > 2 * shown:
                return f"[{span.kind}:…{value[-shown:]}]"
        return self.placeholders.get(span.kind) or f"[{span.kind}]"

    # -- counters ----------------------------------------------------------

    def _count(self, kinds: Iterable[str]) -> None:
        with self._lock:
            for kind in kinds:
                self._counts[kind] = self._counts.get(kind, 0) + 1

    def count_failure(self, where: str) -> None:
        """Count a redaction that failed (the text was dropped, not stored)."""
        with self._lock:
            self._failures[where] = self._failures.get(where, 0) + 1

    def counts(self) -> dict[str, int]:
        """Redactions so far, by kind."""
        with self._lock:
            return dict(self._counts)

    def failures(self) -> dict[str, int]:
        """Failed redactions so far, by where they happened (C{record}, C{request_log}, C{upstream})."""
        with self._lock:
            return dict(self._failures)


def _custom_kind(name: str, placeholder: str | None) -> str:
    """A custom pattern's kind: its placeholder's word (C{[API_KEY]}), else its name in capitals."""
    if placeholder:
        inner = placeholder.strip()
        if inner.startswith("[") and inner.endswith("]") and len(inner) > 2:
            return inner[1:-1]
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def redactor_from_settings(pii: Any) -> Redactor | None:
    """
    The redactor C{session_recording.pii} describes (a L{PiiSettings}), or
    C{None} when PII redaction is off.
    """
    if not pii.enabled:
        return None
    detectors: list[Any] = []
    if pii.detect_email:
        detectors.append(EmailDetector())
    if pii.detect_phone:
        detectors.append(PhoneDetector())
    if pii.detect_ssn:
        detectors.append(SsnDetector())
    if pii.detect_credit_card:
        detectors.append(CreditCardDetector())
    if pii.detect_ip_address:
        detectors.append(IpAddressDetector())
    if getattr(pii, "detect_secrets", True):
        detectors.append(SecretDetector())
    modes: dict[str, str] = {}
    placeholders: dict[str, str] = {}
    for custom in pii.custom_patterns:
        kind = _custom_kind(custom.name, custom.placeholder)
        detectors.append(PatternDetector(custom.name, custom.pattern, kind, custom.confidence))
        if custom.redaction_mode is not None:
            modes[kind] = custom.redaction_mode
        if custom.placeholder:
            placeholders[kind] = custom.placeholder
    return Redactor(
        detectors,
        mode=pii.redaction_mode,
        hmac_secret=pii.hmac_secret,
        min_confidence=pii.min_confidence,
        partial_show_chars=getattr(pii, "partial_show_chars", 4),
        modes=modes,
        placeholders=placeholders,
    )
