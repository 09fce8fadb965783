"""The front worker's stages on memory channels: validate → price → link calls, and the link
itself against a real writer-side link server on a Unix socket."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import trio
from hypercorn.trio import tcp_server as hypercorn_tcp

from node.httpclient import Connection, request_head
from pipeline.config import Config
from pipeline.jobs import Job, Rejected
from pipeline.link import Call, call, run_link
from pipeline.link_server import serve_links
from pipeline.messages import RECORD_PREFIX_BYTES, Admit, AdmitReply, Append, AppendReply, AppendView, encode
from stages.front import run_front
from stages.price import PriceTable
from stages.price_stage import run_price
from stages.validate_stage import run_validate

BODY = {"version": "v1", "traces": [{"id": "t", "spans": [
    {"id": "a", "name": "llm", "startTime": "2026-11-20T10:00:00Z", "model": "gpt-4o-mini",
     "provider": "openai", "usage": {"inputTokens": 1000000, "outputTokens": 1000000}},
    {"id": "b", "name": "tool", "kind": "tool", "startTime": "2026-11-20T10:00:00Z"}]}]}  # fmt: skip


def job(body: bytes, reply: trio.MemorySendChannel, encoding: str = "identity") -> Job:
    return Job("org", "key", None, "json", encoding, body, reply)


async def test_validate_then_price_turn_a_body_into_an_append_call(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, max_decompressed_bytes=10_000)
    validate_send, validate_receive = trio.open_memory_channel[Job](4)
    price_send, price_receive = trio.open_memory_channel[Job](4)
    link_send, link_receive = trio.open_memory_channel[Call](4)
    reply_send, reply_receive = trio.open_memory_channel(4)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_price, config, PriceTable.load(None), price_receive, link_send)
        await nursery.start(run_validate, config, validate_receive, price_send)
        async with validate_send:
            await validate_send.send(job(gzip.compress(json.dumps(BODY).encode()), reply_send, "gzip"))
            await validate_send.send(job(b"{oops", reply_send))
            await validate_send.send(job(gzip.compress(b" " * 20_000), reply_send, "gzip"))
        calls = [c async for c in link_receive]  # ends when the stages have drained and closed
    assert len(calls) == 1
    append = calls[0].message
    assert isinstance(append, Append) and append.spans == 2 and append.org_id == "org" and append.rows
    rejected = [reply_receive.receive_nowait(), reply_receive.receive_nowait()]
    assert rejected[0] == Rejected(400, rejected[0].body) and rejected[0].body["error"] == "invalid_body"
    assert rejected[1] == Rejected(413, {"error": "payload_too_large", "limit": 10_000})


async def test_link_round_trip_and_broken_writer(tmp_path: Path) -> None:
    socket_path = tmp_path / "w.sock"

    async def dispatch(message, frame, reply) -> None:
        if isinstance(message, Admit):
            reply(AdmitReply(message.req_id, True, 5.0, 4, 0.2, 0))
        elif isinstance(message, AppendView):
            # The frame as sent, after the headroom the writer fills in before spooling it.
            assert frame[:RECORD_PREFIX_BYTES] == bytes(RECORD_PREFIX_BYTES)
            sent = encode(Append(message.req_id, "o", "k", message.spans, None, b"r"))
            assert frame[RECORD_PREFIX_BYTES:] == sent
            reply(AppendReply(message.req_id, "ok", spans=message.spans))

    async with trio.open_nursery() as nursery:
        server = trio.CancelScope()

        async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with server:
                await serve_links(socket_path, dispatch, task_status=task_status)

        await nursery.start(serve)
        send, receive = trio.open_memory_channel[Call](8)
        await nursery.start(run_link, socket_path, receive)
        async with send:
            replies = []
            async with trio.open_nursery() as callers:
                for i in range(20):
                    callers.start_soon(lambda i=i: _collect(replies, send, Append(0, "o", "k", i, None, b"r")))
            assert sorted(r.spans for r in replies) == list(range(20))  # every caller got its own reply
            admit = await call(send, Admit(0, "k", 5.0), timeout_s=5)
            assert isinstance(admit, AdmitReply) and admit.remaining == 4
            server.cancel()  # the writer goes away: calls are answered None, not hung
            await trio.sleep(0.1)
            assert await call(send, Admit(0, "k", 5.0), timeout_s=5) is None


async def _collect(out: list, send: trio.MemorySendChannel[Call], message: Append) -> None:
    out.append(await call(send, message, timeout_s=5))


async def test_the_front_reads_a_body_in_reads_of_at_most_http_read_bytes(tmp_path: Path) -> None:
    """INGEST_HTTP_READ_BYTES reaches Hypercorn: with 4 KiB, a 100 KB body arrives in 4 KiB pieces
    (Hypercorn's own default would hand over up to 64 KiB at once), whole."""
    bodies: list[list[bytes]] = []

    async def app(scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while (message := await receive()).get("more_body", False):
            chunks.append(message["body"])
        bodies.append([*chunks, message.get("body", b"")])
        await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    body = bytes(range(256)) * 400  # 102,400 bytes
    default = hypercorn_tcp.MAX_RECV
    listener = socket.create_server(("127.0.0.1", 0))
    port, fd = listener.getsockname()[1], listener.detach()  # the server closes the socket when done
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_front, Config(http_read_bytes=4096), app, fd, stop.wait)
            async with Connection("127.0.0.1", port) as conn:
                head = request_head("POST", "/ingest", f"127.0.0.1:{port}", {"Content-Type": "application/json"})
                reply = await conn.request(head, body)
            stop.set()
    finally:
        hypercorn_tcp.MAX_RECV = default
    assert reply.status == 202
    (chunks,) = bodies
    assert b"".join(chunks) == body
    assert max(map(len, chunks)) <= 4096 and len(chunks) >= len(body) // 4096
