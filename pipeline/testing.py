"""Fault injection: real implementations that fail on purpose, for tests of the whole node.

`FaultyStore` wraps a real store. While its control file exists, every call fails the way a
ClickHouse outage does (`RetryableError`), or, if the file says `permanent`, the way a store that
refuses a block does (`PermanentError`). Delete the file and the store is back. A running node
uses it when `INGEST_STORE_FAULT_FILE` names such a file: tests create and delete the file to
start and end an outage without mocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import PermanentError, RetryableError
from pipeline.store import Rows, Store


class FaultyStore:
    def __init__(self, store: Store, control_file: Path) -> None:
        self._store = store
        self._control = control_file

    def _check(self) -> None:
        try:
            mode = self._control.read_text().strip()
        except FileNotFoundError:
            return
        if mode == "permanent":
            raise PermanentError("injected permanent store failure")
        raise RetryableError("injected store outage")

    def command(self, sql: str) -> None:
        self._check()
        self._store.command(sql)

    def insert_msgpack(self, table: str, columns: Sequence[str], data: Rows, *, dedup_token: str) -> None:
        self._check()
        self._store.insert_msgpack(table, columns, data, dedup_token=dedup_token)

    def query(self, sql: str, fmt: str) -> bytes:
        self._check()
        return self._store.query(sql, fmt)

    def close(self) -> None:
        self._store.close()
