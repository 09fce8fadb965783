"""Pricing (SPEC §3): what one span cost, in USD.

`PriceTable.price` is a pure function of a span's provider, model, day and token counts. The
price record for a (provider, model, day) is resolved once and cached (`cache_info()`); after
that a span costs a cache hit and a few float multiplications. Sources, first match wins:

1. the caller's `cost.total` (price_source "caller"): components stay None;
2. the operator's prices file (`INGEST_PRICES_FILE`, docs/PRICES.md; "override");
3. the bundled genai-prices table ("genai-prices"): never auto-updated from the network.

Anything else (unknown model, no model, no usage) is `priced = False` with every cost None:
never a made-up zero.

Matching, in order: the span's provider (SDK aliases such as `vertex_ai`, `aws-bedrock`,
`azure_openai` map to the table's ids) with the full name, then with `provider/` prefixes
peeled off; then each provider named by such a prefix; then the model's maker, found from the
name alone (what an unknown or missing provider gets), and last the makers' own lists. Within
each, a name that does not match as given is retried without a version pin (`@…`, `:…`,
Bedrock's `-v2:0`) and date suffix.

Costs: `inputTokens` includes cached tokens, so input cost = (input − cache read − cache write) ×
input price; cache reads and writes at their own prices, or the input price where the model has
none; output (reasoning included) × output price, unless the table prices reasoning apart.
Long-context tiers apply all-or-nothing from the span's total input tokens, as providers bill.
The day picks the price in force on that UTC day; for time-of-day prices (DeepSeek off-peak) the
one in force for most of the day. Per-request and non-token fees are not priced.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from genai_prices import types as gp

from stages.price_file import load_overrides
from stages.price_overrides import Overrides, Rates, table_rates

CACHE_SIZE = 16_384


class Priced(NamedTuple):
    """What one span cost, in USD: the cost columns of its row (SPEC §4). None is NULL."""

    input_cost: float | None
    output_cost: float | None
    cache_read_cost: float | None
    cache_write_cost: float | None
    total_cost: float | None
    priced: bool
    price_model: str | None  # the table/override model id that matched, e.g. "gpt-4o-mini"
    price_source: str  # "caller" | "override" | "genai-prices" | "unpriced"


UNPRICED = Priced(None, None, None, None, None, False, None, "unpriced")
_new = tuple.__new__  # builds a Priced without NamedTuple.__new__'s Python frame (hot path)

# Provider names SDKs send, after `_normalize` (lower case, runs of "_", "." or space -> "-").
_ALIASES = {
    "open-ai": "openai", "az-ai-openai": "azure", "azure-openai": "azure", "azureopenai": "azure",
    "azure-ai": "azure", "az-ai-inference": "azure", "claude": "anthropic",
    "gemini": "google", "google-genai": "google", "google-gemini": "google",
    "google-ai-studio": "google", "vertex": "google", "vertexai": "google", "vertex-ai": "google",
    "google-vertex": "google", "google-vertex-ai": "google", "gcp-gemini": "google",
    "gcp-vertex-ai": "google", "gcp-gen-ai": "google",
    "bedrock": "aws", "aws-bedrock": "aws", "amazon-bedrock": "aws", "amazon": "aws",
    "bedrock-converse": "aws", "mistralai": "mistral", "mistral-ai": "mistral",
    "together-ai": "together", "togetherai": "together", "xai": "x-ai", "grok": "x-ai",
    "fireworks-ai": "fireworks", "fireworksai": "fireworks", "open-router": "openrouter",
    "perplexity-ai": "perplexity", "pplx": "perplexity", "moonshot": "moonshotai",
    "deepseek-ai": "deepseek", "cohere-ai": "cohere", "workers-ai": "cloudflare",
    "copilot": "github-copilot", "z-ai": "zai", "zhipu": "zhipuai",
}  # fmt: skip
_SEPARATORS = re.compile(r"[\s_.]+")
# A version pin or a date at the end of a model name: retried without it when the name misses.
_SUFFIX = re.compile(r"(?:-v\d+:\d+|@[^@/]*|:[^:/]*|[-_]20\d\d-?(?:0[1-9]|1[0-2])-?(?:0[1-9]|[12]\d|3[01]))$")


def _normalize(provider: str) -> str:
    return _SEPARATORS.sub("-", provider.strip().lower())


def name_variants(name: str) -> list[str]:
    """`name`, then `name` with its version pins and date suffix stripped one at a time."""
    variants = [name]
    while (shorter := _SUFFIX.sub("", variants[-1])) != variants[-1] and shorter:
        variants.append(shorter)
    return variants


class PriceTable:
    """The prices of every model the node knows, resolved per (provider, model, day) and cached.

    Build with `load`. Not shared between processes: each worker loads its own."""

    def __init__(self, providers: list[gp.Provider], overrides: Overrides | None = None) -> None:
        self._providers = providers
        self._by_id = {p.id: p for p in providers}
        self._maker = {id(m): p.id for p in providers for m in p.models}
        self._makers = [p.id for p in providers if p.model_match is not None]
        self.overrides = overrides or Overrides()
        self.prices_file: str | None = None
        self.resolve = functools.lru_cache(maxsize=CACHE_SIZE)(self._resolve)
        self._match = functools.lru_cache(maxsize=CACHE_SIZE)(self._match_uncached)

    @classmethod
    def load(cls, prices_file: str | os.PathLike[str] | None = None) -> PriceTable:
        """The bundled genai-prices table, plus the operator's prices file if one is given.
        Raises `ConfigError` for a bad prices file."""
        from genai_prices.data import providers  # the bundled snapshot: never the network

        table = cls(providers)
        if prices_file:
            table.overrides = load_overrides(Path(prices_file), table.provider_key)
            table.prices_file = os.fspath(prices_file)
        return table

    def cache_info(self) -> Any:
        """Hits and misses of the (provider, model, day) cache (`functools.lru_cache` info)."""
        return self.resolve.cache_info()

    def price(
        self, *, provider: str | None, model: str | None, day: datetime.date,
        input_tokens: int, output_tokens: int, cache_read_tokens: int,
        cache_write_tokens: int, reasoning_tokens: int,
        has_usage: bool, caller_total: float | None,
    ) -> Priced:  # fmt: skip
        if caller_total is not None:
            return _new(Priced, (None, None, None, None, float(caller_total), True, None, "caller"))
        if not has_usage or not model:
            return UNPRICED
        rates = self.resolve(provider, model, day)
        if rates is None:
            return UNPRICED
        band = rates.base
        if rates.tiers:
            for tier in reversed(rates.tiers):
                if input_tokens > tier[0]:
                    band = tier
                    break
        _, p_input, p_output, p_read, p_write, p_reasoning = band
        uncached = input_tokens - cache_read_tokens - cache_write_tokens
        # uncached < 0 is impossible after validation (SPEC §2); never price a negative count
        input_cost = uncached * p_input / 1e6 if uncached > 0 else 0.0
        read_cost = cache_read_tokens * p_read / 1e6
        write_cost = cache_write_tokens * p_write / 1e6
        if p_reasoning is None:
            output_cost = output_tokens * p_output / 1e6
        else:
            answer = output_tokens - reasoning_tokens
            output_cost = (answer * p_output + reasoning_tokens * p_reasoning) / 1e6
        total = input_cost + output_cost + read_cost + write_cost
        return _new(
            Priced,
            (input_cost, output_cost, read_cost, write_cost, total, True, rates.model_id,
             rates.source),
        )  # fmt: skip

    # ----------------------------------------------------------------------- resolution (misses)

    def table_provider(self, provider: str | None) -> str | None:
        """The table's id for a provider name an SDK sends, or None when the table lacks it."""
        if not provider or not provider.strip():
            return None
        name = _normalize(provider)
        if name in _ALIASES:
            return _ALIASES[name]
        if name in self._by_id:
            return name
        for candidate in self._providers:
            if candidate.provider_match is not None and candidate.provider_match.is_match(name):
                return candidate.id
        return None

    def provider_key(self, provider: str) -> str:
        """What a prices-file `provider` is compared as: the table id, else the normalized name."""
        return self.table_provider(provider) or _normalize(provider)

    def _resolve(self, provider: str | None, model: str, day: datetime.date) -> Rates | None:
        ref = model.strip().lower()
        if self.overrides:
            parts = ref.split("/")
            names = ["/".join(parts[i:]) for i in range(len(parts))]
            keys = [self.provider_key(p) for p in (provider, *parts[:-1]) if p and p.strip()]
            if rates := self.overrides.find(keys, names, day):
                return rates
        found = self._match(provider, ref)
        return None if found is None else table_rates(found[0], found[1], day)

    def _match_uncached(self, provider: str | None, ref: str) -> tuple[str, gp.ModelInfo] | None:
        attempts: list[tuple[str, str]] = []
        own = self.table_provider(provider)
        peeled: list[tuple[str, str]] = []
        rest = ref
        while "/" in rest:
            head, tail = rest.split("/", 1)
            if (hinted := self.table_provider(head)) is None:
                break
            peeled.append((hinted, tail))
            rest = tail
        if own is not None:
            attempts += [(own, ref), *((own, tail) for _, tail in peeled)]
        attempts += peeled
        for name in (ref, *(tail for _, tail in peeled)):
            for candidate in self._providers:
                if candidate.model_match is not None and candidate.model_match.is_match(name):
                    attempts.append((candidate.id, name))
                    break
        # Last, a name no maker claims: the makers' own lists (not resellers', whose prices vary).
        attempts += [(maker, name) for name in (ref, *(t for _, t in peeled)) for maker in self._makers]
        for provider_id, name in dict.fromkeys(attempts):
            table_provider = self._by_id[provider_id]
            for variant in name_variants(name):
                model = table_provider.find_model(variant, all_providers=self._providers)
                if model is not None:
                    return self._maker.get(id(model), provider_id), model
        return None
