"""The docs as written: no unfilled template placeholders, no internal issue numbers.

Sphinx renders a leftover ``{body}`` as text without a warning, so these tests
read the reStructuredText sources themselves. The results part of the
performance page is written by ``make bench``; the last tests check that the
checked-in page has the structure the benchmark writes.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import docutils.core
import pytest
from docutils import nodes

import benchmarks.__main__ as bench

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.rst")), ROOT / "README.rst"]
PERFORMANCE = DOCS / "performance.rst"

#: A ``str.format`` field named by an identifier (``{body}``, ``{row.name}``,
#: ``{rows[0]}``, ``{n!r}``, ``{n:,}``) or a Jinja one (``{{ body }}``).
PLACEHOLDER = re.compile(
    r"\{\{\s*[A-Za-z_]\w*\s*\}\}"
    r"|\{[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\w+\])*(?:![rsa])?(?::[^{}\s]*)?\}"
)
#: Directives whose body is shown or run as it is, never as prose.
LITERAL_DIRECTIVES = {
    "code", "code-block", "sourcecode", "parsed-literal", "literalinclude", "highlight",
    "doctest", "testcode", "testoutput", "testsetup", "testcleanup", "math", "raw",
}  # fmt: skip
DIRECTIVE = re.compile(r"\s*\.\.\s+(?:\|[^|]+\|\s+)?(?P<name>[\w:+-]+)::(?:\s|$)")
#: Explicit markup that is not a directive: a footnote, citation, target or substitution.
NOT_A_COMMENT = re.compile(r"\s*\.\.\s+(?:\[[^\]]+\]|_|\|)")
EXPLICIT = re.compile(r"\s*\.\.(?:\s|$)")
BULLET = re.compile(r"\s*(?:[-*+•]|\d+[.)]|#\.|\(\d+\))\s+")
#: Roles whose text keeps its braces on purpose (``:samp:`rm {file}```, LaTeX).
BRACED_ROLES = re.compile(r":(?:samp|file|math|kbd|regexp):`[^`]*`")
#: "issue 3", "issues #12", "#45", "GH-7", "PR 9", "ticket 2".
ISSUE_NUMBER = re.compile(
    r"\b(?:issues?|bugs?|tickets?|PRs?|pull\s+requests?)\s*(?:no\.\s*|number\s*)?#?\s*\d+"
    r"|(?<![&\w])#\d+\b|\bGH-\d+",
    re.IGNORECASE,
)


def _indent(line: str) -> int:
    """The number of leading spaces."""
    return len(line) - len(line.lstrip())


def _without_inline_literals(line: str, open_literal: bool) -> tuple[str, bool]:
    """``line`` without its ``inline literals``; whether one is still open at its end."""
    parts = line.split("``")
    inside = open_literal
    prose = []
    for part in parts:
        if not inside:
            prose.append(part)
        inside = not inside
    return " ".join(prose), not inside


def find_placeholders(text: str) -> list[tuple[int, str]]:
    """Every ``(line number, placeholder)`` in the prose of reStructuredText ``text``.

    Skipped: literal blocks (after ``::``), literal directives (``code-block``,
    ``doctest``, ...), comments, doctest blocks (from a ``>>>`` line to the next
    blank line, and lone ``...`` lines), inline literals and braced roles.
    """
    found: list[tuple[int, str]] = []
    skip_deeper: int | None = None  # inside a block: skip lines indented more than this
    literal_after: int | None = None  # a paragraph ended with "::": its indentation
    doctest = open_literal = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        indent = _indent(line)
        if skip_deeper is not None:
            if not stripped or indent > skip_deeper:
                continue
            skip_deeper = None
        if literal_after is not None and stripped:
            base, literal_after = literal_after, None
            if indent > base:
                skip_deeper = base
                continue
        if not stripped:
            doctest = open_literal = False
            continue
        if doctest or stripped.startswith((">>>", "...")):
            doctest = doctest or stripped.startswith(">>>")
            continue
        directive = DIRECTIVE.match(line)
        if directive is None and EXPLICIT.match(line) and not NOT_A_COMMENT.match(line):
            skip_deeper = indent  # a comment, and its indented lines
            continue
        if directive is not None and directive["name"].rpartition(":")[2] in LITERAL_DIRECTIVES:
            skip_deeper = indent
            continue
        prose, open_literal = _without_inline_literals(line, open_literal)
        found += [(number, m.group()) for m in PLACEHOLDER.finditer(BRACED_ROLES.sub("", prose))]
        if directive is None and stripped.endswith("::"):
            bullet = BULLET.match(line)
            literal_after = bullet.end() if bullet else indent
    return found


# -- the scanner itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Results\n-------\n\n{body}\n",
        "A table: {rows} and a name {row.name}.\n",
        "Jinja left over: {{ body }}\n",
        ".. code-block:: text\n\n{body}\n",  # not indented: outside the (empty) code block
        "Example::\n\n    x = {a}\n\nThen {body}.\n",  # after the literal block ends
        ".. note::\n\n   See {body}.\n",  # a directive's prose
        "``inline`` then {body} then ``more``\n",
    ],
)
def test_scanner_finds_placeholders_in_prose(text: str) -> None:
    """A brace-wrapped identifier in prose is reported."""
    assert find_placeholders(text)


@pytest.mark.parametrize(
    "text",
    [
        '.. code-block:: python\n\n   print(f"{done}/{total}")\n',
        ".. code-block:: text\n   :caption: out\n\n   {body}\n\n   {rows}\n",
        "From the shell::\n\n    echo {name}\n\n  {still_literal}\n",
        "- An item::\n\n      {literal}\n",
        "::\n\n    {expanded_form}\n",
        "Write ``'{name}'.format(name=x)`` or ``{a}``.\n",
        "An inline literal ``across\n{lines}`` is one.\n",
        ">>> d = {'a': 1}\n>>> {x for x in d}\n{'a'}\n{x}\n",
        "... {body}\n",
        ".. doctest::\n\n   >>> f'{x}'\n",
        ".. A comment with {body}\n   and {more}.\n",
        'Sets such as {1, 2}, dicts {"a": 1} and {a: 1}.\n',
        "Type :samp:`rm {file}` or :math:`\\frac{a}{b}`.\n",
    ],
)
def test_scanner_ignores_legitimate_braces(text: str) -> None:
    """Braces in code, literals, doctests, comments and braced roles are not placeholders."""
    assert find_placeholders(text) == []


def test_scanner_names_the_line() -> None:
    """The line number of each placeholder is reported."""
    assert find_placeholders("Title\n=====\n\n``{a}`` ok\n{body} and {rows}\n") == [
        (5, "{body}"),
        (5, "{rows}"),
    ]


# -- the docs ------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_no_unfilled_placeholders(page: Path) -> None:
    """No docs page (nor the README) shows an unfilled ``{name}`` placeholder."""
    where = page.relative_to(ROOT)
    found = find_placeholders(page.read_text(encoding="utf-8"))
    assert not found, "unfilled placeholders:\n" + "\n".join(
        f"{where}:{number}: {placeholder}" for number, placeholder in found
    )


def test_performance_page_mentions_no_issue_numbers() -> None:
    """The performance page refers to no issue number a user cannot look up."""
    lines = PERFORMANCE.read_text(encoding="utf-8").splitlines()
    found = [
        f"docs/performance.rst:{number}: {match.group()!r}"
        for number, line in enumerate(lines, 1)
        for match in ISSUE_NUMBER.finditer(line)
    ]
    assert not found, "issue numbers:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "text", ["Targets (issue 3)", "see #12", "GH-7", "issues #4 and #5", "PR 9"]
)
def test_issue_pattern_finds_references(text: str) -> None:
    """The issue-number pattern recognises the usual ways of citing an issue."""
    assert ISSUE_NUMBER.search(text)


@pytest.mark.parametrize("text", ["Python 3.11", "redis-server 6.2", "&#123;", "issue a warning"])
def test_issue_pattern_ignores_other_numbers(text: str) -> None:
    """Versions, character references and the verb "issue" are not issue numbers."""
    assert not ISSUE_NUMBER.search(text)


# -- the results ``make bench`` writes into the performance page ---------------------------

#: Fields of :data:`benchmarks.__main__.RESULTS` that hold several lines.
BLOCK_FIELDS = {"table", "verdict", "growth"}
#: The rows a run at two sizes adds, in the benchmark's order (invented numbers).
SAMPLE = [
    ("bulk create", True), ("get by id", True), ("count", True), ("filter (~25%)", True),
    ("filter + order_by", True), ("range filter (~10%)", True), ("filter (100 results)", False),
    ("filter + order_by (100 results)", False), ("create one by one", True), ("delete (bulk)", True),
    ("async get by id", True), ("async indexed filter", True), ("async create one by one", True),
]  # fmt: skip


def _results_of(page: str) -> str:
    """The text between the page's results markers."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(bench.BEGIN))
    end = lines.index(bench.END, start)
    return "\n".join(lines[start + 1 : end]).strip()


