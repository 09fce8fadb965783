"""Span rows in ClickHouse's Native format: encoded column by column in the fronts, joined into
one big block per insert by the writer.

A front encodes a batch's rows (`stages.rows.span_row` tuples) into per-column *streams*
(`encode_streams`): a column's Native data without block or column header, a Nullable's null map
and values as two streams, an Array's cumulative offsets and elements as two streams.
`pipeline.messages.pack_streams` frames them with their lengths. The writer's flush joins the
batches of a block stream by stream (`stitch`): one header, then every batch's stream 0, every
batch's stream 1, and so on; an Array's offsets are rebased by the elements of the batches
before. No value is parsed on the way.

LowCardinality columns travel as their plain type (`String`, `Nullable(String)`, `Array(String)`):
the store converts them on insert (`input_format_native_allow_types_conversion`, on by default),
and the table's types are unchanged.

The encoder for each stream is the fastest measured (docs/PERFORMANCE.md, "Native rows"):
clickhouse-connect-core's compiled codec for text and arrays, `struct` and `bytes.join` for
fixed-width columns and for columns of bytes values (most of a row's bytes: input, output,
attributes), which are then copied once.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from itertools import accumulate, chain
from typing import Any

import _ch_core  # type: ignore[import-untyped]  # clickhouse-connect-core: Native codec

from stages.schema import COLUMNS

Column = Sequence[Any]
Streams = list[bytes]


def plain_type(kind: str) -> str:
    """The type a column is sent as: its table type without codec and LowCardinality."""
    return _LOW_CARDINALITY.sub(r"\1", kind.split(" CODEC(", 1)[0])


_LOW_CARDINALITY = re.compile(r"LowCardinality\((Nullable\(String\)|String)\)")


NATIVE_TYPES: tuple[str, ...] = tuple(plain_type(kind) for _, kind in COLUMNS)


# --------------------------------------------------------------------------- the front: encoding
def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_varint(n) for n in range(1 << 14)]  # every length below 16 KiB: one lookup


def _long_varint(n: int) -> bytes:
    return _VARINTS[n] if n < len(_VARINTS) else _varint(n)


def _bytes_strings(values: Column) -> bytes:
    """Native `String` data of bytes values: each one's varint length, then its bytes."""
    lengths = list(map(len, values))
    prefix = _VARINTS.__getitem__ if max(lengths, default=0) < len(_VARINTS) else _long_varint
    return b"".join(chain.from_iterable(zip(map(prefix, lengths), values, strict=True)))


def _core(kind: str, values: Column) -> bytes:
    """One column's Native data from clickhouse-connect-core's encoder, its block header cut off."""
    block = _ch_core.encode_native_block(["c"], [kind], [values], len(values), None)
    return bytes(block[_header_bytes(len(values), kind) :])


def _header_bytes(rows: int, kind: str) -> int:
    # columns (1) | rows (varint) | name "c" (2) | type (varint length + bytes; types are short)
    return 1 + len(_varint(rows)) + 2 + 1 + len(kind)


def _null_map(values: Column) -> bytes:
    return bytes([value is None for value in values])


# Below this many rows a text column is encoded here (each value's UTF-8, then `_bytes_strings`):
# the compiled codec costs ~3-4 µs a call whatever the size, ~0.15 µs a value here (measured:
# docs/PERFORMANCE.md, "Native rows for small batches").
_SMALL = 24


def _utf8(values: Column) -> list[bytes]:
    """Each str value's UTF-8 (TypeError if one is not a str)."""
    return list(map(str.encode, values))


def _string(kind: str) -> Callable[[Column], Streams]:
    def encode(values: Column) -> Streams:
        if len(values) > 1 and values.count(values[0]) == len(values):  # one value (an org id): repeat it
            return [encode(values[:1])[0] * len(values)]
        try:
            if values and type(values[0]) is bytes:  # the bytes fast path
                return [_bytes_strings(values)]
            if len(values) < _SMALL:
                return [_bytes_strings(_utf8(values))]
        except TypeError:  # a str among bytes, or the other way round
            pass
        return [_core(kind, values)]

    return encode


_strings = _string("String")


def _nullable_string(values: Column) -> Streams:
    if values.count(None) == len(values):
        return [b"\x01" * len(values), b"\x00" * len(values)]  # every one Null: empty strings
    if None not in values:
        return [bytes(len(values)), *_strings(values)]
    first = next((value for value in values if value is not None), None)
    if type(first) is bytes or len(values) < _SMALL:
        filled = [(b"" if type(first) is bytes else "") if value is None else value for value in values]
        return [_null_map(values), *_strings(filled)]
    data = _core("Nullable(String)", values)
    return [data[: len(values)], data[len(values) :]]


