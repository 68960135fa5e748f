"""Text and HTML rendering of fitted models in lme4's layout. Nothing here computes estimates."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .results import GeneralizedLinearMixedModel, LinearMixedModel, MixedModel

__all__ = ["Summary", "lmm_summary", "lmm_brief", "glmm_summary", "glmm_brief", "rformat", "abbreviate"]


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


def abbreviate(name: str, minlength: int = 6) -> str:
    """R's ``abbreviate()``: drop lower-case vowels, then lower-case letters, from the right."""
    if len(name) <= minlength:
        return name
    chars = list(name)
    for pattern in ("[aeiou]", "[a-z]"):
        i = len(chars) - 1
        while len(chars) > minlength and i > 0:
            if re.fullmatch(pattern, chars[i]):
                del chars[i]
            i -= 1
    return "".join(chars[:minlength]) if len(chars) > minlength else "".join(chars)


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
    rownames: Sequence[str], colnames: Sequence[str], cells: Sequence[Sequence[str]], left: bool = False
) -> list[str]:
    """R's print of a character matrix (``left``: left-justified cells, as print.VarCorr)."""
    rw = max((len(r) for r in rownames), default=0)
    widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(colnames)]
    just = (lambda s, w: s.ljust(w)) if left else (lambda s, w: s.rjust(w))
    lines = [" " * rw + " " + " ".join(just(c, w) for c, w in zip(colnames, widths))]
    for r, row in zip(rownames, cells):
        lines.append(r.ljust(rw) + " " + " ".join(just(s, w) for s, w in zip(row, widths)))
    return [ln.rstrip() for ln in lines]


