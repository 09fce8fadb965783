"""Realistic SDK batches for the load test (SPEC §2), rendered once, up front.

A `BodyPool` holds `size` distinct batches, each encoded (JSON or msgpack) once at start, so the
generator is never the bottleneck. Request number `seq` sends pooled body `seq % size` in
*epoch* `seq // size`.

Ids stay unique over the whole run: every trace and span id starts with the same fixed-width
*stamp*, 8 hex digits of a random run id then 8 hex digits of the epoch. A reused body is the
pooled body with the current stamp in place of the old one: same length, so the JSON and the
msgpack framing stay valid (see `BodyPool` for what it costs, compressed or not).

    trace id  <run:8><epoch:8><body:8><trace:8>     32 hex digits
    span id   <run:8><epoch:8><body:6><span:6>      28 hex digits

Each trace is an agent or chain root span with llm, tool and retrieval children; llm spans carry
real model names with their provider and consistent usage (cacheRead + cacheWrite <= input,
reasoning <= output); inputs and outputs are chat-message shaped JSON of a few hundred bytes to a
few KB.
"""

from __future__ import annotations

import random
import secrets
import struct
import threading
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import zstandard

MEDIA_TYPES = {"json": "application/json", "msgpack": "application/msgpack"}
ENCODINGS = ("identity", "gzip", "zstd")

# (provider, model, weight, reasons): the models a real fleet of SDKs reports most.
MODELS = [
    ("openai", "gpt-4o-mini", 5, False),
    ("openai", "gpt-4o", 3, False),
    ("anthropic", "claude-3-5-sonnet-20241022", 3, False),
    ("google", "gemini-1.5-pro", 2, False),
    ("openai", "o3-mini", 1, True),
]
TOOLS = ["search_web", "get_weather", "sql_query", "read_file", "send_email", "calculator"]
ROOTS = [
    ("agent", "support-agent"),
    ("agent", "research-agent"),
    ("chain", "rag-pipeline"),
    ("chain", "summarize-thread"),
]
_VOCABULARY = (
    "the a an of to and in is for on with that this it as be by from at or are was not your "
    "customer order invoice refund shipping account password reset billing plan upgrade trace "
    "latency model token prompt context window retrieval vector index document chunk score "
    "please could you help me understand why my request failed yesterday after the deploy "
    "summary answer question policy return warranty product support ticket escalate agent "
    "database query result table column error timeout retry cache region cluster node "
    "quarterly revenue forecast growth churn cohort dashboard metric alert incident report"
)
WORDS = _VOCABULARY.split()
SYSTEM_PROMPTS = 8
PLACEHOLDER = "@" * 16  # stands for the stamp while a pooled body is rendered


