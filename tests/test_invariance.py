"""What must not change the answer: a predictor's units, row order, level labels.

A slope's theta is inversely proportional to its predictor's units, so the fit works on theta
for columns of Z of unit spread (``ThetaMap.scale``) and ends with Newton steps on the exact
gradient; lme4 1.1-31 misses the optimum of the rescaled sleepstudy model by 1.2 (Days x 1e3)
to 35 (x 1e6) in -2 log-likelihood.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import hmix

SCALES = [1e-6, 1e-4, 1e-3, 1e-2, 1.0, 10.0, 1e3, 1e4, 1e6]


@pytest.fixture(scope="module")
def sleepstudy_fits() -> dict[tuple[float, bool], hmix.LinearMixedModel]:
    data = hmix.datasets.load("sleepstudy")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", hmix.HmixWarning)  # no convergence or singular-fit warning
        for c in SCALES:
            for reml in (False, True):
                out[c, reml] = hmix.lmer(
                    "Reaction ~ Days + (Days | Subject)", data.assign(Days=data["Days"] * c), REML=reml
                )
    return out


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("c", SCALES)
def test_a_predictors_units_do_not_move_the_optimum(
    sleepstudy_fits: dict[tuple[float, bool], hmix.LinearMixedModel], c: float, reml: bool
) -> None:
    """ML: -2 log L is 1751.9393 (lme4's) for every c, to 1e-9 relative; REML: the criterion moves
    by exactly 2 log c (log|X'V^-1 X| has Days's column in it), theta's slope entries by 1/c."""
    m, base = sleepstudy_fits[c, reml], sleepstudy_fits[1.0, reml]
    shift = 2 * math.log(c) if reml else 0.0
    assert m.objective - shift == pytest.approx(base.objective, rel=1e-9)
    if not reml:
        assert m.objective == pytest.approx(1751.939344, abs=1e-5)
    np.testing.assert_allclose(m.theta * np.array([1.0, c, c]), base.theta, rtol=1e-7)
    np.testing.assert_allclose(m.fixef["Days"] * c, base.fixef["Days"], rtol=1e-7)
    assert m.converged and not m.singular


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a / b - 1)))


@pytest.mark.parametrize(
    "name, formula",
    [
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
        ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
    ],
)
@pytest.mark.parametrize("reml", [False, True])
def test_row_order_and_level_labels_do_not_change_theta(name: str, formula: str, reml: bool) -> None:
    """Rows shuffled, levels relabelled (so that they sort in another order): theta within 1e-8."""
    data = hmix.datasets.load(name)
    rng = np.random.default_rng(4)
    m = hmix.lmer(formula, data, REML=reml)
    shuffled = hmix.lmer(formula, data.iloc[rng.permutation(len(data))], REML=reml)
    groups = {g for t in m.design.terms for g in t.group_columns}
    relabelled = data.copy()
    for g in groups:
        levels = relabelled[g].astype(str).unique()
        relabelled[g] = (
            relabelled[g]
            .astype(str)
            .map(dict(zip(levels, [f"L{i:03d}" for i in rng.permutation(len(levels))])))
        )
    renamed = hmix.lmer(formula, relabelled, REML=reml)
    assert _rel(shuffled.theta, m.theta) < 1e-8
    assert _rel(renamed.theta, m.theta) < 1e-8
    # (the objective itself is evaluated to rounding: 1e-12 relative on Penicillin)
    assert shuffled.objective == pytest.approx(m.objective, rel=1e-10)
    assert renamed.objective == pytest.approx(m.objective, rel=1e-10)


def test_lmm_gradient_matches_differences() -> None:
    """The exact gradient of the profiled deviance (ML and REML, weights, crossed and vector
    terms) against central differences, at a point away from the optimum."""
    rng = np.random.default_rng(2)
    n = 300
    import pandas as pd

    df = pd.DataFrame(
        {
            "a": rng.integers(0, 25, n).astype(str),
            "b": rng.integers(0, 8, n).astype(str),
            "x": rng.normal(size=n),
        }
    )
    df["y"] = df["x"] + rng.normal(size=n) + df["a"].astype(int) % 3
    df["w"] = rng.uniform(0.5, 2, n)
    d = hmix.build_design("y ~ x + (x | a) + (1 | b)", df, weights="w")
    for reml in (False, True):
        f = hmix.LMMObjective(d, REML=reml)
        theta = np.array([0.8, 0.3, 0.5, 1.1])
        h = 1e-5
        fd = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(4)])
        np.testing.assert_allclose(f.gradient(theta), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("data", "formula"),
    [
        ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
        ("sleepstudy", "Reaction ~ Days + cs(Days | Subject)"),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ],
)
def test_whole_system_derivatives_match_the_rows(data: str, formula: str) -> None:
    """A small system's exact gradient and Hessian from the whole system's polynomial (ML and
    REML, weights and an offset, a structured term) against the gradient summed over the rows
    (1e-8) and central differences of it (1e-6), away from the optimum."""
    from hmix.engine import Rule

    df = hmix.datasets.load(data)
    rng = np.random.default_rng(3)
    d = hmix.build_design(formula, df, weights=rng.uniform(0.5, 2, len(df)), offset=rng.normal(size=len(df)))
    for reml in (False, True):
        f = hmix.LMMObjective(d, REML=reml)
        rows = hmix.LMMObjective(d, REML=reml, rule=Rule(whole_size=0))
        assert f.engine.whole is not None and rows.engine.whole is None
        theta = f.theta0 * 1.3 + 0.05
        out = f.derivatives(theta, hessian=True)
        assert out is not None and out[1] is not None
        g, H = out
        np.testing.assert_allclose(g, rows.gradient(theta), rtol=1e-8, atol=1e-8 * np.abs(g).max())
        h = 1e-5 * np.maximum(np.abs(theta), 1.0)
        fd = np.column_stack(
            [(rows.gradient(theta + e) - rows.gradient(theta - e)) / (2 * e.max()) for e in np.diag(h)]
        )
        np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-6 * np.abs(H).max())


