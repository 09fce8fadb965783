"""The spool stage (writer process): quota check, group commit to the write-ahead spool, ack.

Every `Append` from every front worker passes through this one task, in order. For each group of
appends waiting in its channel it decides admission (quota, spool cap), appends the admitted ones
to the spool with ONE fsync, charges the quota ledger, and only then answers `ok` — the front
turns that into the 202. Nothing is acknowledged that is not on disk.

Resource handling: the stage owns the receive end of its channel and returns when every sender
(the link connections) has closed it. It shares the `Spool` with the flush stage (appends here,
reads and checkpoints there: the spool allows one thread of each) and tells the flush stage about
new rows through `FlushSignal`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from pipeline import metrics
from pipeline.config import Config
from pipeline.disk import low_disk_reason
from pipeline.errors import RetryableError
from pipeline.flush_state import FlushSignal
from pipeline.jobs import SpoolJob, with_waiting
from pipeline.log import get_logger
from pipeline.messages import AppendReply, AppendStatus, spool_payload
from pipeline.spool import Spool
from stages.admission import QuotaLedger, month_of
from stages.redis_quota import QuotaGate

log = get_logger("spool_stage")


def decide(
    jobs: list[SpoolJob], ledger: QuotaLedger, month: int, spool_free_bytes: int
) -> tuple[list[SpoolJob], list[tuple[SpoolJob, AppendStatus]]]:
    """Split a group into admitted jobs and (refused job, status). Plain function.

    Quota: a batch is admitted while its org is below quota; usage counts the admitted batches
    earlier in the same group, so two batches racing past the line cannot both cross it.
    """
    admitted: list[SpoolJob] = []
    refused: list[tuple[SpoolJob, AppendStatus]] = []
    pending: dict[str, int] = {}
    for job in jobs:
        a = job.append
        used = ledger.used(a.org_id, month) + pending.get(a.org_id, 0)
        if a.monthly_span_quota is not None and used >= a.monthly_span_quota:
            refused.append((job, "quota_exceeded"))
        elif len(job.frame) > spool_free_bytes:
            refused.append((job, "overloaded"))
        else:
            admitted.append(job)
            pending[a.org_id] = pending.get(a.org_id, 0) + a.spans
            spool_free_bytes -= len(job.frame)
    return admitted, refused


async def run_spool(
    config: Config,
    spool: Spool,
    ledger: QuotaLedger,
    flush: FlushSignal,
    receive: trio.MemoryReceiveChannel[SpoolJob],
    *,
    clock: Callable[[], float] = time.time,
    gate: QuotaGate | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with receive:
        task_status.started()
        try:
            async for first in receive:
                jobs = with_waiting(first, receive, config.spool_max_group)
                await _commit_group(config, spool, ledger, flush, jobs, month_of(clock()), gate)
        finally:
            flush.end()


async def _commit_group(
    config: Config,
    spool: Spool,
    ledger: QuotaLedger,
    flush: FlushSignal,
    jobs: list[SpoolJob],
    month: int,
    gate: QuotaGate | None = None,
) -> None:
    if low_disk(config):  # keep the reserve: nothing new is taken, what was taken is flushed
        for job in jobs:
            _answer(job, "overloaded", retry_after_s=5)
        return
    jobs = _drop_expired(jobs, time.monotonic())
    free = config.spool_max_bytes - spool.pending_bytes()
    admitted, refused = decide(jobs, ledger, month, free)
    if gate is not None:  # the org's quota over all nodes (stages/redis_quota.py)
        admitted, refused = await _cluster_quota(gate, admitted, refused, month)
    for job, status in refused:
        _answer(job, status, retry_after_s=1 if status == "overloaded" else 0)
    if not admitted:
        return
    live = _drop_expired(admitted, time.monotonic())  # the gate may have taken a while
    if gate is not None and len(live) < len(admitted):
        ids = {id(j) for j in live}
        late = [(j.append.org_id, j.append.spans) for j in admitted
                if id(j) not in ids and j.append.monthly_span_quota is not None]  # fmt: skip
        await trio.to_thread.run_sync(gate.release, late, month)
    admitted = live
    if not admitted:
        return
    payloads = [spool_payload(month, j.frame) for j in admitted]
    started = time.perf_counter()
    try:
        await trio.to_thread.run_sync(spool.append, payloads)
    except (OSError, RetryableError) as exc:  # disk full, I/O error: nothing acknowledged, client retries
        log.error("spool_append_failed", error=str(exc), batches=len(admitted))
        if gate is not None:
            charged = [(j.append.org_id, j.append.spans) for j in admitted if j.append.monthly_span_quota is not None]
            await trio.to_thread.run_sync(gate.release, charged, month)
        for job in admitted:
            _answer(job, "overloaded", retry_after_s=5)
        return
    commit_ms = (time.perf_counter() - started) * 1000
    metrics.spool_commit_seconds.observe(commit_ms / 1000)
    if commit_ms > config.spool_slow_commit_ms:
        log.warning("slow_spool_commit", ms=round(commit_ms, 1), batches=len(admitted))
    _, unheard = expired(admitted, time.monotonic() - config.ack_grace_ms / 1000)
    if unheard:  # a commit slower than the grace: on disk, but their fronts have answered 503
        log.error("spooled_after_front_gave_up", batches=len(unheard), ms=round(commit_ms, 1))
    for job in admitted:
        ledger.charge(job.append.org_id, job.append.spans, month)
        _answer(job, "ok")
    flush.add(sum(j.append.spans for j in admitted), config, spool.pending_bytes())


_low_disk_logged: list[str | None] = [None]


def low_disk(config: Config) -> bool:
    """Free space on the data dir's file system is below the floor; logged when that changes."""
    reason = low_disk_reason(config.data_dir, config.min_free_disk_bytes)
    if reason != _low_disk_logged[0] and (reason is None) != (_low_disk_logged[0] is None):
        if reason:
            log.error("disk_low_refusing_batches", reason=reason)
        else:
            log.info("disk_space_recovered")
    _low_disk_logged[0] = reason
    return reason is not None
