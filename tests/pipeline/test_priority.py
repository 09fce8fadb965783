"""CPU priorities: named threads of this process are reniced, once, and nothing else is."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.priority import renice_threads


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
