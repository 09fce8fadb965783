"""Three real nodes sharing PostgreSQL and Redis: a key's rate limit and an org's quota hold over all nodes together
(alone, each node would allow the whole burst), Redis killed: each node falls back to its share,
/metrics says so; Redis back: shared again. Every 202 is stored exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.servers import RedisServer, three_nodes
from tests.nodes import Node, batch, cli, query, span, trace


@pytest.fixture
def env(pg_url: str, redis_server: RedisServer) -> dict[str, str]:
    return {"INGEST_CONTROLPLANE_URL": pg_url, "INGEST_REDIS_URL": redis_server.url,
            "INGEST_REDIS_FALLBACK_NODES": "3", "INGEST_REDIS_RETRY_S": "0.2"}  # fmt: skip


@pytest.fixture
def nodes(tmp_path: Path, env: dict[str, str]) -> Iterator[list[Node]]:
    with three_nodes(tmp_path, env) as started:
        yield started


def _spread(nodes: list[Node], key: str, n: int, tag: str, accepted: set[tuple[int, str]]) -> tuple[int, float]:
    """`n` requests round-robin over the nodes; (202s, seconds taken)."""
    start, ok = time.monotonic(), 0
    for i in range(n):
        node = i % len(nodes)
        response = nodes[node].post(batch(trace(f"{tag}{i}", span(f"{tag}{i}"))), key=key)
        assert response.status_code in (202, 429), response.text
        if response.status_code == 202:
            ok += 1
            accepted.add((node, f"{tag}{i}"))
    return ok, time.monotonic() - start


def _redis_up(node: Node) -> float:
    for line in httpx.get(f"{node.url}/metrics").text.splitlines():
        if line.startswith("foglamp_redis_up"):
            return float(line.split()[-1])
    return -1.0


def test_rate_limit_over_all_nodes_and_redis_outage(nodes: list[Node], env: dict[str, str],
                                                    redis_server: RedisServer) -> None:  # fmt: skip
    cli(nodes[0].data_dir, "orgs", "create", "acme", env=env)
    out = cli(nodes[0].data_dir, "keys", "create", "--org", "acme", "--rate-limit", "3", env=env)
    key = out.stdout.strip().splitlines()[-1]
    accepted: set[tuple[int, str]] = set()

    ok, elapsed = _spread(nodes, key, 30, "a", accepted)
    print(f"shared bucket: {ok} of 30 accepted in {elapsed:.2f} s (bound {3 * elapsed + 3:.1f})")
    assert 3 <= ok <= 3 * elapsed + 3  # one node alone would take its whole burst of 3: 9 over three

    redis_server.kill()
    time.sleep(1.5)  # the buckets (local and shared) refill
    ok, elapsed = _spread(nodes, key, 30, "b", accepted)
    print(f"Redis down: {ok} of 30 accepted in {elapsed:.2f} s (bound {3 * elapsed + 3:.1f})")
    assert ok <= 3 * elapsed + 3 + 3  # each node: rate 1/s, burst 1 -> R·T + R (+1 per node, rounding)
    assert [_redis_up(n) for n in nodes] == [0.0, 0.0, 0.0]
    assert [httpx.get(f"{n.url}/readyz").json() for n in nodes] == [{"status": "ready", "redis": "down"}] * 3

    redis_server.start()
    time.sleep(1.5)
    ok, elapsed = _spread(nodes, key, 30, "c", accepted)
    assert 3 <= ok <= 3 * elapsed + 3
    assert [_redis_up(n) for n in nodes] == [1.0, 1.0, 1.0]
    assert [httpx.get(f"{n.url}/readyz").json() for n in nodes] == [{"status": "ready", "redis": "up"}] * 3

    # The org's quota over all nodes: 4 + 4 + 4 crosses 10 (accepted whole), then refused everywhere.
    cli(nodes[0].data_dir, "orgs", "create", "small", "--monthly-span-quota", "10", env=env)
    small = cli(nodes[1].data_dir, "keys", "create", "--org", "small", env=env).stdout.strip().splitlines()[-1]
    statuses = []
    for i in range(6):
        body = batch(trace(f"q{i}", *[span(f"q{i}-{j}") for j in range(4)]))
        response = nodes[i % 3].post(body, key=small)
        statuses.append(response.status_code)
        if response.status_code == 202:
            accepted.update((i % 3, f"q{i}-{j}") for j in range(4))
    assert statuses == [202, 202, 202, 429, 429, 429], statuses

    deadline = time.monotonic() + 30
    while (stored := _stored(nodes)) < len(accepted) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert stored == len(accepted)


def _stored(nodes: list[Node]) -> int:
    return sum(int(query(n.data_dir, "SELECT count() AS c FROM foglamp.spans FINAL")[0]["c"]) for n in nodes)
