"""The OpenAPI document (`stages.openapi`): every answer has an example, the examples are what the
node really says, and the headers a client relies on are declared."""

from __future__ import annotations

import json

from stages.openapi import RATE_LIMIT_HEADERS, openapi_document
from stages.openapi_examples import ANSWERS, INVALID_BATCH, VALID_BATCH
from stages.payload import Batch
from stages.validate import InvalidBody, InvalidPayload, decode_batch

INGEST_STATUSES = {"202", "400", "401", "408", "413", "415", "429", "503"}


def test_every_json_answer_has_examples_and_a_description() -> None:
    doc = openapi_document()
    assert {"/ingest", "/healthz", "/readyz", "/metrics"} <= set(doc["paths"])
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary") and operation.get("operationId"), (path, method)
            for status, response in operation["responses"].items():
                assert response["description"], (path, status)
                for media, content in response.get("content", {}).items():
                    if media == "application/json":
                        assert content.get("examples"), (path, method, status)


def test_ingest_documents_each_answer_shape_and_its_headers() -> None:
    doc = openapi_document()
    responses = doc["paths"]["/ingest"]["post"]["responses"]
    assert set(responses) == INGEST_STATUSES
    errors = {status: {e["value"]["error"] for e in r["content"]["application/json"]["examples"].values()}
              for status, r in responses.items() if status != "202"}  # fmt: skip
    assert errors == {"400": {"invalid_body", "invalid_payload"}, "401": {"unauthorized"}, "408": {"request_timeout"},
                      "413": {"payload_too_large"}, "415": {"unsupported_media_type"},
                      "429": {"rate_limited", "quota_exceeded"}, "503": {"draining", "overloaded"}}  # fmt: skip
    assert set(RATE_LIMIT_HEADERS) <= set(responses["202"]["headers"])
    assert {"Retry-After", *RATE_LIMIT_HEADERS} <= set(responses["429"]["headers"])
    assert "Retry-After" in responses["503"]["headers"]
    for header in ("Retry-After", *RATE_LIMIT_HEADERS):
        assert doc["components"]["headers"][header]["description"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["apiKey"]["name"] == "X-API-Key"
    assert doc["servers"] == [{"url": "/", "description": "This node"}]  # the page's own origin


def test_request_examples_are_what_the_validate_stage_says() -> None:
    assert isinstance(decode_batch(json.dumps(VALID_BATCH["value"]).encode(), "json"), Batch)
    invalid = decode_batch(json.dumps(INVALID_BATCH["value"]).encode(), "json")
    assert isinstance(invalid, InvalidPayload)
    assert invalid.issues == ANSWERS["invalid_payload"]["value"]["issues"]
    not_json = decode_batch(b"x", "json")
    assert isinstance(not_json, InvalidBody) and not_json.message == ANSWERS["invalid_body"]["value"]["message"]
    body = openapi_document()["paths"]["/ingest"]["post"]["requestBody"]["content"]["application/json"]
    assert body["examples"] == {"valid": VALID_BATCH, "invalid": INVALID_BATCH}
