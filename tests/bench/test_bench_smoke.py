"""`python -m bench.run --tiny`: the whole benchmark, at smoke-test sizes, end to end.

It starts a real node, bare Hypercorn servers and a chDB child exactly as the full run does, so a
broken phase shows up here. Sizes are tiny, so the numbers mean nothing: only the report's shape
is checked (every key there, every rate positive), never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.supervisor import MALLOC_ENV

REPO = Path(__file__).resolve().parents[2]


def test_tiny_bench_writes_a_complete_report(tmp_path: Path) -> None:
    report, raw = tmp_path / "BENCHMARKS.md", tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "CLICKHOUSE_URL"))}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--tiny", "--output", str(report), "--json", str(raw)],
        cwd=REPO, env=env | {"FOGLAMP_NO_BOOTSTRAP": "1"}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    r = json.loads(raw.read_text())

    assert r["machine"]["nproc"] > 0 and r["machine"]["cpu_model"]
    assert len(r["loadavg_before"]) == len(r["loadavg_after"]) == 3
    c = r["ceilings"]
    assert c["decode_validate"]["json_spans_per_s"] > 0 and c["decode_validate"]["msgpack_spans_per_s"] > 0
    assert c["pricing"]["spans_per_s"] > 0
    assert c["raw_insert"]["rows_per_s"] > 0 and c["raw_insert"]["front_path_spans_per_s"] > 0
    assert c["raw_insert"]["rows_stored"] == c["raw_insert"]["rows"] > 0
    assert c["raw_insert_after"]["rows_stored"] == c["raw_insert_after"]["rows"] > 0  # measured again after the node
    # The ceilings run the store with the writer's allocator settings, and once with the defaults.
    node_conf = os.environ.get("JE_MALLOC_CONF", MALLOC_ENV["JE_MALLOC_CONF"])
    assert c["raw_insert"]["je_malloc_conf"] == c["raw_insert_after"]["je_malloc_conf"] == node_conf
    assert c["raw_insert_default_allocator"]["je_malloc_conf"] == ""
    assert c["raw_insert_default_allocator"]["rows_stored"] == c["raw_insert_default_allocator"]["rows"] > 0
    two = c["raw_insert_2_streams"]  # the same rows through two handles at once, for reference
    assert two["streams"] == 2 and two["rows_stored"] == two["rows"] > 0 and all(t > 0 for t in two["block_ms"])
    for kind in ("asgi", "quart"):
        assert c["hypercorn_bare"][kind]["requests_per_s"] > 0
        assert c["hypercorn_bare"][kind]["statuses"].get("202", 0) > 0

    n = r["node"]
    e2e = n["e2e"]
    assert e2e["persisted_spans_per_s"] > 0 and e2e["stored"] > 0 and e2e["spans_accepted"] > 0
    assert {"p50", "p95", "p99", "max"} <= set(e2e["latency_ms"]) and e2e["latency_ms"]["p99"] > 0
    assert e2e["process_tree"]["peak_rss_mib"] > 0
    assert {"supervisor", "writer"} <= set(e2e["process_tree"]["cpu_percent"])
    assert sum(role.startswith("front-") for role in e2e["process_tree"]["cpu_percent"]) == 2
    assert n["sustained_requests_per_s"] > 0
    otlp = n["e2e_otlp"]  # the same spans as OTLP protobuf to /v1/traces
    assert otlp["statuses"].get("200", 0) > 0 and otlp["stored"] == otlp["spans_accepted"] > 0
    assert otlp["persisted_spans_per_s"] > 0
    for phase in ("at_80", "overload"):
        p = n[phase]
        assert p["rate_requests_per_s"] > 0 and p["connections"] > 0 and p["requests"] > 0
        assert p["process_tree"]["peak_rss_mib"] > 0
        assert {"with", "without"} == set(p["retry_after"]) and isinstance(p["statuses"], dict)
    assert n["stored_total"] > 0 and n["accepted_total"] > 0
    assert {"exit_code", "drain_s", "log_errors"} == set(n["node_stop"])
    # Issue 16: the Native ceiling (default allocator, before and after), small requests, CPU per span.
    for native in (c["raw_insert_native"], c["raw_insert_native_after"]):
        assert native["format"] == "Native" and native["je_malloc_conf"] == ""
        assert native["rows_stored"] == native["rows"] > 0 and native["cpu_us_per_row"] > 0
    assert r["native_ceiling"]["rows_per_s"] == (c["raw_insert_native"]["rows_per_s"]
                                                 + c["raw_insert_native_after"]["rows_per_s"]) / 2  # fmt: skip
    assert c["hypercorn_bare"]["asgi_small"]["statuses"].get("202", 0) > 0
    small = n["small"]
    assert small["stored"] == small["spans_accepted"] > 0 and small["stored_requests_per_s"] > 0
    assert e2e["node_cpu_us_per_span"] > 0 and e2e["process_tree"]["cpu_s"] > 0
    assert set(r["ratios"]) == {
        "e2e_vs_raw_insert", "e2e_vs_raw_insert_native", "e2e_vs_raw_insert_2_streams",
        "e2e_vs_raw_insert_default_allocator",
        "e2e_vs_hypercorn_bare_asgi", "e2e_vs_hypercorn_bare_quart",
        "e2e_vs_decode_validate_1core", "e2e_vs_front_path_1core", "e2e_vs_pricing_1core",
    }  # fmt: skip
    assert all(v > 0 for v in r["ratios"].values())
    mean_raw = (c["raw_insert"]["rows_per_s"] + c["raw_insert_after"]["rows_per_s"]) / 2
    assert r["ratios"]["e2e_vs_raw_insert"] == round(e2e["persisted_spans_per_s"] / mean_raw, 3)
    text = report.read_text()
    assert "raw chDB insert rows/s, before the node" in text and "raw chDB insert rows/s, after the node" in text
    assert "raw chDB insert rows/s, 2 streams at once" in text
    assert "raw chDB insert rows/s, **Native**, jemalloc's default decay, before the node" in text
    assert "10-span requests stored/s ÷ bare Hypercorn" in text or "20-span requests" in text

    text = report.read_text()
    for heading in ("# Benchmarks", "## Machine", "## Command", "## Numbers", "## Ratios and targets", "## Notes"):
        assert heading in text
    assert "-m bench.run --tiny" in text and "e2e / raw insert" in text and "< 250 ms" in text
    assert "OTLP protobuf / v1 JSON, persisted spans/s" in text
