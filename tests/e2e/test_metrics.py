"""GET /metrics aggregates every worker process, and agrees with what ClickHouse holds."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx

from tests.nodes import Node, batch, create_key, create_org, query, span, trace, wait_for_rows


def scrape(node: Node) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in httpx.get(f"{node.url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_agree_with_the_store_across_workers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    node = Node(data_dir, workers=2, env={"INGEST_FLUSH_INTERVAL_MS": "200"}).start()
    try:
        key = create_key(data_dir, create_org(data_dir, "m", "--monthly-span-quota", "30"))
        statuses = []
        for _ in range(8):  # a fresh connection each: both workers serve some
            body = batch(trace(f"t-{uuid.uuid4().hex}", *[span(f"s{i}") for i in range(5)]))
            statuses.append(node.post(body, key=key).status_code)
        assert statuses == [202] * 6 + [429] * 2  # 0,5,…,25 < 30: six accepted, then the quota
        assert node.post(b"{}", key="nope").status_code == 401
        wait_for_rows(data_dir, "SELECT count() AS c FROM foglamp.spans FINAL", 30)
        deadline = time.monotonic() + 10
        m = scrape(node)
        # Gauges are sampled every 0.5 s and the checkpoint follows the insert: wait for both.
        while (m.get("foglamp_flush_rows_total", 0) < 30 or m.get("foglamp_spool_pending_bytes") != 0
               or not m.get("foglamp_store_active_parts")) and time.monotonic() < deadline:
            time.sleep(0.2)
            m = scrape(node)
        assert m['foglamp_requests_total{error="",status="202"}'] == 6
        assert m['foglamp_requests_total{error="quota_exceeded",status="429"}'] == 2
        assert m['foglamp_requests_total{error="unauthorized",status="401"}'] == 1
        assert m["foglamp_spans_accepted_total"] == 30 == m["foglamp_flush_rows_total"]
        assert m['foglamp_spans_rejected_total{reason="quota_exceeded"}'] == 10
        assert m["foglamp_store_up"] == 1 and m["foglamp_spool_pending_bytes"] == 0
        assert 'foglamp_channel_items{stage="validate"}' in m and 'foglamp_channel_items{stage="spool"}' in m
        # six batches flushed in at most six inserts; merges may have joined some parts since
        parts = int(query(data_dir, "SELECT count() AS c FROM system.parts WHERE active AND table = 'spans'")[0]["c"])
        assert 1 <= m["foglamp_store_active_parts"] <= 6 and 1 <= parts <= 6
    finally:
        assert node.stop() == 0
