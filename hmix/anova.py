"""F tests of model terms (lmerTest's ``anova(m)``) and of any contrast matrix L.

Satterthwaite (as lmerTest's ``contestMD``)
-------------------------------------------
For L (q x p) with full row rank, V = L C L' (C = vcov(beta)) = P diag(d) P'. The rows of P'L
are q independent single contrasts with variances d_m; each has Satterthwaite's df nu_m
(``hmix.ddf.satterthwaite_df``), and

    F = sum_m (P'L beta)_m^2 / d_m / q,
    df = 2 E / (E - q),   E = sum_m nu_m / (nu_m - 2)

(Fai and Cornelius 1996), the mean of the nu_m when they agree within 1e-8, 2 when some
nu_m <= 2, nu_1 when q = 1. Eigenvalues below sqrt(machine epsilon) times the largest are
dropped (a rank-deficient L tests the space it spans). The df depend on the rows of L, not only
on the hypothesis: ``hmix.hypotheses`` gives lmerTest's rows.

Kenward-Roger (as pbkrtest's ``KRmodcomp``)
-------------------------------------------
With Phi = vcov(beta), Phi_A the adjusted covariance, P_i and W of ``hmix.ddf.kenward_roger``,
Theta = L'(L Phi L')^-1 L and U_i = Theta Phi P_i Phi:

    A1 = sum_ij W_ij tr(U_i) tr(U_j),   A2 = sum_ij W_ij tr(U_i U_j),   B = (A1 + 6 A2) / (2q),
    g = ((q + 1) A1 - (q + 4) A2) / ((q + 2) A2),   c1, c2, c3 = (g, q - g, q + 2 - g) / (3q + 2(1 - g)),
    rho = (1 - A2/q)^2 (1 + c1 B) / (q (1 - c2 B)^2 (1 - c3 B)),   m = 4 + (q + 2) / (q rho - 1),
    F = lambda (L beta)'(L Phi_A L')^-1 (L beta) / q,   lambda = m (1 - A2/q) / (m - 2),

on q numerator and m denominator df (lambda = 1 when m is within 0.01 of 2, as pbkrtest). These
do not depend on the rows chosen for L.

GLMMs have no denominator df: their terms get Wald chi-square tests (L beta)'(L C L')^+ (L beta)
on rank(L) df, as ``car::Anova`` gives for a GLMM coded with sum-to-zero contrasts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import HmixError
from .hypotheses import hypotheses

if TYPE_CHECKING:
    from .results import MixedModel

__all__ = ["anova", "f_test", "wald_test"]

_EIG_EPS = float(np.sqrt(np.finfo(float).eps))  # lmerTest's tolerance on the eigenvalues of L C L'
_DF_AGREE = 1e-8  # single-contrast df closer than this are averaged
F_COLUMNS = ("sum_sq", "mean_sq", "num_df", "den_df", "F", "p_value")
WALD_COLUMNS = ("chisq", "df", "p_value")


def _method(ddf: str) -> str:
    from .ddf import ddf_method

    try:
        return ddf_method(ddf)
    except ValueError:
        raise HmixError(f"ddf must be 'satterthwaite' or 'kenward-roger', not {ddf!r}") from None


def _contrast(model: MixedModel, L: Any) -> np.ndarray:
    p = model.design.p
    out = np.atleast_2d(np.asarray(L, dtype=float))
    if out.ndim != 2 or out.shape[1] != p:
        raise HmixError(
            f"L needs one column per fixed effect ({p}: {', '.join(model.design.fixef_names)}), "
            f"not shape {np.shape(L)}"
        )
    return out


def _combine_df(nu: np.ndarray) -> float:
    """The F statistic's df from those of its q independent single contrasts."""
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < _DF_AGREE):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    e = float(np.sum(nu / (nu - 2)))
    return 2 * e / (e - len(nu))


def _satterthwaite(model: Any, L: np.ndarray) -> tuple[float, int, float, float]:
    """(F, numerator df, denominator df, mean square) of L beta = 0."""
    from .ddf import satterthwaite_df

    C = model.vcov.to_numpy()
    d, P = np.linalg.eigh(L @ C @ L.T)
    d, P = d[::-1], P[:, ::-1]  # (largest first, as R's eigen)
    q = int(np.sum(d > max(_EIG_EPS * d[0], 0.0))) if len(d) else 0
    if q == 0:
        return np.nan, 0, np.nan, np.nan
    PL = P[:, :q].T @ L
    F = float(np.sum((PL @ model.beta) ** 2 / d[:q]) / q)
    return F, q, _combine_df(satterthwaite_df(model, PL)), F * model.sigma**2


def _kenward_roger(model: Any, L: np.ndarray) -> tuple[float, int, float, float]:
    from .ddf import kenward_roger

    kr = kenward_roger(model)
    q = int(np.linalg.matrix_rank(L))
    if q == 0:
        return np.nan, 0, np.nan, np.nan
    if q < L.shape[0]:  # (the tests depend on the space L spans: keep a basis of it)
        _, _, vt = np.linalg.svd(L, full_matrices=False)
        L = vt[:q]
    Phi = kr.vcov
    theta_phi = L.T @ np.linalg.solve(L @ Phi @ L.T, L) @ Phi
    U = np.einsum("ab,gbc,cd->gad", theta_phi, kr.P, Phi)
    tr = np.einsum("gaa->g", U)
    a1 = float(tr @ kr.W @ tr)
    a2 = float(np.einsum("ij,iab,jba->", kr.W, U, U))
    b = (a1 + 6 * a2) / (2 * q)
    g = ((q + 1) * a1 - (q + 4) * a2) / ((q + 2) * a2)
    denom = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / denom, (q - g) / denom, (q + 2 - g) / denom
    v0 = 1 + c1 * b
    v0 = 0.0 if abs(v0) < 1e-10 else v0
    rho = (1 - a2 / q) ** 2 / (1 - c2 * b) ** 2 * v0 / (1 - c3 * b) / q
    m = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(m - 2) < 0.01 else m * (1 - a2 / q) / (m - 2)
    Lb = L @ model.beta
    unscaled = float(Lb @ np.linalg.solve(L @ kr.vcov_adj @ L.T, Lb)) / q
    return scaling * unscaled, q, float(m), unscaled * model.sigma**2


