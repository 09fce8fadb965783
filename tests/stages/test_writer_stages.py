"""The writer's stages for real: admission arithmetic, the spool stage on memory channels over a
real spool, and the flush stage into the real embedded ClickHouse (chDB), with a store that fails
on purpose for the retry and dead-letter paths."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from pipeline.config import Config
from pipeline.flush_state import FlushHealth, FlushSignal
from pipeline.jobs import SpoolJob
from pipeline.messages import (
    RECORD_PREFIX_BYTES,
    Append,
    AppendReply,
    decode_inbound,
    decode_record,
    encode,
    encode_record,
)
from pipeline.spool import Position, Spool
from pipeline.store import AsyncStore, RowFormat, Rows, open_store
from pipeline.testing import FaultyStore
from stages.admission import QuotaLedger, RateLimiter, month_of
from stages.flush import run_flush
from stages.payload import Span, Trace
from stages.price import Priced
from stages.rows import encode_rows, span_row, truncate_utf8
from stages.schema import COLUMN_NAMES, COLUMNS, TABLE, ddl
from stages.spool_stage import decide, run_spool

UTC = dt.timezone.utc


# --------------------------------------------------------------------------- admission
async def test_token_bucket_admits_at_most_rt_plus_r(autojump_clock: trio.testing.MockClock) -> None:
    limiter, rate, admitted = RateLimiter(), 4.0, 0
    start = trio.current_time()
    while trio.current_time() - start < 10.0:
        admitted += limiter.admit("k", rate, trio.current_time()).allowed
        await trio.sleep(0.01)
    assert admitted <= rate * 10 + rate
    assert admitted >= rate * 10  # and it does admit at the rate


def test_refusal_carries_retry_after_and_headers() -> None:
    limiter = RateLimiter()
    replies = [limiter.admit("k", 2.0, 100.0) for _ in range(3)]
    assert [r.allowed for r in replies] == [True, True, False]
    assert replies[2].retry_after_s == 1 and replies[2].remaining == 0 and replies[2].limit == 2.0
    assert limiter.admit("k", 2.0, 100.5).allowed  # half a second refills one token


def test_quota_ledger_month_rollover_and_persistence() -> None:
    ledger = QuotaLedger()
    ledger.charge("o", 8, 202611)
    assert ledger.allows("o", 10, 202611) and not ledger.allows("o", 8, 202611)
    restored = QuotaLedger.from_bytes(ledger.to_bytes())
    assert restored.used("o", 202611) == 8
    assert restored.used("o", 202612) == 0 and restored.allows("o", 8, 202612)
    restored.charge("o", 1, 202612)
    restored.charge("o", 5, 202611)  # a late replay of the old month does not count now
    assert restored.used("o", 202612) == 1
    assert month_of(dt.datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()) == 202612


def _job(org: str, spans: int, quota: int | None, reply=print, rows: bytes = b"x") -> SpoolJob:
    """A SpoolJob exactly as the writer's link server makes one: decoded from the frame."""
    frame = bytearray(RECORD_PREFIX_BYTES) + encode(Append(0, org, "k", spans, quota, rows))
    return SpoolJob(decode_inbound(memoryview(frame)[RECORD_PREFIX_BYTES:]), frame, reply)


def test_decide_counts_earlier_batches_of_the_same_group() -> None:
    jobs = [_job("o", 4, 5) for _ in range(3)]
    admitted, refused = decide(jobs, QuotaLedger(), 202611, spool_free_bytes=10**9)
    assert len(admitted) == 2 and [s for _, s in refused] == ["quota_exceeded"]
    admitted, refused = decide([_job("o", 1, None, rows=b"x" * 100)], QuotaLedger(), 202611, 50)
    assert not admitted and refused[0][1] == "overloaded"


