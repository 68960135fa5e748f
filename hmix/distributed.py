"""Fits whose rows stay where they are: the model from its statistics alone.

The LMM engine needs only the blocks of A = [Z X y]'W[Z X y] (``hmix.engine.statistics``), which
add up over chunks of rows. ``Statistics`` holds them with the pattern of their nonzeros as
sorted keys, so that chunks computed apart (Dask partitions, ``hmix.dask``) add up without a
common pattern: ``a + b`` merges the keys. ``start_theta_from`` gives ``hmix.lmm.start_theta``'s
starting values from the statistics, and ``RowlessDesign`` is the design of a fit whose rows
were never in this process: its fitted model answers everything that does not need the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .design import ArrayLike, Design
from .engine import Blocks, Layout, Pattern
from .errors import HmixError
from .lmm import start_ratio
from .remat import ReTerm, ThetaMap, column_spread

__all__ = ["Statistics", "ColumnMoments", "RowlessDesign", "start_theta_from", "statistics_of"]


def _merge(ka: np.ndarray, va: np.ndarray, kb: np.ndarray, vb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sum of two sparse vectors given as sorted keys and values."""
    if len(ka) == len(kb) and np.array_equal(ka, kb):
        return ka, va + vb
    keys = np.union1d(ka, kb)
    values = np.zeros(len(keys))
    values[np.searchsorted(keys, ka)] += va
    values[np.searchsorted(keys, kb)] += vb
    return keys, values


@dataclass(frozen=True, eq=False)
class ColumnMoments:
    """Sums over rows of the columns of X and of Z (term by term) and of their squares, and of
    the prior weights: what the optimizers' scales take from the rows (``hmix.fit.Scaled``,
    ``LMMObjective.param_scale``)."""

    n: int
    sum_w: float
    x: np.ndarray  # (2, p): sums, sums of squares
    z: np.ndarray  # (2, K), the terms' columns in lme4's order

    @classmethod
    def of(cls, X: np.ndarray, terms: tuple[ReTerm, ...], weights: np.ndarray | None) -> ColumnMoments:
        Z = np.column_stack([t.z for t in terms]) if terms else np.zeros((len(X), 0))
        sum_w = float(len(X) if weights is None else weights.sum())
        return cls(
            len(X),
            sum_w,
            np.stack([X.sum(axis=0), (X * X).sum(axis=0)]),
            np.stack([Z.sum(axis=0), (Z * Z).sum(axis=0)]),
        )

    def __add__(self, other: ColumnMoments) -> ColumnMoments:
        return ColumnMoments(self.n + other.n, self.sum_w + other.sum_w, self.x + other.x, self.z + other.z)

    def x_scale(self) -> np.ndarray:
        """The columns of X's spread (``column_spread``; 1 for a column of zeros)."""
        s = column_spread(self.x[0], self.x[1], self.n)
        return np.where(s > 0, s, 1.0)

    def theta_scale(self, thetamap: ThetaMap) -> np.ndarray:
        """``ThetaMap.scale`` from these sums."""
        s = column_spread(self.z[0], self.z[1], self.n)
        ends = np.cumsum([0] + [t.k for t in thetamap.terms])
        return thetamap.scale_of([s[a:b] for a, b in pairwise(ends)])


