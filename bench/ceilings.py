"""The ceilings `bench/run.py` compares the node with, and the probes it watches the node with.

    raw insert      the node's own rows (loadgen bodies → decode_batch → priced_rows) into a fresh embedded
                    chDB store in big blocks (`ClickHouseStore.insert_rows`), in a child process, in
                    `FORMAT MsgPack` (default) or Native (`fmt="Native"`: each block the bodies' column
                    streams stitched into one Native block, as the node's flush does)
    hypercorn bare  Hypercorn (trio) answering 202 to the same POSTs, `workers` processes sharing one
                    socket as the node's fronts do, raw ASGI or Quart-Trio (`bare-server FD APP SPANS`)
    TreeSampler     VmRSS / PSS / CPU time of a process and all its descendants, every 0.5 s
    retry_after_seen  how many of the loadtest's retried 429/503 replies carried a Retry-After header

Resource handling: children run in their own session and are killed by process group in a `finally`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the machine
def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(mem_kb / 1024**2, 1),
            "python": sys.version.split()[0], "kernel": os.uname().release}  # fmt: skip


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# --------------------------------------------------------------------------- process tree sampler
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) of `pid`, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _kb(path: str, name: str) -> int:
    with suppress(OSError, StopIteration):
        return int(next(line for line in Path(path).read_text().splitlines() if line.startswith(name)).split()[1])
    return 0


def _role(pid: int, root: int) -> str:  # supervisor, writer, front-<pid> or other-<pid>
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        argv = []
    return "supervisor" if pid == root else "writer" if b"_writer" in argv else \
        f"front-{pid}" if b"_front" in argv else f"other-{pid}"  # fmt: skip


class TreeSampler(threading.Thread):
    """Samples `root` and its descendants every `interval_s`: summed VmRSS and PSS (kB), CPU
    seconds per process. `window(t0, t1)` summarizes the samples between two monotonic times."""

    def __init__(self, root: int, interval_s: float = 0.5) -> None:
        super().__init__(name="tree-sampler", daemon=True)
        self.root, self.interval_s = root, interval_s
        self.samples: list[tuple[float, int, int, dict[int, tuple[str, float, int]]]] = []
        self._stop_event = threading.Event()

    def tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (st := _stat(int(entry))) is not None:
                children.setdefault(st[0], []).append(int(entry))
        found, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def sample(self) -> None:
        procs: dict[int, tuple[str, float, int]] = {}
        rss = pss = 0
        for pid in self.tree():
            if (st := _stat(pid)) is None:
                continue
            kb = _kb(f"/proc/{pid}/status", "VmRSS:")
            rss, pss = rss + kb, pss + _kb(f"/proc/{pid}/smaps_rollup", "Pss:")
            procs[pid] = (_role(pid, self.root), st[1], kb)
        self.samples.append((time.monotonic(), rss, pss, procs))

    def run(self) -> None:
        while True:
            self.sample()
            if self._stop_event.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def window(self, t0: float, t1: float) -> dict:
        inside = [s for s in self.samples if t0 <= s[0] <= t1] or self.samples[-1:]
        if not inside:
            return {}
        peak_rss = max(inside, key=lambda s: s[1])
        first, last = inside[0], inside[-1]
        span = max(last[0] - first[0], 1e-9)
        cpu = {role: round(100 * (seconds - first[3][pid][1]) / span, 1)
               for pid, (role, seconds, _) in last[3].items() if pid in first[3]}  # fmt: skip
        by_process = {role: round(kb / 1024, 1) for role, _, kb in peak_rss[3].values()}
        pss = round(max(s[2] for s in inside) / 1024, 1)
        cpu_s = sum(seconds - first[3][pid][1] for pid, (_, seconds, _) in last[3].items() if pid in first[3])
        return {"samples": len(inside), "peak_rss_mib": round(peak_rss[1] / 1024, 1), "peak_pss_mib": pss,
                "cpu_percent": cpu, "cpu_s": round(cpu_s, 3), "peak_rss_by_process_mib": by_process}  # fmt: skip


@contextmanager
def retry_after_seen() -> Iterator[dict[str, int]]:
    """Count the loadtest's retried replies (429/503) with and without a Retry-After header."""
    from node import loadtest

    counts, original = {"with": 0, "without": 0}, loadtest.retry_after_s

    def spy(reply: Any) -> float:
        counts["with" if "retry-after" in reply.headers else "without"] += 1
        return original(reply)

    loadtest.retry_after_s = spy
    try:
        yield counts
    finally:
        loadtest.retry_after_s = original


