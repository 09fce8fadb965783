"""`bench.front_stages`: each step's input is the previous step's output, the HTTP step gives the
body back whole, and the timed mode reports every step of both formats."""

from __future__ import annotations

from bench.front_stages import inputs, report, steps, timed
from pipeline.frames import _HEADER
from pipeline.messages import Append, decode


def test_the_steps_chain_from_the_request_to_the_frame() -> None:
    data = inputs(pool_size=1)
    for fmt, chain in steps().items():
        names = [name for name, _ in chain]
        assert names == ["http", "decompress", "decode", "map", "price+rows", "encode", "frame", "answer"]
        raw_request, body = data[fmt][0][0], data[fmt][1][0]
        assert raw_request.endswith(bytes(body)) and len(body) > 100_000  # h11 gave the body back whole
        frame = data[fmt][names.index("answer")][0]
        append = decode(bytes(frame[_HEADER.size :]))
        assert isinstance(append, Append) and len(append.rows) > 100_000


def test_timed_reports_every_step_of_both_formats() -> None:
    found = timed(rounds=1, pool_size=1)
    assert set(found) == {"v1", "otlp"}
    assert set(found["v1"]) == set(found["otlp"]) == {name for name, _ in steps()["v1"]}
    assert found["otlp"]["map"] > 0 and found["v1"]["decode"] > 0
    assert "total" in report(found, "µs/span")
