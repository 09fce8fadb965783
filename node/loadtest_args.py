"""The `run.py loadtest` flags, apart from the load test itself so that building the CLI's parser
(in every process of the node) imports nothing heavy."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `loadtest` subcommand's flags."""
    add = parser.add_argument
    add("--url", help="node base URL, loopback only (default http://127.0.0.1:<INGEST_PORT>)")
    add("--key", help="API key (default: create an org and a key in the data dir's control plane)")
    add("--duration", type=float, default=10.0, metavar="S", help="seconds to run (default 10)")
    add("--concurrency", type=int, default=32, metavar="C", help="connections (default 32)")
    add("--spans-per-request", type=int, default=100, metavar="N", help="default 100")
    add("--rate", type=float, metavar="R", help="open loop: R requests/s at fixed intervals")
    add("--format", choices=["json", "msgpack"], default="json", help="body media type")
    add("--otlp", action="store_true",
        help="OTLP protobuf to /v1/traces (GenAI-semconv spans; encodings identity or gzip)")
    add("--encoding", choices=["identity", "gzip", "zstd"], default="identity")
    add("--gzip", dest="encoding", action="store_const", const="gzip", help="= --encoding gzip")
    add("--zstd", dest="encoding", action="store_const", const="zstd", help="= --encoding zstd")
    add("--max-requests", type=int, metavar="N", help="stop after N requests")
    add("--json", action="store_true", help="print the summary as one JSON object")
    add("--progress", action="store_true", help="progress line each second even if not a TTY")
