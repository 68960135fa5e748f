"""Small systems: the objective's value from one dense factor of the whole system.

For systems with at most a few dozen rows in all (q + p + 1), the blocked factor's cost is
Python's per-call overhead on its many small arrays rather than arithmetic. Lambda'A Lambda + I
is a quadratic polynomial in lam whose coefficient matrices are formed once per set of blocks,
so an evaluation is one matrix-vector product and one dense Cholesky (sleepstudy: 10 us,
against 34 us blocked). Only the value comes from here; beta, u and variances from the blocked
factor.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg as sla

from .cholesky import BlockedCholesky
from .linalg import NotPositiveDefinite

__all__ = ["WholeSystem"]


class WholeSystem:
    """``objective_parts`` of a small system from its polynomial in lam.

    With Lambda = Lambda_0 + sum_s lam_s E_s (Lambda_0: 1 on X and y, E_s where lam_s sits),
    the constant is Lambda_0'A Lambda_0 + I_q, lam_s's coefficient is E_s'A Lambda_0 + its
    transpose, and lam_s lam_t's is E_s'A E_t + its transpose (once when s = t). Each column of
    Lambda holds lam_s at most once, so the maps from A's entries to the coefficients are fixed
    flat indices (the symbolic phase here).
    """

    def __init__(self, chol: BlockedCholesky):
        self.chol = chol
        lay = self.layout = chol.layout
        t1, k1 = lay.first, lay.k1
        r, c = t1.cov.pattern
        base = np.arange(lay.l1)[:, None] * k1
        sl = lay.lam_slices[0]
        rows = np.concatenate([(base + r).ravel(), lay.q1 + lay.lam_rows])
        cols = np.concatenate([(base + c).ravel(), lay.q1 + lay.lam_cols])
        all_src = np.concatenate([np.tile(np.arange(sl.start, sl.stop), lay.l1), lay.lam_src])
        size = self.size = lay.q1 + lay.m
        self._q = lay.q1 + lay.qr  # (the random effects' rows)
        nth = lay.nlam
        order = np.argsort(all_src, kind="stable")  # entries grouped by lam index
        src, r, c = all_src[order], rows[order], cols[order]
        count = np.bincount(src, minlength=nth)
        first = np.cumsum(count) - count
        upper = [(a, b) for a in range(nth) for b in range(a, nth)]  # (np.triu_indices, faster)
        s_, t_ = self._pairs = (np.array([a for a, _ in upper]), np.array([b for _, b in upper]))
        q, sq = lay.q1 + lay.qr, size * size
        xy = np.arange(q, size)[:, None]
        lin_dest = ((1 + src) * sq + c)[None, :] + xy * size  # lam_s: Lambda_0'A E_s (X and y rows)
        lin_from = r[None, :] + xy * size
        # lam_s lam_t: E_s'A E_t, every (entry of s, entry of t)
        sizes = count[s_] * count[t_]
        pair = np.repeat(np.arange(len(s_)), sizes)
        j = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        ea, eb = first[s_[pair]] + j // count[t_[pair]], first[t_[pair]] + j % count[t_[pair]]
        self._dest = np.concatenate([lin_dest.ravel(), (1 + nth + pair) * sq + c[ea] * size + c[eb]])
        self._from = np.concatenate([lin_from.ravel(), r[ea] * size + r[eb]])
        self._mirror = np.concatenate([1 + np.arange(nth), 1 + nth + np.flatnonzero(s_ != t_)])
        idx = base + np.arange(k1)[None, :]  # the first term's k1 x k1 blocks
        self._a11 = (idx[:, :, None] * size + idx[:, None, :]).ravel()
        self._basis: np.ndarray | None = None

    @staticmethod
    def basis_size(nlam: int, size: int) -> int:
        """Values of the coefficient matrices for ``nlam`` parameters and ``size`` rows."""
        return (1 + nlam + nlam * (nlam + 1) // 2) * size * size

    def refill(self) -> None:
        """The coefficient matrices for the blocks the blocked factorization holds."""
        chol, lay = self.chol, self.layout
        blocks = chol.blocks
        assert blocks is not None
        q1, size = lay.q1, self.size
        q = q1 + lay.qr
        A = np.zeros((size, size))  # [Z X y]'W[Z X y], engine order
        A.ravel()[self._a11] = blocks.A11.ravel()
        r1_rows, r1_cols = q1 + chol.pattern.indices, chol.pattern.col
        A[r1_rows, r1_cols] = A[r1_cols, r1_rows] = blocks.r1
        rr = np.tril(chol.A_rr)
        A[q1:, q1:] = rr + np.tril(rr, -1).T
        out = np.zeros((1 + lay.nlam + len(self._pairs[0]), size, size))
        out[0, q:, q:] = A[q:, q:]
        out[0, np.arange(q), np.arange(q)] = 1.0
        out.ravel()[self._dest] = A.ravel()[self._from]
        mirror = self._mirror
        out[mirror] += np.swapaxes(out[mirror], 1, 2)
        self._basis = out.reshape(len(out), size * size)

    def objective_parts(self, lam: np.ndarray) -> tuple[float, float, float]:
        """``(log|L_Z|^2, log|L_X|^2, r^2)`` at ``lam`` from one dense Cholesky."""
        assert self._basis is not None
        s_, t_ = self._pairs
        size = self.size
        M = (np.concatenate(([1.0], lam, lam[s_] * lam[t_])) @ self._basis).reshape(size, size)
        # M is symmetric: its C-ordered array is the Fortran-ordered M' LAPACK factors in place
        U, info = sla.lapack.dpotrf(M.T, lower=0, clean=0, overwrite_a=1)
        if 0 < info < size:
            raise NotPositiveDefinite(f"whole system, pivot {info}")
        s = np.log(U.diagonal()[:-1]).cumsum()  # (50 terms at most: as exact as a pairwise sum)
        q = self._q
        logdet_z, logdet_x = 2.0 * float(s[q - 1]), 2.0 * float(s[-1] - s[q - 1])
        if not math.isfinite(logdet_z + logdet_x):
            raise NotPositiveDefinite("whole system")
        # info == size: y lies in the column space, a zero residual
        return logdet_z, logdet_x, 0.0 if info == size else float(U[-1, -1] ** 2)
