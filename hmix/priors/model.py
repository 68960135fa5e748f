"""The priors of one model: a prior per random-effects term, on beta and on the residual, resolved
with blme's defaults; their penalty as a function of sigma (LMMs) or of (theta, beta) (GLMMs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from .base import Prior
from .covariance import CovPrior, Gamma, InvGamma, InvWishart, Wishart, _ScalarPrior
from .fixef import Normal, Point, StudentT, _resid_scalar

if TYPE_CHECKING:
    from ..design import Design
    from ..remat import ThetaMap

__all__ = ["Priors", "SigmaTerms", "resolve"]


# ----- the priors of a model ----------------------------------------------------------------
@dataclass(frozen=True)
class SigmaTerms:
    """A penalty as a function of sigma: constant + log_sigma2 log sigma^2 + sum c_k sigma^k."""

    constant: float
    log_sigma2: float
    powers: dict[int, float]

    def value(self, sigma: float) -> float:
        return (
            self.constant
            + self.log_sigma2 * math.log(sigma * sigma)
            + sum(c * sigma**k for k, c in self.powers.items())
        )


_ONE = np.ones((1, 1))


@dataclass(frozen=True, eq=False)
class Priors:
    """The resolved priors of a model: one covariance prior (or None) per random-effects term in
    lme4's order, the fixed-effects and the residual prior.

    Made by ``resolve``; ``hmix.blmer`` and ``hmix.bglmer`` record it in the fitted model
    (``model.priors``), and refits (bootstrap, cross-validation, profiles) keep it.
    """

    cov: tuple[CovPrior | None, ...]
    groups: tuple[str, ...]
    fixef: Normal | StudentT | None
    resid: Point | _ScalarPrior | None
    glmm: bool

    def lines(self) -> list[str]:
        """blme's description of the priors (its summary's first lines)."""
        out = [f"{g} ~ {c.describe()}" for g, c in zip(self.groups, self.cov) if c is not None]
        lines = [("Cov prior  : " if i == 0 else "           : ") + s for i, s in enumerate(out)]
        if self.fixef is not None:
            lines.append(f"Fixef prior: {self.fixef.describe()}")
        if self.resid is not None:
            text = (
                self.resid.text(common=False)
                if isinstance(self.resid, _ScalarPrior)
                else self.resid.describe()
            )
            lines.append(f"Resid prior: {text}")
        return lines

    def __repr__(self) -> str:
        return "\n".join(self.lines()) or "no priors"

    # ----- linear mixed models ------------------------------------------------------------
    @property
    def fixed_sigma(self) -> float | None:
        """sigma's value under a point prior, else None."""
        return self.resid.value if isinstance(self.resid, Point) else None

    @property
    def sigma_profile(self) -> str:
        """How sigma is found at each theta (blme's types): ``"fixed"`` (a point prior),
        ``"linear"`` (sigma^2 in closed form, as without priors), ``"sq_quadratic"`` /
        ``"quadratic"`` (a root of a quadratic in sigma^2 / sigma), or ``"numeric"`` (optimized
        with theta)."""
        if self.fixed_sigma is not None:
            return "fixed"
        if isinstance(self.fixef, Normal) and not self.fixef.common_scale:
            return "numeric"  # the pseudo-data on X'X scale with sigma
        powers = {c.sigma_power for c in self.cov if c is not None}
        if isinstance(self.resid, _ScalarPrior):
            powers.add(self.resid.sigma_power)
        extra = powers - {0, -2}
        if not extra:
            return "linear"
        if extra == {2}:
            return "sq_quadratic"
        if extra == {-1}:
            return "quadratic"
        return "numeric"

    def xtx(self, sigma: float) -> np.ndarray | None:
        """What a Normal prior adds to X'WX (its precision; times sigma^2 on the absolute scale)."""
        if not isinstance(self.fixef, Normal):
            return None
        P = self.fixef.precision
        return P if self.fixef.common_scale else sigma * sigma * P

    def sigma_terms(self, tmats: Sequence[np.ndarray]) -> SigmaTerms:
        """The penalty at these relative factors T as a function of sigma, beyond a Normal
        prior's quadratic form in beta (the pseudo-data of ``xtx`` carry that)."""
        const, log_s2 = 0.0, 0.0
        powers: dict[int, float] = {}
        scalars: list[tuple[Any, np.ndarray]] = [(c, T) for c, T in zip(self.cov, tmats) if c is not None]
        if isinstance(self.resid, _ScalarPrior):
            scalars.append((self.resid, _ONE))  # (on sigma itself: T = 1, its polynomial part is 0)
        for prior, T in scalars:
            const += prior.polynomial(T) + prior.constant
            log_s2 += prior.df_adjustment
            k = prior.sigma_power
            if k == 0:
                const += prior.exponential(T)
            else:
                powers[k] = powers.get(k, 0.0) + prior.exponential(T)
        if isinstance(self.fixef, Normal):
            const += self.fixef.constant
            log_s2 += self.fixef.df_adjustment
        return SigmaTerms(const, log_s2, powers)

    # ----- generalized linear mixed models --------------------------------------------------
    def glmm_penalty(self, thetamap: ThetaMap) -> Any:
        """The penalty over (theta, beta) with its gradient, for ``GLMMObjective(penalty=)``."""
        terms = thetamap.terms
        nth = thetamap.ntheta

        def penalty(params: np.ndarray) -> tuple[float, np.ndarray]:
            theta, beta = params[:nth], params[nth:]
            value = 0.0
            g_lam = np.zeros(thetamap.nlam)
            with np.errstate(divide="ignore", invalid="ignore"):
                for t, prior, sl, ls in zip(terms, self.cov, thetamap.slices, thetamap.lam_slices):
                    if prior is None:
                        continue
                    T = t.cov.tmat(theta[sl])
                    value += prior.polynomial(T) + prior.exponential(T) + prior.constant
                    g_lam[ls] = prior.gradient(T)[t.cov.pattern]
            J = thetamap.lam_jacobian(theta)
            g_theta = g_lam if J is None else J.T @ g_lam
            g_beta = np.zeros(len(beta))
            if self.fixef is not None:
                v, g_beta = self.fixef.value_grad(beta)
                value += v
            if not math.isfinite(value):
                value = math.inf
            return value, np.concatenate([g_theta, g_beta])

        return penalty


