"""Rate limits in a real Redis: several admitters (as several nodes' writers) share one bucket
per key; a refusal changes nothing; with Redis killed each falls back to its share of the rate,
and after a restart the buckets are in Redis again."""

from __future__ import annotations

import time

import redis

from stages.redis_admission import KEY_PREFIX, RedisAdmitter, Request
from tests.cluster.servers import RedisServer


def _burst(admitters: list[RedisAdmitter], key: str, rate: float, n: int) -> int:
    allowed = 0
    for i in range(n):
        replies = admitters[i % len(admitters)].admit_batch([Request(key, rate, i)])
        allowed += replies[0].allowed
    return allowed


def test_three_admitters_share_one_bucket(redis_server: RedisServer) -> None:
    nodes = [RedisAdmitter(redis_server.url, fallback_nodes=3) for _ in range(3)]
    start = time.monotonic()
    allowed = _burst(nodes, "key_a", 10.0, 60)
    elapsed = time.monotonic() - start
    # Burst R plus what refills meanwhile: R·T + R over all nodes, not 3 × that.
    assert 10 <= allowed <= 10 + 10 * elapsed + 1e-9
    assert all(n.redis_up for n in nodes)


def test_a_batch_is_one_pipelined_call_and_refusals_write_nothing(redis_server: RedisServer) -> None:
    node = RedisAdmitter(redis_server.url, fallback_nodes=1)
    replies = node.admit_batch([Request("key_b", 0.001, i) for i in range(5)])
    assert [r.allowed for r in replies] == [True, False, False, False, False]
    assert replies[1].retry_after_s >= 1 and replies[0].limit == 0.001
    client = redis.Redis.from_url(redis_server.url)
    before = client.hgetall(KEY_PREFIX + "key_b")
    assert not node.admit_batch([Request("key_b", 0.001, 9)])[0].allowed
    assert client.hgetall(KEY_PREFIX + "key_b") == before


def test_redis_down_falls_back_to_a_share_and_comes_back(redis_server: RedisServer) -> None:
    node = RedisAdmitter(redis_server.url, fallback_nodes=4, retry_s=0.2)
    assert node.admit_batch([Request("key_c", 8.0, 0)])[0].allowed
    redis_server.kill()
    replies = node.admit_batch([Request("key_c", 8.0, i) for i in range(20)])
    assert not node.redis_up
    # Fallback: a local bucket at R/N = 2/s, burst 2: this node's share of the cluster's R.
    assert sum(r.allowed for r in replies) == 2 and replies[0].limit == 2.0
    redis_server.start()
    time.sleep(0.25)
    replies = node.admit_batch([Request("key_c", 8.0, i) for i in range(20)])
    assert node.redis_up
    assert sum(r.allowed for r in replies) == 8  # Redis lost the bucket: a full one, burst R
