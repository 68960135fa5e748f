"""What lme4 and statsmodels users reach for: ``coef``, ``r2``, statsmodels' names, and prediction
standard errors and intervals.

References: tests/reference/api_reference.json (make_api_reference.R): lme4 1.1-31's ``coef(m)``;
performance 0.10.2's ``r2_nakagawa`` (insight 0.19.0) and the same R^2 written out in R
(``by_hand``); lme4_ddf.json (lmerTest's Satterthwaite df, SEs and p-values). Prediction SEs are
checked against a dense computation of the same quantities from Z, Lambda and the marginal
covariance V.

Tolerances: coef within 1e-4 of each column's largest value for LMMs (the conditional modes of
hmix and lme4 differ by less than 1e-4 of their SD), 2e-3 for the GLMM (the estimates differ in
the fourth digit); R^2 within 1e-5 relative for LMMs (their variances within 1e-4: the variance
components of the two fits differ by up to 5e-5) and 2e-3 for GLMMs, 3e-3 for the null-model
Poisson mean (lme4's null fit stops 0.0045 short of hmix's in log-likelihood); p-values through
log(p) within 1e-3 relative, as tests/test_ddf.py; dense computations within 1e-8 relative.
"""

from __future__ import annotations

import re
import warnings
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla
from conftest import load_data, reference
from scipy import stats

import hmix

REF = "api_reference.json"


def _r_name(name: str) -> str:
    return re.sub(r"\[T\.([^\]]+)\]", r"\1", name)


@cache
def _fit(section: str, model_id: str) -> Any:
    e = reference(REF)[section][model_id]
    data = load_data(e["data"], tuple(e["factors"]))
    family = e.get("family") or "gaussian"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.HmixWarning)
        if family == "gaussian":
            return hmix.lmer(e["r_formula"], data, REML=e["REML"])
        return hmix.glmer(e["r_formula"], data, family=family, link=e.get("link"))


# ----- coef --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", list(reference(REF)["coef"]))
def test_coef_matches_lme4(model_id: str) -> None:
    e = reference(REF)["coef"][model_id]
    m = _fit("coef", model_id)
    mine = m.coef()
    assert list(mine) == list(e["groups"])
    for group, ref in e["groups"].items():
        frame = mine[group]
        assert [_r_name(c) for c in frame.columns] == ref["columns"]
        assert [str(v) for v in frame.index] == ref["levels"]
        rtol = 1e-4 if e.get("family") is None else 2e-3
        R = np.array(ref["values"])
        worst = np.abs(frame.to_numpy() - R).max(axis=0) / np.abs(R).max(axis=0)
        assert (worst <= rtol).all(), f"{group}: largest differences {worst} of each column's scale"


def test_coef_is_fixef_plus_ranef() -> None:
    m = _fit("coef", "sleepstudy")
    c, b = m.coef()["Subject"], m.ranef()["Subject"]
    np.testing.assert_allclose(c.to_numpy(), m.fixef.to_numpy() + b.to_numpy(), rtol=1e-14)


# ----- R^2 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", list(reference(REF)["r2"]))
def test_r2_matches_the_definition_written_out_in_r(model_id: str) -> None:
    e = reference(REF)["r2"][model_id]
    r2 = _fit("r2", model_id).r2()
    gaussian = e["family"] == "gaussian"
    hand = e["by_hand"]
    for key in ("marginal", "conditional", "var_fixed", "var_random", "var_residual"):
        rtol = 2e-3 if not gaussian else 1e-5 if key in ("marginal", "conditional") else 1e-4
        np.testing.assert_allclose(r2[key], hand[key], rtol=rtol, atol=1e-12, err_msg=key)


