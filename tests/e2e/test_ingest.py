"""End to end: `run.py serve --workers 2` as a subprocess, every status of POST /ingest, rows read
back with `run.py query`. One node for the module; each test uses its own trace ids."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import httpx
import msgpack
import pytest
import zstandard

from stages.price_stage import NATIVE_MIN_ROWS
from tests.nodes import Node, batch, cli, create_key, create_org, query, span, trace, wait_for_rows

MAX_BODY = 200_000
MAX_DECOMPRESSED = 1_000_000
MAX_IO = 1_000


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("ingest") / "data"
    env = {"INGEST_MAX_BODY_BYTES": str(MAX_BODY), "INGEST_MAX_DECOMPRESSED_BYTES": str(MAX_DECOMPRESSED),
           "INGEST_MAX_IO_BYTES": str(MAX_IO), "INGEST_FLUSH_INTERVAL_MS": "200"}  # fmt: skip
    node = Node(data_dir, workers=2, env=env).start()
    yield node
    assert node.stop() == 0, node.logs()


@pytest.fixture(scope="module")
def org(node: Node) -> str:
    return create_org(node.data_dir, "acme")


@pytest.fixture(scope="module")
def key(node: Node, org: str) -> str:
    return create_key(node.data_dir, org, "--name", "e2e")


def tid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def count(data_dir: Path, trace_id: str) -> int:
    return int(query(data_dir, f"SELECT count() AS c FROM foglamp.spans FINAL WHERE trace_id = '{trace_id}'")[0]["c"])


def stored(data_dir: Path, trace_id: str, expected: int) -> list[dict]:
    sql = f"SELECT count() AS c FROM foglamp.spans FINAL WHERE trace_id = '{trace_id}'"
    assert wait_for_rows(data_dir, sql, expected) == expected
    return query(data_dir, f"SELECT * FROM foglamp.spans FINAL WHERE trace_id = '{trace_id}' ORDER BY span_id")


def llm_batch(trace_id: str, n: int = 2) -> dict:
    spans = [span("root", kind="agent", endTime="2026-11-20T10:00:05Z")]
    spans += [span(f"llm{i}", parentId="root", kind="llm", model="gpt-4o-mini", provider="openai",
                   endTime="2026-11-20T10:00:01.250Z", status="ok",
                   usage={"inputTokens": 1_000_000, "outputTokens": 1_000_000},
                   input={"messages": [{"role": "user", "content": "héllo"}]}, output="hi",
                   attributes={"temperature": 0.2, "stream": False})
              for i in range(n - 1)]  # fmt: skip
    return batch(trace(trace_id, *spans, name="chat", userId="u1", sessionId="s1",
                       environment="prod", release="1.2.3", tags=["a", "b"], metadata={"plan": "pro", "n": 3}))


# --------------------------------------------------------------------------- accepted forms
# A small batch travels as MsgPack rows, a big one as Native columns (stages.price_stage): both
# must store the same columns.
@pytest.mark.parametrize("spans", [3, 60])
def test_json_batch_is_stored_with_every_column(node: Node, key: str, org: str, spans: int) -> None:
    assert (spans >= NATIVE_MIN_ROWS) == (spans == 60)
    t = tid()
    response = node.post(llm_batch(t, spans), key=key)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": spans}
    # A plain Content-Length reply, not chunked: cheaper for the server and for SDKs.
    assert response.headers["content-length"] == str(len(response.content))
    assert "transfer-encoding" not in response.headers
    rows = stored(node.data_dir, t, spans)
    llm = rows[0]
    assert llm["org_id"] == org and llm["trace_id"] == t and llm["span_id"] == "llm0"
    assert llm["parent_span_id"] == "root" and llm["trace_name"] == "chat"
    assert (llm["user_id"], llm["session_id"], llm["environment"], llm["release"]) == ("u1", "s1", "prod", "1.2.3")
    assert llm["tags"] == ["a", "b"] and json.loads(llm["metadata"]) == {"plan": "pro", "n": 3}
    assert (llm["name"], llm["kind"], llm["status"]) == ("span llm0", "llm", "ok")
    assert llm["start_time"].startswith("2026-11-20 10:00:00") and llm["end_time"].startswith("2026-11-20 10:00:01.25")
    assert llm["duration_ms"] == 1250
    assert (llm["input_tokens"], llm["output_tokens"]) == (1_000_000, 1_000_000)
    assert llm["total_cost"] == pytest.approx(0.75) and llm["priced"] is True
    assert llm["input_cost"] == pytest.approx(0.15) and llm["output_cost"] == pytest.approx(0.60)
    assert json.loads(llm["input"]) == {"messages": [{"role": "user", "content": "héllo"}]}
    assert json.loads(llm["output"]) == "hi" and llm["input_truncated"] is False
    assert json.loads(llm["attributes"]) == {"temperature": 0.2, "stream": False}
    same = [{k: v for k, v in row.items() if k not in ("span_id", "name")} for row in rows[:-1]]
    assert all(row == same[0] for row in same)  # every LLM span alike, but for its id and name
    root = rows[-1]
    assert root["kind"] == "agent" and root["parent_span_id"] is None and root["model"] == ""
    assert root["priced"] is False and root["total_cost"] is None and root["input"] is None


@pytest.mark.parametrize("form", ["x-api-key", "msgpack", "gzip", "zstd", "msgpack+zstd"])
def test_every_accepted_form(node: Node, key: str, form: str) -> None:
    t = tid()
    payload = llm_batch(t, 2)
    headers: dict[str, str] = {}
    body = json.dumps(payload).encode()
    if "msgpack" in form:
        body, headers["Content-Type"] = msgpack.packb(payload), "application/msgpack"
    if "gzip" in form:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    if "zstd" in form:
        body, headers["Content-Encoding"] = zstandard.ZstdCompressor().compress(body), "zstd"
    if form == "x-api-key":
        headers["X-API-Key"] = key
    response = node.post(body, key=None if form == "x-api-key" else key, headers=headers)
    assert response.status_code == 202, response.text
    rows = stored(node.data_dir, t, 2)
    assert json.loads(rows[0]["input"]) == {"messages": [{"role": "user", "content": "héllo"}]}
    assert rows[0]["total_cost"] == pytest.approx(0.75)


def test_resent_batch_is_one_row_per_span(node: Node, key: str) -> None:
    t = tid()
    for _ in range(3):
        assert node.post(llm_batch(t, 2), key=key).status_code == 202
    stored(node.data_dir, t, 2)
    sql = f"SELECT count() AS c FROM foglamp.spans FINAL WHERE trace_id = '{t}'"
    assert int(query(node.data_dir, sql)[0]["c"]) == 2


def test_input_output_truncated_at_max_io_bytes(node: Node, key: str) -> None:
    t = tid()
    big = "é" * MAX_IO  # 2 bytes each: the cut lands inside a character
    response = node.post(batch(trace(t, span("s", input=big, output="short"))), key=key)
    assert response.status_code == 202
    row = stored(node.data_dir, t, 1)[0]
    assert row["input_truncated"] is True and row["output_truncated"] is False
    assert len(row["input"].encode()) <= MAX_IO and row["input"].startswith('"éé')


# --------------------------------------------------------------------------- refusals
def test_401_for_missing_malformed_unknown_and_wrong_scheme(node: Node, key: str) -> None:
    body = batch(trace(tid(), span("s")))
    cases = [
        {}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer fl_" + "x" * 40},
        {"Authorization": f"Basic {key}"}, {"X-API-Key": "fl_short"},
    ]  # fmt: skip
    for headers in cases:
        response = node.post(body, key=None, headers=headers)
        assert response.status_code == 401, headers
        assert response.json() == {"error": "unauthorized"}
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_revoked_key_is_refused_on_the_next_request_on_every_worker(node: Node, org: str) -> None:
    doomed = create_key(node.data_dir, org, "--name", "doomed")
    assert node.post(batch(trace(tid(), span("s"))), key=doomed).status_code == 202
    cli(node.data_dir, "keys", "revoke", doomed[:12])
    for _ in range(8):  # new connections: spread over both workers
        assert node.post(batch(trace(tid(), span("s"))), key=doomed).status_code == 401


def test_415_for_media_type_and_encoding(node: Node, key: str) -> None:
    body = json.dumps(batch(trace(tid(), span("s")))).encode()
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/json; charset=latin-1"},
                    {"Content-Encoding": "br"}, {"Content-Encoding": "deflate"}):  # fmt: skip
        response = node.post(body, key=key, headers=headers)
        assert response.status_code == 415, headers
        assert response.json() == {"error": "unsupported_media_type"}


def test_413_from_content_length_chunked_and_decompressed(node: Node, key: str) -> None:
    too_big = b"x" * (MAX_BODY + 1)
    response = node.post(too_big, key=key)
    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large", "limit": MAX_BODY}

    def chunks():
        for _ in range(MAX_BODY // 10_000 + 5):
            yield b" " * 10_000

    response = httpx.post(f"{node.url}/ingest", content=chunks(), timeout=30,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["limit"] == MAX_BODY

    bomb = gzip.compress(b" " * (MAX_DECOMPRESSED + 10))
    assert len(bomb) < MAX_BODY
    response = node.post(bomb, key=key, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large", "limit": MAX_DECOMPRESSED}


def test_400_invalid_body(node: Node, key: str) -> None:
    for body, headers in ((b"{not json", {}), (b"\xc1\xc1", {"Content-Type": "application/msgpack"}),
                          (b"garbage", {"Content-Encoding": "gzip"}), (b"[1, 2]", {})):  # fmt: skip
        response = node.post(body, key=key, headers=headers)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_body"
        assert response.json()["message"]


def test_400_invalid_payload_reports_every_issue_with_its_path(node: Node, key: str) -> None:
    t = tid()
    bad = batch(trace(t, span("a", startTime="yesterday"), span("a", kind="robot"),
                      span("c", endTime="2026-11-20T09:00:00Z", usage={"inputTokens": 1, "cacheReadTokens": 2})))
    response = node.post(bad, key=key)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_payload"
    paths = {tuple(issue["path"]) for issue in body["issues"]}
    assert ("traces", 0, "spans", 0, "startTime") in paths
    assert ("traces", 0, "spans", 1, "kind") in paths
    assert ("traces", 0, "spans", 1, "id") in paths  # duplicate id
    assert ("traces", 0, "spans", 2, "endTime") in paths
    assert any(p[:4] == ("traces", 0, "spans", 2) and "usage" in p for p in paths)
    assert all(set(issue) == {"path", "code", "message"} for issue in body["issues"])
    assert count(node.data_dir, t) == 0


def test_rejected_requests_store_nothing(node: Node, key: str) -> None:
    t = tid()
    good = llm_batch(t, 2)
    node.post(good, key=None)
    node.post(json.dumps(good).encode(), key=key, headers={"Content-Type": "text/plain"})
    node.post(gzip.compress(b"{" * (MAX_DECOMPRESSED + 1)), key=key, headers={"Content-Encoding": "gzip"})
    bad = llm_batch(t, 2)
    bad["traces"][0]["spans"][1]["usage"]["outputTokens"] = -1
    assert node.post(bad, key=key).status_code == 400
    marker = tid()
    assert node.post(batch(trace(marker, span("s"))), key=key).status_code == 202
    stored(node.data_dir, marker, 1)  # flushed after the rejected ones
    assert count(node.data_dir, t) == 0


# --------------------------------------------------------------------------- other endpoints
def test_health_ready_and_openapi(node: Node) -> None:
    assert httpx.get(f"{node.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{node.url}/readyz").json() == {"status": "ready"}
    doc = httpx.get(f"{node.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert "/ingest" in doc["paths"] and "Span" in doc["components"]["schemas"]
