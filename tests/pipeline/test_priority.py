"""CPU priorities: named threads of this process are reniced, once, and nothing else is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from pipeline.priority import StorePriority, renice_threads
from pipeline.store import StoreThread

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def named_thread(name: str) -> Iterator[int]:
    """A live thread of this process whose OS name (`comm`) is `name`; yields its thread id."""
    ready, release, tid = threading.Event(), threading.Event(), []

    def body() -> None:
        tid.append(threading.get_native_id())
        Path(f"/proc/self/task/{tid[0]}/comm").write_text(name)
        ready.set()
        release.wait(10)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield tid[0]
    finally:
        release.set()
        thread.join(5)


def test_only_matching_threads_are_made_nicer_and_only_once() -> None:
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    done: set[int] = set()
    with named_thread("MergeMutate7") as merge, named_thread("QueryPipeline") as other:
        assert renice_threads(("MergeMutate",), 3, done) == [merge]
        done.add(merge)
        assert os.getpriority(os.PRIO_PROCESS, merge) == min(base + 3, 19)
        assert os.getpriority(os.PRIO_PROCESS, other) == base
        assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == base
        assert renice_threads(("MergeMutate",), 3, done) == []  # already done: left alone
        assert os.sched_getscheduler(merge) == os.SCHED_OTHER


def test_threads_can_be_put_under_sched_idle() -> None:
    with named_thread("MergeMutate8") as merge, named_thread("QueryPipeline") as other:
        assert renice_threads(("MergeMutate",), 0, idle=True) == [merge]
        assert os.sched_getscheduler(merge) == os.SCHED_IDLE
        assert os.sched_getscheduler(other) == os.SCHED_OTHER
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this thread, the process's own


async def test_the_store_thread_runs_calls_in_order_at_its_niceness() -> None:
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    thread = StoreThread(nice=4)
    try:
        seen: list[int] = []

        def call(n: int) -> tuple[int, int]:
            seen.append(n)
            return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        first, second = await thread.run(lambda: call(1)), await thread.run(lambda: call(2))
        assert first == second and first[0] != threading.get_native_id()  # one thread, not this one
        assert first[1] == min(base + 4, 19) and os.getpriority(os.PRIO_PROCESS, os.getpid()) == base
        assert seen == [1, 2]
        with pytest.raises(ZeroDivisionError):
            await thread.run(lambda: 1 / 0)
        # A cancelled caller still waits for its call to end (the store is never left mid-call).
        finished: list[bool] = []

        def slow() -> None:
            time.sleep(0.2)
            finished.append(True)

        with trio.move_on_after(0.01) as scope:
            await thread.run(slow)
        assert finished == [True] and not scope.cancelled_caught
    finally:
        thread.stop()


def test_the_store_priority_follows_urgency_and_leaves_other_threads_alone() -> None:
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    if base > 0 and os.geteuid() != 0:
        pytest.skip("making threads less nice needs privileges this test process lacks")
    priority = StorePriority(4)
    with named_thread("QueryPipelineEx") as query, named_thread("MergeMutate1") as merge:
        priority.set(True)  # urgent: the store's threads at the writer's priority
        assert os.getpriority(os.PRIO_PROCESS, query) == base
        priority.set(False)
        assert os.getpriority(os.PRIO_PROCESS, query) == min(base + 4, 19)
        priority.set(True)
        assert os.getpriority(os.PRIO_PROCESS, query) == base
        assert os.getpriority(os.PRIO_PROCESS, merge) == base  # not one of the store's
        assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == base


UNPRIVILEGED = """
import os, sys, threading
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from pipeline.priority import StorePriority
ready, release = threading.Event(), threading.Event()
tid = []
def body():
    tid.append(threading.get_native_id())
    Path(f"/proc/self/task/{tid[0]}/comm").write_text("QueryPipelineEx")
    ready.set()
    release.wait(10)
threading.Thread(target=body, daemon=True).start()
ready.wait(5)
base = os.getpriority(os.PRIO_PROCESS, 0)
priority = StorePriority(4)
priority.set(False)  # already not urgent: nothing to do
priority.urgent = True
priority.set(False)  # nicer: always allowed
nicer = os.getpriority(os.PRIO_PROCESS, tid[0])
priority.set(True)   # refused: logged once, and the threads stay nicer
priority.set(False)
priority.set(True)
print(base, nicer, os.getpriority(os.PRIO_PROCESS, tid[0]), priority.urgent)
"""


def test_without_privileges_the_store_stays_at_its_niceness_and_says_so_once(tmp_path: Path) -> None:
    script = tmp_path / "unprivileged.py"
    script.write_text(UNPRIVILEGED)
    command = [sys.executable, str(script), str(REPO)]
    if os.geteuid() == 0:  # root: run it without CAP_SYS_NICE, as a process that may not un-nice
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop CAP_SYS_NICE")
        command = ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    base, nicer, after, urgent = done.stdout.split()
    assert int(nicer) == min(int(base) + 4, 19) and after == nicer and urgent == "False"
    assert done.stderr.count("store_priority_fixed") == 1
