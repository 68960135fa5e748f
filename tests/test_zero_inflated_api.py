"""What a user of a zero-inflated model asks of it beyond the fit: predictions with standard
errors and intervals on every scale (glmmTMB's ``predict(se.fit = TRUE)``, from
tests/reference/make_zi_predict_reference.R), residual kinds, and model comparison."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest
from conftest import reference

import hmix

REF = "zi_predict.json"


@cache
def zip_fit() -> hmix.GeneralizedLinearMixedModel:
    sal = hmix.datasets.load("Salamanders")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.SingularFitWarning)
        return hmix.glmer("count ~ mined + (1 | site)", sal, family="poisson", zi_formula="~ mined")


NEW = pd.DataFrame({"mined": ["no", "yes"], "site": ["R-1", "R-1"]})


@pytest.mark.parametrize(
    ("type", "r_type"),
    [("response", "response"), ("zi", "zprob"), ("conditional", "conditional"), ("link", "link")],
)
def test_population_predictions_with_se_are_glmmtmbs(type: str, r_type: str) -> None:
    """fit and SE at the population level on each scale equal glmmTMB's to 1e-5 relative (the
    two fits agree to about 1e-6 in the estimates; the SEs come from the Hessian of each)."""
    r = reference(REF)[r_type]
    got = zip_fit().predict(NEW, random=False, type=type, se_fit=True)
    assert isinstance(got, pd.DataFrame)
    np.testing.assert_allclose(got["fit"], r["fit"], rtol=1e-5)
    np.testing.assert_allclose(got["se"], r["se"], rtol=1e-4)


def test_zero_inflated_intervals_bracket_the_fit_on_their_scale() -> None:
    """The mean's interval is symmetric on the log scale, pi's on the logit scale; the point
    predictions are predict()'s without se_fit."""
    m = zip_fit()
    z = 1.959963984540054
    for type, link in (("response", np.log), ("zi", lambda p: np.log(p / (1 - p)))):
        ci = m.predict(NEW, random=False, type=type, interval="confidence")
        assert isinstance(ci, pd.DataFrame)
        np.testing.assert_allclose(ci["fit"], m.predict(NEW, random=False, type=type), rtol=1e-12)
        mid = (link(ci["lower"]) + link(ci["upper"])) / 2
        np.testing.assert_allclose(mid, link(ci["fit"]), rtol=1e-10)
    ci = m.predict(NEW, random=False, type="response", interval="confidence")
    np.testing.assert_allclose(np.log(ci["upper"] / ci["fit"]), z * ci["se"] / ci["fit"], rtol=1e-10)


def test_conditional_se_is_on_the_response_scale() -> None:
    """type="conditional" with se_fit gives mu and its delta-method SE, not the link scale."""
    m = zip_fit()
    cond = m.predict(NEW, random=False, type="conditional", se_fit=True)
    link = m.predict(NEW, random=False, type="link", se_fit=True)
    assert isinstance(cond, pd.DataFrame) and isinstance(link, pd.DataFrame)
    np.testing.assert_allclose(cond["fit"], np.exp(link["fit"]), rtol=1e-12)
    np.testing.assert_allclose(cond["se"], np.exp(link["fit"]) * link["se"], rtol=1e-12)


def test_zi_prediction_is_named_as_the_others() -> None:
    assert zip_fit().predict(NEW, type="zi").name == "predicted"


def test_residual_kinds() -> None:
    """Pearson by default; deviance and working residuals do not exist for a mixture and are
    refused by name (not silently replaced); an unknown kind is a DataError."""
    m = zip_fit()
    pd.testing.assert_series_equal(m.residuals(), m.residuals("pearson"))
    for kind in ("deviance", "working"):
        with pytest.raises(hmix.DataError, match=f"no {kind} residuals.*'pearson' or 'response'"):
            m.residuals(kind)
    with pytest.raises(hmix.DataError, match="type must be"):
        m.residuals("studentized")
    y = hmix.datasets.load("Salamanders")["count"].to_numpy()
    np.testing.assert_allclose(m.residuals("response"), y - m.fitted, rtol=1e-12)


def test_compare_flags_models_that_are_not_nested() -> None:
    """A larger model without a fixed effect of the smaller gets no likelihood-ratio p-value,
    with a warning that says why and what to use; nested models keep theirs."""
    d = hmix.datasets.load("sleepstudy")
    m0 = hmix.lmer("Reaction ~ Days + (1 | Subject)", d, REML=False)
    m1 = hmix.lmer("Reaction ~ 1 + (Days | Subject)", d, REML=False)
    with pytest.warns(hmix.HmixWarning, match="not nested.*AIC, BIC or loo=True"):
        table = hmix.compare(m0, m1)
    assert np.isnan(table["Pr(>Chisq)"].iloc[1])
    m2 = hmix.lmer("Reaction ~ Days + (Days | Subject)", d, REML=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", hmix.HmixWarning)
        table = hmix.compare(m0, m2)
    assert table["Pr(>Chisq)"].iloc[1] < 1e-8


def test_compare_passes_progress_to_loo() -> None:
    d = hmix.datasets.load("sleepstudy")
    m0 = hmix.lmer("Reaction ~ Days + (1 | Subject)", d, REML=False)
    m2 = hmix.lmer("Reaction ~ Days + (Days | Subject)", d, REML=False)
    table = hmix.compare(m0, m2, loo=True, progress=False)
    assert table["elpd_diff"].max() == 0.0 and table["se_loo"].gt(0).all()


def test_profile_interval_keeps_the_values_its_search_found() -> None:
    """A profile whose warm-started inner fits give another value at a second visit (worse,
    never better) still brackets its crossing where the search found it (scipy's brentq had
    raised "f(a) and f(b) must have different signs" on a zero-inflated profile)."""
    from hmix.confint import _interval

    visits: dict[float, int] = {}

    def f(v: float) -> float:
        visits[v] = visits.get(v, 0) + 1
        return v * v + (0.0 if visits[v] == 1 else 50.0)

    lo, hi = _interval(f, 0.0, 0.0, 0.3, -np.inf, np.inf, 1.96)
    assert lo == pytest.approx(-1.96, abs=1e-8) and hi == pytest.approx(1.96, abs=1e-8)


def test_confint_method_in_lme4s_spelling() -> None:
    m = zip_fit()
    pd.testing.assert_frame_equal(m.confint("Wald"), m.confint("wald"))


def test_compare_nests_fixed_effects_by_their_columns() -> None:
    """An intercept is nested in a factor coded without one (``0 + f``): the test applies."""
    d = hmix.datasets.load("sleepstudy").assign(wk=lambda f: np.where(f["Days"] < 5, "a", "b"))
    m0 = hmix.lmer("Reaction ~ 1 + (1 | Subject)", d, REML=False)
    m1 = hmix.lmer("Reaction ~ 0 + wk + (1 | Subject)", d, REML=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", hmix.HmixWarning)
        table = hmix.compare(m0, m1)
    assert 0 <= table["Pr(>Chisq)"].iloc[1] < 1
