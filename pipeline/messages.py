"""Messages between processes, and the spool record: small, frozen, versioned msgspec types.

Every message is a msgspec Struct encoded as a msgpack array whose first element is its tag, so
a reader decodes any of them with one typed decoder and a new message kind is an additive change.
`rows` fields are opaque bytes: rows already encoded by a front worker for the store, which the
writer spools and inserts without decoding them. `rows_format` says how: ROWS_NATIVE (what fronts
send) is ClickHouse's Native format, column by column, in `pack_streams`' layout; ROWS_MSGPACK is
ClickHouse's `FORMAT MsgPack` (records spooled by earlier versions, tools).

    front worker ──Admit───────────► writer ──AdmitReply──►  (rate limit, before the body is read)
    front worker ──Append──────────► writer ──AppendReply─►  (after the spool fsync: 202)
    run.py query ──Query───────────► writer ──QueryReply──►  (the writer owns the embedded store)
    front worker ──Status──────────► writer ──StatusReply─►  (/readyz, /metrics)
    run.py orgs  ──Usage───────────► writer ──UsageReply──►  (the live quota ledger)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import accumulate
from typing import Literal, NamedTuple

import msgspec

from pipeline.frames import FrameBuffer


class _Message(msgspec.Struct, frozen=True, array_like=True, tag_field="t"):
    pass


class Admit(_Message, tag="admit"):
    """May this key make one more request now? (SPEC §1 rate limit)"""

    req_id: int
    key_id: str
    rate_limit_rps: float


class AdmitReply(_Message, tag="admit_reply"):
    req_id: int
    allowed: bool
    limit: float
    remaining: int
    reset_s: float  # seconds until the bucket is full again
    retry_after_s: int  # whole seconds >= 1 when refused, else 0


class Append(_Message, tag="append"):
    """One validated, priced batch, rows ready for the store."""

    req_id: int
    org_id: str
    key_id: str
    spans: int
    monthly_span_quota: int | None
    rows: bytes
    # time.monotonic() after which the front has given up on this batch (503): the writer then
    # drops it unwritten and uncharged. CLOCK_MONOTONIC is one clock for every process on the host
    # (front and writer share it over a Unix socket) and no wall-clock step moves it. 0: no deadline
    # (spool records written before it existed, tools). Last and defaulted, so a record without it
    # decodes, and a reader without it ignores the trailing element: the record layout is unchanged.
    deadline: float = 0.0
    # ROWS_MSGPACK or ROWS_NATIVE. Last and defaulted like `deadline`: a record spooled before it
    # existed decodes as MsgPack rows, which is what it holds.
    rows_format: int = 0


AppendStatus = Literal["ok", "quota_exceeded", "overloaded", "draining"]


class AppendReply(_Message, tag="append_reply"):
    req_id: int
    status: AppendStatus
    spans: int = 0
    retry_after_s: int = 0


class Query(_Message, tag="query"):
    req_id: int
    sql: str
    format: str


class QueryReply(_Message, tag="query_reply"):
    req_id: int
    ok: bool
    data: bytes
    error: str = ""


class Status(_Message, tag="status"):
    """How is the writer? (for /readyz and /metrics)"""

    req_id: int


class StatusReply(_Message, tag="status_reply"):
    req_id: int
    store_ok: bool
    store_error: str
    spool_pending_bytes: int
    spool_max_bytes: int
    redis: str = ""  # admissions in Redis: "up", "down" (each node on its fallback share); "" not configured


class Usage(_Message, tag="usage"):
    """Spans accepted per org in the writer's current month (for `run.py orgs usage`)."""

    req_id: int


class UsageReply(_Message, tag="usage_reply"):
    req_id: int
    month: int
    spans: dict[str, int]


Message = Admit | AdmitReply | Append | AppendReply | Query | QueryReply | Status | StatusReply | Usage | UsageReply

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def frame_buffer() -> FrameBuffer:
    """A sender's reusable buffer of framed messages (see `pipeline.frames.FrameBuffer`)."""
    return FrameBuffer(_encoder.encode_into)


def decode(data: bytes) -> Message:
    return _decoder.decode(data)


class AppendView(_Message, tag="append"):
    """How the writer decodes an `Append`: `rows` stays a view into the received frame (msgpack
    `bin` header included), so a batch's rows are never copied on their way to the spool."""

    req_id: int
    org_id: str
    key_id: str
    spans: int
    monthly_span_quota: int | None
    rows: msgspec.Raw
    deadline: float = 0.0  # see `Append.deadline`
    rows_format: int = 0  # see `Append.rows_format`


WriterInbound = Admit | AppendView | Query | Status | Usage
_inbound_decoder = msgspec.msgpack.Decoder(WriterInbound)


