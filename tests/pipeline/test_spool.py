"""The write-ahead spool on real files: group commit, rotation, checkpoints, replay, torn and
corrupt data, SIGKILL in a loop, and one appender beside one reader/checkpointer."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, RetryableError
from pipeline.spool import BEGINNING, HEADER_SIZE, RECORD_OVERHEAD, Position, Spool

ROOT = Path(__file__).resolve().parents[2]


class CountingSpool(Spool):
    """Counts fsyncs: the fault seam used for real."""

    syncs = 0

    def _sync(self, fd: int) -> None:
        self.syncs += 1
        super()._sync(fd)


class FailingSpool(Spool):
    """A disk whose next fsync fails (EIO) when `fail_next` is set."""

    fail_next = False

    def _sync(self, fd: int) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError(5, "Input/output error (injected)")
        super()._sync(fd)


def payload(n: int) -> bytes:
    """A deterministic, self-describing payload of varying size."""
    return f"{n}:".encode().ljust(10 + n * 7919 % 3000, b"x")


def read_all(spool: Spool, start: Position = BEGINNING) -> tuple[list[bytes], Position]:
    out: list[bytes] = []
    while True:
        got, nxt = spool.read(start, max_bytes=1 << 20)
        out += [bytes(view) for view in got]
        if nxt == start:
            return out, start
        start = nxt


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def warnings(captured: str) -> list[dict]:
    lines = [json.loads(line) for line in captured.splitlines() if line.startswith("{")]
    return [line for line in lines if line["level"] == "warning"]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def test_round_trip(spool_dir: Path) -> None:
    with Spool.open(spool_dir) as spool:
        assert spool.checkpointed == (BEGINNING, None)
        assert spool.read(BEGINNING, max_bytes=100) == ([], BEGINNING)
        end = spool.append([b"hello"])
        assert end == spool.end == Position(1, HEADER_SIZE + RECORD_OVERHEAD + 5)
        assert spool.read(BEGINNING, max_bytes=100) == ([b"hello"], end)
        assert spool.read(end, max_bytes=100) == ([], end)


def test_the_on_disk_format_sums_with_zlibs_crc32(spool_dir: Path) -> None:
    """The checksums come from ISA-L, but they are zlib's crc32: spools stay readable either way."""
    payload = os.urandom(300_000)
    with Spool.open(spool_dir) as spool:
        spool.append([payload])
    data = next(spool_dir.glob("*.seg")).read_bytes()
    assert zlib.crc32(data[: HEADER_SIZE - 4]) == struct.unpack_from("<I", data, HEADER_SIZE - 4)[0]
    length, crc = struct.unpack_from("<II", data, HEADER_SIZE)
    assert length == len(payload) and data[HEADER_SIZE + RECORD_OVERHEAD :] == payload
    assert crc == zlib.crc32(payload)


def test_group_append_is_one_fsync_and_returns_the_end(spool_dir: Path) -> None:
    with CountingSpool.open(spool_dir) as spool:
        before = spool.syncs
        group = [payload(i) for i in range(16)]
        end = spool.append(group)
        assert spool.syncs - before == 1
        assert end == spool.end
        assert end.offset == HEADER_SIZE + sum(RECORD_OVERHEAD + len(p) for p in group)
        assert spool.append([]) == end and spool.syncs - before == 1
        assert read_all(spool) == (group, end)


def test_a_group_of_more_buffers_than_one_write_takes_is_written_whole(spool_dir: Path) -> None:
    # Records are written without joining them (pwritev), at most IOV_MAX buffers per call.
    with CountingSpool.open(spool_dir) as spool:
        group = [payload(i) for i in range(1500)] + [bytearray(b"a bytearray, as the writer spools")]
        before = spool.syncs
        end = spool.append(group)
        assert spool.syncs - before == 1
        assert read_all(spool) == ([bytes(p) for p in group], end)
    with Spool.open(spool_dir) as reopened:  # and durably: read back after a reopen
        assert read_all(reopened)[0] == [bytes(p) for p in group]


