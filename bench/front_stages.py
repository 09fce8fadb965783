"""Instructions per span of each step of a front's work on one request, v1 JSON beside OTLP
protobuf of the same spans (the load generator's bodies, `bench.bench_otlp.bodies`).

The steps, in the order a front runs them: `http` (h11 parses the request as Hypercorn feeds it,
in reads of the node's size, and the body is copied into one buffer as `read_capped` does),
`decompress`, `decode` (v1: decode + validate; OTLP: the protobuf to `OtlpSpan`s), `map` (OTLP
only: `stages.otlp.map_spans`), `price+rows` (`stages.price_stage.span_rows`), `encode` (Native
columns), `frame` (the `Append` framed for the link) and `answer` (the 202 body or the
`ExportTraceServiceResponse`).

``python -m bench.front_stages [reps]`` runs itself under callgrind: instruction counts do not
move with the machine's load, so two trees can be compared on a busy machine. Each step runs
`reps` times over the bodies between two calls of `os.getppid`, where callgrind dumps its
counters (`--dump-before=getppid`); every dump is one step. Without valgrind
(``--timed``), the steps are timed by CPU time instead (noisy; medians of rounds).
"""

from __future__ import annotations

import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import h11
import msgspec

from bench.bench_otlp import bodies
from pipeline.config import Config
from pipeline.messages import Append, frame_buffer
from stages.decompress import decompress
from stages.otlp import Partial, map_spans
from stages.otlp_answer import PROTOBUF, success
from stages.otlp_decode import decode_protobuf
from stages.otlp_map import AGGREGATE_KINDS
from stages.payload import Batch
from stages.price import PriceTable
from stages.price_stage import encode_for_store, span_rows
from stages.validate import decode_batch

_CAP = 1 << 30
_READ = Config().http_read_bytes
_TABLE = PriceTable.load()
_json = msgspec.json.Encoder()
Step = Callable[[Any], Any]


