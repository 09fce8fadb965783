"""A front worker's link to the writer: request/reply over one Unix socket.

Resource handling: `run_link` owns the socket and both of its directions. Exactly one task (the
forwarder, the body of `_serve_connection`) writes frames and one task reads them; request
handlers never touch the socket. They put a `Call` (a message plus a one-slot reply channel)
into the link's bounded input channel and wait on their reply channel. So a handler cancelled
halfway (its client went away) cannot leave half a frame on the wire.

Error handling: when the writer is unreachable, the connection drops, or the writer's side sends a
torn or undecodable frame (as `link_server` treats the same on its side), every waiting call is
answered with `None` (the front turns that into 503 `overloaded` with `Retry-After`) and the link
reconnects with backoff. A call is answered at most once.

End of input: when every clone of the input channel is closed (the worker is draining), the link
waits for the replies still owed, then closes the socket and returns.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import msgspec
import trio

from pipeline import messages
from pipeline.errors import PermanentError
from pipeline.frames import iter_frames
from pipeline.jobs import deliver, with_waiting
from pipeline.log import get_logger

log = get_logger("link")

# At most this many calls share one send (bounds the frame buffer a burst of Appends can grow).
_COALESCE_CALLS = 16
# ... and at most about this many bytes of rows: the connection's frame buffer stays below the
# allocator's mmap threshold (MALLOC_MMAP_THRESHOLD_, 1 MiB, pipeline/supervisor.py). Above it, the
# buffer is mapped afresh for the send and unmapped when the next small one shrinks it: a page
# fault for every 4 KiB of rows (docs/PERFORMANCE.md, "OTLP front path, fourth pass").
_SEND_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Call:
    message: messages.Message
    reply: trio.MemorySendChannel[messages.Message | None]


async def call(
    send: trio.MemorySendChannel[Call], message: messages.Message, *, timeout_s: float
) -> messages.Message | None:
    """Send `message` over the link and wait for its reply; None on timeout or a broken link."""
    reply_send, reply_receive = trio.open_memory_channel[messages.Message | None](1)
    with reply_receive, trio.move_on_after(timeout_s):
        try:
            await send.send(Call(message, reply_send))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        return await reply_receive.receive()
    return None


async def writer_readiness(send: trio.MemorySendChannel[Call], timeout_s: float) -> tuple[int, dict]:
    """/readyz as the writer sees it: (HTTP status, body)."""
    reply = await call(send, messages.Status(0), timeout_s=timeout_s)
    if not isinstance(reply, messages.StatusReply):
        return 503, {"status": "degraded", "writer": "unreachable"}
    if not reply.store_ok:
        return 503, {"status": "degraded", "store": reply.store_error,
                     "spool_pending_bytes": reply.spool_pending_bytes,
                     "spool_max_bytes": reply.spool_max_bytes}  # fmt: skip
    if reply.redis:  # still ready when Redis is down: admissions fall back to this node's share
        return 200, {"status": "ready", "redis": reply.redis}
    return 200, {"status": "ready"}


async def run_link(
    socket_path: Path,
    receive: trio.MemoryReceiveChannel[Call],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    ids = itertools.count(1)
    backoff_s = 0.05
    async with receive:
        task_status.started()
        while True:
            try:
                stream = await trio.open_unix_socket(str(socket_path))
            except OSError as exc:
                log.warning("writer_unreachable", error=str(exc), retry_in_s=backoff_s)
                if await _refuse_for(receive, backoff_s):
                    return
                backoff_s = min(backoff_s * 2, 2.0)
                continue
            backoff_s = 0.05
            log.info("connected", socket=str(socket_path))
            if await _serve_connection(stream, receive, ids):
                return
            log.warning("writer_connection_lost")


async def _refuse_for(receive: trio.MemoryReceiveChannel[Call], seconds: float) -> bool:
    """Answer every call with None for `seconds`. True when the input has ended."""
    with trio.move_on_after(seconds):
        async for item in receive:
            deliver(item.reply, None)
        return True
    return False


async def _serve_connection(
    stream: trio.SocketStream, receive: trio.MemoryReceiveChannel[Call], ids: itertools.count[int]
) -> bool:
    """Forward calls until the input ends (True) or the connection breaks (False)."""
    pending: dict[int, trio.MemorySendChannel[messages.Message | None]] = {}
    out = messages.frame_buffer()  # this task is the connection's only sender
    all_answered = trio.Event()
    input_ended = False
    async with stream, trio.open_nursery() as nursery:

        async def read_replies() -> None:
            try:
                async for payload in iter_frames(stream):
                    reply = messages.decode(payload)  # type: ignore[arg-type]  # msgspec reads any buffer
                    waiter = pending.pop(reply.req_id, None)
                    if waiter is not None:
                        deliver(waiter, reply)
                    if input_ended and not pending:
                        all_answered.set()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, PermanentError,
                    msgspec.MsgspecError) as exc:  # fmt: skip
                # A broken socket, or a torn or undecodable frame: the stream is out of step.
                log.warning("writer_connection_error", error=str(exc), pending=len(pending))
            # The writer closed the connection: nobody will answer what is pending.
            _answer_none(pending)
            all_answered.set()
            nursery.cancel_scope.cancel()

        nursery.start_soon(read_replies)
        try:
            async for item in receive:
                # Every call already waiting goes out in the same send: one syscall on each side.
                messages_out = []
                for call_ in with_waiting(item, receive, _COALESCE_CALLS):
                    req_id = next(ids)
                    pending[req_id] = call_.reply
                    messages_out.append(msgspec.structs.replace(call_.message, req_id=req_id))
                try:
                    for group in send_groups(messages_out, _SEND_BYTES):
                        await stream.send_all(out.encode_all(group))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    nursery.cancel_scope.cancel()
                    return False
            input_ended = True
            if not pending:
                all_answered.set()
            await all_answered.wait()
            nursery.cancel_scope.cancel()
            return True
        finally:
            # However the connection ends (including a call taken just as the reader gave up),
            # nobody will answer what is still pending here.
            _answer_none(pending)
    return False


def send_groups(messages_out: list[messages.Message], max_bytes: int) -> list[list[messages.Message]]:
    """`messages_out` in order, cut into groups of at most `max_bytes` of `Append` rows each (other
    messages are small and join the group before them; an `Append` larger than `max_bytes` starts
    a group of its own): one send each."""
    groups: list[list[messages.Message]] = [[]]
    size = 0
    for message in messages_out:
        rows = len(message.rows) if isinstance(message, messages.Append) else 0
        if rows and groups[-1] and size + rows > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(message)
        size += rows
    return groups


def _answer_none(pending: dict[int, trio.MemorySendChannel[messages.Message | None]]) -> None:
    for waiter in pending.values():
        deliver(waiter, None)
    pending.clear()
