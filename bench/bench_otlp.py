"""CPU cost per span of OTLP protobuf decode + map (`stages.otlp.check_otlp`) beside v1 JSON
decode + validate (`stages.validate.decode_batch`) of the same spans, in one process; and of a
front's whole per-batch work for each (the same, then pricing and row encoding:
`stages.price_stage.priced_rows`), whose difference is what OTLP costs a front more per span.

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
from stages.otlp_map import AGGREGATE_KINDS
from stages.payload import Batch
from stages.price import PriceTable
from stages.price_stage import priced_rows
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


_TABLE = PriceTable.load()


def _v1_front(body: bytes) -> object:
    batch = _v1(body)
    assert isinstance(batch, Batch)
    return priced_rows(batch, "org", _TABLE, ingested_at_ms=0, max_io_bytes=1 << 20)


def _otlp_front(body: bytes) -> object:
    batch = _otlp(body)
    assert isinstance(batch, Batch)
    return priced_rows(batch, "org", _TABLE, ingested_at_ms=0, max_io_bytes=1 << 20, aggregate_kinds=AGGREGATE_KINDS)


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
    per_round = seconds / rounds / 4
    times: dict[str, list[float]] = {"v1": [], "otlp": [], "v1_front": [], "otlp_front": []}
    runs = {"v1": (_v1, v1_bodies), "otlp": (_otlp, otlp_bodies), "v1_front": (_v1_front, v1_bodies),
            "otlp_front": (_otlp_front, otlp_bodies)}  # fmt: skip
    for _ in range(rounds):
        for name, (run, items) in runs.items():
            times[name].append(_cpu_per_call(run, items, per_round) / spans)
    ratios = [o / v for o, v in zip(times["otlp"], times["v1"], strict=True)]
    extra = [o - v for o, v in zip(times["otlp_front"], times["v1_front"], strict=True)]
    us = {name: round(statistics.median(values) * 1e6, 2) for name, values in times.items()}
    return {
        "spans_per_body": spans,
        "v1_json_us_per_span": us["v1"],
        "v1_json_us_per_span_best": round(min(times["v1"]) * 1e6, 2),
        "otlp_pb_us_per_span": us["otlp"],
        "otlp_pb_us_per_span_best": round(min(times["otlp"]) * 1e6, 2),
        "ratio_otlp_over_v1": round(statistics.median(ratios), 2),
        "ratio_otlp_over_v1_best": round(min(times["otlp"]) / min(times["v1"]), 2),
        "v1_front_us_per_span": us["v1_front"],  # decode + validate + price + rows
        "otlp_front_us_per_span": us["otlp_front"],  # decode + map + price + rows
        "front_extra_us_per_span": round(statistics.median(extra) * 1e6, 2),  # OTLP's, per round
    }


if __name__ == "__main__":  # python -m bench.bench_otlp [seconds]
    for key, value in measure(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0).items():
        print(f"{key}: {value}")
