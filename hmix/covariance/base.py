"""The base of the covariance structures, and the structures whose theta are entries of T
(unstructured, diagonal) or one common scale (``ScaledIdentity``). See ``hmix.covariance``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache, cached_property
from typing import ClassVar

import numpy as np

__all__ = [
    "CovarianceStructure",
    "LevelEstimates",
    "Unstructured",
    "Diagonal",
    "ScaledIdentity",
    "tril_indices",
]


@dataclass(frozen=True, eq=False)
class LevelEstimates:
    """What the data say about a term's columns level by level (the moment start's raw material).

    Attributes
    ----------
    values : ndarray, shape (levels, k)
        Each level's least-squares estimate of each column's coefficient, from the residuals of
        the fixed effects (NaN where a level cannot estimate it).
    sampling : ndarray, shape (k,)
        The mean over levels of each column's 1 / sum(w z^2): the estimates' sampling variance
        over sigma^2.
    disjoint : bool
        Whether no row has two of the columns (a factor's indicators): then the estimates'
        noise is independent between columns, and their covariances estimate the random
        effects' without bias.
    within : float
        For disjoint columns, the residual variance within the levels' cells (all the term's
        columns fitted): an estimate of sigma^2; NaN where no cell has two observations.
    """

    values: np.ndarray
    sampling: np.ndarray
    disjoint: bool = False
    within: float = float("nan")

    def covariance(self) -> np.ndarray | None:
        """The covariance of the columns' estimates over the levels that estimate all of them
        (None with fewer than three)."""
        complete = self.values[np.isfinite(self.values).all(axis=1)]
        return np.cov(complete, rowvar=False) if len(complete) >= 3 else None


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
    kind: ClassVar[str]  # the formula's name of the structure (``us``, ``diag``, ``cs``, ``ar1``)

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
    def start(self, ratios: np.ndarray, estimates: LevelEstimates | None = None) -> np.ndarray:
        """Starting theta from each column's moment estimate of its SD relative to sigma; a
        structure with a correlation parameter starts it from ``estimates`` (the columns'
        per-level estimates)."""

    # ----- derived -----------------------------------------------------------------------
    @property
    def upper(self) -> np.ndarray:
        """Upper bounds of theta."""
        return np.full(self.ntheta, np.inf)

    @property
    def linear(self) -> bool:
        """Whether ``lam`` is the identity map of theta (then the Jacobian is the identity)."""
        return False

    @property
    def linear_covariance(self) -> bool:
        """Whether the covariance is a linear function of free entries (one per element of the
        pattern): what Kenward-Roger's method assumes (unstructured and diagonal terms)."""
        return False

    @property
    def homogeneous(self) -> bool:
        """Whether every column has the same variance (one variance parameter)."""
        return False

    @property
    def separates_residual(self) -> bool:
        """Whether the residual variance stays identified beside a random effect per observation:
        when the term's covariance plus c I is outside the structure's family for c != 0."""
        return False

    @property
    def has_rho(self) -> bool:
        """Whether the structure has one correlation parameter rho (compound symmetry, AR(1))."""
        return False

    def rho(self, theta: np.ndarray) -> float | None:
        """The structure's correlation parameter (compound symmetry, AR(1)); None without one."""
        return None

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

    def sdcor_wald(self, theta: np.ndarray, vcov: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
        """Wald intervals (lower, upper) of the sd/cor parameters given theta's covariance and the
        normal quantile: none (NaN) unless a structure overrides it, as lme4 gives none."""
        n = len(self.sdcor_pattern[0])
        return np.full(n, np.nan), np.full(n, np.nan)


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

    kind: ClassVar[str] = "us"

    @property
    def linear_covariance(self) -> bool:
        return True

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

    def start(self, ratios: np.ndarray, estimates: LevelEstimates | None = None) -> np.ndarray:
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
        from ..engine import NotPositiveDefinite

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

    kind: ClassVar[str] = "diag"

    @property
    def linear_covariance(self) -> bool:
        return True

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

    def start(self, ratios: np.ndarray, estimates: LevelEstimates | None = None) -> np.ndarray:
        return np.asarray(ratios, dtype=float).copy()

    def rectify(self, theta: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(theta, dtype=float))

    def theta_names(self, group: str, names: tuple[str, ...]) -> list[str]:
        return [f"{group}.{n}" for n in names]

    def from_sdcor(self, values: np.ndarray, sigma: float) -> np.ndarray:
        return np.asarray(values, dtype=float) / sigma


@dataclass(frozen=True)
class ScaledIdentity(CovarianceStructure):
    """Independent random effects with one common variance (``diag(x | g, hom = TRUE)``):
    T = theta * I.

    Examples
    --------
    >>> from hmix.covariance import ScaledIdentity
    >>> ScaledIdentity(2).tmat([3.0]).tolist()
    [[3.0, 0.0], [0.0, 3.0]]
    """

    kind: ClassVar[str] = "diag"

    @property
    def ntheta(self) -> int:
        return 1

    @property
    def homogeneous(self) -> bool:
        return True

    @cached_property
    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        d = np.arange(self.k)
        d.flags.writeable = False
        return d, d

    def lam(self, theta: np.ndarray) -> np.ndarray:
        return np.full(self.k, float(np.asarray(theta, dtype=float)[0]))

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        return np.ones((self.k, 1))

    @property
    def scale_mask(self) -> np.ndarray:
        return np.ones(1, dtype=bool)

    @property
    def lower(self) -> np.ndarray:
        return np.zeros(1)

    def start(self, ratios: np.ndarray, estimates: LevelEstimates | None = None) -> np.ndarray:
        return np.array([_common_sd(ratios)])

    def rectify(self, theta: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(theta, dtype=float))

    def theta_scale(self, col_scale: np.ndarray) -> np.ndarray:
        return np.array([_common_sd(col_scale)])

    def theta_names(self, group: str, names: tuple[str, ...]) -> list[str]:
        return [f"{group}.{names[0]}"]

    @property
    def sdcor_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)

    def from_sdcor(self, values: np.ndarray, sigma: float) -> np.ndarray:
        return np.asarray(values, dtype=float) / sigma


def _common_sd(ratios: np.ndarray) -> float:
    """One SD for columns whose own SDs (moment estimates, sizes) are ``ratios``: their root mean
    square."""
    return float(np.sqrt(np.mean(np.square(ratios))))
