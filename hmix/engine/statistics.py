"""The statistics of a mixed model: the blocks of A = [Z X y]'W[Z X y], sums over rows.

Everything the engine factors is a sum over rows: the first term's diagonal blocks A11 (one
k1 x k1 block per level), the sparse first block column A_r1 of the rest (the later terms' Z'WZ_1
and Z_1'W[X y]), and the rest block A_rr (the later terms' Z'WZ, Z'W[X y] and [X y]'W[X y]).
``RowStatistics`` computes them for a chunk of rows: a symbolic phase once (where each row's
products land: the ``Pattern`` of A's nonzeros) and then ``fill`` for any weights, response and
fixed-effects matrix, which PIRLS calls at every step. ``Blocks`` add up, so the statistics of
many chunks reduce to those of all rows (``reduce_blocks``): chunks of a large frame, partitions
of a distributed one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from .layout import Layout
from .linalg import ColumnPairs, column_pairs

__all__ = ["Pattern", "Blocks", "RowStatistics", "reduce_blocks", "ranked"]

_WEIGHT_MAP_ENTRIES = 1 << 20  # see RowStatistics._weight_map


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def ranked(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``keys`` (integers below ``size``), sorted, and each key's position
    among them (a mark-and-count over ``size`` when that is small, which beats sorting; when it
    is large, the scattered marks would touch every page of the table)."""
    if size <= 8 * len(keys) + 1_000_000:
        present = np.zeros(size, dtype=bool)
        present[keys] = True
        uniq = np.flatnonzero(present)
        position = np.empty(size, dtype=np.int64)  # (touched only where keys are)
        position[uniq] = np.arange(len(uniq))
        return uniq, position[keys]
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, inv.ravel()


