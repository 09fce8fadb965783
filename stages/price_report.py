"""`run.py prices MODEL …`: what a model resolves to in the price table, and what a call costs."""

from __future__ import annotations

import datetime

from genai_prices import __version__ as GENAI_PRICES_VERSION

from stages.price import PriceTable
from stages.price_overrides import SOURCE_TABLE, Band, Rates


def prices_command(
    table: PriceTable, model: str, *, provider: str | None, day: datetime.date,
    input_tokens: int, output_tokens: int, cache_read_tokens: int,
    cache_write_tokens: int, reasoning_tokens: int,
) -> tuple[int, str]:  # fmt: skip
    """For `run.py prices MODEL [--provider P] [--input N --output N --cache-read N ...]`:
    returns (exit code, human-readable text) showing what the model resolves to (provider, model
    id, per-million prices incl. cache and tiers, price source) and what such a call costs, per
    component. Exit code 0: priced; 1: the model is unknown (its spans are stored unpriced);
    2: the token counts are impossible (SPEC §2)."""
    counts = {
        "input": input_tokens, "output": output_tokens, "cache read": cache_read_tokens,
        "cache write": cache_write_tokens, "reasoning": reasoning_tokens,
    }  # fmt: skip
    if any(n < 0 for n in counts.values()):
        return 2, "error: token counts must be >= 0"
    if cache_read_tokens + cache_write_tokens > input_tokens:
        return (
            2,
            "error: cache read + cache write tokens are part of the input: they cannot exceed it",
        )
    if reasoning_tokens > output_tokens:
        return 2, "error: reasoning tokens are part of the output: they cannot exceed it"
    asked = f"{model!r} (provider {provider or '-'}, on {day.isoformat()})"
    rates = table.resolve(provider, model, day) if model.strip() else None
    if rates is None:
        return 1, (
            f"{asked}: not in the price table nor in the prices file.\n"
            "Spans with this model are stored with priced = false and NULL costs; add it to the "
            "prices file (docs/PRICES.md) to price them."
        )
    if rates.source == SOURCE_TABLE:
        source = f"genai-prices {GENAI_PRICES_VERSION} (bundled table, no network updates)"
    else:
        source = f"override (prices file {table.prices_file or '-'})"
    lines = [
        asked,
        f"  resolves to   {rates.model_id} (provider {rates.provider_id or 'any'})",
        f"  price source  {source}",
        "  USD per 1M tokens",
        *_band_lines(rates, rates.base, "    "),
    ]
    for tier in rates.tiers:
        lines.append(f"  long context: above {tier.above:,} input tokens (cached included), "
                     "every token of the call is priced at")  # fmt: skip
        lines += _band_lines(rates, tier, "    ")
    result = table.price(
        provider=provider, model=model, day=day, input_tokens=input_tokens,
        output_tokens=output_tokens, cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens, reasoning_tokens=reasoning_tokens,
        has_usage=True, caller_total=None,
    )  # fmt: skip
    uncached = input_tokens - cache_read_tokens - cache_write_tokens
    lines.append(
        "  this call: " + ", ".join(f"{n:,} {name}" for name, n in counts.items())
        + f" tokens ({uncached:,} input not cached)"
    )  # fmt: skip
    for name, cost in (
        ("input", result.input_cost), ("output", result.output_cost),
        ("cache read", result.cache_read_cost), ("cache write", result.cache_write_cost),
        ("total", result.total_cost),
    ):  # fmt: skip
        lines.append(f"    {name:<13} {_usd(cost)} USD")
    return 0, "\n".join(lines)


def _band_lines(rates: Rates, band: Band, indent: str) -> list[str]:
    read_note = "" if rates.cache_read_priced else "  (no cache-read price: input price)"
    write_note = "" if rates.cache_write_priced else "  (no cache-write price: input price)"
    reasoning = "output price" if band.reasoning_mtok is None else _usd(band.reasoning_mtok)
    return [
        f"{indent}{'input':<13} {_usd(band.input_mtok)}",
        f"{indent}{'output':<13} {_usd(band.output_mtok)}",
        f"{indent}{'cache read':<13} {_usd(band.cache_read_mtok)}{read_note}",
        f"{indent}{'cache write':<13} {_usd(band.cache_write_mtok)}{write_note}",
        f"{indent}{'reasoning':<13} {reasoning}",
    ]


def _usd(value: float | None) -> str:
    """0.75 -> "0.75", 1.5e-07 -> "0.00000015": every digit that matters, at least two."""
    if value is None:
        return "-"
    whole, _, fraction = f"{value:.10f}".rstrip("0").partition(".")
    return f"{whole}.{fraction:0<2}"
