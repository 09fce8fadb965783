"""Rows in ClickHouse's Native format (issue 16): the fronts' column streams, the writer's stitch
of many batches into one block, checked against the real embedded engine with what the MsgPack
path stores for the same rows as the oracle; and spools holding records of both formats."""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import msgspec
import pytest

from pipeline.config import Config
from pipeline.flush_state import FlushHealth, FlushSignal
from pipeline.messages import (
    RECORD_PREFIX_BYTES,
    ROWS_MSGPACK,
    ROWS_NATIVE,
    decode_record,
    encode_record,
    pack_streams,
    spool_payload,
    unpack_streams,
)
from pipeline.spool import Spool
from pipeline.store import AsyncStore, ClickHouseStore, RowFormat, Rows, open_store
from stages import native
from stages.admission import QuotaLedger
from stages.flush import run_flush
from stages.native import NATIVE_TYPES, STREAMS_PER_COLUMN, encode_streams, plain_type, stitch
from stages.payload import Span, Trace, Usage
from stages.price import Priced
from stages.price_stage import NATIVE_MIN_ROWS, encode_for_store
from stages.rows import encode_rows, span_row
from stages.schema import COLUMN_NAMES, TABLE, ddl

UTC = dt.timezone.utc
START = dt.datetime(2026, 11, 20, 10, tzinfo=UTC)
PRICED = Priced(0.1, 0.2, 0.0, None, 0.3, True, "gpt-4o-mini", "genai-prices")
UNPRICED = Priced(None, None, None, None, None, False, None, "unpriced")
BIG = ("ü" * 20_000 + "x").encode()  # 40 KB of two-byte characters: a three-byte length prefix


def _batch(name: str, n: int, *, rich: bool) -> list[tuple]:
    """`n` rows of one trace. `rich`: every column set, tags, multi-byte text, big values;
    otherwise mostly Nulls, empty strings and no tags."""
    if rich:
        trace = Trace(id=f"trace-{name}", name="tâche ☃", user_id="user-ü", session_id="s", environment="prod",
                      release="2026.11", tags=["naïve", "☃", ""], metadata={"k": "v", "n": 1}, spans=[])  # fmt: skip
    else:
        trace = Trace(id=f"trace-{name}", spans=[])
    rows = []
    for i in range(n):
        if rich:
            span = Span(id=f"{name}-{i}", parent_id=f"{name}-0" if i else None, name="llm ⚙" * (i + 1), kind="llm",
                        start_time=START + dt.timedelta(seconds=i, microseconds=7),
                        end_time=START + dt.timedelta(seconds=i + 1), status="error", status_message="é" * 200,
                        model="gpt-4o-mini", provider="openai",
                        usage=Usage(input_tokens=10 + i, output_tokens=2**40, cache_read_tokens=3,
                                    cache_write_tokens=4, reasoning_tokens=5),
                        input=BIG if i == 0 else b'"' + b"a" * (100 + i) + b'"', output=b'{"ok":true}',
                        attributes={"temperature": 0.5, "tool": "zé"})  # fmt: skip
            price = PRICED if i % 2 else UNPRICED
        else:
            span = Span(id=f"{name}-{i}", name="n", start_time=START + dt.timedelta(days=40 * i), input=None,
                        output=None)  # fmt: skip
            price = UNPRICED
        rows.append(span_row("org", trace, span, price, ingested_at_ms=1_795_000_000_123, max_io_bytes=64 * 1024))
    return rows


BATCHES = [_batch("a", 3, rich=True), _batch("b", 1, rich=False), _batch("c", 4, rich=False),
           _batch("d", 2, rich=True), _batch("e", 1, rich=True)]  # fmt: skip


def _native(rows: list[tuple]) -> memoryview:
    return memoryview(pack_streams(encode_streams(rows)))


ORDERED = "SELECT * FROM `{}`.`" + TABLE + "` FINAL ORDER BY trace_id, span_id"


def _stored(store: ClickHouseStore, database: str) -> bytes:
    return store.query(ORDERED.format(database), "tsv")


@pytest.fixture
def store(tmp_path: Path):
    store = open_store(f"chdb://{tmp_path / 'clickhouse'}")
    for database in ("native", "msgpack"):
        for statement in ddl(database):
            store.command(statement)
    yield store
    store.close()


