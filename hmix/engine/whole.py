"""Small systems: the objective's value, and its exact derivatives, from one dense factor of the
whole system.

For systems with at most a few dozen rows in all (q + p + 1), the blocked factor's cost is
Python's per-call overhead on its many small arrays rather than arithmetic. Lambda'A Lambda + I
is a quadratic polynomial in lam whose coefficient matrices are formed once per set of blocks,
so an evaluation is one matrix-vector product and one dense Cholesky, and the gradient and
Hessian follow from the inverse and the coefficient matrices (``WholeSystem.derivatives``)
without the rows. beta, u and the variances come from the blocked factor.
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
        self._upper = np.triu(np.ones((size, size), dtype=bool))
        # lam_s lam_t's coefficient row for every (s, t), and d2 (lam_s lam_t) / d lam_s d lam_t
        P = np.empty((nth, nth), dtype=np.int64)
        P[s_, t_] = P[t_, s_] = 1 + nth + np.arange(len(s_))
        self._pair_rows, self._pair_mult = P, 1.0 + np.eye(nth)

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
        return self._parts(lam)[0]

    def _parts(self, lam: np.ndarray) -> tuple[tuple[float, float, float], np.ndarray, int]:
        """The parts, the upper Cholesky factor U (M = U'U) and LAPACK's info at ``lam``."""
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
        return (logdet_z, logdet_x, 0.0 if info == size else float(U[-1, -1] ** 2)), U, info

    def derivatives(
        self, lam: np.ndarray, hessian: bool = False
    ) -> tuple[tuple[float, float, float], np.ndarray, np.ndarray | None] | None:
        """The parts at ``lam``, and the exact first (3 x nlam) and, with ``hessian``, second
        (3 x nlam x nlam) derivatives in lam of log|L_Z|^2, log|L_X|^2 and log r^2; None when y
        lies in the column space (no residual).

        M's derivatives are the polynomial's: D_s = dM/d lam_s and E_st = d2M/d lam_s d lam_t, a
        coefficient matrix. With v = M^-1 e_y and phi = (M^-1)_yy = 1 / r^2::

            d log|M| = tr(M^-1 D_s)      d2 log|M| = tr(M^-1 E_st) - tr(M^-1 D_s M^-1 D_t)
            d phi = -v'D_s v             d2 phi = 2 v'D_s M^-1 D_t v - v'E_st v

        the same for log|M_ZZ| with the ZZ blocks, log r^2 = -log phi, and log|L_X|^2 = log|M| -
        log|M_ZZ| - log r^2 (the factor's diagonal in three parts).
        """
        lam = np.asarray(lam, dtype=float)
        parts, U, info = self._parts(lam)
        if info == self.size or parts[2] <= 0.0:
            return None
        assert self._basis is not None
        nlam, size, q = len(lam), self.size, self._q
        inv_full, info_full = sla.lapack.dpotri(U, lower=0)  # (the upper triangles only)
        inv_z, info_z = sla.lapack.dpotri(U[:q, :q], lower=0)  # M_ZZ = U_ZZ'U_ZZ
        if info_full or info_z:
            return None
        upper = self._upper
        W = np.zeros((3, size, size))  # M^-1, M_ZZ^-1 (padded) and vv'
        S_full = W[0]
        np.copyto(S_full, np.where(upper, inv_full, inv_full.T))
        S_z = W[1, :q, :q]
        np.copyto(S_z, np.where(upper[:q, :q], inv_z, inv_z.T))
        v = S_full[:, -1]  # M^-1 e_y
        np.multiply(v[:, None], v[None, :], out=W[2])
        traces = self._basis @ W.reshape(3, -1).T  # tr(M^-1 B_k), tr(M_ZZ^-1 B_k), v'B_k v
        # d(coefficient vector)/d lam: 1 for lam_s, lam_t for lam_s lam_t (2 lam_s on the diagonal)
        P, mult = self._pair_rows, self._pair_mult
        G = np.zeros((nlam, self._basis.shape[0]))
        G[:, 1 : 1 + nlam] = np.eye(nlam)
        G[np.arange(nlam)[:, None], P] = lam[None, :] * mult
        t_full, t_z, vdv = (G @ traces).T
        phi = float(v[-1])
        d_r = vdv / phi  # d log r^2 = -d phi / phi
        grad = np.stack([t_z, t_full - t_z - d_r, d_r])
        if not hessian:
            return parts, grad, None
        E = traces[P] * mult[:, :, None]  # tr(M^-1 E_st) ... (nlam, nlam, 3)
        D = (G @ self._basis).reshape(nlam, size, size)
        K = S_full @ D
        Kz = S_z @ D[:, :q, :q]
        Dv = D @ v
        h_full = E[:, :, 0] - np.einsum("aij,bji->ab", K, K)
        h_z = E[:, :, 1] - np.einsum("aij,bji->ab", Kz, Kz)
        d2_phi = 2.0 * Dv @ S_full @ Dv.T - E[:, :, 2]
        h_r = -d2_phi / phi + np.outer(vdv, vdv) / phi**2  # (d phi = -vdv)
        return parts, grad, np.stack([h_z, h_full - h_z - h_r, h_r])
