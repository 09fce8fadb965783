"""Rows as MsgPack or as Native column streams (issue 16): what each costs where, side by side.

    .venv/bin/python -m bench.native_rows [--bodies 500] [--rounds 3] [--block-mib 32]

The node's own rows (loadgen bodies of 100 spans → decode_batch → priced_rows), then, per round
and alternating the order of the cases:
- front: `priced_rows` CPU per row (price + rows + encode), MsgPack and Native, and the encoding
  alone (`stages.rows.encode_rows` / `stages.native.encode_streams` + `pack_streams` of the same
  row tuples);
- writer: the stitch of Native batches into flush blocks (`stages.native.stitch`: the block as
  views and new headers; the bytes are copied as the store writes them, in the insert), CPU per row;
- store: inserting the same rows into a fresh database of one embedded store, in flush-sized
  blocks (`--block-mib`, the node's INGEST_FLUSH_MAX_BYTES), as MsgPack batches back to back
  (`FORMAT MsgPack`) or as stitched Native blocks: process CPU per row (chDB's threads included)
  and rows/s.
Prints one JSON object: every round's numbers and their medians.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path


def _blocks(batches: list[tuple[bytes, int]], max_bytes: int) -> list[list[tuple[bytes, int]]]:
    """Batches grouped as the flush reads them: up to `max_bytes` of rows per block."""
    out: list[list[tuple[bytes, int]]] = [[]]
    size = 0
    for batch in batches:
        if out[-1] and size + len(batch[0]) > max_bytes:
            out.append([])
            size = 0
        out[-1].append(batch)
        size += len(batch[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block-mib", type=int, default=32)
    args = parser.parse_args()

    from node.loadgen import BodyPool
    from pipeline.messages import ROWS_MSGPACK, ROWS_NATIVE, pack_streams, unpack_streams
    from pipeline.store import open_store
    from stages.native import encode_streams, stitch
    from stages.price import PriceTable
    from stages.price_stage import priced_rows, span_rows
    from stages.rows import encode_rows
    from stages.schema import COLUMN_NAMES, TABLE, ddl
    from stages.validate import decode_batch

    pool, table = BodyPool(64, 100, "json"), PriceTable.load()
    decoded = [decode_batch(pool.body(seq), "json") for seq in range(args.bodies)]
    now_ms = int(time.time() * 1000)
    formats = {"msgpack": ROWS_MSGPACK, "native": ROWS_NATIVE}

    def encode(fmt: str) -> tuple[list[tuple[bytes, int]], float]:
        cpu = time.process_time()
        out = [priced_rows(b, "org_bench", table, ingested_at_ms=now_ms, max_io_bytes=256 * 1024,  # type: ignore[arg-type]
                           rows_format=formats[fmt]) for b in decoded]  # fmt: skip
        return out, time.process_time() - cpu

    tuples = [span_rows(b, "org_bench", table, ingested_at_ms=now_ms, max_io_bytes=256 * 1024)  # type: ignore[arg-type]
              for b in decoded]  # fmt: skip
    encoders = {"msgpack": encode_rows, "native": lambda rows: pack_streams(encode_streams(rows))}
    batches = {fmt: encode(fmt)[0] for fmt in formats}
    rows = sum(n for _, n in batches["native"])
    gc.freeze()  # the rows built above (millions of objects) are not what a collection should cost here
    results: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        results.setdefault(key, []).append(round(value, 2))

    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        store = open_store(f"chdb://{Path(tmp, 'clickhouse').resolve()}", durable_inserts=False)
        try:
            for statement in ddl("warm"):
                store.command(statement)
            store.insert_rows(f"warm.{TABLE}", COLUMN_NAMES, batches["msgpack"][0][0], fmt="MsgPack", dedup_token="w")
            for rnd in range(args.rounds):
                order = list(formats) if rnd % 2 == 0 else list(reversed(formats))
                for fmt in order:
                    note(f"front_priced_rows_us_per_row_{fmt}", encode(fmt)[1] / rows * 1e6)
                    cpu = time.process_time()
                    for batch_rows in tuples:
                        encoders[fmt](batch_rows)
                    note(f"front_encode_only_us_per_row_{fmt}", (time.process_time() - cpu) / rows * 1e6)
                for fmt in order:
                    blocks = _blocks(batches[fmt], args.block_mib << 20)
                    cpu = time.process_time()
                    if fmt == "native":
                        data = [stitch([(n, unpack_streams(memoryview(b))) for b, n in block]) for block in blocks]
                        note("writer_stitch_us_per_row", (time.process_time() - cpu) / rows * 1e6)
                    else:
                        data = [[b for b, _ in block] for block in blocks]  # type: ignore[misc]
                    database = f"{fmt}_{rnd}"
                    for statement in ddl(database):
                        store.command(statement)
                    cpu, wall = time.process_time(), time.perf_counter()
                    kind = "Native" if fmt == "native" else "MsgPack"
                    for i, block_data in enumerate(data):
                        store.insert_rows(f"{database}.{TABLE}", COLUMN_NAMES, block_data,  # type: ignore[arg-type]
                                          fmt=kind, dedup_token=str(i))  # fmt: skip
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    note(f"insert_cpu_us_per_row_{fmt}", cpu / rows * 1e6)
                    note(f"insert_rows_per_s_{fmt}", rows / wall)
                    note(f"blocks_{fmt}", len(data))
                    stored = int(store.query(f"SELECT count() FROM {database}.{TABLE}", "tsv").split()[-1])
                    assert stored == rows, (fmt, stored, rows)
        finally:
            store.close()
    print(json.dumps({"rows": rows, "rounds": results,
                      "median": {k: statistics.median(v) for k, v in results.items()}}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
