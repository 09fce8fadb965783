"""`run.py loadtest`: drive a node's POST /ingest with realistic batches and report (SPEC §5).

    python run.py loadtest --duration 10 --concurrency 32 --spans-per-request 100 [--rate 500]

Who owns what:
    `run_load` builds a `BodyPool` (node/loadgen.py) up front, then runs `concurrency` worker
    tasks, each owning one keep-alive `Connection` (bench/httpclient.py). A shared `_Plan` hands
    out request numbers (the body's ids derive from it) and, with `--rate`, their scheduled send
    times: open loop, R requests/s at fixed intervals whatever the replies, and latency counted
    from the scheduled time so a slow node cannot hide its queueing (no coordinated omission).
    Without `--rate` each worker sends its next request when the previous one is answered.

The client contract (SPEC §1):
    202 counts `accepted` spans. 429 `rate_limited` and 503 `overloaded`/`draining` are retried
    with the same body after `Retry-After` (1 s when absent). A transport error is retried with
    capped exponential backoff. 429 `quota_exceeded` and 401 end the run: nothing more can be
    accepted. Any other status is counted, not retried.

Bounds:
    No request starts after `duration_s`; a retry that would is abandoned (counted). Requests in
    flight at the end get `GRACE_S` to finish, so spans the node accepted are counted as accepted
    (a benchmark compares them with the rows stored); then the run is cut.

Latency is that of the attempt that got the 202, from its send (or, open loop, its scheduled)
time; the percentiles come from a log histogram with 1 % resolution.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import random
import sys
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from node.httpclient import Connection, Response, TransportError, request_head
from node.loadgen import BodyPool
from pipeline.errors import FoglampError

if TYPE_CHECKING:
    from pipeline.config import Config

POOL_SIZE = 64
POOL_BUDGET_BYTES = 256 * 1024 * 1024  # about 2.5 KB per span
GRACE_S = 5.0
REQUEST_TIMEOUT_S = 30.0
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 2.0
SUCCESS = {"202", "200"}  # /ingest, /v1/traces
RETRIED = {"429:rate_limited", "503:overloaded", "503:draining"}
TERMINAL = {"429:quota_exceeded": "quota_exceeded", "401:unauthorized": "unauthorized"}


def parse_target(url: str, endpoint: str = "/ingest") -> tuple[str, int, str, str]:
    """(host, port, path, Host header) of `url`; ValueError unless it is http on loopback."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"refusing a non-loopback host {host!r}: 127.0.0.0/8, localhost or ::1")
    port = parts.port or 80
    path = parts.path.rstrip("/")
    path = path if path.endswith(endpoint) else path + endpoint
    return host, port, path, (f"[{host}]" if ":" in host else host) + f":{port}"


class Histogram:
    """Latencies in buckets 1 % wide (from 1 µs): constant memory, percentiles within 1 %."""

    STEP = math.log(1.01)

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.n, self.max_s = 0, 0.0

    def record(self, seconds: float) -> None:
        self.counts[int(math.log(max(seconds, 1e-6) * 1e6) / self.STEP)] += 1
        self.n += 1
        self.max_s = max(self.max_s, seconds)

    def percentile_ms(self, p: float) -> float:
        if not self.n:
            return 0.0
        rank, seen = math.ceil(p / 100 * self.n), 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(math.exp((bucket + 1) * self.STEP) / 1e3, self.max_s * 1e3)
        return self.max_s * 1e3


class _Stats:
    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.latency = Histogram()
        self.requests = self.spans_accepted = self.retries = 0
        self.transport_errors = self.abandoned = self.in_flight = 0


class _Plan:
    """Hands out request numbers (and, open loop, send times) until the run is over."""

    def __init__(self, start: float, duration_s: float, rate: float | None, max_requests: int | None) -> None:
        self.start, self.deadline = start, start + duration_s
        self.rate, self.max_requests = rate, max_requests
        self.next_seq = 0
        self.stop_reason = ""
        self.stopped = trio.Event()

    def stop(self, reason: str) -> None:
        """End the run now: no new request, no retry (quota used up, key refused)."""
        if not self.stopped.is_set():
            self.stopped.set()
            self.stop_reason = reason

    def take(self) -> tuple[int, float] | None:
        """(seq, scheduled send time) of the next request, or None: no more to send. Requests
        already taken (in flight, or waiting for their slot) go on."""
        now = trio.current_time()
        at = now if self.rate is None else self.start + self.next_seq / self.rate
        if self.max_requests is not None and self.next_seq >= self.max_requests:
            self.stop_reason = self.stop_reason or "max_requests"
        elif max(now, at) >= self.deadline:
            self.stop_reason = self.stop_reason or "duration"
        if self.stop_reason:
            return None
        self.next_seq += 1
        return self.next_seq - 1, at

    async def wait_until(self, when: float) -> bool:
        """Sleep until `when`, or until the run ends if that comes first: False then."""
        with trio.move_on_at(min(when, self.deadline)):
            await self.stopped.wait()
        return when < self.deadline and not self.stopped.is_set()


