"""Large data: the strategies for big systems against the dense reference and lme4.

* ``PairRowsUpdate`` (a scalar first term with many pairs: the pair map stored by rows of S, in
  chunks) against the dense reference of ``test_engine`` to 1e-9 relative, with chunks forced
  small so that every path (values of one, values of their own, PIRLS refills) runs;
* ``BorderedCholesky`` (nested designs of any size) against the blocked dense factorization it
  replaces, to 1e-9, and against lme4 on a nested design with 21,000 schools and 42,000 classes
  (``tests/reference/lme4_nested_large.json``, made by ``make_nested_large_reference.R``);
* the error for a dense block that is too large, raised before anything large is allocated.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_engine import dense_objective, random_frame

import hmix
from hmix import LMMObjective, build_design
from hmix.engine import Engine, Rule
from hmix.errors import HmixError

HERE = Path(__file__).parent
PAIR_ROWS = Rule(
    whole_size=0, pair_rows=0, pair_chunk=40, dense_per_pair=0, dense_per_pair_once=0, heavy_fraction=1.0
)


def crossed_frame(seed: int, n: int = 600, repeats: bool = True) -> pd.DataFrame:
    """Users x items, each user meeting an item at most once unless ``repeats``."""
    rng = np.random.default_rng(seed)
    if repeats:
        u, i = rng.integers(0, 60, n), rng.integers(0, 15, n)
    else:
        cells = rng.choice(60 * 15, n, replace=False)
        u, i = cells // 15, cells % 15
    x = rng.normal(size=n)
    y = x + rng.normal(size=60)[u] + 0.5 * rng.normal(size=15)[i] + rng.normal(size=n)
    return pd.DataFrame({"u": u, "i": i, "x": x, "y": y, "w": rng.uniform(0.5, 2.0, n)})


@pytest.mark.parametrize(
    ("formula", "repeats", "weighted"),
    [
        ("y ~ x + (1 | u) + (1 | i)", False, False),  # every pair's value is 1
        ("y ~ x + (1 | u) + (1 | i)", True, False),  # some users meet an item twice
        ("y ~ x + (1 | u) + (1 | i)", False, True),
        ("y ~ x + (1 | u) + (x | i)", True, False),
    ],
)
@pytest.mark.parametrize("heavy", [1.0, 0.5])
def test_pair_rows_match_dense(formula: str, repeats: bool, weighted: bool, heavy: float) -> None:
    """The pair map by rows, in chunks of 40 pairs, gives the dense reference's objective, beta
    and b to 1e-9 relative (ML and REML, interior and with the second term at zero), also with
    the users of more than half as many ratings as the rest block has rows (``heavy``) updated
    by BLAS."""
    df = crossed_frame(3, repeats=repeats)
    d = build_design(formula, df, weights="w" if weighted else None)
    for reml in (True, False):
        f = LMMObjective(d, REML=reml, rule=replace(PAIR_ROWS, heavy_fraction=heavy))
        update = f.engine.chol.update
        assert f.engine.strategy["schur update"] == "pair rows"
        assert len(update._chunks) > 10
        assert (0 < len(update.heavy) < 40) == (heavy < 1)
        for at_zero in (False, True):
            theta = np.where(f.scale_mask, 0.9, 0.3)
            if at_zero:
                theta[-1] = 0.0
            ref, beta, b = dense_objective(d, theta, reml)
            assert f(theta) == pytest.approx(ref, rel=1e-9)
            fac = f.factor(theta)
            np.testing.assert_allclose(fac.beta, beta, rtol=1e-8)
            np.testing.assert_allclose(
                np.concatenate(f.engine.to_lme4(fac.b_engine)), b, rtol=1e-7, atol=1e-9
            )


def test_pair_rows_refill_for_pirls() -> None:
    """Refilled with new weights (PIRLS), the pair map by rows gives the factor of the pair map
    by columns to 1e-11, and so does a GLMM fit's deviance (reference: the default strategy)."""
    df = crossed_frame(5)
    d = build_design("y ~ x + (1 | u) + (1 | i)", df)
    theta = np.array([0.8, 0.5])
    rows = Engine(d.terms, d.X, d.y, None, reweighted=True, rule=replace(PAIR_ROWS, heavy_fraction=0.5))
    cols = Engine(d.terms, d.X, d.y, None, reweighted=True, rule=Rule(whole_size=0, dense_per_pair=0))
    assert (rows.strategy["schur update"], cols.strategy["schur update"]) == ("pair rows", "pair map")
    rng = np.random.default_rng(0)
    for _ in range(2):
        w = rng.uniform(0.2, 3.0, d.n)
        rows.set_data(d.X, d.y, w)
        cols.set_data(d.X, d.y, w)
        a, b = rows.factor(theta), cols.factor(theta)
        assert (a.logdet_z, a.logdet_x, a.r2) == pytest.approx((b.logdet_z, b.logdet_x, b.r2), rel=1e-11)
    df["c"] = (df["y"] > df["y"].median()).astype(int)
    gd = build_design("c ~ x + (1 | u) + (1 | i)", df, binary_ok=True)
    fam = hmix.get_family("binomial")
    params = np.array([0.7, 0.4, 0.1, 0.9])
    a = hmix.GLMMObjective(gd, fam)
    a.engine_u = Engine(gd.terms, a._x0, np.zeros(gd.n), np.ones(gd.n), reweighted=True, rule=PAIR_ROWS)
    b = hmix.GLMMObjective(gd, fam)
    assert a.engine_u.strategy["schur update"] == "pair rows"
    assert a(params) == pytest.approx(b(params), rel=1e-10)


