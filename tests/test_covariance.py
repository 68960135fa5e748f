"""Covariance structures: us(), diag(), cs(), ar1() terms, their parametrization, the formula
language, bad uses, reporting and the analyses that go through them.

References: the closed forms are checked against numpy's Cholesky factor of the covariance the
structure defines (1e-12), the analytic Jacobians against central differences (1e-7), the GLMM
gradient with a structured term against central differences of the Laplace deviance (1e-5
relative); glmmTMB's own figures are in test_covstruct_reference.py.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest
from conftest import load_data

import hmix
from hmix.covariance import (
    AR1,
    CompoundSymmetry,
    CovarianceStructure,
    Diagonal,
    ScaledIdentity,
    Unstructured,
    structure,
)
from hmix.engine import NotPositiveDefinite
from hmix.errors import FormulaError, HmixError, HmixWarning
from hmix.glmm import GLMMObjective
from hmix.optimize import minimize

AR1_FORMULA = "y ~ x + tnum + ar1(0 + time | id)"
CS_FORMULA = "y ~ cond + cs(0 + cond | id)"


@cache
def ar1_data() -> pd.DataFrame:
    return load_data("ar1_sim", ("id", "time"))


@cache
def cs_data() -> pd.DataFrame:
    return load_data("cs_sim", ("id", "cond"))


@cache
def replicated() -> pd.DataFrame:
    """ar1_sim with a second, noisier measurement per occasion: an unstructured 8 x 8 term is
    identified beside the residual."""
    d = ar1_data()
    rng = np.random.default_rng(7)
    return pd.concat([d, d.assign(y=d["y"] + rng.normal(0, 0.5, len(d)))], ignore_index=True)


@cache
def fit(formula: str, which: str = "ar1", REML: bool = False) -> hmix.LinearMixedModel:
    data = {"ar1": ar1_data, "cs": cs_data, "rep": replicated}[which]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HmixWarning)
        return hmix.lmer(formula, data, REML=REML)


def _correlation(kind: str, k: int, rho: float) -> np.ndarray:
    lag = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    return rho**lag if kind == "ar1" else np.where(lag == 0, 1.0, rho)


STRUCTURES = [
    CompoundSymmetry(2),
    CompoundSymmetry(4),
    CompoundSymmetry(5, hom=True),
    AR1(6),
    AR1(4, hom=False),
]


# ----- the structures --------------------------------------------------------------------------
@pytest.mark.parametrize("cov", STRUCTURES, ids=repr)
@pytest.mark.parametrize("x", [-6.0, -0.8, 0.0, 0.5, 3.0])
def test_factor_is_the_cholesky_factor(cov: CompoundSymmetry | AR1, x: float) -> None:
    rng = np.random.default_rng(3)
    theta = np.r_[rng.uniform(0.2, 2.0, cov.nsd), x]
    sd = np.full(cov.k, theta[0]) if cov.hom else theta[:-1]
    Sigma = np.outer(sd, sd) * _correlation(cov.kind, cov.k, cov.rho_of(x))
    np.testing.assert_allclose(cov.tmat(theta), np.linalg.cholesky(Sigma), atol=1e-12)
    np.testing.assert_allclose(cov.jacobian(theta), CovarianceStructure.jacobian(cov, theta), atol=1e-7)
    assert cov.rho(theta) == pytest.approx(cov.rho_of(x))


def test_glmmtmb_transforms() -> None:
    """glmmTMB 1.1.5's rho(x), as the README records them from its fits."""
    assert CompoundSymmetry(2).rho_of(0.1630001) == pytest.approx(0.0813201, abs=1e-7)
    assert CompoundSymmetry(3).rho_of(1.255627) == pytest.approx(0.667409, abs=1e-6)
    assert AR1(8).rho_of(0.746517974556977) == pytest.approx(0.59821272787047, abs=1e-12)
    # cs keeps the matrix positive semi-definite: rho at or above -1/(k - 1) for every x
    assert CompoundSymmetry(5).rho_of(-40.0) >= -0.25
    np.linalg.cholesky(_correlation("cs", 5, CompoundSymmetry(5).rho_of(-12.0)))


