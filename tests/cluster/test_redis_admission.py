"""Rate limits in a real Redis: several admitters (as several nodes' writers) share one bucket
per key; a refusal changes nothing; with Redis killed each falls back to its share of the rate,
and after a restart the buckets are in Redis again."""

from __future__ import annotations

import time

import redis
import trio

from pipeline.messages import AdmitReply
from stages.redis_admission import KEY_PREFIX, Batcher, RedisAdmitter, Request
from tests.cluster.servers import RedisServer


async def _burst(admitters: list[RedisAdmitter], key: str, rate: float, n: int) -> int:
    allowed = 0
    for i in range(n):
        replies = await admitters[i % len(admitters)].admit_batch([Request(key, rate, i)])
        allowed += replies[0].allowed
    return allowed


async def test_three_admitters_share_one_bucket(redis_server: RedisServer) -> None:
    nodes = [RedisAdmitter(redis_server.url, fallback_nodes=3) for _ in range(3)]
    start = time.monotonic()
    allowed = await _burst(nodes, "key_a", 10.0, 60)
    elapsed = time.monotonic() - start
    # Burst R plus what refills meanwhile: R·T + R over all nodes, not 3 × that.
    assert 10 <= allowed <= 10 + 10 * elapsed + 1e-9
    assert all(n.redis_up for n in nodes)


async def test_a_batch_is_one_pipelined_call_and_refusals_write_nothing(redis_server: RedisServer) -> None:
    node = RedisAdmitter(redis_server.url, fallback_nodes=1)
    replies = await node.admit_batch([Request("key_b", 0.001, i) for i in range(5)])
    assert [r.allowed for r in replies] == [True, False, False, False, False]
    assert replies[1].retry_after_s >= 1 and replies[0].limit == 0.001
    client = redis.Redis.from_url(redis_server.url)
    before = client.hgetall(KEY_PREFIX + "key_b")
    assert not (await node.admit_batch([Request("key_b", 0.001, 9)]))[0].allowed
    assert client.hgetall(KEY_PREFIX + "key_b") == before


async def test_redis_down_falls_back_to_a_share_and_comes_back(redis_server: RedisServer) -> None:
    node = RedisAdmitter(redis_server.url, fallback_nodes=4, retry_s=0.2)
    assert (await node.admit_batch([Request("key_c", 8.0, 0)]))[0].allowed
    redis_server.kill()
    replies = await node.admit_batch([Request("key_c", 8.0, i) for i in range(20)])
    assert not node.redis_up
    # Fallback: a local bucket at R/N = 2/s, burst 2: this node's share of the cluster's R.
    assert sum(r.allowed for r in replies) == 2 and replies[0].limit == 2.0
    redis_server.start()
    await trio.sleep(0.25)
    replies = await node.admit_batch([Request("key_c", 8.0, i) for i in range(20)])
    assert node.redis_up
    assert sum(r.allowed for r in replies) == 8  # Redis lost the bucket: a full one, burst R


async def test_a_lost_script_cache_is_reloaded_and_another_database_is_kept_apart(redis_server: RedisServer) -> None:
    node = RedisAdmitter(redis_server.url.rsplit("/", 1)[0] + "/3", fallback_nodes=1)
    assert (await node.admit_batch([Request("key_d", 1.0, 0)]))[0].allowed
    client = redis.Redis.from_url(redis_server.url)
    client.script_flush()  # as after a restart that kept the data: EVALSHA answers NOSCRIPT
    replies = await node.admit_batch([Request("key_d", 1.0, 1), Request("key_e", 1.0, 2)])
    assert [r.allowed for r in replies] == [False, True] and node.redis_up  # key_d's bucket was kept
    assert client.exists(KEY_PREFIX + "key_d") == 0  # in database 3, not 0
    assert redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/3").exists(KEY_PREFIX + "key_d") == 1
    await node.close()


async def test_the_batcher_answers_what_queued_meanwhile_in_one_call(redis_server: RedisServer) -> None:
    admitter = RedisAdmitter(redis_server.url, fallback_nodes=1)
    calls: list[int] = []
    admit_batch = admitter.admit_batch

    async def counted(requests: list[Request]) -> list[AdmitReply]:
        calls.append(len(requests))
        return await admit_batch(requests)

    admitter.admit_batch = counted  # type: ignore[method-assign]
    batcher = Batcher(admitter)
    answers: list[AdmitReply] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        batcher.submit(Request("key_f", 5.0, 0), answers.append)
        await trio.sleep(0.1)  # answered alone, at once
        for i in range(1, 41):  # 40 more while no call is in flight: one call
            batcher.submit(Request("key_f", 5.0, i), answers.append)
        with trio.fail_after(5):
            while len(answers) < 41:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert calls == [1, 40]
    assert sorted(a.req_id for a in answers) == list(range(41))
    assert sum(a.allowed for a in answers) == 5  # one bucket: the burst of 5


async def test_a_call_cancelled_halfway_leaves_no_stale_replies_for_the_next(redis_server: RedisServer) -> None:
    node = RedisAdmitter(redis_server.url, fallback_nodes=1)
    await node.admit_batch([Request("key_h", 1e9, 0)])  # connected, script loaded
    with trio.move_on_after(0.0001) as scope:  # 2,000 scripts take Redis far longer than that
        await node.admit_batch([Request("key_h", 1e9, i) for i in range(2000)])
    assert scope.cancelled_caught
    replies = await node.admit_batch([Request("key_i", 0.001, 7)])
    # this call's own answer (a bucket of 1, now empty), not one left over from the cancelled call
    assert replies[0].allowed and replies[0].remaining == 0 and replies[0].req_id == 7
    await node.close()


async def test_a_password_in_the_url_is_sent_and_a_missing_one_means_fallback(redis_server: RedisServer) -> None:
    redis.Redis.from_url(redis_server.url).config_set("requirepass", "s3cret")
    port = redis_server.url.rsplit(":", 1)[1]
    node = RedisAdmitter(f"redis://:s3cret@127.0.0.1:{port}", fallback_nodes=2)
    assert (await node.admit_batch([Request("key_j", 4.0, 0)]))[0].allowed and node.redis_up
    refused = RedisAdmitter(redis_server.url, fallback_nodes=2)  # NOAUTH: not usable, like a Redis down
    replies = await refused.admit_batch([Request("key_j", 4.0, i) for i in range(5)])
    assert not refused.redis_up and sum(r.allowed for r in replies) == 2  # its share, R/2
    await node.close()
