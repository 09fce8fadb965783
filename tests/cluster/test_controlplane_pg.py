"""The PostgreSQL control plane against a real server: the SQLite plane's behaviour, the schema
migrated once when many open it at the same time, revocation across instances within the cache
lifetime (measured), and the outage rules (known keys from the cache for a bounded time, unknown
keys unavailable, never "unknown")."""

from __future__ import annotations

import concurrent.futures
import time

import psycopg
import pytest

from pipeline.controlplane import ControlPlaneError
from pipeline.controlplane_pg import ControlPlaneUnavailable, PgControlPlane
from tests.cluster.servers import PgServer


def test_schema_is_created_once_by_concurrent_openers(pg_url: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        planes = list(pool.map(lambda _: PgControlPlane.open(pg_url), range(6)))
    for plane in planes:
        plane.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM foglamp_schema").fetchall() == [(1,)]
    with PgControlPlane.open(pg_url) as cp:  # and again: nothing to do
        assert cp.list_orgs() == []


def test_orgs_keys_and_authentication(pg_url: str) -> None:
    with PgControlPlane.open(pg_url) as cp:
        org = cp.create_org("acme", monthly_span_quota=1000)
        with pytest.raises(ControlPlaneError, match="already exists"):
            cp.create_org("acme")
        assert cp.get_org("acme") == org == cp.get_org(org.id)
        assert cp.set_quota("acme", None).monthly_span_quota is None
        key, record = cp.create_key("acme", name="ci", rate_limit_rps=5)
        assert record.org_id == org.id and record.rate_limit_rps == 5.0 and record.name == "ci"
        assert cp.authenticate(key) == record
        assert cp.get_key(record.prefix) == record == cp.get_key(record.id) == cp.get_key(key)
        assert cp.set_rate_limit(record.id, None).rate_limit_rps is None
        assert [k.id for k in cp.list_keys("acme")] == [record.id]
        assert [o.name for o in cp.list_orgs()] == ["acme"]
        with pytest.raises(ControlPlaneError, match="no org"):
            cp.create_key("nobody")
        with pytest.raises(ControlPlaneError, match="no key"):
            cp.get_key("key_0000000000000000")
        assert cp.authenticate("fl_" + "x" * 40) is None
        assert cp.authenticate("garbage") is None
        assert cp.revoke_key(record.prefix).revoked_at is not None
        assert cp.revoke_key(record.id).revoked_at is not None  # again: unchanged
    with psycopg.connect(pg_url) as conn:  # only the hash is stored
        stored = conn.execute("SELECT key_hash, prefix FROM api_keys").fetchall()
    assert key.encode() not in stored[0][0] and stored[0][1] == key[:12]


def test_revocation_reaches_every_instance_within_the_cache_lifetime(pg_url: str) -> None:
    with PgControlPlane.open(pg_url, cache_s=0.5) as cli, PgControlPlane.open(pg_url, cache_s=0.5) as node:
        cli.create_org("acme")
        key, record = cli.create_key("acme")
        assert node.authenticate(key) == record  # now cached
        cli.revoke_key(record.id)
        revoked_at = time.monotonic()
        while node.authenticate(key) is not None:
            time.sleep(0.01)
        delay = time.monotonic() - revoked_at
        print(f"revocation seen after {delay * 1000:.0f} ms (cache lifetime 500 ms)")
        assert delay < 1.0  # the contract's bound, not a timing of this machine: 0.5 s + 1 query


def test_outage_known_keys_from_the_cache_unknown_keys_unavailable(pg_url: str, pg: PgServer) -> None:
    with PgControlPlane.open(pg_url, cache_s=0.0, outage_s=3.0, retry_s=0.2) as cp:
        cp.create_org("acme")
        key, record = cp.create_key("acme")
        other, _ = cp.create_key("acme")
        assert cp.authenticate(key) == record
        pg.stop()
        try:
            assert cp.authenticate(key) == record  # read < outage_s ago
            assert cp.outage_since is not None
            with pytest.raises(ControlPlaneUnavailable):
                cp.authenticate(other)  # valid, but never read: 503, not 401
            with pytest.raises(ControlPlaneUnavailable):
                cp.authenticate("fl_" + "y" * 40)
            time.sleep(3.1)
            with pytest.raises(ControlPlaneUnavailable):
                cp.authenticate(key)  # past the bound
        finally:
            pg.start()
        deadline = time.monotonic() + 10
        while True:  # back after retry_s, on a new connection
            try:
                assert cp.authenticate(other) is not None
                break
            except ControlPlaneUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert cp.outage_since is None
