"""
Tests for the pricing table (lunaroute.stats.pricing): the shipped prices,
pattern matching, overrides, and the cost arithmetic, checked against
hand-computed values for the captured streams in tests/fixtures/streams.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lunaroute.config import settings_from_mapping
from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.model import ResponseSummary, Usage
from lunaroute.errors import ConfigError
from lunaroute.stats.pricing import ModelPrice, PricingTable

STREAMS = Path(__file__).parent / "fixtures" / "streams"
REPO = Path(__file__).parent.parent


def captured(name: str, dialect: str) -> ResponseSummary:
    """The summary the proxy's capture builds from a fixture body."""
    content_type = "text/event-stream" if name.endswith(".sse") else "application/json"
    capture = ResponseCapture(dialect, streaming=name.endswith(".sse"), content_type=content_type)
    capture.feed((STREAMS / name).read_bytes())
    return capture.finish()


@pytest.fixture(scope="module")
def table() -> PricingTable:
    return PricingTable.load()


# -- cost of the captured streams, computed by hand ------------------------


def test_anthropic_stream_cost(table: PricingTable) -> None:
    """
    Anthropic input excludes cache tokens, so each count is billed at its own
    rate: claude-sonnet-4-5 at $3 in, $15 out, $0.30 cache read, $3.75 cache
    write per million; 1247*3 + 187*15 + 8192*0.30 + 512*3.75 = 10923.6 µ$.
    """
    summary = captured("anthropic_thinking_tools.sse", "anthropic")
    assert summary.model == "claude-sonnet-4-5-20250929"
    cost = table.cost_usd(summary.usage, summary.model, "anthropic")
    assert cost == pytest.approx(0.0109236)


def test_openai_chat_stream_cost(table: PricingTable) -> None:
    """
    OpenAI input includes the cached tokens: gpt-4.1 at $2 in, $0.50 cached,
    $8 out; (312-256)*2 + 256*0.5 + 58*8 = 704 µ$.
    """
    summary = captured("openai_chat_tools.sse", "openai_chat")
    assert summary.model == "gpt-4.1-2025-04-14"
    assert table.cost_usd(summary.usage, summary.model, "openai_chat") == pytest.approx(0.000704)


def test_openai_responses_stream_cost(table: PricingTable) -> None:
    """
    gpt-5 on the Responses API: (1820-1536)*1.25 + 1536*0.125 + 296*10 =
    3507 µ$ (reasoning tokens are part of the output count).
    """
    summary = captured("openai_responses_tools.sse", "openai_responses")
    assert summary.model == "gpt-5-2025-08-07"
    assert table.cost_usd(summary.usage, summary.model, "openai_responses") == pytest.approx(0.003507)


def test_openai_chat_json_cost(table: PricingTable) -> None:
    """
    A non-streaming o4-mini answer: (1536-1024)*1.10 + 1024*0.275 + 412*4.40
    = 2657.6 µ$.
    """
    summary = captured("openai_chat_tools.json", "openai_chat")
    assert summary.model == "o4-mini-2025-04-16"
    assert table.cost_usd(summary.usage, summary.model, "openai_chat") == pytest.approx(0.0026576)


def test_matches_claude_code_total_cost(table: PricingTable) -> None:
    """
    Claude Code's total_cost_usd is input*in + output*out + cache_read*read +
    cache_creation*write (write = 1.25x input), per million; a typical turn
    on Sonnet 4.5 (3 in, 150 out, 20000 read, 5000 written) is $0.027009.
    """
    usage = Usage(input_tokens=3, output_tokens=150, cache_read_tokens=20_000, cache_creation_tokens=5_000)
    expected = (3 * 3.0 + 150 * 15.0 + 20_000 * 0.30 + 5_000 * 3.0 * 1.25) / 1e6
    assert table.cost_usd(usage, "claude-sonnet-4-5-20250929", "anthropic") == pytest.approx(expected)
    assert expected == pytest.approx(0.027009)