def nested_frame(seed: int, schools: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(schools), 12)
    cls = np.tile(np.repeat([1, 2, 3], 4), schools)
    n = len(school)
    x = rng.normal(size=n)
    y = x + rng.normal(size=schools)[school] + 0.5 * rng.normal(size=3 * schools)[school * 3 + cls - 1]
    return pd.DataFrame(
        {"school": school, "cls": cls, "x": x, "y": y + rng.normal(size=n), "z": rng.normal(size=n)}
    )


@pytest.mark.parametrize("formula", ["y ~ x + (1 | school/cls)", "y ~ x + (1 | school) + (x | school:cls)"])
def test_bordered_matches_blocked(formula: str) -> None:
    """The bordered diagonal factor of a nested design equals the blocked dense one (which it
    replaces above ``bordered_rows`` levels) to 1e-9: objective parts, beta, u, conditional
    variances, solves and the inverse where rows touch it (the GLMM gradient's)."""
    d = build_design(formula, nested_frame(1), weights=np.linspace(0.5, 2.0, 480))
    theta = np.where(LMMObjective(d).scale_mask, 0.8, 0.3)
    for reweighted in (False, True):
        sparse = Engine(d.terms, d.X, d.y, d.weights, reweighted=reweighted, rule=Rule(bordered_rows=1))
        dense = Engine(d.terms, d.X, d.y, d.weights, reweighted=reweighted, rule=Rule(whole_size=0))
        assert sparse.strategy["rest"] == "bordered diagonal"
        assert dense.strategy["rest"] == "nested diagonal"
        lam = sparse.layout.thetamap.lam(theta)
        a, b = sparse.factor(lam), dense.factor(lam)
        assert (a.logdet_z, a.logdet_x, a.r2) == pytest.approx((b.logdet_z, b.logdet_x, b.r2), rel=1e-11)
        np.testing.assert_allclose(a.beta, b.beta, rtol=1e-9)
        np.testing.assert_allclose(
            np.concatenate(a.u_engine), np.concatenate(b.u_engine), rtol=1e-9, atol=1e-12
        )
        np.testing.assert_allclose(a.xtx_inv(), b.xtx_inv(), rtol=1e-9)
        for va, vb in zip(a.cond_var_engine(), b.cond_var_engine()):
            np.testing.assert_allclose(va, vb, rtol=1e-9, atol=1e-14)
        rhs = np.random.default_rng(2).normal(size=sparse.layout.q1 + sparse.layout.qr)
        np.testing.assert_allclose(a.solve(rhs), b.solve(rhs), rtol=1e-9)
        cols = np.stack([c for c, _ in sparse.layout.u_columns()], axis=1)
        np.testing.assert_allclose(a.row_inverse(cols), b.row_inverse(cols), rtol=1e-9, atol=1e-14)


