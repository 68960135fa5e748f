"""Shrinkage tables and variance decompositions.

The references are independent computations: group means, per-subject least squares
(numpy.polyfit), per-herd GLMs (statsmodels), closed forms from VarCorr, and the textbook
precision-weighted average that a random intercept's conditional mode must equal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import quiet_glmer

import hmix

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def dyestuff() -> pd.DataFrame:
    return hmix.datasets.load("Dyestuff")


def _assert_weighted_average(s: pd.DataFrame) -> None:
    # tolerance 1e-6 (absolute, the brief's): an algebraic identity for random intercepts in LMMs
    expected = s["weight"] * s["no_pooling"] + (1 - s["weight"]) * s["complete_pooling"]
    np.testing.assert_allclose(s["partial_pooling"], expected, rtol=0, atol=1e-6)


def test_dyestuff_partial_pooling_is_the_weighted_average(dyestuff: pd.DataFrame) -> None:
    m = hmix.lmer("Yield ~ 1 + (1 | Batch)", dyestuff)
    s = m.shrinkage()
    assert list(s.columns) == [
        "group",
        "level",
        "term",
        "n",
        "no_pooling",
        "partial_pooling",
        "complete_pooling",
        "weight",
    ]
    _assert_weighted_average(s)
    means = dyestuff.groupby("Batch")["Yield"].agg(["mean", "size"])
    np.testing.assert_allclose(s["no_pooling"], means.loc[s["level"], "mean"], rtol=1e-12)
    assert s["n"].tolist() == means.loc[s["level"], "size"].tolist()
    assert (s["complete_pooling"] == m.fixef["(Intercept)"]).all()
    assert ((s["weight"] > 0) & (s["weight"] < 1)).all()
    # the conditional mode is the partial-pooling estimate minus the fixed effect, to 1e-9 relative
    modes = m.ranef()["Batch"]["(Intercept)"]
    np.testing.assert_allclose(s["partial_pooling"] - s["complete_pooling"], modes.loc[s["level"]], rtol=1e-9)


def test_unbalanced_dyestuff_weights_fall_with_group_size(dyestuff: pd.DataFrame) -> None:
    drop = {"A": 4, "B": 3, "C": 2, "D": 1}  # sizes 1, 2, 3, 4, 5, 5
    keep = np.ones(len(dyestuff), bool)
    for batch, k in drop.items():
        keep[np.flatnonzero(dyestuff["Batch"].to_numpy() == batch)[:k]] = False
    data = dyestuff.loc[keep]
    before = data.copy()
    m = hmix.lmer("Yield ~ 1 + (1 | Batch)", data)
    s = m.shrinkage("Batch")
    pd.testing.assert_frame_equal(data, before)
    _assert_weighted_average(s)
    assert s["n"].tolist() == [1, 2, 3, 4, 5, 5]
    w = s["weight"].to_numpy()
    assert (np.diff(w[:5]) > 0).all()  # strictly: larger groups are shrunk less
    assert w[4] == pytest.approx(w[5], rel=1e-12)  # equal sizes, equal weights
    # closed form n tau^2 / (n tau^2 + sigma^2) from VarCorr, to 1e-10 relative
    vc = m.varcorr.set_index("group")["vcov"]
    tau2, sigma2 = vc["Batch"], vc["Residual"]
    np.testing.assert_allclose(w, s["n"] * tau2 / (s["n"] * tau2 + sigma2), rtol=1e-10)


def test_weighted_average_with_covariates_and_crossed_factors() -> None:
    # the other fixed effects and the other factor's modes are held at the fit: the identity holds
    sleep = hmix.lmer("Reaction ~ Days + (1 | Subject)", hmix.datasets.load("sleepstudy"))
    _assert_weighted_average(sleep.shrinkage())
    pen = hmix.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", hmix.datasets.load("Penicillin"))
    s = pen.shrinkage()
    assert set(s["group"]) == {"plate", "sample"}
    assert len(s) == 24 + 6
    _assert_weighted_average(s)


def test_random_slopes_own_fit_is_per_subject_least_squares(sleep: hmix.LinearMixedModel) -> None:
    s = sleep.shrinkage()
    data = hmix.datasets.load("sleepstudy")
    for subject, rows in data.groupby("Subject"):
        slope, intercept = np.polyfit(rows["Days"], rows["Reaction"], 1)
        got = s[s["level"] == subject].set_index("term")["no_pooling"]
        # tolerance 1e-8 relative: two least-squares solvers on the same 10 rows
        np.testing.assert_allclose(got[["(Intercept)", "Days"]], [intercept, slope], rtol=1e-8)
    coef = sleep.ranef()["Subject"] + sleep.fixef[["(Intercept)", "Days"]]
    for term in ("(Intercept)", "Days"):
        part = s[s["term"] == term].set_index("level")["partial_pooling"]
        np.testing.assert_allclose(part, coef.loc[part.index, term], rtol=1e-12)
    assert ((s["weight"] > 0) & (s["weight"] < 1)).all()


def test_singular_level_and_group_selection(sleep: hmix.LinearMixedModel) -> None:
    data = hmix.datasets.load("sleepstudy")
    data = data[(data["Subject"] != "308") | (data["Days"] == 0)]  # one row: no own slope
    m = hmix.lmer("Reaction ~ Days + (Days | Subject)", data)
    s = m.shrinkage("Subject")
    lone = s[s["level"] == "308"]
    assert lone["n"].tolist() == [1, 1]
    assert lone["no_pooling"].isna().all() and lone["weight"].isna().all()
    assert lone["partial_pooling"].notna().all()
    assert s[s["level"] != "308"]["no_pooling"].notna().all()
    with pytest.raises(hmix.DataError, match=r"no grouping factor 'Days'.*'Subject'"):
        sleep.shrinkage("Days")


def test_glmm_own_fit_is_the_herd_glm(cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    data = hmix.datasets.load("cbpp")
    s = cbpp.shrinkage()
    assert len(s) == 15
    fixed = cbpp.design.X @ cbpp.beta
    off = fixed - cbpp.fixef["(Intercept)"]  # period effects held at their estimates
    herds = cbpp.design.terms[0].levels
    for herd in herds:
        rows = (data["herd"] == herd).to_numpy()
        y = data.loc[rows, ["incidence", "size"]].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):  # a one-row herd has no residual df
            glm = sm.GLM(
                np.column_stack([y[:, 0], y[:, 1] - y[:, 0]]),
                np.ones((rows.sum(), 1)),
                family=sm.families.Binomial(),
                offset=off[rows],
            ).fit(tol=1e-12)
        got = s.loc[s["level"] == herd, "no_pooling"].item()
        assert got == pytest.approx(glm.params[0], abs=1e-6)  # two IRLS fits, tolerance 1e-6
    np.testing.assert_allclose(
        s["partial_pooling"],
        cbpp.fixef["(Intercept)"] + cbpp.ranef()["herd"].loc[s["level"], "(Intercept)"],
        rtol=1e-12,
    )
    assert ((s["weight"] > 0) & (s["weight"] < 1)).all()
    # the herd with one (large) period row: its weight comes from its trials, not its rows
    assert s.loc[s["level"] == "8", "n"].item() == 1


@pytest.mark.parametrize("family", ["negative_binomial", "gamma"])
def test_dispersion_families_own_fit_is_the_level_glm(family: str) -> None:
    """A negative binomial's and a Gamma's own fits are the level's GLM at the fitted theta or
    phi (statsmodels' NB2 with alpha = 1 / theta, its Gamma with the log link); the weights lie
    in (0, 1)."""
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(15), 12)
    x = rng.normal(size=len(g))
    mu = np.exp(1.0 + 0.4 * x + rng.normal(scale=0.5, size=15)[g])
    y = rng.negative_binomial(3, 3 / (3 + mu)) if family == "negative_binomial" else rng.gamma(4, mu / 4)
    data = pd.DataFrame({"g": g.astype(str), "x": x, "y": y.astype(float)})
    fam = family if family == "negative_binomial" else hmix.Gamma("log")
    m = quiet_glmer("y ~ x + (1 | g)", data, family=fam)
    s = m.shrinkage().set_index("level")
    off = m.fixef["x"] * data["x"].to_numpy()
    sm_family = (
        sm.families.NegativeBinomial(alpha=1 / m.sigma)
        if family == "negative_binomial"
        else sm.families.Gamma(sm.families.links.Log())
    )
    for level in m.design.terms[0].levels:
        rows = (data["g"] == level).to_numpy()
        glm = sm.GLM(data.loc[rows, "y"], np.ones((rows.sum(), 1)), family=sm_family, offset=off[rows])
        want = glm.fit(tol=1e-12).params.iloc[0]
        assert s.loc[level, "no_pooling"] == pytest.approx(want, abs=1e-6)  # two IRLS fits: 1e-6
    assert ((s["weight"] > 0) & (s["weight"] < 1)).all()


def test_zero_inflated_shrinkage_says_it_does_not_apply() -> None:
    sal = hmix.datasets.load("Salamanders")
    m = quiet_glmer("count ~ mined + (1 | site)", sal, family="poisson", zi_formula="~ mined")
    with pytest.raises(hmix.HmixError, match="not available for zero-inflated models"):
        m.shrinkage()


def test_glmm_level_with_no_cases_is_not_estimable() -> None:
    data = hmix.datasets.load("cbpp")
    data.loc[data["herd"] == "3", "incidence"] = 0
    m = quiet_glmer(CBPP, data)
    s = m.shrinkage().set_index("level")
    assert np.isnan(s.loc["3", "no_pooling"])  # the herd's own estimate runs to -infinity
    assert 0 < s.loc["3", "weight"] < 1  # precision from the working weights at the fit
    assert s.drop(index="3")["no_pooling"].notna().all()


def test_poisson_own_fit_closed_form() -> None:
    data = hmix.datasets.load("cbpp")
    m = quiet_glmer("incidence ~ period + offset(np.log(size)) + (1 | herd)", data, family="poisson")
    s = m.shrinkage().set_index("level")
    d = m.design
    off = d.X @ m.beta - m.fixef["(Intercept)"] + d.offset
    herd = np.asarray(d.terms[0].levels)[d.terms[0].refs]
    # the Poisson MLE of an intercept with offset o: log(sum y / sum exp(o)), to 1e-8 relative
    expected = np.log(pd.Series(d.y).groupby(herd).sum() / pd.Series(np.exp(off)).groupby(herd).sum()).loc[
        s.index
    ]
    np.testing.assert_allclose(s["no_pooling"], expected, rtol=1e-8)


def test_variance_decomposition_lmm(dyestuff: pd.DataFrame, sleep: hmix.LinearMixedModel) -> None:
    m = hmix.lmer("Yield ~ 1 + (1 | Batch)", dyestuff)
    v = m.variance_decomposition()
    vc = m.varcorr.set_index("group")["vcov"]
    # tolerance 1e-12 relative: the same numbers, summed
    np.testing.assert_allclose(v["variance"], [vc["Batch"], vc["Residual"]], rtol=1e-12)
    assert v["share"].sum() == pytest.approx(1.0, rel=1e-12)
    assert v.loc[0, "icc"] == pytest.approx(vc["Batch"] / (vc["Batch"] + vc["Residual"]), rel=1e-12)
    assert v.attrs["scale"] == "response"

    # random slopes: the term's average variance over the rows, E[z' Sigma z]
    v = sleep.variance_decomposition()
    vc = sleep.varcorr
    s00, s11 = vc["vcov"].iloc[0], vc["vcov"].iloc[1]
    s01 = vc["vcov"].iloc[2]
    days = hmix.datasets.load("sleepstudy")["Days"]
    expected = s00 + 2 * s01 * days.mean() + s11 * (days**2).mean()
    assert v.loc[0, "variance"] == pytest.approx(expected, rel=1e-12)
    assert v.loc[0, "term"] == "(Intercept) + Days" and np.isnan(v.loc[0, "icc"])
    assert v.attrs["icc_adjusted"] == pytest.approx(v.loc[0, "share"], rel=1e-12)


def test_variance_decomposition_nested_icc() -> None:
    m = hmix.lmer("strength ~ 1 + (1 | batch/cask)", hmix.datasets.load("Pastes"))
    v = m.variance_decomposition().set_index("group")
    total = v["variance"].sum()
    # two samples from one cask share its batch too; tolerance 1e-12 relative
    assert v.loc["batch:cask", "icc"] == pytest.approx(
        (v.loc["batch:cask", "variance"] + v.loc["batch", "variance"]) / total, rel=1e-12
    )
    assert v.loc["batch", "icc"] == pytest.approx(v.loc["batch", "variance"] / total, rel=1e-12)


@pytest.mark.parametrize(
    ("link", "residual"), [("logit", np.pi**2 / 3), ("probit", 1.0), ("cloglog", np.pi**2 / 6)]
)
def test_variance_decomposition_binomial_latent_scale(link: str, residual: float) -> None:
    m = quiet_glmer(CBPP, hmix.datasets.load("cbpp"), link=link)
    v = m.variance_decomposition()
    assert v.attrs["scale"] == "latent" and link in v.attrs["residual"]
    assert v["variance"].iloc[-1] == pytest.approx(residual, rel=1e-12)
    tau2 = m.varcorr["vcov"].iloc[0]
    assert v["icc"].iloc[0] == pytest.approx(tau2 / (tau2 + residual), rel=1e-12)


def test_variance_decomposition_poisson_lognormal() -> None:
    m = quiet_glmer("incidence ~ 1 + (1 | herd)", hmix.datasets.load("cbpp"), family="poisson")
    v = m.variance_decomposition()
    tau2 = m.varcorr["vcov"].iloc[0]
    lam = np.exp(m.fixef["(Intercept)"] + tau2 / 2)  # Nakagawa & Schielzeth's lambda
    assert v.attrs["poisson_mean"] == pytest.approx(lam, rel=1e-12)
    assert v["variance"].iloc[-1] == pytest.approx(np.log(1 + 1 / lam), rel=1e-12)
    assert "lognormal" in v.attrs["residual"]
