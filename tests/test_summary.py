"""The summary's rendering: R's abbreviate(), and the HTML against the text it mirrors.

References: R 4.2.2's abbreviate() and lme4 1.1-31's print of summary(m), run on this
machine; the figures compared are strings, so there is no tolerance.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from conftest import fit_spec

import hmix
from hmix.summary import Summary, abbreviate


class _Tables(HTMLParser):
    """The tables of an HTML fragment as rows of (tag, text) cells, and the tags it uses."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str]]]] = []
        self.tags: set[str] = set()
        self.styles: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.styles += [v for k, v in attrs if k == "style" and v]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = [tag]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append((self._cell[0], "".join(self._cell[1:])))
            self._cell = None


def parse(summary: Summary) -> _Tables:
    parser = _Tables()
    parser.feed(summary._repr_html_())
    return parser


@pytest.fixture(scope="module")
def sleep_summary() -> Summary:
    return hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy")).summary()


@pytest.fixture(scope="module")
def grouse_summary() -> Summary:
    return fit_spec("extra_spec.json", "grouse_poisson").summary()


# R 4.2.2: unname(abbreviate(x, 4)), unname(abbreviate(x, 6)), unname(abbreviate(x, 11))
R_NAMES = ["(Intercept)", "Days", "YEAR[T.96]", "YEAR[T.97]", "scale(HEIGHT)", "period[T.2]", "period[T.3]",
           "situself", "btypescold", "GenderM", "Days:phasetreatment", "hello world foo", "log(x + 1)",
           "I(age ** 2)", "a b", "treatmentB:dose", "treatmentC:dose"]  # fmt: skip
R_ABBREVIATED = {
    4: ["(In)", "Days", "YEAR[T.96", "YEAR[T.97", "s(HE", "p[T.2", "p[T.3", "stsl", "btyp", "GndM",
        "Dys:", "hlwf", "l(+1", "I(*2", "a b", "trB:", "trC:"],
    6: ["(Intr)", "Days", "YEAR[T.96", "YEAR[T.97", "s(HEIG", "p[T.2]", "p[T.3]", "sitslf", "btypsc",
        "GendrM", "Dys:ph", "hllwrf", "lg(+1)", "I(**2)", "a b", "trtmB:", "trtmC:"],
    11: ["(Intercept)", "Days", "YEAR[T.96]", "YEAR[T.97]", "scl(HEIGHT)", "period[T.2]", "period[T.3]",
         "situself", "btypescold", "GenderM", "Dys:phstrtm", "helloworldf", "log(x + 1)", "I(age ** 2)",
         "a b", "tretmntB:ds", "tretmntC:ds"],
}  # fmt: skip


@pytest.mark.parametrize("minlength", sorted(R_ABBREVIATED))
def test_abbreviate_matches_r(minlength: int) -> None:
    assert abbreviate(R_NAMES, minlength) == R_ABBREVIATED[minlength]


def test_abbreviate_keeps_duplicates_together() -> None:
    assert abbreviate(["period2", "period2", "period3"], 4) == ["prd2", "prd2", "prd3"]


def test_text_correlation_headers_are_unique(grouse_summary: Summary) -> None:
    # lme4 1.1-31 prints this block (its columns are YEAR96, YEAR97) as
    #             (Intr) YEAR96 YEAR97
    # YEAR96      -0.728
    # YEAR97      -0.610  0.514
    # scl(HEIGHT)  0.011  0.048  0.047
    lines = str(grouse_summary).splitlines()
    start = lines.index("Correlation of Fixed Effects:") + 1
    assert lines[start].split() == ["(Intr)", "YEAR[T.96", "YEAR[T.97"]
    rows = [ln.split()[0] for ln in lines[start + 1 : start + 4]]
    assert rows == ["YEAR[T.96]", "YEAR[T.97]", "scl(HEIGHT)"]


def test_html_shows_the_texts_numbers(grouse_summary: Summary) -> None:
    text = str(grouse_summary)
    tables = parse(grouse_summary).tables
    assert len(tables) == 5  # criteria, residuals, random effects, fixed effects, correlation
    for table in tables:
        for row in table[1:]:
            for tag, cell in row:
                if tag == "td" and cell:
                    assert cell in text, cell  # the same rounding as the text
    criteria, residuals, random, fixed, corr = tables
    assert [c for _, c in criteria[1]] == ["1794.5", "1822.5", "-890.3", "1780.5", "396"]
    assert [c for _, c in residuals[1]] == ["-1.6123", "-0.5536", "-0.1486", "0.2850", "2.4430"]
    assert [c for _, c in random[1]] == ["INDEX", "(Intercept)", "0.2932", "0.5415"]
    assert [c for _, c in fixed[2]] == ["YEAR[T.96]", "1.1804", "0.2381", "4.957", "7.16e-07", "***"]
    assert [c for _, c in corr[3]] == ["scl(HEIGHT)", "0.012", "0.048", "0.047"]


def test_html_tables_have_no_index_labels(sleep_summary: Summary, grouse_summary: Summary) -> None:
    for summary in (sleep_summary, grouse_summary):
        tables = parse(summary).tables
        residuals = next(t for t in tables if [c for _, c in t[0]][:2] == ["Min", "1Q"])
        assert [tag for tag, _ in residuals[1]] == ["td"] * 5  # no row label, no pandas "0"
        for table in tables:
            assert all(cell != "0" for tag, cell in table[1] if tag == "th")


def test_html_headers_are_unique(grouse_summary: Summary) -> None:
    for table in parse(grouse_summary).tables:
        names = [c for _, c in table[0] if c]
        assert len(names) == len(set(names)), names
    corr = parse(grouse_summary).tables[-1]
    assert [c for _, c in corr[0]] == ["", "(Intr)", "YEAR[T.96", "YEAR[T.97"]


def test_html_uses_one_font(sleep_summary: Summary) -> None:
    parsed = parse(sleep_summary)
    assert "pre" not in parsed.tags  # a <pre> takes the browser's monospace, not the summary's font
    families = [s for s in parsed.styles if "font-family" in s]
    assert families[0].startswith("font-family: var(--jp-code-font-family, monospace)")
    assert all("font-family: inherit" in s for s in families[1:])
    tables = [s for s in parsed.styles if "collapse" in s]
    assert len(tables) == 4 and all("font-size: inherit" in s for s in tables)


def test_html_of_lmertest_summary() -> None:
    s = fit_spec("public_spec.json", "sleepstudy_reml").summary(ddf="satterthwaite")
    fixed = next(t for t in parse(s).tables if t[0][1][1] == "Estimate")
    assert [c for _, c in fixed[0]] == ["", "Estimate", "Std. Error", "df", "t value", "Pr(>|t|)", ""]
    assert all(cell in str(s) for tag, cell in fixed[1] if tag == "td" and cell)
