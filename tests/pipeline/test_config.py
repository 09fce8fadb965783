"""The one config object: environment → Config, flags win, bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError


def test_environment_then_overrides() -> None:
    config = load_config({"INGEST_PORT": "5000", "INGEST_FRONT_NICE": "3", "INGEST_FLUSH_MAX_BYTES": "1_048_576"},
                         overrides={"port": 6000, "data_dir": None})  # fmt: skip
    assert (config.port, config.front_nice, config.flush_max_bytes) == (6000, 3, 1_048_576)
    assert config.data_dir == Path("data")
    assert Config.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"INGEST_FRONT_NICE": "20"}, "INGEST_FRONT_NICE must be in 0..19, got 20"),
        ({"INGEST_FRONT_NICE": "-1"}, "INGEST_FRONT_NICE must be in 0..19, got -1"),
        ({"INGEST_FRONT_NICE": "five"}, "INGEST_FRONT_NICE='five' is not a valid int"),
        ({"INGEST_MERGE_NICE": "20"}, "INGEST_MERGE_NICE must be in 0..19, got 20"),
        ({"INGEST_FLUSH_MAX_BYTES": "0"}, "INGEST_FLUSH_MAX_BYTES must be > 0, got 0"),
        ({"INGEST_HTTP_READ_BYTES": "0"}, "INGEST_HTTP_READ_BYTES must be > 0, got 0"),
        ({"CLICKHOUSE_URL": "tcp://x"}, "CLICKHOUSE_URL must start with http://, https:// or chdb://"),
        ({"INGEST_REDIS_URL": "rediss://r:6380/0"}, "INGEST_REDIS_URL must start with redis://, got 'rediss"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(environ)


def test_priorities_default_to_nicer_store_work_only() -> None:
    config = load_config({})
    assert (config.front_nice, config.store_nice, config.merge_nice) == (0, 4, 19)
    assert load_config({"INGEST_MERGE_NICE": "0"}).merge_nice == 0
    assert config.merge_sched_idle is True
    assert load_config({"INGEST_MERGE_SCHED_IDLE": "0"}).merge_sched_idle is False
    assert load_config({"INGEST_MERGE_SCHED_IDLE": "yes"}).merge_sched_idle is True
    with pytest.raises(ConfigError, match="INGEST_MERGE_SCHED_IDLE='maybe' is not a valid bool"):
        load_config({"INGEST_MERGE_SCHED_IDLE": "maybe"})
    assert load_config({"INGEST_STORE_NICE": "0"}).store_nice == 0
    with pytest.raises(ConfigError, match="INGEST_STORE_NICE must be in 0..19"):
        load_config({"INGEST_STORE_NICE": "20"})
