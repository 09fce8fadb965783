"""How the link cuts the calls waiting together into sends (`pipeline.link.send_groups`): in
order, at most a byte budget of Append rows per send (an Append over it starts a send of its own),
small messages in the send of the call before them."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pipeline.link import _SEND_BYTES, send_groups
from pipeline.messages import Admit, Append, Message


def _append(size: int) -> Append:
    return Append(0, "org", "key", 1, None, b"x" * size)


def test_groups_by_rows_bytes_in_order() -> None:
    admit = Admit(0, "key", 10.0)
    a, b, c, d = _append(300), _append(300), _append(500), _append(2000)
    groups = send_groups([admit, a, b, admit, c, d, admit], max_bytes=1000)
    assert groups == [[admit, a, b, admit], [c], [d, admit]]


def test_one_small_call_is_one_group() -> None:
    admit = Admit(0, "key", 10.0)
    assert send_groups([admit], _SEND_BYTES) == [[admit]]


def test_the_budget_keeps_a_burst_of_100_span_batches_below_the_mmap_threshold() -> None:
    appends = [_append(230_000) for _ in range(16)]  # 100-span batches, as the fronts make them
    groups = send_groups(appends, _SEND_BYTES)
    assert max(sum(len(m.rows) for m in group) for group in groups) < 1 << 20
    assert [m for group in groups for m in group] == appends


@given(st.lists(st.one_of(st.integers(0, 3000), st.none()), max_size=40), st.integers(1, 4000))
def test_groups_keep_every_message_in_order_within_the_budget(sizes: list[int | None], budget: int) -> None:
    messages: list[Message] = [Admit(0, "key", 1.0) if size is None else _append(size) for size in sizes]
    groups = send_groups(messages, budget)
    assert [m for group in groups for m in group] == messages
    assert all(group for group in groups) or messages == []
    for group in groups:
        rows = [len(m.rows) for m in group if isinstance(m, Append) and m.rows]
        assert sum(rows) <= budget or len(rows) == 1  # over the budget: one Append alone
    # a new group starts only where the next Append's rows would pass the budget
    for before, after in itertools.pairwise(groups):
        rows = sum(len(m.rows) for m in before if isinstance(m, Append))
        assert isinstance(after[0], Append) and rows + len(after[0].rows) > budget