def test_read_returns_views_into_one_buffer(spool_dir: Path) -> None:
    with Spool.open(spool_dir) as spool:
        group = [payload(i) for i in range(50)]
        spool.append(group)
        records, _ = spool.read(BEGINNING, max_bytes=1 << 20)
    assert [bytes(r) for r in records] == group
    assert all(isinstance(r, memoryview) and r.readonly for r in records)
    assert len({id(r.obj) for r in records}) == 1  # one read, no copy per record


def test_read_honours_max_bytes_and_max_records(spool_dir: Path) -> None:
    with Spool.open(spool_dir) as spool:
        spool.append([b"a" * 100, b"b" * 100, b"c" * 100])
        got, pos = spool.read(BEGINNING, max_bytes=250)
        assert got == [b"a" * 100, b"b" * 100]
        got, pos = spool.read(pos, max_bytes=10)  # always at least one record
        assert got == [b"c" * 100]
        assert spool.read(pos, max_bytes=10) == ([], pos)
        got, _ = spool.read(BEGINNING, max_bytes=1000, max_records=1)
        assert got == [b"a" * 100]


def test_rotation_across_segments(spool_dir: Path) -> None:
    limit = 4096
    with CountingSpool.open(spool_dir, segment_max_bytes=limit) as spool:
        written: list[bytes] = []
        for i in range(0, 60, 3):
            group = [payload(n) for n in range(i, i + 3)]
            syncs, files = spool.syncs, len(segments(spool_dir))
            spool.append(group)
            new = len(segments(spool_dir)) - files
            # one fsync if the group fits; on rotation, one per segment written and one of the
            # directory
            assert spool.syncs - syncs == 1 if new == 0 else spool.syncs - syncs <= new + 2
            written += group
        big = b"B" * (3 * limit)  # larger than a segment: alone in its own
        written.append(big)
        end = spool.append([big])
        assert read_all(spool) == (written, end)
    files = segments(spool_dir)
    assert len(files) > 5
    sizes = [f.stat().st_size for f in files]
    assert all(size <= limit for size in sizes[:-1])
    assert sizes[-1] == HEADER_SIZE + RECORD_OVERHEAD + len(big)


def test_a_group_larger_than_a_segment_is_split_at_record_boundaries(spool_dir: Path) -> None:
    with Spool.open(spool_dir, segment_max_bytes=2048) as spool:
        group = [bytes([65 + i]) * 500 for i in range(10)]
        end = spool.append(group)
        assert read_all(spool) == (group, end)
    assert all(f.stat().st_size <= 2048 for f in segments(spool_dir))
    with Spool.open(spool_dir, segment_max_bytes=2048) as spool:
        assert read_all(spool)[0] == group


def test_checkpoint_deletes_old_segments_and_survives_reopen(spool_dir: Path) -> None:
    records = [payload(i) for i in range(40)]
    with Spool.open(spool_dir, segment_max_bytes=8192) as spool:
        for i in range(0, 40, 4):
            spool.append(records[i : i + 4])
        before = segments(spool_dir)
        flushed, pos = spool.read(BEGINNING, max_bytes=30_000)
        assert 0 < len(flushed) < 40
        spool.checkpoint(pos, b"ledger-v1")
        assert spool.checkpointed == (pos, b"ledger-v1")
        after = segments(spool_dir)
        assert len(after) < len(before)
        assert int(after[0].stem) in (pos.segment, pos.segment + 1)  # +1: pos ends a segment
    with Spool.open(spool_dir, segment_max_bytes=8192) as spool:
        assert spool.checkpointed == (pos, b"ledger-v1")
        rest, end = read_all(spool, spool.checkpointed[0])
        assert rest == records[len(flushed) :] and end == spool.end


def test_checkpoint_at_the_end_of_a_sealed_segment_deletes_it(spool_dir: Path) -> None:
    with Spool.open(spool_dir, segment_max_bytes=1024) as spool:
        spool.append([b"x" * 900])
        _, pos = spool.read(BEGINNING, max_bytes=1 << 20)
        spool.append([b"y" * 900])  # rotates
        spool.checkpoint(pos, b"s")
        assert [f.name for f in segments(spool_dir)] == [f"{2:020d}.seg"]
        assert spool.read(pos, max_bytes=1 << 20)[0] == [b"y" * 900]
    with Spool.open(spool_dir, segment_max_bytes=1024) as spool:
        assert read_all(spool, spool.checkpointed[0])[0] == [b"y" * 900]


