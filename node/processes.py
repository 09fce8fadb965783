"""Process entry points: what `run.py` runs in each child process the supervisor starts."""

from __future__ import annotations

import signal

import trio

from node.topology import run_front_worker, run_writer
from pipeline.config import Config
from pipeline.controlplane import open_controlplane
from pipeline.errors import ConfigError
from stages.otlp_decode import check_backend
from stages.price import PriceTable


def writer_main(config: Config) -> int:
    # Signals are the supervisor's business: the writer stops when the supervisor closes stdin,
    # after every front is gone, so a Ctrl-C to the whole process group cannot cut a flush short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trio.run(run_writer, config)
    return 0


def front_main(config: Config, listen_fd: int) -> int:
    trio.run(run_front_worker, config, listen_fd)
    return 0


def preflight(config: Config) -> None:
    """Fail at start, with a clear message, on what would fail later: a bad prices file, an
    unusable data dir or control plane, protobuf without its upb backend (OTLP decoding)."""
    problem = check_backend()
    if problem is not None:
        raise ConfigError(problem)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    PriceTable.load(config.prices_file or None)
    open_controlplane(config).close()
