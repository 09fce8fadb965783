"""CPU cost per span of OTLP protobuf decode + map (`stages.otlp.check_otlp`) beside v1 JSON
decode + validate (`stages.validate.decode_batch`) of the same spans, in one process.

``measure()`` returns the numbers; ``python -m bench.bench_otlp [seconds]`` prints them.
The bodies are the load generator's (`node.loadgen.BodyPool` and `node.otlp_pool.OtlpBodyPool`
built from the same seed: the same traces, written as v1 JSON and as GenAI-semconv OTLP).
Both paths are timed in alternating rounds by CPU time (`time.process_time`), so a noisy shared
machine disturbs both alike; the headline is the ratio of the median rounds.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from node.loadgen import BodyPool
from node.otlp_pool import OtlpBodyPool
from stages.otlp import Partial, check_otlp
from stages.otlp_answer import PROTOBUF
from stages.payload import Batch
from stages.validate import decode_batch

_CAP = 1 << 30  # decompressed-size cap: never reached by these bodies


def bodies(pool_size: int = 8, spans: int = 100, seed: int = 15) -> tuple[list[bytes], list[bytes]]:
    """(v1 JSON bodies, OTLP protobuf bodies) of the same spans."""
    v1 = BodyPool(pool_size, spans, "json", seed=seed)
    otlp = OtlpBodyPool(pool_size, spans, seed=seed)
    return [v1.body(i) for i in range(pool_size)], [otlp.body(i) for i in range(pool_size)]


def _v1(body: bytes) -> object:
    return decode_batch(body, "json")


def _otlp(body: bytes) -> object:
    partial = Partial()
    result = check_otlp(body, PROTOBUF, "identity", _CAP, partial)
    if partial.rejected:
        raise AssertionError(f"bench OTLP spans rejected: {partial.message}")
    return result


def _cpu_per_call(run: Callable[[bytes], object], items: list[bytes], seconds: float) -> float:
    """CPU seconds per call of `run`, cycling through `items`, over at least `seconds` of CPU."""
    calls, start = 0, time.process_time()
    while True:
        for body in items:
            run(body)
        calls += len(items)
        used = time.process_time() - start
        if used >= seconds:
            return used / calls


def measure(seconds: float = 6.0, spans: int = 100, rounds: int = 9) -> dict[str, Any]:
    """Per-span CPU µs of both paths (median and best round) and their ratio, OTLP / v1."""
    v1_bodies, otlp_bodies = bodies(spans=spans)
    for v1_body, otlp_body in zip(v1_bodies, otlp_bodies, strict=True):
        v1_batch, otlp_batch = _v1(v1_body), _otlp(otlp_body)
        assert isinstance(v1_batch, Batch) and isinstance(otlp_batch, Batch), "bench bodies must be valid"
        assert sum(len(t.spans) for t in otlp_batch.traces) == spans
    per_round = seconds / rounds / 2
    v1_times: list[float] = []
    otlp_times: list[float] = []
    ratios: list[float] = []
    for _ in range(rounds):
        v1_times.append(_cpu_per_call(_v1, v1_bodies, per_round) / spans)
        otlp_times.append(_cpu_per_call(_otlp, otlp_bodies, per_round) / spans)
        ratios.append(otlp_times[-1] / v1_times[-1])
    return {
        "spans_per_body": spans,
        "v1_json_us_per_span": round(statistics.median(v1_times) * 1e6, 2),
        "v1_json_us_per_span_best": round(min(v1_times) * 1e6, 2),
        "otlp_pb_us_per_span": round(statistics.median(otlp_times) * 1e6, 2),
        "otlp_pb_us_per_span_best": round(min(otlp_times) * 1e6, 2),
        "ratio_otlp_over_v1": round(statistics.median(ratios), 2),
        "ratio_otlp_over_v1_best": round(min(otlp_times) / min(v1_times), 2),
    }


if __name__ == "__main__":  # python -m bench.bench_otlp [seconds]
    for key, value in measure(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0).items():
        print(f"{key}: {value}")
