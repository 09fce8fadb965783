"""`run.py query`: read the store whether the node runs or not.

A running node's writer owns the embedded store (one owner per directory), so while the node
lock is held the query goes to the writer over its link socket; otherwise this process opens the
store itself. Either way the SQL and the output formats are the same.
"""

from __future__ import annotations

import socket

from pipeline import messages
from pipeline.config import Config
from pipeline.errors import PermanentError, RetryableError
from pipeline.frames import frame, recv_frame
from pipeline.store import open_store
from pipeline.supervisor import node_running

TIMEOUT_S = 120.0


def run_query(config: Config, sql: str, fmt: str) -> bytes:
    if node_running(config.data_dir):
        return _through_writer(config, sql, fmt)
    store = open_store(config.store_url)
    try:
        return store.query(sql, fmt)
    finally:
        store.close()


def _through_writer(config: Config, sql: str, fmt: str) -> bytes:
    reply = ask_writer(config, messages.Query(1, sql, fmt))
    if not isinstance(reply, messages.QueryReply):
        raise PermanentError(f"unexpected reply from the writer: {type(reply).__name__}")
    if not reply.ok:
        raise PermanentError(reply.error)
    return reply.data


def ask_writer(config: Config, message: messages.Message) -> messages.Message:
    """One request/reply with a running node's writer over its link socket (blocking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S)
        try:
            sock.connect(str(config.writer_socket))
        except OSError as exc:
            raise RetryableError(f"the node is running but its writer does not answer: {exc}") from None
        sock.sendall(frame(messages.encode(message)))
        try:
            payload = recv_frame(sock)
        except PermanentError:
            raise RetryableError("the writer closed the connection") from None
        return messages.decode(payload)
