"""CPU priorities: named threads of this process are reniced, once, and nothing else is."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from pipeline.priority import renice_threads
from pipeline.store import StoreThread


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
        assert renice_threads(("MergeMutate",), 3, done) == 1
        assert done == {merge}
        assert os.getpriority(os.PRIO_PROCESS, merge) == min(base + 3, 19)
        assert os.getpriority(os.PRIO_PROCESS, other) == base
        assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == base
        assert renice_threads(("MergeMutate",), 3, done) == 0  # already done: left alone


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
