"""Fault injection: real implementations that fail on purpose, for tests of the whole node.

`FaultyStore` wraps a real store. While its control file exists, every call fails the way a
ClickHouse outage does (`RetryableError`), or, if the file says `permanent`, the way a store that
refuses a block does (`PermanentError`). Delete the file and the store is back. A running node
uses it when `INGEST_STORE_FAULT_FILE` names such a file: tests create and delete the file to
start and end an outage without mocks.

`TornFrameWriter` is a writer's link socket that answers each front's request with half a frame
and hangs up, for tests of the front's link reader.

`SlowSpool` is a spool on a disk that stalls: every fsync sleeps while its control file says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import trio

from pipeline import messages
from pipeline.config import Config
from pipeline.errors import PermanentError, RetryableError
from pipeline.frames import frame
from pipeline.spool import Spool
from pipeline.store import RowFormat, Rows, Store


class FaultyStore:
    def __init__(self, store: Store, control_file: Path) -> None:
        self._store = store
        self._control = control_file

    def _check(self) -> None:
        try:
            mode = self._control.read_text().strip()
        except FileNotFoundError:  # no control file: no fault injected, the store works
            return
        if mode == "permanent":
            raise PermanentError("injected permanent store failure")
        raise RetryableError("injected store outage")

    def command(self, sql: str) -> None:
        self._check()
        self._store.command(sql)

    def insert_rows(self, table: str, columns: Sequence[str], data: Rows, *, fmt: RowFormat, dedup_token: str) -> None:
        self._check()
        self._store.insert_rows(table, columns, data, fmt=fmt, dedup_token=dedup_token)

    def query(self, sql: str, fmt: str) -> bytes:
        self._check()
        return self._store.query(sql, fmt)

    def close(self) -> None:
        self._store.close()


class TornFrameWriter:
    """A writer's end of a link that tears every reply: it accepts a front's link, waits for one
    request, sends half of a reply frame, then ends its side of the connection. `connections` counts
    the links it accepted (a front that reconnects shows up as more than one)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.connections = 0

    async def serve(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(self.socket_path))
        sock.listen(16)
        await trio.serve_listeners(self._tear, [trio.SocketListener(sock)], task_status=task_status)

    async def _tear(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            if not await stream.receive_some(65536):
                return  # the front hung up before asking anything
            reply = frame(messages.encode(messages.AdmitReply(1, True, 5.0, 4, 0.2, 0)))
            await stream.send_all(reply[: len(reply) // 2])
            await stream.send_eof()  # the front reads half a frame, then the end of the stream
            while await stream.receive_some(65536):  # closing with unread bytes would reset the
                pass  # connection instead, and the front would see a broken socket, not a torn frame


class SlowSpool(Spool):
    """A real spool whose every fsync first sleeps as many seconds as `control` holds (no file, or
    not a number: no delay): a disk that stalls, for tests of the ack deadline. A running node uses
    it when `INGEST_SPOOL_FAULT_FILE` names such a file."""

    control: Path | None = None

    def _sync(self, fd: int) -> None:
        delay = 0.0
        if self.control is not None:
            try:
                delay = float(self.control.read_text().strip() or 0)
            except (FileNotFoundError, ValueError):
                delay = 0.0
        if delay > 0:
            time.sleep(delay)
        super()._sync(fd)


def open_spool(config: Config) -> Spool:
    """The writer's spool: a `SlowSpool` when `INGEST_SPOOL_FAULT_FILE` is set, else a `Spool`."""
    if not config.spool_fault_file:
        return Spool.open(config.spool_dir, segment_max_bytes=config.spool_segment_bytes)
    spool = SlowSpool.open(config.spool_dir, segment_max_bytes=config.spool_segment_bytes)
    spool.control = Path(config.spool_fault_file)
    return spool