def f_test(model: MixedModel, L: Any, ddf: str = "satterthwaite") -> pd.Series:
    """F test of L beta = 0 for a linear mixed model (lmerTest's ``contestMD``).

    Parameters
    ----------
    model : LinearMixedModel
    L : array-like, shape (q, p) or (p,)
        One row per contrast, one column per fixed effect (``model.fixef`` order).
    ddf : {"satterthwaite", "kenward-roger"}
        See the module's notes; Kenward-Roger needs a REML fit.

    Returns
    -------
    pandas.Series
        ``sum_sq``, ``mean_sq`` (F times sigma^2, before Kenward-Roger's scaling, as lmerTest),
        ``num_df``, ``den_df``, ``F`` and ``p_value``.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> f_test(m, [[1, 0], [0, 1]])[["num_df", "den_df", "F"]].round(2).tolist()
    [2.0, 17.0, 749.96]
    """
    from .results import LinearMixedModel

    if not isinstance(model, LinearMixedModel):
        raise HmixError(
            "F tests with denominator df are for linear mixed models; for a GLMM use "
            "hmix.anova.wald_test (chi-square) or hmix.compare (likelihood ratio)"
        )
    Lm = _contrast(model, L)
    method = _method(ddf)
    F, q, df, ms = (_satterthwaite if method == "satterthwaite" else _kenward_roger)(model, Lm)
    p = float(stats.f.sf(F, q, df)) if q else np.nan
    return pd.Series({"sum_sq": ms * q, "mean_sq": ms, "num_df": q, "den_df": df, "F": F, "p_value": p})


def wald_test(model: MixedModel, L: Any) -> pd.Series:
    """Wald chi-square test of L beta = 0 with the model's vcov (any mixed model).

    Returns
    -------
    pandas.Series
        ``chisq``, ``df`` (the rank of L) and ``p_value``.

    Examples
    --------
    >>> import hmix
    >>> g = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...                hmix.datasets.load("cbpp"), family="binomial")
    >>> wald_test(g, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])[["chisq", "df"]].round(2).tolist()
    [24.95, 3.0]
    """
    Lm = _contrast(model, L)
    V = Lm @ model.vcov.to_numpy() @ Lm.T
    q = int(np.linalg.matrix_rank(V))
    Lb = Lm @ model.beta
    chisq = float(Lb @ np.linalg.pinv(V, hermitian=True) @ Lb) if q else np.nan
    return pd.Series({"chisq": chisq, "df": q, "p_value": float(stats.chi2.sf(chisq, q)) if q else np.nan})


def anova(model: MixedModel, type: str = "III", ddf: str | None = None) -> pd.DataFrame:
    """One test per term of the fixed part (lmerTest's ``anova(m)`` for LMMs).

    See ``hmix.LinearMixedModel.anova``.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> anova(m)[["num_df", "den_df", "F"]].round(2)
          num_df  den_df      F
    term
    Days       1    17.0  45.85
    """
    from .results import LinearMixedModel

    H = hypotheses(model.design, type)
    names = list(model.design.fixef_names)
    if isinstance(model, LinearMixedModel):
        method = _method(ddf or "satterthwaite")
        rows = [f_test(model, L, method) if len(L) else _empty(f_test_columns=True) for L in H.values()]
        heading = f"Type {_roman(type)} Analysis of Variance Table with {_label(method)} method"
    else:
        if ddf is not None:
            raise HmixError(
                f"ddf={ddf!r} is for linear mixed models: a GLMM's terms get Wald chi-square tests, "
                "which have no denominator df (leave ddf out, or use hmix.compare for a "
                "likelihood-ratio test)"
            )
        rows = [wald_test(model, L) if len(L) else _empty(f_test_columns=False) for L in H.values()]
        heading = f"Type {_roman(type)} Analysis of Deviance Table (Wald chi-square tests)"
    columns = list(F_COLUMNS if isinstance(model, LinearMixedModel) else WALD_COLUMNS)
    out = pd.DataFrame(rows, index=pd.Index(list(H), name="term"), columns=columns)
    for c in ("num_df", "df"):
        if c in out:
            out[c] = out[c].astype(int)
    out.attrs.update(
        heading=heading,
        hypotheses={k: pd.DataFrame(L, columns=names) for k, L in H.items()},
    )
    return out


def _empty(f_test_columns: bool) -> pd.Series:
    keys = F_COLUMNS if f_test_columns else WALD_COLUMNS
    return pd.Series({k: (0 if k in ("num_df", "df") else np.nan) for k in keys})


def _roman(type: str) -> str:
    key = str(type).upper().replace("TYPE", "").strip()
    return {"1": "I", "3": "III"}.get(key, key)


def _label(method: str) -> str:
    return "Satterthwaite's" if method == "satterthwaite" else "Kenward-Roger's"