def test_spool_record_keeps_the_frame_and_gives_back_the_rows() -> None:
    for size in (10, 1000, 100_000):  # bin8, bin16, bin32
        rows = bytes(range(256)) * (size // 256) + b"r" * (size % 256)
        record = decode_record(encode_record("org", 7, 202611, rows))
        assert (record.org_id, record.spans, record.month, bytes(record.rows)) == ("org", 7, 202611, rows)


async def test_spool_stage_acks_only_after_the_spool_holds_the_batch(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, flush_max_rows=3)
    replies: list[AppendReply] = []
    signal = FlushSignal()
    ledger = QuotaLedger()
    with Spool.open(tmp_path / "spool") as spool:
        send, receive = trio.open_memory_channel[SpoolJob](8)
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(run_spool, config, spool, ledger, signal, receive,
                                                  clock=lambda: 1_795_000_000.0))  # fmt: skip
            async with send:
                for spans in (2, 2, 2):
                    await send.send(_job("o", spans, 5, replies.append))
        assert [r.status for r in replies] == ["ok", "ok", "ok"]  # 0, 2, 4 < 5: the third crosses
        assert signal.input_ended and signal.wakeup.is_set()
        records, _ = spool.read(spool.checkpointed[0], max_bytes=1 << 20)
        assert len(records) == 3 and ledger.used("o", month_of(1_795_000_000.0)) == 6


# --------------------------------------------------------------------------- rows and schema
def _span(**fields) -> Span:
    base = {"id": "s1", "name": "n", "start_time": dt.datetime(2026, 11, 20, 10, tzinfo=UTC), "input": None,
            "output": None}
    base.update(fields)
    return Span(**base)


PRICE = Priced(0.1, 0.2, None, None, 0.3, True, "gpt-4o-mini", "genai-prices")


def test_row_has_one_value_per_column_and_truncates_on_a_character_boundary() -> None:
    row = span_row("org", Trace(id="t", spans=[]), _span(input='"é"'.encode()), PRICE,
                   ingested_at_ms=1, max_io_bytes=100)  # fmt: skip
    assert len(row) == len(COLUMN_NAMES) == len(COLUMNS)
    assert truncate_utf8("aé".encode(), 2) == (b"a", True)
    assert truncate_utf8(b"abc", 3) == (b"abc", False)


# --------------------------------------------------------------------------- flush into chDB
@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "clickhouse"


def _rows(n: int, trace: str = "t") -> bytes:
    spans = [_span(id=f"s{i}", end_time=dt.datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC)) for i in range(n)]
    return encode_rows(span_row("org", Trace(id=trace, spans=[]), s, PRICE, ingested_at_ms=1, max_io_bytes=100)
                       for s in spans)  # fmt: skip


async def _flush_once(config: Config, spool: Spool, store: AsyncStore, health: FlushHealth) -> None:
    signal = FlushSignal()
    signal.end()  # one final flush of everything, then return

    async def insert(table: str, fmt: RowFormat, rows: Rows, token: str, urgent: bool) -> None:
        await store.insert_rows(f"foglamp.{table}", COLUMN_NAMES, rows, fmt=fmt, dedup_token=token)

    await run_flush(config, spool, insert, QuotaLedger(), signal, health)


async def test_flush_inserts_every_spooled_row_once_even_when_replayed(tmp_path: Path, store_dir: Path) -> None:
    config = Config(data_dir=tmp_path, flush_interval_ms=50)
    store = AsyncStore(functools.partial(open_store, f"chdb://{store_dir}"), ddl("foglamp"))
    with Spool.open(tmp_path / "spool") as spool:
        spool.append([encode_record("org", 5, 202611, _rows(5, trace=f"t{i}")) for i in range(4)])
        start = spool.checkpointed[0]
        await _flush_once(config, spool, store, FlushHealth())
        assert spool.checkpointed[0] > start and spool.pending_bytes() == 0
    # A crash before the checkpoint: the same records inserted again (same rows, new token).
    with Spool.open(tmp_path / "spool2") as again:
        again.append([encode_record("org", 5, 202611, _rows(5, trace=f"t{i}")) for i in range(4)])
        await _flush_once(config, again, store, FlushHealth())
    await store.command(f"OPTIMIZE TABLE foglamp.{TABLE} FINAL")
    out = await store.query(f"SELECT count() AS c, sum(total_cost) AS cost FROM foglamp.{TABLE}", "json")
    assert json.loads(out) == {"c": 20, "cost": pytest.approx(20 * 0.3)}
    await store.close()


