"""The ack deadline in `Append` (issue 14, "a 503 means not stored"): the writer's split of a
group into batches still wanted and batches their front has given up on, and spool records
written before the field existed."""

from __future__ import annotations

import msgspec

from pipeline.jobs import SpoolJob
from pipeline.messages import RECORD_PREFIX_BYTES, Append, decode_inbound, decode_record, encode, spool_payload
from stages.spool_stage import expired


class AppendWithoutDeadline(msgspec.Struct, frozen=True, array_like=True, tag_field="t", tag="append"):
    """`Append` as it was before the deadline: the layout of older spool records."""

    req_id: int
    org_id: str
    key_id: str
    spans: int
    monthly_span_quota: int | None
    rows: bytes


def _job(deadline: float) -> SpoolJob:
    frame = bytearray(RECORD_PREFIX_BYTES) + encode(Append(0, "o", "k", 1, None, b"x", deadline))
    return SpoolJob(decode_inbound(memoryview(frame)[RECORD_PREFIX_BYTES:]), frame, print)


def test_only_batches_past_their_deadline_are_dropped() -> None:
    jobs = [_job(0.0), _job(99.0), _job(101.0), _job(100.0)]
    live, late = expired(jobs, now=100.0)
    assert [j.append.deadline for j in live] == [0.0, 101.0, 100.0]  # 0: no deadline (tools, old frames)
    assert [j.append.deadline for j in late] == [99.0]


def test_records_with_and_without_the_deadline_replay_alike() -> None:
    old = spool_payload(202612, bytearray(RECORD_PREFIX_BYTES) + msgspec.msgpack.encode(
        AppendWithoutDeadline(0, "org", "k", 3, None, b"rows")))  # fmt: skip
    new = spool_payload(202612, bytearray(RECORD_PREFIX_BYTES) + encode(Append(0, "org", "k", 3, None, b"rows", 5.0)))
    for record in (decode_record(old), decode_record(new)):
        assert (record.org_id, record.spans, record.month, bytes(record.rows)) == ("org", 3, 202612, b"rows")
    # A reader from before the field ignores the trailing element: the record version stays 2.
    legacy = msgspec.msgpack.decode(bytes(new[RECORD_PREFIX_BYTES:]), type=AppendWithoutDeadline)
    assert (legacy.org_id, legacy.rows) == ("org", b"rows")
