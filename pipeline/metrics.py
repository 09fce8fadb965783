"""Prometheus metrics, aggregated over every process of the node (GET /metrics).

prometheus-client's multiprocess mode: the supervisor gives every child the same
`PROMETHEUS_MULTIPROC_DIR` (`<data dir>/metrics`, emptied at start), each process writes its
samples to its own memory-mapped files there, and whichever front worker serves `/metrics`
aggregates them all. A child that dies is marked dead so its live gauges disappear. Without the
variable (unit tests), the same metrics live in the process's default registry.

All metrics are defined here, once; stages update them at their boundaries (per request or per
flush, never per span).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess

from pipeline.config import metrics_dir

requests = Counter("foglamp_requests", "POST /ingest requests by status and error", ["status", "error"])
admissions_delayed = Counter("foglamp_admissions_delayed",
                             "Admissions held back while the spool was past its high-water mark")
spans_accepted = Counter("foglamp_spans_accepted", "Spans accepted (202) into the spool")
spans_rejected = Counter("foglamp_spans_rejected", "Spans of validated batches refused", ["reason"])
channel_items = Gauge("foglamp_channel_items", "Batches waiting in a stage's input channel", ["stage"],
                      multiprocess_mode="livesum")  # fmt: skip
spool_pending_bytes = Gauge("foglamp_spool_pending_bytes", "Spool bytes not yet flushed",
                            multiprocess_mode="livemax")  # fmt: skip
spool_max_bytes = Gauge("foglamp_spool_max_bytes", "Spool cap (INGEST_SPOOL_MAX_BYTES)", multiprocess_mode="livemax")
flush_rows = Counter("foglamp_flush_rows", "Rows inserted into ClickHouse")
flush_failures = Counter("foglamp_flush_failures", "Failed insert attempts", ["kind"])
flush_seconds = Histogram("foglamp_flush_seconds", "Insert latency per block",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))  # fmt: skip
spool_commit_seconds = Histogram("foglamp_spool_commit_seconds", "Group commit (write + fsync) latency",
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))  # fmt: skip
store_active_parts = Gauge("foglamp_store_active_parts", "Active parts of the spans table (lagging merges show here)",
                           multiprocess_mode="livemax")
redis_up = Gauge("foglamp_redis_up", "1 while admissions go to Redis (INGEST_REDIS_URL); 0: local fallback share",
                 multiprocess_mode="livemax")  # only the writer sets it
store_up = Gauge("foglamp_store_up", "1 when the last store operation succeeded", multiprocess_mode="livemax")


def prepare_directory(data_dir: Path) -> Path:
    """Called by the supervisor before it starts any child: an empty directory for this run."""
    directory = data_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def mark_dead(pid: int) -> None:
    if metrics_dir():
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """The text exposition of every process's metrics."""
    if metrics_dir():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


async def sample_channels(
    channels: dict[str, trio.MemorySendChannel[Any]],
    also: Callable[[], None] = lambda: None,
    interval_s: float = 0.5,
) -> None:
    """Publish each stage's channel occupancy (and whatever `also` sets) until cancelled."""
    while True:
        for stage, channel in channels.items():
            channel_items.labels(stage).set(channel.statistics().current_buffer_used)
        also()
        await trio.sleep(interval_s)
