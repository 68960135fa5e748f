"""What every prior shares: the base class and blme's way of printing numbers and matrices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError
from ..lmm import LOG2PI

__all__ = ["Prior", "LOG2PI"]


def _num(x: float) -> str:
    """A number as blme prints it (R's ``round(x, 4)`` pasted)."""
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    x = round(float(x), 4)
    return str(int(x)) if x == int(x) else f"{x:.15g}"


def _vec(values: Sequence[float], most: int) -> str:
    if len(values) == 1:
        return _num(values[0])
    shown = ", ".join(_num(v) for v in values[:most])
    return f"c({shown}{', ...' if len(values) > most else ''})"


def _matrix_text(S: np.ndarray) -> str:
    """blme's text of a scale matrix: the number, all 4 entries of a 2 x 2, or the first 3."""
    flat = list(np.asarray(S, dtype=float).ravel(order="F"))
    return _vec(flat, 4 if len(S) == 2 else 3)


def _scale_matrix(scale: Any, k: int, what: str) -> np.ndarray:
    """A k x k scale matrix from a number, a vector of k variances or a matrix."""
    S = np.asarray(scale, dtype=float)
    if S.ndim == 0:
        return float(S) * np.eye(k)
    if S.shape == (k,):
        return np.diag(S)
    if S.shape == (k, k) and np.allclose(S, S.T):
        return S
    raise DataError(
        f"the {what} scale must be a number, {k} variances or a symmetric {k} x {k} matrix for a "
        f"term with {k} columns, not an array of shape {S.shape}"
    )


def _logdet_pd(S: np.ndarray, what: str) -> float:
    try:
        return float(2 * np.log(np.diag(np.linalg.cholesky(S))).sum())
    except np.linalg.LinAlgError:
        raise DataError(f"the {what} scale matrix is not positive definite; give one that is") from None


def _log_abs_diag(T: np.ndarray) -> float:
    """sum_i log |T_ii| (log |T T'| / 2), -inf where a T_ii is 0. The covariance is even in the
    sign of each column of T (the GLMM's unbounded optimizer may flip one), so the densities see
    |T_ii|. Python floats over the k diagonal entries: this runs at every evaluation."""
    total = 0.0
    for i in range(len(T)):
        v = abs(float(T[i, i]))
        if v == 0.0:
            return -math.inf
        total += math.log(v)
    return total


def _times(coef: float, log_value: float) -> float:
    """coef * log_value, 0 when coef is (a flat density's log term at 0 is 0, not NaN)."""
    return 0.0 if coef == 0 else coef * log_value


class Prior:
    """Base class of the priors: ``describe`` gives blme's text of a resolved prior."""

    def describe(self) -> str:
        raise NotImplementedError
