"""The ``repocket`` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis as redis_py

import repocket
from repocket.cli import main
from tests.functional.cli_models import Spell


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """``repocket --version`` prints the installed version."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"repocket {repocket.__version__}"


def test_console_script_runs() -> None:
    """The installed ``python -m repocket --version`` answers like the console script."""
    done = subprocess.run([sys.executable, "-m", "repocket", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"repocket {repocket.__version__}"


def test_check_reports_and_repairs(repocket_connection: redis_py.Redis, redis_url: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``repocket check`` exits 1 on a damaged index, ``--repair`` fixes it, then it exits 0."""
    spell = Spell.create(name="Lumos")
    repocket_connection.delete(f"{Spell._meta.prefix}:_eq:name:Lumos")
    assert main(["--url", redis_url, "check", "tests.functional.cli_models.Spell"]) == 1
    assert "missing_entries" in capsys.readouterr().out
    assert main(["--url", redis_url, "check", "--repair", "tests.functional.cli_models.Spell"]) == 0
    assert main(["--url", redis_url, "check", "tests.functional.cli_models.Spell"]) == 0
    assert "0 problems" in capsys.readouterr().out
    assert list(Spell.objects.filter(name="Lumos")) == [spell]


def test_reindex_rebuilds_the_id_set(repocket_connection: redis_py.Redis, redis_url: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``repocket reindex`` adopts records missing from the id set and reports the count."""
    Spell.create(name="Nox")
    repocket_connection.delete(Spell._meta.ids_key)
    assert Spell.objects.count() == 0
    assert main(["--url", redis_url, "reindex", "tests.functional.cli_models.Spell"]) == 0
    assert "indexed 1" in capsys.readouterr().out
    assert Spell.objects.count() == 1


def test_an_unknown_model_is_a_clear_error() -> None:
    """A path that is not a model exits with a message naming it."""
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "repocket.errors.RepocketError"])
    assert "is not a repocket model" in str(exit_info.value.code)
