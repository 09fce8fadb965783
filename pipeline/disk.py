"""Free space on the data dir's file system, and the floor below which the node takes no new work.

A full disk is an outage, not a loss: the spool and the embedded store live on the same file
system, and once it is full the store cannot write its parts, nor its metadata, nor merge. So the
node keeps a reserve: while free space is below `min_free_disk_bytes`, the spool stage refuses new
batches (503 `overloaded`) and /readyz answers 503 `degraded` with the reason; what was accepted
before is still flushed, into the reserve. Space freed by the operator (or by merges) lets the node
accept again by itself: the check is made on every group, not latched.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# OS errors that mean "the disk is full or its quota is used up": the store or the spool is
# unavailable, the data is not bad.
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# What such a failure looks like inside a message from the store (ClickHouse wraps the OS error).
DISK_FULL_MARKERS = ("no space left on device", "not_enough_space", "disk quota exceeded", "cannot_write_to_file")


def free_bytes(path: Path) -> int:
    """Bytes available to an unprivileged writer on the file system of `path` (or of its nearest
    existing parent). Raises OSError only if even that cannot be inspected."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize


def low_disk_reason(path: Path, floor_bytes: int) -> str | None:
    """Why the node must not take new batches because of disk space, or None. Plain function."""
    if floor_bytes <= 0:
        return None
    try:
        free = free_bytes(path)
    except OSError as exc:
        return f"cannot inspect free disk space: {exc}"
    if free < floor_bytes:
        return f"free disk space {free} bytes is below INGEST_MIN_FREE_DISK_BYTES ({floor_bytes})"
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Is `exc` (or what it wraps) a full disk?"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if any(marker in str(current).lower() for marker in DISK_FULL_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def _directory_fd(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make the directory's entries (files created, renamed, removed in it) durable."""
    with _directory_fd(path) as fd:
        os.fsync(fd)


def sync_file_system(path: Path) -> None:
    """Write everything cached for the file system of `path` to the disk, and wait (Linux's
    `syncfs`; `os.sync`, every file system, where it is missing). Raises OSError on failure."""
    with _directory_fd(path) as fd:
        if _syncfs is None:
            os.sync()
        elif _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs({path}): {os.strerror(code)}")


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()
