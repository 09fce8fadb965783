"""Pricing (SPEC §3). Expected costs are worked out by hand from the providers' published prices
(USD per million tokens), not read back from the table:

    gpt-4o-mini           0.15 in, 0.60 out, 0.075 cached in
    claude-3-5-sonnet     3 in, 15 out, 0.30 cache read, 3.75 cache write
    gemini-1.5-pro        1.25 / 5 up to 128k input tokens, 2.50 / 10 above
    claude-sonnet-4-5     3 / 15 (0.30 read, 3.75 write) up to 200k, 6 / 22.50 (0.60, 7.50) above
    o3                    10 / 40 until 2025-06-09, 2 / 8 from 2025-06-10 (OpenAI's 80% cut)
    deepseek-chat         0.27 in (0.07 cache hit), 1.10 out; half price 16:30-00:30 UTC
    sonar-deep-research   2 in, 8 out, 3 reasoning
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from stages.price import Priced, PriceTable, name_variants
from stages.price_report import prices_command

DAY = datetime.date(2025, 7, 1)
M = 1_000_000


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def price(
    table: PriceTable, model: str | None, *, provider: str | None = None, day: datetime.date = DAY,
    input: int = 0, output: int = 0, cache_read: int = 0, cache_write: int = 0,
    reasoning: int = 0, has_usage: bool = True, caller_total: float | None = None,
) -> Priced:  # fmt: skip
    return table.price(
        provider=provider, model=model, day=day, input_tokens=input, output_tokens=output,
        cache_read_tokens=cache_read, cache_write_tokens=cache_write,
        reasoning_tokens=reasoning, has_usage=has_usage, caller_total=caller_total,
    )  # fmt: skip


def costs(p: Priced) -> tuple[Any, ...]:
    return (p.input_cost, p.output_cost, p.cache_read_cost, p.cache_write_cost, p.total_cost)


def write(tmp_path: Path, doc: Any, name: str = "prices.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# --------------------------------------------------------------------------- well-known models

# (provider, model, day, input, output, cache_read, cache_write, reasoning,
#  expected (input, output, cache_read, cache_write, total), price_model)
KNOWN = {
    "spec example: gpt-4o-mini 1M + 1M": (
        None, "gpt-4o-mini", DAY, M, M, 0, 0, 0, (0.15, 0.60, 0.0, 0.0, 0.75), "gpt-4o-mini"),
    "gpt-4o-mini, 400k of 1M input cached": (
        "openai", "gpt-4o-mini", DAY, M, M, 400_000, 0, 0,
        (0.09, 0.60, 0.03, 0.0, 0.72), "gpt-4o-mini"),
    "gpt-4o-mini has no cache-write price: input price": (
        "openai", "gpt-4o-mini", DAY, M, 0, 0, M, 0, (0.0, 0.0, 0.0, 0.15, 0.15), "gpt-4o-mini"),
    "claude-3-5-sonnet with cache read and write": (
        "anthropic", "claude-3-5-sonnet-20241022", DAY, 100_000, 5_000, 20_000, 10_000, 0,
        (0.21, 0.075, 0.006, 0.0375, 0.3285), "claude-3-5-sonnet"),
    "claude-3-5-sonnet cache write 1M": (
        "anthropic", "claude-3-5-sonnet-latest", DAY, M, 0, 0, M, 0,
        (0.0, 0.0, 0.0, 3.75, 3.75), "claude-3-5-sonnet"),
    "gemini-1.5-pro short context": (
        "google", "gemini-1.5-pro", DAY, 100_000, 10_000, 0, 0, 0,
        (0.125, 0.05, 0.0, 0.0, 0.175), "gemini-1.5-pro"),
    "gemini-1.5-pro at exactly 128k: still the base price": (
        "google", "gemini-1.5-pro", DAY, 128_000, 0, 0, 0, 0,
        (0.16, 0.0, 0.0, 0.0, 0.16), "gemini-1.5-pro"),
    "gemini-1.5-pro long context: every token at the tier price": (
        "google", "gemini-1.5-pro", DAY, 200_000, 10_000, 0, 0, 0,
        (0.5, 0.1, 0.0, 0.0, 0.6), "gemini-1.5-pro"),
    "gemini-1.5-pro has no cache price: cached input at the (tier) input price": (
        "google", "gemini-1.5-pro", DAY, 200_000, 0, 80_000, 0, 0,
        (0.3, 0.0, 0.2, 0.0, 0.5), "gemini-1.5-pro"),
    "claude-sonnet-4-5 below 200k": (
        "anthropic", "claude-sonnet-4-5", DAY, 150_000, 2_000, 50_000, 0, 0,
        (0.3, 0.03, 0.015, 0.0, 0.345), "claude-sonnet-4-5"),
    "claude-sonnet-4-5 above 200k: long-context tier incl. cache and output": (
        "anthropic", "claude-sonnet-4-5", DAY, 250_000, 2_000, 50_000, 0, 0,
        (1.2, 0.045, 0.03, 0.0, 1.275), "claude-sonnet-4-5"),
    "o3 the day before the price cut": (
        "openai", "o3", datetime.date(2025, 6, 9), M, M, 0, 0, 0, (10.0, 40.0, 0.0, 0.0, 50.0), "o3"),
    "o3 on the day of the price cut": (
        "openai", "o3", datetime.date(2025, 6, 10), M, M, 0, 0, 0, (2.0, 8.0, 0.0, 0.0, 10.0), "o3"),
    "o3 reasoning is output at the output price": (
        "openai", "o3", DAY, 0, 10_000, 0, 0, 8_000, (0.0, 0.08, 0.0, 0.0, 0.08), "o3"),
    "deepseek-chat: the time-of-day price in force for most of the day (standard, not off-peak)": (
        "deepseek", "deepseek-chat", DAY, M, M, M // 2, 0, 0,
        (0.135, 1.10, 0.035, 0.0, 1.27), "deepseek-chat"),
    "sonar-deep-research prices reasoning apart": (
        "perplexity", "sonar-deep-research", DAY, 0, 10_000, 0, 0, 6_000,
        (0.0, 0.05, 0.0, 0.0, 0.05), "sonar-deep-research"),
}  # fmt: skip


@pytest.mark.parametrize("case", KNOWN.values(), ids=KNOWN.keys())
def test_well_known_models_cost_what_their_published_prices_say(table: PriceTable, case: tuple) -> None:
    provider, model, day, i, o, cr, cw, r, expected, price_model = case
    p = price(
        table, model, provider=provider, day=day, input=i, output=o,
        cache_read=cr, cache_write=cw, reasoning=r,
    )  # fmt: skip
    assert costs(p) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert p.priced is True
    assert p.price_model == price_model
    assert p.price_source == "genai-prices"


def test_spec_example_is_exact(table: PriceTable) -> None:
    p = price(table, "gpt-4o-mini", input=M, output=M)
    assert (p.input_cost, p.output_cost, p.total_cost) == (0.15, 0.6, 0.75)


def test_zero_tokens_of_a_known_model_is_a_real_zero(table: PriceTable) -> None:
    p = price(table, "gpt-4o-mini")
    assert costs(p) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert p.priced is True and p.price_source == "genai-prices"


# --------------------------------------------------------------------------- matching

GPT_4O_MINI_1M_1M = 0.75


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        (None, "openai/gpt-4o-mini"),  # provider prefix, no provider
        ("openai", "openai/gpt-4o-mini"),  # prefix repeating the provider
        ("openai", "OpenAI/GPT-4o-mini"),  # case
        (None, "gpt-4o-mini-2024-07-18"),  # the table's own dated alias
        (None, "gpt-4o-mini-2025-01-31"),  # a date the table does not list
        (None, "gpt-4o-mini-20240718"),  # compact date
        (None, "gpt-4o-mini@2024-07-18"),  # version pin
        (None, "gpt-4o-mini:v1"),
        ("azure_openai", "gpt-4o-mini"),  # aliases
        ("azure", "gpt-4o-mini"),
        ("Azure.OpenAI", "gpt-4o-mini"),
        ("az.ai.openai", "gpt-4o-mini"),
        ("litellm", "gpt-4o-mini"),  # an unknown provider: the name alone decides
        ("my-gateway", "openai/gpt-4o-mini"),
        ("", "gpt-4o-mini"),
    ],
)
def test_gpt_4o_mini_under_every_name(table: PriceTable, provider: str | None, model: str) -> None:
    p = price(table, model, provider=provider, input=M, output=M)
    assert p.total_cost == pytest.approx(GPT_4O_MINI_1M_1M)
    assert p.price_model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("provider", "model", "price_model"),
    [
        ("anthropic", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),  # date suffix
        (None, "anthropic/claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("google", "claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),  # Vertex naming
        ("vertex_ai", "claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0",
         "regional.anthropic.claude-3-5-sonnet-20241022-v2:0"),
        ("aws-bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
         "regional.anthropic.claude-3-5-sonnet-20241022-v2:0"),
        (None, "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0",
         "regional.anthropic.claude-3-5-sonnet-20241022-v2:0"),
        ("some-proxy", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ],
)  # fmt: skip
def test_claude_3_5_sonnet_under_every_name(
    table: PriceTable, provider: str | None, model: str, price_model: str
) -> None:
    p = price(table, model, provider=provider, input=M, output=M)
    assert p.total_cost == pytest.approx(3.0 + 15.0)
    assert p.price_model == price_model


@pytest.mark.parametrize(
    ("provider", "model", "total_1m_1m", "price_model"),
    [
        ("vertex_ai", "gemini-1.5-pro-002", 2.5 + 10.0, "gemini-1.5-pro"),  # 1M input: tier
        ("google-vertex", "gemini-1.5-pro", 2.5 + 10.0, "gemini-1.5-pro"),
        ("gemini", "gemini-1.5-pro", 2.5 + 10.0, "gemini-1.5-pro"),
        ("mistralai", "mistral-large-latest", 2.0 + 6.0, "mistral-large"),
        ("mistral", "mistral-large-2411", 2.0 + 6.0, "mistral-large"),
        ("together_ai", "meta-llama/Llama-3.3-70B-Instruct-Turbo", 0.88 + 0.88,
         "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ("xai", "grok-3", 3.0 + 15.0, "grok-3"),
        ("x-ai", "grok-3", 3.0 + 15.0, "grok-3"),
        ("groq", "llama-3.1-8b-instant", 0.05 + 0.08, "llama-3.1-8b-instant"),
    ],
)  # fmt: skip
def test_provider_aliases(
    table: PriceTable, provider: str, model: str, total_1m_1m: float, price_model: str
) -> None:
    p = price(table, model, provider=provider, input=M, output=M)
    assert p.total_cost == pytest.approx(total_1m_1m)
    assert p.price_model == price_model


@pytest.mark.parametrize(
    ("alias", "table_id"),
    [
        ("openai", "openai"), ("azure", "azure"), ("azure_openai", "azure"),
        ("anthropic", "anthropic"), ("google", "google"), ("gemini", "google"),
        ("vertex", "google"), ("vertex_ai", "google"), ("google-vertex", "google"),
        ("gcp.vertex_ai", "google"), ("bedrock", "aws"), ("aws-bedrock", "aws"),
        ("aws.bedrock", "aws"), ("mistral", "mistral"), ("mistralai", "mistral"),
        ("mistral_ai", "mistral"), ("groq", "groq"), ("together", "together"),
        ("together_ai", "together"), ("deepseek", "deepseek"), ("x-ai", "x-ai"),
        ("xai", "x-ai"), ("cohere", "cohere"), ("fireworks", "fireworks"),
        ("fireworks_ai", "fireworks"), ("openrouter", "openrouter"), ("perplexity", "perplexity"),
        ("litellm", None), ("", None), (None, None),
    ],
)  # fmt: skip
def test_provider_alias_map(table: PriceTable, alias: str | None, table_id: str | None) -> None:
    assert table.table_provider(alias) == table_id


def test_the_provider_decides_between_table_entries(table: PriceTable) -> None:
    # OpenAI bills cached input at 1.25; OpenRouter's entry for the same model (in 2025) has no
    # cache price, so cached input is at its input price, 2.50.
    direct = price(table, "gpt-4o", provider="openai", input=M, cache_read=M)
    resold = price(table, "openai/gpt-4o", provider="openrouter", input=M, cache_read=M)
    assert (direct.price_model, direct.cache_read_cost) == ("gpt-4o", pytest.approx(1.25))
    assert (resold.price_model, resold.cache_read_cost) == ("openai/gpt-4o", pytest.approx(2.5))
    # a gateway named in the model prefix is a provider too
    via_prefix = price(table, "openrouter/openai/gpt-4o", input=M, cache_read=M)
    assert via_prefix.price_model == "openai/gpt-4o"


def test_name_variants_strip_pins_then_dates() -> None:
    assert name_variants("claude-3-5-sonnet-20241022-v2:0") == [
        "claude-3-5-sonnet-20241022-v2:0",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-sonnet",
    ]
    assert name_variants("deepseek-v3") == ["deepseek-v3"]  # a version is not a pin


# --------------------------------------------------------------------------- unpriced and caller


@pytest.mark.parametrize(
    ("provider", "model"),
    [(None, "my-own-model"), ("openai", "not-a-model"), ("vllm", "acme/llama-finetune"),
     ("github-copilot", "gpt-4o")],  # the last has no token prices in the table
)  # fmt: skip
def test_unknown_model_is_unpriced_with_null_costs(
    table: PriceTable, provider: str | None, model: str
) -> None:
    p = price(table, model, provider=provider, input=1000, output=1000)
    assert p == Priced(None, None, None, None, None, False, None, "unpriced")


def test_no_usage_or_no_model_is_unpriced(table: PriceTable) -> None:
    assert price(table, "gpt-4o-mini", input=10, has_usage=False).priced is False
    assert costs(price(table, "gpt-4o-mini", has_usage=False)) == (None,) * 5
    assert price(table, None, input=10).price_source == "unpriced"
    assert price(table, "", input=10).price_source == "unpriced"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "my-own-model", None])
def test_caller_cost_wins(table: PriceTable, model: str | None) -> None:
    p = price(table, model, input=M, output=M, caller_total=0.42)
    assert p == Priced(None, None, None, None, 0.42, True, None, "caller")
    assert price(table, model, has_usage=False, caller_total=0.0).total_cost == 0.0


# --------------------------------------------------------------------------- the cache


def test_resolution_happens_once_per_provider_model_day() -> None:
    table = PriceTable.load()
    for _ in range(100):
        price(table, "gpt-4o-mini", provider="openai", input=10, output=10)
    info = table.cache_info()
    assert (info.misses, info.hits) == (1, 99)
    price(table, "gpt-4o-mini", provider="openai", day=DAY + datetime.timedelta(days=1))
    price(table, "gpt-4o", provider="openai")
    price(table, "gpt-4o-mini", provider=None)
    for _ in range(10):
        price(table, "unknown-model")  # a miss is cached too
    info = table.cache_info()
    assert (info.misses, info.hits) == (5, 108)


# --------------------------------------------------------------------------- the prices file

ACME = {"model": "acme-llm-70b", "input_mtok": 0.4, "output_mtok": 1.2}


def test_custom_model_from_the_prices_file(tmp_path: Path) -> None:
    table = PriceTable.load(write(tmp_path, {"version": 1, "models": [ACME]}))
    for provider, model in [
        (None, "acme-llm-70b"),
        ("vllm", "ACME-LLM-70B"),
        (None, "selfhosted/acme-llm-70b"),
    ]:
        p = price(table, model, provider=provider, input=M, output=M, cache_read=M // 2)
        assert costs(p) == pytest.approx((0.2, 1.2, 0.2, 0.0, 1.6))  # cache read: input price
        assert (p.priced, p.price_model, p.price_source) == (True, "acme-llm-70b", "override")
    assert price(table, "acme-llm-70b-v2", input=M).priced is False  # exact means exact


def test_overrides_win_over_the_table(tmp_path: Path) -> None:
    doc = {"models": [{"model": "gpt-4o-mini", "input_mtok": 0.1, "output_mtok": 0.5,
                       "cache_read_mtok": 0.01, "cache_write_mtok": 0.2}]}  # fmt: skip
    table = PriceTable.load(str(write(tmp_path, doc)))
    p = price(table, "gpt-4o-mini", provider="openai", input=M, output=M, cache_read=M // 2,
              cache_write=M // 4)  # fmt: skip
    assert costs(p) == pytest.approx((0.025, 0.5, 0.005, 0.05, 0.58))
    assert p.price_source == "override"
    # names the override does not cover still come from the table
    assert price(table, "gpt-4o-mini-2024-07-18", input=M, output=M).total_cost == 0.75


def test_prefix_provider_and_start_date_overrides(tmp_path: Path) -> None:
    doc = {
        "models": [
            {"model": "claude-3-5-sonnet", "match": "prefix", "provider": "anthropic",
             "start_date": "2025-01-01", "id": "negotiated-sonnet", "input_mtok": 2.4,
             "output_mtok": 12},
            {"model": "claude-3-5-sonnet", "match": "prefix", "provider": "anthropic",
             "start_date": "2025-06-01", "id": "renegotiated-sonnet", "input_mtok": 2,
             "output_mtok": 10},
            {"model": "ft:", "match": "prefix", "input_mtok": 1, "output_mtok": 2},
            {"model": "ft:gpt-4o-mini:acme::abc", "input_mtok": 3, "output_mtok": 4},
        ]
    }  # fmt: skip
    table = PriceTable.load(write(tmp_path, doc))

    def sonnet(day: datetime.date, provider: str | None = "anthropic", model: str = "") -> Priced:
        return price(table, model or "claude-3-5-sonnet-20241022", provider=provider, day=day,
                     input=M, output=M)  # fmt: skip

    before = sonnet(datetime.date(2024, 12, 31))
    assert (before.total_cost, before.price_source) == (18.0, "genai-prices")
    assert (sonnet(datetime.date(2025, 1, 1)).total_cost, sonnet(DAY).total_cost) == (14.4, 12.0)
    assert sonnet(DAY).price_model == "renegotiated-sonnet"
    assert sonnet(DAY, provider="aws-bedrock").price_source == "genai-prices"  # other provider
    assert sonnet(DAY, provider=None, model="anthropic/claude-3-5-sonnet").total_cost == 12.0
    assert price(table, "ft:gpt-4o-mini:acme::abc", input=M, output=M).total_cost == 7.0
    assert price(table, "ft:gpt-4o-mini:acme::xyz", input=M, output=M).total_cost == 3.0


def test_no_prices_file() -> None:
    assert len(PriceTable.load(None).overrides) == 0
    assert len(PriceTable.load("").overrides) == 0


BAD_FILES = {
    "not JSON": ('{"models": [', "not valid JSON"),
    "top level is a list": ([ACME], "top level must be an object"),
    "no models": ({"version": 1}, '"models" must be a list'),
    "unknown top-level key": ({"models": [], "model": []}, "unknown top-level key"),
    "wrong version": ({"version": 2, "models": []}, "version must be 1"),
    "entry not an object": ({"models": ["acme"]}, "models[0]: must be an object"),
    "missing model": ({"models": [{"input_mtok": 1, "output_mtok": 1}]}, '"model" is missing'),
    "missing input price": ({"models": [{"model": "m", "output_mtok": 1}]},
                            '"input_mtok" is missing'),
    "missing output price": ({"models": [ACME, {"model": "m", "input_mtok": 1}]},
                             'models[1]: "output_mtok" is missing'),
    "negative price": ({"models": [{**ACME, "output_mtok": -1}]}, '"output_mtok" must be a number >= 0'),
    "price as text": ({"models": [{**ACME, "input_mtok": "0.4"}]}, '"input_mtok" must be a number'),
    "price as bool": ({"models": [{**ACME, "cache_read_mtok": True}]}, '"cache_read_mtok" must be'),
    "NaN price": ('{"models": [{"model": "m", "input_mtok": NaN, "output_mtok": 1}]}',
                  '"input_mtok" must be a number >= 0'),
    "misspelt key": ({"models": [{**ACME, "inptu_mtok": 1}]}, "unknown key(s) 'inptu_mtok'"),
    "bad match": ({"models": [{**ACME, "match": "regex"}]}, '"match" must be "exact" or "prefix"'),
    "bad start date": ({"models": [{**ACME, "start_date": "2025-13-01"}]}, '"start_date" must be'),
    "empty model": ({"models": [{**ACME, "model": " "}]}, '"model" must be a non-empty string'),
    "duplicate": ({"models": [ACME, {**ACME, "model": "ACME-llm-70b"}]}, "models[1] repeats models[0]"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_prices_file_stops_the_node(tmp_path: Path, case: tuple[Any, str]) -> None:
    doc, problem = case
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as raised:
        PriceTable.load(path)
    message = str(raised.value)
    assert str(path) in message
    assert problem in message


def test_a_missing_prices_file_stops_the_node(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        PriceTable.load(tmp_path / "nope.json")


# --------------------------------------------------------------------------- `run.py prices`


def command(table: PriceTable, model: str, provider: str | None = None, **counts: int) -> Any:
    tokens = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
              "cache_write_tokens": 0, "reasoning_tokens": 0} | counts  # fmt: skip
    return prices_command(table, model, provider=provider, day=DAY, **tokens)


def test_prices_command_shows_prices_and_costs(table: PriceTable) -> None:
    code, text = command(table, "openai/gpt-4o-mini", input_tokens=M, output_tokens=M)
    assert code == 0
    assert "resolves to   gpt-4o-mini (provider openai)" in text
    assert "genai-prices" in text
    for line in ("input         0.15", "output        0.60", "cache read    0.075",
                 "total         0.75 USD"):  # fmt: skip
        assert line in text


def test_prices_command_shows_tiers(table: PriceTable) -> None:
    code, text = command(table, "gemini-1.5-pro", input_tokens=200_000, output_tokens=10_000)
    assert code == 0
    assert "above 128,000 input tokens" in text
    assert "total         0.60 USD" in text


def test_prices_command_shows_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, {"models": [ACME]})
    code, text = command(PriceTable.load(path), "acme-llm-70b", input_tokens=M)
    assert code == 0
    assert f"override (prices file {path})" in text
    assert "cache read    0.40  (no cache-read price: input price)" in text


def test_prices_command_unknown_model_and_bad_counts(table: PriceTable) -> None:
    code, text = command(table, "my-own-model", "vllm")
    assert code == 1 and "priced = false" in text
    assert command(table, "gpt-4o-mini", input_tokens=10, cache_read_tokens=11)[0] == 2
    assert command(table, "gpt-4o-mini", output_tokens=1, reasoning_tokens=2)[0] == 2
    assert command(table, "gpt-4o-mini", input_tokens=-1)[0] == 2
