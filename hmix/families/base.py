"""The family and its binding to the data: what every response distribution provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError
from .links import LINKS, Link

__all__ = ["Family", "Observed", "W_FLOOR"]

W_FLOOR = 1e-10
_TINY = np.finfo(float).tiny


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
    has_scale: ClassVar[bool] = False  # a residual scale profiled out of an LMM (Gaussian: sigma)
    # the Laplace approximation's curvature: the observed information at the modes (the exact
    # Laplace approximation, as glmmTMB's) or the expected one, Fisher's (lme4's; the two agree
    # for canonical links)
    observed_laplace: ClassVar[bool] = False

    def __post_init__(self) -> None:
        link = self.link
        if link is None:
            link = self.links[0]
        if isinstance(link, str):
            key = link.lower()
            if key not in self.links:
                raise DataError(f"the {self.name} family takes the links {sorted(self.links)}, not {link!r}")
            link = LINKS[key]()
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
    def d2variance(self, mu: np.ndarray) -> np.ndarray:
        """d^2 V / d mu^2."""

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

    # ----- a dispersion parameter estimated with the model (negative binomial, Gamma) --------
    @property
    def free_dispersion(self) -> bool:
        """Whether the family has a dispersion parameter to estimate (it is unset)."""
        return False

    @property
    def dispersion(self) -> float | None:
        """The dispersion parameter's value, on the family's own scale (None: none, or unset)."""
        return None

    def with_dispersion(self, value: float) -> Family:
        """The family with its dispersion parameter set to ``value``."""
        raise TypeError(f"the {self.name} family has no dispersion parameter")

    def dispersion_start(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> float:
        """A starting value of the dispersion from a fit's means (moment estimate)."""
        raise TypeError(f"the {self.name} family has no dispersion parameter")

    def dispersion_derivatives(
        self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row, the derivatives in the log dispersion of log p(y | mu), of its derivative in
        mu and of its second derivative in mu (the exact gradient over the dispersion)."""
        raise TypeError(f"the {self.name} family has no dispersion parameter")

    @property
    def sigma(self) -> float:
        """glmmTMB's ``sigma()`` for the family (1 for families without a dispersion)."""
        return 1.0

    # sigma = dispersion ** sigma_power (the negative binomial's sigma is theta, the Gamma's is
    # sqrt(phi)): intervals and profiles of sigma map to the log dispersion the optimizer sees
    sigma_power: ClassVar[float] = 1.0

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


def pirls_weights(
    r: np.ndarray, w_obs: np.ndarray, fisher: np.ndarray, newton: bool
) -> tuple[np.ndarray, np.ndarray]:
    """PIRLS's working residual r / w and weight w from the score r, the observed information
    and Fisher's weight (see ``Observed.working``): the observed information where positive (or,
    ``newton``, where it is not small beside Fisher's), Fisher's weight elsewhere; floored at
    1e-10 of the largest."""
    fisher = np.maximum(fisher, 0.0)
    keep = np.abs(w_obs) >= 1e-3 * fisher if newton else w_obs > 0
    w = np.where(keep, w_obs, fisher)
    floor = max(W_FLOOR * float(np.abs(w).max(initial=0.0)), _TINY)
    w = np.where(np.abs(w) < floor, floor, w)
    return r / w, w


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

    def working(
        self, eta: np.ndarray, newton: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(mu, mu_eta, working residual, PIRLS weight)`` at ``eta``.

        The weights are floored at 1e-10 of the largest so that fitted probabilities pinned at 0
        or 1 (separation, or a cloglog mean within 1e-10 of 1) leave the weighted cross-products
        positive definite. The working residual is the score d log p / d eta over that weight
        ((y - mu) / mu_eta where no floor applies), so that PIRLS's fixed point is the mode of
        the penalized deviance itself: with (y - mu) / mu_eta a floored row would pull the modes
        away from it (cloglog: a gradient of 7e-4 at "convergence", 1e-4 in the deviance).

        Families whose Laplace approximation takes the observed information
        (``observed_laplace``: glmmTMB's) weigh by it where it is positive, Fisher's weight
        elsewhere: PIRLS is then nearly Newton's method (Fisher scoring with a non-canonical
        link converges linearly: grouseticks' negative binomial, 14 steps a call down to 4), and
        its last factor is the Laplace approximation's. With ``newton`` they weigh by the observed
        information everywhere, negative or not (Newton's method itself, as long as the
        system stays positive definite: the caller falls back to the weights above if not).
        """
        fam = self.family
        if fam.observed_laplace and not fam.canonical:
            mu, mueta, _, L1, L2, _ = self._eta_derivatives(eta)
            fisher = self.wt * mueta**2 / fam.variance(mu)
            return mu, mueta, *pirls_weights(self.wt * L1, -self.wt * L2, fisher, newton)
        mu = fam.linkinv(eta)
        mueta = fam.mu_eta(eta)
        V = fam.variance(mu)
        fisher = self.wt * mueta**2 / V
        return mu, mueta, *pirls_weights(self.wt * (self.y - mu) * mueta / V, fisher, fisher, False)

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
        dw[w <= W_FLOOR * w.max() * (1 + 1e-12)] = 0.0
        return r, dw, w_obs

    def _eta_derivatives(self, eta: np.ndarray) -> tuple[np.ndarray, ...]:
        """mu, d mu / d eta, d^2 mu / d eta^2, and the first three derivatives in eta of
        log p(y | mu) at unit weight, by the chain rule through mu: with V the variance function,
        d log p / d mu = (y - mu) / V for every family here (the negative binomial's with
        V = mu + mu^2 / theta too). The last eta's are kept: PIRLS's last working weights, the
        Laplace curvature and the gradient all ask at the same modes."""
        memo = self.__dict__.get("_memo")
        if memo is not None and np.array_equal(memo[0], eta):
            return memo[1]
        fam = self.family
        mu, d1, d2, d3 = fam.link.derivatives(eta, 3)
        mu = fam.clip_mu(mu)
        V, V1, V2 = fam.variance(mu), fam.dvariance(mu), fam.d2variance(mu)
        e = self.y - mu
        l1 = e / V
        l2 = -1.0 / V - e * V1 / V**2
        l3 = 2.0 * V1 / V**2 - e * (V2 * V - 2.0 * V1 * V1) / V**3
        out = (mu, d1, d2, l1 * d1, l2 * d1 * d1 + l1 * d2, l3 * d1**3 + 3.0 * l2 * d1 * d2 + l1 * d3)
        self.__dict__["_memo"] = (np.array(eta, dtype=float), out)
        return out

    def _dispersion_eta(
        self, mu: np.ndarray, d1: np.ndarray, d2: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The derivatives in the log dispersion of log p, of its first and of its second
        derivative in eta (unit weight)."""
        lp, l1p, l2p = self.family.dispersion_derivatives(self.y, mu, np.ones_like(mu))
        return lp, l1p * d1, l2p * d1 * d1 + l1p * d2

    def curvature(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(r, w, dw)`` per row, times the prior weights: r = d log p(y | mu) / d eta,
        w = -dr/deta (the observed information) and dw = dw/deta."""
        _, _, _, L1, L2, L3 = self._eta_derivatives(eta)
        return self.wt * L1, -self.wt * L2, -self.wt * L3

    def extra_derivatives(self, eta: np.ndarray, dispersion: bool) -> np.ndarray:
        """Per row (rows x 3 x extras), times the prior weights: the derivatives of log p(y | mu),
        of r and of w (as ``curvature``) in each extra parameter that enters the row: here the
        log dispersion (when ``dispersion``)."""
        out = np.zeros((len(self.y), 3, int(dispersion)))
        if dispersion:
            lp, l1p, l2p = self._dispersion_eta(*self._eta_derivatives(eta)[:3])
            out[:, :, 0] = np.column_stack([lp, l1p, -l2p]) * self.wt[:, None]
        return out

    def observed_weights(self, eta: np.ndarray) -> np.ndarray:
        """-d^2 log p(y | mu) / d eta^2 per row: the observed information, whose sum over the
        random effects gives the exact Laplace approximation's curvature."""
        return self.curvature(eta)[1]
