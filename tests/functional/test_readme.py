"""README.rst's quick tour runs as written against a real Redis."""

from __future__ import annotations

import doctest
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.rst"


def test_readme_examples_give_the_output_shown(repocket_connection):
    """Every ``>>>`` example in README.rst prints exactly what the README shows."""
    text = README.read_text(encoding="utf-8")
    test = doctest.DocTestParser().get_doctest(
        text, {"__name__": "readme"}, "README.rst", str(README), 0
    )
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=report.append, clear_globs=True)
    assert result.attempted >= 20, "the README's quick tour lost its examples"
    assert result.failed == 0, "".join(report)