# --------------------------------------------------------------------------- raw store insert
def build_blocks(
    rows_wanted: int, block_rows: int, spans_per_body: int = 100, fmt: str = "MsgPack"
) -> tuple[list[tuple[bytes, int]], bytes, float]:
    """~`rows_wanted` node rows (loadgen bodies → decode_batch → priced_rows) in blocks of
    `block_rows` rows in `fmt` ("MsgPack", or "Native" stitched as the flush does): the blocks
    (bytes, rows), the first body's rows alone (to warm a store up with), and the seconds spent."""
    from node.loadgen import BodyPool
    from pipeline.messages import ROWS_MSGPACK, ROWS_NATIVE, unpack_streams
    from stages.native import stitch
    from stages.price import PriceTable
    from stages.price_stage import priced_rows
    from stages.validate import decode_batch

    pool, table = BodyPool(min(64, rows_wanted // spans_per_body + 1), spans_per_body, "json"), PriceTable.load()
    native = fmt == "Native"

    def join(batches: list[tuple[bytes, int]]) -> bytes:
        if native:
            return b"".join(stitch([(count, unpack_streams(memoryview(data))) for data, count in batches]))
        return b"".join(data for data, _ in batches)

    blocks, parts, in_block, built, seq, warm_rows = [], [], 0, 0, 0, b""
    started = time.perf_counter()
    while built < rows_wanted:
        batch, now_ms = decode_batch(pool.body(seq), "json"), int(time.time() * 1000)
        data, count = priced_rows(batch, "org_bench", table, ingested_at_ms=now_ms, max_io_bytes=256 * 1024,  # type: ignore[arg-type]
                                  rows_format=ROWS_NATIVE if native else ROWS_MSGPACK)  # fmt: skip
        parts.append((data, count))
        warm_rows = warm_rows or join([(data, count)])  # the first body, inserted again untimed first
        in_block, built, seq = in_block + count, built + count, seq + 1
        if in_block >= block_rows or built >= rows_wanted:
            blocks.append((join(parts), in_block))
            parts, in_block = [], 0
    return blocks, warm_rows, time.perf_counter() - started


def raw_insert_child(
    rows_wanted: int, block_rows: int, streams: int = 1, spans_per_body: int = 100, fmt: str = "MsgPack"
) -> dict:
    """In this process: build ~`rows_wanted` node rows, insert them in `block_rows` blocks, through
    `streams` handles at once (one thread each, blocks dealt round-robin), in `fmt` ("MsgPack" or
    "Native")."""
    from pipeline.store import open_store
    from stages.schema import COLUMN_NAMES, TABLE, ddl

    blocks, warm_rows, build_s = build_blocks(rows_wanted, block_rows, spans_per_body, fmt)
    built = sum(n for _, n in blocks)
    with tempfile.TemporaryDirectory(prefix="bench-chdb-") as tmp:
        url = f"chdb://{Path(tmp, 'clickhouse').resolve()}"
        stores = [open_store(url, durable_inserts=False) for _ in range(streams)]  # the bare engine
        try:
            for statement in ddl("foglamp"):
                stores[0].command(statement)
            target = f"foglamp.{TABLE}"
            for i, store in enumerate(stores):
                store.insert_rows(target, COLUMN_NAMES, warm_rows, fmt=fmt, dedup_token=f"warm-up-{i}")  # type: ignore[arg-type]
            times: list[float] = [0.0] * len(blocks)

            def insert_every(k: int) -> None:  # this stream's share of the blocks
                for i in range(k, len(blocks), streams):
                    t = time.perf_counter()
                    stores[k].insert_rows(target, COLUMN_NAMES, blocks[i][0], fmt=fmt,  # type: ignore[arg-type]
                                          dedup_token=f"bench-{i}")
                    times[i] = time.perf_counter() - t

            threads = [threading.Thread(target=insert_every, args=(k,)) for k in range(streams)]
            cpu, wall = time.process_time(), time.perf_counter()  # process time: chDB's own threads included
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            stored = int(stores[0].query(f"SELECT count() FROM {target}", "tsv").split()[-1])
        finally:
            for store in stores:
                store.close()
    inserted = sum(n for _, n in blocks)
    size = sum(len(d) for d, _ in blocks)
    return {"rows": inserted, "blocks": len(blocks), "block_rows": block_rows, "streams": streams, "format": fmt,
            "rows_stored": stored - spans_per_body * streams,
            "block_mib": round(size / len(blocks) / 2**20, 1), "bytes_per_row": round(size / inserted),
            "rows_per_s": round(inserted / wall), "block_ms": [round(t * 1000, 1) for t in times],
            "cpu_cores": round(cpu / wall, 2), "cpu_us_per_row": round(cpu / inserted * 1e6, 1),
            "front_path_spans_per_s": round(built / build_s),  # decode+validate+price+encode, one core
            "je_malloc_conf": os.environ.get("JE_MALLOC_CONF", "")}  # fmt: skip


def store_env(*, node_allocator: bool = True) -> dict[str, str]:
    """The environment of a raw-insert child: with the allocator settings the node's writer runs
    its embedded store with (`MALLOC_ENV`, the operator's own values winning, as in the
    supervisor), or without any of them (jemalloc's and glibc's defaults)."""
    from pipeline.supervisor import MALLOC_ENV

    if node_allocator:
        return {**MALLOC_ENV, **os.environ}
    return {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}


def measure_raw_insert(
    rows: int, block_rows: int, streams: int = 1, *, node_allocator: bool = True, fmt: str = "MsgPack"
) -> dict:
    """The raw insert ceiling, in a child process of its own (the embedded store allows one owner),
    in `fmt` ("MsgPack" or "Native", issue 16's ceiling)."""
    argv = [sys.executable, "-m", "bench.ceilings", "raw-insert", str(rows), str(block_rows), str(streams), fmt]
    child = subprocess.Popen(argv, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=store_env(node_allocator=node_allocator), start_new_session=True)  # fmt: skip
    try:
        out, err = child.communicate(timeout=300)
    finally:
        _kill_group(child)
    if child.returncode != 0:
        raise RuntimeError(f"bench.ceilings raw-insert failed ({child.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _kill_group(child: subprocess.Popen) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


# --------------------------------------------------------------------------- hypercorn bare
def _asgi_app(accepted: bytes):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(accepted)).encode())]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": accepted})

    return app


