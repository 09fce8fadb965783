"""The writer's end of the links: a Unix socket server speaking `pipeline.messages` frames.

Each connection (one per front worker, plus short ones from `run.py query`) gets a reader, which
decodes frames and hands each message (and its frame, for whoever keeps the bytes as they are)
to `dispatch` with a `reply` callback, and one forwarder
task, the only writer of that connection's socket, which sends the replies in order.

Resource handling: `serve_links` owns the listening socket and removes a stale socket file before
binding. It runs until cancelled. `reply` never blocks: a peer that stops reading its replies
until `reply_capacity` are waiting is disconnected (it answers its own callers with 503).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from pipeline import messages
from pipeline.errors import PermanentError
from pipeline.frames import frame, iter_frames
from pipeline.jobs import with_waiting
from pipeline.log import get_logger

log = get_logger("links")

Reply = Callable[[messages.Message], None]
# (the decoded message, the frame it came in, after RECORD_PREFIX_BYTES of headroom, how to answer it)
Dispatch = Callable[[messages.WriterInbound, bytearray, Reply], Awaitable[None]]


async def serve_links(
    socket_path: Path,
    dispatch: Dispatch,
    *,
    reply_capacity: int = 4096,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    if socket_path.exists() or socket_path.is_symlink():
        socket_path.unlink()
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(socket_path))
    os.chmod(socket_path, 0o600)
    sock.listen(128)
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, dispatch, reply_capacity)

    log.info("listening", socket=str(socket_path))
    await trio.serve_listeners(handle, [listener], task_status=task_status)


async def _serve_connection(stream: trio.SocketStream, dispatch: Dispatch, capacity: int) -> None:
    send, receive = trio.open_memory_channel[messages.Message](capacity)
    undelivered = 0  # replies dropped because the connection was closing
    try:
        async with stream, trio.open_nursery() as nursery:

            def reply(message: messages.Message) -> None:
                nonlocal undelivered
                try:
                    send.send_nowait(message)
                except trio.WouldBlock:
                    log.warning("peer_not_reading", waiting=capacity)
                    nursery.cancel_scope.cancel()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The connection is closing (the peer hung up, or sending to it failed): the
                    # front answers that request itself when its link breaks. Logged once, below.
                    undelivered += 1

            async def forward_replies() -> None:
                async with receive:
                    async for message in receive:  # everything already waiting goes out in one send
                        waiting = with_waiting(message, receive, capacity)
                        await stream.send_all(b"".join(frame(messages.encode(m)) for m in waiting))

            nursery.start_soon(forward_replies)
            try:
                async for received in iter_frames(stream, headroom=messages.RECORD_PREFIX_BYTES):
                    message = messages.decode_inbound(memoryview(received)[messages.RECORD_PREFIX_BYTES:])
                    await dispatch(message, received, reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, PermanentError,
                    msgspec.MsgspecError) as exc:  # fmt: skip
                log.warning("connection_error", error=str(exc))
            # The peer closed its end: it waits for nothing more from us.
            nursery.cancel_scope.cancel()
    finally:
        if undelivered:  # once per connection, not once per reply
            log.warning("replies_undelivered", count=undelivered)
