"""The benchmark: a real node's end-to-end spans/s vs. its ceilings, in one run on one machine.

    .venv/bin/python -m bench.run [--duration S] [--quick | --tiny] [--output docs/BENCHMARKS.md] [--json P]

1. ceilings, each alone: decode+validate, pricing, raw chDB insert, bare Hypercorn (bench/ceilings.py).
2. e2e: `run.py serve --workers 2` (free 127.0.0.1 port, fresh data dir), `run_load` closed loop, 100-span
   bodies, 32 connections, for `--duration` s; `SELECT count() FROM foglamp.spans FINAL` via `run.py query`
   until all is flushed. Sustained rate = persisted spans/s / 100 (requests/s). Then open loop at 0.8x it
   (p99 of the 202s) and at 2x (503s, RSS). The node's process tree is sampled every 0.5 s throughout.
Resource handling: the node runs in its own session; a `finally` SIGTERMs it (drain), then SIGKILLs its
process group, on error or Ctrl-C too. Its data dir is a `TemporaryDirectory`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from bench import bench_price, bench_validate, ceilings
from bench.ceilings import REPO
from node import loadtest
from pipeline.config import Config

FLUSH = Config()  # the node's defaults, which the bench runs with

RUN_PY = str(REPO / "run.py")


# Sizes and durations (seconds) of each phase; --duration overrides e2e_s.
DEFAULT = {"e2e_s": 20.0, "phase80_s": 10.0, "overload_s": 10.0, "bare_s": 6.0, "validate_s": 2.0, "price_s": 2.0,
           "insert_rows": 200_000, "block_rows": 50_000, "concurrency": 32, "workers": 2, "spans": 100,
           "max_connections": 1024, "drain_wait_s": 15.0, "small_s": 10.0, "small_spans": 10,
           "small_concurrency": 64}  # fmt: skip
PLANS = {
    "default": DEFAULT,
    "quick": DEFAULT | {"e2e_s": 3.5, "phase80_s": 2, "overload_s": 2, "bare_s": 1.2, "validate_s": 0.4,
                        "price_s": 0.4, "insert_rows": 50_000, "drain_wait_s": 5, "small_s": 2},
    "tiny": DEFAULT | {"e2e_s": 1, "phase80_s": 0.5, "overload_s": 0.5, "bare_s": 0.3, "validate_s": 0.1,
                       "price_s": 0.1, "insert_rows": 2_000, "block_rows": 1_000, "max_connections": 64,
                       "drain_wait_s": 2, "spans": 20, "small_s": 0.5, "small_concurrency": 8},
}  # fmt: skip


def child_env() -> dict[str, str]:
    """This environment without node settings (the node runs on defaults, its store embedded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "CLICKHOUSE_URL"))}
    return env | {"FOGLAMP_NO_BOOTSTRAP": "1"}


def cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, RUN_PY, *args, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, env=child_env(), timeout=120)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"run.py {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def stored_count(data_dir: Path, *, final: bool) -> int:
    """The spans table's row count, asked in this process (through the running node's writer).
    Without FINAL it is read from part metadata (cheap enough to poll); FINAL counts each span
    once."""
    from pipeline.config import load_config
    from pipeline.query import run_query

    config = load_config(child_env(), overrides={"data_dir": data_dir})
    sql = "SELECT count() AS c FROM foglamp.spans" + (" FINAL" if final else "")
    return int(json.loads(run_query(config, sql, "json").strip().splitlines()[-1])["c"])


def active_parts(data_dir: Path) -> int:
    """The spans table's active parts: what merges still owe (each insert adds one)."""
    from pipeline.config import load_config
    from pipeline.query import run_query

    config = load_config(child_env(), overrides={"data_dir": data_dir})
    sql = "SELECT count() AS c FROM system.parts WHERE active AND database = 'foglamp' AND table = 'spans'"
    return int(json.loads(run_query(config, sql, "json").strip().splitlines()[-1])["c"])