@pytest.fixture(scope="module")
def nested_large() -> tuple[pd.DataFrame, dict]:
    df = pd.read_csv(HERE / "data" / "nested_large.csv.gz")
    return df, json.loads((HERE / "reference" / "lme4_nested_large.json").read_text())


@pytest.mark.parametrize("reml", [True, False])
def test_nested_large_matches_lme4(nested_large: tuple[pd.DataFrame, dict], reml: bool) -> None:
    """21,000 schools x 2 classes x 3 students, 42,000 classes (refused before: "dense rest
    block"): lme4's polished fit (tests/reference/lme4_nested_large.json). Objective to 1e-6
    absolute (on 4e5), theta, beta and sigma to 1e-5 relative, standard errors and the first
    conditional modes and fitted values to 1e-5."""
    df, ref = nested_large
    r = ref["nested_large_reml" if reml else "nested_large_ml"]
    m = hmix.lmer("y ~ x + (1 | school) + (1 | school:class)", df, REML=reml)
    assert m.factor.rest.name == "bordered diagonal"
    assert m.objective == pytest.approx(r["objective"], abs=1e-6)
    np.testing.assert_allclose(m.theta, r["theta"], rtol=1e-5)
    np.testing.assert_allclose(m.fixef.to_numpy(), r["beta"], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(m.vcov.to_numpy())), r["beta_se"], rtol=1e-5)
    assert m.sigma == pytest.approx(r["sigma"], rel=1e-5)
    re = m.ranef()
    school, cls = re["school"], re["school:class"]
    assert school.index[:10].astype(str).tolist() == r["ranef_school_levels_first10"]
    np.testing.assert_allclose(school.iloc[:10, 0], r["ranef_school_first10"], rtol=1e-4, atol=1e-5)
    assert cls.index[:10].tolist() == r["ranef_schoolclass_levels_first10"]
    np.testing.assert_allclose(cls.iloc[:10, 0], r["ranef_schoolclass_first10"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.fitted.to_numpy()[:10], r["fitted_first10"], rtol=1e-6)
    assert "school:class" in str(m.summary())


def test_dense_block_too_large_is_refused_early() -> None:
    """A crossed second factor beyond the dense limit: an HmixError naming the term, the size
    and the memory, raised before the block is allocated."""
    d = build_design("y ~ x + (1 | a) + (1 | b)", random_frame(4))
    with pytest.raises(HmixError, match=r"\(1 \| b\).*GiB.*dense limit of 5 rows"):
        Engine(d.terms, d.X, d.y, rule=Rule(max_dense=5))


def test_verbose_prints_each_evaluation(capsys: pytest.CaptureFixture[str]) -> None:
    """verbose=True: one line on stderr an evaluation (the count, the objective); off by default."""
    df = hmix.datasets.load("Dyestuff")
    m = hmix.lmer("Yield ~ 1 + (1 | Batch)", df, verbose=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= m.optsum.n_evals - 5 and lines[0].startswith("lmer  evaluation 1 ")
    assert f"objective {m.objective:.6f}" in "\n".join(lines)
    hmix.lmer("Yield ~ 1 + (1 | Batch)", df)
    assert capsys.readouterr().err == ""
