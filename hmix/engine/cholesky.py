"""The blocked Cholesky factor of Lambda'A Lambda + I and its strategies.

For a given lam::

    L11_j = chol(T1' A11_j T1 + I)                  per level j of the first term
    B_j   = T1 L11_j^-T,  G_j = B_j B_j'
    S     = A_r1 G A_r1'                            (the Schur update: F F' with F = A_r1 blockdiag(B))
    M     = Lambda_r' (A_rr - S) Lambda_r + [I 0; 0 0]
    Lr    = chol(M)

Nothing here loops over rows or levels. Two steps have strategies, each a small class chosen
once by ``hmix.engine.choose`` from the problem's shape:

* the Schur update ``S``: ``PairMapUpdate`` (a sparse mat-vec S = P g over the products of
  A_r1's entries that share a level; cheapest per lam), ``DenseUpdate`` (F F' by BLAS with a
  dense F; cheapest to refill, for PIRLS), ``SparseUpdate`` (F F' with a sparse F; when P
  would be too large);
* the rest block's factorization: ``DenseRest`` (LAPACK) or ``NestedRest`` (the second term's
  rows, diagonal when the first term is nested in it, eliminated by a scaling first).

``TailCache`` wraps a ``BlockedCholesky`` to finish a factor from a kept one when only the last
terms' parameters changed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .factor import Factor, check_finite_rest
from .linalg import NotPositiveDefinite, batched_tri_inv, blockdiag, chol2
from .statistics import Blocks, Pattern, ranked

__all__ = [
    "SchurUpdate",
    "PairMapUpdate",
    "DenseUpdate",
    "SparseUpdate",
    "RestFactorization",
    "DenseRest",
    "NestedRest",
    "BlockedCholesky",
    "TailCache",
]

FirstBlock = tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]  # tmats, L11, L11inv, B


# ----- the Schur update ----------------------------------------------------------------------
class SchurUpdate(ABC):
    """S = A_r1 G A_r1' subtracted from the rest block: ``schur(A_rr, B)`` gives M = A_rr - S
    (its lower triangle; the upper one is not read) and F when it was formed densely."""

    name: str

    def __init__(self, pattern: Pattern):
        self.pattern = pattern
        self.layout = pattern.layout

    @abstractmethod
    def refill(self, blocks: Blocks) -> None:
        """Take new values of A_r1 (and A11)."""

    @abstractmethod
    def schur(
        self, A_rr: RestBlock, B: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """M = A_rr - S, fresh or in ``out`` (a workspace of A_rr's shape), and the dense F (or
        None)."""

    @property
    def nnz(self) -> float:
        """Entries the update touches per lam (for the work estimate)."""
        return float(self.pattern.nnz * self.layout.m)


class PairMapUpdate(SchurUpdate):
    """S = P g with g = G.ravel(): P holds the products A[a, .] A[b, .] of every pair of
    entries of A_r1 in one level of the first term, so one sparse mat-vec per lam gives S.

    Each level j contributes A[a, j.alpha] G_j[alpha, beta] A[b, j.beta] to S[a, b]. The
    symbolic phase (P's pattern, the pair map) is done once; ``refill`` fills in P's values.
    With ``merge``, levels with equal A11 blocks (equal counts, in an unweighted scalar term)
    share G_j, and P's columns for them are summed once per refill: InstEval's 2,972 students
    have 86 distinct counts, P's 2.1M entries become 1.15M. The sum costs about six mat-vecs, so
    systems refilled at every PIRLS step do not merge.
    """

    name = "pair map"

    def __init__(self, pattern: Pattern, merge: bool):
        super().__init__(pattern)
        self.merge = merge
        lay = self.layout
        k1, l1, m = lay.k1, lay.l1, lay.m
        indptr, indices = pattern.indptr, pattern.indices
        level_ptr = indptr[::k1]
        cnt = np.diff(level_ptr).astype(np.int64)
        col = np.repeat(np.arange(lay.q1), np.diff(indptr))
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
        self.keys, inv = ranked(key, m * m)
        ncol = l1 * k1 * k1
        if k1 > 1:
            # (e1, e2) on one row stands for both orders: G_j is symmetric
            twice = (rows[e1] == rows[e2]) & (e1 != e2)
            gcol = level[e1] * k1 * k1 + alpha[e1] * k1 + alpha[e2]
            e1, e2 = order[e1].astype(np.int32), order[e2].astype(np.int32)
            srt = np.argsort(gcol, kind="stable")  # P is stored by columns
            gcol, inv, e1, e2 = gcol[srt], inv[srt], e1[srt], e2[srt]
            doubled = np.flatnonzero(twice[srt])
            counts = np.bincount(gcol, minlength=ncol)
        else:
            # one column of P per level, whose pairs come in order; a level's rows are distinct
            doubled = np.zeros(0, dtype=np.int64)
            counts = cnt * (cnt + 1) // 2
        P_indptr = np.concatenate([[0], np.cumsum(counts)])
        self.P = sp.csc_matrix(
            (np.zeros(len(e1)), inv.astype(np.int32), P_indptr), shape=(len(self.keys), ncol)
        )
        self._pair_map = (e1.astype(np.int32, copy=False), e2.astype(np.int32, copy=False), doubled)
        self.P_sum: sp.csc_matrix | None = None
        self.P_rep: np.ndarray | None = None

    @staticmethod
    def pairs(pattern: Pattern) -> int:
        """How many entries P would have."""
        cnt = np.diff(pattern.indptr[:: pattern.layout.k1]).astype(np.int64)
        return int((cnt * (cnt + 1) // 2).sum())

    @property
    def nnz(self) -> float:
        return float(self.P.nnz)

    def refill(self, blocks: Blocks) -> None:
        e1, e2, doubled = self._pair_map
        # (np.take: indexing with int32 arrays would first convert them, at twice the cost)
        values = np.take(blocks.r1, e1) * np.take(blocks.r1, e2)
        values[doubled] *= 2.0
        self.P.data = values
        self.P_sum, self.P_rep = None, None
        if self.merge:
            self._merge(blocks.A11)

    def _merge(self, A11: np.ndarray) -> None:
        lay = self.layout
        kk = lay.k1 * lay.k1
        equal = equal_blocks(A11)
        if equal is None:  # (weighted data: nearly every block differs)
            return
        rep, cls = equal
        cols = (cls.reshape(-1, 1) * kk + np.arange(kk)).ravel()
        C = sp.csc_matrix(
            (np.ones(len(cols)), (np.arange(len(cols)), cols)), shape=(len(cols), len(rep) * kk)
        )
        self.P_sum, self.P_rep = (self.P @ C).tocsc(), rep

    def schur(
        self, A_rr: RestBlock, B: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        G = (B @ np.swapaxes(B, 1, 2)).ravel()
        M = A_rr.into(out)
        if self.P_sum is not None:  # (one G per distinct A11 block)
            M.ravel()[self.keys] -= self.P_sum @ G.reshape(self.layout.l1, -1)[self.P_rep].ravel()
        else:
            M.ravel()[self.keys] -= self.P @ G
        return M, None


class DenseUpdate(SchurUpdate):
    """S = F F' by BLAS, F = A_r1 blockdiag(B) formed densely (m x q1): cheapest to refill, so
    for systems refilled at every PIRLS step whose F is small, and for small systems."""

    name = "dense F"

    def __init__(self, pattern: Pattern):
        super().__init__(pattern)
        q1 = self.layout.q1
        self._flat = pattern.indices.astype(np.int64) * q1 + np.repeat(np.arange(q1), np.diff(pattern.indptr))
        self._dense: np.ndarray | None = None

    def refill(self, blocks: Blocks) -> None:
        lay = self.layout
        if self._dense is None:  # (in place afterwards: the same entries every time)
            self._dense = np.zeros((lay.m, lay.l1, lay.k1))
        self._dense.ravel()[self._flat] = blocks.r1

    def schur(
        self, A_rr: RestBlock, B: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        A = self._dense
        assert A is not None
        lay = self.layout
        if lay.k1 == 1:
            F = A[:, :, 0] * B[:, 0, 0]
        else:  # (numpy's batched matmul: several times einsum's speed on these small blocks)
            F = np.matmul(A.swapaxes(0, 1), B).swapaxes(0, 1).reshape(lay.m, -1)
        M = np.matmul(F, F.T, out=out)
        np.negative(M, out=M)
        A_rr.add_to(M)
        return M, F


_SPARSE_BLOCK = 1 << 23  # entries of S a block of SparseUpdate's product holds (64 MB)


class SparseUpdate(SchurUpdate):
    """S = F F' with a sparse F: when the pair map would be too large (dense crossings)."""

    name = "sparse F"

    def refill(self, blocks: Blocks) -> None:
        self._A_r1 = self.pattern.r1_matrix(blocks.r1)

    def schur(
        self, A_rr: RestBlock, B: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        F = (self._A_r1 @ blockdiag(B)).tocsr()
        Ft = F.T.tocsr()
        M = np.empty(A_rr.shape) if out is None else out
        # F F' by blocks of rows, each written into M: never the whole product as a sparse
        # matrix (its entries fill most of S, at 12 bytes each beside M's 8)
        step = max(1, _SPARSE_BLOCK // max(1, M.shape[1]))
        for start in range(0, M.shape[0], step):
            stop = min(start + step, M.shape[0])
            rows = M[start:stop]
            np.negative((F[start:stop] @ Ft).toarray(), out=rows)
            A_rr.add_to(rows, start)
        return M, None


# ----- the rest block's factorization --------------------------------------------------------
class RestFactorization(ABC):
    """Factors the middle matrix M in place (its lower triangle, C order, becomes L's) and
    inverts the random-effects part of the result."""

    name: str

    @abstractmethod
    def factor(self, M: np.ndarray) -> int:
        """LAPACK's info: 0, or the 1-based row of the first pivot that is not positive."""

    @abstractmethod
    def inverse(self, L: np.ndarray) -> np.ndarray:
        """(L L')^-1, its lower triangle (the upper one is not set)."""


class DenseRest(RestFactorization):
    """LAPACK's Cholesky of the whole rest block."""

    name = "dense"

    def factor(self, M: np.ndarray) -> int:
        # M's lower triangle (C order) is the upper triangle of the Fortran-ordered M':
        # factoring that in place spares LAPACK a transposing copy
        return int(sla.lapack.dpotrf(M.T, lower=0, clean=0, overwrite_a=1)[1])

    def inverse(self, L: np.ndarray) -> np.ndarray:
        Vrr, info = sla.lapack.dpotri(L, lower=1)
        if info:
            raise NotPositiveDefinite("inverse of the rest block")
        return np.asarray(Vrr)


class NestedRest(RestFactorization):
    """The first ``kd`` rows, a diagonal block (see ``Pattern.diagonal_rows``), eliminated by a
    square root and a scaling of their columns; LAPACK factors the Schur complement of the rows
    after them (grouseticks: 68 rows instead of 186, a tenth of the flops)."""

    name = "nested diagonal"

    def __init__(self, kd: int):
        self.kd = kd

    def factor(self, M: np.ndarray) -> int:
        kd = self.kd
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

    def inverse(self, L: np.ndarray) -> np.ndarray:
        """With L = [D 0; C L22] and W = L22^-T L22^-1 C D^-1, (L L')^-1 = [D^-2 + D^-1 C'W, -W';
        -W, (L22 L22')^-1]: LAPACK inverts only L22, and of the first block only the diagonal is
        formed -- no row of Z and no level of the first term meets two of the diagonal rows
        (the first term is nested in their term), so nothing reads the rest of that block."""
        kd = self.kd
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
            Vrr[np.arange(kd), np.arange(kd)] = np.einsum("ij,ij->j", Cd, W)
        Vrr[np.arange(kd), np.arange(kd)] += d**-2.0
        return Vrr


def equal_blocks(A11: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Levels whose first-term blocks are equal: the first level of each distinct block and
    each level's distinct block; None when more than half the levels' blocks differ.

    Blocks are told apart by one random projection, and the grouping is then checked exactly
    (a tie between different blocks, however unlikely, gives None).
    """
    levels = A11.shape[0]
    flat = A11.reshape(levels, -1)
    key = flat @ np.random.default_rng(0).uniform(1.0, 2.0, flat.shape[1])
    _, first, which = np.unique(key, return_index=True, return_inverse=True)
    if 2 * len(first) > levels or not np.array_equal(flat, flat[first][which]):
        return None
    return first, which.ravel()


class RestBlock:
    """A_rr, the rest block of the statistics: the later terms' Z'WZ (its values on the
    pattern's ``rr_keys``), Z_r'W[X y] and [X y]'W[X y], kept as those parts rather than as a
    dense m x m array. A Schur update writes M = A_rr - S straight into its buffer (``into``), so
    a large rest block is held once, as M (the factor), not twice (a dense A_rr beside it: the
    later terms' Z'WZ is as sparse as their crossings, diagonal for a single one)."""

    def __init__(self, pattern: Pattern):
        self.layout = pattern.layout
        self.keys = pattern.rr_keys
        self.blocks: Blocks | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.layout.m, self.layout.m

    def into(self, out: np.ndarray | None = None) -> np.ndarray:
        """A_rr (its lower triangle: the upper one is not read), in ``out`` when given (a workspace whose
        pages are already mapped: a fresh array of a large rest block costs more in page faults
        than writing it), else fresh."""
        if out is None:
            out = np.zeros(self.shape)
        else:
            out.fill(0.0)
        self.add_to(out)
        return out

    def add_to(self, M: np.ndarray, start: int = 0) -> None:
        """Add A_rr (its lower triangle, at least) to M, the rows ``start`` to ``start + len(M)`` of an m x m
        array (C order)."""
        assert self.blocks is not None
        lay, b = self.layout, self.blocks
        qr, m, stop = lay.qr, lay.m, start + len(M)
        if qr and start < qr:
            lo, hi = np.searchsorted(self.keys, [start * m, min(stop, qr) * m])
            M.ravel()[self.keys[lo:hi] - start * m] += b.rr[lo:hi]
        if stop > qr:
            first = max(start, qr)
            rows = M[first - start :]
            rows[:, :qr] += b.zr_xy.T[first - qr : stop - qr]
            rows[:, qr:] += b.xy[first - qr : stop - qr]

    def dense(self) -> np.ndarray:
        """A_rr as a symmetric dense array (small systems: the whole system's coefficients)."""
        A = np.tril(self.into())
        return A + np.tril(A, -1).T


# ----- the factorization ---------------------------------------------------------------------
class BlockedCholesky:
    """The blocked factor at any lam, for the blocks it was last given (``set_blocks``)."""

    def __init__(
        self, pattern: Pattern, update: SchurUpdate, rest: RestFactorization, *, shared_blocks: bool = False
    ):
        self.layout = pattern.layout
        self.pattern = pattern
        self.update = update
        self.rest = rest
        self.A_rr = RestBlock(pattern)
        self.blocks: Blocks | None = None
        # levels whose first-term blocks are equal share their factors (see set_blocks)
        self.shared_blocks = shared_blocks
        self._distinct: tuple[np.ndarray, np.ndarray] | None = None
        self._workspace: np.ndarray | None = None

    def set_blocks(self, blocks: Blocks) -> None:
        self.A_rr.blocks = blocks
        self.update.refill(blocks)
        self.blocks = blocks
        # the factors of equal first-term blocks are equal: each is computed once (balanced
        # designs, every subject seen at the same occasions), for terms with three or more
        # columns (smaller ones have closed forms) and fixed blocks (an LMM's: a GLMM's weights
        # change them at every PIRLS step)
        equal = equal_blocks(blocks.A11) if self.shared_blocks and self.layout.k1 >= 3 else None
        self._distinct = None if equal is None else (blocks.A11[equal[0]], equal[1])

    @property
    def work(self) -> float:
        """Estimated flops of one factorization: the dense Cholesky, the update, the batch."""
        lay = self.layout
        return lay.m**3 / 3 + 2.0 * self.update.nnz + lay.l1 * lay.k1**3

    def first_block(self, lam: np.ndarray) -> FirstBlock:
        """T per term, and the first term's L11, L11^-1 and B = T1 L11^-T."""
        assert self.blocks is not None
        lay = self.layout
        tmats = lay.tmats(lam)
        T1, A11 = tmats[0], self.blocks.A11
        which: np.ndarray | None = None
        if lay.k1 == 1:
            L11 = np.sqrt(T1[0, 0] ** 2 * A11 + 1.0)
            L11inv = 1.0 / L11
        elif lay.k1 == 2:  # (intercept, slope)
            L11, L11inv = chol2(T1.T @ A11 @ T1)
        else:
            if self._distinct is not None:  # (each distinct block once, then each level's)
                A11, which = self._distinct
            try:
                L11 = np.linalg.cholesky(T1.T @ A11 @ T1 + np.eye(lay.k1))
            except np.linalg.LinAlgError:
                raise NotPositiveDefinite("first block") from None
            L11inv = batched_tri_inv(L11)
        if not (np.isfinite(L11).all() and np.isfinite(L11inv).all()):
            raise NotPositiveDefinite("first block")
        B = T1 @ np.swapaxes(L11inv, 1, 2)
        if which is not None:
            return tmats, L11[which], L11inv[which], B[which]
        return tmats, L11, L11inv, B

    def finish(self, lam: np.ndarray, first: FirstBlock, M: np.ndarray, F_dense: np.ndarray | None) -> Factor:
        """Scale M = A_rr - S by Lambda_r, add the identity, factor it: the Factor."""
        assert self.blocks is not None
        lay = self.layout
        qr, m = lay.qr, lay.m
        rscale = None
        if qr:
            lam_diag = lam[lay.lam_src] if lay.lam_diagonal else None
            if lam_diag is not None and lam_diag.min() > 0:
                # D (A - S) D + I = D (A - S + D^-2) D: factor the middle, scale R's rows later
                M[np.arange(qr), np.arange(qr)] += lam_diag**-2
                rscale = lam_diag
            else:
                M = np.tril(M) + np.tril(M, -1).T
                L = lay.lam_r(lam)
                M[:qr, :] = L.T @ M[:qr, :]
                M[:, :qr] = (L.T @ M[:, :qr].T).T
                M[np.arange(qr), np.arange(qr)] += 1.0
        info = self.rest.factor(M)
        if info == m:  # y lies in the column space: a zero residual
            M[-1, -1] = 0.0
        check_finite_rest(M, info, m)
        tmats, L11, L11inv, B = first
        return Factor(
            lay, self.pattern, self.rest, lam, tmats, L11, L11inv, B, M, self.blocks.r1, rscale, F_dense
        )

    def release(self) -> None:
        """Drop the values' workspace (made again when next needed)."""
        self._workspace = None

    def factor(self, lam: np.ndarray, workspace: bool = False) -> Factor:
        """The blocked Cholesky factor at ``lam``; with ``workspace``, its rest block in a
        buffer kept for the purpose (the next such factor overwrites it: for a value that is
        read at once, ``Engine.objective_parts``).

        Raises
        ------
        NotPositiveDefinite
            When a block is not numerically positive definite.
        """
        lam = np.asarray(lam, dtype=float)
        first = self.first_block(lam)
        assert self.blocks is not None
        out = None
        if workspace:
            if self._workspace is None:
                self._workspace = np.empty(self.A_rr.shape)
            out = self._workspace
        M, F = self.update.schur(self.A_rr, first[3], out)
        return self.finish(lam, first, M, F)


class TailCache:
    """A factor whose lam differs from a kept one's only in rest terms whose rows all lie in
    the tail of the rest block (rows k and after) is finished from the kept one.

    The middle matrix A - S + D^-2 is unchanged in its first k rows then: so are the factor's
    first k columns, and only the tail, (A - S)[k:, k:] + D^-2 - L[k:, :k] L[k:, :k]', is
    factored anew. For InstEval's dept, 17 rows instead of 1,145: NEWUOA's first steps along
    dept's parameter, and the convergence checks, which step the parameters in the engine's
    order (``step_order``). The factors of the last ``keep`` distinct values of the other terms'
    lam are kept (NEWUOA's first steps go out and back along each coordinate).
    """

    def __init__(self, inner: BlockedCholesky, tail0: int, keep: int):
        self.inner = inner
        self.layout = inner.layout
        self.tail0 = tail0
        self.keep = keep
        lay = self.layout
        # lam's indices in the terms before the tail: a kept factor's key
        self._head = np.concatenate(
            [
                np.arange(sl.start, sl.stop)
                for e, sl in enumerate(lay.lam_slices)
                if e == 0 or lay.offsets[e] - lay.q1 < tail0
            ]
        )
        self._kept: dict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # (lam, Lr, tail)

    def clear(self) -> None:
        """Forget the kept factors (new data, or the fit is over)."""
        self._kept.clear()

    def factor(self, lam: np.ndarray) -> Factor:
        lam = np.asarray(lam, dtype=float)
        inner, lay = self.inner, self.layout
        first = inner.first_block(lam)
        assert inner.blocks is not None
        if self._kept:
            Lr = self._finish_tail(lam)
            if Lr is not None:
                tmats, L11, L11inv, B = first
                return Factor(
                    lay,
                    inner.pattern,
                    inner.rest,
                    lam,
                    tmats,
                    L11,
                    L11inv,
                    B,
                    Lr,
                    inner.blocks.r1,
                    lam[lay.lam_src],
                )
        M, F = inner.update.schur(inner.A_rr, first[3])
        positive = lay.qr > 0 and lam[lay.lam_src].min() > 0
        tail = M[self.tail0 :, self.tail0 :].copy() if positive else None  # (A - S there)
        fac = inner.finish(lam, first, M, F)
        if tail is not None:
            self._keep_factor(lam, fac.Lr, tail)
        return fac

    def _keep_factor(self, lam: np.ndarray, Lr: np.ndarray, tail: np.ndarray) -> None:
        key = lam[self._head].tobytes()
        self._kept.pop(key, None)
        self._kept[key] = (lam.copy(), Lr, tail)
        while len(self._kept) > self.keep:
            del self._kept[next(iter(self._kept))]

    def _finish_tail(self, lam: np.ndarray) -> np.ndarray | None:
        lay = self.layout
        src = lam[lay.lam_src]
        kept = self._kept.get(lam[self._head].tobytes())
        if kept is None or src.min() <= 0:
            return None
        last_lam, last_Lr, last_tail = kept
        changed = lam != last_lam
        k = lay.qr  # (the same lam: only the rows of X and y are refactored)
        for e, sl in enumerate(lay.lam_slices):
            if changed[sl].any():
                k = int(lay.offsets[e]) - lay.q1
                break
        Lr = last_Lr.copy()
        j = k - self.tail0
        T = last_tail[j:, j:].copy()
        d = np.arange(lay.qr - k)
        T[d, d] += src[k:] ** -2
        L21 = Lr[k:, :k]
        T -= L21 @ L21.T
        U, info = sla.lapack.dpotrf(T.T, lower=0, clean=0, overwrite_a=1)
        n = lay.m - k
        if 0 < info < n:
            raise NotPositiveDefinite(f"rest block, pivot {k + info}")
        Lr[k:, k:] = U.T
        if info == n:  # y lies in the column space: a zero residual
            Lr[-1, -1] = 0.0
        check_finite_rest(Lr, 0, lay.m)
        self._keep_factor(lam, Lr, last_tail)
        return Lr
