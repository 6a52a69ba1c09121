"""Typed models: what mypy (with ``plugins = repocket.mypy``) and pyright see of repocket code.

One mypy run, in process (``mypy.api.run``), checks the three sets of files with one strict
configuration: tests/typing/typed_models.py, whose ``reveal_type`` lines each end with the type
expected; tests/typing/typed_errors.py, whose lines marked ``# E: <code>`` must each be
reported (and no other line); and every example under examples/, which must be clean.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is a dev dependency")

ROOT = Path(__file__).resolve().parents[2]
TYPED = ROOT / "tests" / "typing" / "typed_models.py"
ERRORS = ROOT / "tests" / "typing" / "typed_errors.py"
EXAMPLES = sorted((ROOT / "examples").glob("**/*.py"))

#: mypy's report lines: ``path:line: error: message  [code]`` or ``path:line: note: ...``.
REPORT_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<kind>error|note): (?P<message>.*?)(?:  \[(?P<code>[\w-]+)\])?$")
REVEALED = re.compile(r'^Revealed type is "(?P<type>.*)"$')
#: Module paths in a type (``uuid.UUID``, ``tests.typing.typed_models.Project``), which expectations leave out.
QUALIFIER = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])")
EXPECTED_ERROR = re.compile(r"#\s*E:\s*(?P<code>[\w-]+)\s*$")

MYPY_CONFIG = """\
[mypy]
strict = true
plugins = repocket.mypy
mypy_path = {root}
cache_dir = {cache}

[mypy-repocket.*]
# The package has its own strict run (``mypy repocket``); here only its users are checked.
follow_imports = silent
"""


@dataclass(frozen=True)
class Report:
    """One line of mypy's report."""

    path: Path
    line: int
    kind: str
    message: str
    code: str | None


def unqualified(type_text: str) -> str:
    """A revealed type without module paths: ``uuid.UUID | None`` -> ``UUID | None``."""
    return QUALIFIER.sub("", type_text).strip()


def expected_reveals(path: Path, checker: str) -> dict[int, str]:
    """Line -> expected type, from the ``reveal_type(...)  # <type>  [# pyright: <type>]`` lines."""
    expected = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if "reveal_type(" not in text or text.lstrip().startswith(("#", "from", "import")):
            continue
        comments = [part.strip() for part in text.split("  # ")[1:]]
        spelled = comments[0]
        for comment in comments[1:]:
            if checker == "pyright" and comment.startswith("pyright:"):
                spelled = comment.removeprefix("pyright:").strip()
        expected[number] = spelled
    return expected


@pytest.fixture(scope="module")
def mypy_reports(tmp_path_factory: pytest.TempPathFactory) -> list[Report]:
    """mypy's report on the typed example, the deliberate errors and the examples (one run)."""
    work = tmp_path_factory.mktemp("mypy")
    config = work / "mypy.ini"
    config.write_text(MYPY_CONFIG.format(root=ROOT, cache=work / "cache"))
    files = [str(path) for path in (TYPED, ERRORS, *EXAMPLES)]
    stdout, stderr, status = mypy_api.run(["--config-file", str(config), "--no-pretty", "--show-absolute-path",
                                           "--hide-error-context", *files])
    assert status in (0, 1), f"mypy failed to run (status {status}):\n{stderr}\n{stdout}"
    reports = []
    for text in stdout.splitlines():
        match = REPORT_LINE.match(text)
        if match:
            reports.append(Report(Path(match["path"]).resolve(), int(match["line"]), match["kind"],
                                  match["message"], match["code"]))
    assert reports, f"mypy reported nothing:\n{stdout}\n{stderr}"
    return reports


def test_mypy_reveals_the_types_of_values_queries_and_managers(mypy_reports: list[Report]) -> None:
    """Each ``reveal_type`` in tests/typing/typed_models.py shows the type its comment gives, and nothing errs."""
    revealed = {}
    for report in mypy_reports:
        if report.path != TYPED:
            continue
        match = REVEALED.match(report.message)
        assert report.kind == "note" and match, f"line {report.line}: {report.message}"
        revealed[report.line] = unqualified(match["type"])
    expected = expected_reveals(TYPED, "mypy")
    assert len(expected) > 40
    assert revealed == expected


def test_mypy_reports_each_deliberate_mistake(mypy_reports: list[Report]) -> None:
    """Misspelt keywords, wrong value types, wrong pointer targets and misused results are mypy errors."""
    expected = {}
    for number, text in enumerate(ERRORS.read_text().splitlines(), start=1):
        match = EXPECTED_ERROR.search(text)
        if match:
            expected[number] = match["code"]
    reported = {report.line: report.code for report in mypy_reports
                if report.path == ERRORS and report.kind == "error"}
    assert len(expected) >= 15
    assert reported == expected


def test_examples_are_clean_under_strict_mypy_with_the_plugin(mypy_reports: list[Report]) -> None:
    """``mypy --strict`` with the plugin finds nothing wrong in examples/ (every ``*.py`` there)."""
    assert EXAMPLES, "examples/ has no Python files"
    examples = set(EXAMPLES)
    problems = [f"{r.path.relative_to(ROOT)}:{r.line}: {r.message}" for r in mypy_reports
                if r.path in examples and r.kind == "error"]
    assert problems == []


def _pyright() -> str | None:
    beside = Path(sys.executable).with_name("pyright")
    return str(beside) if beside.exists() else shutil.which("pyright")


@pytest.mark.skipif(_pyright() is None, reason="pyright is not installed (pip install pyright)")
def test_pyright_without_a_plugin_sees_the_same_types(tmp_path: Path) -> None:
    """pyright, which has no plugins, reveals the same types but for string Pointers and the implicit id."""
    config = tmp_path / "pyrightconfig.json"
    config.write_text(json.dumps({"pythonVersion": "3.10", "extraPaths": [str(ROOT)]}))
    done = subprocess.run([str(_pyright()), "--outputjson", "-p", str(config), str(TYPED)],
                          capture_output=True, text=True, timeout=300, check=False)
    try:
        output = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.skip(f"pyright could not run here (offline without its node package?): {done.stderr[-500:]}")
    revealed = {}
    errors = []
    for diagnostic in output["generalDiagnostics"]:
        line = diagnostic["range"]["start"]["line"] + 1
        match = re.match(r'^Type of ".*" is "(?P<type>.*)"$', diagnostic["message"], re.S)
        if diagnostic["severity"] == "information" and match:
            revealed[line] = unqualified(match["type"])
        else:
            errors.append(f"{line}: {diagnostic['message']}")
    assert errors == []
    assert revealed == expected_reveals(TYPED, "pyright")
