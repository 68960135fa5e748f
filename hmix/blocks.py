"""The blocks of A = [Z X y]'W[Z X y] and the blocked Cholesky factor of Lambda'A Lambda + I.

Layout (MixedModels.jl's idea, reduced to two kinds of block):

* the term with the most random effects comes first; its diagonal block of A is block diagonal
  (one k x k block per level), so its Cholesky factor is a batch of tiny factorizations;
* everything else -- the other terms, then X, then y -- is the "rest", of size m; its Schur
  complement after eliminating the first term is formed densely and factored by LAPACK.

For a given theta::

    L11_j = chol(T1' A11_j T1 + I)                  per level j of the first term
    G_j   = B_j B_j',  B_j = T1 L11_j^-T
    S     = A_r1 G A_r1'                            (F F' with F = A_r1 blockdiag(B))
    M     = Lambda_r' (A_rr - S) Lambda_r + [I 0; 0 0]
    Lr    = chol(M)

where Lambda_r is Lambda for the other terms and the identity on X and y. The last diagonal
element of Lr is r, with r^2 the penalized weighted residual sum of squares. Nothing here loops
over rows or levels; the cost per theta is one sparse product and one dense Cholesky of size m.

Small systems (q + p + 1 <= 50 rows in all) are where that cost is Python's per-call overhead
rather than arithmetic. For the objective's value alone (``objective_parts``, what the
optimizer calls) they keep the whole of Lambda'A Lambda + I as a quadratic polynomial in theta,
with its coefficient matrices formed once per ``set_data``: an evaluation is one matrix-vector
product and one dense Cholesky. Their factor (beta, u, variances) is the blocked one above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .errors import HmixError
from .remat import ReTerm

__all__ = ["BlockedPLS", "Factor", "NotPositiveDefinite"]


class NotPositiveDefinite(HmixError, ArithmeticError):
    """A matrix that must be positive definite is not (numerically).

    The optimizers treat it as a failed evaluation; when it escapes (outside an optimizer) it is
    an HmixError whose message says what usually causes it.
    """

    def __init__(self, where: str):
        super().__init__(
            f"the penalized least-squares system is not positive definite ({where}): the fixed "
            "effects are not identifiable from these data (complete separation, a predictor "
            "without variation, or too few observations)"
        )


_MAX_DENSE = 20_000  # largest dense rest block (3.2 GB a copy) the engine takes on
# Systems with at most this many rows in all (q + p + 1) are also kept densely, for the
# objective's value alone: there the blocked factor's cost is Python's per-call overhead on its
# many small arrays. Lambda'A Lambda + I is a quadratic polynomial in theta whose coefficient
# matrices are formed once, so an evaluation is one matrix-vector product and one Cholesky
# (sleepstudy: 10 us, against 34 us blocked; the two break even near 55 rows, measured on
# scalar, vector and crossed terms). Everything else (beta, u, variances) comes from the factor.
_DENSE_ALL = 50
_DENSE_ALL_BASIS = 2_000_000  # ... and while the coefficient matrices hold at most this many values
# A factor whose theta differs from a recent one's only in the rest terms at the end of the
# rest block (the last rows: InstEval's dept) reuses that factor's leading rows and finishes the
# tail alone (see BlockedPLS._finish_tail): tails of at most this fraction of the rest block.
# The factors of the last three distinct values of the other terms' theta are kept (NEWUOA's
# first steps go out and back along each coordinate), while their Lr take at most this many
# bytes (the tails are small). fit_lmm clears them after the fit.
_TAIL_FRACTION = 0.25
_TAIL_KEEP = 3
_TAIL_BYTES = 100_000_000
_MAX_PAIRS = 40_000_000  # entries of P (about 0.5 GB); beyond it S is formed as F F'
# Reweighted systems (PIRLS) refill P's values at every step: there a dense S = F F' (BLAS, about
# 0.1 ns a flop) is cheaper whenever its flops stay below this many times P's entries (a refill
# and a mat-vec cost a few ns an entry).
_DENSE_PER_PAIR = 50


def _blockdiag(B: np.ndarray) -> sp.csr_matrix:
    """Sparse block-diagonal matrix of a (levels, k, k) array."""
    n = B.shape[0]
    k = B.shape[1]
    return sp.bsr_matrix((B, np.arange(n), np.arange(n + 1)), shape=(n * k, n * k)).tocsr()


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _tri_solve(L: np.ndarray, b: np.ndarray, trans: bool = False) -> np.ndarray:
    """x with L x = b (or L'x = b) for lower-triangular L in either memory order: LAPACK's
    trtrs directly (scipy's solve_triangular adds ~7 us of checks, most of a small fit's solve)."""
    if L.shape[0] == 0:  # (no fixed effects: LAPACK rejects an empty matrix)
        return np.zeros(np.shape(b))
    if L.flags.c_contiguous and not L.flags.f_contiguous:  # L' is Fortran-ordered, upper
        x, info = sla.lapack.dtrtrs(L.T, b, lower=0, trans=0 if trans else 1)
    else:
        x, info = sla.lapack.dtrtrs(L, b, lower=1, trans=1 if trans else 0)
    if info > 0:
        raise np.linalg.LinAlgError(f"singular triangular factor (pivot {info})")
    if info < 0:
        raise ValueError(f"LAPACK dtrtrs: illegal argument {-info}")
    return np.asarray(x)


def _ranked(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``keys`` (integers below ``size``), sorted, and each key's position
    among them (a mark-and-count over ``size`` when that is small, which beats sorting)."""
    if size <= 64 * len(keys) + 1_000_000:
        present = np.zeros(size, dtype=bool)
        present[keys] = True
        uniq = np.flatnonzero(present)
        position = np.empty(size, dtype=np.int64)  # touched only where keys are
        position[uniq] = np.arange(len(uniq))
        return uniq, position[keys]
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, inv.ravel()


def _pairs_of(
    start_a: np.ndarray, count_a: np.ndarray, start_b: np.ndarray, count_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of an index from [start_a, start_a + count_a) and one from [start_b,
    start_b + count_b), group by group: ``(group, a, b)``, flat."""
    size = count_a * count_b
    grp = np.repeat(np.arange(len(size)), size)
    t = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    cb = count_b[grp]
    return grp, start_a[grp] + t // cb, start_b[grp] + t % cb


def _chol2(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors of S_j + I and their inverses for a batch of 2 x 2 matrices S_j."""
    a = S[:, 0, 0] + 1.0
    b = S[:, 1, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        l11 = np.sqrt(a)
        l21 = b / l11
        l22 = np.sqrt(S[:, 1, 1] + 1.0 - l21 * l21)
        # (a zero pivot gives infinities here, which the caller reports as not positive definite)
        L = np.zeros_like(S)
        L[:, 0, 0], L[:, 1, 0], L[:, 1, 1] = l11, l21, l22
        Li = np.zeros_like(S)
        Li[:, 0, 0], Li[:, 1, 1] = 1.0 / l11, 1.0 / l22
        Li[:, 1, 0] = -l21 / (l11 * l22)
    return L, Li


def _batched_tri_inv(L: np.ndarray) -> np.ndarray:
    """Inverses of a batch of lower-triangular k x k matrices."""
    if L.shape[-1] == 1:
        return 1.0 / L
    eye = np.broadcast_to(np.eye(L.shape[-1]), L.shape)
    return np.linalg.solve(L, eye)


@dataclass(frozen=True, eq=False)
class Factor:
    """The blocked Cholesky factor at one theta, and what derives from it."""

    pls: BlockedPLS
    theta: np.ndarray
    tmats: tuple[np.ndarray, ...]  # T per term, engine order
    L11: np.ndarray  # (l1, k1, k1)
    L11inv: np.ndarray  # (l1, k1, k1)
    B: np.ndarray  # T1 L11^-T per level, (l1, k1, k1)
    Lr: np.ndarray  # dense lower Cholesky factor of the rest, m x m (rows of R: see rscale)
    r1_data: np.ndarray  # A_r1's values when this factor was computed (set_data replaces them)
    rscale: np.ndarray | None = None  # when given, the R rows of the factor are Lr's times rscale
    F_dense: np.ndarray | None = None  # F as a dense m x q1 array (reweighted systems with dense A_r1)

    def _lam_t(self, M: np.ndarray) -> np.ndarray:
        """Lambda_r' M for M with qr rows (Lambda_r diagonal: a row scaling)."""
        pls = self.pls
        if pls._lam_diagonal:
            d = self.theta[pls._lam_src]
            return d * M if M.ndim == 1 else d[:, None] * M
        return np.asarray(self.lam_r.T @ M)

    def _lam(self, v: np.ndarray) -> np.ndarray:
        """Lambda_r v."""
        pls = self.pls
        if pls._lam_diagonal:
            return self.theta[pls._lam_src] * v
        return np.asarray(self.lam_r @ v)

    @cached_property
    def L_rr(self) -> np.ndarray:
        """The R x R block of the rest factor."""
        qr = self.pls.qr
        block = self.Lr[:qr, :qr]
        return block if self.rscale is None else block * self.rscale[:, None]

    @cached_property
    def lam_r(self) -> sp.csr_matrix:
        """Lambda of the rest terms, qr x qr."""
        return self.pls.lam_r(self.theta)

    @cached_property
    def F(self) -> sp.csr_matrix:
        """A_r1 blockdiag(B): the first block column of the factor before Lambda_r scaling."""
        return (self.pls.r1_matrix(self.r1_data) @ _blockdiag(self.B)).tocsr()

    @property
    def r2(self) -> float:
        """Penalized weighted residual sum of squares."""
        return float(self.Lr[-1, -1] ** 2)

    @cached_property
    def logdet_z(self) -> float:
        """log |L_ZZ|^2."""
        qr = self.pls.qr
        d1 = np.log(np.einsum("jaa->ja", self.L11)).sum()
        d = np.diag(self.Lr)[:qr]
        if self.rscale is not None:
            d = d * self.rscale
        return float(2.0 * (d1 + np.log(d).sum()))

    @cached_property
    def logdet_x(self) -> float:
        """log |L_XX|^2."""
        qr, p = self.pls.qr, self.pls.p
        return float(2.0 * np.log(np.diag(self.Lr)[qr : qr + p]).sum())

    @cached_property
    def beta(self) -> np.ndarray:
        """Fixed effects that minimize the penalized residual sum of squares."""
        qr, p = self.pls.qr, self.pls.p
        if p == 0:
            return np.zeros(0)
        c = self.Lr[-1, qr : qr + p]
        return _tri_solve(self.Lr[qr : qr + p, qr : qr + p], c, trans=True)

    @cached_property
    def u_engine(self) -> list[np.ndarray]:
        """Spherical random effects u per term (engine order)."""
        pls, qr, p = self.pls, self.pls.qr, self.pls.p
        beta = self.beta
        rhs_r = self.Lr[-1, :qr] - self.Lr[qr : qr + p, :qr].T @ beta
        u_r = _tri_solve(self.L_rr, rhs_r, trans=True) if qr else np.zeros(0)
        v = np.concatenate([-self._lam(u_r), -beta, [1.0]])
        if self.F_dense is not None:
            rhs_1 = (v @ self.F_dense).reshape(pls.l1, pls.k1)
        else:
            # F'v = blockdiag(B)' A_r1' v, level by level, without forming F
            t = pls.r1_rmatvec(self.r1_data, v).reshape(pls.l1, pls.k1)
            rhs_1 = np.einsum("jab,ja->jb", self.B, t)
        u_1 = np.einsum("jba,jb->ja", self.L11inv, rhs_1).ravel()
        out = [u_1]
        for off, t in zip(pls.offsets[1:], pls.terms[1:]):
            out.append(u_r[off - pls.q1 : off - pls.q1 + t.q])
        return out

    @cached_property
    def b_engine(self) -> list[np.ndarray]:
        """Random effects b = Lambda u per term (engine order)."""
        return [
            (u.reshape(t.nlevels, t.k) @ T.T).ravel()
            for u, t, T in zip(self.u_engine, self.pls.terms, self.tmats)
        ]

    def xtx_inv(self) -> np.ndarray:
        """(L_XX L_XX')^-1: the unscaled covariance of beta."""
        qr, p = self.pls.qr, self.pls.p
        Linv = _tri_solve(self.Lr[qr : qr + p, qr : qr + p], np.eye(p))
        return Linv.T @ Linv

    @cached_property
    def L21(self) -> sp.csr_matrix | np.ndarray:
        """The rest-by-first block of the factor of Lambda'Z'WZ Lambda + I, qr x q1 (sparse, or
        dense when F is)."""
        pls = self.pls
        qr = pls.qr
        if self.F_dense is not None:
            return self._lam_t(self.F_dense[:qr])
        entries = self._l21_entries
        if entries is not None:
            return sp.csc_matrix((entries[0], entries[1], pls._r1z_indptr), shape=(qr, pls.q1))
        return (self.lam_r.T @ self.F[:qr]).tocsr()

    @cached_property
    def _l21_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """L21's ``(values, rows, columns)`` on A_r1's pattern (CSC order) for a scalar first term
        and diagonal Lambda_r, where L21 = Lambda_r' A_Z1 B is a scaling of A_r1's values; else
        None. The GLMM gradient works on these directly: a scipy matrix costs tens of us to build."""
        pls = self.pls
        if self.F_dense is not None or pls.k1 != 1 or not pls._lam_diagonal:
            return None
        sel, rows, cols = pls._r1z
        vals = self.r1_data[sel] * self.theta[pls._lam_src][rows] * self.B[cols, 0, 0]
        return vals, rows, cols

    @cached_property
    def G(self) -> sp.csr_matrix | np.ndarray:
        """L21 L11^-1, qr x q1: the first block column of L^-1 is -Lrr^-1 G."""
        pls = self.pls
        L21 = self.L21
        if isinstance(L21, np.ndarray):
            G = np.einsum("rja,jab->rjb", L21.reshape(pls.qr, pls.l1, pls.k1), self.L11inv)
            return G.reshape(pls.qr, pls.q1)
        entries = self._l21_entries
        if entries is not None:
            vals, rows, cols = entries
            return sp.csc_matrix((vals * self.L11inv[cols, 0, 0], rows, pls._r1z_indptr), shape=L21.shape)
        return (L21 @ _blockdiag(self.L11inv)).tocsr()

    def solve(self, b: np.ndarray) -> np.ndarray:
        """(Lambda'Z'WZ Lambda + I)^-1 b for b in u-space (engine order, the first term first)."""
        pls = self.pls
        q1, k1 = pls.q1, pls.k1
        y1 = np.einsum("jab,jb->ja", self.L11inv, b[:q1].reshape(pls.l1, k1)).ravel()
        if not pls.qr:
            return np.einsum("jba,jb->ja", self.L11inv, y1.reshape(pls.l1, k1)).ravel()
        Lrr = self.L_rr
        entries = self._l21_entries
        if entries is not None:  # (L21's products from its entries)
            vals, rows, cols = entries
            yr = _tri_solve(Lrr, b[q1:] - np.bincount(rows, vals * y1[cols], minlength=pls.qr))
            xr = _tri_solve(Lrr, yr, trans=True)
            t = (y1 - np.bincount(cols, vals * xr[rows], minlength=q1)).reshape(pls.l1, k1)
        else:
            L21 = self.L21
            yr = _tri_solve(Lrr, b[q1:] - L21 @ y1)
            xr = _tri_solve(Lrr, yr, trans=True)
            t = (y1 - L21.T @ xr).reshape(pls.l1, k1)
        x1 = np.einsum("jba,jb->ja", self.L11inv, t).ravel()
        return np.concatenate([x1, xr])

    def _rest_inverse(self) -> np.ndarray:
        """Vrr = (L_rr L_rr')^-1, its lower triangle (the upper one is not set).

        With the engine's diagonal rows (``BlockedPLS._diagonal_rows``), L_rr = [D 0; C L22]
        and, with W = L22^-T L22^-1 C D^-1, Vrr = [D^-2 + D^-1 C'W, -W'; -W, (L22 L22')^-1]:
        LAPACK inverts only L22 (grouseticks: 63 rows instead of 181), and of the first block
        only the diagonal is formed: the pair sums of ``row_inverse`` read nothing else there,
        and its dense product meets those zeros only where G is zero.
        """
        kd, L = self.pls._diag, self.L_rr
        if not kd:
            Vrr, info = sla.lapack.dpotri(L, lower=1)
            if info:
                raise NotPositiveDefinite("inverse of the rest block")
            return np.asarray(Vrr)
        d = L.diagonal()[:kd]
        Cd = L[kd:, :kd] / d
        Vrr = np.zeros(L.shape)
        if len(L) > kd:
            V22, info = sla.lapack.dpotri(L[kd:, kd:], lower=1)
            if info:
                raise NotPositiveDefinite("inverse of the rest block")
            W = sla.blas.dsymm(1.0, V22, Cd, lower=1)  # V22 Cd, from V22's lower triangle
            Vrr[kd:, kd:] = V22
            Vrr[kd:, :kd] = -W
            # of D^-2 + Cd'W only the diagonal: no row of Z and no level of the first term meets
            # two of the diagonal rows (the first term is nested in their term), so nothing
            # reads the rest of that block, which stays zero
            Vrr[np.arange(kd), np.arange(kd)] = np.einsum("ij,ij->j", Cd, W)
        Vrr[np.arange(kd), np.arange(kd)] += d**-2.0
        return Vrr

    def row_inverse(self, cols: np.ndarray) -> np.ndarray:
        """(Lambda'Z'WZ Lambda + I)^-1 restricted to each row's columns: an (n, K, K) array.

        ``cols`` (n, K) holds the u-space columns (engine order) each row of Z touches, in
        increasing order: the first term's k1 (the row's level), then the rest's. With
        K = L^-1, Vrr = Lrr^-T Lrr^-1, Vr1 = -Vrr G and V11_j = L11_j^-T L11_j^-1 + G_j' Vrr G_j.
        A sparse G gives only the entries the rows touch, each a sum over the nonzeros of one
        column of G: the dense qr x q1 Vr1 would grow as q1 qr and, fresh at every GLMM
        gradient, cost page faults (grouseticks: 0.6 ms a gradient of its 1 ms).
        """
        pls = self.pls
        q1, qr, l1, k1 = pls.q1, pls.qr, pls.l1, pls.k1
        n, K = cols.shape
        V11 = np.einsum("jca,jcb->jab", self.L11inv, self.L11inv)
        lev = cols[:, 0] if k1 == 1 else cols[:, 0] // k1
        V = np.empty((n, K, K))
        if qr:
            Vrr = self._rest_inverse()

            def vrr(i: np.ndarray, j: np.ndarray) -> np.ndarray:
                return np.asarray(Vrr[np.maximum(i, j), np.minimum(i, j)])

            entries = self._l21_entries
            G = self.G if entries is None else None
            if isinstance(G, np.ndarray):  # (dense: a small rest block)
                VG = vrr(np.arange(qr)[:, None], np.arange(qr)[None, :]) @ G
                V11 += np.einsum("rja,rjb->jab", G.reshape(qr, l1, k1), VG.reshape(qr, l1, k1))
            else:
                if entries is not None:  # G = L21 L11^-1 on L21's entries, CSC order
                    vals, rows, ecols = entries
                    data, indptr = vals * self.L11inv[ecols, 0, 0], pls._r1z_indptr
                else:
                    assert G is not None
                    G = G.tocsc()
                    rows, data, indptr = G.indices, G.data, G.indptr
                start, count = indptr[:-1], np.diff(indptr)
                levels = np.arange(l1) * k1
                for a in range(k1):
                    for b in range(a, k1):
                        grp, ea, eb = _pairs_of(
                            start[levels + a], count[levels + a], start[levels + b], count[levels + b]
                        )
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
                        grp, e, _ = _pairs_of(start[c], count[c], np.zeros(n, np.int64), np.ones(n, np.int64))
                        v = -np.bincount(grp, data[e] * vrr(r[grp], rows[e]), minlength=n)
                    V[:, a, b] = V[:, b, a] = v
            for a in range(k1, K):
                for b in range(a, K):  # (cols[:, b] >= cols[:, a]: the lower triangle)
                    V[:, a, b] = V[:, b, a] = Vrr[cols[:, b] - q1, cols[:, a] - q1]
        for a in range(k1):
            for b in range(a, k1):
                V[:, a, b] = V[:, b, a] = V11[lev, a, b]
        return V

    def cond_var_engine(self) -> list[np.ndarray]:
        """Diagonal blocks of Lambda (L_ZZ L_ZZ')^-1 Lambda' per term and level: (l, k, k) arrays."""
        pls, qr = self.pls, self.pls.qr
        out = []
        V1 = np.einsum("jca,jcb->jab", self.L11inv, self.L11inv)
        if qr:
            Linv = _tri_solve(self.L_rr, np.eye(qr))
            D = Linv @ (self.lam_r.T @ self.F[:qr].toarray())
            W = np.einsum("ija,jab->ijb", D.reshape(qr, pls.l1, pls.k1), self.L11inv)
            V1 = V1 + np.einsum("ija,ijb->jab", W, W)
        out.append(V1)
        for off, t in zip(pls.offsets[1:], pls.terms[1:]):
            o = off - pls.q1
            cols = Linv[:, o : o + t.q].reshape(qr, t.nlevels, t.k)
            out.append(np.einsum("ila,ilb->lab", cols, cols))
        return [np.einsum("ab,jbc,dc->jad", T, V, T) for T, V in zip(self.tmats, out)]


class BlockedPLS:
    """Penalized least squares for one set of weights: the blocks of A and their factorization.

    Parameters
    ----------
    terms : sequence of ReTerm
        Random-effects terms in lme4's order; ``theta`` follows that order.
    X : ndarray, shape (n, p)
    y : ndarray, shape (n,)
    weights : ndarray or None
        Prior (or PIRLS working) weights.
    reweighted : bool, default False
        The weights will change at every step (PIRLS): lay out the Schur complement for cheap
        refills rather than cheap factorizations.
    """

    def __init__(
        self,
        terms: tuple[ReTerm, ...],
        X: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None = None,
        reweighted: bool = False,
    ):
        if not terms:
            raise ValueError("a mixed model needs at least one random-effects term")
        q = np.array([t.q for t in terms])
        self.perm = np.argsort(-q, kind="stable")  # engine order -> lme4 order index
        self.lme4_terms = tuple(terms)
        self.terms = tuple(terms[i] for i in self.perm)
        starts = np.cumsum([0] + [t.ntheta for t in terms])
        self.theta_slices = [slice(int(starts[i]), int(starts[i + 1])) for i in self.perm]
        self.ntheta = int(starts[-1])
        self.offsets = list(np.cumsum([0] + [t.q for t in self.terms])[:-1])
        first = self.terms[0]
        self.l1, self.k1, self.q1 = first.nlevels, first.k, first.q
        self.qr = int(sum(t.q for t in self.terms[1:]))
        self.p = int(X.shape[1])
        self.m = self.qr + self.p + 1
        if self.m > _MAX_DENSE:
            raise HmixError(
                f"the random effects after the largest term number {self.qr}: their block is factored "
                f"densely ({self.m}^2 doubles, {self.m**2 * 8 / 1e9:.1f} GB a copy), which is beyond "
                "this engine; crossed or nested factors this large besides the largest one are not "
                "supported yet"
            )
        self.n = len(y)
        self._lam_pattern()
        size = self.q1 + self.m
        nbasis = 1 + self.ntheta + self.ntheta * (self.ntheta + 1) // 2
        self._reweighted = reweighted
        # the objective of a small system comes from its whole dense copy (PIRLS only factors:
        # reweighted systems have no use for it)
        self._whole = size <= _DENSE_ALL and nbasis * size * size <= _DENSE_ALL_BASIS and not reweighted
        self._all_basis: np.ndarray | None = None
        if self._whole:
            self._all_pattern()
        self._lam_diagonal = bool(np.all(self._lam_rows == self._lam_cols))
        # the first row of the rest block from which a factor may be finished on its own
        tails = [o - self.q1 for o in self.offsets[1:] if self.m - (o - self.q1) <= _TAIL_FRACTION * self.m]
        reusable = tails and self._lam_diagonal and not reweighted
        self._tail0: int | None = min(tails) if reusable else None
        self._keep = min(_TAIL_KEEP, _TAIL_BYTES // (8 * self.m * self.m)) if reusable else 0
        # theta's indices in the terms before the tail: a kept factor's key
        self._head = np.concatenate(
            [
                np.arange(sl.start, sl.stop)
                for e, sl in enumerate(self.theta_slices)
                if e == 0 or self.offsets[e] - self.q1 < (self._tail0 or 0)
            ]
        )
        self._kept: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # (theta, Lr, tail)
        self._structure()
        self._dense_r1: np.ndarray | None = None
        self._P_sum: sp.csc_matrix | None = None  # (see _merge_pairs)
        self._P_rep: np.ndarray | None = None
        self._pairs()
        self._diag = self._diagonal_rows()
        self.set_data(X, y, weights)

    def _diagonal_rows(self) -> int:
        """How many leading rows of the rest block have a diagonal block in the middle matrix:
        the second term's, when it is scalar and the first term is nested in it (each level of
        the first term meets one level of the second: grouseticks' INDEX in BROOD), else 0.

        Its Z'WZ block is diagonal then, and so is S's (a level of the first term contributes
        to one of its rows only), so ``_chol_rest`` eliminates those rows by a scaling and
        factors only the rows after them.
        """
        if len(self.terms) < 2 or self.terms[1].k != 1:
            return 0
        kd = self.terms[1].q
        sel = self._r1_indices < kd
        level = self._r1_col[sel] // self.k1
        row = self._r1_indices[sel]
        if self.k1 == 1:
            return kd if np.bincount(level, minlength=self.l1).max(initial=0) <= 1 else 0
        lo = np.full(self.l1, kd)
        hi = np.full(self.l1, -1)
        np.minimum.at(lo, level, row)
        np.maximum.at(hi, level, row)
        met = hi >= 0
        return kd if np.array_equal(lo[met], hi[met]) else 0

    def _chol_rest(self, M: np.ndarray) -> int:
        """Factor the middle matrix in place (its lower triangle, C order, becomes L's): LAPACK's
        info (0, or the 1-based row of the first pivot that is not positive).

        The first ``_diag`` rows, a diagonal block, are eliminated by a square root and a
        scaling of their columns; LAPACK factors the Schur complement of the rows after them
        (grouseticks: 68 rows instead of 186, a tenth of the flops).
        """
        kd = self._diag
        if not kd:
            # M's lower triangle (C order) is the upper triangle of the Fortran-ordered M':
            # factoring that in place spares LAPACK a transposing copy (a tenth of the time at
            # m = 1,000)
            return int(sla.lapack.dpotrf(M.T, lower=0, clean=0, overwrite_a=1)[1])
        idx = np.arange(kd)
        d = M[idx, idx]
        if not d.min() > 0:
            return int(np.argmin(d > 0)) + 1
        d = np.sqrt(d)
        M[idx, idx] = d
        C = M[kd:, :kd]
        C /= d
        E = C @ C.T
        np.subtract(M[kd:, kd:], E, out=E)
        info = int(sla.lapack.dpotrf(E.T, lower=0, clean=0, overwrite_a=1)[1])
        M[kd:, kd:] = E
        return info + kd if info else 0

    def _lam_pattern(self) -> None:
        rows, cols, src = [], [], []
        for off, t, sl in zip(self.offsets[1:], self.terms[1:], self.theta_slices[1:]):
            r, c = t.tril
            base = (off - self.q1) + np.arange(t.nlevels)[:, None] * t.k
            rows.append((base + r[None, :]).ravel())
            cols.append((base + c[None, :]).ravel())
            src.append(np.tile(np.arange(sl.start, sl.stop), t.nlevels))

        self._lam_rows, self._lam_cols, self._lam_src = _cat(rows), _cat(cols), _cat(src)

    def _rest_columns(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(row in the rest block, z column) for every column of every rest term."""
        out = []
        for off, t in zip(self.offsets[1:], self.terms[1:]):
            for a in range(t.k):
                out.append(((off - self.q1) + t.refs * t.k + a, t.z[:, a]))
        return out

    def _structure(self) -> None:
        """Symbolic phase of the blocks: where each row's products land.

        A_r1 (m x q1, CSC) has the sparsity of Z_r'Z_1 in its first qr rows and dense rows for X
        and y; the lower triangle of Z_r'Z_r is scattered into the dense A_rr. With these maps,
        new weights or a new working response cost a few bincounts and Z'W[X y] (``_z_wxy``).
        """
        n, m, qr, k1 = self.n, self.m, self.qr, self.k1
        t1 = self.terms[0]
        cols1 = [t1.refs * k1 + al for al in range(k1)]
        rest = self._rest = self._rest_columns()
        zr_keys, zr_obs, zr_prod = [], [], []
        for row, z in rest:
            for al in range(k1):
                zr_keys.append(cols1[al] * m + row)
                zr_obs.append(np.arange(n))
                zr_prod.append(z * t1.z[:, al])
        dense_keys = (np.arange(self.q1)[:, None] * m + qr + np.arange(self.p + 1)[None, :]).ravel()
        zkeys = _cat(zr_keys)
        keys, rank = _ranked(np.concatenate([zkeys, dense_keys]), m * self.q1)
        self._r1_indices = (keys % m).astype(np.int32)
        self._r1_indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // m, minlength=self.q1))])
        self._r1_nnz = len(keys)
        self._r1_col = (keys // m).astype(np.int32)
        # where each row's Z_r x Z_1 products land, and where the rows of Z_1'W[X y] go
        self._r1_zentry = rank[: len(zkeys)]
        # the entries of A_r1 in the random-effects rows (CSC order): index, row, column
        zsel = np.flatnonzero(keys % m < qr)
        self._r1z = (zsel, (keys[zsel] % m).astype(np.int32), (keys[zsel] // m).astype(np.int64))
        self._r1z_indptr = np.concatenate([[0], np.cumsum(np.bincount(keys[zsel] // m, minlength=self.q1))])
        self._r1_xypos = rank[len(zkeys) :]  # (q1, p + 1) entries of X, y, row-major
        self._r1_zobs = _cat(zr_obs)
        self._r1_zprod = _cat(zr_prod)
        rr_flat, rr_obs, rr_prod = [], [], []
        for i, (ri, zi) in enumerate(rest):
            for rj, zj in rest[: i + 1]:
                lo, hi = np.minimum(ri, rj), np.maximum(ri, rj)
                rr_flat.append(hi * m + lo)
                rr_obs.append(np.arange(n))
                rr_prod.append(zi * zj)
        self._rr_obs, self._rr_prod = _cat(rr_obs), _cat(rr_prod)
        # the entries of Z_r'Z_r's lower triangle that occur, and each product's among them
        self._rr_keys, self._rr_rank = _ranked(_cat(rr_flat), m * m)

    @property
    def A_r1(self) -> sp.csc_matrix:
        """The first block column of the rest, m x q1 (sparse)."""
        return self.r1_matrix(self._r1_data)

    def r1_matrix(self, data: np.ndarray) -> sp.csc_matrix:
        """A_r1 with the given values."""
        return sp.csc_matrix((data, self._r1_indices, self._r1_indptr), shape=(self.m, self.q1))

    def r1_rmatvec(self, data: np.ndarray, v: np.ndarray) -> np.ndarray:
        """A_r1' v for A_r1 with the given values (no sparse-matrix object on the hot path)."""
        return np.bincount(self._r1_col, data * np.take(v, self._r1_indices), minlength=self.q1)

    def set_data(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> None:
        """Compute the blocks of A for new data or weights (once for an LMM, per PIRLS step for a GLMM)."""
        w = np.ones(self.n) if weights is None else np.asarray(weights, dtype=float)
        self._kept.clear()
        t1 = self.terms[0]
        wz = t1.z * w[:, None]
        A11 = np.empty((self.l1, self.k1, self.k1))
        for a in range(self.k1):
            for b in range(a, self.k1):
                A11[:, a, b] = A11[:, b, a] = np.bincount(t1.refs, wz[:, a] * t1.z[:, b], minlength=self.l1)
        self.A11 = A11
        Xy = np.column_stack([X, y])
        wXy = Xy * w[:, None]
        # (no rest terms: bincount of nothing is an integer array)
        data = np.bincount(self._r1_zentry, w[self._r1_zobs] * self._r1_zprod, minlength=self._r1_nnz)
        data = data.astype(float, copy=False)
        z1_wxy, zr_wxy = self._z_wxy(wXy)
        data[self._r1_xypos] = z1_wxy.ravel()
        self._r1_data = data
        if self._r1_flat is not None:  # (in place too: the same entries every time)
            if self._dense_r1 is None:
                self._dense_r1 = np.zeros((self.m, self.l1, self.k1))
            self._dense_r1.ravel()[self._r1_flat] = data
        m, qr = self.m, self.qr
        # refilled in place (PIRLS calls this at every step; factor copies it): the same entries
        # are written every time, the others stay zero
        A_rr = getattr(self, "A_rr", None)
        if A_rr is None:
            A_rr = np.zeros((m, m))
        if qr:
            nkeys = len(self._rr_keys)
            A_rr.ravel()[self._rr_keys] = np.bincount(
                self._rr_rank, w[self._rr_obs] * self._rr_prod, minlength=nkeys
            )
            A_rr[qr:, :qr] = zr_wxy.T
        A_rr[qr:, qr:] = Xy.T @ wXy  # (whole: nothing reads A_rr's upper triangle)
        self.A_rr = A_rr
        if self._P is not None:
            e1, e2, doubled = self._pair_map
            # (np.take: indexing with int32 arrays would first convert them, at twice the cost)
            values = np.take(data, e1) * np.take(data, e2)
            values[doubled] *= 2.0
            self._P.data = values
            self._merge_pairs()
        if self._whole:
            self._all_basis = self._assemble()

    def _merge_pairs(self) -> None:
        """P with the columns of levels that share their A11 block summed (``_P_sum``).

        G_j depends on level j's A11 block alone, so levels with equal blocks (equal counts, in
        an unweighted scalar term) share G_j, and S = P g sums their columns first: InstEval's
        2,972 students have 86 distinct counts, P's 2.1M entries become 1.15M and the mat-vec
        takes 0.8 ms instead of 2.1. The sum costs about six mat-vecs (13 ms there), once per
        ``set_data``, so reweighted systems (PIRLS, new blocks at every step) skip it.
        """
        self._P_sum, self._P_rep = None, None
        if self._reweighted or self._P is None:
            return
        kk = self.k1 * self.k1
        _, rep, cls = np.unique(self.A11.reshape(self.l1, kk), axis=0, return_index=True, return_inverse=True)
        if 2 * len(rep) > self.l1:  # (weighted data: nearly every block differs)
            return
        cols = (cls.reshape(-1, 1) * kk + np.arange(kk)).ravel()
        C = sp.csc_matrix(
            (np.ones(len(cols)), (np.arange(len(cols)), cols)), shape=(len(cols), len(rep) * kk)
        )
        self._P_sum, self._P_rep = (self._P @ C).tocsc(), rep

    def _z_wxy(self, wXy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Z_1'W[X y] (q1 x (p + 1)) and Z_r'W[X y] (qr x (p + 1)).

        A system refilled at every PIRLS step multiplies by sparse Z' built once; one filled
        once (an LMM) takes a bincount per column of Z and of [X y] instead, as fast as the
        product and without building the sparse matrices (~0.1 ms, a twentieth of a small fit).
        """
        if self._reweighted:
            zx = np.asarray(self._zt @ wXy)
            return zx[: self.q1], zx[self.q1 :]
        t1 = self.terms[0]
        first = [(t1.refs * self.k1 + a, t1.z[:, a]) for a in range(self.k1)]
        out = []
        for columns, size in ((first, self.q1), (self._rest, self.qr)):
            s = np.zeros((size, wXy.shape[1]))
            for row, z in columns:
                for c in range(wXy.shape[1]):
                    s[:, c] += np.bincount(row, z * wXy[:, c], minlength=size)
            out.append(s)
        return out[0], out[1]

    @cached_property
    def _zt(self) -> sp.csc_matrix:
        """Z' in engine order (CSC: as fast in products as CSR, without the conversion)."""
        return sp.hstack([t.zmatrix for t in self.terms], format="csr").T

    @cached_property
    def _zr(self) -> sp.csr_matrix | None:
        """Z of the rest terms (n x qr), for leave-one-out leverages."""
        return sp.hstack([t.zmatrix for t in self.terms[1:]], format="csr") if self.qr else None

    def _all_pattern(self) -> None:
        """Where theta goes in the dense Lambda of the whole system (engine order; X, y: 1)."""
        t1, k1 = self.terms[0], self.k1
        r, c = t1.tril
        base = np.arange(self.l1)[:, None] * k1
        sl = self.theta_slices[0]
        rows = np.concatenate([(base + r).ravel(), self.q1 + self._lam_rows])
        cols = np.concatenate([(base + c).ravel(), self.q1 + self._lam_cols])
        all_src = np.concatenate([np.tile(np.arange(sl.start, sl.stop), self.l1), self._lam_src])
        size = self.q1 + self.m
        # E_s: where theta_s sits in Lambda (Lambda = sum_s theta_s E_s, plus 1 on X and y).
        # Each column of Lambda holds theta_s at most once, so A E_s is A's columns rows_s moved
        # to cols_s, and E_s'A E_t is A[rows_s, rows_t] moved to [cols_s, cols_t]: the maps from
        # A's entries to the coefficient matrices (see _assemble) are fixed, flat indices.
        nth = self.ntheta
        order = np.argsort(all_src, kind="stable")  # entries grouped by theta index
        src, r, c = all_src[order], rows[order], cols[order]
        count = np.bincount(src, minlength=nth)
        first = np.cumsum(count) - count
        upper = [(a, b) for a in range(nth) for b in range(a, nth)]  # (np.triu_indices, faster)
        s_, t_ = self._all_pairs = (np.array([a for a, _ in upper]), np.array([b for _, b in upper]))
        q, sq = self.q1 + self.qr, size * size
        xy = np.arange(q, size)[:, None]
        # theta_s: Lambda_0'A E_s (the X and y rows; plus its transpose later)
        lin_dest = ((1 + src) * sq + c)[None, :] + xy * size
        lin_from = r[None, :] + xy * size
        # theta_s theta_t: E_s'A E_t, every (entry of s, entry of t)
        sizes = count[s_] * count[t_]
        pair = np.repeat(np.arange(len(s_)), sizes)
        j = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        ea, eb = first[s_[pair]] + j // count[t_[pair]], first[t_[pair]] + j % count[t_[pair]]
        self._all_dest = np.concatenate([lin_dest.ravel(), (1 + nth + pair) * sq + c[ea] * size + c[eb]])
        self._all_from = np.concatenate([lin_from.ravel(), r[ea] * size + r[eb]])
        self._all_mirror = np.concatenate([1 + np.arange(nth), 1 + nth + np.flatnonzero(s_ != t_)])
        idx = base + np.arange(k1)[None, :]  # the first term's k1 x k1 blocks
        self._all_a11 = (idx[:, :, None] * size + idx[:, None, :]).ravel()

    def _assemble(self) -> np.ndarray:
        """The coefficient matrices of Lambda'A Lambda + I as a polynomial in theta, one per
        row: the constant, then theta_s, then theta_s theta_t (s <= t, triu order).

        With Lambda = Lambda_0 + sum_s theta_s E_s (Lambda_0: 1 on X and y): the constant is
        Lambda_0'A Lambda_0 + I_q, theta_s's is E_s'A Lambda_0 + its transpose, and
        theta_s theta_t's is E_s'A E_t + its transpose (once when s = t).
        """
        q1, size = self.q1, self.q1 + self.m
        q = q1 + self.qr
        A = np.zeros((size, size))  # [Z X y]'W[Z X y], engine order
        A.ravel()[self._all_a11] = self.A11.ravel()
        r1_rows, r1_cols = q1 + self._r1_indices, self._r1_col
        A[r1_rows, r1_cols] = A[r1_cols, r1_rows] = self._r1_data
        rr = np.tril(self.A_rr)
        A[q1:, q1:] = rr + np.tril(rr, -1).T
        out = np.zeros((1 + self.ntheta + len(self._all_pairs[0]), size, size))
        out[0, q:, q:] = A[q:, q:]
        out[0, np.arange(q), np.arange(q)] = 1.0
        out.ravel()[self._all_dest] = A.ravel()[self._all_from]
        mirror = self._all_mirror
        out[mirror] += np.swapaxes(out[mirror], 1, 2)
        return out.reshape(len(out), size * size)

    def objective_parts(self, theta: np.ndarray) -> tuple[float, float, float]:
        """``(log|L_Z|^2, log|L_X|^2, r^2)`` at ``theta``: what the profiled deviance needs.

        Small systems (see ``_DENSE_ALL``) form ``Lambda'A Lambda + I`` from its polynomial
        coefficients (``_assemble``) and factor it densely; others take them from ``factor``.

        Raises
        ------
        NotPositiveDefinite
            As ``factor`` does.
        """
        basis = self._all_basis
        if basis is None:
            fac = self.factor(theta)
            return fac.logdet_z, fac.logdet_x, fac.r2
        s_, t_ = self._all_pairs
        size = self.q1 + self.m
        M = (np.concatenate(([1.0], theta, theta[s_] * theta[t_])) @ basis).reshape(size, size)
        # M is symmetric: its C-ordered array is the Fortran-ordered M' LAPACK factors in place
        U, info = sla.lapack.dpotrf(M.T, lower=0, clean=0, overwrite_a=1)
        if 0 < info < size:
            raise NotPositiveDefinite(f"whole system, pivot {info}")
        s = np.log(U.diagonal()[:-1]).cumsum()  # (50 terms at most: as exact as a pairwise sum)
        q = self.q1 + self.qr
        logdet_z, logdet_x = 2.0 * float(s[q - 1]), 2.0 * float(s[-1] - s[q - 1])
        if not math.isfinite(logdet_z + logdet_x):
            raise NotPositiveDefinite("whole system")
        return (
            logdet_z,
            logdet_x,
            0.0 if info == size else float(U[-1, -1] ** 2),
        )  # info == size: zero residual

    @property
    def work(self) -> float:
        """Estimated flops of one factorization: the dense Cholesky, the sparse update, the batch."""
        nnz = self._P.nnz if self._P is not None else self._r1_nnz * self.m
        return self.m**3 / 3 + 2.0 * nnz + self.l1 * self.k1**3

    def lam_r(self, theta: np.ndarray) -> sp.csr_matrix:
        """Lambda of the rest terms (engine order) as a sparse qr x qr matrix."""
        return sp.csr_matrix(
            (theta[self._lam_src], (self._lam_rows, self._lam_cols)), shape=(self.qr, self.qr)
        )

    def _pairs(self) -> None:
        """Symbolic phase of S = A_r1 G A_r1' (lower triangle): S = P g with g = G.ravel().

        Each level j of the first term contributes A[a, j.alpha] G_j[alpha, beta] A[b, j.beta] to
        S[a, b]; P holds the products A[a, .] A[b, .] for every pair of entries of a level, so that
        one sparse mat-vec per theta gives S. When P would be too large (dense crossings) S is
        formed as F F' instead. This is the symbolic phase, done once; ``set_data`` fills in
        P's values from A_r1's.
        """
        indptr, indices = self._r1_indptr, self._r1_indices
        k1, l1, m = self.k1, self.l1, self.m
        level_ptr = indptr[::k1]
        cnt = np.diff(level_ptr).astype(np.int64)
        npairs = int((cnt * (cnt + 1) // 2).sum())
        self._r1_flat: np.ndarray | None = None
        # (a small system is evaluated from its dense copy; its few factors take F densely too)
        if self._whole or (self._reweighted and m * m * self.q1 * k1 <= _DENSE_PER_PAIR * npairs):
            self._r1_flat = indices.astype(np.int64) * self.q1 + np.repeat(
                np.arange(self.q1), np.diff(indptr)
            )
            self._P = None
            return
        if npairs > _MAX_PAIRS:
            self._P = None
            return
        col = np.repeat(np.arange(self.q1), np.diff(indptr))
        level, alpha = np.divmod(col, k1)
        rows = indices.astype(np.int64)
        order = np.arange(len(rows))
        if k1 > 1:  # sort each level's entries by row, so pairs (e1, e2 <= e1) have rows[e2] <= rows[e1]
            order = np.lexsort((rows, level))
            rows, alpha = rows[order], alpha[order]
        start = level_ptr[level]
        reps = np.arange(len(rows)) - start + 1
        # pair t of entry e1 (t = 0 .. reps - 1) has e2 = start[e1] + t
        # (int32: the entries of A_r1 number fewer than 2^31; the map stays as small as P)
        e1 = np.repeat(np.arange(len(rows), dtype=np.int32), reps)
        e2 = np.arange(len(e1), dtype=np.int32) - np.repeat(
            (np.cumsum(reps) - reps - start).astype(np.int32), reps
        )
        key = np.take(rows, e1) * m + np.take(rows, e2)
        self._keys, inv = _ranked(key, m * m)
        self._key_rows, self._key_cols = np.divmod(self._keys, m)
        ncol = l1 * k1 * k1
        if k1 > 1:
            # (e1, e2) on one row stands for both orders: G_j is symmetric
            twice = (rows[e1] == rows[e2]) & (e1 != e2)
            gcol = level[e1] * k1 * k1 + alpha[e1] * k1 + alpha[e2]
            e1, e2 = order[e1].astype(np.int32), order[e2].astype(np.int32)
            # P is stored by columns
            srt = np.argsort(gcol, kind="stable")
            gcol, inv, e1, e2 = gcol[srt], inv[srt], e1[srt], e2[srt]
            doubled = np.flatnonzero(twice[srt])
            counts = np.bincount(gcol, minlength=ncol)
        else:
            # one column of P per level, whose pairs come in order; a level's rows are distinct
            doubled = np.zeros(0, dtype=np.int64)
            counts = cnt * (cnt + 1) // 2
        indptr = np.concatenate([[0], np.cumsum(counts)])
        self._P = sp.csc_matrix(
            (np.zeros(len(e1)), inv.astype(np.int32), indptr), shape=(len(self._keys), ncol)
        )
        # entry indices in P's order; int32 keeps this map no larger than P itself
        self._pair_map = (e1.astype(np.int32, copy=False), e2.astype(np.int32, copy=False), doubled)

    def factor(self, theta: np.ndarray) -> Factor:
        """The blocked Cholesky factor at ``theta`` (lme4's order).

        Raises
        ------
        NotPositiveDefinite
            When the rest block is not numerically positive definite.
        """
        theta = np.asarray(theta, dtype=float)
        tmats = tuple(t.tmat(theta[sl]) for t, sl in zip(self.terms, self.theta_slices))
        F_dense = None
        T1 = tmats[0]
        if self.k1 == 1:
            L11 = np.sqrt(T1[0, 0] ** 2 * self.A11 + 1.0)
            L11inv = 1.0 / L11
        elif self.k1 == 2:  # (intercept, slope): closed forms, a tenth of LAPACK's batch overhead
            L11, L11inv = _chol2(T1.T @ self.A11 @ T1)
        else:
            try:
                L11 = np.linalg.cholesky(T1.T @ self.A11 @ T1 + np.eye(self.k1))
            except np.linalg.LinAlgError:
                raise NotPositiveDefinite("first block") from None
            L11inv = _batched_tri_inv(L11)
        if not (np.isfinite(L11).all() and np.isfinite(L11inv).all()):
            raise NotPositiveDefinite("first block")
        B = T1 @ np.swapaxes(L11inv, 1, 2)  # T1 L11^-T per level
        qr, m = self.qr, self.m
        if self._kept:
            Lr_tail = self._finish_tail(theta)
            if Lr_tail is not None:
                return Factor(
                    self, theta, tmats, L11, L11inv, B, Lr_tail, self._r1_data, theta[self._lam_src]
                )
        G = (B @ np.swapaxes(B, 1, 2)).ravel()
        # M = A_rr - S. Only its lower triangle is read from here on (nothing reads A_rr's upper),
        # so the dense products are subtracted whole: no tril temporaries (PIRLS factors at
        # every step, and each fresh m x m array costs page faults)
        if self._P is not None:
            M = self.A_rr.copy()
            if self._P_sum is not None:  # (one G per distinct A11 block)
                M.ravel()[self._keys] -= self._P_sum @ G.reshape(self.l1, -1)[self._P_rep].ravel()
            else:
                M.ravel()[self._keys] -= self._P @ G
        elif self._dense_r1 is not None:
            A = self._dense_r1
            F = A[:, :, 0] * B[:, 0, 0] if self.k1 == 1 else np.einsum("mja,jab->mjb", A, B).reshape(m, -1)
            F_dense = F
            M = F @ F.T
            np.subtract(self.A_rr, M, out=M)
        else:
            F = self.A_r1 @ _blockdiag(B)
            M = self.A_rr - (F @ F.T).toarray()
        rscale = tail = None
        if qr:
            lam_diag = theta[self._lam_src] if self._lam_diagonal else None
            if lam_diag is not None and lam_diag.min() > 0:
                if self._keep:
                    tail = M[self._tail0 :, self._tail0 :].copy()  # (A - S there: _finish_tail)
                # D (A - S) D + I = D (A - S + D^-2) D: factor the middle, scale R's rows later
                M[np.arange(qr), np.arange(qr)] += lam_diag**-2
                rscale = lam_diag
            else:
                M = np.tril(M) + np.tril(M, -1).T
                lam = self.lam_r(theta)
                M[:qr, :] = lam.T @ M[:qr, :]
                M[:, :qr] = (lam.T @ M[:, :qr].T).T
                M[np.arange(qr), np.arange(qr)] += 1.0
        info = self._chol_rest(M)
        Lr = M
        if info == m:  # y lies in the column space: a zero residual
            Lr[-1, -1] = 0.0
        if 0 < info < m or not (np.isfinite(np.diag(Lr)).all() and np.isfinite(Lr[-1]).all()):
            raise NotPositiveDefinite(f"rest block, pivot {info}")
        if tail is not None:
            self._keep_factor(theta, Lr, tail)
        return Factor(self, theta, tmats, L11, L11inv, B, Lr, self._r1_data, rscale, F_dense)

    @property
    def step_order(self) -> np.ndarray | None:
        """theta's indices term by term in the engine's order, when stepping the last terms'
        alone lets a factor be finished from the last one's (``_finish_tail``); else None."""
        if not self._keep:
            return None
        return np.concatenate([np.arange(sl.start, sl.stop) for sl in self.theta_slices])

    def _keep_factor(self, theta: np.ndarray, Lr: np.ndarray, tail: np.ndarray) -> None:
        """Keep a factor for ``_finish_tail`` under its head terms' theta (the oldest goes)."""
        key = theta[self._head].tobytes()
        self._kept.pop(key, None)
        self._kept[key] = (theta.copy(), Lr, tail)
        while len(self._kept) > self._keep:
            del self._kept[next(iter(self._kept))]

    def _finish_tail(self, theta: np.ndarray) -> np.ndarray | None:
        """The rest factor at ``theta`` from a kept one's, or None when it cannot be had so.

        When theta differs from a kept factor's only in rest terms whose rows all lie in the
        tail (rows k and after, k >= ``_tail0``), the middle matrix A - S + D^-2 (see ``factor``)
        is unchanged in its first k rows: so are the factor's first k columns, and only the
        tail, (A - S)[k:, k:] + D^-2 - L[k:, :k] L[k:, :k]', is factored anew. For InstEval's
        dept, 17 rows instead of 1,145: NEWUOA's first steps along dept's theta, and the
        convergence checks, which step the parameters in the engine's order (``step_order``).
        """
        assert self._tail0 is not None
        lam = theta[self._lam_src]
        kept = self._kept.get(theta[self._head].tobytes())
        if kept is None or lam.min() <= 0:
            return None
        last_theta, last_Lr, last_tail = kept
        changed = theta != last_theta
        k = self.qr  # (the same theta: only the rows of X and y are refactored)
        for e, sl in enumerate(self.theta_slices):
            if changed[sl].any():
                k = int(self.offsets[e]) - self.q1
                break
        Lr = last_Lr.copy()
        j = k - self._tail0
        T = last_tail[j:, j:].copy()
        d = np.arange(self.qr - k)
        T[d, d] += lam[k:] ** -2
        L21 = Lr[k:, :k]
        T -= L21 @ L21.T
        U, info = sla.lapack.dpotrf(T.T, lower=0, clean=0, overwrite_a=1)
        n = self.m - k
        if 0 < info < n:
            raise NotPositiveDefinite(f"rest block, pivot {k + info}")
        Lr[k:, k:] = U.T
        if info == n:  # y lies in the column space: a zero residual
            Lr[-1, -1] = 0.0
        if not (np.isfinite(np.diag(Lr)).all() and np.isfinite(Lr[-1]).all()):
            raise NotPositiveDefinite(f"rest block, pivot {info}")
        self._keep_factor(theta, Lr, last_tail)
        return Lr

    def to_lme4(self, per_term: list[np.ndarray]) -> list[np.ndarray]:
        """Reorder per-term results from engine order to lme4's order."""
        out: list[np.ndarray] = [np.zeros(0)] * len(per_term)
        for e, i in enumerate(self.perm):
            out[i] = per_term[e]
        return out
