"""Priors on the fixed effects (normal, t) and on an LMM's residual (a point, or the gamma family)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.special import gammaln

from ..errors import DataError
from .base import LOG2PI, Prior, _logdet_pd, _matrix_text, _num, _vec
from .covariance import _ScalarPrior

__all__ = ["Normal", "StudentT", "Point"]


# ----- fixed-effects priors -----------------------------------------------------------------
def _first_rest(values: Any, names: Sequence[str], what: str) -> np.ndarray:
    """Per fixed effect: a number for all, (first, rest), one per fixed effect, or a mapping of
    names (the others get ``inf``: no prior)."""
    p = len(names)
    if isinstance(values, Mapping):
        unknown = [k for k in values if k not in names]
        if unknown:
            raise DataError(
                f"the {what} names fixed effects the model does not have: {', '.join(map(repr, unknown))}; "
                f"its fixed effects are {', '.join(map(repr, names))}"
            )
        return np.array([float(values.get(n, math.inf)) for n in names])
    v = np.atleast_1d(np.asarray(values, dtype=float))
    if v.ndim != 1:
        raise DataError(f"the {what} must be a number or a sequence of numbers")
    if len(v) == 1:
        return np.full(p, v[0])
    if len(v) == 2 and p != 2:
        return np.r_[v[:1], np.full(p - 1, v[1])][:p]
    if len(v) == p:
        return v
    raise DataError(
        f"the {what} has {len(v)} values for {p} fixed effects: give one number, two (the first fixed "
        f"effect's and the others'), {p}, or a mapping from fixed-effect names"
    )


def _covariance(sd: Any, cov: Any, names: Sequence[str], what: str) -> np.ndarray:
    p = len(names)
    if cov is None:
        return np.diag(_first_rest(sd, names, f"{what} sd") ** 2)
    C = np.asarray(cov, dtype=float)
    if C.shape == (p,):
        C = np.diag(C)
    if C.shape != (p, p) or not np.allclose(C, C.T):
        raise DataError(f"the {what} covariance must be {p} variances or a symmetric {p} x {p} matrix")
    return C


def _precision(C: np.ndarray, what: str) -> tuple[np.ndarray, float, int]:
    """Precision matrix, log-determinant of the finite part, and its rank (an infinite variance:
    no prior on that coefficient)."""
    d = np.diag(C)
    if (d <= 0).any():
        raise DataError(f"the {what} variances must be positive")
    inf = np.isinf(d)
    if inf.any():
        if np.count_nonzero(C[~np.eye(len(d), dtype=bool)]):
            raise DataError(f"a {what} covariance with infinite variances must be diagonal")
        return (
            np.diag(np.where(inf, 0.0, 1.0 / np.where(inf, 1.0, d))),
            float(np.log(d[~inf]).sum()),
            int((~inf).sum()),
        )
    logdet = _logdet_pd(C, what)
    return np.linalg.inv(C), logdet, len(d)


@dataclass(frozen=True, eq=False)
class Normal(Prior):
    """Normal prior on the fixed effects, mean 0 (blme's default sd: 10 for the first, 2.5 for the
    others).

    ``common_scale`` (default for LMMs): beta ~ N(0, sigma^2 cov), so beta and sigma still profile
    out (the prior acts as pseudo-data on X'X); False (GLMMs): beta ~ N(0, cov).

    Examples
    --------
    >>> n = Normal().resolve(("(Intercept)", "Days"), glmm=False)
    >>> n.describe()
    'normal(sd = c(10, 2.5), corr = 0, common.scale = TRUE)'
    >>> n.precision.diagonal().tolist()
    [0.01, 0.16]
    """

    sd: Any = None
    cov: Any = None
    common_scale: bool | None = None

    def resolve(self, names: Sequence[str], glmm: bool) -> Normal:
        C = _covariance((10.0, 2.5) if self.sd is None else self.sd, self.cov, names, "normal prior")
        _precision(C, "normal prior")
        common = False if glmm else (True if self.common_scale is None else bool(self.common_scale))
        return replace(self, cov=C, common_scale=common)

    @property
    def precision(self) -> np.ndarray:
        return _precision(self.cov, "normal prior")[0]

    @property
    def df_adjustment(self) -> float:
        return float(_precision(self.cov, "normal prior")[2]) if self.common_scale else 0.0

    @property
    def constant(self) -> float:
        _, logdet, rank = _precision(self.cov, "normal prior")
        return rank * LOG2PI + logdet

    def value_grad(self, beta: np.ndarray) -> tuple[float, np.ndarray]:
        """-2 log density at beta (absolute scale) and its gradient."""
        Pb = self.precision @ beta
        return float(beta @ Pb) + self.constant, 2.0 * Pb

    def describe(self) -> str:
        C = self.cov
        sd = np.sqrt(np.diag(C))
        p = len(sd)
        with np.errstate(invalid="ignore"):
            corr = np.nan_to_num(C / np.outer(sd, sd))
        common = f"common.scale = {str(self.common_scale).upper()}"
        if p == 1:
            return f"normal(sd = {_num(sd[0])}, {common})"
        if p == 2:
            return f"normal(sd = c({_num(sd[0])}, {_num(sd[1])}), corr = {_num(corr[1, 0])}, {common})"
        return (
            f"normal(sd = c({_num(sd[0])}, {_num(sd[1])}, ...), corr = c({_num(corr[1, 0])} ...), {common})"
        )


@dataclass(frozen=True, eq=False)
class StudentT(Prior):
    """Multivariate t prior on the fixed effects (GLMMs): df 3, mean 0, scale 10^2 for the first
    and 2.5^2 for the others (blme's ``t``).

    Examples
    --------
    >>> import numpy as np
    >>> t = StudentT().resolve(("(Intercept)", "x"), glmm=True)
    >>> round(t.value_grad(np.zeros(2))[0], 4)  # the constant: -2 log density at the mode
    10.1135
    """

    df: float = 3.0
    mean: Any = 0.0
    scale: Any = (100.0, 6.25)

    def resolve(self, names: Sequence[str], glmm: bool) -> StudentT:
        if not glmm:
            raise DataError(
                "a t prior on the fixed effects is available for bglmer; for blmer use Normal "
                "(beta and sigma then still profile out)"
            )
        if not self.df > 0:
            raise DataError(f"a t prior needs df > 0, not {self.df}")
        S = self.scale
        S = (
            np.diag(_first_rest(S, names, "t prior scale"))
            if np.ndim(S) < 2
            else _covariance(None, S, names, "t prior")
        )
        _precision(S, "t prior scale")
        return replace(self, df=float(self.df), mean=_first_rest(self.mean, names, "t prior mean"), scale=S)

    def value_grad(self, beta: np.ndarray) -> tuple[float, np.ndarray]:
        P, logdet, d = _precision(self.scale, "t prior scale")
        r = beta - self.mean
        dist = float(r @ P @ r)
        nu = self.df
        const = (
            -2.0 * gammaln(0.5 * (nu + d))
            + 2.0 * gammaln(0.5 * nu)
            + d * (math.log(nu) + math.log(math.pi))
            + logdet
        )
        value = (nu + d) * math.log1p(dist / nu) + float(const)
        return value, (nu + d) / (1.0 + dist / nu) * 2.0 * (P @ r) / nu

    def describe(self) -> str:
        S = self.scale
        diag = not np.count_nonzero(S - np.diag(np.diag(S)))
        scale = f"diag(scale) = {_vec(list(np.diag(S)), 4)}" if diag else f"scale = {_matrix_text(S)}"
        return f"t(df = {_num(self.df)}, mean = {_vec(list(self.mean), 4)}, {scale}, common.scale = FALSE)"


# ----- residual priors ----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Point(Prior):
    """A point prior on the residual SD: sigma fixed at ``value`` (its variance with
    ``posterior_scale="var"``).

    Examples
    --------
    >>> Point(30).describe()
    'point(value = 30)'
    """

    value: float = 1.0
    posterior_scale: str = "sd"

    def resolve(self) -> Point:
        if self.posterior_scale not in ("sd", "var"):
            raise DataError(f"posterior_scale must be 'sd' or 'var', not {self.posterior_scale!r}")
        v = float(self.value)
        if not v > 0 or not math.isfinite(v):
            raise DataError(f"a point prior on the residual needs a positive value, not {self.value}")
        return Point(math.sqrt(v) if self.posterior_scale == "var" else v)

    def describe(self) -> str:
        return f"point(value = {_num(self.value)})"


def _resid_scalar(prior: _ScalarPrior) -> _ScalarPrior:
    """A gamma-family prior on the residual: blme's defaults there (shape 0, rate or scale 0, on
    the variance), always on the absolute scale."""
    second = getattr(prior, prior._second)
    out = replace(
        prior,
        shape=0.0 if prior.shape is None else float(prior.shape),
        posterior_scale=prior.posterior_scale or "var",
        common_scale=False,
        **{prior._second: 0.0 if second is None else float(second)},
    )
    out._check(1)
    return out