def test_one_hour_cache_writes_cost_twice_input(table: PricingTable) -> None:
    """
    Anthropic bills 1-hour cache writes at 2x input and 5-minute writes at
    1.25x: on Sonnet 4.5, 3 in, 150 out, 20000 read, 1000 written for 5
    minutes and 4000 for an hour cost
    (3*3 + 150*15 + 20000*0.30 + 1000*3.75 + 4000*6) / 1e6 = $0.036009.
    """
    usage = Usage(
        input_tokens=3, output_tokens=150, cache_read_tokens=20_000,
        cache_creation_tokens=5_000, cache_creation_1h_tokens=4_000,
    )
    assert table.cost_usd(usage, "claude-sonnet-4-5-20250929", "anthropic") == pytest.approx(0.036009)
    every_write_1h = Usage(cache_creation_tokens=1_000_000, cache_creation_1h_tokens=1_000_000)
    for model, input_price in [("claude-opus-4-1", 15.0), ("claude-haiku-4-5", 1.0), ("claude-opus-4-5", 5.0)]:
        assert table.cost_usd(every_write_1h, model, "anthropic") == pytest.approx(2 * input_price)


def test_one_hour_writes_are_capped_at_all_writes(table: PricingTable) -> None:
    """A 1-hour count above the total never makes writes cost more than 1-hour writes of the total."""
    usage = Usage(cache_creation_tokens=100, cache_creation_1h_tokens=900)
    assert table.cost_usd(usage, "claude-sonnet-4-5", "anthropic") == pytest.approx(100 * 6.0 / 1e6)


def test_openai_cached_input_is_not_billed_twice(table: PricingTable) -> None:
    """
    OpenAI's cached tokens are part of prompt_tokens: they are billed once,
    at the cached-input price (gpt-5: 10000 prompt with 8000 cached =
    2000*1.25 + 8000*0.125 = 3500 µ$), never also as full-price input.
    """
    usage = Usage(input_tokens=10_000, cache_read_tokens=8_000)
    for dialect in ("openai_chat", "openai_responses"):
        assert table.cost_usd(usage, "gpt-5", dialect) == pytest.approx(0.0035)


def test_long_context_tier_prices_every_token_of_a_long_prompt(table: PricingTable) -> None:
    """
    Sonnet 4.5 above 200K prompt tokens (input + cache reads + writes) pays
    $6 in, $22.50 out, $0.60 read, $7.50 / $12 writes on all tokens; at
    exactly 200K it pays the standard rates.
    """
    long = Usage(
        input_tokens=50_001, output_tokens=1_000, cache_read_tokens=100_000,
        cache_creation_tokens=50_000, cache_creation_1h_tokens=10_000,
    )
    expected = (50_001 * 6 + 1_000 * 22.5 + 100_000 * 0.6 + 40_000 * 7.5 + 10_000 * 12) / 1e6
    assert table.cost_usd(long, "claude-sonnet-4-5-20250929", "anthropic") == pytest.approx(expected)
    assert table.cost_usd(long, "claude-sonnet-4-20250514", "anthropic") == pytest.approx(expected)
    at_threshold = Usage(input_tokens=50_000, cache_read_tokens=100_000, cache_creation_tokens=50_000)
    standard = (50_000 * 3 + 100_000 * 0.3 + 50_000 * 3.75) / 1e6
    assert table.cost_usd(at_threshold, "claude-sonnet-4-5", "anthropic") == pytest.approx(standard)
    # Sonnet 4.6 has no long-context surcharge.
    assert table.cost_usd(long, "claude-sonnet-4-6", "anthropic") == pytest.approx(
        (50_001 * 3 + 1_000 * 15 + 100_000 * 0.3 + 40_000 * 3.75 + 10_000 * 6) / 1e6
    )


def test_long_context_threshold_counts_openai_cached_tokens_once() -> None:
    """For OpenAI the prompt size is input_tokens, which already holds the cached ones."""
    table = PricingTable.load(
        overrides={"house": {"input": 1.0, "output": 1.0, "long_context": {"above": 1000, "input": 2.0, "output": 3.0}}}
    )
    assert table.cost_usd(Usage(input_tokens=1000, cache_read_tokens=600), "house", "openai_chat") == pytest.approx(
        (400 * 1.0 + 600 * 0.1) / 1e6
    )
    # Past the threshold, the tier's cache read defaults to the entry's, scaled like input (0.1 -> 0.2).
    assert table.cost_usd(Usage(input_tokens=1001, cache_read_tokens=600), "house", "openai_chat") == pytest.approx(
        (401 * 2.0 + 600 * 0.2) / 1e6
    )


