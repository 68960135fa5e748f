"""Small-sample t tests (coef_table(ddf=), summary(ddf=)) against lmerTest 3.1.3 and pbkrtest 0.5.2.

References: ``satterthwaite_df``/``satterthwaite_p`` of every Gaussian REML model in
lme4_reference.json and lme4_extra.json (make_reference.R), lme4_inference.json's
``kenward_roger_sleepstudy``, and lme4_ddf.json (make_ddf_reference.R: Satterthwaite for ML fits
too, Kenward-Roger df, SEs and the whole adjusted covariance for crossed, nested, unbalanced and
factor-slope models).

Tolerances: df, SEs and t statistics within 1e-3 relative; the adjusted covariance within 1e-3
of its largest entry; p-values through log(p) within 1e-3 relative (p itself follows t closely:
at t = 37 a 1e-5 relative change in the SE moves p by 1e-3 relative). What remains between hmix
and lmerTest is the small difference between the two optimizers' theta (at lme4's theta the
Satterthwaite df agree to 3e-8).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import LME4_REFERENCES, REFERENCE, fit_spec, reference, spec, vec

import hmix
from hmix import ddf as hddf
from hmix.summary import _format_pvalues


@cache
def ddf_reference() -> dict[str, Any]:
    """tests/reference/lme4_ddf.json without its versions entry."""
    data = json.loads((REFERENCE / "lme4_ddf.json").read_text())
    return {k: v for k, v in data.items() if k != "versions"}


def _satterthwaite_cases() -> list[tuple[str, str]]:
    out = []
    for sf, rf in LME4_REFERENCES.items():
        ref = reference(rf)
        for mid, s in spec(sf).items():
            if s.get("family", "gaussian") == "gaussian" and "satterthwaite_df" in ref.get(mid, {}):
                out.append((sf, mid))
    return out


def _assert_log_p(p: np.ndarray, p_ref: np.ndarray) -> None:
    np.testing.assert_allclose(np.log(p), np.log(p_ref), rtol=1e-3)


@pytest.mark.parametrize(("sf", "mid"), _satterthwaite_cases())
def test_satterthwaite_matches_lmertest(sf: str, mid: str) -> None:
    m, r = fit_spec(sf, mid), reference(LME4_REFERENCES[sf])[mid]
    table = m.coef_table(ddf="satterthwaite")
    np.testing.assert_allclose(table["df"].to_numpy(), vec(r["satterthwaite_df"]), rtol=1e-3)
    _assert_log_p(table["p_value"].to_numpy(), vec(r["satterthwaite_p"]))


@pytest.mark.parametrize("mid", sorted(ddf_reference()))
def test_satterthwaite_ml_and_reml_against_ddf_reference(mid: str) -> None:
    r = ddf_reference()[mid]
    m = fit_spec(r["spec"], mid)
    assert m.REML == r["REML"]
    table = m.coef_table(ddf="satterthwaite")
    ref = r["satterthwaite"]
    np.testing.assert_allclose(table["df"].to_numpy(), vec(ref["df"]), rtol=1e-3)
    np.testing.assert_allclose(table["std_error"].to_numpy(), vec(ref["se"]), rtol=1e-3)
    np.testing.assert_allclose(table["statistic"].to_numpy(), vec(ref["t"]), rtol=1e-3)
    _assert_log_p(table["p_value"].to_numpy(), vec(ref["p"]))


def test_kenward_roger_sleepstudy() -> None:
    m = fit_spec("public_spec.json", "sleepstudy_reml")
    r = reference("lme4_inference.json")["kenward_roger_sleepstudy"]
    table = m.coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(table["df"].to_numpy(), vec(r["df"]), rtol=1e-3)
    np.testing.assert_allclose(table["std_error"].to_numpy(), vec(r["se"]), rtol=1e-3)
    _assert_log_p(table["p_value"].to_numpy(), vec(r["p"]))


KR_CASES = sorted(mid for mid, r in ddf_reference().items() if "kenward_roger" in r)


@pytest.mark.parametrize("mid", KR_CASES)
def test_kenward_roger_against_pbkrtest(mid: str) -> None:
    r = ddf_reference()[mid]
    m = fit_spec(r["spec"], mid)
    ref = r["kenward_roger"]
    table = m.coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(table["df"].to_numpy(), vec(ref["df"]), rtol=1e-3)
    np.testing.assert_allclose(table["std_error"].to_numpy(), vec(ref["se"]), rtol=1e-3)
    np.testing.assert_allclose(table["statistic"].to_numpy(), vec(ref["t"]), rtol=1e-3)
    _assert_log_p(table["p_value"].to_numpy(), vec(ref["p"]))
    adj = np.atleast_2d(np.asarray(ref["vcov_adj"], dtype=float))
    kr = hddf.kenward_roger(m)
    np.testing.assert_allclose(kr.vcov_adj, adj, rtol=0, atol=1e-3 * np.abs(adj).max())
    # Phi from the Woodbury identity is the engine's vcov
    np.testing.assert_allclose(kr.vcov, m.vcov.to_numpy(), rtol=1e-8, atol=1e-10 * np.abs(kr.vcov).max())


def test_kenward_roger_standard_errors_are_the_adjusted_ones() -> None:
    # (phase | Subject) on unbalanced phases: pbkrtest's adjustment raises the SEs by about 3%
    r = ddf_reference()["sleep_factor_slope_int"]
    m = fit_spec(r["spec"], "sleep_factor_slope_int")
    se_kr = m.coef_table(ddf="kenward-roger")["std_error"].to_numpy()
    se = m.std_errors.to_numpy()
    assert np.all(se_kr / se - 1 > 0.02)
    np.testing.assert_allclose(se_kr, vec(r["kenward_roger"]["se"]), rtol=1e-3)


def test_coef_table_columns() -> None:
    m = fit_spec("public_spec.json", "sleepstudy_reml")
    assert list(m.coef_table().columns) == ["estimate", "std_error", "statistic"]
    for ddf in ("satterthwaite", "kenward-roger", "Kenward-Roger", "Satterthwaite"):
        table = m.coef_table(ddf=ddf)
        assert list(table.columns) == ["estimate", "std_error", "statistic", "df", "p_value"]
        assert list(table.index) == ["(Intercept)", "Days"]
        pd.testing.assert_series_equal(table["estimate"], m.fixef, check_names=False)
    with pytest.raises(ValueError, match="ddf must be"):
        m.coef_table(ddf="containment")


def test_contrasts() -> None:
    m = fit_spec("public_spec.json", "sleepstudy_reml")
    np.testing.assert_allclose(hddf.satterthwaite_df(m, np.eye(2)), hddf.satterthwaite_df(m))
    kr = hddf.kenward_roger(m)
    np.testing.assert_allclose(kr.df(np.eye(2)), kr.df())
    with pytest.raises(ValueError, match="2 coefficients"):
        hddf.satterthwaite_df(m, [1.0, 0.0, 0.0])


def test_kenward_roger_needs_reml() -> None:
    m = fit_spec("public_spec.json", "sleepstudy_ml")
    with pytest.raises(hmix.HmixError, match="REML"):
        m.coef_table(ddf="kenward-roger")


def test_glmm_refuses_ddf() -> None:
    m = fit_spec("public_spec.json", "cbpp_laplace")
    assert "p_value" in m.coef_table()
    with pytest.raises(hmix.HmixError, match="z tests"):
        m.coef_table(ddf="satterthwaite")
    with pytest.raises(hmix.HmixError, match="z tests"):
        hddf.kenward_roger(m)


# lmerTest 3.1.3's summary(m) of sleepstudy (its fixed-effects block)
LMERTEST_FIXED = """\
            Estimate Std. Error      df t value Pr(>|t|)
