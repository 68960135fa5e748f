"""The blocked Cholesky factor at one lam, and everything that derives from it.

With K = L^-1 the inverse of the factor of Lambda'Z'WZ Lambda + I (and X, y appended):
the first block column is L11 (a batch of k1 x k1 factors) over L21 = Lambda_r' F, F = A_r1 B
(B_j = T1 L11_j^-T), and the rest block's factor Lr, whose last row holds beta's right-hand
side and whose last diagonal element is r, r^2 the penalized weighted residual sum of squares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .layout import Layout
from .linalg import NotPositiveDefinite, blockdiag, column_pairs, tri_solve
from .statistics import Pattern

if TYPE_CHECKING:
    from .cholesky import RestFactorization

__all__ = ["Factor"]


@dataclass(frozen=True, eq=False)
class Factor:
    """The blocked Cholesky factor at one lam (see ``hmix.engine``), and what derives from it:
    the log-determinants and r^2 of the profiled deviance, beta, the spherical random effects u,
    solves with the random effects' system, its inverse where rows touch it, conditional
    variances and leave-one-out leverages.
    """

    layout: Layout
    pattern: Pattern
    rest: RestFactorization
    lam: np.ndarray
    tmats: tuple[np.ndarray, ...]  # T per term, engine order
    L11: np.ndarray  # (l1, k1, k1)
    L11inv: np.ndarray  # (l1, k1, k1)
    B: np.ndarray  # T1 L11^-T per level, (l1, k1, k1)
    Lr: np.ndarray  # dense lower Cholesky factor of the rest, m x m (rows of R: see rscale)
    r1_data: np.ndarray  # A_r1's values when this factor was computed
    rscale: np.ndarray | None = None  # when given, the R rows of the factor are Lr's times rscale
    F_dense: np.ndarray | None = None  # F as a dense m x q1 array (the dense Schur update's)

    def _lam_t(self, M: np.ndarray) -> np.ndarray:
        """Lambda_r' M for M with qr rows (Lambda_r diagonal: a row scaling)."""
        lay = self.layout
        if lay.lam_diagonal:
            d = self.lam[lay.lam_src]
            return d * M if M.ndim == 1 else d[:, None] * M
        return np.asarray(self.lam_r.T @ M)

    def _lam(self, v: np.ndarray) -> np.ndarray:
        """Lambda_r v."""
        lay = self.layout
        if lay.lam_diagonal:
            return self.lam[lay.lam_src] * v
        return np.asarray(self.lam_r @ v)

    @cached_property
    def L_rr(self) -> np.ndarray:
        """The R x R block of the rest factor."""
        block = self.Lr[: self.layout.qr, : self.layout.qr]
        return block if self.rscale is None else block * self.rscale[:, None]

    @property
    def xy_rows(self) -> np.ndarray:
        """The rows of X and y of the rest factor, (p + 1) x m."""
        return self.Lr[self.layout.qr :, :]

    @property
    def diag_z(self) -> np.ndarray:
        """The diagonal of the rest factor's random-effects rows."""
        d = np.diag(self.Lr)[: self.layout.qr]
        return d if self.rscale is None else d * self.rscale

    def rr_solve(self, b: np.ndarray, trans: bool = False) -> np.ndarray:
        """x with L_rr x = b (or L_rr' x = b)."""
        return tri_solve(self.L_rr, b, trans=trans)

    def vrr_lookup(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """(i, j) -> entries of (L_rr L_rr')^-1."""
        Vrr = self.rest.inverse(self.L_rr)

        def vrr(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            return np.asarray(Vrr[np.maximum(i, j), np.minimum(i, j)])

        return vrr

    @cached_property
    def lam_r(self) -> sp.csr_matrix:
        """Lambda of the rest terms, qr x qr."""
        return self.layout.lam_r(self.lam)

    @cached_property
    def F(self) -> sp.csr_matrix:
        """A_r1 blockdiag(B): the first block column of the factor before Lambda_r scaling."""
        return (self.pattern.r1_matrix(self.r1_data) @ blockdiag(self.B)).tocsr()

    @property
    def r2(self) -> float:
        """Penalized weighted residual sum of squares."""
        return float(self.xy_rows[-1, -1] ** 2)

    @cached_property
    def logdet_z(self) -> float:
        """log |L_ZZ|^2."""
        d1 = np.log(np.einsum("jaa->ja", self.L11)).sum()
        return float(2.0 * (d1 + np.log(self.diag_z).sum()))

    @cached_property
    def logdet_x(self) -> float:
        """log |L_XX|^2."""
        qr, p = self.layout.qr, self.layout.p
        return float(2.0 * np.log(np.diag(self.xy_rows[:p, qr : qr + p])).sum())

    @cached_property
    def beta(self) -> np.ndarray:
        """Fixed effects that minimize the penalized residual sum of squares."""
        qr, p = self.layout.qr, self.layout.p
        if p == 0:
            return np.zeros(0)
        xy = self.xy_rows
        return tri_solve(xy[:p, qr : qr + p], xy[-1, qr : qr + p], trans=True)

    @cached_property
    def u_engine(self) -> list[np.ndarray]:
        """Spherical random effects u per term (engine order)."""
        lay = self.layout
        qr, p = lay.qr, lay.p
        beta = self.beta
        xy = self.xy_rows
        rhs_r = xy[-1, :qr] - xy[:p, :qr].T @ beta
        u_r = self.rr_solve(rhs_r, trans=True) if qr else np.zeros(0)
        v = np.concatenate([-self._lam(u_r), -beta, [1.0]])
        if self.F_dense is not None:
            rhs_1 = (v @ self.F_dense).reshape(lay.l1, lay.k1)
        else:
            # F'v = blockdiag(B)' A_r1' v, level by level, without forming F
            Av = self.pattern.r1_rmatvec(self.r1_data, v).reshape(lay.l1, lay.k1)
            rhs_1 = np.einsum("jab,ja->jb", self.B, Av)
        u_1 = np.einsum("jba,jb->ja", self.L11inv, rhs_1).ravel()
        out = [u_1]
        for o, t in zip(lay.rest_offsets, lay.terms[1:]):
            out.append(u_r[o : o + t.q])
        return out

    @cached_property
    def b_engine(self) -> list[np.ndarray]:
        """Random effects b = Lambda u per term (engine order)."""
        return [
            (u.reshape(t.nlevels, t.k) @ T.T).ravel()
            for u, t, T in zip(self.u_engine, self.layout.terms, self.tmats)
        ]

    def xtx_inv(self) -> np.ndarray:
        """(L_XX L_XX')^-1: the unscaled covariance of beta."""
        qr, p = self.layout.qr, self.layout.p
        Linv = tri_solve(self.xy_rows[:p, qr : qr + p], np.eye(p))
        return Linv.T @ Linv

    @cached_property
    def L21(self) -> sp.csr_matrix | np.ndarray:
        """The rest-by-first block of the factor of Lambda'Z'WZ Lambda + I, qr x q1 (sparse, or
        dense when F is)."""
        lay = self.layout
        if self.F_dense is not None:
            return self._lam_t(self.F_dense[: lay.qr])
        entries = self._l21_entries
        if entries is not None:
            return sp.csc_matrix((entries[0], entries[1], self.pattern.zpart[3]), shape=(lay.qr, lay.q1))
        return (self.lam_r.T @ self.F[: lay.qr]).tocsr()

    @cached_property
    def _l21_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """L21's ``(values, rows, columns)`` on A_r1's pattern (CSC order) for a scalar first term
        and diagonal Lambda_r, where L21 = Lambda_r' A_Z1 B is a scaling of A_r1's values; else
        None. The GLMM gradient works on these directly: a scipy matrix costs tens of us to build."""
        lay = self.layout
        if self.F_dense is not None or lay.k1 != 1 or not lay.lam_diagonal:
            return None
        sel, rows, cols, _ = self.pattern.zpart
        vals = self.r1_data[sel] * self.lam[lay.lam_src][rows] * self.B[cols, 0, 0]
        return vals, rows, cols

    @cached_property
    def G(self) -> sp.csr_matrix | np.ndarray:
        """L21 L11^-1, qr x q1: the first block column of L^-1 is -Lrr^-1 G."""
        lay = self.layout
        L21 = self.L21
        if isinstance(L21, np.ndarray):
            G = np.einsum("rja,jab->rjb", L21.reshape(lay.qr, lay.l1, lay.k1), self.L11inv)
            return G.reshape(lay.qr, lay.q1)
        entries = self._l21_entries
        if entries is not None:
            vals, rows, cols = entries
            return sp.csc_matrix(
                (vals * self.L11inv[cols, 0, 0], rows, self.pattern.zpart[3]), shape=L21.shape
            )
        return (L21 @ blockdiag(self.L11inv)).tocsr()

    def solve(self, b: np.ndarray) -> np.ndarray:
        """(Lambda'Z'WZ Lambda + I)^-1 b for b in u-space (engine order, the first term first)."""
        lay = self.layout
        q1, k1 = lay.q1, lay.k1
        y1 = np.einsum("jab,jb->ja", self.L11inv, b[:q1].reshape(lay.l1, k1)).ravel()
        if not lay.qr:
            return np.einsum("jba,jb->ja", self.L11inv, y1.reshape(lay.l1, k1)).ravel()
        entries = self._l21_entries
        if entries is not None:  # (L21's products from its entries)
            vals, rows, cols = entries
            yr = self.rr_solve(b[q1:] - np.bincount(rows, vals * y1[cols], minlength=lay.qr))
            xr = self.rr_solve(yr, trans=True)
            t = (y1 - np.bincount(cols, vals * xr[rows], minlength=q1)).reshape(lay.l1, k1)
        else:
            L21 = self.L21
            yr = self.rr_solve(b[q1:] - L21 @ y1)
            xr = self.rr_solve(yr, trans=True)
            t = (y1 - L21.T @ xr).reshape(lay.l1, k1)
        x1 = np.einsum("jba,jb->ja", self.L11inv, t).ravel()
        return np.concatenate([x1, xr])

    def row_inverse(self, cols: np.ndarray) -> np.ndarray:
        """(Lambda'Z'WZ Lambda + I)^-1 restricted to each row's columns: an (n, K, K) array.

        ``cols`` (n, K) holds the u-space columns (engine order) each row of Z touches, in
        increasing order: the first term's k1 (the row's level), then the rest's. With
        K = L^-1, Vrr = Lrr^-T Lrr^-1, Vr1 = -Vrr G and V11_j = L11_j^-T L11_j^-1 + G_j' Vrr G_j.
        A sparse G gives only the entries the rows touch, each a sum over the nonzeros of one
        column of G: the dense qr x q1 Vr1 would grow as q1 qr and, fresh at every GLMM
        gradient, cost page faults.
        """
        lay = self.layout
        q1, qr, l1, k1 = lay.q1, lay.qr, lay.l1, lay.k1
        n, K = cols.shape
        V11 = np.einsum("jca,jcb->jab", self.L11inv, self.L11inv)
        lev = cols[:, 0] if k1 == 1 else cols[:, 0] // k1
        V = np.empty((n, K, K))
        if qr:
            vrr = self.vrr_lookup()
            entries = self._l21_entries
            G = self.G if entries is None else None
            if isinstance(G, np.ndarray):  # (dense: a small rest block)
                VG = vrr(np.arange(qr)[:, None], np.arange(qr)[None, :]) @ G
                V11 += np.einsum("rja,rjb->jab", G.reshape(qr, l1, k1), VG.reshape(qr, l1, k1))
            else:
                if entries is not None:  # G = L21 L11^-1 on L21's entries, CSC order
                    vals, rows, ecols = entries
                    data = vals * self.L11inv[ecols, 0, 0]
                    # (the pattern's own, computed once, for the rows of the whole model)
                    if cols is lay.row_columns[0]:
                        level_pairs, row_entries = self.pattern.row_inverse_pairs
                    else:
                        level_pairs, row_entries = column_pairs(self.pattern.zpart[3], l1, k1, cols)
                else:
                    assert G is not None
                    G = G.tocsc()
                    rows, data = G.indices, G.data
                    level_pairs, row_entries = column_pairs(G.indptr, l1, k1, cols)
                for (a, b), (grp, ea, eb) in level_pairs.items():
                    s = np.bincount(grp, data[ea] * data[eb] * vrr(rows[ea], rows[eb]), minlength=l1)
                    V11[:, a, b] += s
                    if b != a:
                        V11[:, b, a] += s
            for a in range(k1):
                c = cols[:, a]
                for b in range(k1, K):
                    r = cols[:, b] - q1
                    if isinstance(G, np.ndarray):
                        v = -VG[r, c]
                    else:  # -(Vrr G)[r, c]: a sum over column c's nonzeros
                        grp, e = row_entries[a]
                        v = -np.bincount(grp, data[e] * vrr(r[grp], rows[e]), minlength=n)
                    V[:, a, b] = V[:, b, a] = v
            for a in range(k1, K):
                for b in range(a, K):  # (cols[:, b] >= cols[:, a]: the lower triangle)
                    V[:, a, b] = V[:, b, a] = vrr(cols[:, b] - q1, cols[:, a] - q1)
        for a in range(k1):
            for b in range(a, k1):
                V[:, a, b] = V[:, b, a] = V11[lev, a, b]
        return V

    def cond_var_engine(self) -> list[np.ndarray]:
        """Diagonal blocks of Lambda (L_ZZ L_ZZ')^-1 Lambda' per term and level: (l, k, k) arrays."""
        lay = self.layout
        qr = lay.qr
        out = []
        V1 = np.einsum("jca,jcb->jab", self.L11inv, self.L11inv)
        Linv = np.zeros((0, 0))
        if qr:
            Linv = tri_solve(self.L_rr, np.eye(qr))
            D = Linv @ (self.lam_r.T @ self.F[:qr].toarray())
            W = np.einsum("ija,jab->ijb", D.reshape(qr, lay.l1, lay.k1), self.L11inv)
            V1 = V1 + np.einsum("ija,ijb->jab", W, W)
        out.append(V1)
        for o, t in zip(lay.rest_offsets, lay.terms[1:]):
            cols = Linv[:, o : o + t.q].reshape(qr, t.nlevels, t.k)
            out.append(np.einsum("ila,ilb->lab", cols, cols))
        return [np.einsum("ab,jbc,dc->jad", T, V, T) for T, V in zip(self.tmats, out)]

    # ----- the full triangular factor L of [Z Lambda, X] (without y's row): leave-one-out ------
    @cached_property
    def _l_rest(self) -> np.ndarray:
        m1 = self.layout.m - 1
        return np.ascontiguousarray(self.Lr[:m1, :m1])

    @cached_property
    def _a_r1(self) -> sp.csr_matrix:
        return self.pattern.r1_matrix(self.r1_data)[: self.layout.m - 1].tocsr()

    def _lam_t_rest(self, v: np.ndarray) -> np.ndarray:
        """Lambda_rest' v on the rest's rows without y, unless the scaling already holds Lambda."""
        qr = self.layout.qr
        if self.rscale is not None or qr == 0:
            return v
        out = v.copy()
        out[:qr] = self.lam_r.T @ v[:qr]
        return out

    def leverages(
        self, X: np.ndarray, w: np.ndarray, zr: sp.csr_matrix | None, chunk: int = 4096
    ) -> np.ndarray:
        """Diagonal of W^1/2 A M^-1 A' W^1/2 for A = [Z Lambda, X], M = A'WA + [I 0; 0 0]
        (``zr``: Z of the later terms), column by column of A' in chunks of rows."""
        lay = self.layout
        t1 = lay.first
        T1 = self.tmats[0]
        v1 = np.einsum("iab,ib->ia", self.L11inv[t1.refs], t1.z @ T1)  # L11^-1 T1' z1_i
        h = (v1 * v1).sum(axis=1)
        m1, qr, k1, n = lay.m - 1, lay.qr, lay.k1, lay.n
        if m1 == 0:
            return w * h
        s = np.einsum("iab,ib->ia", self.B[t1.refs], v1)  # B_j v1_i
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            rows = np.arange(lo, hi)
            cols = (t1.refs[rows, None] * k1 + np.arange(k1)[None, :]).ravel()
            S = sp.csc_matrix(
                (s[rows].ravel(), (cols, np.repeat(np.arange(hi - lo), k1))), shape=(lay.q1, hi - lo)
            )
            C = -(self._a_r1 @ S).toarray()
            if qr:
                assert zr is not None
                C[:qr] += zr[lo:hi].T.toarray()
            C[qr:] += X[lo:hi].T
            V2 = sla.solve_triangular(self._l_rest, self._lam_t_rest(C), lower=True, check_finite=False)
            h[lo:hi] += (V2 * V2).sum(axis=0)
        return w * h

    def solve_lt(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x = L^-T z for columns z (q1 + m - 1, S), L the full factor without y's row: returns
        (x of the first term as (l1, k1, S), x of the rest)."""
        lay = self.layout
        q1, m1, qr = lay.q1, lay.m - 1, lay.qr
        z1, zr = z[:q1], z[q1:]
        y = sla.solve_triangular(self._l_rest, zr, lower=True, trans="T", check_finite=False)
        if self.rscale is not None:
            d = np.ones(m1)
            d[:qr] = self.rscale
            x_rest, lam_x = y / d[:, None], y
        else:
            x_rest = y
            lam_x = y.copy()
            if qr:
                lam_x[:qr] = self.lam_r @ y[:qr]
        t = (self._a_r1.T @ lam_x).reshape(lay.l1, lay.k1, -1)
        ft = np.einsum("jab,jas->jbs", self.B, t)  # F' Lambda x_rest, level by level
        rhs = z1.reshape(lay.l1, lay.k1, -1) - ft
        x1 = np.einsum("jba,jbs->jas", self.L11inv, rhs)
        return x1, x_rest


def check_finite_rest(Lr: np.ndarray, info: int, m: int) -> None:
    """Raise when the rest factor failed: a pivot that is not positive, or non-finite entries."""
    if 0 < info < m or not (np.isfinite(np.diag(Lr)).all() and np.isfinite(Lr[-1]).all()):
        raise NotPositiveDefinite(f"rest block, pivot {info}")
