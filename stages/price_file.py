"""The operator's prices file (`INGEST_PRICES_FILE`, see docs/PRICES.md), read into `Overrides`.

Error handling: a prices file that cannot be read or does not follow the format raises
`ConfigError` naming the file, the entry and the problem, so the node refuses to start. The file
is read once, at start.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from stages.price_overrides import SOURCE_OVERRIDE, Band, Override, Overrides, Rates

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
