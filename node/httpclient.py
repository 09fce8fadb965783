"""A small keep-alive HTTP/1.1 client on trio sockets, fast enough to load a node.

One `Connection` per worker task: it sends a prebuilt request head plus body, parses the status
line, the headers and a `Content-Length` (or chunked, or read-to-close) body, and keeps the socket
for the next request unless the reply says `Connection: close`.

Resource handling:
    A `Connection` owns at most one socket. It is closed after a `Connection: close` reply, after
    any failure and when a request is cancelled midway (the stream's state is unknown then); the
    next `request` reconnects. `aclose()` closes it for good.

Error handling:
    HTTP statuses are data (`Response`), never exceptions. Every failure below HTTP (refused,
    reset, EOF mid-reply, timeout, a reply that is not HTTP/1.x) is a `TransportError`, which is
    retryable. A reused keep-alive socket that the server closed while idle (EOF or reset before
    any byte of the reply) is retried once on a fresh socket first, as browsers do.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from pipeline.errors import RetryableError

MAX_HEAD_BYTES = 64 * 1024
RECEIVE_BYTES = 64 * 1024


class TransportError(RetryableError):
    """The request got no complete HTTP reply; retrying may help."""


class _NoReply(TransportError):
    """The socket closed before any byte of the reply arrived."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes
    will_close: bool


def request_head(method: str, target: str, host: str, headers: dict[str, str]) -> bytes:
    """The request line and headers up to (not including) `Content-Length: N\\r\\n\\r\\n`."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


def with_length(head: bytes, body: bytes) -> bytes:
    """The complete head for `body` (sent apart from the body: no copy of a big body)."""
    return b"%s%d\r\n\r\n" % (head, len(body))


class Connection(trio.abc.AsyncResource):
    def __init__(self, host: str, port: int, *, timeout_s: float = 30.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._stream: trio.SocketStream | None = None
        self._buf = bytearray()
        self._replied = False  # a byte of the current reply has arrived
        self.connects = 0

    async def request(self, head: bytes, body: bytes) -> Response:
        """Send `head` (from `request_head`) with `body`, return the reply."""
        head = with_length(head, body)
        try:
            with trio.fail_after(self.timeout_s):
                if self._stream is not None:
                    try:
                        return await self._exchange(head, body)
                    except _NoReply:
                        pass  # the server closed the idle socket: once more on a fresh one
                return await self._exchange(head, body)
        except trio.TooSlowError:
            await self._close()
            raise TransportError(f"no reply within {self.timeout_s}s") from None

    async def _exchange(self, head: bytes, body: bytes) -> Response:
        done, self._replied = False, False
        try:
            if self._stream is None:
                await self._connect()
            assert self._stream is not None
            try:
                await self._stream.send_all(head)
                await self._stream.send_all(body)
            except trio.BrokenResourceError:
                # The server may have answered early (e.g. 413) and closed: read that reply.
                with trio.move_on_after(1.0):
                    reply = await self._read_reply()
                    done = True
                    return Response(reply.status, reply.headers, reply.body, True)
                raise _NoReply("connection closed while sending") from None
            reply = await self._read_reply()
            done = not reply.will_close
            return reply
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = TransportError if self._replied else _NoReply
            raise error(f"{type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # a malformed length or chunk size
            raise TransportError(f"malformed reply: {exc}") from None
        finally:
            if not done:
                await self._close()

    async def _connect(self) -> None:
        self._buf.clear()
        self._stream = await trio.open_tcp_stream(self.host, self.port)
        self.connects += 1

    async def _fill(self) -> None:
        assert self._stream is not None
        data = await self._stream.receive_some(RECEIVE_BYTES)
        if not data:
            raise (TransportError("connection closed mid-reply") if self._replied else _NoReply("EOF"))
        self._replied = True
        self._buf += data

    async def _read_reply(self) -> Response:
        buf = self._buf
        while True:  # skip 1xx interim replies
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise TransportError("reply head too large")
                await self._fill()
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            version, _, rest = lines[0].partition(" ")
            if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
                raise TransportError(f"not an HTTP/1.x reply: {lines[0][:80]!r}")
            status = int(rest[:3])
            if status >= 200:
                break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        if status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        elif "content-length" in headers:
            body = await self._read_exactly(int(headers["content-length"]))
        else:  # delimited by the end of the connection
            while True:
                try:
                    await self._fill()
                except TransportError:
                    break
            body, will_close = bytes(buf), True
            buf.clear()
        return Response(status, headers, body, will_close)

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            await self._fill()
        body = bytes(self._buf[:n])
        del self._buf[:n]
        return body

    async def _read_line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    async def _read_chunked(self) -> bytes:
        parts = []
        while size := int((await self._read_line()).split(b";")[0], 16):
            parts.append(await self._read_exactly(size))
            await self._read_exactly(2)
        while await self._read_line():  # trailers, then the empty line
            pass
        return b"".join(parts)

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        self._buf.clear()
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        await self._close()
