"""One random-effects term: grouping codes, its columns, and the map from theta to Lambda."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache, cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["ReTerm", "group_codes"]


def _factor(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes and levels of one column, in the level order R's factor() gives."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.cat.remove_unused_categories()
        return np.asarray(cat.cat.codes, dtype=np.int64), pd.Index(cat.cat.categories)
    codes, uniques = pd.factorize(col)  # in order of appearance; sorted below (few levels)
    labels = pd.Index(uniques)
    values = labels.to_numpy()
    order = None
    if labels.dtype == object or pd.api.types.is_string_dtype(labels.dtype):
        # labels that are all integers ("1", "2", ..., "10") sort as numbers, as R's factor of
        # the numbers would, not as text ("1", "10", "2")
        try:
            as_int = values.astype(object).astype(float)
        except (TypeError, ValueError):
            as_int = np.array([np.nan])
        if np.isfinite(as_int).all() and (as_int == np.round(as_int)).all():
            # ties ("1" and "01", or IDs beyond a double's 16 digits) in text order, as before
            order = np.lexsort((values.astype(str), as_int))
    if order is None:
        try:
            order = np.argsort(values, kind="stable")
        except TypeError:  # mixed types: pandas' own ordering
            codes, uniques = pd.factorize(col, sort=True)
            return codes.astype(np.int64), pd.Index(uniques)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return np.where(codes >= 0, rank[codes], -1), labels[order]  # (-1: a missing value)


def group_codes(data: pd.DataFrame, columns: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (0..levels-1) and labels of the observed combinations of ``columns``.

    Levels of a single column keep its factor order (categories, or sorted values); combinations
    ``a:b`` are the observed ones only, ordered by ``a`` then ``b``, labelled ``"a:b"``.
    """
    codes, levels = _factor(data[columns[0]])
    if len(columns) == 1:
        return codes, levels
    labels = [levels.astype(str).to_numpy()]
    for name in columns[1:]:
        c2, l2 = _factor(data[name])
        key = codes * len(l2) + c2
        codes, first = pd.factorize(key, sort=True)
        codes = codes.astype(np.int64)
        outer, inner = np.divmod(first, len(l2))
        labels = [lab[outer] for lab in labels] + [l2.astype(str).to_numpy()[inner]]
    joined = labels[0].astype(object)
    for lab in labels[1:]:
        joined = joined + ":" + lab.astype(object)
    return codes, pd.Index(joined.astype(str))


@cache
def _tril(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the lower triangle of a k x k matrix, column-major; read-only, shared by
    every term with k columns (np.triu_indices costs tens of microseconds a call)."""
    cols, rows = np.triu_indices(k)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


@dataclass(frozen=True, eq=False)
class ReTerm:
    """A random-effects term ``(lhs | group)`` materialized on the model's rows.

    The term's random effects are ordered level by level, the ``k`` effects of a level together,
    so ``Lambda`` is block diagonal with one ``k x k`` lower-triangular block ``T`` per level.
    ``T`` holds this term's slice of ``theta``: its lower triangle in column-major order (lme4's
    order).

    Attributes
    ----------
    group : str
        Grouping factor's name (``"a:b"`` for an interaction).
    group_columns : tuple of str
        Data columns whose observed combinations define the levels.
    names : tuple of str
        Names of the term's columns (``"(Intercept)"``, ``"Days"``, ...).
    refs : ndarray of int
        Level index of each row.
    levels : pandas.Index
        Level labels.
    z : ndarray, shape (n, k)
        The term's model-matrix columns.
    lhs : str
        The formulaic formula the columns come from.
    spec : object
        formulaic ``ModelSpec`` that codes new data the same way.
    """

    group: str
    group_columns: tuple[str, ...]
    names: tuple[str, ...]
    refs: np.ndarray
    levels: pd.Index
    z: np.ndarray
    lhs: str
    spec: Any

    @property
    def k(self) -> int:
        """Random effects per level."""
        return int(self.z.shape[1])

    @property
    def nlevels(self) -> int:
        """Number of levels of the grouping factor."""
        return len(self.levels)

    @property
    def q(self) -> int:
        """Number of random effects of the term."""
        return self.k * self.nlevels

    @property
    def ntheta(self) -> int:
        """Number of covariance parameters of the term."""
        return self.k * (self.k + 1) // 2

    @property
    def tril(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of each theta element in ``T``: the lower triangle, column-major."""
        return _tril(self.k)

    @cached_property
    def diagonal(self) -> np.ndarray:
        """Mask of the theta elements that sit on ``T``'s diagonal."""
        rows, cols = self.tril
        return np.asarray(rows == cols)

    def tmat(self, theta: np.ndarray) -> np.ndarray:
        """The ``k x k`` lower-triangular relative covariance factor for this term's theta."""
        if self.k == 1:  # (a fresh 1 x 1 copy: PIRLS builds these at every step)
            return np.array(theta, dtype=float).reshape(1, 1)
        t = np.zeros((self.k, self.k))
        t[self.tril] = theta
        return t

    def theta_names(self) -> list[str]:
        """lme4's names of the theta elements: ``Subject.(Intercept)``, ``Subject.Days.(Intercept)``."""
        rows, cols = self.tril
        return [
            f"{self.group}.{self.names[r]}" if r == c else f"{self.group}.{self.names[r]}.{self.names[c]}"
            for r, c in zip(rows, cols)
        ]

    @cached_property
    def zmatrix(self) -> sp.csr_matrix:
        """The term's sparse model matrix Z_i (n x q), built once for the blocks of A."""
        n, k = self.z.shape
        cols = (self.refs[:, None] * k + np.arange(k)[None, :]).ravel()
        indptr = np.arange(0, n * k + 1, k)
        return sp.csr_matrix((self.z.ravel(), cols, indptr), shape=(n, self.q))

    def subset(self, rows: np.ndarray) -> ReTerm:
        """The term on a subset of its rows (integer positions), keeping the levels that occur."""
        present, refs = np.unique(self.refs[rows], return_inverse=True)
        return replace(self, refs=refs.astype(np.int64), levels=self.levels[present], z=self.z[rows])

    def contribution(self, b: np.ndarray) -> np.ndarray:
        """Z_i b_i for this term's random effects ``b`` (length q), without forming Z."""
        return np.einsum("ij,ij->i", self.z, b.reshape(self.nlevels, self.k)[self.refs])
