"""Predictions for new data against lme4's predict() (tests/reference/lme4_inference.json)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import reference

import hmix

INFERENCE = "lme4_inference.json"


def test_sleepstudy_with_and_without_random_effects(sleep: hmix.LinearMixedModel) -> None:
    ref = reference(INFERENCE)["predict_sleepstudy"]
    new = pd.DataFrame(ref["newdata"])
    conditional = sleep.predict(new, new_levels="population")  # NEW: population level, as lme4's
    np.testing.assert_allclose(conditional, ref["conditional"], rtol=1e-6)  # allow.new.levels = TRUE
    np.testing.assert_allclose(sleep.predict(new, random=False), ref["population"], rtol=1e-6)


def test_cbpp_prediction_code_reproduces_lme4(cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    """With lme4's estimates plugged in, hmix's predictions equal lme4's to 1e-6."""
    ref = reference(INFERENCE)["predict_cbpp"]
    fit = reference()["cbpp_laplace"]
    (group,) = fit["ranef"]
    modes = pd.Series(group["modes"][0], index=[str(v) for v in group["levels"]])
    theta = np.atleast_1d(fit["theta"])
    b = modes.loc[list(cbpp.design.terms[0].levels)].to_numpy()
    lme4_model = dataclasses.replace(cbpp, theta=theta, beta=np.asarray(fit["beta"]), u=(b / theta[0],))
    new = pd.DataFrame(ref["newdata"])
    allow = {"new_levels": "population"}  # (a NEW herd: lme4's allow.new.levels = TRUE)
    np.testing.assert_allclose(lme4_model.predict(new, **allow), ref["response"], rtol=1e-6)
    # hmix's own fit sits at a slightly lower deviance (beta within 2e-3 SE of lme4's)
    np.testing.assert_allclose(cbpp.predict(new, **allow), ref["response"], rtol=2e-3)
    eta = cbpp.predict(new, type="link", **allow)
    np.testing.assert_allclose(1 / (1 + np.exp(-eta)), cbpp.predict(new, **allow))


def test_no_newdata_gives_fitted(
    sleep: hmix.LinearMixedModel, cbpp: hmix.GeneralizedLinearMixedModel
) -> None:
    np.testing.assert_allclose(sleep.predict(), sleep.fitted)
    np.testing.assert_allclose(cbpp.predict(), cbpp.fitted)
    np.testing.assert_allclose(cbpp.predict(type="link"), cbpp.linear_predictor)


def test_new_levels_policies(sleep: hmix.LinearMixedModel) -> None:
    new = pd.DataFrame({"Days": [1, 2], "Subject": ["308", "999"]})
    assert np.isnan(sleep.predict(new, new_levels="nan").iloc[1])
    assert not np.isnan(sleep.predict(new, new_levels="nan").iloc[0])
    with pytest.raises(hmix.DataError, match="999"):
        sleep.predict(new, new_levels="error")
    with pytest.raises(hmix.DataError, match="new_levels"):
        sleep.predict(new, new_levels="zero")


def test_new_levels_are_refused_by_default(sleep: hmix.LinearMixedModel) -> None:
    """lme4's allow.new.levels = FALSE: the message names the levels and the argument."""
    from hmix.predict import predict

    new = pd.DataFrame({"Days": [1, 2, 3], "Subject": ["308", "999", "NEW"]})
    msg = r"Subject.*not fitted with: 999, NEW.*new_levels=\"population\""
    with pytest.raises(hmix.DataError, match=msg):
        predict(sleep, new)
    assert np.isfinite(predict(sleep, new, random=False)).all()  # no random effects: no levels


def test_unseen_fixed_effect_level_is_an_error(cbpp: hmix.GeneralizedLinearMixedModel) -> None:
    msg = "'period' of newdata has values the model was not fitted with: '9'"
    with pytest.raises(hmix.DataError, match=msg):
        cbpp.predict(pd.DataFrame({"period": ["9"], "herd": ["1"]}))


def test_missing_values_predict_nan_and_frame_untouched(sleep: hmix.LinearMixedModel) -> None:
    new = pd.DataFrame({"Days": [1.0, np.nan, 3.0], "Subject": ["308", "309", None]})
    before = new.copy()
    pred = sleep.predict(new)
    assert np.isfinite(pred.iloc[0]) and np.isnan(pred.iloc[1]) and np.isnan(pred.iloc[2])
    pd.testing.assert_frame_equal(new, before)


def test_missing_grouping_column(sleep: hmix.LinearMixedModel) -> None:
    with pytest.raises(hmix.DataError, match="random=False"):
        sleep.predict(pd.DataFrame({"Days": [1]}))
    assert sleep.predict(pd.DataFrame({"Days": [0]}), random=False).iloc[0] == pytest.approx(
        sleep.fixef.iloc[0]
    )


def test_numeric_column_given_as_text_in_newdata(sleep: hmix.LinearMixedModel) -> None:
    new = pd.DataFrame({"Days": ["0", "five"], "Subject": ["308", "308"]})
    with pytest.raises(hmix.DataError, match="'Days' must be numeric"):
        sleep.predict(new)


def test_an_offset_argument_must_be_given_again_for_new_data() -> None:
    d = hmix.datasets.load("sleepstudy").assign(o=lambda f: 0.5 * f["Days"])
    m = hmix.lmer("Reaction ~ Days + (1 | Subject)", d, offset="o")
    with pytest.raises(hmix.DataError, match="offset="):
        m.predict(d)
    with pytest.raises(hmix.DataError, match="offset="):
        m.simulate(2, seed=1, newdata=d)
    # given again, new data reproduce the fit (predict) and the fitted-data draws (simulate)
    np.testing.assert_allclose(m.predict(d, offset="o"), m.fitted, rtol=1e-12)
    np.testing.assert_allclose(
        m.simulate(2, seed=1, newdata=d, offset="o"), m.simulate(2, seed=1), rtol=1e-12
    )
