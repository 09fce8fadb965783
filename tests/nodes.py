"""Test helpers that drive the real node: `run.py` as a subprocess, HTTP over loopback.

Nothing here is a fake: `Node` starts `run.py serve` exactly as an operator would (with
`--workers 2` by default), the CLI is called as a subprocess, and rows are read back with
`run.py query`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RUN_PY = str(REPO / "run.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "CLICKHOUSE_URL"))}
    if "CLICKHOUSE_URL" in os.environ and os.environ.get("FOGLAMP_TEST_SERVER") == "1":
        env["CLICKHOUSE_URL"] = os.environ["CLICKHOUSE_URL"]
    env["FOGLAMP_NO_BOOTSTRAP"] = "1"
    # The default disk reserve (256 MiB) would refuse batches on a test machine with little free
    # disk; tests/e2e/test_disk_full.py tests the reserve with its own floor.
    env["INGEST_MIN_FREE_DISK_BYTES"] = str(32 << 20)
    env.update(extra or {})
    return env


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run(
        [sys.executable, RUN_PY, *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=child_env(env), timeout=120,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def create_org(data_dir: Path, name: str, *extra: str) -> str:
    return cli(data_dir, "orgs", "create", name, *extra).stdout.strip().splitlines()[-1]


def create_key(data_dir: Path, org: str, *extra: str) -> str:
    return cli(data_dir, "keys", "create", "--org", org, *extra).stdout.strip().splitlines()[-1]


def query(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    out = cli(data_dir, "query", sql, "--format", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@dataclass
class Node:
    data_dir: Path
    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> Node:
        """Start `run.py serve` without waiting for it (see `start`)."""
        self.log_path = self.data_dir.parent / f"node-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, RUN_PY, "serve", "--port", str(self.port), "--workers",
             str(self.workers), "--data-dir", str(self.data_dir)],
            env=child_env(self.env), stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        return self

    def start(self, timeout_s: float = 60.0) -> Node:
        """Start the node and return once a front answers /readyz 200 (another may still be starting)."""
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"node exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"node not ready in {timeout_s}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def signal(self, signum: int = signal.SIGTERM, *, group: bool = False) -> None:
        assert self.process is not None
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM to the supervisor, as Docker does; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"node did not stop in {timeout_s}s:\n{self.logs()}") from None

    def kill(self) -> None:
        """kill -9 of the whole process group: a crash."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def post(self, body: bytes | dict, *, key: str | None, headers: dict[str, str] | None = None,
             client: httpx.Client | None = None) -> httpx.Response:  # fmt: skip
        data = json.dumps(body, ensure_ascii=False).encode() if isinstance(body, dict) else body
        all_headers = {"Content-Type": "application/json"}
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        all_headers.update(headers or {})
        return (client or httpx).post(f"{self.url}/ingest", content=data, headers=all_headers,
                                      timeout=30)  # fmt: skip


def span(span_id: str, **fields: Any) -> dict[str, Any]:
    base = {"id": span_id, "name": f"span {span_id}", "startTime": "2026-11-20T10:00:00Z"}
    base.update(fields)
    return base


def batch(*traces: dict[str, Any]) -> dict[str, Any]:
    return {"version": "v1", "traces": list(traces)}


def trace(trace_id: str, *spans: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": trace_id, "spans": list(spans), **fields}


def wait_for_rows(data_dir: Path, sql: str, expected: int, timeout_s: float = 30.0) -> int:
    """Poll `SELECT count() …` until it reaches `expected` (flushes are asynchronous)."""
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        count = int(query(data_dir, sql)[0]["c"])
        if count >= expected:
            return count
        time.sleep(0.3)
    return count
