"""Schema fuzzing: Schemathesis (pinned, its own CLI, as anyone would run it) against a live node's
/openapi.json, authorised with a real key, a bounded number of examples per operation.

It checks that no answer is a 5xx and that every answer's status code, content type, headers and
body are the ones the document declares; afterwards the node is still healthy and accepts a batch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stages.openapi import openapi_document
from tests.nodes import Node, batch, child_env, create_key, create_org, span, trace

MAX_EXAMPLES = 25  # per operation and phase: the run takes well under a minute
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")  # fmt: skip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = Node(tmp_path_factory.mktemp("fuzz") / "data", workers=2).start()
    yield node
    assert node.stop() == 0, node.logs()


def schemathesis() -> list[str]:
    cli = Path(sys.executable).parent / "schemathesis"
    return [str(cli)] if cli.exists() else [shutil.which("schemathesis") or "schemathesis"]


def test_the_node_keeps_its_documented_contract(node: Node, tmp_path: Path) -> None:
    key = create_key(node.data_dir, create_org(node.data_dir, "fuzz"), "--name", "schemathesis")
    command = [
        *schemathesis(), "run", f"{node.url}/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        # One request per connection: a keep-alive connection can hang after a 404 to a request with
        # a body (an undeclared method on /ingest); reported, not this test's subject.
        "--header", "Connection: close",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES),
        "--request-timeout", "20",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(
        command, capture_output=True, text=True, env=child_env({"NO_COLOR": "1"}), timeout=600, cwd=tmp_path
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    operations = sum(len(methods) for methods in openapi_document()["paths"].values())
    assert f"{operations} selected / {operations} total" in run.stdout, run.stdout  # every operation exercised

    assert httpx.get(f"{node.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{node.url}/readyz").json() == {"status": "ready"}
    after = node.post(batch(trace("t-after-fuzz", span("s1"))), key=key)
    assert after.status_code == 202 and after.json() == {"accepted": 1}, after.text