class _Text:
    """Slices of one pre-built word soup: distinct, cheap, word-aligned text of any length."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.soup = " ".join(rng.choices(WORDS, k=60_000))
        self.system = [self.take(rng.randint(200, 900)) for _ in range(SYSTEM_PROMPTS)]

    def take(self, n: int) -> str:
        start = self.soup.find(" ", self.rng.randrange(len(self.soup) - n - 32)) + 1
        end = self.soup.find(" ", start + n)
        return self.soup[start:end].capitalize() + "."

    def between(self, low: int, high: int) -> str:
        return self.take(self.rng.randint(low, high))


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamp(run: str, epoch: int) -> str:
    return f"{run}{epoch:08x}"


class _BatchBuilder:
    def __init__(self, rng: random.Random, text: _Text, now: datetime) -> None:
        self.rng, self.text, self.now = rng, text, now

    def batch(self, mark: str, body: int, spans: int) -> dict[str, Any]:
        rng = self.rng
        min_size = max(1, -(-spans // 1000))  # at most 1000 traces per batch
        traces, left, t = [], spans, 0
        while left:
            size = min(left, max(min_size, rng.randint(3, 12)))
            if 0 < left - size < min_size:
                size = left
            trace_id = f"{mark}{body:08x}{t:08x}"
            first = spans - left
            traces.append(self.trace(trace_id, mark, body, first, size))
            left -= size
            t += 1
        return {
            "version": "v1",
            "sdk": {"name": "foglamp-python", "version": "1.4.2"},
            "traces": traces,
        }

    def trace(self, trace_id: str, mark: str, body: int, first: int, size: int) -> dict:
        rng = self.rng
        kind, name = rng.choice(ROOTS)
        ids = [f"{mark}{body:06x}{first + i:06x}" for i in range(size)]
        # laid out backwards from an end in the last 30 s: however long, a trace is in the past
        end = self.now - timedelta(seconds=rng.uniform(0, 30))
        children, at = [], end - timedelta(milliseconds=rng.randint(1, 20))
        for span_id in reversed(ids[1:]):
            span = self.child(span_id, ids[0], at)
            children.append(span)
            at -= timedelta(milliseconds=span.pop("_ms") + rng.randint(1, 15))
        children.reverse()
        start = at
        root = {
            "id": ids[0],
            "parentId": None,
            "name": name,
            "kind": kind,
            "status": "ok",
            "startTime": _ts(start),
            "endTime": _ts(end),
            "input": {"messages": [{"role": "user", "content": self.text.between(80, 600)}]},
            "output": {"role": "assistant", "content": self.text.between(80, 900)},
            "attributes": {"framework": rng.choice(["langgraph", "llamaindex", "custom"])},
        }
        if any(c.get("status") == "error" for c in children):
            root["status"] = "error"
            root["statusMessage"] = "a step failed"
        return {
            "id": trace_id,
            "name": name,
            "userId": f"user_{rng.randint(1, 5000)}",
            "sessionId": f"sess_{rng.randint(1, 50000):06d}",
            "environment": rng.choice(["production", "production", "staging"]),
            "release": "2024.11.3",
            "tags": ["loadtest", kind],
            "metadata": {"tenant": f"tenant-{rng.randint(1, 40)}", "loadtest": True},
            "spans": [root, *children],
        }

    def child(self, span_id: str, parent: str, end: datetime) -> dict[str, Any]:
        rng = self.rng
        pick = rng.random()
        if pick < 0.55:
            span, ms = self.llm(), rng.randint(300, 6000)
        elif pick < 0.8:
            span, ms = self.tool(), rng.randint(5, 800)
        else:
            span, ms = self.retrieval(), rng.randint(10, 300)
        span.update(
            id=span_id,
            parentId=parent,
            startTime=_ts(end - timedelta(milliseconds=ms)),
            endTime=_ts(end),
            _ms=ms,
        )
        if rng.random() < 0.02:
            span.update(status="error", statusMessage="upstream timeout after 30s")
        else:
            span["status"] = "ok"
        return span

    def llm(self) -> dict[str, Any]:
        rng, text = self.rng, self.text
        ((provider, model, _, reasons),) = rng.choices(MODELS, weights=[m[2] for m in MODELS])
        messages = [
            {"role": "system", "content": rng.choice(text.system)},
            {"role": "user", "content": text.between(60, 1500)},
        ]
        if rng.random() < 0.3:
            messages[1:1] = [
                {"role": "user", "content": text.between(40, 400)},
                {"role": "assistant", "content": text.between(60, 800)},
            ]
        answer = text.between(40, 1200)
        inputs = sum(len(m["content"]) for m in messages) // 4 + rng.randint(0, 2000)
        outputs = len(answer) // 4 + 1
        usage = {"inputTokens": inputs, "outputTokens": outputs}
        if rng.random() < 0.4:
            usage["cacheReadTokens"] = rng.randint(0, inputs) // 128 * 128
        if provider == "anthropic" and rng.random() < 0.3:
            usage["cacheWriteTokens"] = rng.randint(0, inputs - usage.get("cacheReadTokens", 0))
        if reasons:
            usage["reasoningTokens"] = rng.randint(0, outputs)
        return {
            "name": f"{provider}.chat",
            "kind": "llm",
            "model": model,
            "provider": provider,
            "usage": usage,
            "input": messages,
            "output": {"role": "assistant", "content": answer},
            "attributes": {"temperature": rng.choice([0, 0.2, 0.7]), "stream": False},
        }

    def tool(self) -> dict[str, Any]:
        rng, name = self.rng, self.rng.choice(TOOLS)
        return {
            "name": f"tool.{name}",
            "kind": "tool",
            "input": {"tool": name, "arguments": {"query": self.text.between(20, 200)}},
            "output": {"role": "tool", "content": self.text.between(100, 1500)},
            "attributes": {"tool.name": name, "retries": rng.randint(0, 1)},
        }

    def retrieval(self) -> dict[str, Any]:
        rng = self.rng
        top_k = rng.randint(2, 5)
        docs = [
            {
                "id": f"doc-{rng.randint(1, 99999)}",
                "score": round(rng.uniform(0.5, 0.95), 3),
                "text": self.text.between(100, 700),
            }
            for _ in range(top_k)
        ]
        return {
            "name": "vectorstore.similarity_search",
            "kind": "retrieval",
            "input": {"query": self.text.between(20, 200), "top_k": top_k},
            "output": {"documents": docs},
            "attributes": {"index": "kb-articles", "top_k": top_k},
        }


_local = threading.local()
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0
GZIP_LEVEL = 6  # zlib's default: paid once, at build
ZSTD_LEVEL = 1  # fast: a reused zstd body is compressed again per request


def zstd_compress(raw: bytes) -> bytes:
    if not hasattr(_local, "zstd"):  # a compressor is not thread-safe: one per thread
        _local.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return _local.zstd.compress(raw)


def deflate_segments(pieces: list[bytes]) -> list[bytes]:
    """Raw deflate of `pieces`, cut by a full flush after each: no back-reference crosses a cut,
    so any bytes can be put between two segments as a stored block (`gzip_join`)."""
    deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    segments = [deflater.compress(p) + deflater.flush(zlib.Z_FULL_FLUSH) for p in pieces[:-1]]
    return [*segments, deflater.compress(pieces[-1]) + deflater.flush()]


def gzip_join(segments: list[bytes], glue: bytes, raw: bytes) -> bytes:
    """One gzip member whose content is `raw` == `glue.join(pieces)` (segments of `pieces`)."""
    stored = b"\x00" + struct.pack("<HH", len(glue), 0xFFFF ^ len(glue)) + glue  # BFINAL=0
    trailer = struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, stored.join(segments), trailer))


class PooledBodies:
    """Request bodies rendered once (`_first`) and re-rendered with a new stamp on reuse (`_render`)."""

    size: int
    _first: list[bytes]

    def _render(self, index: int, epoch: int) -> bytes:
        raise NotImplementedError

    def body(self, seq: int) -> bytes:
        epoch, index = divmod(seq, self.size)
        return self._first[index] if epoch == 0 else self._render(index, epoch)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self._first)


class BodyPool(PooledBodies):
    """`size` distinct pre-encoded batches of `spans_per_request` spans each.

    `body(seq)` is the request body of request number `seq`: ids unique for every `seq`, in this
    run and against any other run (the run id is random).

    Each pooled body is kept split at its stamps, so a reused body is one `bytes.join` with the
    new stamp. A gzip body is kept as deflate segments cut at the stamps, and a reused one is
    those segments joined by the stamp as a stored block (plus a new CRC): no recompression,
    at the price of a lower ratio (about 2.2 instead of 4.7). A zstd body is compressed again
    (about 1 ms for 100 spans): `needs_work` says so, for callers to do it in a thread.
    """

    def __init__(
        self,
        size: int,
        spans_per_request: int,
        media: str = "json",
        encoding: str = "identity",
        *,
        seed: int | None = None,
    ) -> None:
        if media not in MEDIA_TYPES or encoding not in ENCODINGS:
            raise ValueError(f"unknown format {media!r} or encoding {encoding!r}")
        if not 1 <= spans_per_request <= 1_000_000 or size < 1:
            raise ValueError("spans_per_request must be in 1..1000000 and the pool size >= 1")
        rng = random.Random(seed)
        self.size, self.spans, self.media, self.encoding = size, spans_per_request, media, encoding
        self.content_type = MEDIA_TYPES[media]
        builder = _BatchBuilder(rng, _Text(rng), datetime.now(UTC))
        encode = msgspec.json.encode if media == "json" else msgspec.msgpack.encode
        self._pieces: list[list[bytes]] = []
        for index in range(size):
            batch = builder.batch(PLACEHOLDER, index, spans_per_request)
            ids = sum(1 + sum(1 + (s["parentId"] is not None) for s in t["spans"]) for t in batch["traces"])
            pieces = encode(batch).split(PLACEHOLDER.encode())
            if len(pieces) != ids + 1:  # the placeholder occurs in the ids and nowhere else
                raise AssertionError(f"stamp found {len(pieces) - 1} times, expected {ids}")
            self._pieces.append(pieces)
        self._segments = [deflate_segments(p) for p in self._pieces] if encoding == "gzip" else []
        self.run_id = secrets.token_hex(4)
        self._first = [self._render(i, 0) for i in range(size)]

    def raw(self, index: int, epoch: int) -> bytes:
        """Pooled body `index` in `epoch`, before compression."""
        if not 0 <= epoch < 1 << 32:
            raise OverflowError("the id stamp holds 2**32 epochs of the pool")
        return stamp(self.run_id, epoch).encode().join(self._pieces[index])

    def _render(self, index: int, epoch: int) -> bytes:
        raw = self.raw(index, epoch)
        if self.encoding == "gzip":
            return gzip_join(self._segments[index], stamp(self.run_id, epoch).encode(), raw)
        return zstd_compress(raw) if self.encoding == "zstd" else raw

    def needs_work(self, seq: int) -> bool:
        """True when `body(seq)` compresses (worth running in a thread)."""
        return seq >= self.size and self.encoding == "zstd"

