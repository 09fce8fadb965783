"""The control plane: orgs, their monthly span quotas, and API keys, in an embedded SQLite file.

One database file in the data directory (`Config.controlplane_db`) is shared by every process of
the node: each front worker opens it once and calls `authenticate` on every request, while the
operator's CLI (`run.py orgs …`, `run.py keys …`) writes it while the node runs.

    cp = ControlPlane.open(config.controlplane_db)
    org = cp.create_org("acme", monthly_span_quota=1_000_000)
    key, record = cp.create_key("acme", name="ci")      # the full key is shown this once
    cp.authenticate(key)                                 # -> ApiKey, or None
    cp.revoke_key(record.prefix)                         # refused on the next request, everywhere

Keys look like "fl_" + 40 url-safe characters. Only their SHA-256 is stored; their first 12
characters (the prefix) are kept in clear so an operator can tell keys apart and revoke one.

Concurrency: the file is in WAL mode, so readers never wait for the writer and a writer waits
(`busy_timeout`) only for another writer. Reads run in autocommit mode, each in its own short read
transaction, so every `authenticate` sees the latest committed revocation; nothing is cached.
Writes take the write lock up front (BEGIN IMMEDIATE), so a check and its update are atomic.

Error handling: an operator's mistake (unknown org or key, duplicate org name, ambiguous prefix,
invalid quota, a file that is not a database) raises `ControlPlaneError` with a message fit to
print. Anything else sqlite3 raises (a disk error, a lock held past the busy timeout) propagates.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from pipeline.errors import ControlPlaneError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0
KEY_PREFIX_CHARS = 12
MAX_NAME_CHARS = 128

_KEY_RE = re.compile(r"fl_[A-Za-z0-9_-]{40}")
_ORG_ID_RE = re.compile(r"org_[0-9a-f]{16}")
_KEY_ID_RE = re.compile(r"key_[0-9a-f]{16}")
_PREFIX_RE = re.compile(r"fl_[A-Za-z0-9_-]{9}")

# Each entry brings the schema from version i to i + 1. Every statement is idempotent.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS orgs (
            id                 TEXT PRIMARY KEY,
            name               TEXT NOT NULL UNIQUE,
            monthly_span_quota INTEGER CHECK (monthly_span_quota >= 0),
            created_at         TEXT NOT NULL
        ) STRICT""",
        """CREATE TABLE IF NOT EXISTS api_keys (
            id             TEXT PRIMARY KEY,
            key_hash       BLOB NOT NULL UNIQUE,
            prefix         TEXT NOT NULL,
            name           TEXT NOT NULL DEFAULT '',
            org_id         TEXT NOT NULL REFERENCES orgs (id),
            rate_limit_rps REAL CHECK (rate_limit_rps > 0),
            created_at     TEXT NOT NULL,
            revoked_at     TEXT
        ) STRICT""",
        "CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys (prefix)",
        "CREATE INDEX IF NOT EXISTS api_keys_org_id ON api_keys (org_id)",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_ORG_COLUMNS = "id, name, monthly_span_quota, created_at"
_KEY_SELECT = """
    SELECT k.id, k.prefix, k.name, k.org_id, o.name, k.rate_limit_rps, o.monthly_span_quota,
           k.created_at, k.revoked_at
    FROM api_keys AS k JOIN orgs AS o ON o.id = k.org_id
"""
# The hot path: one lookup in the key_hash unique index, one in the orgs primary key.
AUTHENTICATE_SQL = _KEY_SELECT + " WHERE k.key_hash = ? AND k.revoked_at IS NULL"


@dataclass(frozen=True, slots=True)
class Org:
    id: str  # "org_" + 16 hex chars
    name: str
    monthly_span_quota: int | None  # None = unlimited
    created_at: str  # ISO 8601 UTC


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # "key_" + 16 hex chars
    prefix: str  # first 12 characters of the key
    name: str
    org_id: str
    org_name: str
    rate_limit_rps: float | None  # None = the node default
    monthly_span_quota: int | None  # the org's quota, joined in so the hot path needs one query
    created_at: str
    revoked_at: str | None


