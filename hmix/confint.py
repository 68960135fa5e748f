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
from typing import TYPE_CHECKING, Any

import nlopt
import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm

from .blocks import BlockedPLS, NotPositiveDefinite
from .errors import DataError, HmixError

if TYPE_CHECKING:
    from .results import MixedModel

__all__ = ["confint", "varpar_names", "varpar"]

_LOG2PI = float(np.log(2 * np.pi))


# ----- the sd/cor parameterization ------------------------------------------------------------
def varpar_names(model: MixedModel) -> list[str]:
    """lme4's names of the variance parameters: sd_/cor_ per term, then sigma (if any)."""
    names = []
    for t in model.design.terms:
        rows, cols = t.tril
        for r, c in zip(rows, cols):
            if r == c:
                names.append(f"sd_{t.names[r]}|{t.group}")
            else:
                names.append(f"cor_{t.names[r]}.{t.names[c]}|{t.group}")
    if getattr(model, "family", None) is None:
        names.append("sigma")
    return names


def _to_sdcor(theta: np.ndarray, sigma: float, terms: Any) -> np.ndarray:
    out, start = [], 0
    for t in terms:
        T = t.tmat(theta[start : start + t.ntheta]) * sigma
        start += t.ntheta
        S = T @ T.T
        sd = np.sqrt(np.diag(S))
        rows, cols = t.tril
        with np.errstate(invalid="ignore", divide="ignore"):
            cor = S / np.outer(sd, sd)
        out.append(np.where(rows == cols, sd[rows], np.nan_to_num(cor[rows, cols])))
    return np.concatenate(out)


def varpar(model: MixedModel) -> np.ndarray:
    """The variance parameters in the order of ``varpar_names``."""
    v = _to_sdcor(model.theta, model.sigma, model.design.terms)
    return np.append(v, model.sigma) if getattr(model, "family", None) is None else v


def _to_theta(sdcor: np.ndarray, sigma: float, terms: Any) -> np.ndarray:
    """theta from standard deviations and correlations: T = D chol(R) / sigma."""
    out, start = [], 0
    for t in terms:
        v = sdcor[start : start + t.ntheta]
        start += t.ntheta
        rows, cols = t.tril
        diag = rows == cols
        sd = np.zeros(t.k)
        sd[rows[diag]] = v[diag]
        R = np.eye(t.k)
        R[rows[~diag], cols[~diag]] = v[~diag]
        R[cols[~diag], rows[~diag]] = v[~diag]
        try:
            C = np.linalg.cholesky(R)
        except np.linalg.LinAlgError:
            raise NotPositiveDefinite("correlation matrix") from None
        T = sd[:, None] * C / sigma
        out.append(T[rows, cols])
    return np.concatenate(out)


# ----- Wald ---------------------------------------------------------------------------------
def _wald(model: MixedModel, level: float) -> pd.DataFrame:
    z = norm.ppf(0.5 + level / 2)
    se = model.std_errors
    names = varpar_names(model)
    lo = np.r_[np.full(len(names), np.nan), model.fixef - z * se]
    hi = np.r_[np.full(len(names), np.nan), model.fixef + z * se]
    return _frame(names + list(model.fixef.index), lo, hi, level)


def _frame(names: list[str], lo: np.ndarray, hi: np.ndarray, level: float) -> pd.DataFrame:
    a = (1 - level) / 2
    return pd.DataFrame(
        {f"{100 * a:.3g} %": lo, f"{100 * (1 - a):.3g} %": hi}, index=pd.Index(names, name="parameter")
    )


# ----- profile ------------------------------------------------------------------------------
def _ml_deviance(pls: BlockedPLS, n: int, sum_log_w: float) -> Callable[[np.ndarray, float], float]:
    """-2 log-likelihood at (theta, sigma), beta profiled."""

    def dev(theta: np.ndarray, sigma: float) -> float:
        fac = pls.factor(theta)
        s2 = sigma * sigma
        return float(fac.logdet_z + n * (_LOG2PI + np.log(s2)) + fac.r2 / s2 - sum_log_w)

    return dev


