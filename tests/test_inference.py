"""Inference: confidence intervals against lme4, LOO against brute force, CV and the bootstrap.

Tolerances: profile and Wald intervals within 1e-3 relative of lme4 1.1-31
(tests/reference/lme4_inference.json; the GLMM profile: lme4_confint.json); exact LMM LOO
within 1e-8 of a dense brute-force leave-one-out at fixed theta; the held-out density of
cross-validation within 1e-8 of a dense multivariate normal; PSIS-LOO for cbpp within its
reported SE of exact refitting LOO.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
from conftest import load_data, reference

import hmix
from hmix.errors import DataError
from hmix.loo import _gpd_fit, exact_loo_glmm, psis

INFERENCE = "lme4_inference.json"


# ----- confidence intervals -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["profile", "wald"])
def test_confint_matches_lme4(sleep: hmix.LinearMixedModel, method: str) -> None:
    ref = reference(INFERENCE)[f"confint_sleepstudy_{method}"]
    ci = sleep.confint(method)
    assert list(ci.index) == ref["names"]
    lower = np.array([np.nan if v == "NA" else v for v in ref["lower"]], dtype=float)
    upper = np.array([np.nan if v == "NA" else v for v in ref["upper"]], dtype=float)
    np.testing.assert_allclose(ci.iloc[:, 0], lower, rtol=1e-3)
    np.testing.assert_allclose(ci.iloc[:, 1], upper, rtol=1e-3)
    assert list(ci.columns) == ["2.5 %", "97.5 %"]


def test_glmm_profile_matches_lme4(cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    ref = reference("lme4_confint.json")["confint_cbpp_profile"]
    ci = cbpp.confint("profile")
    assert ci.index[0] == ref["names"][0]  # fixed effects: formulaic's names, period[T.2] for period2
    np.testing.assert_allclose(ci.iloc[:, 0], ref["lower"], rtol=1e-3)
    np.testing.assert_allclose(ci.iloc[:, 1], ref["upper"], rtol=1e-3)


def test_profile_with_one_free_parameter_matches_lme4() -> None:
    # a random intercept only: profiling sd leaves sigma alone free, where NLopt's BOBYQA often
    # stops "roundoff-limited" at the optimum; the best point is the answer
    ref = reference("lme4_confint.json")["confint_one_free_profile"]
    m = hmix.lmer(ref["formula"], load_data("profile_one_free", ("g",)))
    ci = m.confint()
    assert list(ci.index) == ref["names"]
    np.testing.assert_allclose(ci.iloc[:, 0], ref["lower"], rtol=1e-3)
    np.testing.assert_allclose(ci.iloc[:, 1], ref["upper"], rtol=1e-3)


def test_confint_level_narrows_the_interval(sleep: hmix.LinearMixedModel) -> None:
    wide = sleep.confint("wald", level=0.99).loc["Days"]
    narrow = sleep.confint("wald", level=0.5).loc["Days"]
    assert wide.iloc[0] < narrow.iloc[0] < narrow.iloc[1] < wide.iloc[1]


def test_confint_errors(sleep: hmix.LinearMixedModel, cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    with pytest.raises(DataError, match="level"):
        sleep.confint("wald", level=1.5)
    with pytest.raises(DataError, match="method"):
        sleep.confint("bayes")
    ci = cbpp.confint("wald")  # GLMM Wald: fixed effects from the Hessian SEs
    se = cbpp.std_errors
    np.testing.assert_allclose(ci.loc[se.index].iloc[:, 1] - cbpp.fixef, 1.959963984540054 * se, rtol=1e-12)


# ----- LOO ------------------------------------------------------------------------------------
def _brute_force_loo(m: hmix.LinearMixedModel) -> np.ndarray:
    """log p(y_i | y_-i) with theta and sigma fixed, beta re-estimated by GLS and integrated out."""
    d = m.design
    n = d.n
    Z = sp.hstack([t.zmatrix for t in d.terms]).toarray()
    blocks, start = [], 0
    for t in d.terms:
        blocks += [t.cov.tmat(m.theta[start : start + t.ntheta])] * t.nlevels
        start += t.ntheta
    Lam = sla.block_diag(*blocks)
    w = np.ones(n) if d.weights is None else d.weights
    V = m.sigma**2 * (np.diag(1 / w) + Z @ Lam @ Lam.T @ Z.T)
    y = d.y - (0.0 if d.offset is None else d.offset)
    X = d.X
    out = np.empty(n)
    for i in range(n):
        k = np.arange(n) != i
        Vi = np.linalg.inv(V[np.ix_(k, k)])
        A = np.linalg.inv(X[k].T @ Vi @ X[k])
        beta = A @ X[k].T @ Vi @ y[k]
        c = V[i, k] @ Vi
        mean = X[i] @ beta + c @ (y[k] - X[k] @ beta)
        g = X[i] - X[k].T @ c
        var = V[i, i] - c @ V[k, i] + g @ A @ g
        out[i] = -0.5 * (np.log(2 * np.pi * var) + (y[i] - mean) ** 2 / var)
    return out


def test_lmm_loo_equals_brute_force(sleep: hmix.LinearMixedModel) -> None:
    res = sleep.loo()
    np.testing.assert_allclose(res.elpd_i, _brute_force_loo(sleep), rtol=0, atol=1e-8)
    assert res.method == "exact" and res.pareto_k is None
    assert res.looic == pytest.approx(-2 * res.elpd_loo)
    assert res.se == pytest.approx(np.sqrt(len(res.elpd_i) * np.var(res.elpd_i)))
    assert 0 < res.p_loo < sleep.nobs
    assert "elpd_loo" in repr(res)


def test_lmm_loo_weights_crossed_and_vector_rest_term() -> None:
    d = hmix.datasets.load("sleepstudy").copy()
    d["pair"] = (np.arange(len(d)) // 4).astype(str)  # 45 levels: Subject's (Days | .) term comes second
    d["w"] = np.linspace(0.5, 2.0, len(d))
    m = hmix.lmer("Reaction ~ Days + (1 | pair) + (Days | Subject)", d, weights="w")
    assert m.design.terms[0].group == "pair"
    np.testing.assert_allclose(m.loo().elpd_i, _brute_force_loo(m), rtol=0, atol=1e-8)


def test_psis_loo_agrees_with_exact_refits(cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cbpp.loo(refit=False)
    exact = np.array([exact_loo_glmm(cbpp, i) for i in range(cbpp.nobs)])
    assert res.method == "psis" and res.pareto_k is not None
    # PSIS at fixed theta is a little optimistic against refits (3.4-4.0 nats over seeds, SE 10.6):
    # within 5 in total, and within 1 nat for each observation with k < 0.5
    assert abs(res.elpd_loo - exact.sum()) < 5
    good = res.pareto_k < 0.5
    assert good.sum() > 30
    np.testing.assert_allclose(res.elpd_i[good], exact[good], atol=1.0)
    # the observations refitted by default get exactly the refit value; the total moves closer
    full = cbpp.loo()
    bad = full.pareto_k > 0.7
    np.testing.assert_allclose(full.elpd_i[bad], exact[bad], rtol=1e-10)
    assert abs(full.elpd_loo - exact.sum()) < 4
    assert full.pointwise["refit"].sum() == bad.sum()


def test_psis_loo_poisson_crossed() -> None:
    rng = np.random.default_rng(4)
    d = pd.DataFrame({"a": rng.integers(0, 8, 80).astype(str), "b": rng.integers(0, 5, 80).astype(str)})
    d["x"] = rng.normal(size=80)
    d["t"] = rng.uniform(1, 3, 80)
    eff = rng.normal(0, 0.5, 8)[d["a"].astype(int)] + rng.normal(0, 0.3, 5)[d["b"].astype(int)]
    d["y"] = rng.poisson(d["t"] * np.exp(0.5 + 0.3 * d["x"] + eff))
    m = hmix.glmer("y ~ x + offset(np.log(t)) + (1 | a) + (1 | b)", d, family="poisson")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = m.loo(refit=False)
        exact = np.array([exact_loo_glmm(m, i) for i in range(m.nobs)])
    good = res.pareto_k < 0.5
    assert good.sum() > 60
    np.testing.assert_allclose(res.elpd_i[good], exact[good], atol=0.5)
    assert abs(res.elpd_loo - exact.sum()) < res.se / 2


def test_loo_keeps_psis_where_a_refit_is_impossible() -> None:
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"g": rng.integers(0, 10, 200).astype(str)})
    d["f"] = np.where(np.arange(200) == 0, "rare", rng.choice(["a", "b"], 200))
    d["y"] = rng.poisson(3, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.SingularFitWarning)
        m = hmix.glmer("y ~ f + (1 | g)", d, family="poisson")
    with pytest.warns(hmix.HmixWarning, match="cannot be refitted without 1 observation"):
        res = m.loo()
    assert np.isfinite(res.elpd_loo) and not res.pointwise["refit"].iloc[0]


def test_bad_arguments_are_hmix_errors(
    sleep: hmix.LinearMixedModel, cbpp: hmix.GeneralizedLinearMixedModel
) -> None:
    for call in (
        lambda: cbpp.loo(draws=0),
        lambda: cbpp.loo(draws=2.5),
        lambda: sleep.confint("wald", level="0.9"),
        lambda: hmix.cross_validate(sleep, folds=2.5),
        lambda: hmix.cross_validate(sleep, folds="3"),
        lambda: hmix.bootstrap(sleep, n=2.7),
        lambda: hmix.bootstrap(sleep, n="a"),
    ):
        with pytest.raises(DataError):
            call()


def test_psis_k_recovers_a_pareto_tail() -> None:
    rng = np.random.default_rng(3)
    for k in (0.2, 0.6, 0.9):
        u = rng.uniform(size=(40, 400))
        x = np.sort((u**-k - 1) / k, axis=1)
        est, _ = _gpd_fit(x)
        # 40 samples of 400 exceedances: the mean estimate within 0.05 (the prior pulls towards 0.5)
        assert abs(est.mean() - k) < 0.06, (k, est.mean())
    # well-behaved ratios: small k and normalized weights
    lw, khat = psis(rng.normal(size=(3, 2000)) * 0.3)
    assert (khat < 0.5).all()
    np.testing.assert_allclose(np.exp(lw).sum(axis=1), 1.0)


def test_compare_with_loo(sleep: hmix.LinearMixedModel) -> None:
    m0 = hmix.lmer("Reaction ~ Days + (1 | Subject)", hmix.datasets.load("sleepstudy"), REML=False)
    m1 = sleep.refit_ml()
    table = hmix.compare(m1, m0, loo=True)
    assert list(table.index) == [m0.formula, m1.formula]
    assert table["elpd_loo"].iloc[0] == pytest.approx(m0.loo().elpd_loo, rel=1e-12)
    assert table["elpd_diff"].max() == 0.0 and table["se_diff"].min() == 0.0
    best = table["elpd_loo"].idxmax()
    assert table.loc[best, "elpd_diff"] == 0.0
    other = table.index[table.index != best][0]
    assert table.loc[other, "elpd_diff"] == pytest.approx(
        table.loc[other, "elpd_loo"] - table.loc[best, "elpd_loo"], rel=1e-12
    )
    # REML fits: the likelihood columns are the ML refits', the LOO columns the fits as given
    m0r = hmix.lmer("Reaction ~ Days + (1 | Subject)", hmix.datasets.load("sleepstudy"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reml = hmix.compare(m0r, sleep, loo=True)
    assert reml["elpd_loo"].tolist() == pytest.approx([m0r.loo().elpd_loo, sleep.loo().elpd_loo], rel=1e-12)
    assert reml["deviance"].iloc[1] == pytest.approx(m1.objective, rel=1e-9)


# ----- cross-validation -----------------------------------------------------------------------
def test_cross_validation_density_is_the_held_out_marginal(sleep: hmix.LinearMixedModel) -> None:
    cv = hmix.cross_validate(sleep, by="Subject", folds=3, seed=7)
    assert len(cv.folds) == 3 and cv.folds["n"].sum() == sleep.nobs
    assert cv.elpd == pytest.approx(cv.folds["elpd"].sum())
    # fold 1 again by hand: refit on the other folds, dense marginal density of the held-out rows
    d = sleep.design
    test = np.flatnonzero(cv.pointwise["fold"].to_numpy() == 1)
    train = np.setdiff1d(np.arange(d.n), test)
    fit = hmix.lmer(sleep.formula, hmix.datasets.load("sleepstudy").iloc[train])
    t = d.terms[0]
    T = t.cov.tmat(fit.theta) * fit.sigma
    Z = t.zmatrix.toarray()[test]
    V = Z @ np.kron(np.eye(t.nlevels), T @ T.T) @ Z.T + fit.sigma**2 * np.eye(len(test))
    mean = d.X[test] @ fit.beta
    from scipy.stats import multivariate_normal

    expected = multivariate_normal(mean, V).logpdf(d.y[test])
    assert cv.folds.loc[1, "elpd"] == pytest.approx(expected, rel=1e-8)
    np.testing.assert_allclose(cv.pointwise["predicted"].to_numpy()[test], mean, rtol=1e-8)
    # reproducible with a seed
    again = hmix.cross_validate(sleep, by="Subject", folds=3, seed=7)
    assert again.elpd == cv.elpd


def test_cross_validation_glmm_and_crossed() -> None:
    pen = hmix.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", hmix.datasets.load("Penicillin"))
    cv = hmix.cross_validate(pen, by="sample")  # leave one sample out; plates are all seen
    assert len(cv.folds) == 6 and np.isfinite(cv.elpd)
    # Penicillin's held-out samples: each fold's density against the dense marginal by hand
    d = pen.design
    data = hmix.datasets.load("Penicillin")
    for k in (1, 4):
        test = np.flatnonzero(cv.pointwise["fold"].to_numpy() == k)
        fit = hmix.lmer(pen.formula, data.drop(index=data.index[test]), check_conv=False)  # (as refits)
        plate, sample = (fit.design.terms[i] for i in (0, 1))  # plate (24 levels) first
        assert (plate.group, sample.group) == ("plate", "sample")
        b_plate = pd.Series(fit.b[0], index=plate.levels)
        held = data.iloc[test]
        mean = fit.beta[0] + b_plate.loc[held["plate"].astype(str)].to_numpy()
        sd_sample = fit.varcorr.set_index("group").loc["sample", "sdcor"]
        V = sd_sample**2 * np.ones((len(test), len(test))) + fit.sigma**2 * np.eye(len(test))
        from scipy.stats import multivariate_normal

        expected = multivariate_normal(mean, V).logpdf(d.y[test])
        assert cv.folds.loc[k, "elpd"] == pytest.approx(expected, rel=1e-8)


def test_cross_validation_glmm_by_hand() -> None:
    """cbpp, three folds of herds: a fold's held-out density is the product over its herds of
    the binomial likelihood integrated over a new herd effect (here by scipy's quad), at the
    estimates of a refit without them; predictions are the population-level means."""
    from scipy.integrate import quad
    from scipy.special import expit
    from scipy.stats import binom, norm

    data = hmix.datasets.load("cbpp")
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    cbpp = hmix.glmer(formula, data, family="binomial")
    cv = hmix.cross_validate(cbpp, folds=3, seed=1)
    fold = cv.pointwise["fold"].to_numpy()
    for k in (1, 2):
        test = np.flatnonzero(fold == k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = hmix.glmer(formula, data.drop(index=data.index[test]), family="binomial")
        X, sd = cbpp.design.X[test], float(fit.theta[0])
        eta = X @ fit.beta
        held = data.iloc[test]
        total = 0.0
        for herd in held["herd"].unique():
            rows = (held["herd"] == herd).to_numpy()
            k_i, n_i, e_i = held["incidence"].to_numpy()[rows], held["size"].to_numpy()[rows], eta[rows]

            def integrand(b: float, k_i=k_i, n_i=n_i, e_i=e_i, sd=sd) -> float:
                return float(np.prod(binom.pmf(k_i, n_i, expit(e_i + b))) * norm.pdf(b, 0, sd))

            total += np.log(quad(integrand, -10 * sd, 10 * sd, epsabs=0, epsrel=1e-12, limit=200)[0])
        assert cv.folds.loc[k, "elpd"] == pytest.approx(total, rel=1e-6)
        np.testing.assert_allclose(cv.pointwise["predicted"].to_numpy()[test], expit(eta), rtol=1e-10)


def test_cross_validation_errors(sleep: hmix.LinearMixedModel) -> None:
    with pytest.raises(DataError, match="grouping factors"):
        hmix.cross_validate(sleep, by="Days")
    with pytest.raises(DataError, match="folds"):
        hmix.cross_validate(sleep, folds=40)


# ----- bootstrap --------------------------------------------------------------------------------
def test_bootstrap_reproducible_and_centred(sleep: hmix.LinearMixedModel) -> None:
    reps = hmix.bootstrap(sleep, n=200, seed=11)
    again = hmix.bootstrap(sleep, n=200, seed=11)
    assert reps.equals(again)
    assert list(reps.columns) == list(sleep.confint("wald").index)
    # fixed effects: the replicates' mean within 4 Monte Carlo SEs of the estimate
    for name, est in sleep.fixef.items():
        col = reps[name]
        assert abs(col.mean() - est) < 4 * col.std() / np.sqrt(len(col))
    # and the spread close to the model's SE (20% at 200 replicates)
    np.testing.assert_allclose(reps[list(sleep.fixef.index)].std(), sleep.std_errors, rtol=0.2)
    assert reps.attrs["failed"] == 0


def test_boot_confint_covers_the_estimates(sleep: hmix.LinearMixedModel) -> None:
    ci = sleep.confint("boot", n=100, seed=3)
    est = np.r_[sleep.varpar(), sleep.fixef.to_numpy()]
    assert ((ci.iloc[:, 0].to_numpy() < est) & (est < ci.iloc[:, 1].to_numpy())).all()


def test_glmm_bootstrap(cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    """Each replicate is the fit by hand to the response simulated with the same seed."""
    reps = hmix.bootstrap(cbpp, n=3, seed=1)
    assert reps.shape == (3, 5) and "sigma" not in reps.columns
    sims = cbpp.simulate(n=3, seed=np.random.default_rng(1))
    data = hmix.datasets.load("cbpp")
    for i in range(3):
        sim = data.assign(incidence=np.round(sims[f"sim_{i + 1}"].to_numpy() * data["size"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = hmix.glmer(cbpp.formula, sim, family="binomial")
        np.testing.assert_allclose(
            reps.iloc[i].to_numpy(), np.r_[fit.varpar(), fit.beta], rtol=1e-6, atol=1e-8
        )
