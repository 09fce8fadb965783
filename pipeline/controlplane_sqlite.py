"""The control plane in an embedded SQLite file: one node's orgs, quotas and keys.

One database file in the data directory (`Config.controlplane_db`) is shared by every process of
the node.

Concurrency: the file is in WAL mode, so readers never wait for the writer and a writer waits
(`busy_timeout`) only for another writer. Reads run in autocommit mode, each in its own short read
transaction, so every `authenticate` sees the latest committed revocation; nothing is cached.
Writes take the write lock up front (BEGIN IMMEDIATE), so a check and its update are atomic.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.controlplane import _KEY_RE, ApiKey, _hash
from pipeline.controlplane_sql import KEY_SELECT, SqlControlPlane
from pipeline.errors import ControlPlaneError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0

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

# The hot path: one lookup in the key_hash unique index, one in the orgs primary key.
AUTHENTICATE_SQL = KEY_SELECT + " WHERE k.key_hash = ? AND k.revoked_at IS NULL"


class SqliteControlPlane(SqlControlPlane):
    """A connection to the control plane database file.

    Resource handling: `open` returns an instance that owns one long-lived sqlite3 connection. The
    connection belongs to the thread that opened it (sqlite3's `check_same_thread`) and to the
    process. `authenticate` is one indexed SELECT. Writes from the CLI take the write lock for a
    few milliseconds at most and never block readers (WAL).
    """

    _order = "rowid"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: os.PathLike[str] | str) -> SqliteControlPlane:
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

    def authenticate(self, key: str) -> ApiKey | None:
        """No cache: a revocation counts from the next call."""
        if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
            return None
        row = self._conn.execute(AUTHENTICATE_SQL, (_hash(key),)).fetchone()
        return None if row is None else ApiKey(*row)

    def _reader(self) -> sqlite3.Connection:
        return self._conn

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
