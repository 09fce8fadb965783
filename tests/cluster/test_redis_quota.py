"""Monthly quotas over several nodes in a real Redis: the crossing batch is accepted whole and
later ones refused on every node, a refusal charges nothing, a lost Redis is re-seeded from the
nodes' own ledgers, and with Redis down each node stays within its fallback bound."""

from __future__ import annotations

import redis

from stages.admission import QuotaLedger
from stages.redis_quota import KEY_PREFIX, QuotaGate
from tests.cluster.servers import RedisServer

MONTH = 202612


def _node(url: str, name: str) -> tuple[QuotaGate, QuotaLedger]:
    ledger = QuotaLedger()
    return QuotaGate(url, name, fallback_nodes=2, ledger=ledger), ledger


def _send(gate: QuotaGate, ledger: QuotaLedger, spans: int, quota: int) -> bool:
    """As the spool stage: check, then (the append succeeded) charge the node's own ledger."""
    [ok] = gate.check([("org_a", spans, quota)], MONTH)
    if ok:
        ledger.charge("org_a", spans, MONTH)
    return ok


def test_crossing_batch_accepted_whole_then_refused_everywhere(redis_server: RedisServer) -> None:
    (g1, l1), (g2, l2) = _node(redis_server.url, "n1"), _node(redis_server.url, "n2")
    assert [_send(g1, l1, 4, 10), _send(g2, l2, 4, 10), _send(g1, l1, 4, 10)] == [True, True, True]
    client = redis.Redis.from_url(redis_server.url)
    before = client.hgetall(f"{KEY_PREFIX}org_a:{MONTH}")
    assert not _send(g2, l2, 4, 10) and not _send(g1, l1, 1, 10)
    assert client.hgetall(f"{KEY_PREFIX}org_a:{MONTH}") == before == {b"n1": b"8", b"n2": b"4"}
    # One pipelined call, in order: the first batch crosses, the second is refused.
    assert g2.check([("org_b", 5, 5), ("org_b", 5, 5)], MONTH) == [True, False]


def test_redis_loss_is_reseeded_and_the_outage_is_bounded(redis_server: RedisServer) -> None:
    (g1, l1), (g2, l2) = _node(redis_server.url, "n1"), _node(redis_server.url, "n2")
    assert _send(g1, l1, 30, 100) and _send(g2, l2, 30, 100)
    redis_server.kill()
    # Down: each node assumes the other as busy as itself: last total seen + 2 × its own since < 100.
    down1 = [_send(g1, l1, 5, 100) for _ in range(10)]
    down2 = [_send(g2, l2, 5, 100) for _ in range(10)]
    assert not g1.redis_up and sum(down1) > 0 and sum(down2) > 0
    total = l1.used("org_a", MONTH) + l2.used("org_a", MONTH)
    print(f"Redis down: {sum(down1)} + {sum(down2)} batches accepted, total {total} of quota 100")
    assert total <= 100 + 2 * 5  # the documented bound: at most N batches over the quota
    redis_server.start()  # empty: every count is gone
    client = redis.Redis.from_url(redis_server.url)
    assert client.keys("*") == []
    assert _send(g1, l1, 1, 100)  # reconnect: n1 writes its ledger, the script seeds n2's on its next call
    assert g1.redis_up
    _send(g2, l2, 1, 100)
    counts = client.hgetall(f"{KEY_PREFIX}org_a:{MONTH}")
    assert counts == {b"n1": str(l1.used("org_a", MONTH)).encode(), b"n2": str(l2.used("org_a", MONTH)).encode()}
    assert l1.used("org_a", MONTH) + l2.used("org_a", MONTH) <= 100 + 2 * 5  # at most N batches over