def _request(path: str, content_type: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer key\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


def _http(raw: bytes) -> bytearray:
    """The request through h11 in reads of the node's size; the body into one preallocated buffer."""
    connection = h11.Connection(h11.SERVER)
    body = bytearray()
    got = 0
    for at in range(0, len(raw), _READ):
        connection.receive_data(raw[at : at + _READ])
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                break
            if type(event) is h11.Request:
                body = bytearray(int(dict(event.headers)[b"content-length"]))
            elif type(event) is h11.Data:
                body[got : got + len(event.data)] = event.data
                got += len(event.data)
    return body


def _price_rows(aggregate: frozenset[str]) -> Step:
    return lambda batch: span_rows(batch, "org", _TABLE, ingested_at_ms=0, max_io_bytes=1 << 20,
                                   aggregate_kinds=aggregate)  # fmt: skip


def _frame(data: tuple[bytes, int]) -> bytearray:
    rows, rows_format = data
    return frame_buffer().encode(Append(1, "org", "key", 100, None, rows, 0.0, rows_format=rows_format))


def _v1_decode(body: bytes) -> Batch:
    batch = decode_batch(body, "json")
    assert isinstance(batch, Batch)
    return batch


def _otlp_decode(body: bytes) -> Any:
    spans = decode_protobuf(body)
    assert isinstance(spans, list)
    return spans


def _otlp_map(spans: Any) -> Batch:
    partial = Partial()
    batch = map_spans(spans, partial)
    assert not partial.rejected, partial.message
    return batch


def steps() -> dict[str, list[tuple[str, Step]]]:
    """Each format's steps, each taking the previous step's output."""
    return {
        "v1": [("http", _http), ("decompress", lambda body: decompress(body, "identity", _CAP)),
               ("decode", _v1_decode), ("map", lambda batch: batch), ("price+rows", _price_rows(frozenset())),
               ("encode", encode_for_store), ("frame", _frame),
               ("answer", lambda _: _json.encode({"accepted": 100}))],
        "otlp": [("http", _http), ("decompress", lambda body: decompress(body, "identity", _CAP)),
                 ("decode", _otlp_decode), ("map", _otlp_map), ("price+rows", _price_rows(AGGREGATE_KINDS)),
                 ("encode", encode_for_store), ("frame", _frame), ("answer", lambda _: success(PROTOBUF))],
    }  # fmt: skip


def inputs(pool_size: int) -> dict[str, list[list[Any]]]:
    """Per format, per step, the step's input for every body (the previous step's outputs)."""
    v1, otlp = bodies(pool_size=pool_size)
    raws = {"v1": [_request("/ingest", "application/json", b) for b in v1],
            "otlp": [_request("/v1/traces", "application/x-protobuf", b) for b in otlp]}  # fmt: skip
    out: dict[str, list[list[Any]]] = {}
    for fmt, chain in steps().items():
        current: list[Any] = raws[fmt]
        out[fmt] = []
        for _, step in chain:
            out[fmt].append(current)
            current = [step(item) for item in current]
    return out


def _inner(reps: int, pool_size: int) -> None:
    """Under callgrind: every step `reps` times over its inputs between two dumps."""
    data = inputs(pool_size)
    chains = steps()
    for fmt, chain in chains.items():  # warm: caches of keys and pairs, the price table's look-ups
        for (_, step), items in zip(chain, data[fmt], strict=True):
            for item in items:
                step(item)
    for fmt, chain in chains.items():
        for (_, step), items in zip(chain, data[fmt], strict=True):
            os.getppid()
            for _ in range(reps):
                for item in items:
                    step(item)
    os.getppid()


def callgrind(reps: int = 2, pool_size: int = 8, spans: int = 100) -> dict[str, dict[str, float]]:
    """Instructions per span of each step, per format (run under valgrind in a child)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                        "--dump-before=getppid", sys.executable, "-m", "bench.front_stages", "--inner",
                        str(reps), str(pool_size)], check=True, capture_output=True)  # fmt: skip
        counts = {}
        for path in glob.glob(f"{tmp}/cg.out.*"):
            with open(path) as file:
                total = next(int(line.split()[1]) for line in file if line.startswith("totals:"))
            counts[int(path.rsplit(".", 1)[1])] = total
    names = [(fmt, name) for fmt, chain in steps().items() for name, _ in chain]
    # dump 1: start-up to the first step; dump k + 1: the k-th step
    per_span = reps * pool_size * spans
    out: dict[str, dict[str, float]] = {"v1": {}, "otlp": {}}
    for index, (fmt, name) in enumerate(names):
        out[fmt][name] = counts[index + 2] / per_span
    return out


def timed(rounds: int = 9, pool_size: int = 8, spans: int = 100) -> dict[str, dict[str, float]]:
    """CPU µs per span of each step (median of alternating rounds)."""
    data = inputs(pool_size)
    chains = steps()
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for fmt, chain in chains.items():
            for (name, step), items in zip(chain, data[fmt], strict=True):
                start = time.process_time()
                for item in items:
                    step(item)
                times.setdefault((fmt, name), []).append((time.process_time() - start) / (pool_size * spans))
    out: dict[str, dict[str, float]] = {"v1": {}, "otlp": {}}
    for (fmt, name), values in times.items():
        out[fmt][name] = statistics.median(values) * 1e6
    return out


def report(table: dict[str, dict[str, float]], unit: str) -> str:
    lines = [f"{'step':<12}{'v1 ' + unit:>18}{'otlp ' + unit:>18}{'otlp - v1':>14}"]
    for name in table["v1"]:
        v1, otlp = table["v1"][name], table["otlp"][name]
        lines.append(f"{name:<12}{v1:>18,.1f}{otlp:>18,.1f}{otlp - v1:>14,.1f}")
    v1_all, otlp_all = sum(table["v1"].values()), sum(table["otlp"].values())
    lines.append(f"{'total':<12}{v1_all:>18,.1f}{otlp_all:>18,.1f}{otlp_all - v1_all:>14,.1f}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.front_stages [reps] | --timed [rounds]
    args = sys.argv[1:]
    if args[:1] == ["--inner"]:
        _inner(int(args[1]), int(args[2]))
    elif args[:1] == ["--timed"]:
        print(report(timed(int(args[1]) if len(args) > 1 else 9), "µs/span"))
    else:
        print(report(callgrind(int(args[0]) if args else 2), "instr/span"))