def _template() -> re.Pattern[str]:
    """:data:`~benchmarks.__main__.RESULTS` as a pattern: its text, with any value in each field."""
    parts = re.split(r"\{(\w+)\}", bench.RESULTS.strip())
    return re.compile("".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" if part in BLOCK_FIELDS else f"(?P<{part}>[^\n]+)"
        for i, part in enumerate(parts)
    ), re.DOTALL)  # fmt: skip


def _tables(text: str) -> list[list[list[str]]]:
    """The cells of every table in reStructuredText ``text``; fails on any docutils warning."""
    warnings = io.StringIO()
    tree = docutils.core.publish_doctree(
        text, settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": warnings}
    )
    assert warnings.getvalue() == ""
    return [
        [[entry.astext() for entry in row.findall(nodes.entry)] for row in table.findall(nodes.row)]
        for table in tree.findall(nodes.table)
    ]


def _shape(text: str) -> list[list[str]]:
    """Each table's header and first column: what stays the same from run to run."""
    return [table[0] + [row[0] for row in table[1:]] for table in _tables(text)]


def _sample(sizes: tuple[int, ...]) -> tuple[list[bench.Row], bench.Fixed]:
    """Rows and fixed-size filter times as a run at ``sizes`` collects them (made-up numbers)."""
    rows: list[bench.Row] = []
    fixed: bench.Fixed = {}
    for n in sizes:
        for k, (operation, on_page) in enumerate(SAMPLE):
            result = bench.Result(1 + k / 10, 1.0, [1.2], [], [])  # ratio 1.0, 1.1, ...; paired 1.2
            big = operation == "create one by one" and n > 10_000
            note = f"10,000 creates into a model of {n:,}" if big else ""
            rows.append(bench.Row(operation, n, "record", result, note, on_page))
        for name in ("filter", "filter + order_by"):
            fixed.setdefault(name, {})[n] = (1e-3 * n**0.1, 1e-3 * n**0.05)
    return rows, fixed


