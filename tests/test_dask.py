"""Fits of Dask DataFrames on a two-worker ``distributed.LocalCluster`` against the same data in
memory (the reference): LMMs to 1e-8 and GLMMs to 1e-6, with the same fitted-model
interface (summary, ranef, predict on pandas new data); what needs the rows says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hmix
from hmix.errors import HmixError

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def frame(seed: int, n: int = 6000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 150, n)
    item = rng.integers(0, 25, n)
    df = pd.DataFrame(
        {
            "u": u,
            "item": np.array([f"i{k}" for k in range(25)])[item],
            "x": rng.normal(size=n),
            "f": rng.choice(["lo", "mid", "hi"], n),
            "w": rng.uniform(0.5, 2.0, n),
        }
    )
    eta = 0.5 * df["x"] + rng.normal(size=150)[u] + 0.6 * rng.normal(size=25)[item]
    df["y"] = eta + rng.normal(size=n)
    df["c"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(int)
    df.loc[::97, "x"] = np.nan  # dropped rows, as in memory
    return df


@pytest.mark.parametrize(
    ("formula", "kwargs"),
    [
        ("y ~ x + f + (1 | u) + (1 | item)", {"REML": True}),
        ("y ~ x + (x | item) + (1 | u)", {"REML": False, "weights": "w"}),
    ],
)
def test_lmm_matches_memory(client: object, formula: str, kwargs: dict) -> None:
    """The in-memory fit's answer to 1e-8 relative: the objective, theta, beta, sigma, the
    covariance of beta, the conditional modes and predictions (both fits end with Newton steps
    on exact derivatives: the rows' gradient in memory, the whole system's from the reduced
    statistics on the cluster; a singular fit's on the parameters off their bounds); the
    summary prints the same text."""
    df = frame(1)
    with pytest.warns(hmix.MissingDataWarning):
        ref = hmix.lmer(formula, df, **kwargs)
    with pytest.warns(hmix.MissingDataWarning, match=f"dropped {ref.n_dropped} of {len(df)} rows"):
        m = hmix.lmer(formula, dd.from_pandas(df, npartitions=4), **kwargs)
    assert m.objective == pytest.approx(ref.objective, rel=1e-8)
    # (relative to each vector's largest entry for entries near zero: a correlation of -0.005)
    np.testing.assert_allclose(m.theta, ref.theta, rtol=1e-8, atol=1e-8 * np.abs(ref.theta).max())
    np.testing.assert_allclose(m.beta, ref.beta, rtol=1e-8, atol=1e-8 * np.abs(ref.beta).max())
    assert m.sigma == pytest.approx(ref.sigma, rel=1e-8)
    V = ref.vcov.to_numpy()
    np.testing.assert_allclose(m.vcov.to_numpy(), V, rtol=1e-8, atol=1e-8 * np.abs(V).max())
    for g, r in ref.ranef().items():
        atol = 1e-8 * float(np.abs(r.to_numpy()).max())
        pd.testing.assert_frame_equal(m.ranef()[g], r, rtol=1e-8, atol=atol, check_index_type=False)
    assert m.nobs == ref.nobs and m.n_dropped == ref.n_dropped
    assert str(m.summary()) == str(ref.summary())
    new = df.head(20).assign(u=lambda d: d["u"].where(d.index % 5 > 0, 10_000))
    for kw in ({"new_levels": "population"}, {"random": False}):
        np.testing.assert_allclose(m.predict(new, **kw), ref.predict(new, **kw), rtol=1e-8)


def test_rows_stay_in_the_cluster(client: object) -> None:
    """What needs the rows says so; weights given as values are refused with what to do."""
    ddf = dd.from_pandas(frame(2), npartitions=3)
    m = hmix.lmer("y ~ x + (1 | u)", ddf)
    with pytest.raises(HmixError, match="stay in the Dask cluster"):
        _ = m.fitted
    with pytest.raises(HmixError, match="stay in the Dask cluster"):
        m.residuals()
    with pytest.raises(hmix.DataError, match="must name a column"):
        hmix.lmer("y ~ x + (1 | u)", ddf, weights=np.ones(6000))


def glmm_frame(seed: int, n: int = 2400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u, item = rng.integers(0, 80, n), rng.integers(0, 12, n)
    df = pd.DataFrame({"u": u, "item": item.astype(str), "x": rng.normal(size=n)})
    eta = 0.5 * df["x"] + rng.normal(size=80)[u] + 0.5 * rng.normal(size=12)[item]
    df["c"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(int)
    df["k"] = rng.poisson(np.exp(0.3 + 0.5 * eta))
    return df


def check_glmm(m: hmix.GeneralizedLinearMixedModel, ref: hmix.GeneralizedLinearMixedModel) -> None:
    assert m.objective == pytest.approx(ref.objective, rel=1e-10)
    np.testing.assert_allclose(m.theta, ref.theta, rtol=1e-6)
    np.testing.assert_allclose(m.beta, ref.beta, rtol=1e-6)
    # (the covariance from differences of gradients at optima 1e-6 apart: 1e-4, and 1e-7 of the
    # variances for a covariance near zero)
    np.testing.assert_allclose(m.vcov.to_numpy(), ref.vcov.to_numpy(), rtol=1e-4, atol=1e-7)
    for g, r in ref.ranef().items():
        pd.testing.assert_frame_equal(m.ranef()[g], r, rtol=1e-6, atol=1e-8, check_index_type=False)
    assert str(m.summary()) == str(ref.summary())
    new = glmm_frame(9).head(10)
    np.testing.assert_allclose(m.predict(new), ref.predict(new), rtol=1e-6)


def test_glmm_matches_memory(client: object) -> None:
    """A crossed binomial GLMM (Laplace: the quasi-Newton stage with the exact gradient, two
    passes a gradient), PIRLS one pass a step: the in-memory fit's answer to 1e-6 relative."""
    df = glmm_frame(1)
    ref = hmix.glmer("c ~ x + (1 | u) + (1 | item)", df, family="binomial")
    check_glmm(
        hmix.glmer("c ~ x + (1 | u) + (1 | item)", dd.from_pandas(df, npartitions=3), family="binomial"), ref
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("formula", "kwargs"),
    [
        ("k ~ x + (1 | u)", {"family": "poisson", "nAGQ": 5}),
        ("c ~ x + (1 | u)", {"family": "binomial", "link": "probit"}),
        ("k ~ x + (1 | u) + (1 | item)", {"family": "poisson", "nAGQ": 0}),
    ],
)
def test_glmm_variants_match_memory(client: object, formula: str, kwargs: dict) -> None:
    """Adaptive Gauss-Hermite, a non-canonical link (three passes a gradient) and nAGQ = 0."""
    df = glmm_frame(2)
    ref = hmix.glmer(formula, df, **kwargs)
    check_glmm(hmix.glmer(formula, dd.from_pandas(df, npartitions=3), **kwargs), ref)


def test_glmm_families_with_extras_refused(client: object) -> None:
    """A dispersion or a zero-inflation part is not fitted from a Dask DataFrame: the message
    says what is and what to do."""
    ddf = dd.from_pandas(glmm_frame(3, n=400), npartitions=2)
    with pytest.raises(hmix.DataError, match=r"lme4's families .*ddf\.compute\(\)"):
        hmix.glmer("k ~ x + (1 | u)", ddf, family="negative_binomial")
    with pytest.raises(hmix.DataError, match="with zi_formula"):
        hmix.glmer("k ~ x + (1 | u)", ddf, family="poisson", zi_formula="~ 1")


def test_size_guard_applies_to_dask_frames(client: object) -> None:
    """max_theta refuses a Dask fit as an in-memory one, before the statistics' pass."""
    df = pd.DataFrame({"g": np.repeat(np.arange(30), 20), "f": np.tile(np.arange(20), 30)}).astype(str)
    df["y"] = np.random.default_rng(3).normal(size=len(df))
    ddf = dd.from_pandas(df, npartitions=2)
    with pytest.raises(hmix.DataError, match=r"210 covariance parameters.*max_theta=None"):
        hmix.lmer("y ~ 1 + (0 + f | g)", ddf)
    df["k"] = (df["y"] > 0).astype(int)
    with pytest.raises(hmix.DataError, match="210 covariance parameters"):
        hmix.glmer("k ~ 1 + (0 + f | g)", dd.from_pandas(df, npartitions=2), family="binomial")


def test_glmm_with_an_empty_partition(client: object) -> None:
    """A partition left without rows (after a filter) adds nothing: the answer is the frame's."""
    df = glmm_frame(4, n=900)
    ddf = dd.from_pandas(df, npartitions=3)
    first = ddf.partitions[0].index.min().compute()
    emptied = ddf.map_partitions(
        lambda d: d.iloc[0:0] if len(d) and d.index[0] == first else d, meta=ddf._meta
    )
    kept = df.loc[df.index >= ddf.partitions[1].index.min().compute()]
    ref = hmix.glmer("c ~ x + (1 | u)", kept, family="binomial")
    m = hmix.glmer("c ~ x + (1 | u)", emptied, family="binomial")
    assert m.objective == pytest.approx(ref.objective, rel=1e-10)
    np.testing.assert_allclose(m.beta, ref.beta, rtol=1e-6)


def test_rows_dropped_in_a_partition_without_complete_rows_are_counted(client: object) -> None:
    """A partition whose every row misses a value still counts its rows as dropped (and warns),
    as the in-memory fit does."""
    df = hmix.datasets.load("sleepstudy").copy()
    df.loc[df.index < 90, "Days"] = np.nan
    with pytest.warns(hmix.MissingDataWarning):
        ref = hmix.lmer("Reaction ~ Days + (1 | Subject)", df)
    with pytest.warns(hmix.MissingDataWarning, match="dropped 90 of 180 rows"):
        m = hmix.lmer("Reaction ~ Days + (1 | Subject)", dd.from_pandas(df, npartitions=2))
    assert m.n_dropped == ref.n_dropped == 90
    assert m.objective == pytest.approx(ref.objective, abs=1e-6)
