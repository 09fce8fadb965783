"""The supervisor: `run.py serve`. Starts the writer, then the front workers; restarts the ones
that die; runs the drain sequence on SIGTERM/SIGINT.

Resource handling: the supervisor owns the listening sockets (one per worker slot on the same
port; a worker inherits its slot's file descriptor, so a restarted worker serves the same port)
and the node lock (`<data dir>/node.lock`, so two nodes never own one embedded store). Each child gets a pipe as
stdin; closing it is the child's order to drain, and a supervisor that dies closes them all.

Drain sequence (SPEC §6), each step with its own deadline inside `drain_timeout_s`:
  1. SIGTERM to every front: they answer 503 `draining` for `drain_grace_s`, finish what is in
     flight, close their links.
  2. Close the writer's stdin: it flushes everything it holds and checkpoints the spool.
  3. Exit 0. A child still running at its deadline is killed; the spool keeps its data.
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from pipeline import metrics
from pipeline.config import Config, child_environment, share_metrics_dir
from pipeline.errors import ConfigError
from pipeline.log import get_logger
from pipeline.priority import renice_process

log = get_logger("supervisor")
RUN_PY = Path(__file__).resolve().parent.parent / "run.py"
RESTART_DELAY_S = 0.5
RESTART_MAX_DELAY_S = 30.0
STABLE_AFTER_S = 10.0  # a child that ran this long is restarted at once again
# glibc malloc for processes that move 100 KB+ buffers all day: few arenas; buffers up to 1 MiB
# (request bodies, frames, spool records) reuse heap memory instead of fresh pages, and the
# embedded ClickHouse's jemalloc keeps freed pages for 1 s (not its default 10 s), long enough for
# the next insert to reuse them, and a background thread returns them on time even from an arena
# gone quiet (without it, only that arena's next allocation would). Why these values:
# docs/PERFORMANCE.md ("Allocator settings"). An operator's own values in the environment win.
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "1048576",
    "MALLOC_TRIM_THRESHOLD_": "4194304",
    "JE_MALLOC_CONF": "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0",
}


@dataclass
class Child:
    role: str
    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    process: trio.Process | None = None


def acquire_node_lock(data_dir: Path) -> int:
    """Hold `<data dir>/node.lock` for the life of the process; ConfigError if another node has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"another node is running on data dir {data_dir}") from None
    return fd


def node_running(data_dir: Path) -> bool:
    try:
        os.close(acquire_node_lock(data_dir))
        return False
    except ConfigError:
        return True


def listen(config: Config) -> list[socket.socket]:
    """One listening socket per front worker slot, all on the same port with SO_REUSEPORT: the
    kernel spreads new connections evenly over the workers (one shared socket lets whichever
    worker wakes first take them all). The supervisor keeps them open, so a restarted worker takes
    over its slot's socket, and connections waiting in its queue, as they are."""
    sockets: list[socket.socket] = []
    try:
        # A plain bind first: SO_REUSEPORT alone would quietly share the port with another node.
        socket.create_server((config.host, config.port)).close()
        for _ in range(config.workers):
            sock = socket.create_server((config.host, config.port), backlog=config.http_backlog, reuse_port=True)
            sock.set_inheritable(True)
            sockets.append(sock)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc}") from None
    return sockets


def run_preflight(config: Config) -> int:
    """`node.processes.preflight` in a short-lived child: its exit code (2 with the problem
    on stderr if the node cannot start). The supervisor lives as long as the node, so it keeps
    out of its memory what only the children need (the stages, the price table)."""
    return subprocess.run([sys.executable, str(RUN_PY), "_preflight"], env=_child_env(config)).returncode


def _child_env(config: Config) -> dict[str, str]:
    return child_environment(config, MALLOC_ENV)


