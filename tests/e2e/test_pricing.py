"""Pricing end to end (SPEC §3): spans posted to the real node, costs read back from ClickHouse and
compared with published prices worked out by hand; the prices file; `run.py prices`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.nodes import (
    RUN_PY,
    Node,
    batch,
    child_env,
    cli,
    create_key,
    create_org,
    free_port,
    query,
    span,
    trace,
    wait_for_rows,
)

M = 1_000_000
PRICES = {"version": 1, "models": [
    {"model": "acme-llm-70b", "input_mtok": 0.40, "output_mtok": 1.20},
    {"model": "gpt-4o-mini", "provider": "openai", "input_mtok": 0.10, "output_mtok": 0.50,
     "start_date": "2026-12-01", "comment": "negotiated from December"},
]}  # fmt: skip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pricing")
    prices = root / "prices.json"
    prices.write_text(json.dumps(PRICES))
    node = Node(root / "data", env={"INGEST_PRICES_FILE": str(prices), "INGEST_FLUSH_INTERVAL_MS": "200"}).start()
    yield node
    assert node.stop() == 0


def llm(span_id: str, model: str | None, usage: dict | None, provider: str | None = None, **extra) -> dict:
    fields = {"kind": "llm", **extra}
    if model is not None:
        fields["model"] = model
    if provider is not None:
        fields["provider"] = provider
    if usage is not None:
        fields["usage"] = usage
    return span(span_id, **fields)


CASES = {  # span id: (span, expected (input, output, cache_read, cache_write, total) or None, price_model)
    "mini": (llm("mini", "gpt-4o-mini", {"inputTokens": M, "outputTokens": M}, "openai"),
             (0.15, 0.60, 0.0, 0.0, 0.75), "gpt-4o-mini"),
    "prefixed": (llm("prefixed", "openai/gpt-4o-mini", {"inputTokens": M, "outputTokens": M}),
                 (0.15, 0.60, 0.0, 0.0, 0.75), "gpt-4o-mini"),
    "dated": (llm("dated", "gpt-4o-mini-2024-07-18", {"inputTokens": M, "outputTokens": M}, "openai"),
              (0.15, 0.60, 0.0, 0.0, 0.75), "gpt-4o-mini"),
    # 1M input of which 400k cached: 600k × 0.15 + 400k × 0.075, output 0.
    "cached": (llm("cached", "gpt-4o-mini", {"inputTokens": M, "cacheReadTokens": 400_000}, "openai"),
               (0.09, 0.0, 0.03, 0.0, 0.12), "gpt-4o-mini"),
    # claude-3-5-sonnet 3 / 15, cache write 3.75, cache read 0.30 per M.
    "sonnet": (llm("sonnet", "claude-3-5-sonnet-20241022", {"inputTokens": 2 * M, "outputTokens": M,
                   "cacheReadTokens": M, "cacheWriteTokens": 500_000}, "anthropic"),
               (1.5, 15.0, 0.30, 1.875, 18.675), "claude-3-5-sonnet"),
    "override": (llm("override", "acme-llm-70b", {"inputTokens": M, "outputTokens": M}),
                 (0.40, 1.20, 0.0, 0.0, 1.60), "acme-llm-70b"),
    "unknown": (llm("unknown", "my-own-model-9000", {"inputTokens": 10, "outputTokens": 10}), None, None),
    "no-usage": (llm("no-usage", "gpt-4o-mini", None, "openai"), None, None),
}  # fmt: skip


def test_stored_costs_match_published_prices(node: Node) -> None:
    key = create_key(node.data_dir, create_org(node.data_dir, "pricing"))
    t = f"t-{uuid.uuid4().hex}"
    spans = [case[0] for case in CASES.values()]
    spans.append(llm("caller", "gpt-4o-mini", {"inputTokens": M, "outputTokens": M}, "openai", cost={"total": 1.23}))
    spans.append(llm("december", "gpt-4o-mini", {"inputTokens": M, "outputTokens": M}, "openai",
                     startTime="2026-12-15T00:00:00Z"))  # the override in force from December  # fmt: skip
    assert node.post(batch(trace(t, *spans)), key=key).status_code == 202
    sql = f"SELECT count() AS c FROM foglamp.spans FINAL WHERE trace_id = '{t}'"
    assert wait_for_rows(node.data_dir, sql, len(spans)) == len(spans)
    rows = {r["span_id"]: r for r in query(node.data_dir, f"SELECT * FROM foglamp.spans FINAL WHERE trace_id = '{t}'")}
    for span_id, (_, expected, price_model) in CASES.items():
        row = rows[span_id]
        costs = tuple(row[f"{c}_cost"] for c in ("input", "output", "cache_read", "cache_write", "total"))
        if expected is None:
            assert row["priced"] is False and costs == (None,) * 5 and row["price_source"] == "unpriced", span_id
        else:
            assert row["priced"] is True and costs == pytest.approx(expected), (span_id, costs)
            assert row["price_model"] == price_model, span_id
    assert rows["override"]["price_source"] == "override" and rows["mini"]["price_source"] == "genai-prices"
    caller = rows["caller"]
    assert caller["total_cost"] == 1.23 and caller["price_source"] == "caller" and caller["input_cost"] is None
    assert rows["december"]["total_cost"] == pytest.approx(0.60) and rows["december"]["price_source"] == "override"


def test_prices_command_shows_resolution_and_cost(tmp_path: Path) -> None:
    out = cli(tmp_path, "prices", "openai/gpt-4o-mini-2024-07-18", "--input", "1000000", "--output", "1000000").stdout
    assert "gpt-4o-mini" in out and "0.75" in out
    unknown = cli(tmp_path, "prices", "no-such-model", check=False)
    assert unknown.returncode == 1 and "priced = false" in unknown.stdout


def test_a_bad_prices_file_stops_the_node_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps({"version": 1, "models": [{"model": "x", "input_mtok": -1, "output_mtok": 1}]}))
    argv = [sys.executable, RUN_PY, "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                            env=child_env({"INGEST_PRICES_FILE": str(bad)}))  # fmt: skip
    assert result.returncode == 2
    assert str(bad) in result.stderr and "input_mtok" in result.stderr