@dataclass(frozen=True, eq=False)
class Statistics:
    """The blocks of A from some rows, with their pattern, and the rows' count and log-weights.

    Attributes
    ----------
    r1_keys, r1 : ndarray
        A_r1's nonzeros (``Pattern.r1_keys``) and their values.
    rr_keys, rr : ndarray
        Z_r'WZ_r's nonzeros (``Pattern.rr_keys``) and their values.
    A11, zr_xy, xy : ndarray
        As in ``Blocks``.
    n : int
    sum_log_w : float
        Sum of the log prior weights.
    dropped : int
        Rows left out for missing values.
    moments : ColumnMoments, optional
        The columns' sums (``statistics_of``'s with ``moments``).
    """

    r1_keys: np.ndarray
    r1: np.ndarray
    rr_keys: np.ndarray
    rr: np.ndarray
    A11: np.ndarray
    zr_xy: np.ndarray
    xy: np.ndarray
    n: int
    sum_log_w: float = 0.0
    dropped: int = 0
    moments: ColumnMoments | None = None

    def __add__(self, other: Statistics) -> Statistics:
        r1_keys, r1 = _merge(self.r1_keys, self.r1, other.r1_keys, other.r1)
        rr_keys, rr = _merge(self.rr_keys, self.rr, other.rr_keys, other.rr)
        return Statistics(
            r1_keys,
            r1,
            rr_keys,
            rr,
            self.A11 + other.A11,
            self.zr_xy + other.zr_xy,
            self.xy + other.xy,
            self.n + other.n,
            self.sum_log_w + other.sum_log_w,
            self.dropped + other.dropped,
            None if self.moments is None or other.moments is None else self.moments + other.moments,
        )

    def pattern(self, layout: Layout) -> Pattern:
        return Pattern(layout, self.r1_keys, self.rr_keys)

    def blocks(self) -> Blocks:
        return Blocks(self.A11, self.r1, self.rr, self.zr_xy, self.xy)


