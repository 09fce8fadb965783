"""The price stage (front worker): price every span and encode the batch's rows for the store.

Logic lives in plain functions (`priced_rows` here, `stages.price.PriceTable.price`,
`stages.rows.span_row`); this module adds only the actor loop around them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import trio

from pipeline.config import Config
from pipeline.jobs import Job
from pipeline.link import Call
from pipeline.messages import ROWS_MSGPACK, ROWS_NATIVE, Append, pack_streams
from stages.native import encode_streams
from stages.otlp_map import AGGREGATE_KINDS
from stages.payload import Batch
from stages.price import UNPRICED, PriceTable
from stages.rows import encode_rows, span_row

AGGREGATE = UNPRICED._replace(price_source="aggregate")


# --------------------------------------------------------------------------- the stage
async def run_price(
    config: Config,
    table: PriceTable,
    receive: trio.MemoryReceiveChannel[Job],
    send: trio.MemorySendChannel[Call],
    *,
    clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Price every span of each validated batch and encode its rows; send the batch to the writer.

    Owns both channel ends: returns, closing `send`, when `receive` ends."""
    async with receive, send:
        task_status.started()
        async for job in receive:
            batch = job.payload
            aggregate = AGGREGATE_KINDS if job.media.startswith("otlp-") else frozenset()
            rows = span_rows(batch, job.org_id, table, ingested_at_ms=int(clock() * 1000),
                             max_io_bytes=config.max_io_bytes, aggregate_kinds=aggregate)  # fmt: skip
            data, rows_format = encode_for_store(rows)
            append = Append(0, job.org_id, job.key_id, len(rows), job.monthly_span_quota, data, job.deadline,
                            rows_format=rows_format)  # fmt: skip
            await send.send(Call(append, job.reply))


# Batches of fewer rows travel as MsgPack rows: encoding columns costs ~2.5 µs a column whatever
# the rows (~100 µs for a 10-span batch against ~10 for MsgPack), which the store's cheaper Native
# insert (~6 µs a row less) pays back only from about 40 rows (docs/PERFORMANCE.md, "Native rows
# for small batches"). A flush with both inserts each format on its own.
NATIVE_MIN_ROWS = 48


def encode_for_store(rows: list[tuple], rows_format: int | None = None) -> tuple[bytes, int]:
    """`rows` encoded for the store, and how (`pipeline.messages`: ROWS_NATIVE streams or
    ROWS_MSGPACK rows); by default Native from NATIVE_MIN_ROWS rows. Plain function."""
    if rows_format is None:
        rows_format = ROWS_NATIVE if len(rows) >= NATIVE_MIN_ROWS else ROWS_MSGPACK
    if rows_format == ROWS_MSGPACK:
        return encode_rows(rows), ROWS_MSGPACK
    return pack_streams(encode_streams(rows)), ROWS_NATIVE


def priced_rows(
    batch: Batch, org_id: str, table: PriceTable, *, ingested_at_ms: int, max_io_bytes: int,
    aggregate_kinds: frozenset[str] = frozenset(), rows_format: int | None = None,
) -> tuple[bytes, int]:
    """The batch's rows (`span_rows`) encoded for the store (`encode_for_store`), and their count.
    Plain function."""
    rows = span_rows(batch, org_id, table, ingested_at_ms=ingested_at_ms, max_io_bytes=max_io_bytes,
                     aggregate_kinds=aggregate_kinds)  # fmt: skip
    return encode_for_store(rows, rows_format)[0], len(rows)


def span_rows(
    batch: Batch, org_id: str, table: PriceTable, *, ingested_at_ms: int, max_io_bytes: int,
    aggregate_kinds: frozenset[str] = frozenset(),
) -> list[tuple]:
    """The batch's rows, priced (`stages.rows.span_row` tuples). Plain function.
    Spans of `aggregate_kinds` (OTLP agent/chain spans: usage summed over their children) keep
    their tokens but are not priced, unless the caller gave a cost (OTLP.md §2)."""
    rows = []
    for trace in batch.traces:
        for span in trace.spans:
            usage = span.usage
            if span.kind in aggregate_kinds and span.cost is None:
                rows.append(span_row(org_id, trace, span, AGGREGATE, ingested_at_ms=ingested_at_ms,
                                     max_io_bytes=max_io_bytes))  # fmt: skip
                continue
            price = table.price(
                provider=span.provider,
                model=span.model,
                day=span.start_time.astimezone(dt.UTC).date(),
                input_tokens=(usage.input_tokens or 0) if usage else 0,
                output_tokens=(usage.output_tokens or 0) if usage else 0,
                cache_read_tokens=(usage.cache_read_tokens or 0) if usage else 0,
                cache_write_tokens=(usage.cache_write_tokens or 0) if usage else 0,
                reasoning_tokens=(usage.reasoning_tokens or 0) if usage else 0,
                has_usage=usage is not None,
                caller_total=span.cost.total if span.cost is not None else None,
            )
            rows.append(span_row(org_id, trace, span, price, ingested_at_ms=ingested_at_ms,
                                 max_io_bytes=max_io_bytes))  # fmt: skip
    return rows
