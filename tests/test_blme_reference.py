"""blmer and bglmer against R's blme 1.0-5 (tests/reference/blme_priors*.json; made by
make_blme_reference.R from the specs beside them, blme's fits polished by a second optimizer, see
tests/reference/README_glmmtmb_blme.md).

Tolerances (the issue's criteria): theta within 1e-3 relative (1e-6 absolute for elements near 0),
beta within 2e-3 of a standard error, standard errors within 2%, the penalized criterion within
1e-6 relative or lower, sigma within 1e-4 relative; blme's reported (unpenalized) criterion
within 1e-6 relative; the summary's prior lines as blme prints them. The objective functions
themselves are checked at blme's optimum to 1e-9 relative (no optimizer involved).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from conftest import load_data, reference

import hmix
from hmix import priors as P
from hmix.blme import PenalizedLMM
from hmix.remat import ThetaMap

FILES = ("blme_priors.json", "blme_priors_extra.json")

# blme's prior arguments (the R text in each entry's cov_prior / fixef_prior / resid_prior) in hmix
ARGS: dict[str, dict[str, Any]] = {
    "sleep_wishart_reml": {},
    "sleep_wishart_ml": {},
    "dye2_wishart_reml": {},
    "dye2_wishart_ml": {},
    "dye_gamma_reml": {"cov_prior": P.Gamma(shape=2.5, rate=0)},
    "dye_gamma_ml": {"cov_prior": P.Gamma(shape=2.5, rate=0)},
    "dye_invgamma_reml": {"cov_prior": P.InvGamma(shape=2, scale=1)},
    "dye_invgamma_ml": {"cov_prior": P.InvGamma(shape=2, scale=1)},
    "dye2_gamma_reml": {"cov_prior": "gamma"},
    "dye2_gamma_ml": {"cov_prior": "gamma"},
    "dye2_invgamma_reml": {"cov_prior": P.InvGamma(2, 1)},
    "dye2_invgamma_ml": {"cov_prior": P.InvGamma(2, 1)},
    "dye_gamma_abs_ml": {"cov_prior": P.Gamma(2.5, 0.01, common_scale=False)},
    "dye_invgamma_abs_ml": {"cov_prior": P.InvGamma(2, 40, common_scale=False)},
    "sleep_normal_reml": {"cov_prior": None, "fixef_prior": P.Normal(sd=(10, 2.5))},
    "sleep_normal_ml": {"cov_prior": None, "fixef_prior": "normal"},
    "sleep_normal_abs_ml": {"cov_prior": None, "fixef_prior": P.Normal(sd=(300, 20), common_scale=False)},
    "sleep_resid_point_ml": {"cov_prior": None, "resid_prior": P.Point(30)},
    "sleep_resid_invgamma_reml": {"cov_prior": None, "resid_prior": P.InvGamma(shape=2, scale=1000)},
    "cbpp_wishart": {},
    "cbpp_wishart_normal": {"fixef_prior": "normal"},
    "sleep_invwishart_reml": {"cov_prior": "invwishart"},
    "sleep_wishart_scale_abs_ml": {"cov_prior": P.Wishart(df=4, scale=[100, 10], common_scale=False)},
    "dye_invgamma_sd_abs_ml": {"cov_prior": P.InvGamma(2, 40, posterior_scale="sd", common_scale=False)},
    "sleep_resid_gamma_ml": {"cov_prior": None, "resid_prior": P.Gamma(shape=2, rate=0.001)},
    "sleep_normal_cov_ml": {"cov_prior": None, "fixef_prior": P.Normal(cov=[[100, 5], [5, 9]])},
    "penicillin_per_term_reml": {"cov_prior": {"plate": P.Gamma(2, 0.5), "sample": P.InvGamma(2, 1)}},
    "cbpp_invwishart_t": {"cov_prior": "invwishart", "fixef_prior": "t"},
    "cbpp_invgamma": {"cov_prior": P.InvGamma(shape=2, scale=1)},
}


# blme's ways of finding sigma (blmerControl's sigmaOptimizationType) and hmix's names for them
SIGMA_MODES = {
    "sigma.sq.linear": "linear",
    "sigma.sq.quadratic": "sq_quadratic",
    "sigma.quadratic": "quadratic",
    "point": "fixed",
    "numeric": "numeric",
}


def _entries(engine: str) -> list[tuple[str, str]]:
    return [(f, k) for f in FILES for k, r in reference(f).items() if k != "_info" and r["engine"] == engine]


PENALIZED = _entries("blmer") + _entries("bglmer")


def test_every_reference_is_mapped() -> None:
    assert {k for _, k in PENALIZED} == set(ARGS)


def _data(r: dict[str, Any]) -> Any:
    return load_data(r["data"], tuple(r["factors"]))


_FITS: dict[str, Any] = {}


def _fit(file: str, mid: str) -> Any:
    if mid not in _FITS:
        r = reference(file)[mid]
        with warnings.catch_warnings():
            warnings.simplefilter("error", hmix.HmixWarning)  # none of these fits should warn
            if r["engine"] == "blmer":
                _FITS[mid] = hmix.blmer(r["r_formula"], _data(r), REML=r["REML"], **ARGS[mid])
            else:
                _FITS[mid] = hmix.bglmer(r["r_formula"], _data(r), family=r["family"], **ARGS[mid])
    return _FITS[mid]


@pytest.mark.parametrize(("file", "mid"), PENALIZED)
def test_estimates(file: str, mid: str) -> None:
    m, r = _fit(file, mid), reference(file)[mid]
    np.testing.assert_allclose(m.theta, r["theta"], rtol=1e-3, atol=1e-6)
    se = np.asarray(r["beta_se"])
    assert np.abs((m.beta - r["beta"]) / se).max() < 2e-3
    np.testing.assert_allclose(m.std_errors.to_numpy(), se, rtol=0.02)
    np.testing.assert_allclose(m.sigma, r["sigma"], rtol=1e-4)
    assert not m.singular and m.singular == r["singular"]


@pytest.mark.parametrize(("file", "mid"), PENALIZED)
def test_criteria(file: str, mid: str) -> None:
    m, r = _fit(file, mid), reference(file)[mid]
    target = r["penalized_objective"]
    rel = (m.penalized_objective - target) / abs(target)
    assert -1e-4 < rel < 1e-6, f"penalized criterion {m.penalized_objective} vs blme {target}"
    np.testing.assert_allclose(m.objective, r["reported_criterion"], rtol=1e-6)
    np.testing.assert_allclose(m.penalty, r["penalty"], atol=1e-6 * abs(target))


@pytest.mark.parametrize(("file", "mid"), PENALIZED)
def test_prior_lines(file: str, mid: str) -> None:
    m, r = _fit(file, mid), reference(file)[mid]
    assert m.priors.lines() == r["prior_summary"]
    text = str(m.summary())
    assert text.startswith("\n".join(r["prior_summary"]))
    assert f"Prior dev  : {round(m.penalty, 4)}" in text


@pytest.mark.parametrize(("file", "mid"), _entries("blmer"))
def test_lmm_objective_at_blme_optimum(file: str, mid: str) -> None:
    """hmix's penalized criterion at blme's parameters (theta, then sigma where blme optimizes it)."""
    r = reference(file)[mid]
    design = hmix.build_design(r["r_formula"], _data(r))
    pr = P.resolve(design, **{"cov_prior": "wishart", **ARGS[mid]}, glmm=False)
    f = PenalizedLMM(design, r["REML"], pr)
    assert f.mode == SIGMA_MODES[r["sigma_optimization"]]
    np.testing.assert_allclose(f(np.asarray(r["par"])), r["devfun_at_par"], rtol=1e-9)


@pytest.mark.parametrize(("file", "mid"), _entries("bglmer"))
def test_glmm_objective_at_blme_optimum(file: str, mid: str) -> None:
    """The Laplace deviance plus the penalty at blme's (theta, beta) (blme at tolPwrss 1e-12)."""
    r = reference(file)[mid]
    design = hmix.build_design(r["r_formula"], _data(r))
    pr = P.resolve(design, **{"cov_prior": "wishart", **ARGS[mid]}, glmm=True)
    penalty = pr.glmm_penalty(ThetaMap.of(design.terms))
    obj = hmix.GLMMObjective(design, hmix.get_family(r["family"]), penalty=penalty)
    np.testing.assert_allclose(obj(np.asarray(r["par"])), r["devfun_at_par"], rtol=1e-9)


