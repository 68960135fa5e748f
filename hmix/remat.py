"""One random-effects term: grouping codes, its columns, and the map from theta to Lambda."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .covariance import CovarianceStructure, LevelEstimates

__all__ = ["ReTerm", "ThetaMap", "group_codes", "spread_of", "column_spread"]


def _factor(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes and levels of one column, in the level order R's factor() gives."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.cat.remove_unused_categories()
        return np.asarray(cat.cat.codes, dtype=np.int64), pd.Index(cat.cat.categories)
    if isinstance(col.dtype, pd.StringDtype) and col.dtype.na_value is not pd.NA:
        # pandas' default strings factorized as Python strings, the levels made an Index of
        # the column's dtype once sorted (half the cost of factorizing the Arrow array)
        codes, values = pd.factorize(col.to_numpy())
        labels = None
    else:  # in order of appearance, sorted below (few levels)
        codes, uniques = pd.factorize(col)
        labels = pd.Index(uniques)
        values = labels.to_numpy()
    order = None
    if labels is None or labels.dtype == object or pd.api.types.is_string_dtype(labels.dtype):
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
    # (-1: a missing value; take, not labels[order]: much faster on a string Index)
    levels = pd.Index(values[order], dtype=col.dtype) if labels is None else labels.take(order)
    return np.where(codes >= 0, rank[codes], -1), levels


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


@dataclass(frozen=True, eq=False)
class ReTerm:
    """A random-effects term ``(lhs | group)`` materialized on the model's rows.

    The term's random effects are ordered level by level, the ``k`` effects of a level together,
    so ``Lambda`` is block diagonal with one ``k x k`` lower-triangular block ``T`` per level;
    the term's covariance structure ``cov`` says how its slice of ``theta`` gives ``T``
    (unstructured: its lower triangle in column-major order, lme4's order).

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
    cov : CovarianceStructure
        theta -> T for this term.
    """

    group: str
    group_columns: tuple[str, ...]
    names: tuple[str, ...]
    refs: np.ndarray
    levels: pd.Index
    z: np.ndarray
    lhs: str
    spec: Any
    cov: CovarianceStructure

    @cached_property
    def k(self) -> int:
        """Random effects per level."""
        return int(self.z.shape[1])

    @cached_property
    def nlevels(self) -> int:
        """Number of levels of the grouping factor."""
        return len(self.levels)

    @cached_property
    def q(self) -> int:
        """Number of random effects of the term."""
        return self.k * self.nlevels

    @property
    def ntheta(self) -> int:
        """Number of covariance parameters of the term."""
        return self.cov.ntheta

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


@dataclass(frozen=True, eq=False)
class ThetaMap:
    """theta, term by term: each term's slice, bounds and names, and theta -> T (MixedModels.jl's
    ``mkparmap``). Every walk of theta over the terms goes through here.

    ``lam`` is the engine's view of theta: the values of every term's T at the entries its
    structure lets be nonzero, term by term in the same order (for unstructured and diagonal
    terms it is theta itself).

    Examples
    --------
    >>> import hmix
    >>> d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> tm = ThetaMap.of(d.terms)
    >>> tm.names, tm.lower.tolist()
    (['Subject.(Intercept)', 'Subject.Days.(Intercept)', 'Subject.Days'], [0.0, -inf, 0.0])
    """

    terms: tuple[ReTerm, ...]
    slices: tuple[slice, ...]
    lam_slices: tuple[slice, ...]

    @classmethod
    def of(cls, terms: Sequence[ReTerm]) -> ThetaMap:
        """The map of these terms (lme4's order)."""
        th = np.cumsum([0] + [t.cov.ntheta for t in terms])
        la = np.cumsum([0] + [len(t.cov.pattern[0]) for t in terms])
        return cls(
            tuple(terms),
            tuple(slice(int(a), int(b)) for a, b in pairwise(th)),
            tuple(slice(int(a), int(b)) for a, b in pairwise(la)),
        )

    @property
    def ntheta(self) -> int:
        return self.slices[-1].stop if self.slices else 0

    @property
    def nlam(self) -> int:
        return self.lam_slices[-1].stop if self.lam_slices else 0

    @cached_property
    def identity(self) -> bool:
        """Whether lam is theta itself (every structure linear with an identity Jacobian)."""
        return all(t.cov.linear for t in self.terms)

    @cached_property
    def lower(self) -> np.ndarray:
        return _cat([t.cov.lower for t in self.terms])

    @cached_property
    def upper(self) -> np.ndarray:
        return _cat([t.cov.upper for t in self.terms])

    @cached_property
    def scale_mask(self) -> np.ndarray:
        """Parameters that are relative standard deviations (>= 0)."""
        return _cat([t.cov.scale_mask for t in self.terms]).astype(bool)

    @cached_property
    def names(self) -> list[str]:
        return [n for t in self.terms for n in t.cov.theta_names(t.group, t.names)]

    def split(self, theta: np.ndarray) -> list[np.ndarray]:
        """theta's slice of each term."""
        return [theta[sl] for sl in self.slices]

    def lam(self, theta: np.ndarray) -> np.ndarray:
        """The engine's lam at theta."""
        theta = np.asarray(theta, dtype=float)
        if self.identity:
            return theta
        return _cat([t.cov.lam(theta[sl]) for t, sl in zip(self.terms, self.slices)])

    def tmats(self, theta: np.ndarray) -> list[np.ndarray]:
        """T of every term."""
        return [t.cov.tmat(theta[sl]) for t, sl in zip(self.terms, self.slices)]

    def lam_jacobian(self, theta: np.ndarray) -> np.ndarray | None:
        """d lam / d theta (nlam x ntheta); None when it is the identity."""
        if self.identity:
            return None
        J = np.zeros((self.nlam, self.ntheta))
        for t, sl, ls in zip(self.terms, self.slices, self.lam_slices):
            J[ls, sl] = t.cov.jacobian(theta[sl])
        return J

    def rectify(self, theta: np.ndarray) -> np.ndarray:
        """The equivalent theta in each structure's canonical region (see
        ``CovarianceStructure.rectify``)."""
        return _cat([t.cov.rectify(theta[sl]) for t, sl in zip(self.terms, self.slices)])

    @cached_property
    def column_scales(self) -> list[np.ndarray]:
        """Each term's columns' typical size: their standard deviation over the rows (the root
        mean square for a constant column, such as the intercept's 1)."""
        return [spread_of(t.z) for t in self.terms]

    @cached_property
    def scale(self) -> np.ndarray:
        """theta times this is theta for columns of Z of size 1 (``CovarianceStructure.theta_scale``;
        a column of zeros counts as size 1)."""
        return self.scale_of(self.column_scales)

    def scale_of(self, column_scales: Sequence[np.ndarray]) -> np.ndarray:
        """``scale`` for these sizes of the terms' columns (given where the rows are elsewhere)."""
        scales = [np.where(s > 0, s, 1.0) for s in column_scales]
        return _cat([t.cov.theta_scale(s) for t, s in zip(self.terms, scales)])

    def start(
        self, ratios: Sequence[np.ndarray], estimates: Sequence[LevelEstimates] | None = None
    ) -> np.ndarray:
        """theta from each term's per-column SD ratios (and per-level estimates of its columns,
        see ``CovarianceStructure.start``)."""
        per_term = estimates if estimates is not None else [None] * len(self.terms)
        return _cat([t.cov.start(r, e) for t, r, e in zip(self.terms, ratios, per_term)])


def spread_of(columns: np.ndarray) -> np.ndarray:
    """Each column's standard deviation over the rows; a constant column's root mean square
    (the intercept's 1), 0 for a column of zeros (``column_spread`` from their sums).

    Examples
    --------
    >>> spread_of(np.array([[1.0, 2.0, 0.0], [1.0, 4.0, 0.0]])).tolist()
    [1.0, 1.0, 0.0]
    """
    sd, rms = np.std(columns, axis=0), np.sqrt(np.mean(columns * columns, axis=0))
    return np.where(sd > 0, sd, rms)


def column_spread(sums: np.ndarray, squares: np.ndarray, n: int) -> np.ndarray:
    """Columns' standard deviations from their sums and sums of squares over n rows (rows that
    are elsewhere: ``hmix.distributed``); a constant column's root mean square instead (the
    intercept's 1), 0 for a column of zeros.

    Examples
    --------
    >>> column_spread(np.array([3.0, 4.0]), np.array([5.0, 8.0]), 2).tolist()
    [0.5, 2.0]
    """
    if n == 0:
        return np.zeros(len(sums))
    mean = sums / n
    ms = squares / n
    var = np.maximum(ms - mean * mean, 0.0)
    # (a constant column's variance is rounding: relative to its mean square, it is zero)
    sd = np.where(var > 1e-12 * ms, np.sqrt(var), 0.0)
    return np.where(sd > 0, sd, np.sqrt(ms))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)
