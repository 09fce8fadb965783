"""Length-prefixed frames over a trio byte stream (the links between processes).

A frame is `u32 big-endian length | payload`. Exactly one task writes to a given stream (see
`pipeline.link`): a writer cancelled halfway through a frame would corrupt every frame after it,
so request handlers never write to a link themselves.

Error handling: a stream that ends between frames ends the iteration cleanly; one that ends in the
middle of a frame, or announces a frame over `MAX_FRAME_BYTES`, raises `PermanentError`.

Memory: a batch's frame is 100 KB or more, and a fresh buffer of that size costs page faults. So
a sender encodes into one buffer it keeps (`FrameBuffer`), and a receiver reads a large payload
straight into its destination (`recv_into`), with optional headroom in front for the bytes the
writer adds before spooling it (measurements: docs/PERFORMANCE.md, "Page faults").
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import trio

from pipeline.errors import PermanentError

MAX_FRAME_BYTES = 1 << 30
_HEADER = struct.Struct(">I")


_RECEIVE_BYTES = 65536  # below this, reads go through a buffer (many small frames per syscall)


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


class FrameBuffer:
    """One sender's reusable frame buffer: `encode` writes header and payload into it (the buffer
    keeps its capacity), so sending a large message allocates nothing. Send the returned view
    before the next `encode`."""

    def __init__(self, encode_into: Callable[[Any, bytearray, int], None]) -> None:
        self._encode_into = encode_into
        self._buf = bytearray()

    def encode(self, message: Any) -> bytearray:
        return self.encode_all((message,))

    def encode_all(self, messages: Iterable[Any]) -> bytearray:
        """Frame each message, back to back: what one `send_all` sends."""
        buf, start = self._buf, 0
        for message in messages:
            self._encode_into(message, buf, start + _HEADER.size)
            _HEADER.pack_into(buf, start, len(buf) - start - _HEADER.size)
            start = len(buf)
        del buf[start:]
        return buf


def recv_frame(sock: socket.socket) -> bytes:
    """One frame's payload from a blocking socket (the CLI's one-shot links, `pipeline.query`).
    Raises PermanentError if the peer closes first, or in the middle."""
    header = _recv_exactly(sock, _HEADER.size)
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise PermanentError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise PermanentError(f"stream closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


async def iter_frames(stream: trio.abc.ReceiveStream, *, headroom: int = 0) -> AsyncIterator[bytearray]:
    """Yield each frame's payload until the peer closes the stream, preceded by `headroom` spare
    bytes (the payload is `frame[headroom:]`).

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
        payload = await reader.read_exactly(size, headroom=headroom)
        if payload is None:
            raise PermanentError(f"stream closed inside a frame of {size} bytes")
        yield payload


class _ExactReader:
    """Reads exact byte counts from a stream; bytes received past one read wait for the next."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._socket = getattr(stream, "socket", None)  # a trio.SocketStream's: recv_into
        self._extra = memoryview(b"")

    async def read_exactly(self, n: int, *, headroom: int = 0) -> bytearray | None:
        """`n` bytes after `headroom` zero bytes, or None if the stream ends before the first."""
        out = bytearray(headroom + n)
        view = memoryview(out)[headroom:]
        got = self._take(view, 0)
        while got < n:
            if self._socket is not None and n - got >= _RECEIVE_BYTES:
                received = await self._socket.recv_into(view[got:])  # no intermediate buffer
            else:
                chunk = await self._stream.receive_some(max(n - got, _RECEIVE_BYTES))
                self._extra, received = memoryview(chunk), 0
            if not received and not self._extra:
                if got == 0:
                    return None
                raise PermanentError(f"stream closed after {got} of {n} bytes")
            got = self._take(view, got + received)
        return out

    def _take(self, view: memoryview, got: int) -> int:
        take = min(len(self._extra), len(view) - got)
        if take:
            view[got : got + take] = self._extra[:take]
            self._extra = self._extra[take:]
        return got + take
