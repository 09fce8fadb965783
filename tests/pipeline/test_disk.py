"""Full-disk classification and the embedded store's metadata repair (issue 14)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline.disk import is_disk_full, low_disk_reason
from pipeline.embedded_repair import repair_metadata
from pipeline.errors import RetryableError
from pipeline.store import open_store, translate_errors
from stages.schema import ddl


@pytest.mark.parametrize("exc", [
    DatabaseError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"),
    DatabaseError("Code: 1001. DB::Exception: std::exception. Code: 1001, type: std::__1::system_error, "
                  "e.what() = No space left on device"),
    OSError(errno.ENOSPC, "No space left on device"),
])  # fmt: skip
def test_a_full_disk_is_retryable(exc: Exception) -> None:
    assert is_disk_full(exc) or "243" in str(exc)
    with pytest.raises(RetryableError), translate_errors():
        raise exc


def test_the_floor(tmp_path: Path) -> None:
    assert low_disk_reason(tmp_path, 0) is None
    assert low_disk_reason(tmp_path, 1) is None
    reason = low_disk_reason(tmp_path, 2**62)
    assert reason is not None and "INGEST_MIN_FREE_DISK_BYTES" in reason


def test_empty_metadata_files_are_rebuilt_and_the_data_attached_again(tmp_path: Path) -> None:
    root = tmp_path / "clickhouse"
    store = open_store(f"chdb://{root}")
    try:
        for statement in ddl("foglamp"):
            store.command(statement)
        store.command("INSERT INTO foglamp.spans (org_id, trace_id, span_id, start_time) "
                      "VALUES ('o', 't', 's', now())")  # fmt: skip
    finally:
        store.close()
    (root / "metadata" / "foglamp" / "spans.sql").write_text("")  # as a full disk left it
    (root / "metadata" / "foglamp.sql").write_text("")
    assert len(repair_metadata(root, "foglamp", ddl("foglamp"))) == 2
    store = open_store(f"chdb://{root}")
    try:
        for statement in ddl("foglamp"):
            store.command(statement)
        assert store.query("SELECT count() FROM foglamp.spans", "tsv").split() == [b"count()", b"1"]
    finally:
        store.close()
    assert repair_metadata(root, "foglamp", ddl("foglamp")) == []