def test_dialect_decides_how_cached_tokens_count(table: PricingTable) -> None:
    """
    The same counts cost less under OpenAI's accounting, where the cached
    tokens are already inside the input count, than under Anthropic's.
    """
    usage = Usage(input_tokens=1000, output_tokens=0, cache_read_tokens=400)
    price = table.price_for("gpt-4.1")
    assert price is not None
    openai = table.cost_usd(usage, "gpt-4.1", "openai_chat")
    anthropic = table.cost_usd(usage, "gpt-4.1", "anthropic")
    assert openai == pytest.approx((600 * 2.0 + 400 * 0.5) / 1e6)
    assert anthropic == pytest.approx((1000 * 2.0 + 400 * 0.5) / 1e6)


def test_cached_tokens_above_input_never_go_negative(table: PricingTable) -> None:
    """A provider reporting more cached than input tokens is not credited."""
    usage = Usage(input_tokens=10, output_tokens=0, cache_read_tokens=50)
    assert table.cost_usd(usage, "gpt-4.1", "openai_responses") == pytest.approx(50 * 0.5 / 1e6)


# -- pattern matching -----------------------------------------------------


def test_new_point_release_priced_by_family(table: PricingTable) -> None:
    """
    Models nobody listed yet are priced by their family pattern: a future
    Opus 4.x, a new Sonnet 4 snapshot, a dated GPT-4.1 and a new o3 variant.
    """
    cases = {
        "claude-opus-4-9-20270101": (5.0, 25.0),
        "claude-opus-4-8": (5.0, 25.0),
        "claude-sonnet-4-7": (3.0, 15.0),
        "gpt-4.1-2026-01-01": (2.0, 8.0),
        "o3-2025-04-16": (2.0, 8.0),
        "gpt-5.1-codex": (1.25, 10.0),
    }
    for model, (input_price, output_price) in cases.items():
        price = table.price_for(model)
        assert price is not None, model
        assert (price.input, price.output) == (input_price, output_price), model


def test_most_specific_pattern_wins(table: PricingTable) -> None:
    """
    A narrower pattern beats its family: Opus 4.1 keeps its old price under
    claude-opus-4*, and the mini/nano GPT models are not billed as flagships.
    """
    assert table.price_for("claude-opus-4-1-20250805").input == 15.0  # type: ignore[union-attr]
    assert table.price_for("claude-opus-4-20250514").input == 15.0  # type: ignore[union-attr]
    assert table.price_for("claude-opus-4-5-20251101").input == 5.0  # type: ignore[union-attr]
    assert table.price_for("gpt-5-mini-2025-08-07").input == 0.25  # type: ignore[union-attr]
    assert table.price_for("gpt-4o-mini").input == 0.15  # type: ignore[union-attr]
    assert table.price_for("gpt-4o-2024-08-06").input == 2.5  # type: ignore[union-attr]
    assert table.price_for("o4-mini-2025-04-16").cache_read == 0.275  # type: ignore[union-attr]


def test_exact_name_beats_any_pattern() -> None:
    """An entry without wildcards wins over every matching pattern."""
    table = PricingTable(
        [
            ModelPrice("acme-*", 1.0, 2.0, 1.25, 0.1),
            ModelPrice("acme-large-v2", 9.0, 9.0, 9.0, 9.0),
            ModelPrice("acme-large-*", 5.0, 5.0, 5.0, 5.0),
        ]
    )
    assert table.price_for("acme-large-v2").input == 9.0  # type: ignore[union-attr]
    assert table.price_for("acme-large-v3").input == 5.0  # type: ignore[union-attr]
    assert table.price_for("acme-small").input == 1.0  # type: ignore[union-attr]


