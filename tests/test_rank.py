"""The rank check of X (hmix.rank): lme4's rule, from X'X.

Reference: an unpivoted QR of X (what hmix used before, and lme4's rule: a column is aliased when
the norm of its part orthogonal to the earlier columns, |R_jj|, is at most 1e-7 of its own norm).
Tolerance: the masks must agree exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from hmix.rank import aliased_columns


def qr_rule(X: np.ndarray) -> np.ndarray:
    r = sla.qr(X, mode="r")[0]
    norms = np.linalg.norm(X, axis=0)
    return np.abs(np.diag(r)) <= 1e-7 * np.where(norms > 0, norms, 1.0)


def awkward(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    """Columns of scales 1e-6 to 1e6, exact and near combinations (1e-9: aliased, 1e-5: not),
    indicator columns and zero columns."""
    X = rng.normal(size=(n, p)) * 10.0 ** rng.integers(-6, 6, size=p)
    for j in range(1, p):
        u = rng.random()
        if u < 0.15:
            X[:, j] = X[:, :j] @ rng.normal(size=j)
        elif u < 0.3:
            X[:, j] = rng.integers(0, 3, n) == 1
        elif u < 0.35:
            X[:, j] = 0.0
        elif u < 0.45:
            scale = np.linalg.norm(X[:, j - 1]) / np.sqrt(n)
            X[:, j] = X[:, j - 1] + rng.choice([1e-9, 1e-5]) * scale * rng.normal(size=n)
    return X


@pytest.fixture(params=["qr", "gram"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Small X takes the QR of X itself; with no such shortcut, X'X's factor decides."""
    import hmix.rank

    if request.param == "gram":
        monkeypatch.setattr(hmix.rank, "_QR_UP_TO", 0)
    return str(request.param)


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_the_unpivoted_qr(seed: int, path: str) -> None:
    rng = np.random.default_rng(seed)
    p = int(rng.integers(1, 40))
    X = awkward(rng, int(rng.integers(p + 1, 300)), p)
    np.testing.assert_array_equal(aliased_columns(X), qr_rule(X))


def test_keeps_the_first_of_aliased_columns(path: str) -> None:
    x = np.arange(8.0)
    X = np.column_stack([np.ones(8), x, 3 * x, x**2, 1 - x, np.zeros(8)])
    assert aliased_columns(X).tolist() == [False, False, True, False, True, True]


def test_more_columns_than_rows(path: str) -> None:
    """After aliased columns, an independent column past the n-th is kept (lme4 pivots the aliased
    ones to the end; the old check dropped every column past the n-th)."""
    x = np.arange(4.0)
    X = np.column_stack([np.ones(4), 2 * np.ones(4), x, x**2, x**3, x**4])
    assert aliased_columns(X).tolist() == [False, True, False, False, False, True]
    assert aliased_columns(np.zeros((3, 0))).tolist() == []


def test_a_many_level_factor_across_blocks() -> None:
    """1,500 indicator columns (six blocks of the blocked factorization), two aliased ones."""
    rng = np.random.default_rng(3)
    n, levels = 6000, 1500
    codes = np.concatenate([np.arange(levels), rng.integers(0, levels, n - levels)])
    X = np.zeros((n, levels + 3))
    X[:, 0] = 1.0
    X[np.arange(n), codes + 1] = 1.0  # all levels: aliased with the intercept at the last one
    X[:, -2] = rng.normal(size=n)
    X[:, -1] = X[:, 700] + 2 * X[:, -2]
    expected = np.zeros(levels + 3, bool)
    expected[levels] = expected[-1] = True
    np.testing.assert_array_equal(aliased_columns(X), expected)


def test_the_qr_of_x_only_for_nearly_aliased_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """X'X decides alone unless a column is 1e-7 to 1e-4 of its norm off the span before it."""
    import hmix.rank

    monkeypatch.setattr(hmix.rank, "_QR_UP_TO", 0)
    calls: list[tuple[int, ...]] = []
    qr = sla.qr

    def counting_qr(a: np.ndarray, **kw: object) -> object:
        calls.append(a.shape)
        return qr(a, **kw)

    monkeypatch.setattr(hmix.rank.sla, "qr", counting_qr)
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    aliased_columns(np.column_stack([np.ones(50), x, 2 * x + 1, x**2]))
    assert calls == []
    near = x + 1e-6 * rng.normal(size=50)  # orthogonal part ~1e-6 of its norm: kept, by the QR
    assert aliased_columns(np.column_stack([np.ones(50), x, near])).tolist() == [False, False, False]
    assert calls == [(50, 3)]


@pytest.mark.parametrize("rows_at_once", [1, 3, 1024])
def test_drop_columns_in_place_equals_a_copy(rows_at_once: int) -> None:
    from hmix.rank import drop_columns

    rng = np.random.default_rng(5)
    X = rng.normal(size=(37, 9))
    drop = np.array([True, False, False, True, True, False, False, False, True])
    expected = X[:, ~drop].copy()
    np.testing.assert_array_equal(drop_columns(np.asfortranarray(X), drop, rows_at_once), expected)
    np.testing.assert_array_equal(drop_columns(X.copy()[::2], drop), expected[::2])  # (neither order)
    np.testing.assert_array_equal(drop_columns(X, drop, rows_at_once), expected)  # (X overwritten)
