"""``make demo`` (examples/tutorial.py) runs end to end and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import repocket

TUTORIAL = Path(__file__).resolve().parents[2] / "examples" / "tutorial.py"

FAILING_RUN = f"""
import runpy
tutorial = runpy.run_path({str(TUTORIAL)!r})
def fail(*args, **kwargs):
    raise RuntimeError("a step failed")
tutorial["User"].create = fail  # the first step of the tour
tutorial["main"]()
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run python ``args`` with its temporary directory in ``tmp_path`` and no $REDIS_URL.

    PYTHONPATH makes it import the repocket under test, not whichever one is installed.
    """
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["TMPDIR"] = str(tmp_path)
    env["PYTHONPATH"] = str(Path(repocket.__file__).resolve().parents[1])
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_demo_removes_its_data_directory(tmp_path: Path) -> None:
    """The tutorial succeeds, masks the server password, and removes its repocket-demo-* directory."""
    pytest.importorskip("bcrypt")
    done = _run(tmp_path, str(TUTORIAL))
    assert done.returncode == 0, done.stderr
    started = next(line for line in done.stdout.splitlines() if line.startswith("Started an embedded"))
    assert ":***@" in started
    assert list(tmp_path.glob("repocket-demo-*")) == []


def test_demo_removes_its_data_directory_on_error(tmp_path: Path) -> None:
    """When a step raises, the server is stopped and the directory removed all the same."""
    pytest.importorskip("bcrypt")
    done = _run(tmp_path, "-c", FAILING_RUN)
    assert done.returncode != 0 and "a step failed" in done.stderr
    assert "Stopped the embedded redis-server." in done.stdout
    assert list(tmp_path.glob("repocket-demo-*")) == []
