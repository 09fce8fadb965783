"""The control plane on real SQLite files: orgs, keys, revocation seen across connections and
processes, header parsing."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from pipeline.controlplane import ApiKey, ControlPlaneError, Org, parse_key_header
from pipeline.controlplane_sqlite import AUTHENTICATE_SQL, SCHEMA_VERSION
from pipeline.controlplane_sqlite import SqliteControlPlane as ControlPlane
from pipeline.errors import FoglampError

ROOT = Path(__file__).resolve().parents[2]
KEY_RE = re.compile(r"fl_[A-Za-z0-9_-]{40}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "controlplane.sqlite3"


@pytest.fixture
def cp(db_path: Path):
    with ControlPlane.open(db_path) as plane:
        yield plane


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter, as another process of the node (or the CLI) would."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


def db_bytes(path: Path) -> bytes:
    """Everything SQLite wrote: the main file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


# --- opening


def test_open_creates_directory_wal_and_schema(db_path: Path) -> None:
    assert not db_path.parent.exists()
    ControlPlane.open(db_path).close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_reopening_keeps_data(db_path: Path) -> None:
    with ControlPlane.open(db_path) as cp:
        org = cp.create_org("acme")
        key, _ = cp.create_key("acme")
    with ControlPlane.open(db_path) as cp:
        assert cp.get_org("acme") == org
        assert cp.authenticate(key) is not None


def test_several_processes_create_the_schema_at_once(db_path: Path) -> None:
    code = (
        "import sys; from pipeline.controlplane_sqlite import SqliteControlPlane as ControlPlane\n"
        "cp = ControlPlane.open(sys.argv[1]); print(len(cp.list_orgs())); cp.close()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == "0"


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "controlplane.sqlite3"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(ControlPlaneError, match="controlplane.sqlite3"):
        ControlPlane.open(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ControlPlaneError, match="cannot open"):
        ControlPlane.open(tmp_path)


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    ControlPlane.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ControlPlaneError, match="newer"):
        ControlPlane.open(db_path)


def test_the_connection_belongs_to_its_thread(cp: ControlPlane) -> None:
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            cp.list_orgs()
        except BaseException as e:  # noqa: BLE001 - collected and checked below
            errors.append(e)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.ProgrammingError)


def test_control_plane_error_is_a_foglamp_error() -> None:
    assert issubclass(ControlPlaneError, FoglampError)


# --- orgs


def test_create_get_and_list_orgs(cp: ControlPlane) -> None:
    acme = cp.create_org("acme", monthly_span_quota=1000)
    globex = cp.create_org("Globex Corp.")
    assert re.fullmatch(r"org_[0-9a-f]{16}", acme.id)
    assert acme.name == "acme" and acme.monthly_span_quota == 1000
    assert globex.monthly_span_quota is None
    created = datetime.fromisoformat(acme.created_at)
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    assert cp.get_org(acme.id) == acme
    assert cp.get_org("acme") == acme
    assert cp.get_org("Globex Corp.") == globex
    assert cp.list_orgs() == [acme, globex]


def test_duplicate_org_names_are_refused(cp: ControlPlane) -> None:
    cp.create_org("acme")
    with pytest.raises(ControlPlaneError, match="already exists"):
        cp.create_org("acme")
    assert len(cp.list_orgs()) == 1


def test_unknown_org(cp: ControlPlane) -> None:
    with pytest.raises(ControlPlaneError, match="no org"):
        cp.get_org("nobody")
    with pytest.raises(ControlPlaneError, match="no org"):
        cp.get_org("org_0123456789abcdef")


@pytest.mark.parametrize("name", ["", "   ", "x" * 129, "org_0123456789abcdef", None, 42])
def test_invalid_org_names(cp: ControlPlane, name: object) -> None:
    with pytest.raises(ControlPlaneError):
        cp.create_org(name)  # type: ignore[arg-type]
    assert cp.list_orgs() == []


def test_longest_org_name(cp: ControlPlane) -> None:
    assert cp.create_org("x" * 128).name == "x" * 128


