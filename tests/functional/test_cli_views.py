"""``repocket inspect``, ``ls``, ``count``, ``stats`` and the progress bars, by snapshot (plain text, no colour).

Records get fixed ids, so that every table is the same on every run; only
the timings of a progress bar are masked. ``ls --json`` also runs as a user
would, through a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis as redis_py

from repocket.cli import main
from tests.functional.cli_models import Potion

MODEL = "tests.functional.cli_models.Potion"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def potions(repocket_connection: redis_py.Redis, monkeypatch: pytest.MonkeyPatch) -> list[Potion]:
    monkeypatch.setenv("COLUMNS", "100")  # (rich's width when the output is not a terminal)
    return [Potion.objects.create(id=uuid.UUID(int=n + 1), name=name, strength=10 * n, secret_formula="shh",
                                  notes=b"brew")
            for n, name in enumerate(["Felix", "Polyjuice", "Amortentia"])]


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    return "\n".join(line.rstrip() for line in capsys.readouterr().out.splitlines())


LS = """\
tests.functional.cli_models.Potion
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┓
┃ id                                   ┃ name       ┃ strength ┃ secret_formula ┃ notes     ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━┩
│ 00000000-0000-0000-0000-000000000003 │ Amortentia │ 20       │ '***' (secret) │ <4 bytes> │
│ 00000000-0000-0000-0000-000000000002 │ Polyjuice  │ 10       │ '***' (secret) │ <4 bytes> │
└──────────────────────────────────────┴────────────┴──────────┴────────────────┴───────────┘"""


def test_ls_shows_a_filtered_ordered_table(potions: list[Potion], redis_url: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", redis_url, "ls", MODEL, "--filter", "strength__gte=10", "--order=-strength"]) == 0
    assert _out(capsys) == LS


def test_count_takes_the_same_filters(potions: list[Potion], redis_url: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", redis_url, "count", MODEL, "--filter", "name__in=Felix,Polyjuice"]) == 0
    assert main(["--url", redis_url, "count", MODEL, "--filter", "strength=20"]) == 0
    assert _out(capsys) == "2\n1"
    assert main(["--url", redis_url, "count", MODEL, "--filter", "colour=red"]) == 2
    assert "colour" in capsys.readouterr().err


INSPECT = """\
repocket:cli:Potion:00000000-0000-0000-0000-000000000002
┏━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ field          ┃ type       ┃ value                            ┃ stored                          ┃
┡━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ id             │ AutoUUID   │ 00000000-0000-0000-0000-00000000 │ {"type": "AutoUUID", "value":   │
│                │            │ 0002                             │ "00000000-0000-0000-0000-000000 │
│                │            │                                  │ 000002", "module":              │
│                │            │                                  │ "repocket.attributes"}          │
│ name           │ Unicode    │ Polyjuice                        │ {"type": "Unicode", "value":    │
│                │            │                                  │ "Polyjuice", "module":          │
│                │            │                                  │ "repocket.attributes"}          │
│ secret_formula │ Unicode    │ '***' (secret)                   │ '***' (secret)                  │
│ strength       │ Integer    │ 10                               │ {"type": "Integer", "value":    │
│                │            │                                  │ 10, "module":                   │
│                │            │                                  │ "repocket.attributes"}          │
│ notes          │ ByteStream │ <4 bytes>                        │ repocket:cli:Potion:00000000-00 │
│                │            │                                  │ 00-0000-0000-000000000002:field │
│                │            │                                  │ :notes                          │
└────────────────┴────────────┴──────────────────────────────────┴─────────────────────────────────┘"""


@pytest.mark.envelope_only  # (the stored bytes shown are the envelope's)
def test_inspect_shows_each_field_decoded_next_to_its_stored_form(potions: list[Potion], redis_url: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", redis_url, "inspect", potions[1]._key(), "--model", MODEL]) == 0
    assert _out(capsys) == INSPECT
    assert main(["--url", redis_url, "inspect", potions[1]._key()]) == 0  # (types from the envelopes alone)
    captured = capsys.readouterr()
    assert "Polyjuice" in captured.out and "secret attributes are shown as stored" in captured.err
    assert main(["--url", redis_url, "inspect", "repocket:cli:Potion:nothing"]) == 2
    assert "is missing, not a record hash" in capsys.readouterr().err


def test_stats_counts_records_bytes_and_index_keys(potions: list[Potion], redis_url: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", redis_url, "stats", "tests.functional.cli_models"]) == 0
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in _out(capsys).splitlines() if line.startswith("│")}
    records, per_record, index_keys, entries, total = rows["tests.functional.cli_models.Potion"]
    assert records == "3" and int(per_record) > 100
    # the equality sets of 3 names and 3 strengths, the sorted index of strength and the lex index of name,
    # holding 6 + 3 + 3 entries
    assert index_keys == "8" and entries == "12"
    assert rows["tests.functional.cli_models.Spell"][0] == "0"


def test_reindex_shows_a_progress_bar(potions: list[Potion], redis_url: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", redis_url, "reindex", MODEL]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"indexed 3 {MODEL} records"
    assert re.sub(r"\d+:\d\d:\d\d", "0:00:00", captured.err.strip()) == (
        "reindex Potion " + "━" * 40 + " 3/3 0:00:00 0:00:00")


def test_ls_json_lines_through_the_console_script(potions: list[Potion], redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "repocket", "ls", MODEL, "--order", "name", "--limit", "2",
                           "--json", "--url", redis_url], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["name"], line["secret_formula"], line["notes"]) for line in lines] == [
        ("Amortentia", "***", "brew"), ("Felix", "***", "brew")]


def test_shell_starts_with_the_connection_and_the_models(potions: list[Potion], redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "repocket", "shell", "tests.functional.cli_models", "--url",
                           redis_url], input="print(Potion.objects.count(), connection.ping())\n",
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "3 True" in done.stdout
    assert "models: Potion, Scroll, Spell" in done.stdout + done.stderr