(Intercept)  251.405      6.825  17.000  36.838  < 2e-16 ***
Days          10.467      1.546  17.000   6.771 3.26e-06 ***
---
Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"""


@pytest.mark.parametrize(
    ("ddf", "name"), [("satterthwaite", "Satterthwaite"), ("kenward-roger", "Kenward-Roger")]
)
def test_summary_in_lmertest_layout(ddf: str, name: str) -> None:
    m = fit_spec("public_spec.json", "sleepstudy_reml")
    s = m.summary(ddf=ddf)
    lines = [ln.rstrip() for ln in str(s).splitlines()]
    assert lines[0] == f"Linear mixed model fit by REML. t-tests use {name}'s method ['LinearMixedModel']"
    start = lines.index("Fixed effects:") + 1
    assert lines[start : start + 5] == LMERTEST_FIXED.splitlines()
    assert "Correlation of Fixed Effects:" in lines
    assert list(s.coefficients.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    assert "Pr(&gt;|t|)" in s._repr_html_()
    plain = str(m.summary())
    assert "Pr(>|t|)" not in plain and "t-tests use" not in plain


def test_summary_ml_title() -> None:
    m = fit_spec("public_spec.json", "sleepstudy_ml")
    first = str(m.summary(ddf="satterthwaite")).splitlines()[0]
    # lme4's method name for ML ends in a space, so lmerTest prints "likelihood ."
    assert first.startswith("Linear mixed model fit by maximum likelihood . t-tests use Satterthwaite's")


# lmerTest 3.1.3: summary(lmer(Reaction ~ Days * phase + (1 | Subject), sleepstudy_extra),
# ddf = "Kenward-Roger"), fixed-effects rows after the term names
LMERTEST_KR_INTERACTION = [
    "255.132 10.428 29.627 24.466 < 2e-16 ***",
    "8.249 2.317 159.000 3.561 0.000488 ***",
    "-6.128 17.492 159.000 -0.350 0.726546",
    "2.663 3.276 159.000 0.813 0.417651",
]


def test_summary_rows_with_several_coefficients() -> None:
    m = fit_spec("extra_spec.json", "sleep_interaction")
    lines = str(m.summary(ddf="kenward-roger")).splitlines()
    start = lines.index("Fixed effects:") + 2
    rows = [" ".join(ln.split()[1:]) for ln in lines[start : start + 4]]
    assert rows == LMERTEST_KR_INTERACTION


@pytest.mark.parametrize(
    ("pv", "expected"),  # R 4's format.pval(pv, digits = 3), as printCoefmat calls it
    [
        ([1e-20, 0.000488, 0.726546, 0.417651], ["< 2e-16", "0.000488", "0.726546", "0.417651"]),
        ([0.0123, 0.726546, 0.417651], ["0.0123", "0.7265", "0.4177"]),
        ([3.26e-6, 1.2e-5, 0.5], ["3.26e-06", "1.20e-05", "0.5"]),
        ([1e-20, 0.0123], ["<2e-16", "0.0123"]),
        ([1e-4], ["1e-04"]),
        ([1e-20], ["<2e-16"]),
    ],
)
def test_p_values_formatted_as_r(pv: list[float], expected: list[str]) -> None:
    assert _format_pvalues(pv) == expected


def test_constant_prior_weights_change_nothing() -> None:
    # weights w = 2 everywhere only rescale sigma; a V that left the weights out (as pbkrtest's
    # does) would change the Kenward-Roger figures here. Tolerance 1e-3 relative: the two fits'
    # theta differ within the optimizer's tolerance (df by 2e-5)
    data = hmix.datasets.load("sleepstudy")
    data["w"] = 2.0
    formula = "Reaction ~ Days + (Days | Subject)"
    m, mw = hmix.lmer(formula, data), hmix.lmer(formula, data, weights="w")
    for ddf in ("satterthwaite", "kenward-roger"):
        a, b = m.coef_table(ddf=ddf), mw.coef_table(ddf=ddf)
        np.testing.assert_allclose(b["std_error"], a["std_error"], rtol=1e-3)
        np.testing.assert_allclose(b["df"], a["df"], rtol=1e-3)
