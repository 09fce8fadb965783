"""The command line of `run.py` (SPEC §5): argument parsing; `node.commands` holds one small
handler per command.

Every subcommand takes `--data-dir`; every setting is also an environment variable (see
`pipeline.config`). Operator mistakes print one clear line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from node.commands import HANDLERS
from pipeline.errors import FoglampError


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="node data directory (INGEST_DATA_DIR, default ./data)")
    parser = argparse.ArgumentParser(prog="run.py", description="Foglamp ingest node")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", parents=[common], help="run the node (the default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="front worker processes (default: CPU count)")

    orgs = sub.add_parser("orgs", help="organizations and quotas").add_subparsers(dest="action", required=True)
    create = orgs.add_parser("create", parents=[common])
    create.add_argument("name")
    create.add_argument("--monthly-span-quota", type=int)
    set_quota = orgs.add_parser("set-quota", parents=[common], help="NONE removes the quota")
    set_quota.add_argument("org")
    set_quota.add_argument("quota")
    orgs.add_parser("list", parents=[common])
    usage = orgs.add_parser("usage", parents=[common], help="spans accepted this month vs quota")
    usage.add_argument("org", nargs="?")

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    kcreate = keys.add_parser("create", parents=[common])
    kcreate.add_argument("--org", required=True, help="org id or name")
    kcreate.add_argument("--name", default="")
    kcreate.add_argument("--rate-limit", type=float, help="requests/s (default INGEST_RATE_LIMIT_RPS)")
    klist = keys.add_parser("list", parents=[common])
    klist.add_argument("--org")
    revoke = keys.add_parser("revoke", parents=[common])
    revoke.add_argument("key", help="key id or its 12-character prefix")
    setrl = keys.add_parser("set-rate-limit", parents=[common], help="NONE restores the default")
    setrl.add_argument("key")
    setrl.add_argument("rps")

    query = sub.add_parser("query", parents=[common], help="read the store (node running or not)")
    query.add_argument("sql")
    query.add_argument("--format", choices=["json", "tsv", "table"], default="table")

    prices = sub.add_parser("prices", parents=[common], help="what a model costs")
    prices.add_argument("model")
    prices.add_argument("--provider")
    prices.add_argument("--input", type=int, default=0)
    prices.add_argument("--output", type=int, default=0)
    prices.add_argument("--cache-read", type=int, default=0)
    prices.add_argument("--cache-write", type=int, default=0)
    prices.add_argument("--reasoning", type=int, default=0)
    prices.add_argument("--date", type=dt.date.fromisoformat, help="YYYY-MM-DD (default today)")

    loadtest = sub.add_parser("loadtest", parents=[common], help="load a node on this machine")
    from node.loadtest_args import add_arguments

    add_arguments(loadtest)

    test = sub.add_parser("test", help="lint, then the whole test suite; extra args go to pytest")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)

    sub.add_parser("_preflight", help=argparse.SUPPRESS)
    writer = sub.add_parser("_writer", help=argparse.SUPPRESS)
    writer.set_defaults(internal=True)
    front = sub.add_parser("_front", help=argparse.SUPPRESS)
    front.add_argument("--fd", type=int, required=True)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv or ["serve"])
    if args.command == "test":  # `run.py test -q -x tests/e2e`: everything goes to pytest
        args.pytest_args = [*extra, *args.pytest_args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = HANDLERS[args.command if args.command in HANDLERS else f"{args.command}.{args.action}"]
    try:
        return handler(args)
    except (FoglampError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