def outcome(reply: Response) -> str:
    """Status key: "202", "429:rate_limited", ... ("<status>" when the body has no error code).
    OTLP answers (a google.rpc.Status body) get the same keys from their status and headers."""
    if reply.headers.get("content-type") == "application/x-protobuf" and reply.status != 200:
        if reply.status == 429:
            return "429:rate_limited" if "retry-after" in reply.headers else "429:quota_exceeded"
        return {503: "503:overloaded", 401: "401:unauthorized"}.get(reply.status, str(reply.status))
    if reply.status not in (200, 202):
        try:
            code = json.loads(reply.body).get("error")
        except (ValueError, AttributeError):
            code = None
        if isinstance(code, str):
            return f"{reply.status}:{code}"
    return str(reply.status)


def retry_after_s(reply: Response) -> float:
    try:
        return max(0.0, float(reply.headers["retry-after"]))
    except (KeyError, ValueError):
        return 1.0


async def _send(conn: Connection, head: bytes, body: bytes, spans: int, at: float, plan: _Plan, stats: _Stats) -> None:
    """One logical request: send until it gets a final answer, or the run ends."""
    failures = 0
    while True:
        stats.in_flight += 1
        try:
            reply = await conn.request(head, body)
        except TransportError:
            stats.in_flight -= 1
            stats.transport_errors += 1
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**failures) * random.uniform(0.5, 1)
            failures += 1
        else:
            stats.in_flight -= 1
            now = trio.current_time()
            key = outcome(reply)
            stats.requests += 1
            stats.statuses[key] += 1
            if key in SUCCESS:
                stats.latency.record(now - at)
                stats.spans_accepted += _accepted(reply, spans)
                return
            if key in TERMINAL:
                plan.stop(TERMINAL[key])
                return
            if key not in RETRIED:
                return
            delay = retry_after_s(reply) * random.uniform(1, 1.1)  # never earlier than asked
        if not await plan.wait_until(trio.current_time() + delay):
            stats.abandoned += 1
            return
        stats.retries += 1
        at = trio.current_time()


def _accepted(reply: Response, spans: int) -> int:
    if reply.status == 200:  # OTLP: ExportTraceServiceResponse, rejected spans in partial_success
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        return spans - ExportTraceServiceResponse.FromString(reply.body).partial_success.rejected_spans
    try:
        return int(json.loads(reply.body)["accepted"])
    except (ValueError, KeyError, TypeError):
        return spans


async def _worker(pool: BodyPool, conn: Connection, head: bytes, plan: _Plan, stats: _Stats) -> None:
    async with conn:
        while (job := plan.take()) is not None:
            seq, at = job
            if pool.needs_work(seq):
                body = await trio.to_thread.run_sync(pool.body, seq)
            else:
                body = pool.body(seq)
            if plan.rate is None:
                at = trio.current_time()
            elif not await plan.wait_until(at):
                stats.abandoned += 1
                break
            await _send(conn, head, body, pool.spans, at, plan, stats)


async def _progress(plan: _Plan, stats: _Stats) -> None:
    tty = sys.stderr.isatty()
    last_requests, last_spans, last_t = 0, 0, plan.start
    while True:
        await trio.sleep_until(last_t + 1.0)
        now = trio.current_time()
        dt = now - last_t
        counts = " ".join(f"{k}={v}" for k, v in sorted(stats.statuses.items()))
        line = (
            f"{now - plan.start:6.1f}s {(stats.requests - last_requests) / dt:8.0f} req/s "
            f"{(stats.spans_accepted - last_spans) / dt:10.0f} spans/s "
            f"p99 {stats.latency.percentile_ms(99):7.1f} ms  {counts}"
        )
        sys.stderr.write(("\r\x1b[K" + line) if tty else line + "\n")
        sys.stderr.flush()
        last_requests, last_spans, last_t = stats.requests, stats.spans_accepted, now


