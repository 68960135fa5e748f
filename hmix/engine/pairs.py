"""The Schur update of a scalar first term with many rows: a pair map stored by rows of S.

For a scalar first term, S = A_r1 G A_r1' with G = diag(g) over its levels. The random-effects
rows of S are a sum over pairs of A_r1's entries that share a level::

    S[a, b] = sum over levels j with entries (a, j) and (b, j) of A[a, j] A[b, j] g_j

``PairRowsUpdate`` stores those pairs grouped by (a, b) -- one sparse row of P per nonzero of S
-- so S_zz = P g is a CSR matrix-vector product: it reads g (the size of the first term's
levels, in cache) and writes each row once, where ``PairMapUpdate``'s CSC product scatters into
S (four times slower at a million rows). The rows of X and y, dense in A_r1, are not paired:
their rows of S are A_xy G A_r1', one sparse-by-dense product.

Memory is what sets this strategy apart. Its pairs number sum_j n_j (n_j + 1) / 2 (25 million
for a million rows of 20,000 users x 2,000 items) and are built in chunks of levels, so that
no temporary grows with all of them: per pair it keeps the level's index (4 bytes) and, unless
every random-effects entry of A_r1 is 1 (unweighted intercepts, each pair of levels met once:
then P's values are all 1 and one buffer of ones serves every chunk), the product's value
(8 bytes); systems refilled at every PIRLS step keep the two entries' indices (8 bytes) to
recompute the values from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .cholesky import RestBlock, SchurUpdate
from .statistics import Blocks, Pattern, ranked

__all__ = ["PairRowsUpdate"]

_CHUNK = 1 << 19  # pairs per chunk: 512k (4 MB per int64 temporary, and the buffer of ones)


class PairRowsUpdate(SchurUpdate):
    """S = P g with P stored by rows of S, in chunks of the first term's levels (scalar first
    term only; see the module's docstring).

    Parameters
    ----------
    pattern : Pattern
    reweighted : bool
        The values change at every PIRLS step: keep the pairs' entries to refill from.
    chunk : int
        Pairs per chunk (a test makes it small to exercise several chunks).
    heavy : int
        Levels with more random-effects entries than this are not paired: their part of S is
        F_h F_h' by BLAS, with F_h their columns of F as a dense array (a user who rated
        thousands of items: millions of pairs, but one column of F).
    """

    name = "pair rows"

    def __init__(self, pattern: Pattern, reweighted: bool, chunk: int = _CHUNK, heavy: int | None = None):
        super().__init__(pattern)
        lay = self.layout
        if lay.k1 != 1:
            raise ValueError("PairRowsUpdate needs a scalar first term")
        self.reweighted = reweighted
        self.chunk = chunk
        self._zsel, self._zrows, _, zptr = pattern.zpart
        cnt = np.diff(zptr)
        self.heavy = np.flatnonzero(cnt > (lay.m if heavy is None else heavy))
        light = np.ones(lay.l1, bool)
        light[self.heavy] = False
        self._light = light
        self.npairs = int((cnt * (cnt + 1) // 2)[light].sum())
        self._chunks: list[_Chunk] = []
        self._built_from: bytes | None = None  # a digest of the values P's data come from
        self._ones = np.ones(0)
        self._A: sp.csc_matrix | None = None
        self._Ah: np.ndarray | None = None
        self._Axy: np.ndarray | None = None

    @staticmethod
    def pairs(pattern: Pattern, heavy: int | None = None) -> int:
        """How many pairs of random-effects entries the map would hold (the levels with at most
        ``heavy`` entries)."""
        cnt = np.diff(pattern.zpart[3]).astype(np.int64)
        cnt = cnt[cnt <= (pattern.layout.m if heavy is None else heavy)]
        return int((cnt * (cnt + 1) // 2).sum())

    @property
    def nnz(self) -> float:
        lay = self.layout
        dense = len(self.heavy) * lay.m * lay.m / 50.0  # (BLAS: 50 flops the time of a pair)
        return float(self.npairs + self.pattern.nnz * (lay.p + 1) + dense)

    # ----- the symbolic phase ------------------------------------------------------------------
    @cached_property
    def _entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each random-effects entry's level and place in it, the entries row by row and each
        row's start among them (dropped once P is built)."""
        zptr = self.pattern.zpart[3]
        cnt = np.diff(zptr)
        level = np.repeat(np.arange(self.layout.l1, dtype=np.int32), cnt)
        pos = np.arange(len(self._zrows)) - np.repeat(zptr[:-1], cnt)
        light = self._light[level]  # (the heavy levels' entries are not paired)
        by_row = np.flatnonzero(light)[np.argsort(self._zrows[light], kind="stable")]
        rptr = np.concatenate([[0], np.cumsum(np.bincount(self._zrows[light], minlength=self.layout.qr))])
        return level, pos, by_row, rptr

    def _row_chunks(self) -> list[tuple[int, int]]:
        """Consecutive ranges of S's rows with at most ``chunk`` pairs each (or one row)."""
        _, pos, by_row, _ = self._entries
        per_row = np.bincount(self._zrows[by_row], pos[by_row] + 1.0, minlength=self.layout.qr)
        ends = np.cumsum(per_row)
        out, a0, qr = [], 0, self.layout.qr
        while a0 < qr:
            base = ends[a0 - 1] if a0 else 0.0
            a1 = max(int(np.searchsorted(ends, base + self.chunk, side="right")), a0 + 1)
            out.append((a0, min(a1, qr)))
            a0 = a1
        return out

    def _pairs_in(self, a0: int, a1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The pairs (e1, e2 <= e1 in e1's level) whose first entry lies in rows a0..a1-1, row by
        row and level by level: the first entries (each once), how many pairs each has, the
        second entries and the pairs' keys (row - a0) * m + column (row >= column: a level's
        rows ascend). Values of the first entries are repeated, not gathered pair by pair: the
        gathers at random places are what this phase's time goes to."""
        _, pos, by_row, rptr = self._entries
        e1 = by_row[rptr[a0] : rptr[a1]]
        start = e1 - pos[e1]
        reps = pos[e1] + 1
        first = np.cumsum(reps) - reps
        total = int(reps.sum())
        e2 = (np.arange(total, dtype=np.int64) - np.repeat(first - start, reps)).astype(np.int32)
        rows = self._zrows
        key = np.repeat((rows[e1].astype(np.int64) - a0) * self.layout.m, reps) + np.take(rows, e2)
        return e1, reps, e2, key

    def _build(self, zvalues: np.ndarray) -> None:
        """P's chunks of rows: CSR matrices over the chunk's keys and the first term's levels.

        An LMM's pairs whose value is exactly 1 (unweighted intercepts: a user meets an item
        once) keep no value: one buffer of ones serves them all; the others keep theirs, in a
        second CSR matrix over the keys they touch.
        """
        lay = self.layout
        chunks, largest = [], 0
        for a0, a1 in self._row_chunks():
            e1, reps, e2, key = self._pairs_in(a0, a1)
            uniq, rank = ranked(key, (a1 - a0) * lay.m)
            del key
            ckeys = uniq + a0 * lay.m
            level = np.repeat(self._entries[0][e1], reps)
            if self.reweighted:
                P, order = _csr(rank, level, np.arange(len(e2), dtype=np.int32), len(uniq), lay.l1)
                e1 = np.repeat(e1.astype(np.int32), reps)
                chunks.append(_Chunk(P, ckeys, e1=e1[order], e2=e2[order]))
                continue
            value = np.repeat(zvalues[e1], reps) * np.take(zvalues, e2)
            del e1, e2
            one = value == 1.0
            other = np.flatnonzero(~one)
            P, _ = _csr(rank[one], level[one], None, len(uniq), lay.l1)
            rows, rest_rank = np.unique(rank[other], return_inverse=True)
            rest, _ = _csr(rest_rank.ravel(), level[other], value[other], len(rows), lay.l1)
            chunks.append(_Chunk(P, ckeys, rest=rest, rest_rows=rows))
            largest = max(largest, P.nnz)
        self._chunks = chunks
        del self._entries
        self._ones = np.ones(largest)
        self._built_from = None if self.reweighted else _digest(zvalues)

    # ----- values and the update ---------------------------------------------------------------
    def refill(self, blocks: Blocks) -> None:
        lay, pat = self.layout, self.pattern
        zvalues = blocks.r1[self._zsel]
        stale = self._built_from is not None and _digest(zvalues) != self._built_from
        if not self._chunks or stale:
            self._build(zvalues)
        for c in self._chunks:
            if c.e1 is not None and c.e2 is not None:
                c.P.data = np.take(zvalues, c.e1) * np.take(zvalues, c.e2)
            else:
                c.P.data = self._ones[: c.P.nnz]
        self._A = pat.r1_matrix(blocks.r1)
        self._Ah = self._A[:, self.heavy].toarray() if len(self.heavy) else None
        dense = pat.indices >= lay.qr
        Axy = np.zeros((lay.p + 1, lay.q1))
        Axy[pat.indices[dense] - lay.qr, pat.col[dense]] = blocks.r1[dense]
        self._Axy = Axy

    def schur(
        self, A_rr: RestBlock, B: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        assert self._A is not None and self._Axy is not None
        lay = self.layout
        g = B[:, 0, 0] * B[:, 0, 0]
        M = A_rr.into(out)
        flat = M.ravel()
        for c in self._chunks:  # (chunk by chunk: no temporary the size of all keys)
            flat[c.keys] -= c.product(g)
        if self._Ah is not None:  # the heavy levels: F_h F_h' by BLAS, into M's lower triangle
            F = self._Ah * B[self.heavy, 0, 0]
            # (M's lower triangle is the upper one of the Fortran-ordered M': updated in place)
            sla.blas.dsyrk(-1.0, F, beta=1.0, c=M.T, lower=0, overwrite_c=1)
            g = g.copy()
            g[self.heavy] = 0.0
        # the rows of X and y: A_xy G A_r1'
        M[lay.qr :, :] -= np.asarray(self._A @ (self._Axy * g).T).T
        return M, None


@dataclass(eq=False)
class _Chunk:
    """P's rows for a range of S's rows (flat positions ``keys``): ``P`` (values: refilled from
    the entries ``e1``, ``e2``, or ones), plus ``rest`` with values of its own on the rows
    ``rest_rows`` of the chunk."""

    P: sp.csr_matrix
    keys: np.ndarray
    e1: np.ndarray | None = None
    e2: np.ndarray | None = None
    rest: sp.csr_matrix | None = None
    rest_rows: np.ndarray | None = None

    def product(self, g: np.ndarray) -> np.ndarray:
        s = np.asarray(self.P @ g)
        if self.rest is not None and self.rest.nnz:
            s[self.rest_rows] += self.rest @ g
        return s


def _csr(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray | None, nrows: int, ncols: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    """The CSR matrix of (rows, cols, values) and, without values, each entry's place in the
    input. scipy's COO -> CSR is a counting sort in C; the pairs come level by level and a level
    meets a key once, so each row comes out sorted, without duplicates, summed in level order."""
    data = np.arange(len(rows), dtype=np.int32) if values is None else values
    P = sp.coo_matrix((data, (rows.astype(np.int32), cols)), shape=(nrows, ncols)).tocsr()
    order = P.data
    if values is None:
        P.data = np.zeros(0)
    return P, order


def _digest(values: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).digest()
