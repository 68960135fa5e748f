"""Response distributions and links, as small classes (statsmodels' pattern).

A ``Link`` maps the mean to the linear predictor and back, with the derivatives PIRLS and the
exact gradient need. A ``Family`` is a distribution with a link: its variance function, deviance
residuals, log-likelihood with its normalizing constants, R's starting means, the responses it
accepts, and how to draw from it. ``Family.bind`` ties one to a response and prior weights: the
``Observed`` object PIRLS evaluates thousands of times a fit, with what depends only on the data
computed once. To add a family, subclass ``Family`` (and ``Observed`` only where a faster
deviance pays); to add a link, subclass ``Link`` and list it in the family's ``links``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from scipy.special import gammaln, ndtr, ndtri, xlogy

from .errors import DataError

__all__ = [
    "Link",
    "Logit",
    "Probit",
    "CLogLog",
    "Log",
    "Identity",
    "Family",
    "Binomial",
    "Poisson",
    "Gaussian",
    "Observed",
    "get_family",
]

_ETA_MAX = 700.0  # exp(700) is finite; beyond it the log link overflows
_TINY = np.finfo(float).tiny
_SQRT_2PI = float(np.sqrt(2 * np.pi))
_W_FLOOR = 1e-10


# ----- links --------------------------------------------------------------------------------
class Link(ABC):
    """eta = g(mu) and its inverse, with d mu / d eta and d^2 mu / d eta^2."""

    name: ClassVar[str]

    @abstractmethod
    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        """eta from mu."""

    @abstractmethod
    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        """mu from eta."""

    @abstractmethod
    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        """d mu / d eta (positive)."""

    @abstractmethod
    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        """d^2 mu / d eta^2."""

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(self.name)


def _clip(eta: np.ndarray) -> np.ndarray:
    return np.clip(eta, -_ETA_MAX, _ETA_MAX)


class Logit(Link):
    name = "logit"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        mu = np.asarray(mu, dtype=float)
        return np.log(mu / (1 - mu))

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return 1.0 / (1.0 + np.exp(-_clip(eta)))

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            t = np.exp(-np.abs(_clip(eta)))
            return np.maximum(t / (1.0 + t) ** 2, _TINY)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return self.mu_eta(eta) * np.tanh(-_clip(eta) / 2)  # mu' (1 - 2 mu)


class Probit(Link):
    name = "probit"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return np.asarray(ndtri(np.asarray(mu, dtype=float)), dtype=float)

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        return np.asarray(ndtr(_clip(eta)), dtype=float)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        e = _clip(eta)
        with np.errstate(under="ignore"):
            return np.maximum(np.exp(-0.5 * e * e) / _SQRT_2PI, _TINY)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return -_clip(eta) * self.mu_eta(eta)


class CLogLog(Link):
    name = "cloglog"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return np.log(-np.log1p(-np.asarray(mu, dtype=float)))

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return -np.expm1(-np.exp(_clip(eta)))

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        e = _clip(eta)
        with np.errstate(over="ignore", under="ignore"):
            return np.maximum(np.exp(e - np.exp(e)), _TINY)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            return self.mu_eta(eta) * (1 - np.exp(_clip(eta)))


class Log(Link):
    name = "log"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(mu, dtype=float))

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(_clip(eta))

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        return np.maximum(self.linkinv(eta), _TINY)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return self.mu_eta(eta)


class Identity(Link):
    name = "identity"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return np.asarray(mu, dtype=float)

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        return np.asarray(eta, dtype=float)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        return np.ones(np.shape(eta))

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(eta))


_LINKS: dict[str, type[Link]] = {c.name: c for c in (Logit, Probit, CLogLog, Log, Identity)}


# ----- families -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Family(ABC):
    """A response distribution with its link.

    Attributes
    ----------
    link : Link
        ``family.link.name`` is its name (``"logit"``).

    Examples
    --------
    >>> import numpy as np, hmix
    >>> fam = hmix.Binomial("logit")
    >>> fam.linkinv(np.array([0.0, 2.0])).round(4).tolist()
    [0.5, 0.8808]
    """

    link: Link = field(default=None)  # type: ignore[assignment]  # (the family's default; see __post_init__)

    name: ClassVar[str]
    links: ClassVar[tuple[str, ...]]  # the links the family takes, the canonical one first
    has_scale: ClassVar[bool] = False  # a dispersion estimated with the model (Gaussian: sigma)

    def __post_init__(self) -> None:
        link = self.link
        if link is None:
            link = self.links[0]
        if isinstance(link, str):
            key = link.lower()
            if key not in self.links:
                raise DataError(f"the {self.name} family takes the links {sorted(self.links)}, not {link!r}")
            link = _LINKS[key]()
        elif not isinstance(link, Link) or link.name not in self.links:
            raise DataError(f"the {self.name} family takes the links {sorted(self.links)}, not {link!r}")
        object.__setattr__(self, "link", link)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Family) and type(self) is type(other) and self.link == other.link

    def __hash__(self) -> int:
        return hash((self.name, self.link.name))

    @property
    def canonical(self) -> bool:
        """Whether the link is the family's canonical one: then PIRLS's Fisher weights are the
        observed information and the Laplace deviance has a cheap exact gradient."""
        return self.link.name == self.links[0]

    # ----- the link, with the mean kept inside the parameter space ------------------------
    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        """Mean from the linear predictor, kept inside the parameter space."""
        return self.clip_mu(self.link.linkinv(eta))

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return self.link.linkfun(mu)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        return self.link.mu_eta(eta)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return self.link.mu_eta2(eta)

    def clip_mu(self, mu: np.ndarray) -> np.ndarray:
        return mu

    # ----- the distribution ---------------------------------------------------------------
    @abstractmethod
    def variance(self, mu: np.ndarray) -> np.ndarray:
        """Variance function V(mu)."""

    @abstractmethod
    def dvariance(self, mu: np.ndarray) -> np.ndarray:
        """d V / d mu."""

    @abstractmethod
    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """Squared deviance residuals (unit deviances times prior weights)."""

    @abstractmethod
    def minus2loglik(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """-2 log p(y | mu) per observation, with the normalizing constants (lme4's aic terms)."""

    @abstractmethod
    def start_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """R's ``mustart`` for a GLM fit."""

    @abstractmethod
    def validate(self, y: np.ndarray, wt: np.ndarray) -> None:
        """Reject responses the family cannot have, with the fix in the message."""

    @abstractmethod
    def sample(self, mu: np.ndarray, wt: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        """Responses drawn at the means ``mu`` (rows x draws), as the model stores them."""

    def bind(self, y: np.ndarray, wt: np.ndarray) -> Observed:
        """The family tied to a response and its prior weights."""
        return Observed(self, y, wt)

    def statsmodels_family(self) -> Any:
        """The matching statsmodels family (a GLM without random effects)."""
        from statsmodels.genmod import families
        from statsmodels.genmod.families import links

        name = {
            "logit": "Logit",
            "probit": "Probit",
            "cloglog": "CLogLog",
            "log": "Log",
            "identity": "Identity",
        }
        cls = getattr(families, type(self).__name__)
        return cls(link=getattr(links, name[self.link.name])())

    def __str__(self) -> str:
        return f"{self.name}  ( {self.link.name} )"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.link.name!r})"


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
        from .errors import HmixError

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

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return 2 * wt * (xlogy(y, y / mu) - (y - mu))

    def minus2loglik(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return -2 * wt * (xlogy(y, mu) - mu - gammaln(y + 1))

    def start_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return y + 0.1

    def validate(self, y: np.ndarray, wt: np.ndarray) -> None:
        if (y < 0).any():
            raise DataError("a Poisson response must be non-negative counts; found negative values")
        if np.abs(y - np.round(y)).max(initial=0.0) > 1e-7:
            raise DataError(
                "a Poisson response must be whole counts; found non-integer values "
                "(for rates, model the count with offset(log(exposure)))"
            )

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


# ----- a family bound to the data -----------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Observed:
    """A family bound to a response and its prior weights.

    What PIRLS and the Laplace objective evaluate thousands of times a fit: the deviance, the
    normalizing constants, the working response and weights, and the derivatives of the
    log-likelihood and of the weights in eta (for the exact gradient).
    """

    family: Family
    y: np.ndarray
    wt: np.ndarray

    @cached_property
    def constant(self) -> float:
        """Sum of -2 log p(y | mu) minus the deviance: the family's normalizing constants."""
        return float(self.family.minus2loglik(self.y, self.y, self.wt).sum())

    def deviance(self, mu: np.ndarray) -> float:
        """Sum of the squared deviance residuals at ``mu``."""
        return float(self.family.dev_resid(self.y, mu, self.wt).sum())

    def working(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(mu, mu_eta, working residual, PIRLS weight)`` at ``eta``.

        The weights are floored at 1e-10 of the largest so that fitted probabilities pinned at 0
        or 1 (separation, or a cloglog mean within 1e-10 of 1) leave the weighted cross-products
        positive definite. The working residual is the score d log p / d eta over that weight
        ((y - mu) / mu_eta where no floor applies), so that PIRLS's fixed point is the mode of
        the penalized deviance itself: with (y - mu) / mu_eta a floored row would pull the modes
        away from it (cloglog: a gradient of 7e-4 at "convergence", 1e-4 in the deviance).
        """
        fam = self.family
        mu = fam.linkinv(eta)
        mueta = fam.mu_eta(eta)
        V = fam.variance(mu)
        w = np.maximum(self.wt * mueta**2 / V, 0.0)
        w = np.maximum(w, _W_FLOOR * w.max())
        return mu, mueta, self.wt * (self.y - mu) * mueta / V / w, w

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
        dV = fam.dvariance(mu)
        if fam.canonical:  # mu_eta = V: r = wt (y - mu), w = wt V, dw = w dV/dmu
            r = self.wt * (self.y - mu)
            dw = w * dV
            w_obs = None
        else:
            d1, d2 = fam.mu_eta(eta), fam.mu_eta2(eta)
            V = fam.variance(mu)
            r = self.wt * (self.y - mu) * d1 / V
            dw = self.wt * (2 * d1 * d2 / V - d1**3 * dV / V**2)
            w_obs = w - self.wt * (self.y - mu) * (d2 / V - d1**2 * dV / V**2)
        dw[w <= _W_FLOOR * w.max() * (1 + 1e-12)] = 0.0
        return r, dw, w_obs


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


_FAMILIES: dict[str, type[Family]] = {c.name: c for c in (Binomial, Poisson, Gaussian)}


def get_family(family: str | Family, link: str | None = None) -> Family:
    """A ``Family`` from a name (``"binomial"``, ``"poisson"``, ``"gaussian"``) and an optional
    link (the family's canonical one by default).

    Examples
    --------
    >>> import hmix
    >>> str(hmix.get_family("binomial", "probit")), str(hmix.get_family("poisson"))
    ('binomial  ( probit )', 'poisson  ( log )')
    """
    if isinstance(family, Family):
        if link is not None and link != family.link.name:
            return type(family)(link)  # type: ignore[arg-type]
        return family
    name = str(family).lower()
    if name not in _FAMILIES:
        raise DataError(f"family must be 'binomial' or 'poisson' (or 'gaussian' with lmer), not {family!r}")
    return _FAMILIES[name](link)  # type: ignore[arg-type]
