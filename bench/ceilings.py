"""The ceilings `bench/run.py` compares the node with, and the probes it watches the node through.

    raw store insert   the node's own rows (loadgen bodies → decode_batch → priced_rows) inserted
                       into a fresh embedded chDB store in big blocks (`ClickHouseStore.insert_msgpack`),
                       in a child process so chDB's threads and memory are gone before the node runs
    hypercorn bare     Hypercorn (trio worker) answering 202 to the same POST bodies, 2 processes
                       sharing one listening socket as the node's fronts do, raw ASGI or Quart-Trio
    TreeSampler        VmRSS / PSS / CPU time of a process and all its descendants, every 0.5 s

    python -m bench.ceilings raw-insert --rows N --block-rows B     (prints one JSON object)
    python -m bench.ceilings bare-server --fd FD --app asgi|quart    (serves until killed)

Resource handling: every child is started in its own session and killed by process group in a
`finally`; temporary stores live in `TemporaryDirectory`s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ORG_ID = "org_bench"


# --------------------------------------------------------------------------- the machine
def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024**2, 1),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


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
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _role(pid: int, root: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    if pid == root:
        return "supervisor"
    return next((a.decode().lstrip("_") for a in argv if a in (b"_writer", b"_front")), "other")


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
            st = _stat(pid)
            if st is None:
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
        if self.is_alive():
            self.join(timeout=5)

    def window(self, t0: float, t1: float) -> dict:
        inside = [s for s in self.samples if t0 <= s[0] <= t1] or self.samples[-1:]
        if not inside:
            return {}
        peak_rss = max(inside, key=lambda s: s[1])
        first, last = inside[0], inside[-1]
        span = max(last[0] - first[0], 1e-9)
        cpu: dict[str, float] = {}
        for pid, (role, seconds, _) in last[3].items():
            if pid in first[3]:
                name = role if role != "front" else f"front-{pid}"
                cpu[name] = round(100 * (seconds - first[3][pid][1]) / span, 1)
        return {
            "samples": len(inside),
            "peak_rss_mib": round(peak_rss[1] / 1024, 1),
            "peak_pss_mib": round(max(s[2] for s in inside) / 1024, 1),
            "peak_rss_by_process_mib": {(r if r != "front" else f"front-{p}"): round(kb / 1024, 1)
                                        for p, (r, _, kb) in peak_rss[3].items()},  # fmt: skip
            "cpu_percent": cpu,
        }


# --------------------------------------------------------------------------- raw store insert
def raw_insert_child(rows_wanted: int, block_rows: int, spans_per_body: int = 100) -> dict:
    """In this process: build ~`rows_wanted` node rows, insert them in `block_rows` blocks."""
    from bench.loadgen import BodyPool
    from pipeline.store import open_store
    from stages.payload import Batch
    from stages.price import PriceTable
    from stages.price_stage import priced_rows
    from stages.schema import COLUMN_NAMES, TABLE, ddl
    from stages.validate import decode_batch

    pool, table = BodyPool(64, spans_per_body, "json"), PriceTable.load()
    blocks: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    in_block = built = seq = 0
    started = time.perf_counter()
    while built < rows_wanted:
        batch = decode_batch(pool.body(seq), "json")
        assert isinstance(batch, Batch), batch
        data, count = priced_rows(batch, ORG_ID, table, ingested_at_ms=int(time.time() * 1000),
                                  max_io_bytes=256 * 1024)  # fmt: skip
        parts.append(data)
        in_block, built, seq = in_block + count, built + count, seq + 1
        if in_block >= block_rows or built >= rows_wanted:
            blocks.append((b"".join(parts), in_block))
            parts, in_block = [], 0
    build_s = time.perf_counter() - started
    warm = decode_batch(pool.body(seq), "json")
    assert isinstance(warm, Batch)
    warm_rows, _ = priced_rows(warm, ORG_ID, table, ingested_at_ms=0, max_io_bytes=256 * 1024)
    with tempfile.TemporaryDirectory(prefix="bench-chdb-") as tmp:
        store = open_store(f"chdb://{Path(tmp, 'clickhouse').resolve()}")
        try:
            for statement in ddl("foglamp"):
                store.command(statement)
            target = f"foglamp.{TABLE}"
            store.insert_msgpack(target, COLUMN_NAMES, warm_rows, dedup_token="warm-up")
            times = []
            for i, (data, _) in enumerate(blocks):
                t = time.perf_counter()
                store.insert_msgpack(target, COLUMN_NAMES, data, dedup_token=f"bench-{i}")
                times.append(time.perf_counter() - t)
            stored = int(store.query(f"SELECT count() FROM {target}", "tsv").split()[-1])
        finally:
            store.close()
    inserted = sum(n for _, n in blocks)
    return {
        "rows": inserted,
        "blocks": len(blocks),
        "block_rows": block_rows,
        "block_mib": round(sum(len(d) for d, _ in blocks) / len(blocks) / 2**20, 1),
        "bytes_per_row": round(sum(len(d) for d, _ in blocks) / inserted),
        "rows_per_s": round(inserted / sum(times)),
        "block_ms": [round(t * 1000, 1) for t in times],
        "rows_stored": stored - spans_per_body,
        "front_path_spans_per_s": round(built / build_s),  # decode+validate+price+encode, one core
    }


def measure_raw_insert(rows: int, block_rows: int) -> dict:
    out = _run_child(["raw-insert", "--rows", str(rows), "--block-rows", str(block_rows)], timeout_s=300)
    return json.loads(out.strip().splitlines()[-1])


def _run_child(args: list[str], timeout_s: float) -> str:
    child = subprocess.Popen([sys.executable, "-m", "bench.ceilings", *args], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        out, err = child.communicate(timeout=timeout_s)
    finally:
        _kill_group(child)
    if child.returncode != 0:
        raise RuntimeError(f"bench.ceilings {args[0]} failed ({child.returncode}):\n{err[-3000:]}")
    return out


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
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

    accepted = json.dumps({"accepted": spans}).encode()
    app = _asgi_app(accepted) if app_kind == "asgi" else _quart_app(accepted)
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.keep_alive_timeout, config.backlog = 75.0, 2048
    config.accesslog = config.errorlog = None
    trio.run(partial(serve, app, config))


@contextmanager
def bare_hypercorn(app_kind: str, workers: int = 2, spans: int = 100) -> Iterator[str]:
    """A bare Hypercorn server on 127.0.0.1 (`workers` processes, one shared socket): its URL."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    sock.set_inheritable(True)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    argv = [sys.executable, "-m", "bench.ceilings", "bare-server", "--fd", str(sock.fileno()),
            "--app", app_kind, "--spans", str(spans)]  # fmt: skip
    children: list[subprocess.Popen] = []
    try:
        for _ in range(workers):
            children.append(subprocess.Popen(argv, cwd=REPO, pass_fds=(sock.fileno(),), start_new_session=True))
        sock.close()
        deadline = time.monotonic() + 30
        while True:
            if any(c.poll() is not None for c in children):
                raise RuntimeError(f"bare hypercorn ({app_kind}) exited during start")
            try:
                req = urllib.request.Request(f"{url}/ingest", data=b"{}", method="POST")
                with urllib.request.urlopen(req, timeout=1) as reply:
                    if reply.status == 202:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        sock.close()
        for child in children:
            _kill_group(child)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.ceilings")
    sub = parser.add_subparsers(dest="command", required=True)
    raw = sub.add_parser("raw-insert")
    raw.add_argument("--rows", type=int, default=200_000)
    raw.add_argument("--block-rows", type=int, default=50_000)
    bare = sub.add_parser("bare-server")
    bare.add_argument("--fd", type=int, required=True)
    bare.add_argument("--app", choices=["asgi", "quart"], default="asgi")
    bare.add_argument("--spans", type=int, default=100)
    args = parser.parse_args(argv)
    if args.command == "raw-insert":
        print(json.dumps(raw_insert_child(args.rows, args.block_rows)))
    else:
        bare_server_child(args.fd, args.app, args.spans)


if __name__ == "__main__":
    main(sys.argv[1:])
