from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

from tests.cluster.servers import PgServer, RedisServer


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_url(pg: PgServer) -> str:
    """A fresh, empty database on the module's server."""
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