@pytest.mark.parametrize("c", [1e-4, 1e-2, 100.0, 1e4])
def test_a_predictors_units_do_not_move_a_glmms_optimum(c: float) -> None:
    """grouseticks' Poisson GLMM with a random slope in height: the stages and the checks work on
    scaled parameters, so height in other units gives the same -2 log L (1e-9) and estimates
    (before: 1e4 ran into overflow and a deviance of 114,588 instead of 1821.45)."""
    from conftest import load_data

    df = load_data("grouseticks", ("INDEX", "BROOD", "LOCATION", "YEAR"))
    df["cHEIGHT"] = df["HEIGHT"] - df["HEIGHT"].mean()
    formula = "TICKS ~ YEAR + cHEIGHT + (1 | INDEX) + (1 + cHEIGHT | LOCATION)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", hmix.HmixWarning)
        base = hmix.glmer(formula, df, family="poisson")
        m = hmix.glmer(formula, df.assign(cHEIGHT=df["cHEIGHT"] * c), family="poisson")
    assert m.objective == pytest.approx(base.objective, rel=1e-9)
    np.testing.assert_allclose(m.theta * np.array([1.0, 1.0, c, c]), base.theta, rtol=1e-4)
    np.testing.assert_allclose(m.fixef.to_numpy() * np.array([1, 1, 1, c]), base.fixef.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(m.std_errors.to_numpy() * np.array([1, 1, 1, c]), base.std_errors, rtol=1e-3)


@pytest.mark.parametrize("c", [1e-50, 1e-8, 1e8, 1e50])
def test_the_weights_scale_does_not_move_the_optimum(c: float) -> None:
    """Prior weights x c scale sigma by sqrt(c) and theta by 1 / sqrt(c): the optimizer works on
    theta for unit mean weights, so the fit is the same (before: 1e12 ended 23 units of -2 log L
    off, singular; 1e20 was refused as 'not finite at the starting values')."""
    data = hmix.datasets.load("sleepstudy").assign(w=np.linspace(0.5, 2.0, 180))
    base = hmix.lmer("Reaction ~ Days + (Days | Subject)", data, weights="w")
    m = hmix.lmer("Reaction ~ Days + (Days | Subject)", data.assign(w=data["w"] * c), weights="w")
    np.testing.assert_allclose(m.theta * math.sqrt(c), base.theta, rtol=1e-7)
    np.testing.assert_allclose(m.fixef, base.fixef, rtol=1e-9)
    assert m.sigma / math.sqrt(c) == pytest.approx(base.sigma, rel=1e-8)


def test_gradient_follows_a_new_response() -> None:
    """set_response (bootstrap refits) moves the exact gradient's response too."""
    d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    f = hmix.LMMObjective(d, REML=False)
    theta = np.array([0.9, 0.1, 0.2])
    f.gradient(theta)  # (the first gradient keeps the design's data)
    y = d.y + np.random.default_rng(1).normal(scale=20, size=d.n)
    f.set_response(y)
    fresh = hmix.LMMObjective(d.with_response(y), REML=False)
    np.testing.assert_allclose(f.gradient(theta), fresh.gradient(theta), rtol=1e-8)


@pytest.mark.parametrize("small", [True, False])
def test_a_singular_fit_is_at_the_optimum_of_its_free_parameters(small: bool) -> None:
    """A slope variance at zero: the other parameters end where the exact gradient along them
    vanishes (below 1e-7; before the Newton steps on them, 5e-5 to 4e-3), with the exact Hessian
    of a small (whole) system or the differences of values over the free parameters."""
    import pandas as pd

    rng = np.random.default_rng(7 if small else 8)
    levels, per = (10, 12) if small else (30, 8)
    g = np.repeat(np.arange(levels), per)
    x = np.tile(np.linspace(-1, 1, per), levels)
    y = 1 + 0.5 * x + rng.normal(size=levels)[g] + rng.normal(size=len(g))
    df = pd.DataFrame({"g": g.astype(str), "x": x, "y": y})
    for reml in (False, True):
        with pytest.warns(hmix.SingularFitWarning):
            m = hmix.lmer("y ~ x + (x | g)", df, REML=reml)
        f = hmix.LMMObjective(m.design, REML=reml)
        assert (f.engine.whole is not None) == small
        free = ~(f.scale_mask & (m.theta <= 0))
        assert m.singular and not free.all()
        assert np.abs(f.gradient(m.theta)[free]).max() < 1e-7
