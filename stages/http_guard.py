"""HTTP/1.1 hygiene in front of the routes (RFC 9112), and the deadline of a request's body.

- `Transfer-Encoding` together with `Content-Length` is refused with 400 and the connection closed
  (§6.1: the framing is ambiguous; behind a proxy it opens request smuggling).
- A method a route does not declare gets 405 with `Allow` and a JSON body; an unknown path a JSON
  404. The routes are the streaming handlers' paths (POST only) and the Quart app's own url map.
- The Quart routes ignore bodies, but the body is read (up to a small cap) before
  they answer. Hypercorn recycles a keep-alive connection only when both sides are done; a reply
  sent while the body is still arriving (head and body in two writes, as curl and urllib3 send
  them) races with that body, and the connection could stop answering. Read first, and that race
  is gone.
- Every body is read within a deadline (`body_deadline_s`): a client that stalls gets 408 and a
  closed connection, and its slot back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
import trio
from quart_trio import QuartTrio
from werkzeug.exceptions import MethodNotAllowed, NotFound

from pipeline.config import Config

_json = msgspec.json.Encoder()
Handler = Callable[..., Awaitable[None]]
SMALL_BODY_BYTES = 64 * 1024  # what a route that ignores bodies reads before answering
CLOSE = {"Connection": "close"}

Answer = tuple[int, dict[str, Any], dict[str, str]]


def body_deadline_s(config: Config, expected_bytes: int | None) -> float:
    """Time allowed to receive a body: a base plus its size at the minimum data rate (a chunked
    body counts as the largest allowed). Plain function."""
    size = config.max_body_bytes if expected_bytes is None else expected_bytes
    return config.request_timeout_ms / 1000 + size / max(1, config.min_request_bytes_per_s)


def framing_error(headers: list[tuple[bytes, bytes]]) -> Answer | None:
    """400 for ambiguous framing (both Transfer-Encoding and Content-Length), else None."""
    names = {name.lower() for name, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        detail = "Transfer-Encoding and Content-Length together (RFC 9112 §6.1)"
        return 400, {"error": "bad_request", "detail": detail}, CLOSE
    return None


def route_error(app: QuartTrio, method: str, path: str) -> Answer | None:
    """404 / 405 (with Allow) for what the app's routes do not declare, else None."""
    try:
        app.url_map.bind("").match(path, method=method)
    except NotFound:
        return 404, {"error": "not_found"}, {}
    except MethodNotAllowed as exc:
        return method_not_allowed(sorted(exc.valid_methods or ()))
    return None


def method_not_allowed(allowed: list[str]) -> Answer:
    return 405, {"error": "method_not_allowed", "allow": allowed}, {"Allow": ", ".join(allowed)}


async def send_answer(send: Callable, answer: Answer) -> None:
    status, body, headers = answer
    payload = _json.encode(body)
    raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def read_small_body(receive: Callable, cap: int) -> bytes | None:
    """A body of at most `cap` bytes, b"" for none; None when it is larger or the client left."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > cap:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def replay(body: bytes, receive: Callable) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI `receive` that gives the body already read, then what the server sends next."""
    replayed = False

    async def again() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def guard(config: Config, streaming: Mapping[str, Handler], routes: QuartTrio) -> Handler:
    """The ASGI app: checks the framing and the route, then a POST to a `streaming` path to its
    handler (which reads the body itself), and the rest, body read first, to `routes`."""

    async def asgi(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await routes(scope, receive, send)  # type: ignore[arg-type]  # an ASGI scope
            return
        if (problem := framing_error(scope["headers"])) is not None:
            await send_answer(send, problem)  # the body is not read: the connection closes
            return
        handler = streaming.get(scope["path"])
        if handler is not None and scope["method"] == "POST":
            await handler(scope, receive, send)
            return
        body = None
        with trio.move_on_after(body_deadline_s(config, SMALL_BODY_BYTES)) as reading:
            body = await read_small_body(receive, SMALL_BODY_BYTES)
        if reading.cancelled_caught:
            await send_answer(send, (408, {"error": "request_timeout"}, CLOSE))
        elif body is None:
            await send_answer(send, (413, {"error": "payload_too_large", "limit": SMALL_BODY_BYTES}, CLOSE))
        elif handler is not None:  # a streaming path takes POST only
            await send_answer(send, method_not_allowed(["POST"]))
        elif (problem := route_error(routes, scope["method"], scope["path"])) is not None:
            await send_answer(send, problem)  # the body was read: the connection is kept
        else:
            await routes(scope, replay(body, receive), send)  # type: ignore[arg-type]  # an ASGI scope

    return asgi
