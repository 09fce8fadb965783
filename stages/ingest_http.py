"""POST /ingest as a plain ASGI handler (`IngestHandler`), and the answers it shares with /v1/traces.

The handler runs the cheap checks itself, in the order SPEC §1 fixes (draining → auth → media type →
size from Content-Length → rate limit), reads the body under its cap and deadline, and hands the
batch to the validate stage as a `Job`. It then waits for the job's answer: a `Rejected` from a
stage, the writer's `AppendReply` (202 once the batch is in the spool), or None (the writer link
broke: 503). `stages.otlp_front.OtlpHandler` is the same handler with OTLP's media types and
answers. Quart's request machinery is skipped on this path (docs/PERFORMANCE.md).

Resource handling: the handler sends into channels it does not own: the topology owns them and
closes them once the server has answered every request in flight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from pipeline import metrics
from pipeline.config import Config
from pipeline.controlplane import ApiKey, ControlPlane, parse_key_header
from pipeline.drain import DrainState
from pipeline.errors import ControlPlaneUnavailable
from pipeline.jobs import Job, Rejected
from pipeline.link import Call, call
from pipeline.messages import Admit, AdmitReply, AppendReply
from stages.decompress import ENCODINGS
from stages.http_guard import body_deadline_s

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
        self.ack_grace_s = config.ack_grace_ms / 1000
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

    def formats(self, headers: dict[str, str]) -> tuple[str | None, str | None]:
        """The job's media and encoding from the request headers; None: unsupported (415)."""
        return media_of(headers.get("content-type")), encoding_of(headers.get("content-encoding"))

    async def answer(self, scope: dict, receive: Callable, partial: Any = None) -> Answer:
        if self.state.draining:
            return 503, {"error": "draining"}, {"Connection": "close"}
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        raw_key = parse_key_header(headers.get("authorization"), headers.get("x-api-key"))
        try:
            key = self.controlplane.authenticate(raw_key) if raw_key else None
        except ControlPlaneUnavailable:  # the key may be valid: retry later, here or on another node
            return 503, {"error": "overloaded"}, {"Retry-After": "1", "Connection": "close"}
        if key is None:  # the body is not read: close (see stages/http_guard.py)
            return 401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer", "Connection": "close"}
        media, encoding = self.formats(headers)
        if media is None or encoding is None:
            return 415, {"error": "unsupported_media_type"}, {"Connection": "close"}
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
                return 429, {"error": "rate_limited"}, {"Retry-After": str(admit.retry_after_s), **limit_headers,
                                                        "Connection": "close"}  # fmt: skip
            return await self.accept(receive, key, media, encoding, limit_headers, expected, partial)
        finally:
            self.in_flight -= 1

    async def accept(self, receive: Callable, key: ApiKey, media: str, encoding: str,
                     limit_headers: dict[str, str], expected: int | None, partial: Any = None) -> Answer:  # fmt: skip
        """Read the body and follow the job through the stages to its answer."""
        limit = self.config.max_body_bytes
        body = None
        with trio.move_on_after(body_deadline_s(self.config, expected)) as reading:
            body = await read_capped(receive, limit, expected)
        if reading.cancelled_caught:  # a stalled client: its slot back, the connection closed
            return 408, {"error": "request_timeout"}, {"Connection": "close"}
        if body is None:
            return too_large(limit)
        reply_send, reply_receive = trio.open_memory_channel[Any](1)
        # The writer drops the batch unwritten once `deadline` has passed; the grace after it lets
        # the answer of a batch spooled just before it arrive. So a 503 here means "not stored"
        # (README, "What a 503 means for a retry").
        deadline = time.monotonic() + self.ack_timeout_s
        job = Job(key.org_id, key.id, key.monthly_span_quota, media, encoding, body, reply_send, partial=partial,
                  deadline=deadline)  # fmt: skip
        with reply_receive:
            with trio.move_on_after(self.enqueue_timeout_s) as enqueue:
                await self.validate_send.send(job)
            if enqueue.cancelled_caught:
                return overloaded()
            with trio.move_on_after(deadline + self.ack_grace_s - time.monotonic()):
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
