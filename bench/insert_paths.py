"""What the embedded store's sync after each insert costs (INGEST_STORE_SYNC), side by side.

    .venv/bin/python -m bench.insert_paths [--rows 200000] [--block-rows 16000] [--rounds 3]

The same Native blocks (`bench.ceilings.build_blocks`: loadgen bodies of 100 spans, stitched as
the flush does, `--block-rows` rows a block, about the node's 32 MiB flush block), inserted into a
fresh embedded store under the repo (the data dir's file system), one case per child process
(the engine allows one path per process), the order alternating every round:
- `insert`: `pipeline.store.open_store(url, durable_inserts=False)`;
- `insert+sync`: the node's default: `syncfs` of the store's file system after each insert.
Per case: rows/s, process CPU per row (chDB's threads included), wall ms per block (median).
Prints one JSON object with every run and the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("insert", "insert+sync")
REPO = Path(__file__).resolve().parent.parent


def child(case: str, rows: int, block_rows: int) -> dict:
    from bench.ceilings import build_blocks
    from pipeline.store import open_store
    from stages.schema import COLUMN_NAMES, TABLE, ddl

    blocks, warm_rows, _ = build_blocks(rows, block_rows, fmt="Native")
    with tempfile.TemporaryDirectory(prefix="bench-insert-", dir=REPO) as tmp:
        store = open_store(f"chdb://{Path(tmp, 'clickhouse')}", durable_inserts=case == "insert+sync")
        try:
            for statement in ddl("foglamp"):
                store.command(statement)
            target = f"foglamp.{TABLE}"
            store.insert_rows(target, COLUMN_NAMES, warm_rows, fmt="Native", dedup_token="warm-up")
            times = []
            cpu, wall = time.process_time(), time.perf_counter()
            for i, (block, _) in enumerate(blocks):
                t = time.perf_counter()
                store.insert_rows(target, COLUMN_NAMES, block, fmt="Native", dedup_token=f"block-{i}")
                times.append(time.perf_counter() - t)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            store.close()
    inserted = sum(n for _, n in blocks)
    return {"case": case, "rows": inserted, "blocks": len(blocks), "rows_per_s": round(inserted / wall),
            "cpu_us_per_row": round(cpu / inserted * 1e6, 2),
            "block_ms_median": round(statistics.median(times) * 1000, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--block-rows", type=int, default=16_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: list[dict] = []
    for r in range(args.rounds):
        for case in CASES if r % 2 == 0 else CASES[::-1]:
            argv = [sys.executable, "-m", "bench.insert_paths", "--child", case, str(args.rows), str(args.block_rows)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600, cwd=REPO).stdout
            runs.append({"round": r, **json.loads(out.strip().splitlines()[-1])})
    medians = {
        case: {k: statistics.median(run[k] for run in runs if run["case"] == case)
               for k in ("rows_per_s", "cpu_us_per_row", "block_ms_median")}  # fmt: skip
        for case in CASES
    }
    print(json.dumps({"rows": args.rows, "block_rows": args.block_rows, "runs": runs, "medians": medians}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
