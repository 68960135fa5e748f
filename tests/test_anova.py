"""Tests of model terms (``anova``, ``hmix.anova``, ``hmix.hypotheses``) against lmerTest 3.1.3,
pbkrtest 0.5.2 and car 3.1-1.

Reference: tests/reference/api_reference.json (make_api_reference.R): lmerTest's ``anova(m,
type, ddf)`` tables and hypothesis matrices for balanced and unbalanced factorial models, a
factor by numeric interaction, a slope by factor without the factor's main effect, a polynomial,
a one-term model and an ML fit; car's type III Wald chi-square tests of a Poisson GLMM fitted
with sum-to-zero contrasts.

Tolerances: F, Sum Sq, Mean Sq and the denominator df within 1e-4 relative (what separates hmix
from lmerTest is the two optimizers' theta: the largest difference seen is 2e-5); p-values
through log(p) within 1e-3 relative; hypothesis matrices within 1e-10 (they depend on the codings
only); the GLMM's chi-square within 2e-3 relative (hmix's and lme4's GLMM estimates differ in the
fourth digit).
"""

from __future__ import annotations

import re
import warnings
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import load_data, reference

import hmix
from hmix.anova import f_test, wald_test
from hmix.hypotheses import hypotheses

REF = "api_reference.json"


def _data(entry: dict[str, Any]) -> pd.DataFrame:
    data = load_data(entry["data"], tuple(entry["factors"]))
    if entry.get("drop_every"):
        data = data.drop(data.index[:: entry["drop_every"]]).reset_index(drop=True)
    return data


def _py_formula(r_formula: str) -> str:
    return r_formula.replace("^", "**")


@cache
def _fit(model_id: str, formula: str | None = None) -> hmix.LinearMixedModel:
    e = reference(REF)["anova"][model_id]
    return hmix.lmer(formula or _py_formula(e["r_formula"]), _data(e), REML=e["REML"])


def _tables() -> list[tuple[str, int]]:
    return [(mid, i) for mid, e in reference(REF)["anova"].items() for i in range(len(e["tables"]))]


def _r_name(name: str) -> str:
    """R's spelling of a formulaic column or term name (``Product[T.2]`` -> ``Product2``)."""
    return re.sub(r"\[T\.([^\]]+)\]", r"\1", name).replace("I(Days ** 2)", "I(Days^2)")


def _check_table(table: pd.DataFrame, ref: dict[str, Any]) -> None:
    assert [_r_name(t) for t in table.index] == ref["terms"]
    for col, key in (("F", "F"), ("sum_sq", "sum_sq"), ("mean_sq", "mean_sq"), ("den_df", "den_df")):
        np.testing.assert_allclose(table[col], ref[key], rtol=1e-4, err_msg=col)
    np.testing.assert_array_equal(table["num_df"], ref["num_df"])
    np.testing.assert_allclose(np.log(table["p_value"]), np.log(ref["p"]), rtol=1e-3)


@pytest.mark.parametrize(("model_id", "i"), _tables())
def test_anova_matches_lmertest(model_id: str, i: int) -> None:
    ref = reference(REF)["anova"][model_id]["tables"][i]
    table = _fit(model_id).anova(type={"3": "III", "1": "I"}[ref["type"]], ddf=ref["ddf"])
    _check_table(table, ref)
    heading = table.attrs["heading"]
    assert heading.startswith(f"Type {'III' if ref['type'] == '3' else 'I'} ") and ref["ddf"] in heading


@pytest.mark.parametrize(("model_id", "i"), _tables())
def test_hypotheses_are_lmertests_rows(model_id: str, i: int) -> None:
    ref = reference(REF)["anova"][model_id]["tables"][i]
    m = _fit(model_id)
    H = hypotheses(m.design, "III" if ref["type"] == "3" else "I")
    for name, hyp in ref["hypotheses"].items():
        mine = H[_py_formula(name).replace("Days**2", "Days ** 2")]
        cols = [_r_name(c) for c in m.design.fixef_names]
        assert cols == hyp["columns"]
        np.testing.assert_allclose(mine, np.array(hyp["rows"], dtype=float).reshape(mine.shape), atol=1e-10)


def test_type3_does_not_depend_on_the_coding() -> None:
    """Sum-to-zero contrasts in the formula give lmerTest's (treatment-coded) type III table."""
    f = (
        "Informed.liking ~ C(Product, contr.sum) * C(Information, contr.sum) * Gender"
        " + (1 | Consumer) + (1 | Consumer:Product)"
    )
    m = _fit("ham_3way", f)
    for i in (0, 1):  # Satterthwaite, Kenward-Roger
        ref = reference(REF)["anova"]["ham_3way"]["tables"][i]
        table = m.anova(ddf=ref["ddf"])
        np.testing.assert_allclose(table["F"], ref["F"], rtol=1e-4)
        np.testing.assert_allclose(table["den_df"], ref["den_df"], rtol=1e-4)


