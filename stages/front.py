"""The HTTP front stage: one per front worker process, on Hypercorn.

`create_app` assembles the worker's ASGI app: `stages.http_guard` first (framing, 404/405, body
deadlines), then the two streaming handlers that carry the load, POST /ingest
(`stages.ingest_http.IngestHandler`) and POST /v1/traces (`stages.otlp_front.OtlpHandler`), and a
Quart-Trio app for everything else (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`,
OTLP's `/v1/metrics` and `/v1/logs`).

Resource handling: `run_front` owns nothing but the Hypercorn server; the topology owns the
channel ends the handlers send into and closes them once `run_front` returns (every request in
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
from quart import Response, request
from quart_trio import QuartTrio

from pipeline import metrics
from pipeline.config import Config
from pipeline.controlplane import ControlPlane
from pipeline.disk import low_disk_reason
from pipeline.drain import DrainState
from pipeline.jobs import Job
from pipeline.link import Call
from stages.docs_page import install_docs
from stages.http_guard import guard
from stages.ingest_http import IngestHandler
from stages.openapi import openapi_document
from stages.otlp_front import OtlpHandler, not_traces_answer

_json = msgspec.json.Encoder()


def create_app(
    config: Config,
    controlplane: ControlPlane,
    state: DrainState,
    validate_send: trio.MemorySendChannel[Job],
    link_send: trio.MemorySendChannel[Call],
    readiness: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
) -> Callable[..., Awaitable[None]]:
    """The worker's ASGI app (see the module docstring)."""
    ingest = IngestHandler(config, controlplane, state, validate_send, link_send)
    otlp = OtlpHandler(config, controlplane, state, validate_send, link_send)
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
        if reason := low_disk_reason(config.data_dir, config.min_free_disk_bytes):
            return json_response(503, {"status": "degraded", "disk": reason})
        return json_response(*await readiness())

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), status=200, content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(200, openapi_document())

    install_docs(app)  # GET /docs: the API reference and playground

    @app.post("/v1/metrics")
    @app.post("/v1/logs")
    async def not_traces() -> Response:
        """OTLP metrics and logs: a clear 404 in the request's encoding, never a parse error."""
        status, payload, content_type = not_traces_answer(request.path, request.headers.get("content-type"))
        return Response(payload, status=status, content_type=content_type)

    return guard(config, {"/ingest": ingest, "/v1/traces": otlp}, app)


async def run_front(
    config: Config,
    app: Callable[..., Awaitable[None]],
    listen_fd: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on the inherited socket until `shutdown_trigger` returns and every request in
    flight has been answered (bounded by the drain timeout)."""
    hconfig = HypercornConfig()
    hconfig.bind = [f"fd://{listen_fd}"]
    hconfig.graceful_timeout = config.drain_timeout_s
    hconfig.keep_alive_timeout = config.keep_alive_timeout_s
    # A connection silent for longer than an idle keep-alive or a request may last is dropped: a
    # stalled head too (a stalled body gets 408 from the app first, see stages/http_guard.py).
    hconfig.read_timeout = math.ceil(max(config.keep_alive_timeout_s, config.request_timeout_ms / 1000))
    hconfig.backlog = config.http_backlog
    hconfig.accesslog = None
    hconfig.errorlog = None
    set_read_size(config.http_read_bytes)
    await serve(app, hconfig, shutdown_trigger=shutdown_trigger, task_status=task_status, mode="asgi")


def set_read_size(nbytes: int) -> None:
    """Hypercorn's largest socket read (INGEST_HTTP_READ_BYTES). Its config has no such option:
    the module reads this constant at every receive, so setting it here, before serving, is enough.
    Fewer, larger reads cost the fronts less CPU per span (docs/PERFORMANCE.md, "HTTP read size")."""
    hypercorn_tcp.MAX_RECV = nbytes