def _bounds(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([-1.0 if n.startswith("cor_") else 0.0 for n in names])
    hi = np.array([1.0 if n.startswith("cor_") else np.inf for n in names])
    return lo, hi


def _nlopt_min(
    f: Callable[[np.ndarray], float], x0: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, float]:
    """BOBYQA within bounds; the best point seen when NLopt stops early (roundoff-limited)."""
    if len(x0) == 0:
        return x0, f(x0)
    x0 = np.clip(x0, lo, hi)
    best = {"x": x0.copy(), "f": np.inf}

    def g(x: np.ndarray, grad: np.ndarray) -> float:
        try:
            v = f(x)
        except NotPositiveDefinite:
            return 1e100
        v = v if np.isfinite(v) else 1e100
        if v < best["f"]:
            best["x"], best["f"] = np.array(x, dtype=float), v
        return v

    opt = nlopt.opt(nlopt.LN_BOBYQA, len(x0))
    opt.set_min_objective(g)
    opt.set_lower_bounds(lo)
    opt.set_upper_bounds(hi)
    opt.set_ftol_abs(1e-10)
    opt.set_xtol_rel(1e-8)
    opt.set_maxeval(2000)
    opt.set_initial_step(np.maximum(0.05 * np.abs(x0), 0.01))
    try:
        opt.optimize(x0)
    except nlopt.RoundoffLimited:
        pass  # common with one free parameter near its optimum: the best point is the answer
    return best["x"], float(best["f"])


def _fix_one(
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

        x, val = _nlopt_min(inner, start["x"], lo[others], hi[others])
        start["x"] = x
        return val

    return f


class _Profiler:
    """The ML deviance with one parameter held fixed, minimized over the others (of an ML fit)."""

    def __init__(self, model: Any):
        d = model.design
        self.model = model
        self.terms = d.terms
        self.names = varpar_names(model)
        self.hat = varpar(model)
        y = d.y if d.offset is None else d.y - d.offset
        self.y = y
        w = d.weights
        self.sum_log_w = 0.0 if w is None else float(np.log(w).sum())
        self.pls = BlockedPLS(d.terms, d.X, y, w)
        self.dev = _ml_deviance(self.pls, d.n, self.sum_log_w)
        self.dev_hat = self._vp_dev(self.hat)
        self.lo, self.hi = _bounds(self.names)

    def _vp_dev(self, vp: np.ndarray) -> float:
        sigma = vp[-1]
        if sigma <= 0:
            return np.inf
        return self.dev(_to_theta(vp[:-1], sigma, self.terms), sigma)

    def varpar_profile(self, j: int) -> Callable[[float], float]:
        return _fix_one(self._vp_dev, self.hat, self.lo, self.hi, j)

    def beta_profile(self, j: int) -> Callable[[float], float]:
        """The deviance with beta_j fixed: its column moves into the offset."""
        d = self.model.design
        keep = np.arange(d.p) != j
        pls = BlockedPLS(d.terms, d.X[:, keep], self.y, d.weights)
        lo = np.where(np.concatenate([t.diagonal for t in d.terms]), 0.0, -np.inf)
        hi = np.full(len(lo), np.inf)
        start = {"x": self.model.theta.copy()}
        n = d.n

        def f(v: float) -> float:
            pls.set_data(d.X[:, keep], self.y - d.X[:, j] * v, d.weights)

            def inner(theta: np.ndarray) -> float:
                fac = pls.factor(theta)
                return float(fac.logdet_z + n * (1.0 + _LOG2PI + np.log(fac.r2 / n)) - self.sum_log_w)

            x, val = _nlopt_min(inner, start["x"], lo, hi)
            start["x"] = x
            return val

        return f


def _interval(
    f: Callable[[float], float], hat: float, dev_hat: float, scale: float, lo: float, hi: float, z: float
) -> tuple[float, float]:
    """Where sign(v - hat) sqrt(f(v) - dev_hat) crosses -z and +z; a bound when it never does."""

    def zeta(v: float) -> float:
        return float(np.sign(v - hat) * np.sqrt(max(f(v) - dev_hat, 0.0)))

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
    """The GLMM deviance over (sd/cor, beta), one parameter fixed and the others minimized."""

    def __init__(self, model: Any):
        from .glmm import GLMMObjective

        d = model.design
        self.terms = d.terms
        self.obj = GLMMObjective(d, model.family, max(int(model.nAGQ), 1))
        vnames = varpar_names(model)
        self.nv = len(vnames)
        self.names = vnames + list(model.fixef.index)
        self.hat = np.r_[varpar(model), model.beta]
        vlo, vhi = _bounds(vnames)
        self.lo = np.r_[vlo, np.full(d.p, -np.inf)]
        self.hi = np.r_[vhi, np.full(d.p, np.inf)]
        self.scale = np.r_[
            [0.25 * h if n.startswith("sd_") and h > 0 else 0.1 for n, h in zip(vnames, self.hat)],
            0.5 * model.std_errors.to_numpy(),
        ]
        self.dev_hat = self.deviance(self.hat)

    def deviance(self, x: np.ndarray) -> float:
        theta = _to_theta(x[: self.nv], 1.0, self.terms)
        return float(self.obj(np.r_[theta, x[self.nv :]]))

    def profile(self, j: int) -> Callable[[float], float]:
        return _fix_one(self.deviance, self.hat, self.lo, self.hi, j)


def _profile(model: MixedModel, level: float) -> pd.DataFrame:
    z = float(norm.ppf(0.5 + level / 2))
    if getattr(model, "family", None) is not None:
        gp = _GlmmProfiler(model)
        lo, hi = [], []
        for j in range(len(gp.hat)):
            a, b = _interval(gp.profile(j), gp.hat[j], gp.dev_hat, gp.scale[j], gp.lo[j], gp.hi[j], z)
            lo.append(a)
            hi.append(b)
        return _frame(gp.names, np.array(lo), np.array(hi), level)
    ml = model.refit_ml()  # type: ignore[attr-defined]  # lme4 profiles the ML deviance, REML fits too
    pr = _Profiler(ml)
    if abs(pr.dev_hat - ml.objective) > 1e-6 * max(1.0, abs(ml.objective)):
        raise HmixError("the profile's deviance does not reproduce the fit's; refit the model")
    lo, hi = [], []
    for j, name in enumerate(pr.names):
        h = pr.hat[j]
        scale = 0.25 * abs(h) if name.startswith(("sd_", "sigma")) and h > 0 else 0.1
        a, b = _interval(pr.varpar_profile(j), h, pr.dev_hat, scale, pr.lo[j], pr.hi[j], z)
        lo.append(a)
        hi.append(b)
    for j, (b_hat, se) in enumerate(zip(ml.beta, ml.std_errors)):
        a, b = _interval(pr.beta_profile(j), b_hat, pr.dev_hat, 0.5 * se, -np.inf, np.inf, z)
        lo.append(a)
        hi.append(b)
    return _frame(pr.names + list(model.fixef.index), np.array(lo), np.array(hi), level)


# ----- entry --------------------------------------------------------------------------------
def confint(model: MixedModel, method: str = "profile", level: float = 0.95, **boot: Any) -> pd.DataFrame:
    """Confidence intervals; see ``hmix.MixedModel.confint``."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise DataError(f"level must be between 0 and 1, not {level}")
    if method == "wald":
        return _wald(model, level)
    if method == "profile":
        return _profile(model, level)
    if method == "boot":
        from .bootstrap import boot_confint

        return boot_confint(model, level, **boot)
    raise DataError(f"method must be 'profile', 'wald' or 'boot', not {method!r}")
