"""A Redis connection on the caller's trio loop: pipelined commands over one socket, no thread.

    conn = await RespConnection.open("redis://[:password@]host:port/db", timeout_s=0.5)
    replies = await conn.pipeline([("EVALSHA", sha, 1, key, "1.0"), ...])   # one round trip

Commands are packed and replies parsed by hiredis (the C protocol library redis-py uses too);
this module only moves the bytes. An error reply comes back as a `hiredis.ReplyError` value in
its place, as Redis sends it: the caller decides (e.g. NOSCRIPT: load the script and send again).

Resource handling: the caller owns the connection and closes it (`aclose`). One pipeline at a
time: the caller serialises them (the writer's `Batcher` is the only one).

Error handling: a broken or refused socket raises `OSError` (trio's `BrokenResourceError` and
`ClosedResourceError` are turned into it); a reply not complete within `timeout_s` raises
`TimeoutError`. Either leaves the stream out of step: the caller drops the connection and opens
a new one. Redis closing the connection mid-reply is an `OSError` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import trio

READ_BYTES = 64 * 1024


@dataclass
class RespConnection:
    stream: trio.SocketStream
    timeout_s: float
    reader: hiredis.Reader = field(default_factory=hiredis.Reader)

    @classmethod
    async def open(cls, url: str, *, timeout_s: float) -> RespConnection:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"only redis:// URLs are supported, got {parts.scheme!r}")
        try:
            with trio.fail_after(timeout_s):
                stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 6379)
        except trio.TooSlowError as exc:
            raise TimeoutError(f"connecting to Redis took over {timeout_s} s") from exc
        conn = cls(stream, timeout_s)
        setup: list[tuple[Any, ...]] = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            setup.append(("AUTH", user, unquote(parts.password)) if user else ("AUTH", unquote(parts.password)))
        database = parts.path.strip("/")
        if database and database != "0":
            setup.append(("SELECT", int(database)))
        try:
            for reply in await conn.pipeline(setup) if setup else []:
                if isinstance(reply, hiredis.ReplyError):
                    raise OSError(f"Redis refused the connection's setup: {reply}")
        except BaseException:
            await conn.aclose()
            raise
        return conn

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send every command, then read one reply per command, in order."""
        payload = b"".join(hiredis.pack_command(tuple(c)) for c in commands)
        replies: list[Any] = []
        try:
            with trio.fail_after(self.timeout_s):
                await self.stream.send_all(payload)
                while len(replies) < len(commands):
                    reply = self.reader.gets()
                    if reply is False:
                        data = await self.stream.receive_some(READ_BYTES)
                        if not data:
                            raise OSError("Redis closed the connection")
                        self.reader.feed(data)
                    else:
                        replies.append(reply)
        except trio.TooSlowError as exc:
            raise TimeoutError(f"no reply from Redis in {self.timeout_s} s") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise OSError(f"the Redis connection broke: {exc}") from exc
        except hiredis.ProtocolError as exc:
            raise OSError(f"Redis sent an unreadable reply: {exc}") from exc
        return replies

    async def aclose(self) -> None:
        await self.stream.aclose()
