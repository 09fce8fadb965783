"""Schema truth (issue 14): integral floats for integers, one issue for an out-of-range number,
the timestamp range published."""

from __future__ import annotations

import json

from stages.openapi import openapi_document
from stages.payload import Batch
from stages.validate import InvalidPayload, decode_batch


def body(usage: str = '{"inputTokens": 147747.0}', total: str = "1") -> bytes:
    return (b'{"version":"v1","traces":[{"id":"t","spans":[{"id":"s","name":"n",'
            b'"startTime":"2026-01-01T00:00:00Z","usage":%s,"cost":{"total":%s}}]}]}'
            % (usage.encode(), total.encode()))  # fmt: skip


def test_an_integral_float_is_an_integer_as_json_schema_says() -> None:
    batch = decode_batch(body(), "json")
    assert isinstance(batch, Batch)
    assert batch.traces[0].spans[0].usage.input_tokens == 147747
    assert isinstance(batch.traces[0].spans[0].usage.input_tokens, int)


def test_a_fraction_is_still_refused() -> None:
    result = decode_batch(body('{"inputTokens": 1.5}'), "json")
    assert isinstance(result, InvalidPayload)
    assert result.issues[0]["path"] == ["traces", 0, "spans", 0, "usage", "inputTokens"]


def test_an_integral_float_next_to_another_issue_is_not_reported() -> None:
    result = decode_batch(body('{"inputTokens": 2.0, "outputTokens": -1}'), "json")
    assert isinstance(result, InvalidPayload)
    assert [i["path"][-1] for i in result.issues] == ["outputTokens"]


def test_a_number_out_of_range_gives_one_issue_with_its_path() -> None:
    result = decode_batch(body('{"inputTokens": 1}', "1e400"), "json")
    assert isinstance(result, InvalidPayload)
    assert result.issues == [{"path": ["traces", 0, "spans", 0, "cost", "total"], "code": "invalid_value",
                              "message": "Number out of range"}]  # fmt: skip


def test_the_timestamp_range_and_the_rules_are_published() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert "1900-01-01" in schemas["Span"]["properties"]["startTime"]["description"]
    assert any("2299-12-31" in rule for rule in schemas["Batch"]["x-cross-field-rules"])
    assert "408" in json.dumps(openapi_document()["paths"]["/ingest"]["post"]["responses"])
