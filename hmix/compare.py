"""Model comparison: information criteria and likelihood-ratio tests (lme4's ``anova``)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2

from .errors import DataError, HmixWarning, user_stacklevel

__all__ = ["compare"]


def compare(
    *models: Any,
    names: list[str] | None = None,
    refit: bool = True,
    loo: bool = False,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Compare nested mixed models, as lme4's ``anova(m1, m2, ...)``.

    Parameters
    ----------
    *models : fitted models
        Two or more fits to the same observations.
    names : list of str, optional
        Row labels (default: each model's formula).
    refit : bool, default True
        Refit REML fits by maximum likelihood first, with a warning that says so (lme4's
        default): REML criteria of models with different fixed effects are not comparable.
        With ``refit=False`` REML fits are compared on their REML criteria, which is valid only
        when their fixed effects are the same.
    loo : bool, default False
        Add leave-one-out columns (``loo`` of each model as given: a REML
        fit keeps its REML estimates here, even when the likelihood columns are its ML refit's):
        ``elpd_loo``, ``se_loo``, ``p_loo``, and ``elpd_diff`` / ``se_diff``, the difference to
        the model with the highest elpd_loo and the standard error of that difference (from the
        pointwise differences).
    progress : bool, optional
        Progress bars of the leave-one-out refits (``loo``'s ``progress``).

    Returns
    -------
    pandas.DataFrame
        One row per model, ordered by the number of parameters, with ``npar``, ``AIC``, ``BIC``,
        ``logLik``, ``deviance`` (-2 logLik) and, from the second row on, the likelihood-ratio
        ``Chisq`` against the row above, its ``Df`` and ``Pr(>Chisq)``; with ``loo=True`` the
        leave-one-out columns. The test assumes each model is nested in the next: where the
        larger model's fixed effects do not span the smaller's (compared by their columns, so
        ``1`` and ``0 + f`` nest), or it fits worse (a negative Chisq), the models are not
        nested, ``Pr(>Chisq)`` is NaN and a warning says so.

    Examples
    --------
    >>> import hmix, warnings
    >>> d = hmix.datasets.load("sleepstudy")
    >>> m0 = hmix.lmer("Reaction ~ Days + (1 | Subject)", d)
    >>> m1 = hmix.lmer("Reaction ~ Days + (Days | Subject)", d)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     table = hmix.compare(m0, m1)
    >>> round(float(table["Chisq"].iloc[1]), 2), int(table["Df"].iloc[1])
    (42.14, 2)
    """
    if len(models) < 2:
        raise DataError("compare() needs two or more models")
    nobs = {m.nobs for m in models}
    if len(nobs) > 1:
        raise DataError(
            f"the models were fitted to different numbers of observations ({sorted(nobs)}); "
            "refit them to the same rows (missing values can drop different rows)"
        )
    labels = list(names) if names is not None else [m.formula for m in models]
    if len(labels) != len(models):
        raise DataError("names must give one label per model")
    given = models
    reml = [m.REML for m in models]
    if any(reml):
        if refit:
            warnings.warn(
                "refitting model(s) with ML (instead of REML)", HmixWarning, stacklevel=user_stacklevel()
            )
            models = tuple(m.refit_ml() if r else m for m, r in zip(models, reml))
        else:
            fixed = {tuple(m.design.fixef_names) for m in models}
            if not all(reml) or len(fixed) > 1:
                warnings.warn(
                    "comparing REML criteria of models with different fixed effects (or with ML "
                    "fits) is not meaningful; use refit=True",
                    HmixWarning,
                    stacklevel=user_stacklevel(),
                )
    rows = [
        {
            "model": lab,
            "npar": m.npar,
            "AIC": m.aic,
            "BIC": m.bic,
            "logLik": m.loglik,
            "deviance": m.objective,
        }
        for lab, m in zip(labels, models)
    ]
    table = pd.DataFrame(rows).sort_values("npar", kind="stable").set_index("model")
    dev = table["deviance"].to_numpy()
    npar = table["npar"].to_numpy()
    chisq = np.r_[np.nan, dev[:-1] - dev[1:]]
    df = np.r_[np.nan, np.diff(npar)].astype(float)
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, chi2.sf(np.maximum(chisq, 0.0), np.where(df > 0, df, 1)), np.nan)
    if any(m.priors is not None for m in models):
        # a penalized fit does not maximize the likelihood: the difference in deviance is not a
        # likelihood-ratio statistic (it can even be negative) and its chi-square p-value means nothing
        warnings.warn(
            "penalized fits (blmer, bglmer): logLik, deviance, AIC and BIC are those of the likelihood "
            "without the priors at the penalized estimates (as blme reports them), and the "
            "likelihood-ratio test does not apply, so Pr(>Chisq) is NaN; compare with loo=True, or "
            "fit the models with lmer/glmer for likelihood-ratio tests",
            HmixWarning,
            stacklevel=user_stacklevel(),
        )
        p = np.full(len(p), np.nan)
    p = _not_nested(table, [models[i] for i in np.argsort(npar_of(models), kind="stable")], chisq, df, p)
    table["Chisq"] = chisq
    table["Df"] = df
    table["Pr(>Chisq)"] = p
    if loo:
        order = np.argsort(npar_of(models), kind="stable")  # the table's row order
        res = [given[i].loo(progress=progress) for i in order]
        pointwise = np.array([r.elpd_i for r in res])
        best = int(np.argmax([r.elpd_loo for r in res]))
        diff = pointwise - pointwise[best]
        n = pointwise.shape[1]
        table["elpd_loo"] = [r.elpd_loo for r in res]
        table["se_loo"] = [r.se for r in res]
        table["p_loo"] = [r.p_loo for r in res]
        table["elpd_diff"] = diff.sum(axis=1)
        table["se_diff"] = np.sqrt(n * diff.var(axis=1))
    return table