def test_glmm_terms_get_wald_chisquare_tests_as_car() -> None:
    ref = reference(REF)["wald"]["grouse_year_height"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.HmixWarning)
        g = hmix.glmer(ref["r_formula"], _data(ref), family="poisson")
    table = g.anova()
    assert list(table.columns) == ["chisq", "df", "p_value"]
    assert list(table.index) == ref["terms"]
    np.testing.assert_allclose(table["chisq"], ref["chisq"], rtol=2e-3)
    np.testing.assert_array_equal(table["df"], ref["df"])
    np.testing.assert_allclose(np.log(table["p_value"]), np.log(ref["p"]), rtol=2e-3)
    assert "Wald" in table.attrs["heading"]
    with pytest.raises(hmix.HmixError, match="Wald chi-square tests"):
        g.anova(ddf="kenward-roger")


def test_single_contrast_f_test_is_the_squared_t_test() -> None:
    """A one-row L: F = t^2 on the t test's df (hmix.ddf, itself checked against lmerTest)."""
    m = _fit("sleep_phase")
    for ddf in ("satterthwaite", "kenward-roger"):
        t = m.coef_table(ddf=ddf)
        for j in range(m.design.p):
            L = np.eye(m.design.p)[j]
            res = f_test(m, L, ddf)
            np.testing.assert_allclose(res["F"], t["statistic"].iloc[j] ** 2, rtol=1e-9)
            np.testing.assert_allclose(res["den_df"], t["df"].iloc[j], rtol=1e-9)
            np.testing.assert_allclose(res["p_value"], t["p_value"].iloc[j], rtol=1e-7)


def test_a_repeated_row_tests_the_same_hypothesis() -> None:
    m = _fit("ham_unbalanced_age")
    L = hypotheses(m.design)["Product"]
    doubled = np.vstack([L, L[:1]])
    for ddf in ("satterthwaite", "kenward-roger"):
        a, b = f_test(m, L, ddf), f_test(m, doubled, ddf)
        assert b["num_df"] == a["num_df"] == 3
        np.testing.assert_allclose(b["F"], a["F"], rtol=1e-8)
    np.testing.assert_allclose(
        f_test(m, doubled, "kenward-roger")["den_df"], f_test(m, L, "kenward-roger")["den_df"]
    )


def test_wald_test_is_the_quadratic_form() -> None:
    m = _fit("sleep_phase")
    L = np.eye(m.design.p)[1:]
    res = wald_test(m, L)
    V = L @ m.vcov.to_numpy() @ L.T
    b = L @ m.beta
    np.testing.assert_allclose(res["chisq"], b @ np.linalg.solve(V, b), rtol=1e-12)
    assert res["df"] == len(L)


def test_intercept_only_model_has_an_empty_table() -> None:
    m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    table = m.anova()
    assert len(table) == 0 and list(table.columns) == [
        "sum_sq",
        "mean_sq",
        "num_df",
        "den_df",
        "F",
        "p_value",
    ]


def test_aliased_columns_are_left_out_with_a_warning() -> None:
    data = load_data("sleepstudy_extra", ("Subject",))
    with pytest.warns(hmix.HmixWarning, match="rank deficient"):
        m = hmix.lmer("Reaction ~ Days + Days2 + phase + (1 | Subject)", data)
    with pytest.warns(hmix.HmixWarning, match="Days2 were dropped as aliased"):
        table = m.anova()
    assert table.loc["Days2", "num_df"] == 0 and np.isnan(table.loc["Days2", "F"])
    assert table.loc["Days", "num_df"] == 1 and np.isfinite(table.loc["Days", "F"])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.anova(type="II"), "type must be 'III'"),
        (lambda m: m.anova(ddf="lme4"), "ddf must be 'satterthwaite' or 'kenward-roger'"),
        (lambda m: f_test(m, [1, 0, 0]), "one column per fixed effect"),
        (lambda m: m.refit_ml().anova(ddf="kenward-roger"), "REML"),
    ],
)
def test_bad_requests_name_the_fix(call: Any, match: str) -> None:
    m = _fit("sleep_single")
    with pytest.raises(hmix.HmixError, match=match):
        call(m)


def test_f_test_refuses_glmms() -> None:
    g = hmix.glmer(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        hmix.datasets.load("cbpp"),
        family="binomial",
    )
    with pytest.raises(hmix.HmixError, match="wald_test"):
        f_test(g, np.eye(4)[1:])


def test_plain_numeric_columns_are_tested_one_by_one() -> None:
    """Without factors or interactions (hmix's fast numeric spec) type III tests each coefficient."""
    data = load_data("sleepstudy_extra", ("Subject",))
    m = hmix.lmer("Reaction ~ Days + w + (1 | Subject)", data)
    H = hypotheses(m.design)
    np.testing.assert_allclose(H["Days"], [[0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(H["w"], [[0, 0, 1]], atol=1e-12)
    t = m.coef_table(ddf="satterthwaite")
    np.testing.assert_allclose(m.anova()["F"], t["statistic"].iloc[1:] ** 2, rtol=1e-9)
