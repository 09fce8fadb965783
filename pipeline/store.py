"""The ClickHouse store: one client, embedded (chDB) or a server, behind a small interface.

`CLICKHOUSE_URL` chooses: `chdb:///abs/dir` is the embedded engine (the default, under the data
dir), `http(s)://user:pass@host:8123/db` a ClickHouse server. Both go through the same
clickhouse-connect client, so the schema and every statement are the same on both paths. An
embedded store's insert returns only once its file system has it on the disk (`open_store`).

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

import contextlib
import queue
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import clickhouse_connect
import outcome
import trio
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from pipeline import metrics
from pipeline.config import Config
from pipeline.disk import is_disk_full, sync_file_system
from pipeline.errors import PermanentError, RetryableError
from pipeline.log import get_logger
from pipeline.priority import StorePriority, name_this_thread, renice_this_thread

log = get_logger("store")
T = TypeVar("T")
# Rows in `RowFormat`: one buffer, or several inserted back to back (no join).
Rows = bytes | Sequence[bytes | bytearray | memoryview]
# ClickHouse input formats of the rows the node inserts: Native blocks, or MsgPack rows.
RowFormat = Literal["Native", "MsgPack"]

# ClickHouse error codes worth retrying: timeouts, memory, too many parts/queries, shutdown, and
# a full disk (75 CANNOT_WRITE_TO_FILE_DESCRIPTOR, 243 NOT_ENOUGH_SPACE, 1001 with ENOSPC inside).
_RETRYABLE_CODES = {75, 159, 164, 202, 209, 210, 241, 242, 243, 252, 279, 285, 319, 394, 425, 999}

QUERY_FORMATS = {"json": "JSONEachRow", "tsv": "TabSeparatedWithNames", "table": "PrettyCompactMonoBlock"}


class Store(Protocol):
    """What the writer needs from a store. `pipeline.testing` has fault-injecting versions."""

    def command(self, sql: str) -> None: ...

    def insert_rows(
        self, table: str, columns: Sequence[str], data: Rows, *, fmt: RowFormat, dedup_token: str
    ) -> None: ...

    def query(self, sql: str, fmt: str) -> bytes: ...

    def close(self) -> None: ...


class ClickHouseStore:
    def __init__(self, client: Any, sync_directory: Path | None = None) -> None:
        self._client = client
        self._sync_directory = sync_directory  # synced after each insert (see `open_store`)

    def command(self, sql: str) -> None:
        with translate_errors():
            self._client.command(sql)

    def insert_rows(self, table: str, columns: Sequence[str], data: Rows, *, fmt: RowFormat, dedup_token: str) -> None:
        """Insert rows already encoded in ClickHouse's `FORMAT <fmt>` (Native blocks, or MsgPack
        rows), as one insert. Several buffers are streamed to the client one after the other,
        never joined in memory."""
        settings = {
            "insert_deduplication_token": dedup_token,
            # A batch spanning many months must not be refused: it was accepted already.
            "max_partitions_per_insert_block": 0,
            # Into a Distributed table (INGEST_CLICKHOUSE_CLUSTER): answer once every shard has its
            # part, each carrying the dedup token; no effect on a plain table.
            "insert_distributed_sync": 1,
        }
        with translate_errors():
            block = data if isinstance(data, bytes) else _chunks(data)
            self._client.raw_insert(table, list(columns), insert_block=block, fmt=fmt, settings=settings)
            if self._sync_directory is not None:  # the part on the disk before the spool lets go of it
                sync_file_system(self._sync_directory)

    def query(self, sql: str, fmt: str) -> bytes:
        """Run a read query; `fmt` is one of QUERY_FORMATS' keys (json, tsv, table)."""
        with translate_errors():
            return bytes(self._client.raw_query(sql, fmt=QUERY_FORMATS[fmt]))

    def close(self) -> None:
        self._client.close()


def open_store(url: str, *, durable_inserts: bool = True) -> ClickHouseStore:
    """Open the store at `url` (chdb:// or http(s)://). Raises RetryableError if unreachable.

    `durable_inserts`: an embedded store on disk (chdb:///dir) returns from an insert only once
    its file system has written it (`sync_file_system`). ClickHouse does not fsync a new part by
    itself, and the flush checkpoints the spool past a block once its insert returns: without the
    sync, a power cut could lose blocks that the spool has already let go (INGEST_STORE_SYNC)."""
    directory = embedded_directory(url)
    on_disk = durable_inserts and directory is not None and directory.is_absolute()
    with translate_errors():
        return ClickHouseStore(clickhouse_connect.get_client(dsn=url), directory if on_disk else None)


