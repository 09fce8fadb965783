"""The topology: which stage feeds which, through what capacity. Read this file top-down.

    front worker process (N of them)                         writer process (one)
    ─────────────────────────────────                        ─────────────────────────────────
    HTTP front ──validate_capacity──► validate               link server (Unix socket)
      │ Admit (rate limit)              │                      │ Admit  → rate limiter (in place)
      │                                 ▼                      │ Append ──spool_capacity──► spool
      │                     price_capacity                     │ Query, Status, Usage → in place│
      │                                 ▼                      │                     FlushSignal│
      │                               price                    ▼                                ▼
      └──────────────► link_capacity ──► link ═══ frames ═══► (one connection per front)   flush ─► ClickHouse

Channels carry whole batches, never single spans. Start order is downstream first (each stage
is started, and ready, before the stage that feeds it); stop order is upstream first: the HTTP
front stops taking requests, then closes its channel ends, and end-of-input flows down, so every
stage drains into a live consumer. Each `run_*` here is one process's whole life.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from pipeline import metrics
from pipeline.config import Config
from pipeline.controlplane_pg import open_controlplane
from pipeline.drain import DrainState, stdin_closed, watch_for_drain
from pipeline.errors import PermanentError, RetryableError
from pipeline.jobs import Job
from pipeline.link import Call, run_link, writer_readiness
from pipeline.link_server import Reply, serve_links
from pipeline.log import get_logger
from pipeline.messages import (
    Admit,
    AppendView,
    Query,
    QueryReply,
    Status,
    Usage,
    UsageReply,
    WriterInbound,
    decode_record,
)
from pipeline.priority import MERGE_THREAD_PREFIXES, keep_threads_nice
from pipeline.spool import Spool
from stages.admission import QuotaLedger, RateLimiter, month_of
from stages.flush import FlushHealth, run_flush, status_reply
from stages.front import create_app, run_front
from stages.price import PriceTable
from stages.price_stage import run_price
from stages.redis_admission import Request, redis_batcher
from stages.redis_quota import quota_gate
from stages.schema import COLUMN_NAMES, TABLE
from stages.schema_cluster import schema_ddl
from stages.spool import FlushSignal, SpoolJob, run_spool
from stages.validate_stage import run_validate

if TYPE_CHECKING:
    from pipeline.store import AsyncStore, Store

log = get_logger("topology")


# =========================================================================== front worker
async def run_front_worker(config: Config, listen_fd: int) -> None:
    controlplane = open_controlplane(config)
    table = PriceTable.load(config.prices_file or None)
    state = DrainState()
    link_send, link_receive = trio.open_memory_channel[Call](config.link_capacity)
    price_send, price_receive = trio.open_memory_channel[Job](config.price_capacity)
    validate_send, validate_receive = trio.open_memory_channel[Job](config.validate_capacity)
    front_link = link_send.clone()

    async def readiness() -> tuple[int, dict]:
        return await writer_readiness(front_link)

    async def shutdown_trigger() -> None:
        await state.started.wait()
        await trio.sleep(config.drain_grace_s)  # the listener stays open, answering 503 draining

    app = create_app(config, controlplane, state, validate_send, front_link, readiness)
    try:
        async with trio.open_nursery() as signals:
            signals.start_soon(watch_for_drain, state)
            channels = {"validate": validate_send, "price": price_send, "link": link_send}
            signals.start_soon(metrics.sample_channels, channels)
            async with trio.open_nursery() as nursery:
                await nursery.start(run_link, config.writer_socket, link_receive)
                await nursery.start(run_price, config, table, price_receive, link_send)
                await nursery.start(run_validate, config, validate_receive, price_send)
                async with validate_send, front_link:
                    await run_front(config, app, listen_fd, shutdown_trigger)
                # Every request is answered and our channel ends are closed: the stages drain.
            signals.cancel_scope.cancel()
    finally:
        controlplane.close()
    log.info("front_stopped")


# =========================================================================== writer
async def run_writer(config: Config) -> None:
    """The writer process: store owner, spool, admission state. Stops when stdin closes."""
    # Imported here, not at the top: only the writer needs the store client (~20 MB per process).
    from pipeline.store import AsyncStore
    embedded = config.store_url.startswith("chdb://")  # the store's threads are this process's
    store = AsyncStore(functools.partial(store_opener, config), schema_ddl(config),
                       thread_nice=config.store_nice if embedded else 0,
                       inserts=config.flush_parallel_inserts)  # fmt: skip
    await connect_once(store)
    spool = Spool.open(config.spool_dir, segment_max_bytes=config.spool_segment_bytes)
    flushed_ledger, ledger = replay_ledgers(spool)
    limiter = RateLimiter()
    flush_signal = FlushSignal()
    health = FlushHealth()
    spool_send, spool_receive = trio.open_memory_channel[SpoolJob](config.spool_capacity)
    database = config.clickhouse_database

    def clock() -> float:
        return time.time() + config.clock_offset_s

    async def insert(table: str, rows: list[memoryview], token: str, urgent: bool) -> None:
        await store.insert_msgpack(f"`{database}`.`{table}`", COLUMN_NAMES, rows, dedup_token=token, urgent=urgent)

    def backed_up() -> bool:
        return spool.pending_bytes() >= config.spool_high_water_bytes

    batcher = redis_batcher(config)  # None: the in-process limiter (one node)

    def admit(message: Admit, reply: Reply) -> None:
        if batcher is not None:
            return batcher.submit(Request(message.key_id, message.rate_limit_rps, message.req_id), reply)
        reply(limiter.admit(message.key_id, message.rate_limit_rps, time.monotonic(), message.req_id))

    async def admit_when_flushed(message: Admit, reply: Reply) -> None:
        """Backpressure: past the spool's high-water mark an admission waits (at most
        `admit_max_wait_ms`) for the flush to catch up, so the fronts do not accept faster than
        the store takes rows; meanwhile the request's body is not even read."""
        with trio.move_on_after(config.admit_max_wait_ms / 1000):
            while backed_up():
                await trio.sleep(0.05)
        admit(message, reply)

    async def dispatch(message: WriterInbound, frame: bytearray, reply: Reply) -> None:
        if isinstance(message, Admit):
            if not backed_up():
                admit(message, reply)
            else:
                metrics.admissions_delayed.inc()
                nursery.start_soon(admit_when_flushed, message, reply)
        elif isinstance(message, AppendView):
            await spool_send.send(SpoolJob(message, frame, reply))
        elif isinstance(message, Query):
            await answer_query(store, message, reply)
        elif isinstance(message, Status):
            reply(status_reply(message.req_id, config, spool, health))
        elif isinstance(message, Usage):
            month = month_of(clock())
            reply(UsageReply(message.req_id, month, {org: ledger.used(org, month) for org in ledger.usage}))

    async with trio.open_nursery() as nursery:
        flush_scope = trio.CancelScope()
        flushed_all = trio.Event()

        async def flush() -> None:
            try:
                with flush_scope:
                    await run_flush(config, spool, insert, flushed_ledger, flush_signal, health)
            finally:
                flushed_all.set()

        nursery.start_soon(flush)
        if batcher is not None:
            nursery.start_soon(batcher.run)
        await nursery.start(
            functools.partial(run_spool, config, spool, ledger, flush_signal, spool_receive, clock=clock,
                              gate=quota_gate(config, ledger))
        )
        links_scope = trio.CancelScope()

        async def links(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with links_scope:
                await serve_links(config.writer_socket, dispatch, task_status=task_status)

        await nursery.start(links)

        def spool_gauges() -> None:
            metrics.spool_pending_bytes.set(spool.pending_bytes())
            metrics.spool_max_bytes.set(config.spool_max_bytes)

        nursery.start_soon(metrics.sample_channels, {"spool": spool_send}, spool_gauges)
        nursery.start_soon(sample_active_parts, store, database)
        if embedded and (config.merge_nice or config.merge_sched_idle):
            nursery.start_soon(functools.partial(keep_threads_nice, MERGE_THREAD_PREFIXES, config.merge_nice,
                                                 idle=config.merge_sched_idle))  # fmt: skip
        print("READY", flush=True)  # the supervisor starts the fronts on this line
        log.info("writer_ready", spool_pending_bytes=spool.pending_bytes())
        await stdin_closed()  # the supervisor's order, given once every front is gone
        # Drain: every front is gone. Stop the links, end the spool stage, final flush (bounded).
        links_scope.cancel()
        await spool_send.aclose()
        flush_scope.deadline = trio.current_time() + config.drain_timeout_s
        await flushed_all.wait()
        nursery.cancel_scope.cancel()  # what runs until cancelled: the metrics sampler, renicing,
        # admissions still waiting (their fronts are gone)
    if flush_scope.cancelled_caught:
        log.warning("drain_timeout", left_in_spool_bytes=spool.pending_bytes())
    spool.close()
    await store.close()
    config.writer_socket.unlink(missing_ok=True)
    log.info("writer_stopped", rows_flushed=health.rows_flushed)


def store_opener(config: Config) -> Store:
    from pipeline.store import open_store
    from pipeline.testing import FaultyStore

    store = open_store(config.store_url)
    if config.store_fault_file:
        return FaultyStore(store, Path(config.store_fault_file))
    return store


async def connect_once(store: AsyncStore) -> None:
    try:
        await store.connect()
    except RetryableError as exc:
        log.warning("store_unreachable_at_start", error=str(exc))


def replay_ledgers(spool: Spool) -> tuple[QuotaLedger, QuotaLedger]:
    """(ledger of what is flushed, live ledger): the checkpoint's, plus the spool's unflushed records."""
    position, state = spool.checkpointed
    flushed = QuotaLedger.from_bytes(state)
    live = QuotaLedger.from_bytes(state)
    while True:
        records, position = spool.read(position, max_bytes=64 << 20)
        if not records:
            return flushed, live
        for payload in records:
            record = decode_record(payload)
            live.charge(record.org_id, record.spans, record.month)


async def sample_active_parts(store: AsyncStore, database: str, interval_s: float = 2.0) -> None:
    """/metrics: the spans table's active parts, every `interval_s` (merges that fall behind, e.g.
    at INGEST_MERGE_NICE under a long saturating load, show here first). Runs until cancelled; a
    store that does not answer is skipped (the flush stage reports it)."""
    sql = (f"SELECT count() AS c FROM system.parts WHERE active AND database = '{database}' "
           f"AND table = '{TABLE}'")  # fmt: skip
    while True:
        with contextlib.suppress(RetryableError, PermanentError):
            metrics.store_active_parts.set(int((await store.query(sql, "tsv")).split()[-1]))
        await trio.sleep(interval_s)


async def answer_query(store: AsyncStore, message: Query, reply: Reply) -> None:
    try:
        data = await store.query(message.sql, message.format)
        reply(QueryReply(message.req_id, True, data))
    except Exception as exc:  # noqa: BLE001 - reported to the CLI user as the query's error
        reply(QueryReply(message.req_id, False, b"", str(exc)))


# =========================================================================== process entry points
def writer_main(config: Config) -> int:
    # Signals are the supervisor's business: the writer stops when the supervisor closes stdin,
    # after every front is gone, so a Ctrl-C to the whole process group cannot cut a flush short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trio.run(run_writer, config)
    return 0


def front_main(config: Config, listen_fd: int) -> int:
    trio.run(run_front_worker, config, listen_fd)
    return 0


def preflight(config: Config) -> None:
    """Fail at start, with a clear message, on what would fail later: a bad prices file, an
    unusable data dir or control plane."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    PriceTable.load(config.prices_file or None)
    open_controlplane(config).close()