@pytest.mark.parametrize(
    "model_id",
    # (performance 0.10.2 drops the slope of (Days || Subject) from var_random: see the R script)
    [k for k in reference(REF)["r2"] if k != "sleepstudy_uncorr"],
)
def test_r2_matches_performance(model_id: str) -> None:
    e = reference(REF)["r2"][model_id]
    m = _fit("r2", model_id)
    poisson = e["family"] == "poisson"
    r2 = m.r2(poisson_mean="null" if poisson else "fitted")
    rtol = 1e-5 if e["family"] == "gaussian" else 3e-3 if poisson else 2e-3
    np.testing.assert_allclose(r2["marginal"], e["marginal"], rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(r2["conditional"], e["conditional"], rtol=rtol)


def test_r2_refuses_an_unknown_poisson_mean() -> None:
    with pytest.raises(hmix.HmixError, match="poisson_mean must be one of"):
        _fit("r2", "sleepstudy").r2(poisson_mean="marginal")


# ----- statsmodels' names ------------------------------------------------------------------------
def test_statsmodels_names_of_an_lmm_follow_lmertest() -> None:
    """pvalues and conf_int use Satterthwaite's df: lmerTest's p and t quantiles (lme4_ddf.json)."""
    ref = reference("lme4_ddf.json")["sleepstudy_reml"]["satterthwaite"]
    m = _fit("coef", "sleepstudy")
    pd.testing.assert_series_equal(m.params, m.fixef)
    pd.testing.assert_series_equal(m.bse, m.std_errors)
    np.testing.assert_allclose(m.tvalues, np.asarray(ref["t"]), rtol=1e-3)
    np.testing.assert_allclose(np.log(m.pvalues), np.log(ref["p"]), rtol=1e-3)
    ci = m.conf_int(0.1)
    assert list(ci.columns) == [0, 1]
    half = stats.t.ppf(0.95, np.asarray(ref["df"])) * np.asarray(ref["se"])
    np.testing.assert_allclose(ci[1] - ci[0], 2 * half, rtol=1e-3)
    np.testing.assert_allclose((ci[0] + ci[1]) / 2, m.fixef, rtol=1e-12)


def test_statsmodels_names_of_a_glmm_are_z_tests() -> None:
    g = _fit("coef", "cbpp")
    z = g.fixef / g.std_errors
    np.testing.assert_allclose(g.tvalues, z, rtol=1e-14)
    np.testing.assert_allclose(g.pvalues, 2 * stats.norm.sf(np.abs(z)), rtol=1e-12)
    ci = g.conf_int()
    np.testing.assert_allclose(ci[0], g.fixef - stats.norm.ppf(0.975) * g.std_errors, rtol=1e-12)


@pytest.mark.parametrize(("section", "model_id"), [("coef", "sleepstudy"), ("coef", "cbpp")])
def test_fittedvalues_and_resid_are_response_scale(section: str, model_id: str) -> None:
    m = _fit(section, model_id)
    pd.testing.assert_series_equal(m.fittedvalues, m.fitted)
    np.testing.assert_allclose(m.resid, m.design.y - m.fitted.to_numpy(), rtol=1e-14, atol=1e-14)


def test_conf_int_refuses_a_bad_alpha() -> None:
    with pytest.raises(hmix.HmixError, match="alpha must be between 0 and 1"):
        _fit("coef", "sleepstudy").conf_int(1.5)


# ----- prediction standard errors and intervals --------------------------------------------------
def _dense_parts(m: Any) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """vcov(beta) = sigma^2 (X'V^-1 X)^-1, V = I + Z Lambda Lambda' Z', and the conditional
    covariances sigma^2 Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda' per level, densely."""
    d = m.design
    (t,) = d.terms
    Z = t.zmatrix.toarray()
    (T,) = m.thetamap.tmats(m.theta)
    Lam = np.kron(np.eye(t.nlevels), T)
    V = np.eye(d.n) + Z @ Lam @ Lam.T @ Z.T
    vcov = m.sigma**2 * np.linalg.inv(d.X.T @ np.linalg.solve(V, d.X))
    C = m.sigma**2 * Lam @ np.linalg.inv(Lam.T @ Z.T @ Z @ Lam + np.eye(Z.shape[1])) @ Lam.T
    blocks = [C[j * t.k : (j + 1) * t.k, j * t.k : (j + 1) * t.k] for j in range(t.nlevels)]
    return vcov, blocks, m.sigma**2 * (T @ T.T)


def test_lmm_prediction_se_matches_a_dense_computation() -> None:
    m = _fit("coef", "sleepstudy")
    vcov, cond, Sigma = _dense_parts(m)
    new = pd.DataFrame({"Days": [0.0, 4.5, 9.0], "Subject": ["308", "NEW", "335"]})
    before = new.copy()
    x = np.column_stack([np.ones(3), new.Days])
    z = x  # (Days | Subject): the same columns
    fixed = np.einsum("ia,ab,ib->i", x, vcov, x)
    levels = list(m.design.terms[0].levels)
    cvar = np.array([z[0] @ cond[levels.index("308")] @ z[0], 0.0, z[2] @ cond[levels.index("335")] @ z[2]])
    pop = np.array([0.0, z[1] @ Sigma @ z[1], 0.0])
    sig2 = m.sigma**2

    conf = m.predict(new, new_levels="population", interval="confidence", level=0.9)
    np.testing.assert_allclose(conf["se"] ** 2, fixed + cvar, rtol=1e-8)
    np.testing.assert_allclose(conf["upper"] - conf["fit"], stats.norm.ppf(0.95) * conf["se"], rtol=1e-12)
    pred = m.predict(new, new_levels="population", interval="prediction")
    np.testing.assert_allclose(pred["se"] ** 2, fixed + cvar + pop + sig2, rtol=1e-8)
    np.testing.assert_allclose(pred["fit"], m.predict(new, new_levels="population"), rtol=1e-14)
    marginal = m.predict(new, random=False, interval="prediction")
    np.testing.assert_allclose(
        marginal["se"] ** 2, fixed + np.einsum("ia,ab,ib->i", z, Sigma, z) + sig2, rtol=1e-8
    )
    se_only = m.predict(new, random=False, se_fit=True)
    assert list(se_only.columns) == ["fit", "se"]
    np.testing.assert_allclose(se_only["se"] ** 2, fixed, rtol=1e-8)
    pd.testing.assert_frame_equal(new, before)


def test_fitted_rows_prediction_uses_the_prior_weights() -> None:
    data = load_data("sleepstudy_extra", ("Subject",))
    m = hmix.lmer("Reaction ~ Days + (1 | Subject)", data, weights="w")
    pred = m.predict(interval="prediction")
    conf = m.predict(interval="confidence")
    np.testing.assert_allclose(pred["se"] ** 2 - conf["se"] ** 2, m.sigma**2 / data["w"], rtol=1e-10)


def test_glmm_intervals_are_built_on_the_link_scale() -> None:
    g = _fit("coef", "cbpp")
    new = pd.DataFrame({"period": ["1", "4"], "herd": ["3", "NEW"]})
    link = g.predict(new, new_levels="population", interval="prediction", type="link")
    resp = g.predict(new, new_levels="population", interval="prediction")
    np.testing.assert_allclose(resp["lower"], g.family.linkinv(link["lower"].to_numpy()), rtol=1e-14)
    np.testing.assert_allclose(resp["upper"], g.family.linkinv(link["upper"].to_numpy()), rtol=1e-14)
    np.testing.assert_allclose(resp["se"], g.family.mu_eta(link["fit"].to_numpy()) * link["se"], rtol=1e-14)
    # herd 3 known: vcov + its conditional variance; the new herd: vcov + the herd variance
    x = g.design.fixed_matrix(new)
    fixed = np.einsum("ia,ab,ib->i", x, g.vcov.to_numpy(), x)
    table = g.ranef_table().set_index("level")
    tau2 = float(g.varcorr["vcov"].iloc[0])
    expected = fixed + np.array([table.loc["3", "condsd"] ** 2, tau2])
    np.testing.assert_allclose(link["se"] ** 2, expected, rtol=1e-8)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"interval": "tolerance"}, "interval must be None"),
        ({"interval": "confidence", "level": 95}, "level"),
    ],
)
def test_bad_interval_requests_name_the_fix(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(hmix.DataError, match=match):
        _fit("coef", "sleepstudy").predict(**kw)


def test_missing_rows_get_nan_intervals() -> None:
    m = _fit("coef", "sleepstudy")
    new = pd.DataFrame({"Days": [1.0, np.nan], "Subject": ["308", "308"]})
    out = m.predict(new, interval="prediction")
    assert np.isfinite(out.iloc[0]).all() and out.iloc[1].isna().all()


def test_dense_helper_agrees_with_cholesky_route() -> None:
    """The dense vcov of the helper is lme4's vcov (a check on the check)."""
    m = _fit("coef", "sleepstudy")
    vcov, _, _ = _dense_parts(m)
    np.testing.assert_allclose(vcov, m.vcov.to_numpy(), rtol=1e-8)
    assert sla.issymmetric(vcov, rtol=1e-10)
