"""Priors on a random-effects term's covariance: Wishart, inverse Wishart, gamma, inverse gamma.

Each is blme's: -2 log p as a polynomial part in the term's relative factor T, an exponential
part (times a power of sigma on the absolute scale), a coefficient of log sigma^2 and a constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.special import gammaln

from ..errors import DataError
from .base import Prior, _log_abs_diag, _logdet_pd, _matrix_text, _num, _scale_matrix, _times

__all__ = ["CovPrior", "Wishart", "InvWishart", "Gamma", "InvGamma"]


# ----- covariance priors --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CovPrior(Prior):
    """A prior on a term's covariance Sigma = sigma^2 T T' (T: the relative factor, k x k).

    -2 log p = polynomial(T) + exponential(T) * sigma^sigma_power + df_adjustment * log sigma^2
    + constant, blme's decomposition (the sigma parts only when ``common_scale`` is False).
    """

    common_scale: bool | None = field(default=None, kw_only=True)

    def resolve(self, k: int, glmm: bool) -> CovPrior:
        raise NotImplementedError

    def polynomial(self, T: np.ndarray) -> float:
        raise NotImplementedError

    def exponential(self, T: np.ndarray) -> float:
        return 0.0

    def gradient(self, T: np.ndarray) -> np.ndarray:
        """d(polynomial + exponential)/dT at sigma = 1 (the GLMM's quasi-Newton stage)."""
        raise NotImplementedError

    @property
    def sigma_power(self) -> int:
        return 0

    @property
    def df_adjustment(self) -> float:
        return 0.0

    @property
    def constant(self) -> float:
        return 0.0


@dataclass(frozen=True, eq=False)
class Wishart(CovPrior):
    """Wishart prior on a term's covariance (blme's default: df = k + 2.5, scale = inf).

    With an infinite scale the density is |Sigma|^((df - k - 1) / 2): it vanishes at singular
    covariances, so the estimate stays off the boundary, and for a scalar term it is
    ``Gamma(shape=2.5, rate=0)`` on the SD.

    Examples
    --------
    >>> import numpy as np
    >>> w = Wishart().resolve(k=2, glmm=False)
    >>> w.describe()
    'wishart(df = 4.5, scale = Inf, posterior.scale = cov, common.scale = TRUE)'
    >>> round(w.polynomial(np.array([[2.0, 0.0], [0.5, 1.0]])), 4)  # -3 log(2 * 1)
    -2.0794
    """

    df: float | None = None
    scale: Any = math.inf

    def resolve(self, k: int, glmm: bool) -> Wishart:
        df = k + 2.5 if self.df is None else float(self.df)
        if df <= k - 1:
            raise DataError(f"a Wishart prior on a term with {k} columns needs df > {k - 1}, not {df}")
        scale: Any = math.inf
        if not (np.ndim(self.scale) == 0 and math.isinf(float(self.scale))):
            scale = _scale_matrix(self.scale, k, "Wishart")
            _logdet_pd(scale, "Wishart")
        common = True if glmm or self.common_scale is None else bool(self.common_scale)
        return replace(self, df=df, scale=scale, common_scale=common)

    @property
    def _finite(self) -> bool:
        return isinstance(self.scale, np.ndarray)

    def polynomial(self, T: np.ndarray) -> float:
        assert self.df is not None
        return _times(-2.0 * (self.df - len(T) - 1.0), _log_abs_diag(T))

    def exponential(self, T: np.ndarray) -> float:
        return float(np.trace(np.linalg.solve(self.scale, T @ T.T))) if self._finite else 0.0

    def gradient(self, T: np.ndarray) -> np.ndarray:
        assert self.df is not None
        g = np.diag(-2.0 * (self.df - len(T) - 1.0) / np.diag(T))
        return g + 2.0 * np.linalg.solve(self.scale, T) if self._finite else g

    @property
    def sigma_power(self) -> int:
        return 2 if self._finite and not self.common_scale else 0

    @property
    def df_adjustment(self) -> float:
        assert self.df is not None
        k = len(self.scale) if self._finite else 0
        return -k * (self.df - k - 1.0) if self._finite and not self.common_scale else 0.0

    @property
    def constant(self) -> float:
        if not self._finite:
            return 0.0
        assert self.df is not None
        k = len(self.scale)
        lgam = sum(float(gammaln(0.5 * (self.df + 1.0 - i))) for i in range(1, k + 1))
        return (
            self.df * (k * math.log(2) + _logdet_pd(self.scale, "Wishart"))
            + 0.5 * k * (k - 1) * math.log(math.pi)
            + 2.0 * lgam
        )

    def describe(self) -> str:
        scale = _matrix_text(self.scale) if self._finite else "Inf"
        return (
            f"wishart(df = {_num(self.df or 0)}, scale = {scale}, posterior.scale = cov, "
            f"common.scale = {str(self.common_scale).upper()})"
        )


@dataclass(frozen=True, eq=False)
class InvWishart(CovPrior):
    """Inverse Wishart prior on a term's covariance (defaults: see the module's table).

    Examples
    --------
    >>> InvWishart().resolve(k=1, glmm=True).describe()
    'invwishart(df = 0.5, scale = 40, posterior.scale = cov, common.scale = TRUE)'
    """

    df: float | None = None
    scale: Any = None

    def resolve(self, k: int, glmm: bool) -> InvWishart:
        if self.df is None:
            df = k - 0.5 if glmm else k - 0.998
        else:
            df = float(self.df)
        if df <= k - 1:
            raise DataError(
                f"an inverse Wishart prior on a term with {k} columns needs df > {k - 1}, not {df}"
            )
        if self.scale is None:
            scale = np.eye(k) * (100.0 / (df + k + 1) if glmm else df + 0.1)
        else:
            scale = _scale_matrix(self.scale, k, "inverse Wishart")
        _logdet_pd(scale, "inverse Wishart")
        common = True if glmm or self.common_scale is None else bool(self.common_scale)
        return replace(self, df=df, scale=scale, common_scale=common)

    def polynomial(self, T: np.ndarray) -> float:
        assert self.df is not None
        return _times(2.0 * (self.df + len(T) + 1.0), _log_abs_diag(T))

    def exponential(self, T: np.ndarray) -> float:
        if (np.diag(T) == 0).any():
            return math.inf
        Ti = np.linalg.inv(T)
        return float(np.trace(self.scale @ Ti.T @ Ti))

    def gradient(self, T: np.ndarray) -> np.ndarray:
        assert self.df is not None
        Ti = np.linalg.inv(T)
        Sinv = Ti.T @ Ti
        return np.diag(2.0 * (self.df + len(T) + 1.0) / np.diag(T)) - 2.0 * Sinv @ self.scale @ Sinv @ T

    @property
    def sigma_power(self) -> int:
        return 0 if self.common_scale else -2

    @property
    def df_adjustment(self) -> float:
        assert self.df is not None
        k = len(self.scale)
        return 0.0 if self.common_scale else k * (self.df + k + 1.0)

    @property
    def constant(self) -> float:
        assert self.df is not None
        k = len(self.scale)
        lgam = sum(float(gammaln(0.5 * (self.df + 1.0 - i))) for i in range(1, k + 1))
        logdet = _logdet_pd(self.scale, "inverse Wishart")
        return self.df * (k * math.log(2) - logdet) + 0.5 * k * (k - 1) * math.log(math.pi) + 2.0 * lgam

    def describe(self) -> str:
        return (
            f"invwishart(df = {_num(self.df or 0)}, scale = {_matrix_text(self.scale)}, "
            f"posterior.scale = cov, common.scale = {str(self.common_scale).upper()})"
        )


@dataclass(frozen=True, eq=False)
class _ScalarPrior(CovPrior):
    """A gamma-family prior on a scalar term's SD (``posterior_scale="sd"``) or variance."""

    shape: float | None = None
    posterior_scale: str | None = field(default=None, kw_only=True)

    _name = ""
    _second = ""

    @property
    def second(self) -> float:
        return float(getattr(self, self._second))

    def _check(self, k: int) -> None:
        if k != 1:
            raise DataError(
                f"a {self._name} prior is for a term with one column (its SD or variance); this term "
                f"has {k}: give it a Wishart or InvWishart prior, or a prior per term of (x || g)"
            )
        assert self.shape is not None
        if self.shape < 0 or self.second < 0:
            raise DataError(f"a {self._name} prior needs shape >= 0 and {self._second} >= 0")
        if self.posterior_scale not in ("sd", "var"):
            raise DataError(f"posterior_scale must be 'sd' or 'var', not {self.posterior_scale!r}")

    def _power(self) -> int:
        return 1 if self.posterior_scale == "sd" else 2

    @property
    def constant(self) -> float:
        assert self.shape is not None
        if self.shape == 0 or self.second == 0:
            return 0.0
        return -2.0 * (self.shape * math.log(self.second) - float(gammaln(self.shape)))

    def text(self, common: bool = True) -> str:
        tail = f", common.scale = {str(self.common_scale).upper()}" if common else ""
        return (
            f"{self._name}(shape = {_num(self.shape or 0)}, {self._second} = {_num(self.second)}, "
            f"posterior.scale = {self.posterior_scale}{tail})"
        )

    def describe(self) -> str:
        return self.text()


@dataclass(frozen=True, eq=False)
class Gamma(_ScalarPrior):
    """Gamma prior on a scalar term's SD (default) or variance: shape 2.5, rate 0 by default.

    Examples
    --------
    >>> import numpy as np
    >>> g = Gamma().resolve(k=1, glmm=False)
    >>> g.describe()
    'gamma(shape = 2.5, rate = 0, posterior.scale = sd, common.scale = TRUE)'
    >>> round(g.polynomial(np.array([[1.14336869]])), 4)  # -3 log(theta): blme's -0.4019
    -0.4019
    """

    rate: float | None = None
    _name = "gamma"
    _second = "rate"

    def resolve(self, k: int, glmm: bool) -> Gamma:
        out = replace(
            self,
            shape=2.5 if self.shape is None else float(self.shape),
            rate=0.0 if self.rate is None else float(self.rate),
            posterior_scale=self.posterior_scale or "sd",
            common_scale=True if glmm or self.common_scale is None else bool(self.common_scale),
        )
        out._check(k)
        return out

    def polynomial(self, T: np.ndarray) -> float:
        assert self.shape is not None
        return _times(-2.0 * self._power() * (self.shape - 1.0), _log_abs_diag(T))

    def exponential(self, T: np.ndarray) -> float:
        return float(2.0 * self.second * abs(T[0, 0]) ** self._power())

    def gradient(self, T: np.ndarray) -> np.ndarray:
        assert self.shape is not None
        lam, a = T[0, 0], self._power()
        slope = 2.0 * a * self.second * np.sign(lam) * abs(lam) ** (a - 1)
        return np.array([[-2.0 * a * (self.shape - 1.0) / lam + slope]])

    @property
    def sigma_power(self) -> int:
        return 0 if self.common_scale or self.second == 0 else self._power()

    @property
    def df_adjustment(self) -> float:
        assert self.shape is not None
        return 0.0 if self.common_scale else -self._power() * (self.shape - 1.0)


@dataclass(frozen=True, eq=False)
class InvGamma(_ScalarPrior):
    """Inverse gamma prior on a scalar term's variance or SD, or on the residual variance.

    Examples
    --------
    >>> import numpy as np
    >>> g = InvGamma(shape=2, scale=1).resolve(k=1, glmm=False)
    >>> g.describe()
    'invgamma(shape = 2, scale = 1, posterior.scale = var, common.scale = TRUE)'
    >>> T = np.array([[0.648672642]])
    >>> round(g.polynomial(T) + g.exponential(T) + g.constant, 4)  # blme's penalty on Dyestuff
    -0.4408
    """

    scale: float | None = None
    _name = "invgamma"
    _second = "scale"

    def resolve(self, k: int, glmm: bool) -> InvGamma:
        shape = (0.5 if glmm else 0.001) if self.shape is None else float(self.shape)
        default_scale = 100.0 if glmm else shape + 0.05
        out = replace(
            self,
            shape=shape,
            scale=default_scale if self.scale is None else float(self.scale),
            posterior_scale=self.posterior_scale or ("sd" if glmm else "var"),
            common_scale=True if glmm or self.common_scale is None else bool(self.common_scale),
        )
        out._check(k)
        return out

    def polynomial(self, T: np.ndarray) -> float:
        assert self.shape is not None
        return _times(2.0 * self._power() * (self.shape + 1.0), _log_abs_diag(T))

    def exponential(self, T: np.ndarray) -> float:
        lam = float(abs(T[0, 0]))
        return math.inf if lam == 0 else 2.0 * self.second / lam ** self._power()

    def gradient(self, T: np.ndarray) -> np.ndarray:
        assert self.shape is not None
        lam, a = T[0, 0], self._power()
        slope = 2.0 * a * self.second * np.sign(lam) * abs(lam) ** (-a - 1)
        return np.array([[2.0 * a * (self.shape + 1.0) / lam - slope]])

    @property
    def sigma_power(self) -> int:
        return 0 if self.common_scale or self.second == 0 else -self._power()

    @property
    def df_adjustment(self) -> float:
        assert self.shape is not None
        return 0.0 if self.common_scale else self._power() * (self.shape + 1.0)
