"""The HTTP front stage: one per front worker process, on Hypercorn.

`POST /ingest`, the hot path, is a plain ASGI handler (`IngestHandler`): it runs the cheap checks
itself, in the order SPEC §1 fixes (draining → auth → media type → size from Content-Length →
rate limit), reads the body under its cap, and hands the batch to the validate stage as a `Job`.
It then waits for the job's answer: a `Rejected` from a stage, the writer's `AppendReply` (202
once the batch is in the spool), or None (the writer link broke: 503). Everything else
(`/healthz`, `/readyz`, `/metrics`, `/openapi.json`) is a Quart-Trio app. Measured here, Quart's
request machinery costs about as much per request as decoding and pricing a 100-span batch, so
the one route that carries the load skips it (bench/ measures both).

Resource handling: `run_front` owns nothing but the Hypercorn server; the topology owns the
channel ends the handler sends into and closes them once `run_front` returns (every request in
flight answered). The listening socket belongs to the supervisor; this worker serves it through
an inherited file descriptor.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.trio import tcp_server as hypercorn_tcp
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response
from quart_trio import QuartTrio

from pipeline import metrics
from pipeline.config import Config
from pipeline.controlplane import ApiKey, ControlPlane, parse_key_header
from pipeline.controlplane_pg import ControlPlaneUnavailable
from pipeline.drain import DrainState
from pipeline.jobs import Job, Rejected
from pipeline.link import Call, call
from pipeline.messages import Admit, AdmitReply, AppendReply
from stages.decompress import ENCODINGS
from stages.openapi import openapi_document

_json = msgspec.json.Encoder()
MEDIA_TYPES = {"application/json": "json", "application/msgpack": "msgpack",
               "application/x-msgpack": "msgpack", "application/vnd.msgpack": "msgpack"}  # fmt: skip

# An answer before it is encoded: (status, JSON body, extra headers). Plain data, easy to test.
Answer = tuple[int, dict[str, Any], dict[str, str]]


def media_of(content_type: str | None) -> str | None:
    """`application/json; charset=utf-8` → "json"; None when unsupported."""
    if not content_type:
        return None
    main, _, params = content_type.partition(";")
    media = MEDIA_TYPES.get(main.strip().lower())
    if media == "json" and "charset" in params.lower():
        charset = params.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"')
        if charset not in ("utf-8", "utf8"):
            return None
    return media


def encoding_of(content_encoding: str | None) -> str | None:
    value = (content_encoding or "identity").strip().lower() or "identity"
    return value if value in ENCODINGS else None


def overloaded(retry_after_s: int = 1) -> Answer:
    return 503, {"error": "overloaded"}, {"Retry-After": str(max(1, retry_after_s))}


def shed() -> Answer:
    """503 overloaded before the body is read: the connection is closed rather than kept, so the
    server does not read and drop the body, and an overloaded worker holds fewer connections."""
    status, body, headers = overloaded()
    return status, body, {**headers, "Connection": "close"}


def too_large(limit: int) -> Answer:
    return 413, {"error": "payload_too_large", "limit": limit}, {"Connection": "close"}


def rate_limit_headers(admit: AdmitReply) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": f"{admit.limit:g}",
        "X-RateLimit-Remaining": str(admit.remaining),
        "X-RateLimit-Reset": str(math.ceil(admit.reset_s)),
    }


def outcome_answer(outcome: Any, limit_headers: dict[str, str]) -> Answer:
    """What the stages or the writer decided, as an HTTP answer."""
    if isinstance(outcome, Rejected):
        return outcome.status, outcome.body, {"Connection": "close"} if outcome.status == 413 else {}
    if isinstance(outcome, AppendReply):
        if outcome.status == "ok":
            return 202, {"accepted": outcome.spans}, limit_headers
        metrics.spans_rejected.labels(outcome.status).inc(outcome.spans)
        if outcome.status == "quota_exceeded":
            return 429, {"error": "quota_exceeded"}, limit_headers
        if outcome.status == "draining":
            return 503, {"error": "draining"}, {"Connection": "close"}
        return overloaded(outcome.retry_after_s)
    return overloaded()


class IngestHandler:
    """POST /ingest as a plain ASGI handler. Request handlers never write to the writer link
    themselves: they put calls and jobs into bounded channels (see `pipeline.link`)."""

    def __init__(
        self,
        config: Config,
        controlplane: ControlPlane,
        state: DrainState,
        validate_send: trio.MemorySendChannel[Job],
        link_send: trio.MemorySendChannel[Call],
    ) -> None:
        self.config = config
        self.controlplane = controlplane
        self.state = state
        self.validate_send = validate_send
        self.link_send = link_send
        self.enqueue_timeout_s = config.enqueue_timeout_ms / 1000
        self.ack_timeout_s = config.ack_timeout_ms / 1000
        self.in_flight = 0  # requests past the header checks, waiting for admission or holding a body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        status, body, headers = await self.answer(scope, receive)
        metrics.requests.labels(str(status), body.get("error", "")).inc()
        if status == 202:
            metrics.spans_accepted.inc(body["accepted"])
        payload = _json.encode(body)
        # A Content-Length (not chunked encoding): fewer writes for the server, less to parse for the client.
        raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})

    async def answer(self, scope: dict, receive: Callable) -> Answer:
        if self.state.draining:
            return 503, {"error": "draining"}, {"Connection": "close"}
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        raw_key = parse_key_header(headers.get("authorization"), headers.get("x-api-key"))
        try:
            key = self.controlplane.authenticate(raw_key) if raw_key else None
        except ControlPlaneUnavailable:  # the key may be valid: retry here later, or elsewhere
            return 503, {"error": "unavailable"}, {"Retry-After": "1"}
        if key is None:
            return 401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"}
        media, encoding = media_of(headers.get("content-type")), encoding_of(headers.get("content-encoding"))
        if media is None or encoding is None:
            return 415, {"error": "unsupported_media_type"}, {}
        limit = self.config.max_body_bytes
        declared = headers.get("content-length", "")
        expected = int(declared) if declared.isdigit() else None  # None: chunked
        if expected is not None and expected > limit:
            return too_large(limit)
        # Shed load before asking the writer or reading the body: while a request waits, the
        # server buffers its body, so the in-flight cap is what bounds a worker's memory.
        if self.in_flight >= self.config.max_inflight_requests:
            return shed()
        self.in_flight += 1
        try:
            rate = key.rate_limit_rps or self.config.rate_limit_rps
            admit = await call(self.link_send, Admit(0, key.id, rate), timeout_s=self.ack_timeout_s)
            if not isinstance(admit, AdmitReply):
                return shed()
            limit_headers = rate_limit_headers(admit)
            if not admit.allowed:
                return 429, {"error": "rate_limited"}, {"Retry-After": str(admit.retry_after_s), **limit_headers}
            return await self.accept(receive, key, media, encoding, limit_headers, expected)
        finally:
            self.in_flight -= 1

    async def accept(self, receive: Callable, key: ApiKey, media: str, encoding: str,
                     limit_headers: dict[str, str], expected: int | None) -> Answer:  # fmt: skip
        """Read the body and follow the job through the stages to its answer."""
        limit = self.config.max_body_bytes
        body = await read_capped(receive, limit, expected)
        if body is None:
            return too_large(limit)
        reply_send, reply_receive = trio.open_memory_channel[Any](1)
        job = Job(key.org_id, key.id, key.monthly_span_quota, media, encoding, body, reply_send)
        with reply_receive:
            with trio.move_on_after(self.enqueue_timeout_s) as enqueue:
                await self.validate_send.send(job)
            if enqueue.cancelled_caught:
                return overloaded()
            with trio.move_on_after(self.ack_timeout_s):
                return outcome_answer(await reply_receive.receive(), limit_headers)
        return overloaded()


async def read_capped(receive: Callable, limit: int, expected: int | None = None) -> bytearray | None:
    """The request body, or None once it passes `limit` bytes (a chunked body is cut off there,
    without reading the rest) or the client is gone. With a Content-Length (`expected`, at most
    `limit`) the body is read into one buffer of that size: no growing, no final copy."""
    body = bytearray(expected or 0)
    cap = limit if expected is None else expected  # the server enforces Content-Length; never trust it blindly
    got = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client is gone
            return None
        chunk = message.get("body", b"")
        if got + len(chunk) > cap:
            return None
        body[got : got + len(chunk)] = chunk  # in place when preallocated, else appended
        got += len(chunk)
        if not message.get("more_body", False):
            return body if expected is None or got == expected else None


def create_app(
    config: Config,
    controlplane: ControlPlane,
    state: DrainState,
    validate_send: trio.MemorySendChannel[Job],
    link_send: trio.MemorySendChannel[Call],
    readiness: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
) -> Callable[..., Awaitable[None]]:
    """The worker's ASGI app: POST /ingest to `IngestHandler`, everything else to Quart."""
    ingest = IngestHandler(config, controlplane, state, validate_send, link_send)
    app = QuartTrio("foglamp")

    def json_response(status: int, body: Any) -> Response:
        return Response(_json.encode(body), status=status, content_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response(200, {"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if state.draining:
            return json_response(503, {"status": "draining"})
        return json_response(*await readiness())

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), status=200, content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(200, openapi_document())

    async def asgi(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] == "/ingest" and scope["method"] == "POST":
            await ingest(scope, receive, send)
        else:
            await app(scope, receive, send)

    return asgi


async def run_front(
    config: Config,
    app: Callable[..., Awaitable[None]],
    listen_fd: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on the inherited socket until `shutdown_trigger` returns and every request in
    flight has been answered (bounded by the drain timeout)."""
    hconfig = HypercornConfig()
    hconfig.bind = [f"fd://{listen_fd}"]
    hconfig.graceful_timeout = config.drain_timeout_s
    hconfig.keep_alive_timeout = 75.0
    hconfig.backlog = 2048
    hconfig.accesslog = None
    hconfig.errorlog = None
    set_read_size(config.http_read_bytes)
    await serve(app, hconfig, shutdown_trigger=shutdown_trigger, task_status=task_status, mode="asgi")


def set_read_size(nbytes: int) -> None:
    """Hypercorn's largest socket read (INGEST_HTTP_READ_BYTES). Its config has no such option:
    the module reads this constant at every receive, so setting it here, before serving, is enough.
    Measured: 100-span bodies came in ~5 reads of ~42 KB at 64 KiB, ~3 at 128 KiB, and the fronts
    spent ~8 % less CPU per span (docs/PERFORMANCE.md)."""
    hypercorn_tcp.MAX_RECV = nbytes