class ControlPlane:
    """A connection to the control plane database.

    Resource handling: `open` returns an instance that owns one long-lived sqlite3 connection; the
    caller must `close` it (or use it as a context manager). The connection belongs to the thread
    that opened it (sqlite3's `check_same_thread`) and to the process: open it in each process after
    it starts, never before a fork. Each call is short and blocking; `authenticate` is one indexed
    SELECT (tens of microseconds), fine to call directly from a trio task. Writes from the CLI take
    the write lock for a few milliseconds at most and never block readers (WAL).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: os.PathLike[str] | str) -> ControlPlane:
        """Open (creating it and its parent directory if needed) the database at `path`."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.OperationalError) as e:
            raise ControlPlaneError(f"cannot open the control plane database {path}: {e}") from e
        try:
            _prepare(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- orgs

    def create_org(self, name: str, monthly_span_quota: int | None = None) -> Org:
        _check_org_name(name)
        _check_quota(monthly_span_quota)
        org = Org(f"org_{secrets.token_hex(8)}", name, monthly_span_quota, _now())
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM orgs WHERE name = ?", (name,)).fetchone():
                raise ControlPlaneError(f"an org named {name!r} already exists")
            conn.execute(f"INSERT INTO orgs ({_ORG_COLUMNS}) VALUES (?, ?, ?, ?)", _astuple(org))
        return org

    def get_org(self, id_or_name: str) -> Org:
        return self._find_org(self._conn, id_or_name)

    def list_orgs(self) -> list[Org]:
        rows = self._conn.execute(f"SELECT {_ORG_COLUMNS} FROM orgs ORDER BY rowid").fetchall()
        return [Org(*row) for row in rows]

    def set_quota(self, id_or_name: str, monthly_span_quota: int | None) -> Org:
        """Set the org's monthly span quota; None removes it (unlimited)."""
        _check_quota(monthly_span_quota)
        with self._write() as conn:
            org = self._find_org(conn, id_or_name)
            conn.execute(
                "UPDATE orgs SET monthly_span_quota = ? WHERE id = ?", (monthly_span_quota, org.id)
            )
            return self._find_org(conn, org.id)

    # --- keys

    def create_key(
        self, org: str, name: str = "", rate_limit_rps: float | None = None
    ) -> tuple[str, ApiKey]:
        """Create a key for `org` (id or name). Returns the full key, which is not stored, and
        the key's record."""
        _check_key_name(name)
        _check_rate_limit(rate_limit_rps)
        key = f"fl_{secrets.token_urlsafe(30)}"  # 30 bytes = 40 url-safe characters
        key_id = f"key_{secrets.token_hex(8)}"
        with self._write() as conn:
            owner = self._find_org(conn, org)
            conn.execute(
                "INSERT INTO api_keys (id, key_hash, prefix, name, org_id, rate_limit_rps,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    _hash(key),
                    key[:KEY_PREFIX_CHARS],
                    name,
                    owner.id,
                    None if rate_limit_rps is None else float(rate_limit_rps),
                    _now(),
                ),
            )
            return key, self._find_key(conn, key_id)

    def list_keys(self, org: str | None = None) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first; of one org (id or name) if given."""
        if org is None:
            rows = self._conn.execute(_KEY_SELECT + " ORDER BY k.rowid").fetchall()
        else:
            org_id = self._find_org(self._conn, org).id
            rows = self._conn.execute(
                _KEY_SELECT + " WHERE k.org_id = ? ORDER BY k.rowid", (org_id,)
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def get_key(self, id_or_prefix: str) -> ApiKey:
        """A key by its id ("key_…"), its 12-character prefix, or the full key."""
        return self._find_key(self._conn, id_or_prefix)

    def revoke_key(self, id_or_prefix: str) -> ApiKey:
        """Revoke a key; it is refused from the next request on. Revoking it again changes
        nothing and returns it as it is."""
        with self._write() as conn:
            key = self._find_key(conn, id_or_prefix)
            if key.revoked_at is not None:
                return key
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (_now(), key.id))
            return self._find_key(conn, key.id)

    def set_rate_limit(self, id_or_prefix: str, rate_limit_rps: float | None) -> ApiKey:
        """Set the key's rate limit in requests/s; None means the node default."""
        _check_rate_limit(rate_limit_rps)
        with self._write() as conn:
            key = self._find_key(conn, id_or_prefix)
            if key.revoked_at is not None:
                raise ControlPlaneError(f"key {key.prefix} ({key.id}) is revoked")
            conn.execute(
                "UPDATE api_keys SET rate_limit_rps = ? WHERE id = ?",
                (None if rate_limit_rps is None else float(rate_limit_rps), key.id),
            )
            return self._find_key(conn, key.id)

    def authenticate(self, key: str) -> ApiKey | None:
        """The key's record if `key` is a well-formed, known, unrevoked key; else None.

        The hot path of every request: no cache, so a revocation counts from the next call."""
        if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
            return None
        row = self._conn.execute(AUTHENTICATE_SQL, (_hash(key),)).fetchone()
        return None if row is None else ApiKey(*row)

    # --- helpers

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the write lock from its start: commit, or roll back."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _find_org(conn: sqlite3.Connection, id_or_name: str) -> Org:
        if not isinstance(id_or_name, str):
            raise ControlPlaneError(f"an org is named by its id or name, not {id_or_name!r}")
        column = "id" if _ORG_ID_RE.fullmatch(id_or_name) else "name"
        row = conn.execute(
            f"SELECT {_ORG_COLUMNS} FROM orgs WHERE {column} = ?", (id_or_name,)
        ).fetchone()
        if row is None:
            raise ControlPlaneError(f"no org with {column} {id_or_name!r}")
        return Org(*row)

    @staticmethod
    def _find_key(conn: sqlite3.Connection, id_or_prefix: str) -> ApiKey:
        if not isinstance(id_or_prefix, str):
            raise ControlPlaneError(f"a key is named by its id or prefix, not {id_or_prefix!r}")
        arg: str | bytes
        if _KEY_ID_RE.fullmatch(id_or_prefix):
            where, arg, what = "k.id = ?", id_or_prefix, f"id {id_or_prefix!r}"
        elif _PREFIX_RE.fullmatch(id_or_prefix):
            where, arg, what = "k.prefix = ?", id_or_prefix, f"prefix {id_or_prefix!r}"
        elif _KEY_RE.fullmatch(id_or_prefix):  # the full key: never echo it back
            where, arg, what = "k.key_hash = ?", _hash(id_or_prefix), "the given key"
        else:
            raise ControlPlaneError(
                f"{id_or_prefix!r} is neither a key id (key_ + 16 hex characters),"
                f" a key prefix (the first {KEY_PREFIX_CHARS} characters of the key), nor a key"
            )
        rows = conn.execute(_KEY_SELECT + f" WHERE {where} LIMIT 2", (arg,)).fetchall()
        if not rows:
            raise ControlPlaneError(f"no key matches {what}")
        if len(rows) > 1:
            raise ControlPlaneError(
                f"{what} matches more than one key; give the key id instead (see `run.py keys list`)"
            )
        return ApiKey(*rows[0])


