"""Parametric bootstrap: simulate from the fitted model, refit, collect the estimates."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from ._progress import progress as with_progress
from .confint import interval_frame
from .errors import HmixError, HmixWarning, user_stacklevel, whole_number
from .fit import LmmRefitter, refit
from .results import LinearMixedModel, MixedModel, sdcor

__all__ = ["bootstrap"]

_CHUNK = 200  # simulations drawn at a time (memory: rows x chunk doubles)


def _refitter(model: MixedModel) -> Callable[[np.ndarray], tuple[np.ndarray, bool]]:
    """Response -> the estimates on the sd/cor scale (then sigma, beta) and the singular flag.

    An LMM reuses its engine's symbolic phase (``LmmRefitter``); a GLMM refits in full.
    """
    tm = model.thetamap
    if isinstance(model, LinearMixedModel):
        lmm = LmmRefitter(model)

        def fit_lmm(y: np.ndarray) -> tuple[np.ndarray, bool]:
            theta, sigma, beta, singular = lmm(y)
            return np.concatenate([sdcor(theta, sigma, tm), [sigma], beta]), singular

        return fit_lmm
    zi_names = getattr(model, "zi_names", [])
    failed = np.full(len(model.varpar_names()) + model.design.p + len(zi_names), np.nan)

    def fit_glmm(y: np.ndarray) -> tuple[np.ndarray, bool]:
        try:
            m = refit(model, model.design.with_response(y))
        except HmixError:
            return failed, False  # a degenerate simulated response (all zero, say)
        zi = getattr(m, "zi_beta", None)
        zi = np.zeros(0) if zi is None else zi
        return np.concatenate([m.varpar(), m.beta, zi]), bool(m.singular)

    return fit_glmm


def bootstrap(
    model: MixedModel, n: int = 1000, seed: Any = None, *, progress: bool | None = None
) -> pd.DataFrame:
    """Parametric bootstrap replicates of the estimates.

    Each replicate simulates a new response from the fitted model (new random effects and new
    noise, as lme4's ``simulate``), refits the model to it (same formula, REML or ML, family),
    and records the fixed effects and the variance parameters on lme4's sd/cor scale.

    Parameters
    ----------
    model : LinearMixedModel or GeneralizedLinearMixedModel
    n : int, default 1000
        Number of replicates.
    seed : int or numpy Generator, optional
        Makes the replicates reproducible.
    progress : bool, optional
        Draw a progress bar on stderr (default: when stderr is a terminal).

    Returns
    -------
    pandas.DataFrame
        One row per replicate; columns named as ``confint``'s rows (``sd_(Intercept)|Subject``,
        ``sigma``, fixed effects). ``attrs["singular"]`` counts singular refits and
        ``attrs["failed"]`` refits that failed (their row is NaN).

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> reps = hmix.bootstrap(m, n=20, seed=1)
    >>> reps.shape
    (20, 6)
    >>> list(reps.columns[:2])
    ['sd_(Intercept)|Subject', 'cor_Days.(Intercept)|Subject']
    """
    from .simulate import simulate

    n = whole_number(n, "n (the number of replicates)")
    rng = np.random.default_rng(seed)
    names = model.varpar_names() + list(model.fixef.index) + list(getattr(model, "zi_names", []))
    rows, sing = [], []
    chunks = [min(_CHUNK, n - lo) for lo in range(0, n, _CHUNK)]

    def responses() -> Iterator[np.ndarray]:
        for size in chunks:
            sims = simulate(model, n=size, seed=rng).to_numpy()
            yield from sims.T

    fit = _refitter(model)
    for y in with_progress(responses(), n, "bootstrap", progress):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est, singular = fit(y)
        rows.append(est)
        sing.append(singular)
    out = pd.DataFrame(np.array(rows), columns=names)
    out.index.name = "replicate"
    failed = int(out.isna().all(axis=1).sum())
    out.attrs["singular"] = int(np.sum(sing))
    out.attrs["failed"] = failed
    if failed:
        warnings.warn(
            f"{failed} of {n} bootstrap refits failed; their rows are NaN",
            HmixWarning,
            stacklevel=user_stacklevel(),
        )
    return out


def boot_confint(
    model: MixedModel,
    level: float,
    n: int = 1000,
    seed: Any = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Percentile intervals from ``bootstrap`` (lme4's ``confint(method = "boot")``)."""
    reps = bootstrap(model, n=n, seed=seed, progress=progress)
    a = (1 - level) / 2
    lo = reps.quantile(a).to_numpy()
    hi = reps.quantile(1 - a).to_numpy()
    return interval_frame(list(reps.columns), lo, hi, level)
