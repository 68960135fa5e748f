"""Marginal and conditional R^2 of Nakagawa & Schielzeth (2013), with Johnson's (2014) random
slopes, as ``performance::r2_nakagawa`` reports them.

    R2_marginal = var_fixed / total,   R2_conditional = (var_fixed + var_random) / total,
    total = var_fixed + var_random + var_residual.

* var_fixed: the sample variance (denominator n - 1, as R's ``var``) of X beta over the fitted
  rows, offset left out.
* var_random: the sum over random-effects terms of the mean over the fitted rows of
  z_i' Sigma z_i (``variance_decomposition``'s components; for a random intercept its variance).
* var_residual: ``variance_decomposition``'s residual: sigma^2 for LMMs; on the latent scale
  pi^2/3, 1, pi^2/6 for the binomial logit, probit and cloglog links; log(1 + 1/mu) for the
  Poisson log link (lognormal approximation), with mu the model's marginal mean averaged over the
  fitted rows, mean(exp(X beta + offset + z'Sigma z / 2)) -- or, with ``poisson_mean="null"``,
  exp(intercept) of the null model (the model refitted with only an intercept as fixed part),
  as performance 0.10 / insight 0.19 do.
* An observation-level random intercept of a GLMM (a level per fitted row) models overdispersion:
  its variance is counted with the residual, not in var_random (Nakagawa, Johnson & Schielzeth
  2017, as performance does). It stays in the Poisson marginal mean.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import HmixError
from .families import Poisson

if TYPE_CHECKING:
    from .results import MixedModel

__all__ = ["r2_nakagawa"]

POISSON_MEANS = ("fitted", "null")


def _null_mean(model: MixedModel) -> float:
    """exp(intercept) of the model refitted with an intercept as its only fixed effect."""
    from .fit import refit

    d = model.design
    null = refit(model, replace(d, X=np.ones((d.n, 1)), fixef_names=("(Intercept)",), dropped_columns=()))
    return float(np.exp(null.beta[0]))


def r2_nakagawa(model: MixedModel, poisson_mean: str = "fitted") -> pd.Series:
    """Marginal and conditional R^2 with the variances they are made of.

    See ``hmix.MixedModel.r2`` and the module's notes.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> r2_nakagawa(m)[["marginal", "conditional"]].round(3).tolist()
    [0.279, 0.799]
    """
    from .pooling import variance_decomposition

    if poisson_mean not in POISSON_MEANS:
        raise HmixError(f"poisson_mean must be one of {POISSON_MEANS}, not {poisson_mean!r}")
    parts = variance_decomposition(model)
    d = model.design
    olre = np.array([not model.has_scale and t.k == 1 and t.nlevels == d.n for t in d.terms])
    components = parts["variance"].to_numpy()[:-1]
    var_random = float(components[~olre].sum())
    var_residual = float(parts["variance"].iloc[-1])
    how = str(parts.attrs["residual"])
    if poisson_mean == "null" and isinstance(model.family, Poisson):
        mu = _null_mean(model)
        var_residual = float(np.log1p(1.0 / mu))
        how = "log(1 + 1/mu), mu = exp(intercept of the null model) (Poisson log link)"
    if olre.any():
        var_residual += float(components[olre].sum())
        how += " + the variance of the observation-level random effect"
    fixed = d.X @ model.beta
    var_fixed = float(np.var(fixed, ddof=1)) if len(fixed) > 1 else 0.0
    total = var_fixed + var_random + var_residual
    out = pd.Series(
        {
            "marginal": var_fixed / total,
            "conditional": (var_fixed + var_random) / total,
            "var_fixed": var_fixed,
            "var_random": var_random,
            "var_residual": var_residual,
        },
        name="r2",
    )
    out.attrs["residual"] = how
    return out
