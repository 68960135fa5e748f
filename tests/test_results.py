"""The fitted-model interface and the summary's layout (compared with lme4's printed text)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

import hmix
from hmix.summary import rformat


@pytest.fixture(scope="module")
def sleep_fit() -> hmix.LinearMixedModel:
    return hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))


def test_fitted_model_is_immutable(sleep_fit: hmix.LinearMixedModel) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        sleep_fit.sigma = 1.0  # type: ignore[misc]


def test_accessors(sleep_fit: hmix.LinearMixedModel) -> None:
    m = sleep_fit
    assert isinstance(m.fixef, pd.Series) and list(m.fixef.index) == ["(Intercept)", "Days"]
    assert isinstance(m.vcov, pd.DataFrame) and m.vcov.shape == (2, 2)
    assert m.theta.shape == (3,)
    assert m.nobs == 180 and m.ngroups == {"Subject": 18}
    assert m.npar == 6 and m.df_residual == 174
    assert m.loglik == pytest.approx(-m.objective / 2)
    assert m.aic == pytest.approx(m.objective + 12)
    assert m.bic == pytest.approx(m.objective + 6 * np.log(180))
    assert not m.singular and m.converged
    assert m.optsum.n_evals > 10 and m.optsum.return_code > 0
    assert m.theta_names == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    re = m.ranef()
    assert list(re) == ["Subject"] and re["Subject"].shape == (18, 2)
    table = m.ranef_table()
    assert list(table.columns) == ["group", "term", "level", "condval", "condsd"]
    assert len(table) == 36
    np.testing.assert_allclose(m.fitted + m.residuals(), m.design.y)
    vc = m.varcorr
    assert list(vc.columns) == ["group", "var1", "var2", "vcov", "sdcor"]
    assert vc.iloc[-1]["group"] == "Residual"
    assert vc.iloc[-1]["sdcor"] == pytest.approx(m.sigma)
    cov = vc.iloc[2]
    assert cov["sdcor"] == pytest.approx(cov["vcov"] / (vc.iloc[0]["sdcor"] * vc.iloc[1]["sdcor"]))
    assert set(m.cond_cov()) == {"Subject"} and m.cond_cov()["Subject"].shape == (18, 2, 2)


# lme4 1.1-31's summary() of this fit; lines whose figures agree to the printed digits
LME4_SUMMARY = """\
REML criterion at convergence: 1743.6

Scaled residuals:
    Min      1Q  Median      3Q     Max

Random effects:
 Groups   Name        Variance Std.Dev. Corr
Number of obs: 180, groups:  Subject, 18

Fixed effects:
            Estimate Std. Error t value

Correlation of Fixed Effects:
     (Intr)
Days -0.138"""


def test_summary_layout_matches_lme4(sleep_fit: hmix.LinearMixedModel) -> None:
    text = str(sleep_fit.summary())
    lines = [ln.rstrip() for ln in text.splitlines()]
    assert lines[0] == "Linear mixed model fit by REML ['LinearMixedModel']"
    assert lines[1] == "Formula: Reaction ~ Days + (Days | Subject)"
    assert lines[2] == "   Data: sleepstudy"
    for expected in LME4_SUMMARY.splitlines():
        if expected:
            assert expected.rstrip() in lines, expected
    assert "-3.9536 -0.4634  0.0231  0.4634  5.179" in text  # lme4: 5.1793
    assert " Subject  (Intercept) 612.0" in text or " Subject  (Intercept) 612.1" in text  # lme4: 612.10
    assert "          Days         35.07    5.922   0.07" in text
    assert " Residual             654.94   25.592" in text
    assert "(Intercept)  251.405      6.825  36.83" in text


def test_ml_summary_shows_information_criteria() -> None:
    m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"), REML=False)
    lines = str(m.summary()).splitlines()
    assert lines[0] == "Linear mixed model fit by maximum likelihood  ['LinearMixedModel']"
    assert "     AIC      BIC   logLik deviance df.resid" in lines
    assert "  1763.9   1783.1   -876.0   1751.9      174" in lines


def test_summary_html_and_repr(sleep_fit: hmix.LinearMixedModel) -> None:
    html = sleep_fit.summary()._repr_html_()
    assert "<table" in html and "Random effects" in html and "251.4" in html
    brief = repr(sleep_fit)
    assert "REML criterion at convergence: 1743.628" in brief
    assert "Fixed Effects:" in brief


def test_singular_fit_is_reported() -> None:
    with pytest.warns(hmix.SingularFitWarning):
        m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff2"))
    assert m.singular and m.theta[0] == 0.0
    assert "boundary (singular) fit" in str(m.summary())


def test_missing_rows_reported_in_summary() -> None:
    df = hmix.datasets.load("sleepstudy")
    df.loc[[0, 5], "Reaction"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.MissingDataWarning)
        m = hmix.lmer("Reaction ~ Days + (Days | Subject)", df)
    assert m.n_dropped == 2 and m.nobs == 178
    assert "(2 observations deleted due to missingness)" in str(m.summary())
    assert list(m.fitted.index[:3]) == [1, 2, 3]


@pytest.mark.parametrize(
    ("values", "digits", "expected"),
    [
        ([612.1, 35.07146, 654.94], 4, ["612.10", " 35.07", "654.94"]),
        ([0.7169, 3.7309, 0.3024], 4, ["0.7169", "3.7309", "0.3024"]),
        ([251.405, 10.467, 6.8246, 1.5458], 4, ["251.405", " 10.467", "  6.825", "  1.546"]),
        ([0.0, 13.81], 4, [" 0.00", "13.81"]),
    ],
)
def test_rformat_follows_r(values: list[float], digits: int, expected: list[str]) -> None:
    assert rformat(values, digits) == expected


def test_warnings_point_at_the_users_call() -> None:
    """A warning raised deep inside hmix names the line that called hmix, not hmix's own code."""
    with pytest.warns(hmix.SingularFitWarning) as rec:
        hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff2"))
    assert rec[0].filename == __file__
    d = hmix.datasets.load("sleepstudy").copy()
    d.loc[3, "Days"] = None
    with pytest.warns(hmix.MissingDataWarning) as rec:
        hmix.lmer("Reaction ~ Days + (1 | Subject)", d)
    assert rec[0].filename == __file__
