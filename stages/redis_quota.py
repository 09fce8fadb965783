"""Monthly quotas shared by several nodes, in Redis (with INGEST_REDIS_URL).

Where the count lives: one Redis hash per org and month, one field per node (`node_id`), each
field that node's own count. The node's count is durable in its own spool checkpoint (the writer's
`QuotaLedger`, as on one node), so Redis only sums: a node whose field is missing (Redis lost its
data, or the node just started) writes it from its ledger before its next check.

The check (`gate`, in the spool stage after validation, SPEC §1): one Lua script per batch checks
the org's total over all nodes against its quota and, only if it passes, adds the batch's spans to
this node's field: the batch that crosses the quota is accepted whole, the ones after it are
refused, and a refused batch is never charged. A batch whose spool append then fails is given
back (`release`).

Redis down: each node admits an org's batches while the last total it saw plus N times what it
accepted since (N = INGEST_REDIS_FALLBACK_NODES, every node assumed as busy as itself) is below
the quota: N nodes together overshoot by at most N batches.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from pipeline.config import Config
from pipeline.log import get_logger
from stages.admission import QuotaLedger

RESERVE_LUA = """
local node, spans, quota, seed = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if redis.call('HEXISTS', KEYS[1], node) == 0 then
  redis.call('HSET', KEYS[1], node, seed)
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total >= quota then return {0, total} end
redis.call('HINCRBY', KEYS[1], node, spans)
redis.call('EXPIRE', KEYS[1], 40 * 86400)
return {1, total + spans}
"""
KEY_PREFIX = "foglamp:quota:"
log = get_logger("redis_quota")


@dataclass
class QuotaGate:
    """Blocking: call from a worker thread. `ledger` is the writer's live ledger (read only)."""

    url: str
    node_id: str
    fallback_nodes: int
    ledger: QuotaLedger
    timeout_s: float = 0.5
    redis_up: bool = True
    _client: redis.Redis | None = None
    _last_total: dict[tuple[str, int], int] = field(default_factory=dict)
    _since_down: dict[tuple[str, int], int] = field(default_factory=dict)

    def check(self, batches: Sequence[tuple[str, int, int]], month: int) -> list[bool]:
        """(org_id, spans, quota) in order -> admitted? Charges the admitted ones in Redis."""
        try:
            return self._in_redis(batches, month)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if self.redis_up:
                log.warning("redis_quota_down", error=str(exc), fallback_share=f"1/{self.fallback_nodes}")
            self._client, self.redis_up = None, False
        admitted = []
        for org, spans, quota in batches:
            k = (org, month)
            seen = max(self._last_total.get(k, 0), self.ledger.used(org, month))
            ok = seen + self.fallback_nodes * self._since_down.get(k, 0) < quota
            if ok:
                self._since_down[k] = self._since_down.get(k, 0) + spans
            admitted.append(ok)
        return admitted

    def release(self, batches: Sequence[tuple[str, int]], month: int) -> None:
        """Give back what a failed spool append had reserved (best effort: Redis re-seeds)."""
        if self._client is None or not self.redis_up:
            return
        pipe = self._client.pipeline(transaction=False)
        for org, spans in batches:
            pipe.hincrby(f"{KEY_PREFIX}{org}:{month}", self.node_id, -spans)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._client = None

    def _in_redis(self, batches: Sequence[tuple[str, int, int]], month: int) -> list[bool]:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
            # Our fields as our durable ledger has them: right after a restart or a Redis loss.
            pipe = self._client.pipeline(transaction=False)
            for org, (m, used) in self.ledger.usage.items():
                pipe.hset(f"{KEY_PREFIX}{org}:{m}", self.node_id, used)
            pipe.execute()
        script = self._client.register_script(RESERVE_LUA)
        pipe = self._client.pipeline(transaction=False)
        for org, spans, quota in batches:
            key = f"{KEY_PREFIX}{org}:{month}"
            script(keys=[key], args=[self.node_id, spans, quota, self.ledger.used(org, month)], client=pipe)
        results = pipe.execute()
        if not self.redis_up:
            log.info("redis_quota_up")
            self._since_down.clear()
        self.redis_up = True
        admitted = []
        for (org, _, _), (ok, total) in zip(batches, results, strict=True):
            self._last_total[(org, month)] = int(total)
            admitted.append(bool(ok))
        return admitted


def quota_gate(config: Config, ledger: QuotaLedger) -> QuotaGate | None:
    if not config.redis_url:
        return None
    path = config.data_dir / "node_id"  # this node's field: its ledger is in this data dir
    if not path.exists():
        path.write_text(f"node_{secrets.token_hex(8)}\n")
    return QuotaGate(config.redis_url, path.read_text().strip(), config.redis_fallback_nodes, ledger)
