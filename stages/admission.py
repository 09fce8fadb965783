"""Admission control: per-key rate limits and per-org monthly span quotas (SPEC §1).

Where the state lives, and why it is exact: both live in the writer process, the one process that
sees every request of every front worker. A front asks the writer (`Admit` over its link) before
it reads a request's body, and the writer's spool stage checks and charges the quota in the same
step that appends the batch to the spool. The writer runs one trio thread, so each check-and-update
below is atomic without locks, and the sum over all workers is what the bucket and the ledger see.

Plain data and functions, no I/O; time and month are passed in, so tests drive them directly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import msgspec

from pipeline.messages import AdmitReply, decode_record
from pipeline.spool import Spool


@dataclass(slots=True)
class TokenBucket:
    """Rate R tokens/s, burst R (at least one request, so a limit below 1/s still admits): over
    any window of T seconds at most R·T + max(R, 1) admissions."""

    rate: float
    tokens: float
    updated: float

    @property
    def capacity(self) -> float:
        return max(self.rate, 1.0)

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full_at(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.rate >= self.capacity


@dataclass(slots=True)
class RateLimiter:
    """One token bucket per API key. A bucket that has refilled completely holds no information
    (a new one would be the same), so such buckets are dropped now and then: memory stays bounded
    by the keys active recently, not by every key ever seen."""

    sweep_every: int = 4096
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _calls: int = 0

    def admit(self, key_id: str, rate: float, now: float, req_id: int = 0) -> AdmitReply:
        self._calls += 1
        if self._calls % self.sweep_every == 0:
            self.forget_full(now)
        bucket = self.buckets.get(key_id)
        if bucket is None:
            bucket = self.buckets[key_id] = TokenBucket(rate=rate, tokens=max(rate, 1.0), updated=now)
        elif bucket.rate != rate:  # the key's limit was changed by the operator
            bucket.rate = rate
            bucket.tokens = min(bucket.tokens, bucket.capacity)
        allowed = bucket.take(now)
        return AdmitReply(
            req_id=req_id,
            allowed=allowed,
            limit=rate,
            remaining=int(bucket.tokens),
            reset_s=(bucket.capacity - bucket.tokens) / rate,
            retry_after_s=0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / rate)),
        )

    def forget_full(self, now: float) -> None:
        for key_id in [k for k, b in self.buckets.items() if b.full_at(now)]:
            del self.buckets[key_id]


class _LedgerState(msgspec.Struct, array_like=True):
    version: int
    usage: dict[str, tuple[int, int]]  # org_id -> (month YYYYMM, spans accepted that month)


@dataclass(slots=True)
class QuotaLedger:
    """Spans accepted per org in the current calendar month (UTC).

    Durability: the ledger is saved with each spool checkpoint (`to_bytes`) and the spool records
    after the checkpoint are replayed into it on start (`charge`), so it survives restarts exactly.
    """

    usage: dict[str, tuple[int, int]] = field(default_factory=dict)

    def used(self, org_id: str, month: int) -> int:
        recorded_month, spans = self.usage.get(org_id, (month, 0))
        return spans if recorded_month == month else 0

    def allows(self, org_id: str, quota: int | None, month: int) -> bool:
        """A batch is admitted while the org's usage is below its quota (the crossing one too)."""
        return quota is None or self.used(org_id, month) < quota

    def charge(self, org_id: str, spans: int, month: int) -> None:
        recorded_month, used = self.usage.get(org_id, (month, 0))
        if recorded_month > month:
            return  # a replayed record from an earlier month: that month is over
        self.usage[org_id] = (month, (used if recorded_month == month else 0) + spans)

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(_LedgerState(version=1, usage=self.usage))

    @classmethod
    def from_bytes(cls, data: bytes | None) -> QuotaLedger:
        if not data:
            return cls()
        state = msgspec.msgpack.decode(data, type=_LedgerState)
        return cls(usage={org: (int(m), int(n)) for org, (m, n) in state.usage.items()})


def month_of(epoch_s: float) -> int:
    """YYYYMM in UTC."""
    t = time.gmtime(epoch_s)
    return t.tm_year * 100 + t.tm_mon


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
