#!/usr/bin/env python3
"""Foglamp ingest — the operator's entry point (SPEC.md §5).

    python3 run.py                  the whole node, embedded defaults, port 4000
    python3 run.py test             the whole test suite (lint first)
    python3 run.py --help           every subcommand

The first run builds the project's environment in `.venv/` (stdlib only up to that point) and
re-executes itself with `.venv/bin/python`; later runs reuse it until `pyproject.toml` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".foglamp-installed"


# --------------------------------------------------------------------------- bootstrap (stdlib)
def _wanted_stamp() -> str:
    return hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()


def bootstrap() -> None:
    """Make sure `.venv/` holds this project's pinned dependencies, then run inside it."""
    if os.environ.get("FOGLAMP_NO_BOOTSTRAP") == "1":
        return
    stamp = _wanted_stamp()
    if not (STAMP.exists() and STAMP.read_text() == stamp):
        if not VENV_PYTHON.exists():
            print("foglamp: creating .venv/ ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        print("foglamp: installing pinned dependencies into .venv/ ...", file=sys.stderr)
        pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-e", f"{REPO}[test]"], check=True, cwd=REPO)
        STAMP.write_text(stamp)
    if Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    from node.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    bootstrap()
    sys.path.insert(0, str(REPO))
    sys.exit(main())
