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
from benchmarks import memory, scale

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

#: The rows a run at two sizes adds, in the benchmark's order (invented numbers).
SAMPLE = [
    ("bulk create", True), ("get by id", True), ("count", True), ("filter (~25%)", True),
    ("filter + order_by", True), ("range filter (~10%)", True), ("filter (100 results)", False),
    ("filter + order_by (100 results)", False), ("create one by one", True), ("delete one by one", True),
    ("delete (bulk)", True), ("async get by id", True), ("async indexed filter", True),
    ("async create one by one", True),
]  # fmt: skip
#: The write operations whose server time a run reads, in the benchmark's order.
WRITES = ("bulk create", "create one by one", "delete one by one", "delete (bulk)", "async create one by one")


def _results_of(page: str, begin: str = bench.BEGIN, end: str = bench.END) -> str:
    """The text between the page's ``begin`` and ``end`` markers."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(begin))
    stop = lines.index(end, start)
    return "\n".join(lines[start + 1 : stop]).strip()


def _template(template: str = bench.RESULTS, blocks: tuple[str, ...] = bench.BLOCK_FIELDS) -> re.Pattern[str]:
    """``template`` as a pattern: its text, with any value in each field (``blocks`` hold several lines)."""
    parts = re.split(r"\{(\w+)\}", template.strip())
    return re.compile("".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" if part in blocks else f"(?P<{part}>[^\n]+)"
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


def _memory_report() -> memory.MemoryReport:
    """A memory report as a run makes it (made-up numbers; layout (d) misses its target)."""
    per_record = {"a": 550.0, "b": 800.0, "c": 1300.0, "d": 1310.0, "e": 850.0}
    layouts = {
        config: {
            key: memory.LayoutMemory(label, per_record[key], 300, "ziplist", {"ids": 72.0, "house": 207.0, "age": 208.0})
            for key, label in memory.LAYOUTS.items()
        }
        for config in ("embedded", "default")
    }
    return memory.MemoryReport(2000, {"embedded": 256, "default": 64}, layouts, ["(e) also keeps the hash field id"])


def _sample(sizes: tuple[int, ...]) -> tuple[list[bench.Row], bench.Fixed, list[bench.ServerRow]]:
    """Rows, fixed-size filter times and server rows as a run at ``sizes`` collects them (made-up numbers)."""
    rows: list[bench.Row] = []
    fixed: bench.Fixed = {}
    server: list[bench.ServerRow] = []
    for n in sizes:
        for k, (operation, on_page) in enumerate(SAMPLE):
            # ratio 1.0, 1.1, ... to both baselines; paired 1.2 to the minimal one, 1.1 to the same layout
            result = bench.Result({"rp": 1 + k / 10, "mn": 1.0, "hw": 1.0}, {"mn": [1.2], "hw": [1.1]})
            big = operation in ("create one by one", "async create one by one") and n > 10_000
            note = f"10,000 creates into a model of {n:,}" if big else ""
            rows.append(bench.Row(operation, n, "record", result, note, on_page))
        for name in ("filter", "filter + order_by"):
            fixed.setdefault(name, {})[n] = {"rp": 1e-3 * n**0.1, "mn": 1e-3 * n**0.02, "hw": 1e-3 * n**0.05}
        for operation in WRITES:
            server.append(bench.ServerRow(operation, n, {"rp": 500, "mn": 500, "hw": 500},
                                          {"rp": 500, "mn": 500, "hw": 500}, {"rp": 60_000, "mn": 12_000, "hw": 20_000}))
    return rows, fixed, server


INFO = bench.RunInfo("2030-01-02 03:04 UTC", "Some CPU, 2 CPUs (Linux x86_64)", "CPython 3.12.1", "7.2.4",
                     "0.50 at the start, 0.70 at the end")  # fmt: skip
#: The tables of a run at two sizes: two of ratios, the growth, the server time, two of memory.
RESULT_TABLES = 6


def _render(sizes: tuple[int, ...]) -> str:
    return bench.render_results(INFO, *_sample(sizes), _memory_report())


def test_performance_page_has_the_structure_the_benchmark_writes() -> None:
    """The checked-in results are ``RESULTS`` filled in, with valid tables."""
    results = _results_of(PERFORMANCE.read_text(encoding="utf-8"))
    match = _template().fullmatch(results)
    assert match is not None, "the results on the page do not follow benchmarks.__main__.RESULTS"
    assert len(_tables(results)) == RESULT_TABLES


def test_write_results_replaces_only_the_results() -> None:
    """A run's results replace the page's, in the same structure and with no placeholder left."""
    page = PERFORMANCE.read_text(encoding="utf-8")
    results = _render((10_000, 100_000))
    written = bench.write_results(page, results)
    before, after = page.split(bench.BEGIN)[0], page.split(bench.END)[1]
    assert written.startswith(before) and written.endswith(after)
    assert _results_of(written) == results
    assert find_placeholders(written) == []
    match = _template().fullmatch(results)
    assert match is not None
    assert match["date"] == INFO.date and match["load"] == INFO.load
    # (the paired ratios tell the tables apart: 1.20 against the minimal program, 1.10 against the same layout)
    # no target against the minimal program for a bulk delete; 1.15 against the same layout everywhere
    assert re.search(r"^delete \(bulk\) +2\.00 \(1\.20\) +2\.00 \(1\.20\) +—$", results, re.M)
    assert re.search(r"^delete \(bulk\) +2\.00 \(1\.10\) +2\.00 \(1\.10\) +≤1\.15$", results, re.M)
    assert re.search(r"^delete one by one +1\.90 \(1\.20\) +1\.90 \(1\.20\) +≤1\.2$", results, re.M)
    assert results.index("(1.20)") < results.index("(1.10)")  # the minimal program's table first
    assert match["verdict"].startswith("Create one by one at N = 100,000: 10,000 creates")
    verdict = " ".join(results.split())
    # one bullet per missed target, the minimal program's first
    assert "\n\nMissed targets:\n\n- create one by one at N = 10,000 against the minimal program" in results
    assert "\n- count at N = 10,000 against the same-layout program (1.20, target ≤1.15)\n" in results
    assert "\n- get by id at N = 10,000 against the same-layout" not in results  # 1.10: met
    assert "create one by one at N = 10,000 against the minimal program (1.80, target ≤1.25)" in verdict
    assert "count at N = 10,000 against the same-layout program (1.20, target ≤1.15)" in verdict
    assert "bulk create at N" not in verdict  # 1.00: met against both
    assert "fixed-size filter from N = 10,000 to N = 100,000 (1.26, target ≤1.2)" in verdict
    assert "the memory of repocket, envelope on the embedded configuration (1.64× layout (b), target ≤1.5)" in verdict
    assert re.search(r"^filter +1\.26 +1\.05 +1\.12 +≤1\.2$", results, re.M)  # growth: repocket, minimal, same
    assert re.search(r"^bulk create +100,000 +1\.000 +120\.0 +120\.0 +24\.0 +40\.0$", results, re.M)
    assert re.search(r"^repocket, plain \(e\) +850 +1\.06 .* ≤1\.15$", results, re.M)
    assert results.index("Growth") < results.index("commandstats") < results.index("Memory per record")
    assert _shape(results) == _shape(_results_of(page))
    assert bench.write_results(written, results) == written  # a second run rewrites the same lines


def test_results_of_one_size_have_no_growth_table() -> None:
    """After a run at one size there is no growth table, and still no placeholder."""
    results = _render((1_000,))
    assert len(_tables(results)) == RESULT_TABLES - 1
    assert "Growth" not in results and "\n\n\n" not in results
    assert find_placeholders(results) == []


def test_results_without_memory_or_server_time() -> None:
    """A run that measured neither memory nor server time leaves no empty section behind."""
    rows, fixed, _ = _sample((1_000,))
    results = bench.render_results(INFO, rows, fixed)
    assert len(_tables(results)) == 2
    assert "Memory" not in results and "commandstats" not in results and "\n\n\n" not in results


def test_write_results_needs_both_markers() -> None:
    """A page without the results markers is refused, not overwritten."""
    with pytest.raises(ValueError, match="begin results"):
        bench.write_results("Performance\n===========\n\n{body}\n", "results")
    with pytest.raises(ValueError, match="end results"):
        bench.write_results(f"{bench.BEGIN_LINE}\n\nold\n", "results")


# -- the scale results ``make bench-scale`` writes into the performance page ----------------


def _scale_report(sizes: tuple[int, ...] = scale.SIZES) -> scale.ScaleReport:
    """A scale report as a run makes it (made-up numbers: repocket's times grow as N**0.05)."""
    labels = {query.label: query.full for query in scale.queries()}
    sides = {}
    for side, power in (("rp", 0.05), ("mn", 0.5)):
        run = scale.SideRun()
        for label, full in labels.items():
            run.times[label] = {n: 1e-3 * n**power for n in sizes}
            # the page at offset 1,000 of the 1% filter is full from 110,000 records on
            short = "[1000:1100]" in label and "age=7" in label
            run.sizes[label] = {n: None if full is None else 0 if short and n < 110_000 else full for n in sizes}
        run.memory = dict.fromkeys(sizes, 1500.0)
        run.load = dict.fromkeys(sizes, 150.0)
        sides[side] = run
    return scale.ScaleReport(list(sizes), 5, 64, labels, sides)


def test_performance_page_has_the_scale_structure() -> None:
    """The checked-in scale results are ``SCALE`` filled in, with valid tables of the default sizes."""
    text = _results_of(PERFORMANCE.read_text(encoding="utf-8"), scale.BEGIN, scale.END)
    assert _template(scale.SCALE, scale.BLOCK_FIELDS).fullmatch(text) is not None, (
        "the scale results on the page do not follow benchmarks.scale.SCALE"
    )
    assert _shape(text) == _shape(scale.render_scale(INFO, _scale_report()))


def test_write_scale_replaces_only_the_scale_results() -> None:
    """A scale run's results replace the page's, and nothing else (the bench's results stay)."""
    page = PERFORMANCE.read_text(encoding="utf-8")
    text = scale.render_scale(INFO, _scale_report())
    written = scale.write_scale(page, text)
    assert written.startswith(page.split(scale.BEGIN)[0]) and written.endswith(page.split(scale.END)[1])
    assert _results_of(written, scale.BEGIN, scale.END) == text
    assert _results_of(written) == _results_of(page)
    assert find_placeholders(written) == []
    match = _template(scale.SCALE, scale.BLOCK_FIELDS).fullmatch(text)
    assert match is not None and match["date"] == INFO.date
    growth = f"{1_000_000**0.05 / 10_000**0.05:.2f}"  # 1.26
    assert re.search(rf"^``filter\(tag='t7'\)`` +1\.58 .* {growth} +≤1\.3$", match["repocket"], re.M)
    assert re.search(r"^``filter\(age=7\)\.order_by\('name'\)\[1000:1100\]`` +1\.58 \[0\] .* —", match["repocket"], re.M)
    assert "Every growth target was met." in match["verdict"]
    assert scale.write_scale(written, text) == written


def test_scale_growth_uses_the_sizes_with_full_results() -> None:
    """A page that is empty at the small sizes is measured between the sizes where it is full."""
    report = _scale_report((10_000, 200_000, 1_000_000))
    label = "filter(age=7).order_by('name')[1000:1100]"
    ratio, small, large = report.growth("rp", label)
    assert (small, large) == (200_000, 1_000_000) and ratio == pytest.approx(5**0.05)
    assert report.growth_cell("rp", label) == f"{5**0.05:.2f} (200,000 → 1,000,000)"
    slow = _scale_report()
    slow.sides["rp"].times["filter(tag='t7')"][1_000_000] = 1.0
    assert any(missed.startswith("``filter(tag='t7')`` from N = 10,000") for missed in slow.missed())


def test_write_scale_needs_both_markers() -> None:
    """A page without the scale markers is refused, not overwritten."""
    with pytest.raises(ValueError, match="begin scale"):
        scale.write_scale("Performance\n===========\n", "results")
    with pytest.raises(ValueError, match="end scale"):
        scale.write_scale(f"{scale.BEGIN_LINE}\n\nold\n", "results")
