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


async def iter_frames(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytes]:
    """Yield each frame's payload until the peer closes the stream."""
    buffer = bytearray()
    while True:
        while len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            if size > MAX_FRAME_BYTES:
                raise PermanentError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
            end = _HEADER.size + size
            if len(buffer) < end:
                break
            payload = bytes(buffer[_HEADER.size : end])
            del buffer[:end]
            yield payload
        chunk = await stream.receive_some(1 << 20)
        if not chunk:
            if buffer:
                raise PermanentError(f"stream closed inside a frame ({len(buffer)} bytes)")
            return
        buffer += chunk
