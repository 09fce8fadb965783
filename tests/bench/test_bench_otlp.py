"""`bench.bench_otlp` runs end to end on a short budget and reports every figure it promises."""

from __future__ import annotations

from bench.bench_otlp import measure


def test_bench_otlp_reports_both_paths_and_the_front_extra() -> None:
    found = measure(seconds=0.4, rounds=1)
    assert found["spans_per_body"] == 100
    for key in ("v1_json_us_per_span", "otlp_pb_us_per_span", "v1_front_us_per_span", "otlp_front_us_per_span"):
        assert found[key] > 0, key
    assert found["ratio_otlp_over_v1"] > 0
    assert isinstance(found["front_extra_us_per_span"], float)
