"""GLM families and links for GLMMs: binomial (logit, probit, cloglog) and Poisson (log).

The links, variance functions, deviance residuals and log-likelihoods are written out here with
numpy: the GLMM objective needs them per observation, vectorized, and thousands of times a fit,
with the binomial's number of trials as the prior weight (lme4's convention). statsmodels gives
the matching family object for users who want a GLM without random effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from scipy.special import gammaln, ndtr, ndtri, xlogy

from .errors import DataError

__all__ = ["Family", "Observed", "get_family"]

_LINKS = {"logit": "Logit", "probit": "Probit", "cloglog": "CLogLog", "log": "Log"}
_DEFAULT_LINK = {"binomial": "logit", "poisson": "log"}
_ALLOWED = {"binomial": {"logit", "probit", "cloglog"}, "poisson": {"log"}}
_CANONICAL = {("binomial", "logit"), ("poisson", "log")}
_EPS = 1e-10
_ETA_MAX = 700.0  # exp(700) is finite; beyond it the log link overflows
_TINY = np.finfo(float).tiny
_SQRT_2PI = float(np.sqrt(2 * np.pi))
_W_FLOOR = 1e-10


@dataclass(frozen=True)
class Family:
    """A response distribution with its link.

    Attributes
    ----------
    name : str
        ``"binomial"`` or ``"poisson"``.
    link : str
        ``"logit"``, ``"probit"``, ``"cloglog"`` or ``"log"``.

    Examples
    --------
    >>> import numpy as np, hmix
    >>> fam = hmix.Family("binomial", "logit")
    >>> fam.linkinv(np.array([0.0, 2.0])).round(4).tolist()
    [0.5, 0.8808]
    """

    name: str
    link: str

    @cached_property
    def _link(self) -> Any:
        # statsmodels is imported on first use: it is heavy, and neither lmer nor glmer needs it
        from statsmodels.genmod.families import links

        return getattr(links, _LINKS[self.link])()

    @property
    def canonical(self) -> bool:
        """Whether the link is the family's canonical one (logit, log): then PIRLS's Fisher
        weights are the observed information and the Laplace deviance has a cheap gradient."""
        return (self.name, self.link) in _CANONICAL

    def statsmodels_family(self) -> Any:
        """The matching statsmodels family (a GLM without random effects)."""
        from statsmodels.genmod import families

        cls = families.Binomial if self.name == "binomial" else families.Poisson
        return cls(link=self._link)

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        """Mean from the linear predictor, kept inside the parameter space."""
        e = np.clip(eta, -_ETA_MAX, _ETA_MAX)
        with np.errstate(over="ignore", under="ignore"):
            if self.link == "logit":
                mu = 1.0 / (1.0 + np.exp(-e))
            elif self.link == "probit":
                mu = ndtr(e)
            elif self.link == "cloglog":
                mu = -np.expm1(-np.exp(e))
            else:
                mu = np.exp(e)
        if self.name == "binomial":
            return np.clip(mu, _EPS, 1 - _EPS)
        return np.maximum(mu, _EPS)

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        """Linear predictor from the mean."""
        mu = np.asarray(mu, dtype=float)
        if self.link == "logit":
            return np.log(mu / (1 - mu))
        if self.link == "probit":
            return np.asarray(ndtri(mu), dtype=float)
        if self.link == "cloglog":
            return np.log(-np.log1p(-mu))
        return np.log(mu)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        """d mu / d eta."""
        e = np.clip(eta, -_ETA_MAX, _ETA_MAX)
        with np.errstate(over="ignore", under="ignore"):
            if self.link == "logit":
                t = np.exp(-np.abs(e))
                d = t / (1.0 + t) ** 2
            elif self.link == "probit":
                d = np.exp(-0.5 * e * e) / _SQRT_2PI
            elif self.link == "cloglog":
                d = np.exp(e - np.exp(e))
            else:
                d = np.exp(e)
        return np.maximum(d, _TINY)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        """d^2 mu / d eta^2."""
        e = np.clip(eta, -_ETA_MAX, _ETA_MAX)
        d = self.mu_eta(eta)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            if self.link == "logit":
                return d * np.tanh(-e / 2)  # mu' (1 - 2 mu)
            if self.link == "probit":
                return -e * d
            if self.link == "cloglog":
                return d * (1 - np.exp(e))
            return d

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


@dataclass(frozen=True, eq=False)
class Observed:
    """A family bound to a response and its prior weights.

    What PIRLS and the Laplace objective evaluate thousands of times a fit, with everything that
    depends only on the data computed once: the deviance as two dot products, the normalizing
    constants, the working response and weights, and (canonical links) the derivatives of the
    log-likelihood and the weights in eta.
    """

    family: Family
    y: np.ndarray
    wt: np.ndarray

    @cached_property
    def _counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Binomial: successes and failures; Poisson: weighted counts and the weights."""
        if self.family.name == "binomial":
            return self.wt * self.y, self.wt * (1 - self.y)
        return self.wt * self.y, self.wt

    @cached_property
    def _saturated(self) -> float:
        """The log-likelihood part of ``loglik_kernel`` at mu = y (the deviance's zero)."""
        a, b = self._counts
        if self.family.name == "binomial":
            return float(xlogy(a, self.y).sum() + xlogy(b, 1 - self.y).sum())
        return float(xlogy(a, self.y).sum() - b @ self.y)

    @cached_property
    def constant(self) -> float:
        """Sum of -2 log p(y | mu) minus the deviance: the family's normalizing constants."""
        return float(self.family.minus2loglik(self.y, self.y, self.wt).sum())

    def _kernel(self, mu: np.ndarray) -> float:
        a, b = self._counts
        if self.family.name == "binomial":
            return float(a @ np.log(mu) + b @ np.log1p(-mu))
        return float(a @ np.log(mu) - b @ mu)

    def deviance(self, mu: np.ndarray) -> float:
        """Sum of the squared deviance residuals at ``mu``."""
        return 2.0 * (self._saturated - self._kernel(mu))

    def working(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(mu, mu_eta, working residual (y - mu) / mu_eta, PIRLS weight)`` at ``eta``.

        The weights are floored at 1e-10 of the largest so that fitted probabilities pinned at 0
        or 1 (separation) leave the weighted cross-products positive definite.
        """
        fam = self.family
        mu = fam.linkinv(eta)
        mueta = fam.mu_eta(eta)
        w = self.wt * mueta**2 / fam.variance(mu)
        return mu, mueta, (self.y - mu) / mueta, np.maximum(w, _W_FLOOR * w.max())

    def score(
        self, eta: np.ndarray, mu: np.ndarray, w: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Derivatives in eta at a PIRLS solution, for the gradient of the Laplace deviance.

        Returns ``(r, dw, w_obs)``: r = d log p(y | mu) / d eta; dw = d w / d eta for the PIRLS
        (Fisher) weights ``w`` (zero where a weight sits on its floor); and w_obs = -dr/deta,
        the observed information, which differs from w only for non-canonical links (None for
        canonical ones).
        """
        fam = self.family
        if fam.canonical:
            r = self.wt * (self.y - mu)
            dw = w * (1 - 2 * mu) if fam.name == "binomial" else w.copy()
            w_obs = None
        else:
            d1, d2 = fam.mu_eta(eta), fam.mu_eta2(eta)
            V = fam.variance(mu)
            dV = 1 - 2 * mu  # binomial: the only family with non-canonical links here
            r = self.wt * (self.y - mu) * d1 / V
            dw = self.wt * (2 * d1 * d2 / V - d1**3 * dV / V**2)
            w_obs = w - self.wt * (self.y - mu) * (d2 / V - d1**2 * dV / V**2)
        dw[w <= _W_FLOOR * w.max() * (1 + 1e-12)] = 0.0
        return r, dw, w_obs


def get_family(family: str | Family, link: str | None = None) -> Family:
    """A ``Family`` from a name (``"binomial"``, ``"poisson"``) and an optional link.

    Examples
    --------
    >>> import hmix
    >>> str(hmix.get_family("binomial", "probit")), str(hmix.get_family("poisson"))
    ('binomial  ( probit )', 'poisson  ( log )')
    """
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
