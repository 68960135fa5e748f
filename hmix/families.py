"""GLM families and links for GLMMs: binomial (logit, probit, cloglog) and Poisson (log).

Links come from statsmodels; the variance functions, deviance residuals and log-likelihoods are
written out here because the GLMM objective needs them per observation and vectorized, with the
binomial's number of trials as the prior weight (lme4's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from scipy.special import gammaln, xlogy

from .errors import DataError

__all__ = ["Family", "get_family"]

_LINKS = {"logit": "Logit", "probit": "Probit", "cloglog": "CLogLog", "log": "Log"}
_DEFAULT_LINK = {"binomial": "logit", "poisson": "log"}
_ALLOWED = {"binomial": {"logit", "probit", "cloglog"}, "poisson": {"log"}}
_EPS = 1e-10
_ETA_MAX = 700.0  # exp(700) is finite; beyond it the log link overflows


@dataclass(frozen=True)
class Family:
    """A response distribution with its link.

    Attributes
    ----------
    name : str
        ``"binomial"`` or ``"poisson"``.
    link : str
        ``"logit"``, ``"probit"``, ``"cloglog"`` or ``"log"``.
    """

    name: str
    link: str

    @cached_property
    def _link(self) -> Any:
        # statsmodels is imported on first use: it is heavy, and lmer does not need it
        from statsmodels.genmod.families import links

        return getattr(links, _LINKS[self.link])()

    def statsmodels_family(self) -> Any:
        """The matching statsmodels family (for the GLM that gives starting values)."""
        from statsmodels.genmod import families

        cls = families.Binomial if self.name == "binomial" else families.Poisson
        return cls(link=self._link)

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        """Mean from the linear predictor, kept inside the parameter space."""
        with np.errstate(over="ignore", under="ignore"):
            mu = np.asarray(self._link.inverse(np.clip(eta, -_ETA_MAX, _ETA_MAX)), dtype=float)
        if self.name == "binomial":
            return np.clip(mu, _EPS, 1 - _EPS)
        return np.maximum(mu, _EPS)

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        """Linear predictor from the mean."""
        return np.asarray(self._link(mu), dtype=float)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        """d mu / d eta."""
        with np.errstate(over="ignore", under="ignore"):
            d = np.asarray(self._link.inverse_deriv(np.clip(eta, -_ETA_MAX, _ETA_MAX)), dtype=float)
        return np.maximum(d, np.finfo(float).tiny)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        """Variance function V(mu)."""
        return mu * (1 - mu) if self.name == "binomial" else mu

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """Squared deviance residuals (unit deviances times prior weights)."""
        if self.name == "binomial":
            return 2 * wt * (xlogy(y, y / mu) + xlogy(1 - y, (1 - y) / (1 - mu)))
        return 2 * wt * (xlogy(y, y / mu) - (y - mu))

    def minus2loglik(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """-2 log p(y | mu) per observation, with the normalizing constants (lme4's aic terms)."""
        if self.name == "binomial":
            m = wt
            k = np.round(y * m)
            logc = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
            return -2 * (logc + xlogy(k, mu) + xlogy(m - k, 1 - mu))
        return -2 * wt * (xlogy(y, mu) - mu - gammaln(y + 1))

    def start_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """R's ``mustart`` for a GLM fit."""
        if self.name == "binomial":
            return (wt * y + 0.5) / (wt + 1)
        return y + 0.1

    def validate(self, y: np.ndarray, wt: np.ndarray) -> None:
        """Reject responses the family cannot have, with the fix in the message."""
        if self.name == "binomial":
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
        else:
            if (y < 0).any():
                raise DataError("a Poisson response must be non-negative counts; found negative values")
            if np.abs(y - np.round(y)).max(initial=0.0) > 1e-7:
                raise DataError(
                    "a Poisson response must be whole counts; found non-integer values "
                    "(for rates, model the count with offset(log(exposure)))"
                )

    def __str__(self) -> str:
        return f"{self.name}  ( {self.link} )"


def get_family(family: str | Family, link: str | None = None) -> Family:
    """A :class:`Family` from a name (``"binomial"``, ``"poisson"``) and an optional link."""
    if isinstance(family, Family):
        if link is not None and link != family.link:
            return get_family(family.name, link)
        return family
    name = str(family).lower()
    if name not in _DEFAULT_LINK:
        raise DataError(f"family must be 'binomial' or 'poisson' (or 'gaussian' with lmer), not {family!r}")
    lk = (link or _DEFAULT_LINK[name]).lower()
    if lk not in _ALLOWED[name]:
        raise DataError(f"the {name} family takes the links {sorted(_ALLOWED[name])}, not {link!r}")
    return Family(name, lk)
