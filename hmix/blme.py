"""Penalized fits with priors on the parameters, R's blme: ``blmer`` and ``bglmer``.

The LMM's penalized criterion is blme's ``blmer`` objective: lme4's REML criterion or deviance
at (theta, beta, sigma) plus the priors' -2 log-density (``hmix.priors``). A Normal prior on the
fixed effects is pseudo-data: its precision is added to the X'WX block of the engine's
statistics, so beta still comes out of the factor; sigma is profiled in closed form where blme
does (a root of a linear or quadratic equation), fixed by a point prior, or else optimized with
theta. The GLMM adds the penalty and its gradient to the Laplace deviance over (theta, beta).

The fitted model's ``objective`` is the criterion without the prior (blme's ``REMLcrit`` /
``deviance``, at the penalized estimates), ``penalty`` the prior's part (blme's "Prior dev"),
and ``penalized_objective`` their sum, what the optimizer minimized.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from .checks import check_flag
from .design import ArrayLike, Design, build_design
from .engine import Blocks, Factor
from .errors import HmixError
from .families import Family
from .lmm import LMMObjective, check_lmm
from .priors import Priors, SigmaTerms, resolve
from .results import GeneralizedLinearMixedModel, LinearMixedModel

__all__ = ["blmer", "bglmer", "PenalizedLMM", "BlmmProfiler"]

# the profile's deviance where the prior's density vanishes: far beyond any quantile, finite so
# that the root finder can bracket the interval's end
_OUTSIDE = 1e12


class PenalizedLMM(LMMObjective):
    """The penalized criterion of an LMM as a function of ``params``: theta, then sigma when the
    priors keep it from profiling out (``priors.sigma_profile == "numeric"``).

    Examples
    --------
    >>> import hmix
    >>> from hmix.priors import resolve
    >>> d = hmix.build_design("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff2"))
    >>> f = PenalizedLMM(d, REML=True, priors=resolve(d, "wishart", glmm=False))
    >>> round(f([0.410557794385529]), 6)  # blme's penalized REML criterion at its optimum
    166.140707
    """

    def __init__(self, design: Design, REML: bool, priors: Priors, rule: Any = None):
        super().__init__(design, REML=REML, rule=rule)
        self.priors: Priors = priors
        self.mode = priors.sigma_profile
        self.ntheta = self.thetamap.ntheta
        self._y = self._response(design.y)
        self._base: Blocks | None = None  # the statistics without the pseudo-data, once needed
        self._xtx_at: float | None = None
        if self.mode == "numeric":
            # sigma starts at its profiled value without the priors, at theta's start
            _, _, r2 = self.engine.objective_parts(self.thetamap.lam(self.theta0))
            sigma0 = math.sqrt(max(r2, 1e-12) / self._dof)
            self.theta0 = np.r_[self.theta0, sigma0]
            self.lower = np.r_[self.lower, 0.0]
            self.upper = np.r_[self.upper, np.inf]
            self.scale_mask = np.r_[self.scale_mask, False]
        self._set_xtx(1.0)

    @property
    def _dof(self) -> int:
        d = self.design
        return d.n - d.p if self.REML else d.n

    def _set_xtx(self, sigma: float) -> None:
        """The statistics with the Normal prior's pseudo-data (refilled when sigma moves it)."""
        P = self.priors.xtx(sigma)
        key = 1.0 if self.mode != "numeric" else sigma
        if P is None or self._xtx_at == key:
            return
        if self._base is None:
            d = self.design
            self._base = self.engine.statistics(d.X, self._y, d.weights)
        xy = self._base.xy.copy()
        p = self.design.p
        xy[:p, :p] += P
        self.engine.set_blocks(replace(self._base, xy=xy))
        self._xtx_at = key

    def set_response(self, y: np.ndarray) -> None:
        """Evaluate for another response on the same design (bootstrap refits)."""
        self._y = self._response(np.asarray(y, dtype=float))
        self._base, self._xtx_at = None, None
        if self.priors.xtx(1.0) is None:
            super().set_response(y)
        else:
            self._set_xtx(1.0)

    def split(self, params: ArrayLike) -> tuple[np.ndarray, float | None]:
        """theta and the optimized sigma (None when sigma is profiled or fixed)."""
        x = np.asarray(params, dtype=float)
        if self.mode == "numeric":
            return x[: self.ntheta], float(x[self.ntheta])
        return x, None

    @property
    def param_scale(self) -> np.ndarray:
        """theta's scale (``ThetaMap.scale``), and sigma as it is."""
        scale = self.thetamap.scale * self.weight_scale
        return np.r_[scale, 1.0] if self.mode == "numeric" else scale

    def params_at(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        """The parameter vector of a fit at theta and sigma (a refit's start)."""
        return np.r_[theta, sigma] if self.mode == "numeric" else np.asarray(theta, dtype=float)

    def profile_sigma(self, r2: float, terms: SigmaTerms) -> float:
        """sigma minimizing the penalized criterion with the rest held (blme's closed forms)."""
        fixed = self.priors.fixed_sigma
        if fixed is not None:
            return fixed
        m = self._dof + terms.log_sigma2
        R = r2 + terms.powers.get(-2, 0.0)
        if m <= 0 or R <= 0:
            return math.nan
        a2, a1 = terms.powers.get(2, 0.0), terms.powers.get(-1, 0.0)
        if a2 > 0:
            return math.sqrt((math.sqrt(m * m + 4.0 * R * a2) - m) / (2.0 * a2))
        if a1 > 0:
            return 0.25 * (math.sqrt(a1 * a1 + 16.0 * m * R) + a1) / m
        return math.sqrt(R / m)

    def evaluate(
        self, theta: np.ndarray, sigma: float | None, logdet_z: float, logdet_x: float, r2: float
    ) -> tuple[float, float, SigmaTerms]:
        """The penalized criterion, sigma and the prior's terms at theta, given the factor's
        parts, at ``sigma`` (None: sigma profiled, or fixed by a point prior)."""
        terms = self.priors.sigma_terms(self.thetamap.tmats(theta))
        s = self.profile_sigma(r2, terms) if sigma is None else sigma
        if not s > 0 or not math.isfinite(terms.constant):
            return math.inf, s, terms
        crit = self.deviance(logdet_z, logdet_x if self.REML else 0.0, r2, s)
        return crit + terms.value(s), s, terms

    def __call__(self, params: ArrayLike) -> float:
        theta, sigma = self.split(params)
        if sigma is not None:
            if not sigma > 0:
                return math.inf
            self._set_xtx(sigma)
        parts = self.engine.objective_parts(self.thetamap.lam(theta))
        return self.evaluate(theta, sigma, *parts)[0]

    def factor(self, params: ArrayLike) -> Factor:
        """The engine's factor at params (with the prior's pseudo-data at their sigma)."""
        theta, sigma = self.split(params)
        if sigma is not None:
            self._set_xtx(sigma)
        return self.engine.factor(self.thetamap.lam(theta))

    def estimates(self, params: ArrayLike) -> tuple[np.ndarray, float, Factor]:
        """theta, sigma and the factor at params."""
        theta, sigma = self.split(params)
        fac = self.factor(params)
        return theta, self.evaluate(theta, sigma, fac.logdet_z, fac.logdet_x, fac.r2)[1], fac

    def criterion(self, params: ArrayLike, fac: Factor) -> tuple[float, float]:
        """blme's reported criterion (REML or deviance without the prior, at the penalized
        estimates; with a Normal prior R_X is that of X'WX plus the prior's precision, as blme's)
        and the penalty, given the factor at params."""
        theta, given = self.split(params)
        value, sigma, _ = self.evaluate(theta, given, fac.logdet_z, fac.logdet_x, fac.r2)
        P = self.priors.xtx(sigma)
        pwrss = fac.r2 - (0.0 if P is None else float(fac.beta @ P @ fac.beta))
        crit = self.deviance(fac.logdet_z, fac.logdet_x if self.REML else 0.0, pwrss, sigma)
        return crit, value - crit


class BlmmProfiler:
    """The penalized ML criterion of an ML ``blmer`` fit with one parameter held, minimized over
    the others (``confint(method="profile")``): the variance parameters on the sd/cor scale and
    sigma (held at a point prior's value), then each fixed effect.

    A fixed effect is held by the quadratic form of the factor: with beta_j = v and the other
    fixed effects at their conditional optimum, the penalized residual sum of squares rises by
    (v - beta_j)^2 / [(L_XX L_XX')^-1]_jj, a Normal prior's pseudo-data included.
    """

    def __init__(self, model: LinearMixedModel):
        from .confint import sdcor_bounds_of

        assert model.priors is not None and not model.REML
        self.model = model
        self.f = PenalizedLMM(model.design, False, model.priors)
        self.names = model.varpar_names()
        self.hat = model.varpar()
        self.lo, self.hi = sdcor_bounds_of(model)
        if self.f.mode == "fixed":
            self.lo[-1] = self.hi[-1] = self.hat[-1]
        self._cor = (self.lo == -1.0) & (self.hi == 1.0)
        self.dev_hat = self._vp_dev(self.hat)

    def _vp_dev(self, vp: np.ndarray) -> float:
        from .engine import NotPositiveDefinite
        from .results import theta_from_sdcor

        sigma = self.model.sigma if self.f.mode == "fixed" else float(vp[-1])
        if not sigma > 0:
            return math.inf
        try:
            theta = theta_from_sdcor(vp[:-1], sigma, self.f.thetamap)
        except NotPositiveDefinite:
            # a correlation of exactly +-1 (the profile reaching its bound): just inside it
            inside = np.where(self._cor, vp * (1 - 1e-9), vp)
            theta = theta_from_sdcor(inside[:-1], sigma, self.f.thetamap)
        fac = self.f.factor(self.f.params_at(theta, sigma))
        return self._ml(theta, sigma, fac.logdet_z, fac.r2)

    def _ml(self, theta: np.ndarray, sigma: float | None, logdet_z: float, r2: float) -> float:
        return self.f.evaluate(theta, sigma, logdet_z, 0.0, r2)[0]

    def varpar_profile(self, j: int) -> Any:
        from .confint import fix_one

        inner = fix_one(self._vp_dev, self.hat, self.lo, self.hi, j)

        def profile(v: float) -> float:
            try:
                return inner(v)
            except HmixError:  # where the prior's density is 0 (an SD of 0 under a Gamma prior)
                return self.dev_hat + _OUTSIDE

        return profile

    def beta_profile(self, j: int) -> Any:
        from .confint import inner_min

        f = self.f
        start = {"x": f.params_at(self.model.theta, self.model.sigma)}

        def at(x: np.ndarray, v: float) -> float:
            theta, sigma = f.split(x)
            if sigma is not None and not sigma > 0:
                return math.inf
            fac = f.factor(x)
            r2 = fac.r2 + (v - fac.beta[j]) ** 2 / fac.xtx_inv()[j, j]
            return self._ml(theta, sigma, fac.logdet_z, r2)

        def profile(v: float) -> float:
            x, val = inner_min(lambda x: at(x, v), start["x"], f.lower, f.upper)
            start["x"] = x
            return val

        return profile


def blmer(
    formula: str,
    data: pd.DataFrame,
    *,
    REML: bool = True,
    cov_prior: Any = "wishart",
    fixef_prior: Any = None,
    resid_prior: Any = None,
    weights: ArrayLike | None = None,
    offset: ArrayLike | None = None,
    check_conv: bool = True,
) -> LinearMixedModel:
    """Fit a linear mixed model with priors on its parameters, as R's blme ``blmer`` does.

    The estimates maximize the likelihood (or REML criterion) times the priors: blme's default, a
    Wishart prior on each term's covariance (df = columns + 2.5, scale = inf), keeps variances off
    zero and correlations off +-1 where ``lmer`` reports a singular fit, without pulling
    well-estimated ones.

    Parameters
    ----------
    formula, data, REML, weights, offset, check_conv
        As for ``hmix.lmer``.
    cov_prior : prior, str, dict or None, default "wishart"
        ``hmix.priors.Wishart``, ``InvWishart``, ``Gamma``, ``InvGamma`` (or their names, with
        blme's defaults) for every term; a dict from grouping-factor names to priors for some
        terms only; None for none.
    fixef_prior : hmix.priors.Normal, "normal" or None
        On the fixed effects (blme's default normal: sd 10 for the first, 2.5 for the others,
        relative to sigma).
    resid_prior : hmix.priors.Point, InvGamma, Gamma or None
        On the residual: ``Point(value)`` fixes sigma.

    Returns
    -------
    LinearMixedModel
        ``objective`` is the criterion without the priors (blme's), ``penalty`` their -2
        log-density, ``penalized_objective`` the sum; ``priors`` the priors used.

    Examples
    --------
    >>> import hmix
    >>> d2 = hmix.datasets.load("Dyestuff2")
    >>> m = hmix.blmer("Yield ~ 1 + (1 | Batch)", d2)  # lmer's fit is singular here
    >>> round(float(m.varcorr["sdcor"][0]), 4), m.singular
    (1.4887, False)
    >>> round(m.objective, 4), round(m.penalty, 4)  # blme's REML criterion and prior deviance
    (163.47, 2.6707)
    """
    REML = check_flag(REML, "REML")
    check_conv = check_flag(check_conv, "check_conv")
    design = build_design(formula, data, weights=weights, offset=offset)
    from .checks import check_lmer_response

    check_lmer_response(design)
    check_lmm(design)
    priors = resolve(design, cov_prior, fixef_prior, resid_prior, glmm=False)
    from .fit import fit_lmm

    name = str(data.attrs.get("name", "data"))
    return fit_lmm(design, REML=REML, check_conv=check_conv, data_name=name, priors=priors)


def bglmer(
    formula: str,
    data: pd.DataFrame,
    *,
    family: str | Family = "binomial",
    link: str | None = None,
    cov_prior: Any = "wishart",
    fixef_prior: Any = None,
    nAGQ: int = 1,
    weights: ArrayLike | None = None,
    offset: ArrayLike | None = None,
    vcov_method: str = "hessian",
    check_conv: bool = True,
) -> GeneralizedLinearMixedModel:
    """Fit a generalized linear mixed model with priors, as R's blme ``bglmer`` does.

    The optimizer minimizes the Laplace (or quadrature) deviance plus the priors' -2 log-density
    over (theta, beta), with its exact gradient.

    Parameters
    ----------
    formula, data, family, link, nAGQ, weights, offset, vcov_method, check_conv
        As for ``hmix.glmer``.
    cov_prior : prior, str, dict or None, default "wishart"
        As for ``blmer`` (blme's GLMM defaults for ``InvWishart`` and ``InvGamma``).
    fixef_prior : hmix.priors.Normal, StudentT, "normal", "t" or None
        On the fixed effects, on their own scale (blme's default normal: sd 10 for the first,
        2.5 for the others). Needs nAGQ >= 1.

    Returns
    -------
    GeneralizedLinearMixedModel
        ``objective`` is the deviance without the priors, ``penalty`` their -2 log-density.

    Examples
    --------
    >>> import hmix
    >>> cbpp = hmix.datasets.load("cbpp")
    >>> g = hmix.bglmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    >>> round(float(g.theta[0]), 3), round(g.penalized_objective, 3)  # blme: 0.719, 185.210
    (0.719, 185.21)
    """
    from .fit import check_glmm, fit_glmm, glmm_arguments

    design, fam, nAGQ, check_conv = glmm_arguments(
        formula, data, family, link, nAGQ, weights, offset, vcov_method, check_conv
    )
    check_glmm(design, fam)
    priors = resolve(design, cov_prior, fixef_prior, glmm=True)
    name = str(data.attrs.get("name", "data"))
    return fit_glmm(
        design, fam, nAGQ=nAGQ, vcov_method=vcov_method, check_conv=check_conv, data_name=name, priors=priors
    )
