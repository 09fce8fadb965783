"""The published schema is the truth (issue 14): batches generated from /openapi.json are accepted
by the real node, apart from the cross-field rules the schema and the README list."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from stages.openapi import openapi_document
from tests.nodes import Node, create_key, create_org

EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2299, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


def batch_strategy() -> st.SearchStrategy[dict]:
    components = copy.deepcopy(openapi_document()["components"])
    schemas = components["schemas"]
    # Small batches (a subset of what the schema allows), so that an example takes milliseconds.
    schemas["Batch"]["properties"]["traces"]["maxItems"] = 2
    schemas["Trace"]["properties"]["spans"]["maxItems"] = 3
    for name in ("input", "output"):
        schemas["Span"]["properties"][name] = {"type": ["string", "integer", "boolean", "null"]}
    for schema in schemas.values():
        if schema.get("type") == "object" and "properties" in schema:
            schema["additionalProperties"] = False  # unknown fields are ignored: not worth generating
    return from_schema(inline(schemas["Batch"], schemas))


def inline(schema: Any, schemas: dict[str, Any]) -> Any:
    """`schema` with its `$ref`s to `schemas` replaced by what they point at."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return inline(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas)
        return {k: inline(v, schemas) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [inline(v, schemas) for v in schema]
    return schema


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None


def follow_listed_rules(batch: dict) -> dict:
    """`batch` changed just enough to follow the cross-field rules in Batch's
    `x-cross-field-rules` (rejecting instead would discard most examples)."""
    ids: dict[str, set[str]] = {}
    for trace in batch["traces"]:
        seen = ids.setdefault(trace["id"], set())
        for n, span in enumerate(trace["spans"]):
            start = _time(span["startTime"])
            if start is None or not EARLIEST <= start <= LATEST:
                span["startTime"], start = "2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=timezone.utc)
            if span.get("endTime") is not None:
                end = _time(span["endTime"])
                if end is None or not EARLIEST <= end <= LATEST or end < start:
                    span["endTime"] = None
            if span.get("parentId") is not None and span["parentId"] == span["id"]:
                span["parentId"] = None
            usage = span.get("usage")
            if usage:
                usage["inputTokens"] = max(usage.get("inputTokens", 0),
                                           usage.get("cacheReadTokens", 0) + usage.get("cacheWriteTokens", 0))
                usage["outputTokens"] = max(usage.get("outputTokens", 0), usage.get("reasoningTokens", 0))
            while span["id"] in seen:
                span["id"] = f"{span['id'][:100]}~{n}"
            seen.add(span["id"])
    return batch


@pytest.fixture(scope="module")
def node_and_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str]]:
    data_dir = tmp_path_factory.mktemp("schema") / "data"
    node = Node(data_dir, workers=1, env={"INGEST_RATE_LIMIT_RPS": "100000"}).start()
    try:
        yield node, create_key(data_dir, create_org(data_dir, "acme"))
    finally:
        node.stop()


def test_the_schema_lists_the_cross_field_rules() -> None:
    rules = openapi_document()["components"]["schemas"]["Batch"]["x-cross-field-rules"]
    assert any("1900-01-01" in rule for rule in rules)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
@given(batch=batch_strategy())
def test_schema_valid_batches_are_accepted(node_and_key: tuple[Node, str], batch: dict[str, Any]) -> None:
    node, key = node_and_key
    body = json.dumps(follow_listed_rules(batch)).encode()
    response = httpx.post(f"{node.url}/ingest", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 202, (response.text, body[:2000])
