"""The examples in README.rst and in the docs pages run as written against a real Redis."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.rst"
#: Docs pages whose ``>>>`` examples form one session each (their models live in ``__main__``,
#: as they would for a reader typing them into the Python REPL).
DOC_PAGES = ["quickstart.rst", "serialization.rst", "queries.rst", "scaling.rst", "hooks.rst", "relationships.rst",
             "expiry.rst", "changes.rst", "recipes.rst", "schemas.rst", "testing.rst",
             "evolution.rst", "admin.rst"]


def _run_examples(path: Path, module_name: str) -> doctest.TestResults:
    """Run every ``>>>`` example of ``path`` in one namespace; fail with doctest's report."""
    test = doctest.DocTestParser().get_doctest(
        path.read_text(encoding="utf-8"), {"__name__": module_name}, path.name, str(path), 0
    )
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=report.append, clear_globs=True)
    assert result.failed == 0, "".join(report)
    return result


@pytest.mark.envelope_only  # the bytes of the envelope format
def test_readme_examples_give_the_output_shown(repocket_connection):
    """Every ``>>>`` example in README.rst prints exactly what the README shows."""
    result = _run_examples(README, "readme")
    assert result.attempted >= 20, "the README's quick tour lost its examples"


@pytest.mark.parametrize("page", DOC_PAGES)
def test_docs_examples_give_the_output_shown(repocket_connection, page):
    """Every ``>>>`` example of a docs page prints exactly what the page shows."""
    if page == "quickstart.rst":
        pytest.importorskip("bcrypt")  # the tutorial hashes passwords, as the original did
    result = _run_examples(ROOT / "docs" / page, "__main__")
    assert result.attempted >= 10, f"docs/{page} lost its examples"
