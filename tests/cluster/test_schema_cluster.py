"""The cluster DDL parses with ClickHouse's own parser (formatQuery in the embedded engine) and
has the shape the README documents; without a cluster the single-node DDL is unchanged."""

from __future__ import annotations

import chdb
import pytest

from stages.schema import ddl
from stages.schema_cluster import LOCAL_TABLE, SHARDING_KEY, cluster_ddl


def _format(sql: str) -> str:
    escaped = sql.replace("\\", "\\\\").replace("'", "\\'")
    return chdb.query(f"SELECT formatQuery('{escaped}')", "TSVRaw").bytes().decode()


def test_every_statement_parses_on_clickhouse() -> None:
    statements = cluster_ddl("foglamp", "ingest")
    formatted = [_format(s) for s in statements]
    assert all("ON CLUSTER ingest" in f for f in formatted)
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/foglamp/spans_local', '{replica}'" in formatted[1]
    assert f"Distributed(ingest, foglamp, {LOCAL_TABLE}, {SHARDING_KEY})" in formatted[2]


def test_the_parser_rejects_a_broken_statement() -> None:  # the check above can fail
    with pytest.raises(Exception, match="Syntax error"):
        _format(cluster_ddl("foglamp", "ingest")[1].replace("ORDER BY", "ORDER"))


def test_single_node_ddl_is_unchanged() -> None:
    assert "ReplacingMergeTree(ingested_at)" in ddl("foglamp")[1]
    assert all("ON CLUSTER" not in s for s in ddl("foglamp"))