def _array(kind: str) -> Callable[[Column], Streams]:
    def encode(values: Column) -> Streams:
        if len(values) < _SMALL and kind == "Array(String)":
            try:
                offsets = struct.pack(f"<{len(values)}Q", *accumulate(map(len, values)))
                return [offsets, _bytes_strings(_utf8(list(chain.from_iterable(values))))]
            except TypeError:  # not all str
                pass
        data = _core(kind, values)
        return [data[: 8 * len(values)], data[8 * len(values) :]]

    return encode


def _fixed(code: str, null: float | None = None) -> Callable[[Column], Streams]:
    """A fixed-width column of `struct` type `code`; Nullable if `null` is the value a Null's slot holds."""

    def encode(values: Column) -> Streams:
        if null is None:
            return [struct.pack(f"<{len(values)}{code}", *values)]
        if None not in values:
            return [bytes(len(values)), struct.pack(f"<{len(values)}{code}", *values)]
        filled = [null if value is None else value for value in values]
        return [_null_map(values), struct.pack(f"<{len(values)}{code}", *filled)]

    return encode


def _encoder(kind: str) -> Callable[[Column], Streams]:
    if kind == "String":
        return _string(kind)
    if kind == "Nullable(String)":
        return _nullable_string
    if kind.startswith("Array("):
        return _array(kind)
    if kind == "UInt64":
        return _fixed("Q")
    if kind.startswith("DateTime64("):
        return _fixed("q")
    if kind.startswith("Nullable(DateTime64("):
        return _fixed("q", 0)
    if kind == "Nullable(Float64)":
        return _fixed("d", 0.0)
    if kind == "Bool":
        return lambda values: [bytes(values)]
    raise ValueError(f"no Native encoder for {kind}")


_ENCODERS = [_encoder(kind) for kind in NATIVE_TYPES]
# Streams per column: Nullable and Array columns have two.
STREAMS_PER_COLUMN: tuple[int, ...] = tuple(2 if k.startswith(("Nullable(", "Array(")) else 1 for k in NATIVE_TYPES)


def encode_streams(rows: Sequence[tuple]) -> Streams:
    """The Native streams of `rows` (tuples in `stages.schema.COLUMNS` order), column by column.
    Plain function."""
    if not rows:
        return [b""] * sum(STREAMS_PER_COLUMN)
    columns = zip(_ENCODERS, zip(*rows, strict=True), strict=True)
    return [stream for encode, values in columns for stream in encode(values)]


# --------------------------------------------------------------------------- the writer: stitching
def _header(name: str, kind: str) -> bytes:
    return b"".join([_varint(len(name)), name.encode(), _varint(len(kind)), kind.encode()])


_COLUMN_HEADERS = [_header(name, kind) for (name, _), kind in zip(COLUMNS, NATIVE_TYPES, strict=True)]


def stitch(batches: Sequence[tuple[int, Sequence[memoryview]]]) -> list[bytes | memoryview]:
    """One Native block (header included) of `batches`, each `(rows, its streams)` as
    `encode_streams` made them, as buffers to write back to back: the batches' streams as they
    are (views), new bytes only for the headers and rebased Array offsets. Plain function.
    ValueError if a batch has the wrong number of streams or an Array's offsets do not match its
    rows."""
    expected = sum(STREAMS_PER_COLUMN)
    for _, streams in batches:
        if len(streams) != expected:
            raise ValueError(f"Native rows with {len(streams)} streams, expected {expected}")
    total = sum(rows for rows, _ in batches)
    parts: list[bytes | memoryview] = [_varint(len(COLUMNS)), _varint(total)]
    by_stream = list(zip(*(streams for _, streams in batches), strict=True))  # each stream of every batch
    stream = 0
    for header, kind, count in zip(_COLUMN_HEADERS, NATIVE_TYPES, STREAMS_PER_COLUMN, strict=True):
        parts.append(header)
        if kind.startswith("Array("):
            parts.append(_rebased_offsets(batches, stream))
        else:
            parts.extend(by_stream[stream])
        for extra in range(stream + 1, stream + count):
            parts.extend(by_stream[extra])
        stream += count
    return parts


def _rebased_offsets(batches: Sequence[tuple[int, Sequence[memoryview]]], stream: int) -> bytes:
    """An Array column's offsets of every batch, each batch's shifted by the elements before it."""
    parts: list[bytes | memoryview] = []
    base = 0
    for rows, streams in batches:
        view = streams[stream]
        if len(view) != 8 * rows:
            raise ValueError("Native rows: Array offsets do not match the rows")
        if not rows:
            continue
        if base:
            parts.append(struct.pack(f"<{rows}Q", *[offset + base for offset in struct.unpack(f"<{rows}Q", view)]))
        else:
            parts.append(view)
        base += int.from_bytes(view[-8:], "little")
    return b"".join(parts)
