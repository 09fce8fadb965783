"""The store on both paths: the embedded engine always, a ClickHouse server when CLICKHOUSE_URL
is set (`docker compose -f docker/compose.yaml up clickhouse`, then
`CLICKHOUSE_URL=http://foglamp:foglamp@127.0.0.1:8123/foglamp python3 run.py test tests/pipeline`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import uuid
from pathlib import Path

import pytest

from pipeline.errors import PermanentError, RetryableError
from pipeline.store import _CHUNK_BYTES, _chunks, open_store
from stages.payload import Span, Trace
from stages.price import Priced
from stages.rows import encode_rows, span_row
from stages.schema import COLUMN_NAMES, MERGE_SELECTOR_BASE, TABLE, ddl

SERVER_URL = os.environ.get("CLICKHOUSE_URL", "")


@pytest.fixture(params=["embedded", "server"])
def store_and_db(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "server":
        if not SERVER_URL.startswith("http"):
            pytest.skip("CLICKHOUSE_URL (a ClickHouse server) is not set")
        url, database = SERVER_URL, f"foglamp_test_{uuid.uuid4().hex[:8]}"
    else:
        url, database = f"chdb://{tmp_path / 'clickhouse'}", "foglamp"
    store = open_store(url)
    for statement in ddl(database):
        store.command(statement)
    yield store, database
    if request.param == "server":
        store.command(f"DROP DATABASE IF EXISTS `{database}`")
    store.close()


def rows(n: int) -> bytes:
    start = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    price = Priced(None, None, None, None, None, False, None, "unpriced")
    trace = Trace(id="t", spans=[])
    spans = [Span(id=f"s{i}", name="n", start_time=start, input=b'{"a":1}', output=None) for i in range(n)]
    return encode_rows(span_row("org", trace, s, price, ingested_at_ms=1, max_io_bytes=10) for s in spans)


def test_schema_is_idempotent_and_inserts_deduplicate(store_and_db) -> None:
    store, database = store_and_db
    for statement in ddl(database):  # a second start
        store.command(statement)
    table = f"`{database}`.`{TABLE}`"
    store.insert_rows(table, COLUMN_NAMES, rows(10), fmt="MsgPack", dedup_token="a")
    store.insert_rows(table, COLUMN_NAMES, rows(10), fmt="MsgPack", dedup_token="a")  # a retried insert
    store.insert_rows(table, COLUMN_NAMES, rows(10), fmt="MsgPack", dedup_token="b")  # a replay
    assert json.loads(store.query(f"SELECT count() AS c FROM {table} FINAL", "json")) == {"c": 10}
    row = json.loads(store.query(f"SELECT input, priced, total_cost FROM {table} FINAL LIMIT 1", "json"))
    assert row == {"input": '{"a":1}', "priced": False, "total_cost": None}
    assert b"count()" in store.query(f"SELECT count() FROM {table}", "table")


def test_table_settings_reach_old_tables(store_and_db) -> None:
    store, database = store_and_db
    table = f"`{database}`.`{TABLE}`"
    # A table from before the setting: ClickHouse's default, then a start of the current code.
    store.command(f"ALTER TABLE {table} RESET SETTING merge_selector_base")
    assert b"merge_selector_base" not in store.query(f"SHOW CREATE TABLE {table}", "tsv")
    for statement in ddl(database):
        store.command(statement)
    assert f"merge_selector_base = {MERGE_SELECTOR_BASE}" in store.query(f"SHOW CREATE TABLE {table}", "tsv").decode()


def test_errors_are_translated(store_and_db) -> None:
    store, _ = store_and_db
    with pytest.raises(PermanentError):
        store.query("SELEC nonsense", "json")
    with pytest.raises(RetryableError):
        open_store("http://default:@127.0.0.1:1/foglamp")  # nothing listens there


async def test_a_store_whose_schema_setup_fails_is_closed_not_leaked(tmp_path: Path) -> None:
    """The embedded engine has one path per process: a connection leaked by a failed open would
    keep it, and opening any other store directory in this process would then fail."""
    from pipeline.store import AsyncStore
    from pipeline.testing import FaultyStore

    fault = tmp_path / "store-down"
    fault.write_text("down")
    store = AsyncStore(lambda: FaultyStore(open_store(f"chdb://{tmp_path / 'first'}"), fault), ddl("foglamp"))
    for _ in range(2):  # each attempt opens, fails the schema setup, and must close again
        with pytest.raises(RetryableError):
            await store.connect()
    other = open_store(f"chdb://{tmp_path / 'second'}")
    try:
        assert other.query("SELECT 1 AS one", "json").strip() == b'{"one":1}'
    finally:
        other.close()
    await store.close()


def test_buffers_reach_the_client_as_chunks_of_bounded_size() -> None:
    small = [bytes([i % 256]) * 1000 for i in range(600)]  # 600 KB in 1 KB views: joined
    big = os.urandom(3 * _CHUNK_BYTES + 5)  # cut
    buffers = [memoryview(b) for b in small] + [big, b"", bytearray(b"tail")]
    chunks = list(_chunks(buffers))
    assert b"".join(chunks) == b"".join(bytes(b) for b in buffers)
    assert all(isinstance(c, bytes) for c in chunks)
    assert [len(c) for c in chunks[:-1]] == [_CHUNK_BYTES] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= _CHUNK_BYTES


@pytest.mark.parametrize("seed", range(40))
def test_chunks_cut_any_buffers_at_the_same_places_as_one_joined_buffer(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [0, 1, 7, _CHUNK_BYTES - 1, _CHUNK_BYTES, _CHUNK_BYTES + 1, 3 * _CHUNK_BYTES + 5]
    buffers: list[bytes | bytearray | memoryview] = []
    for _ in range(rng.randint(0, 30)):
        raw = rng.randbytes(rng.choice([*sizes, rng.randint(0, 2 * _CHUNK_BYTES)]))
        buffers.append(rng.choice([bytes, bytearray, memoryview])(raw))
    joined = b"".join(buffers)
    expected = [joined[at : at + _CHUNK_BYTES] for at in range(0, len(joined), _CHUNK_BYTES)]
    assert list(_chunks(buffers)) == expected


def test_a_bad_insert_is_a_permanent_error_and_stores_nothing(store_and_db) -> None:
    store, database = store_and_db
    table = f"`{database}`.`{TABLE}`"
    good = rows(3)
    with pytest.raises(PermanentError):  # rows cut short: the engine cannot parse them
        store.insert_rows(table, COLUMN_NAMES, [good, good[:-5]], fmt="MsgPack", dedup_token="cut")
    with pytest.raises(PermanentError):
        store.insert_rows(f"`{database}`.`no_such_table`", COLUMN_NAMES, good, fmt="MsgPack", dedup_token="x")
    assert json.loads(store.query(f"SELECT count() AS c FROM {table}", "json")) == {"c": 0}
    # The same token after the failure: nothing of the failed insert was kept under it.
    store.insert_rows(table, COLUMN_NAMES, good, fmt="MsgPack", dedup_token="cut")
    assert json.loads(store.query(f"SELECT count() AS c FROM {table}", "json")) == {"c": 3}


def test_dedup_tokens_with_quotes_and_backslashes(store_and_db) -> None:
    store, database = store_and_db
    table = f"`{database}`.`{TABLE}`"
    token = "0:1-0:9/Native'\\x\\'"
    for _ in range(2):
        store.insert_rows(table, COLUMN_NAMES, rows(4), fmt="MsgPack", dedup_token=token)
    store.insert_rows(table, COLUMN_NAMES, rows(4), fmt="MsgPack", dedup_token=token + "'")  # another block
    assert json.loads(store.query(f"SELECT count() AS c FROM {table}", "json")) == {"c": 8}


def test_an_embedded_insert_returns_only_after_its_file_system_sync(tmp_path: Path) -> None:
    """A sync that fails makes the insert a RetryableError (the flush retries it, and the table's
    dedup token keeps the retry from storing the rows twice); without the sync nothing fails."""
    url = f"chdb://{tmp_path / 'clickhouse'}"
    store = open_store(url)
    table = f"`foglamp`.`{TABLE}`"
    try:
        for statement in ddl("foglamp"):
            store.command(statement)
        store._sync_directory = tmp_path / "gone"  # a sync that cannot be made
        with pytest.raises(RetryableError, match="gone"):
            store.insert_rows(table, COLUMN_NAMES, rows(3), fmt="MsgPack", dedup_token="t")
        store._sync_directory = tmp_path / "clickhouse"
        store.insert_rows(table, COLUMN_NAMES, rows(3), fmt="MsgPack", dedup_token="t")  # the flush's retry
        assert json.loads(store.query(f"SELECT count() AS c FROM {table}", "json")) == {"c": 3}
    finally:
        store.close()
    unsynced = open_store(url, durable_inserts=False)
    try:
        assert unsynced._sync_directory is None
    finally:
        unsynced.close()


def test_the_node_opens_its_embedded_store_with_durable_inserts(tmp_path: Path) -> None:
    from pipeline.config import load_config
    from pipeline.store import ClickHouseStore, store_opener

    for environ, directory in (({}, tmp_path / "data" / "clickhouse"), ({"INGEST_STORE_SYNC": "0"}, None)):
        config = load_config({"INGEST_DATA_DIR": str(tmp_path / "data"), **environ})
        store = store_opener(config, ddl(config.clickhouse_database))
        try:
            assert isinstance(store, ClickHouseStore) and store._sync_directory == directory
        finally:
            store.close()
