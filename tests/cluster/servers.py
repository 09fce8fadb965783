"""The cluster tests' servers (bench/servers.py, shared with the benches) and three nodes sharing them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.servers import PgServer, RedisServer
from tests.nodes import Node

__all__ = ["PgServer", "RedisServer", "three_nodes"]


@contextmanager
def three_nodes(tmp_path: Path, env: dict[str, str]) -> Iterator[list[Node]]:
    """Three real nodes (one worker each, their own data dirs and stores) sharing `env`."""
    started = [Node(tmp_path / f"node{i}", workers=1, env=env) for i in range(3)]
    try:
        for node in started:
            node.start()
        yield started
    finally:
        for node in started:
            node.stop()