def parse_key_header(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key of a request, from `Authorization: Bearer fl_…` (scheme in any case) or
    `X-API-Key: fl_…`; None when neither header holds a well-formed key. A well-formed
    Authorization header wins over X-API-Key."""
    if authorization:
        parts = authorization.split()
        if len(parts) == 2 and parts[0].lower() == "bearer" and _KEY_RE.fullmatch(parts[1]):
            return parts[1]
    if x_api_key:
        candidate = x_api_key.strip()
        if _KEY_RE.fullmatch(candidate):
            return candidate
    return None


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Switch to WAL and bring the schema up to date; safe when several processes race here."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # WAL is a property of the file, so this is a no-op once any process has set it.
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            mode = _switch_to_wal(conn)
            if mode != "wal":
                raise ControlPlaneError(f"cannot put {path} in WAL mode (it stays in {mode!r})")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Read again under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for statements in _MIGRATIONS[version:]:
                    for statement in statements:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {max(version, SCHEMA_VERSION)}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            raise  # another process held the lock past the busy timeout: not the operator's fault
        raise ControlPlaneError(f"cannot use {path} as the control plane database: {e}") from e
    if version > SCHEMA_VERSION:
        raise ControlPlaneError(
            f"{path} has control plane schema version {version}, newer than this program's"
            f" ({SCHEMA_VERSION}); upgrade foglamp-ingest"
        )


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """`PRAGMA journal_mode = WAL`, retried while another process holds the file (SQLite does not
    always apply the busy timeout to this pragma), up to BUSY_TIMEOUT_S. Returns the mode set."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _astuple(org: Org) -> tuple[str, str, int | None, str]:
    return (org.id, org.name, org.monthly_span_quota, org.created_at)


def _check_org_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ControlPlaneError("an org name must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise ControlPlaneError(f"an org name is at most {MAX_NAME_CHARS} characters")
    if _ORG_ID_RE.fullmatch(name):
        raise ControlPlaneError(f"an org name must not look like an org id: {name!r}")


def _check_key_name(name: object) -> None:
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise ControlPlaneError(f"a key name is a string of at most {MAX_NAME_CHARS} characters")


def _check_quota(quota: object) -> None:
    if quota is None:
        return
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise ControlPlaneError(
            f"a monthly span quota is an integer >= 0 (or none for unlimited), not {quota!r}"
        )


def _check_rate_limit(rps: object) -> None:
    if rps is None:
        return
    if (
        isinstance(rps, bool)
        or not isinstance(rps, int | float)
        or not math.isfinite(rps)
        or rps <= 0
    ):
        raise ControlPlaneError(
            f"a rate limit is a number of requests/s > 0 (or none for the default), not {rps!r}"
        )
