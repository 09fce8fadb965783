"""A full disk is an outage, not a loss (issue 14): the data dir on a small tmpfs mounted here."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.disk import free_bytes
from tests.nodes import Node, batch, create_key, create_org, span, trace, wait_for_rows

MiB = 1024 * 1024
FLOOR = 8 * MiB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs, unmounted at the end; skips where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (EPERM?): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path, leave_free: int) -> None:
    """Write a ballast file until only `leave_free` bytes are free on `path`'s file system."""
    chunk = b"\0" * MiB
    with open(path, "wb") as out:
        while (free := free_bytes(path)) > leave_free:
            try:
                out.write(chunk[: min(MiB, free - leave_free)])
                out.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break


def big_batch(spans: int = 60) -> dict:
    pad = "x" * 1500  # ~100 KB per batch, as in the report
    return batch(trace(f"t-{uuid.uuid4().hex}", *[span(f"s{i}", input=pad) for i in range(spans)]))


def post_until_refused(node: Node, key: str, client: httpx.Client) -> tuple[int, list[httpx.Response]]:
    """Post big batches until 5 are refused (at most 150): the spans accepted, and the refusals."""
    accepted, refused = 0, []
    for _ in range(150):
        response = node.post(big_batch(), key=key, client=client)
        if response.status_code == 202:
            accepted += response.json()["accepted"]
        else:
            refused.append(response)
            if len(refused) >= 5:
                break
    return accepted, refused


def test_a_full_disk_refuses_new_batches_then_recovers_and_loses_nothing(small_disk: Path) -> None:
    data_dir = small_disk / "data"
    env = {"INGEST_MIN_FREE_DISK_BYTES": str(FLOOR), "INGEST_SPOOL_SEGMENT_BYTES": str(4 * MiB),
           "INGEST_FLUSH_INTERVAL_MS": "200"}  # fmt: skip
    node = Node(data_dir, env=env).start()
    try:
        key = create_key(data_dir, create_org(data_dir, "acme"))
        ballast = small_disk / "ballast"
        fill(ballast, leave_free=FLOOR + 3 * MiB)
        with httpx.Client() as client:
            accepted, refused = post_until_refused(node, key, client)
            for response in refused:
                assert response.status_code == 503, response.text
                assert response.json() == {"error": "overloaded"}
            assert len(refused) >= 5, "the floor never refused a batch"
            ready = client.get(f"{node.url}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["status"] == "degraded"
            assert "INGEST_MIN_FREE_DISK_BYTES" in ready.json()["disk"]
            assert node.process is not None and node.process.poll() is None, node.logs()

            ballast.unlink()  # the operator frees space: the node accepts again by itself
            deadline = time.monotonic() + 60
            while client.get(f"{node.url}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, node.logs()
                time.sleep(0.2)
            response = node.post(big_batch(), key=key, client=client)
            assert response.status_code == 202, response.text
            accepted += response.json()["accepted"]
        sql = "SELECT count() AS c FROM foglamp.spans FINAL"
        assert wait_for_rows(data_dir, sql, accepted, timeout_s=120) == accepted
        assert not list((data_dir / "deadletter").glob("*")) if (data_dir / "deadletter").exists() else True
        assert "flush_rejected" not in node.logs()
    finally:
        with contextlib.suppress(Exception):
            node.stop()


def test_without_a_floor_a_full_disk_is_retried_and_nothing_accepted_is_lost(small_disk: Path) -> None:
    """No reserve: the spool and the store hit ENOSPC themselves. Batches get 503, the writer
    keeps running, and after space is freed every 202'd span is stored."""
    data_dir = small_disk / "data"
    env = {"INGEST_MIN_FREE_DISK_BYTES": "0", "INGEST_SPOOL_SEGMENT_BYTES": str(4 * MiB),
           "INGEST_FLUSH_INTERVAL_MS": "200", "INGEST_FLUSH_RETRY_MAX_S": "1"}  # fmt: skip
    node = Node(data_dir, env=env).start()
    try:
        key = create_key(data_dir, create_org(data_dir, "acme"))
        ballast = small_disk / "ballast"
        fill(ballast, leave_free=3 * MiB)
        with httpx.Client() as client:
            accepted, refused = post_until_refused(node, key, client)
            for response in refused:
                assert response.status_code == 503, response.text
            assert len(refused) >= 5, "a full disk never refused a batch"
            time.sleep(2)  # the flush meets the full disk too
            assert node.process is not None and node.process.poll() is None, node.logs()
            ballast.unlink()
            deadline = time.monotonic() + 90
            while True:
                response = node.post(big_batch(), key=key, client=client)
                if response.status_code == 202:
                    accepted += response.json()["accepted"]
                    break
                assert time.monotonic() < deadline, node.logs()
                time.sleep(0.5)
        sql = "SELECT count() AS c FROM foglamp.spans FINAL"
        assert wait_for_rows(data_dir, sql, accepted, timeout_s=120) == accepted
        assert "flush_rejected" not in node.logs()
    finally:
        with contextlib.suppress(Exception):
            node.stop()
