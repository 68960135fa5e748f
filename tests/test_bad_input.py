"""Bad input meets hmix's own errors, never a crash from inside numpy, pandas or formulaic.

A property-based test builds small, often broken data frames (missing values, infinities,
constant or one-level columns, strings where numbers belong) and formulas from the bar language,
and fits them: the fit either succeeds or raises HmixError.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
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