def test_plain_types_drop_low_cardinality_and_codecs() -> None:
    assert plain_type("LowCardinality(Nullable(String))") == "Nullable(String)"
    assert plain_type("Array(LowCardinality(String))") == "Array(String)"
    assert plain_type("DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))") == "DateTime64(6, 'UTC')"
    assert "LowCardinality" not in str(NATIVE_TYPES) and "CODEC" not in str(NATIVE_TYPES)


def test_small_columns_encode_as_the_compiled_codec_does() -> None:
    # Below native._SMALL rows, text and array columns are encoded in Python: byte for byte what
    # the compiled codec writes (the stitched-block tests cover both paths only through the engine).
    rows = _batch("s", 5, rich=True) + _batch("t", 2, rich=False)
    assert len(rows) < native._SMALL
    for index, kind in enumerate(NATIVE_TYPES):
        values = [row[index] for row in rows]
        if not kind.startswith(("String", "Nullable(String", "Array(String")) or type(values[0]) is bytes:
            continue
        assert b"".join(native._ENCODERS[index](values)) == native._core(kind, values), COLUMN_NAMES[index]
    assert native._ENCODERS[NATIVE_TYPES.index("Array(String)")]([[], ["a"], []]) == [
        b"\x00" * 8 + b"\x01" + b"\x00" * 7 + b"\x01" + b"\x00" * 7, b"\x01a"]


def test_encode_for_store_picks_native_from_native_min_rows() -> None:
    small, big = _batch("m", 3, rich=True), _batch("n", NATIVE_MIN_ROWS, rich=True)
    assert encode_for_store(small) == (encode_rows(small), ROWS_MSGPACK)
    assert encode_for_store(big) == (pack_streams(encode_streams(big)), ROWS_NATIVE)
    assert encode_for_store(small, ROWS_NATIVE)[1] == ROWS_NATIVE


def test_streams_pack_and_unpack_as_views() -> None:
    streams = encode_streams(BATCHES[0])
    assert len(streams) == sum(STREAMS_PER_COLUMN)
    assert [bytes(s) for s in unpack_streams(memoryview(pack_streams(streams)))] == streams
    packed = pack_streams(streams)
    with pytest.raises(ValueError):
        unpack_streams(memoryview(packed)[:-1])
    assert encode_streams([]) == [b""] * sum(STREAMS_PER_COLUMN)


def test_a_stitched_block_stores_the_same_rows_as_msgpack(store: ClickHouseStore) -> None:
    batches = [(len(rows), unpack_streams(_native(rows))) for rows in BATCHES]
    block = stitch(batches)
    assert sum(map(len, block)) > len(BIG) and any(isinstance(part, memoryview) for part in block)  # views
    store.insert_rows("native.spans", COLUMN_NAMES, block, fmt="Native", dedup_token="n")
    store.insert_rows("msgpack.spans", COLUMN_NAMES, [encode_rows(rows) for rows in BATCHES], fmt="MsgPack",
                      dedup_token="m")  # fmt: skip
    native, msgpack = _stored(store, "native"), _stored(store, "msgpack")
    assert native == msgpack
    assert native.count(b"\n") == 1 + sum(map(len, BATCHES))  # the header line and every row
    tags = json.loads(store.query("SELECT groupArray(tags) AS t FROM (SELECT tags FROM native.spans FINAL "
                                  "ORDER BY trace_id, span_id)", "json"))  # fmt: skip
    assert tags["t"] == [["naïve", "☃", ""]] * 3 + [[]] * 5 + [["naïve", "☃", ""]] * 3  # offsets rebased
    big = json.loads(store.query("SELECT length(input) AS n FROM native.spans WHERE span_id = 'a-0'", "json"))
    assert big == {"n": len(BIG)}
    types = store.query("SELECT name, type FROM system.columns WHERE database = 'native' AND table = 'spans' "
                        "ORDER BY position", "tsv")  # fmt: skip
    assert types == store.query("SELECT name, type FROM system.columns WHERE database = 'msgpack' "
                                "AND table = 'spans' ORDER BY position", "tsv")  # fmt: skip
    assert b"tags\tArray(LowCardinality(String))" in types


def test_a_batch_that_does_not_fit_the_schema_is_refused_by_the_stitch() -> None:
    good = (1, unpack_streams(_native(BATCHES[1])))
    with pytest.raises(ValueError):
        stitch([good, (1, good[1][:-1])])  # a stream short
    with pytest.raises(ValueError):
        stitch([good, (2, good[1])])  # offsets of one row claimed for two


