"""The control plane's operations as SQL, shared by the SQLite and PostgreSQL implementations.

Both stores hold the same two tables (orgs, api_keys) and take the same qmark-style statements
(the PostgreSQL connection translates `?`); what differs is how each opens, migrates, orders rows
and authenticates, which the subclasses supply.
"""

from __future__ import annotations

import secrets
from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from pipeline.controlplane import (
    _KEY_ID_RE,
    _KEY_RE,
    _ORG_ID_RE,
    _PREFIX_RE,
    KEY_PREFIX_CHARS,
    ApiKey,
    ControlPlane,
    Org,
    _check_key_name,
    _check_org_name,
    _check_quota,
    _check_rate_limit,
    _hash,
    _now,
)
from pipeline.errors import ControlPlaneError

ORG_COLUMNS = "id, name, monthly_span_quota, created_at"
KEY_SELECT = """
    SELECT k.id, k.prefix, k.name, k.org_id, o.name, k.rate_limit_rps, o.monthly_span_quota,
           k.created_at, k.revoked_at
    FROM api_keys AS k JOIN orgs AS o ON o.id = k.org_id
"""


class SqlControlPlane(ControlPlane):
    """Every operation but `authenticate` and `close`, over a DB-API connection.

    A subclass supplies `_reader()` (the connection reads go to), `_write()` (a transaction that
    commits, or rolls back on an error, yielding the connection) and `_order` (the column that
    orders rows by insertion)."""

    _order: str

    @abstractmethod
    def _reader(self) -> Any: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]: ...

    # --- orgs

    def create_org(self, name: str, monthly_span_quota: int | None = None) -> Org:
        _check_org_name(name)
        _check_quota(monthly_span_quota)
        org = Org(f"org_{secrets.token_hex(8)}", name, monthly_span_quota, _now())
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM orgs WHERE name = ?", (name,)).fetchone():
                raise ControlPlaneError(f"an org named {name!r} already exists")
            conn.execute(
                f"INSERT INTO orgs ({ORG_COLUMNS}) VALUES (?, ?, ?, ?)",
                (org.id, org.name, org.monthly_span_quota, org.created_at),
            )
        return org

    def get_org(self, id_or_name: str) -> Org:
        return _find_org(self._reader(), id_or_name)

    def list_orgs(self) -> list[Org]:
        rows = self._reader().execute(f"SELECT {ORG_COLUMNS} FROM orgs ORDER BY {self._order}").fetchall()
        return [Org(*row) for row in rows]

    def set_quota(self, id_or_name: str, monthly_span_quota: int | None) -> Org:
        _check_quota(monthly_span_quota)
        with self._write() as conn:
            org = _find_org(conn, id_or_name)
            conn.execute(
                "UPDATE orgs SET monthly_span_quota = ? WHERE id = ?", (monthly_span_quota, org.id)
            )
            return _find_org(conn, org.id)

    # --- keys

    def create_key(
        self, org: str, name: str = "", rate_limit_rps: float | None = None
    ) -> tuple[str, ApiKey]:
        _check_key_name(name)
        _check_rate_limit(rate_limit_rps)
        key = f"fl_{secrets.token_urlsafe(30)}"  # 30 bytes = 40 url-safe characters
        key_id = f"key_{secrets.token_hex(8)}"
        with self._write() as conn:
            owner = _find_org(conn, org)
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
            return key, _find_key(conn, key_id)

    def list_keys(self, org: str | None = None) -> list[ApiKey]:
        conn = self._reader()
        if org is None:
            rows = conn.execute(KEY_SELECT + f" ORDER BY k.{self._order}").fetchall()
        else:
            org_id = _find_org(conn, org).id
            rows = conn.execute(
                KEY_SELECT + f" WHERE k.org_id = ? ORDER BY k.{self._order}", (org_id,)
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def get_key(self, id_or_prefix: str) -> ApiKey:
        return _find_key(self._reader(), id_or_prefix)

    def revoke_key(self, id_or_prefix: str) -> ApiKey:
        with self._write() as conn:
            key = _find_key(conn, id_or_prefix)
            if key.revoked_at is not None:
                return key
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (_now(), key.id))
            return _find_key(conn, key.id)

    def set_rate_limit(self, id_or_prefix: str, rate_limit_rps: float | None) -> ApiKey:
        _check_rate_limit(rate_limit_rps)
        with self._write() as conn:
            key = _find_key(conn, id_or_prefix)
            if key.revoked_at is not None:
                raise ControlPlaneError(f"key {key.prefix} ({key.id}) is revoked")
            conn.execute(
                "UPDATE api_keys SET rate_limit_rps = ? WHERE id = ?",
                (None if rate_limit_rps is None else float(rate_limit_rps), key.id),
            )
            return _find_key(conn, key.id)


def _find_org(conn: Any, id_or_name: str) -> Org:
    if not isinstance(id_or_name, str):
        raise ControlPlaneError(f"an org is named by its id or name, not {id_or_name!r}")
    column = "id" if _ORG_ID_RE.fullmatch(id_or_name) else "name"
    row = conn.execute(
        f"SELECT {ORG_COLUMNS} FROM orgs WHERE {column} = ?", (id_or_name,)
    ).fetchone()
    if row is None:
        raise ControlPlaneError(f"no org with {column} {id_or_name!r}")
    return Org(*row)


def _find_key(conn: Any, id_or_prefix: str) -> ApiKey:
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
    rows = conn.execute(KEY_SELECT + f" WHERE {where} LIMIT 2", (arg,)).fetchall()
    if not rows:
        raise ControlPlaneError(f"no key matches {what}")
    if len(rows) > 1:
        raise ControlPlaneError(
            f"{what} matches more than one key; give the key id instead (see `run.py keys list`)"
        )
    return ApiKey(*rows[0])