def _quart_app(accepted: bytes):  # type: ignore[no-untyped-def]
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("bare")
    app.config["MAX_CONTENT_LENGTH"] = None

    @app.post("/ingest")
    async def ingest() -> Response:
        body = bytearray()
        async for chunk in request.body:  # read it as the node's front does
            body += chunk
        return Response(accepted, status=202, content_type="application/json")

    return app


def bare_server_child(fd: int, app_kind: str, spans: int) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from pipeline.config import Config as NodeConfig
    from stages.front import set_read_size

    accepted = json.dumps({"accepted": spans}).encode()
    app = _asgi_app(accepted) if app_kind == "asgi" else _quart_app(accepted)
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.keep_alive_timeout, config.backlog = 75.0, 2048
    config.accesslog = config.errorlog = None
    set_read_size(NodeConfig().http_read_bytes)  # Hypercorn as the node's fronts run it

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, config))
            print("READY", flush=True)

    trio.run(main)


@contextmanager
def bare_hypercorn(app_kind: str, workers: int = 2, spans: int = 100) -> Iterator[str]:
    """A bare Hypercorn server on 127.0.0.1 (`workers` processes, one shared socket): its URL."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    sock.set_inheritable(True)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    argv = [sys.executable, "-m", "bench.ceilings", "bare-server", str(sock.fileno()), app_kind, str(spans)]
    children: list[subprocess.Popen] = []
    try:
        for _ in range(workers):
            children.append(subprocess.Popen(argv, cwd=REPO, pass_fds=(sock.fileno(),), stdout=subprocess.PIPE,
                                             start_new_session=True))  # fmt: skip
        sock.close()
        for child in children:  # each prints READY once it serves (EOF if it died)
            assert child.stdout is not None
            if child.stdout.readline() != b"READY\n":
                raise RuntimeError(f"bare hypercorn ({app_kind}) exited during start")
        yield url
    finally:
        sock.close()
        for child in children:
            _kill_group(child)


if __name__ == "__main__":  # raw-insert ROWS BLOCK_ROWS STREAMS [MsgPack|Native] | bare-server FD asgi|quart SPANS
    if sys.argv[1] == "raw-insert":
        fmt = sys.argv[5] if len(sys.argv) > 5 else "MsgPack"
        print(json.dumps(raw_insert_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), fmt=fmt)))
    else:
        bare_server_child(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
