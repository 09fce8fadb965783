"""Length-prefixed frames over a trio byte stream (the links between processes).

A frame is `u32 big-endian length | payload`. Exactly one task writes to a given stream (see
`pipeline.link`): a writer cancelled halfway through a frame would corrupt every frame after it,
so request handlers never write to a link themselves.

Error handling: a stream that ends between frames ends the iteration cleanly; one that ends in the
middle of a frame, or announces a frame over `MAX_FRAME_BYTES`, raises `PermanentError`.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import trio

from pipeline.errors import PermanentError

MAX_FRAME_BYTES = 1 << 30
_HEADER = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


async def send_frame(stream: trio.abc.SendStream, payload: bytes) -> None:
    await stream.send_all(frame(payload))


async def iter_frames(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytearray]:
    """Yield each frame's payload until the peer closes the stream.

    Each payload is read straight into a buffer of its announced size (no growing buffer, no
    compaction), which matters on the writer's side, where every batch's rows pass through here.
    """
    reader = _ExactReader(stream)
    while True:
        header = await reader.read_exactly(_HEADER.size)
        if header is None:
            return
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME_BYTES:
            raise PermanentError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
        payload = await reader.read_exactly(size) if size else bytearray()
        if payload is None:
            raise PermanentError(f"stream closed inside a frame of {size} bytes")
        yield payload


class _ExactReader:
    """Reads exact byte counts from a stream; bytes received past one read wait for the next."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._extra = memoryview(b"")

    async def read_exactly(self, n: int) -> bytearray | None:
        """`n` bytes, or None if the stream ends before the first of them."""
        out = bytearray(n)
        view = memoryview(out)
        got = self._take(view, 0)
        while got < n:
            chunk = await self._stream.receive_some(max(n - got, 65536))
            if not chunk:
                if got == 0:
                    return None
                raise PermanentError(f"stream closed after {got} of {n} bytes")
            self._extra = memoryview(chunk)
            got = self._take(view, got)
        return out

    def _take(self, view: memoryview, got: int) -> int:
        take = min(len(self._extra), len(view) - got)
        if take:
            view[got : got + take] = self._extra[:take]
            self._extra = self._extra[take:]
        return got + take
