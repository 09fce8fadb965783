"""The handlers of `run.py`'s commands (parsed in `node.cli`): each takes the parsed arguments
and returns the exit code. Heavy imports happen inside the handler that needs them, so that
`run.py orgs list` does not load the store or the stages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config, inherited_config, load_config
from pipeline.log import configure

if TYPE_CHECKING:
    from pipeline.controlplane import ControlPlane

REPO = Path(__file__).resolve().parent.parent


def config_of(args: argparse.Namespace) -> Config:
    overrides = {name: getattr(args, name, None) for name in ("data_dir", "host", "port", "workers")}
    return load_config(overrides=overrides)


# --------------------------------------------------------------------------- serve and children
def cmd_serve(args: argparse.Namespace) -> int:
    import trio

    from pipeline.supervisor import run_preflight, supervise

    config = config_of(args)
    configure("supervisor", config.log_level)
    code = run_preflight(config)  # in a child: the supervisor never imports the stages
    if code != 0:
        return code
    return trio.run(supervise, config)


def cmd_preflight(args: argparse.Namespace) -> int:
    from node.processes import preflight

    config = _child_config()
    configure("preflight", config.log_level)
    preflight(config)
    return 0


def _child_config() -> Config:
    return inherited_config()


def cmd_writer(args: argparse.Namespace) -> int:
    from node.processes import writer_main

    config = _child_config()
    configure("writer", config.log_level)
    return writer_main(config)


def cmd_front(args: argparse.Namespace) -> int:
    from node.processes import front_main

    config = _child_config()
    configure(f"front-{os.getpid()}", config.log_level)
    return front_main(config, args.fd)


# --------------------------------------------------------------------------- control plane
def _controlplane(args: argparse.Namespace) -> ControlPlane:
    from pipeline.controlplane import open_controlplane

    return open_controlplane(config_of(args))


def _optional_number(text: str, kind: Callable[[str], Any]) -> Any:
    return None if text.strip().lower() in ("none", "unlimited", "default", "") else kind(text)


def cmd_orgs_create(args: argparse.Namespace) -> int:
    with _controlplane(args) as cp:
        org = cp.create_org(args.name, args.monthly_span_quota)
    quota = "unlimited" if org.monthly_span_quota is None else org.monthly_span_quota
    print(f"created org {org.name} (monthly span quota: {quota})")
    print(org.id)
    return 0


def cmd_orgs_set_quota(args: argparse.Namespace) -> int:
    with _controlplane(args) as cp:
        org = cp.set_quota(args.org, _optional_number(args.quota, int))
    print(f"{org.id} {org.name} monthly_span_quota={_show(org.monthly_span_quota, 'unlimited')}")
    return 0


def cmd_orgs_list(args: argparse.Namespace) -> int:
    with _controlplane(args) as cp:
        rows = [(o.id, o.name, _show(o.monthly_span_quota, "unlimited"), o.created_at)
                for o in cp.list_orgs()]  # fmt: skip
    print_table(("id", "name", "monthly_span_quota", "created"), rows)
    return 0


def cmd_orgs_usage(args: argparse.Namespace) -> int:
    from node.usage import usage_rows

    config = config_of(args)
    with _controlplane(args) as cp:
        orgs = [cp.get_org(args.org)] if args.org else cp.list_orgs()
    print_table(("org", "name", "month", "spans_used", "monthly_span_quota"), usage_rows(config, orgs))
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    with _controlplane(args) as cp:
        key, record = cp.create_key(args.org, args.name, args.rate_limit)
    print(f"created key {record.id} (prefix {record.prefix}) for org {record.org_name}")
    print("store it now: it is shown only once")
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    with _controlplane(args) as cp:
        keys = cp.list_keys(args.org)
    rows = [(k.id, k.prefix, k.name, k.org_name, _show(k.rate_limit_rps, "default"), k.created_at,
             k.revoked_at or "") for k in keys]  # fmt: skip
    print_table(("id", "prefix", "name", "org", "rate_limit_rps", "created", "revoked"), rows)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    with _controlplane(args) as cp:
        key = cp.revoke_key(args.key)
    print(f"revoked {key.id} ({key.prefix}) at {key.revoked_at}")
    return 0


def cmd_keys_set_rate_limit(args: argparse.Namespace) -> int:
    with _controlplane(args) as cp:
        key = cp.set_rate_limit(args.key, _optional_number(args.rps, float))
    print(f"{key.id} ({key.prefix}) rate_limit_rps={_show(key.rate_limit_rps, 'default')}")
    return 0


# --------------------------------------------------------------------------- store, prices, tools
def cmd_query(args: argparse.Namespace) -> int:
    from pipeline.query import run_query

    data = run_query(config_of(args), args.sql, args.format)
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def cmd_prices(args: argparse.Namespace) -> int:
    from stages.price import PriceTable
    from stages.price_report import prices_command

    config = config_of(args)
    code, text = prices_command(
        PriceTable.load(config.prices_file or None), args.model, provider=args.provider,
        day=args.date or dt.datetime.now(dt.UTC).date(), input_tokens=args.input,
        output_tokens=args.output, cache_read_tokens=args.cache_read,
        cache_write_tokens=args.cache_write, reasoning_tokens=args.reasoning,
    )  # fmt: skip
    print(text)
    return code


def cmd_loadtest(args: argparse.Namespace) -> int:
    from node.loadtest import run

    return run(config_of(args), args)


# Run before the tests, in order: style, the import layers (pyproject's [tool.importlinter]),
# the type checker (pyproject's [tool.mypy]).
CHECKS = (
    ["-m", "ruff", "check", "."],
    ["-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
    ["-m", "mypy"],
)


def cmd_test(args: argparse.Namespace) -> int:
    python = sys.executable
    for check in CHECKS:
        done = subprocess.run([python, *check], cwd=REPO)
        if done.returncode != 0:
            return done.returncode
    return subprocess.run([python, "-m", "pytest", *args.pytest_args], cwd=REPO).returncode


# --------------------------------------------------------------------------- output
def _show(value: Any, none: str) -> str:
    return none if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def print_table(header: tuple[str, ...], rows: list[tuple]) -> None:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "_preflight": cmd_preflight,
    "_writer": cmd_writer,
    "_front": cmd_front,
    "orgs.create": cmd_orgs_create,
    "orgs.set-quota": cmd_orgs_set_quota,
    "orgs.list": cmd_orgs_list,
    "orgs.usage": cmd_orgs_usage,
    "keys.create": cmd_keys_create,
    "keys.list": cmd_keys_list,
    "keys.revoke": cmd_keys_revoke,
    "keys.set-rate-limit": cmd_keys_set_rate_limit,
    "query": cmd_query,
    "prices": cmd_prices,
    "loadtest": cmd_loadtest,
    "test": cmd_test,
}
