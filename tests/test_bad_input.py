"""Bad input meets hmix's own errors, never a crash from inside numpy, pandas or formulaic.

A property-based test builds small, often broken data frames (missing values, infinities,
constant or one-level columns, strings where numbers belong) and formulas from the bar language,
and fits them: the fit either succeeds or raises HmixError.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hmix

NUMERIC = st.sampled_from([0.0, 1.0, -2.5, 3.0, 7.0, np.nan, np.inf, 1e6])
LABELS = st.sampled_from(["a", "b", "c", "d", None])

FORMULAS = st.sampled_from(
    [
        "y ~ x + (1 | g)",
        "y ~ x + (x | g)",
        "y ~ x + (x || g)",
        "y ~ 1 + (1 | g/h)",
        "y ~ 1 + (1 | g:h)",
        "y ~ x + (1 | g) + (1 | h)",
        "y ~ x + (0 + f | g)",
        "y ~ np.log(x) + (1 | g)",
        "y ~ x + offset(x) + (1 | g)",
        "f ~ x + (1 | g)",
        "y ~ z + (1 | g)",
        "y ~ x + (1 | q)",
        "y ~ x * f + (1 | g)",
    ]
)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(min_value=0, max_value=14))
    return pd.DataFrame(
        {
            "y": draw(st.lists(NUMERIC, min_size=n, max_size=n)),
            "x": draw(st.lists(NUMERIC, min_size=n, max_size=n)),
            "g": draw(st.lists(LABELS, min_size=n, max_size=n)),
            "h": draw(st.lists(LABELS, min_size=n, max_size=n)),
            "f": draw(st.lists(st.sampled_from(["u", "v"]), min_size=n, max_size=n)),
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), FORMULAS, st.booleans())
def test_lmer_raises_only_hmix_errors(df: pd.DataFrame, formula: str, reml: bool) -> None:
    before = df.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m = hmix.lmer(formula, df, REML=reml, check_conv=False)
        except hmix.HmixError:
            pass
        else:
            assert np.isfinite(m.objective)
            assert np.isfinite(m.beta).all()
    pd.testing.assert_frame_equal(df, before)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), FORMULAS, st.sampled_from(["binomial", "poisson"]))
def test_glmer_raises_only_hmix_errors(df: pd.DataFrame, formula: str, family: str) -> None:
    df = df.assign(y=np.where(np.isfinite(df["y"]), np.abs(df["y"]) % 2, df["y"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m = hmix.glmer(formula, df, family=family, check_conv=False)
        except hmix.HmixError:
            pass
        else:
            assert np.isfinite(m.objective)


# ----- named errors for inputs that used to escape as foreign exceptions (issues 13, 18) ----------
SLEEP = hmix.datasets.load("sleepstudy")
F = "Reaction ~ Days + (1 | Subject)"


@pytest.mark.parametrize(
    ("formula", "data", "error", "message"),
    [
        (
            "Reaction ~ Days",
            SLEEP,
            hmix.FormulaError,
            r"no random-effects term: add one such as \(1 \| g\).*statsmodels",
        ),
        (F, SLEEP.iloc[:0], hmix.DataError, "the data have no rows"),
        (F, pd.DataFrame(index=range(5)), hmix.DataError, "the data have no columns"),
        (F, pd.concat([SLEEP, SLEEP[["Days"]]], axis=1), hmix.DataError, "2 columns named 'Days'"),
        (F, pd.concat([SLEEP, SLEEP[["Subject"]]], axis=1), hmix.DataError, "2 columns named 'Subject'"),
        (F, SLEEP.assign(Days=pd.to_timedelta(SLEEP["Days"], unit="D")), hmix.DataError, "durations"),
        (F, SLEEP.assign(Days=SLEEP["Days"] + 1j), hmix.DataError, "column 'Days' holds complex numbers"),
        (
            F,
            SLEEP.assign(Days=pd.Timestamp("2020-01-01") + pd.to_timedelta(SLEEP["Days"], unit="D")),
            hmix.DataError,
            "column 'Days' holds dates",
        ),
        (
            "Reaction ~ I(Days**20) + (1 | Subject)",
            SLEEP,
            hmix.DataError,
            r"'I\(Days \*\* 20\)' overflows 64-bit",
        ),
        (
            F,
            SLEEP.assign(Reaction=SLEEP["Reaction"].where(SLEEP.index != 3, 1e308)),
            hmix.DataError,
            "values too large: overflow in column 'Reaction'",
        ),
        (
            "Reaction ~ x + (1 | Subject)",
            SLEEP.assign(x=SLEEP["Days"] * 1e160),
            hmix.DataError,
            "values too large: overflow in column 'x'",
        ),
        ("Reaction ~ Days + (0 | Subject)", SLEEP, hmix.FormulaError, "has no random effects"),
        ("Reaction ~ Days + (-1 | Subject)", SLEEP, hmix.FormulaError, "has no random effects"),
    ],
)
def test_bad_input_gets_a_named_error(formula: str, data: pd.DataFrame, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        hmix.lmer(formula, data)
    with pytest.raises(error, match=message):
        hmix.build_design(formula, data)


def test_huge_weights_are_named() -> None:
    with pytest.raises(hmix.DataError, match=r"the weights \(largest 1e\+300\).*rescale the weights"):
        hmix.lmer(F, SLEEP, weights=np.full(180, 1e300))


def test_integer_column_names_get_no_nonsense_suggestion() -> None:
    data = SLEEP.set_axis([0, 1, 2], axis=1)
    with pytest.raises(hmix.FormulaError) as err:
        hmix.lmer("`0` ~ `1` + (1 | `2`)", data)
    assert "did you mean" not in str(err.value)
    assert "df.columns = df.columns.astype(str)" in str(err.value)


def test_duplicated_terms_warn() -> None:
    """lme4 fits (1 | g) + (1 | g) too; only the sum of the two variances is identified."""
    with pytest.warns(hmix.HmixWarning, match="only the sum of their variances is identified"):
        hmix.build_design("Reaction ~ Days + (1 | Subject) + (1 | Subject)", SLEEP)
    with pytest.warns(hmix.HmixWarning, match="both have '\\(Intercept\\)'"):
        hmix.build_design("Reaction ~ Days + (1 | Subject) + (Days | Subject)", SLEEP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hmix.build_design("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", SLEEP)  # (x || g)


def test_cbind_response_is_refused_for_an_lmm() -> None:
    from hmix.checks import check_lmer_response

    d = hmix.build_design("cbind(Reaction, Days) ~ 1 + (1 | Subject)", SLEEP)
    with pytest.raises(hmix.DataError, match=r"binomial response.*hmix.glmer"):
        check_lmer_response(d)


def test_a_constant_response_is_named_for_an_lmm() -> None:
    from hmix.checks import check_lmer_response

    d = hmix.build_design(F, SLEEP.assign(Reaction=250.0))
    with pytest.raises(hmix.DataError, match="response 'Reaction' is constant"):
        check_lmer_response(d)
    check_lmer_response(hmix.build_design(F, SLEEP.assign(Reaction=SLEEP["Reaction"] * 1e-20)))


def test_predict_names_a_column_missing_from_new_data(sleep: hmix.LinearMixedModel) -> None:
    with pytest.raises(hmix.DataError, match="newdata has no column 'Days', which the fixed effects use"):
        sleep.predict(pd.DataFrame({"Subject": ["308"]}))


@pytest.mark.parametrize("value", ["no", "False", 0, None, 2.5])
def test_flags_must_be_booleans(value: object) -> None:
    from hmix.checks import check_flag

    with pytest.raises(hmix.DataError, match="must be True or False"):
        check_flag(value, "REML")
    assert check_flag(np.bool_(True), "REML") is True


@pytest.mark.parametrize("value", ["5", 2.5, -1, True])
def test_nagq_must_be_a_whole_number(value: object) -> None:
    """errors.whole_number, which glmer is to call for nAGQ (minimum 0)."""
    from hmix.errors import whole_number

    with pytest.raises(hmix.DataError, match="nAGQ must be a whole number"):
        whole_number(value, "nAGQ", minimum=0)
    assert whole_number(5.0, "nAGQ", minimum=0) == 5


def test_more_random_effects_than_observations_in_a_glmm_is_refused_or_warned() -> None:
    """lme4's glmer refuses a term with more random effects than observations
    (check.nobs.vs.nRE); check_nobs_vs_nre='warning' fits it with a warning."""
    import numpy as np
    import pandas as pd

    import hmix

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"g": np.repeat(list("abcdefghij"), 6), "f": np.tile(list("abcdefgh"), 8)[:60]})
    df["y"] = (rng.uniform(size=60) < 0.5).astype(int)
    with pytest.raises(
        hmix.DataError, match=r"number of observations \(=60\) < number of random effects \(=80\)"
    ):
        hmix.glmer("y ~ 1 + (0 + f | g)", df, family="binomial")
    with pytest.raises(hmix.DataError, match="'stop', 'warning' or 'ignore'"):
        hmix.glmer("y ~ 1 + (0 + f | g)", df, family="binomial", check_nobs_vs_nre="maybe")


def test_too_many_covariance_parameters_are_refused_before_fitting() -> None:
    """(0 + f | g) with f of 40 levels has 820 covariance parameters: refused at once with the
    cheaper structures named, unless max_theta=None."""
    import numpy as np
    import pandas as pd

    import hmix

    rng = np.random.default_rng(2)
    df = pd.DataFrame(
        {"g": np.repeat(np.arange(50).astype(str), 80), "f": np.tile(np.arange(40).astype(str), 100)}
    )
    df["y"] = rng.normal(size=len(df))
    with pytest.raises(
        hmix.DataError, match=r"820 covariance parameters.*diag\(\.\.\. \| g\).*max_theta=None"
    ):
        hmix.lmer("y ~ 1 + (0 + f | g)", df)


def test_a_tiny_response_is_a_response() -> None:
    """The exact-fit check is relative to the response's size: sleepstudy x 1e-20 fits (lme4
    fits it), its -2 log L shifted by 2 n log(1e-20)."""
    import math

    import hmix

    d = hmix.datasets.load("sleepstudy")
    m = hmix.lmer("Reaction ~ Days + (Days | Subject)", d.assign(Reaction=d["Reaction"] * 1e-20), REML=False)
    assert m.objective == pytest.approx(1751.939344 + 2 * 180 * math.log(1e-20), rel=1e-8)


def test_too_many_quadrature_nodes_and_weights_beyond_double_precision_are_named() -> None:
    import hmix

    cbpp = hmix.datasets.load("cbpp")
    with pytest.raises(hmix.DataError, match="at most 100 quadrature nodes"):
        hmix.glmer(
            "cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial", nAGQ=1000
        )
    s = hmix.datasets.load("sleepstudy")
    with pytest.raises(hmix.DataError, match=r"the weights \(largest 1e\+150\) are beyond"):
        hmix.lmer("Reaction ~ Days + (Days | Subject)", s.assign(w=1e150), weights="w")
