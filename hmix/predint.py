"""Standard errors and intervals of predictions (``predict(se_fit=True)``, ``interval=``).

On the link scale, a row with fixed-effects columns x and, per random-effects term, columns z and
level j gets the variance

    confidence:  x' vcov(beta) x  +  sum over terms whose level is known (random=True)
                                      of z' condVar_j z
    prediction:  the above  +  sum over the other terms (random=False, or a level the fit has
                 not seen) of z' Sigma z  +  sigma^2 / w  (LMMs; w = 1 for new rows)

vcov(beta) is the covariance of the fixed effects, condVar_j the conditional covariance of level
j's effects given the data and the estimates (lme4's ``ranef(condVar = TRUE)``), Sigma the term's
covariance. The parts are added as if independent -- the covariance between beta's estimate and
the conditional modes is left out, as merTools' ``predictInterval`` leaves it out -- and the
uncertainty of theta and sigma is not included. A confidence interval is thereby one for the
line the prediction follows: the population line (x' beta) with ``random=False``, the level's own
line with its conditional modes otherwise. A prediction interval is one for a new observation:
of a known level (its effects from their conditional distribution) or of a new one (from the
random effects' distribution). GLMMs have no additive residual: their prediction intervals cover
the mean of the row's level (for a new level, one drawn from the random effects' distribution),
not a new count or proportion -- ``simulate`` gives those.

The interval is symmetric on the link scale, eta -+ z_(1 - (1 - level)/2) se, and mapped through
the inverse link for ``type="response"``; there the SE is the delta method's, |d mu/d eta| se.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .errors import DataError

if TYPE_CHECKING:
    from .results import MixedModel

__all__ = ["with_intervals", "zero_inflated_intervals", "link_variances", "INTERVALS"]

INTERVALS = ("confidence", "prediction")


def link_variances(
    model: MixedModel, newdata: pd.DataFrame | None, random: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the confidence variance, what a prediction adds, and which rows are complete.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> conf, extra, _ = link_variances(m, None, random=True)
    >>> round(float(conf[0]), 1), round(float(extra[0]), 1)  # condVar + vcov; sigma^2
    (759.4, 2451.2)
    """
    conf, extra, complete, _ = _link_parts(model, newdata, random)
    return conf, extra, complete


