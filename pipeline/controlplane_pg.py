"""The control plane in PostgreSQL, shared by several nodes: the same interface as the SQLite one.

Selected by `INGEST_CONTROLPLANE_URL=postgresql://…` (see `pipeline.controlplane.open_controlplane`);
without it the node keeps its SQLite file. Orgs, quotas and keys (SHA-256 hashes only) live in one schema that
`PgControlPlane.open` creates and migrates idempotently: the migration runs under a transaction
advisory lock, so nodes and CLIs starting together migrate once.

Revocation across nodes: a fixed-lifetime cache. `authenticate` keeps each answer (a key's record,
or "unknown") for `cache_s` seconds from the moment it was read from PostgreSQL, never extended by
use, so a key revoked anywhere is refused by every node at most `cache_s` (default 0.5 s) plus one
query later. A cache, not LISTEN/NOTIFY, because it bounds the delay without a second connection
per process and without trusting a notification that a dropped connection would lose.

PostgreSQL unreachable: a key read successfully within the last `outage_s` seconds keeps working
from the cache; any other key raises `ControlPlaneUnavailable` (the front answers 503, not 401,
since the key may well be valid). After a failed query the node waits `retry_s` before trying
again, so an outage costs at most one connect timeout per `retry_s` on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from pipeline.controlplane import _KEY_RE, ApiKey, _hash
from pipeline.controlplane_sql import KEY_SELECT, SqlControlPlane
from pipeline.errors import ControlPlaneError, ControlPlaneUnavailable

SCHEMA_VERSION = 1
CONNECT_TIMEOUT_S = 2
MAX_CACHE_ENTRIES = 100_000
_LOCK_ID = 0x466F676C  # "Fogl": the advisory lock taken while migrating

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS orgs (
            seq                BIGSERIAL,
            id                 TEXT PRIMARY KEY,
            name               TEXT NOT NULL UNIQUE,
            monthly_span_quota BIGINT CHECK (monthly_span_quota >= 0),
            created_at         TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS api_keys (
            seq            BIGSERIAL,
            id             TEXT PRIMARY KEY,
            key_hash       BYTEA NOT NULL UNIQUE,
            prefix         TEXT NOT NULL,
            name           TEXT NOT NULL DEFAULT '',
            org_id         TEXT NOT NULL REFERENCES orgs (id),
            rate_limit_rps DOUBLE PRECISION CHECK (rate_limit_rps > 0),
            created_at     TEXT NOT NULL,
            revoked_at     TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys (prefix)",
        "CREATE INDEX IF NOT EXISTS api_keys_org_id ON api_keys (org_id)",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


@dataclass(slots=True)
class _Entry:
    key: ApiKey | None
    read_at: float  # monotonic time of the successful read: the entry's age, never refreshed


class PgControlPlane(SqlControlPlane):
    """The control plane's operations over one psycopg connection (autocommit; each write in its
    own transaction). Open it in each process after it starts, never before a fork."""

    _order = "seq"

    def __init__(
        self,
        url: str,
        conn: psycopg.Connection | None,
        cache_s: float,
        outage_s: float,
        retry_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._pg: psycopg.Connection | None = conn
        self._cache: dict[bytes, _Entry] = {}
        self._cache_s, self._outage_s, self._retry_s = cache_s, outage_s, retry_s
        self._clock = clock
        self._down_until = 0.0
        self.outage_since: float | None = None  # monotonic time of the first failure, or None

    @classmethod
    def open(
        cls, url: str, cache_s: float = 0.5, outage_s: float = 60.0, retry_s: float = 0.5
    ) -> PgControlPlane:
        """Connect to `url` and bring the schema up to date."""
        conn = _connect(url)
        try:
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(url, conn, cache_s, outage_s, retry_s)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None

    def authenticate(self, key: str) -> ApiKey | None:
        if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
            return None
        digest = _hash(key)
        now = self._clock()
        entry = self._cache.get(digest)
        if entry is not None and now - entry.read_at < self._cache_s:
            return entry.key
        if now >= self._down_until:
            try:
                row = self._connection().execute(_AUTHENTICATE_SQL, (digest,)).fetchone()
            except (psycopg.OperationalError, psycopg.InterfaceError, ControlPlaneUnavailable):
                self._lost(now)
            else:
                self.outage_since = None
                if len(self._cache) >= MAX_CACHE_ENTRIES:
                    self._cache.clear()
                found = None if row is None else ApiKey(*row)
                self._cache[digest] = _Entry(found, now)
                return found
        if entry is not None and entry.key is not None and now - entry.read_at < self._outage_s:
            return entry.key
        raise ControlPlaneUnavailable("the control plane database is unreachable")

    # --- helpers

    def _connection(self) -> psycopg.Connection:
        if self._pg is None or self._pg.closed or self._pg.broken:
            if self._pg is not None:
                self._pg.close()
            self._pg = None
            self._pg = _connect(self._url)
        return self._pg

    def _lost(self, now: float) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        self._down_until = now + self._retry_s
        if self.outage_since is None:
            self.outage_since = now

    def _reader(self) -> Any:
        return self._connection()

    def _write(self) -> Any:
        return _Transaction(self._connection())


_AUTHENTICATE_SQL = KEY_SELECT + " WHERE k.key_hash = %s AND k.revoked_at IS NULL"


class _Transaction:
    """`with plane._write() as conn:` as in the SQLite plane: commit, or roll back on an error."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._tx: Any = None

    def __enter__(self) -> Any:
        self._tx = self._conn.transaction()
        self._tx.__enter__()
        return self._conn

    def __exit__(self, *exc: Any) -> bool | None:
        return self._tx.__exit__(*exc)


def _connect(url: str) -> psycopg.Connection:
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as e:
        raise ControlPlaneUnavailable(f"cannot connect to the control plane database: {e}") from e
    return _Wrapped(conn)  # type: ignore[return-value]


class _Wrapped:
    """A psycopg connection whose `execute` takes the qmark SQL the SQLite plane uses."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._raw = conn

    def execute(self, sql: str, params: tuple = ()) -> psycopg.Cursor:
        return self._raw.execute(sql.replace("?", "%s"), params)

    def transaction(self) -> Any:
        return self._raw.transaction()

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    @property
    def broken(self) -> bool:
        return self._raw.broken


def _migrate(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute("CREATE TABLE IF NOT EXISTS foglamp_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM foglamp_schema").fetchone()
        version = row[0] or 0
        if version > SCHEMA_VERSION:
            raise ControlPlaneError(
                f"the control plane database has schema version {version}, newer than this"
                f" program's ({SCHEMA_VERSION}); upgrade foglamp-ingest"
            )
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute("DELETE FROM foglamp_schema")
            conn.execute("INSERT INTO foglamp_schema (version) VALUES (%s)", (SCHEMA_VERSION,))


__all__ = ["ControlPlaneUnavailable", "PgControlPlane"]
