"""Covariance structures of random-effects terms: theta <-> the term's relative covariance factor.

A term with k columns per level has covariance Sigma = sigma^2 T T' for every level, with T a
k x k lower-triangular "relative covariance factor". A structure says how its parameters theta
give T: which entries of T can be nonzero (its ``pattern``, the engine only ever touches those),
their values (``lam``), the parameters' bounds and names, and how the variances and
correlations are reported. Unstructured terms (lme4's default) take T's lower triangle as theta
itself. To add a structure, subclass ``CovarianceStructure`` and implement ``lam`` (and
``jacobian`` when lam is not linear in theta).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

__all__ = ["CovarianceStructure", "Unstructured", "Diagonal", "tril_indices"]


@cache
def tril_indices(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the lower triangle of a k x k matrix, column-major (lme4's order);
    read-only arrays shared by every caller (np.triu_indices costs tens of microseconds)."""
    cols, rows = np.triu_indices(k)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


@dataclass(frozen=True)
class CovarianceStructure(ABC):
    """How a term's parameters give its relative covariance factor T (k x k, lower triangular).

    Attributes
    ----------
    k : int
        Random effects per level (the term's columns).
    """

    k: int

    # ----- what a structure defines ------------------------------------------------------
    @property
    @abstractmethod
    def ntheta(self) -> int:
        """Number of parameters."""

    @property
    @abstractmethod
    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of the entries of T that can be nonzero, in the order of ``lam``."""

    @abstractmethod
    def lam(self, theta: np.ndarray) -> np.ndarray:
        """The values of T at ``pattern`` for the term's parameters ``theta``."""

    @abstractmethod
    def theta_names(self, group: str, names: tuple[str, ...]) -> list[str]:
        """Names of the parameters, lme4's style (``Subject.(Intercept)``)."""

    @property
    @abstractmethod
    def lower(self) -> np.ndarray:
        """Lower bounds of theta."""

    @property
    @abstractmethod
    def scale_mask(self) -> np.ndarray:
        """Which parameters are scales (relative standard deviations, >= 0): the singularity
        check and the snapping of tiny values to zero look at these."""

    @abstractmethod
    def start(self, ratios: np.ndarray) -> np.ndarray:
        """Starting theta from each column's moment estimate of its SD relative to sigma."""

    # ----- derived -----------------------------------------------------------------------
    @property
    def upper(self) -> np.ndarray:
        """Upper bounds of theta."""
        return np.full(self.ntheta, np.inf)

    @property
    def linear(self) -> bool:
        """Whether ``lam`` is the identity map of theta (then the Jacobian is the identity)."""
        return False

    def tmat(self, theta: np.ndarray) -> np.ndarray:
        """T as a dense k x k array."""
        if self.k == 1:  # (a fresh 1 x 1 array: PIRLS builds these at every step)
            return np.array(self.lam(theta), dtype=float).reshape(1, 1)
        t = np.zeros((self.k, self.k))
        t[self.pattern] = self.lam(theta)
        return t

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d lam / d theta, (len(pattern), ntheta): central differences unless overridden."""
        theta = np.asarray(theta, dtype=float)
        h = 1e-6 * np.maximum(np.abs(theta), 1.0)
        J = np.empty((len(self.pattern[0]), self.ntheta))
        for i in range(self.ntheta):
            up, down = theta.copy(), theta.copy()
            up[i] += h[i]
            down[i] -= h[i]
            J[:, i] = (self.lam(up) - self.lam(down)) / (2 * h[i])
        return J

    def rectify(self, theta: np.ndarray) -> np.ndarray:
        """An equivalent theta (the same T T') in the canonical region: the covariance is even in
        the sign of each column of T, which an unbounded optimizer may flip."""
        return np.asarray(theta, dtype=float)

    def theta_scale(self, col_scale: np.ndarray) -> np.ndarray:
        """Multipliers that put theta on the scale of the term's columns of Z: with columns of
        typical size ``col_scale``, theta times these is what theta would be for columns of
        size 1 (the optimizers work there, so that a predictor's units do not matter). Ones
        unless a structure says otherwise."""
        return np.ones(self.ntheta)

    def covariance(self, theta: np.ndarray) -> np.ndarray:
        """The relative covariance T T' (k x k)."""
        T = self.tmat(theta)
        return T @ T.T

    # ----- lme4's sd/cor scale (profile intervals, the bootstrap) --------------------------
    @property
    def sdcor_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of each variance parameter on the sd/cor scale: a standard deviation on
        the diagonal, a correlation below it."""
        return self.pattern

    def sdcor_names(self, group: str, names: tuple[str, ...]) -> list[str]:
        """lme4's names: ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``."""
        rows, cols = self.sdcor_pattern
        return [
            f"sd_{names[r]}|{group}" if r == c else f"cor_{names[r]}.{names[c]}|{group}"
            for r, c in zip(rows, cols)
        ]

    def sdcor(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        """The variance parameters on the sd/cor scale (absolute: times sigma)."""
        S = sigma * sigma * self.covariance(theta)
        sd = np.sqrt(np.diag(S))
        rows, cols = self.sdcor_pattern
        with np.errstate(invalid="ignore", divide="ignore"):
            cor = S / np.outer(sd, sd)
        return np.where(rows == cols, sd[rows], np.nan_to_num(cor[rows, cols]))

    @abstractmethod
    def from_sdcor(self, values: np.ndarray, sigma: float) -> np.ndarray:
        """theta from the sd/cor scale (raises NotPositiveDefinite for an impossible one)."""

    def sdcor_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the sd/cor parameters: SDs in [0, inf), correlations in [-1, 1]."""
        rows, cols = self.sdcor_pattern
        diag = rows == cols
        return np.where(diag, 0.0, -1.0), np.where(diag, np.inf, 1.0)


@dataclass(frozen=True)
class _EntriesOfT(CovarianceStructure):
    """Structures whose theta is T's values at the pattern themselves (lam = theta)."""

    @property
    def linear(self) -> bool:
        return True

    def lam(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta, dtype=float)

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        return np.eye(self.ntheta)

    def theta_scale(self, col_scale: np.ndarray) -> np.ndarray:
        """Row r of T multiplies column r of Z: (Z diag(1/s)) (diag(s) T) = Z T."""
        return np.asarray(col_scale, dtype=float)[self.pattern[0]]


@dataclass(frozen=True)
class Unstructured(_EntriesOfT):
    """lme4's general term: theta is the lower triangle of T, column-major.

    Examples
    --------
    >>> from hmix.covariance import Unstructured
    >>> Unstructured(2).tmat([1.0, 0.5, 2.0]).tolist()
    [[1.0, 0.0], [0.5, 2.0]]
    """

    @property
    def ntheta(self) -> int:
        return self.k * (self.k + 1) // 2

    @property
    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        return tril_indices(self.k)

    @cached_property
    def scale_mask(self) -> np.ndarray:
        rows, cols = self.pattern
        return np.asarray(rows == cols)

    @cached_property
    def lower(self) -> np.ndarray:
        return np.where(self.scale_mask, 0.0, -np.inf)

    def start(self, ratios: np.ndarray) -> np.ndarray:
        out = np.zeros(self.ntheta)
        out[self.scale_mask] = ratios
        return out

    def rectify(self, theta: np.ndarray) -> np.ndarray:
        T = self.tmat(theta)
        T[:, np.diag(T) < 0] *= -1
        return T[self.pattern]

    def theta_names(self, group: str, names: tuple[str, ...]) -> list[str]:
        rows, cols = self.pattern
        return [
            f"{group}.{names[r]}" if r == c else f"{group}.{names[r]}.{names[c]}" for r, c in zip(rows, cols)
        ]

    def from_sdcor(self, values: np.ndarray, sigma: float) -> np.ndarray:
        """T = D chol(R) / sigma."""
        from .engine import NotPositiveDefinite

        rows, cols = self.pattern
        diag = rows == cols
        sd = np.zeros(self.k)
        sd[rows[diag]] = values[diag]
        R = np.eye(self.k)
        R[rows[~diag], cols[~diag]] = values[~diag]
        R[cols[~diag], rows[~diag]] = values[~diag]
        try:
            C = np.linalg.cholesky(R)
        except np.linalg.LinAlgError:
            raise NotPositiveDefinite("correlation matrix") from None
        return (sd[:, None] * C / sigma)[rows, cols]


@dataclass(frozen=True)
class Diagonal(_EntriesOfT):
    """Independent random effects, one variance each: T = diag(theta).

    Examples
    --------
    >>> from hmix.covariance import Diagonal
    >>> Diagonal(2).tmat([1.0, 2.0]).tolist()
    [[1.0, 0.0], [0.0, 2.0]]
    """

    @property
    def ntheta(self) -> int:
        return self.k

    @cached_property
    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        d = np.arange(self.k)
        d.flags.writeable = False
        return d, d

    @property
    def scale_mask(self) -> np.ndarray:
        return np.ones(self.k, dtype=bool)

    @property
    def lower(self) -> np.ndarray:
        return np.zeros(self.k)

    def start(self, ratios: np.ndarray) -> np.ndarray:
        return np.asarray(ratios, dtype=float).copy()

    def rectify(self, theta: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(theta, dtype=float))

    def theta_names(self, group: str, names: tuple[str, ...]) -> list[str]:
        return [f"{group}.{n}" for n in names]

    def from_sdcor(self, values: np.ndarray, sigma: float) -> np.ndarray:
        return np.asarray(values, dtype=float) / sigma