INFO = bench.RunInfo("2030-01-02 03:04 UTC", "Some CPU, 2 CPUs (Linux x86_64)", "CPython 3.12.1", "7.2.4",
                     "0.50 at the start, 0.70 at the end")  # fmt: skip


def test_performance_page_has_the_structure_the_benchmark_writes() -> None:
    """The checked-in results are ``RESULTS`` filled in, with valid tables."""
    results = _results_of(PERFORMANCE.read_text(encoding="utf-8"))
    match = _template().fullmatch(results)
    assert match is not None, "the results on the page do not follow benchmarks.__main__.RESULTS"
    assert len(_tables(results)) == 2


def test_write_results_replaces_only_the_results() -> None:
    """A run's results replace the page's, in the same structure and with no placeholder left."""
    page = PERFORMANCE.read_text(encoding="utf-8")
    results = bench.render_results(INFO, *_sample((10_000, 100_000)))
    written = bench.write_results(page, results)
    before, after = page.split(bench.BEGIN)[0], page.split(bench.END)[1]
    assert written.startswith(before) and written.endswith(after)
    assert _results_of(written) == results
    assert find_placeholders(written) == []
    match = _template().fullmatch(results)
    assert match is not None
    assert match["date"] == INFO.date and match["load"] == INFO.load
    assert re.search(
        r"^delete \(bulk\) +1\.90 \(1\.20\) +1\.90 \(1\.20\) +—$", match["table"], re.M
    )
    verdict = " ".join(match["verdict"].split())
    assert verdict.startswith("Create one by one at N = 100,000: 10,000 creates")
    assert "create one by one at N = 10,000 (1.80, target ≤1.3)" in verdict
    assert "fixed-size filter from N = 10,000 to N = 100,000 (1.26, target ≤1.2)" in verdict
    assert _shape(results) == _shape(_results_of(page))
    assert bench.write_results(written, results) == written  # a second run rewrites the same lines


def test_results_of_one_size_have_no_growth_table() -> None:
    """After a run at one size there is one table and no growth, and still no placeholder."""
    results = bench.render_results(INFO, *_sample((1_000,)))
    assert len(_tables(results)) == 1
    assert "Growth" not in results and "\n\n\n" not in results
    assert find_placeholders(results) == []


def test_write_results_needs_both_markers() -> None:
    """A page without the results markers is refused, not overwritten."""
    with pytest.raises(ValueError, match="begin results"):
        bench.write_results("Performance\n===========\n\n{body}\n", "results")
    with pytest.raises(ValueError, match="end results"):
        bench.write_results(f"{bench.BEGIN_LINE}\n\nold\n", "results")
