"""Group-level cross-validation: how well the model predicts groups it has not seen."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import singledispatch
from typing import Any

import numpy as np
import pandas as pd

from ._progress import progress as with_progress
from .design import Design
from .errors import DataError, HmixError, whole_number
from .fit import refit
from .glmm import GLMMObjective
from .lmm import LMMObjective
from .results import GeneralizedLinearMixedModel, LinearMixedModel, MixedModel

__all__ = ["CrossValidation", "cross_validate"]

_AGQ_NODES = 25  # quadrature nodes for a GLMM's held-out groups with one scalar term


@dataclass(frozen=True, eq=False)
class CrossValidation:
    """The result of ``cross_validate``.

    Attributes
    ----------
    by : str
        The grouping factor whose levels were held out.
    elpd : float
        Sum over folds of the joint log predictive density of the fold's observations, the random
        effects of the groups the refit has not seen integrated out.
    se : float
        Its standard error over folds, sqrt(K var(elpd_k)).
    rmse : float
        Root mean squared error of the predictions (response scale; population level for the
        held-out groups).
    folds : pandas.DataFrame
        Per fold: held-out levels, rows, elpd, rmse, and whether the refit was singular.
    pointwise : pandas.DataFrame
        Per observation: ``fold`` and ``predicted``.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> cv = hmix.cross_validate(m)  # leave one batch out
    >>> cv.by, len(cv.folds), round(cv.elpd, 1)
    ('Batch', 6, -167.2)
    """

    by: str
    elpd: float
    se: float
    rmse: float
    folds: pd.DataFrame
    pointwise: pd.DataFrame

    def __repr__(self) -> str:
        k = len(self.folds)
        return (
            f"Cross-validation over the levels of {self.by}: {k} folds, "
            f"{len(self.pointwise)} held-out observations\n"
            f"  elpd {self.elpd:.2f} (SE {self.se:.2f}), "
            f"{self.elpd / len(self.pointwise):.4f} per observation\n"
            f"  rmse {self.rmse:.4g}"
        )


def _fold_of_levels(nlevels: int, folds: int | None, seed: Any) -> np.ndarray:
    if folds is None:
        return np.arange(nlevels)
    folds = whole_number(folds, "folds", 2)
    if folds > nlevels:
        raise DataError(f"folds must be between 2 and the number of levels ({nlevels}), not {folds}")
    rng = np.random.default_rng(seed)
    fold = np.arange(nlevels) % int(folds)
    return np.asarray(rng.permutation(fold))


def _held_out(model: MixedModel, fit: MixedModel, test: np.ndarray) -> tuple[Design, np.ndarray]:
    """The held-out rows as a design of their own, whose random effects are those of the levels
    the refit ``fit`` has not seen, and the known part of their linear predictor: the fixed
    effects, the offset and the conditional modes of the levels it has seen."""
    held = model.design.subset(test, check=False)
    known = held.X @ fit.beta + (0.0 if held.offset is None else held.offset)
    terms = []
    for t_held, t_fit, b in zip(held.terms, fit.design.terms, fit.b):
        pos = pd.Index(t_fit.levels).get_indexer(t_held.levels[t_held.refs])
        seen = pos >= 0
        bb = b.reshape(t_fit.nlevels, t_fit.k)[np.where(seen, pos, 0)]
        known = known + np.where(seen, np.einsum("ij,ij->i", t_held.z, bb), 0.0)
        terms.append(replace(t_held, z=np.where(seen[:, None], 0.0, t_held.z)))
    n = held.n
    return replace(held, X=np.zeros((n, 0)), fixef_names=(), terms=tuple(terms), offset=known), known


@singledispatch
def _held_out_scores(fit: MixedModel, model: MixedModel, test: np.ndarray) -> tuple[np.ndarray, float]:
    """Predictions for the rows ``test`` (positions in model.design) under ``fit``, a refit
    without them, and their joint log predictive density.

    Levels the refit has seen contribute their conditional modes (moved into the offset); the
    random effects of unseen levels are integrated out jointly over the held-out rows: exactly
    for an LMM; for a GLMM by adaptive Gauss-Hermite quadrature when there is one scalar term,
    else by the Laplace approximation, at the refit's estimates.
    """
    raise HmixError(f"no cross-validation for a {type(fit).__name__}")


@_held_out_scores.register
def _(fit: LinearMixedModel, model: MixedModel, test: np.ndarray) -> tuple[np.ndarray, float]:
    held, known = _held_out(model, fit, test)
    f = LMMObjective(held, REML=False)
    fac = f.factor(fit.theta)
    return known, -0.5 * f.deviance(fac.logdet_z, 0.0, fac.r2, fit.sigma)


@_held_out_scores.register
def _(fit: GeneralizedLinearMixedModel, model: MixedModel, test: np.ndarray) -> tuple[np.ndarray, float]:
    held, known = _held_out(model, fit, test)
    mean = fit.family.linkinv(known)
    if fit.zi is not None:  # (zero-inflated: the Laplace approximation, the mean (1 - pi) mu)
        from scipy.special import expit

        pi = expit(fit.zi.for_design(held).X @ fit.zi_beta)
        return (1 - pi) * mean, float(-0.5 * fit.deviance_on(held))
    one_scalar = len(held.terms) == 1 and held.terms[0].k == 1
    dev = GLMMObjective(held, fit.family, _AGQ_NODES if one_scalar else 1)(fit.theta)
    return mean, float(-0.5 * dev)


def cross_validate(
    model: MixedModel,
    by: str | None = None,
    folds: int | None = None,
    *,
    seed: Any = 0,
    progress: bool | None = None,
) -> CrossValidation:
    """Group-level K-fold or leave-one-group-out cross-validation by refitting.

    The levels of the grouping factor ``by`` are split into folds; each fold's observations are
    held out, the model is refitted to the rest (same formula, REML/ML, family and nAGQ), and the
    held-out observations are predicted as new groups: population level for ``by``, the
    conditional modes for levels of other grouping factors the refit has seen. This is the
    honest measure of how the model predicts groups it has not seen; LOO measures prediction of
    new observations in known groups.

    Parameters
    ----------
    model : LinearMixedModel or GeneralizedLinearMixedModel
    by : str, optional
        A grouping factor of the model (default: the one with the most levels).
    folds : int, optional
        Number of folds; levels are assigned at random (``seed``). Default: one fold per level
        (leave-one-group-out).
    seed : int or numpy Generator, default 0
    progress : bool, optional
        Draw a progress bar on stderr (default: when stderr is a terminal).

    Returns
    -------
    CrossValidation
        ``elpd`` (log predictive density of the held-out data, new groups' random effects
        integrated out: exactly for LMMs, by Laplace or quadrature for GLMMs), its ``se``,
        ``rmse``, and per-fold and per-observation tables.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> cv = hmix.cross_validate(m, by="Subject", folds=6)
    >>> len(cv.folds), len(cv.pointwise)
    (6, 180)
    >>> cv.elpd < m.loo().elpd_loo  # new subjects are harder to predict than new days
    True
    """
    d = model.design
    groups = [t.group for t in d.terms]
    if by is None:
        by = groups[0]
    if by not in groups:
        raise DataError(f"by must be one of the model's grouping factors ({', '.join(groups)}), not {by!r}")
    term = d.terms[groups.index(by)]
    fold_of_level = _fold_of_levels(term.nlevels, folds, seed)
    fold_of_row = fold_of_level[term.refs]
    nfold = int(fold_of_level.max()) + 1
    pred = np.full(d.n, np.nan)
    fold_elpd = np.zeros(nfold)
    rows = []
    for k in with_progress(range(nfold), nfold, f"cross-validation by {by}", progress):
        test = np.flatnonzero(fold_of_row == k)
        try:
            sub = d.subset(fold_of_row != k)
        except DataError as err:
            raise DataError(f"fold {k + 1}: {err}") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit = refit(model, sub)
            except HmixError as err:
                raise HmixError(f"fold {k + 1}: the refit failed: {err}") from None
        p, e = _held_out_scores(fit, model, test)
        pred[test], fold_elpd[k] = p, e
        resid = d.y[test] - p
        rows.append(
            {
                "fold": k + 1,
                "levels": int((fold_of_level == k).sum()),
                "n": len(test),
                "elpd": e,
                "rmse": float(np.sqrt(np.mean(resid**2))),
                "singular": bool(fit.singular),
            }
        )
    resid = d.y - pred
    return CrossValidation(
        by=by,
        elpd=float(fold_elpd.sum()),
        se=float(np.sqrt(nfold * np.var(fold_elpd))),
        rmse=float(np.sqrt(np.mean(resid**2))),
        folds=pd.DataFrame(rows).set_index("fold"),
        pointwise=pd.DataFrame({"fold": fold_of_row + 1, "predicted": pred}, index=d.index),
    )
