"""Nested designs of any size: the rest block as a diagonal bordered by the rows of X and y.

When the first term is nested in the only other one, a scalar term (classes in schools,
``(1 | school) + (1 | school:class)``), each level of the first term meets one school: the
Schur update S = F F' (F = A_r1 blockdiag(B)) has no off-diagonal entry between two schools,
and neither has the schools' Z'WZ. The middle matrix is then::

    M = [ D   C' ]     D diagonal (one entry per school), C the rows of X and y (p + 1 of them)
        [ C   E  ]

and its Cholesky factor is [sqrt(D) 0; C sqrt(D)^-1 chol(E - C D^-1 C')]: the nested design's
Schur complement is diagonal, so the factor has no fill at all and its storage grows with the
schools, not with their square. This is the sparse Cholesky that lme4's CHOLMOD computes for
these designs (its fill-reducing ordering puts the schools first), specialised to the structure
that makes it trivial: no general sparse factorization is needed, and none is shipped with numpy
or scipy (scikit-sparse's CHOLMOD has no wheels).

``BorderedCholesky`` forms and factors M; ``BorderedFactor`` is the ``Factor`` it gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from ..errors import HmixError
from .cholesky import BlockedCholesky, RestFactorization
from .factor import Factor
from .linalg import NotPositiveDefinite, blockdiag
from .statistics import Blocks, Pattern

__all__ = ["BorderedCholesky", "BorderedFactor", "BorderedRest"]


class BorderedRest(RestFactorization):
    """The name of the bordered factorization (``BorderedCholesky`` does the work)."""

    name = "bordered diagonal"

    def factor(self, M: np.ndarray) -> int:
        raise NotImplementedError("the bordered rest block is factored by BorderedCholesky")

    def inverse(self, L: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the bordered rest block is inverted by BorderedFactor")


class _NoUpdate:
    name = "nested diagonal"
    nnz = 0.0


class BorderedCholesky(BlockedCholesky):
    """The blocked factor of a nested design with a diagonal rest block (see the module's
    docstring): ``pattern.diagonal_rows`` must cover every random-effects row of the rest."""

    def __init__(self, pattern: Pattern):
        lay = pattern.layout
        if pattern.diagonal_rows != lay.qr or not lay.lam_diagonal:
            raise ValueError("BorderedCholesky needs a first term nested in a single scalar term")
        self.layout = lay
        self.pattern = pattern
        self.update = _NoUpdate()  # type: ignore[assignment]
        self.rest = BorderedRest()
        self.blocks: Blocks | None = None
        rr = pattern.rr_keys
        self._diag_rows = rr // lay.m  # (every key of Z_r'Z_r is on the diagonal)

    def set_blocks(self, blocks: Blocks) -> None:
        lay = self.layout
        a = np.zeros(lay.qr)
        a[self._diag_rows] = blocks.rr
        self._a_diag = a
        self._a_xz = blocks.zr_xy.T  # (p + 1) x qr
        self._a_xx = blocks.xy
        self.blocks = blocks

    @property
    def work(self) -> float:
        lay = self.layout
        return 4.0 * self.pattern.nnz * lay.k1 + lay.l1 * lay.k1**3 + lay.qr * (lay.p + 1) ** 2

    def factor(self, lam: np.ndarray, workspace: bool = False) -> Factor:
        """The bordered factor at ``lam`` (``NotPositiveDefinite`` when a pivot is not positive;
        its blocks are sparse or small: no workspace)."""
        assert self.blocks is not None
        lam = np.asarray(lam, dtype=float)
        first = self.first_block(lam)
        lay, qr = self.layout, self.layout.qr
        F = (self.pattern.r1_matrix(self.blocks.r1) @ blockdiag(first[3])).tocsr()
        Fz, Fxy = F[:qr], F[qr:].toarray()
        s_diag = np.asarray(Fz.multiply(Fz).sum(axis=1)).ravel()  # (one school per column)
        s_xz = np.asarray(Fz @ Fxy.T).T
        lam_r = lam[lay.lam_src]
        dM = lam_r * lam_r * (self._a_diag - s_diag) + 1.0
        if not dM.min(initial=1.0) > 0:
            raise NotPositiveDefinite("rest block, nested diagonal")
        d = np.sqrt(dM)
        C = (self._a_xz - s_xz) * (lam_r / d)
        E = self._a_xx - Fxy @ Fxy.T - C @ C.T
        L22, info = sla.lapack.dpotrf(E, lower=1, clean=1)
        npx = lay.p + 1
        if info == npx:  # y lies in the column space: a zero residual
            L22[-1, -1] = 0.0
        elif info or not np.isfinite(L22).all():
            raise NotPositiveDefinite(f"rest block, pivot {qr + info}")
        tmats, L11, L11inv, B = first
        return BorderedFactor(
            lay, self.pattern, self.rest, lam, tmats, L11, L11inv, B, L22, self.blocks.r1, d=d, C=C
        )


@dataclass(frozen=True, eq=False)
class BorderedFactor(Factor):
    """The factor of a nested design: ``Lr`` holds only the factor of the rows of X and y
    (after the schools), ``d`` the schools' diagonal and ``C`` the rows of X and y below it."""

    d: np.ndarray = field(default_factory=lambda: np.zeros(0))
    C: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @cached_property
    def xy_rows(self) -> np.ndarray:
        return np.hstack([self.C, self.Lr])

    @property
    def diag_z(self) -> np.ndarray:
        return self.d

    @property
    def L_rr(self) -> np.ndarray:
        raise HmixError("the nested design's rest block is a diagonal: use rr_solve")

    def rr_solve(self, b: np.ndarray, trans: bool = False) -> np.ndarray:
        return b / self.d

    def vrr_lookup(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        inv2 = self.d**-2.0

        def vrr(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            return np.where(i == j, inv2[np.minimum(i, j)], 0.0)

        return vrr

    def cond_var_engine(self) -> list[np.ndarray]:
        """As ``Factor.cond_var_engine``: with a diagonal L_rr, Linv = diag(1/d), and each column
        of F has one random-effects entry (its level's school), so W'W's diagonal blocks are
        outer products of the columns' single values."""
        lay = self.layout
        V1 = np.einsum("jca,jcb->jab", self.L11inv, self.L11inv)
        scale = self.lam[lay.lam_src] / self.d
        W = sp.diags(scale) @ self.F[: lay.qr] @ blockdiag(self.L11inv)
        w = np.asarray(W.sum(axis=0)).reshape(lay.l1, lay.k1)
        V1 = V1 + np.einsum("ja,jb->jab", w, w)
        out = [V1, (self.d**-2.0).reshape(-1, 1, 1)]
        return [np.einsum("ab,jbc,dc->jad", T, V, T) for T, V in zip(self.tmats, out)]

    def leverages(self, *args: object, **kwargs: object) -> np.ndarray:
        raise HmixError(
            "leave-one-out leverages are not available for a nested design this large (its rest "
            "block is factored as a bordered diagonal); use hmix.crossval for grouped folds"
        )

    def solve_lt(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise HmixError(
            "leave-one-out for a GLMM is not available for a nested design this large (its rest "
            "block is factored as a bordered diagonal); use hmix.crossval for grouped folds"
        )
