"""
What a request cost, estimated from the tokens the provider reported.

Providers bill per token at per-model rates that change with every release,
so the rates live in data (the shipped C{lunaroute/data/pricing.yaml}, also
reachable as C{conf/pricing.yaml}) that operators can extend, not in code.
Entries are keyed by model patterns so that a new dated snapshot or point
release of a known family is priced without an update; a model nothing
matches has an I{unknown} cost (C{None}), never a silent $0.

The arithmetic follows each provider's usage accounting (see
L{lunaroute.dialects.model.Usage}) and matches what Claude Code prints as
C{total_cost_usd} for the same usage.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from twisted.logger import Logger

from lunaroute.dialects.model import Usage
from lunaroute.errors import ConfigError
from lunaroute.logs import log_observer

log = Logger(observer=log_observer)

__all__ = ["ModelPrice", "PriceTier", "PricingTable", "PRICE_FIELDS", "TIER_KEY"]

PRICE_FIELDS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
# The optional long-context tier of an entry: a mapping with "above" (prompt
# tokens) and the PRICE_FIELDS that apply once a request's prompt is larger.
TIER_KEY = "long_context"
_ENTRY_KEYS = (*PRICE_FIELDS, TIER_KEY)
_TIER_KEYS = ("above", *PRICE_FIELDS)

# Anthropic's published multipliers, used when an entry leaves a cache price
# out: a 5-minute cache write costs 1.25x input, a 1-hour cache write 2x
# input, a cache hit 0.1x input (also OpenAI's cached-input discount on the
# GPT-5 family).
CACHE_WRITE_FACTOR = 1.25
CACHE_WRITE_1H_FACTOR = 2.0
CACHE_READ_FACTOR = 0.1

_REGEX_PREFIX = "re:"
_PER_TOKEN = 1_000_000.0


@dataclass(frozen=True)
class PriceTier:
    """
    The rates (USD per million tokens) for requests whose prompt has more
    than C{above} tokens: Anthropic's long-context pricing, where a request
    above the threshold pays these rates on all of its tokens.
    """

    above: int
    input: float
    output: float
    cache_write: float
    cache_write_1h: float
    cache_read: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "above": self.above,
            "input": self.input,
            "output": self.output,
            "cache_write": self.cache_write,
            "cache_write_1h": self.cache_write_1h,
            "cache_read": self.cache_read,
        }


@dataclass(frozen=True)
class ModelPrice:
    """
    USD per million tokens for the models matching C{pattern}, with every
    cache price resolved (never C{None} once built: C{cache_write_1h} left
    out is 2x input), and an optional long-context tier.
    """

    pattern: str
    input: float
    output: float
    cache_write: float
    cache_read: float
    cache_write_1h: float = -1.0  # < 0: not given, 2x input
    long_context: PriceTier | None = None

    def __post_init__(self) -> None:
        if self.cache_write_1h < 0:
            object.__setattr__(self, "cache_write_1h", self.input * CACHE_WRITE_1H_FACTOR)

    def rates_for(self, prompt_tokens: int) -> ModelPrice | PriceTier:
        """The rates that apply to a request whose prompt has C{prompt_tokens}."""
        tier = self.long_context
        if tier is not None and prompt_tokens > tier.above:
            return tier
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "input": self.input,
            "output": self.output,
            "cache_write": self.cache_write,
            "cache_write_1h": self.cache_write_1h,
            "cache_read": self.cache_read,
            TIER_KEY: self.long_context.to_dict() if self.long_context is not None else None,
        }


@dataclass(frozen=True)
class _Entry:
    """A compiled pattern and its price, with how specific the pattern is."""

    price: ModelPrice
    regex: re.Pattern[str] | None  # None: an exact name
    exact: str | None
    literal_chars: int
    order: int

    @property
    def rank(self) -> tuple[int, int, int, int]:
        # Exact names beat patterns; then more literal characters; then the
        # longer pattern; then the entry defined last (user overrides).
        return (1 if self.exact is not None else 0, self.literal_chars, len(self.price.pattern), self.order)


def _literal_chars_of_glob(pattern: str) -> int:
    count, in_class = 0, False
    for ch in pattern:
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch not in "*?":
            count += 1
    return count


def _literal_chars_of_regex(pattern: str) -> int:
    # A rough measure, good enough to rank a regex against globs: plain and
    # escaped characters count; metacharacters, classes ([...]), repeat
    # counts ({...}) and escapes like \d do not.
    count, i = 0, 0
    in_class = in_braces = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            if not (in_class or in_braces or pattern[i + 1].isalnum()):
                count += 1
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif in_braces:
            in_braces = ch != "}"
        elif ch == "[":
            in_class = True
        elif ch == "{":
            in_braces = True
        elif ch not in ".^$*+?()|":
            count += 1
        i += 1
    return count


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"must be a number (USD per million tokens), got {value!r}", key=where)
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"must be a number (USD per million tokens), got {value!r}", key=where) from None
    if math.isnan(number) or math.isinf(number) or number < 0:
        raise ConfigError(f"must be a finite number >= 0, got {value!r}", key=where)
    return number


def _fields_of(entry: Any, names: tuple[str, ...], where: str, what: str) -> dict[str, Any]:
    """
    The values of C{names} in a mapping (file or config) or in an object with
    those attributes (L{lunaroute.config.ModelPricing}); absent ones are C{None}.
    """
    if isinstance(entry, Mapping):
        unknown = sorted(str(k) for k in entry if k not in names)
        if unknown:
            raise ConfigError(
                f"unknown {what} field {unknown[0]!r} (expected: {', '.join(names)})",
                key=f"{where}.{unknown[0]}",
            )
        return {name: entry.get(name) for name in names}
    if all(hasattr(entry, name) for name in ("input", "output")):
        return {name: getattr(entry, name, None) for name in names}
    raise ConfigError(f"must be a mapping with {', '.join(names)}, got {type(entry).__name__}", key=where)


def _rates(values: Mapping[str, Any], where: str, cache_base: tuple[float, float, float, float] | None) -> tuple[
    float, float, float, float, float
]:
    """
    Input, output, 5-minute write, 1-hour write and read prices from
    C{values}.  A missing cache price follows the multipliers of input, or,
    with C{cache_base} (the base entry's input and cache prices, for a tier),
    the base cache price scaled like input.
    """
    for required in ("input", "output"):
        if values[required] is None:
            raise ConfigError("required (USD per million tokens)", key=f"{where}.{required}")
    input_price = _number(values["input"], f"{where}.input")
    output_price = _number(values["output"], f"{where}.output")
    if cache_base is not None and cache_base[0] > 0:
        scale = input_price / cache_base[0]
        defaults = (cache_base[1] * scale, cache_base[2] * scale, cache_base[3] * scale)
    else:
        defaults = (
            input_price * CACHE_WRITE_FACTOR,
            input_price * CACHE_WRITE_1H_FACTOR,
            input_price * CACHE_READ_FACTOR,
        )
    cache = [
        default if values[name] is None else _number(values[name], f"{where}.{name}")
        for name, default in zip(("cache_write", "cache_write_1h", "cache_read"), defaults, strict=True)
    ]
    return input_price, output_price, cache[0], cache[1], cache[2]


def _tier_from(entry: Any, base: tuple[float, float, float, float], where: str) -> PriceTier:
    values = _fields_of(entry, _TIER_KEYS, where, "long_context")
    above = values["above"]
    if isinstance(above, bool) or not isinstance(above, int) or above < 0:
        raise ConfigError(f"must be a whole number of prompt tokens >= 0, got {above!r}", key=f"{where}.above")
    input_price, output_price, write, write_1h, read = _rates(values, where, base)
    return PriceTier(above, input_price, output_price, write, write_1h, read)


def _price_from(pattern: str, entry: Any, where: str) -> ModelPrice:
    """
    Build a L{ModelPrice} from a mapping (file or config) or from an object
    with the price attributes (L{lunaroute.config.ModelPricing}).
    """
    values = _fields_of(entry, _ENTRY_KEYS, where, "price")
    input_price, output_price, write, write_1h, read = _rates(values, where, None)
    tier = None
    if values[TIER_KEY] is not None:
        tier = _tier_from(values[TIER_KEY], (input_price, write, write_1h, read), f"{where}.{TIER_KEY}")
    return ModelPrice(
        pattern=pattern,
        input=input_price,
        output=output_price,
        cache_write=write,
        cache_read=read,
        cache_write_1h=write_1h,
        long_context=tier,
    )


def _compile(price: ModelPrice, order: int, where: str) -> _Entry:
    pattern = price.pattern
    if pattern.startswith(_REGEX_PREFIX):
        source = pattern[len(_REGEX_PREFIX):]
        try:
            regex = re.compile(source, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"invalid regular expression: {exc}", key=where) from None
        return _Entry(price, regex, None, _literal_chars_of_regex(source), order)
    lowered = pattern.lower()
    if not any(ch in lowered for ch in "*?["):
        return _Entry(price, None, lowered, len(lowered), order)
    regex = re.compile(fnmatch.translate(lowered))
    return _Entry(price, regex, None, _literal_chars_of_glob(lowered), order)


class PricingTable:
    """
    Prices by model pattern.  Build it with L{PricingTable.load}; look up with
    L{price_for}; estimate with L{cost_usd}.  Immutable once built, so it can
    be shared by everything that estimates cost.
    """

    # Lookups come from untrusted model names: remember at most this many,
    # and none longer than any real model name (a 1 MB name is looked up
    # every time rather than kept).
    _CACHE_LIMIT = 4096
    _CACHE_NAME_CHARS = 256

    def __init__(self, prices: Iterable[ModelPrice] = (), *, source: str = "<table>") -> None:
        self._entries: list[_Entry] = []
        self._exact: dict[str, _Entry] = {}
        for order, price in enumerate(prices):
            entry = _compile(price, order, f"{source}: {price.pattern}")
            if entry.exact is not None:
                self._exact[entry.exact] = entry
            else:
                self._entries.append(entry)
        self._cache: dict[str, ModelPrice | None] = {}

    # -- building ------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> PricingTable:
        """
        The shipped table, extended and overridden by the file at C{path}
        (C{statistics.pricing_file}: same-key entries replace the shipped
        ones, new keys are added), then by C{overrides}
        (C{statistics.pricing}: pattern -> mapping or
        L{lunaroute.config.ModelPricing}).

        @raise ConfigError: one line naming the file or key, on an unreadable
            or malformed table.
        """
        merged: dict[str, ModelPrice] = {}
        shipped = importlib.resources.files("lunaroute").joinpath("data", "pricing.yaml")
        try:
            text = shipped.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the shipped pricing table: {exc}") from None
        merged.update(cls._parse(text, "lunaroute/data/pricing.yaml", None))
        if path is not None:
            try:
                with open(path, encoding="utf-8-sig") as handle:
                    text = handle.read()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read pricing file {path}: {exc.strerror or exc}", key="statistics.pricing_file"
                ) from None
            except UnicodeDecodeError:
                raise ConfigError(f"pricing file {path}: not valid UTF-8", key="statistics.pricing_file") from None
            merged.update(cls._parse(text, path, "statistics.pricing_file"))
        for pattern, entry in (overrides or {}).items():
            where = f"statistics.pricing.{pattern}"
            merged[str(pattern)] = _price_from(str(pattern), entry, where)
        return cls(merged.values(), source="statistics.pricing")

    @staticmethod
    def _parse(text: str, shown: str, key: str | None) -> dict[str, ModelPrice]:
        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1}: " if mark is not None else ""
            detail = exc.problem or exc.context or "syntax error"
            raise ConfigError(f"{shown}: {where}invalid YAML: {detail}", key=key) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{shown}: invalid YAML: {exc}", key=key) from None
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{shown}: the top level must map model patterns to prices", key=key)
        prices: dict[str, ModelPrice] = {}
        for pattern, entry in data.items():
            if not isinstance(pattern, str) or not pattern.strip():
                raise ConfigError(f"{shown}: model pattern {pattern!r} must be a non-empty string", key=key)
            try:
                price = _price_from(pattern, entry, pattern)
                _compile(price, 0, pattern)
            except ConfigError as exc:
                raise ConfigError(f"{shown}: {exc}", key=key) from None
            prices[pattern] = price
        return prices

    # -- lookups -------------------------------------------------------

    @property
    def prices(self) -> list[ModelPrice]:
        """Every entry, exact names first, for display."""
        return [e.price for e in self._exact.values()] + [e.price for e in self._entries]

    def price_for(self, model: str | None) -> ModelPrice | None:
        """The most specific price matching C{model}, or C{None} if none does."""
        if not model or not isinstance(model, str):
            return None
        cached = self._cache.get(model, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        price = self._lookup(model.strip().lower())
        if price is None and "/" in model:
            # Routers and clouds prefix the vendor ("anthropic/claude-...").
            price = self._lookup(model.rsplit("/", 1)[1].strip().lower())
        if len(model) > self._CACHE_NAME_CHARS:
            return price
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[model] = price
        return price

    def _lookup(self, name: str) -> ModelPrice | None:
        exact = self._exact.get(name)
        if exact is not None:
            return exact.price
        best: _Entry | None = None
        for entry in self._entries:
            assert entry.regex is not None
            if entry.regex.fullmatch(name) and (best is None or entry.rank > best.rank):
                best = entry
        return best.price if best is not None else None

    def cost_usd(self, usage: Usage, model: str | None, dialect: str) -> float | None:
        """
        The estimated cost of C{usage} in USD, or C{None} when C{model} has
        no price.  Pure.

        Anthropic (C{dialect} C{anthropic}) reports input without the cached
        tokens, so every count is billed at its own rate: cache reads,
        5-minute and 1-hour cache writes each have theirs.  OpenAI
        (C{openai_chat}, C{openai_responses}) includes the cached tokens in
        the input count, so they are taken out and billed at the cached rate.
        A request whose prompt (cached tokens included) is larger than the
        entry's C{long_context} threshold pays that tier's rates on all of
        its tokens.
        """
        price = self.price_for(model)
        if price is None:
            return None
        return cost_for_price(usage, price, dialect)


_MISSING = object()


def cost_for_price(usage: Usage, price: ModelPrice, dialect: str) -> float:
    """Apply C{price} to C{usage} (see L{PricingTable.cost_usd})."""
    input_tokens = max(0, int(usage.input_tokens or 0))
    cache_read = max(0, int(usage.cache_read_tokens or 0))
    creation = max(0, int(usage.cache_creation_tokens or 0))
    one_hour = min(max(0, int(usage.cache_creation_1h_tokens or 0)), creation)
    if dialect.startswith("openai"):
        # OpenAI's prompt_tokens / input_tokens already contain the cached ones.
        prompt = max(input_tokens, cache_read)
        input_tokens = max(0, input_tokens - cache_read)
    else:
        # Anthropic's long-context threshold counts every prompt token,
        # cached or not.
        prompt = input_tokens + cache_read + creation
    rates = price.rates_for(prompt)
    total = (
        input_tokens * rates.input
        + max(0, int(usage.output_tokens or 0)) * rates.output
        + cache_read * rates.cache_read
        + (creation - one_hour) * rates.cache_write
        + one_hour * rates.cache_write_1h
    )
    return total / _PER_TOKEN