def _old_record(rows: list[tuple]) -> bytearray:
    """A record as the previous version spooled it: an `Append` without `rows_format` (tag, then
    req_id, org_id, key_id, spans, monthly_span_quota, rows, deadline), its rows in MsgPack."""
    old = ["append", 0, "org", "k", len(rows), None, encode_rows(rows), 5.0]
    return spool_payload(202611, bytearray(RECORD_PREFIX_BYTES) + msgspec.msgpack.encode(old))


async def test_a_spool_of_old_msgpack_and_new_native_records_is_stored_whole_and_replays_alike(
    tmp_path: Path,
) -> None:
    """Records spooled before the upgrade (MsgPack) and after (Native), in one flush block: two
    inserts, each with a token derived from the range; replaying the same range (a crash before
    the checkpoint) gets the same tokens, so the store keeps each insert once."""
    old = [_old_record(rows) for rows in BATCHES[:2]]
    new = [encode_record("org", len(rows), 202611, bytes(_native(rows)), ROWS_NATIVE) for rows in BATCHES[2:]]
    assert [decode_record(r).rows_format for r in old + new] == [ROWS_MSGPACK] * 2 + [ROWS_NATIVE] * 3
    store = AsyncStore(functools.partial(open_store, f"chdb://{tmp_path / 'clickhouse'}"), ddl("foglamp"))
    inserts: list[tuple[str, str]] = []

    async def insert(table: str, fmt: RowFormat, rows: Rows, token: str, urgent: bool) -> None:
        inserts.append((fmt, token))
        await store.insert_rows(f"foglamp.{table}", COLUMN_NAMES, rows, fmt=fmt, dedup_token=token)

    async def flush_everything(spool: Spool) -> None:
        signal = FlushSignal()
        signal.end()
        await run_flush(Config(data_dir=tmp_path), spool, insert, QuotaLedger(), signal, FlushHealth())

    for directory in ("spool", "replayed"):  # the same records at the same positions
        with Spool.open(tmp_path / directory) as spool:
            spool.append([old[0], new[0], old[1], new[1], new[2]])
            await flush_everything(spool)
            assert spool.pending_bytes() == 0
    (first, second), again = inserts[:2], inserts[2:]
    assert [first[0], second[0]] == ["Native", "MsgPack"] and again == inserts[:2]
    assert first[1].endswith("/Native") and second[1].endswith("/MsgPack") and first[1][:-7] == second[1][:-8]
    count = json.loads(await store.query(f"SELECT count() AS c FROM foglamp.{TABLE}", "json"))  # not FINAL
    assert count == {"c": sum(map(len, BATCHES))}
    for statement in ddl("oracle"):  # the same rows, all as MsgPack, in one insert
        await store.command(statement)
    await store.insert_rows("oracle.spans", COLUMN_NAMES, [encode_rows(rows) for rows in BATCHES], fmt="MsgPack",
                            dedup_token="o")  # fmt: skip
    assert await store.query(ORDERED.format("foglamp"), "tsv") == await store.query(ORDERED.format("oracle"), "tsv")
    await store.close()


async def test_a_native_batch_that_does_not_fit_is_deadlettered_alone(tmp_path: Path) -> None:
    store = AsyncStore(functools.partial(open_store, f"chdb://{tmp_path / 'clickhouse'}"), ddl("foglamp"))

    async def insert(table: str, fmt: RowFormat, rows: Rows, token: str, urgent: bool) -> None:
        await store.insert_rows(f"foglamp.{table}", COLUMN_NAMES, rows, fmt=fmt, dedup_token=token)

    short = pack_streams(encode_streams(BATCHES[1])[:-1])  # one stream missing: e.g. another schema
    health, signal = FlushHealth(), FlushSignal()
    signal.end()
    with Spool.open(tmp_path / "spool") as spool:
        spool.append([encode_record("org", 3, 202611, bytes(_native(BATCHES[0])), ROWS_NATIVE),
                      encode_record("org", 1, 202611, short, ROWS_NATIVE),
                      encode_record("org", 4, 202611, bytes(_native(BATCHES[2])), ROWS_NATIVE)])  # fmt: skip
        await run_flush(Config(data_dir=tmp_path), spool, insert, QuotaLedger(), signal, health)
        assert spool.pending_bytes() == 0
    assert health.deadlettered_records == 1 and health.rows_flushed == 7
    count = json.loads(await store.query(f"SELECT count() AS c FROM foglamp.{TABLE} FINAL", "json"))
    assert count == {"c": 7}
    (deadletter,) = (tmp_path / "deadletter").glob("*.records")
    assert short in deadletter.read_bytes()
    await store.close()
