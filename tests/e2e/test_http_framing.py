"""HTTP framing and slow clients, through the real node with raw sockets (issue 14)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.nodes import Node, batch, create_key, create_org, span, trace


@pytest.fixture(scope="module")
def node_and_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str]]:
    data_dir = tmp_path_factory.mktemp("framing") / "data"
    env = {"INGEST_REQUEST_TIMEOUT_MS": "1000", "INGEST_MAX_INFLIGHT_REQUESTS": "4"}
    node = Node(data_dir, env=env).start()
    try:
        yield node, create_key(data_dir, create_org(data_dir, "acme"))
    finally:
        node.stop()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes] | None:
    """(status, headers, body) of one response, or None if the server closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def head(method: str, path: str, key: str, length: int, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n").encode()  # fmt: skip


def valid_body(n: int) -> bytes:
    return json.dumps(batch(trace(f"t-split-{n}", span("s1", input="y" * 400)))).encode()


ROUTES = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
          ("PUT", "/ingest"), ("POST", "/healthz"), ("POST", "/ingest")]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_keep_alive_with_head_and_body_in_two_writes_never_hangs(node_and_key: tuple[Node, str], method: str,
                                                                 path: str) -> None:  # fmt: skip
    node, key = node_and_key
    with socket.create_connection(("127.0.0.1", node.port), timeout=20) as sock:
        for i in range(30):
            body = valid_body(i) if path == "/ingest" and method == "POST" else b"x" * 570
            sock.sendall(head(method, path, key, len(body)))
            time.sleep(0.001)  # two writes, as curl and urllib3 send them
            sock.sendall(body)
            response = read_response(sock)  # a hang is a socket timeout here
            assert response is not None, f"request {i}: connection closed"
            status, headers, payload = response
            assert status in (200, 202, 405), payload
            assert headers.get("connection") != "close"
            if status == 405:
                assert "allow" in headers and json.loads(payload)["error"] == "method_not_allowed"


def test_transfer_encoding_with_content_length_is_400_and_closed(node_and_key: tuple[Node, str]) -> None:
    node, key = node_and_key
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", node.port), timeout=20) as sock:
        sock.sendall(head("POST", "/ingest", key, len(chunked), "Transfer-Encoding: chunked\r\n") + chunked)
        response = read_response(sock)
        assert response is not None
        status, headers, payload = response
        assert status == 400 and headers.get("connection") == "close", payload
        assert closed_by_server(sock)


@pytest.mark.parametrize("bad", ["key", "type"])
def test_an_answer_before_the_body_says_connection_close(node_and_key: tuple[Node, str], bad: str) -> None:
    node, key = node_and_key
    body = valid_body(0)
    request = head("POST", "/ingest", "nope" if bad == "key" else key, len(body))
    if bad == "type":
        request = request.replace(b"application/json", b"text/plain")
    with socket.create_connection(("127.0.0.1", node.port), timeout=20) as sock:
        sock.sendall(request)
        response = read_response(sock)
        assert response is not None
        status, headers, _ = response
        assert status == (401 if bad == "key" else 415)
        assert headers.get("connection") == "close"


def test_undeclared_method_gets_405_with_allow_and_json(node_and_key: tuple[Node, str]) -> None:
    node, _ = node_and_key
    response = httpx.delete(f"{node.url}/readyz", timeout=20)
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}  # Quart answers OPTIONS itself
    assert response.json()["error"] == "method_not_allowed"
    assert httpx.get(f"{node.url}/nowhere", timeout=20).json() == {"error": "not_found"}


def test_stalled_bodies_get_408_and_do_not_lock_others_out(node_and_key: tuple[Node, str]) -> None:
    """More stalled uploads than both workers have slots (2 × 4): each gets 408 or a closed
    connection once its deadline passes, and a normal client is accepted afterwards."""
    node, key = node_and_key
    stalled = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", node.port), timeout=30)
            sock.sendall(head("POST", "/ingest", key, 1000) + b"{")
            stalled.append(sock)
        for sock in stalled:
            response = read_response(sock)
            if response is not None:
                status, headers, _ = response
                assert status in (408, 503), status
                assert headers.get("connection") == "close"
        accepted = False
        with httpx.Client() as client:
            for i in range(100):
                response = node.post(json.loads(valid_body(1000 + i)), key=key, client=client)
                if response.status_code == 202:
                    accepted = True
                    break
                time.sleep(0.2)
        assert accepted, "a normal client never got through after the stalled ones"
    finally:
        for sock in stalled:
            with contextlib.suppress(OSError):
                sock.close()


def test_a_trickling_body_gets_408(node_and_key: tuple[Node, str]) -> None:
    """A byte every half second never meets the minimum rate: 408 (or a closed connection)
    before the body is complete."""
    node, key = node_and_key
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(head("POST", "/ingest", key, 200))
        for _ in range(150):  # the body would be complete after 200
            try:
                sock.sendall(b" ")
            except OSError:
                return  # closed by the server
            sock.settimeout(0.5)
            try:
                response = read_response(sock)
            except TimeoutError:
                continue
            assert response is None or (response[0] == 408 and response[1].get("connection") == "close")
            return
        raise AssertionError("the trickling body was never cut off")
