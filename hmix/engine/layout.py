"""Where everything sits in the engine: the terms in the engine's order and the blocks' sizes.

The term with the most random effects comes first: its diagonal block of A is block diagonal
(one k x k block per level), so its factor is a batch of tiny factorizations. Everything else --
the other terms, then X, then y -- is the "rest", of size m (MixedModels.jl's idea, reduced to
two kinds of block).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from ..remat import ReTerm, ThetaMap

__all__ = ["Layout"]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Layout:
    """The random-effects terms in the engine's order, and the map of lam onto Lambda.

    ``lam`` (see ``ThetaMap``) is the vector the engine is evaluated at: the values of every
    term's T at its structure's pattern, in lme4's term order.

    Attributes
    ----------
    thetamap : ThetaMap
    p : int
        Fixed-effects columns.
    n : int
        Rows.
    """

    thetamap: ThetaMap
    p: int
    n: int

    @classmethod
    def of(cls, terms: tuple[ReTerm, ...], p: int, n: int) -> Layout:
        if not terms:
            raise ValueError("a mixed model needs at least one random-effects term")
        return cls(ThetaMap.of(terms), int(p), int(n))

    @cached_property
    def perm(self) -> np.ndarray:
        """Engine order -> lme4 order index: decreasing number of random effects."""
        return np.argsort(-np.array([t.q for t in self.thetamap.terms]), kind="stable")

    @cached_property
    def terms(self) -> tuple[ReTerm, ...]:
        """The terms in the engine's order."""
        return tuple(self.thetamap.terms[i] for i in self.perm)

    @cached_property
    def lam_slices(self) -> list[slice]:
        """Each engine-ordered term's slice of lam."""
        return [self.thetamap.lam_slices[i] for i in self.perm]

    @property
    def nlam(self) -> int:
        return self.thetamap.nlam

    @cached_property
    def offsets(self) -> list[int]:
        """Each engine-ordered term's first row among the random effects."""
        return [int(o) for o in np.cumsum([0] + [t.q for t in self.terms])[:-1]]

    @cached_property
    def first(self) -> ReTerm:
        return self.terms[0]

    @cached_property
    def l1(self) -> int:
        return self.first.nlevels

    @cached_property
    def k1(self) -> int:
        return self.first.k

    @cached_property
    def q1(self) -> int:
        return self.first.q

    @cached_property
    def qr(self) -> int:
        """Random effects after the first term."""
        return int(sum(t.q for t in self.terms[1:]))

    @cached_property
    def m(self) -> int:
        """Rows of the rest block: the later terms' random effects, X's columns and y."""
        return self.qr + self.p + 1

    @property
    def rest_offsets(self) -> list[int]:
        """Each later term's first row in the rest block."""
        return [o - self.q1 for o in self.offsets[1:]]

    def tmats(self, lam: np.ndarray) -> tuple[np.ndarray, ...]:
        """T of every term, engine order."""
        out = []
        for t, sl in zip(self.terms, self.lam_slices):
            if t.k == 1:
                out.append(np.array(lam[sl], dtype=float).reshape(1, 1))
            else:
                T = np.zeros((t.k, t.k))
                T[t.cov.pattern] = lam[sl]
                out.append(T)
        return tuple(out)

    # ----- Lambda of the rest terms: where lam goes -------------------------------------
    @cached_property
    def _lam_pattern(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, cols, src = [], [], []
        for o, t, sl in zip(self.rest_offsets, self.terms[1:], self.lam_slices[1:]):
            r, c = t.cov.pattern
            base = o + np.arange(t.nlevels)[:, None] * t.k
            rows.append((base + r[None, :]).ravel())
            cols.append((base + c[None, :]).ravel())
            src.append(np.tile(np.arange(sl.start, sl.stop), t.nlevels))
        return _cat(rows), _cat(cols), _cat(src)

    @property
    def lam_rows(self) -> np.ndarray:
        return self._lam_pattern[0]

    @property
    def lam_cols(self) -> np.ndarray:
        return self._lam_pattern[1]

    @property
    def lam_src(self) -> np.ndarray:
        """The index into lam of every nonzero of Lambda_r (rows ``lam_rows``, columns ``lam_cols``)."""
        return self._lam_pattern[2]

    @cached_property
    def lam_diagonal(self) -> bool:
        """Whether Lambda_r is diagonal (scalar or diagonal later terms): then it is a scaling."""
        return bool(np.all(self.lam_rows == self.lam_cols))

    def lam_r(self, lam: np.ndarray) -> sp.csr_matrix:
        """Lambda of the rest terms as a sparse qr x qr matrix."""
        return sp.csr_matrix((lam[self.lam_src], (self.lam_rows, self.lam_cols)), shape=(self.qr, self.qr))

    def to_lme4(self, per_term: list[np.ndarray]) -> list[np.ndarray]:
        """Reorder per-term results from engine order to lme4's order."""
        out: list[np.ndarray] = [np.zeros(0)] * len(per_term)
        for e, i in enumerate(self.perm):
            out[i] = per_term[e]
        return out

    @cached_property
    def row_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row, the u-space columns of Z it touches (n, K) and their values (n, K); per element
        of lam, its row and column among those K (K = sum of the terms' k): the exact
        gradients sum over rows with these."""
        columns = self.u_columns()
        lam_r, lam_c = self.lam_positions()
        cols = np.stack([c for c, _ in columns], axis=1)
        return cols, np.stack([z for _, z in columns], axis=1), lam_r, lam_c

    def lam_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Each element of lam's row and column among the K columns of Z a row touches."""
        kstart = np.cumsum([0] + [t.k for t in self.terms])
        lam_r = np.empty(self.nlam, dtype=np.int64)
        lam_c = np.empty(self.nlam, dtype=np.int64)
        for i, (t, sl) in enumerate(zip(self.terms, self.lam_slices)):
            r, c = t.cov.pattern
            lam_r[sl], lam_c[sl] = kstart[i] + r, kstart[i] + c
        return lam_r, lam_c

    def row_lambda(self, tmats: tuple[np.ndarray, ...]) -> np.ndarray:
        """The block-diagonal K x K Lambda of one row (every row's is the same): zeta_i = its
        transpose times the row's z values."""
        K = sum(t.k for t in self.terms)
        Lam = np.zeros((K, K))
        k0 = 0
        for t, T in zip(self.terms, tmats):
            Lam[k0 : k0 + t.k, k0 : k0 + t.k] = T
            k0 += t.k
        return Lam

    def u_columns(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(u-space column, z column) for every column of every term, engine order: the columns
        of Z each row touches (the first term's k1 first)."""
        out = []
        for off, t in zip(self.offsets, self.terms):
            for a in range(t.k):
                out.append((off + t.refs * t.k + a, t.z[:, a]))
        return out