def statistics_of(layout: Layout, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> Statistics:
    """The statistics of some rows (``layout``'s terms hold their levels and columns)."""
    from .engine import RowStatistics

    stats = RowStatistics(layout)
    b = stats.fill(X, y, weights)
    slw = 0.0 if weights is None else float(np.log(weights).sum())
    pat = stats.pattern
    return Statistics(pat.r1_keys, b.r1, pat.rr_keys, b.rr, b.A11, b.zr_xy, b.xy, len(y), slw)


def _zwz(layout: Layout, pattern: Pattern, blocks: Blocks) -> tuple[sp.csr_matrix, np.ndarray]:
    """Z'WZ (q x q, engine order) and Z'W[X y] (q x (p + 1)) from the blocks."""
    lay = layout
    q1, qr, k1 = lay.q1, lay.qr, lay.k1
    idx = np.arange(lay.l1)[:, None, None] * k1
    rows = (idx + np.arange(k1)[None, :, None]).repeat(k1, axis=2).ravel()
    cols = (idx + np.arange(k1)[None, None, :]).repeat(k1, axis=1).ravel()
    parts = [(blocks.A11.ravel(), rows, cols)]
    z = pattern.indices < qr
    zr, zc = pattern.indices[z] + q1, pattern.col[z]
    parts += [(blocks.r1[z], zr, zc), (blocks.r1[z], zc, zr)]
    rr_r, rr_c = pattern.rr_keys // lay.m + q1, pattern.rr_keys % lay.m + q1
    off = rr_r != rr_c
    parts += [(blocks.rr, rr_r, rr_c), (blocks.rr[off], rr_c[off], rr_r[off])]
    v, r, c = (np.concatenate(a) for a in zip(*parts))
    q = q1 + qr
    ZtWZ = sp.csr_matrix((v, (r, c)), shape=(q, q))
    zxy1 = np.zeros((lay.p + 1, q1))
    xy = ~z
    zxy1[pattern.indices[xy] - qr, pattern.col[xy]] = blocks.r1[xy]
    return ZtWZ, np.vstack([zxy1.T, blocks.zr_xy])


def start_theta_from(layout: Layout, pattern: Pattern, blocks: Blocks, n: int, sweeps: int = 3) -> np.ndarray:
    """``hmix.lmm.start_theta`` from the statistics instead of the rows (the same formulas: every
    sum over rows it takes is a product of Z'WZ, Z'W[X y] and [X y]'W[X y] with level effects)."""
    lay = layout
    p = lay.p
    ZtWZ, ZtWxy = _zwz(layout, pattern, blocks)
    xy = blocks.xy
    beta = np.linalg.solve(xy[:p, :p], xy[:p, p]) if p else np.zeros(0)
    coef = np.concatenate([-beta, [1.0]])  # r = [X y] coef
    rWr = float(coef @ xy @ coef)
    c_all = ZtWxy @ coef  # Z'W r
    diag = ZtWZ.diagonal()
    tm = lay.thetamap
    # the u-space positions of each (term, column), lme4's term order
    start = dict(zip((id(t) for t in lay.terms), lay.offsets))
    groups = [start[id(t)] + np.arange(t.nlevels) * t.k + a for t in tm.terms for a in range(t.k)]
    szz = [diag[g] for g in groups]
    ok = [s > 0 for s in szz]
    safe = [np.where(o, s, 1.0) for s, o in zip(szz, ok)]
    slopes = [c_all[g] / sf for g, sf in zip(groups, safe)]
    if len(tm.terms) > 1:
        v = np.zeros(ZtWZ.shape[0])  # the level effects of every (term, column) at once
        for _ in range(sweeps):
            for g, sf in zip(groups, safe):
                v[g] = 0.0
                v[g] = (c_all[g] - ZtWZ[g] @ v) / sf
        dof = n - sum(int(o.sum()) for o in ok)
        joint_s2 = (rWr - 2.0 * float(v @ c_all) + float(v @ (ZtWZ @ v))) / max(dof, 1)
    ratios: list[np.ndarray] = []
    i = 0
    for t in tm.terms:
        sd = np.empty(t.k)
        for a in range(t.k):
            b, o = slopes[i], ok[i]
            if len(tm.terms) > 1:
                s2 = joint_s2
            else:
                s2 = (rWr - 2.0 * float(b @ c_all[groups[i]]) + float((szz[i] * b) @ b)) / max(
                    n - int(o.sum()), 1
                )
            scale = math.sqrt(float(szz[i].sum()) / n)  # (the column's weighted root mean square)
            sd[a] = start_ratio(b, szz[i], o, s2, scale if scale > 0 else 1.0)
            i += 1
        ratios.append(sd)
    return tm.start(ratios)


@dataclass(frozen=True, eq=False)
class RowlessDesign(Design):
    """The design of a fit whose rows stay in a cluster: the formula, the levels and how to code
    new data, without y, X or the terms' rows (``n`` is their count). ``residual_quantiles``
    holds the scaled residuals' quartiles, computed where the rows are."""

    nobs: int = 0
    residual_quantiles: np.ndarray | None = None
    holds_rows = False

    @property
    def n(self) -> int:
        return self.nobs

    def _no_rows(self, what: str) -> HmixError:
        return HmixError(
            f"{what} needs the rows of the data, which stay in the Dask cluster for this fit; "
            "compute it there (for instance ddf.map_partitions(model.predict)), or fit the data "
            "in memory"
        )

    def subset(self, rows: ArrayLike, *, check: bool = True) -> Design:
        raise self._no_rows("a refit on a subset of the rows")

    def with_response(self, y: np.ndarray) -> Design:
        raise self._no_rows("a refit to another response")


def rowless_terms(design: Design, levels: dict[str, pd.Index]) -> tuple:
    """The design's terms with the given levels (by group) and without rows, sorted as lme4 sorts
    them (most levels first, ties in the formula's order)."""
    order = {(b.lhs, b.group): i for i, b in enumerate(design.formula.bars)}
    terms = [
        replace(t, refs=np.zeros(0, np.int64), levels=levels[t.group], z=np.zeros((0, t.k)))
        for t in sorted(design.terms, key=lambda t: order[(t.lhs, t.group_columns)])
    ]
    terms.sort(key=lambda t: -t.nlevels)
    ThetaMap.of(terms)  # (checks the terms' structures)
    return tuple(terms)
