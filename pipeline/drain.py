"""Draining (SPEC §6): what starts it, and the state request handlers read while it runs.

The drain sequence itself is a fixed nesting of nurseries and deadlines in `node.topology`
(stop upstream first, so each stage drains into a live consumer). This module only provides its
trigger: `watch_for_drain` flips `DrainState.draining` (new requests get 503 `draining`, `/readyz`
answers 503) when SIGTERM or SIGINT arrives, or when the supervisor closes our stdin (it died, or
asks us to stop); `DrainState.started` is the event to wait on.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import trio

from pipeline.log import get_logger

log = get_logger("drain")


@dataclass(slots=True)
class DrainState:
    draining: bool = False
    started: trio.Event = field(default_factory=trio.Event)

    def begin(self, reason: str) -> None:
        if not self.draining:
            self.draining = True
            log.info("draining", reason=reason)
            self.started.set()


async def stdin_closed() -> None:
    """Return when standard input reaches end of file (the supervisor closed its end)."""
    stream = trio.lowlevel.FdStream(os.dup(0))
    async with stream:
        while await stream.receive_some(4096):
            pass


async def watch_for_drain(state: DrainState) -> None:
    """Begin draining on SIGTERM/SIGINT or stdin EOF. Runs until cancelled, so
    later signals (Ctrl-C reaches the whole process group, then the supervisor forwards SIGTERM)
    are absorbed instead of killing the process mid-drain."""
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for signum in received:
                    state.begin(signal.Signals(signum).name)

        async def on_stdin() -> None:
            await stdin_closed()
            state.begin("stdin closed")

        nursery.start_soon(on_signals)
        nursery.start_soon(on_stdin)