def test_unknown_model_is_unknown_never_zero(table: PricingTable) -> None:
    """
    A model no pattern matches has no price and an unknown (None) cost even
    with tokens to bill, never $0; a missing model name likewise.
    """
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert table.price_for("totally-new-model-7") is None
    assert table.cost_usd(usage, "totally-new-model-7", "anthropic") is None
    assert table.cost_usd(usage, None, "openai_chat") is None
    assert table.cost_usd(usage, "", "openai_chat") is None


def test_vendor_prefix_and_case_are_ignored(table: PricingTable) -> None:
    """Router-style names (vendor/model) and upper case find the same price."""
    assert table.price_for("anthropic/claude-haiku-4-5").input == 1.0  # type: ignore[union-attr]
    assert table.price_for("Claude-Sonnet-4-5").input == 3.0  # type: ignore[union-attr]


def test_regex_patterns() -> None:
    """Keys starting with re: are regular expressions matched in full."""
    table = PricingTable.load(overrides={r"re:^acme-\d+b$": {"input": 0.5, "output": 1.5}})
    assert table.price_for("acme-70b").input == 0.5  # type: ignore[union-attr]
    assert table.price_for("acme-70b-instruct") is None


def test_lookup_cache_is_bounded() -> None:
    """Random model names from clients do not grow the lookup cache forever."""
    table = PricingTable([ModelPrice("x*", 1.0, 1.0, 1.0, 1.0)])
    for n in range(PricingTable._CACHE_LIMIT * 2 + 10):
        table.price_for(f"random-{n}")
    assert len(table._cache) <= PricingTable._CACHE_LIMIT


def test_huge_model_names_are_priced_but_not_kept() -> None:
    """A 1 MB model name is still priced by its pattern, but never held in the lookup cache."""
    table = PricingTable([ModelPrice("x*", 1.0, 1.0, 1.0, 1.0)])
    for n in range(20):
        assert table.price_for("x" + str(n) * 1_000_000) is not None
    assert sum(len(name) for name in table._cache) < 10_000


# -- loading and overriding -----------------------------------------------


def test_shipped_table_is_reachable_from_conf() -> None:
    """conf/pricing.yaml is a link to the packaged table, not a copy."""
    link = REPO / "conf" / "pricing.yaml"
    assert link.is_symlink()
    assert os.path.samefile(link, REPO / "lunaroute" / "data" / "pricing.yaml")


def test_missing_cache_prices_follow_the_multipliers() -> None:
    """
    An entry without cache prices gets a 1.25x input cache write and a 0.1x
    input cache read.
    """
    table = PricingTable.load(overrides={"house-model": {"input": 4.0, "output": 8.0}})
    price = table.price_for("house-model")
    assert price is not None
    assert (price.cache_write, price.cache_read) == (pytest.approx(5.0), pytest.approx(0.4))


def test_missing_one_hour_write_price_is_twice_input() -> None:
    """cache_write_1h left out is 2x input; given, it is taken as is."""
    table = PricingTable.load(
        overrides={"a": {"input": 4.0, "output": 8.0}, "b": {"input": 4.0, "output": 8.0, "cache_write_1h": 5.0}}
    )
    assert table.price_for("a").cache_write_1h == pytest.approx(8.0)  # type: ignore[union-attr]
    assert table.price_for("b").cache_write_1h == pytest.approx(5.0)  # type: ignore[union-attr]


def test_config_long_context_tier_reaches_the_table() -> None:
    """statistics.pricing accepts cache_write_1h and a long_context tier."""
    settings = settings_from_mapping(
        {
            "statistics": {
                "pricing": {
                    "house-*": {
                        "input": 1.0, "output": 2.0, "cache_write_1h": 3.0,
                        "long_context": {"above": 10, "input": 4.0, "output": 5.0, "cache_write_1h": 9.0},
                    }
                }
            }
        },
        env={},
    )
    price = PricingTable.load(overrides=settings.statistics.pricing).price_for("house-x")
    assert price is not None and price.long_context is not None
    assert (price.cache_write_1h, price.long_context.above, price.long_context.cache_write_1h) == (3.0, 10, 9.0)
    assert price.long_context.cache_write == pytest.approx(1.25 * 4.0)
    assert price.to_dict()["long_context"]["output"] == 5.0