@pytest.mark.parametrize("quota", [-1, 1.5, True, "10", float("inf")])
def test_invalid_quotas(cp: ControlPlane, quota: object) -> None:
    with pytest.raises(ControlPlaneError, match="quota"):
        cp.create_org("acme", monthly_span_quota=quota)  # type: ignore[arg-type]
    cp.create_org("acme")
    with pytest.raises(ControlPlaneError, match="quota"):
        cp.set_quota("acme", quota)  # type: ignore[arg-type]


def test_set_and_unset_quota(cp: ControlPlane) -> None:
    org = cp.create_org("acme")
    key, _ = cp.create_key("acme")
    assert cp.set_quota("acme", 0).monthly_span_quota == 0
    updated = cp.set_quota(org.id, 5_000_000)
    assert updated == dataclasses.replace(org, monthly_span_quota=5_000_000)
    assert cp.get_org("acme").monthly_span_quota == 5_000_000
    assert cp.authenticate(key).monthly_span_quota == 5_000_000  # type: ignore[union-attr]
    assert cp.set_quota("acme", None).monthly_span_quota is None
    assert cp.authenticate(key).monthly_span_quota is None  # type: ignore[union-attr]
    with pytest.raises(ControlPlaneError, match="no org"):
        cp.set_quota("nobody", 1)


# --- keys


def test_created_key_authenticates(cp: ControlPlane) -> None:
    org = cp.create_org("acme", monthly_span_quota=100)
    key, record = cp.create_key("acme", name="ci", rate_limit_rps=50)
    assert KEY_RE.fullmatch(key)
    assert re.fullmatch(r"key_[0-9a-f]{16}", record.id)
    assert record == ApiKey(
        id=record.id,
        prefix=key[:12],
        name="ci",
        org_id=org.id,
        org_name="acme",
        rate_limit_rps=50.0,
        monthly_span_quota=100,
        created_at=record.created_at,
        revoked_at=None,
    )
    assert cp.authenticate(key) == record
    assert cp.get_key(record.id) == record


def test_create_key_by_org_id_and_defaults(cp: ControlPlane) -> None:
    org = cp.create_org("acme")
    key, record = cp.create_key(org.id)
    assert record.org_id == org.id and record.name == "" and record.rate_limit_rps is None
    assert record.monthly_span_quota is None
    other, _ = cp.create_key(org.id)
    assert other != key


def test_create_key_for_unknown_org(cp: ControlPlane) -> None:
    with pytest.raises(ControlPlaneError, match="no org"):
        cp.create_key("nobody")
    assert cp.list_keys() == []


def test_only_the_hash_is_stored(cp: ControlPlane, db_path: Path) -> None:
    cp.create_org("acme")
    key, record = cp.create_key("acme")
    stored = db_bytes(db_path)
    assert record.prefix.encode() in stored  # we are looking in the right place
    assert hashlib.sha256(key.encode()).digest() in stored
    assert key.encode() not in stored
    assert key[12:].encode() not in stored


def test_list_keys_never_exposes_the_key(cp: ControlPlane) -> None:
    cp.create_org("acme")
    cp.create_org("globex")
    k1, r1 = cp.create_key("acme", name="one")
    k2, r2 = cp.create_key("globex", name="two")
    k3, r3 = cp.create_key("acme", name="three")
    listed = cp.list_keys()
    assert listed == [r1, r2, r3]
    for record in listed:
        for f in dataclasses.fields(record):
            value = str(getattr(record, f.name))
            assert k1[12:] not in value and k2[12:] not in value and k3[12:] not in value
    assert cp.list_keys("acme") == [r1, r3]
    assert cp.list_keys(r2.org_id) == [r2]
    with pytest.raises(ControlPlaneError, match="no org"):
        cp.list_keys("nobody")


