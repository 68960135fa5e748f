"""The blocked Cholesky against dense linear algebra on random designs.

The dense reference builds Z, Lambda and the full penalized system explicitly; the engine never
forms them. Agreement to 1e-9 relative covers every block layout: a scalar or vector first term,
scalar or vector later terms, nested and crossed factors, weights and the F F' fallback.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla

import hmix
from hmix import LMMObjective, build_design
from hmix.design import Design
from hmix.engine import Engine, Rule
from hmix.engine.cholesky import TailCache


def dense_objective(d: Design, theta: np.ndarray, reml: bool) -> tuple[float, np.ndarray, np.ndarray]:
    n, p = d.n, d.p
    Zs, Ls, i = [], [], 0
    for t in d.terms:
        Zs.append(t.zmatrix.toarray())
        Ls.append(np.kron(np.eye(t.nlevels), t.cov.tmat(theta[i : i + t.ntheta])))
        i += t.ntheta
    ZL = np.hstack(Zs) @ sla.block_diag(*Ls)
    q = ZL.shape[1]
    w = np.ones(n) if d.weights is None else d.weights
    y = d.y if d.offset is None else d.y - d.offset
    C = np.hstack([ZL, d.X])
    A = C.T @ (w[:, None] * C) + np.diag(np.r_[np.ones(q), np.zeros(p)])
    sol = np.linalg.solve(A, C.T @ (w * y))
    u, beta = sol[:q], sol[q:]
    r2 = float(w @ (y - C @ sol) ** 2 + u @ u)
    ldz = np.linalg.slogdet(A[:q, :q])[1]
    if reml:
        ldx = np.linalg.slogdet(A)[1] - ldz
        dev = ldz + ldx + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))
    else:
        dev = ldz + n * (1 + np.log(2 * np.pi * r2 / n))
    return float(dev - np.log(w).sum()), beta, sla.block_diag(*Ls) @ u


def random_frame(seed: int, n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "a": rng.integers(0, 30, n).astype(str),
            "b": rng.integers(0, 12, n).astype(str),
            "c": rng.integers(0, 4, n).astype(str),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "w": rng.uniform(0.5, 2.0, n),
        }
    )
    df["y"] = df["x"] + rng.normal(size=n) + df["a"].astype(int) % 3
    return df


FORMULAS = [
    "y ~ x + (1 | a)",
    "y ~ x + (x | a)",
    "y ~ x + (1 | a) + (1 | b) + (1 | c)",
    "y ~ x + (1 | a) + (x | b) + (1 | c)",
    "y ~ x + (x + z | a) + (1 | b)",
    "y ~ x + (x | a) + (z | b)",
    "y ~ x + (1 | c/b)",
    "y ~ 0 + x + (x || b) + (1 | a)",
]


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_objective_matches_dense(formula: str, reml: bool, weighted: bool) -> None:
    df = random_frame(len(formula))
    d = build_design(formula, df, weights="w" if weighted else None, offset=0.1 * df["z"].to_numpy())
    f = LMMObjective(d, REML=reml)
    rng = np.random.default_rng(7)
    k = f.thetamap.ntheta
    theta = np.where(f.scale_mask, rng.uniform(0.2, 1.5, k), rng.uniform(-0.5, 0.5, k))
    ref, beta, b = dense_objective(d, theta, reml)
    assert f(theta) == pytest.approx(ref, rel=1e-9)
    fac = f.factor(theta)
    np.testing.assert_allclose(fac.beta, beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.concatenate(f.engine.to_lme4(fac.b_engine)), b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("whole", [True, False])
def test_whole_system_path_matches_dense(formula: str, whole: bool) -> None:
    """Small systems evaluate the objective from one dense factor of the whole system: forced on
    and off, both paths give the reference, at interior points and with a variance at zero."""
    rule = Rule(whole_size=10_000 if whole else 0)
    df = random_frame(len(formula) + 5)
    d = build_design(formula, df, weights="w", offset=0.1 * df["z"].to_numpy())
    for reml in (True, False):
        f = LMMObjective(d, REML=reml, rule=rule)
        assert (f.engine.whole is not None) == whole
        theta = np.where(f.scale_mask, 0.9, 0.25)
        for at_zero in (False, True):
            if at_zero:
                theta[-1] = 0.0
            ref, _, _ = dense_objective(d, theta, reml)
            assert f(theta) == pytest.approx(ref, rel=1e-10)
            assert f.from_factor(f.factor(theta)) == pytest.approx(ref, rel=1e-10)


def balanced_frame(seed: int) -> pd.DataFrame:
    """Every level of a has the same x values (as sleepstudy's subjects have the same days):
    equal A11 blocks for a scalar and for a vector first term."""
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(40), 6)
    n = len(a)
    df = pd.DataFrame(
        {
            "a": a.astype(str),
            "b": rng.integers(0, 15, n).astype(str),
            "c": rng.integers(0, 5, n).astype(str),
            "x": np.tile(np.arange(6.0), 40),
        }
    )
    df["y"] = df["x"] + rng.normal(size=n) + a % 3
    return df


@pytest.mark.parametrize("formula", ["y ~ x + (1 | a) + (1 | b) + (1 | c)", "y ~ x + (x | a) + (x | b)"])
def test_levels_with_equal_blocks_share_a_column_of_p(formula: str) -> None:
    """Levels of the first term with equal A11 blocks share G_j, so P's columns for them are
    summed once (``PairMapUpdate``'s merge); the objective is the dense reference's, as without it."""
    rule = Rule(whole_size=0, dense_per_pair_once=0.0)  # (the pair map, not a dense F)
    d = build_design(formula, balanced_frame(2))
    f = LMMObjective(d, REML=True, rule=rule)
    update = f.engine.chol.update
    assert update.name == "pair map"
    assert update.P_sum is not None and update.P_rep is not None and len(update.P_rep) == 1
    assert update.P_sum.nnz < update.P.nnz
    theta = np.where(f.scale_mask, 0.8, 0.3)
    ref, _, _ = dense_objective(d, theta, True)
    assert f(theta) == pytest.approx(ref, rel=1e-10)
    update.P_sum = None  # the unmerged P
    assert f(theta) == pytest.approx(ref, rel=1e-10)
    weighted = LMMObjective(
        build_design(formula, balanced_frame(2).assign(w=np.linspace(1, 2, 240)), weights="w"), rule=rule
    )
    assert weighted.engine.chol.update.P_sum is None  # every block differs


@pytest.mark.parametrize("formula", ["y ~ x + (x + I(x**2) | a)", "y ~ x + ar1(0 + t | a) + (1 | b)"])
def test_levels_with_equal_blocks_share_their_factors(formula: str) -> None:
    """A first term of three or more columns whose levels have equal A11 blocks factors each
    distinct block once: the factor equals the one computed level by level (1e-12), and the
    objective the dense reference's; with x measured at other values by level, nothing is
    shared."""
    df = balanced_frame(5)
    df["x"] += df["a"].astype(int) % 2  # (two schedules: odd levels a step later)
    df["t"] = df["x"].astype(int).astype(str)
    d = build_design(formula, df)
    f = LMMObjective(d, REML=False, rule=Rule(whole_size=0))
    assert f.engine.chol._distinct is not None and len(f.engine.chol._distinct[0]) == 2
    apart = LMMObjective(d, REML=False, rule=Rule(whole_size=0))
    apart.engine.chol._distinct = None  # (level by level)
    theta = f.theta0 * 1.2 + 0.1
    a, b = f.factor(theta), apart.factor(theta)
    for got, want in [(a.L11, b.L11), (a.L11inv, b.L11inv), (a.B, b.B)]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert f(theta) == pytest.approx(dense_objective(d, theta, False)[0], rel=1e-10)
    jitter = df.assign(x=df["x"] + np.random.default_rng(1).uniform(0, 0.1, len(df)))
    other = LMMObjective(build_design("y ~ x + (x + I(x**2) | a)", jitter), rule=Rule(whole_size=0))
    assert other.engine.chol._distinct is None


def test_whole_system_path_follows_new_data() -> None:
    """set_data (bootstrap refits) refreshes the dense copy of the whole system too."""
    df = random_frame(4)
    d = build_design("y ~ x + (x | b)", df)
    f = LMMObjective(d, REML=False)
    assert f.engine.whole is not None
    y2 = d.y + np.random.default_rng(1).normal(size=d.n)
    f.set_response(y2)
    theta = np.array([0.7, 0.1, 0.4])
    ref, _, _ = dense_objective(d.with_response(y2), theta, False)
    assert f(theta) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("formula", FORMULAS[1:6])
def test_dense_product_fallback_agrees(formula: str) -> None:
    df = random_frame(3)
    d = build_design(formula, df)
    theta_f = LMMObjective(d, REML=False)
    theta = np.where(theta_f.scale_mask, 0.7, 0.2)
    expected = theta_f(theta)
    fallback = LMMObjective(d, REML=False, rule=Rule(whole_size=0, max_pairs=0, dense_per_pair_once=0.0))
    assert fallback.engine.strategy["schur update"] == "sparse F"
    assert fallback(theta) == pytest.approx(expected, rel=1e-11)


def test_conditional_variances_match_dense() -> None:
    df = random_frame(11)
    d = build_design("y ~ x + (x | a) + (1 | b)", df)
    f = LMMObjective(d, REML=True)
    theta = np.array([0.8, 0.3, 0.5, 1.1])
    fac = f.factor(theta)
    Zs, Ls, i = [], [], 0
    for t in d.terms:
        Zs.append(t.zmatrix.toarray())
        Ls.append(np.kron(np.eye(t.nlevels), t.cov.tmat(theta[i : i + t.ntheta])))
        i += t.ntheta
    Lam = sla.block_diag(*Ls)
    ZL = np.hstack(Zs) @ Lam
    V = Lam @ np.linalg.inv(ZL.T @ ZL + np.eye(ZL.shape[1])) @ Lam.T
    got = f.engine.to_lme4(fac.cond_var_engine())
    start = 0
    for t, blocks in zip(d.terms, got):
        for j in range(t.nlevels):
            s = start + j * t.k
            np.testing.assert_allclose(blocks[j], V[s : s + t.k, s : s + t.k], rtol=1e-8, atol=1e-12)
        start += t.q


@pytest.mark.parametrize("formula", ["y ~ x + (1 | a) + (1 | b) + (1 | c)", "y ~ x + (x | a) + (1 | b)"])
def test_zero_variance_in_a_later_term_matches_dense(formula: str) -> None:
    """A later term at the boundary (theta = 0) takes the factor's general scaling path."""
    df = random_frame(21)
    d = build_design(formula, df)
    f = LMMObjective(d, REML=True)
    theta = np.where(f.scale_mask, 0.8, 0.1)
    theta[-1] = 0.0
    ref, beta, _ = dense_objective(d, theta, True)
    assert f(theta) == pytest.approx(ref, rel=1e-9)
    np.testing.assert_allclose(f.factor(theta).beta, beta, rtol=1e-8, atol=1e-10)


def test_factor_finishes_the_tail_of_the_last_factor_when_only_late_terms_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A factor whose theta differs from a kept one's only in the rest block's last term
    refactors that term's rows alone (``TailCache``): it is the fresh factor, to 1e-10; a
    change in an earlier term or a zero variance take the full path, and the factors of the
    last three values of the earlier terms' theta are kept."""

    rng = np.random.default_rng(5)
    n = 600
    df = pd.DataFrame(
        {
            "a": rng.integers(0, 60, n).astype(str),
            "b": rng.integers(0, 40, n).astype(str),
            "c": rng.integers(0, 4, n).astype(str),
            "x": rng.normal(size=n),
        }
    )
    df["y"] = df["x"] + rng.normal(size=n) + df["c"].astype(int)
    d = build_design("y ~ x + (1 | a) + (1 | b) + (1 | c)", df)
    f = LMMObjective(d, REML=True)
    pls = f.engine
    assert (
        pls.cache is not None and pls.cache.tail0 == 40
    )  # c's rows: 7 of the rest block's 47 (b's 40, c's 4, x, 1, y)
    finished: list[bool] = []
    inner = TailCache._finish_tail

    def spy(self: TailCache, theta: np.ndarray) -> np.ndarray | None:
        out = inner(self, theta)
        finished.append(out is not None)
        return out

    monkeypatch.setattr(TailCache, "_finish_tail", spy)
    fresh = Engine(d.terms, d.X, d.y)
    steps = [
        ([0.8, 0.5, 0.3], None),  # the first factor: nothing to finish from
        ([0.8, 0.5, 0.6], True),  # c alone
        ([0.8, 0.5, 0.6], True),  # the same theta
        ([0.8, 0.7, 0.6], False),  # b: before the tail
        ([0.9, 0.7, 0.6], False),  # a: the first term
        ([0.9, 0.7, 0.0], False),  # c at zero: the general scaling (and not kept)
        ([0.9, 0.7, 1.2], True),  # from the factor two steps back, kept under a's and b's theta
        # three heads (a's and b's theta) are kept, the least recently used goes first
        ([1.0, 0.7, 0.2], False),  # kept: (0.8, 0.7), (0.9, 0.7), (1.0, 0.7)
        ([0.9, 0.7, 0.5], True),  # (0.8, 0.7), (1.0, 0.7), (0.9, 0.7)
        ([1.1, 0.7, 0.2], False),  # (1.0, 0.7), (0.9, 0.7), (1.1, 0.7)
        ([0.8, 0.7, 0.3], False),  # gone
        ([1.0, 0.7, 0.9], False),  # gone too: the line before kept (0.8, 0.7) in its place
        ([1.1, 0.7, 0.9], True),
    ]
    for theta_list, tail in steps:
        theta = np.array(theta_list)
        finished.clear()
        a, b = pls.factor(theta), fresh.factor(theta)
        assert finished == ([] if tail is None else [tail])
        assert (a.logdet_z, a.logdet_x, a.r2) == pytest.approx((b.logdet_z, b.logdet_x, b.r2), rel=1e-10)
        np.testing.assert_allclose(a.beta, b.beta, rtol=1e-10)
        np.testing.assert_allclose(
            np.concatenate(a.u_engine), np.concatenate(b.u_engine), rtol=1e-9, atol=1e-12
        )
        fresh.forget()  # (the reference always factors in full)
        ref, _, _ = dense_objective(d, theta, True)
        assert f.from_factor(a) == pytest.approx(ref, rel=1e-10)
    pls.set_data(d.X, d.y + 1.0, None)  # new data: the last factor is forgotten
    finished.clear()
    pls.factor(np.array([0.9, 0.7, 0.3]))
    assert finished == []


@pytest.mark.parametrize(
    "formula, nested",
    [
        ("y ~ x + (1 | c/b)", True),
        ("y ~ x + (x | b:c) + (1 | c)", True),
        ("y ~ x + (1 | a) + (1 | b)", False),  # crossed
        ("y ~ x + (1 | b:c) + (x | c)", False),  # a vector second term
    ],
)
def test_second_term_the_first_is_nested_in_is_eliminated_as_a_diagonal(
    formula: str, nested: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the first term is nested in a scalar second term, the second term's rows of the rest
    block are eliminated by a scaling (``NestedRest``): the objective is the dense reference's,
    for fixed and for PIRLS weights, at interior points and with the second term at zero."""
    df = random_frame(8)
    d = build_design(formula, df, weights="w")
    f = LMMObjective(d, REML=False, rule=Rule(whole_size=0))
    assert (f.engine.strategy["rest"] == "nested diagonal") == nested
    second = f.engine.layout.lam_slices[1].start  # (the engine's second term, in lme4's theta)
    for at_zero in (False, True):
        theta = np.where(f.scale_mask, 0.9, 0.25)
        if at_zero:
            theta[second] = 0.0
        ref, beta, _ = dense_objective(d, theta, False)
        assert f(theta) == pytest.approx(ref, rel=1e-10)
        np.testing.assert_allclose(f.factor(theta).beta, beta, rtol=1e-8)
        pirls = Engine(d.terms, d.X, d.y, d.weights, reweighted=True)
        plain = Engine(d.terms, d.X, d.y, d.weights, reweighted=True, rule=Rule(nested=False))
        a, b = pirls.factor(theta), plain.factor(theta)
        assert (a.logdet_z, a.logdet_x, a.r2) == pytest.approx((b.logdet_z, b.logdet_x, b.r2), rel=1e-11)


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (1 | a) + (1 | b) + (1 | c)",
        "y ~ x + (x | a) + (1 | b)",
        "y ~ x + (1 | c/b)",  # nested: the diagonal rows of _rest_inverse are all of them
        "y ~ x + (1 | c/b) + (1 | e)",  # ... and rows after them
        "y ~ x + (x | b:c) + (1 | c)",
        "y ~ x + (1 | a) + (x | b)",
    ],
)
@pytest.mark.parametrize("dense_g", [False, True])
def test_row_inverse_matches_the_dense_inverse(
    formula: str, dense_g: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entries of (Lambda'Z'WZ Lambda + I)^-1 each row touches (the GLMM gradient's), from
    a sparse G (only those entries) and from a dense one, and solves with the whole matrix,
    against the inverted dense matrix."""
    df = random_frame(11).assign(e=lambda f: (np.arange(len(f)) % 3).astype(str))
    d = build_design(formula, df, weights="w")
    rule = Rule(whole_size=0, dense_per_pair=1e12 if dense_g else 0)
    pls = Engine(d.terms, d.X, d.y, d.weights, reweighted=True, rule=rule)
    assert pls.pattern.diagonal_rows == (4 if "c/b" in formula or "b:c" in formula else 0)
    theta = np.where(pls.layout.thetamap.scale_mask, 0.8, 0.3)
    fac = pls.factor(theta)
    assert isinstance(fac.G, np.ndarray) == dense_g
    lay = pls.layout
    Zs = [t.zmatrix.toarray() for t in lay.terms]
    Ls = [np.kron(np.eye(t.nlevels), T) for t, T in zip(lay.terms, fac.tmats)]
    ZL = np.hstack(Zs) @ sla.block_diag(*Ls)
    Minv = np.linalg.inv(ZL.T @ (d.weights[:, None] * ZL) + np.eye(ZL.shape[1]))
    cols = np.stack(
        [off + t.refs * t.k + a for off, t in zip(lay.offsets, lay.terms) for a in range(t.k)], axis=1
    )
    np.testing.assert_allclose(
        fac.row_inverse(cols), Minv[cols[:, :, None], cols[:, None, :]], rtol=1e-9, atol=1e-12
    )
    b = np.random.default_rng(2).normal(size=len(Minv))
    np.testing.assert_allclose(fac.solve(b), Minv @ b, rtol=1e-9, atol=1e-12)


def test_too_large_dense_block_is_a_clear_error() -> None:
    rng = np.random.default_rng(0)
    n = 50_000
    df = pd.DataFrame(
        {"a": rng.integers(0, 30_000, n).astype(str), "b": rng.integers(0, 25_000, n).astype(str)}
    )
    df["y"] = rng.normal(size=n)
    with pytest.raises(hmix.HmixError, match=r"\(1 \| b\)\), form a dense block of 21,550 x 21,550 doubles"):
        hmix.lmer("y ~ 1 + (1 | a) + (1 | b)", df)


@pytest.mark.parametrize("fx_known", [False, True])
def test_check_derivatives_of_a_known_function(fx_known: bool) -> None:
    """The finite differences behind lme4's convergence checks, with and without the value at
    the point (the LMM passes its optimum, saving the centre and one evaluation per pair)."""
    from hmix.optimize import _derivs

    def f(x: np.ndarray) -> float:
        return float(3 * x[0] ** 2 + x[0] * x[1] - 2 * x[1] * x[2] + x[2] ** 2 + 0.5 * x[0] ** 3 + x @ x)

    x = np.array([0.4, 0.9, 1.3])
    calls = []

    def counted(v: np.ndarray) -> float:
        calls.append(1)
        return f(v)

    grad, hess = _derivs(counted, x, f(x) if fx_known else None)
    g = np.array([6 * x[0] + x[1] + 1.5 * x[0] ** 2, x[0] - 2 * x[2], -2 * x[1] + 2 * x[2]]) + 2 * x
    H = np.array([[6 + 3 * x[0], 1, 0], [1, 0, -2], [0, -2, 2]]) + 2 * np.eye(3)
    np.testing.assert_allclose(grad, g, atol=1e-6)
    np.testing.assert_allclose(hess, H, atol=1e-3)  # O(h) = 1e-4 off-diagonal when one-sided
    assert len(calls) == (9 if fx_known else 13)


def test_check_derivatives_step_the_last_parameters_fastest_when_ordered() -> None:
    """With ``order`` the same points are visited so that the parameters the engine factors last
    vary fastest (runs of points that differ from the one before in those alone); the
    derivatives are the unordered ones exactly."""
    from hmix.optimize import _derivs

    def f(x: np.ndarray) -> float:
        return float(np.sin(x).sum() + x[0] * x[1] * x[2])

    x = np.array([0.4, 0.9, 1.3])
    seen: list[np.ndarray] = []

    def logged(v: np.ndarray) -> float:
        seen.append(np.round((v - x) / 1e-4).astype(int))
        return f(v)

    plain = _derivs(f, x, f(x))
    order = np.array([2, 0, 1])  # parameter 2 varies slowest, then 0, then 1
    ordered = _derivs(logged, x, f(x), order)
    np.testing.assert_array_equal(plain[0], ordered[0])
    np.testing.assert_array_equal(plain[1], ordered[1])
    code = {0: 0, -1: 1, 1: 2}  # x's own coordinate first, then a step down, then up
    keys = [tuple(code[int(v[i])] for i in order) for v in seen]
    assert keys == sorted(keys) and len(keys) == 9


@pytest.mark.parametrize("reweighted", [False, True])
def test_set_data_refills_in_place_as_a_fresh_engine(reweighted: bool) -> None:
    """set_data reuses the rest block's arrays (PIRLS calls it at every step): new weights and a
    new response give exactly what a freshly built engine gives."""

    df = random_frame(13)
    d = build_design("y ~ x + (1 | a) + (x | b) + (1 | c)", df)
    rng = np.random.default_rng(3)
    w1, w2 = rng.uniform(0.5, 2.0, d.n), rng.uniform(0.5, 2.0, d.n)
    y2 = d.y + rng.normal(size=d.n)
    pls = Engine(d.terms, d.X, d.y, w1, reweighted=reweighted)
    pls.set_data(d.X, y2, w2)
    fresh = Engine(d.terms, d.X, y2, w2, reweighted=reweighted)
    theta = np.array([0.8, 0.6, 0.2, 0.4, 0.9])
    a, b = pls.factor(theta), fresh.factor(theta)
    assert (a.logdet_z, a.logdet_x, a.r2) == pytest.approx((b.logdet_z, b.logdet_x, b.r2), rel=1e-12)
    # the other layout (sparse Z' products when reweighted, bincounts when not): the same system
    other = Engine(d.terms, d.X, y2, w2, reweighted=not reweighted).factor(theta)
    assert (a.logdet_z, a.logdet_x, a.r2) == pytest.approx(
        (other.logdet_z, other.logdet_x, other.r2), rel=1e-11
    )


def test_no_fixed_effects() -> None:
    """y ~ 0 + (1 | a): an empty X through the triangular solves, for an LMM and a GLMM."""
    df = pd.DataFrame({"a": (np.arange(60) % 6).astype(str)})
    df["y"] = np.random.default_rng(1).normal(size=60) + np.arange(60) % 6
    m = hmix.lmer("y ~ 0 + (1 | a)", df)
    assert m.vcov.shape == (0, 0) and len(m.fixef) == 0
    assert "Random effects" in str(m.summary())
    g = hmix.glmer("c ~ 0 + (1 | a)", df.assign(c=(df["y"] > 3).astype(int)), family="binomial")
    assert np.isfinite(g.objective) and g.vcov.shape == (0, 0)


def test_dense_size_guard_without_the_machines_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the system does not report its memory, only max_dense applies (every fit was
    refused); a block made by the fixed effects is named as theirs (a one-term model raised a
    bare ValueError)."""
    import hmix.engine as engine_module

    monkeypatch.setattr(engine_module, "physical_memory", lambda: 0)
    d = build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    assert LMMObjective(d, REML=False)(np.array([1.0, 0.0, 0.2])) > 0
    with pytest.raises(hmix.HmixError, match="the 2 fixed effects"):
        Engine(d.terms, d.X, d.y, None, rule=Rule(max_dense=2, whole_size=0))


def test_many_columns_of_x_take_a_dense_f() -> None:
    """A fixed factor of many levels makes a pair per two of its columns and level of the first
    term (here 40 x 500^2 / 2 = 5M): the LMM takes a dense F, with the pair map's objective."""
    rng = np.random.default_rng(5)
    n = 4_000
    df = pd.DataFrame({"f": rng.integers(0, 500, n).astype(str), "g": rng.integers(0, 40, n).astype(str)})
    df["y"] = rng.normal(size=n)
    d = build_design("y ~ f + (1 | g)", df)
    dense = LMMObjective(d, REML=False)
    assert dense.engine.strategy["schur update"] == "dense F"
    pairs = LMMObjective(d, REML=False, rule=Rule(dense_per_pair_once=0.0))
    assert pairs.engine.strategy["schur update"] != "dense F"
    for theta in (0.3, 1.2):
        assert dense([theta]) == pytest.approx(pairs([theta]), rel=1e-10)


@pytest.mark.parametrize(
    ("rule", "update"),
    [
        (Rule(dense_per_pair_once=0.0), "pair map"),
        (Rule(dense_per_pair_once=1e9), "dense F"),
        (Rule(max_pairs=0, dense_per_pair_once=0.0), "sparse F"),
        (Rule(pair_rows=0, dense_per_pair_once=0.0), "pair rows"),
    ],
)
def test_values_in_the_workspace_equal_fresh_factors(
    rule: Rule, update: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rest block of more than 500 rows: the objective's values are factored in a kept
    workspace (no fresh array each evaluation), equal to a fresh factor's to 1e-12, and a factor
    handed out before is not overwritten by later values (the sparse F's product in blocks of
    rows, here of 10)."""
    import hmix.engine.cholesky as cholesky

    monkeypatch.setattr(cholesky, "_SPARSE_BLOCK", 10 * 700)
    rng = np.random.default_rng(9)
    n = 3000
    df = pd.DataFrame({"u": rng.integers(0, 700, n).astype(str), "i": rng.integers(0, 900, n).astype(str)})
    df["x"] = rng.normal(size=n)
    df["y"] = df["x"] + rng.normal(size=n)
    f = LMMObjective(build_design("y ~ x + (1 | u) + (1 | i)", df), REML=False, rule=rule)
    assert f.engine.strategy["schur update"] == update and f.engine.layout.m > 500
    kept = f.factor(np.array([0.8, 0.6]))
    before = kept.r2, kept.logdet_z
    for theta in ([0.8, 0.6], [0.5, 1.2], [1.1, 0.3]):
        theta = np.array(theta)
        assert f(theta) == pytest.approx(f.from_factor(f.factor(theta)), rel=1e-12)
    assert f.engine.chol._workspace is not None
    fresh = LMMObjective(build_design("y ~ x + (1 | u) + (1 | i)", df), REML=False, rule=rule)
    assert (kept.r2, kept.logdet_z) == before == (fresh.factor(np.array([0.8, 0.6])).r2, before[1])
