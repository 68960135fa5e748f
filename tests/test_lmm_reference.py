"""LMM fits against lme4 1.1-31 (tests/reference/*.json, made by the R scripts beside them).

Tolerances (the release criteria): objective within 1e-6 relative or lower; beta within 1e-3 of
its standard error; standard errors and sigma within 1e-3 relative; conditional modes within
1e-3 of their conditional SD; singular as lme4 says.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import fit_spec, lme4_cases, lme4_ref, vec

import hmix

CASES = lme4_cases(gaussian=True)
_ref, _vec = lme4_ref, vec


@pytest.mark.parametrize(("sf", "mid"), lme4_cases(gaussian=True, refused=True) + lme4_cases(False, True))
def test_models_lme4_refuses_are_refused(sf: str, mid: str) -> None:
    """What lme4 refuses to fit (its error is in the reference), hmix refuses too."""
    with pytest.raises(hmix.HmixError):
        fit_spec.__wrapped__(sf, mid)


def _list(x: object) -> list:
    return x if isinstance(x, list) else [x]


def _norm(label: str) -> str:
    """lme4 writes nested groups as cask:batch, hmix as batch:cask: compare the parts."""
    return ":".join(sorted(str(label).split(":")))


@pytest.mark.parametrize(("sf", "mid"), CASES)
def test_objective(sf: str, mid: str) -> None:
    m, r = fit_spec(sf, mid), _ref(sf, mid)
    rel = (m.objective - r["objective"]) / abs(r["objective"])
    assert rel < 1e-6, f"objective {m.objective} vs lme4 {r['objective']}"
    assert rel > -1e-4, "far below lme4's optimum: the objective itself is wrong"
    assert m.nobs == r["nobs"]
    assert m.singular == r["singular"]


@pytest.mark.parametrize(("sf", "mid"), CASES)
def test_fixed_effects(sf: str, mid: str) -> None:
    m, r = fit_spec(sf, mid), _ref(sf, mid)
    se_ref = _vec(r["beta_se"])
    beta_ref = _vec(r["beta"])
    assert len(m.beta) == len(beta_ref)
    np.testing.assert_array_less(np.abs(m.beta - beta_ref), 1e-3 * se_ref)
    np.testing.assert_allclose(m.std_errors.to_numpy(), se_ref, rtol=1e-3)
    vcov_ref = np.atleast_2d(np.asarray(r["vcov_beta"], dtype=float))
    np.testing.assert_allclose(m.vcov.to_numpy(), vcov_ref, rtol=2e-3, atol=1e-3 * se_ref.min() ** 2)
    np.testing.assert_allclose(m.sigma, r["sigma"], rtol=1e-3)


@pytest.mark.parametrize(("sf", "mid"), CASES)
def test_likelihood_summaries(sf: str, mid: str) -> None:
    m, r = fit_spec(sf, mid), _ref(sf, mid)
    assert m.npar == r["df"]
    for ours, theirs in [(m.loglik, r["logLik"]), (m.aic, r["AIC"]), (m.bic, r["BIC"])]:
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize(("sf", "mid"), CASES)
def test_theta_and_varcorr(sf: str, mid: str) -> None:
    m, r = fit_spec(sf, mid), _ref(sf, mid)
    np.testing.assert_allclose(m.theta, _vec(r["theta"]), rtol=2e-3, atol=2e-4)
    ours = m.varcorr
    theirs = pd.DataFrame(r["varcorr"])
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(
        ours["sdcor"].to_numpy(float), theirs["sdcor"].to_numpy(float), rtol=2e-3, atol=2e-3
    )


@pytest.mark.parametrize(("sf", "mid"), CASES)
def test_conditional_modes(sf: str, mid: str) -> None:
    m, r = fit_spec(sf, mid), _ref(sf, mid)
    table = m.ranef_table()
    for g in r["ranef"]:
        sub = table[table["group"].map(_norm) == _norm(g["group"])]
        terms = list(dict.fromkeys(sub["term"]))
        ref_terms = _list(g["terms"])
        modes_ref = [_list(v) for v in g["modes"]] if isinstance(g["modes"][0], list) else [g["modes"]]
        sds_ref = [_list(v) for v in g["condsd"]] if isinstance(g["condsd"][0], list) else [g["condsd"]]
        assert len(terms) == len(ref_terms), (terms, ref_terms)
        for ti, term in enumerate(terms):
            rows = sub[sub["term"] == term].set_index(sub[sub["term"] == term]["level"].map(_norm))
            levels = [_norm(lv) for lv in _list(g["levels"])]
            mode_ref = _vec(modes_ref[ti])
            sd_ref = _vec(sds_ref[ti])
            mode = rows.loc[levels, "condval"].to_numpy()
            sd = rows.loc[levels, "condsd"].to_numpy()
            scale = np.where(sd_ref > 0, sd_ref, 1.0)
            np.testing.assert_array_less(np.abs(mode - mode_ref), 1e-3 * scale + 1e-12)
            np.testing.assert_allclose(sd, sd_ref, rtol=2e-3, atol=1e-8)


@pytest.mark.parametrize(("sf", "mid"), CASES)
def test_fitted_and_residuals(sf: str, mid: str) -> None:
    m, r = fit_spec(sf, mid), _ref(sf, mid)
    fitted = m.fitted.to_numpy()[: len(r["fitted"])]
    np.testing.assert_allclose(fitted, _vec(r["fitted"]), rtol=0, atol=1e-3 * r["sigma"])
    resid = m.residuals().to_numpy()[: len(r["resid"])]
    np.testing.assert_allclose(resid, _vec(r["resid"]), rtol=0, atol=1e-3 * r["sigma"])
    np.testing.assert_allclose((m.fitted**2).sum(), r["fitted_sumsq"], rtol=1e-5)