def wait_stored(data_dir: Path, expected: int, timeout_s: float = 90.0) -> tuple[int, float]:
    """Poll the stored row count until it reaches `expected`, then count the distinct spans
    (FINAL): (distinct count, seconds waited). Polling is cheap and in-process, so the wait does
    not take CPU from the node it waits for."""
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        if stored_count(data_dir, final=False) >= expected or waited > timeout_s:
            count = stored_count(data_dir, final=True)
            if count >= expected or waited > timeout_s:
                return count, round(waited, 2)
        time.sleep(0.1)


def load(url: str, key: str, duration_s: float, concurrency: int, spans: int, rate: float | None = None,
         *, otlp: bool = False) -> dict:  # fmt: skip
    return trio.run(partial(loadtest.run_load, url, key, duration_s=duration_s, concurrency=concurrency,
                            spans_per_request=spans, rate=rate, otlp=otlp))  # fmt: skip


# --------------------------------------------------------------------------- the node
@contextmanager
def node(data_dir: Path, workers: int, drain_wait_s: float) -> Iterator[dict[str, Any]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = data_dir.parent / "node.log"
    argv = [sys.executable, RUN_PY, "serve", "--port", str(port), "--workers", str(workers), "--data-dir"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([*argv, str(data_dir)], env=child_env(), stdout=log, stderr=log, start_new_session=True)
    info: dict[str, Any] = {"pid": proc.pid, "url": f"http://127.0.0.1:{port}", "exit_code": None, "drain_s": None}
    try:
        deadline = time.monotonic() + 60
        while True:  # until /readyz answers 200
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node not ready (exit {proc.returncode}): {log_path.read_text()[-3000:]}")
            with suppress(OSError), urllib.request.urlopen(f"{info['url']}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    break
            time.sleep(0.1)
        yield info
        proc.send_signal(signal.SIGTERM)  # the drain an operator would do
        started = time.monotonic()
        with suppress(subprocess.TimeoutExpired):
            info["exit_code"], info["drain_s"] = proc.wait(drain_wait_s), round(time.monotonic() - started, 1)
    finally:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        lines = log_path.read_text(errors="replace").splitlines()
        info["log_errors"] = [line.split('"event": "', 1)[1].split('"', 1)[0] for line in lines
                              if '"level": "error"' in line and '"event": "' in line]  # fmt: skip


def node_phases(plan: SimpleNamespace, data: Path) -> dict:
    org = cli(data, "orgs", "create", "bench").strip().splitlines()[-1]
    key = cli(data, "keys", "create", "--org", org, "--rate-limit", "1000000").strip().splitlines()[-1]
    out: dict[str, Any] = {}
    with node(data, plan.workers, plan.drain_wait_s) as info:
        sampler = ceilings.TreeSampler(info["pid"])
        sampler.start()
        try:
            t0, cpu0 = time.monotonic(), time.process_time()
            e2e = load(info["url"], key, plan.e2e_s, plan.concurrency, plan.spans)
            t1, cpu1 = time.monotonic(), time.process_time()
            stored, lag = wait_stored(data, e2e["spans_accepted"])
            out["e2e"] = e2e | {"stored": stored, "flush_wait_s": lag,
                                "persisted_spans_per_s": round(stored / (e2e["duration_s"] + lag)),
                                "client_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
                                "active_parts": active_parts(data),
                                "process_tree": sampler.window(t0, t1 + lag)}  # fmt: skip
            out["e2e"]["node_cpu_us_per_span"] = round(1e6 * out["e2e"]["process_tree"].get("cpu_s", 0)
                                                       / max(stored, 1), 1)  # fmt: skip
            persisted_per_s = stored / (e2e["duration_s"] + lag)  # until the last row is in the store
            sustained = out["sustained_requests_per_s"] = round(max(persisted_per_s / plan.spans, 1.0), 1)
            accepted = e2e["spans_accepted"]
            # The same spans as OTLP protobuf to /v1/traces, closed loop like e2e (target: >= 0.8x v1).
            t0 = time.monotonic()
            otlp = load(info["url"], key, plan.e2e_s, plan.concurrency, plan.spans, otlp=True)
            t1 = time.monotonic()
            accepted += otlp["spans_accepted"]
            stored, lag = wait_stored(data, accepted)
            otlp_stored = stored - out["e2e"]["stored"]
            out["e2e_otlp"] = otlp | {"stored": otlp_stored, "flush_wait_s": lag,
                                      "persisted_spans_per_s": round(otlp_stored / (otlp["duration_s"] + lag)),
                                      "process_tree": sampler.window(t0, t1 + lag)}  # fmt: skip
            # Small requests, as many SDK processes flush them: closed loop, more connections.
            t0 = time.monotonic()
            small = load(info["url"], key, plan.small_s, plan.small_concurrency, plan.small_spans)
            t1 = time.monotonic()
            accepted += small["spans_accepted"]
            stored, lag = wait_stored(data, accepted)
            small_stored = stored - out["e2e"]["stored"] - otlp_stored
            tree = sampler.window(t0, t1 + lag)
            out["small"] = small | {"stored": small_stored, "flush_wait_s": lag, "process_tree": tree,
                                    "stored_requests_per_s": round(small_stored / plan.small_spans
                                                                   / (small["duration_s"] + lag), 1),
                                    "node_cpu_ms_per_request": round(1000 * tree.get("cpu_s", 0)
                                                                     / max(small["requests"], 1), 3)}  # fmt: skip
            for name, factor, duration in (("at_80", 0.8, plan.phase80_s), ("overload", 2.0, plan.overload_s)):
                rate = sustained * factor
                conns = 64 if factor < 1 else min(plan.max_connections, math.ceil(rate * 1.5) + plan.concurrency)
                t0 = time.monotonic()
                with ceilings.retry_after_seen() as counts:
                    phase = load(info["url"], key, duration, conns, plan.spans, rate)
                t1 = time.monotonic()
                accepted += phase["spans_accepted"]
                stored, lag = wait_stored(data, accepted)
                out[name] = phase | {"rate_requests_per_s": round(rate, 1), "connections": conns,
                                     "retry_after": counts, "stored_total": stored, "flush_wait_s": lag,
                                     "active_parts": active_parts(data),
                                     "process_tree": sampler.window(t0, t1 + lag)}  # fmt: skip
            out["accepted_total"], out["stored_total"] = accepted, stored
        finally:
            sampler.stop()
            out["whole_run_tree"] = sampler.window(0, math.inf)
    out["node_stop"] = {k: info[k] for k in ("exit_code", "drain_s", "log_errors")}
    return out


# --------------------------------------------------------------------------- the report
def _outcome(s: dict) -> str:
    """Latency of the 202s; statuses, retries, transport errors, abandoned requests of one load run."""
    extra = [f"{k} {s[k]}" for k in ("retries", "transport_errors", "abandoned") if s.get(k)]
    statuses = ", ".join([f"{k}: {v}" for k, v in s["statuses"].items()] + extra) or "-"
    return "p50 {p50:.0f} / p95 {p95:.0f} / p99 {p99:.0f} / max {max:.0f} ms; ".format(**s["latency_ms"]) + statuses


def _tree(t: dict) -> str:
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(t.get("cpu_percent", {}).items()))
    return f"peak RSS {t.get('peak_rss_mib', 0):.0f} MiB (PSS {t.get('peak_pss_mib', 0):.0f}); CPU {cpu}"


def render(r: dict) -> str:
    m, c, n, ra, plan = r["machine"], r["ceilings"], r["node"], r["ratios"], r["plan"]
    workers, spans = plan["workers"], plan["spans"]
    e2e, p80, over, ins, dv = n["e2e"], n["at_80"], n["overload"], c["raw_insert"], c["decode_validate"]
    sm, bare_small = n["small"], c["hypercorn_bare"]["asgi_small"]
    per_span, per_row = e2e["node_cpu_us_per_span"], max(r["native_ceiling"]["cpu_us_per_row"], 1e-9)
    rows = [
        ("**e2e persisted spans/s** (count FINAL / time until stored)",
         f"**{e2e['persisted_spans_per_s']:,}**",
         f"{e2e['stored']:,} rows stored of {e2e['spans_accepted']:,} accepted in {e2e['duration_s']} s; "
         f"all stored {e2e['flush_wait_s']} s after the load; then {e2e['active_parts']} active parts"),
        ("e2e requests/s, latency of 202s", f"{e2e['requests_per_s']}", _outcome(e2e)),
        *([("**e2e OTLP protobuf persisted spans/s** (same spans, /v1/traces)",
            f"**{n['e2e_otlp']['persisted_spans_per_s']:,}**",
            f"{n['e2e_otlp']['spans_accepted']:,} accepted in {n['e2e_otlp']['duration_s']} s; "
            + _outcome(n["e2e_otlp"]))] if "e2e_otlp" in n else []),
        ("e2e node CPU per stored span", f"{e2e['node_cpu_us_per_span']} µs",
         f"CPU seconds of the node's process tree from the start of the load until the last row was stored, "
         f"÷ rows stored ({e2e['process_tree'].get('cpu_s', 0)} s)"),
        (f"**{plan['small_spans']}-span requests stored/s** ({plan['small_concurrency']} connections)",
         f"**{sm['stored_requests_per_s']:,}**",
         f"{sm['stored']:,} spans stored in {sm['duration_s']} s + {sm['flush_wait_s']} s; node CPU "
         f"{sm['node_cpu_ms_per_request']} ms per request; " + _outcome(sm)),
        ("e2e node process tree", f"{e2e['process_tree'].get('peak_rss_mib', 0):.0f} MiB",
         f"{_tree(e2e['process_tree'])}; load client {e2e['client_cpu_percent']:.0f}%"),
        *[(f"raw chDB insert rows/s, {when}", f"{i['rows_per_s']:,}", f"{i['rows']:,} rows, {i['blocks']} blocks of "
           f"{i['block_rows']:,} ({i['block_mib']} MiB, {i['bytes_per_row']} B/row), ms/block {i['block_ms']}; "
           f"{i['cpu_cores']} cores busy, {i['cpu_us_per_row']} µs CPU/row; "
           f"JE_MALLOC_CONF={i.get('je_malloc_conf') or '(default)'}")
          for when, i in (("before the node", ins), ("after the node", c["raw_insert_after"]),
                          ("2 streams at once, after the node", c["raw_insert_2_streams"]),
                          ("jemalloc's default decay, after the node", c["raw_insert_default_allocator"]),
                          ("**Native**, jemalloc's default decay, before the node", c["raw_insert_native"]),
                          ("**Native**, jemalloc's default decay, after the node", c["raw_insert_native_after"]))],
        ("decode+validate spans/s, 1 core", f"{dv['json_spans_per_s']:,}",
         f"bench_validate batches, JSON (best {dv['json_spans_per_s_best']:,}); msgpack {dv['msgpack_spans_per_s']:,}"),
        ("pricing spans/s, 1 core", f"{c['pricing']['spans_per_s']:,}", f"{c['pricing']['us_per_span']} µs/span"),
        ("front path spans/s, 1 core", f"{ins['front_path_spans_per_s']:,}",
         "decode_batch + priced_rows (price, rows, msgpack) of the loadgen bodies, building the insert blocks"),
        *[(f"Hypercorn bare POST, {label}, {workers} processes", f"{b['requests_per_s']} req/s",
           f"= {b['spans_per_s']:,.0f} spans/s; {_outcome(b)}")
          for label, b in (("raw ASGI", c["hypercorn_bare"]["asgi"]), ("Quart-Trio", c["hypercorn_bare"]["quart"]))],
        (f"Hypercorn bare POST, raw ASGI, {workers} processes, {plan['small_spans']}-span bodies, "
         f"{plan['small_concurrency']} connections", f"{bare_small['requests_per_s']} req/s", _outcome(bare_small)),
        *[(f"{name}: open loop {p['rate_requests_per_s']} req/s, {p['connections']} connections",
           f"p99 {p['latency_ms']['p99']:.0f} ms",
           f"{_outcome(p)}; {_tree(p['process_tree'])}; then {p['active_parts']} active parts")
          for name, p in (("80 % of sustained", p80), ("overload 2x sustained", over))],
    ]  # fmt: skip
    over_503, seen = sum(v for k, v in over["statuses"].items() if k.startswith("503")), over["retry_after"]
    over_rss, stop = over["process_tree"].get("peak_rss_mib", 0), n["node_stop"]
    drained = (f"exit {stop['exit_code']} after {stop['drain_s']} s" if stop["drain_s"] is not None
               else f"still running {r['plan']['drain_wait_s']} s after SIGTERM: killed")  # fmt: skip
    drained += f"; errors logged: {', '.join(stop['log_errors'])}" if stop["log_errors"] else ""
    checks = [
        ("e2e / raw insert (mean of before and after)", ra["e2e_vs_raw_insert"], ">= 0.5",
         ra["e2e_vs_raw_insert"] >= 0.5),
        ("e2e / raw Native insert, default allocator (mean of before and after)", ra["e2e_vs_raw_insert_native"],
         ">= 0.4", ra["e2e_vs_raw_insert_native"] >= 0.4),
        ("node CPU per stored span ÷ the store's CPU per row in that Native ceiling",
         f"{per_span} ÷ {per_row:.1f} = {per_span / per_row:.2f}", "<= 4", per_span <= 4 * per_row),
        *[(f"e2e / {k.removeprefix('e2e_vs_')}", v, "-", None) for k, v in ra.items()
          if k not in ("e2e_vs_raw_insert", "e2e_vs_raw_insert_native")],
        *([("OTLP protobuf / v1 JSON, persisted spans/s", round(n["e2e_otlp"]["persisted_spans_per_s"]
            / max(e2e["persisted_spans_per_s"], 1), 3), ">= 0.8", n["e2e_otlp"]["persisted_spans_per_s"]
            >= 0.8 * e2e["persisted_spans_per_s"])] if "e2e_otlp" in n else []),
        (f"{plan['small_spans']}-span requests stored/s ÷ bare Hypercorn's answered/s (same bodies, client, "
         "connections)", round(sm["stored_requests_per_s"] / max(bare_small["requests_per_s"], 1), 3), ">= 0.7",
         sm["stored_requests_per_s"] >= 0.7 * bare_small["requests_per_s"]),
        ("p99 of 202s at 80 % of sustained", f"{p80['latency_ms']['p99']:.0f} ms", "< 250 ms",
         p80["latency_ms"]["p99"] < 250),
        ("peak RSS of the node tree under 2x overload", f"{over_rss:.0f} MiB", "< 1024 MiB", over_rss < 1024),
        ("overload: 503 overloaded with Retry-After", f"{over_503} x 503; Retry-After on {seen['with']} of "
         f"{seen['with'] + seen['without']} retried", "503s with Retry-After", over_503 > 0 and not seen["without"]),
        ("every accepted span stored", f"{n['stored_total']:,} / {n['accepted_total']:,}", "equal",
         n["stored_total"] == n["accepted_total"]),
        ("node drains on SIGTERM", drained, "exit 0, no error logged",
         stop["exit_code"] == 0 and not stop["log_errors"]),
    ]  # fmt: skip
    cpu = e2e["process_tree"].get("cpu_percent", {})
    busy = sum(cpu.values()) + e2e["client_cpu_percent"]
    per_process = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(cpu.items()))
    return "\n".join([
        "# Benchmarks", "", f"Generated by `bench/run.py` on {r['started']} in {r['runtime_s']} s; "
        "regenerate it rather than editing it.", "",
        "## Machine", "", "| nproc | CPU | memory | Python | kernel | load avg before | load avg after |",
        "|---|---|---|---|---|---|---|",
        f"| {m['nproc']} | {m['cpu_model']} | {m['memory_gib']} GiB | {m['python']} | {m['kernel']} "
        f"| {' '.join(map(str, r['loadavg_before']))} | {' '.join(map(str, r['loadavg_after']))} |", "",
        "## Command", "", "```", r["command"], "```", "", f"Plan: `{json.dumps(r['plan'])}`. Bodies of {spans} "
        "spans (node/loadgen.py, JSON, about 2 KB per span), one API key, 127.0.0.1 only.", "",
        "## Numbers", "",
        "| measure | value | detail |", "|---|---|---|", *[f"| {a} | {b} | {d} |" for a, b, d in rows],
        "", "## Ratios and targets", "", "| ratio / target | value | target | met |", "|---|---|---|---|",
        *[f"| {a} | {b} | {t} | {'-' if ok is None else 'met' if ok else '**not met**'} |" for a, b, t, ok in checks],
        "", "## Notes", "",
        f"- One machine, {m['nproc']} CPUs, shared by the load client (this process), the supervisor, {workers} fronts "
        f"and the writer: during e2e they used {busy:.0f}% of one CPU in all ({per_process}, client "
        f"{e2e['client_cpu_percent']:.0f}%), out of {100 * (m['nproc'] or 1)}%. The load average before the run shows "
        "other work on the machine; the ceilings are measured alone. A front is one trio thread (at most 100%); the "
        "writer's figure includes chDB's threads (inserts run in a worker thread, outside the GIL).",
        f"- decode+validate, pricing and front path are per core; the node has {workers} fronts. The raw insert "
        f"uses {ins['block_rows']:,}-row blocks; the writer flushes every {FLUSH.flush_interval_ms} ms, or at "
        f"{FLUSH.flush_max_rows:,} rows or {FLUSH.flush_max_bytes >> 20} MiB (about "
        f"{FLUSH.flush_max_bytes // max(ins['bytes_per_row'], 1):,} rows of these). The raw insert is measured "
        "before and after the node's phases (the machine's speed drifts); the ratio uses their mean. It is one "
        "insert stream, what one inserting process takes; the writer inserts "
        f"{FLUSH.flush_parallel_inserts} block(s) at once while a whole block waits behind the one it inserts "
        "(INGEST_FLUSH_PARALLEL_INSERTS), and the same rows through 2 streams at once are shown beside it, for "
        "reference. The raw inserts whose row names the node's JE_MALLOC_CONF run with the allocator settings the "
        "node's writer gives its embedded "
        "store (pipeline/supervisor.py, MALLOC_ENV: jemalloc keeps freed pages 1 s instead of its default 10 s, "
        "which bounds the writer's memory); the Native ceiling of the targets, and one MsgPack insert for "
        "reference, run with jemalloc's default decay.",
        f"- Sustained rate = e2e persisted spans/s / {spans} = {n['sustained_requests_per_s']} requests/s. Open-loop "
        "latency counts from each request's scheduled send time; a 429/503 is retried with the same body after "
        "its Retry-After, and a retry that would start after the phase is abandoned.",
        "- Active parts: of the spans table, once everything accepted is stored. Each insert makes one; background "
        "merges (at INGEST_MERGE_NICE) fold them together with the CPU that requests and inserts leave.",
        "- RSS is the sum of VmRSS over the supervisor and all its descendants, sampled every 0.5 s (shared pages "
        "count once per process; PSS, beside it, counts them once in all).", "",
    ])  # fmt: skip


# --------------------------------------------------------------------------- the run
def native_ceiling(plan: SimpleNamespace) -> dict:
    return ceilings.measure_raw_insert(plan.insert_rows, plan.block_rows, node_allocator=False, fmt="Native")


def run(plan: SimpleNamespace, command: str) -> dict:
    results: dict[str, Any] = {"command": command, "plan": vars(plan), "started": time.strftime("%Y-%m-%d %H:%M"),
                               "machine": ceilings.machine_info(), "loadavg_before": ceilings.loadavg()}  # fmt: skip
    started = time.monotonic()
    c = results["ceilings"] = {"decode_validate": bench_validate.measure(plan.validate_s, plan.spans),
                               "pricing": bench_price.measure(plan.price_s),
                               "raw_insert": ceilings.measure_raw_insert(plan.insert_rows, plan.block_rows),
                               "raw_insert_native": native_ceiling(plan), "hypercorn_bare": {}}  # fmt: skip
    for kind in ("asgi", "quart"):
        with ceilings.bare_hypercorn(kind, plan.workers, plan.spans) as url:
            c["hypercorn_bare"][kind] = load(url, "fl_bare", plan.bare_s, plan.concurrency, plan.spans)
    # The small-request ceiling: the same client and connections as the node's small phase.
    with ceilings.bare_hypercorn("asgi", plan.workers, plan.small_spans) as url:
        c["hypercorn_bare"]["asgi_small"] = load(url, "fl_bare", plan.bare_s, plan.small_concurrency, plan.small_spans)
    with tempfile.TemporaryDirectory(prefix="foglamp-bench-") as tmp:
        results["node"] = node_phases(plan, Path(tmp) / "data")
    # The store's ceiling drifts by 10-20 % within minutes on a shared machine: it is measured
    # before and after the node's phases, and the e2e ratio is taken against their mean.
    c["raw_insert_after"] = ceilings.measure_raw_insert(plan.insert_rows, plan.block_rows)
    # For reference: the same rows through two handles at once, as the node's flush does when the
    # spool is backed up (INGEST_FLUSH_PARALLEL_INSERTS); the target is against one stream.
    c["raw_insert_2_streams"] = ceilings.measure_raw_insert(plan.insert_rows, plan.block_rows, streams=2)
    # For reference: one stream with jemalloc's default decay (freed pages kept ~10 s), which the
    # writer does not use (pipeline/supervisor.py, MALLOC_ENV: it keeps them 1 s, for its memory).
    c["raw_insert_default_allocator"] = ceilings.measure_raw_insert(plan.insert_rows, plan.block_rows,
                                                                    node_allocator=False)  # fmt: skip
    # Issue 16's ceiling: the same rows in Native, 50k-row blocks, one stream, the store's default
    # allocator settings; also measured before and after the node, and the ratio uses their mean.
    c["raw_insert_native_after"] = native_ceiling(plan)
    e2e, bare = results["node"]["e2e"]["persisted_spans_per_s"], c["hypercorn_bare"]
    raw = (c["raw_insert"]["rows_per_s"] + c["raw_insert_after"]["rows_per_s"]) / 2
    native = [c["raw_insert_native"], c["raw_insert_native_after"]]
    results["native_ceiling"] = {"rows_per_s": sum(n["rows_per_s"] for n in native) / 2,
                                 "cpu_us_per_row": sum(n["cpu_us_per_row"] for n in native) / 2}  # fmt: skip
    limits = {"raw_insert": raw, "raw_insert_native": results["native_ceiling"]["rows_per_s"],
              "raw_insert_2_streams": c["raw_insert_2_streams"]["rows_per_s"],
              "raw_insert_default_allocator": c["raw_insert_default_allocator"]["rows_per_s"],
              "hypercorn_bare_asgi": bare["asgi"]["spans_per_s"],
              "hypercorn_bare_quart": bare["quart"]["spans_per_s"], "pricing_1core": c["pricing"]["spans_per_s"],
              "decode_validate_1core": c["decode_validate"]["json_spans_per_s"],
              "front_path_1core": c["raw_insert"]["front_path_spans_per_s"]}  # fmt: skip
    results["ratios"] = {f"e2e_vs_{k}": round(e2e / v, 3) if v else 0.0 for k, v in limits.items()}
    results["loadavg_after"], results["runtime_s"] = ceilings.loadavg(), round(time.monotonic() - started, 1)
    return results


# Sections of the report that other benches write (bench/admission_redis.py, bench/nodes.py) start
# at this heading level after the Notes; a regeneration keeps them as they are.
OTHER_BENCHES = "\n## Issue 17:"


def kept_sections(report: Path) -> str:
    """The other benches' sections of an existing report, to append after a regenerated one."""
    old = report.read_text() if report.exists() else ""
    at = old.find(OTHER_BENCHES)
    return "\n" + old[at:].lstrip("\n") if at >= 0 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, metavar="S", help="seconds of e2e load (default 20, quick 3.5)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick", help="under 30 s in all")
    mode.add_argument("--tiny", action="store_const", dest="mode", const="tiny", help="smoke-test sizes, no numbers")
    parser.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"), help="the markdown report")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))  # cleanups run on `kill` too
    duration = {} if args.duration is None else {"e2e_s": args.duration}
    plan = SimpleNamespace(**PLANS[args.mode or "default"] | duration)
    command = shlex.join([".venv/bin/python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    results = run(plan, command)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    output = Path(args.output)
    output.write_text(render(results) + kept_sections(output))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"bench: {results['node']['e2e']['persisted_spans_per_s']:,} spans/s persisted; report: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
