"""The control plane: orgs, their monthly span quotas, and API keys. The interface and its types.

Two implementations, one per store, both over the statements of `pipeline.controlplane_sql`:

- `pipeline.controlplane_sqlite.SqliteControlPlane`: one embedded SQLite file in the data
  directory (`Config.controlplane_db`), shared by every process of one node. The default.
- `pipeline.controlplane_pg.PgControlPlane`: PostgreSQL, shared by several nodes; selected by
  `INGEST_CONTROLPLANE_URL=postgresql://…`.

`open_controlplane(config)` picks one. Each front worker opens it once and calls `authenticate`
on every request, while the operator's CLI (`run.py orgs …`, `run.py keys …`) writes it while the
node runs.

    cp = open_controlplane(config)
    org = cp.create_org("acme", monthly_span_quota=1_000_000)
    key, record = cp.create_key("acme", name="ci")      # the full key is shown this once
    cp.authenticate(key)                                 # -> ApiKey, or None
    cp.revoke_key(record.prefix)                         # refused on the next request, everywhere

Keys look like "fl_" + 40 url-safe characters. Only their SHA-256 is stored; their first 12
characters (the prefix) are kept in clear so an operator can tell keys apart and revoke one.

Error handling: an operator's mistake (unknown org or key, duplicate org name, ambiguous prefix,
invalid quota, a file that is not a database) raises `ControlPlaneError` with a message fit to
print. A store that cannot be reached raises `ControlPlaneUnavailable` (PostgreSQL) or propagates
the driver's error (SQLite: a disk error, a lock held past the busy timeout).
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self

from pipeline.errors import ControlPlaneError

if TYPE_CHECKING:
    from pipeline.config import Config

__all__ = [
    "KEY_PREFIX_CHARS",
    "MAX_NAME_CHARS",
    "ApiKey",
    "ControlPlane",
    "ControlPlaneError",
    "Org",
    "open_controlplane",
    "parse_key_header",
]

KEY_PREFIX_CHARS = 12
MAX_NAME_CHARS = 128

_KEY_RE = re.compile(r"fl_[A-Za-z0-9_-]{40}")
_ORG_ID_RE = re.compile(r"org_[0-9a-f]{16}")
_KEY_ID_RE = re.compile(r"key_[0-9a-f]{16}")
_PREFIX_RE = re.compile(r"fl_[A-Za-z0-9_-]{9}")


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


class ControlPlane(ABC):
    """A connection to the control plane's store.

    Resource handling: an opened instance owns its connection; the caller must `close` it (or use
    it as a context manager). Open it in each process after it starts, never before a fork. Each
    call is short and blocking; `authenticate` is fine to call directly from a trio task.
    """

    @abstractmethod
    def close(self) -> None: ...

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

    @abstractmethod
    def create_org(self, name: str, monthly_span_quota: int | None = None) -> Org: ...

    @abstractmethod
    def get_org(self, id_or_name: str) -> Org: ...

    @abstractmethod
    def list_orgs(self) -> list[Org]: ...

    @abstractmethod
    def set_quota(self, id_or_name: str, monthly_span_quota: int | None) -> Org:
        """Set the org's monthly span quota; None removes it (unlimited)."""

    # --- keys

    @abstractmethod
    def create_key(self, org: str, name: str = "", rate_limit_rps: float | None = None) -> tuple[str, ApiKey]:
        """Create a key for `org` (id or name). Returns the full key, which is not stored, and
        the key's record."""

    @abstractmethod
    def list_keys(self, org: str | None = None) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first; of one org (id or name) if given."""

    @abstractmethod
    def get_key(self, id_or_prefix: str) -> ApiKey:
        """A key by its id ("key_…"), its 12-character prefix, or the full key."""

    @abstractmethod
    def revoke_key(self, id_or_prefix: str) -> ApiKey:
        """Revoke a key; it is refused from the next request on. Revoking it again changes
        nothing and returns it as it is."""

    @abstractmethod
    def set_rate_limit(self, id_or_prefix: str, rate_limit_rps: float | None) -> ApiKey:
        """Set the key's rate limit in requests/s; None means the node default."""

    @abstractmethod
    def authenticate(self, key: str) -> ApiKey | None:
        """The key's record if `key` is a well-formed, known, unrevoked key; else None.
        The hot path of every request."""


def open_controlplane(config: Config) -> ControlPlane:
    """The node's control plane: PostgreSQL when `INGEST_CONTROLPLANE_URL` is set, else SQLite."""
    # Imported here: the implementations import this module's types, and a SQLite node never
    # loads psycopg.
    if not config.controlplane_url:
        from pipeline.controlplane_sqlite import SqliteControlPlane

        return SqliteControlPlane.open(config.controlplane_db)
    from pipeline.controlplane_pg import PgControlPlane

    return PgControlPlane.open(
        config.controlplane_url, cache_s=config.controlplane_cache_s, outage_s=config.controlplane_outage_s,
        retry_s=config.controlplane_retry_s,
    )  # fmt: skip


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


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
