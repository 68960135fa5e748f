"""Text and HTML rendering of fitted models in lme4's layout. Nothing here computes estimates."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .covariance import CovarianceStructure
    from .results import GeneralizedLinearMixedModel, LinearMixedModel, MixedModel

__all__ = [
    "Summary",
    "Block",
    "lmm_summary",
    "lmm_brief",
    "glmm_summary",
    "glmm_brief",
    "rformat",
    "abbreviate",
]


def _decimals(x: float, digits: int) -> int:
    """Decimals R's format() needs to show ``x`` with ``digits`` significant digits."""
    if x == 0 or not math.isfinite(x):
        return 0
    mag = math.floor(math.log10(abs(x)))
    dec = max(0, digits - 1 - mag)
    text = f"{abs(x):.{dec}f}"
    if "." in text:
        dec = len(text.rstrip("0").split(".")[1])
    return dec


def rformat(values: Sequence[float] | np.ndarray, digits: int = 4) -> list[str]:
    """Format numbers together as R's ``format(x, digits=)``: one number of decimals for all,
    enough for every value to show ``digits`` significant digits, right-justified."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    dec = max((_decimals(v, digits) for v in finite), default=0)
    dec = min(dec, 15)
    out = [
        f"{v:.{dec}f}" if math.isfinite(v) else ("NaN" if math.isnan(v) else ("Inf" if v > 0 else "-Inf"))
        for v in vals
    ]
    width = max((len(s) for s in out), default=0)
    return [s.rjust(width) for s in out]


def _strip_chars(name: str, minlength: int) -> str:
    """One name shortened as R's C routine ``stripchars`` does (``abbreviate``'s inner step).

    From the right, and never the first character of a word: lower-case vowels ending a word,
    then any lower-case vowel, lower-case letters ending a word, any lower-case letter, and at
    last any character, each pass stopping as soon as the name is ``minlength`` long.
    """
    chars = list(name.lstrip())
    if len(chars) <= minlength:
        return "".join(chars)
    while chars and chars[-1].isspace():  # R drops trailing blanks first
        chars.pop()
    nspace = sum(c.isspace() for c in chars[1:])

    def first(i: int) -> bool:
        return chars[i - 1].isspace()

    def last(i: int) -> bool:
        return not chars[i - 1].isspace() and (i + 1 == len(chars) or chars[i + 1].isspace())

    def vowel(c: str) -> bool:
        return c in "aeiou"

    def lower(c: str) -> bool:
        return "a" <= c <= "z"

    passes = [
        lambda i: vowel(chars[i]) and last(i),
        lambda i: vowel(chars[i]) and not first(i),
        lambda i: lower(chars[i]) and last(i),
        lambda i: lower(chars[i]) and not first(i),
        lambda i: not first(i) and not chars[i].isspace(),
    ]
    for drop in passes:
        if len(chars) - nspace <= minlength:
            break
        for i in range(len(chars) - 1, 0, -1):
            if i < len(chars) and drop(i):
                del chars[i]
            if len(chars) - nspace <= minlength:
                break
    if len(chars) > minlength:
        chars = chars[:1] + [c for c in chars[1:] if not c.isspace()]
    return "".join(chars)


def abbreviate(names: Sequence[str], minlength: int = 4) -> list[str]:
    """R's ``abbreviate(names, minlength)``: shortened names, unique as the names are.

    Names whose abbreviations collide are abbreviated again, one character longer each round,
    until all differ (R's default ``method = "left.kept"``); ``abbreviate(["YEAR[T.96]",
    "YEAR[T.97]"], 6)`` gives ``["YEAR[T.96", "YEAR[T.97"]``, not ``YEAR[T`` twice.

    Examples
    --------
    >>> abbreviate(["(Intercept)", "Days"], 6)
    ['(Intr)', 'Days']
    >>> abbreviate(["YEAR[T.96]", "YEAR[T.97]"], 6)
    ['YEAR[T.96', 'YEAR[T.97']
    """
    if isinstance(names, str):
        raise TypeError("abbreviate takes a list of names: abbreviate([name], minlength)")
    unique = list(dict.fromkeys(n.strip(" ") for n in names))
    out = list(unique)
    redo = [True] * len(unique)
    length = minlength
    while True:
        for i, again in enumerate(redo):
            if again:
                out[i] = _strip_chars(unique[i], length)
        seen: dict[str, int] = {}
        for a in out:
            seen[a] = seen.get(a, 0) + 1
        # a name is abbreviated again when its abbreviation is shared, as R's
        # dup2 | match(x, x[dup2]) takes in the first of the duplicates too
        redo = [seen[a] > 1 for a in out]
        if not any(redo):
            break
        length += 1
    lookup = dict(zip(unique, out))
    return [lookup[n.strip(" ")] for n in names]


def _zapsmall(x: np.ndarray, digits: int) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` significant digits of the largest magnitude."""
    mx = float(np.max(np.abs(x)))
    if mx <= 0:
        return x
    return np.round(x, max(0, math.floor(digits - math.log10(mx) + 0.5)))


def _named_vector(names: Sequence[str], values: Sequence[str]) -> list[str]:
    """R's print of a named vector: every column right-justified to the widest entry."""
    w = max([len(n) for n in names] + [len(v) for v in values])
    return [" ".join(n.rjust(w) for n in names), " ".join(v.rjust(w) for v in values)]


def _matrix(
    rownames: Sequence[str],
    colnames: Sequence[str],
    cells: Sequence[Sequence[str]],
    left: bool | Sequence[bool] = False,
) -> list[str]:
    """R's print of a character matrix (``left``: left-justified cells, for all columns as
    print.VarCorr, or per column)."""
    lefts = [left] * len(colnames) if isinstance(left, bool) else list(left)
    rw = max((len(r) for r in rownames), default=0)
    widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(colnames)]

    def just(row: Sequence[str]) -> str:
        return " ".join(c.ljust(w) if lf else c.rjust(w) for c, w, lf in zip(row, widths, lefts))

    lines = [" " * rw + " " + just(colnames)]
    lines += [r.ljust(rw) + " " + just(row) for r, row in zip(rownames, cells)]
    return [ln.rstrip() for ln in lines]


