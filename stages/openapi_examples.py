"""Examples in the OpenAPI document: a batch that can be sent as is, one that shows a 400, and one
example of every answer `POST /ingest` and the probes give (the shapes `stages.front` builds)."""

from __future__ import annotations

from typing import Any

VALID_BATCH: dict[str, Any] = {
    "summary": "A trace with an agent span and one priced LLM call (send as is: 202)",
    "value": {
        "version": "v1",
        "sdk": {"name": "docs-playground", "version": "1"},
        "traces": [{
            "id": "docs-example-trace",
            "name": "answer a question",
            "userId": "user-42",
            "environment": "default",
            "tags": ["docs"],
            "spans": [
                {"id": "root", "name": "agent", "kind": "agent", "startTime": "2026-11-20T10:00:00Z",
                 "endTime": "2026-11-20T10:00:02Z", "status": "ok"},
                {"id": "llm-1", "parentId": "root", "name": "chat", "kind": "llm", "model": "gpt-4o-mini",
                 "provider": "openai", "startTime": "2026-11-20T10:00:00.100Z",
                 "endTime": "2026-11-20T10:00:01.900Z", "status": "ok",
                 "usage": {"inputTokens": 120, "outputTokens": 40},
                 "input": [{"role": "user", "content": "What is a foglamp?"}],
                 "output": {"role": "assistant", "content": "A lamp that cuts through fog."}},
            ],
        }],
    },
}  # fmt: skip

INVALID_BATCH: dict[str, Any] = {
    "summary": "Invalid: a span without startTime and a negative token count (400 with issue paths)",
    "value": {
        "version": "v1",
        "traces": [{"id": "docs-invalid-trace", "spans": [
            {"id": "s1", "name": "chat", "kind": "llm", "usage": {"inputTokens": -1}}]}],
    },
}  # fmt: skip


def _answer(summary: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "value": value}


ANSWERS: dict[str, dict[str, Any]] = {
    "accepted": _answer("Accepted", {"accepted": 2}),
    "invalid_body": _answer(
        "Not JSON",
        {"error": "invalid_body", "message": "body is not valid JSON: JSON is malformed: invalid character (byte 0)"},
    ),  # fmt: skip
    "invalid_payload": _answer(
        "Payload issues",
        {
            "error": "invalid_payload",
            "issues": [
                {
                    "path": ["traces", 0, "spans", 0, "startTime"],
                    "code": "required",
                    "message": "`startTime` is required",
                },
                {
                    "path": ["traces", 0, "spans", 0, "usage", "inputTokens"],
                    "code": "invalid_value",
                    "message": "Expected `int` >= 0",
                },
            ],
        },
    ),  # fmt: skip
    "unauthorized": _answer("No valid key", {"error": "unauthorized"}),
    "request_timeout": _answer("The body stalled", {"error": "request_timeout"}),
    "payload_too_large": _answer("Too large", {"error": "payload_too_large", "limit": 5242880}),
    "unsupported_media_type": _answer("Unsupported media type", {"error": "unsupported_media_type"}),
    "rate_limited": _answer("Rate limited", {"error": "rate_limited"}),
    "quota_exceeded": _answer("Monthly quota used up", {"error": "quota_exceeded"}),
    "draining": _answer("Draining", {"error": "draining"}),
    "overloaded": _answer("Overloaded", {"error": "overloaded"}),
    "ok": _answer("Alive", {"status": "ok"}),
    "ready": _answer("Ready", {"status": "ready"}),
    "not_ready": _answer("Draining", {"status": "draining"}),
}
