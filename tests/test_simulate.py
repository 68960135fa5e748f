"""simulate() and ppc(): reproducibility, and the simulated moments against the model's marginal
moments (closed forms, or Gauss-Hermite quadrature over the random effect for the binomial).

Monte Carlo tolerances: every per-row check allows 5 standard errors of the simulated mean or
variance; with at most 180 rows the chance that a correct implementation fails one is below 1e-4.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import quiet_glmer
from scipy.special import expit
from scipy.stats import binom

import hmix

NSIM = 4000
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
POISSON = "incidence ~ period + offset(np.log(size)) + (1 | herd)"


@pytest.fixture(scope="module")
def pois() -> hmix.GeneralizedLinearMixedModel:
    return quiet_glmer(POISSON, hmix.datasets.load("cbpp"), family="poisson")


def _within_5_se(sample: np.ndarray, expected: np.ndarray, se: np.ndarray) -> None:
    z = (sample - expected) / se
    assert np.abs(z).max() < 5, f"largest standardized difference {np.abs(z).max():.2f}"


def _check_moments(sims: np.ndarray, mean: np.ndarray, var: np.ndarray, mu4: np.ndarray) -> None:
    """Row means within 5 SE of the mean; row variances within 5 SE of the variance, where
    SE(sample variance) = sqrt((mu4 - var^2) / nsim) from the central fourth moment mu4."""
    n = sims.shape[1]
    _within_5_se(sims.mean(axis=1), mean, np.sqrt(var / n))
    _within_5_se(sims.var(axis=1, ddof=1), var, np.sqrt((mu4 - var**2) / n))


def test_seed_reproducibility(sleep: hmix.LinearMixedModel) -> None:
    a = sleep.simulate(5, seed=11)
    pd.testing.assert_frame_equal(a, sleep.simulate(5, seed=11))
    pd.testing.assert_frame_equal(a, sleep.simulate(5, seed=np.random.default_rng(11)))
    assert not np.allclose(a.to_numpy(), sleep.simulate(5, seed=12).to_numpy())
    assert list(a.columns) == [f"sim_{i}" for i in range(1, 6)]
    assert a.index.equals(sleep.design.index)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(hmix.DataError, match="positive whole number"):
            sleep.simulate(bad)  # type: ignore[arg-type]


def test_sleepstudy_marginal_moments(sleep: hmix.LinearMixedModel) -> None:
    sims = sleep.simulate(NSIM, seed=1).to_numpy()
    d = sleep.design
    (t,) = d.terms
    vc = sleep.varcorr["vcov"].to_numpy()
    Sigma = np.array([[vc[0], vc[2]], [vc[2], vc[1]]])
    var = sleep.sigma**2 + np.einsum("ia,ab,ib->i", t.z, Sigma, t.z)
    # Gaussian: central fourth moment 3 var^2
    _check_moments(sims, d.X @ sleep.beta, var, 3 * var**2)
    # covariances within one subject: z_i' Sigma z_j (+ sigma^2 on the diagonal); the SE of a
    # sample covariance of Gaussians is sqrt((s_ii s_jj + s_ij^2) / nsim)
    rows = np.flatnonzero(t.refs == 0)
    cov = t.z[rows] @ Sigma @ t.z[rows].T + sleep.sigma**2 * np.eye(len(rows))
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / NSIM)
    _within_5_se(np.cov(sims[rows]), cov, se)


def test_sleepstudy_newdata(sleep: hmix.LinearMixedModel) -> None:
    data = hmix.datasets.load("sleepstudy")
    before = data.copy()
    # the fitting data as newdata: the same levels in the same order, so the same draws
    np.testing.assert_allclose(sleep.simulate(3, seed=5, newdata=data), sleep.simulate(3, seed=5), rtol=1e-12)
    pd.testing.assert_frame_equal(data, before)
    new = pd.DataFrame(
        {"Days": [0.0, 9.0, 4.0, np.nan], "Subject": ["NEW", "NEW", "308", "309"]}, index=[10, 11, 12, 13]
    )
    sims = sleep.simulate(NSIM, seed=2, newdata=new)
    assert sims.index.equals(new.index)
    assert sims.loc[13].isna().all() and sims.loc[[10, 11, 12]].notna().all().all()
    # a new level gets draws from the fitted distribution: marginal mean and variance as before
    z = np.array([[1.0, 0.0], [1.0, 9.0], [1.0, 4.0]])
    vc = sleep.varcorr["vcov"].to_numpy()
    Sigma = np.array([[vc[0], vc[2]], [vc[2], vc[1]]])
    var = sleep.sigma**2 + np.einsum("ia,ab,ib->i", z, Sigma, z)
    _check_moments(sims.loc[[10, 11, 12]].to_numpy(), z @ sleep.beta, var, 3 * var**2)
    # rows of one new level share its draw: the covariance of days 0 and 9 is z0' Sigma z9
    c = np.cov(sims.loc[10], sims.loc[11])[0, 1]
    s01 = z[0] @ Sigma @ z[1]
    assert abs(c - s01) < 5 * np.sqrt((var[0] * var[1] + s01**2) / NSIM)
    with pytest.raises(hmix.DataError, match="no column 'Subject'"):
        sleep.simulate(newdata=pd.DataFrame({"Days": [1.0]}))


def test_prior_weights(sleep: hmix.LinearMixedModel) -> None:
    data = hmix.datasets.load("sleepstudy")
    w = np.where(data["Days"] < 5, 4.0, 1.0)
    m = hmix.lmer("Reaction ~ Days + (1 | Subject)", data, weights=w)
    sims = m.simulate(NSIM, seed=3).to_numpy()
    tau2 = m.varcorr["vcov"].iloc[0]
    var = tau2 + m.sigma**2 / w  # sigma^2 / prior weight
    _check_moments(sims, m.design.X @ m.beta, var, 3 * var**2)
    with pytest.raises(hmix.DataError, match="weights="):
        m.simulate(newdata=data)
    np.testing.assert_allclose(
        m.simulate(2, seed=4, newdata=data, weights=w), m.simulate(2, seed=4), rtol=1e-12
    )
    with pytest.raises(hmix.DataError, match="newdata"):
        m.simulate(weights=w)


def _binomial_marginal(model: hmix.GeneralizedLinearMixedModel) -> tuple[np.ndarray, ...]:
    """Exact distribution of each simulated proportion by 80-node Gauss-Hermite quadrature over
    the herd effect: mean, variance and central fourth moment."""
    d = model.design
    tau = np.sqrt(model.varcorr["vcov"].iloc[0])
    nodes, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    m = d.weights.astype(int)  # type: ignore[union-attr]
    mu = expit((d.X @ model.beta)[:, None] + tau * nodes[None, :])  # (rows, nodes)
    k = np.arange(m.max() + 1)
    pmf = np.einsum("inj,n->ij", binom.pmf(k[None, None, :], m[:, None, None], mu[:, :, None]), w)
    p = k[None, :] / m[:, None]
    mean = (pmf * p).sum(axis=1)
    var = (pmf * (p - mean[:, None]) ** 2).sum(axis=1)
    mu4 = (pmf * (p - mean[:, None]) ** 4).sum(axis=1)
    return mean, var, mu4


def test_cbpp_binomial_marginal_moments(cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    sims = cbpp.simulate(NSIM, seed=6).to_numpy()
    trials = cbpp.design.weights
    assert trials is not None
    successes = sims * trials[:, None]
    # proportions of whole numbers of successes out of the cbind() trials, to 1e-9
    np.testing.assert_allclose(successes, np.round(successes), atol=1e-9)
    assert sims.min() >= 0 and sims.max() <= 1
    _check_moments(sims, *_binomial_marginal(cbpp))


def test_cbpp_newdata_takes_trials_from_cbind(cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    data = hmix.datasets.load("cbpp")
    np.testing.assert_allclose(cbpp.simulate(4, seed=7, newdata=data), cbpp.simulate(4, seed=7), rtol=1e-12)
    with pytest.raises(hmix.DataError, match="trials"):
        cbpp.simulate(newdata=data.drop(columns=["size"]))
    one = cbpp.simulate(2, seed=8, newdata=data.drop(columns=["size"]), weights=np.ones(len(data)))
    assert set(np.unique(one.to_numpy())) <= {0.0, 1.0}


def test_poisson_marginal_moments(pois: hmix.GeneralizedLinearMixedModel) -> None:
    sims = pois.simulate(NSIM, seed=9).to_numpy()
    d = pois.design
    tau2 = pois.varcorr["vcov"].iloc[0]
    eta = d.X @ pois.beta + d.offset
    # Poisson-lognormal: factorial moments E[Y(Y-1)...(Y-r+1)] = E[lambda^r] = exp(r eta + r^2 tau2 / 2)
    F = [np.exp(r * eta + r**2 * tau2 / 2) for r in range(1, 5)]
    m1 = F[0]
    m2 = F[1] + F[0]
    m3 = F[2] + 3 * F[1] + F[0]
    m4 = F[3] + 6 * F[2] + 7 * F[1] + F[0]
    var = m2 - m1**2
    mu4 = m4 - 4 * m3 * m1 + 6 * m2 * m1**2 - 3 * m1**4
    np.testing.assert_array_equal(sims, np.round(sims))
    _check_moments(sims, m1, var, mu4)


def test_ppc_statistics(sleep: hmix.LinearMixedModel) -> None:
    r = sleep.ppc("sd", n=300, seed=10)
    sims = sleep.simulate(300, seed=10).to_numpy()
    # the same seed, the same simulations: exact
    np.testing.assert_allclose(r.simulated, sims.std(axis=0, ddof=1), rtol=1e-12)
    assert r.observed == pytest.approx(np.std(sleep.design.y, ddof=1), rel=1e-12)
    assert r.p_upper == np.mean(r.simulated >= r.observed)
    assert r.p_value == min(1.0, 2 * min(r.p_upper, r.p_lower))
    by_name = sleep.ppc("max", n=50, seed=1)
    by_function = sleep.ppc(np.max, n=50, seed=1)
    np.testing.assert_array_equal(by_name.simulated, by_function.simulated)
    assert by_function.stat == "max"
    frame = r.to_frame()
    assert frame.loc[0, "stat"] == "sd" and frame.loc[0, "n"] == 300
    assert "PPC of sd" in repr(r)
    with pytest.raises(hmix.DataError, match="stat must be one of"):
        sleep.ppc("kurtosis")
    with pytest.raises(hmix.DataError, match="one number"):
        sleep.ppc(lambda y: y[:2], n=3)


def test_ppc_flags_zero_inflation() -> None:
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 15)
    lam = np.exp(1.5 + 0.3 * rng.standard_normal(20))[g]
    y = np.where(rng.random(len(g)) < 0.35, 0, rng.poisson(lam))  # 35% structural zeros
    m = quiet_glmer("y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": g.astype(str)}), family="poisson")
    r = m.ppc("zeros", n=300, seed=1)
    # a Poisson GLMM cannot produce that many zeros: the check must say so
    assert r.observed > r.simulated.max()
    assert r.p_value < 0.01
    ok = m.ppc("mean", n=300, seed=1)
    assert ok.p_value > 0.01  # the mean is fitted