def test_checkpoint_never_deletes_the_active_segment(spool_dir: Path) -> None:
    with Spool.open(spool_dir) as spool:
        end = spool.append([b"only"])
        spool.checkpoint(end, b"")
        assert len(segments(spool_dir)) == 1
        assert spool.pending_bytes() == 0
        spool.append([b"more"])
        assert spool.read(end, max_bytes=100)[0] == [b"more"]


def test_checkpoint_outside_the_log_is_a_bug(spool_dir: Path) -> None:
    with Spool.open(spool_dir) as spool:
        end = spool.append([b"a"])
        with pytest.raises(ValueError):
            spool.checkpoint(Position(end.segment, end.offset + 1), b"")
        spool.checkpoint(end, b"")
        with pytest.raises(ValueError):
            spool.checkpoint(BEGINNING, b"")
        with pytest.raises(ValueError):
            spool.append([b""])


def test_replay_after_reopen_returns_exactly_the_unflushed_records(spool_dir: Path) -> None:
    with Spool.open(spool_dir, segment_max_bytes=4096) as spool:
        spool.append([payload(i) for i in range(10)])
        flushed, pos = spool.read(BEGINNING, max_bytes=1 << 30, max_records=3)
        spool.checkpoint(pos, b"3")
        spool.append([payload(i) for i in range(10, 20)])
    with Spool.open(spool_dir, segment_max_bytes=4096) as spool:
        assert flushed == [payload(i) for i in range(3)]
        assert read_all(spool, spool.checkpointed[0])[0] == [payload(i) for i in range(3, 20)]
    with Spool.open(spool_dir, segment_max_bytes=4096) as spool:  # nothing flushed: no change
        assert read_all(spool, spool.checkpointed[0])[0] == [payload(i) for i in range(3, 20)]


def _truncate_mid_payload(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 5)


def _truncate_mid_header(path: Path) -> None:
    os.truncate(path, path.stat().st_size - len(payload(2)) - 3)


def _append_garbage(path: Path) -> None:
    with path.open("ab") as f:
        f.write(random.Random(7).randbytes(333))


def _zero_fill(path: Path) -> None:
    with path.open("ab") as f:
        f.write(bytes(4096))


@pytest.mark.parametrize("damage", [_truncate_mid_payload, _truncate_mid_header, _append_garbage, _zero_fill])
def test_torn_tail_is_skipped_and_appends_go_on(spool_dir: Path, capsys, damage) -> None:
    with Spool.open(spool_dir) as spool:
        spool.append([payload(0), payload(1)])
        spool.append([payload(2)])
    (seg,) = segments(spool_dir)
    damage(seg)
    capsys.readouterr()
    intact = [payload(0), payload(1)] + ([payload(2)] if damage in (_append_garbage, _zero_fill) else [])
    with Spool.open(spool_dir) as spool:
        (warning,) = warnings(capsys.readouterr().err)
        good = HEADER_SIZE + sum(RECORD_OVERHEAD + len(p) for p in intact)
        assert warning["event"] == "spool_corrupt" and warning["segment"] == 1
        assert warning["offset"] == good
        assert warning["bytes_skipped"] == seg.stat().st_size - good
        assert read_all(spool)[0] == intact
        spool.append([b"after the crash"])
        assert read_all(spool)[0] == [*intact, b"after the crash"]
    with Spool.open(spool_dir) as spool:
        assert read_all(spool)[0] == [*intact, b"after the crash"]


def test_torn_header_of_a_new_segment(spool_dir: Path, capsys) -> None:
    with Spool.open(spool_dir) as spool:
        spool.append([b"a"])
    (spool_dir / f"{2:020d}.seg").write_bytes(b"FGLSP")  # killed while creating a segment
    with Spool.open(spool_dir) as spool:
        (warning,) = warnings(capsys.readouterr().err)
        assert warning["segment"] == 2 and warning["reason"] == "bad segment header"
        spool.append([b"b"])
        assert read_all(spool)[0] == [b"a", b"b"]


