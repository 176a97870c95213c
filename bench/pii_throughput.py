"""
How fast PII redaction (lunaroute.pii) gets through typical Claude Code text,
on one core, with every detector on.

    python bench/pii_throughput.py [--quick] [--json]

The text is a real Claude Code request body
(C{tests/fixtures/clients/claude_code_messages_request.json}: system
prompt, tool definitions, conversation; about 85 KB, 68 KB of it strings).
Measured on this thread, MB/s of string content (UTF-8) per second of
this process's CPU time (so a busy machine slows the figures less than
wall time would; they still drop when the cores are shared):

  - C{redact_json}: L{Redactor.redact_json} of the parsed body, what the
    recorder does to each request body (all strings joined, one scan per
    built-in detector; the custom patterns on each string); and the same
    with the built-in detectors only;
  - C{per_string}: the plain walk (L{lunaroute.pii.redact_json} with
    L{Redactor.redact_text}), each string scanned on its own;
  - C{planted}: C{redact_json} of the same body with an email, a phone
    number, a card, an IP address and a key planted every ~2 KB (the
    replacement path, tokenize mode);
  - one line per detector, alone, on the joined text;
  - C{events}: L{exchange_events} of a whole exchange carrying the body,
    with and without a redactor (the added cost per exchange on the
    recorder's thread, in ms).

The target (issue 17) is 50 MB/s for C{redact_json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from lunaroute.pii import (  # noqa: E402
    CreditCardDetector,
    EmailDetector,
    IpAddressDetector,
    PatternDetector,
    PhoneDetector,
    Redactor,
    SecretDetector,
    SsnDetector,
    redact_json,
)
from lunaroute.pii import detectors as detectors_module  # noqa: E402
from lunaroute.sessions.events import exchange_events  # noqa: E402
from lunaroute.testing.exchanges import make_exchange  # noqa: E402

FIXTURE = os.path.join(REPO, "tests", "fixtures", "clients", "claude_code_messages_request.json")
TARGET_MB_S = 50.0
PLANT = (
    " mail jane.roe@example.org, call +44 20 7946 0958, card 4242 4242 4242 4242, "
    "host 203.0.113.7, key sk-ant-api03-Qm7vXr2Lp9Tz4Wk8Hn3Bc6Df1Gj5Ks0Yd "
)


def detectors() -> list[Any]:
    """Every built-in detector, and the guide's two custom patterns."""
    return [
        EmailDetector(),
        PhoneDetector(),
        SsnDetector(),
        CreditCardDetector(),
        IpAddressDetector(),
        SecretDetector(),
        PatternDetector("api_key", r"sk-[a-zA-Z0-9]{32,}", "API_KEY", 0.95),
        PatternDetector("aws_secret", r"AKIA[0-9A-Z]{16}", "AWS_KEY", 0.95),
    ]


def strings(value: Any) -> list[str]:
    out: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for inner in item.values():
                walk(inner)
        elif isinstance(item, list):
            for inner in item:
                walk(inner)

    walk(value)
    return out


def plant(value: Any, every: int = 2000) -> Any:
    """A copy of C{value} with L{PLANT} inserted into its strings about every C{every} characters."""
    planted = copy.deepcopy(value)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            if len(item) < every:
                return item
            parts = [item[i : i + every] for i in range(0, len(item), every)]
            return PLANT.join(parts)
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    return walk(planted)


def rate(fn: Callable[[], Any], size: int, seconds: float) -> tuple[float, int]:
    """
    MB/s of C{fn} processing C{size} bytes, run for about C{seconds} of
    this process's CPU time (not wall time: on a shared machine the wall
    clock also counts the time other processes had the core).
    """
    fn()  # warm up
    runs = 0
    start = time.process_time()
    while True:
        fn()
        runs += 1
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return size * runs / elapsed / 1e6, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (0.3 s each)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 2.0

    with open(FIXTURE, encoding="utf-8") as f:
        body = json.load(f)
    texts = strings(body)
    size = sum(len(t.encode("utf-8")) for t in texts)
    joined = "\x00".join(texts)
    planted = plant(body)
    planted_size = sum(len(t.encode("utf-8")) for t in strings(planted))
    mask = Redactor(detectors())
    tokenize = Redactor(detectors(), mode="tokenize", hmac_secret="bench-secret")

    figures: dict[str, Any] = {"fixture": os.path.relpath(FIXTURE, REPO), "string_bytes": size, "strings": len(texts)}
    figures["redact_json_mb_s"], _ = rate(lambda: mask.redact_json(body), size, seconds)
    builtin = Redactor(detectors()[:6])
    figures["redact_json_builtin_mb_s"], _ = rate(lambda: builtin.redact_json(body), size, seconds)
    figures["per_string_mb_s"], _ = rate(lambda: redact_json(body, mask.redact_text), size, seconds)
    figures["planted_mb_s"], _ = rate(lambda: tokenize.redact_json(planted), planted_size, seconds)
    figures["planted_redactions_per_body"] = sum(
        1 for t in strings(tokenize.redact_json(planted)) for _ in range(t.count("[EMAIL:"))
    )
    per_detector: dict[str, float] = {}

    def alone(detector: Any) -> None:
        # Forget the digit runs the number detectors share, so each pays its scan.
        detectors_module.digit_windows("")
        detector.detect(joined)

    for detector in detectors():
        per_detector[detector.name], _ = rate(lambda d=detector: alone(d), size, seconds / 2)
    figures["detectors_mb_s"] = per_detector

    exchange = make_exchange("bench", 1_700_000_000.0)
    exchange.request_json = body
    exchange.request_body = json.dumps(body).encode()
    plain_rate, plain_runs = rate(lambda: exchange_events(exchange), size, seconds)
    redacted_rate, _ = rate(lambda: exchange_events(exchange, redactor=mask), size, seconds)
    figures["events_ms"] = round(size / plain_rate / 1e3, 3)
    figures["events_redacted_ms"] = round(size / redacted_rate / 1e3, 3)
    figures["target_mb_s"] = TARGET_MB_S
    figures["target_met"] = figures["redact_json_mb_s"] >= TARGET_MB_S

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"fixture {figures['fixture']}: {len(texts)} strings, {size / 1e3:.1f} kB of text")
    print(f"  redact_json (recorder path)   {figures['redact_json_mb_s']:7.1f} MB/s  (target {TARGET_MB_S:g})")
    print(f"  redact_json, built-ins only   {figures['redact_json_builtin_mb_s']:7.1f} MB/s")
    print(f"  per_string (plain walk)       {figures['per_string_mb_s']:7.1f} MB/s")
    print(f"  planted, tokenize             {figures['planted_mb_s']:7.1f} MB/s "
          f"({figures['planted_redactions_per_body']} emails per body)")
    for name, value in per_detector.items():
        print(f"    {name:<26}  {value:7.1f} MB/s")
    print(f"  exchange_events: {figures['events_ms']:.2f} ms without, "
          f"{figures['events_redacted_ms']:.2f} ms with redaction per exchange")


if __name__ == "__main__":
    main()
