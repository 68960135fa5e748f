"""Model matrices: response, X, random-effects terms, missing values and input errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hmix
from hmix import DataError, FormulaError, MissingDataWarning, build_design
from hmix.errors import HmixWarning


@pytest.fixture
def sleep() -> pd.DataFrame:
    return hmix.datasets.load("sleepstudy")


def test_sleepstudy_matrices(sleep: pd.DataFrame) -> None:
    d = build_design("Reaction ~ Days + (Days | Subject)", sleep)
    assert d.fixef_names == ("(Intercept)", "Days")
    np.testing.assert_array_equal(d.X[:, 1], sleep["Days"].to_numpy())
    np.testing.assert_array_equal(d.y, sleep["Reaction"].to_numpy())
    (t,) = d.terms
    assert t.group == "Subject" and t.names == ("(Intercept)", "Days")
    assert t.nlevels == 18 and t.k == 2 and t.ntheta == 3
    assert list(t.levels[:3]) == ["308", "309", "310"]
    assert t.cov.theta_names(t.group, t.names) == [
        "Subject.(Intercept)",
        "Subject.Days.(Intercept)",
        "Subject.Days",
    ]


def test_interaction_groups_are_observed_combinations() -> None:
    df = pd.DataFrame({"y": np.arange(8.0), "a": list("AABBCCAA"), "b": list("xyxyxyxx")})
    d = build_design("y ~ 1 + (1 | a:b)", df)
    (t,) = d.terms
    assert list(t.levels) == ["A:x", "A:y", "B:x", "B:y", "C:x", "C:y"]
    assert t.nlevels == 6  # all combinations observed here
    d2 = build_design("y ~ 1 + (1 | a:b)", df.iloc[:6].assign(b=list("xxyyxx")))
    assert list(d2.terms[0].levels) == ["A:x", "B:y", "C:x"]  # only the observed ones


def test_nested_expands_and_orders_by_levels() -> None:
    p = hmix.datasets.load("Pastes")
    d = build_design("strength ~ 1 + (1 | batch/cask)", p)
    assert [t.group for t in d.terms] == ["batch:cask", "batch"]
    assert [t.nlevels for t in d.terms] == [30, 10]


def test_factor_slope_gives_one_column_per_level(sleep: pd.DataFrame) -> None:
    df = sleep.assign(phase=np.where(sleep["Days"] < 5, "early", "late"))
    d = build_design("Reaction ~ Days + (0 + phase | Subject)", df)
    (t,) = d.terms
    assert t.k == 2 and len(t.names) == 2
    np.testing.assert_array_equal(t.z.sum(axis=1), 1.0)


def test_offset_in_formula_and_argument_add(sleep: pd.DataFrame) -> None:
    d = build_design("Reaction ~ Days + offset(2 * Days) + (1 | Subject)", sleep, offset=np.ones(180))
    np.testing.assert_allclose(d.offset, 2 * sleep["Days"].to_numpy() + 1)


def test_missing_values_share_one_mask_and_are_reported(sleep: pd.DataFrame) -> None:
    df = sleep.copy()
    df.loc[3, "Reaction"] = np.nan
    df.loc[10, "Days"] = np.nan
    df.loc[20, "Subject"] = None
    before = df.copy()
    with pytest.warns(MissingDataWarning, match="dropped 3 of 180 rows"):
        d = build_design("Reaction ~ Days + (Days | Subject)", df)
    assert d.n == 177 and d.n_dropped == 3
    assert not {3, 10, 20} & set(d.index)
    pd.testing.assert_frame_equal(df, before)  # the caller's frame is untouched


def test_caller_frame_not_modified(sleep: pd.DataFrame) -> None:
    before = sleep.copy()
    hmix.lmer("Reaction ~ np.log(Days + 1) + (Days | Subject)", sleep)
    pd.testing.assert_frame_equal(sleep, before)


def test_unknown_column_suggests_nearest(sleep: pd.DataFrame) -> None:
    with pytest.raises(FormulaError, match="did you mean 'Days'") as err:
        build_design("Reaction ~ Dayz + (1 | Subject)", sleep)
    assert err.value.position == 11
    with pytest.raises(FormulaError, match=r"no column 'Subjct'.*'Subject'"):
        build_design("Reaction ~ Days + (1 | Subjct)", sleep)


def test_one_level_grouping_factor(sleep: pd.DataFrame) -> None:
    df = sleep.assign(one="a")
    with pytest.raises(DataError, match=r"'one'.*1 level"):
        build_design("Reaction ~ Days + (1 | one)", df)


def test_non_numeric_response(sleep: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="response 'Subject' is not numeric"):
        build_design("Subject ~ Days + (1 | Subject)", sleep)


def test_non_finite_values(sleep: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="non-finite"):
        build_design("Reaction ~ np.log(Days) + (1 | Subject)", sleep)
    df = sleep.assign(Reaction=sleep["Reaction"].where(sleep.index != 5, np.inf))
    with pytest.raises(DataError, match=r"non-finite.*\[5\]"):
        build_design("Reaction ~ Days + (1 | Subject)", df)


def test_rank_deficient_columns_dropped_with_message(sleep: pd.DataFrame) -> None:
    df = sleep.assign(Days2=2 * sleep["Days"])
    with pytest.warns(HmixWarning, match="rank deficient so dropping 1 column: Days2"):
        d = build_design("Reaction ~ Days + Days2 + (1 | Subject)", df)
    assert d.fixef_names == ("(Intercept)", "Days")
    assert d.dropped_columns == ("Days2",)


def test_more_random_effects_than_observations() -> None:
    cbpp = hmix.datasets.load("cbpp")
    with pytest.raises(
        DataError, match=r"number of observations \(=56\) <= number of random effects \(=60\)"
    ):
        hmix.lmer("incidence ~ period + (0 + period | herd)", cbpp)


def test_a_level_per_observation(sleep: pd.DataFrame) -> None:
    df = sleep.assign(obs=np.arange(180).astype(str))
    with pytest.raises(DataError, match="180 levels for 180 observations"):
        hmix.lmer("Reaction ~ Days + (1 | obs)", df)


def test_bad_weights(sleep: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="positive"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep, weights=-np.ones(180))
    with pytest.raises(DataError, match="one value per row"):
        build_design("Reaction ~ Days + (1 | Subject)", sleep, weights=np.ones(3))


def test_data_must_be_a_frame() -> None:
    with pytest.raises(DataError, match="DataFrame"):
        build_design("y ~ (1 | g)", {"y": [1.0]})  # type: ignore[arg-type]


def test_categorical_grouping_keeps_level_order(sleep: pd.DataFrame) -> None:
    df = sleep.assign(
        Subject=pd.Categorical(sleep["Subject"], categories=sorted(set(sleep["Subject"]), reverse=True))
    )
    d = build_design("Reaction ~ Days + (1 | Subject)", df)
    assert d.terms[0].levels[0] == "372"


@pytest.mark.parametrize("expr", ["0 + t", "t - 1", "t", "1 + t"])
@pytest.mark.parametrize("kind", ["str", "object"])
def test_a_text_column_in_a_random_term_codes_as_formulaic_does(expr: str, kind: str) -> None:
    """A random-effects term's text column is coded without formulaic's machinery
    (``MainEffectsSpec``): the same names, matrix, categories and new-data coding (a level the fit
    did not see is a row of zeros) as formulaic's spec; a categorical column keeps formulaic."""
    from formulaic import model_matrix

    from hmix.columns import MainEffectsSpec

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"t": rng.choice(["2", "10", "1", "b c", "x[1]"], 60)}).astype({"t": kind})
    fast = MainEffectsSpec.of(expr, df)
    assert fast is not None
    mm = model_matrix(expr, df, output="numpy")
    assert fast.column_names == tuple(mm.model_spec.column_names)
    np.testing.assert_array_equal(fast.matrix(df), np.asarray(mm, dtype=float))
    assert fast.encoder_state["t"][1]["categories"] == mm.model_spec.encoder_state["t"][1]["categories"]
    new = pd.DataFrame({"t": ["1", "b c", "zz"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (formulaic's warning about the unseen level)
        want = mm.model_spec.get_model_matrix(new, na_action="ignore", output="numpy")
    want = np.asarray(want, dtype=float)
    np.testing.assert_array_equal(fast.get_model_matrix(new).to_numpy(), np.nan_to_num(want))
    assert MainEffectsSpec.of(expr, df.astype({"t": "category"})) is None


@pytest.mark.parametrize(
    "expr",
    ["1 + a", "a + x", "x + a", "0 + a", "0 + a + b", "a + b + x", "0 + x + a + b", "x + a + z + b", "a - 1"],
)
@pytest.mark.parametrize("kind", ["str", "object"])
def test_a_fixed_part_of_main_effects_codes_as_formulaic_does(expr: str, kind: str) -> None:
    """The intercept, numeric and text columns as main effects are coded without formulaic's
    machinery (``MainEffectsSpec``): formulaic's names and order, matrix, term structure (which
    the hypotheses read), categories and new-data coding; interactions, transforms and
    categorical columns keep formulaic."""
    from formulaic import model_matrix

    from hmix.columns import MainEffectsSpec

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "a": rng.choice(["p", "q", "10", "2"], 40),
            "b": rng.choice(["u", "v"], 40),
            "x": rng.normal(size=40),
            "z": rng.integers(0, 5, 40),
        }
    ).astype({"a": kind, "b": kind})
    fast = MainEffectsSpec.of(expr, df)
    assert fast is not None
    mm = model_matrix(expr, df, output="numpy")
    assert fast.column_names == tuple(mm.model_spec.column_names)
    np.testing.assert_array_equal(fast.matrix(df), np.asarray(mm, dtype=float))
    assert [(str(t.term), t.columns) for t in fast.structure] == [
        (str(t.term), t.columns) for t in mm.model_spec.structure
    ]
    for c, (_, state) in fast.encoder_state.items():
        assert state["categories"] == mm.model_spec.encoder_state[c][1]["categories"]
    new = pd.DataFrame({"a": ["p", "zz"], "b": ["v", "u"], "x": [1.0, 2.0], "z": [1, 2]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (formulaic's warning about the unseen level)
        want = mm.model_spec.get_model_matrix(new, na_action="ignore", output="numpy")
    want = np.nan_to_num(np.asarray(want, dtype=float))
    np.testing.assert_array_equal(fast.get_model_matrix(new).to_numpy(), want)
    for other in ("a:b", "a * x", "C(a)", "np.log(x) + a"):
        assert MainEffectsSpec.of(other, df) is None
    assert MainEffectsSpec.of(expr, df.astype({"a": "category", "b": "category"})) is None


def test_fixed_spec_codes_new_data_the_same_way() -> None:
    cbpp = hmix.datasets.load("cbpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = build_design("incidence ~ period + (1 | herd)", cbpp)
    assert list(d.fixed_spec.column_names) == ["Intercept", "period[T.2]", "period[T.3]", "period[T.4]"]
    np.testing.assert_array_equal(d.fixed_matrix(cbpp.iloc[[0, 1]]), d.X[:2])


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["b", "a", "10", "2"], ["10", "2", "a", "b"]),  # text: R's sort of strings
        (["3", "1", "10", "2"], ["1", "2", "3", "10"]),  # integer-like: by value
        (["1", "01", "2"], ["01", "1", "2"]),  # equal values: text order breaks the tie
        (["90071992547409931", "90071992547409930"], ["90071992547409930", "90071992547409931"]),
        ([3, 1, 2], [1, 2, 3]),
        (["x", 1, "y"], [1, "x", "y"]),  # mixed types: pandas' order
    ],
)
def test_level_order_does_not_depend_on_row_order(labels: list, expected: list) -> None:
    from hmix.remat import group_codes

    for rows in (labels, labels[::-1]):
        codes, levels = group_codes(pd.DataFrame({"g": rows}), ("g",))
        assert list(levels) == expected
        assert [levels[c] for c in codes] == list(rows)


@pytest.fixture
def dotted() -> pd.DataFrame:
    """Column names as R exports them (lme4's Arabidopsis data has total.fruits, amd, nutrient)."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "total.fruits": rng.poisson(5, 60),
            "amd.x": rng.normal(size=60),
            "gen.id": np.repeat(list("abcdef"), 10),
            "n.tot": 10,
            "off.set": 0.5,
        }
    )
    return df.assign(**{"y.val": 2 * df["amd.x"] + rng.normal(size=60)})


@pytest.mark.parametrize(
    "formula",
    [
        "y.val ~ amd.x + (amd.x | gen.id)",
        "`y.val` ~ `amd.x` + (`amd.x` | `gen.id`)",
        'y.val ~ Q("amd.x") + (amd.x | gen.id)',
        "{y.val * 1} ~ {amd.x * 1} + (amd.x | gen.id)",
    ],
)
def test_dotted_column_names_are_columns(dotted: pd.DataFrame, formula: str) -> None:
    """A dotted name that is a column is that column, written plain, back-quoted or with Q()."""
    d = build_design(formula, dotted)
    np.testing.assert_array_equal(d.y, dotted["y.val"])
    np.testing.assert_array_equal(d.X[:, 1], dotted["amd.x"])
    np.testing.assert_array_equal(d.terms[0].z[:, 1], dotted["amd.x"])
    assert d.terms[0].group == "gen.id" and d.terms[0].nlevels == 6


def test_dotted_names_in_cbind_offsets_and_transformations(dotted: pd.DataFrame) -> None:
    d = build_design("cbind(total.fruits, n.tot) ~ I(amd.x**2) + offset(off.set) + (1 | gen.id)", dotted)
    np.testing.assert_allclose(d.weights, dotted["total.fruits"] + 10)
    assert d.fixef_names == ("(Intercept)", "I(amd.x ** 2)")  # R's spelling: no back-quotes
    assert d.response_name == "cbind(total.fruits, n.tot)"
    np.testing.assert_allclose(d.offset, 0.5)
    d2 = build_design("np.log(total.fruits + 1) ~ amd.x + (1 | gen.id)", dotted)
    np.testing.assert_allclose(d2.y, np.log(dotted["total.fruits"] + 1))
    assert d2.response_name == "np.log(total.fruits + 1)"


def test_dotted_names_that_are_not_columns_keep_their_python_meaning(dotted: pd.DataFrame) -> None:
    d = build_design("y.val ~ np.log(total.fruits + 1) + (1 | gen.id)", dotted)  # np.log is numpy's
    np.testing.assert_allclose(d.X[:, 1], np.log(dotted["total.fruits"] + 1))
    with pytest.raises(FormulaError, match="no column 'amd'"):
        build_design("y.val ~ amd.y + (1 | gen.id)", dotted)


def test_dotted_names_predict(dotted: pd.DataFrame) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.SingularFitWarning)
        m = hmix.lmer("y.val ~ amd.x + offset(off.set) + (1 | gen.id)", dotted)
    np.testing.assert_allclose(m.predict(dotted), m.fitted, rtol=1e-12)