@dataclass
class Summary:
    """A fitted model's summary: prints as lme4's text, renders as HTML in Jupyter.

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
    messages : list of str
        Warnings of the fit.
    """

    title: str
    header: list[str]
    criteria: pd.Series
    residuals: pd.Series
    random: pd.DataFrame
    nobs_line: str
    coefficients: pd.DataFrame
    correlation: pd.DataFrame | None
    text_blocks: dict[str, list[str]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        b = self.text_blocks
        lines = [self.title, *self.header, ""]
        lines += b["criteria"] + [""]
        lines += ["Scaled residuals: ", *b["residuals"], ""]
        lines += ["Random effects:", *b["random"], self.nobs_line, ""]
        lines += ["Fixed effects:", *b["coefficients"]]
        if "correlation" in b:
            lines += ["", *b["correlation"]]
        if self.messages:
            lines += [*self.messages]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        def pre(lines: list[str]) -> str:
            return "<pre style='margin:0'>" + html.escape("\n".join(lines)) + "</pre>"

        def table(df: pd.DataFrame) -> str:
            return df.to_html(na_rep="", border=0)

        parts = [f"<div class='hmix-summary'><b>{html.escape(self.title)}</b>", pre(self.header)]
        parts.append(pre(self.text_blocks["criteria"]))
        parts.append("<p><b>Scaled residuals</b></p>" + table(self.residuals.to_frame().T))
        parts.append("<p><b>Random effects</b></p>" + table(self.random))
        parts.append(f"<p>{html.escape(self.nobs_line)}</p>")
        parts.append("<p><b>Fixed effects</b></p>" + table(self.coefficients))
        if self.correlation is not None:
            parts.append("<p><b>Correlation of fixed effects</b></p>" + table(self.correlation.round(3)))
        if self.messages:
            parts.append(pre(self.messages))
        return "\n".join(parts) + "</div>"


def _random_block(m: MixedModel, show_variance: bool = True) -> tuple[pd.DataFrame, list[str]]:
    vc = m.varcorr
    variances = vc[vc["var2"].isna()]
    var_s = rformat(variances["vcov"].to_numpy(), 4)
    sd_s = rformat(variances["sdcor"].to_numpy(), 4)
    rows, cells = [], []
    maxk = max((t.k for t in m.design.terms), default=1)
    vi = 0
    records = []
    start = 0
    for t in m.design.terms:
        th = m.theta[start : start + t.ntheta]
        start += t.ntheta
        T = t.tmat(th)
        S = T @ T.T
        sd = np.sqrt(np.diag(S))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = S / np.outer(sd, sd)
        for a in range(t.k):
            corr_cells = [f"{corr[a, c]:.2f}" if a > c else "" for c in range(maxk - 1)] if maxk > 1 else []
            group = t.group if a == 0 else ""
            row = [group, t.names[a]] + ([var_s[vi]] if show_variance else []) + [sd_s[vi]] + corr_cells
            records.append(
                {
                    "Groups": group,
                    "Name": t.names[a],
                    "Variance": variances["vcov"].iloc[vi],
                    "Std.Dev.": variances["sdcor"].iloc[vi],
                    **(
                        {
                            f"Corr{'' if c == 0 else c + 1}": (corr[a, c] if a > c else np.nan)
                            for c in range(maxk - 1)
                        }
                    ),
                }
            )
            cells.append(row)
            rows.append("")
            vi += 1
    if m._has_scale:
        cells.append(
            ["Residual", ""]
            + ([var_s[vi]] if show_variance else [])
            + [sd_s[vi]]
            + [""] * (maxk - 1 if maxk > 1 else 0)
        )
        records.append({"Groups": "Residual", "Name": "", "Variance": m.sigma**2, "Std.Dev.": m.sigma})
        rows.append("")
    # corr columns are right-justified numbers within a left-justified layout, as lme4 prints them
    if maxk > 1:
        ncorr = maxk - 1
        for j in range(ncorr):
            col = [r[-ncorr + j] for r in cells]
            w = max(len(c) for c in col)
            for r, c in zip(cells, col):
                r[-ncorr + j] = c.rjust(w)
    cols = ["Groups", "Name"] + (["Variance"] if show_variance else []) + ["Std.Dev."]
    if maxk > 1:
        cols += ["Corr"] + [""] * (maxk - 2)
    table = pd.DataFrame(records).set_index(["Groups", "Name"])
    if not show_variance:
        table = table.drop(columns="Variance")
    return table, _matrix(rows, cols, cells, left=True)


def _nobs_line(m: MixedModel) -> str:
    groups = "; ".join(f"{g}, {n}" for g, n in m.ngroups.items())
    line = f"Number of obs: {m.nobs}, groups:  {groups}"
    if m.n_dropped:
        line += f"\n({m.n_dropped} observation{'s' if m.n_dropped > 1 else ''} deleted due to missingness)"
    return line


def _coef_block(m: MixedModel, table: pd.DataFrame, stat: str) -> tuple[pd.DataFrame, list[str]]:
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
    return coefs, _matrix(list(table.index), [*cols, stat], cells)


def _corr_block(m: MixedModel) -> tuple[pd.DataFrame | None, list[str]]:
    p = m.design.p
    if p < 2:
        return None, []
    V = m.vcov.to_numpy()
    sd = np.sqrt(np.diag(V))
    C = V / np.outer(sd, sd)
    names = list(m.design.fixef_names)
    corr = pd.DataFrame(C, index=names, columns=names)
    if p > 12:
        return corr, [f"Correlation matrix not shown by default, as p = {p} > 12."]
    cells = [[f"{C[i, j]:.3f}" if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    return corr, [
        "Correlation of Fixed Effects:",
        *_matrix(names[1:], [abbreviate(n) for n in names[:-1]], cells),
    ]


def _header(m: MixedModel) -> list[str]:
    lines = [f"Formula: {m.formula}", f"   Data: {m.data_name}"]
    if m.design.weights is not None and m.design.formula.cbind is None:
        # a cbind response's trials are weights internally, not the user's: lme4 shows none
        lines.append("Weights: (prior weights given)")
    if m.design.offset is not None:
        lines.append(" Offset: (given)")
    return lines


def _criteria(m: MixedModel, reml: bool) -> tuple[pd.Series, list[str]]:
    if reml:
        crit = pd.Series({"REML criterion": m.objective})
        return crit, [f"REML criterion at convergence: {m.objective:.1f}"]
    crit = pd.Series(
        {"AIC": m.aic, "BIC": m.bic, "logLik": m.loglik, "deviance": m.objective, "df.resid": m.df_residual}
    )
    vals = [f"{v:.1f}" for v in crit.iloc[:4]] + [str(int(m.df_residual))]
    return crit, _named_vector(list(crit.index), vals)


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
    crit, crit_lines = _criteria(m, reml)
    scaled = m.residuals("pearson").to_numpy() / m.sigma
    q = _zapsmall(np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0]), 5)
    resid = pd.Series(q, index=["Min", "1Q", "Median", "3Q", "Max"])
    random, random_lines = _random_block(m)
    if table is None:
        table = m.coef_table()
    coefs, coef_lines = _coef_block(m, table, stat)
    if "p_value" in table and len(table):
        pcol = f"Pr(>|{stat[0]}|)"
        coefs[pcol] = table["p_value"]
        pv = _format_pvalues(list(table["p_value"]))
        w = max(len(pcol), *(len(s) for s in pv))
        coef_lines[0] = coef_lines[0] + " " + pcol.rjust(w)
        stars = bool((table["p_value"] < 0.1).any())  # R shows stars and their legend only then
        for i, p in enumerate(table["p_value"]):
            coef_lines[i + 1] = (
                coef_lines[i + 1] + " " + pv[i].rjust(w) + " " + (_stars(p) if stars else "")
            ).rstrip()
        if stars:
            coef_lines += _SIGNIF
    corr, corr_lines = _corr_block(m)
    blocks = {
        "criteria": crit_lines,
        "residuals": _named_vector(list(resid.index), [s.strip() for s in rformat(q, 4)]),
        "random": random_lines,
        "coefficients": coef_lines,
    }
    if corr_lines:
        blocks["correlation"] = corr_lines
    return Summary(
        title=title,
        header=family_line + _header(m),
        criteria=crit,
        residuals=resid,
        random=random,
        nobs_line=_nobs_line(m),
        coefficients=coefs,
        correlation=corr,
        text_blocks=blocks,
        messages=_messages(m),
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
    from .ddf import _method

    name = _DDF_NAMES[_method(ddf)]
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
    """The summary of a GLMM, in lme4's layout, with z values and p-values."""
    title, fam = _glmm_title(m)
    return _summary(m, title, [fam], False, "z value")


def glmm_brief(m: GeneralizedLinearMixedModel) -> str:
    """lme4's ``print(m)`` of a GLMM."""
    return _brief(m, _glmm_title(m), reml=False)


def lmm_brief(m: LinearMixedModel) -> str:
    """lme4's ``print(m)``: criteria, standard deviations and fixed effects."""
    method = "REML" if m.REML else "maximum likelihood "
    return _brief(m, [f"Linear mixed model fit by {method} ['LinearMixedModel']"], reml=m.REML)


def _brief(m: MixedModel, title: list[str], reml: bool) -> str:
    lines = [*title, *_header(m)]
    if reml:
        lines.append(f"REML criterion at convergence: {m.objective:.4f}")
    else:
        crit = {"AIC": m.aic, "BIC": m.bic, "logLik": m.loglik, "deviance": m.objective}
        lines += _named_vector(
            [*crit, "df.resid"], [f"{v:.4f}" for v in crit.values()] + [str(m.df_residual)]
        )
    _, random_lines = _random_block(m, show_variance=False)
    lines += ["Random effects:", *random_lines, _nobs_line(m), "Fixed Effects:"]
    fe = m.fixef
    vals = [s.strip() for s in rformat(fe.to_numpy(), 4)]
    lines += _named_vector(list(fe.index), vals)
    lines += _messages(m)
    return "\n".join(lines)
