"""lme4's families: binomial (logit, probit, cloglog), Poisson (log) and the Gaussian of LMMs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
from scipy.special import gammaln, xlogy

from ..errors import DataError
from .base import Family, Observed

__all__ = ["Binomial", "Poisson", "Gaussian", "check_counts"]


def check_counts(y: np.ndarray, family: str) -> None:
    """A count response: whole and non-negative."""
    article = "an" if family[0] in "aeiouAEIOU" else "a"
    if (y < 0).any():
        raise DataError(f"{article} {family} response must be non-negative counts; found negative values")
    if np.abs(y - np.round(y)).max(initial=0.0) > 1e-7:
        raise DataError(
            f"{article} {family} response must be whole counts; found non-integer values "
            "(for rates, model the count with offset(log(exposure)))"
        )


@dataclass(frozen=True, eq=False, repr=False)
class Binomial(Family):
    """Binomial: the response a proportion of successes, the prior weights the trials (lme4's
    convention); 0/1 responses have one trial. Links: logit (canonical), probit, cloglog.

    Examples
    --------
    >>> import hmix
    >>> hmix.Binomial("probit"), hmix.Binomial().canonical
    (Binomial('probit'), True)
    """

    name: ClassVar[str] = "binomial"
    links: ClassVar[tuple[str, ...]] = ("logit", "probit", "cloglog")
    _EPS: ClassVar[float] = 1e-10

    def clip_mu(self, mu: np.ndarray) -> np.ndarray:
        return np.clip(mu, self._EPS, 1 - self._EPS)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        return mu * (1 - mu)

    def dvariance(self, mu: np.ndarray) -> np.ndarray:
        return 1 - 2 * mu

    def d2variance(self, mu: np.ndarray) -> np.ndarray:
        return np.full(np.shape(mu), -2.0)

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return 2 * wt * (xlogy(y, y / mu) + xlogy(1 - y, (1 - y) / (1 - mu)))

    def minus2loglik(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        k = np.round(y * wt)
        logc = gammaln(wt + 1) - gammaln(k + 1) - gammaln(wt - k + 1)
        return -2 * (logc + xlogy(k, mu) + xlogy(wt - k, 1 - mu))

    def start_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return (wt * y + 0.5) / (wt + 1)

    def validate(self, y: np.ndarray, wt: np.ndarray) -> None:
        if (y < 0).any() or (y > 1).any():
            raise DataError(
                "a binomial response must be 0/1, a proportion in [0, 1] with weights= the "
                "number of trials, or cbind(successes, failures); found values outside [0, 1]"
            )
        k = y * wt
        if np.abs(k - np.round(k)).max(initial=0.0) > 1e-7:
            raise DataError(
                "binomial proportions times the weights (trials) must be whole numbers of "
                "successes; give weights= the number of trials"
            )

    def sample(self, mu: np.ndarray, wt: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        from ..errors import HmixError

        trials = np.round(wt)
        if np.abs(trials - wt).max(initial=0.0) > 1e-7:
            raise HmixError(
                "binomial simulation needs whole numbers of trials, but the weights are not whole "
                "numbers; give the trials as weights= (or a cbind(successes, failures) response)"
            )
        successes = rng.binomial(trials.astype(np.int64)[:, None], mu)
        # the response is stored as the proportion of successes (0 when there are no trials)
        return np.where(trials[:, None] > 0, successes / np.where(trials > 0, trials, 1.0)[:, None], 0.0)

    def bind(self, y: np.ndarray, wt: np.ndarray) -> Observed:
        return _BinomialObserved(self, y, wt)


@dataclass(frozen=True, eq=False, repr=False)
class Poisson(Family):
    """Poisson counts (prior weights multiply the log-likelihood), with the log link.

    Examples
    --------
    >>> import numpy as np, hmix
    >>> hmix.Poisson().linkinv(np.array([0.0, 1.0])).round(4).tolist()
    [1.0, 2.7183]
    """

    name: ClassVar[str] = "poisson"
    links: ClassVar[tuple[str, ...]] = ("log",)
    _EPS: ClassVar[float] = 1e-10

    def clip_mu(self, mu: np.ndarray) -> np.ndarray:
        return np.maximum(mu, self._EPS)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        return mu

    def dvariance(self, mu: np.ndarray) -> np.ndarray:
        return np.ones(np.shape(mu))

    def d2variance(self, mu: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(mu))

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return 2 * wt * (xlogy(y, y / mu) - (y - mu))

    def minus2loglik(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return -2 * wt * (xlogy(y, mu) - mu - gammaln(y + 1))

    def start_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return y + 0.1

    def validate(self, y: np.ndarray, wt: np.ndarray) -> None:
        check_counts(y, "Poisson")

    def sample(self, mu: np.ndarray, wt: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(mu).astype(float)

    def bind(self, y: np.ndarray, wt: np.ndarray) -> Observed:
        return _PoissonObserved(self, y, wt)


@dataclass(frozen=True, eq=False, repr=False)
class Gaussian(Family):
    """The normal distribution with the identity link: the family of linear mixed models
    (``lmer``), whose scale sigma is estimated with the model.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> str(m.family), m.has_scale
    ('gaussian  ( identity )', True)
    """

    name: ClassVar[str] = "gaussian"
    links: ClassVar[tuple[str, ...]] = ("identity",)
    has_scale: ClassVar[bool] = True

    def variance(self, mu: np.ndarray) -> np.ndarray:
        return np.ones(np.shape(mu))

    def dvariance(self, mu: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(mu))

    def d2variance(self, mu: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(mu))

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return wt * (y - mu) ** 2

    def minus2loglik(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the Gaussian log-likelihood needs sigma: see LinearMixedModel")

    def start_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=float)

    def validate(self, y: np.ndarray, wt: np.ndarray) -> None:
        return None

    def sample(self, mu: np.ndarray, wt: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        return mu + scale * rng.standard_normal(mu.shape) / np.sqrt(wt)[:, None]


@dataclass(frozen=True, eq=False)
class _BinomialObserved(Observed):
    """The binomial deviance as two dot products with the successes and failures."""

    @cached_property
    def _counts(self) -> tuple[np.ndarray, np.ndarray]:
        return self.wt * self.y, self.wt * (1 - self.y)

    @cached_property
    def _saturated(self) -> float:
        a, b = self._counts
        return float(xlogy(a, self.y).sum() + xlogy(b, 1 - self.y).sum())

    def deviance(self, mu: np.ndarray) -> float:
        a, b = self._counts
        return 2.0 * (self._saturated - float(a @ np.log(mu) + b @ np.log1p(-mu)))


@dataclass(frozen=True, eq=False)
class _PoissonObserved(Observed):
    """The Poisson deviance as two dot products with the weighted counts and the weights."""

    @cached_property
    def _counts(self) -> tuple[np.ndarray, np.ndarray]:
        return self.wt * self.y, self.wt

    @cached_property
    def _saturated(self) -> float:
        a, b = self._counts
        return float(xlogy(a, self.y).sum() - b @ self.y)

    def deviance(self, mu: np.ndarray) -> float:
        a, b = self._counts
        return 2.0 * (self._saturated - float(a @ np.log(mu) - b @ mu))
