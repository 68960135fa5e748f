"""Small dense kernels of the engine: batched tiny factorizations and LAPACK's triangular solves."""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .._threads import one_blas_thread
from ..errors import HmixError

__all__ = ["NotPositiveDefinite", "tri_solve", "blockdiag", "chol2", "batched_tri_inv", "pairs_of"]


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


def tri_solve(L: np.ndarray, b: np.ndarray, trans: bool = False) -> np.ndarray:
    """x with L x = b (or L'x = b) for lower-triangular L in either memory order: LAPACK's
    trtrs directly (scipy's solve_triangular adds checks that cost more than a small solve)."""
    if L.shape[0] == 0:  # (no fixed effects: LAPACK rejects an empty matrix)
        return np.zeros(np.shape(b))
    if np.ndim(b) == 2 and np.shape(b)[1] > 1 and L.shape[0] <= _ONE_THREAD_TRSM:
        # OpenBLAS spreads even a 2 x 2 solve with several right-hand sides over its threads,
        # and waking them on a busy machine costs a thousand times the solve on one thread
        with one_blas_thread():
            return _trtrs(L, b, trans)
    return _trtrs(L, b, trans)


_ONE_THREAD_TRSM = 256  # triangular solves with several right-hand sides up to this size: one thread


def _trtrs(L: np.ndarray, b: np.ndarray, trans: bool) -> np.ndarray:
    if L.flags.c_contiguous and not L.flags.f_contiguous:  # L' is Fortran-ordered, upper
        x, info = sla.lapack.dtrtrs(L.T, b, lower=0, trans=0 if trans else 1)
    else:
        x, info = sla.lapack.dtrtrs(L, b, lower=1, trans=1 if trans else 0)
    if info > 0:
        raise np.linalg.LinAlgError(f"singular triangular factor (pivot {info})")
    if info < 0:
        raise ValueError(f"LAPACK dtrtrs: illegal argument {-info}")
    return np.asarray(x)


def blockdiag(B: np.ndarray) -> sp.csr_matrix:
    """Sparse block-diagonal matrix of a (levels, k, k) array."""
    n, k = B.shape[0], B.shape[1]
    return sp.bsr_matrix((B, np.arange(n), np.arange(n + 1)), shape=(n * k, n * k)).tocsr()


def pairs_of(
    start_a: np.ndarray, count_a: np.ndarray, start_b: np.ndarray, count_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of an index from [start_a, start_a + count_a) and one from [start_b,
    start_b + count_b), group by group: ``(group, a, b)``, flat."""
    size = count_a * count_b
    grp = np.repeat(np.arange(len(size)), size)
    t = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    cb = count_b[grp]
    return grp, start_a[grp] + t // cb, start_b[grp] + t % cb


# per pair of a level's columns, (group, a, b); per column of the rows, (row, entry)
ColumnPairs = tuple[
    dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]
]


def column_pairs(indptr: np.ndarray, l1: int, k1: int, cols: np.ndarray) -> ColumnPairs:
    """Where the sums of ``Factor.row_inverse`` run, for a sparse first block column of CSC
    pointer ``indptr`` (q1 columns, l1 levels of k1): per pair (a, b), a <= b, of a level's
    columns, every pair of nonzeros of its columns a and b (``pairs_of``); per column a of
    ``cols`` (the rows' first-term columns), each row's nonzeros of that column ``(row, entry)``.
    They depend on the pattern alone: computed once for every factor that shares it."""
    start, count = indptr[:-1], np.diff(indptr)
    levels = np.arange(l1) * k1
    level_pairs = {
        (a, b): pairs_of(start[levels + a], count[levels + a], start[levels + b], count[levels + b])
        for a in range(k1)
        for b in range(a, k1)
    }
    n = len(cols)
    row_entries = []
    for a in range(k1):
        c = cols[:, a]
        grp, e, _ = pairs_of(start[c], count[c], np.zeros(n, np.int64), np.ones(n, np.int64))
        row_entries.append((grp, e))
    return level_pairs, row_entries


def chol2(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors of S_j + I and their inverses for a batch of 2 x 2 matrices S_j
    (closed forms: a tenth of LAPACK's batch overhead)."""
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


def batched_tri_inv(L: np.ndarray) -> np.ndarray:
    """Inverses of a batch of lower-triangular k x k matrices."""
    if L.shape[-1] == 1:
        return 1.0 / L
    eye = np.broadcast_to(np.eye(L.shape[-1]), L.shape)
    return np.linalg.solve(L, eye)
