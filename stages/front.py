"""The HTTP front stage: Quart-Trio on Hypercorn, one per front worker process.

`POST /ingest` runs the cheap checks itself, in the order SPEC §1 fixes (draining → auth → media
type → size from Content-Length → rate limit), reads the body under its cap, and hands the
batch to the validate stage as a `Job`. It then waits for the job's answer: a `Rejected` from a
stage, the writer's `AppendReply` (202 once the batch is in the spool), or None (the writer link
broke: 503).

Resource handling: `run_front` owns the validate channel's send end and the link's send end;
when Hypercorn has finished every request in flight it closes both, so end of input flows down
the pipeline. The listening socket belongs to the supervisor; this worker serves it through an
inherited file descriptor.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_trio import QuartTrio

from pipeline import metrics
from pipeline.config import Config
from pipeline.controlplane import ControlPlane, parse_key_header
from pipeline.drain import DrainState
from pipeline.jobs import Job, Rejected
from pipeline.link import Call, call
from pipeline.log import get_logger
from pipeline.messages import Admit, AdmitReply, AppendReply
from stages.decompress import ENCODINGS
from stages.openapi import openapi_document

log = get_logger("front")
_json = msgspec.json.Encoder()

MEDIA_TYPES = {"application/json": "json", "application/msgpack": "msgpack",
               "application/x-msgpack": "msgpack", "application/vnd.msgpack": "msgpack"}  # fmt: skip


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_json.encode(body), status=status, headers=headers or {},
                    content_type="application/json")  # fmt: skip


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


def rejection_response(rejected: Rejected) -> Response:
    headers = {"Connection": "close"} if rejected.status == 413 else {}
    return json_response(rejected.status, rejected.body, headers)


def overloaded(retry_after_s: int = 1) -> Response:
    return json_response(503, {"error": "overloaded"}, {"Retry-After": str(max(1, retry_after_s))})


def rate_limit_headers(admit: AdmitReply) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": f"{admit.limit:g}",
        "X-RateLimit-Remaining": str(admit.remaining),
        "X-RateLimit-Reset": str(math.ceil(admit.reset_s)),
    }


async def read_capped(body: Any, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit` bytes (a chunked body is cut off there)."""
    chunks = bytearray()
    async for chunk in body:
        chunks += chunk
        if len(chunks) > limit:
            return None
    return bytes(chunks)


def create_app(
    config: Config,
    controlplane: ControlPlane,
    state: DrainState,
    validate_send: trio.MemorySendChannel[Job],
    link_send: trio.MemorySendChannel[Call],
    readiness: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
) -> QuartTrio:
    app = QuartTrio("foglamp")
    app.config["MAX_CONTENT_LENGTH"] = None  # the handler caps bodies itself, with SPEC's 413 body
    enqueue_timeout_s = config.enqueue_timeout_ms / 1000
    ack_timeout_s = config.ack_timeout_ms / 1000

    @app.post("/ingest")
    async def ingest() -> Response:
        response = await handle_ingest()
        await count_response(response)
        return response

    async def handle_ingest() -> Response:
        if state.draining:
            return json_response(503, {"error": "draining"}, {"Connection": "close"})
        headers = request.headers
        raw_key = parse_key_header(headers.get("Authorization"), headers.get("X-API-Key"))
        key = controlplane.authenticate(raw_key) if raw_key else None
        if key is None:
            return json_response(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
        media, encoding = media_of(headers.get("Content-Type")), encoding_of(headers.get("Content-Encoding"))
        if media is None or encoding is None:
            return json_response(415, {"error": "unsupported_media_type"})
        declared = request.content_length
        if declared is not None and declared > config.max_body_bytes:
            return json_response(413, {"error": "payload_too_large", "limit": config.max_body_bytes},
                             {"Connection": "close"})  # fmt: skip
        rate = key.rate_limit_rps or config.rate_limit_rps
        admit = await call(link_send, Admit(0, key.id, rate), timeout_s=ack_timeout_s)
        if not isinstance(admit, AdmitReply):
            return overloaded()
        limit_headers = rate_limit_headers(admit)
        if not admit.allowed:
            return json_response(429, {"error": "rate_limited"},
                                 {"Retry-After": str(admit.retry_after_s), **limit_headers})  # fmt: skip
        body = await read_capped(request.body, config.max_body_bytes)
        if body is None:
            return json_response(413, {"error": "payload_too_large", "limit": config.max_body_bytes},
                             {"Connection": "close"})  # fmt: skip
        reply_send, reply_receive = trio.open_memory_channel[Any](1)
        job = Job(key.org_id, key.id, key.monthly_span_quota, media, encoding, body, reply_send)
        with reply_receive:
            with trio.move_on_after(enqueue_timeout_s) as enqueue:
                await validate_send.send(job)
            if enqueue.cancelled_caught:
                return overloaded()
            with trio.move_on_after(ack_timeout_s):
                outcome = await reply_receive.receive()
                return _respond(outcome, limit_headers)
        return overloaded()

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response(200, {"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if state.draining:
            return json_response(503, {"status": "draining"})
        status, body = await readiness()
        return json_response(status, body)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), status=200, content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(200, openapi_document())

    return app


async def count_response(response: Response) -> None:
    """Requests by status and error code; spans accepted (one update per request)."""
    body = msgspec.json.decode(await response.get_data())
    if response.status_code == 202:
        metrics.spans_accepted.inc(body["accepted"])
    metrics.requests.labels(str(response.status_code), body.get("error", "")).inc()


def _respond(outcome: Any, limit_headers: dict[str, str]) -> Response:
    if isinstance(outcome, Rejected):
        return rejection_response(outcome)
    if isinstance(outcome, AppendReply):
        if outcome.status == "ok":
            return json_response(202, {"accepted": outcome.spans}, limit_headers)
        metrics.spans_rejected.labels(outcome.status).inc(outcome.spans)
        if outcome.status == "quota_exceeded":
            return json_response(429, {"error": "quota_exceeded"}, limit_headers)
        if outcome.status == "draining":
            return json_response(503, {"error": "draining"}, {"Connection": "close"})
        return overloaded(outcome.retry_after_s)
    return overloaded()


async def run_front(
    config: Config,
    app: QuartTrio,
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
    await serve(app, hconfig, shutdown_trigger=shutdown_trigger, task_status=task_status)
