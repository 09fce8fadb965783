"""The `spans` table: the row contract between the fronts (which encode rows) and the sink.

This is the one place that names the columns and their order. Front workers encode each span as
a sequence of msgpack values in `COLUMNS` order (ClickHouse `FORMAT MsgPack`), and the flush
stage inserts those bytes as they are. Changing a column means changing `COLUMNS`, `DDL` and
`stages.rows.span_row` together.

Deduplication: `ReplacingMergeTree(ingested_at)` keyed on (org_id, trace_id, span_id), so a
replayed or re-sent span is one row in `SELECT … FINAL` (the latest ingest wins). Rows of one key
deduplicate within a partition (a month of `start_time`), which holds for every replay, since a
replay carries the same start time. Insert blocks also carry a deduplication token
(`non_replicated_deduplication_window`), so a retried insert is not even written twice.

Merges: `merge_selector_base = 10` (ClickHouse's default is 5) makes background merges wider and
less frequent, so each row is rewritten fewer times, at the price of a few more parts per
partition (measurements: docs/PERFORMANCE.md, "Merge width").

The setting is (re)applied at every start, so tables created before it get it too.
"""

from __future__ import annotations

# (name, ClickHouse type) in the order rows are encoded.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("org_id", "LowCardinality(String)"),
    ("trace_id", "String"),
    ("span_id", "String"),
    ("parent_span_id", "Nullable(String)"),
    ("trace_name", "String"),
    ("user_id", "String"),
    ("session_id", "String"),
    ("environment", "LowCardinality(String)"),
    ("release", "LowCardinality(String)"),
    ("tags", "Array(LowCardinality(String))"),
    ("name", "LowCardinality(String)"),
    ("kind", "LowCardinality(String)"),
    ("status", "LowCardinality(String)"),
    ("status_message", "String CODEC(ZSTD(1))"),
    ("model", "LowCardinality(String)"),
    ("provider", "LowCardinality(String)"),
    ("start_time", "DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))"),
    ("end_time", "Nullable(DateTime64(6, 'UTC'))"),
    ("duration_ms", "Nullable(Float64)"),
    ("input_tokens", "UInt64 CODEC(T64, ZSTD(1))"),
    ("output_tokens", "UInt64 CODEC(T64, ZSTD(1))"),
    ("cache_read_tokens", "UInt64 CODEC(T64, ZSTD(1))"),
    ("cache_write_tokens", "UInt64 CODEC(T64, ZSTD(1))"),
    ("reasoning_tokens", "UInt64 CODEC(T64, ZSTD(1))"),
    ("input_cost", "Nullable(Float64)"),
    ("output_cost", "Nullable(Float64)"),
    ("cache_read_cost", "Nullable(Float64)"),
    ("cache_write_cost", "Nullable(Float64)"),
    ("total_cost", "Nullable(Float64)"),
    ("priced", "Bool"),
    ("price_model", "LowCardinality(Nullable(String))"),
    ("price_source", "LowCardinality(String)"),
    ("input", "Nullable(String) CODEC(ZSTD(3))"),
    ("output", "Nullable(String) CODEC(ZSTD(3))"),
    ("input_truncated", "Bool"),
    ("output_truncated", "Bool"),
    ("attributes", "String CODEC(ZSTD(3))"),
    ("metadata", "String CODEC(ZSTD(3))"),
    ("ingested_at", "DateTime64(3, 'UTC')"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
TABLE = "spans"
MERGE_SELECTOR_BASE = 10

TABLE_SETTINGS = f"merge_selector_base = {MERGE_SELECTOR_BASE}"


def ddl(database: str) -> list[str]:
    """The statements that create the schema; idempotent, safe to run at every start."""
    columns = ",\n    ".join(f"`{name}` {kind}" for name, kind in COLUMNS)
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        f"""CREATE TABLE IF NOT EXISTS `{database}`.`{TABLE}` (
    {columns}
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(start_time)
ORDER BY (org_id, trace_id, span_id)
SETTINGS non_replicated_deduplication_window = 10000, {TABLE_SETTINGS}""",
        f"ALTER TABLE `{database}`.`{TABLE}` MODIFY SETTING {TABLE_SETTINGS}",
    ]