def _thread_nices(prefixes: tuple[str, ...]) -> set[int]:
    """Niceness of this process's threads named `prefixes`…"""
    tasks = [t for t in Path("/proc/self/task").iterdir() if (t / "comm").read_text().startswith(prefixes)]
    return {os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in tasks}


async def test_a_backed_up_spool_is_flushed_with_urgent_inserts(tmp_path: Path, store_dir: Path) -> None:
    """Urgent inserts (the spool half-way to its high-water mark) run with the store's threads at
    the writer's priority, the others at the store's niceness; every row arrives either way."""
    records = [encode_record("org", 5, 202611, _rows(5, trace=f"t{i}")) for i in range(6)]
    config = Config(data_dir=tmp_path, flush_interval_ms=50, flush_max_bytes=len(records[0]) * 2,
                    spool_high_water_bytes=len(records[0]) * 6)  # 3 blocks; urgent from 3 records on  # fmt: skip
    store = AsyncStore(functools.partial(open_store, f"chdb://{store_dir}"), ddl("foglamp"), thread_nice=3)
    calls: list[tuple[bool, int, set[int]]] = []

    async def insert(table: str, fmt: RowFormat, rows: Rows, token: str, urgent: bool) -> None:
        await store.insert_rows(f"foglamp.{table}", COLUMN_NAMES, rows, fmt=fmt, dedup_token=token, urgent=urgent)
        # After the insert, in the store's thread: its own niceness and that of the pool threads.
        own = await store._run(lambda _: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        calls.append((urgent, own, _thread_nices(("Query", "ThreadPool"))))  # the embedded ClickHouse's pools

    signal = FlushSignal()
    signal.end()
    with Spool.open(tmp_path / "spool") as spool:
        spool.append(records)
        await run_flush(config, spool, insert, QuotaLedger(), signal, FlushHealth())
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    nicer = min(base + 3, 19)
    assert [(urgent, own) for urgent, own, _ in calls] == [(True, base), (True, base), (False, nicer)]
    assert calls[0][2] == {base} and calls[2][2] == {nicer}  # the insert's pool threads follow
    out = await store.query(f"SELECT count() AS c FROM foglamp.{TABLE}", "json")
    assert json.loads(out) == {"c": 30}
    await store.close()


@pytest.mark.parametrize(("parallel", "mark_records", "at_once"), [(1, 1, 1), (2, 1, 2), (3, 1, 3), (3, 100, 3)])
async def test_a_backed_up_spool_is_inserted_in_parallel_and_checkpointed_once_all_are_in(
    tmp_path: Path, store_dir: Path, parallel: int, mark_records: int, at_once: int
) -> None:
    """Behind (a whole further block waits), up to `flush_parallel_inserts` blocks at once, each
    through its own handle (thread) on the same embedded store, at the writer's priority when urgent
    (the spool half-way to its high-water mark) and niced otherwise; the checkpoint moves past a
    round only when every block of it is in."""
    records = [encode_record("org", 5, 202611, _rows(5, trace=f"p{parallel}-{mark_records}-{i}")) for i in range(8)]
    config = Config(data_dir=tmp_path, flush_interval_ms=50, flush_max_bytes=len(records[0]) * 2,
                    spool_high_water_bytes=len(records[0]) * mark_records,
                    flush_parallel_inserts=parallel)  # 4 blocks of 2 records  # fmt: skip
    store = AsyncStore(functools.partial(open_store, f"chdb://{store_dir}"), ddl("foglamp"), inserts=parallel,
                       thread_nice=3)  # fmt: skip
    running, most, checkpoints, nices = 0, 0, [], set()

    async def insert(table: str, fmt: RowFormat, rows: Rows, token: str, urgent: bool) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.05)  # long enough for every block of the round to start
        try:
            await store.insert_rows(f"foglamp.{table}", COLUMN_NAMES, rows, fmt=fmt, dedup_token=token, urgent=urgent)
            nices.update((urgent, os.getpriority(os.PRIO_PROCESS, lane.thread._thread.native_id))
                         for lane in store._lanes if lane.thread is not None)  # fmt: skip
        finally:
            running -= 1

    class Watched(Spool):
        def checkpoint(self, position: Position, state: bytes) -> None:
            checkpoints.append((position, running))
            super().checkpoint(position, state)

    # Already urgent before the other handles' threads exist: they must start at that priority.
    await store._run(lambda _: None, urgent=mark_records == 1)
    signal = FlushSignal()
    signal.end()
    with Watched.open(tmp_path / "spool") as spool:
        spool.append(records)
        await run_flush(config, spool, insert, QuotaLedger(), signal, FlushHealth())
        assert spool.pending_bytes() == 0
    assert most == at_once  # the first round takes `parallel` of the 4 blocks
    assert [lane.thread is not None for lane in store._lanes] == [i < most for i in range(parallel)]  # one per insert
    assert all(busy == 0 for _, busy in checkpoints)  # never past a block still being inserted
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    # every handle's thread, even one started while inserts were urgent, at the right priority
    assert nices == ({(True, base)} if mark_records == 1 else {(False, min(base + 3, 19))})
    mine = f"trace_id LIKE 'p{parallel}-{mark_records}-%'"
    out = await store.query(f"SELECT count() AS c FROM foglamp.{TABLE} WHERE {mine}", "json")
    assert json.loads(out) == {"c": 40}
    await store.close()


