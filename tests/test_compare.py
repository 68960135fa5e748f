"""Likelihood-ratio tests and information criteria against lme4's anova()
(tests/reference/lme4_inference.json): chi-square and p within 1e-4 relative."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import reference

import hmix


def test_sleepstudy_lrt_refits_by_ml() -> None:
    ref = reference("lme4_inference.json")["lrt_sleepstudy"]
    d = hmix.datasets.load("sleepstudy")
    m1 = hmix.lmer("Reaction ~ Days + (Days | Subject)", d)
    m0 = hmix.lmer("Reaction ~ Days + (1 | Subject)", d)
    with pytest.warns(hmix.HmixWarning, match="refitting model"):
        table = hmix.compare(m1, m0)  # ordered by complexity whatever the argument order
    assert list(table.index) == ref["models"]
    assert list(table["npar"]) == ref["npar"]
    for col in ["AIC", "BIC", "logLik", "deviance"]:
        np.testing.assert_allclose(table[col], ref[col], rtol=1e-6)
    assert table["Chisq"].iloc[1] == pytest.approx(ref["chisq"], rel=1e-4)
    assert table["Df"].iloc[1] == ref["df"]
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(ref["p"], rel=1e-4)
    assert np.isnan(table["Chisq"].iloc[0])
    assert m1.REML  # the user's fits are untouched


def test_cbpp_lrt() -> None:
    ref = reference("lme4_inference.json")["lrt_cbpp"]
    c = hmix.datasets.load("cbpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.HmixWarning)
        full = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", c, family="binomial")
        null = hmix.glmer("cbind(incidence, size - incidence) ~ 1 + (1 | herd)", c, family="binomial")
    table = hmix.compare(null, full, names=["null", "period"])
    assert list(table.index) == ["null", "period"]
    assert table["Chisq"].iloc[1] == pytest.approx(ref["chisq"], rel=1e-4)
    assert table["Df"].iloc[1] == ref["df"]
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(ref["p"], rel=1e-4)
    np.testing.assert_allclose(table["AIC"], ref["AIC"], rtol=1e-5)


def test_refit_false_compares_reml_criteria_with_a_warning_when_fixed_effects_differ() -> None:
    d = hmix.datasets.load("sleepstudy")
    a = hmix.lmer("Reaction ~ Days + (1 | Subject)", d)
    b = hmix.lmer("Reaction ~ 1 + (1 | Subject)", d)
    with pytest.warns(hmix.HmixWarning, match="not meaningful"):
        table = hmix.compare(a, b, refit=False)
    assert table["deviance"].iloc[0] == pytest.approx(b.objective)


def test_compare_errors() -> None:
    d = hmix.datasets.load("sleepstudy")
    m = hmix.lmer("Reaction ~ Days + (1 | Subject)", d, REML=False)
    with pytest.raises(hmix.DataError, match="two or more"):
        hmix.compare(m)
    small = hmix.lmer("Reaction ~ Days + (1 | Subject)", d.iloc[:100], REML=False)
    with pytest.raises(hmix.DataError, match="different numbers of observations"):
        hmix.compare(m, small)
