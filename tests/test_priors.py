"""Priors and penalized fits: the penalties against scipy's densities, the closed-form profiles of
sigma against a numeric minimization, the gradient against differences, the refits and analyses
that must keep the priors, the sensitivity table, and the errors for bad input.

References and tolerances: scipy.stats' log-densities (-2 log p to 1e-9 relative); a bounded
scalar minimization of the penalized criterion over sigma (1e-6 relative in sigma); central
differences of the GLMM penalty (1e-6 relative); blme's fits where a figure comes from R
(tests/reference/blme_priors.json).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.optimize import minimize_scalar

import hmix
from hmix import priors as P
from hmix.blme import PenalizedLMM
from hmix.remat import ThetaMap

SLEEP = "Reaction ~ Days + (Days | Subject)"
DYE = "Yield ~ 1 + (1 | Batch)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
T2 = np.array([[1.3, 0.0], [0.4, 0.7]])  # a relative factor T of a term with two columns


def _density(prior: P.CovPrior, T: np.ndarray) -> float:
    """-2 log p at T with sigma = 1: what the penalty adds."""
    return prior.polynomial(T) + prior.exponential(T) + prior.constant


# ----- the penalties are -2 log-densities ----------------------------------------------------
def test_wishart_is_the_wishart_density() -> None:
    S = np.array([[2.0, 0.3], [0.3, 0.5]])
    w = P.Wishart(df=5, scale=S).resolve(2, glmm=False)
    expected = -2 * stats.wishart(df=5, scale=S).logpdf(T2 @ T2.T)
    assert _density(w, T2) == pytest.approx(expected, rel=1e-9)


def test_invwishart_is_the_inverse_wishart_density() -> None:
    S = np.array([[2.0, 0.3], [0.3, 0.5]])
    w = P.InvWishart(df=4, scale=S).resolve(2, glmm=False)
    expected = -2 * stats.invwishart(df=4, scale=S).logpdf(T2 @ T2.T)
    assert _density(w, T2) == pytest.approx(expected, rel=1e-9)


def test_default_wishart_is_gamma_on_the_sd() -> None:
    """scale = inf: -2 (df - k - 1) sum log diag(T), -3 sum log diag(T) at blme's default df."""
    w = P.Wishart().resolve(2, glmm=False)
    assert w.df == 4.5 and w.constant == 0
    assert _density(w, T2) == pytest.approx(-3 * math.log(1.3 * 0.7), rel=1e-12)
    g = P.Gamma().resolve(1, glmm=False)
    T1 = np.array([[0.8]])
    assert _density(g, T1) == pytest.approx(_density(P.Wishart().resolve(1, glmm=False), T1), rel=1e-12)


@pytest.mark.parametrize("posterior_scale", ["sd", "var"])
def test_gamma_and_invgamma_densities(posterior_scale: str) -> None:
    lam = 0.7
    x = lam if posterior_scale == "sd" else lam**2  # the density is of the SD or of the variance
    g = P.Gamma(3.0, 2.0, posterior_scale=posterior_scale).resolve(1, glmm=False)
    # blme evaluates the density of the SD or of the variance at theta (no Jacobian)
    assert _density(g, np.array([[lam]])) == pytest.approx(
        -2 * stats.gamma(a=3.0, scale=0.5).logpdf(x), rel=1e-9
    )
    ig = P.InvGamma(3.0, 2.0, posterior_scale=posterior_scale).resolve(1, glmm=False)
    assert _density(ig, np.array([[lam]])) == pytest.approx(
        -2 * stats.invgamma(a=3.0, scale=2.0).logpdf(x), rel=1e-9
    )


def test_normal_and_t_densities_on_the_fixed_effects() -> None:
    beta = np.array([1.5, -0.4, 0.2])
    names = ("(Intercept)", "x", "z")
    n = P.Normal().resolve(names, glmm=True)
    cov = np.diag([100.0, 6.25, 6.25])
    assert n.value_grad(beta)[0] == pytest.approx(
        -2 * stats.multivariate_normal(np.zeros(3), cov).logpdf(beta), rel=1e-12
    )
    t = P.StudentT().resolve(names, glmm=True)
    assert t.value_grad(beta)[0] == pytest.approx(
        -2 * stats.multivariate_t(np.zeros(3), cov, df=3).logpdf(beta), rel=1e-12
    )


def test_normal_prior_spreads_sds_as_blme() -> None:
    names = ("(Intercept)", "a", "b")
    sd = lambda spec: np.sqrt(np.diag(P.Normal(sd=spec).resolve(names, glmm=False).cov))  # noqa: E731
    assert sd(None).tolist() == [10, 2.5, 2.5]
    assert sd(3.0).tolist() == [3, 3, 3]
    assert sd([1, 2, 3]).tolist() == [1, 2, 3]
    assert sd({"a": 4.0}).tolist() == [math.inf, 4, math.inf]  # the others get no prior
    flat_ends = P.Normal(sd={"a": 4.0}).resolve(names, glmm=False)
    assert flat_ends.df_adjustment == 1 and flat_ends.precision[0, 0] == 0