@pytest.mark.parametrize("by", ["id", "prefix", "key"])
def test_revoke(cp: ControlPlane, by: str) -> None:
    cp.create_org("acme")
    key, record = cp.create_key("acme")
    kept, _ = cp.create_key("acme")
    handle = {"id": record.id, "prefix": record.prefix, "key": key}[by]
    revoked = cp.revoke_key(handle)
    assert revoked.id == record.id and revoked.revoked_at is not None
    datetime.fromisoformat(revoked.revoked_at)
    assert cp.authenticate(key) is None
    assert cp.authenticate(kept) is not None
    assert cp.get_key(record.id) == revoked
    assert cp.revoke_key(handle) == revoked  # again: unchanged
    assert [k.revoked_at is not None for k in cp.list_keys()] == [True, False]


def test_unknown_keys(cp: ControlPlane) -> None:
    cp.create_org("acme")
    cp.create_key("acme")
    for handle in ["key_0123456789abcdef", "fl_000000000", "fl_" + "0" * 40]:
        with pytest.raises(ControlPlaneError, match="no key"):
            cp.get_key(handle)
        with pytest.raises(ControlPlaneError, match="no key"):
            cp.revoke_key(handle)
    for handle in ["", "fl_", "fl_0000", "key_xyz", "something", "fl_" + "0" * 20]:
        with pytest.raises(ControlPlaneError, match="neither"):
            cp.revoke_key(handle)


def test_ambiguous_prefix(cp: ControlPlane, db_path: Path) -> None:
    org = cp.create_org("acme")
    key, record = cp.create_key("acme")
    # Two keys sharing a prefix is rare (54 random bits) but possible: make one by hand.
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "INSERT INTO api_keys (id, key_hash, prefix, name, org_id, created_at)"
            " VALUES ('key_00000000000000ff', ?, ?, 'twin', ?, '2025-01-01T00:00:00.000Z')",
            (hashlib.sha256(b"twin").digest(), record.prefix, org.id),
        )
    conn.close()
    with pytest.raises(ControlPlaneError, match="more than one"):
        cp.revoke_key(record.prefix)
    with pytest.raises(ControlPlaneError, match="more than one"):
        cp.get_key(record.prefix)
    assert cp.authenticate(key) is not None  # nothing was revoked
    assert cp.revoke_key(record.id).revoked_at is not None


def test_revocation_is_seen_at_once_by_another_open_instance(db_path: Path) -> None:
    with ControlPlane.open(db_path) as cli, ControlPlane.open(db_path) as worker:
        cli.create_org("acme")
        key, record = cli.create_key("acme")
        assert worker.authenticate(key) == record  # the worker's connection is warm
        cli.revoke_key(record.prefix)
        assert worker.authenticate(key) is None