async def _paced_flush(tmp_path: Path, store_dir: Path, config: Config, batches: int, every_s: float) -> list[bool]:
    """Append `batches` records of 5 rows, `every_s` apart, as the spool stage does (spool, then
    signal), while the flush stage runs into chDB; then end the input. Whether each insert started
    after the input ended (the final flush)."""
    store = AsyncStore(functools.partial(open_store, f"chdb://{store_dir}"), ddl("foglamp"))
    signal = FlushSignal()
    inserted: list[bool] = []

    async def insert(table: str, fmt: RowFormat, rows: Rows, token: str, urgent: bool) -> None:
        inserted.append(signal.input_ended)
        await store.insert_rows(f"foglamp.{table}", COLUMN_NAMES, rows, fmt=fmt, dedup_token=token, urgent=urgent)

    with Spool.open(tmp_path / "spool") as spool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_flush, config, spool, insert, QuotaLedger(), signal, FlushHealth())
            for i in range(batches):
                record = encode_record("org", 5, 202611, _rows(5, trace=f"paced-{i}"))
                await trio.to_thread.run_sync(spool.append, [record])
                signal.add(5, config, spool.pending_bytes())
                await trio.sleep(every_s)
            signal.end()
        assert spool.pending_bytes() == 0
    out = await store.query(f"SELECT count() AS c FROM foglamp.{TABLE}", "json")
    assert json.loads(out) == {"c": batches * 5}
    await store.close()
    return inserted


async def test_a_trickle_of_batches_is_inserted_once_per_flush_interval(tmp_path: Path, store_dir: Path) -> None:
    """60 small batches over 1.5 s, a 0.4 s interval: a few inserts (each a part to merge), not
    one per batch."""
    config = Config(data_dir=tmp_path, flush_interval_ms=400)
    final = await _paced_flush(tmp_path, store_dir, config, batches=60, every_s=0.025)
    assert 2 <= len(final) <= 8 and final.count(False) >= 1


async def test_an_idle_flush_on_a_fresh_spool_reads_once_per_interval(tmp_path: Path) -> None:
    """A new node's spool never held a record: the flush is caught up all the same, and looks
    again once per interval instead of reading without pause (a new node's writer spun at ~80 %
    of a core until its first batch)."""
    reads: list[Position] = []

    class CountedSpool(Spool):
        def read(self, start: Position, *, max_bytes: int, max_records: int | None = None
                 ) -> tuple[list[memoryview], Position]:  # fmt: skip
            reads.append(start)
            return super().read(start, max_bytes=max_bytes, max_records=max_records)

    async def insert(table: str, rows: list, token: str, urgent: bool) -> None:
        raise AssertionError("nothing was spooled")

    config = Config(data_dir=tmp_path, flush_interval_ms=200)
    with CountedSpool.open(tmp_path / "spool") as spool:
        with trio.move_on_after(1.0):
            await run_flush(config, spool, insert, QuotaLedger(), FlushSignal(), FlushHealth())
    assert 1 <= len(reads) <= 7  # about one per 0.2 s


