"""Resolved rates, from the bundled genai-prices table and from the operator's prices file
(`INGEST_PRICES_FILE`, see docs/PRICES.md), helpers of `stages.price`.

`Rates` is what the pricing hot path multiplies by: the per-million-token prices of one model on
one day, already converted to floats, with its long-context tiers flattened into `Band`s.
`table_rates` builds them from a genai-prices model entry; `stages.price_file.load_overrides`
from the prices file, which `stages.price` applies ahead of the table.

Nothing here is called per span: `Overrides.find` runs only on a cache miss.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from genai_prices import types as gp

SOURCE_OVERRIDE = "override"
SOURCE_TABLE = "genai-prices"


class Band(NamedTuple):
    """USD per million tokens, in force when the span's input tokens are above `above`."""

    above: int  # -1 for the base band: it applies to every span
    input_mtok: float
    output_mtok: float
    cache_read_mtok: float  # the input price when the model has no cache-read price
    cache_write_mtok: float  # the input price when the model has no cache-write price
    reasoning_mtok: float | None  # None: reasoning tokens are output tokens at the output price


@dataclass(frozen=True, slots=True)
class Rates:
    """The prices of one model on one day. `tiers` are ascending by `above`; usually empty."""

    model_id: str
    provider_id: str | None
    source: str  # SOURCE_OVERRIDE | SOURCE_TABLE
    base: Band
    tiers: tuple[Band, ...] = ()
    cache_read_priced: bool = True  # False: the band's cache_read_mtok is the input price
    cache_write_priced: bool = True


@dataclass(frozen=True, slots=True)
class Override:
    """One entry of the prices file."""

    model: str  # lower-case
    prefix: bool  # match names starting with `model`, not only equal to it
    provider: str | None  # a provider key (see `Overrides.find`), or None for any provider
    start_date: datetime.date | None  # None: in force since forever
    rates: Rates

    def specificity(self) -> tuple[bool, bool, int, datetime.date]:
        return (
            self.provider is not None,
            not self.prefix,
            len(self.model),
            self.start_date or datetime.date.min,
        )


class Overrides:
    """The prices file, indexed. An empty `Overrides()` is a node without a prices file."""

    def __init__(self, entries: Iterable[Override] = ()) -> None:
        self.entries = tuple(entries)
        self._exact: dict[str, list[Override]] = {}
        self._prefix: list[Override] = []
        for entry in self.entries:
            if entry.prefix:
                self._prefix.append(entry)
            else:
                self._exact.setdefault(entry.model, []).append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, provider_keys: Sequence[str], names: Sequence[str], day: datetime.date) -> Rates | None:
        """The override in force on `day` for the first of `names` (lower-case, most specific
        first) that any entry matches. Among the entries matching one name, a provider-scoped
        entry beats an unscoped one, exact beats prefix, a longer prefix beats a shorter one, and
        within that the latest `start_date` on or before `day` wins. Entries that start after
        `day` are not in force: the bundled table prices that day."""
        for name in names:
            best: Override | None = None
            for entry in (*self._exact.get(name, ()), *self._prefix):
                if entry.prefix and not name.startswith(entry.model):
                    continue
                if entry.provider is not None and entry.provider not in provider_keys:
                    continue
                if entry.start_date is not None and entry.start_date > day:
                    continue
                if best is None or entry.specificity() > best.specificity():
                    best = entry
            if best is not None:
                return best.rates
        return None


# --------------------------------------------------------------------------- the bundled table

_PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "output_reasoning_mtok")


def table_rates(provider_id: str, model: gp.ModelInfo, day: datetime.date) -> Rates | None:
    """The token prices of a genai-prices model on `day`, or None if it has none (e.g. audio-only
    or subscription models). Price variants (batch, priority tiers) are not applied."""
    prices = _prices_on(model, day)
    values: dict[str, Decimal | gp.TieredPrices | None] = {key: getattr(prices, key) for key in _PRICE_KEYS}
    if values["input_mtok"] is None and values["output_mtok"] is None:
        return None  # priced by something other than tokens (audio, requests) or not at all
    starts = sorted({t.start for v in values.values() if isinstance(v, gp.TieredPrices) for t in v.tiers})
    bands = [_band(values, above) for above in (-1, *starts)]
    return Rates(
        model_id=model.id,
        provider_id=provider_id,
        source=SOURCE_TABLE,
        base=bands[0],
        tiers=tuple(bands[1:]),
        cache_read_priced=values["cache_read_mtok"] is not None,
        cache_write_priced=values["cache_write_mtok"] is not None,
    )


def _band(values: dict[str, Decimal | gp.TieredPrices | None], above: int) -> Band:
    def at(key: str) -> float | None:
        value = values[key]
        if isinstance(value, gp.TieredPrices):
            applicable = value.base
            for tier in value.tiers:  # ascending
                if tier.start <= above:
                    applicable = tier.price
            return float(applicable)
        return None if value is None else float(value)

    input_mtok = at("input_mtok") or 0.0
    read, write = at("cache_read_mtok"), at("cache_write_mtok")
    return Band(
        above=above,
        input_mtok=input_mtok,
        output_mtok=at("output_mtok") or 0.0,
        cache_read_mtok=input_mtok if read is None else read,
        cache_write_mtok=input_mtok if write is None else write,
        reasoning_mtok=at("output_reasoning_mtok"),
    )


def _prices_on(model: gp.ModelInfo, day: datetime.date) -> gp.ModelPrice:
    """The model's standard prices in force on `day` (UTC). Time-of-day prices cannot be told
    apart at day granularity: the price in force for most of the day is taken."""
    noon = datetime.datetime.combine(day, datetime.time(12), datetime.UTC)
    conditional = model.prices if isinstance(model.prices, list) else []
    if not any(isinstance(c.constraint, gp.TimeOfDateConstraint) for c in conditional):
        return model.get_prices(noon)
    midnight = noon.replace(hour=0)
    slots = [midnight + datetime.timedelta(minutes=15 * i + 7) for i in range(96)]
    votes = Counter(id(model.get_prices(slot)) for slot in slots)
    winner = votes.most_common(1)[0][0]
    return next(c.prices for c in conditional if id(c.prices) == winner)
