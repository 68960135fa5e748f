"""Confidence intervals: Wald, likelihood profile and parametric bootstrap.

Rows are named as lme4's ``confint`` names them: ``sd_(Intercept)|Subject``,
``cor_Days.(Intercept)|Subject``, ``sigma``, then the fixed effects.

The profile follows lme4's ``profile``: the variance parameters on the standard-deviation and
correlation scale (and sigma), each fixed in turn while the criterion the model was fitted with
(REML or ML) is minimized over the others; a fixed effect is fixed by moving its column into the
offset and the maximum-likelihood deviance is minimized over theta with the other fixed effects
and sigma profiled. The interval ends are where the signed square root of the rise in deviance
reaches the normal quantile. For a GLMM the Laplace (or quadrature) deviance is profiled over
the sd/cor parameters and the fixed effects together, as lme4 does.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import replace
from functools import singledispatch
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm

from ._progress import progress as with_progress
from .engine import NotPositiveDefinite
from .errors import DataError, HmixError
from .glmm import GLMMObjective
from .lmm import LMMObjective
from .optimize import hessian_from_gradient, minimize
from .results import GeneralizedLinearMixedModel, LinearMixedModel, MixedModel, theta_from_sdcor

__all__ = ["confint", "interval_frame", "sdcor_bounds_of", "inner_min", "fix_one"]


# ----- Wald ---------------------------------------------------------------------------------
def _wald(model: MixedModel, level: float) -> pd.DataFrame:
    """Estimate +- z SE for the fixed effects (and a GLMM's zero-inflation coefficients, and its
    estimated dispersion on the log scale); NaN for the variance parameters, as lme4."""
    z = norm.ppf(0.5 + level / 2)
    se = model.std_errors
    names = model.varpar_names()
    lo, hi = _wald_varpar(model, z, len(names))
    out_names = names + list(model.fixef.index)
    lo, hi = np.r_[lo, model.fixef - z * se], np.r_[hi, model.fixef + z * se]
    if isinstance(model, GeneralizedLinearMixedModel):
        extra_se = model.extra_se()
        if model.dispersion_estimated:  # sigma = exp(power * log dispersion)
            power = model.family.sigma_power
            log_sigma, half = np.log(model.sigma), power * z * extra_se[0]
            lo[len(names) - 1], hi[len(names) - 1] = np.exp(log_sigma - half), np.exp(log_sigma + half)
        if model.zi_beta is not None:
            zse = extra_se[int(model.dispersion_estimated) :]
            out_names += model.zi_names
            lo, hi = np.r_[lo, model.zi_beta - z * zse], np.r_[hi, model.zi_beta + z * zse]
    return interval_frame(out_names, lo, hi, level)


def _wald_varpar(model: MixedModel, z: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Wald intervals of the variance parameters where a structure defines one (the rho of
    cs() and ar1() terms, from theta's covariance); NaN elsewhere, as lme4."""
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    terms = model.design.terms
    if not any(t.cov.has_rho for t in terms):
        return lo, hi
    V = _theta_vcov(model)
    if V is None:
        return lo, hi
    start = 0
    for t, sl in zip(terms, model.thetamap.slices):
        end = start + len(t.cov.sdcor_pattern[0])
        lo[start:end], hi[start:end] = t.cov.sdcor_wald(model.theta[sl], V[sl, sl], z)
        start = end
    return lo, hi


def _theta_vcov(model: MixedModel) -> np.ndarray | None:
    """theta's covariance, 2 H^-1 from the Hessian of the fitted criterion (the inverse of the
    Hessian with beta and sigma profiled is theta's block of the full inverse); None for a GLMM
    fitted without the Laplace approximation's exact gradient (nAGQ != 1)."""
    k = len(model.theta)
    if isinstance(model, LinearMixedModel):
        from .ddf import varpar_vcov

        return varpar_vcov(model)[:k, :k]
    if not isinstance(model, GeneralizedLinearMixedModel) or model.nAGQ != 1:
        return None
    if model.vcov_params is not None:  # (the fit's own Hessian over all its parameters)
        return model.vcov_params[:k, :k]
    obj = GLMMObjective(model.design, model.family, 1)
    x = np.r_[model.theta, model.beta]
    _, g = obj.value_and_gradient(x)
    H = hessian_from_gradient(obj.value_and_gradient, x, g)
    return None if H is None else 2.0 * np.linalg.pinv(H)[:k, :k]