def _spans(big: np.ndarray, small: np.ndarray) -> bool:
    """Whether small's columns lie in big's column space (the same fixed effects, coded
    otherwise: ``1`` against ``0 + f``), by least squares on the rows both were fitted to."""
    if small.shape[1] == 0:
        return True
    if big.shape[1] == 0 or big.shape[0] != small.shape[0]:
        return False
    coef = np.linalg.lstsq(big, small, rcond=None)[0]
    resid = small - big @ coef
    return bool(np.linalg.norm(resid) <= 1e-8 * max(float(np.linalg.norm(small)), 1.0))


def npar_of(models: tuple[Any, ...]) -> list[int]:
    return [m.npar for m in models]


def _not_nested(
    table: pd.DataFrame, ordered: list[Any], chisq: np.ndarray, df: np.ndarray, p: np.ndarray
) -> np.ndarray:
    """p with NaN where a model is evidently not nested in the next (see ``compare``), warned."""
    bad = []
    for i in range(1, len(ordered)):
        small, large = ordered[i - 1], ordered[i]
        missing = set(small.design.fixef_names) - set(large.design.fixef_names)
        unspanned = bool(missing) and not _spans(large.design.X, small.design.X)
        worse = df[i] > 0 and chisq[i] < -1e-6 * max(1.0, abs(table["deviance"].iloc[i]))
        if unspanned or worse:
            bad.append(i)
    if bad:
        which = ", ".join(str(table.index[i]) for i in bad)
        warnings.warn(
            f"{which}: not nested in the model above it (a fixed effect of the smaller "
            "model is missing, or the larger fits worse), so the likelihood-ratio test does not "
            "apply and Pr(>Chisq) is NaN; compare non-nested models by AIC, BIC or loo=True",
            HmixWarning,
            stacklevel=user_stacklevel(),
        )
        p = p.copy()
        p[bad] = np.nan
    return p
