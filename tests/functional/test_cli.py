"""The ``repocket`` command line."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from unittest import mock

import pytest
import redis as redis_py

import repocket
from repocket import cli
from repocket.cli import main
from repocket.connections import configure
from repocket.server import RedisServer, _free_port
from repocket.topology import LocalCluster
from tests.functional.cli_models import Spell
from tests.functional.test_server import _pid_alive


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


def test_repartition_moves_records_and_shows_progress(repocket_connection: redis_py.Redis, redis_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``repocket repartition`` moves the records of the standalone layout into the model's partitions."""
    from repocket import ActiveRecord, attributes
    from tests.functional.cli_models import Scroll

    before = type("Scroll", (ActiveRecord,), {  # the same model, as declared before it was spread
        "__module__": "tests.functional.cli_models", "title": attributes.Unicode(index=True),
        "Meta": type("Meta", (), {"namespace": "cli", "partitions": 1}),
    })
    before.objects.bulk_create([before(title=f"t{i}") for i in range(7)])
    assert Scroll.objects.count() == 0
    assert main(["--url", redis_url, "repartition", "tests.functional.cli_models.Scroll"]) == 0
    out, err = capsys.readouterr()
    assert "Scroll: 7 records moved from the standalone layout into its 4 partitions" in out
    assert err.strip().splitlines()[-1].startswith("repartition Scroll ━") and " 7/7 " in err
    assert Scroll.objects.count() == 7 and before.objects.count() == 0
    assert main(["--url", redis_url, "repartition", "--from", "4", "tests.functional.cli_models.Scroll"]) == 0
    assert "0 records moved from 4 partitions" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["repartition", "--from", "zero", "tests.functional.cli_models.Scroll"])
    assert "expected 'standalone' or a partition count, not 'zero'" in capsys.readouterr().err


def test_an_unknown_model_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A path that is not a model exits 2 with a one-line message naming it."""
    assert main(["check", "repocket.errors.RepocketError"]) == 2
    err = capsys.readouterr().err
    assert err == "repocket: repocket.errors.RepocketError is not a repocket model\n"


# -- what check prints and how it exits -------------------------------------------------

MODEL = "tests.functional.cli_models.Spell"


def _listed(out: str) -> list[str]:
    """The problem lines of check's output (indented ``name: item``)."""
    return [line.strip() for line in out.splitlines() if line.startswith("  ")]