def _link_parts(
    model: MixedModel, newdata: pd.DataFrame | None, random: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``link_variances`` and the complete rows' fixed-effects columns."""
    d = model.design
    if newdata is None:
        complete = np.ones(d.n, bool)
        X = d.X
        zs = [t.z for t in d.terms]
        levels = [t.refs if random else np.full(d.n, -1) for t in d.terms]
        w = np.ones(d.n) if d.weights is None else d.weights
    else:
        complete = d.complete_rows(newdata, random=random, hint="add it, or predict with random=False")
        frame = newdata.loc[complete]
        X = d.fixed_matrix(frame)
        zs = [d.re_columns(t, frame) for t in d.terms]
        levels = [d.level_index(t, frame) if random else np.full(len(frame), -1) for t in d.terms]
        w = np.ones(len(frame))
    conf = np.einsum("ia,ab,ib->i", X, model.vcov.to_numpy(), X)
    extra = model.sigma**2 / w if model.has_scale else np.zeros(len(X))
    cond = list(model.cond_cov().values())
    for z, idx, C, T in zip(zs, levels, cond, model.thetamap.tmats(model.theta)):
        known = idx >= 0
        conf = conf + np.where(known, np.einsum("ia,iab,ib->i", z, C[np.where(known, idx, 0)], z), 0.0)
        S = model.cov_scale**2 * (T @ T.T)
        extra = extra + np.where(known, 0.0, np.einsum("ia,ab,ib->i", z, S, z))
    return conf, extra, complete, X


def with_intervals(
    model: MixedModel,
    newdata: pd.DataFrame | None,
    eta: pd.Series,
    random: bool,
    type: str,
    interval: str | None,
    level: float,
) -> pd.DataFrame:
    """``fit`` and ``se``, with ``lower`` and ``upper`` for an interval (see the module's notes).

    Parameters
    ----------
    eta : pandas.Series
        The predictions on the link scale, indexed like the result.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> with_intervals(m, None, m.predict(), True, "response", "confidence", 0.95).iloc[0].round(1).tolist()
    [1509.9, 27.6, 1455.9, 1563.9]
    """
    _check(interval, level)
    conf, extra, complete = link_variances(model, newdata, random)
    var = np.full(len(eta), np.nan)
    var[complete] = conf + (extra if interval == "prediction" else 0.0)
    e = eta.to_numpy(dtype=float)
    se = np.sqrt(var)
    fam = model.family
    response = type == "response"
    out = {"fit": fam.linkinv(e) if response else e}
    out["se"] = np.abs(fam.mu_eta(e)) * se if response else se
    if interval is not None:
        half = stats.norm.ppf(0.5 + level / 2) * se
        ends = [e - half, e + half]
        if response:
            ends = [fam.linkinv(v) for v in ends]
        out["lower"], out["upper"] = np.fmin(*ends), np.fmax(*ends)
    return pd.DataFrame(out, index=eta.index)


def _check(interval: str | None, level: float) -> None:
    if interval is not None and interval not in INTERVALS:
        raise DataError(f"interval must be None, 'confidence' or 'prediction', not {interval!r}")
    if not 0 < level < 1:
        raise DataError(f"level must be between 0 and 1 (0.95 for 95% intervals), not {level!r}")


def zero_inflated_intervals(
    model: MixedModel,
    newdata: pd.DataFrame | None,
    eta: pd.Series,
    random: bool,
    type: str,
    interval: str | None,
    level: float,
) -> pd.DataFrame:
    """``with_intervals`` for a zero-inflated model's mean (1 - pi) mu (``type="response"``) or
    its zero-inflation probability pi (``"zi"``), by the delta method over the count part's
    linear predictor and the zero-inflation one, zeta = x_zi' gamma, with the covariance of
    beta and gamma from the fit's Hessian (glmmTMB's ``se.fit``). The mean's interval is
    symmetric on its log scale, pi's on the logit scale. The random effects enter the count
    part's variance as in ``link_variances``.

    Examples
    --------
    >>> import hmix
    >>> sal = hmix.datasets.load("Salamanders")
    >>> m = hmix.glmer("count ~ mined + (1 | site)", sal, family="poisson", zi_formula="~ mined")
    >>> new = sal.head(2)[["mined", "site"]]
    >>> m.predict(new, type="zi", interval="confidence").round(3)
         fit     se  lower  upper
    0  0.758  0.043  0.663  0.832
    1  0.758  0.043  0.663  0.832
    """
    from scipy.special import expit

    _check(interval, level)
    V = getattr(model, "vcov_params", None)
    if V is None:
        raise DataError(
            "standard errors of a zero-inflated model's mean and zero-inflation probability need "
            "the covariance of all its coefficients, from the Hessian of the deviance; this fit has "
            "only PIRLS's covariance of the fixed effects (vcov_method='pirls' was asked for, or "
            "the Hessian was not positive definite at the estimates); type='conditional' or "
            "'link' give the count part's standard errors"
        )
    conf, extra, complete, X = _link_parts(model, newdata, random)
    zi = model.zi  # type: ignore[attr-defined]
    X_zi = (zi.X if newdata is None else zi.matrix(newdata))[complete]
    k = len(model.theta)
    p = X.shape[1]
    kz = k + p + int(model.dispersion_estimated)  # type: ignore[attr-defined]
    gamma = model.zi_beta  # type: ignore[attr-defined]
    V_zz = V[kz : kz + len(gamma), kz : kz + len(gamma)]
    V_bz = V[k : k + p, kz : kz + len(gamma)]
    zeta = X_zi @ gamma
    var_zeta = np.einsum("ia,ab,ib->i", X_zi, V_zz, X_zi)
    pi = expit(zeta)
    q = stats.norm.ppf(0.5 + level / 2)
    n = len(eta)
    out = {c: np.full(n, np.nan) for c in ("fit", "se", "lower", "upper")}
    if type == "zi":
        se_zeta = np.sqrt(var_zeta)
        out["fit"][complete], out["se"][complete] = pi, pi * (1 - pi) * se_zeta
        out["lower"][complete], out["upper"][complete] = expit(zeta - q * se_zeta), expit(zeta + q * se_zeta)
    else:
        fam = model.family
        e = eta.to_numpy(dtype=float)[complete]
        mu = fam.linkinv(e)
        d_eta = (1 - pi) * fam.mu_eta(e)  # d m / d eta, m = (1 - pi) mu
        d_zeta = -pi * (1 - pi) * mu  # d m / d zeta
        cross = np.einsum("ia,ab,ib->i", X, V_bz, X_zi)
        var_eta = conf + (extra if interval == "prediction" else 0.0)
        var_m = d_eta**2 * var_eta + d_zeta**2 * var_zeta + 2 * d_eta * d_zeta * cross
        m = (1 - pi) * mu
        se_m = np.sqrt(np.maximum(var_m, 0.0))
        half = q * se_m / m  # (on log m)
        out["fit"][complete], out["se"][complete] = m, se_m
        out["lower"][complete], out["upper"][complete] = m * np.exp(-half), m * np.exp(half)
    frame = pd.DataFrame(out, index=eta.index)
    return frame if interval is not None else frame[["fit", "se"]]