def test_glmm_penalty_gradient() -> None:
    """The exact gradient the quasi-Newton stage uses, against central differences."""
    d = hmix.build_design(SLEEP, hmix.datasets.load("sleepstudy"))
    S = np.array([[2.0, 0.3], [0.3, 0.5]])
    for cov in (P.Wishart(), P.InvWishart(), P.Wishart(df=5, scale=S)):
        pr = P.resolve(d, cov, P.StudentT(), glmm=True)
        pen = pr.glmm_penalty(ThetaMap.of(d.terms))
        x = np.array([0.9, 0.2, -0.3, 1.0, 0.5])
        g = pen(x)[1]
        h = 1e-6
        fd = [(pen(x + h * e)[0] - pen(x - h * e)[0]) / (2 * h) for e in np.eye(len(x))]
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
    dye = hmix.build_design(DYE, hmix.datasets.load("Dyestuff"))
    for cov in (P.Gamma(2, 0.3), P.InvGamma(2, 1), P.InvGamma(2, 1, posterior_scale="sd")):
        pen = P.resolve(dye, cov, "normal", glmm=True).glmm_penalty(ThetaMap.of(dye.terms))
        for th in (0.6, -0.6):  # the unbounded stage may flip the sign of a column of Lambda
            x = np.array([th, 1.2])
            fd = [(pen(x + 1e-6 * e)[0] - pen(x - 1e-6 * e)[0]) / 2e-6 for e in np.eye(2)]
            np.testing.assert_allclose(pen(x)[1], fd, rtol=1e-6)


# ----- sigma's profile -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cov", "resid", "mode"),
    [
        (P.Wishart(), None, "linear"),
        (None, P.InvGamma(2, 1000), "linear"),
        (P.Wishart(df=4, scale=[100, 10], common_scale=False), None, "sq_quadratic"),
        (None, P.Gamma(2, 0.001), "sq_quadratic"),
        (P.InvWishart(df=3, scale=[1, 1], common_scale=False), P.Gamma(2, 0.001), "sq_quadratic"),
    ],
)
def test_sigma_profile_minimizes_the_criterion(cov: object, resid: object, mode: str) -> None:
    d = hmix.build_design(SLEEP, hmix.datasets.load("sleepstudy"))
    f = PenalizedLMM(d, REML=True, priors=P.resolve(d, cov, None, resid, glmm=False))
    assert f.mode == mode
    theta = np.array([0.95, 0.02, 0.23])
    fac = f.factor(f.params_at(theta, 25.0))

    def at(s: float) -> float:
        return f.evaluate(theta, s, fac.logdet_z, fac.logdet_x, fac.r2)[0]

    best = minimize_scalar(at, bounds=(5, 100), method="bounded", options={"xatol": 1e-10})
    assert f.estimates(theta)[1] == pytest.approx(best.x, rel=1e-6)
    assert f(theta) == pytest.approx(best.fun, rel=1e-12)


def test_sigma_is_optimized_where_no_closed_form() -> None:
    """A prior with sigma^1 and sigma^2 terms (blme: "numeric"): sigma joins theta."""
    d = hmix.build_design(DYE, hmix.datasets.load("Dyestuff"))
    cov = P.InvGamma(2, 40, posterior_scale="sd", common_scale=False)
    f = PenalizedLMM(d, REML=False, priors=P.resolve(d, cov, None, P.Gamma(2, 1e-4), glmm=False))
    assert f.mode == "numeric" and len(f.theta0) == 2 and not f.scale_mask[1]
    m = hmix.blmer(
        DYE, hmix.datasets.load("Dyestuff"), REML=False, cov_prior=cov, resid_prior=P.Gamma(2, 1e-4)
    )
    fac = f.factor(np.r_[m.theta, m.sigma])
    best = minimize_scalar(
        lambda s: f.evaluate(m.theta, s, fac.logdet_z, 0.0, fac.r2)[0], bounds=(5, 200), method="bounded"
    )
    assert m.sigma == pytest.approx(best.x, rel=1e-4)