@pytest.mark.parametrize("cov", STRUCTURES, ids=repr)
def test_sdcor_round_trip_and_bounds(cov: CompoundSymmetry | AR1) -> None:
    theta = np.r_[np.linspace(0.5, 1.5, cov.nsd), 0.7]
    values = cov.sdcor(theta, 2.0)
    assert len(values) == len(cov.sdcor_pattern[0]) == cov.nsd + 1
    np.testing.assert_allclose(cov.from_sdcor(values, 2.0), theta, atol=1e-12)
    lo, hi = cov.sdcor_bounds()
    assert lo[-1] == cov.rho_lower and hi[-1] == 1.0
    # a bound is the limit just inside it; beyond it no theta exists
    assert np.isfinite(cov.from_sdcor(np.r_[values[:-1], 1.0], 2.0)).all()
    with pytest.raises(NotPositiveDefinite):
        cov.from_sdcor(np.r_[values[:-1], cov.rho_lower - 0.01], 2.0)


def test_structure_names_and_parameters() -> None:
    assert structure("us", 3) == Unstructured(3)
    assert structure("diag", 3) == Diagonal(3) and structure("diag", 3, hom=True) == ScaledIdentity(3)
    assert structure("ar1", 4) == AR1(4, hom=True)
    assert [structure(k, 4).ntheta for k in ("us", "diag", "cs", "ar1")] == [10, 4, 5, 2]
    assert CompoundSymmetry(4, hom=True).ntheta == 2 and AR1(4, hom=False).ntheta == 5
    assert AR1(3).theta_names("id", ("t1", "t2", "t3")) == ["id.t1", "id.ar1"]
    with pytest.raises(ValueError, match="two or more"):
        CompoundSymmetry(1)
    with pytest.raises(ValueError, match="unknown covariance structure"):
        structure("toep", 3)


def test_scaled_identity() -> None:
    cov = ScaledIdentity(3)
    np.testing.assert_array_equal(cov.tmat(np.array([2.0])), 2.0 * np.eye(3))
    np.testing.assert_array_equal(cov.jacobian(np.array([2.0])), np.ones((3, 1)))
    assert cov.rectify(np.array([-2.0])).tolist() == [2.0]


# ----- the formula language --------------------------------------------------------------------
def test_parse_structured_terms() -> None:
    p = hmix.parse_formula("y ~ x + ar1(0 + t | id) + cs(1 + x | g, hom = TRUE) + diag(x | a/b) + us(x | h)")
    got = [(b.lhs, b.group_name, b.structure, b.hom) for b in p.bars]
    assert got == [
        ("0 + t", "id", "ar1", True),
        ("1 + x", "g", "cs", True),
        ("x", "a", "diag", False),
        ("x", "a:b", "diag", False),
        ("x", "h", "us", False),
    ]
    assert p.fixed == "x"
    assert hmix.parse_formula("y ~ ar1(0 + t | id, hom = FALSE)").bars[0].hom is False
    assert hmix.parse_formula("y ~ (ar1(0 + t | id))").bars[0].structure == "ar1"


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y ~ toep(0 + t | id)", "unknown covariance structure toep()"),
        ("y ~ cs(x | g, foo = 1)", "takes the term and hom = TRUE or FALSE"),
        ("y ~ us(x | g, hom = TRUE)", "us() has one variance per column"),
        ("y ~ diag(x || g)", "write diag(x | g)"),
        ("y ~ x - ar1(0 + t | g)", "cannot be subtracted"),
    ],
)
def test_bad_structured_formulas(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hmix.parse_formula(formula)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y ~ x + ar1(time | id)", r"no intercept: write ar1\(0 \+ time \| id\)"),
        ("y ~ x + ar1(0 + tnum | id)", r"gives one numeric column: write ar1\(0 \+ C\(tnum\) \| id\)"),
        ("y ~ x + ar1(0 + time + x | id)", r"one factor of occasions"),
        ("y ~ x + cs(0 + x | id)", r"cs\(\) is a correlation between a level's random effects"),
    ],
)
def test_bad_structured_terms(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message):
        hmix.lmer(formula, ar1_data())


