"""The one configuration object of the node.

`Config` is frozen. It is built once, at start, from the environment (and the command line's
overrides) by `load_config`, and passed down to every process and stage. Stages never read
`os.environ`. Every field is also an environment variable: its name upper-cased with the prefix
`INGEST_`, except `clickhouse_url`, which is `CLICKHOUSE_URL`. Units are part of the names.

Child processes receive the supervisor's config as JSON (`to_json` / `from_json`), so a worker and
its writer always agree on every setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

MiB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    # --- network and processes
    host: str = "127.0.0.1"
    port: int = 4000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # CPU priorities (0-19, see pipeline/priority.py): fronts relative to the supervisor, the
    # embedded store's inserts and queries, and its merges, relative to the writer.
    front_nice: int = 0
    store_nice: int = 4
    merge_nice: int = 19
    # ... and they run under SCHED_IDLE: only when a CPU has nothing else to run.
    merge_sched_idle: bool = True
    data_dir: Path = Path("data")

    # --- store
    clickhouse_url: str = ""  # empty: the embedded engine under data_dir/clickhouse
    clickhouse_database: str = "foglamp"
    clickhouse_cluster: str = ""  # with an http(s) CLICKHOUSE_URL: spans_local ON CLUSTER + Distributed spans
    # The embedded store's inserts return once its file system has them on the disk (syncfs): the
    # flush then lets the spool forget them. 0: rows inserted in the last ~30 s can be lost to a
    # power cut (not to a crash of the node, nor kill -9).
    store_sync: bool = True

    # --- request limits (SPEC §1, §2)
    max_body_bytes: int = 10 * MiB
    max_decompressed_bytes: int = 64 * MiB
    max_io_bytes: int = 256 * 1024
    max_issues: int = 100
    rate_limit_rps: float = 1000.0

    # --- several nodes (README "Running several nodes"): empty = the SQLite file in data_dir.
    # PostgreSQL answers are cached this long (fixed, from the read): the bound on revocation;
    # while PostgreSQL is unreachable, keys read within outage_s keep working, others get 503.
    controlplane_url: str = ""
    controlplane_cache_s: float = 0.5
    controlplane_outage_s: float = 60.0
    controlplane_retry_s: float = 0.5
    # Rate limits in Redis, over all nodes; while Redis is unreachable each node allows
    # 1/redis_fallback_nodes of a key's rate (set it to the number of nodes) and retries after redis_retry_s.
    redis_url: str = ""
    redis_fallback_nodes: int = 1
    redis_retry_s: float = 1.0

    # --- pricing (SPEC §3)
    prices_file: str = ""

    # --- channels inside a front worker and the writer (batches, never spans)
    validate_capacity: int = 32
    price_capacity: int = 32
    link_capacity: int = 64
    spool_capacity: int = 256
    spool_max_group: int = 512  # appends committed with one fsync, at most
    link_reply_capacity: int = 4096  # replies a link connection holds for a front that stops reading
    max_inflight_requests: int = 32  # per front worker, bodies held at once; past it: 503
    # Largest socket read of a front (Hypercorn's 64 KiB otherwise): fewer trips through h11 and
    # Hypercorn per body (docs/PERFORMANCE.md, "HTTP read size").
    http_read_bytes: int = 128 * 1024
    http_backlog: int = 2048  # connections the kernel queues before the fronts accept them
    # Deadline of a request's body from its head: this plus its size at the minimum rate; a client
    # slower than that gets 408 and its slot back (stages/http_guard.py). No read waits longer.
    request_timeout_ms: int = 10_000
    min_request_bytes_per_s: int = 64 * 1024
    keep_alive_timeout_s: float = 75.0  # an idle keep-alive connection is closed after this
    enqueue_timeout_ms: int = 200  # a full channel for longer than this is a 503 overloaded
    ack_timeout_ms: int = 10_000  # the writer must have spooled a batch by then, or 503
    # The front waits this much longer than the ack timeout for the answer of a batch the writer
    # began to spool just before that deadline (the writer never starts one after it): at least a
    # slow spool commit (write + fsync), or a batch on disk may still be answered 503.
    ack_grace_ms: int = 2_000
    readiness_timeout_s: float = 2.0  # /readyz: the writer must answer a status call by then, or 503

    # --- writer: flush and spool
    # A full block (max rows or bytes, or half the high-water mark if less) is inserted at once; a
    # smaller one once the flush has not reached the spool's end for the interval (stages/flush.py).
    flush_interval_ms: int = 1000
    flush_max_rows: int = 50_000
    flush_max_bytes: int = 32 * MiB
    # Blocks inserted at once while a whole further block waits (stages/flush.py); each one holds
    # its block and the store's working memory for it (~240 MB at the peak: one by default).
    flush_parallel_inserts: int = 1
    flush_retry_max_s: float = 30.0
    spool_max_bytes: int = 1024 * MiB
    # Backpressure before the cap: while more than this waits to be flushed (8 flush blocks, about
    # 10 s of catching up), admissions wait up to admit_max_wait_ms for the flush to catch up.
    spool_high_water_bytes: int = 256 * MiB
    admit_max_wait_ms: int = 1000
    spool_segment_bytes: int = 64 * MiB
    spool_slow_commit_ms: float = 100.0  # a group commit (write + fsync) slower than this is logged
    # A reserve on the data dir's file system (pipeline/disk.py): below this much free space new
    # batches get 503 overloaded and /readyz 503 degraded, so the spool and the store never fill it.
    min_free_disk_bytes: int = 256 * MiB

    # --- lifecycle (SPEC §6)
    drain_grace_s: float = 1.0
    drain_timeout_s: float = 30.0

    # --- logs
    log_level: str = "info"

    # --- tests only: while this file exists the store fails (see pipeline/testing.py), while the
    # spool fault file holds a number every spool fsync first sleeps that many seconds, and the
    # writer's clock (quota months) runs this many seconds ahead
    store_fault_file: str = ""
    spool_fault_file: str = ""
    clock_offset_s: float = 0.0

    @property
    def store_url(self) -> str:
        """The store the writer opens: `CLICKHOUSE_URL`, or the embedded engine in the data dir."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def writer_socket(self) -> Path:
        return self.data_dir / "writer.sock"

    @property
    def controlplane_db(self) -> Path:
        return self.data_dir / "controlplane.sqlite3"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def to_json(self) -> str:
        return json.dumps({f.name: _jsonable(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> Config:
        return _build(json.loads(text))


CONFIG_ENV = "FOGLAMP_CONFIG"  # a child process's whole config, as the supervisor resolved it
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client itself, in every process


def inherited_config() -> Config:
    """The config the supervisor handed this child process (`CONFIG_ENV`)."""
    return Config.from_json(os.environ[CONFIG_ENV])


def metrics_dir() -> str:
    """The shared metrics directory the supervisor set up, or "" in a process on its own."""
    return os.environ.get(METRICS_DIR_ENV, "")


def share_metrics_dir(path: Path) -> None:
    """Name the metrics directory for this process's prometheus_client and every child's."""
    os.environ[METRICS_DIR_ENV] = str(path)


def child_environment(config: Config, defaults: dict[str, str]) -> dict[str, str]:
    """A child process's environment: `defaults` (the operator's own values win), this process's
    environment, and the resolved config (`CONFIG_ENV`)."""
    return {**defaults, **os.environ, CONFIG_ENV: config.to_json(), "FOGLAMP_NO_BOOTSTRAP": "1"}


def env_name(field_name: str) -> str:
    return "CLICKHOUSE_URL" if field_name == "clickhouse_url" else f"INGEST_{field_name.upper()}"


def load_config(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Read every setting from `environ` (default: the process environment), then apply
    `overrides` (command-line flags; a None value means "not given"). Bad values raise
    `ConfigError` naming the variable."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for f in fields(Config):
        name = env_name(f.name)
        if name in environ:
            raw[f.name] = environ[name]
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    return _build(raw)


def _build(raw: Mapping[str, Any]) -> Config:
    defaults = Config()
    values: dict[str, Any] = {}
    for f in fields(Config):
        if f.name not in raw:
            continue
        kind = type(getattr(defaults, f.name))
        try:
            values[f.name] = _coerce(kind, raw[f.name])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{env_name(f.name)}={raw[f.name]!r} is not a valid {kind.__name__}"
            ) from None
    config = Config(**values)
    _check(config)
    return config


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _coerce(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if (flag := _BOOLS.get(str(value).strip().lower())) is None:
            raise ValueError(value)
        return flag
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    if kind is int:
        return int(str(value).replace("_", ""))
    if kind is float:
        return float(value)
    if issubclass(kind, Path):
        return Path(value)
    return str(value)


def _check(config: Config) -> None:
    positive = [
        "port", "workers", "max_body_bytes", "max_decompressed_bytes", "max_io_bytes",
        "max_issues", "validate_capacity", "price_capacity", "link_capacity", "spool_capacity",
        "flush_interval_ms", "flush_max_rows", "flush_max_bytes", "spool_max_bytes", "spool_segment_bytes",
        "rate_limit_rps", "drain_timeout_s", "enqueue_timeout_ms", "ack_timeout_ms", "max_inflight_requests",
        "spool_high_water_bytes", "admit_max_wait_ms", "flush_parallel_inserts", "http_read_bytes",
        "keep_alive_timeout_s", "http_backlog", "spool_max_group", "link_reply_capacity",
        "request_timeout_ms", "min_request_bytes_per_s", "ack_grace_ms",
        "redis_fallback_nodes", "redis_retry_s", "readiness_timeout_s", "spool_slow_commit_ms",
    ]  # fmt: skip
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{env_name(name)} must be > 0, got {getattr(config, name)!r}")
    for name in ("front_nice", "store_nice", "merge_nice"):
        if not 0 <= getattr(config, name) <= 19:
            raise ConfigError(f"{env_name(name)} must be in 0..19, got {getattr(config, name)!r}")
    for name in ("controlplane_cache_s", "controlplane_outage_s", "controlplane_retry_s"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{env_name(name)} must be >= 0, got {getattr(config, name)!r}")
    if config.controlplane_url and not config.controlplane_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"INGEST_CONTROLPLANE_URL must start with postgresql://, got {config.controlplane_url!r}"
        )
    if config.redis_url and not config.redis_url.startswith("redis://"):  # pipeline/resp.py: plain TCP
        raise ConfigError(f"INGEST_REDIS_URL must start with redis://, got {config.redis_url!r}")
    if config.clickhouse_cluster and not config.clickhouse_url.startswith(("http://", "https://")):
        raise ConfigError("INGEST_CLICKHOUSE_CLUSTER needs a server: set CLICKHOUSE_URL=http(s)://…")
    if config.drain_grace_s < 0:
        raise ConfigError(f"INGEST_DRAIN_GRACE_S must be >= 0, got {config.drain_grace_s!r}")
    if config.clickhouse_url and not config.clickhouse_url.startswith(
        ("http://", "https://", "chdb://")
    ):
        raise ConfigError(
            f"CLICKHOUSE_URL must start with http://, https:// or chdb://, got {config.clickhouse_url!r}"
        )


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
