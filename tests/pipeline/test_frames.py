"""Frames over real socket pairs: large payloads straight into their buffer, small ones many per
read, headroom, the reusable sender buffer, and a peer that stops mid-frame."""

from __future__ import annotations

import os
import struct

import msgspec
import pytest
import trio

from pipeline.errors import PermanentError
from pipeline.frames import FrameBuffer, frame, iter_frames


async def _collect(stream: trio.SocketStream, headroom: int = 0) -> list[bytearray]:
    return [payload async for payload in iter_frames(stream, headroom=headroom)]


async def test_large_and_small_frames_arrive_whole_after_their_headroom() -> None:
    left, right = trio.socket.socketpair()
    sender, receiver = trio.SocketStream(left), trio.SocketStream(right)
    payloads = [b"a", os.urandom(3 << 20), b"", b"bc" * 10, os.urandom(70_000)]
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            async with sender:
                for payload in payloads:
                    await sender.send_all(frame(payload))

        nursery.start_soon(send)
        async with receiver:
            received = await _collect(receiver, headroom=5)
    assert [bytes(r[5:]) for r in received] == payloads
    assert all(r[:5] == bytes(5) for r in received)


async def test_many_small_frames_in_one_write() -> None:
    left, right = trio.socket.socketpair()
    sender, receiver = trio.SocketStream(left), trio.SocketStream(right)
    payloads = [str(i).encode() * (i % 7) for i in range(2000)]
    async with sender:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.send_all, b"".join(frame(p) for p in payloads))
            await trio.sleep(0.05)
            await sender.aclose()
        async with receiver:
            assert [bytes(r) for r in await _collect(receiver)] == payloads


@pytest.mark.parametrize("cut", [2, 4 + 10, 4 + 200_000])
async def test_a_peer_gone_inside_a_frame_is_an_error(cut: int) -> None:
    left, right = trio.socket.socketpair()
    sender, receiver = trio.SocketStream(left), trio.SocketStream(right)
    data = frame(os.urandom(300_000))[:cut]
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            async with sender:
                await sender.send_all(data)

        nursery.start_soon(send)
        async with receiver:
            with pytest.raises(PermanentError):
                await _collect(receiver)


async def test_frame_buffer_reuses_its_memory_and_frames_each_message() -> None:
    out = FrameBuffer(msgspec.msgpack.Encoder().encode_into)
    big = out.encode({"rows": b"x" * 500_000})
    assert struct.unpack(">I", big[:4])[0] == len(big) - 4
    assert msgspec.msgpack.decode(big[4:]) == {"rows": b"x" * 500_000}
    small = out.encode([1, 2])
    assert small is big  # the same buffer, its length now the small message's
    assert bytes(small) == frame(msgspec.msgpack.encode([1, 2]))
