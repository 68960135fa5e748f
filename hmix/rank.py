"""Aliased columns of a model matrix, by lme4's rule, in memory near the size of X'X.

lme4 drops a column of X when the part of it orthogonal to the columns before it is below 1e-7
of its norm, keeping the first of aliased columns. That part's norm is the diagonal of an
unpivoted QR of X, and equally of the Cholesky factor of X'X; a Cholesky that skips the aliased
columns as it meets them finds them from X'X alone, p x p where X is n x p, and cheap to form for
the indicator columns of factors from a sparse copy. X'X's squares resolve a column's
orthogonal part only to about 1e-8 of the largest column's norm, so the columns the factor
finds (nearly) aliased are checked on X itself, and the QR of X decides only the rare column
that is 1e-7 to 1e-4 of its norm off the span before it.

On a factor of thousands of levels a dense QR of X costs minutes and several times X's memory;
this costs a small part of both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

__all__ = ["aliased_columns", "drop_columns"]

_TOL = 1e-7  # lme4's rank tolerance, relative to the column's norm
_LOOSE = 1e-8  # squared relative pivot below which a column is checked on X itself (1e-4 of its norm)
_QR_UP_TO = 32  # columns up to which the QR of X costs less than building X'X's factor
_BLOCK = 256  # columns factored together: BLAS-3 updates between blocks, a short loop within
_SPARSE_BELOW = 0.25  # density below which X'X is formed from a sparse copy of X


def aliased_columns(X: np.ndarray) -> np.ndarray:
    """Mask of the columns of X that are linear combinations of the columns before them.

        Parameters
        ----------
        X : ndarray, shape (n, p)

        Returns
        -------
        ndarray of bool, shape (p,)
            True for a column whose part orthogonal to the earlier columns has a norm of at most
            1e-7 of its own (lme4's rule; all-zero columns included); the first of aliased columns is
            kept.

        Examples
        --------
        >>> from typing import Any

    import numpy as np
        >>> x = np.arange(6.0)
        >>> aliased_columns(np.column_stack([np.ones(6), x, 2 * x - 1, x**2])).tolist()
        [False, False, True, False]
    """
    p = X.shape[1]
    if p == 0:
        return np.zeros(0, dtype=bool)
    n = X.shape[0]
    if p <= _QR_UP_TO and n >= p:
        return _qr_rule(X)
    Xs = sp.csc_matrix(X) if p >= 64 and np.count_nonzero(X) < _SPARSE_BELOW * n * p else None
    G = np.asarray((Xs.T @ Xs).toarray()) if Xs is not None else X.T @ X
    norm = np.sqrt(np.diag(G))
    scale = 1.0 / np.where(norm > 0, norm, 1.0)
    G *= scale[:, None]
    G *= scale[None, :]
    kept, L = _factor_keeping_first(G, norm > 0)
    kept_at = np.flatnonzero(kept)
    candidates = np.flatnonzero((norm > 0) & ~kept)
    # candidates with the same kept columns before them are checked together
    n_before = np.searchsorted(kept_at, candidates)
    parts = np.zeros(len(candidates))
    for m in np.unique(n_before):
        group = n_before == m
        parts[group] = _orthogonal_parts(X if Xs is None else Xs, candidates[group], kept_at[:m], L, norm)
    if (parts > _TOL).any():
        # a nearly aliased column (1e-7 to 1e-4 of its norm orthogonal to the ones before):
        # beyond what X'X resolves, the QR of X decides
        return _qr_rule(X)
    return ~kept


def _qr_rule(X: np.ndarray) -> np.ndarray:
    """lme4's rule from the diagonal of an unpivoted QR of X (columns past the n-th: aliased)."""
    p = X.shape[1]
    r = sla.qr(X, mode="r", check_finite=False)[0]
    k = min(r.shape)
    diag = np.zeros(p)
    diag[:k] = np.abs(np.diag(r)[:k])
    norm = np.linalg.norm(X, axis=0)
    return np.asarray(diag <= _TOL * np.where(norm > 0, norm, 1.0))


def _factor_keeping_first(G: np.ndarray, nonzero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factor of the unit-diagonal G over the columns it keeps, skipping each column
    whose pivot is at most ``_LOOSE`` (nearly in the span of the kept ones before it).

    Returns the mask of kept columns and the factor, rows and columns in the kept columns' order.
    """
    p = G.shape[0]
    keep = np.zeros(p, dtype=bool)
    L = np.zeros((p, p))
    k = 0
    for start in range(0, p, _BLOCK):
        block = np.arange(start, min(start + _BLOCK, p))
        S = G[np.ix_(block, block)]
        C = np.zeros((0, len(block)))
        if k:  # the block's Schur complement after the kept columns
            rows = np.flatnonzero(keep)
            C = sla.solve_triangular(L[:k, :k], G[np.ix_(rows, block)], lower=True, check_finite=False)
            S = S - C.T @ C
        inner = _skipping_cholesky(S, nonzero[block])
        local = np.flatnonzero(np.diag(inner) > 0)
        m = len(local)
        L[k : k + m, :k] = C[:, local].T
        L[k : k + m, k : k + m] = inner[np.ix_(local, local)]
        keep[block[local]] = True
        k += m
    return keep, L[:k, :k]


def _skipping_cholesky(S: np.ndarray, nonzero: np.ndarray) -> np.ndarray:
    """Cholesky factor of S that leaves out (zero row and column) each column with a pivot of at
    most ``_LOOSE``, and the zero columns."""
    b = S.shape[0]
    L = np.zeros((b, b))
    for i in range(b):
        row = L[i, :i]
        d = S[i, i] - row @ row
        if not (d > _LOOSE and nonzero[i]):
            continue
        L[i, i] = np.sqrt(d)
        if i + 1 < b:
            L[i + 1 :, i] = (S[i + 1 :, i] - L[i + 1 :, :i] @ row) / L[i, i]
    return L


def _orthogonal_parts(
    X: Any, cols: np.ndarray, before: np.ndarray, L: np.ndarray, norm: np.ndarray
) -> np.ndarray:
    """Norms of the parts of columns ``cols`` orthogonal to the columns ``before`` (the leading
    kept ones, whose factor leads ``L``), relative to their norms.

    Computed on X itself (corrected semi-normal equations: the projection from the factor of
    X'X, then two refinements), so they resolve the 1e-7 that the squares in X'X cannot. The
    products run over all of X (no copy of its columns), the other coefficients held at zero.
    """
    if len(before) == 0:
        return np.ones(len(cols))
    Lb = np.asfortranarray(L[: len(before), : len(before)])
    x = X[:, cols].toarray() if sp.issparse(X) else np.asarray(X[:, cols], dtype=float)
    scale = 1.0 / norm[before]
    coef = np.zeros((X.shape[1], len(cols)))
    r = x
    for _ in range(3):
        rhs = np.asarray(X.T @ r)[before] * scale[:, None]
        y = sla.solve_triangular(Lb, rhs, lower=True, check_finite=False)
        coef[before] += (
            sla.solve_triangular(Lb, y, lower=True, trans="T", check_finite=False) * scale[:, None]
        )
        r = x - np.asarray(X @ coef)
    return np.asarray(np.linalg.norm(r, axis=0) / norm[cols])


def drop_columns(X: np.ndarray, drop: np.ndarray, rows_at_once: int = 1024) -> np.ndarray:
    """X without the columns ``drop``, written over X's own memory (no second copy of X).

    X must be the caller's own array: it is overwritten, and the result is a view of its start.
    In Fortran order each kept column moves left to its new place; in C order rows move, and
    row i's new place ends before row i+1's old one, so rows moved in order never overwrite one
    not yet read. Any other layout is copied.

    Examples
    --------
    >>> import numpy as np
    >>> drop_columns(np.arange(6.0).reshape(2, 3), np.array([False, True, False])).tolist()
    [[0.0, 2.0], [3.0, 5.0]]
    """
    keep = np.flatnonzero(~drop)
    n, p = X.shape
    q = len(keep)
    if X.flags.f_contiguous and X.flags.writeable:
        for new, old in enumerate(keep):
            if new != old:
                X[:, new] = X[:, old]
        return X[:, :q]
    if X.flags.c_contiguous and X.flags.writeable:
        flat = X.reshape(-1)
        for a in range(0, n, rows_at_once):
            b = min(a + rows_at_once, n)
            flat[a * q : b * q] = flat[a * p : b * p].reshape(b - a, p)[:, keep].ravel()
        return flat[: n * q].reshape(n, q)
    return X[:, keep]
