"""What the writer's stages share: the spool stage's announcements to the flush stage
(`FlushSignal`) and the flush stage's health as `/readyz` and `/metrics` read it (`FlushHealth`,
`status_reply`). Plumbing between two stages, so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from pipeline.config import Config
from pipeline.messages import StatusReply
from pipeline.spool import Spool


def block_bytes(config: Config) -> int:
    """Bytes that make a full block: `flush_max_bytes`, or half the spool's high-water mark if that
    is less (past the mark admissions wait for the flush, which then must not wait itself)."""
    return min(config.flush_max_bytes, config.spool_high_water_bytes // 2)


@dataclass(slots=True)
class FlushSignal:
    """Unflushed work announced by the spool stage to the flush stage. It wakes the flush as soon
    as a full block waits (`full`); smaller amounts wait for the flush interval."""

    rows_waiting: int = 0  # since the last reset
    wakeup: trio.Event = field(default_factory=trio.Event)
    input_ended: bool = False

    def full(self, config: Config, pending_bytes: int) -> bool:
        """A full block waits: `flush_max_rows` rows, or `block_bytes` of the spool unflushed."""
        return self.rows_waiting >= config.flush_max_rows or pending_bytes >= block_bytes(config)

    def add(self, rows: int, config: Config, pending_bytes: int) -> None:
        self.rows_waiting += rows
        if self.full(config, pending_bytes):
            self.wakeup.set()

    def end(self) -> None:
        self.input_ended = True
        self.wakeup.set()

    def reset(self) -> None:
        self.rows_waiting = 0
        self.wakeup = trio.Event()


@dataclass(slots=True)
class FlushHealth:
    """What /readyz and /metrics report about the sink."""

    store_ok: bool = True
    last_error: str = ""
    rows_flushed: int = 0
    failures: int = 0
    deadlettered_records: int = 0


def status_reply(req_id: int, config: Config, spool: Spool, health: FlushHealth, redis: str = "") -> StatusReply:
    return StatusReply(
        req_id=req_id,
        store_ok=health.store_ok,
        store_error=health.last_error,
        spool_pending_bytes=spool.pending_bytes(),
        spool_max_bytes=config.spool_max_bytes,
        redis=redis,
    )