async def _cluster_quota(
    gate: QuotaGate, admitted: list[SpoolJob], refused: list[tuple[SpoolJob, AppendStatus]], month: int
) -> tuple[list[SpoolJob], list[tuple[SpoolJob, AppendStatus]]]:
    limited = [j for j in admitted if j.append.monthly_span_quota is not None]
    if not limited:
        return admitted, refused
    batches = [(j.append.org_id, j.append.spans, j.append.monthly_span_quota or 0) for j in limited]
    verdicts = await trio.to_thread.run_sync(gate.check, batches, month)
    over = {id(j) for j, ok in zip(limited, verdicts, strict=True) if not ok}
    for job in admitted:
        if id(job) in over:
            _answer(job, "quota_exceeded")
    return [j for j in admitted if id(j) not in over], refused


def expired(jobs: list[SpoolJob], now: float) -> tuple[list[SpoolJob], list[SpoolJob]]:
    """Split jobs into (still wanted, past their front's deadline). Plain function. A front that
    has passed `Append.deadline` answers (or has answered) 503: such a batch is never spooled."""
    live = [j for j in jobs if not 0 < j.append.deadline < now]
    late = [j for j in jobs if 0 < j.append.deadline < now]
    return live, late


def _drop_expired(jobs: list[SpoolJob], now: float) -> list[SpoolJob]:
    live, late = expired(jobs, now)
    if late:
        log.warning("appends_past_deadline_dropped", batches=len(late), spans=sum(j.append.spans for j in late))
        for job in late:
            _answer(job, "overloaded", retry_after_s=1)
    return live


def _answer(job: SpoolJob, status: AppendStatus, retry_after_s: int = 0) -> None:
    job.reply(AppendReply(job.append.req_id, status, spans=job.append.spans, retry_after_s=retry_after_s))
