"""The writer's routing stage: each message that arrives on a link goes to its owner.

    Admit   → the rate limiter, answered at once; past the spool's high-water mark, once the
              flush catches up (at most `admit_max_wait_ms`)
    Append  → the spool stage's channel (a full channel holds back this connection's reader)
    Query   → the store, answered in place
    Status  → the flush stage's health and the spool's fill
    Usage   → the live quota ledger

`dispatch` is the link server's callback, called by each connection's reader in turn; the logic
is in plain functions over `Routes`, the state they read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from pipeline import metrics
from pipeline.config import Config
from pipeline.errors import FoglampError
from pipeline.flush_state import FlushHealth, status_reply
from pipeline.jobs import SpoolJob
from pipeline.link_server import Reply
from pipeline.messages import Admit, AppendView, Query, QueryReply, Status, Usage, UsageReply, WriterInbound
from pipeline.spool import Spool
from stages.admission import QuotaLedger, RateLimiter, month_of
from stages.redis_admission import Batcher, Request

if TYPE_CHECKING:
    from pipeline.store import AsyncStore  # only the writer loads the store client


@dataclass(frozen=True, slots=True)
class Routes:
    """Where each message goes, and what the answers read."""

    config: Config
    spool: Spool
    ledger: QuotaLedger  # the live one, charged by the spool stage
    limiter: RateLimiter  # one node's exact limits
    batcher: Batcher | None  # or the cluster's, in Redis (INGEST_REDIS_URL)
    health: FlushHealth
    store: AsyncStore
    spool_send: trio.MemorySendChannel[SpoolJob]
    waiting: trio.Nursery  # where admissions wait for the flush to catch up
    clock: Callable[[], float]


def redis_state(routes: Routes) -> str:
    """For /readyz: "" on a single node, else whether the cluster's admissions reach Redis."""
    if routes.batcher is None:
        return ""
    return "up" if routes.batcher.admitter.redis_up else "down"


def backed_up(routes: Routes) -> bool:
    return routes.spool.pending_bytes() >= routes.config.spool_high_water_bytes


def admit(routes: Routes, message: Admit, reply: Reply) -> None:
    if routes.batcher is not None:  # answered with the next pipelined call to Redis
        routes.batcher.submit(Request(message.key_id, message.rate_limit_rps, message.req_id), reply)
        return
    reply(routes.limiter.admit(message.key_id, message.rate_limit_rps, time.monotonic(), message.req_id))


async def admit_when_flushed(routes: Routes, message: Admit, reply: Reply) -> None:
    """Backpressure: past the spool's high-water mark an admission waits (at most
    `admit_max_wait_ms`) for the flush to catch up, so the fronts do not accept faster than
    the store takes rows; meanwhile the request's body is not even read."""
    with trio.move_on_after(routes.config.admit_max_wait_ms / 1000):
        while backed_up(routes):
            await trio.sleep(0.05)
    admit(routes, message, reply)


async def dispatch(routes: Routes, message: WriterInbound, frame: bytearray, reply: Reply) -> None:
    if isinstance(message, Admit):
        if not backed_up(routes):
            admit(routes, message, reply)
        else:
            metrics.admissions_delayed.inc()
            routes.waiting.start_soon(admit_when_flushed, routes, message, reply)
    elif isinstance(message, AppendView):
        await routes.spool_send.send(SpoolJob(message, frame, reply))
    elif isinstance(message, Query):
        await answer_query(routes.store, message, reply)
    elif isinstance(message, Status):
        reply(status_reply(message.req_id, routes.config, routes.spool, routes.health, redis_state(routes)))
    elif isinstance(message, Usage):
        reply(usage_reply(message.req_id, routes.ledger, month_of(routes.clock())))


def usage_reply(req_id: int, ledger: QuotaLedger, month: int) -> UsageReply:
    return UsageReply(req_id, month, {org: ledger.used(org, month) for org in ledger.usage})


async def answer_query(store: AsyncStore, message: Query, reply: Reply) -> None:
    """Run an operator's query (`run.py query`); the store's error is the query's answer."""
    try:
        data = await store.query(message.sql, message.format)
    except FoglampError as exc:
        reply(QueryReply(message.req_id, False, b"", str(exc)))
        return
    reply(QueryReply(message.req_id, True, data))
