"""`python -m bench.admission_redis` at smoke-test sizes: its three cases run in real front and
writer processes against a real redis-server and every admission is answered. Only the report's
shape is checked, never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_admission_bench_runs_every_case_and_answers_every_admission() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")} | {"FOGLAMP_NO_BOOTSTRAP": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.admission_redis", "--seconds", "0.5", "--rounds", "1", "--rates", "200"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    runs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"case"')]
    assert [r["case"] for r in runs] == ["driver", "admit", "redis"]
    for run in runs:
        front = run["front"]
        assert front["answered"] > 0 and front["failed"] == 0
    assert runs[2]["writer"]["redis_calls"] > 0 and runs[2]["writer"]["mean_batch"] >= 1
    assert runs[2]["cpu_us_per_admission"]["writer"] > 0
    summary = json.loads(done.stdout[done.stdout.index('{\n "medians"') :])["medians"]
    assert set(summary["targets@200"]) >= {"admit_round_trip_cpu_us", "redis_added_node_cpu_us", "redis_added_p99_ms"}
