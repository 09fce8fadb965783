"""The flush stage (writer process): spool → ClickHouse, in large blocks, then checkpoint.

It tails the spool from the last checkpoint: as soon as a full block waits (`flush_max_rows` rows
or `flush_max_bytes`), and otherwise every `flush_interval_ms`, it reads what the spool holds (up
to `flush_max_bytes`), inserts the rows as one Native block (the batches' column streams joined,
`stages.native.stitch`) and checkpoints the spool past them, with the quota ledger of everything
flushed so far. A crash between insert and checkpoint replays the block, which the table
deduplicates (insert token + ReplacingMergeTree). Batches spooled as MsgPack rows by an earlier
version go in a second insert of their own (`FORMAT MsgPack`), whose token is derived from the
same range.

Error handling: a `RetryableError` (store down, timeout) is retried with capped exponential
backoff, forever: the data is safe in the spool, and the spool cap turns a long outage into 503s
at the front. A `PermanentError` (the store refuses the block itself) splits the block into its
batches; a batch the store still refuses is moved to `<data dir>/deadletter/` with an error log
line, so one bad batch can neither stall the node nor take good batches with it; an operator
can inspect and replay it. A full disk is never a refusal (it is retried), and a dead-letter file
that cannot be written is retried too: the batch stays in the spool meanwhile.

Resource handling: the stage returns after a final flush once the spool stage has ended
(`FlushSignal.input_ended`); the caller bounds that final flush with the drain deadline.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from pipeline import metrics
from pipeline.config import Config
from pipeline.disk import fsync_directory
from pipeline.errors import PermanentError, RetryableError
from pipeline.flush_state import FlushHealth, FlushSignal
from pipeline.log import get_logger
from pipeline.messages import ROWS_MSGPACK, decode_record, unpack_streams
from pipeline.spool import Position, Spool
from stages.admission import QuotaLedger
from stages.native import stitch
from stages.schema import TABLE

if TYPE_CHECKING:
    from pipeline.store import RowFormat, Rows

log = get_logger("flush")

# (table, "Native" or "MsgPack", rows in COLUMNS order as one buffer or consecutive ones, dedup
# token, urgent: the spool is half-way to its high-water mark, past which admissions wait for the flush)
Insert = Callable[[str, "RowFormat", "Rows", str, bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Part:
    """One insert of a block: its batches' rows in one format, and its deduplication token."""

    fmt: RowFormat
    rows: list[memoryview]  # each batch's rows (views into the records)
    counts: list[int]  # each batch's row count
    token: str

    def data(self) -> Rows:
        """The insert's bytes: Native batches stitched into one block, MsgPack batches as they
        are (inserted back to back). PermanentError if a Native batch does not fit the schema."""
        if self.fmt == "MsgPack":
            return self.rows
        try:
            return stitch([(n, unpack_streams(rows)) for n, rows in zip(self.counts, self.rows, strict=True)])
        except (ValueError, struct.error) as exc:
            raise PermanentError(f"Native rows do not fit the schema: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Block:
    token: str  # the spool range: the same range always gets the same token(s)
    parts: list[Part]  # one insert per rows format in the block (almost always one: Native)
    row_count: int
    records: list[memoryview]  # spool payloads, views into the spool's read buffer
    charges: list[tuple[str, int, int]]  # (org, spans, month) per record, for the flushed ledger


def make_block(token: str, records: list[memoryview]) -> Block:
    """Spool records as one block: one insert of the Native batches (stitched into one Native block
    when inserted, `Part.data`) and one of MsgPack batches (spooled by earlier versions). With both,
    each part's token is the range's with its format appended, so a replay gets the same tokens.
    Plain function."""
    decoded = [decode_record(r) for r in records]
    parts: list[Part] = []
    for fmt in ("Native", "MsgPack"):
        batches = [d for d in decoded if (d.rows_format == ROWS_MSGPACK) == (fmt == "MsgPack")]
        if batches:
            parts.append(Part(fmt, [d.rows for d in batches], [d.spans for d in batches], token))
    if len(parts) > 1:
        parts = [Part(p.fmt, p.rows, p.counts, f"{token}/{p.fmt}") for p in parts]
    return Block(
        token=token,
        parts=parts,
        row_count=sum(d.spans for d in decoded),
        records=records,
        charges=[(d.org_id, d.spans, d.month) for d in decoded],
    )


def range_token(start: Position, end: Position) -> str:
    return f"{start.segment}:{start.offset}-{end.segment}:{end.offset}"


def backoff_s(attempt: int, cap_s: float) -> float:
    return min(cap_s, 0.1 * (2 ** min(attempt, 20)))


async def run_flush(
    config: Config,
    spool: Spool,
    insert: Insert,
    flushed_ledger: QuotaLedger,
    signal: FlushSignal,
    health: FlushHealth,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    cursor, _ = spool.checkpointed
    pace = Pace(config.flush_interval_ms / 1000)
    task_status.started()
    while True:
        with trio.move_on_after(pace.wait_s(trio.current_time())):
            await signal.wakeup.wait()
        final = signal.input_ended
        signal.reset()
        cursor = await _flush_all(config, spool, insert, flushed_ledger, health, cursor, pace, signal, drain=final)
        if final:
            log.info("final_flush_done", rows_flushed=health.rows_flushed)
            return


@dataclass(slots=True)
class Pace:
    """When a block that is not full is inserted: once the flush has not read up to the spool's end
    for `interval_s`, so no row waits much longer than that, and a slow trickle of batches becomes one
    insert per interval rather than one per batch (every insert makes a part, and parts cost
    merges). Full blocks never wait. Plain state, driven by the flush with trio's clock."""

    interval_s: float
    caught_up_at: float = -math.inf  # when the flush last read up to the spool's end

    def due(self, now: float) -> bool:
        return now - self.caught_up_at >= self.interval_s

    def wait_s(self, now: float) -> float:
        return max(0.0, self.caught_up_at + self.interval_s - now)


async def _flush_all(
    config: Config,
    spool: Spool,
    insert: Insert,
    flushed_ledger: QuotaLedger,
    health: FlushHealth,
    cursor: Position,
    pace: Pace,
    signal: FlushSignal,
    *,
    drain: bool = False,
) -> Position:
    """Flush the spool after `cursor` while a full block waits, and the rest once it is due (see
    `Pace`), or everything when `drain`ing; return the new cursor.

    When the flush is behind (a whole further block waits), up to `flush_parallel_inserts` blocks
    are inserted at once, each through its own store handle, and checkpointed together once all
    are in; the next block is read while they are, so the store never waits for the spool. When it
    is urgent (the spool is half-way to its high-water mark, past which admissions wait for the
    flush), the store's threads run at the writer's priority instead of INGEST_STORE_NICE: the flush
    catches up before clients are held back. Below that the inserts take the CPU the requests
    leave: a node that keeps up answers fast. At most max(2, parallel) blocks are held
    (× `flush_max_bytes`)."""
    parallel = config.flush_parallel_inserts
    read_block = functools.partial(spool.read, max_bytes=config.flush_max_bytes)

    async def read(start: Position) -> tuple[list[memoryview], Position]:
        durable, started = spool.end, trio.current_time()
        records, end = await trio.to_thread.run_sync(read_block, start)
        # Read up to the spool's end (what was not read arrived after `started`), or found nothing
        # to read: on a spool that never held a record, `end` stays before the empty segment's
        # header, and a flush that took that for "behind" would read again at once, without end.
        if end >= durable or not records:
            pace.caught_up_at = started
        return records, end

    def more() -> bool:  # a full block waits, or the rest is due
        return drain or signal.full(config, spool.pending_bytes()) or pace.due(trio.current_time())

    def behind(held: int) -> bool:  # a whole further block waits beyond the `held` bytes
        return spool.pending_bytes() - held >= config.flush_max_bytes

    if not more():
        return cursor
    records, end = await read(cursor)
    while True:
        if not records:
            if end != cursor:  # the spool skipped corrupt bytes: move the checkpoint past them
                await trio.to_thread.run_sync(spool.checkpoint, end, flushed_ledger.to_bytes())
            return end
        blocks = [make_block(range_token(cursor, end), records)]
        held = sum(map(len, records))
        urgent = spool.pending_bytes() >= config.spool_high_water_bytes // 2  # half-way to the mark
        ahead = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_insert_or_deadletter, config, insert, blocks[0], health, urgent)
            while behind(held) and len(blocks) < max(2, parallel):
                ahead = await read(end)
                if len(blocks) == parallel or not ahead[0]:
                    break  # read ahead for the next round
                (records, next_end), ahead = ahead, None
                blocks.append(make_block(range_token(end, next_end), records))
                nursery.start_soon(_insert_or_deadletter, config, insert, blocks[-1], health, urgent)
                end, held = next_end, held + sum(map(len, records))
        for block in blocks:
            for org_id, spans, month in block.charges:
                flushed_ledger.charge(org_id, spans, month)
        await trio.to_thread.run_sync(spool.checkpoint, end, flushed_ledger.to_bytes())
        cursor = end
        if ahead is not None:
            records, end = ahead
        elif more():
            records, end = await read(cursor)
        else:
            return cursor


async def _insert_or_deadletter(
    config: Config, insert: Insert, block: Block, health: FlushHealth, urgent: bool
) -> None:
    """Insert the block; if the store refuses it, insert its batches one by one so that only the
    refused ones go to the dead-letter directory."""
    try:
        await _insert_with_retry(config, insert, block, health, urgent)
        return
    except PermanentError as exc:
        refused = exc
    if len(block.records) > 1:
        log.warning("flush_block_refused_splitting", error=str(refused), records=len(block.records))
        for i, record in enumerate(block.records):
            await _insert_or_deadletter(config, insert, make_block(f"{block.token}#{i}", [record]), health, urgent)
        return
    await deadletter_or_wait(config, block, health, refused)


async def deadletter_or_wait(config: Config, block: Block, health: FlushHealth, refused: Exception) -> None:
    """Move a refused batch to the dead-letter directory; while that cannot be written (a full
    disk, an I/O error), wait and try again: the batch stays in the spool, which is not
    checkpointed past it, so nothing is lost and the writer does not crash."""
    attempt = 0
    while True:
        try:
            path = await trio.to_thread.run_sync(write_deadletter, config.data_dir / "deadletter", block)
        except OSError as exc:
            health.store_ok, health.last_error = False, f"cannot write deadletter: {exc}"
            delay = backoff_s(attempt, config.flush_retry_max_s)
            log.error("deadletter_write_failed", error=str(exc), rows=block.row_count, retry_in_s=delay)
            attempt += 1
            await trio.sleep(delay)
            continue
        health.deadlettered_records += 1
        log.error("flush_rejected", error=str(refused), rows=block.row_count, deadletter=str(path))
        return


async def _insert_with_retry(config: Config, insert: Insert, block: Block, health: FlushHealth, urgent: bool) -> None:
    """Insert, retrying retryable failures forever with capped backoff; PermanentError propagates."""
    attempt = done = 0  # parts inserted: a retry goes on with the next
    while True:
        started = time.perf_counter()
        try:
            for part in block.parts[done:]:
                data = await trio.to_thread.run_sync(part.data)  # the stitch: off the event loop
                await insert(TABLE, part.fmt, data, part.token, urgent)
                done += 1
        except RetryableError as exc:
            health.store_ok, health.last_error = False, str(exc)
            health.failures += 1
            metrics.flush_failures.labels("retryable").inc()
            metrics.store_up.set(0)
            delay = backoff_s(attempt, config.flush_retry_max_s)
            log.warning("flush_failed", error=str(exc), rows=block.row_count, retry_in_s=delay)
            attempt += 1
            await trio.sleep(delay)
            continue
        except PermanentError:  # a full disk never gets here: pipeline.store classifies it retryable
            health.failures += 1
            metrics.flush_failures.labels("permanent").inc()
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        health.store_ok, health.last_error = True, ""
        health.rows_flushed += block.row_count
        metrics.flush_rows.inc(block.row_count)
        metrics.flush_seconds.observe(elapsed_ms / 1000)
        metrics.store_up.set(1)
        log.info("flushed", rows=block.row_count, bytes=sum(map(len, block.records)), ms=round(elapsed_ms, 1),
                 urgent=urgent)  # fmt: skip
        return


def write_deadletter(directory: Path, block: Block) -> Path:
    """Keep a refused block's spool records, length-prefixed, for the operator: on the disk (file
    and directory fsynced) before the flush checkpoints the spool past them."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{block.token.replace(':', '_').replace('#', '_')}.records"
    partial = path.with_suffix(".partial")
    try:
        with open(partial, "wb") as out:
            out.writelines(len(record).to_bytes(4, "big") + record for record in block.records)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)
        fsync_directory(directory)
    except OSError:
        partial.unlink(missing_ok=True)  # a half-written file is not a dead letter
        raise
    return path
