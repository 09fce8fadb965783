"""Durability and lifecycle, end to end (SPEC §6): crashes with kill -9, torn spool tails, store
outages through a fault-injecting store, drains under load, killed workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.nodes import Node, batch, create_key, create_org, query, span, trace, wait_for_rows


def spans_batch(trace_id: str, n: int) -> dict:
    return batch(trace(trace_id, *[span(f"s{i}", kind="llm", model="gpt-4o-mini",
                                        usage={"inputTokens": 10, "outputTokens": 5}) for i in range(n)]))  # fmt: skip


def setup_key(data_dir: Path, name: str = "acme") -> str:
    return create_key(data_dir, create_org(data_dir, name))


def total(data_dir: Path, final: bool = True) -> int:
    sql = f"SELECT count() AS c FROM foglamp.spans{' FINAL' if final else ''}"
    return int(query(data_dir, sql)[0]["c"])


def node_over_a_faulty_store(tmp_path: Path, env: dict[str, str]) -> tuple[Node, Path, Path, str]:
    """A started node whose store fails while the returned fault file exists (pipeline/testing.py):
    (node, data dir, fault file, API key)."""
    data_dir, fault = tmp_path / "data", tmp_path / "store-down"
    node = Node(data_dir, env={"INGEST_STORE_FAULT_FILE": str(fault), **env}).start()
    return node, data_dir, fault, setup_key(data_dir)


def post_many(node: Node, key: str, batches: int, spans: int) -> int:
    accepted = 0
    with httpx.Client() as client:
        for _ in range(batches):
            response = node.post(spans_batch(f"t-{uuid.uuid4().hex}", spans), key=key, client=client)
            assert response.status_code == 202, response.text
            accepted += response.json()["accepted"]
    return accepted


def test_kill_9_then_restart_keeps_every_acknowledged_span_exactly_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    slow_flush = {"INGEST_FLUSH_INTERVAL_MS": "600000", "INGEST_FLUSH_MAX_ROWS": "100000000"}
    node = Node(data_dir, env=slow_flush).start()
    key = setup_key(data_dir)
    accepted = post_many(node, key, batches=30, spans=10)
    node.kill()  # the whole process group, no drain: the rows exist only in the spool
    restarted = Node(data_dir, env={"INGEST_FLUSH_INTERVAL_MS": "200"}).start()
    try:
        assert wait_for_rows(data_dir, "SELECT count() AS c FROM foglamp.spans FINAL", accepted) == accepted
        # Replay twice more (kill again right away): still exactly once.
        restarted.kill()
        again = Node(data_dir, env={"INGEST_FLUSH_INTERVAL_MS": "200"}).start()
        time.sleep(1.0)
        assert again.stop() == 0
    finally:
        restarted.kill() if restarted.process and restarted.process.poll() is None else None
    query(data_dir, "OPTIMIZE TABLE foglamp.spans FINAL")
    assert total(data_dir, final=False) == accepted
    assert total(data_dir) == accepted


def test_torn_spool_tail_is_skipped_and_the_node_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    node = Node(data_dir, env={"INGEST_FLUSH_INTERVAL_MS": "600000", "INGEST_FLUSH_MAX_ROWS": "100000000"}).start()
    key = setup_key(data_dir)
    accepted = post_many(node, key, batches=5, spans=4)
    node.kill()
    segment = sorted((data_dir / "spool").glob("*.seg"))[-1]
    with open(segment, "ab") as tail:  # a crash in the middle of a record: header says 1000 bytes
        tail.write((1000).to_bytes(4, "little") + b"\x00\x01\x02\x03" + b"half a record")
    restarted = Node(data_dir, env={"INGEST_FLUSH_INTERVAL_MS": "200"}).start()
    try:
        assert wait_for_rows(data_dir, "SELECT count() AS c FROM foglamp.spans FINAL", accepted) == accepted
        assert "spool_corrupt" in restarted.logs()
        assert post_many(restarted, key, batches=1, spans=3) == 3  # appends work after the torn tail
        assert wait_for_rows(data_dir, "SELECT count() AS c FROM foglamp.spans FINAL", accepted + 3) == accepted + 3
    finally:
        assert restarted.stop() == 0


def test_store_outage_spools_then_sheds_load_then_recovers(tmp_path: Path) -> None:
    env = {"INGEST_FLUSH_INTERVAL_MS": "100", "INGEST_FLUSH_RETRY_MAX_S": "0.5", "INGEST_SPOOL_MAX_BYTES": "60000"}
    node, data_dir, fault, key = node_over_a_faulty_store(tmp_path, env)
    try:
        fault.write_text("down")
        accepted, refused = 0, None
        with httpx.Client() as client:
            for _ in range(200):
                response = node.post(spans_batch(f"t-{uuid.uuid4().hex}", 10), key=key, client=client)
                if response.status_code == 503:
                    refused = response
                    break
                assert response.status_code == 202, response.text
                accepted += 10
        assert accepted > 0, "the spool accepts during an outage"
        assert refused is not None and refused.json() == {"error": "overloaded"}
        assert int(refused.headers["Retry-After"]) >= 1
        ready = httpx.get(f"{node.url}/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "degraded"
        fault.unlink()  # the store is back
        assert wait_for_rows(data_dir, "SELECT count() AS c FROM foglamp.spans FINAL", accepted) == accepted
        deadline = time.monotonic() + 10
        while httpx.get(f"{node.url}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert httpx.get(f"{node.url}/readyz").status_code == 200
        assert post_many(node, key, batches=2, spans=10) == 20  # accepting again
    finally:
        fault.unlink(missing_ok=True)
        assert node.stop() == 0
    assert total(data_dir) == accepted + 20


def test_admissions_wait_while_the_spool_is_past_its_high_water_mark(tmp_path: Path) -> None:
    """Backpressure before the cap: with the store down and a backlog past the high-water mark, a
    request is admitted only after INGEST_ADMIT_MAX_WAIT_MS (and still accepted); once the flush
    has caught up, admission is immediate again."""
    env = {"INGEST_FLUSH_INTERVAL_MS": "100", "INGEST_FLUSH_RETRY_MAX_S": "0.3",
           "INGEST_SPOOL_HIGH_WATER_BYTES": "1000", "INGEST_ADMIT_MAX_WAIT_MS": "1500"}  # fmt: skip
    node, data_dir, fault, key = node_over_a_faulty_store(tmp_path, env)
    try:
        fault.write_text("down")
        with httpx.Client(timeout=30) as client:

            def timed_post() -> float:
                started = time.monotonic()
                response = node.post(spans_batch(f"t-{uuid.uuid4().hex}", 10), key=key, client=client)
                assert response.status_code == 202, response.text
                return time.monotonic() - started

            assert timed_post() < 1.0  # empty spool: admitted at once; its batch stays unflushed
            assert timed_post() >= 1.5  # backlog past the mark: held for the longest wait, then accepted
            metrics = client.get(f"{node.url}/metrics").text
            assert re.search(r"^foglamp_admissions_delayed_total [1-9]", metrics, re.M), metrics
            fault.unlink()  # the store is back: the flush catches up
            assert wait_for_rows(data_dir, "SELECT count() AS c FROM foglamp.spans FINAL", 20) == 20
            assert timed_post() < 1.0
    finally:
        fault.unlink(missing_ok=True)
        assert node.stop() == 0
    assert total(data_dir) == 30


@pytest.mark.parametrize("group", [False, True], ids=["sigterm-to-supervisor", "sigint-to-group"])
def test_drain_under_load_answers_503_then_exits_0_with_every_row_stored(tmp_path: Path, group: bool) -> None:
    data_dir = tmp_path / "data"
    node = Node(data_dir, env={"INGEST_DRAIN_GRACE_S": "1.5", "INGEST_FLUSH_INTERVAL_MS": "5000"}).start()
    key = setup_key(data_dir)
    accepted: list[int] = []
    draining: list[httpx.Response] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                try:
                    r = node.post(spans_batch(f"t-{uuid.uuid4().hex}", 5), key=key, client=client)
                except httpx.HTTPError:
                    continue  # the listener closed at the end of the grace period
                if r.status_code == 202:
                    accepted.append(r.json()["accepted"])
                elif r.status_code == 503:
                    draining.append(r)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    node.signal(signal.SIGINT if group else signal.SIGTERM, group=group)
    time.sleep(0.7)  # inside the grace period
    ready = httpx.get(f"{node.url}/readyz")
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert node.process is not None
    code = node.process.wait(timeout=60)
    stop.set()
    for t in threads:
        t.join()
    assert code == 0, node.logs()
    assert '"writer_exit": 0' in node.logs() and "child_drain_timeout" not in node.logs()
    assert accepted, "requests were accepted before the drain"
    assert draining and all(r.json() == {"error": "draining"} for r in draining)
    assert all(r.headers.get("connection") == "close" for r in draining)
    assert total(data_dir) == sum(accepted)  # node stopped: read the store directly


def test_a_drain_that_starts_while_the_fronts_are_still_starting_answers_503_on_every_socket(tmp_path: Path) -> None:
    """The drain flake's cause: a front still importing when SIGTERM came was killed by it (no
    handler yet), and the connections the kernel sent to its socket were never answered. Here the
    signal comes right after the supervisor spawned the fronts, while both are still starting."""
    node = Node(tmp_path / "data", env={"INGEST_DRAIN_GRACE_S": "3"}).launch()
    assert node.process is not None
    deadline = time.monotonic() + 60
    while '"node_ready"' not in node.logs():  # the fronts were spawned a moment ago
        assert node.process.poll() is None and time.monotonic() < deadline, node.logs()
        time.sleep(0.02)
    node.signal(signal.SIGTERM)
    with httpx.Client(timeout=30) as client:  # new connections land on both fronts' sockets
        answers = [client.get(f"{node.url}/readyz", headers={"Connection": "close"}) for _ in range(8)]
    assert [(r.status_code, r.json()) for r in answers] == [(503, {"status": "draining"})] * 8
    assert node.process.wait(timeout=60) == 0, node.logs()
    assert node.logs().count('"event": "draining"') == 2, node.logs()  # both fronts drained, none killed


def nice_of(pid: int | str) -> int:
    return os.getpriority(os.PRIO_PROCESS, int(pid))


def thread_nices(writer_pid: str, prefix: str, timeout_s: float = 10.0) -> list[int]:
    """Niceness of the writer's threads named `prefix`…, once the writer reniced them."""
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = [t for t in Path(f"/proc/{writer_pid}/task").iterdir()
                 if (t / "comm").read_text().startswith(prefix)]  # fmt: skip
        nices = sorted(nice_of(t.name) for t in tasks)
        if (nices and nices[0] != nice_of(writer_pid)) or time.monotonic() > deadline:
            return nices
        time.sleep(0.2)


