"""A 503 means "not stored" (issue 14), end to end: a writer whose spool fsync stalls on purpose
(pipeline/testing.py `SlowSpool`, INGEST_SPOOL_FAULT_FILE), so requests queue past the ack timeout.
Every batch answered 503 must be absent from the store and from the quota ledger; every batch
answered 202 must be there exactly once."""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path

import httpx

from tests.e2e.test_durability import setup_key, spans_batch
from tests.nodes import Node, cli, query

SPANS = 5


def test_a_batch_answered_503_after_the_ack_timeout_is_never_stored_nor_charged(tmp_path: Path) -> None:
    data_dir, slow = tmp_path / "data", tmp_path / "fsync-delay"
    env = {
        "INGEST_SPOOL_FAULT_FILE": str(slow),
        "INGEST_ACK_TIMEOUT_MS": "800",
        "INGEST_ACK_GRACE_MS": "5000",  # well above the stalled fsync: spooled in time means 202
        "INGEST_SPOOL_MAX_GROUP": "1",  # one fsync per batch: a queue builds up behind the stall
        "INGEST_FLUSH_INTERVAL_MS": "200",
    }
    node = Node(data_dir, env=env).start()
    key = setup_key(data_dir)
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def load() -> None:
        with httpx.Client() as client:
            for _ in range(6):
                trace_id = f"t-{uuid.uuid4().hex}"
                status = node.post(spans_batch(trace_id, SPANS), key=key, client=client).status_code
                with lock:
                    outcomes[trace_id] = status

    slow.write_text("0.4")  # every spool fsync now takes 0.4 s: 8 clients wait up to ~3 s
    try:
        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        slow.unlink(missing_ok=True)
        assert node.stop() == 0, node.logs()  # drained: every spooled batch is in the store
    assert set(outcomes.values()) <= {202, 503}, outcomes
    accepted = {t for t, s in outcomes.items() if s == 202}
    refused = {t for t, s in outcomes.items() if s == 503}
    assert accepted and refused, "the stall must time some requests out and let others through"
    rows = query(data_dir, "SELECT trace_id, count() AS c FROM foglamp.spans FINAL GROUP BY trace_id")
    stored = {r["trace_id"]: int(r["c"]) for r in rows}
    assert not refused & stored.keys(), f"{len(refused & stored.keys())} batches answered 503 were stored"
    assert stored == dict.fromkeys(accepted, SPANS)
    usage = cli(data_dir, "orgs", "usage", "acme").stdout  # node stopped: the ledger from the spool
    assert re.search(rf"\b{len(accepted) * SPANS}\b", usage), usage
