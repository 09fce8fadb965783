"""`node/loadtest.py`, its body pool and its HTTP client, end to end against a scripted server.

The server below (`ScriptedServer`) is a real HTTP/1.1 server on 127.0.0.1 (port 0) that answers
request number n with `script(n, request)`: a `Reply`, or `DROP` to close the connection without
answering. Timings use the real clock: the client talks to real sockets.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import msgspec
import pytest
import trio
import zstandard

from node import loadtest
from node.httpclient import Connection, TransportError, request_head
from node.loadgen import MODELS, BodyPool
from node.loadtest import parse_target, run_load
from node.loadtest_args import add_arguments
from pipeline.config import Config

DROP = "drop"


@dataclass(frozen=True)
class Reply:
    status: int = 202
    body: dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def render(self) -> bytes:
        body = json.dumps(self.body).encode()
        head = [f"HTTP/1.1 {self.status} X", "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    @property
    def closes(self) -> bool:
        return self.headers.get("Connection", "").lower() == "close"


@dataclass(frozen=True)
class Request:
    time: float
    headers: dict[str, str]
    body: bytes


Script = Callable[[int, Request], "Reply | str"]


def accept_all(n: int, request: Request) -> Reply:
    return Reply(202, {"accepted": 100})


class ScriptedServer:
    def __init__(self, script: Script = accept_all) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.connections = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = bytearray()
        while True:
            while (end := buf.find(b"\r\n\r\n")) < 0:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                buf += await stream.receive_some(65536)
            request = Request(trio.current_time(), headers, bytes(buf[:length]))
            del buf[:length]
            n = len(self.requests)
            self.requests.append(request)
            reply = self.script(n, request)
            if reply == DROP:
                return
            assert isinstance(reply, Reply)
            await stream.send_all(reply.render())
            if reply.closes:
                return


@contextmanager
def serve_in_thread(script: Script = accept_all) -> Iterator[ScriptedServer]:
    """The server on its own trio loop in a thread, for tests of `run()` (which calls trio.run)."""
    server, ready, loop = ScriptedServer(script), threading.Event(), {}

    async def main() -> None:
        with trio.CancelScope() as scope:
            loop["cancel"], loop["token"] = scope.cancel, trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield server
    finally:
        trio.from_thread.run_sync(loop["cancel"], trio_token=loop["token"])
        thread.join(10)


async def start(nursery: trio.Nursery, script: Script = accept_all) -> ScriptedServer:
    server = ScriptedServer(script)
    await nursery.start(server.serve)
    return server


def load(server: ScriptedServer, **kw: object) -> dict:
    options: dict = {"duration_s": 5.0, "concurrency": 1, "spans_per_request": 10, "rate": None}
    options.update(kw)
    return run_load(server.url, "fl_test", **options)  # type: ignore[return-value]


# ------------------------------------------------------------------------------- generated bodies
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
PROVIDERS = {model: provider for provider, model, *_ in MODELS}


def decode(body: bytes, media: str, encoding: str) -> dict:
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding == "zstd":
        body = zstandard.ZstdDecompressor().decompress(body)
    return msgspec.json.decode(body) if media == "json" else msgspec.msgpack.decode(body)


def _time(text: str) -> datetime:
    assert RFC3339_Z.match(text), text
    return datetime.fromisoformat(text)


def check_batch(batch: dict, spans: int) -> Counter[str]:
    """Assert `batch` has the SPEC §2 shape; return a count of what it holds."""
    seen: Counter[str] = Counter()
    assert batch["version"] == "v1" and 1 <= len(batch["traces"]) <= 1000
    assert sum(len(t["spans"]) for t in batch["traces"]) == spans
    for trace in batch["traces"]:
        assert 1 <= len(trace["id"]) <= 128 and len(trace["name"]) <= 512
        assert len(trace["userId"]) <= 256 and len(trace["sessionId"]) <= 256
        assert len(trace["environment"]) <= 64 and len(trace["tags"]) <= 50
        assert all(isinstance(v, str | int | float | bool) for v in trace["metadata"].values())
        ids = [s["id"] for s in trace["spans"]]
        assert len(set(ids)) == len(ids)
        root, *children = trace["spans"]
        assert root["parentId"] is None and root["kind"] in {"agent", "chain"}
        seen[root["kind"]] += 1
        for span in trace["spans"]:
            assert 1 <= len(span["id"]) <= 128 and 1 <= len(span["name"]) <= 512
            assert span["status"] in {"ok", "error"}
            assert datetime.now(UTC) >= _time(span["endTime"]) >= _time(span["startTime"])
            for io in ("input", "output"):
                assert 20 <= len(json.dumps(span[io])) <= 8000
            assert all(isinstance(v, str | int | float | bool) for v in span["attributes"].values())
        for span in children:
            assert span["parentId"] == root["id"] != span["id"]
            assert span["kind"] in {"llm", "tool", "retrieval"}
            assert _time(span["startTime"]) >= _time(root["startTime"])
            assert _time(span["endTime"]) <= _time(root["endTime"])
            seen[span["kind"]] += 1
            if span["kind"] != "llm":
                continue
            assert PROVIDERS[span["model"]] == span["provider"]
            seen[span["model"]] += 1
            usage = span["usage"]
            assert all(isinstance(v, int) and v >= 0 for v in usage.values())
            cached = usage.get("cacheReadTokens", 0) + usage.get("cacheWriteTokens", 0)
            assert cached <= usage["inputTokens"]
            assert usage.get("reasoningTokens", 0) <= usage["outputTokens"]
            seen["cached"] += cached > 0
            seen["reasoning"] += "reasoningTokens" in usage
            assert all({"role", "content"} <= set(m) for m in span["input"])
            assert span["output"]["role"] == "assistant"
    return seen


@pytest.mark.parametrize("media", ["json", "msgpack"])
def test_bodies_have_the_spec_shape(media: str) -> None:
    pool = BodyPool(8, 100, media, seed=1)
    seen: Counter[str] = Counter()
    for seq in range(8):
        seen += check_batch(decode(pool.body(seq), media, "identity"), 100)
    for kind in ("agent", "chain", "llm", "tool", "retrieval", "cached", "reasoning"):
        assert seen[kind] > 0, kind
    for model in ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-20241022", "gemini-1.5-pro"):
        assert seen[model] > 0, model
    assert 300 * 100 <= pool.nbytes / 8 <= 5000 * 100  # a few hundred bytes to a few KB a span


def test_a_big_request_keeps_to_1000_traces_per_batch() -> None:
    pool = BodyPool(1, 12_001, seed=2)
    batch = decode(pool.body(0), "json", "identity")
    assert len(batch["traces"]) <= 1000
    check_batch(batch, 12_001)


@pytest.mark.parametrize(("media", "encoding"), [("json", "identity"), ("msgpack", "gzip"), ("json", "zstd")])
def test_ids_stay_unique_over_reuses_of_the_pool(media: str, encoding: str) -> None:
    pool, other_run = BodyPool(3, 25, media, encoding), BodyPool(3, 25, media, encoding)
    traces, spans = set(), set()
    bodies = [pool.body(seq) for seq in range(3 * 4)] + [other_run.body(0)]  # 4 epochs, 2 runs
    for body in bodies:
        batch = decode(body, media, encoding)
        check_batch(batch, 25)
        for trace in batch["traces"]:
            assert trace["id"] not in traces
            traces.add(trace["id"])
            for span in trace["spans"]:
                assert span["id"] not in spans
                spans.add(span["id"])
    assert len(spans) == 25 * len(bodies)
    assert pool.needs_work(3) == (encoding == "zstd") and not pool.needs_work(2)


@pytest.mark.parametrize(("media", "encoding"), [("json", "identity"), ("msgpack", "gzip"), ("json", "zstd")])
def test_the_nodes_own_decoder_and_validator_accept_the_bodies(media: str, encoding: str) -> None:
    decompress = pytest.importorskip("stages.decompress").decompress
    validate = pytest.importorskip("stages.validate")
    pool = BodyPool(2, 100, media, encoding)
    for seq in (0, 1, 2, 3):
        raw = decompress(pool.body(seq), encoding, 64 << 20)
        assert raw == pool.raw(seq % 2, seq // 2)
        result = validate.decode_batch(raw, media)
        assert not isinstance(result, validate.InvalidBody | validate.InvalidPayload), result


# ------------------------------------------------------------------------------- the client
async def test_202s_are_counted(nursery: trio.Nursery) -> None:
    server = await start(nursery, lambda n, r: Reply(202, {"accepted": 10}))
    summary = await load(server, concurrency=4, max_requests=20)
    assert summary["requests"] == 20 and summary["statuses"] == {"202": 20}
    assert summary["spans_accepted"] == 200 and summary["stop_reason"] == "max_requests"
    assert summary["retries"] == summary["transport_errors"] == 0
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["max"]
    assert server.connections == 4  # keep-alive: one connection per worker
    first = server.requests[0].headers
    assert first["authorization"] == "Bearer fl_test"
    assert first["content-type"] == "application/json" and "content-encoding" not in first
    trace_ids = [t["id"] for r in server.requests for t in json.loads(r.body)["traces"]]
    assert len(trace_ids) == len(set(trace_ids))


async def test_msgpack_and_zstd_headers(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    await load(server, max_requests=3, media="msgpack", encoding="zstd")
    headers = server.requests[-1].headers
    assert headers["content-type"] == "application/msgpack"
    assert headers["content-encoding"] == "zstd"
    check_batch(decode(server.requests[-1].body, "msgpack", "zstd"), 10)


@pytest.mark.parametrize(
    "first",
    [
        Reply(429, {"error": "rate_limited"}, {"Retry-After": "1"}),
        Reply(503, {"error": "overloaded"}, {"Retry-After": "1"}),
        Reply(503, {"error": "draining"}, {"Connection": "close"}),  # no Retry-After: 1 s
    ],
)
async def test_retry_after_is_honoured(nursery: trio.Nursery, first: Reply) -> None:
    server = await start(nursery, lambda n, r: first if n == 0 else Reply(202, {"accepted": 10}))
    summary = await load(server, max_requests=1)
    key = f"{first.status}:{first.body['error']}"
    assert summary["statuses"] == {key: 1, "202": 1} and summary["retries"] == 1
    assert summary["spans_accepted"] == 10
    one, two = server.requests
    assert two.time - one.time >= 1.0
    assert two.body == one.body  # a retry re-sends the same ids
    assert server.connections == (2 if first.closes else 1)


async def test_quota_exceeded_ends_the_run(nursery: trio.Nursery) -> None:
    quota = Reply(429, {"error": "quota_exceeded"})
    server = await start(nursery, lambda n, r: Reply(202, {"accepted": 10}) if n < 5 else quota)
    t0 = trio.current_time()
    summary = await load(server, duration_s=10.0, concurrency=3)
    assert trio.current_time() - t0 < 2.0
    assert summary["quota_exhausted"] and summary["stop_reason"] == "quota_exceeded"
    assert summary["statuses"]["202"] == 5 and 1 <= summary["statuses"]["429:quota_exceeded"] <= 3
    assert summary["retries"] == 0 and summary["spans_accepted"] == 50


async def test_connection_close_replies_reconnect(nursery: trio.Nursery) -> None:
    def script(n: int, r: Request) -> Reply:
        return Reply(202, {"accepted": 10}, {"Connection": "close"} if n % 2 else {})

    server = await start(nursery, script)
    summary = await load(server, max_requests=10)
    assert summary["statuses"] == {"202": 10}
    assert summary["transport_errors"] == summary["retries"] == 0
    assert server.connections == 5


async def test_a_transport_error_is_retried(nursery: trio.Nursery) -> None:
    server = await start(nursery, lambda n, r: DROP if n < 2 else Reply(202, {"accepted": 10}))
    summary = await load(server, max_requests=1)
    assert summary["transport_errors"] == 2 and summary["retries"] == 2
    assert summary["statuses"] == {"202": 1}
    assert len({r.body for r in server.requests}) == 1  # the same body each time
    assert server.requests[2].time - server.requests[1].time >= 0.05  # backed off, growing


async def test_an_idle_connection_closed_by_the_server_is_not_an_error(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery)
    conn = Connection("127.0.0.1", server.port)
    head = request_head("POST", "/ingest", "x", {})
    assert (await conn.request(head, b"{}")).status == 202
    server.script = lambda n, r: DROP if n == 1 else Reply(202, {})
    assert (await conn.request(head, b"{}")).status == 202  # silently re-sent once
    server.script = lambda n, r: DROP
    with pytest.raises(TransportError):
        await conn.request(head, b"{}")
    await conn.aclose()


async def test_chunked_and_read_to_close_replies(nursery: trio.Nursery) -> None:
    replies = [
        (
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4\r\n{"ac\r\n9;x=1\r\ncepted":1\r\n1\r\n}\r\n0\r\n\r\n'
        ),
        b'HTTP/1.0 202 Accepted\r\n\r\n{"accepted":2}',
    ]

    async def handler(stream: trio.SocketStream) -> None:
        while replies:
            request = b""
            while not request.endswith(b"{}"):  # the whole request: head, then body "{}"
                request += await stream.receive_some(65536)
            await stream.send_all(reply := replies.pop(0))
            if reply.startswith(b"HTTP/1.0"):
                return

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    conn = Connection("127.0.0.1", listeners[0].socket.getsockname()[1])
    head = request_head("POST", "/ingest", "x", {})
    chunked = await conn.request(head, b"{}")
    assert chunked.body == b'{"accepted":1}'
    closed = await conn.request(head, b"{}")
    assert (closed.body, closed.will_close) == (b'{"accepted":2}', True)
    await conn.aclose()


async def test_the_duration_bounds_the_run(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    t0 = trio.current_time()
    summary = await load(server, duration_s=0.5, concurrency=4)
    assert 0.5 <= trio.current_time() - t0 < 1.2
    assert summary["stop_reason"] == "duration" and summary["statuses"]["202"] > 4


async def test_a_retry_past_the_end_is_abandoned(nursery: trio.Nursery) -> None:
    server = await start(nursery, lambda n, r: Reply(429, {"error": "rate_limited"}, {"Retry-After": "30"}))
    t0 = trio.current_time()
    summary = await load(server, duration_s=0.5, concurrency=2)
    assert trio.current_time() - t0 < 1.2
    assert summary["abandoned"] == 2 and summary["retries"] == 0


async def test_open_loop_sends_at_the_rate(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    summary = await load(server, duration_s=1.0, concurrency=4, rate=40.0)
    assert 35 <= summary["requests"] <= 40
    gaps = [b.time - a.time for a, b in zip(server.requests, server.requests[1:], strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 40, rel=0.2)


async def test_open_loop_counts_latency_from_the_scheduled_time(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:  # answers one request per 0.2 s
        while await stream.receive_some(65536):
            await trio.sleep(0.2)
            await stream.send_all(Reply(202, {"accepted": 10}).render())

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    summary = await run_load(url, "k", duration_s=1.0, concurrency=1, spans_per_request=1, rate=20.0)
    # the 5th request was due at 0.2 s but sent at 0.8 s: queueing is part of its latency
    assert summary["latency_ms"]["max"] >= 700


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:4000", "http://example.com", "https://127.0.0.1:4000", "http://[::2]"]
)
async def test_a_non_loopback_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        await run_load(url, "k", duration_s=1, concurrency=1, spans_per_request=1, rate=None)


async def test_progress_lines_go_to_stderr(nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]) -> None:
    server = await start(nursery)
    await load(server, duration_s=1.3, progress=True)
    err = capsys.readouterr().err
    assert "req/s" in err and "spans/s" in err and "p99" in err and "202=" in err


def test_loopback_urls() -> None:
    assert parse_target("http://127.0.0.5:4000")[:3] == ("127.0.0.5", 4000, "/ingest")
    assert parse_target("http://localhost:81/ingest")[:3] == ("localhost", 81, "/ingest")
    assert parse_target("http://[::1]:4000/")[3] == "[::1]:4000"


# ------------------------------------------------------------------------------- run.py loadtest
def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_run_prints_the_summary_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    with serve_in_thread() as server:
        args = cli("--url", server.url, "--key", "fl_x", "--max-requests", "5", "--json", "--gzip")
        assert loadtest.run(Config(), args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["statuses"] == {"202": 5} and summary["url"] == server.url
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99", "max"}
    for key in (
        "duration_s",
        "requests_per_s",
        "spans_accepted",
        "spans_per_s",
        "retries",
        "transport_errors",
        "quota_exhausted",
    ):
        assert key in summary
    assert server.requests[0].headers["content-encoding"] == "gzip"


def test_run_creates_its_own_org_and_key(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.controlplane_sqlite import SqliteControlPlane as ControlPlane

    config = Config(data_dir=tmp_path)

    def script(n: int, r: Request) -> Reply:
        with ControlPlane.open(config.controlplane_db) as cp:  # the node's own check
            key = cp.authenticate(r.headers["authorization"].removeprefix("Bearer "))
        return Reply(202, {"accepted": 10}) if key else Reply(401, {"error": "unauthorized"})

    with serve_in_thread(script) as server:
        args = cli("--url", server.url, "--max-requests", "3", "--spans-per-request", "10")
        assert loadtest.run(config, args) == 0
    out = capsys.readouterr().out
    assert "202=3" in out and "spans accepted   30" in out


def test_run_refuses_non_loopback_and_fails_when_nothing_is_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert loadtest.run(Config(), cli("--url", "http://192.168.1.1:4000", "--key", "k")) == 2
    assert "non-loopback" in capsys.readouterr().err
    with serve_in_thread() as server:
        url = server.url
    args = cli("--url", url, "--key", "k", "--duration", "0.3", "--json")
    assert loadtest.run(Config(), args) == 1  # nothing listens there any more
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 0 and summary["transport_errors"] > 0