def test_corrupt_checksum_mid_segment_skips_the_rest_of_it(spool_dir: Path, capsys) -> None:
    with Spool.open(spool_dir, segment_max_bytes=1024) as spool:
        spool.append([b"a" * 200, b"b" * 200, b"c" * 200])
        spool.append([b"d" * 500])  # rotates: segment 1 is sealed
        spool.append([b"e" * 200])
    seg1 = segments(spool_dir)[0]
    b_at = HEADER_SIZE + RECORD_OVERHEAD + 200
    with seg1.open("r+b") as f:
        f.seek(b_at + RECORD_OVERHEAD + 50)
        f.write(b"!")
    capsys.readouterr()
    with Spool.open(spool_dir, segment_max_bytes=1024) as spool:
        assert read_all(spool)[0] == [b"a" * 200, b"d" * 500, b"e" * 200]
        assert read_all(spool)[0] == [b"a" * 200, b"d" * 500, b"e" * 200]  # a retried read
        (warning,) = warnings(capsys.readouterr().err)  # logged once
        assert (warning["segment"], warning["offset"]) == (1, b_at)
        assert warning["bytes_skipped"] == seg1.stat().st_size - b_at
        assert warning["reason"] == "checksum mismatch"


def test_corruption_in_the_active_segment_keeps_later_appends(spool_dir: Path, capsys) -> None:
    with Spool.open(spool_dir) as spool:
        spool.append([b"a" * 100, b"b" * 100, b"c" * 100])
        (seg,) = segments(spool_dir)
        with seg.open("r+b") as f:  # rots under a running node
            f.seek(HEADER_SIZE + RECORD_OVERHEAD + 100 + RECORD_OVERHEAD + 10)
            f.write(b"!")
        got, pos = spool.read(BEGINNING, max_bytes=1 << 20)
        assert got == [b"a" * 100] and pos == spool.end
        spool.append([b"d"])
        # a flusher that retries from its old cursor skips the same bytes, and no more
        assert read_all(spool)[0] == [b"a" * 100, b"d"]
        assert spool.read(pos, max_bytes=1 << 20)[0] == [b"d"]
        assert len(warnings(capsys.readouterr().err)) == 1


def test_corruption_inside_the_last_segment_on_open(spool_dir: Path, capsys) -> None:
    with Spool.open(spool_dir) as spool:
        spool.append([b"a" * 100, b"b" * 100, b"c" * 100])
    (seg,) = segments(spool_dir)
    with seg.open("r+b") as f:
        f.seek(HEADER_SIZE + RECORD_OVERHEAD + 100 + RECORD_OVERHEAD + 10)
        f.write(b"!")
    with Spool.open(spool_dir) as spool:
        assert len(warnings(capsys.readouterr().err)) == 1
        spool.append([b"d"])
        assert read_all(spool)[0] == [b"a" * 100, b"d"]
        assert len(segments(spool_dir)) == 2  # appends moved on to a clean segment


def test_corrupt_checkpoint_file_replays_everything(spool_dir: Path, capsys) -> None:
    with Spool.open(spool_dir) as spool:
        spool.append([b"a", b"b"])
        spool.checkpoint(spool.end, b"state")
        spool.append([b"c"])
    (spool_dir / "checkpoint").write_bytes(b"FGLCKPT\0garbage")
    with Spool.open(spool_dir) as spool:
        assert "spool_checkpoint_corrupt" in capsys.readouterr().err
        assert spool.checkpointed == (BEGINNING, None)
        assert read_all(spool)[0] == [b"a", b"b", b"c"]


def test_pending_bytes(spool_dir: Path) -> None:
    def size(ps: list[bytes]) -> int:
        return sum(RECORD_OVERHEAD + len(p) for p in ps)

    records = [payload(i) for i in range(30)]
    with Spool.open(spool_dir, segment_max_bytes=8192) as spool:
        assert spool.pending_bytes() == 0
        for i in range(0, 30, 5):
            spool.append(records[i : i + 5])
        assert spool.pending_bytes() == size(records)
        _, pos = spool.read(BEGINNING, max_bytes=1 << 30, max_records=12)
        spool.checkpoint(pos, b"")
        assert spool.pending_bytes() == size(records[12:])
    with Spool.open(spool_dir, segment_max_bytes=8192) as spool:
        assert spool.pending_bytes() == size(records[12:])
        spool.checkpoint(spool.end, b"")
        assert spool.pending_bytes() == 0


