"""The ClickHouse store: one client, embedded (chDB) or a server, behind a small interface.

`CLICKHOUSE_URL` chooses: `chdb:///abs/dir` is the embedded engine (the default, under the data
dir), `http(s)://user:pass@host:8123/db` a ClickHouse server. Both go through the same
clickhouse-connect client, so the schema and every statement are the same on both paths.

Resource handling: `open_store` returns a `Store` that owns its client; `close()` releases it.
The embedded engine allows a single owner per directory, so in a running node only the writer
process opens the store; everyone else goes through the writer (see `Query` in
`pipeline.messages`). Calls are synchronous: async callers run them in a worker thread, one at a
time (the client is not shared between threads concurrently).

Error handling: clickhouse-connect's exceptions are translated here, at the edge:
connection failures, timeouts and overload codes become `RetryableError`; everything else
(bad SQL, bad data) becomes `PermanentError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import clickhouse_connect
import trio
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from pipeline.errors import PermanentError, RetryableError

T = TypeVar("T")
# Rows in `FORMAT MsgPack`: one buffer, or several inserted back to back as one block (no join).
Rows = bytes | Sequence[bytes | bytearray | memoryview]

# ClickHouse error codes worth retrying: timeouts, memory, too many parts/queries, shutdown.
_RETRYABLE_CODES = {159, 164, 202, 209, 210, 241, 242, 252, 279, 285, 319, 394, 425, 999}

QUERY_FORMATS = {"json": "JSONEachRow", "tsv": "TabSeparatedWithNames", "table": "PrettyCompactMonoBlock"}


class Store(Protocol):
    """What the writer needs from a store. `pipeline.testing` has fault-injecting versions."""

    def command(self, sql: str) -> None: ...

    def insert_msgpack(self, table: str, columns: Sequence[str], data: Rows, *, dedup_token: str) -> None: ...

    def query(self, sql: str, fmt: str) -> bytes: ...

    def close(self) -> None: ...


class ClickHouseStore:
    def __init__(self, client: Any) -> None:
        self._client = client

    def command(self, sql: str) -> None:
        with translate_errors():
            self._client.command(sql)

    def insert_msgpack(self, table: str, columns: Sequence[str], data: Rows, *, dedup_token: str) -> None:
        """Insert rows already encoded in ClickHouse's `FORMAT MsgPack`, as one block. Several
        buffers are streamed to the client one after the other, never joined in memory."""
        settings = {
            "insert_deduplication_token": dedup_token,
            # A batch spanning many months must not be refused: it was accepted already.
            "max_partitions_per_insert_block": 0,
        }
        with translate_errors():
            # The client takes an iterable of bytes: each buffer is copied on its own, never joined.
            block = data if isinstance(data, bytes) else (bytes(chunk) for chunk in data)
            self._client.raw_insert(table, list(columns), insert_block=block, fmt="MsgPack", settings=settings)

    def query(self, sql: str, fmt: str) -> bytes:
        """Run a read query; `fmt` is one of QUERY_FORMATS' keys (json, tsv, table)."""
        with translate_errors():
            return bytes(self._client.raw_query(sql, fmt=QUERY_FORMATS[fmt]))

    def close(self) -> None:
        self._client.close()


def open_store(url: str) -> ClickHouseStore:
    """Open the store at `url` (chdb:// or http(s)://). Raises RetryableError if unreachable."""
    with translate_errors():
        return ClickHouseStore(clickhouse_connect.get_client(dsn=url))


class translate_errors:
    """Context manager: clickhouse-connect exceptions become RetryableError / PermanentError."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, (ClickHouseError, OSError)):
            return False
        message = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        if isinstance(exc, (OperationalError, OSError)) or _code(exc) in _RETRYABLE_CODES:
            raise RetryableError(message) from exc
        raise PermanentError(message) from exc


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    text = str(exc)
    if text.startswith("Code: "):
        digits = text[6:].split(".", 1)[0]
        return int(digits) if digits.isdigit() else None
    return None


class AsyncStore:
    """A `Store` for trio code: opened lazily, one call at a time, each in a worker thread.

    Resource handling: owns the store it opens; `close()` releases it. The store is (re)opened on
    the first call that needs it, and `setup` statements (the schema) run right after each open,
    so a writer can start, and spool, while a ClickHouse server is still down.
    Error handling: the store's `RetryableError` / `PermanentError` propagate unchanged; a failure
    to open is a `RetryableError`.
    """

    def __init__(self, opener: Callable[[], Store], setup: Sequence[str] = ()) -> None:
        self._opener = opener
        self._setup = list(setup)
        self._store: Store | None = None
        self._lock = trio.Lock()

    def _connected(self) -> Store:
        if self._store is None:
            try:
                store = self._opener()
            except (RetryableError, PermanentError):
                raise
            except Exception as exc:
                raise RetryableError(f"cannot open the store: {exc}") from exc
            try:
                for statement in self._setup:
                    store.command(statement)
            except BaseException:
                store.close()  # not kept: close it, or every failed attempt leaks a connection
                raise
            self._store = store
        return self._store

    async def _run(self, fn: Callable[[Store], T]) -> T:
        async with self._lock:
            return await trio.to_thread.run_sync(lambda: fn(self._connected()))

    async def connect(self) -> None:
        await self._run(lambda store: None)

    async def command(self, sql: str) -> None:
        await self._run(lambda store: store.command(sql))

    async def insert_msgpack(self, table: str, columns: Sequence[str], data: Rows, *, dedup_token: str) -> None:
        await self._run(lambda s: s.insert_msgpack(table, columns, data, dedup_token=dedup_token))

    async def query(self, sql: str, fmt: str) -> bytes:
        return await self._run(lambda store: store.query(sql, fmt))

    async def close(self) -> None:
        async with self._lock:
            if self._store is not None:
                await trio.to_thread.run_sync(self._store.close)
                self._store = None
