"""The spool's on-disk format: segment files of checksummed records, and the checkpoint file.

On disk (integers little-endian, crc32 is zlib's, computed with ISA-L's SIMD version):

    <dir>/<seq:020d>.seg  b"FGLSPOOL" | u32 version | u64 seq | u32 crc32(those 20 bytes)
                          then records: u32 length (> 0) | u32 crc32(payload) | payload
    <dir>/checkpoint      b"FGLCKPT\\0" | u32 length | u32 crc32(body) | body, where body is
                          msgpack {"v": 1, "segment": int, "offset": int, "state": bytes | None};
                          replaced atomically (temp file, fsync, rename, fsync of the directory)
    <dir>/lock            flock()ed while open: one owner per directory

A `Position` is a byte offset inside a segment file; the first record starts at `HEADER_SIZE`.
This module encodes and decodes; `pipeline.spool.Spool` owns the files, their locks and fsyncs.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

import msgpack
from isal.isal_zlib import crc32  # zlib's crc32, SIMD: every spooled byte is summed twice

from pipeline.errors import PermanentError

FORMAT_VERSION = 1
_SEG_MAGIC = b"FGLSPOOL"
_SEG_HEAD = struct.Struct("<8sIQ")
_CRC = struct.Struct("<I")
HEADER_SIZE = _SEG_HEAD.size + _CRC.size
_REC_HEAD = struct.Struct("<II")
RECORD_OVERHEAD = _REC_HEAD.size
_MAX_PAYLOAD = 2**32 - 1
_CKPT_MAGIC = b"FGLCKPT\0"
_CKPT_HEAD = struct.Struct("<8sII")
_SEG_NAME = re.compile(r"^(\d{20})\.seg$")
_READ_AHEAD = 512 << 10


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A record boundary: byte `offset` in segment `segment`. Positions order like the log."""

    segment: int
    offset: int


BEGINNING = Position(0, 0)  # before every segment: the checkpoint of a spool never checkpointed


def _segment_header(seq: int) -> bytes:
    head = _SEG_HEAD.pack(_SEG_MAGIC, FORMAT_VERSION, seq)
    return head + _CRC.pack(crc32(head))


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def _pwritev_all(fd: int, buffers: list, offset: int) -> int:
    """Write `buffers` back to back at `offset` without joining them (no copy of the batches);
    return the bytes written."""
    views = [memoryview(b) for b in buffers if len(b)]
    i = total = 0
    while i < len(views):
        written = os.pwritev(fd, views[i : i + _IOV_MAX], offset)
        if written <= 0:
            raise OSError(f"pwritev wrote {written} bytes")
        offset, total = offset + written, total + written
        while i < len(views) and written >= len(views[i]):
            written -= len(views[i])
            i += 1
        if written:
            views[i] = views[i][written:]
    return total


def _scan(
    fd: int,
    offset: int,
    limit: int,
    *,
    budget: float,
    max_records: int | None,
    keep: bool,
    must_take: bool = True,
) -> tuple[list[memoryview], int, int, str | None]:
    """Read the records in [offset, limit) of one segment, through a read-ahead buffer.

    Stops before a record that would take the payload bytes past `budget` (unless it is the
    first and `must_take`), after `max_records`, at `limit`, or at the first bad record. Returns the payloads
    (if `keep`), the offset after the last good record, its payload bytes and the problem found.

    Kept payloads are views into one read of about `budget` bytes: no copy per record, and the
    memory goes back to the OS as a whole once the caller drops the views (a flush block). A scan
    that keeps nothing reads `_READ_AHEAD` at a time.
    """
    out: list[memoryview] = []
    taken = count = 0
    buf, buf_at = memoryview(b""), offset
    ahead = int(budget) + _READ_AHEAD if keep and budget != float("inf") else _READ_AHEAD

    def get(at: int, n: int) -> memoryview:
        nonlocal buf, buf_at
        if buf_at <= at and at + n <= buf_at + len(buf):
            return buf[at - buf_at : at - buf_at + n]
        buf, buf_at = memoryview(os.pread(fd, max(n, min(ahead, limit - at)), at)), at
        return buf if len(buf) <= n else buf[:n]

    while offset < limit and (max_records is None or count < max_records):
        if limit - offset < RECORD_OVERHEAD:
            return out, offset, taken, "partial record header"
        head = get(offset, RECORD_OVERHEAD)
        if len(head) < RECORD_OVERHEAD:
            return out, offset, taken, "short read"
        length, crc = _REC_HEAD.unpack(head)
        if length == 0 or offset + RECORD_OVERHEAD + length > limit:
            return out, offset, taken, "bad record length"
        if (count or not must_take) and taken + length > budget:
            break
        payload = get(offset + RECORD_OVERHEAD, length)
        if len(payload) < length:
            return out, offset, taken, "short read"
        if crc32(payload) != crc:
            return out, offset, taken, "checksum mismatch"
        if keep:
            out.append(payload)
        taken, count = taken + length, count + 1
        offset += RECORD_OVERHEAD + length
    return out, offset, taken, None


def encode_checkpoint(position: Position, state: bytes) -> bytes:
    """The checkpoint file's bytes for `position` and the flusher's `state`."""
    body = msgpack.packb(
        {"v": 1, "segment": position.segment, "offset": position.offset, "state": state},
        use_bin_type=True,
    )
    return _CKPT_HEAD.pack(_CKPT_MAGIC, len(body), crc32(body)) + body


def decode_checkpoint(data: bytes) -> tuple[Position, bytes | None]:
    """The position and state in a checkpoint file's bytes. ValueError (or TypeError, KeyError,
    struct.error, msgpack.UnpackException) when they are corrupt; PermanentError for a version
    this program does not know."""
    magic, length, crc = _CKPT_HEAD.unpack_from(data)
    body = data[_CKPT_HEAD.size : _CKPT_HEAD.size + length]
    if magic != _CKPT_MAGIC or len(body) != length or crc32(body) != crc:
        raise ValueError("bad magic, length or checksum")
    fields = msgpack.unpackb(body, raw=False)
    if fields["v"] != 1:
        raise PermanentError(f"spool checkpoint version {fields['v']} is unsupported")
    state = fields["state"]
    position = Position(int(fields["segment"]), int(fields["offset"]))
    if state is not None and not isinstance(state, bytes):
        raise ValueError("state is not bytes")
    return position, state
