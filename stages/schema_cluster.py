"""The spans schema on a ClickHouse cluster (INGEST_CLICKHOUSE_CLUSTER=NAME with CLICKHOUSE_URL).

    spans_local  ReplicatedReplacingMergeTree ON CLUSTER: one copy per replica of each shard
    spans        Distributed over spans_local, sharded on cityHash64(org_id, trace_id)

Routing: the writer inserts into `spans`; the Distributed table sends each row to the shard its
(org_id, trace_id) hashes to, so a span and all its re-sends meet on one shard, where the
ReplacingMergeTree keeps one of them (and `FINAL` or merges collapse the rest). Inserts are
synchronous (`insert_distributed_sync`, pipeline/store.py): the 200 means every shard's part is written, and the block's
`insert_deduplication_token` goes with each shard's part, so a retried block is dropped by the
replicated dedup log of every shard (`replicated_deduplication_window`). Shapes: 1 shard × N
replicas (every row on every replica; the hash picks the only shard) and N shards × M replicas
work alike; the shard macros `{shard}` and `{replica}` come from each server's config.
"""

from __future__ import annotations

from pipeline.config import Config
from stages.schema import COLUMNS, TABLE, TABLE_SETTINGS, ddl

LOCAL_TABLE = f"{TABLE}_local"
SHARDING_KEY = "cityHash64(org_id, trace_id)"


def cluster_ddl(database: str, cluster: str) -> list[str]:
    """Idempotent statements (IF NOT EXISTS, ON CLUSTER): safe on every node at every start."""
    columns = ",\n    ".join(f"`{name}` {kind}" for name, kind in COLUMNS)
    on = f"ON CLUSTER `{cluster}`"
    zk_path = f"/clickhouse/tables/{{shard}}/{database}/{LOCAL_TABLE}"
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}` {on}",
        f"""CREATE TABLE IF NOT EXISTS `{database}`.`{LOCAL_TABLE}` {on} (
    {columns}
)
ENGINE = ReplicatedReplacingMergeTree('{zk_path}', '{{replica}}', ingested_at)
PARTITION BY toYYYYMM(start_time)
ORDER BY (org_id, trace_id, span_id)
SETTINGS replicated_deduplication_window = 10000, {TABLE_SETTINGS}""",
        f"""CREATE TABLE IF NOT EXISTS `{database}`.`{TABLE}` {on} AS `{database}`.`{LOCAL_TABLE}`
ENGINE = Distributed(`{cluster}`, `{database}`, `{LOCAL_TABLE}`, {SHARDING_KEY})""",
    ]


def schema_ddl(config: Config) -> list[str]:
    """The node's schema: the cluster's when INGEST_CLICKHOUSE_CLUSTER is set, else one table."""
    if config.clickhouse_cluster:
        return cluster_ddl(config.clickhouse_database, config.clickhouse_cluster)
    return ddl(config.clickhouse_database)