def test_ar1_occasions_in_time_order() -> None:
    """Labels that are numbers sort as text ("10" before "2"): refused, with the fix shown; a
    numeric column through C() is in time order; unequal spacing is said."""
    d = ar1_data()
    d10 = d.assign(time=(d["tnum"] + 2 * (d["tnum"] == 8)).astype(str))  # occasions 1..7, 10
    with pytest.raises(FormulaError, match=r"out of order \(1, 10, 2"):
        hmix.lmer(AR1_FORMULA, d10)
    with pytest.warns(HmixWarning, match="equally spaced"):
        m = hmix.lmer("y ~ x + tnum + ar1(0 + C(tnum) | id)", d10.assign(tnum=d10["time"].astype(int)))
    assert m.design.terms[0].names[-1] == "C(tnum)[10]"
    same = hmix.lmer("y ~ x + tnum + ar1(0 + C(tnum) | id)", d, REML=False)
    assert same.objective == pytest.approx(fit(AR1_FORMULA).objective, rel=1e-10)


def test_random_effect_per_observation() -> None:
    """An AR(1) term is identified beside the residual with one observation per occasion; an
    unstructured one is not, and is still refused."""
    m = fit(AR1_FORMULA)
    assert m.design.terms[0].q == m.nobs
    with pytest.raises(hmix.DataError, match="unidentifiable"):
        hmix.lmer("y ~ x + tnum + us(0 + time | id)", ar1_data())


def test_data_not_modified() -> None:
    d = ar1_data()
    before = d.copy()
    hmix.lmer(AR1_FORMULA, d)
    pd.testing.assert_frame_equal(d, before)


# ----- fits ------------------------------------------------------------------------------------
def test_us_is_the_unstructured_term() -> None:
    a = hmix.lmer("Reaction ~ Days + us(Days | Subject)", hmix.datasets.load("sleepstudy"))
    b = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.objective == b.objective


def test_diag_is_the_double_bar() -> None:
    a = hmix.lmer("Reaction ~ Days + diag(Days | Subject)", hmix.datasets.load("sleepstudy"))
    b = hmix.lmer("Reaction ~ Days + (Days || Subject)", hmix.datasets.load("sleepstudy"))
    assert a.objective == pytest.approx(b.objective, rel=1e-10)
    np.testing.assert_allclose(a.varpar(), b.varpar(), rtol=1e-5)
    assert list(a.varcorr["var2"].isna()) == [True, True, True]  # no covariance rows


def test_homogeneous_forms() -> None:
    """cs(hom = TRUE) on two columns is the unstructured term with equal variances; its fit lies
    between the equal-variance diag and the heterogeneous cs."""
    hom = fit("y ~ cond + cs(0 + cond | id, hom = TRUE)", "cs")
    het = fit(CS_FORMULA, "cs")
    dhom = fit("y ~ cond + diag(0 + cond | id, hom = TRUE)", "cs")
    assert het.objective <= hom.objective <= dhom.objective
    assert len(hom.theta) == 2 and len(dhom.theta) == 1
    assert hom.varpar_names() == ["sd_cond[A]|id", "cor_cond[B].cond[A]|id", "sigma"]
    het_ar1 = fit("y ~ x + tnum + ar1(0 + time | id, hom = FALSE)")
    assert len(het_ar1.theta) == 9 and het_ar1.objective <= fit(AR1_FORMULA).objective + 1e-6


def test_rho_start_avoids_the_ridge() -> None:
    """With one observation per occasion and rho = 0 the deviance is flat in the AR(1) SD; the
    start comes from the data's correlations instead (ar1_sim's lies near the estimate)."""
    m = fit(AR1_FORMULA)
    f = hmix.LMMObjective(m.design, REML=False)
    assert f(np.array([0.3, 0.0])) == pytest.approx(f(np.array([1.5, 0.0])), rel=1e-12)
    x0 = f.theta0[-1]
    assert abs(AR1(8).rho_of(x0) - m.varpar()[1]) < 0.15