def interval_frame(names: list[str], lo: np.ndarray, hi: np.ndarray, level: float) -> pd.DataFrame:
    """Intervals as lme4's ``confint`` shows them: rows named, columns ``2.5 %`` and ``97.5 %``."""
    a = (1 - level) / 2
    return pd.DataFrame(
        {f"{100 * a:.3g} %": lo, f"{100 * (1 - a):.3g} %": hi}, index=pd.Index(names, name="parameter")
    )


# ----- profile ------------------------------------------------------------------------------
def sdcor_bounds_of(model: MixedModel) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the sd/cor parameters (and sigma's, for a model with one)."""
    parts = [t.cov.sdcor_bounds() for t in model.design.terms]
    lo = np.concatenate([p[0] for p in parts] + ([np.zeros(1)] if model.has_scale else []))
    hi = np.concatenate([p[1] for p in parts] + ([np.full(1, np.inf)] if model.has_scale else []))
    return lo, hi


def inner_min(
    f: Callable[[np.ndarray], float], x0: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, float]:
    """The profile's inner minimization: BOBYQA within the bounds (``hmix.optimize.minimize``,
    its failure policy), from the last point of the profile."""
    if len(x0) == 0:
        return x0, f(x0)
    x0 = np.clip(x0, lo, hi)
    try:
        f0 = f(x0)
    except NotPositiveDefinite:
        f0 = np.inf
    if not np.isfinite(f0):  # a value the model cannot take (sigma at 0): no deviance there
        return x0, np.inf
    x, fmin, _, _ = minimize(
        f,
        x0,
        lo,
        upper=hi,
        ftol_rel=0.0,
        ftol_abs=1e-10,
        xtol_abs=0.0,
        xtol_rel=1e-8,
        maxeval=2000,
        initial_step=np.maximum(0.05 * np.abs(x0), 0.01),
    )
    return x, fmin


def fix_one(
    dev: Callable[[np.ndarray], float], hat: np.ndarray, lo: np.ndarray, hi: np.ndarray, j: int
) -> Callable[[float], float]:
    """v -> min of ``dev`` over the other parameters with parameter j at v (warm-started)."""
    others = np.arange(len(hat)) != j
    start = {"x": hat[others].copy()}

    def f(v: float) -> float:
        def inner(x: np.ndarray) -> float:
            full = hat.copy()
            full[others] = x
            full[j] = v
            return dev(full)

        x, val = inner_min(inner, start["x"], lo[others], hi[others])
        start["x"] = x
        return val

    return f


class _Profiler:
    """The ML deviance with one parameter held fixed, minimized over the others (of an ML fit)."""

    def __init__(self, model: LinearMixedModel):
        self.model = model
        self.f = LMMObjective(model.design, REML=False)
        self.names = model.varpar_names()
        self.hat = model.varpar()
        self.dev_hat = self._vp_dev(self.hat)
        self.lo, self.hi = sdcor_bounds_of(model)

    def _vp_dev(self, vp: np.ndarray) -> float:
        sigma = vp[-1]
        if sigma <= 0:
            return np.inf
        fac = self.f.factor(theta_from_sdcor(vp[:-1], sigma, self.f.thetamap))
        return self.f.deviance(fac.logdet_z, 0.0, fac.r2, sigma)

    def varpar_profile(self, j: int) -> Callable[[float], float]:
        return fix_one(self._vp_dev, self.hat, self.lo, self.hi, j)

    def beta_profile(self, j: int) -> Callable[[float], float]:
        """The deviance with beta_j fixed: its column moves into the response."""
        d = self.model.design
        keep = np.arange(d.p) != j
        names = tuple(n for n, k in zip(d.fixef_names, keep) if k)
        f = LMMObjective(replace(d, X=d.X[:, keep], fixef_names=names), REML=False)
        start = {"x": self.model.theta.copy()}

        def profile(v: float) -> float:
            f.set_response(d.y - d.X[:, j] * v)
            x, val = inner_min(f, start["x"], f.lower, f.upper)
            start["x"] = x
            return val

        return profile


def _interval(
    f: Callable[[float], float], hat: float, dev_hat: float, scale: float, lo: float, hi: float, z: float
) -> tuple[float, float]:
    """Where sign(v - hat) sqrt(f(v) - dev_hat) crosses -z and +z; a bound when it never does."""

    seen: dict[float, float] = {}

    def zeta(v: float) -> float:
        # remembered: the profile warm-starts its inner fits, so a second evaluation at v can
        # differ, and brentq must find the bracket's signs where the search found them; capped
        # (and NaN, outside the model's domain, as infinite): brentq needs finite values
        if v not in seen:
            d = f(v) - dev_hat
            d = 1e12 if np.isnan(d) else min(max(d, 0.0), 1e12)
            seen[v] = float(np.sign(v - hat) * np.sqrt(d))
        return seen[v]

    out = []
    for side in (-1, 1):
        bound = lo if side < 0 else hi
        step = scale
        a = hat
        b = hat + side * step
        found = None
        for _ in range(40):
            if (side < 0 and b <= bound) or (side > 0 and b >= bound):
                b = bound
                if not np.isfinite(b):
                    break
                if abs(zeta(b)) < z:
                    found = b
                    break
            zb = zeta(b)
            if abs(zb) >= z:
                found = brentq(
                    lambda v: abs(zeta(v)) - z, min(a, b), max(a, b), xtol=1e-10 * max(1.0, abs(b))
                )
                break
            if b == bound:
                found = b
                break
            a, step = b, step * 2
            b = hat + side * step
        out.append(np.nan if found is None else float(found))
    return out[0], out[1]


class _GlmmProfiler:
    """The GLMM deviance over (sd/cor, sigma when the dispersion is estimated, beta, the
    zero-inflation coefficients), one parameter fixed and the others minimized."""

    def __init__(self, model: GeneralizedLinearMixedModel):
        d = model.design
        family = model.devfun.family if model.devfun is not None else model.family
        zi = None if model.zi is None else model.zi.X
        penalty = None if model.priors is None else model.priors.glmm_penalty(model.thetamap)
        self.obj = GLMMObjective(d, family, max(int(model.nAGQ), 1), penalty=penalty, zi=zi)
        vnames = model.varpar_names()
        self.nsd = len(vnames) - int(model.dispersion_estimated)
        self.nv = len(vnames)
        self.power = model.family.sigma_power
        self.p = d.p
        zi_beta = np.zeros(0) if model.zi_beta is None else model.zi_beta
        self.names = vnames + list(model.fixef.index) + model.zi_names
        self.hat = np.r_[model.varpar(), model.beta, zi_beta]
        vlo, vhi = sdcor_bounds_of(model)
        if model.dispersion_estimated:
            vlo, vhi = np.r_[vlo, 0.0], np.r_[vhi, np.inf]
        nfree = d.p + len(zi_beta)
        self.lo = np.r_[vlo, np.full(nfree, -np.inf)]
        self.hi = np.r_[vhi, np.full(nfree, np.inf)]
        extra_se = model.extra_se()[int(model.dispersion_estimated) :]
        self.scale = np.r_[
            [0.25 * h if n.startswith(("sd_", "sigma")) and h > 0 else 0.1 for n, h in zip(vnames, self.hat)],
            0.5 * model.std_errors.to_numpy(),
            0.5 * np.where(np.isfinite(extra_se), extra_se, 1.0),
        ]
        self.dev_hat = self.deviance(self.hat)

    def deviance(self, x: np.ndarray) -> float:
        theta = theta_from_sdcor(x[: self.nsd], 1.0, self.obj.thetamap)
        rest = x[self.nv :]
        extra = rest[self.p :]
        if self.nv > self.nsd:  # sigma -> the log dispersion
            if x[self.nsd] <= 0:
                return np.inf
            extra = np.r_[np.log(x[self.nsd]) / self.power, extra]
        return float(self.obj(np.r_[theta, rest[: self.p], extra]))

    def profile(self, j: int) -> Callable[[float], float]:
        return fix_one(self.deviance, self.hat, self.lo, self.hi, j)


@singledispatch
def _profile(model: MixedModel, level: float, parm: list[str] | None, progress: bool | None) -> pd.DataFrame:
    """Profile intervals of the parameters (those named in ``parm``; NaN for the others)."""
    raise HmixError(f"no profile intervals for a {type(model).__name__}")


@_profile.register
def _(
    model: GeneralizedLinearMixedModel, level: float, parm: list[str] | None, progress: bool | None
) -> pd.DataFrame:
    z = float(norm.ppf(0.5 + level / 2))
    gp = _GlmmProfiler(model)
    lo, hi = [], []
    for j in with_progress(range(len(gp.hat)), len(gp.hat), "profile", progress):
        if parm is not None and gp.names[j] not in parm:
            lo.append(np.nan)
            hi.append(np.nan)
            continue
        a, b = _interval(gp.profile(j), gp.hat[j], gp.dev_hat, gp.scale[j], gp.lo[j], gp.hi[j], z)
        lo.append(a)
        hi.append(b)
    return interval_frame(gp.names, np.array(lo), np.array(hi), level)


@_profile.register
def _(model: LinearMixedModel, level: float, parm: list[str] | None, progress: bool | None) -> pd.DataFrame:
    z = float(norm.ppf(0.5 + level / 2))
    ml = model.refit_ml()  # lme4 profiles the ML deviance, REML fits too
    pr: Any = _Profiler(ml)
    if ml.priors is not None:  # (a blmer fit: its penalized criterion)
        from .blme import BlmmProfiler

        pr = BlmmProfiler(ml)
    target = ml.penalized_objective
    if abs(pr.dev_hat - target) > 1e-6 * max(1.0, abs(target)):
        raise HmixError("the profile's deviance does not reproduce the fit's; refit the model")
    lo, hi = [], []
    total = len(pr.names) + len(ml.beta)
    bar = iter(with_progress(range(total), total, "profile", progress))
    for j, name in enumerate(pr.names):
        next(bar, None)
        if parm is not None and name not in parm:
            lo.append(np.nan)
            hi.append(np.nan)
            continue
        h = pr.hat[j]
        scale = 0.25 * abs(h) if name.startswith(("sd_", "sigma")) and h > 0 else 0.1
        a, b = _interval(pr.varpar_profile(j), h, pr.dev_hat, scale, pr.lo[j], pr.hi[j], z)
        lo.append(a)
        hi.append(b)
    for j, (b_hat, se) in enumerate(zip(ml.beta, ml.std_errors)):
        next(bar, None)
        if parm is not None and model.fixef.index[j] not in parm:
            lo.append(np.nan)
            hi.append(np.nan)
            continue
        a, b = _interval(pr.beta_profile(j), b_hat, pr.dev_hat, 0.5 * se, -np.inf, np.inf, z)
        lo.append(a)
        hi.append(b)
    return interval_frame(pr.names + list(model.fixef.index), np.array(lo), np.array(hi), level)


# ----- entry --------------------------------------------------------------------------------
def confint(
    model: MixedModel,
    method: str = "profile",
    level: float = 0.95,
    parm: Any = None,
    progress: bool | None = None,
    **boot: Any,
) -> pd.DataFrame:
    """Confidence intervals; see ``hmix.MixedModel.confint``."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise DataError(f"level must be between 0 and 1, not {level}")
    method = method.lower() if isinstance(method, str) else method  # (lme4 spells it "Wald")
    if method == "wald":
        out = _wald(model, level)
    elif method == "profile":
        out = _profile(model, level, None if parm is None else _parm_list(parm), progress)
    elif method == "boot":
        from .bootstrap import boot_confint

        out = boot_confint(model, level, progress=progress, **boot)
    else:
        raise DataError(f"method must be 'profile', 'wald' or 'boot', not {method!r}")
    if parm is None:
        return out
    wanted = _parm_list(parm)
    unknown = [p for p in wanted if p not in out.index]
    if unknown:
        raise DataError(f"parm names {unknown}, which are not among the parameters {list(out.index)}")
    return out.loc[wanted]


def _parm_list(parm: Any) -> list[str]:
    return [parm] if isinstance(parm, str) else [str(p) for p in parm]
