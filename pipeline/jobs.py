"""The unit of work inside a front worker: one request's batch, and how it is answered.

A `Job` flows front → validate → price → link, always as a whole batch. Each stage either passes
it on or answers it through `job.reply`, a one-slot channel the request handler waits on. An
answer is a value (`Rejected`, the writer's `AppendReply`, or None for "the writer link broke"),
never an exception. The payload is opaque here: plumbing never looks inside a trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from pipeline.messages import AppendReply, AppendView


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request refused by a stage: the HTTP status and JSON body to answer with."""

    status: int
    body: dict[str, Any]


Outcome = Rejected | AppendReply | None


@dataclass(frozen=True, slots=True)
class Job:
    org_id: str
    key_id: str
    monthly_span_quota: int | None
    media: str  # "json" | "msgpack" | "otlp-protobuf" | "otlp-json"
    encoding: str  # "identity" | "gzip" | "zstd" (| "deflate" for OTLP)
    body: bytes | bytearray
    reply: trio.MemorySendChannel[Any] = field(repr=False)
    payload: Any = None  # set by the validate stage: the decoded batch
    partial: Any = None  # OTLP only: a `stages.otlp.Partial` the validate stage fills for the answer
    deadline: float = 0.0  # time.monotonic() when the front answers 503 if the writer has not acked


T = TypeVar("T")


def with_waiting(first: T, receive: trio.MemoryReceiveChannel[T], most: int) -> list[T]:
    """`first` and the items already waiting in `receive`, `most` in all, without waiting: how a
    stage takes a batch (one group commit, one socket write) from a channel."""
    batch = [first]
    while len(batch) < most:
        try:
            batch.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch


def deliver(reply: trio.MemorySendChannel[Any], value: Any) -> None:
    """Put an answer in a one-slot reply channel without blocking. A waiter that has gone away
    (its client left) is not an error; a reply channel is answered at most once."""
    try:
        reply.send_nowait(value)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        # The expected case, not a failure: the waiter gave up (its client left, or its deadline
        # answered it first), so nobody is left to tell; or its one slot is already taken.
        return


def answer(job: Job, outcome: Outcome) -> None:
    deliver(job.reply, outcome)


# The writer's unit of work: one Append on its way from a link connection to the spool stage.
@dataclass(frozen=True, slots=True)
class SpoolJob:
    append: AppendView
    frame: bytearray  # the Append as received: spooled as it is
    reply: Callable[[AppendReply], None]
