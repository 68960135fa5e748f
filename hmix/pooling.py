"""Partial pooling made visible: each level's own fit, its shrunken estimate and the population
value side by side, and the variance decomposition with the ICC.

The level's own fit ("no pooling") is the regression of the response on the term's columns within
that level, with everything else in the fitted linear predictor held where the fit put it: the
other fixed effects at their estimates, the other random-effects terms at their conditional modes,
and the offset. The conditional mode is the penalized version of the same regression, so for a
random intercept in an LMM the partial-pooling estimate is exactly the precision-weighted average
of the own fit and the fixed effect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DataError, HmixError
from .families import Binomial, Family, Gaussian, Poisson

if TYPE_CHECKING:
    from .remat import ReTerm
    from .results import MixedModel

__all__ = ["shrinkage", "variance_decomposition"]

_RANK_TOL = 1e-10  # smallest singular value of a level's cross-product, relative to its largest
_IRLS_MAXIT = 100
_IRLS_TOL = 1e-10  # step in the own GLM fit, relative to 1 + |coefficient|

# residual variance of the latent variable, per binomial link (Nakagawa & Schielzeth 2013)
_LATENT = {
    "logit": (np.pi**2 / 3, "pi^2/3 (logit link, latent scale)"),
    "probit": (1.0, "1 (probit link, latent scale)"),
    "cloglog": (np.pi**2 / 6, "pi^2/6 (cloglog link, latent scale)"),
}


def _term_covariances(model: MixedModel) -> list[np.ndarray]:
    """Sigma_t of every random-effects term, lme4's order."""
    s = model.cov_scale
    return [(s * T) @ (s * T).T for T in model.thetamap.tmats(model.theta)]


def _group_sums(refs: np.ndarray, values: np.ndarray, nlevels: int) -> np.ndarray:
    """Sums of the rows of ``values`` (n, ...) within each level: shape (nlevels, ...)."""
    n = len(refs)
    ind = sp.csr_matrix((np.ones(n), (refs, np.arange(n))), shape=(nlevels, n))
    return np.asarray(ind @ values.reshape(n, -1)).reshape((nlevels, *values.shape[1:]))


