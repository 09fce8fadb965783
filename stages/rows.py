"""Span rows for the `spans` table, made once, in the front.

`span_row` is a plain function: one validated span (with its trace and its price) in, one tuple in
`stages.schema.COLUMNS` order out. The fronts encode tuples column by column in ClickHouse's Native
format (`stages.native`); `encode_rows` packs them in `FORMAT MsgPack` instead (the format of
records spooled by earlier versions; bench and tests): each row is its column values back to back
(the array header msgpack writes for a tuple is cut off).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec

from stages.payload import Span, Trace
from stages.schema import COLUMN_NAMES

if TYPE_CHECKING:
    from stages.price import Priced

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
# msgpack array header of a COLUMN_NAMES-long tuple: 1 byte below 16 elements, else 3 bytes.
_HEADER_BYTES = 1 if len(COLUMN_NAMES) < 16 else 3


def micros(value: dt.datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def truncate_utf8(text: bytes | None, limit: int) -> tuple[bytes | None, bool]:
    """Cut `text` to at most `limit` bytes on a UTF-8 character boundary."""
    if text is None or len(text) <= limit:
        return text, False
    end = limit
    while end > 0 and (text[end] & 0xC0) == 0x80:  # a continuation byte: back off
        end -= 1
    return text[:end], True


def span_row(
    org_id: str, trace: Trace, span: Span, price: Priced, *, ingested_at_ms: int, max_io_bytes: int
) -> tuple:
    usage = span.usage
    start_us = micros(span.start_time)
    end_us = micros(span.end_time) if span.end_time is not None else None
    input_text, input_cut = truncate_utf8(span.input, max_io_bytes)
    output_text, output_cut = truncate_utf8(span.output, max_io_bytes)
    return (
        org_id,
        trace.id,
        span.id,
        span.parent_id,
        trace.name or "",
        trace.user_id or "",
        trace.session_id or "",
        trace.environment,
        trace.release or "",
        trace.tags or [],
        span.name,
        span.kind,
        span.status,
        span.status_message or "",
        span.model or "",
        span.provider or "",
        start_us,
        end_us,
        (end_us - start_us) / 1000.0 if end_us is not None else None,
        (usage.input_tokens or 0) if usage else 0,
        (usage.output_tokens or 0) if usage else 0,
        (usage.cache_read_tokens or 0) if usage else 0,
        (usage.cache_write_tokens or 0) if usage else 0,
        (usage.reasoning_tokens or 0) if usage else 0,
        price.input_cost,
        price.output_cost,
        price.cache_read_cost,
        price.cache_write_cost,
        price.total_cost,
        price.priced,
        price.price_model,
        price.price_source,
        input_text,
        output_text,
        input_cut,
        output_cut,
        _json.encode(span.attributes or {}),
        _json.encode(trace.metadata or {}),
        ingested_at_ms,
    )


def encode_rows(rows: Iterable[tuple]) -> bytes:
    """Rows as ClickHouse `FORMAT MsgPack` input: values back to back, no per-row header."""
    return b"".join([_msgpack.encode(row)[_HEADER_BYTES:] for row in rows])