_COV = {"wishart": Wishart, "invwishart": InvWishart, "gamma": Gamma, "invgamma": InvGamma}
_ALIASES = {"inverse.wishart": "invwishart", "inverse.gamma": "invgamma", "flat": None}


def _named(value: Any, table: Mapping[str, Any], what: str) -> Any:
    """A prior object from a prior, a name (its defaults) or None/"flat" (no prior)."""
    if value is None or isinstance(value, Prior):
        return value
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _ALIASES and _ALIASES[key] is None:
            return None
        key = _ALIASES.get(key) or key
        if key in table:
            return table[key]()
        raise DataError(f"unknown {what} {value!r}; use one of {', '.join(map(repr, table))}, 'flat' or None")
    raise DataError(f"a {what} must be a prior (hmix.priors), its name or None, not {type(value).__name__}")


def resolve(
    design: Design,
    cov_prior: Any = "wishart",
    fixef_prior: Any = None,
    resid_prior: Any = None,
    *,
    glmm: bool,
) -> Priors:
    """The priors of a model on ``design``, with blme's defaults filled in.

    Parameters
    ----------
    design : Design
    cov_prior : prior, str, dict or None
        One prior (or its name: ``"wishart"``, ``"invwishart"``, ``"gamma"``, ``"invgamma"``) for
        every random-effects term, or a dict from grouping-factor names to priors (terms of the
        groups it does not name get none); None or ``"flat"``: no prior.
    fixef_prior : Normal, StudentT, ``"normal"``, ``"t"`` or None
    resid_prior : Point, InvGamma, Gamma, ``"invgamma"``, ``"gamma"`` or None
        LMMs only.
    glmm : bool
        Resolve for a GLMM (blme's GLMM defaults; no residual prior).

    Examples
    --------
    >>> import hmix
    >>> d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> resolve(d, "wishart", glmm=False)
    Cov prior  : Subject ~ wishart(df = 4.5, scale = Inf, posterior.scale = cov, common.scale = TRUE)
    """
    terms = design.terms
    groups = tuple(t.group for t in terms)
    if isinstance(cov_prior, Mapping):
        unknown = [g for g in cov_prior if g not in groups]
        if unknown:
            raise DataError(
                f"cov_prior names grouping factors the model does not have: {', '.join(map(repr, unknown))}; "
                f"its grouping factors are {', '.join(map(repr, dict.fromkeys(groups)))}"
            )
        chosen = [_named(cov_prior.get(g), _COV, "covariance prior") for g in groups]
    else:
        chosen = [_named(cov_prior, _COV, "covariance prior")] * len(terms)
    for c in chosen:
        if c is not None and not isinstance(c, CovPrior):
            raise DataError(
                f"{type(c).__name__} is not a covariance prior; use Wishart, InvWishart, Gamma or InvGamma"
            )
    cov = tuple(None if c is None else c.resolve(t.k, glmm) for c, t in zip(chosen, terms))
    fixef = _named(fixef_prior, {"normal": Normal, "t": StudentT}, "fixed-effects prior")
    if fixef is not None:
        if not isinstance(fixef, (Normal, StudentT)):
            raise DataError(f"{type(fixef).__name__} is not a fixed-effects prior; use Normal or StudentT")
        if design.p == 0:
            raise DataError("the model has no fixed effects to put a prior on; drop fixef_prior")
        fixef = fixef.resolve(design.fixef_names, glmm)
    resid = _named(resid_prior, {"gamma": Gamma, "invgamma": InvGamma, "point": Point}, "residual prior")
    if resid is not None:
        if glmm:
            raise DataError("a GLMM has no residual variance: drop resid_prior (it is for blmer)")
        if isinstance(resid, Point):
            resid = resid.resolve()
        elif isinstance(resid, _ScalarPrior):
            resid = _resid_scalar(resid)
        else:
            raise DataError(f"{type(resid).__name__} is not a residual prior; use Point, InvGamma or Gamma")
    return Priors(cov, groups, fixef, resid, glmm)
