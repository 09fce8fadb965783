"""The topology: every process, its stages and the channels between them. Read top-down.

    front worker process (N of them)                         writer process (one)
    ─────────────────────────────────                        ─────────────────────────────────
    HTTP front ──validate_capacity──► validate               link server (Unix socket)
      │ Admit (rate limit)              │                      │ each message → route
      │                                 ▼                      │   Admit  → rate limiter (in place)
      │                     price_capacity                     │   Append ──spool_capacity──► spool
      │                                 ▼                      │   Query, Status, Usage → in place│
      │                               price                    ▼                       FlushSignal│
      │                                 │                   (one connection per front)          ▼
      └──────────────► link_capacity ──► link ═══ frames ═══►                          flush ─► ClickHouse

Channels carry whole batches, never single spans. Each process is a nesting of nurseries: the
innermost holds the most upstream stage. Stages start downstream first (each is started, and
ready, before the stage that feeds it) and stop upstream first: the innermost nursery ends, its
channel ends close, and end-of-input flows down, so every stage drains into a live consumer.
Each nursery that can outlive its welcome has its own deadline.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import trio

from pipeline import metrics
from pipeline.config import Config
from pipeline.controlplane import open_controlplane
from pipeline.drain import DrainState, stdin_closed, watch_for_drain
from pipeline.flush_state import FlushHealth, FlushSignal
from pipeline.jobs import Job, SpoolJob
from pipeline.link import Call, run_link, writer_readiness
from pipeline.link_server import serve_links
from pipeline.log import get_logger
from pipeline.priority import MERGE_THREAD_PREFIXES, keep_threads_nice
from stages.admission import RateLimiter, replay_ledgers
from stages.flush import run_flush
from stages.front import create_app, run_front
from stages.price import PriceTable
from stages.price_stage import run_price
from stages.redis_admission import redis_batcher
from stages.redis_quota import quota_gate
from stages.route import Routes, dispatch
from stages.schema import COLUMN_NAMES, TABLE
from stages.schema_cluster import schema_ddl
from stages.spool_stage import run_spool
from stages.validate_stage import run_validate

if TYPE_CHECKING:
    from pipeline.store import RowFormat, Rows

log = get_logger("topology")


# =========================================================================== front worker
async def run_front_worker(config: Config, listen_fd: int) -> None:
    controlplane = open_controlplane(config)
    table = PriceTable.load(config.prices_file or None)
    state = DrainState()
    link_send, link_receive = trio.open_memory_channel[Call](config.link_capacity)
    price_send, price_receive = trio.open_memory_channel[Job](config.price_capacity)
    validate_send, validate_receive = trio.open_memory_channel[Job](config.validate_capacity)
    front_link = link_send.clone()  # the front's own calls: admissions, /readyz

    async def readiness() -> tuple[int, dict]:
        return await writer_readiness(front_link, config.readiness_timeout_s)

    async def shutdown_trigger() -> None:
        await state.started.wait()
        await trio.sleep(config.drain_grace_s)  # the listener stays open, answering 503 draining

    app = create_app(config, controlplane, state, validate_send, front_link, readiness)
    try:
        async with trio.open_nursery() as background:  # until cancelled: drain trigger, gauges
            background.start_soon(watch_for_drain, state)
            channels: dict[str, trio.MemorySendChannel[Any]] = {"validate": validate_send, "price": price_send,
                                                                "link": link_send}  # fmt: skip
            background.start_soon(metrics.sample_channels, channels)
            async with trio.open_nursery() as stages:  # ends when end-of-input reaches the link
                await stages.start(run_link, config.writer_socket, link_receive)
                await stages.start(run_price, config, table, price_receive, link_send)
                await stages.start(run_validate, config, validate_receive, price_send)
                async with validate_send, front_link:
                    await run_front(config, app, listen_fd, shutdown_trigger)
                # Every request is answered and our channel ends are closed: the stages drain.
            background.cancel_scope.cancel()
    finally:
        controlplane.close()
    log.info("front_stopped")


# =========================================================================== writer
async def run_writer(config: Config) -> None:
    """The writer process: store owner, spool, admission state. Stops when stdin closes."""
    # Imported here, not at the top: only the writer needs the store client, and it is large.
    from pipeline.store import AsyncStore, connect_once, sample_active_parts, store_opener
    from pipeline.testing import open_spool

    embedded = config.store_url.startswith("chdb://")  # the store's threads are this process's
    schema = schema_ddl(config)  # one table, or a cluster's (INGEST_CLICKHOUSE_CLUSTER)
    store = AsyncStore(functools.partial(store_opener, config, schema), schema,
                       thread_nice=config.store_nice if embedded else 0,
                       inserts=config.flush_parallel_inserts)  # fmt: skip
    await connect_once(store)
    spool = open_spool(config)  # a stalling one under INGEST_SPOOL_FAULT_FILE (tests)
    flushed_ledger, ledger = replay_ledgers(spool)
    flush_signal, health = FlushSignal(), FlushHealth()
    spool_send, spool_receive = trio.open_memory_channel[SpoolJob](config.spool_capacity)
    database = config.clickhouse_database

    def clock() -> float:
        return time.time() + config.clock_offset_s

    async def insert(table: str, fmt: RowFormat, rows: Rows, token: str, urgent: bool) -> None:
        await store.insert_rows(f"`{database}`.`{table}`", COLUMN_NAMES, rows, fmt=fmt, dedup_token=token,
                                urgent=urgent)  # fmt: skip

    def spool_gauges() -> None:
        metrics.spool_pending_bytes.set(spool.pending_bytes())
        metrics.spool_max_bytes.set(config.spool_max_bytes)

    async with trio.open_nursery() as background:  # until cancelled: gauges, renicing, waiting admissions
        background.start_soon(metrics.sample_channels, {"spool": spool_send}, spool_gauges)
        background.start_soon(sample_active_parts, store, database, TABLE)
        if embedded and (config.merge_nice or config.merge_sched_idle):
            background.start_soon(functools.partial(keep_threads_nice, MERGE_THREAD_PREFIXES, config.merge_nice,
                                                    idle=config.merge_sched_idle))  # fmt: skip
        batcher = redis_batcher(config)  # admissions in Redis (INGEST_REDIS_URL), or None: in process
        if batcher is not None:
            background.start_soon(batcher.run)
        routes = Routes(config, spool, ledger, RateLimiter(), batcher, health, store, spool_send, background, clock)
        async with trio.open_nursery() as flushing:  # ends after the final flush, bounded at drain
            flushing.start_soon(run_flush, config, spool, insert, flushed_ledger, flush_signal, health)
            async with trio.open_nursery() as spooling:  # ends when its channel's input ends
                await spooling.start(functools.partial(run_spool, config, spool, ledger, flush_signal,
                                                       spool_receive, clock=clock,
                                                       gate=quota_gate(config, ledger)))  # fmt: skip
                async with spool_send, trio.open_nursery() as links:  # until the supervisor's order
                    route = functools.partial(dispatch, routes)
                    await links.start(functools.partial(serve_links, config.writer_socket, route,
                                                        reply_capacity=config.link_reply_capacity))  # fmt: skip
                    print("READY", flush=True)  # the supervisor starts the fronts on this line
                    log.info("writer_ready", spool_pending_bytes=spool.pending_bytes())
                    await stdin_closed()  # given once every front is gone
                    links.cancel_scope.cancel()
            # The spool stage has drained and announced the end: the final flush, bounded.
            flushing.cancel_scope.deadline = trio.current_time() + config.drain_timeout_s
        background.cancel_scope.cancel()  # admissions still waiting have no front to answer
    if flushing.cancel_scope.cancelled_caught:
        log.warning("drain_timeout", left_in_spool_bytes=spool.pending_bytes())
    spool.close()
    await store.close()
    config.writer_socket.unlink(missing_ok=True)
    log.info("writer_stopped", rows_flushed=health.rows_flushed)