async def run_load(
    url: str,
    key: str,
    *,
    duration_s: float,
    concurrency: int,
    spans_per_request: int,
    rate: float | None,
    media: str = "json",
    encoding: str = "identity",
    max_requests: int | None = None,
    progress: bool = False,
    otlp: bool = False,
) -> dict:
    """Run one load test against `url` and return its summary (see `summarize`). `otlp`: OTLP
    protobuf bodies of the same spans to /v1/traces (node/otlp_pool.py) instead of v1 batches."""
    host, port, path, host_header = parse_target(url, "/v1/traces" if otlp else "/ingest")
    if not 0 < duration_s < math.inf or concurrency < 1 or (rate is not None and rate <= 0):
        raise ValueError("duration_s and rate must be > 0 and finite, concurrency >= 1")
    size = max(
        1,
        min(POOL_SIZE, POOL_BUDGET_BYTES // (2500 * spans_per_request), max_requests or POOL_SIZE),
    )
    if otlp:
        from node.otlp_pool import OtlpBodyPool

        pool: Any = await trio.to_thread.run_sync(partial(OtlpBodyPool, size, spans_per_request, encoding))
    else:
        pool = await trio.to_thread.run_sync(partial(BodyPool, size, spans_per_request, media, encoding))
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": pool.content_type,
        "User-Agent": "foglamp-loadtest/1",
    }
    if encoding != "identity":
        headers["Content-Encoding"] = encoding
    head = request_head("POST", path, host_header, headers)
    stats, plan = _Stats(), _Plan(trio.current_time(), duration_s, rate, max_requests)
    with trio.move_on_at(plan.deadline + GRACE_S):
        async with trio.open_nursery() as outer:
            if progress:
                outer.start_soon(_progress, plan, stats)
            async with trio.open_nursery() as workers:
                for _ in range(concurrency):
                    conn = Connection(host, port, timeout_s=REQUEST_TIMEOUT_S)
                    workers.start_soon(_worker, pool, conn, head, plan, stats)
            outer.cancel_scope.cancel()
    if progress:
        sys.stderr.write("\n" if sys.stderr.isatty() else "")
    plan.stop_reason = plan.stop_reason or "duration"
    stats.transport_errors += stats.in_flight  # cut off at the end of the grace period
    return summarize(stats, plan, trio.current_time() - plan.start, url)


def summarize(stats: _Stats, plan: _Plan, elapsed_s: float, url: str) -> dict[str, Any]:
    lat, elapsed_s = stats.latency, max(elapsed_s, 1e-9)
    return {
        "duration_s": round(elapsed_s, 3),
        "requests": stats.requests,
        "requests_per_s": round(stats.requests / elapsed_s, 1),
        "spans_accepted": stats.spans_accepted,
        "spans_per_s": round(stats.spans_accepted / elapsed_s, 1),
        "latency_ms": {name: round(lat.percentile_ms(p), 3) for name, p in (("p50", 50), ("p95", 95), ("p99", 99))}
        | {"max": round(lat.max_s * 1e3, 3)},
        "statuses": dict(sorted(stats.statuses.items())),
        "retries": stats.retries,
        "transport_errors": stats.transport_errors,
        "abandoned": stats.abandoned,
        "quota_exhausted": stats.statuses["429:quota_exceeded"] > 0,
        "stop_reason": plan.stop_reason,
        "url": url,
    }


def format_summary(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    return "\n".join(
        [
            f"loadtest {s['url']}  ({s['stop_reason']})",
            f"  duration         {s['duration_s']:.2f} s",
            f"  requests         {s['requests']}  ({s['requests_per_s']:.1f}/s)",
            f"  spans accepted   {s['spans_accepted']}  ({s['spans_per_s']:.1f}/s)",
            f"  latency of 202s  p50 {lat['p50']:.2f}  p95 {lat['p95']:.2f}  "
            + f"p99 {lat['p99']:.2f}  max {lat['max']:.2f} ms",
            "  statuses         " + ("  ".join(f"{k}={v}" for k, v in s["statuses"].items()) or "-"),
            f"  retries          {s['retries']}   transport errors {s['transport_errors']}   "
            + f"abandoned {s['abandoned']}",
            *(["  QUOTA EXHAUSTED: the org's monthly span quota is used up"] if s["quota_exhausted"] else []),
        ]
    )


def _create_key(config: Config) -> str:
    from pipeline.controlplane_sqlite import SqliteControlPlane

    with SqliteControlPlane.open(config.controlplane_db) as cp:
        org = cp.create_org(f"loadtest-{random.getrandbits(32):08x}")
        full_key, _ = cp.create_key(org.id, name="loadtest", rate_limit_rps=1_000_000.0)
    where = config.controlplane_db
    print(f"loadtest: created org {org.name} ({org.id}) and a key in {where}", file=sys.stderr)
    return full_key


def run(config: Config, args: argparse.Namespace) -> int:
    """`run.py loadtest`: 0 unless nothing could be sent at all, 2 for bad arguments."""
    url = args.url or f"http://127.0.0.1:{config.port}"
    try:
        parse_target(url)
        if args.duration <= 0 or args.concurrency < 1 or args.spans_per_request < 1:
            raise ValueError("--duration, --concurrency and --spans-per-request must be positive")
    except ValueError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    try:
        key = args.key or _create_key(config)
    except FoglampError as exc:
        print(f"loadtest: cannot create an org and key: {exc}", file=sys.stderr)
        return 2
    summary = trio.run(
        partial(
            run_load,
            url,
            key,
            duration_s=args.duration,
            concurrency=args.concurrency,
            spans_per_request=args.spans_per_request,
            rate=args.rate,
            media=args.format,
            encoding=args.encoding,
            max_requests=args.max_requests,
            progress=args.progress or sys.stderr.isatty(),
            otlp=args.otlp,
        )
    )
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0 if summary["requests"] else 1
