"""`run.py` argument handling: flags after `test` go to pytest; elsewhere unknown flags are errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from node.cli import main
from tests.nodes import RUN_PY, child_env


def test_test_passes_every_flag_to_pytest() -> None:
    # --collect-only: pytest parses the flags and the path, lists the tests, runs none of them
    done = subprocess.run([sys.executable, RUN_PY, "test", "-q", "--collect-only", "tests/pipeline/test_cli.py"],
                          capture_output=True, text=True, env=child_env(), timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_test_passes_every_flag_to_pytest" in done.stdout


def test_unknown_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["orgs", "list", "--bogus"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