@dataclass(frozen=True, eq=False)
class Pattern:
    """Where A's nonzeros are: A_r1 (m x q1, CSC) and the lower triangle of the later terms' Z'Z.

    A_r1 has the sparsity of Z_r'Z_1 in its first qr rows and dense rows for X and y.

    Attributes
    ----------
    r1_keys : ndarray
        Sorted flat positions ``column * m + row`` of A_r1's nonzeros.
    rr_keys : ndarray
        Sorted flat positions ``row * m + column`` (row >= column) of Z_r'Z_r's nonzeros.
    """

    layout: Layout
    r1_keys: np.ndarray
    rr_keys: np.ndarray

    @classmethod
    def of_keys(cls, layout: Layout, zkeys: np.ndarray, rr_keys: np.ndarray) -> Pattern:
        """From the distinct keys of the random-effects products (the X and y rows are dense)."""
        keys = np.union1d(zkeys, _dense_keys(layout))
        return cls(layout, keys, np.asarray(rr_keys, dtype=np.int64))

    @property
    def m(self) -> int:
        return self.layout.m

    @property
    def nnz(self) -> int:
        return len(self.r1_keys)

    @cached_property
    def indices(self) -> np.ndarray:
        """A_r1's row of every nonzero (CSC order)."""
        return (self.r1_keys % self.m).astype(np.int32)

    @cached_property
    def col(self) -> np.ndarray:
        """A_r1's column of every nonzero."""
        return (self.r1_keys // self.m).astype(np.int32)

    @cached_property
    def indptr(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(np.bincount(self.col, minlength=self.layout.q1))])

    @cached_property
    def zpart(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The nonzeros in A_r1's random-effects rows (CSC order): their index among all,
        row, column, and the CSC pointer of that part."""
        zsel = np.flatnonzero(self.indices < self.layout.qr)
        cols = self.col[zsel].astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=self.layout.q1))])
        return zsel, self.indices[zsel], cols, indptr

    @cached_property
    def row_inverse_pairs(self) -> ColumnPairs:
        """``column_pairs`` of the random-effects part of A_r1 (``zpart``) and the rows' columns."""
        lay = self.layout
        return column_pairs(self.zpart[3], lay.l1, lay.k1, lay.row_columns[0])

    def r1_matrix(self, data: np.ndarray) -> sp.csc_matrix:
        """A_r1 with the given values."""
        return sp.csc_matrix((data, self.indices, self.indptr), shape=(self.m, self.layout.q1))

    def r1_rmatvec(self, data: np.ndarray, v: np.ndarray) -> np.ndarray:
        """A_r1' v (no sparse-matrix object on the hot path)."""
        return np.bincount(self.col, data * np.take(v, self.indices), minlength=self.layout.q1)

    @cached_property
    def diagonal_rows(self) -> int:
        """How many leading rows of the rest block have a diagonal block in the middle matrix:
        the second term's, when it is scalar and the first term is nested in it (each level of
        the first term meets one level of the second: grouseticks' INDEX in BROOD), else 0.

        Its Z'WZ block is diagonal then, and so is the Schur update's (a level of the first term
        contributes to one of its rows only): those rows are eliminated by a scaling.
        """
        lay = self.layout
        if len(lay.terms) < 2 or lay.terms[1].k != 1:
            return 0
        kd = lay.terms[1].q
        sel = self.indices < kd
        level = self.col[sel] // lay.k1
        row = self.indices[sel]
        if lay.k1 == 1:
            return kd if np.bincount(level, minlength=lay.l1).max(initial=0) <= 1 else 0
        lo = np.full(lay.l1, kd)
        hi = np.full(lay.l1, -1)
        np.minimum.at(lo, level, row)
        np.maximum.at(hi, level, row)
        met = hi >= 0
        return kd if np.array_equal(lo[met], hi[met]) else 0


def _dense_keys(layout: Layout) -> np.ndarray:
    """A_r1's positions in the rows of X and y (every one of them)."""
    lay = layout
    return (np.arange(lay.q1)[:, None] * lay.m + lay.qr + np.arange(lay.p + 1)[None, :]).ravel()


@dataclass(frozen=True, eq=False)
class Blocks:
    """The blocks of A for one set of weights and response; they add up over chunks of rows.

    Attributes
    ----------
    A11 : ndarray, (l1, k1, k1)
    r1 : ndarray
        A_r1's values on the pattern's ``r1_keys``.
    rr : ndarray
        Z_r'WZ_r's values on the pattern's ``rr_keys``.
    zr_xy : ndarray, (qr, p + 1)
        Z_r'W[X y].
    xy : ndarray, (p + 1, p + 1)
        [X y]'W[X y].
    """

    A11: np.ndarray
    r1: np.ndarray
    rr: np.ndarray
    zr_xy: np.ndarray
    xy: np.ndarray

    def __add__(self, other: Blocks) -> Blocks:
        return Blocks(
            self.A11 + other.A11,
            self.r1 + other.r1,
            self.rr + other.rr,
            self.zr_xy + other.zr_xy,
            self.xy + other.xy,
        )


class RowStatistics:
    """The blocks of A from a chunk of rows: where each row's products land, found once, then
    ``fill`` for any weights (once for an LMM, at every PIRLS step for a GLMM).

    Parameters
    ----------
    layout : Layout
    rows : slice, optional
        The chunk (default: every row).
    pattern : Pattern, optional
        The pattern of all chunks; by default this chunk's own.
    reweighted : bool
        The weights change at every step: Z'W[X y] by sparse products with a Z' built once,
        rather than by bincounts (cheaper when filled once).
    """

    def __init__(
        self,
        layout: Layout,
        rows: slice | None = None,
        pattern: Pattern | None = None,
        reweighted: bool = False,
    ):
        self.layout = layout
        self.rows = slice(None) if rows is None else rows
        self.reweighted = reweighted
        lay, sl = layout, self.rows
        t1 = lay.first
        n = len(t1.refs[sl])
        self.n = n
        m, k1 = lay.m, lay.k1
        cols1 = [t1.refs[sl] * k1 + al for al in range(k1)]
        z1 = t1.z[sl]
        rest = self._rest = [(row[sl], z[sl]) for row, z in lay.u_columns()[k1:]]
        rest = [(row - lay.q1, z) for row, z in rest]
        self._rest = rest
        zr_keys, zr_prod = [], []
        for row, z in rest:
            for al in range(k1):
                zr_keys.append(cols1[al] * m + row)
                zr_prod.append(z * z1[:, al])
        zkeys = _cat(zr_keys)
        rr_flat, rr_prod = [], []
        for i, (ri, zi) in enumerate(rest):
            for rj, zj in rest[: i + 1]:
                lo, hi = np.minimum(ri, rj), np.maximum(ri, rj)
                rr_flat.append(hi * m + lo)
                rr_prod.append(zi * zj)
        rkeys = _cat(rr_flat)
        if pattern is None:
            dense = _dense_keys(lay)
            keys, rank = ranked(np.concatenate([zkeys, dense]), m * lay.q1)
            rr_keys, self._rr_rank = ranked(rkeys, m * m)
            pattern = Pattern(lay, keys, rr_keys)
            self._r1_zentry = rank[: len(zkeys)]
            self._r1_xypos = rank[len(zkeys) :]
        else:
            self._r1_zentry = np.searchsorted(pattern.r1_keys, zkeys)
            self._r1_xypos = np.searchsorted(pattern.r1_keys, _dense_keys(lay))
            self._rr_rank = np.searchsorted(pattern.rr_keys, rkeys)
        self.pattern = pattern
        # each product's row: n rows per block of products (tiled, not stored)
        self._r1_nblocks = len(zr_keys)
        self._rr_nblocks = len(rr_flat)
        self._r1_zprod = _cat(zr_prod)
        self._rr_prod = _cat(rr_prod)

    def fill(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> Blocks:
        """The blocks for these weights, response and fixed-effects matrix (this chunk's rows)."""
        lay = self.layout
        n = self.n
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        z1_wxy, zr_wxy, xy = self._xy_products(X, y, weights, w)
        wmap = self._weight_map
        if wmap is not None:
            # (A11, A_r1's Z entries and Z_r'WZ_r in one product: PIRLS refills these at every step)
            o1, o2 = lay.l1 * lay.k1 * lay.k1, lay.l1 * lay.k1 * lay.k1 + self.pattern.nnz
            v = wmap @ w
            A11, r1, rr = v[:o1].reshape(lay.l1, lay.k1, lay.k1), v[o1:o2], v[o2:]
            r1[self._r1_xypos] += z1_wxy.ravel()
            return Blocks(A11, r1, rr, zr_wxy, xy)
        t1 = lay.first
        refs1, z1 = t1.refs[self.rows], t1.z[self.rows]
        wz = z1 * w[:, None]
        A11 = np.empty((lay.l1, lay.k1, lay.k1))
        for a in range(lay.k1):
            for b in range(a, lay.k1):
                A11[:, a, b] = A11[:, b, a] = np.bincount(refs1, wz[:, a] * z1[:, b], minlength=lay.l1)
        # (no rest terms: bincount of nothing is an integer array)
        r1 = np.bincount(
            self._r1_zentry, np.tile(w, self._r1_nblocks) * self._r1_zprod, minlength=self.pattern.nnz
        ).astype(float, copy=False)
        r1[self._r1_xypos] += z1_wxy.ravel()
        if lay.qr:
            rr = np.bincount(
                self._rr_rank,
                np.tile(w, self._rr_nblocks) * self._rr_prod,
                minlength=len(self.pattern.rr_keys),
            ).astype(float, copy=False)
        else:
            rr = np.zeros(0)
        return Blocks(A11, r1, rr, zr_wxy, xy)

    @cached_property
    def _weight_map(self) -> sp.csr_matrix | None:
        """For a reweighted system of at most ``_WEIGHT_MAP_ENTRIES`` products: the statistics
        that depend on the weights alone (A11, A_r1's Z entries, Z_r'WZ_r, in that order) as a
        sparse matrix times the weights. One product replaces a bincount each and their tiled
        weights, which on small problems cost more in numpy's overhead than in arithmetic.
        None otherwise."""
        lay, n = self.layout, self.n
        k1 = lay.k1
        entries = n * (k1 * k1 + self._r1_nblocks + self._rr_nblocks)
        if not self.reweighted or entries > _WEIGHT_MAP_ENTRIES:
            return None
        t1 = lay.first
        refs1, z1 = t1.refs[self.rows], t1.z[self.rows]
        row = np.arange(n)
        keys, cols, vals = [], [], []
        for a in range(k1):
            for b in range(k1):
                keys.append(refs1 * (k1 * k1) + a * k1 + b)
                cols.append(row)
                vals.append(z1[:, a] * z1[:, b])
        o1 = lay.l1 * k1 * k1
        o2 = o1 + self.pattern.nnz
        keys += [o1 + self._r1_zentry, o2 + self._rr_rank]
        cols += [np.tile(row, self._r1_nblocks), np.tile(row, self._rr_nblocks)]
        vals += [np.asarray(self._r1_zprod, dtype=float), np.asarray(self._rr_prod, dtype=float)]
        size = o2 + (len(self.pattern.rr_keys) if lay.qr else 0)
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(keys), np.concatenate(cols))), shape=(size, n)
        )

    def _xy_products(
        self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None, w: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Z_1'W[X y] (q1 x (p + 1)), Z_r'W[X y] (qr x (p + 1)) and [X y]'W[X y].

        A system refilled at every PIRLS step multiplies by sparse Z' built once. One filled
        once (an LMM) takes a bincount per column of Z and of [X y] instead, as fast as the
        product and without building the sparse matrices, and makes no copy of X (none without
        weights, one with): X can be the largest array of a fit (a 5,000-level factor on 50,000
        rows is 2 GB).
        """
        lay = self.layout
        if self.reweighted:
            Xy = np.column_stack([X, y])
            wXy = Xy * w[:, None]
            zx = np.asarray(self._zt @ wXy)
            return zx[: lay.q1], zx[lay.q1 :], Xy.T @ wXy
        wX = X if weights is None else X * w[:, None]
        wy = y * w
        p = X.shape[1]
        xy = np.empty((p + 1, p + 1))
        xy[:p, :p] = X.T @ wX
        xy[:p, p] = xy[p, :p] = X.T @ wy
        xy[p, p] = y @ wy
        wcols = [wX[:, c] for c in range(p)] + [wy]
        t1 = lay.first
        first = [(t1.refs[self.rows] * lay.k1 + a, t1.z[self.rows, a]) for a in range(lay.k1)]
        out = []
        for columns, size in ((first, lay.q1), (self._rest, lay.qr)):
            s = np.zeros((size, p + 1))
            for row, z in columns:
                for c, col in enumerate(wcols):
                    s[:, c] += np.bincount(row, z * col, minlength=size)
            out.append(s)
        return out[0], out[1], xy

    @cached_property
    def _zt(self) -> sp.csr_matrix:
        """Z' of this chunk's rows, engine order."""
        return sp.hstack([t.zmatrix[self.rows] for t in self.layout.terms], format="csr").T

    def rest_z(self) -> sp.csr_matrix | None:
        """Z of the later terms (rows x qr), or None when there are none."""
        terms = self.layout.terms[1:]
        return sp.hstack([t.zmatrix[self.rows] for t in terms], format="csr") if terms else None


def reduce_blocks(
    layout: Layout,
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    chunks: Iterable[slice],
) -> tuple[Pattern, Blocks]:
    """The pattern and blocks of all rows as the union and sum over chunks of rows."""
    chunks = list(chunks)
    parts = [RowStatistics(layout, rows=c) for c in chunks]
    zkeys = np.unique(_cat([s.pattern.r1_keys for s in parts]))
    rr_keys = np.unique(_cat([s.pattern.rr_keys for s in parts]))
    pattern = Pattern(layout, zkeys, rr_keys)
    total: Blocks | None = None
    for c in chunks:
        stats = RowStatistics(layout, rows=c, pattern=pattern)
        w = None if weights is None else weights[c]
        b = stats.fill(X[c], y[c], w)
        total = b if total is None else total + b
    assert total is not None
    return pattern, total
