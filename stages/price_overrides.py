"""Resolved rates, from the bundled genai-prices table and from the operator's prices file
(`INGEST_PRICES_FILE`, see docs/PRICES.md), helpers of `stages.price`.

`Rates` is what the pricing hot path multiplies by: the per-million-token prices of one model on
one day, already converted to floats, with its long-context tiers flattened into `Band`s.
`table_rates` builds them from a genai-prices model entry; `load_overrides` from the prices file,
which `stages.price` applies ahead of the table.

Error handling: a prices file that cannot be read or does not follow the format raises
`ConfigError` naming the file, the entry and the problem, so the node refuses to start. Nothing
here is called per span: the file is read once, and `Overrides.find` runs only on a cache miss.
"""

from __future__ import annotations

import datetime
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from genai_prices import types as gp

from pipeline.errors import ConfigError

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


# --------------------------------------------------------------------------- the prices file

_TOP_KEYS = {"version", "comment", "models"}
_ENTRY_KEYS = {
    "model", "match", "provider", "start_date", "id", "comment",
    "input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok",
}  # fmt: skip


def load_overrides(path: str | Path, provider_key: Callable[[str], str] = str.lower) -> Overrides:
    """Read and check the prices file at `path`. `provider_key` turns an entry's `provider` into
    the key that `Overrides.find` compares (the table's provider id for a known alias)."""
    where = f"prices file {str(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return Overrides(parse_overrides(doc, where, provider_key))


def parse_overrides(doc: Any, where: str, provider_key: Callable[[str], str] = str.lower) -> list[Override]:
    if not isinstance(doc, dict):
        raise ConfigError(f'{where}: the top level must be an object {{"models": [...]}}')
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(map(repr, unknown))}")
    if doc.get("version", 1) != 1:
        raise ConfigError(f"{where}: version must be 1, got {doc['version']!r}")
    models = doc.get("models")
    if not isinstance(models, list):
        raise ConfigError(f'{where}: "models" must be a list of model entries')
    entries = [_parse_entry(raw, f"{where}: models[{i}]", provider_key) for i, raw in enumerate(models)]
    seen: dict[tuple[str, bool, str | None, datetime.date | None], int] = {}
    for i, entry in enumerate(entries):
        key = (entry.model, entry.prefix, entry.provider, entry.start_date)
        if key in seen:
            raise ConfigError(
                f"{where}: models[{i}] repeats models[{seen[key]}] (same model, match, provider "
                "and start_date): give it another start_date or remove one"
            )
        seen[key] = i
    return entries


def _parse_entry(raw: Any, where: str, provider_key: Callable[[str], str]) -> Override:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(_ENTRY_KEYS))}"
        )
    for key in ("model", "input_mtok", "output_mtok"):
        if key not in raw:
            raise ConfigError(f'{where}: "{key}" is missing (see docs/PRICES.md)')
    model = _text(raw, "model", where) or ""
    match = raw.get("match", "exact")
    if match not in ("exact", "prefix"):
        raise ConfigError(f'{where}: "match" must be "exact" or "prefix", got {match!r}')
    provider = _text(raw, "provider", where)
    start_date = _date(raw, where)
    input_mtok = _price(raw, "input_mtok", where) or 0.0
    output_mtok = _price(raw, "output_mtok", where) or 0.0
    cache_read = _price(raw, "cache_read_mtok", where)
    cache_write = _price(raw, "cache_write_mtok", where)
    band = Band(
        above=-1,
        input_mtok=input_mtok,
        output_mtok=output_mtok,
        cache_read_mtok=input_mtok if cache_read is None else cache_read,
        cache_write_mtok=input_mtok if cache_write is None else cache_write,
        reasoning_mtok=None,
    )
    rates = Rates(
        model_id=_text(raw, "id", where) or model,
        provider_id=provider,
        source=SOURCE_OVERRIDE,
        base=band,
        cache_read_priced=cache_read is not None,
        cache_write_priced=cache_write is not None,
    )
    return Override(
        model=model.strip().lower(),
        prefix=match == "prefix",
        provider=None if provider is None else provider_key(provider),
        start_date=start_date,
        rates=rates,
    )


def _text(raw: dict[str, Any], key: str, where: str) -> str | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f'{where}: "{key}" must be a non-empty string, got {value!r}')
    return value.strip()


def _price(raw: dict[str, Any], key: str, where: str) -> float | None:
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f'{where}: "{key}" must be a number >= 0 (USD per million tokens), got {value!r}')
    return float(value)


def _date(raw: dict[str, Any], where: str) -> datetime.date | None:
    if "start_date" not in raw:
        return None
    value = raw["start_date"]
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f'{where}: "start_date" must be a date "YYYY-MM-DD" (UTC), got {value!r}') from None
