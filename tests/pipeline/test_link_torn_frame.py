"""The front's link reader against a writer that tears its reply frames (pipeline.testing's
`TornFrameWriter`): every caller is answered (None, which the front turns into 503 `overloaded`),
and the link survives and reconnects instead of taking the front worker down."""

from __future__ import annotations

from pathlib import Path

import trio

from pipeline.link import Call, call, run_link
from pipeline.messages import Admit
from pipeline.testing import TornFrameWriter


async def test_a_torn_reply_frame_answers_every_call_and_the_link_reconnects(tmp_path: Path) -> None:
    writer = TornFrameWriter(tmp_path / "w.sock")
    answers: list[object] = []

    async def caller(send: trio.MemorySendChannel[Call]) -> None:
        async with send:
            answers.append(await call(send, Admit(0, "k", 5.0), timeout_s=60))

    with trio.fail_after(5):  # a hang is a failure, not a stuck suite
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.serve)
            send, receive = trio.open_memory_channel[Call](8)
            link_done = trio.Event()

            async def link() -> None:
                await run_link(writer.socket_path, receive)  # raises here if a torn frame kills it
                link_done.set()

            nursery.start_soon(link)
            async with send:
                for _ in range(3):  # three rounds: each tears one connection
                    async with trio.open_nursery() as callers:
                        for _ in range(5):
                            callers.start_soon(caller, send.clone())
            await link_done.wait()  # the input ended: the link returned normally
            nursery.cancel_scope.cancel()
    assert answers == [None] * 15  # every call answered, none with a reply it did not ask for
    assert writer.connections >= 3  # the link reconnected after each torn frame
