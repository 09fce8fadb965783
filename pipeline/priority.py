"""CPU priorities: who gets the CPU first when it is short.

Most urgent first: answering requests and storing what was accepted (the fronts, the writer's loop
and its inserts); then the embedded ClickHouse's background merges, which are housekeeping and can
wait for idle CPU. Linux niceness is per thread, and a process may always make itself or its
children nicer (never less nice without privileges), so both knobs only ever lower a priority:

    INGEST_FRONT_NICE (default 0)    front workers, relative to the supervisor
    INGEST_STORE_NICE (default 4)    the embedded store's calls, relative to the writer (not the
                                     inserts of a backed-up spool)
    INGEST_MERGE_NICE (default 10)   the embedded store's merge threads, relative to the writer

Measured (docs/PERFORMANCE.md): merges at nice 10 lowered the p99 of 202s at 80 % load and
raised the stored spans/s; nicer fronts raised spans/s but starved requests (p99 ~1 s), hence 0.
Inserts at nice 4 (the thread that calls the store, where the embedded ClickHouse does much of
an insert, and the pool threads it starts) lowered that p99 several-fold: a front answers a
request without being preempted by an insert in the middle of it, and the insert still gets all
of the idle CPU. But when the spool is backed up, the one insert stream is the node's bottleneck;
then the flush inserts through a second store thread at the writer's own priority ("urgent").
Under a load that saturates the CPU for long, merges lag and parts accumulate, until
ClickHouse's own `parts_to_delay_insert` slows inserts, which the spool turns into 503s.

Error handling: best effort. A thread or process that is gone, or a system that refuses, is
logged and skipped; priorities are never worth a crash.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import trio

from pipeline.log import get_logger

log = get_logger("priority")

# Thread names (Linux `comm`) of the embedded ClickHouse's merge and mutation pool.
MERGE_THREAD_PREFIXES = ("MergeMutate",)


def renice_process(pid: int, increment: int) -> None:
    """Make process `pid` `increment` nicer than this one."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, _nicer(os.getpriority(os.PRIO_PROCESS, 0), increment))
    except OSError as exc:
        log.warning("renice_failed", pid=pid, error=str(exc))


def renice_threads(prefixes: tuple[str, ...], increment: int, done: set[int]) -> int:
    """Make this process's threads whose name starts with one of `prefixes` `increment` nicer
    than the process; threads in `done` are skipped and new ones added. Returns how many changed."""
    target = _nicer(os.getpriority(os.PRIO_PROCESS, os.getpid()), increment)
    changed = 0
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:  # no /proc (not Linux): threads cannot be told apart, nothing to do
        return 0
    for task in tasks:
        tid = int(task.name)
        if tid in done:
            continue
        try:
            if (task / "comm").read_text().strip().startswith(prefixes):
                os.setpriority(os.PRIO_PROCESS, tid, target)
                done.add(tid)
                changed += 1
        except OSError:  # the thread ended meanwhile, or the system refused
            continue
    return changed


def name_this_thread(name: str) -> None:
    """Set the calling thread's OS name (Linux `comm`, 15 bytes), for `top -H`, py-spy and the
    renicing above; Python 3.11 does not. Best effort."""
    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name[:15])
    except OSError:
        pass


def renice_this_thread(increment: int) -> None:
    """Make the calling thread `increment` nicer than the process (Linux: niceness is per thread)."""
    try:
        target = _nicer(os.getpriority(os.PRIO_PROCESS, os.getpid()), increment)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
    except OSError as exc:
        log.warning("renice_failed", thread=threading.current_thread().name, error=str(exc))


async def keep_threads_nice(prefixes: tuple[str, ...], increment: int, interval_s: float = 1.0) -> None:
    """Renice the store's threads named `prefixes`… now and whenever its pools start new ones;
    runs until cancelled."""
    done: set[int] = set()
    while True:
        if renice_threads(prefixes, increment, done):
            log.debug("threads_reniced", prefixes=prefixes, threads=len(done), nice=increment)
        await trio.sleep(interval_s)


def _nicer(current: int, increment: int) -> int:
    return min(current + increment, 19)