def test_revocation_from_another_process_is_seen_at_once(db_path: Path) -> None:
    with ControlPlane.open(db_path) as worker:
        worker.create_org("acme")
        key, record = worker.create_key("acme")
        kept, _ = worker.create_key("acme")
        assert worker.authenticate(key) == record
        done = run_python(
            "import sys; from pipeline.controlplane_sqlite import SqliteControlPlane as ControlPlane\n"
            "cp = ControlPlane.open(sys.argv[1]); print(cp.revoke_key(sys.argv[2]).id); cp.close()",
            str(db_path),
            record.prefix,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == record.id
        assert worker.authenticate(key) is None
        assert worker.authenticate(kept) is not None


def test_key_created_by_another_process_authenticates_at_once(db_path: Path) -> None:
    with ControlPlane.open(db_path) as worker:
        worker.create_org("acme")
        assert worker.authenticate("fl_" + "a" * 40) is None
        done = run_python(
            "import sys; from pipeline.controlplane_sqlite import SqliteControlPlane as ControlPlane\n"
            "cp = ControlPlane.open(sys.argv[1]); print(cp.create_key('acme')[0]); cp.close()",
            str(db_path),
        )
        assert done.returncode == 0, done.stderr
        assert worker.authenticate(done.stdout.strip()) is not None


def test_authenticate_leaves_no_read_transaction_open(db_path: Path) -> None:
    # A reader stuck in an old snapshot would pin the WAL (and, with a cache, miss revocations).
    with ControlPlane.open(db_path) as cli, ControlPlane.open(db_path) as worker:
        cli.create_org("acme")
        key, _ = cli.create_key("acme")
        assert worker.authenticate(key) is not None
        assert worker.authenticate("fl_" + "b" * 40) is None
        cli.create_key("acme")
        conn = sqlite3.connect(db_path)
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        assert busy == 0


def test_authenticate_is_one_indexed_lookup(cp: ControlPlane) -> None:
    plan = cp._conn.execute("EXPLAIN QUERY PLAN " + AUTHENTICATE_SQL, (b"",)).fetchall()
    steps = [row[-1] for row in plan]
    assert len(steps) == 2 and all(step.startswith("SEARCH") for step in steps), steps


def test_set_rate_limit(cp: ControlPlane) -> None:
    cp.create_org("acme")
    key, record = cp.create_key("acme")
    assert cp.set_rate_limit(record.prefix, 12.5).rate_limit_rps == 12.5
    assert cp.authenticate(key).rate_limit_rps == 12.5  # type: ignore[union-attr]
    assert cp.set_rate_limit(record.id, 3).rate_limit_rps == 3.0
    assert cp.set_rate_limit(record.id, None).rate_limit_rps is None
    for bad in [0, -1, float("nan"), float("inf"), True, "5"]:
        with pytest.raises(ControlPlaneError, match="rate limit"):
            cp.set_rate_limit(record.id, bad)  # type: ignore[arg-type]
        with pytest.raises(ControlPlaneError, match="rate limit"):
            cp.create_key("acme", rate_limit_rps=bad)  # type: ignore[arg-type]
    cp.revoke_key(record.id)
    with pytest.raises(ControlPlaneError, match="revoked"):
        cp.set_rate_limit(record.id, 5)


def test_key_names(cp: ControlPlane) -> None:
    cp.create_org("acme")
    assert cp.create_key("acme", name="n" * 128)[1].name == "n" * 128
    with pytest.raises(ControlPlaneError, match="key name"):
        cp.create_key("acme", name="n" * 129)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "fl_",
        "fl_" + "a" * 39,
        "fl_" + "a" * 41,
        "FL_" + "a" * 40,
        "sk_" + "a" * 40,
        "fl_" + "a" * 39 + "!",
        "fl_" + "a" * 39 + "é",
        "fl_" + "a" * 40 + "\n",
        " fl_" + "a" * 40,
        None,
        b"fl_" + b"a" * 40,
    ],
)
def test_malformed_keys_do_not_authenticate(cp: ControlPlane, key: object) -> None:
    assert cp.authenticate(key) is None  # type: ignore[arg-type]


def test_a_well_formed_unknown_key_does_not_authenticate(cp: ControlPlane) -> None:
    cp.create_org("acme")
    key, _ = cp.create_key("acme")
    assert cp.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_data_classes_are_frozen(cp: ControlPlane) -> None:
    org = cp.create_org("acme")
    _, record = cp.create_key("acme")
    with pytest.raises(dataclasses.FrozenInstanceError):
        org.name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.revoked_at = "now"  # type: ignore[misc]
    assert isinstance(org, Org)


# --- headers

KEY = "fl_" + "Ab3_-" * 8


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        (f"Bearer {KEY}", None, KEY),
        (f"bearer {KEY}", None, KEY),
        (f"BEARER  {KEY} ", None, KEY),
        (None, KEY, KEY),
        (None, f" {KEY} ", KEY),
        (f"Bearer {KEY}", "fl_" + "z" * 40, KEY),  # Authorization wins
        (f"Basic {KEY}", None, None),
        (f"Token {KEY}", None, None),
        (KEY, None, None),  # no scheme
        ("Bearer", None, None),
        ("Bearer fl_short", None, None),
        (f"Bearer {KEY} extra", None, None),
        ("Basic dXNlcjpwYXNz", KEY, KEY),  # a proxy's Basic auth does not hide X-API-Key
        (None, "fl_short", None),
        (None, f"Bearer {KEY}", None),
        ("", "", None),
        (None, None, None),
    ],
)
def test_parse_key_header(
    authorization: str | None, x_api_key: str | None, expected: str | None
) -> None:
    assert parse_key_header(authorization, x_api_key) == expected