def test_sigma_quadratic_profile() -> None:
    d = hmix.build_design(DYE, hmix.datasets.load("Dyestuff"))
    prior = P.InvGamma(2, 40, posterior_scale="sd", common_scale=False)
    f = PenalizedLMM(d, REML=False, priors=P.resolve(d, prior, glmm=False))
    assert f.mode == "quadratic"
    theta = np.array([0.6])
    fac = f.factor(theta)
    best = minimize_scalar(
        lambda s: f.evaluate(theta, s, fac.logdet_z, 0.0, fac.r2)[0], bounds=(5, 200), method="bounded"
    )
    assert f.estimates(theta)[1] == pytest.approx(best.x, rel=1e-5)


# ----- fits ------------------------------------------------------------------------------------
def test_blmer_keeps_the_data_and_records_its_priors() -> None:
    data = hmix.datasets.load("Dyestuff2")
    before = data.copy()
    m = hmix.blmer(DYE, data)
    pd.testing.assert_frame_equal(data, before)
    assert isinstance(m.priors, P.Priors) and isinstance(m.priors.cov[0], P.Wishart)
    assert m.penalized_objective == pytest.approx(m.objective + m.penalty)
    plain = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    assert plain.priors is None and plain.penalty == 0 and plain.penalized_objective == plain.objective
    assert "Prior dev" in repr(m) and "Prior dev" not in repr(plain)


def test_refits_keep_the_priors() -> None:
    """refit (cross-validation, LOO), refit_ml (compare, profiles) and the bootstrap's refitter."""
    d = hmix.datasets.load("sleepstudy")
    m = hmix.blmer(SLEEP, d, REML=False, cov_prior=None, resid_prior=P.Point(30))
    r = hmix.fit.refit(m, m.design)
    assert r.priors is m.priors and r.sigma == 30
    assert r.penalized_objective == pytest.approx(m.penalized_objective, rel=1e-10)
    reml = hmix.blmer(SLEEP, d, cov_prior=None, fixef_prior="normal")
    assert reml.refit_ml().priors is reml.priors
    assert reml.refit_ml().penalized_objective == pytest.approx(1776.0096067198, rel=1e-6)  # blme
    boot = hmix.bootstrap(m, n=5, seed=1)
    assert (boot["sigma"] == 30).all()  # the point prior holds in every refit
    g = hmix.bglmer(CBPP, hmix.datasets.load("cbpp"), fixef_prior="normal")
    rg = hmix.fit.refit(g, g.design)
    assert rg.priors is g.priors and rg.penalty > 0


def test_profile_intervals_use_the_penalized_criterion() -> None:
    """Dyestuff2: lmer's profile interval of the batch SD reaches 0; under the Wishart prior (whose
    density vanishes at 0) it cannot. A point prior fixes sigma."""
    d2 = hmix.datasets.load("Dyestuff2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.SingularFitWarning)
        plain = hmix.lmer(DYE, d2, REML=False).confint()
    assert plain.iloc[0, 0] == 0
    ci = hmix.blmer(DYE, d2, REML=False).confint()
    assert 0.1 < ci.iloc[0, 0] < 1.249 < ci.iloc[0, 1]  # around blme's SD, 1.2465
    assert ci.loc["(Intercept)"].between(3.0, 8.5).all()
    fixed = hmix.blmer(DYE, d2, REML=False, cov_prior="gamma", resid_prior=P.Point(3.5)).confint()
    assert fixed.loc["sigma"].tolist() == [3.5, 3.5]


def test_compare_and_ddf_refuse_what_a_prior_voids() -> None:
    d = hmix.datasets.load("sleepstudy")
    m0 = hmix.blmer("Reaction ~ Days + (1 | Subject)", d, REML=False)
    m1 = hmix.blmer(SLEEP, d, REML=False)
    with pytest.warns(hmix.HmixWarning, match="likelihood-ratio test does not apply"):
        table = hmix.compare(m0, m1)
    assert table["Pr(>Chisq)"].isna().all()
    with pytest.raises(hmix.HmixError, match="lmer for small-sample tests"):
        m1.coef_table(ddf="satterthwaite")


def test_singular_glmer_suggests_bglmer() -> None:
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"g": np.repeat(np.arange(10), 8), "y": rng.binomial(1, 0.5, 80)})
    with pytest.warns(hmix.SingularFitWarning, match="hmix.bglmer"):
        m = hmix.glmer("y ~ 1 + (1 | g)", data)
    assert m.singular
    b = hmix.bglmer("y ~ 1 + (1 | g)", data)
    assert not b.singular and b.theta[0] > 0.1