@pytest.mark.parametrize(("max_records", "high_water_records"), [(2, 1000), (1000, 4)])
async def test_a_full_block_is_inserted_without_waiting_for_the_interval(
    tmp_path: Path, store_dir: Path, max_records: int, high_water_records: int
) -> None:
    """Blocks of two batches, by `flush_max_bytes` or by half a small high-water mark (past which
    admissions would wait for the flush), and an interval far longer than the test: the spool
    stage's signal wakes the flush for every full block, and the final flush takes the rest."""
    record_bytes = len(encode_record("org", 5, 202611, _rows(5, trace="paced-0")))
    config = Config(data_dir=tmp_path, flush_interval_ms=600_000, flush_max_bytes=record_bytes * max_records,
                    spool_high_water_bytes=record_bytes * high_water_records)  # fmt: skip
    with trio.fail_after(60):  # the interval is 10 minutes
        final = await _paced_flush(tmp_path, store_dir, config, batches=6, every_s=0.2)
    assert final.count(False) >= 2  # at least two full blocks before the end


async def test_flush_retries_through_an_outage_and_deadletters_refused_blocks(tmp_path: Path, store_dir: Path) -> None:
    fault = tmp_path / "fault"
    fault.write_text("down")
    config = Config(data_dir=tmp_path, flush_interval_ms=20, flush_retry_max_s=0.05)
    opener = functools.partial(lambda: FaultyStore(open_store(f"chdb://{store_dir}"), fault))
    store = AsyncStore(opener, ddl("foglamp"))
    health = FlushHealth()
    with Spool.open(tmp_path / "spool") as spool:
        spool.append([encode_record("org", 3, 202611, _rows(3))])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_flush_once, config, spool, store, health)
            while health.failures < 3:
                await trio.sleep(0.02)
            assert not health.store_ok and spool.pending_bytes() > 0  # retrying, nothing lost
            fault.unlink()
        assert health.store_ok and health.rows_flushed == 3 and spool.pending_bytes() == 0
        fault.write_text("permanent")
        spool.append([encode_record("org", 2, 202611, _rows(2, trace="bad"))])
        await _flush_once(config, spool, store, health)
        assert health.deadlettered_records == 1 and spool.pending_bytes() == 0
        assert list((tmp_path / "deadletter").glob("*.records"))
    fault.unlink()
    out = await store.query(f"SELECT count() AS c FROM foglamp.{TABLE}", "json")
    assert json.loads(out) == {"c": 3}
    await store.close()


async def test_a_refused_batch_is_deadlettered_alone_and_its_block_mates_are_stored(
    tmp_path: Path, store_dir: Path
) -> None:
    config = Config(data_dir=tmp_path, flush_interval_ms=20)
    store = AsyncStore(functools.partial(open_store, f"chdb://{store_dir}"), ddl("foglamp"))
    health = FlushHealth()
    poison = b"\x01\x02\x03"  # not rows of this table: ClickHouse refuses the block
    with Spool.open(tmp_path / "spool") as spool:
        spool.append([encode_record("org", 2, 202611, _rows(2, trace="a")),
                      encode_record("org", 1, 202611, poison),
                      encode_record("org", 3, 202611, _rows(3, trace="b"))])  # fmt: skip
        await _flush_once(config, spool, store, health)
        assert spool.pending_bytes() == 0
    assert health.deadlettered_records == 1 and health.rows_flushed == 5
    out = await store.query(f"SELECT count() AS c FROM foglamp.{TABLE}", "json")
    assert json.loads(out) == {"c": 5}
    (deadletter,) = (tmp_path / "deadletter").glob("*.records")
    assert poison in deadletter.read_bytes()
    await store.close()


def test_a_limit_below_one_per_second_still_admits_and_full_buckets_are_forgotten() -> None:
    limiter = RateLimiter(sweep_every=4)
    assert limiter.admit("slow", 0.5, 0.0).allowed  # a burst of at least one request
    assert not limiter.admit("slow", 0.5, 1.0).allowed
    assert limiter.admit("slow", 0.5, 2.0).allowed  # one token per 2 s
    assert "slow" in limiter.buckets
    limiter.admit("other", 10.0, 100.0)  # the fourth call sweeps: "slow" has long refilled
    assert "slow" not in limiter.buckets and "other" in limiter.buckets
