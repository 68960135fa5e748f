"""Families with a dispersion parameter estimated with the model: negative binomial (NB2) and
Gamma, as glmmTMB's ``nbinom2`` and ``Gamma``.

The dispersion enters the variance function, the deviance and the normalizing constants, so
that -2 log p(y | mu) = deviance(mu) + constant for every value of it; the GLMM objective sets it
(``with_dispersion``) before PIRLS and optimizes its logarithm with the other parameters. Their
Laplace approximation uses the observed information at the modes, as glmmTMB's does (lme4's
``glmer.nb`` uses Fisher's: its -2 log-likelihood differs by 0.1 to 0.2 on grouseticks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
from scipy.special import digamma, gammaln, xlogy

from ..errors import DataError
from .base import Family
from .lme4 import check_counts

__all__ = ["NegativeBinomial", "Gamma"]


def _positive(value: float | None, what: str) -> None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise DataError(f"{what} must be a positive number, not {value!r}")


@dataclass(frozen=True, eq=False, repr=False)
class NegativeBinomial(Family):
    """Negative binomial counts with variance mu + mu^2 / theta (NB2, glmmTMB's ``nbinom2``).

    Parameters
    ----------
    link : str, default "log"
    theta : float, optional
        The shape ("size"); estimated by maximum likelihood with the other parameters when not
        given (``family="negative_binomial"``), fixed when given.

    Examples
    --------
    >>> import numpy as np, hmix
    >>> nb = hmix.NegativeBinomial(theta=2.0)
    >>> nb.variance(np.array([1.0, 4.0])).tolist(), nb.sigma
    ([1.5, 12.0], 2.0)
    """

    theta: float | None = None

    name: ClassVar[str] = "negative_binomial"
    links: ClassVar[tuple[str, ...]] = ("log",)
    observed_laplace: ClassVar[bool] = True
    _EPS: ClassVar[float] = 1e-10

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.theta, "the negative binomial's theta")

    @property
    def canonical(self) -> bool:
        return False  # (NB2's canonical link is log(mu / (mu + theta)), not log)

    @property
    def free_dispersion(self) -> bool:
        return self.theta is None

    @property
    def dispersion(self) -> float | None:
        return self.theta

    def with_dispersion(self, value: float) -> NegativeBinomial:
        return replace(self, theta=float(value))

    def dispersion_start(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> float:
        """theta from the moments of a Poisson fit: sum mu^2 / sum((y - mu)^2 - mu), clipped."""
        excess = float(np.sum(wt * ((y - mu) ** 2 - mu)))
        return float(np.clip(np.sum(wt * mu * mu) / excess, 0.05, 100.0)) if excess > 0 else 100.0

    @property
    def sigma(self) -> float:
        return float(self._k)

    @property
    def _k(self) -> float:
        if self.theta is None:
            raise TypeError("theta is estimated with the model; set it with with_dispersion()")
        return self.theta

    def clip_mu(self, mu: np.ndarray) -> np.ndarray:
        return np.maximum(mu, self._EPS)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        return mu + mu * mu / self._k

    def dvariance(self, mu: np.ndarray) -> np.ndarray:
        return 1.0 + 2.0 * mu / self._k

    def d2variance(self, mu: np.ndarray) -> np.ndarray:
        return np.full(np.shape(mu), 2.0 / self._k)

    def dispersion_derivatives(
        self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self._k
        mk = mu + k
        l_k = digamma(y + k) - digamma(k) + np.log(k / mk) + 1.0 - (y + k) / mk
        return wt * k * l_k, wt * k * (y - mu) / mk**2, wt * k * (mu - 2 * y - k) / mk**3

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        k = self._k
        return 2 * wt * (xlogy(y, y / mu) - (y + k) * np.log((y + k) / (mu + k)))

    def minus2loglik(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        k = self._k
        ll = gammaln(y + k) - gammaln(k) - gammaln(y + 1) + k * np.log(k / (k + mu)) + xlogy(y, mu / (k + mu))
        return -2 * wt * ll

    def start_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return y + 0.1

    def validate(self, y: np.ndarray, wt: np.ndarray) -> None:
        check_counts(y, "negative binomial")

    def sample(self, mu: np.ndarray, wt: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        k = self._k
        return rng.negative_binomial(k, k / (k + mu)).astype(float)

    def __repr__(self) -> str:
        return f"NegativeBinomial(theta={self.theta!r})"

    def __str__(self) -> str:
        shown = "" if self.theta is None else f"({self.theta:.4g})"
        return f"negative_binomial{shown}  ( {self.link.name} )"


@dataclass(frozen=True, eq=False, repr=False)
class Gamma(Family):
    """Gamma responses with variance phi mu^2 (shape 1 / phi), as glmmTMB's ``Gamma``.

    Parameters
    ----------
    link : {"inverse", "log", "identity"}, default "inverse" (R's default)
    phi : float, optional
        The dispersion; estimated by maximum likelihood when not given. ``sigma`` is glmmTMB's:
        the coefficient of variation sqrt(phi).

    Examples
    --------
    >>> import numpy as np, hmix
    >>> g = hmix.Gamma("log", phi=0.25)
    >>> g.variance(np.array([2.0])).tolist(), g.sigma
    ([1.0], 0.5)
    """

    phi: float | None = None

    name: ClassVar[str] = "gamma"
    links: ClassVar[tuple[str, ...]] = ("inverse", "log", "identity")
    sigma_power: ClassVar[float] = 0.5
    observed_laplace: ClassVar[bool] = True
    _EPS: ClassVar[float] = 1e-10

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.phi, "the Gamma family's dispersion phi")

    @property
    def canonical(self) -> bool:
        return False  # (the inverse link is, but the score carries 1 / phi: the general formulas)

    @property
    def free_dispersion(self) -> bool:
        return self.phi is None

    @property
    def dispersion(self) -> float | None:
        return self.phi

    def with_dispersion(self, value: float) -> Gamma:
        return replace(self, phi=float(value))

    def dispersion_start(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> float:
        """phi from the squared relative residuals of a fit (the Pearson estimate)."""
        return float(np.clip(np.sum(wt * ((y - mu) / mu) ** 2) / np.sum(wt), 1e-4, 1e4))

    @property
    def sigma(self) -> float:
        return float(np.sqrt(self._phi))

    @property
    def _phi(self) -> float:
        if self.phi is None:
            raise TypeError("phi is estimated with the model; set it with with_dispersion()")
        return self.phi

    def clip_mu(self, mu: np.ndarray) -> np.ndarray:
        # a log link's mean underflows to 0 (kept off it); an inverse or identity link's can be
        # negative, outside the family: NaN there, which PIRLS's step halving never accepts
        # (clipped, the deviance would be flat out there and PIRLS could settle in it)
        with np.errstate(invalid="ignore"):
            return np.where(mu > 0, np.maximum(mu, self._EPS), np.nan)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        return self._phi * mu * mu

    def dvariance(self, mu: np.ndarray) -> np.ndarray:
        return 2.0 * self._phi * mu

    def d2variance(self, mu: np.ndarray) -> np.ndarray:
        return np.full(np.shape(mu), 2.0 * self._phi)

    def dispersion_derivatives(
        self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # log p = nu (log(nu y / mu) - y / mu) - log y - lgamma(nu), nu = 1 / phi: d / d log phi
        # is -nu d / d nu; the mu-derivatives are nu times functions of mu, so they change sign
        nu = 1.0 / self._phi
        l_nu = np.log(nu * y / mu) + 1.0 - y / mu - digamma(nu)
        return -wt * nu * l_nu, -wt * nu * (y - mu) / mu**2, -wt * nu * (mu - 2 * y) / mu**3

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return 2 * wt * (-np.log(y / mu) + (y - mu) / mu) / self._phi

    def minus2loglik(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        nu = 1.0 / self._phi
        return -2 * wt * (nu * np.log(nu * y / mu) - nu * y / mu - np.log(y) - gammaln(nu))

    def start_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=float)

    def validate(self, y: np.ndarray, wt: np.ndarray) -> None:
        if not (np.asarray(y) > 0).all():
            raise DataError(
                "a Gamma response must be positive; found zeros or negative values (for data with "
                "zeros, consider a Tweedie or a two-part model, or shift the response)"
            )

    def sample(self, mu: np.ndarray, wt: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        nu = wt[:, None] / self._phi
        return rng.gamma(nu, mu / nu)

    def __repr__(self) -> str:
        return f"Gamma({self.link.name!r}, phi={self.phi!r})"