def embedded_directory(url: str) -> Path | None:
    """The directory of an embedded store's URL (`chdb://<dir>`), None for a server."""
    return Path(url.removeprefix("chdb://")) if url.startswith("chdb://") else None


_CHUNK_BYTES = 256 << 10


def _chunks(data: Sequence[bytes | bytearray | memoryview]) -> Iterator[bytes]:
    """The buffers as bytes of `_CHUNK_BYTES` each (the last one shorter), the form the client
    takes: small ones joined (a Native block is thousands of small views), big ones cut, so the
    client makes few writes and no copy is one big allocation (each would be a fresh mmap,
    page-faulted in). The buffers each chunk spans are found over the running total of their
    sizes, so the Python work is per chunk, not per buffer."""
    ends = list(accumulate(map(len, data)))
    first = 0  # the first buffer the next chunk takes bytes from
    for at in range(0, ends[-1] if ends else 0, _CHUNK_BYTES):
        stop = min(at + _CHUNK_BYTES, ends[-1])
        last = bisect_left(ends, stop, lo=first)  # the buffer holding the chunk's last byte
        head = memoryview(data[first])[at - (ends[first] - len(data[first])) :]
        if last == first:
            yield bytes(head[: stop - at])
        else:
            tail = memoryview(data[last])[: stop - (ends[last] - len(data[last]))]
            yield b"".join([head, *data[first + 1 : last], tail])
        first = last if ends[last] > stop else last + 1


class translate_errors:
    """Context manager: clickhouse-connect exceptions become RetryableError / PermanentError."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or not isinstance(exc, (ClickHouseError, OSError)):
            return False
        message = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        retryable = isinstance(exc, (OperationalError, OSError)) or _code(exc) in _RETRYABLE_CODES
        if retryable or is_disk_full(exc):  # a full disk is an outage, not bad data
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


class StoreThread:
    """The one thread that runs a store's calls, one at a time, `nice` nicer than the process (the
    embedded ClickHouse does much of an insert in its caller's thread). Not trio's thread cache:
    a thread reniced there would later run other work, such as spool appends, at that priority.

    Resource handling: the thread starts with the object and ends after `stop()` (it is a daemon:
    a process that never calls `stop` is not held up by it). A call runs to its end even when the
    awaiting task is cancelled, as with `trio.to_thread.run_sync`.
    """

    def __init__(self, nice: int = 0, name: str = "foglamp-store") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[outcome.Outcome], None]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, args=(nice, name), name=name, daemon=True)
        self._thread.start()

    def _serve(self, nice: int, name: str) -> None:
        name_this_thread(name)
        if nice:
            renice_this_thread(nice)
        while (job := self._jobs.get()) is not None:
            fn, deliver = job
            deliver(outcome.capture(fn))

    async def run(self, fn: Callable[[], T]) -> T:
        task, token = trio.lowlevel.current_task(), trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self._jobs.put((fn, deliver))
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    def stop(self) -> None:
        self._jobs.put(None)


class _Lane:
    """One handle on the store and the thread that calls it, one call at a time."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.thread: StoreThread | None = None  # started on first use
        self.lock = trio.Lock()