def test_check_prints_every_kind_of_problem(repocket_connection: redis_py.Redis, redis_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong-typed index key is listed: as many lines as the problems counted."""
    Spell.create(name="Lumos")
    index_key = f"{Spell._meta.prefix}:_eq:name:Lumos"
    repocket_connection.delete(index_key)
    repocket_connection.set(index_key, "not a set")
    assert main(["check", "--url", redis_url, MODEL]) == 1
    out = capsys.readouterr().out
    lines = _listed(out)
    assert f"wrong_type_keys: ('{index_key}', 'string')" in lines
    assert f"{len(lines)} problems" in out.splitlines()[0]


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_repair_exits_1_while_a_corrupt_record_remains(repocket_connection: redis_py.Redis, redis_url: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``check --repair`` fixes the index, checks again, lists the corrupt record left and exits 1."""
    Spell.create(name="Lumos")
    broken = Spell.create(name="Nox")
    repocket_connection.delete(f"{Spell._meta.prefix}:_eq:name:Lumos")
    repocket_connection.hset(broken._key(), "name", "{not json")
    assert main(["check", "--url", redis_url, "--repair", MODEL]) == 1
    out = capsys.readouterr().out
    assert "(repaired)" in out
    after = out[out.index("after repair:"):]
    assert after.splitlines()[0] == "after repair: 1 problems remain"
    assert [line.split(":")[0] for line in _listed(after)] == ["corrupt_records"]
    assert broken._key() in after


def test_url_after_the_command(repocket_connection: redis_py.Redis, redis_url: str) -> None:
    """``--url`` is accepted after the subcommand, for check and reindex."""
    Spell.create(name="Lumos")
    assert main(["check", "--url", redis_url, MODEL]) == 0
    assert main(["reindex", MODEL, "--url", redis_url]) == 0


def test_redis_url_env_is_the_fallback(repocket_connection: redis_py.Redis, redis_url: str,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --url, $REDIS_URL names the server."""
    Spell.create(name="Lumos")
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["check", MODEL]) == 0
    assert "1 records, 0 problems" in capsys.readouterr().out


# -- errors: one line, exit 2 -----------------------------------------------------------


@pytest.fixture
def restore_pool(redis_url: str) -> Iterator[None]:
    """Point repocket's global pool back at the test server after a test that moved it."""
    yield
    configure.connection_pool(url=redis_url)


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], expected_start: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(expected_start) and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_unreachable_redis_is_one_line(restore_pool: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Redis refusing the connection gives one line on stderr and exit status 2."""
    url = f"redis://127.0.0.1:{_free_port()}/0"
    assert main(["check", "--url", url, MODEL]) == 2
    _assert_one_line_error(capsys, "repocket: ")
    assert main(["reindex", "--url", url, MODEL]) == 2
    _assert_one_line_error(capsys, "repocket: ")


def test_invalid_url_is_one_line_without_the_url(restore_pool: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A URL redis-py cannot parse is a usage error that does not echo the URL (it may hold a password)."""
    assert main(["check", "--url", "http://user:hunter2@host/0", MODEL]) == 2
    err = _assert_one_line_error(capsys, "repocket: invalid Redis URL: ")
    assert "hunter2" not in err


def test_server_that_cannot_start_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``repocket server`` whose redis-server fails reports one line (naming the log) and exits 2."""
    binary = tmp_path / "broken-redis"
    binary.write_text("#!/bin/sh\necho 'FATAL: no can do' >&2\nexit 1\n")
    binary.chmod(0o755)
    monkeypatch.setenv("REPOCKET_REDIS_SERVER", str(binary))
    assert main(["server", "--path", str(tmp_path / "data")]) == 2
    err = _assert_one_line_error(capsys, "repocket: redis-server exited with status 1")
    assert "redis://:***@" in err and "full log in" in err


# -- importing the user's module --------------------------------------------------------

LIBRARY = '''
from repocket import ActiveRecord, attributes


class Book(ActiveRecord):
    class Meta:
        namespace = "cli-{tag}"

    title = attributes.Unicode(index=True)
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh ``library_<tag>.py`` model module in the current directory, which is not on sys.path."""
    tag = uuid.uuid4().hex[:8]
    name = f"library_{tag}"
    (tmp_path / f"{name}.py").write_text(LIBRARY.format(tag=tag))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("separator", [".", ":"])
def test_model_from_the_current_directory(user_module: str, repocket_connection: redis_py.Redis,
                                          redis_url: str, separator: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``check library.Book`` (or ``library:Book``) imports library.py from the current directory."""
    assert main(["check", "--url", redis_url, f"{user_module}{separator}Book"]) == 0
    assert "0 records, 0 problems" in capsys.readouterr().out


def test_console_script_finds_the_current_directory(tmp_path: Path, redis_url: str) -> None:
    """The installed ``repocket`` script, run where library.py lives, checks library.Book."""
    script = Path(sys.executable).with_name("repocket")
    if not script.exists():
        pytest.skip("the repocket console script is not installed next to python")
    (tmp_path / "library.py").write_text(LIBRARY.format(tag="script"))
    env = dict(os.environ, PYTHONPATH=str(Path(repocket.__file__).resolve().parents[1]))  # this repocket
    done = subprocess.run([str(script), "check", "library.Book", "--url", redis_url], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "library.Book: 0 records, 0 problems" in done.stdout


def test_missing_module_is_one_line(user_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A module that does not exist: one line naming it, exit 2."""
    assert main(["check", "no_such_module_here.Book"]) == 2
    err = _assert_one_line_error(capsys, "repocket: cannot import module 'no_such_module_here': ")
    assert "No module named 'no_such_module_here'" in err


def test_module_that_raises_is_one_line(user_module: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """An exception raised while importing the user's module: one line with its type, exit 2."""
    name = user_module + "_broken"
    (tmp_path / f"{name}.py").write_text("1 / 0\n")
    try:
        assert main(["check", f"{name}:Book"]) == 2
    finally:
        sys.modules.pop(name, None)
    _assert_one_line_error(capsys, f"repocket: cannot import module '{name}': ZeroDivisionError: division by zero")


# -- repocket server ------------------------------------------------------------------------


def _read_line(stream: IO[str], timeout: float) -> str:
    """The next line of ``stream``, or fail after ``timeout`` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return stream.readline()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_server_stops_redis_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM or SIGHUP to ``repocket server`` stops its redis-server before it exits 0."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "repocket", "server", "--path", str(tmp_path / "data"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    redis_pid = None
    try:
        assert proc.stdout is not None
        line = _read_line(proc.stdout, 30)
        match = re.search(r"at (\S+) \(pid (\d+)\)", line)
        assert match, line
        redis_pid = int(match.group(2))
        password = (tmp_path / "data" / "password").read_text().strip()
        assert match.group(1) == f"redis://:***@127.0.0.1:{port}/0" and password not in line
        assert redis_py.Redis.from_url(f"redis://:{password}@127.0.0.1:{port}/0").ping()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        assert not _pid_alive(redis_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if redis_pid is not None and _pid_alive(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)


def test_server_on_a_unix_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``repocket server --unix-socket PATH`` serves there, password-protected, until interrupted."""
    real_announce = cli._announce
    short = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
    sock = short / "redis.sock"
    seen: list[bool] = []

    def announce_connect_interrupt(server: RedisServer) -> None:
        real_announce(server)
        password = (tmp_path / "data" / "password").read_text().strip()
        seen.append(bool(redis_py.Redis.from_url(f"unix://:{password}@{sock}?db=0").ping()))
        raise KeyboardInterrupt

    try:
        with mock.patch.object(cli, "_announce", announce_connect_interrupt):
            assert main(["server", "--path", str(tmp_path / "data"), "--unix-socket", str(sock)]) == 0
        assert not sock.exists()  # the server was stopped (redis removes its socket)
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert seen == [True]
    assert f"listening at unix://:***@{sock}?db=0" in capsys.readouterr().out


def test_check_and_reindex_on_a_cluster(redis_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """``--cluster`` reads the cluster layout: a damaged index is found, repaired and rebuilt there."""
    try:
        client = configure.cluster(url=redis_cluster.url)
        for node in client.get_primaries():
            client.get_redis_connection(node).flushall()
        spell = Spell.create(name="Accio")
        client.delete(f"{Spell._meta.prefix_for(spell.pk)}:_eq:name:Accio")  # (in its partition: 16 on a cluster)
        model = "tests.functional.cli_models.Spell"
        assert main(["check", "--cluster", "--url", redis_cluster.url, model]) == 1
        assert "missing_entries" in capsys.readouterr().out
        assert main(["check", "--repair", "--cluster", "--url", redis_cluster.url, model]) == 0
        assert [s.name for s in Spell.objects.filter(name="Accio")] == ["Accio"]  # (the CLI's cluster client)
    finally:
        configure.reset()


def test_cluster_without_a_url_is_one_line(restore_pool: None, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["check", "--cluster", "tests.functional.cli_models.Spell"]) == 2
    assert capsys.readouterr().err.strip() == "repocket: --cluster needs --url (or $REDIS_URL): a node of the cluster"