# one font for the whole HTML summary: the notebook's code font, as the text summary's
_HTML_FONT = "font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 13px)"
# notebook front ends centre tables and set their own font size; keep them in the summary's flow
_HTML_TABLE = "font-family: inherit; font-size: inherit; border-collapse: collapse; margin: 0.2em 0 0.8em 0"
_HTML_CELL = "text-align: {}; padding: 0.1em 0.6em"


@dataclass(frozen=True)
class Block:
    """One table of a summary as formatted strings, so the text and the HTML show the same digits.

    Attributes
    ----------
    colnames : list of str
    cells : list of list of str
        The formatted entries, one list per row.
    rownames : list of str or None
        None for a named vector (one row, printed as R prints a named vector); empty strings
        for a table without row names (print.VarCorr's).
    left : list of bool
        Left-justified columns in the text (the others are right-justified).
    html_left : list of bool
        Left-aligned columns in HTML (labels; numbers are right-aligned).
    titles : list of str or None
        Full names of abbreviated column names, shown as the HTML header's tooltip.
    """

    colnames: list[str]
    cells: list[list[str]]
    rownames: list[str] | None = None
    left: list[bool] = field(default_factory=list)
    html_left: list[bool] = field(default_factory=list)
    titles: list[str] | None = None

    def text(self) -> list[str]:
        if self.rownames is None:
            return _named_vector(self.colnames, self.cells[0])
        return _matrix(self.rownames, self.colnames, self.cells, self.left or False)

    def html(self) -> str:
        def cell(tag: str, text: str, left: bool, title: str | None = None) -> str:
            style = _HTML_CELL.format("left" if left else "right")
            tip = f" title='{html.escape(title)}'" if title is not None and title != text else ""
            return f"<{tag} style='{style}'{tip}>{html.escape(text.strip())}</{tag}>"

        lefts = self.html_left or [False] * len(self.colnames)
        titles: Sequence[str | None] = self.titles or [None] * len(self.colnames)
        rownames = self.rownames if self.rownames and any(self.rownames) else None
        corner = cell("th", "", True) if rownames else ""
        head = corner + "".join(cell("th", c, lf, t) for c, lf, t in zip(self.colnames, lefts, titles))
        body = []
        for i, row in enumerate(self.cells):
            label = cell("th", rownames[i], True) if rownames else ""
            body.append("<tr>" + label + "".join(cell("td", c, lf) for c, lf in zip(row, lefts)) + "</tr>")
        return (
            f"<table style='{_HTML_TABLE}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )


Section: TypeAlias = "Block | list[str]"


def _section_text(section: Section) -> list[str]:
    return section.text() if isinstance(section, Block) else section


def _section_html(section: Section) -> str:
    if isinstance(section, Block):
        return section.html()
    return _html_lines(section)


def _html_lines(lines: Sequence[str]) -> str:
    return f"<div style='white-space: pre'>{html.escape(chr(10).join(lines))}</div>"


@dataclass
class Summary:
    """A fitted model's summary: prints as lme4's text, renders as HTML in Jupyter.

    The text and the HTML show the same formatted numbers; the attributes hold them unrounded.

    Attributes
    ----------
    title : str
    header : list of str
        Formula and data lines.
    criteria : pandas.Series
        The fit criterion (REML) or AIC, BIC, logLik, deviance, df.resid (ML).
    residuals : pandas.Series
        Quantiles of the scaled residuals.
    random : pandas.DataFrame
        Variance components (lme4's VarCorr table).
    coefficients : pandas.DataFrame
        Fixed effects: Estimate, Std. Error, and the test statistic.
    correlation : pandas.DataFrame or None
        Correlation of the fixed-effects estimates.
    sections : dict
        The formatted blocks ("criteria", "residuals", "random", "coefficients" and
        "correlation"): a `Block` or lines of text each.
    signif : list of str
        The legend of the significance stars, when the fixed effects show stars.
    messages : list of str
        Warnings of the fit.
    priors : list of str
        The priors of a penalized fit and their deviance, as blme prints them above the title.
    """

    title: str
    header: list[str]
    criteria: pd.Series
    residuals: pd.Series
    random: pd.DataFrame
    nobs_line: str
    coefficients: pd.DataFrame
    correlation: pd.DataFrame | None
    sections: dict[str, Section] = field(default_factory=dict)
    signif: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    # (heading, block) after the fixed effects: a zero-inflation table, a dispersion line
    extras: list[tuple[str, Section]] = field(default_factory=list)
    priors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        sec = self.sections
        lines = [*self.priors, self.title, *self.header, ""]
        lines += [*_section_text(sec["criteria"]), ""]
        lines += ["Scaled residuals: ", *_section_text(sec["residuals"]), ""]
        lines += ["Random effects:", *_section_text(sec["random"]), self.nobs_line, ""]
        lines += ["Fixed effects:", *_section_text(sec["coefficients"]), *self.signif]
        for heading, block in self.extras:
            lines += ["", *([heading] if heading else []), *_section_text(block)]
        if "correlation" in sec:
            corr = sec["correlation"]
            lines.append("")
            lines += ["Correlation of Fixed Effects:", *corr.text()] if isinstance(corr, Block) else corr
        lines += self.messages
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        sec = self.sections

        def heading(text: str) -> str:
            return f"<div style='font-weight: bold; margin-top: 0.6em'>{html.escape(text)}</div>"

        parts = [
            *([_html_lines(self.priors)] if self.priors else []),
            f"<div style='font-weight: bold'>{html.escape(self.title)}</div>",
            _html_lines(self.header),
            _section_html(sec["criteria"]),
            heading("Scaled residuals"),
            _section_html(sec["residuals"]),
            heading("Random effects"),
            _section_html(sec["random"]),
            _html_lines(self.nobs_line.splitlines()),
            heading("Fixed effects"),
            _section_html(sec["coefficients"]),
        ]
        if self.signif:
            parts.append(_html_lines(self.signif[1:]))  # the legend without R's "---" rule
        for title, block in self.extras:
            parts += [heading(title.rstrip(":"))] if title else []
            parts.append(_section_html(block))
        if "correlation" in sec:
            corr = sec["correlation"]
            if isinstance(corr, Block):
                parts += [heading("Correlation of Fixed Effects"), corr.html()]
            else:
                parts.append(_html_lines(corr))
        if self.messages:
            parts.append(_html_lines(self.messages))
        return f"<div class='hmix-summary' style='{_HTML_FONT}'>" + "\n".join(parts) + "</div>"


def _random_block(m: MixedModel, show_variance: bool = True) -> tuple[pd.DataFrame, Block]:
    """lme4's VarCorr table; a structured term shows its rho in the first row, as glmmTMB does
    (``0.60 (ar1)``), and a term with one common variance one row."""
    vc = m.varcorr
    variances = vc[vc["var2"].isna()]
    var_s = rformat(variances["vcov"].to_numpy(), 4)
    sd_s = rformat(variances["sdcor"].to_numpy(), 4)
    terms = list(zip(m.design.terms, m.thetamap.split(m.theta)))
    ncorr = max((_corr_columns(t.cov, t.k) for t, _ in terms), default=0)
    cells, records = [], []
    vi = 0
    for t, th in terms:
        pr, pc = t.cov.sdcor_pattern
        shown = pr[pr == pc]
        rho = t.cov.rho(th)
        S = t.cov.covariance(th)
        sd = np.sqrt(np.diag(S))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = S / np.outer(sd, sd)
        full = rho is None and bool((pr != pc).any())
        for i, a in enumerate(shown):
            values: list[float] = [np.nan] * ncorr
            texts = [""] * ncorr
            if full:
                for c in range(min(a, ncorr)):
                    values[c], texts[c] = corr[a, c], f"{corr[a, c]:.2f}"
            elif rho is not None and i == 0:
                values[0], texts[0] = rho, f"{rho:.2f} ({t.cov.kind})"
            group = t.group if i == 0 else ""
            cells.append([group, t.names[a]] + ([var_s[vi]] if show_variance else []) + [sd_s[vi]] + texts)
            records.append(
                {
                    "Groups": group,
                    "Name": t.names[a],
                    "Variance": variances["vcov"].iloc[vi],
                    "Std.Dev.": variances["sdcor"].iloc[vi],
                    **{f"Corr{'' if c == 0 else c + 1}": values[c] for c in range(ncorr)},
                }
            )
            vi += 1
    if m.has_scale:
        cells.append(["Residual", ""] + ([var_s[vi]] if show_variance else []) + [sd_s[vi]] + [""] * ncorr)
        records.append({"Groups": "Residual", "Name": "", "Variance": m.sigma**2, "Std.Dev.": m.sigma})
    # corr columns are right-justified numbers within a left-justified layout, as lme4 prints
    # them; a structure's name follows its number
    for j in range(len(cells[0]) - ncorr, len(cells[0])):
        parts = [r[j].partition(" ") for r in cells]
        w = max(len(p[0]) for p in parts)
        for r, (num, _, label) in zip(cells, parts):
            r[j] = num.rjust(w) + (f" {label}" if label else "")
    cols = ["Groups", "Name"] + (["Variance"] if show_variance else []) + ["Std.Dev."]
    if ncorr:
        cols += ["Corr"] + [""] * (ncorr - 1)
    table = pd.DataFrame(records).set_index(["Groups", "Name"])
    if not show_variance:
        table = table.drop(columns="Variance")
    numbers = len(cols) - 2
    return table, Block(
        cols, cells, [""] * len(cells), left=[True] * len(cols), html_left=[True, True] + [False] * numbers
    )


def _corr_columns(cov: CovarianceStructure, k: int) -> int:
    """Correlation columns a term needs: k - 1 for a correlation matrix, one for a structure's
    rho, none for independent effects."""
    rows, cols = cov.sdcor_pattern
    if not (rows != cols).any():
        return 0
    return 1 if cov.has_rho else k - 1


def _nobs_line(m: MixedModel) -> str:
    groups = "; ".join(f"{g}, {n}" for g, n in m.ngroups.items())
    line = f"Number of obs: {m.nobs}, groups:  {groups}"
    if m.n_dropped:
        line += f"\n({m.n_dropped} observation{'s' if m.n_dropped > 1 else ''} deleted due to missingness)"
    return line


def _coef_block(table: pd.DataFrame, stat: str) -> tuple[pd.DataFrame, Block]:
    # R's printCoefmat formats the columns before the statistic (Estimate, Std. Error and, in
    # lmerTest's table, df) together, to one width
    cols = {"Estimate": "estimate", "Std. Error": "std_error"}
    if "df" in table:
        cols["df"] = "df"
    joint = rformat(np.concatenate([table[c].to_numpy() for c in cols.values()]), 4)
    p = len(table)
    tv = rformat(np.round(table["statistic"].to_numpy(), 3), 4)
    cells = [[joint[j * p + i] for j in range(len(cols))] + [tv[i].strip()] for i in range(p)]
    coefs = pd.DataFrame({**{name: table[c] for name, c in cols.items()}, stat: table["statistic"]})
    colnames = [*cols, stat]
    if "p_value" in table and p:
        pcol = f"Pr(>|{stat[0]}|)"
        coefs[pcol] = table["p_value"]
        pv = _format_pvalues(list(table["p_value"]))
        colnames.append(pcol)
        for row, text in zip(cells, pv):
            row.append(text)
        if (table["p_value"] < 0.1).any():  # R shows stars and their legend only then
            colnames.append("")
            for row, pval in zip(cells, table["p_value"]):
                row.append(_stars(pval))
    left = [name == "" for name in colnames]  # the stars
    return coefs, Block(colnames, cells, list(table.index), left=left, html_left=left)


def _corr_block(m: MixedModel) -> tuple[pd.DataFrame | None, Section | None]:
    p = m.design.p
    if p < 2:
        return None, None
    V = m.vcov.to_numpy()
    sd = np.sqrt(np.diag(V))
    C = V / np.outer(sd, sd)
    names = list(m.design.fixef_names)
    corr = pd.DataFrame(C, index=names, columns=names)
    if p > 12:
        return corr, [f"Correlation matrix not shown by default, as p = {p} > 12."]
    cells = [[f"{C[i, j]:.3f}" if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    # lme4's print.summary.merMod: rows abbreviate(rn, minlength = 11), columns minlength = 6,
    # each set lengthened until its names are unique
    rows, cols = abbreviate(names, 11), abbreviate(names, 6)
    return corr, Block(cols[:-1], cells, rows[1:], titles=names[:-1])


def _prior_lines(m: MixedModel) -> list[str]:
    """blme's lines above the title of a penalized fit: the priors and the prior deviance."""
    if m.priors is None:
        return []
    return [*m.priors.lines(), f"Prior dev  : {round(m.penalty, 4)}", ""]


def _header(m: MixedModel) -> list[str]:
    lines = [f"Formula: {m.formula}", f"   Data: {m.data_name}"]
    if m.design.weights is not None and m.design.formula.cbind is None:
        # a cbind response's trials are weights internally, not the user's: lme4 shows none
        lines.append("Weights: (prior weights given)")
    if m.design.offset is not None:
        lines.append(" Offset: (given)")
    return lines


def _criteria(m: MixedModel, reml: bool) -> tuple[pd.Series, Section]:
    if reml:
        crit = pd.Series({"REML criterion": m.objective})
        return crit, [f"REML criterion at convergence: {m.objective:.1f}"]
    crit = pd.Series(
        {"AIC": m.aic, "BIC": m.bic, "logLik": m.loglik, "deviance": m.objective, "df.resid": m.df_residual}
    )
    vals = [f"{v:.1f}" for v in crit.iloc[:4]] + [str(int(m.df_residual))]
    return crit, Block(list(crit.index), [vals])


def _messages(m: MixedModel) -> list[str]:
    if not m.optsum.warnings:
        return []
    return [
        f"optimizer ({m.optsum.method}) convergence code: {m.optsum.return_code} ({m.optsum.message})",
        *m.optsum.warnings,
    ]


def _sci(values: list[float], digits: int) -> list[str]:
    """R's scientific format of numbers together: one mantissa length, enough for all."""
    mant = max((len(f"{v:.{digits - 1}e}".split("e")[0].rstrip("0").rstrip(".")) for v in values), default=1)
    dec = max(0, mant - 2) if mant > 1 else 0
    return [f"{v:.{dec}e}" for v in values]


def _format_together(values: list[float], digits: int) -> list[str]:
    """R's ``format(x, digits=)``: fixed notation unless scientific is narrower."""
    fixed = [s.strip() for s in rformat(values, digits)]
    sci = _sci(values, digits)
    return fixed if max(map(len, fixed)) <= max(map(len, sci)) else sci


def _format_pvalues(pv: Sequence[float], digits: int = 3) -> list[str]:
    """p-values as R's ``format.pval`` shows them in summary tables (printCoefmat's digits = 3).

    Those from 1e-4 up are formatted together, the smaller ones together, and those below the
    machine epsilon as ``< 2e-16`` (``<2e-16`` when the others are at most 6 characters wide).
    """
    out = [""] * len(pv)
    tiny = [i for i, p in enumerate(pv) if p < np.finfo(float).eps]
    for group in (
        [i for i, p in enumerate(pv) if i not in tiny and p >= 1e-4],
        [i for i, p in enumerate(pv) if i not in tiny and p < 1e-4],
    ):
        if group:
            for i, text in zip(group, _format_together([float(pv[i]) for i in group], digits)):
                out[i] = text
    if tiny:
        width = max((len(s) for s in out if s), default=0)
        sep = "" if width <= 6 else " "
        for i in tiny:
            out[i] = "<" + sep + "2e-16"
    return out


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "." if p < 0.1 else ""


_SIGNIF = ["---", "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"]


def _summary(
    m: MixedModel,
    title: str,
    family_line: list[str],
    reml: bool,
    stat: str,
    table: pd.DataFrame | None = None,
) -> Summary:
    crit, crit_section = _criteria(m, reml)
    q = _zapsmall(m.scaled_residual_quantiles(), 5)
    resid = pd.Series(q, index=["Min", "1Q", "Median", "3Q", "Max"])
    random, random_block = _random_block(m)
    if table is None:
        table = m.coef_table()
    coefs, coef_block = _coef_block(table, stat)
    corr, corr_section = _corr_block(m)
    sections: dict[str, Section] = {
        "criteria": crit_section,
        "residuals": Block(list(resid.index), [[s.strip() for s in rformat(q, 4)]]),
        "random": random_block,
        "coefficients": coef_block,
    }
    if corr_section is not None:
        sections["correlation"] = corr_section
    return Summary(
        title=title,
        header=family_line + _header(m),
        criteria=crit,
        residuals=resid,
        random=random,
        nobs_line=_nobs_line(m),
        coefficients=coefs,
        correlation=corr,
        sections=sections,
        signif=_SIGNIF if "" in coef_block.colnames else [],
        messages=_messages(m),
        priors=_prior_lines(m),
    )


_DDF_NAMES = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger"}


def lmm_summary(m: LinearMixedModel, ddf: str | None = None) -> Summary:
    """The summary of a linear mixed model: lme4's layout, or lmerTest's with ``ddf``.

    With ``ddf`` ("satterthwaite" or "kenward-roger") the title names the method and the
    fixed-effects table gains ``df`` and ``Pr(>|t|)`` columns with significance stars, as
    lmerTest's ``summary(m, ddf=)`` prints them.
    """
    method = "REML" if m.REML else "maximum likelihood "
    if ddf is None:
        return _summary(m, f"Linear mixed model fit by {method} ['LinearMixedModel']", [], m.REML, "t value")
    table = m.coef_table(ddf=ddf)
    from .ddf import ddf_method

    name = _DDF_NAMES[ddf_method(ddf)]
    title = f"Linear mixed model fit by {method}. t-tests use {name}'s method ['LinearMixedModel']"
    return _summary(m, title, [], m.REML, "t value", table)


def _glmm_title(m: GeneralizedLinearMixedModel) -> list[str]:
    approx = "Laplace Approximation" if m.nAGQ <= 1 else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {m.nAGQ}"
    return [
        "Generalized linear mixed model fit by maximum likelihood "
        f"({approx}) ['GeneralizedLinearMixedModel']",
        f" Family: {m.family}",
    ]


def glmm_summary(m: GeneralizedLinearMixedModel) -> Summary:
    """The summary of a GLMM, in lme4's layout, with z values and p-values; a zero-inflated
    model's zero-inflation table and an estimated dispersion follow the fixed effects, as
    glmmTMB's summary shows them."""
    title, fam = _glmm_title(m)
    out = _summary(m, title, [fam], False, "z value")
    if m.zi is not None:
        _, block = _coef_block(m.zi_coef_table(), "z value")
        out.extras.append(("Zero-inflation model:", block))
    if m.dispersion_estimated:
        disp = m.family.dispersion
        what = f"Dispersion parameter for {m.family.name} family (theta): {disp:.3g}"
        if m.family.name == "gamma":
            what = f"Dispersion estimate for {m.family.name} family (sigma^2): {disp:.3g}"
        out.extras.append(("", [what]))
    return out


def glmm_brief(m: GeneralizedLinearMixedModel) -> str:
    """lme4's ``print(m)`` of a GLMM."""
    return _brief(m, _glmm_title(m), reml=False)


def lmm_brief(m: LinearMixedModel) -> str:
    """lme4's ``print(m)``: criteria, standard deviations and fixed effects."""
    method = "REML" if m.REML else "maximum likelihood "
    return _brief(m, [f"Linear mixed model fit by {method} ['LinearMixedModel']"], reml=m.REML)


def _brief(m: MixedModel, title: list[str], reml: bool) -> str:
    lines = [*_prior_lines(m), *title, *_header(m)]
    if reml:
        lines.append(f"REML criterion at convergence: {m.objective:.4f}")
    else:
        crit = {"AIC": m.aic, "BIC": m.bic, "logLik": m.loglik, "deviance": m.objective}
        lines += _named_vector(
            [*crit, "df.resid"], [f"{v:.4f}" for v in crit.values()] + [str(m.df_residual)]
        )
    _, random_block = _random_block(m, show_variance=False)
    lines += ["Random effects:", *random_block.text(), _nobs_line(m), "Fixed Effects:"]
    fe = m.fixef
    vals = [s.strip() for s in rformat(fe.to_numpy(), 4)]
    lines += _named_vector(list(fe.index), vals)
    lines += _messages(m)
    return "\n".join(lines)
