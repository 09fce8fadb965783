"""Rate limits shared by several nodes: one token bucket per key in Redis (INGEST_REDIS_URL).

Exactness: each admission is one Lua script, run atomically by Redis on Redis's own clock
(`TIME`), so the nodes' buckets are one bucket: rate R, burst max(R, 1), at most R·T + max(R, 1)
admissions of a key in any T seconds over all nodes. A refused admission writes nothing.

Round trips: the writer queues its fronts' admissions and sends them in one pipelined call per
batch (`admit_batch`: EVALSHA of the loaded script, one per admission), on its own trio loop
(`pipeline.resp`: no thread, no redis-py); a batch takes what queued while the previous one was
in flight, so under load many admissions share one round trip, and an idle writer sends at once.

Redis down: `RedisAdmitter` answers from a local `RateLimiter` at R / `fallback_nodes` (each node
one share of the rate, so N nodes together stay within R), logs the switch, and exposes it as
`redis_up` (metrics and /readyz). It tries Redis again after `retry_s`; the buckets in Redis then
take over as they are (or full, if Redis lost them: at most one extra burst per key).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import trio

from pipeline import metrics
from pipeline.config import Config
from pipeline.log import get_logger
from pipeline.messages import AdmitReply
from pipeline.resp import RespConnection
from stages.admission import RateLimiter

TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local cap = math.max(rate, 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
if tokens < 1 then
  return {0, tostring(tokens)}
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap / rate) * 1000) + 1000)
return {1, tostring(tokens)}
"""
KEY_PREFIX = "foglamp:rl:"
log = get_logger("redis_admission")


@dataclass(frozen=True, slots=True)
class Request:
    key_id: str
    rate: float
    req_id: int


def reply_of(request: Request, allowed: bool, tokens: float) -> AdmitReply:
    rate = request.rate
    capacity = max(rate, 1.0)
    return AdmitReply(
        req_id=request.req_id,
        allowed=allowed,
        limit=rate,
        remaining=int(tokens),
        reset_s=(capacity - tokens) / rate,
        retry_after_s=0 if allowed else max(1, math.ceil((1.0 - tokens) / rate)),
    )


@dataclass
class RedisAdmitter:
    """On the writer's trio loop (`pipeline.resp`, no thread): one `admit_batch` at a time."""

    url: str
    fallback_nodes: int
    retry_s: float = 1.0
    timeout_s: float = 0.5
    fallback: RateLimiter = field(default_factory=RateLimiter)
    redis_up: bool = True
    _conn: RespConnection | None = None
    _sha: str = ""
    _down_until: float = 0.0

    async def admit_batch(self, requests: Sequence[Request]) -> list[AdmitReply]:
        now = time.monotonic()
        if now >= self._down_until:
            try:
                return await self._in_redis(requests)
            except (OSError, TimeoutError) as exc:  # down, refused, or out of step: a new connection next time
                await self.close()
                self._down_until = now + self.retry_s
                if self.redis_up:
                    log.warning("redis_down", error=str(exc), fallback_share=f"1/{self.fallback_nodes}")
                self.redis_up = False
            except BaseException:  # cancelled halfway through a call: the stream may be out of step
                await self.close()
                raise
        share = self.fallback_nodes
        return [
            self.fallback.admit(r.key_id, r.rate / share, now, r.req_id)
            for r in requests
        ]  # fmt: skip

    async def _in_redis(self, requests: Sequence[Request]) -> list[AdmitReply]:
        if self._conn is None:
            self._conn = await RespConnection.open(self.url, timeout_s=self.timeout_s)
            self._sha = ""
        for _ in range(2):  # a second time after (re)loading the script
            if not self._sha:
                (sha,) = await self._conn.pipeline([("SCRIPT", "LOAD", TOKEN_BUCKET_LUA)])
                self._sha = _checked(sha).decode()
            commands = [("EVALSHA", self._sha, 1, KEY_PREFIX + r.key_id, repr(float(r.rate))) for r in requests]
            results = await self._conn.pipeline(commands)
            if not any(_no_script(x) for x in results):
                break
            self._sha = ""  # Redis restarted and lost its script cache (nothing was changed)
        if not self.redis_up:
            log.info("redis_up")
        self.redis_up = True
        pairs = zip(requests, results, strict=True)
        return [reply_of(r, bool(allowed), float(tokens)) for r, (allowed, tokens) in map(_pair, pairs)]

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await conn.aclose()


def _checked(reply: Any) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        raise OSError(f"Redis refused the admission script: {reply}")
    return reply


def _no_script(reply: Any) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")


def _pair(item: tuple[Request, Any]) -> tuple[Request, tuple[int, bytes]]:
    request, reply = item
    allowed, tokens = _checked(reply)
    return request, (allowed, tokens)


class Batcher:
    """The writer's admissions, queued by `submit` (sync, from the link's dispatch) and answered by
    `run`, one pipelined Redis call per batch: natural batching, no fixed wait. A batch is sent as
    soon as the previous call returns, and holds everything that queued meanwhile (at most
    `max_batch`). The queue is bounded by the fronts' in-flight caps."""

    def __init__(self, admitter: RedisAdmitter, max_batch: int = 512) -> None:
        self.admitter = admitter
        self.max_batch = max_batch
        self._queue: list[tuple[Request, Callable[[AdmitReply], None]]] = []
        self._wake = trio.Event()

    def submit(self, request: Request, reply: Callable[[AdmitReply], None]) -> None:
        self._queue.append((request, reply))
        self._wake.set()

    async def run(self) -> None:
        metrics.redis_up.set(1)  # until a call fails
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                    replies = await self.admitter.admit_batch([r for r, _ in batch])
                    metrics.redis_up.set(1 if self.admitter.redis_up else 0)
                    for (_, reply), answer in zip(batch, replies, strict=True):
                        reply(answer)
        finally:
            await self.admitter.close()


def redis_batcher(config: Config) -> Batcher | None:
    if not config.redis_url:
        return None
    admitter = RedisAdmitter(config.redis_url, config.redis_fallback_nodes, retry_s=config.redis_retry_s)
    return Batcher(admitter)
