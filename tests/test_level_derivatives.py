"""Exact derivatives of one-term systems level by level (``LevelDerivatives``), and the Newton
fit they allow: the same optimum as BOBYQA's, a singular fit exactly on its bound."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import load_data

import hmix
from hmix.lmm import LMMObjective


def _cs(drop: bool = False) -> pd.DataFrame:
    d = load_data("cs_sim", ("id", "cond"))
    if drop:  # unbalanced: the levels' blocks differ
        d = d.drop(index=np.random.default_rng(1).choice(len(d), 150, replace=False))
    return d.reset_index(drop=True)


def _central(f: LMMObjective, theta: np.ndarray, h: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    n = len(theta)
    E = np.eye(n) * h
    g = np.array([(f(theta + E[a]) - f(theta - E[a])) / (2 * h) for a in range(n)])
    H = np.empty((n, n))
    for a in range(n):
        for b in range(n):
            H[a, b] = (
                f(theta + E[a] + E[b])
                - f(theta + E[a] - E[b])
                - f(theta - E[a] + E[b])
                + f(theta - E[a] - E[b])
            ) / (4 * h * h)
    return g, H


@pytest.mark.parametrize(
    "formula, data, REML, weighted",
    [
        ("y ~ cond + cs(0 + cond | id)", "cs", False, False),
        ("y ~ cond + cs(0 + cond | id)", "cs_unbalanced", True, True),
        ("y ~ cond + (0 + cond | id)", "cs_unbalanced", False, False),
        ("y ~ x + tnum + ar1(0 + time | id)", "ar1", True, False),
    ],
)
def test_level_derivatives_match_differences(formula: str, data: str, REML: bool, weighted: bool) -> None:
    d = load_data("ar1_sim", ("id", "time")) if data == "ar1" else _cs(data == "cs_unbalanced")
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(d)) if weighted else None
    f = LMMObjective(hmix.build_design(formula, d, weights=w), REML=REML)
    assert f.level_derivatives is not None and f.engine.whole is None
    theta = f.theta0 * 1.1
    g, H = f.derivatives(theta, hessian=True)
    g_fd, H_fd = _central(f, theta)
    assert np.allclose(g, g_fd, rtol=1e-6, atol=1e-5)
    assert np.allclose(H, H_fd, rtol=1e-4, atol=1e-3)
    # the value that comes with them is the engine's
    value, g2, _ = f.value_derivatives(theta)
    assert value == pytest.approx(f(theta), rel=1e-12)
    assert np.allclose(g2, g, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "formula, data",
    [
        ("y ~ cond + cs(0 + cond | id)", "cs"),
        ("y ~ cond + diag(0 + cond | id)", "cs_unbalanced"),
        ("y ~ x + tnum + ar1(0 + time | id)", "ar1"),
    ],
)
@pytest.mark.parametrize("REML", [False, True])
def test_newton_fit_matches_bobyqa(
    formula: str, data: str, REML: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = load_data("ar1_sim", ("id", "time")) if data == "ar1" else _cs(data == "cs_unbalanced")
    m = hmix.lmer(formula, d, REML=REML)
    assert m.optsum.method == "Newton (exact Hessian)" and m.converged
    assert m.optsum.n_evals < 15
    monkeypatch.setattr(LMMObjective, "newton", property(lambda self: False))
    b = hmix.lmer(formula, d, REML=REML)
    assert b.optsum.method == "NLOPT_LN_BOBYQA"
    assert m.objective <= b.objective + 1e-8
    assert m.objective == pytest.approx(b.objective, abs=1e-8)
    assert np.allclose(m.theta, b.theta, rtol=1e-5, atol=1e-6)


def test_newton_singular_fit_ends_on_the_bound() -> None:
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(40), 6)
    x = np.tile(np.arange(6.0), 40)
    y = 1.0 + 0.5 * x + rng.normal(0, 1.0, 40)[g] + rng.normal(0, 1.0, len(g))  # no slope variance
    d = pd.DataFrame({"y": y, "x": x, "g": [f"g{i}" for i in g]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = hmix.lmer("y ~ x + diag(1 + x | g)", d, REML=False)
        f = LMMObjective(hmix.build_design("y ~ x + diag(1 + x | g)", d), REML=False)
    assert f.newton
    # (Newton's steps reach the bound: BOBYQA decides, and snaps the variance to zero)
    assert m.optsum.method == "NLOPT_LN_BOBYQA"
    assert m.singular and m.theta[1] == 0.0 and m.theta[0] > 0.1


def test_newton_leaves_a_variance_clipped_to_zero() -> None:
    """Newton's steps that would cross a variance's bound, where the objective is even in it:
    BOBYQA finds the optimum inside (Newton's method clipped there would stay on the bound)."""
    rng = np.random.default_rng(14)
    g = np.repeat(np.arange(40), 6)
    x = np.tile(np.arange(6.0), 40)
    y = 1.0 + 0.5 * x + rng.normal(0, 1.0, 40)[g] + rng.normal(0, 1.0, len(g))
    d = pd.DataFrame({"y": y, "x": x, "g": [f"g{i}" for i in g]})
    m = hmix.lmer("y ~ x + diag(1 + x | g)", d, REML=False)
    assert not m.singular and m.objective == pytest.approx(739.2707292043074, abs=1e-8)
    assert np.allclose(m.theta, [1.35588691, 0.09430405], atol=1e-7)
