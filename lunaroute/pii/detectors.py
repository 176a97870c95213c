"""
The built-in PII and secret detectors, each an L{IDetector}: pure functions
of a string that return the spans to redact.

Speed matters: every recorded request body (a Claude Code request resends
the whole conversation, tens to hundreds of kilobytes) goes through all of
them on the recorder's thread.  Each detector therefore starts with a cheap
test that rules most text out (C{"@" in text}, C{str.find} of a literal
prefix, a regular expression that starts with a literal or a digit, which
Python's C{re} scans for in C), and only then runs its full pattern and
its validity rules on the few candidates.

False positives are kept down by rules, documented on each detector: an
IPv4-shaped number after C{v}/C{version} is a version, a card number must
pass the Luhn check and start like a real card, an SSN must be in a range
the SSA issues, a phone number needs a C{+} or the separators people write.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterable
from typing import NamedTuple

from zope.interface import implementer

from lunaroute.interfaces import IDetector

__all__ = [
    "CreditCardDetector",
    "Detection",
    "EmailDetector",
    "IpAddressDetector",
    "PatternDetector",
    "PhoneDetector",
    "SecretDetector",
    "SsnDetector",
    "luhn_valid",
]


class Detection(NamedTuple):
    """One span of C{text} to redact: C{text[start:end]} is a C{kind}."""

    start: int
    end: int
    kind: str
    confidence: float


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


# --------------------------------------------------------------------------
# Email


# The domain after the "@": labels of letters, digits and hyphens, a
# top-level domain of letters.
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.([A-Za-z]{2,24})\b")
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
# "icon@2x.png" is a file name, not an address.
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "ts", "css", "json", "md"})


@implementer(IDetector)
class EmailDetector:
    """
    Email addresses: C{local@domain.tld}.  Found from each C{@} outwards, so
    text without one costs a single C{in} test.  Not an address: a
    decorator or scope (C{@property}, C{@types/node}: nothing before the
    C{@}) or a file name (C{icon@2x.png}).
    """

    name = "email"
    kinds = ("EMAIL",)
    # Never matches across a NUL: may scan many strings joined by one.
    joinable = True

    def detect(self, text: str) -> list[Detection]:
        out: list[Detection] = []
        at = text.find("@")
        while at != -1:
            left = at
            while left > 0 and at - left < 64 and text[left - 1] in _LOCAL_CHARS:
                left -= 1
            while left < at and text[left] in ".-+":
                left += 1
            found = _DOMAIN.match(text, at + 1) if left < at else None
            if found is not None and found.group(1).lower() not in _FILE_SUFFIXES:
                out.append(Detection(left, found.end(), "EMAIL", 0.95))
                at = text.find("@", found.end())
            else:
                at = text.find("@", at + 1)
        return out


# --------------------------------------------------------------------------
# Numbers: one scan shared by the phone, SSN, card and IPv4 detectors


# Runs of at least 7 digits, spaces, dots, hyphens and parentheses, from a
# digit to a digit: every phone number, SSN, card number and IPv4 address
# is inside one.  Python's re scans for the leading digit in C, so finding
# the (few) runs is much cheaper than running each full pattern over the text.
_DIGIT_RUN = re.compile(r"\d[\d .()-]{5,}\d")
_windows = threading.local()


def digit_windows(text: str) -> list[tuple[int, int]]:
    """
    Where in C{text} a number of interest can be: C{(start, end)} of each
    digit run, widened by one character to the left for a C{+} or C{(}.
    The last answer is kept per thread, so the four number detectors
    running over the same string scan it once.
    """
    if getattr(_windows, "text", None) is text:
        cached: list[tuple[int, int]] = _windows.spans
        return cached
    spans = []
    for found in _DIGIT_RUN.finditer(text):
        start = found.start()
        if start > 0 and text[start - 1] in "+(":
            start -= 1
        spans.append((start, found.end()))
    _windows.text, _windows.spans = text, spans
    return spans


def _matches(pattern: re.Pattern[str], text: str) -> Iterable[re.Match[str]]:
    """The matches of C{pattern} inside the digit windows of C{text}."""
    for start, end in digit_windows(text):
        yield from pattern.finditer(text, start, end)


# --------------------------------------------------------------------------
# Phone numbers


# International: "+" and a country code, then groups (E.164: 8 to 15 digits).
_PHONE_INTL = re.compile(r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,6}")
# North American style: 3-3-4 with the separators people write.
_PHONE_NANP = re.compile(r"(?:\(\d{3}\) ?|\d{3}([-. ]))\d{3}(?(1)\1|[-. ])\d{4}")


@implementer(IDetector)
class PhoneDetector:
    """
    Phone numbers in international form (C{+44 20 7946 0958},
    C{+1-555-123-4567}, C{+33 1 23 45 67 89}: a C{+}, a country code, 8 to
    15 digits in all) and in the North American form with separators
    (C{(555) 123-4567}, C{555-123-4567}, C{555.123.4567}).

    Not phone numbers, by rule: bare digit runs (ids, timestamps such as
    C{1700000000}), anything glued to a letter, digit, C{_}, C{-} or C{.}
    (hex ids, UUID parts, C{v1.555.123.4567}), dates (C{2024-01-15}: not 3-3-4).
    """

    name = "phone"
    kinds = ("PHONE",)
    # Never matches across a NUL: may scan many strings joined by one.
    joinable = True

    def detect(self, text: str) -> list[Detection]:
        out: list[Detection] = []
        if "+" in text:
            for found in _matches(_PHONE_INTL, text):
                start, end = found.span()
                # Too many digits (the number runs into another one): the
                # longest prefix of whole groups that is a phone number.
                ends = [g.end() for g in _DIGITS.finditer(text, start, end)]
                while ends:
                    end = ends.pop()
                    digits = sum(c.isdigit() for c in text[start:end])
                    if digits <= 15:
                        if digits >= 8 and _free(text, start, end, "+"):
                            out.append(Detection(start, end, "PHONE", 0.85))
                        break
        for found in _matches(_PHONE_NANP, text):
            start, end = found.span()
            if _free(text, start, end, ".-+/"):
                out.append(Detection(start, end, "PHONE", 0.75))
        return out


def _free(text: str, start: int, end: int, glue: str) -> bool:
    """Whether C{text[start:end]} stands alone: not inside a word, an id or a number."""
    if start > 0:
        before = text[start - 1]
        if _word(before) or before in glue:
            return False
    if end < len(text):
        after = text[end]
        if _word(after) or after in "-_":
            return False
        if after == "." and end + 1 < len(text) and text[end + 1].isdigit():
            return False
    return True


# --------------------------------------------------------------------------
# US social security numbers


_SSN = re.compile(r"\d{3}([- ])\d{2}\1\d{4}")


@implementer(IDetector)
class SsnDetector:
    """
    US social security numbers written C{123-45-6789} (or with spaces), in a
    range the SSA issues: the area is not 000, 666 or 900-999, the group not
    00, the serial not 0000.  Nine bare digits are not taken (too many ids
    look like that).
    """

    name = "ssn"
    kinds = ("SSN",)
    # Never matches across a NUL: may scan many strings joined by one.
    joinable = True

    def detect(self, text: str) -> list[Detection]:
        out: list[Detection] = []
        for found in _matches(_SSN, text):
            start, end = found.span()
            value = found.group(0)
            area, group, serial = value[:3], value[4:6], value[7:]
            if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
                continue
            if _free(text, start, end, ".-+/"):
                out.append(Detection(start, end, "SSN", 0.9))
        return out


# --------------------------------------------------------------------------
# Credit cards


# Digit groups joined by single spaces or hyphens, and each group.
_CARD_RUN = re.compile(r"\d+(?:[ -]\d+)*")
_DIGITS = re.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (what card numbers end with)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if index % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def _card_issuer(digits: str) -> bool:
    """Whether the number starts like a card of a known network, at a length it issues."""
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # American Express
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return 16 <= n <= 19  # Discover
    if 300 <= int(digits[:3]) <= 305 or two in (36, 38):
        return 14 <= n <= 19  # Diners Club
    if 3528 <= four <= 3589:
        return 16 <= n <= 19  # JCB
    if two == 62:
        return 16 <= n <= 19  # UnionPay
    if two == 50 or 56 <= two <= 69:
        return 13 <= n <= 19  # Maestro
    return False


@implementer(IDetector)
class CreditCardDetector:
    """
    Payment card numbers: 13 to 19 digits, optionally grouped with spaces or
    hyphens, that pass the Luhn check and start like a card of a known
    network (Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay,
    Maestro) at a length it issues.  A Luhn-valid id or millisecond
    timestamp (C{1700000000000}) does not start like a card.
    """

    name = "credit_card"
    kinds = ("CREDIT_CARD",)
    # Never matches across a NUL: may scan many strings joined by one.
    joinable = True

    def detect(self, text: str) -> list[Detection]:
        out: list[Detection] = []
        for found in _matches(_CARD_RUN, text):
            # A run of digit groups ("+1 415 555 0199 4111 1111 1111 1111",
            # two cards in a row): every stretch of whole groups is a
            # candidate, the longest valid one first, so a card next to
            # other numbers is still found.
            groups = [(g.start(), g.end()) for g in _DIGITS.finditer(text, found.start(), found.end())]
            first = 0
            while first < len(groups):
                for last in range(min(len(groups), first + 19) - 1, first - 1, -1):
                    start, end = groups[first][0], groups[last][1]
                    digits = text[start:end].replace(" ", "").replace("-", "")
                    if not 13 <= len(digits) <= 19 or not _card_issuer(digits) or not luhn_valid(digits):
                        continue
                    if _free(text, start, end, ".-+/"):
                        out.append(Detection(start, end, "CREDIT_CARD", 0.95))
                        first = last
                        break
                first += 1
        return out


# --------------------------------------------------------------------------
# IP addresses


_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
# Words after which a dotted number is a version: "version 1.2.3.4",
# "ver. 1.2.3.4", "release: 10.0.0.1", "build=1.2.3.4".
_VERSION_BEFORE = re.compile(r"(?<![A-Za-z])(?:version|ver|release|build|v)[ .:=]{0,3}$", re.I)
# Requirement operators: "pkg==1.2.3.4", "^1.2.3.4", "pkg@1.2.3.4".
_VERSION_MARKS = ("==", "~=", ">=", "<=", "^", "~", "@")
# IPv6 needs two colons with at most four hex digits between them.
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")


def _octets_ok(value: str) -> bool:
    for part in value.split("."):
        if len(part) > 1 and part[0] == "0":
            return False  # "01.02.03.04" is not how addresses are written
        if int(part) > 255:
            return False
    return True


@implementer(IDetector)
class IpAddressDetector:
    """
    IPv4 (four octets of at most 255, no leading zeros) and IPv6 addresses
    (checked with L{ipaddress}).  Loopback, private and other special
    addresses get a lower confidence (0.6) than public ones (0.9), so
    C{min_confidence} can keep C{127.0.0.1} readable.

    The version heuristic: a dotted quad is a version number, not an
    address, when it is glued to a letter or digit (C{v1.2.3.4},
    C{1.2.3.4.5}), follows the word C{version}, C{ver}, C{release} or
    C{build} (any case, then up to three of space, C{.}, C{:}, C{=}), or
    follows a requirement operator (C{==}, C{~=}, C{>=}, C{<=}, C{^},
    C{~}, C{@}).  IPv6: a run of hex digits, colons and dots that stands
    alone (not glued to a letter: C{std::vector}, C{Vec::new}) and parses.
    """

    name = "ip_address"
    kinds = ("IP_ADDRESS",)
    # Never matches across a NUL: may scan many strings joined by one.
    joinable = True

    def detect(self, text: str) -> list[Detection]:
        out: list[Detection] = []
        if "." in text:
            for found in _matches(_IPV4, text):
                start, end = found.span()
                if not _free(text, start, end, "."):
                    continue
                value = found.group(0)
                if not _octets_ok(value) or self._is_version(text, start):
                    continue
                out.append(Detection(start, end, "IP_ADDRESS", _ip_confidence(value)))
        if "::" in text or text.count(":") >= 7:
            out.extend(self._ipv6(text))
        return out

    @staticmethod
    def _is_version(text: str, start: int) -> bool:
        before = text[max(0, start - 12) : start]
        return before.endswith(_VERSION_MARKS) or _VERSION_BEFORE.search(before) is not None

    @staticmethod
    def _ipv6(text: str) -> Iterable[Detection]:
        end = 0
        for hint in _IPV6_HINT.finditer(text):
            if hint.start() < end:
                continue
            start = hint.start()
            while start > 0 and text[start - 1] in _IPV6_CHARS:
                start -= 1
            end = hint.end()
            while end < len(text) and text[end] in _IPV6_CHARS:
                end += 1
            value = text[start:end]
            # A sentence's full stop or a "host:" label is not part of it.
            while value.endswith(".") or (value.endswith(":") and not value.endswith("::")):
                value = value[:-1]
            stop = start + len(value)
            if not any(c.isalnum() for c in value):
                continue
            if (start > 0 and _word(text[start - 1])) or (stop < len(text) and (_word(text[stop]) or text[stop] == ":")):
                continue
            try:
                address = ipaddress.IPv6Address(value)
            except ValueError:
                continue
            yield Detection(start, stop, "IP_ADDRESS", 0.9 if address.is_global else 0.6)


def _ip_confidence(value: str) -> float:
    try:
        return 0.9 if ipaddress.IPv4Address(value).is_global else 0.6
    except ValueError:
        return 0.6


# --------------------------------------------------------------------------
# Secrets by shape


# (a literal the text must contain, the token's pattern starting with it,
# the kind).  Keys must stand alone: "task-..." is not an "sk-" key.
_SECRET_SHAPES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    # Anthropic keys after their own prefix; OpenAI's (legacy 48 characters,
    # project keys longer) at least 32, so SSH's "sk-ssh-ed25519-cert-v01"
    # and other sk- names are not taken.
    ("sk-", re.compile(r"sk-(?:ant-[A-Za-z0-9_-]{20,}|(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,})"), "API_KEY"),
    ("AKIA", re.compile(r"AKIA[0-9A-Z]{16}(?![A-Za-z0-9])"), "AWS_KEY"),
    ("ASIA", re.compile(r"ASIA[0-9A-Z]{16}(?![A-Za-z0-9])"), "AWS_KEY"),
    ("gh", re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"), "GITHUB_TOKEN"),
    ("github_pat_", re.compile(r"github_pat_[A-Za-z0-9_]{22,}"), "GITHUB_TOKEN"),
    (
        "-----BEGIN ",
        # To its END line, or (cut off) as far as the key material goes.
        re.compile(
            r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
            r"(?:[^\x00]*?-----END \1-----|[A-Za-z0-9+/=\s\\:,-]*)",
        ),
        "PRIVATE_KEY",
    ),
)


@implementer(IDetector)
class SecretDetector:
    """
    Credentials by their shape: Anthropic (C{sk-ant-...}) and OpenAI
    (C{sk-...}, C{sk-proj-...}) API keys, AWS access key ids (C{AKIA...},
    C{ASIA...}), GitHub tokens (C{ghp_}, C{gho_}, C{ghu_}, C{ghs_},
    C{ghr_}, C{github_pat_}) and PEM private key blocks.  An C{sk-} token
    must hold a digit and stand alone (C{task-...} is not a key), and an
    OpenAI one be at least 32 characters long, so kebab-case names and
    SSH's C{sk-ssh-ed25519-cert-v01} are not taken for keys.
    """

    name = "secrets"
    kinds = ("API_KEY", "AWS_KEY", "GITHUB_TOKEN", "PRIVATE_KEY")
    # Never matches across a NUL: may scan many strings joined by one.
    joinable = True

    def detect(self, text: str) -> list[Detection]:
        out: list[Detection] = []
        for prefix, pattern, kind in _SECRET_SHAPES:
            if prefix not in text:
                continue
            # Each pattern starts with its literal prefix, which re finds in C.
            for found in pattern.finditer(text):
                at, end = found.span()
                if at > 0 and (_word(text[at - 1]) or text[at - 1] == "-"):
                    continue
                if prefix == "sk-" and not any(c.isdigit() for c in text[at + 3 : end]):
                    continue
                confidence = 0.99 if prefix != "sk-" or text.startswith("sk-ant-", at) else 0.9
                out.append(Detection(at, end, kind, confidence))
        return out


# --------------------------------------------------------------------------
# Custom patterns from the configuration


@implementer(IDetector)
class PatternDetector:
    """
    A user's regular expression (C{session_recording.pii.custom_patterns}):
    every non-empty match is a C{kind} with the pattern's confidence.  It is
    run on each string by itself (C{joinable} false), so C{^}, C{$} and
    C{\\A} keep their meaning and a match never spans two JSON values.
    """

    joinable = False

    def __init__(self, name: str, pattern: str, kind: str, confidence: float = 1.0) -> None:
        self.name = name
        self.kind = kind
        self.kinds = (kind,)
        self.confidence = confidence
        self._pattern = re.compile(pattern)

    def search(self, text: str) -> bool:
        """Whether C{text} may hold a match: one C-level search, cheaper than L{detect}."""
        return self._pattern.search(text) is not None

    def detect(self, text: str) -> list[Detection]:
        return [
            Detection(found.start(), found.end(), self.kind, self.confidence)
            for found in self._pattern.finditer(text)
            if found.end() > found.start()
        ]


# --------------------------------------------------------------------------
# Custom patterns that could backtrack catastrophically

_REPEAT = re.compile(r"\*|\+|\{(\d*)(,?)(\d*)\}")


def _quantifier(pattern: str, at: int) -> tuple[int, bool, bool]:
    """
    The quantifier at C{pattern[at]}, if any: C{(length, repeats,
    unbounded)}; C{repeats} when it allows more than one repetition.
    """
    found = _REPEAT.match(pattern, at)
    if found is None:
        return (1 if pattern.startswith("?", at) else 0), False, False
    length = found.end() - at
    if found.group(0) in ("*", "+"):
        repeats = unbounded = True
    else:
        low, comma, high = found.groups()
        if not low and not comma:
            return 0, False, False  # "{}" is a literal
        unbounded = bool(comma) and not high
        repeats = unbounded or int(high or low or "0") > 1
    if pattern.startswith(("?", "+"), at + length):
        length += 1  # lazy or possessive
    return length, repeats, unbounded


def _first_literal(branch: str) -> str | None:
    """The literal character C{branch} starts with, or C{None} when it starts with a class, escape or group."""
    if not branch or branch[0] in "\\[(.^$":
        return None
    return branch[0]


def backtracking_risk(pattern: str) -> str | None:
    """
    Why C{pattern} (a custom PII pattern) may backtrack catastrophically
    (exponential time on a short hostile string, which would stall the
    recorder, or the proxy with C{apply_to_upstream}), or C{None}.

    Python's C{re} cannot be interrupted, so such patterns are refused at
    start-up.  Flagged: a repeated group that contains an unbounded
    repetition (C{(a+)+}, C{(\\w+\\s?)*}, C{(.*a){20}}), and a repeated
    group of alternatives that can start alike (C{(a|a)*},
    C{(\\w|\\d)+}, C{(ab|ac)+}).  A conservative syntactic check: it can
    refuse a pattern that would have been fast (rewrite it, e.g. with a
    character class), and cannot prove a pattern fast.
    """
    # Per open group: whether it holds an unbounded repetition, and the
    # start of each of its alternatives.
    stack: list[tuple[bool, list[int]]] = [(False, [0])]
    at = 0
    size = len(pattern)
    while at < size:
        char = pattern[at]
        if char == "\\":
            at += 2
        elif char == "[":
            at += 1
            if pattern.startswith("^", at):
                at += 1
            if pattern.startswith("]", at):
                at += 1
            while at < size and pattern[at] != "]":
                at += 2 if pattern[at] == "\\" else 1
            at += 1
        elif char == "(":
            at += 1
            if pattern.startswith("?", at):
                at += 1
                if pattern.startswith("#", at):
                    at = pattern.find(")", at) + 1 or size
                    continue
                if pattern.startswith(("P<", "<="), at) or pattern.startswith("<!", at):
                    at = pattern.find(">", at) + 1 if pattern.startswith("P<", at) else at + 2
                elif pattern.startswith("P=", at):
                    at = pattern.find(")", at) + 1 or size
                    continue
                else:
                    while at < size and pattern[at] not in ":=!)":
                        at += 1
                    if pattern.startswith(")", at):
                        at += 1  # inline flags, "(?i)"
                        continue
                    at += 1
            stack.append((False, [at]))
            continue
        elif char == "|":
            stack[-1][1].append(at + 1)
            at += 1
            continue
        elif char == ")" and len(stack) > 1:
            inner, starts = stack.pop()
            branches = [pattern[start : end - 1] for start, end in zip(starts, [*starts[1:], at + 1], strict=True)]
            at += 1
            length, repeats, unbounded = _quantifier(pattern, at)
            at += length
            if repeats and inner:
                return "a repeated group holds an unbounded repetition (like (a+)+)"
            if repeats and len(branches) > 1:
                firsts = [_first_literal(branch) for branch in branches]
                if firsts.count(None) > 1 or len({f for f in firsts if f is not None}) < len([f for f in firsts if f]):
                    return "a repeated group of alternatives that can match alike (like (a|a)*)"
            if inner or unbounded:
                stack[-1] = (True, stack[-1][1])
            continue
        else:
            at += 1
        length, _repeats, unbounded = _quantifier(pattern, at)
        at += length
        if unbounded:
            stack[-1] = (True, stack[-1][1])
    return None