# ----- the sensitivity table -----------------------------------------------------------------
def test_prior_sensitivity_table_and_plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d2 = hmix.datasets.load("Dyestuff2")
    s = hmix.prior_sensitivity(
        DYE, d2, {"W": "wishart", "G": P.Gamma(2, 0.5), "N": {"fixef_prior": "normal"}}
    )
    assert list(s.estimates.columns) == ["none (lmer)", "W", "G", "N"]
    assert list(s.estimates.index) == ["(Intercept)", "sd_(Intercept)|Batch", "sigma"]
    assert s.singular.tolist() == [True, False, False, True]  # a prior on beta alone leaves theta at 0
    w = s.models["W"]
    assert s.estimates.loc["sd_(Intercept)|Batch", "W"] == pytest.approx(1.48874449750042, rel=1e-4)  # blme
    assert w.penalty == s.penalty["W"] and s.penalty["none (lmer)"] == 0
    assert s.table.loc["singular"].tolist() == [True, False, False, True]
    tidy = s.to_frame()
    assert set(tidy["kind"]) == {"fixef", "sd", "sigma"} and len(tidy) == 12
    axes = s.plot()
    assert [a.get_title() for a in axes] == list(s.estimates.index)
    plt.close("all")
    g = hmix.prior_sensitivity(CBPP, hmix.datasets.load("cbpp"), ["wishart"], family="binomial")
    assert g.estimates.loc["sd_(Intercept)|herd", "wishart"] == pytest.approx(0.719121010694375, rel=1e-4)
    assert "sigma" not in g.estimates.index


# ----- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cov_prior": {"Batch": "wishart"}}, "grouping factors the model does not have"),
        ({"cov_prior": "gamma"}, "Wishart or InvWishart"),
        ({"cov_prior": "lognormal"}, "unknown covariance prior"),
        ({"cov_prior": P.Normal()}, "not a covariance prior"),
        ({"cov_prior": {"Subject": P.Point(1)}}, "not a covariance prior"),
        ({"cov_prior": P.Wishart(df=0.5)}, "needs df > 1"),
        ({"cov_prior": P.Wishart(scale=[1, 2, 3])}, "2 variances"),
        ({"fixef_prior": "t"}, "available for bglmer"),
        ({"fixef_prior": P.Normal(sd=[1, 2, 3])}, "3 values for 2 fixed effects"),
        ({"fixef_prior": P.Normal(sd={"Day": 1})}, "'Day'"),
        ({"fixef_prior": P.Normal(cov=[[1, 2], [2, 1]])}, "not positive definite"),
        ({"resid_prior": P.Point(-1)}, "positive value"),
        ({"resid_prior": P.Wishart()}, "not a residual prior"),
    ],
)
def test_bad_priors_name_the_problem(kwargs: dict, match: str) -> None:
    with pytest.raises(hmix.DataError, match=match):
        hmix.blmer(SLEEP, hmix.datasets.load("sleepstudy"), **kwargs)


def test_bad_glmm_priors() -> None:
    cbpp = hmix.datasets.load("cbpp")
    with pytest.raises(hmix.DataError, match="nAGQ >= 1"):
        hmix.bglmer(CBPP, cbpp, fixef_prior="normal", nAGQ=0)
    with pytest.raises(TypeError):
        hmix.bglmer(CBPP, cbpp, resid_prior=P.Point(1))  # type: ignore[call-arg]
    d = hmix.build_design(CBPP, cbpp)
    with pytest.raises(hmix.DataError, match="no residual variance"):
        P.resolve(d, "wishart", None, P.Point(1), glmm=True)
    with pytest.raises(hmix.DataError, match="same label"):
        hmix.prior_sensitivity(DYE, hmix.datasets.load("Dyestuff"), ["wishart", "wishart"])


def test_downstream_analyses_use_the_penalized_estimates() -> None:
    """predict, simulate, shrinkage and Wald intervals of penalized fits (their own estimates)."""
    m = hmix.blmer(DYE, hmix.datasets.load("Dyestuff2"))
    np.testing.assert_allclose(m.predict().to_numpy(), m.fitted.to_numpy(), rtol=1e-12)
    sims = m.simulate(n=200, seed=1)
    assert abs(float(sims.to_numpy().std()) - math.hypot(1.48874449750042, 3.62615085588275)) < 0.3
    s = m.shrinkage()  # a random intercept: the conditional mode is the shrunken group mean
    np.testing.assert_allclose(
        s["partial_pooling"],
        s["weight"] * s["no_pooling"] + (1 - s["weight"]) * s["complete_pooling"],
        rtol=1e-10,
    )
    assert (s["weight"] > 0).all()  # lmer's singular fit pools completely (weight 0)
    wald = m.confint("wald").loc["(Intercept)"].to_numpy()
    np.testing.assert_allclose(wald, 5.6656 + np.array([-1, 1]) * 1.959964 * 0.898717065670246, rtol=1e-5)
    g = hmix.bglmer(CBPP, hmix.datasets.load("cbpp"))
    new = hmix.datasets.load("cbpp").head(3)
    np.testing.assert_allclose(g.predict(new).to_numpy(), g.fitted.to_numpy()[:3], rtol=1e-10)
