"""Zero-inflation: p(y) = pi 1[y = 0] + (1 - pi) f(y; mu), logit(pi) = X_zi beta_zi (glmmTMB's
``ziformula``).

The mixture's log-likelihood is not of exponential-family form in eta. PIRLS still finds the
modes of the penalized deviance: the working residual is the score over a positive weight (the
count family's Fisher weight, times the posterior probability q that a zero comes from the count
part), so its fixed point is the mode; the Laplace approximation then uses the observed
information there, -d^2 l / d eta^2 = q (w_obs - (1 - q) s^2) for a zero (s, w_obs: the count
part's score and observed information), the count part's for the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import expit

from .base import _TINY, W_FLOOR, Family, Observed

__all__ = ["ZeroInflatedObserved"]


@dataclass(frozen=True, eq=False)
class ZeroInflatedObserved(Observed):
    """The count family bound to the response, with the zero-inflation probabilities ``pi``
    (one per row). ``deviance`` is -2 log p(y | mu) in full, so ``constant`` is 0."""

    pi: np.ndarray

    @classmethod
    def of(cls, family: Family, y: np.ndarray, wt: np.ndarray, eta_zi: np.ndarray) -> ZeroInflatedObserved:
        return cls(family, y, wt, expit(eta_zi))

    @cached_property
    def zero(self) -> np.ndarray:
        return np.asarray(self.y == 0)

    @property
    def constant(self) -> float:
        return 0.0

    def _count_log(self, mu: np.ndarray) -> np.ndarray:
        """log f(y; mu) per row, unit weight."""
        return -0.5 * self.family.minus2loglik(self.y, mu, np.ones_like(self.y))

    def _posterior(self, logf: np.ndarray) -> np.ndarray:
        """q: the probability that a zero comes from the count part (1 for non-zeros)."""
        with np.errstate(divide="ignore"):
            a = np.log(self.pi)
            b = np.log1p(-self.pi) + logf
        q = np.exp(b - np.logaddexp(a, b))
        return np.where(self.zero, q, 1.0)

    def loglik(self, mu: np.ndarray) -> np.ndarray:
        """log p(y | mu) per row, times the prior weights."""
        logf = self._count_log(mu)
        with np.errstate(divide="ignore"):
            zero = np.logaddexp(np.log(self.pi), np.log1p(-self.pi) + logf)
            other = np.log1p(-self.pi) + logf
        return self.wt * np.where(self.zero, zero, other)

    def deviance(self, mu: np.ndarray) -> float:
        return float(-2.0 * self.loglik(mu).sum())

    def _parts(self, eta: np.ndarray) -> tuple[np.ndarray, ...]:
        """mu, mu_eta, the count part's score s and Fisher and observed weights, and q."""
        fam = self.family
        mu = fam.linkinv(eta)
        d1, d2 = fam.mu_eta(eta), fam.mu_eta2(eta)
        V, dV = fam.variance(mu), fam.dvariance(mu)
        s = (self.y - mu) * d1 / V
        fisher = d1 * d1 / V
        observed = fisher - (self.y - mu) * (d2 / V - d1 * d1 * dV / V**2)
        return mu, d1, s, fisher, observed, self._posterior(self._count_log(mu))

    def working(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        mu, d1, s, fisher, _, q = self._parts(eta)
        w = self.wt * q * fisher
        w = np.maximum(w, max(W_FLOOR * float(w.max(initial=0.0)), _TINY))
        return mu, d1, self.wt * q * s / w, w

    def observed_weights(self, eta: np.ndarray) -> np.ndarray:
        _, _, s, _, observed, q = self._parts(eta)
        return np.asarray(self.wt * q * (observed - (1.0 - q) * s * s))

    def score(
        self, eta: np.ndarray, mu: np.ndarray, w: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        raise NotImplementedError("zero-inflated models are fitted without the exact gradient")
