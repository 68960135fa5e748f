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

from .cholesky import BlockedCholesky, equal_blocks
from .linalg import NotPositiveDefinite

__all__ = ["WholeSystem", "LevelDerivatives"]


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
        A[q1:, q1:] = chol.A_rr.dense()
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


class LevelDerivatives:
    """Exact derivatives of a one-term system along directions in lam, level by level.

    With one term, the whole system is [[M, B], [B', C]]: M block diagonal with a level's
    M_i = T'A_i T + I (k x k), B_i = T'R_i (R_i = Z_i'W[X y], k x m) and C = [X y]'W[X y].
    Eliminating M leaves the Schur complement S = C - sum_i R_i' P_i R_i with P_i = T M_i^-1 T'
    (m x m, whose factor holds log|L_X|^2 and r^2), so log|L_Z|^2 = sum_i log|M_i| and every
    derivative is a batch of k x k products and a few m x m ones: no matrix of the whole
    system's size, which a whole system (``WholeSystem``) needs, and none of the rows, which
    ``LMMObjective.gradient`` sums over. Levels with equal blocks A_i share their k x k work
    (``equal_blocks``: balanced designs have one), and sum_i R_i' X R_i over a group of them is
    one product with sum_i R_i (x) R_i, formed once. The directions are T's derivatives along
    the optimizer's parameters (a handful), so the Hessian costs the square of their number,
    not of lam's size.
    """

    def __init__(self, chol: BlockedCholesky, groups: tuple[np.ndarray, np.ndarray] | None = None):
        lay = self.layout = chol.layout
        blocks = self.blocks = chol.blocks
        assert blocks is not None and lay.qr == 0
        pat = chol.pattern
        k, m = lay.k1, lay.m
        R = np.zeros((m, lay.q1))
        R[pat.indices, pat.col] = blocks.r1
        R = R.T.reshape(lay.l1, k, m)
        outer = (R[:, :, None, :, None] * R[:, None, :, None, :]).reshape(lay.l1, k * k * m * m)
        if groups is None:
            self._A, self._counts, W = blocks.A11, np.ones(lay.l1), outer
        else:
            first, which = groups
            order = np.argsort(which, kind="stable")
            counts = np.bincount(which, minlength=len(first))
            self._A, self._counts = blocks.A11[first], counts.astype(float)
            W = np.add.reduceat(outer[order], np.cumsum(counts) - counts, axis=0)
        self._W = W.reshape(-1, m * m)  # sum_i R_i (x) R_i per group of levels
        self._C = chol.A_rr.dense()
        self._eye = np.eye(k)

    @classmethod
    def of(cls, chol: BlockedCholesky, max_size: int) -> LevelDerivatives | None:
        """The level derivatives of a one-term system whose sums over the levels
        (sum_i R_i (x) R_i per group) hold at most ``max_size`` values; else None."""
        lay = chol.layout
        if type(chol) is not BlockedCholesky or lay.qr or chol.blocks is None:
            return None
        groups = equal_blocks(chol.blocks.A11)
        if (lay.l1 if groups is None else len(groups[0])) * (lay.k1 * lay.m) ** 2 > max_size:
            return None
        return cls(chol, groups)

    def _sum(self, X: np.ndarray) -> np.ndarray:
        """sum_i R_i' X_g(i) R_i for a stack of per-group k x k matrices (..., groups, k, k)."""
        lead = X.shape[:-3]
        m = self._C.shape[0]
        return np.asarray(X.reshape((*lead, -1)) @ self._W).reshape((*lead, m, m))

    def derivatives(
        self, lam: np.ndarray, dT: np.ndarray, d2T: np.ndarray | None = None
    ) -> tuple[tuple[float, float, float], np.ndarray, np.ndarray | None] | None:
        """The parts at ``lam`` (as ``objective_parts``), and the exact first (3 x d) and, given
        ``d2T``, second (3 x d x d) derivatives of log|L_Z|^2, log|L_X|^2 and log r^2 along the
        d directions whose derivatives of T are ``dT`` (d x k x k) and ``d2T`` (d x d x k x k);
        None when M or S is not positive definite, or y lies in the column space.

        With N_i = M_i^-1, M_a = T_a'A T + T'A T_a (and M_ab likewise)::

            d log|M_i| = tr(N M_a)        d2 log|M_i| = tr(N M_ab) - tr(N M_a N M_b)
            N_a = -N M_a N                N_ab = N M_a N M_b N + N M_b N M_a N - N M_ab N

        P_a and P_ab are the product rule's terms of T N T', S_a = -sum R'P_a R, and S's own
        log-determinant and phi = (S^-1)_yy = 1 / r^2 follow as in ``WholeSystem.derivatives``.
        """
        T = self.layout.tmats(np.asarray(lam, dtype=float))[0]
        A, eye = self._A, self._eye
        AT = A @ T
        M = T.T @ AT + eye
        try:
            L = np.linalg.cholesky(M)
        except np.linalg.LinAlgError:
            return None
        Linv = np.linalg.solve(L, np.broadcast_to(eye, L.shape))
        N = np.swapaxes(Linv, 1, 2) @ Linv
        G = N @ T.T  # N T'
        S = self._C - self._sum(T @ G)
        U, info = sla.lapack.dpotrf(S, lower=0, clean=1)
        if info != 0:
            return None
        counts = self._counts
        logdet_z = 2.0 * float(counts @ np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1))
        if not math.isfinite(logdet_z):
            return None
        r2 = float(U[-1, -1] ** 2)
        parts = (logdet_z, 2.0 * float(np.log(U.diagonal()[:-1]).sum()), r2)
        Sinv = sla.cho_solve((U, False), np.eye(len(S)))
        v = Sinv[:, -1]
        phi = float(v[-1])
        # first derivatives
        Ma = np.swapaxes(dT, 1, 2)[:, None] @ AT  # T_a'A T: (d, groups, k, k)
        Ma = Ma + np.swapaxes(Ma, 2, 3)
        NMa = N @ Ma  # N M_a
        g_z = np.einsum("aikk,i->a", NMa, counts)
        TaG = dT[:, None] @ G  # T_a N T'
        Na = -NMa @ N
        Sa = -self._sum(TaG + np.swapaxes(TaG, 2, 3) + T @ Na @ T.T)  # (d, m, m)
        SiSa = Sinv @ Sa
        g_s = np.einsum("akk->a", SiSa)
        Sav = Sa @ v  # (d, m)
        dphi = -(Sav @ v)
        d_r = -dphi / phi  # d log r^2 = -d phi / phi
        grad = np.stack([g_z, g_s - d_r, d_r])  # (log|L_X|^2 = log|S| - log r^2)
        if d2T is None:
            return parts, grad, None
        # second derivatives, indexed [a, b]
        Tt, dTt = T.T, np.swapaxes(dT, 1, 2)
        Mab = dTt[:, None, None] @ (A @ dT[:, None])[None] + np.swapaxes(d2T, 2, 3)[:, :, None] @ AT
        Mab = Mab + np.swapaxes(Mab, 3, 4)  # T_a'A T_b + T_b'A T_a + T_ab'A T + T'A T_ab
        h_z = np.einsum("ikl,abilk,i->ab", N, Mab, counts) - np.einsum("aikl,bilk,i->ab", NMa, NMa, counts)
        Nab = NMa[:, None] @ NMa[None] @ N  # N M_a N M_b N
        Nab = Nab + np.swapaxes(Nab, 0, 1) - N @ Mab @ N
        X = d2T[:, :, None] @ G  # T_ab N T'
        X = X + np.swapaxes(X, 3, 4)
        Y = dT[:, None, None] @ Na[None] @ Tt  # T_a N_b T'
        Y = Y + np.swapaxes(Y, 3, 4)  # + T N_b T_a'
        X = X + Y + np.swapaxes(Y, 0, 1)
        Z = dT[:, None, None] @ N @ dTt[None, :, None]  # T_a N T_b'
        X = X + Z + np.swapaxes(Z, 0, 1) + T @ Nab @ Tt
        Sab = -self._sum(X)  # (d, d, m, m)
        h_s = np.einsum("kl,ablk->ab", Sinv, Sab) - np.einsum("akl,blk->ab", SiSa, SiSa)
        d2phi = 2.0 * Sav @ Sinv @ Sav.T - np.einsum("k,abkl,l->ab", v, Sab, v)
        h_r = -d2phi / phi + np.outer(dphi, dphi) / phi**2
        return parts, grad, np.stack([h_z, h_s - h_r, h_r])