def test_failed_fsync_is_retryable_and_the_next_append_starts_clean(spool_dir: Path) -> None:
    with FailingSpool.open(spool_dir) as spool:
        end = spool.append([b"acknowledged"])
        spool.fail_next = True
        with pytest.raises(RetryableError):
            spool.append([b"refused"])
        assert spool.end == end
        spool.append([b"next"])
        assert read_all(spool)[0] == [b"acknowledged", b"next"]
    with Spool.open(spool_dir) as spool:
        assert read_all(spool)[0] == [b"acknowledged", b"next"]


def test_one_owner_per_directory(spool_dir: Path) -> None:
    with Spool.open(spool_dir), pytest.raises(ConfigError):
        Spool.open(spool_dir)
    Spool.open(spool_dir).close()


def test_concurrent_append_and_read_checkpoint(spool_dir: Path) -> None:
    total = 3000
    expected = [payload(i) for i in range(total)]
    got: list[bytes] = []
    errors: list[BaseException] = []
    spool = Spool.open(spool_dir, segment_max_bytes=16384)

    def appender() -> None:
        try:
            rng, i = random.Random(1), 0
            while i < total:
                n = min(rng.randint(1, 10), total - i)
                spool.append(expected[i : i + n])
                i += n
        except Exception as exc:  # handed to the test thread
            errors.append(exc)

    def flusher() -> None:
        try:
            pos, deadline = BEGINNING, time.monotonic() + 60
            while len(got) < total and time.monotonic() < deadline:
                records, pos = spool.read(pos, max_bytes=20_000)
                got.extend(records)
                if records:
                    spool.checkpoint(pos, str(len(got)).encode())
        except Exception as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=appender), threading.Thread(target=flusher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert got == expected
        assert spool.pending_bytes() == 0
        assert spool.checkpointed == (spool.end, str(total).encode())
        assert len(segments(spool_dir)) <= 2
    finally:
        spool.close()


CHILD = """
import random, sys
from pipeline.spool import Spool
from tests.pipeline.test_spool import payload

spool = Spool.open(sys.argv[1], segment_max_bytes=16384)
cursor, state = spool.checkpointed
flushed_to = int(state) if state else 0
i = int(sys.argv[2])
rng = random.Random(i)
print("ready", flush=True)
while True:
    n = rng.randint(1, 8)
    group = [payload(k) for k in range(i, i + n)]
    if rng.random() < 0.1:  # a long write, so that some kills land in the middle of one
        group[-1] = group[-1].ljust(4 << 20, b"y")
    spool.append(group)
    i += n
    print(i, flush=True)
    if rng.random() < 0.2:
        records, cursor = spool.read(cursor, max_bytes=200_000)
        flushed_to += len(records)
        spool.checkpoint(cursor, str(flushed_to).encode())
"""


def test_sigkill_in_a_loop_keeps_every_acknowledged_record(spool_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(42)
    next_number = 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(10):
        with (tmp_path / f"child-{round_}.log").open("wb") as err:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(spool_dir), str(next_number)],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                env=env,
            )
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n", (tmp_path / f"child-{round_}.log").read_text()
            time.sleep(rng.uniform(0.01, 0.15))
            child.send_signal(signal.SIGKILL)
            child.wait()
            lines = child.stdout.read().split(b"\n")[:-1]  # complete lines only
            child.stdout.close()
        acknowledged = max((int(line) for line in lines), default=next_number)
        with Spool.open(spool_dir, segment_max_bytes=16384) as spool:
            cursor, state = spool.checkpointed
            first = int(state) if state else 0
            records, _ = read_all(spool, cursor)
        assert [r.rstrip(b"y") for r in records] == [payload(n) for n in range(first, first + len(records))]
        assert first + len(records) >= acknowledged  # every acknowledged record is there
        next_number = first + len(records)
    assert next_number > 0
