"""Throughput of ``stages.validate.decode_batch`` on realistic valid batches (one core).

``measure()`` is imported by the bench suite; ``python -m bench.bench_validate`` prints it.
Each batch is one trace of ``spans_per_batch`` spans shaped like an agent run: a root agent
span, LLM calls with model, usage, chat messages as input/output and attributes, and tool calls.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

from stages.payload import Batch
from stages.validate import decode_batch

_T0 = datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=timezone.utc)


def make_batch(spans_per_batch: int = 100, trace_id: str = "tr-7f3a9c2e") -> dict[str, Any]:
    """A valid payload v1 batch (as plain data) with one trace of ``spans_per_batch`` spans."""
    spans = [
        {
            "id": "sp-root",
            "name": "agent.run",
            "kind": "agent",
            "startTime": _ts(0),
            "endTime": _ts(spans_per_batch * 40),
            "status": "ok",
            "input": {"query": "What were Q4 revenues for ACME in Europe?"},
        }
    ]
    for i in range(1, spans_per_batch):
        if i % 3:
            spans.append(_llm_span(i))
        else:
            spans.append(_tool_span(i))
    return {
        "version": "v1",
        "sdk": {"name": "foglamp-python", "version": "0.4.2"},
        "traces": [
            {
                "id": trace_id,
                "name": "support-agent",
                "userId": "user-1842",
                "sessionId": "sess-55d1",
                "environment": "production",
                "release": "2025.03.1",
                "tags": ["agent", "eu"],
                "metadata": {"tenant": "acme", "tier": "pro", "retries": 0},
                "spans": spans,
            }
        ],
    }


def _llm_span(i: int) -> dict[str, Any]:
    return {
        "id": f"sp-{i:05d}",
        "parentId": "sp-root",
        "name": "chat.completions",
        "kind": "llm",
        "startTime": _ts(i * 40),
        "endTime": _ts(i * 40 + 35),
        "status": "ok",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "usage": {"inputTokens": 812, "outputTokens": 164, "cacheReadTokens": 512},
        "input": [
            {"role": "system", "content": "You are a concise financial analyst assistant."},
            {"role": "user", "content": f"Summarise the filing excerpt #{i} in two sentences."},
        ],
        "output": {"role": "assistant", "content": "Revenue grew 8% year over year, led by EU."},
        "attributes": {"temperature": 0.2, "stream": False, "http.status_code": 200},
    }


def _tool_span(i: int) -> dict[str, Any]:
    return {
        "id": f"sp-{i:05d}",
        "parentId": "sp-root",
        "name": "tool.search_filings",
        "kind": "tool",
        "startTime": _ts(i * 40),
        "endTime": _ts(i * 40 + 12),
        "input": {"company": "ACME", "quarter": "2024Q4", "region": "EU"},
        "output": {"hits": 3, "ids": ["f-1", "f-2", "f-3"]},
    }


def _ts(ms: int) -> str:
    return (_T0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def measure(seconds: float = 2.0, spans_per_batch: int = 100, *, baseline: bool = False) -> dict:
    """Decode+validate spans/s of ``decode_batch`` for JSON and msgpack bodies.

    ``seconds`` is the whole budget, split evenly between the media; each one is timed in
    5 rounds, reporting the median round (``<media>_spans_per_s``) and the best one
    (``<media>_spans_per_s_best``; the least disturbed by other processes on the machine).
    ``baseline=True`` also times msgspec's typed decode alone (``<media>_msgspec_only_*``),
    in the same budget, its rounds interleaved with those of ``decode_batch``.
    """
    batch = make_batch(spans_per_batch)
    bodies = {"json": msgspec.json.encode(batch), "msgpack": msgspec.msgpack.encode(batch)}
    for media, body in bodies.items():
        assert isinstance(decode_batch(body, media), Batch), f"bench {media} batch must be valid"
    runs: dict[str, Callable[[bytes, str], object]] = {"": decode_batch}
    if baseline:
        decoders = {"json": msgspec.json.Decoder(Batch), "msgpack": msgspec.msgpack.Decoder(Batch)}
        runs["_msgspec_only"] = lambda body, media: decoders[media].decode(body)
    round_s = seconds / len(bodies) / len(runs) / 5
    result: dict[str, Any] = {"spans_per_batch": spans_per_batch}
    for media, body in bodies.items():
        result[f"{media}_body_bytes"] = len(body)
        rates: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(5):
            for label, run in runs.items():
                rates[label].append(_rate(run, body, media, round_s) * spans_per_batch)
        for label, found in rates.items():
            found.sort()
            result[f"{media}{label}_spans_per_s"] = round(found[2])
            result[f"{media}{label}_spans_per_s_best"] = round(found[-1])
    return result


def _rate(run: Callable[[bytes, str], object], body: bytes, media: str, seconds: float) -> float:
    """Calls of ``run(body, media)`` per second, over at least ``seconds``."""
    calls, elapsed, start = 0, 0.0, time.perf_counter()
    while elapsed < seconds:
        for _ in range(10):
            run(body, media)
        calls += 10
        elapsed = time.perf_counter() - start
    return calls / elapsed


if __name__ == "__main__":  # python -m bench.bench_validate [seconds]
    for key, value in measure(float(sys.argv[1]) if len(sys.argv) > 1 else 4.0, baseline=True).items():
        print(f"{key}: {value}")
