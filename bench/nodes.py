"""Three nodes on one machine beside one node with the same workers (issue 17's target: three nodes
together accept at least as many spans/s as one node with the same total workers; nothing
serialises them).

    .venv/bin/python -m bench.nodes [--duration 6] [--rounds 2] [--concurrency 16] [--spans 100]

Starts a PostgreSQL and a Redis (bench/servers.py), then runs, in turn (A B, then B A, ...):
    A   one node with 3 workers (`run.py serve --workers 3`)
    B   three nodes with 1 worker each, on three ports
Every node has INGEST_CONTROLPLANE_URL and INGEST_REDIS_URL (the key is read from PostgreSQL, its
rate limit is checked in Redis on every request and its org's monthly quota, 10^12 spans, on every
group commit), its own data dir and its own embedded store. Three `run.py loadtest` processes drive
them for the same time with the same key (rate limit 1e6): all three at A's port, or one per node
in B. Per case: accepted spans/s (the clients' sum), the spans stored (summed over the stores,
FINAL) against the spans of the 202s, persisted spans/s (stored / time from the start of the load
until stored), and the CPU of the node processes (per span, by role). The ratio B/A is of the
medians. Bounded: about 25 s per case at the defaults, under 2 minutes in all on a busy 2-core
machine; everything it starts runs in its own session and is killed in a `finally`. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from bench.ceilings import REPO, TreeSampler, _kill_group, _role, _stat, loadavg, machine_info
from bench.run import stored_count
from bench.servers import PgServer, RedisServer, free_port

RUN_PY = str(REPO / "run.py")
CLIENTS = 3
SETTLE_S = 2.0  # after the last node is ready: the fronts started last finish their imports


def node_env(shared: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "CLICKHOUSE_URL"))}
    return env | {"FOGLAMP_NO_BOOTSTRAP": "1"} | shared


def cli(data_dir: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, RUN_PY, *args, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"run.py {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def nodes(root: Path, workers: list[int], env: dict[str, str]) -> Iterator[list[tuple[str, int, Path]]]:
    """One node per entry of `workers`, started together: (URL, supervisor pid, data dir) each."""
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for i, count in enumerate(workers):
            data, port = root / f"node{i}", free_port()
            data.mkdir(parents=True)
            with open(root / f"node{i}.log", "ab") as log:
                argv = [sys.executable, RUN_PY, "serve", "--port", str(port), "--workers", str(count), "--data-dir"]
                proc = subprocess.Popen([*argv, str(data)], env=env, stdout=log, stderr=log, start_new_session=True)
            procs.append((f"http://127.0.0.1:{port}", proc, data))
        deadline = time.monotonic() + 60
        for i, (url, proc, _) in enumerate(procs):  # /readyz 200 once every front was started
            while not _ready(url, root / f"node{i}.log"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node {url} not ready (exit {proc.returncode}): see {root}/node{i}.log")
                time.sleep(0.1)
        time.sleep(SETTLE_S)
        yield [(url, proc.pid, data) for url, proc, data in procs]
        for _, proc, _ in procs:  # the drain an operator would do
            proc.send_signal(signal.SIGTERM)
        for _, proc, _ in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(20)
    finally:
        for _, proc, _ in procs:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ready(url: str, log: Path) -> bool:
    if b'"node_ready"' not in log.read_bytes():  # the supervisor has started every front
        return False
    with suppress(OSError), urllib.request.urlopen(f"{url}/readyz", timeout=1) as reply:
        return reply.status == 200
    return False


def tree_cpu_s(roots: list[int]) -> dict[int, tuple[str, float]]:
    """(role, utime+stime in s) of every process under `roots`, by pid; role: supervisor, writer
    or front (bench/ceilings.py's names without the pid)."""
    seconds: dict[int, tuple[str, float]] = {}
    for root in roots:
        for pid in TreeSampler(root).tree():
            if (st := _stat(pid)) is not None:
                seconds[pid] = (_role(pid, root).split("-")[0], st[1])
    return seconds


def drive(urls: list[str], key: str, duration_s: float, concurrency: int, spans: int, env: dict[str, str],
          scratch: Path) -> list[dict[str, Any]]:  # fmt: skip
    """`CLIENTS` loadtest processes at once, client i on urls[i % len(urls)]: their summaries."""
    argv = [sys.executable, RUN_PY, "loadtest", "--key", key, "--duration", str(duration_s), "--concurrency",
            str(concurrency), "--spans-per-request", str(spans), "--json", "--data-dir", str(scratch)]  # fmt: skip
    clients = []
    try:
        for i in range(CLIENTS):
            clients.append(subprocess.Popen([*argv, "--url", urls[i % len(urls)]], env=env, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            start_new_session=True))  # fmt: skip
        outs = [c.communicate(timeout=duration_s + 60)[0] for c in clients]
    finally:
        for client in clients:
            _kill_group(client)
    return [json.loads(out.strip().splitlines()[-1]) for out in outs]


def stored(data_dirs: list[Path], expected: int, timeout_s: float) -> tuple[int, float]:
    """Poll the stores until their rows add up to `expected`: (distinct spans, FINAL, in all; s waited)."""
    started = time.monotonic()
    while sum(stored_count(d, final=False) for d in data_dirs) < expected and time.monotonic() - started < timeout_s:
        time.sleep(0.1)
    waited = time.monotonic() - started
    return sum(stored_count(d, final=True) for d in data_dirs), waited


def run_case(name: str, workers: list[int], key: str, args: argparse.Namespace, env: dict[str, str],
             root: Path) -> dict[str, Any]:  # fmt: skip
    case_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    with nodes(case_dir, workers, env) as started:
        urls, pids, dirs = [u for u, _, _ in started], [p for _, p, _ in started], [d for _, _, d in started]
        cpu0, t0 = tree_cpu_s(pids), time.monotonic()
        clients = drive(urls, key, args.duration, args.concurrency, args.spans, env, case_dir)
        accepted = sum(c["spans_accepted"] for c in clients)
        count, waited = stored(dirs, accepted, timeout_s=30)
        cpu1, wall = tree_cpu_s(pids), time.monotonic() - t0  # the load's, until its spans are stored
    duration = max(c["duration_s"] for c in clients)  # from the clients' first request to their last reply
    by_role: dict[str, float] = {}
    for pid, (role, seconds) in cpu1.items():
        by_role[role] = by_role.get(role, 0.0) + seconds - cpu0.get(pid, (role, 0.0))[1]
    node_cpu = sum(by_role.values())
    statuses: dict[str, int] = {}
    for client in clients:
        for status, n in client["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    return {"case": name, "nodes": len(workers), "workers": workers, "accepted_spans": accepted,
            "accepted_spans_per_s": round(accepted / duration), "stored_spans": count,
            "persisted_spans_per_s": round(count / (duration + waited)), "stored_after_load_s": round(waited, 2),
            "p99_ms": max(c["latency_ms"]["p99"] for c in clients), "statuses": statuses,
            "node_cpu_cores": round(node_cpu / wall, 2),
            "node_cpu_us_per_span": round(node_cpu / max(accepted, 1) * 1e6, 1),
            "cpu_us_per_span_by_role": {role: round(t / max(accepted, 1) * 1e6, 1) for role, t in by_role.items()},
            "per_client_spans_per_s": [c["spans_per_s"] for c in clients]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per case (default 6)")
    parser.add_argument("--rounds", type=int, default=2, help="A B, then B A, ... (default 2)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections per client (3 clients)")
    parser.add_argument("--spans", type=int, default=100, help="spans per request (default 100)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    started, before = time.monotonic(), loadavg()
    cases = {"A": [3], "B": [1, 1, 1]}
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-nodes-") as tmp:
        pg, redis = stack.enter_context(PgServer()), stack.enter_context(RedisServer())
        env = node_env({"INGEST_CONTROLPLANE_URL": pg.url, "INGEST_REDIS_URL": redis.url,
                        "INGEST_REDIS_FALLBACK_NODES": "3"})  # fmt: skip
        root = Path(tmp)
        org = cli(root / "cli", env, "orgs", "create", "bench-nodes", "--monthly-span-quota", str(10**12))
        key = cli(root / "cli", env, "keys", "create", "--org", org, "--rate-limit", "1000000")
        for r in range(args.rounds):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                result = run_case(name, cases[name], key, args, env, root)
                print(json.dumps(result), flush=True)
                runs.append(result)
    medians = {}
    for name in cases:
        mine = [x for x in runs if x["case"] == name]
        medians[name] = {k: statistics.median(x[k] for x in mine)
                         for k in ("accepted_spans_per_s", "persisted_spans_per_s", "node_cpu_cores",
                                   "node_cpu_us_per_span")}  # fmt: skip

    def ratio(figure: str) -> float:
        return round(medians["B"][figure] / medians["A"][figure], 3)

    summary = {
        "machine": machine_info(), "loadavg_before": before, "loadavg_after": loadavg(),
        "seconds": round(time.monotonic() - started, 1), "medians": medians,
        "ratio_B_over_A_accepted": ratio("accepted_spans_per_s"),
        "ratio_B_over_A_persisted": ratio("persisted_spans_per_s"),
        "every_accepted_span_stored": all(x["stored_spans"] == x["accepted_spans"] for x in runs),
    }  # fmt: skip
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, **summary}, indent=1))


if __name__ == "__main__":
    main()