def _solve_levels(A: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve A_j x_j = c_j level by level (batched); NaN where A_j is singular or not finite."""
    finite = np.isfinite(A).all(axis=(1, 2)) & np.isfinite(c).all(axis=1)
    k = A.shape[1]
    A = np.where(finite[:, None, None], A, np.eye(k))
    s = np.linalg.svd(A, compute_uv=False)
    ok = finite & (s[:, 0] > 0) & (s[:, -1] > _RANK_TOL * s[:, 0])
    x = np.full(c.shape, np.nan)
    if ok.any():
        x[ok] = np.linalg.solve(A[ok], c[ok][..., None])[..., 0]
    return x, ok


def _inverse_diagonal(P: np.ndarray) -> np.ndarray:
    """diag(P_j^-1) per level (NaN where P_j is singular)."""
    k = P.shape[1]
    out = np.full((P.shape[0], k), np.nan)
    for a in range(k):
        e = np.zeros((P.shape[0], k))
        e[:, a] = 1.0
        x, _ = _solve_levels(P, e)
        out[:, a] = x[:, a]
    return out


def _own_glm(
    fam: Family, y: np.ndarray, wt: np.ndarray, t: ReTerm, off: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """Per-level GLM fits of y on the term's columns with offset ``off``: IRLS on all levels at
    once. A level whose fit does not converge (separation, all-zero counts: the estimate runs to
    infinity) or whose cross-product is singular gets NaN."""
    z, refs, L = t.z, t.refs, t.nlevels
    gamma = start.copy()
    failed = np.zeros(L, bool)
    converged = np.zeros(L, bool)
    with np.errstate(all="ignore"):
        for _ in range(_IRLS_MAXIT):
            eta = off + np.einsum("ij,ij->i", z, gamma[refs])
            mu = fam.linkinv(eta)
            mueta = fam.mu_eta(eta)
            w = wt * mueta**2 / fam.variance(mu)
            work = eta - off + (y - mu) / mueta
            A = _group_sums(refs, w[:, None, None] * z[:, :, None] * z[:, None, :], L)
            c = _group_sums(refs, (w * work)[:, None] * z, L)
            new, ok = _solve_levels(A, c)
            failed |= ~ok
            step = np.where(ok[:, None], new - gamma, 0.0)
            converged = ~failed & (np.abs(step) <= _IRLS_TOL * (1 + np.abs(gamma))).all(axis=1)
            gamma = np.where(ok[:, None], new, gamma)
            if (converged | failed).all():
                break
    gamma[~converged] = np.nan
    return gamma


def _select_terms(model: MixedModel, group: str | None) -> list[int]:
    terms = model.design.terms
    if group is None:
        return list(range(len(terms)))
    chosen = [i for i, t in enumerate(terms) if t.group == group]
    if not chosen:
        known = ", ".join(repr(t.group) for t in terms)
        raise DataError(f"the model has no grouping factor {group!r}; its grouping factors are {known}")
    return chosen


def shrinkage(model: MixedModel, group: str | None = None) -> pd.DataFrame:
    """Each level's own fit, its partial-pooling estimate and the population value, tidy.

    See ``hmix.MixedModel.shrinkage`` for the definitions.

    Parameters
    ----------
    model : MixedModel
    group : str, optional
        One grouping factor (all when None).

    Returns
    -------
    pandas.DataFrame
        Columns ``group``, ``level``, ``term``, ``n``, ``no_pooling``, ``partial_pooling``,
        ``complete_pooling``, ``weight``.

    Examples
    --------
    >>> import hmix
    >>> from hmix.pooling import shrinkage
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> shrinkage(m)[["level", "n", "no_pooling", "partial_pooling"]].head(2).round(1)
      level  n  no_pooling  partial_pooling
    0     A  5      1505.0           1509.9
    1     B  5      1528.0           1527.9
    """
    d = model.design
    fam = model.family
    if getattr(model, "zi", None) is not None:
        raise HmixError(
            "shrinkage() is not available for zero-inflated models: a level's own fit and its "
            "precision would need the zero-inflation's mixture, which the no-pooling fits here "
            "leave out; ranef() gives the conditional modes, and the same model without "
            "zi_formula its shrinkage table"
        )
    wt = np.ones(d.n) if d.weights is None else d.weights
    eta = model.linear_predictor.to_numpy()
    fixef = dict(zip(d.fixef_names, model.beta))
    covs = _term_covariances(model)
    mu = fam.linkinv(eta)
    working = wt * fam.mu_eta(eta) ** 2 / fam.variance(mu)
    frames = []
    for i in _select_terms(model, group):
        t, b, S = d.terms[i], model.b[i], covs[i]
        beta_t = np.array([fixef.get(name, 0.0) for name in t.names])
        partial = beta_t + b.reshape(t.nlevels, t.k)
        off = eta - np.einsum("ij,ij->i", t.z, partial[t.refs])
        zz = t.z[:, :, None] * t.z[:, None, :]
        if model.has_scale:  # (a Gaussian own fit is least squares, its precision scaled by sigma^2)
            A = _group_sums(t.refs, wt[:, None, None] * zz, t.nlevels)
            own, _ = _solve_levels(A, _group_sums(t.refs, (wt * (d.y - off))[:, None] * t.z, t.nlevels))
            precision_matrix = A / model.sigma**2
        else:
            own = _own_glm(fam, d.y, wt, t, off, partial)
            precision_matrix = _group_sums(t.refs, working[:, None, None] * zz, t.nlevels)
        precision = 1.0 / _inverse_diagonal(precision_matrix)
        tau2 = np.diag(S)
        # w = P / (P + 1/tau^2), written so that tau^2 = 0 (a singular fit) gives w = 0
        weight = precision * tau2 / (precision * tau2 + 1.0)
        n = np.bincount(t.refs, minlength=t.nlevels)
        for a, name in enumerate(t.names):
            frames.append(
                pd.DataFrame(
                    {
                        "group": t.group,
                        "level": np.asarray(t.levels),
                        "term": name,
                        "n": n,
                        "no_pooling": own[:, a],
                        "partial_pooling": partial[:, a],
                        "complete_pooling": beta_t[a],
                        "weight": weight[:, a],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _nested_in(inner: ReTerm, outer: ReTerm) -> bool:
    """Every level of ``inner`` lies within one level of ``outer``."""
    pairs = np.unique(inner.refs * outer.nlevels + outer.refs)
    return len(pairs) == inner.nlevels


def _residual_variance(model: MixedModel, term_var: np.ndarray) -> tuple[float, str, str, float]:
    """The residual variance, how it was obtained, the scale of the decomposition, and the
    marginal mean the Poisson approximation uses (NaN for other families)."""
    fam = model.family
    if isinstance(fam, Gaussian):
        return model.sigma**2, "sigma^2 (residual variance)", "response", np.nan
    if isinstance(fam, Binomial):
        value, how = _LATENT[fam.link.name]
        return value, how, "latent", np.nan
    if not isinstance(fam, Poisson):
        raise HmixError(f"no variance decomposition for the {fam.name} family")
    d = model.design
    fixed = d.X @ model.beta + (0.0 if d.offset is None else d.offset)
    lam = float(np.mean(np.exp(fixed + 0.5 * term_var)))
    how = "log(1 + 1/mean) (Poisson log link, lognormal approximation, latent scale)"
    return float(np.log1p(1.0 / lam)), how, "latent", lam


def variance_decomposition(model: MixedModel) -> pd.DataFrame:
    """Variance components, their shares of the total and the ICCs.

    See ``hmix.MixedModel.variance_decomposition`` for the definitions.

    Parameters
    ----------
    model : MixedModel

    Returns
    -------
    pandas.DataFrame
        Columns ``group``, ``term``, ``variance``, ``share``, ``icc``; ``attrs`` hold ``scale``,
        ``residual`` and ``icc_adjusted`` (and ``poisson_mean`` for Poisson models).

    Examples
    --------
    >>> import hmix
    >>> from hmix.pooling import variance_decomposition
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> variance_decomposition(m)[["group", "share"]].round(3)
          group  share
    0     Batch  0.418
    1  Residual  0.582
    """
    d = model.design
    covs = _term_covariances(model)
    # per row, the variance each term adds to the linear predictor: z_i' Sigma_t z_i
    per_row = np.column_stack([np.einsum("ia,ab,ib->i", t.z, S, t.z) for t, S in zip(d.terms, covs)])
    components = per_row.mean(axis=0)
    residual, how, scale, lam = _residual_variance(model, per_row.sum(axis=1))
    total = components.sum() + residual
    intercept_only = [t.names == ("(Intercept)",) for t in d.terms]
    icc = np.full(len(d.terms), np.nan)
    for i, t in enumerate(d.terms):
        # two observations in the same level of t also share every level t is nested in
        shared = [j for j, s in enumerate(d.terms) if j == i or (s.group != t.group and _nested_in(t, s))]
        if all(intercept_only[j] for j in shared) and not any(
            s.group == t.group and j != i for j, s in enumerate(d.terms)
        ):
            icc[i] = components[shared].sum() / total
    rows = [
        {"group": t.group, "term": " + ".join(t.names), "variance": v, "share": v / total, "icc": c}
        for t, v, c in zip(d.terms, components, icc)
    ]
    rows.append({"group": "Residual", "term": how, "variance": residual, "share": residual / total})
    out = pd.DataFrame(rows, columns=["group", "term", "variance", "share", "icc"])
    out.attrs.update(scale=scale, residual=how, icc_adjusted=float(components.sum() / total))
    if np.isfinite(lam):
        out.attrs["poisson_mean"] = lam
    return out