def test_moment_starts() -> None:
    """Columns on separate rows: the covariance of their per-level estimates (sigma^2 from
    within cells, cs_sim's four replicates) starts cs within 5% of the estimates; an AR(1) with
    one observation per occasion from its lag-1 and lag-2 covariances, within 30%."""
    cs = fit(CS_FORMULA, "cs")
    np.testing.assert_allclose(hmix.LMMObjective(cs.design, REML=False).theta0, cs.theta, rtol=0.05)
    ar1 = fit(AR1_FORMULA)
    np.testing.assert_allclose(hmix.LMMObjective(ar1.design, REML=False).theta0, ar1.theta, rtol=0.3)
    # columns sharing rows (intercept and slope): the SD ratios, as unstructured terms start
    sleep = hmix.datasets.load("sleepstudy")
    d = hmix.build_design("Reaction ~ Days + cs(Days | Subject)", sleep)
    u = hmix.build_design("Reaction ~ Days + diag(Days | Subject)", sleep)
    start_cs, start_diag = hmix.LMMObjective(d).theta0, hmix.LMMObjective(u).theta0
    np.testing.assert_allclose(start_cs[:2], start_diag)


def test_tail_cache_with_a_structured_first_term() -> None:
    """The engine's tail cache steps theta (not lam) in the convergence checks."""
    d = ar1_data().assign(a=lambda f: (f.index % 37).astype(str), b=lambda f: (f.index % 3).astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HmixWarning)
        m = hmix.lmer("y ~ x + tnum + ar1(0 + time | id) + (1 | a) + (1 | b)", d, REML=False)
    f = hmix.LMMObjective(m.design, REML=False)
    assert f.engine.strategy["tail cache"]
    assert sorted(f.engine.step_order.tolist()) == list(range(len(m.theta)))


# ----- reporting -------------------------------------------------------------------------------
def test_summary_shows_rho_as_glmmtmb() -> None:
    text = str(fit(AR1_FORMULA).summary())
    random = text.split("Random effects:")[1].split("Number of obs")[0].splitlines()
    assert random[2].split()[-2:] == ["0.59", "(ar1)"]
    assert random[3].startswith(" Residual")  # one variance: one row
    cs = str(fit(CS_FORMULA, "cs").summary()).split("Random effects:")[1].splitlines()
    assert cs[2].split()[-2:] == ["0.67", "(cs)"] and cs[3].split()[0] == "cond[B]"
    diag = str(fit("y ~ cond + diag(0 + cond | id)", "cs"))
    assert "Corr" not in diag


def test_varcorr_rows_are_the_variance_parameters() -> None:
    m = fit(CS_FORMULA, "cs")
    vc = m.varcorr
    assert len(vc) == len(m.varpar())
    terms = vc.iloc[:-1]
    order = [*range(3), 3]  # variances, then rho: varpar's order
    np.testing.assert_allclose(terms["sdcor"].to_numpy(), m.varpar()[order], rtol=1e-12)
    assert tuple(terms.iloc[3][["var1", "var2"]]) == ("cond[A]", "cond[B]")


# ----- analyses --------------------------------------------------------------------------------
def test_compare_ar1_with_unstructured() -> None:
    ar1 = fit(AR1_FORMULA, "rep")
    us = fit("y ~ x + tnum + (0 + time | id)", "rep")
    ri = fit("y ~ x + tnum + (1 | id)", "rep")
    table = hmix.compare(ri, ar1, us)
    assert table["npar"].tolist() == [5, 6, 40]
    assert table["Df"].iloc[2] == 34
    assert 0 < table["Pr(>Chisq)"].iloc[2] < 1
    assert table["deviance"].iloc[2] <= table["deviance"].iloc[1] <= table["deviance"].iloc[0]
    assert table["AIC"].idxmin() == ar1.formula  # the data are AR(1)


def test_intervals_for_rho() -> None:
    m = fit(AR1_FORMULA)
    rho = m.varpar()[1]
    prof = m.confint()
    wald = m.confint(method="wald")
    name = "cor_time[2].time[1]|id"
    for ci in (prof, wald):
        lo, hi = ci.loc[name]
        assert -1 < lo < rho < hi < 1
    assert np.isnan(wald.loc["sd_time[1]|id"]).all()  # SDs: none, as lme4
    assert abs(prof.loc[name].iloc[0] - wald.loc[name].iloc[0]) < 0.05


@pytest.mark.slow
def test_bootstrap_intervals_for_rho() -> None:
    m = fit(AR1_FORMULA)
    ci = m.confint(method="boot", n=40, seed=1)
    lo, hi = ci.loc["cor_time[2].time[1]|id"]
    assert lo < m.varpar()[1] < hi


