"""The write-ahead spool: accepted batches on disk, group-committed, replayed on start.

A 202 is sent only once its batch is in the spool and fsynced (SPEC §6). The writer hands a group
of opaque payloads to `append` (one write, one fsync); the flusher `read`s from its cursor, inserts
into the store, then `checkpoint`s "everything before P is flushed" with an opaque state blob.
Segments wholly before the checkpoint are deleted; on open, everything after it is read again.
The files' layout is `pipeline.spool_format`'s.

Appends rotate to a new segment at a record boundary when the active one would exceed
`segment_max_bytes`; a payload larger than that still goes in, alone in its segment.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import msgpack
from isal.isal_zlib import crc32

from pipeline.errors import ConfigError, PermanentError, RetryableError
from pipeline.log import get_logger
from pipeline.spool_format import (
    _MAX_PAYLOAD,
    _REC_HEAD,
    _SEG_HEAD,
    _SEG_MAGIC,
    _SEG_NAME,
    BEGINNING,
    FORMAT_VERSION,
    HEADER_SIZE,
    RECORD_OVERHEAD,
    Position,
    _pwritev_all,
    _scan,
    _segment_header,
    decode_checkpoint,
    encode_checkpoint,
)

__all__ = ["BEGINNING", "HEADER_SIZE", "RECORD_OVERHEAD", "Position", "Spool"]

log = get_logger("spool")


class Spool:
    """An append-only log of opaque payloads in numbered segment files, plus a checkpoint.

    Resource handling: `Spool.open` locks the directory (a second owner, in this process or
    another, gets ConfigError; a crash releases the lock) and keeps a descriptor on the active
    segment; `close` (or leaving `with`) releases both. `read` keeps its own descriptor.

    Thread safety: one thread at a time may `append`, while one other thread at a time may
    `read` and `checkpoint` (each side is serialised by its own lock, so misuse waits rather
    than corrupts). The reader never reads past the durable `end`, and `checkpoint` never
    deletes the active segment. The shared bookkeeping (segment sizes, `end`, the checkpoint,
    `pending_bytes`) sits behind one lock that is never held across I/O.

    Error handling: torn or corrupt data is not an exception. It is logged once (segment,
    offset, bytes skipped) and skipped: a bad tail of the last segment on open (the next append
    then starts a new segment), or a bad record met by `read` (the rest of that segment is
    skipped). An I/O failure raises RetryableError; after a failed append the spool truncates
    what it wrote and the next append starts a new segment. A fault-injection subclass can
    override `_sync`, through which every fsync goes.
    """

    def __init__(self, directory: os.PathLike[str] | str, segment_max_bytes: int) -> None:
        if segment_max_bytes <= HEADER_SIZE + RECORD_OVERHEAD:
            raise ValueError(f"segment_max_bytes too small: {segment_max_bytes}")
        self._dir = Path(directory)
        self._max = segment_max_bytes
        self._lock = threading.Lock()  # bookkeeping shared by the two sides
        self._append_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._sizes: dict[int, int] = {}  # seq -> durable end offset, in increasing seq order
        self._active = 0  # the published active segment (never deleted)
        self._end = BEGINNING
        self._cp: Position = BEGINNING
        self._state: bytes | None = None
        self._pending = 0
        self._wfd, self._wseq, self._wpos = -1, 0, 0  # writer side: fd, its seq, next offset
        self._rotate_next = False
        self._rfd: tuple[int, int] | None = None  # reader side: (seq, fd)
        self._logged: set[tuple[int, int]] = set()  # corruption already reported
        self._skips: dict[tuple[int, int], int] = {}  # reader: bad spot -> where reading resumes
        self._dir.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._lock_fd = os.open(self._dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except BaseException:
            os.close(self._dir_fd)
            raise
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException as exc:
            self._release_fds()
            if isinstance(exc, BlockingIOError):
                raise ConfigError(f"spool directory {self._dir} is in use") from None
            raise

    @classmethod
    def open(cls, directory: os.PathLike[str] | str, *, segment_max_bytes: int = 64 * 2**20) -> Self:
        """Open (creating if needed) the spool in `directory`, recovering from a crash."""
        try:
            spool = cls(directory, segment_max_bytes)
        except OSError as exc:
            raise ConfigError(f"cannot open spool in {directory}: {exc}") from exc
        try:
            spool._recover()
        except OSError as exc:
            spool.close()
            raise ConfigError(f"cannot open spool in {directory}: {exc}") from exc
        except BaseException:
            spool.close()
            raise
        return spool

    # ---- opening

    def _seg_path(self, seq: int) -> Path:
        return self._dir / f"{seq:020d}.seg"

    def _recover(self) -> None:
        (self._dir / "checkpoint.tmp").unlink(missing_ok=True)
        self._cp, self._state = self._load_checkpoint()
        seqs = sorted(int(m[1]) for n in os.listdir(self._dir) if (m := _SEG_NAME.match(n)))
        doomed = [s for s in seqs if s < self._cp.segment]
        self._unlink(doomed)
        seqs = seqs[len(doomed) :]
        needs_segment = not seqs
        for seq in seqs:
            path = self._seg_path(seq)
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(HEADER_SIZE)
            if head != _segment_header(seq):
                magic, version, _ = _SEG_HEAD.unpack(head[: _SEG_HEAD.size].ljust(_SEG_HEAD.size))
                if len(head) == HEADER_SIZE and magic == _SEG_MAGIC and version != FORMAT_VERSION:
                    raise PermanentError(f"{path}: spool format version {version} is unsupported")
                self._report(seq, 0, size, "bad segment header")
                needs_segment |= seq == seqs[-1]
                if seq == seqs[-1] and size <= HEADER_SIZE:  # killed while creating it: no record
                    path.unlink()  # (the new segment's directory fsync makes this durable)
                else:
                    self._sizes[seq] = HEADER_SIZE  # nothing in it can be read
                continue
            self._sizes[seq] = size
        if seqs and not needs_segment:
            last, size = seqs[-1], self._sizes[seqs[-1]]
            fd = os.open(self._seg_path(last), os.O_RDWR)
            try:
                _, good, _, problem = _scan(
                    fd, HEADER_SIZE, size, budget=float("inf"), max_records=None, keep=False
                )
            except BaseException:
                os.close(fd)
                raise
            if problem is None and self._cp <= Position(last, size):
                self._wfd, self._wseq, self._wpos = fd, last, size
            else:
                os.close(fd)
                if problem is not None:
                    self._report(last, good, size - good, problem)
                    self._sizes[last] = good
                needs_segment = True
        if needs_segment:  # start clean: after every existing segment and the checkpoint
            self._wseq = max(seqs[-1] if seqs else 0, self._cp.segment)
            self._start_segment()
            self._sync(self._wfd)
            self._sync(self._dir_fd)
            self._sizes[self._wseq] = HEADER_SIZE
        self._active, self._end = self._wseq, Position(self._wseq, self._wpos)
        self._pending = self._pending_after(self._cp)
        log.info(
            "spool_opened",
            directory=str(self._dir),
            segments=len(self._sizes),
            checkpoint=f"{self._cp.segment}:{self._cp.offset}",
            end=f"{self._end.segment}:{self._end.offset}",
            pending_bytes=self._pending,
        )

    def _load_checkpoint(self) -> tuple[Position, bytes | None]:
        try:
            data = (self._dir / "checkpoint").read_bytes()
        except FileNotFoundError:
            return BEGINNING, None
        try:
            return decode_checkpoint(data)
        except (ValueError, TypeError, KeyError, struct.error, msgpack.UnpackException) as exc:
            # Replaying everything left is safe (the store deduplicates); refusing to start is not.
            log.error("spool_checkpoint_corrupt", directory=str(self._dir), error=str(exc))
            return BEGINNING, None

    # ---- appending (the writer's thread)

    def append(self, payloads: Sequence[bytes | bytearray]) -> Position:
        """Write every payload, fsync once, and return the durable end (after the last record).

        A batch that would overflow the active segment starts a new one first (one more fsync,
        of the directory). Raises ValueError for an empty payload, RetryableError on I/O failure.
        """
        frames: list[bytes | bytearray] = []
        for payload in payloads:
            if not 0 < len(payload) <= _MAX_PAYLOAD:
                raise ValueError(f"spool payload length {len(payload)} out of range")
            frames += (_REC_HEAD.pack(len(payload), crc32(payload)), payload)
        with self._append_lock:
            self._check_open()
            if not frames:
                return self.end
            with self._lock:
                published = self._end
            created: list[int] = []
            sealed: dict[int, int] = {}
            try:
                batch = sum(map(len, frames))
                if self._rotate_next or (self._wpos > HEADER_SIZE and self._wpos + batch > self._max):
                    self._start_segment()
                    created.append(self._wseq)
                chunk: list[bytes | bytearray] = []
                size = self._wpos
                for i in range(0, len(frames), 2):
                    record = len(frames[i]) + len(frames[i + 1])
                    if size > HEADER_SIZE and size + record > self._max:  # batch > one segment
                        self._write(chunk)
                        self._sync(self._wfd)
                        sealed[self._wseq] = size
                        self._start_segment()
                        created.append(self._wseq)
                        chunk, size = [], HEADER_SIZE
                    chunk += frames[i : i + 2]
                    size += record
                self._write(chunk)
                self._sync(self._wfd)
                if created:
                    self._sync(self._dir_fd)
            except OSError as exc:
                self._abandon(published, created)
                raise RetryableError(f"spool append failed: {exc}") from exc
            with self._lock:
                self._sizes.update(sealed)
                self._sizes[self._wseq] = self._wpos
                self._active, self._end = self._wseq, Position(self._wseq, self._wpos)
                self._pending += batch
                return self._end

    def _start_segment(self) -> None:
        seq = self._wseq + 1
        fd = os.open(self._seg_path(seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._wseq = seq  # burnt even if the header write fails: never reuse a name
        try:
            _pwritev_all(fd, [_segment_header(seq)], 0)
        except BaseException:
            os.close(fd)
            raise
        if self._wfd >= 0:
            os.close(self._wfd)
        self._wfd, self._wpos, self._rotate_next = fd, HEADER_SIZE, False

    def _write(self, chunk: list[bytes | bytearray]) -> None:
        self._wpos += _pwritev_all(self._wfd, chunk, self._wpos)

    def _abandon(self, published: Position, created: list[int]) -> None:
        """Undo a failed append as far as possible; the next append starts a new segment."""
        if self._wfd >= 0:
            os.close(self._wfd)
        self._wfd, self._rotate_next = -1, True
        for undo in (
            lambda: os.truncate(self._seg_path(published.segment), published.offset),
            lambda: self._unlink(created),
        ):
            try:
                undo()  # type: ignore[no-untyped-call]
            except OSError as exc:
                log.error("spool_undo_failed", error=str(exc))

    # ---- reading and checkpointing (the flusher's thread)

    def read(
        self, start: Position, *, max_bytes: int, max_records: int | None = None
    ) -> tuple[list[memoryview], Position]:
        """Return payloads from `start` (a record boundary) up to the durable end, and the position
        after the last one. At most `max_bytes` of payload, but at least one record if any is
        available. Corrupt data is logged and skipped: the position may then move on even when
        the list is empty, and the caller should carry on from it. The payloads are read-only
        views into one buffer per segment read (no copy per record)."""
        with self._read_lock:
            self._check_open()
            with self._lock:
                sizes = dict(self._sizes)
            out: list[memoryview] = []
            taken = 0
            cursor = result = start
            while max_records is None or len(out) < max_records:
                limit = sizes.get(cursor.segment)
                offset = max(cursor.offset, HEADER_SIZE)
                if limit is None or offset >= limit:
                    later = [s for s in sizes if s > cursor.segment]
                    if not later:
                        break
                    cursor = Position(later[0], HEADER_SIZE)
                    continue
                try:
                    fd = self._reader_fd(cursor.segment)
                    got, end, n, problem = _scan(
                        fd,
                        offset,
                        limit,
                        budget=max_bytes - taken,
                        max_records=None if max_records is None else max_records - len(out),
                        keep=True,
                        must_take=not out,
                    )
                except FileNotFoundError:
                    got, end, n, problem = [], offset, 0, "segment file missing"
                except OSError as exc:
                    raise RetryableError(f"spool read failed: {exc}") from exc
                out += got
                taken += n
                if got:
                    cursor = result = Position(cursor.segment, end)
                if problem is not None:
                    # The first decision sticks: in the active segment, a later read from before
                    # the bad spot must not skip the records appended since.
                    skip_to = self._skips.setdefault((cursor.segment, end), limit)
                    self._report(cursor.segment, end, skip_to - end, problem)
                    cursor = result = Position(cursor.segment, skip_to)
                elif end < limit:
                    break  # the budget is spent
            return out, result

    def _reader_fd(self, seq: int) -> int:
        if self._rfd is not None and self._rfd[0] == seq:
            return self._rfd[1]
        self._close_reader()
        fd = os.open(self._seg_path(seq), os.O_RDONLY)
        self._rfd = (seq, fd)
        return fd

    def _close_reader(self) -> None:
        if self._rfd is not None:
            os.close(self._rfd[1])
            self._rfd = None

    def checkpoint(self, position: Position, state: bytes) -> None:
        """Durably record that everything before `position` is flushed, with `state`; then delete
        the segments wholly before it (never the active one). RetryableError on I/O failure."""
        with self._read_lock:
            self._check_open()
            with self._lock:
                if not self._cp <= position <= self._end:
                    raise ValueError(f"checkpoint {position} outside {self._cp}..{self._end}")
            data = encode_checkpoint(position, state)
            tmp = self._dir / "checkpoint.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    _pwritev_all(fd, [data], 0)
                    self._sync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self._dir / "checkpoint")
                self._sync(self._dir_fd)
            except OSError as exc:
                raise RetryableError(f"spool checkpoint failed: {exc}") from exc
            with self._lock:
                self._cp, self._state = position, bytes(state)
                doomed = [
                    s
                    for s, size in self._sizes.items()
                    if s < self._active
                    and (s < position.segment or (s == position.segment and position.offset >= size))
                ]
                for seq in doomed:
                    del self._sizes[seq]
                self._pending = self._pending_after(position)
            if self._rfd is not None and self._rfd[0] in doomed:
                self._close_reader()
            try:
                self._unlink(doomed)
            except OSError as exc:  # the checkpoint holds; the files go on the next open
                log.error("spool_delete_failed", error=str(exc))

    def _unlink(self, seqs: list[int]) -> None:
        for seq in seqs:
            self._seg_path(seq).unlink(missing_ok=True)
        if seqs:
            self._sync(self._dir_fd)

    # ---- shared

    def _pending_after(self, cp: Position) -> int:
        """Record bytes after `cp`; call with the bookkeeping lock held (or before sharing)."""
        total = 0
        for seq, size in self._sizes.items():
            if seq > cp.segment:
                total += size - HEADER_SIZE
            elif seq == cp.segment:
                total += max(0, size - max(cp.offset, HEADER_SIZE))
        return total

    def _report(self, seq: int, offset: int, skipped: int, reason: str) -> None:
        if (seq, offset) not in self._logged:
            self._logged.add((seq, offset))
            log.warning("spool_corrupt", segment=seq, offset=offset, bytes_skipped=skipped, reason=reason)

    def _sync(self, fd: int) -> None:
        """Every fsync (segments, checkpoint, directory) goes through here: a fault seam."""
        os.fsync(fd)

    @property
    def checkpointed(self) -> tuple[Position, bytes | None]:
        """The last checkpoint: as loaded on open (BEGINNING, None if none) or last written."""
        with self._lock:
            return self._cp, self._state

    @property
    def end(self) -> Position:
        """The durable end: the position after the last fsynced record."""
        with self._lock:
            return self._end

    def pending_bytes(self) -> int:
        """Bytes of records (headers included) after the checkpoint; O(1)."""
        with self._lock:
            return self._pending

    def _check_open(self) -> None:
        if self._closed:
            raise PermanentError("spool is closed")

    def close(self) -> None:
        """Release the descriptors and the directory lock. Idempotent."""
        with self._append_lock, self._read_lock:
            if not self._closed:
                self._closed = True
                self._release_fds()

    def _release_fds(self) -> None:
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1
        self._close_reader()
        os.close(self._lock_fd)  # releases the flock
        os.close(self._dir_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