def decode_inbound(data: bytes | bytearray | memoryview) -> WriterInbound:
    """What the writer receives on a link (Append as `AppendView`)."""
    return _inbound_decoder.decode(data)


# --------------------------------------------------------------------------- rows formats
ROWS_MSGPACK = 0  # ClickHouse `FORMAT MsgPack`: every row's values back to back
ROWS_NATIVE = 1  # ClickHouse Native data, column by column: see `pack_streams`
_U32 = struct.Struct("<I")


def pack_streams(streams: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """ROWS_NATIVE rows: `u32 count | u32 length × count | the streams back to back` (little-endian).
    A stream is one column's Native data for the batch's rows, or one part of it (a Nullable's null
    map, its values; an Array's offsets, its elements): which is which is the schema's business
    (`stages.native`), so the writer can join batches stream by stream without reading a value."""
    head = struct.pack(f"<{len(streams) + 1}I", len(streams), *map(len, streams))
    return b"".join([head, *streams])


def unpack_streams(rows: memoryview) -> list[memoryview]:
    """The streams of ROWS_NATIVE `rows`, as views into them (no copy). ValueError when the lengths
    do not add up."""
    (count,) = _U32.unpack_from(rows)
    ends = list(accumulate(struct.unpack_from(f"<{count}I", rows, 4), initial=4 + 4 * count))
    if ends[-1] != len(rows):
        raise ValueError(f"Native rows: streams of {ends[-1]} bytes in {len(rows)}")
    return list(map(rows.__getitem__, map(slice, ends, ends[1:])))  # no Python step per stream


# --------------------------------------------------------------------------- spool records
# A spool record is `version (1 byte) | month YYYYMM (u32 big-endian) | the Append frame as
# received`: the writer spools the front's bytes as they are, and the flush stage takes the rows
# out of them as a view. Version 2; there was never a version 1 on disk outside development.
# The writer receives each frame with RECORD_PREFIX_BYTES of headroom, which `spool_payload`
# fills in place: a batch is never copied on its way from the socket to the spool. On disk,
# `pipeline.spool` wraps each record in its own `length | crc32` header; that is the whole layout.
# Where a batch's bytes are copied: rows encoded once, column by column (stages/native.py) and
# joined with their stream lengths (pack_streams) → into the front's frame buffer
# (pipeline/frames.py FrameBuffer) → socket → straight into the record buffer (pipeline/frames.py
# iter_frames, with headroom) → spool file (pipeline/spool.py append) → read back in blocks
# (pipeline/spool.py read) → joined once into one Native block of the whole flush block
# (stages/native.py stitch; an Array's offsets are rebased there) → the ClickHouse client
# (pipeline/store.py insert_rows). MsgPack records skip the stitch: their views go to the client.
RECORD_VERSION = 2
RECORD_PREFIX_BYTES = 5
_append_view_decoder = msgspec.msgpack.Decoder(AppendView)
_BIN_HEADER = {0xC4: 2, 0xC5: 3, 0xC6: 5}  # msgpack bin8 / bin16 / bin32


class SpoolRecord(NamedTuple):
    org_id: str
    spans: int
    month: int  # YYYYMM (UTC) the batch was accepted in: the quota ledger's month
    rows: memoryview  # the rows, a view into the record
    rows_format: int  # ROWS_MSGPACK or ROWS_NATIVE


def spool_payload(month: int, frame: bytearray) -> bytearray:
    """The spool record of an Append `frame` received with RECORD_PREFIX_BYTES of headroom: the
    prefix is written into the headroom, and the same buffer is the record."""
    frame[0] = RECORD_VERSION
    frame[1:RECORD_PREFIX_BYTES] = month.to_bytes(4, "big")
    return frame


def encode_record(org_id: str, spans: int, month: int, rows: bytes, rows_format: int = ROWS_MSGPACK) -> bytearray:
    """A spool record from its parts (tests, tools); the writer uses `spool_payload` directly."""
    append = Append(0, org_id, "", spans, None, rows, rows_format=rows_format)
    return spool_payload(month, bytearray(RECORD_PREFIX_BYTES) + encode(append))


def decode_record(data: bytes | bytearray | memoryview) -> SpoolRecord:
    view = memoryview(data)
    if view[0] != RECORD_VERSION:
        raise msgspec.DecodeError(f"unknown spool record version {view[0]}")
    append = _append_view_decoder.decode(view[5:])
    raw = memoryview(append.rows)
    rows = raw[_BIN_HEADER[raw[0]] :]
    return SpoolRecord(append.org_id, append.spans, int.from_bytes(view[1:5], "big"), rows, append.rows_format)
