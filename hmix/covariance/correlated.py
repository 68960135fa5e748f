"""Structures with one correlation parameter: compound symmetry and AR(1), each T = diag(s) C with
C the Cholesky factor of the correlation matrix in closed form. See ``hmix.covariance``."""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from .base import CovarianceStructure, LevelEstimates, _common_sd, tril_indices

__all__ = ["CompoundSymmetry", "AR1"]


_RHO_MARGIN = 1e-12


@dataclass(frozen=True)
class _ScaledCorrelation(CovarianceStructure):
    """T = diag(s) C: relative SDs s (one per column, or one for all with ``hom``) times the
    Cholesky factor C of a correlation matrix with one parameter rho; theta = (s, x), rho a
    function of an unbounded x (glmmTMB's transforms).

    x is unbounded rather than rho bounded because the GLMM's quasi-Newton stage steps theta
    without bounds (T T' is even in the sign of s, so s needs none), and every x gives a
    correlation matrix; C and its derivative are written in x, which keeps them exact where rho
    rounds to its bound.
    """

    hom: bool = False

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"{self.kind}() models correlations: it needs two or more columns, not {self.k}")

    @abstractmethod
    def chol(self, x: float, derivative: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The correlation matrix's Cholesky factor C (k x k) at x, and dC/dx when asked."""

    @abstractmethod
    def chol_pattern(self, x: float) -> np.ndarray:
        """C's values at ``pattern`` (what ``lam`` scales: the engine's every evaluation, so
        without forming C)."""

    @abstractmethod
    def rho_of(self, x: float) -> float:
        """rho from the unbounded parameter."""

    @abstractmethod
    def x_of(self, rho: float) -> float:
        """The unbounded parameter from rho (inside its bounds)."""

    @property
    @abstractmethod
    def rho_lower(self) -> float:
        """The lowest rho that gives a positive semi-definite matrix."""

    @property
    def nsd(self) -> int:
        return 1 if self.hom else self.k

    @property
    def ntheta(self) -> int:
        return self.nsd + 1

    @property
    def homogeneous(self) -> bool:
        return self.hom

    @property
    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        return tril_indices(self.k)

    @cached_property
    def scale_mask(self) -> np.ndarray:
        return np.arange(self.ntheta) < self.nsd

    @cached_property
    def lower(self) -> np.ndarray:
        return np.where(self.scale_mask, 0.0, -np.inf)

    def _sd_rows(self, theta: np.ndarray) -> np.ndarray | float:
        """Each pattern entry's row SD (T = diag(s) C scales C's rows)."""
        return float(theta[0]) if self.hom else np.asarray(theta, dtype=float)[self.pattern[0]]

    def lam(self, theta: np.ndarray) -> np.ndarray:
        return self._sd_rows(theta) * self.chol_pattern(float(theta[-1]))

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        C, dC = self.chol(float(theta[-1]), derivative=True)
        assert dC is not None
        rows, cols = self.pattern
        J = np.zeros((len(rows), self.ntheta))
        if self.hom:
            J[:, 0] = C[rows, cols]
        else:
            J[np.arange(len(rows)), rows] = C[rows, cols]
        J[:, -1] = self._sd_rows(theta) * dC[rows, cols]
        return J

    @cached_property
    def _j(self) -> np.ndarray:
        return np.arange(1.0, self.k)

    @property
    def has_rho(self) -> bool:
        return True

    def rho(self, theta: np.ndarray) -> float:
        return self.rho_of(float(np.asarray(theta, dtype=float)[-1]))

    def start(self, ratios: np.ndarray, estimates: LevelEstimates | None = None) -> np.ndarray:
        moment = None if estimates is None else self._moment_start(estimates)
        if moment is not None:
            return moment
        sd = [_common_sd(ratios)] if self.hom else list(ratios)
        return np.array([*sd, self.x_of(self._rho_start(estimates))])

    def _moment_start(self, estimates: LevelEstimates) -> np.ndarray | None:
        """theta from the covariance V of the columns' per-level estimates, when the columns
        come from separate rows (their noise independent): V_ab estimates the effects'
        covariance off the diagonal, V_aa its variance plus sigma^2 times the sampling factor,
        with sigma^2 from the variance within cells (cs_sim: 103 evaluations -> 63). None
        where that cannot be had."""
        V = estimates.covariance() if estimates.disjoint else None
        sigma2 = estimates.within
        if V is None or not sigma2 > 0:
            return None
        tau2 = np.diag(V) - sigma2 * estimates.sampling
        if not (tau2 > 0).all():
            return None
        tau = np.sqrt(tau2)
        corr = V / np.outer(tau, tau)
        rho = self.rho_from_correlations(corr)
        if not np.isfinite(rho):
            return None
        sd = tau / math.sqrt(sigma2)
        return np.r_[
            [_common_sd(sd)] if self.hom else sd, self.x_of(float(np.clip(rho, 0.9 * self.rho_lower, 0.9)))
        ]

    def _rho_start(self, estimates: LevelEstimates | None) -> float:
        """rho from the correlations of the columns' per-level estimates, inside its bounds.

        Not 0 where the data say otherwise: with one observation per level and column, at
        rho = 0 the term is a second residual and the deviance is flat in its SD, a ridge the
        optimizer can stall on (an AR(1) with a residual is identified through rho alone)."""
        V = None if estimates is None else estimates.covariance()
        if V is None:
            return 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.sqrt(np.diag(V))
            corr = V / np.outer(sd, sd)
        rho = self.rho_from_correlations(corr)
        if not np.isfinite(rho):
            return 0.0
        return float(np.clip(rho, 0.9 * self.rho_lower, 0.9))

    @abstractmethod
    def rho_from_correlations(self, corr: np.ndarray) -> float:
        """A moment estimate of rho from a correlation matrix of the columns (NaN: none)."""

    def rectify(self, theta: np.ndarray) -> np.ndarray:
        out = np.array(theta, dtype=float)
        out[: self.nsd] = np.abs(out[: self.nsd])
        return out

    def theta_scale(self, col_scale: np.ndarray) -> np.ndarray:
        """Row r of T = diag(s) C multiplies column r of Z, so s_r scales with it (one s: with
        the columns' common size); rho does not."""
        col_scale = np.asarray(col_scale, dtype=float)
        return np.append([_common_sd(col_scale)] if self.hom else col_scale, 1.0)

    def theta_names(self, group: str, names: tuple[str, ...]) -> list[str]:
        return [f"{group}.{n}" for n in names[: self.nsd]] + [f"{group}.{self.kind}"]

    # rho is reported as the correlation of the first two columns (for AR(1): of neighbours)
    @cached_property
    def sdcor_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        d = np.arange(self.nsd)
        return np.append(d, 1), np.append(d, 0)

    def sdcor(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        return np.append(sigma * np.abs(theta[: self.nsd]), self.rho(theta))

    def from_sdcor(self, values: np.ndarray, sigma: float) -> np.ndarray:
        from ..engine import NotPositiveDefinite

        values = np.asarray(values, dtype=float)
        rho = float(values[-1])
        if not self.rho_lower <= rho <= 1.0:
            raise NotPositiveDefinite(f"{self.kind} correlation {rho} outside [{self.rho_lower:g}, 1]")
        # a bound itself (a singular matrix, where a profile may look) is x = +-inf: its limit is
        # taken just inside
        rho = min(max(rho, self.rho_lower + _RHO_MARGIN), 1.0 - _RHO_MARGIN)
        return np.append(values[:-1] / sigma, self.x_of(rho))

    def sdcor_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.append(np.zeros(self.nsd), self.rho_lower),
            np.append(np.full(self.nsd, np.inf), 1.0),
        )

    def sdcor_wald(self, theta: np.ndarray, vcov: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
        """rho's interval is the Wald interval of x mapped through rho(x), as glmmTMB's; the SDs
        get none (NaN), as in lme4."""
        lo, hi = super().sdcor_wald(theta, vcov, z)
        x, se = float(theta[-1]), float(np.sqrt(vcov[-1, -1]))
        lo[-1], hi[-1] = self.rho_of(x - z * se), self.rho_of(x + z * se)
        return lo, hi


@dataclass(frozen=True)
class CompoundSymmetry(_ScaledCorrelation):
    """glmmTMB's ``cs``: every pair of columns has the same correlation rho; a variance per column
    (one for all with ``hom``). theta = (relative SDs, x), rho = (1 + a) plogis(x) - a with
    a = 1/(k - 1), so that rho stays above -1/(k - 1), where R = (1 - rho) I + rho 11' stops
    being positive definite.

    C = chol(R) has a closed form: column j (from 0) has 1 (j = 0) or
    sqrt((1 - rho)(1 + j rho) / (1 + (j - 1) rho)) on the diagonal, and below it rho (j = 0) or
    rho sqrt((1 - rho) / ((1 + (j - 1) rho)(1 + j rho))) in every row.

    Examples
    --------
    >>> import numpy as np
    >>> from hmix.covariance import CompoundSymmetry
    >>> cs = CompoundSymmetry(3)
    >>> theta = np.array([1.0, 2.0, 1.0, cs.x_of(0.5)])
    >>> T = cs.tmat(theta)
    >>> (T @ T.T).round(6).tolist()
    [[1.0, 1.0, 0.5], [1.0, 4.0, 1.0], [0.5, 1.0, 1.0]]
    """

    kind: ClassVar[str] = "cs"

    @property
    def _a(self) -> float:
        return 1.0 / (self.k - 1)

    @property
    def rho_lower(self) -> float:
        return -self._a

    def rho_of(self, x: float) -> float:
        return (1.0 + self._a) * _expit(x) - self._a

    def rho_from_correlations(self, corr: np.ndarray) -> float:
        off = corr[~np.eye(self.k, dtype=bool)]
        off = off[np.isfinite(off)]
        return float(off.mean()) if len(off) else np.nan

    def x_of(self, rho: float) -> float:
        p = (rho + self._a) / (1.0 + self._a)
        return float(np.log(p) - np.log1p(-p))

    def _columns_at(self, x: float) -> tuple[float, float, float, float, np.ndarray, np.ndarray]:
        """p = plogis(x), rho, 1 - rho, d rho / dx, and per column j >= 1: D0 = 1 + (j - 1) rho
        and D1 = 1 + j rho."""
        A = 1.0 + self._a
        p, q = _expit(x), _expit(-x)
        rho = A * p - self._a
        return p, rho, A * q, A * p * q, 1.0 + (self._j - 1.0) * rho, 1.0 + self._j * rho

    def _diag_below(self, x: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each column's diagonal value and the value under it; sqrt((1 - rho) / (D0 D1))."""
        _, rho, u, _, D0, D1 = self._columns_at(x)  # (u = 1 - rho without cancellation)
        g = np.sqrt(u / (D0 * D1))
        return np.concatenate(([1.0], np.sqrt(u * D1 / D0))), np.concatenate(([rho], rho * g)), g

    def chol_pattern(self, x: float) -> np.ndarray:
        # column by column in plain floats: a few columns cost less so than in numpy calls
        A, a, k = 1.0 + self._a, self._a, self.k
        rho, u = A * _expit(x) - a, A * _expit(-x)
        values = [1.0] + [rho] * (k - 1)
        for j in range(1, k):
            D0, D1 = 1.0 + (j - 1) * rho, 1.0 + j * rho
            values.append(math.sqrt(u * D1 / D0))
            values += [rho * math.sqrt(u / (D0 * D1))] * (k - 1 - j)
        return np.array(values)

    def chol(self, x: float, derivative: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        diag, below, g = self._diag_below(x)
        C = _columns(diag, below)
        if not derivative:
            return C, None
        p, _, _, drho, D0, D1 = self._columns_at(x)
        j = self._j
        ddiag = np.r_[0.0, diag[1:] * 0.5 * (-p + drho * (j / D1 - (j - 1.0) / D0))]
        dbelow = np.r_[drho, drho * g + below[1:] * 0.5 * (-p - drho * ((j - 1.0) / D0 + j / D1))]
        return C, _columns(ddiag, dbelow)


@dataclass(frozen=True)
class AR1(_ScaledCorrelation):
    """First-order autoregressive correlation over the columns, taken as equally spaced occasions:
    corr(i, j) = rho^|i - j|, with one variance (``hom``, the default, as glmmTMB's ``ar1``) or
    one per occasion. theta = (relative SD(s), x), rho = x / sqrt(1 + x^2) (glmmTMB's).

    C = chol(R) has a closed form: C[i, 0] = rho^i and C[i, j] = rho^(i - j) sqrt(1 - rho^2) for
    1 <= j <= i.

    Examples
    --------
    >>> import numpy as np
    >>> from hmix.covariance import AR1
    >>> ar = AR1(3)
    >>> T = ar.tmat(np.array([2.0, ar.x_of(0.5)]))
    >>> (T @ T.T).round(6).tolist()
    [[4.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 4.0]]
    """

    kind: ClassVar[str] = "ar1"
    hom: bool = True

    @property
    def separates_residual(self) -> bool:
        # with three occasions or more, rho^|i - j| fixes the covariance's diagonal from its
        # off-diagonal entries, so a residual ("nugget") is told apart; with two it is not
        return self.k >= 3

    @property
    def rho_lower(self) -> float:
        return -1.0

    def rho_of(self, x: float) -> float:
        return x / math.sqrt(1.0 + x * x)

    def start(self, ratios: np.ndarray, estimates: LevelEstimates | None = None) -> np.ndarray:
        """As other structures (``_moment_start``); with one observation per level and occasion
        (no variance within cells) the covariances between occasions, free of noise, still give
        tau^2 rho at lag 1 and tau^2 rho^2 at lag 2, so rho and tau^2, and the variances' excess
        over tau^2 sigma^2 (the SD ratios of the columns taken one by one miss it: ar1_sim's
        fit takes 37 evaluations instead of 66)."""
        moment = None if estimates is None else self._moment_start(estimates)
        if moment is not None:
            return moment
        V = None if estimates is None or self.k < 3 or not estimates.disjoint else estimates.covariance()
        if V is not None:
            lag1, lag2 = np.diagonal(V, 1).mean(), np.diagonal(V, 2).mean()
            if 0 < lag2 < lag1:
                rho = lag2 / lag1
                tau2 = lag1 / rho
                sigma2 = (np.diag(V).mean() - tau2) / estimates.sampling.mean()  # type: ignore[union-attr]
                if sigma2 > 0 and rho < 0.95:
                    return np.r_[np.full(self.nsd, math.sqrt(tau2 / sigma2)), self.x_of(rho)]
        return super().start(ratios, estimates)

    def rho_from_correlations(self, corr: np.ndarray) -> float:
        # lag 2 over lag 1: the noise in the estimates shrinks both alike
        lag1, lag2 = (np.nanmean(np.diagonal(corr, lag)) if self.k > lag else np.nan for lag in (1, 2))
        if np.isfinite(lag2) and lag1 > 0.05 and lag2 > 0:
            return float(lag2 / lag1)
        return float(lag1)

    def x_of(self, rho: float) -> float:
        return float(rho / np.sqrt(1.0 - rho * rho))

    @cached_property
    def _lags(self) -> np.ndarray:
        i, j = np.indices((self.k, self.k))
        return np.where(i >= j, i - j, 0)

    @cached_property
    def _pattern_lags(self) -> tuple[np.ndarray, np.ndarray]:
        """Each pattern entry's lag i - j, and whether it lies in the first column."""
        rows, cols = self.pattern
        return (rows - cols).astype(float), (cols == 0).astype(float)

    def chol_pattern(self, x: float) -> np.ndarray:
        w = 1.0 / math.sqrt(1.0 + x * x)
        lags, first = self._pattern_lags
        return (x * w) ** lags * (w + first * (1.0 - w))

    def chol(self, x: float, derivative: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        w = 1.0 / np.sqrt(1.0 + x * x)  # sqrt(1 - rho^2), exact for large |x|
        rho, lags = x * w, self._lags
        lower = np.tri(self.k, dtype=bool)
        powers = np.where(lower, rho**lags, 0.0)
        f = np.r_[1.0, np.full(self.k - 1, w)]
        C = powers * f
        if not derivative:
            return C, None
        dpowers = np.where(lower & (lags > 0), lags * rho ** np.maximum(lags - 1, 0), 0.0) * w**3
        df = np.r_[0.0, np.full(self.k - 1, -x * w**3)]
        return C, dpowers * f + powers * df


def _expit(x: float) -> float:
    """The logistic function, without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _columns(diag: np.ndarray, below: np.ndarray) -> np.ndarray:
    """A lower-triangular matrix whose column j has ``diag[j]`` on the diagonal and ``below[j]``
    in every row under it."""
    k = len(diag)
    i, j = np.indices((k, k))
    return np.where(i == j, diag[j], np.where(i > j, below[j], 0.0))