def test_killed_worker_is_restarted_and_the_node_keeps_serving(tmp_path: Path) -> None:
    """Also: fronts, the restarted one included, run INGEST_FRONT_NICE nicer than the writer, the
    writer's merge threads INGEST_MERGE_NICE nicer, and the thread that calls the store
    INGEST_STORE_NICE nicer."""
    data_dir = tmp_path / "data"
    node = Node(data_dir, env={"INGEST_FRONT_NICE": "7"}).start()
    key = setup_key(data_dir)
    try:
        assert node.process is not None
        children = subprocess.run(["pgrep", "-P", str(node.process.pid), "-f", "_front"],
                                  capture_output=True, text=True).stdout.split()  # fmt: skip
        writer = subprocess.run(["pgrep", "-P", str(node.process.pid), "-f", "_writer"],
                                capture_output=True, text=True).stdout.split()  # fmt: skip
        assert len(children) == 2 and len(writer) == 1
        base = nice_of(node.process.pid)
        assert nice_of(writer[0]) == base
        assert [nice_of(pid) for pid in children] == [min(base + 7, 19)] * 2
        merge_nices = thread_nices(writer[0], "MergeMutate")
        assert merge_nices and set(merge_nices) == {min(base + 19, 19)}  # INGEST_MERGE_NICE default
        merges = [int(t.name) for t in Path(f"/proc/{writer[0]}/task").iterdir()
                  if (t / "comm").read_text().startswith("MergeMutate")]  # fmt: skip
        assert {os.sched_getscheduler(tid) for tid in merges} == {os.SCHED_IDLE}  # INGEST_MERGE_SCHED_IDLE
        store_nices = thread_nices(writer[0], "foglamp-store")  # and threads the store started from it
        assert store_nices and set(store_nices) == {min(base + 4, 19)}  # INGEST_STORE_NICE default
        subprocess.run(["kill", "-9", children[0]], check=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = subprocess.run(["pgrep", "-P", str(node.process.pid), "-f", "_front"],
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
            if len(now) == 2 and children[0] not in now:
                break
            time.sleep(0.2)
        assert len(now) == 2 and children[0] not in now
        assert [nice_of(pid) for pid in now] == [min(base + 7, 19)] * 2
        assert post_many(node, key, batches=10, spans=2) == 20
        assert '"child_died"' in node.logs()
    finally:
        assert node.stop() == 0
    assert total(data_dir) == 20


def test_killed_writer_is_restarted_from_the_spool(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    node = Node(data_dir, env={"INGEST_FLUSH_INTERVAL_MS": "600000", "INGEST_FLUSH_MAX_ROWS": "100000000"}).start()
    key = setup_key(data_dir)
    try:
        accepted = post_many(node, key, batches=5, spans=4)
        assert node.process is not None
        writer = subprocess.run(["pgrep", "-P", str(node.process.pid), "-f", "_writer"],
                                capture_output=True, text=True).stdout.split()  # fmt: skip
        subprocess.run(["kill", "-9", writer[0]], check=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = node.post(spans_batch(f"t-{uuid.uuid4().hex}", 4), key=key)
                if r.status_code == 202:
                    accepted += 4
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("the node did not accept again after the writer was killed")
    finally:
        assert node.stop() == 0
    assert total(data_dir) == accepted


def test_a_worker_sheds_load_past_its_in_flight_cap_before_reading_the_body(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    node = Node(data_dir, workers=1, env={"INGEST_MAX_INFLIGHT_REQUESTS": "1"}).start()
    key = setup_key(data_dir)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps(spans_batch(f"t-{uuid.uuid4().hex}", 3)).encode()
    results: dict[str, httpx.Response] = {}

    def slow_body():  # holds the worker's only slot for about 1.5 s
        for i in range(0, len(body), len(body) // 3 + 1):
            yield body[i : i + len(body) // 3 + 1]
            time.sleep(0.5)

    def slow() -> None:
        results["slow"] = httpx.post(f"{node.url}/ingest", content=slow_body(), headers=headers, timeout=30)

    try:
        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.5)
        shed = node.post(spans_batch(f"t-{uuid.uuid4().hex}", 1), key=key)
        thread.join()
        assert shed.status_code == 503 and shed.json() == {"error": "overloaded"}
        assert int(shed.headers["Retry-After"]) >= 1
        assert shed.headers["Connection"] == "close"  # its body is never read: the connection goes
        assert results["slow"].status_code == 202  # the request holding the slot is unaffected
        assert node.post(spans_batch(f"t-{uuid.uuid4().hex}", 1), key=key).status_code == 202
    finally:
        assert node.stop() == 0
    assert total(data_dir) == 4


def test_drain_with_the_store_down_exits_in_time_and_keeps_the_rows_for_the_next_start(tmp_path: Path) -> None:
    env = {"INGEST_DRAIN_TIMEOUT_S": "2", "INGEST_DRAIN_GRACE_S": "0.2", "INGEST_FLUSH_INTERVAL_MS": "100",
           "INGEST_FLUSH_RETRY_MAX_S": "0.2"}  # fmt: skip
    node, data_dir, fault, key = node_over_a_faulty_store(tmp_path, env)
    fault.write_text("down")
    accepted = post_many(node, key, batches=5, spans=4)
    started = time.monotonic()
    assert node.stop(timeout_s=30) == 0
    assert time.monotonic() - started < 15  # bounded by the drain timeout, not by the outage
    assert '"drain_timeout"' in node.logs()
    fault.unlink()
    restarted = Node(data_dir, env={"INGEST_FLUSH_INTERVAL_MS": "200"}).start()
    try:
        assert wait_for_rows(data_dir, "SELECT count() AS c FROM foglamp.spans FINAL", accepted) == accepted
    finally:
        assert restarted.stop() == 0
