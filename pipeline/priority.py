"""CPU priorities: who gets the CPU first when it is short.

Most urgent first: answering requests and storing what was accepted (the fronts, the writer's loop
and its inserts); then the embedded ClickHouse's background merges, which are housekeeping and can
wait for idle CPU. Linux niceness is per thread, and a process may always make itself or its
children nicer (never less nice without privileges), so both knobs only ever lower a priority:

    INGEST_FRONT_NICE (default 0)    front workers, relative to the supervisor
    INGEST_STORE_NICE (default 4)    the embedded store's threads, relative to the writer (not
                                     while the spool backs up)
    INGEST_MERGE_NICE (default 19)   the embedded store's merge threads, relative to the writer
    INGEST_MERGE_SCHED_IDLE (1)      ... and SCHED_IDLE: they run only on a CPU nothing else wants

Why these defaults (the measurements are in docs/PERFORMANCE.md, "CPU priorities"): merges
that only get idle CPU leave it to the requests that follow a burst; nicer fronts would starve
requests, hence 0. Inserts run a little nicer (the thread that calls the store, where the
embedded ClickHouse does much of an insert, and the pool threads it starts) so that a front
answers a request without being preempted by an insert in the middle of it, while the insert
still gets all of the idle CPU. But once the spool is half-way to its high-water mark (past which
admissions wait for the flush), the store is the node's bottleneck; then ("urgent" inserts,
`stages.flush`) the store's threads run at the writer's own priority until it catches up
(`StorePriority`).
Making a thread less nice needs CAP_SYS_NICE (or RLIMIT_NICE); without it the store's threads
stay at INGEST_STORE_NICE, and a warning says so once.
Under a load that saturates the CPU for long, merges lag and parts accumulate, until
ClickHouse's own `parts_to_delay_insert` slows inserts, which the spool turns into 503s.

Error handling: best effort. A thread or process that is gone, or a system that refuses, is
logged and skipped; priorities are never worth a crash.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection
from pathlib import Path

import trio

from pipeline.log import get_logger

log = get_logger("priority")

# Thread names (Linux `comm`) of the embedded ClickHouse's merge and mutation pool.
MERGE_THREAD_PREFIXES = ("MergeMutate",)
# ... and of the threads that do an insert's work: the store's own thread ("foglamp-store"), threads
# started from it before ClickHouse names them, and the query pipeline's pools.
STORE_THREAD_PREFIXES = ("foglamp-store", "Query", "ThreadPool")


def renice_process(pid: int, increment: int) -> None:
    """Make process `pid` `increment` nicer than this one."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, _nicer(os.getpriority(os.PRIO_PROCESS, 0), increment))
    except OSError as exc:
        log.warning("renice_failed", pid=pid, error=str(exc))


def renice_threads(
    prefixes: tuple[str, ...], increment: int, skip: Collection[int] = (), *, idle: bool = False
) -> list[int]:
    """Set this process's threads whose name starts with one of `prefixes` (except those in `skip`)
    to `increment` nicer than the process, and with `idle` to the SCHED_IDLE policy (they run only
    when a CPU has nothing else to run); returns their ids. Raises PermissionError when the system
    refuses (making a thread less nice than it is needs CAP_SYS_NICE or RLIMIT_NICE)."""
    target = _nicer(os.getpriority(os.PRIO_PROCESS, os.getpid()), increment)
    changed: list[int] = []
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:  # no /proc (not Linux): threads cannot be told apart, nothing to do
        return changed
    for task in tasks:
        tid = int(task.name)
        if tid in skip:
            continue
        try:
            if (task / "comm").read_text().strip().startswith(prefixes):
                os.setpriority(os.PRIO_PROCESS, tid, target)
                if idle:
                    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                changed.append(tid)
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
    return changed


def name_this_thread(name: str) -> None:
    """Set the calling thread's OS name (Linux `comm`, 15 bytes), for `top -H`, py-spy and the
    renicing above; Python 3.11 does not. Best effort."""
    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name[:15])
    except OSError as exc:  # no /proc (not Linux): the thread keeps its name, nothing else changes
        log.debug("thread_name_failed", thread=name, error=str(exc))


def renice_this_thread(increment: int) -> None:
    """Make the calling thread `increment` nicer than the process (Linux: niceness is per thread)."""
    try:
        target = _nicer(os.getpriority(os.PRIO_PROCESS, os.getpid()), increment)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)
    except OSError as exc:
        log.warning("renice_failed", thread=threading.current_thread().name, error=str(exc))


async def keep_threads_nice(
    prefixes: tuple[str, ...], increment: int, *, idle: bool = False, interval_s: float = 1.0
) -> None:
    """Renice the store's threads named `prefixes`… (see `renice_threads`) now and whenever its
    pools start new ones; runs until cancelled."""
    done: set[int] = set()
    while True:
        try:
            if changed := renice_threads(prefixes, increment, done, idle=idle):
                done.update(changed)
                log.debug("threads_reniced", prefixes=prefixes, threads=len(done), nice=increment)
        except PermissionError as exc:
            log.warning("renice_failed", prefixes=prefixes, error=str(exc))
            return
        await trio.sleep(interval_s)


class StorePriority:
    """The niceness of the store's threads (`STORE_THREAD_PREFIXES`): `nice` (INGEST_STORE_NICE)
    normally, the writer's own while the spool is backed up. `set` is called in a store thread
    before each insert (by several at once when inserts run in parallel: it takes a lock); it
    renices only when the state changes (a scan of `/proc/self/task`).

    Error handling: where threads cannot be made less nice (no CAP_SYS_NICE), a warning is logged
    once and they stay at `nice` from then on.
    """

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self.urgent = False
        self._fixed = nice == 0  # nothing to switch
        self._lock = threading.Lock()

    def set(self, urgent: bool) -> None:
        with self._lock:
            if urgent == self.urgent or self._fixed:
                return
            try:
                renice_threads(STORE_THREAD_PREFIXES, 0 if urgent else self.nice)
            except PermissionError as exc:
                self._fixed = True
                log.warning("store_priority_fixed", nice=self.nice, error=str(exc))
                return
            self.urgent = urgent

    def current(self) -> int:
        """The niceness a store thread started now should have (relative to the process)."""
        return 0 if self.urgent else self.nice


def _nicer(current: int, increment: int) -> int:
    return min(current + increment, 19)
