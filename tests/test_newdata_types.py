"""New data are coded by value against the fit's levels, whatever their dtype (issue 13).

Reference: hmix's own prediction with new data of the fit's dtype (the first cbpp row against
lme4's 0.30816 is checked in test_predict.py); every other dtype must give it to 1e-12 relative,
or a DataError naming the column and the fitted levels. Never a silently different number.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hmix

FORMULA = "cbind(incidence, size - incidence) ~ {period} + (1 | herd)"

# how the fit's data hold period (levels 1..4), and the formula term that makes it a factor
FIT_TYPES: dict[str, tuple[Callable[[pd.Series], Any], str]] = {
    "str": (lambda s: s.astype(str), "period"),
    "object": (lambda s: s.astype(str).astype(object), "period"),
    "category-str": (lambda s: s.astype(str).astype("category"), "period"),
    "category-int": (lambda s: s.astype(int).astype("category"), "period"),
    "nullable-string": (lambda s: s.astype(str).astype("string"), "period"),
    "int": (lambda s: s.astype(int), "C(period)"),
    "nullable-Int64": (lambda s: s.astype(int).astype("Int64"), "C(period)"),
}

# how new data hold the values 2 and 4
NEW_TYPES: dict[str, Callable[[list[int]], Any]] = {
    "str": lambda v: [str(x) for x in v],
    "object": lambda v: pd.Series([str(x) for x in v], dtype=object),
    "int": lambda v: v,
    "float": lambda v: [float(x) for x in v],
    "category-str": lambda v: pd.Categorical([str(x) for x in v]),
    "category-int": lambda v: pd.Categorical(v),
    "nullable-Int64": lambda v: pd.array(v, dtype="Int64"),
    "nullable-string": lambda v: pd.array([str(x) for x in v], dtype="string"),
}


def _fit(fit_type: str) -> hmix.GeneralizedLinearMixedModel:
    convert, term = FIT_TYPES[fit_type]
    data = hmix.datasets.load("cbpp")
    data = data.assign(period=convert(data["period"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.HmixWarning)
        return hmix.glmer(FORMULA.format(period=term), data, family="binomial")


_FITS: dict[str, hmix.GeneralizedLinearMixedModel] = {}


def fitted(fit_type: str) -> hmix.GeneralizedLinearMixedModel:
    if fit_type not in _FITS:
        _FITS[fit_type] = _fit(fit_type)
    return _FITS[fit_type]


def test_the_issue_example_string_fit_integer_newdata() -> None:
    """cbpp with string period: period 2 given as an integer is the level "2" (issue 13's 0.1417)."""
    g = fitted("str")
    as_text = g.predict(pd.DataFrame({"period": ["2"], "herd": ["1"]}), type="response")
    as_int = g.predict(pd.DataFrame({"period": [2], "herd": ["1"]}), type="response")
    assert as_text.iloc[0] == pytest.approx(0.1417, abs=5e-4)
    assert as_int.iloc[0] == pytest.approx(as_text.iloc[0], rel=1e-12)


@pytest.mark.parametrize("fit_type", list(FIT_TYPES))
@pytest.mark.parametrize("new_type", list(NEW_TYPES))
def test_every_dtype_combination_codes_by_value(fit_type: str, new_type: str) -> None:
    g = fitted(fit_type)
    reference = fitted("str").predict(pd.DataFrame({"period": ["2", "4"], "herd": ["1", "5"]}))
    new = pd.DataFrame({"period": NEW_TYPES[new_type]([2, 4]), "herd": [1, "5"]})
    np.testing.assert_allclose(g.predict(new), reference, rtol=1e-9)


@pytest.mark.parametrize("fit_type", list(FIT_TYPES))
@pytest.mark.parametrize("value", [9, "9", 2.5, "two"])
def test_a_value_that_is_no_fitted_level_is_refused(fit_type: str, value: Any) -> None:
    g = fitted(fit_type)
    new = pd.DataFrame({"period": [value], "herd": ["1"]})
    with pytest.raises(hmix.DataError, match=r"column 'period'.*not fitted with.*fitted levels are .*1.*4"):
        g.predict(new)


def test_c_of_integers_with_strings_in_new_data() -> None:
    """C(period) on integers at fit time: "2" is the level 2, not the baseline with a warning."""
    g = fitted("int")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # formulaic's DataMismatchWarning would fail here
        p = g.predict(pd.DataFrame({"period": ["2", "3"], "herd": ["1", "1"]}), new_levels="error")
    q = fitted("str").predict(pd.DataFrame({"period": ["2", "3"], "herd": ["1", "1"]}))
    np.testing.assert_allclose(p, q, rtol=1e-9)


@pytest.mark.parametrize("new_subject", [308, "308", 308.0, np.int32(308)])
def test_grouping_levels_match_by_value(sleep: hmix.LinearMixedModel, new_subject: Any) -> None:
    reference = sleep.predict(pd.DataFrame({"Days": [3], "Subject": ["308"]}))
    got = sleep.predict(pd.DataFrame({"Days": [3], "Subject": [new_subject]}))
    np.testing.assert_allclose(got, reference, rtol=1e-12)


def test_numeric_fit_integer_subjects_and_string_new_levels() -> None:
    d = hmix.datasets.load("sleepstudy")
    m = hmix.lmer("Reaction ~ Days + (1 | Subject)", d.assign(Subject=d["Subject"].astype(int)))
    p = m.predict(pd.DataFrame({"Days": [1, 1], "Subject": ["309", "NEW"]}), new_levels="nan")
    assert np.isfinite(p.iloc[0]) and np.isnan(p.iloc[1])
    assert p.iloc[0] == pytest.approx(m.predict(pd.DataFrame({"Days": [1], "Subject": [309]})).iloc[0])
