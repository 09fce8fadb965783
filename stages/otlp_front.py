"""`POST /v1/traces` (OTLP/HTTP, OTLP.md §1) as a plain ASGI handler beside `/ingest`.

It is `IngestHandler` with two differences: the media types and encodings OTLP allows, and answers
encoded as OTLP wants (the request's encoding: `ExportTraceServiceResponse` on success, after the
spool's fsync; `google.rpc.Status` otherwise). The checks, their order, the job and the stages
are the same; the validate stage dispatches on the job's media (`stages.otlp.check_otlp`).
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline import metrics
from stages.decompress import OTLP_ENCODINGS
from stages.ingest_http import IngestHandler
from stages.otlp import Partial
from stages.otlp_answer import CONTENT_TYPES, answer_media, error_message, otlp_media_of, status, success


class OtlpHandler(IngestHandler):
    def formats(self, headers: dict[str, str]) -> tuple[str | None, str | None]:
        encoding = (headers.get("content-encoding") or "identity").strip().lower() or "identity"
        return otlp_media_of(headers.get("content-type")), encoding if encoding in OTLP_ENCODINGS else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        media = answer_media(_header(scope, b"content-type"))
        partial = Partial()
        code, body, headers = await self.answer(scope, receive, partial)
        if code == 202:
            metrics.spans_accepted.inc(body["accepted"])
            if partial.rejected:
                metrics.spans_rejected.labels("invalid_span").inc(partial.rejected)
            code, payload = 200, success(media, partial.rejected, partial.message)
        else:
            payload = status(media, code, error_message(body))
        metrics.requests.labels(str(code), body.get("error", "")).inc()
        await _send(send, code, media, payload, headers)


def not_traces_answer(path: str, content_type: str | None) -> tuple[int, bytes, str]:
    """`/v1/metrics` and `/v1/logs`: a clear 404 (status, body, content type) in the request's
    encoding, never a parse error."""
    media = answer_media(content_type)
    signal = path.rsplit("/", 1)[-1]
    message = f"this node accepts OTLP traces only (POST /v1/traces), not {signal}"
    return 404, status(media, 404, message), CONTENT_TYPES[media]


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send(send: Callable, code: int, media: str, payload: bytes, headers: dict[str, str]) -> None:
    raw_headers = [(b"content-type", CONTENT_TYPES[media].encode()), (b"content-length", b"%d" % len(payload))]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": code, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
