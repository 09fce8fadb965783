"""Admission control end to end with `--workers 2` (SPEC §1): per-key rate limits and monthly
quotas that hold for the node as a whole, and revocation under load."""

from __future__ import annotations

import calendar
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.nodes import Node, batch, cli, create_key, create_org, query, span, trace, wait_for_rows


def small_batch(spans: int = 1) -> dict:
    return batch(trace(f"t-{uuid.uuid4().hex}", *[span(f"s{i}") for i in range(spans)]))


def fresh_post(node: Node, key: str, spans: int = 1) -> httpx.Response:
    """A new connection per request: successive requests land on either worker."""
    return node.post(small_batch(spans), key=key)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    node = Node(tmp_path_factory.mktemp("admission") / "data", workers=2,
                env={"INGEST_FLUSH_INTERVAL_MS": "200"}).start()  # fmt: skip
    yield node
    assert node.stop() == 0, node.logs()


def test_burst_against_a_low_limit_is_cut_at_the_burst(node: Node) -> None:
    key = create_key(node.data_dir, create_org(node.data_dir, "burst"), "--rate-limit", "5")
    started = time.monotonic()
    responses = [fresh_post(node, key) for _ in range(20)]
    elapsed = time.monotonic() - started
    accepted = [r for r in responses if r.status_code == 202]
    limited = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(limited) == 20
    assert 5 <= len(accepted) <= 5 * elapsed + 5  # the burst, plus what refilled meanwhile
    assert limited
    for r in limited:
        assert r.json() == {"error": "rate_limited"}
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["X-RateLimit-Limit"] == "5" and r.headers["X-RateLimit-Remaining"] == "0"
        assert int(r.headers["X-RateLimit-Reset"]) >= 1
    assert accepted[0].headers["X-RateLimit-Limit"] == "5"


def test_timed_flood_admits_at_most_rt_plus_r_across_workers(node: Node) -> None:
    rate = 10
    key = create_key(node.data_dir, create_org(node.data_dir, "flood"), "--rate-limit", str(rate))
    counts = {"202": 0, "429": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + 3.0

    def flood() -> None:
        while time.monotonic() < stop_at:
            status = str(fresh_post(node, key).status_code)
            with lock:
                counts[status] = counts.get(status, 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=flood) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert counts["429"] > 0, counts
    assert counts["202"] <= rate * elapsed + rate, (counts, elapsed)
    assert counts["202"] >= rate * 2, counts  # the limit admits, it does not just refuse


def test_set_rate_limit_takes_effect(node: Node) -> None:
    key = create_key(node.data_dir, create_org(node.data_dir, "tuned"), "--rate-limit", "1")
    assert fresh_post(node, key).status_code == 202
    assert fresh_post(node, key).status_code == 429
    cli(node.data_dir, "keys", "set-rate-limit", key[:12], "1000")
    assert fresh_post(node, key).status_code == 202


def test_quota_crossing_batch_is_accepted_whole_then_refused(node: Node) -> None:
    org = create_org(node.data_dir, "small", "--monthly-span-quota", "10")
    key = create_key(node.data_dir, org)
    statuses = [fresh_post(node, key, spans=4) for _ in range(3)]
    assert [r.status_code for r in statuses] == [202, 202, 202]  # 0 → 4 → 8 → 12: the third crosses
    refused = fresh_post(node, key, spans=4)
    assert refused.status_code == 429 and refused.json() == {"error": "quota_exceeded"}
    assert "Retry-After" not in refused.headers
    sql = f"SELECT count() AS c FROM foglamp.spans FINAL WHERE org_id = '{org}'"
    assert wait_for_rows(node.data_dir, sql, 12) == 12
    usage = cli(node.data_dir, "orgs", "usage", "small").stdout
    assert " 12 " in usage and " 10" in usage
    # Raising the quota admits again at once.
    cli(node.data_dir, "orgs", "set-quota", "small", "100")
    assert fresh_post(node, key, spans=4).status_code == 202


def test_rejected_requests_do_not_count_against_the_quota(node: Node) -> None:
    org = create_org(node.data_dir, "strict", "--monthly-span-quota", "3")
    key = create_key(node.data_dir, org)
    bad = small_batch(2)
    bad["traces"][0]["spans"][0]["kind"] = "nope"
    for _ in range(5):
        assert node.post(bad, key=key).status_code == 400
    assert fresh_post(node, key, spans=2).status_code == 202
    assert fresh_post(node, key, spans=2).status_code == 202  # 2 < 3: admitted, crosses the line
    assert fresh_post(node, key, spans=2).status_code == 429


def test_revocation_under_load_is_immediate_on_every_worker(node: Node) -> None:
    key = create_key(node.data_dir, create_org(node.data_dir, "revoked"))
    after_revoke: list[int] = []
    revoked = threading.Event()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            was_revoked = revoked.is_set()
            status = fresh_post(node, key).status_code
            if was_revoked:
                after_revoke.append(status)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    cli(node.data_dir, "keys", "revoke", key[:12])
    revoked.set()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert after_revoke and set(after_revoke) == {401}, after_revoke


def test_quota_usage_survives_restart_and_resets_when_the_month_turns(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    node = Node(data_dir, env={"INGEST_FLUSH_INTERVAL_MS": "200"}).start()
    key = create_key(data_dir, create_org(data_dir, "monthly", "--monthly-span-quota", "5"))
    assert fresh_post(node, key, spans=5).status_code == 202
    assert fresh_post(node, key, spans=1).status_code == 429
    assert node.stop() == 0
    assert " 5 " in cli(data_dir, "orgs", "usage", "monthly").stdout  # node stopped: from the spool
    node = Node(data_dir).start()
    assert fresh_post(node, key, spans=1).status_code == 429  # usage survived the restart
    assert node.stop() == 0
    now = time.gmtime()
    days_left = calendar.monthrange(now.tm_year, now.tm_mon)[1] - now.tm_mday + 1
    next_month = {"INGEST_CLOCK_OFFSET_S": str(days_left * 86400)}
    node = Node(data_dir, env=next_month).start()
    try:
        assert fresh_post(node, key, spans=3).status_code == 202  # a new month, a new quota
        assert " 3 " in cli(data_dir, "orgs", "usage", "monthly").stdout
    finally:
        assert node.stop() == 0
    assert int(query(data_dir, "SELECT count() AS c FROM foglamp.spans FINAL")[0]["c"]) == 8