def test_wishart_is_gamma_on_a_scalar_term() -> None:
    """blme: the default Wishart on a scalar term is Gamma(2.5, 0) on its SD (identical figures)."""
    for reml in ("reml", "ml"):
        a, b = _fit(FILES[0], f"dye2_wishart_{reml}"), _fit(FILES[0], f"dye2_gamma_{reml}")
        np.testing.assert_allclose(a.theta, b.theta, rtol=1e-8)
        assert abs(a.penalized_objective - b.penalized_objective) < 1e-9


@pytest.mark.parametrize("mid", ["dye2_lmer_reml", "dye2_lmer_ml"])
def test_lmer_is_singular_where_blmer_is_not(mid: str) -> None:
    """lme4's fit of Dyestuff2 is singular; the message suggests blmer, whose fit is not."""
    r = reference(FILES[0])[mid]
    with pytest.warns(hmix.SingularFitWarning, match="hmix.blmer"):
        m = hmix.lmer(r["r_formula"], _data(r), REML=r["REML"])
    assert m.singular and r["singular"]
    np.testing.assert_allclose(m.objective, r["reported_criterion"], rtol=1e-6)
    b = _fit(FILES[0], mid.replace("lmer", "wishart"))
    assert not b.singular and b.theta[0] > 0.3
