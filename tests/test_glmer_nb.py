"""Why lme4's glmer.nb and glmmTMB disagree on grouseticks, as docs/pages/counts.md says.

Reference: tests/reference/glmer_nb_comparison.json (make_glmer_nb_comparison.R; lme4 1.1-31,
glmmTMB 1.1.5): both fits, and each package's -2 log L at the other's estimates (lme4's with
tolPwrss = 1e-13). The claim: the two differ only in the Laplace approximation's curvature,
Fisher's (lme4) or the observed information (glmmTMB, hmix). So hmix's objective equals
glmmTMB's at lme4's estimates (1e-8 relative), and hmix with Fisher's curvature, a
``NegativeBinomial`` whose ``observed_laplace`` is off, equals lme4's objective at both points
(1e-5 absolute, lme4's PIRLS tolerance) and refits glmer.nb's estimates (theta 1e-4 relative,
beta within 1e-3 of a standard error, SEs with theta fixed, as lme4 gives them, within 0.1%).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import ClassVar

import numpy as np
import pytest
from conftest import reference, vec

import hmix

REF = "glmer_nb_comparison.json"
FORMULA = "TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION)"


@dataclass(frozen=True, eq=False, repr=False)
class FisherNegativeBinomial(hmix.NegativeBinomial):
    """lme4's negative binomial: the Laplace approximation with PIRLS's Fisher weights."""

    observed_laplace: ClassVar[bool] = False


@cache
def design() -> hmix.Design:
    return hmix.build_design(FORMULA, hmix.datasets.load("grouseticks"))


def objective(family: hmix.NegativeBinomial, at: str) -> float:
    """-2 log L at one package's estimates (theta, random-effect SDs, beta)."""
    e = reference(REF)[at]
    fam = type(family)(theta=e["theta"])
    return hmix.GLMMObjective(design(), fam)(np.r_[vec(e["re_sd"]), vec(e["beta"])])


@pytest.mark.parametrize("at", ["glmer_nb", "glmmTMB"])
def test_hmix_objective_is_glmmtmbs(at: str) -> None:
    key = {"glmer_nb": "lme4_estimates", "glmmTMB": "glmmTMB_estimates"}[at]
    expected = reference(REF)["objective_at"][key]["glmmTMB"]
    assert objective(hmix.NegativeBinomial(), at) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("at", ["glmer_nb", "glmmTMB"])
def test_fisher_curvature_is_lme4s_objective(at: str) -> None:
    key = {"glmer_nb": "lme4_estimates", "glmmTMB": "glmmTMB_estimates"}[at]
    expected = reference(REF)["objective_at"][key]["lme4"]
    assert objective(FisherNegativeBinomial(), at) == pytest.approx(expected, abs=1e-5)


def test_the_two_approximations_differ_at_one_point() -> None:
    """At glmer.nb's estimates the exact curvature puts -2 log L 0.238 higher."""
    gap = objective(hmix.NegativeBinomial(), "glmer_nb") - objective(FisherNegativeBinomial(), "glmer_nb")
    assert gap == pytest.approx(0.238, abs=1e-3)


def test_fisher_curvature_refits_glmer_nb() -> None:
    r = reference(REF)
    lme4 = r["glmer_nb"]
    data = hmix.datasets.load("grouseticks")
    m = hmix.glmer(FORMULA, data, family=FisherNegativeBinomial())
    assert m.sigma == pytest.approx(lme4["theta"], rel=1e-4)
    se = vec(lme4["beta_se"])
    np.testing.assert_array_less(np.abs(m.beta - vec(lme4["beta"])) / se, 1e-3)
    # glmer.nb's optimum in lme4's objective, computed at a tight PIRLS tolerance
    assert m.objective <= r["objective_at"]["lme4_estimates"]["lme4"] + 1e-6
    # lme4's SEs hold theta fixed: so do these
    fixed = hmix.glmer(FORMULA, data, family=FisherNegativeBinomial(theta=lme4["theta"]))
    np.testing.assert_allclose(fixed.std_errors.to_numpy(), se, rtol=1e-3)


def test_errors_with_theta_fixed_as_glmmtmbs() -> None:
    """Freeing theta widens the intercept's SE by 0.12% and the others by under 0.01%
    (glmmTMB's figures; hmix's within 1e-3 relative)."""
    r = reference(REF)
    data = hmix.datasets.load("grouseticks")
    free = hmix.glmer(FORMULA, data, family="negative_binomial").std_errors.to_numpy()
    fixed = hmix.glmer(FORMULA, data, family=hmix.NegativeBinomial(theta=r["glmmTMB"]["theta"]))
    se_fixed = vec(r["glmmTMB_theta_fixed"]["beta_se"])
    np.testing.assert_allclose(fixed.std_errors.to_numpy(), se_fixed, rtol=1e-3)
    np.testing.assert_allclose(free, vec(r["glmmTMB"]["beta_se"]), rtol=1e-3)
    ratio = free / fixed.std_errors.to_numpy()
    assert ratio[0] == pytest.approx(1.0012, abs=2e-4) and np.abs(ratio[1:] - 1).max() < 1e-4