class AsyncStore:
    """A `Store` for trio code: opened lazily, each call in a thread of the store's own
    (`StoreThread`, "foglamp-store"). Queries and commands go through one handle, one at a time;
    inserts through up to `inserts` handles at once (on the same store: one embedded engine, or one
    server), each with its own thread. The store's threads run at `thread_nice`, or at the writer's
    own priority from an urgent insert (the flush is falling behind, see `stages.flush`) until the
    next insert that is not (`StorePriority`, shared by every handle).

    Resource handling: owns the handles it opens and their threads; `close()` releases them. A
    handle is (re)opened on the first call that needs it, and `setup` statements (the schema) run
    right after each open, so a writer can start, and spool, while a ClickHouse server is still down.
    Error handling: the store's `RetryableError` / `PermanentError` propagate unchanged; any other
    exception is a bug and propagates too (the flush retries only `RetryableError`).
    """

    def __init__(
        self, opener: Callable[[], Store], setup: Sequence[str] = (), *, thread_nice: int = 0, inserts: int = 1
    ) -> None:
        self._opener = opener
        self._setup = list(setup)
        self._priority = StorePriority(thread_nice)
        self._lanes = [_Lane() for _ in range(max(1, inserts))]
        self._insert_slots = trio.Semaphore(len(self._lanes))

    def _connected(self, lane: _Lane) -> Store:
        if lane.store is None:
            store = self._opener()  # the client's failures are translated; anything else is a bug
            try:
                for statement in self._setup:
                    store.command(statement)
            except BaseException:
                store.close()  # not kept: close it, or every failed attempt leaks a connection
                raise
            lane.store = store
        return lane.store

    async def _run(self, fn: Callable[[Store], T], *, urgent: bool | None = None, lane: _Lane | None = None) -> T:
        """`fn(store)` in a handle's thread (the first handle's unless `lane`); an insert sets the
        store's priority (`urgent`) first."""
        lane = lane or self._lanes[0]

        def call() -> T:
            if urgent is not None:
                self._priority.set(urgent)
            return fn(self._connected(lane))

        async with lane.lock:
            if lane.thread is None:  # at the store's current priority: a lane may start while urgent
                lane.thread = StoreThread(self._priority.current())
            return await lane.thread.run(call)

    async def connect(self) -> None:
        await self._run(lambda store: None)

    async def command(self, sql: str) -> None:
        await self._run(lambda store: store.command(sql))

    async def insert_rows(
        self, table: str, columns: Sequence[str], data: Rows, *, fmt: RowFormat, dedup_token: str, urgent: bool = False
    ) -> None:
        """Insert through a free handle (see `inserts`); waits while all of them are busy."""
        async with self._insert_slots:
            lane = next((lane for lane in self._lanes if not lane.lock.locked()), self._lanes[0])
            await self._run(lambda s: s.insert_rows(table, columns, data, fmt=fmt, dedup_token=dedup_token),
                            urgent=urgent, lane=lane)  # fmt: skip

    async def query(self, sql: str, fmt: str) -> bytes:
        return await self._run(lambda store: store.query(sql, fmt))

    async def close(self) -> None:
        for lane in self._lanes:
            async with lane.lock:
                if lane.store is not None:
                    assert lane.thread is not None  # the store was opened in it
                    await lane.thread.run(lane.store.close)
                    lane.store = None
                if lane.thread is not None:
                    lane.thread.stop()
                    lane.thread = None


def store_opener(config: Config, schema: Sequence[str]) -> Store:
    """The store `config` names, behind `pipeline.testing.FaultyStore` if a fault file is set. An
    embedded store's metadata cut short by a full disk is first rebuilt from `schema` (its DDL)."""
    from pipeline.testing import FaultyStore  # it imports this module

    if (directory := embedded_directory(config.store_url)) is not None:
        from pipeline.embedded_repair import repair_metadata

        repair_metadata(directory, config.clickhouse_database, list(schema))
    store = open_store(config.store_url, durable_inserts=config.store_sync)
    if config.store_fault_file:
        return FaultyStore(store, Path(config.store_fault_file))
    return store


async def connect_once(store: AsyncStore) -> None:
    """Open the store now if it is there; if not, the writer starts anyway (it spools, and the
    flush retries)."""
    try:
        await store.connect()
    except RetryableError as exc:
        log.warning("store_unreachable_at_start", error=str(exc))


async def sample_active_parts(store: AsyncStore, database: str, table: str, interval_s: float = 2.0) -> None:
    """/metrics: the spans table's active parts, every `interval_s` (merges that fall behind, e.g.
    at INGEST_MERGE_NICE under a long saturating load, show here first). Runs until cancelled; a
    store that does not answer is skipped (the flush stage reports it)."""
    sql = (f"SELECT count() AS c FROM system.parts WHERE active AND database = '{database}' "
           f"AND table = '{table}'")  # fmt: skip
    while True:
        with contextlib.suppress(RetryableError, PermanentError):
            metrics.store_active_parts.set(int((await store.query(sql, "tsv")).split()[-1]))
        await trio.sleep(interval_s)