def test_config_pricing_overrides_shipped_entries() -> None:
    """
    statistics.pricing from the config file (ModelPricing objects) replaces
    a shipped entry of the same pattern and adds new models.
    """
    settings = settings_from_mapping(
        {
            "statistics": {
                "pricing": {
                    "claude-sonnet-4*": {"input": 1.0, "output": 2.0, "cache_write": 0.5, "cache_read": 0.25},
                    "my-local-llm": {"input": 0.0, "output": 0.0},
                }
            }
        },
        env={},
    )
    table = PricingTable.load(overrides=settings.statistics.pricing)
    price = table.price_for("claude-sonnet-4-6")
    assert price is not None
    assert (price.input, price.output, price.cache_write, price.cache_read) == (1.0, 2.0, 0.5, 0.25)
    usage = Usage(input_tokens=10, output_tokens=10)
    assert table.cost_usd(usage, "my-local-llm", "openai_chat") == 0.0
    # Untouched entries keep the shipped prices.
    assert table.price_for("gpt-4.1").input == 2.0  # type: ignore[union-attr]


def test_pricing_file_extends_and_replaces(tmp_path: Path) -> None:
    """
    A statistics.pricing_file replaces same-key entries, adds new ones and
    leaves the rest of the shipped table in place; config overrides still
    win over it.
    """
    path = tmp_path / "prices.yaml"
    path.write_text(
        '"gpt-4o*": {input: 1.0, output: 1.0, cache_read: 0.1}\n'
        '"corp-model-*": {input: 7.0, output: 21.0}\n'
    )
    table = PricingTable.load(str(path), {"corp-model-*": {"input": 8.0, "output": 24.0}})
    assert table.price_for("gpt-4o-2024-08-06").input == 1.0  # type: ignore[union-attr]
    assert table.price_for("corp-model-x").input == 8.0  # type: ignore[union-attr]
    assert table.price_for("claude-haiku-4-5").input == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("gpt-x: [1, 2\n", "invalid YAML"),
        ("- just\n- a list\n", "top level"),
        ('"m": {input: 1.0}\n', "m.output: required"),
        ('"m": {input: -1, output: 1}\n', "m.input"),
        ('"m": {input: 1, output: "cheap"}\n', "m.output"),
        ('"m": {input: 1, output: 1, price_per_call: 2}\n', "unknown price field"),
        ('"re:^(unclosed": {input: 1, output: 1}\n', "invalid regular expression"),
        ('"m": 3\n', "must be a mapping"),
        ('"m": {input: 1, output: 1, long_context: {input: 2, output: 2}}\n', "m.long_context.above"),
        ('"m": {input: 1, output: 1, long_context: {above: -5, input: 2, output: 2}}\n', "m.long_context.above"),
        ('"m": {input: 1, output: 1, long_context: {above: 5, input: 2}}\n', "m.long_context.output: required"),
        ('"m": {input: 1, output: 1, long_context: {above: 5, input: 2, output: 2, x: 1}}\n', "unknown long_context"),
        ('"m": {input: 1, output: 1, long_context: 7}\n', "m.long_context: must be a mapping"),
        ('"m": {input: 1, output: 1, cache_write_1h: -1}\n', "m.cache_write_1h"),
    ],
)
def test_bad_pricing_file_is_one_line_config_error(tmp_path: Path, content: str, fragment: str) -> None:
    """
    A malformed pricing file fails with a one-line ConfigError naming the
    setting and the file, never a traceback from the YAML parser.
    """
    path = tmp_path / "prices.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        PricingTable.load(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert fragment in message
    assert caught.value.key == "statistics.pricing_file"
    assert str(path) in message


def test_missing_pricing_file_is_config_error(tmp_path: Path) -> None:
    """A pricing_file that does not exist is a ConfigError, not OSError."""
    with pytest.raises(ConfigError) as caught:
        PricingTable.load(str(tmp_path / "nope.yaml"))
    assert caught.value.key == "statistics.pricing_file"


def test_bad_override_is_config_error() -> None:
    """An override without an output price is rejected with its key path."""
    with pytest.raises(ConfigError) as caught:
        PricingTable.load(overrides={"x": {"input": 1.0}})
    assert "statistics.pricing.x.output" in str(caught.value)