def _ignore_drain_signals() -> None:
    """Run in the child between fork and exec: SIGTERM and SIGINT ignored, which exec keeps. A
    child still starting (a front imports for a second or more) is not killed by a drain's signal
    before its own trigger (`pipeline.drain.watch_for_drain`) takes over; the stdin the supervisor
    closes reaches it then. Killed, its listening socket would take connections nobody answers."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def _start(child: Child, config: Config) -> trio.Process:
    env = _child_env(config)
    child.process = await trio.lowlevel.open_process(
        [sys.executable, str(RUN_PY), *child.argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if child.role == "writer" else None,
        pass_fds=child.pass_fds,
        env=env,
        preexec_fn=_ignore_drain_signals,
    )
    if child.role != "writer" and config.front_nice:
        renice_process(child.process.pid, config.front_nice)
    log.info("started", child=child.role, child_pid=child.process.pid)
    return child.process


async def _wait_ready(process: trio.Process) -> None:
    """The writer prints READY once its store, spool and link socket are up."""
    seen = b""
    assert process.stdout is not None
    while b"READY\n" not in seen:
        chunk = await process.stdout.receive_some(4096)
        if not chunk:
            raise ConfigError(f"the writer exited during start (code {await process.wait()})")
        seen += chunk


async def _supervise_child(child: Child, config: Config, draining: trio.Event) -> None:
    """Restart `child` whenever it exits, until the node drains. A child that keeps dying right
    after its start is restarted with a growing delay (up to RESTART_MAX_DELAY_S)."""
    quick_deaths = 0
    while True:
        assert child.process is not None
        started = trio.current_time()
        code = await child.process.wait()
        metrics.mark_dead(child.process.pid)
        if draining.is_set():
            return
        quick_deaths = 0 if trio.current_time() - started > STABLE_AFTER_S else quick_deaths + 1
        delay = min(RESTART_DELAY_S * 2 ** max(quick_deaths - 1, 0), RESTART_MAX_DELAY_S)
        log.error("child_died", child=child.role, code=code, restarting_in_s=delay)
        await trio.sleep(delay)
        if draining.is_set():
            return
        process = await _start(child, config)
        if child.role == "writer":
            await _wait_ready(process)


async def _stop(child: Child, deadline_s: float, *, close_stdin: bool, sig: int | None) -> int:
    process = child.process
    if process is None:
        return 0
    if sig is not None and process.returncode is None:
        process.send_signal(sig)
    if close_stdin and process.stdin is not None:
        await process.stdin.aclose()
    with trio.move_on_after(deadline_s):
        return await process.wait()
    log.error("child_drain_timeout", child=child.role, killed=True)
    process.kill()
    return await process.wait()


async def _stop_front(front: Child, sock: socket.socket, config: Config) -> None:
    try:
        await _stop(front, config.drain_grace_s + config.drain_timeout_s, close_stdin=True, sig=signal.SIGTERM)
    finally:
        sock.close()


async def supervise(config: Config) -> int:
    lock_fd = acquire_node_lock(config.data_dir)
    sockets = listen(config)
    share_metrics_dir(metrics.prepare_directory(config.data_dir))
    writer = Child("writer", ["_writer"])
    fronts = [
        Child(f"front-{i + 1}", ["_front", "--fd", str(sock.fileno())], (sock.fileno(),))
        for i, sock in enumerate(sockets)
    ]
    draining = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await _wait_ready(await _start(writer, config))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_supervise_child, writer, config, draining)
            for front in fronts:
                await _start(front, config)
                nursery.start_soon(_supervise_child, front, config, draining)
            log.info("node_ready", url=f"http://{config.host}:{config.port}", workers=len(fronts),
                     store=config.store_url.split("@")[-1])  # fmt: skip
            async for signum in signals:
                log.info("drain_started", signal=signal.Signals(signum).name)
                break
            draining.set()
            # 1. fronts: grace, in-flight requests, close links. A front's socket is closed as soon
            # as that front is gone: the kernel then sends new connections to the fronts still
            # answering (503 draining) instead of queueing them where nobody accepts.
            async with trio.open_nursery() as stopping:
                for front, sock in zip(fronts, sockets, strict=True):
                    stopping.start_soon(functools.partial(_stop_front, front, sock, config))
            # 2. writer: final flush and checkpoint.
            code = await _stop(writer, config.drain_timeout_s + 5, close_stdin=True, sig=None)
            nursery.cancel_scope.cancel()
    os.close(lock_fd)
    log.info("drained", writer_exit=code)
    return 0