def test_ddf_with_structures() -> None:
    m = fit(AR1_FORMULA, REML=True)
    df = m.coef_table(ddf="satterthwaite")["df"].to_numpy()
    assert np.isfinite(df).all() and (df > 50).all()
    with pytest.raises(HmixError, match=r"Kenward-Roger.*ar1\(\) term of id"):
        m.coef_table(ddf="kenward-roger")
    diag = fit("y ~ cond + diag(0 + cond | id)", "cs", REML=True)
    assert np.isfinite(diag.coef_table(ddf="kenward-roger")["df"]).all()


def test_predict_simulate_ranef_shrinkage() -> None:
    m = fit(AR1_FORMULA)
    d = ar1_data()
    np.testing.assert_allclose(m.predict(d).to_numpy(), m.fitted.to_numpy(), rtol=1e-12)
    new = d.head(2).assign(id=["s01", "new"])
    p = m.predict(new, new_levels="population")
    assert p.iloc[0] == pytest.approx(m.fitted.iloc[0]) and p.iloc[1] == pytest.approx(
        m.predict(new.tail(1), random=False).iloc[0]
    )
    b = m.ranef()["id"]
    assert b.shape == (60, 8)
    sims = m.simulate(200, seed=4)
    # the simulated responses of one subject carry the AR(1) correlation of its effects
    resid = (sims.to_numpy() - m.predict(d, random=False).to_numpy()[:, None]).reshape(60, 8, 200)
    lag1 = np.mean([np.corrcoef(resid[:, 0, s], resid[:, 1, s])[0, 1] for s in range(200)])
    sd, rho, sigma = m.varpar()
    assert lag1 == pytest.approx(sd**2 * rho / (sd**2 + sigma**2), abs=0.03)
    assert set(m.shrinkage()["term"]) == set(m.design.terms[0].names)


# ----- GLMMs -----------------------------------------------------------------------------------
@cache
def poisson_ar1() -> hmix.GeneralizedLinearMixedModel:
    d = ar1_data()
    counts = np.random.default_rng(0).poisson(np.exp(0.3 * d["y"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HmixWarning)
        return hmix.glmer("count ~ x + tnum + ar1(0 + time | id)", d.assign(count=counts), family="poisson")


@pytest.mark.parametrize("where", ["optimum", "elsewhere"])
def test_glmm_gradient_applies_the_structure(where: str) -> None:
    m = poisson_ar1()
    obj = GLMMObjective(m.design, m.family, 1)
    x = np.r_[m.theta, m.beta] + (0.0 if where == "optimum" else np.array([0.2, -0.5, 0.05, -0.1, 0.02]))
    _, g = obj.value_and_gradient(x)
    h = 1e-5
    fd = np.array([(obj(x + h * e) - obj(x - h * e)) / (2 * h) for e in np.eye(len(x))])
    np.testing.assert_allclose(g, fd, atol=1e-5 * max(1.0, float(np.abs(fd).max())))


def test_glmm_with_structures_fits() -> None:
    m = poisson_ar1()
    assert m.converged and m.optsum.stages == ("theta", "quasi-Newton")
    # no lower point for BOBYQA (derivative-free) from near the quasi-Newton optimum
    obj = GLMMObjective(m.design, m.family, 1)
    x0 = np.r_[m.theta, m.beta] + 0.05
    lower = np.r_[obj.lower_theta, np.full(len(m.beta), -np.inf)]
    _, fmin, _, _ = minimize(obj, x0, lower, initial_step=np.full(len(x0), 0.05))
    assert m.objective <= fmin + 1e-6
    assert "(ar1)" in str(m.summary())
    counts = np.random.default_rng(1).poisson(np.exp(0.4 * cs_data()["y"]))
    g = hmix.glmer("n ~ cond + cs(0 + cond | id)", cs_data().assign(n=counts), family="poisson", nAGQ=0)
    assert g.design.terms[0].cov.kind == "cs" and np.isfinite(g.objective)
    lo, hi = m.confint(method="wald").loc["cor_time[2].time[1]|id"]
    assert lo < m.varpar()[1] < hi
