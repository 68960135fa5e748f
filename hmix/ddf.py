"""Small-sample t tests of fixed effects: Satterthwaite's and Kenward-Roger's denominator df.

Satterthwaite (as lmerTest)
---------------------------
For a contrast l'beta with variance v(varpar) = l' C(varpar) l, C = vcov(beta) as a function of
lme4's variance parameters varpar = (theta, sigma),

    df = 2 v^2 / (g' A g),   g = dv/dvarpar,   A = 2 H^-1,

where H is the Hessian of the deviance (REML criterion or -2 log-likelihood, as fitted) over
varpar. With the factor at theta the deviance is d(theta, sigma) = a(theta) + r2(theta)/sigma^2
+ m log(sigma^2) + const (a = log|L_ZZ|^2, plus log|L_XX|^2 and m = n - p for REML; m = n for ML)
and C = sigma^2 (L_XX L_XX')^-1, so every sigma derivative is in closed form. The theta
derivatives of a, r2 and (L_XX L_XX')^-1 are central differences on the fitted engine at steps h
and h/2, Richardson-extrapolated (error O(h^4)), with h = 0.01 max(|theta_i|, 0.1). Smaller steps
lose more to rounding than they gain (at h = 1e-3 with three halvings the error is ~1e-5). Against
closed-form derivatives of the dense marginal model the df agree within 2.5e-7 relative (1e-8
typical) on every Gaussian reference model, and within 1e-8 on simulated fits with 20 to 400
rows per group. Before it is inverted, H is scaled to a unit diagonal; eigenvalues below 1e-8 of
the largest are dropped (a pseudo-inverse, as lmerTest does for a singular fit), negative ones
with a warning. The cost is 2k^2 factorizations per step for k elements of theta: any model the
engine fits.

Kenward-Roger (as pbkrtest)
---------------------------
Kenward and Roger (1997) with V = sigma^2 (diag(w)^-1 + Z Lambda Lambda' Z') (w the prior
weights) written linearly in the variance components psi (the lower triangle of each term's
covariance matrix, then sigma^2), so dV/dpsi_i = G_i = Z_t (I (x) E_i) Z_t' (E_i the symmetric
unit matrix of element i; diag(w)^-1 for sigma^2) and the second derivatives vanish. With
Phi = (X'V^-1 X)^-1, P_i = -X'V^-1 G_i V^-1 X, Q_ij = X'V^-1 G_i V^-1 G_j V^-1 X and the REML
expected information I_ij = tr(V^-1 G_i V^-1 G_j) - 2 tr(Phi Q_ij) + tr(Phi P_i Phi P_j),
W = 2 I^-1:

    Phi_A = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j)] Phi,

and for a single contrast l (q = 1) the K-R formulas reduce to a scale factor of 1 and

    df = 2 (l' Phi l)^2 / (a' W a),   a_i = l' Phi P_i Phi l.

Nothing n x n is formed: by the Woodbury identity every V^-1 (and V^-2, V^-3) sandwich of
[Z X] is a product of q x q and q x p matrices (q = number of random effects), computed after
whitening by the prior weights; against a dense n x n computation the results agree to 1e-12.
The dense q x q matrices limit it to ``MAX_KR_RANDOM_EFFECTS`` random effects (at that size
seconds and about a gigabyte of memory). The df are invariant to the parameterization
(gradients and information change covariantly); Phi_A is not in general (the -R_ij/4 terms of a
non-linear parameterization such as theta do not cancel: with (theta, sigma) the adjusted SEs of
the reference models move by 1-9%), which is why psi is used, as in pbkrtest. pbkrtest leaves
prior weights out of V (an identity residual part); here they are in.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp
from scipy import stats

from .errors import ConvergenceWarning, HmixError

if TYPE_CHECKING:
    from .results import LinearMixedModel

__all__ = [
    "satterthwaite_df",
    "varpar_vcov",
    "kenward_roger",
    "KenwardRoger",
    "ddf_table",
    "MAX_KR_RANDOM_EFFECTS",
]

MAX_KR_RANDOM_EFFECTS = 3000  # dense q x q matrices: their time and memory grow as q^3 and q^2
_STEP = 1e-2  # base step of the theta differences, times max(|theta_i|, 0.1)
_HALVINGS = 2  # steps h and h/2 in the Richardson extrapolation
_EIG_TOL = 1e-8  # eigenvalues of the unit-diagonal Hessian below this (relative) are dropped

_CACHE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _cached(m: LinearMixedModel, key: str, make: Any) -> Any:
    store = _CACHE.setdefault(m, {})
    if key not in store:
        store[key] = make(m)
    return store[key]


def ddf_method(ddf: str) -> str:
    """The canonical name of a ddf method ("satterthwaite", "kenward-roger")."""
    key = str(ddf).lower().replace("_", "-").replace(" ", "-")
    if key in ("satterthwaite", "kenward-roger"):
        return key
    raise ValueError(f"ddf must be None, 'satterthwaite' or 'kenward-roger', not {ddf!r}")


def _contrasts(m: LinearMixedModel, L: Any) -> np.ndarray:
    p = m.design.p
    out = np.eye(p) if L is None else np.atleast_2d(np.asarray(L, dtype=float))
    if out.shape[1] != p:
        raise ValueError(f"a contrast needs {p} coefficients (one per fixed effect), not {out.shape[1]}")
    return out


# ----- Satterthwaite -------------------------------------------------------------------------
def _richardson(estimates: list[np.ndarray]) -> np.ndarray:
    """Extrapolate central differences at h, h/2, h/4, ... (error series in h^2) to h = 0."""
    table = list(estimates)
    for k in range(1, len(table)):
        f = 4.0**k
        table = [(f * table[i + 1] - table[i]) / (f - 1.0) for i in range(len(table) - 1)]
    return table[0]


@dataclass(frozen=True)
class _VarparDerivatives:
    """Deviance Hessian and the Jacobian of vcov(beta) over varpar = (theta, sigma)."""

    vcov: np.ndarray  # C, p x p
    jacobian: np.ndarray  # dC/dvarpar, (k + 1, p, p)
    vcov_varpar: np.ndarray  # A = 2 H^+, (k + 1, k + 1)


def _theta_differences(m: LinearMixedModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and second theta derivatives of (a, r2) and first ones of (L_XX L_XX')^-1."""
    assert m.devfun is not None
    devfun, reml, theta = m.devfun, m.REML, np.asarray(m.theta, dtype=float)
    k, p = len(theta), m.design.p

    def evaluate(th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fac = devfun.factor(th)
        a = fac.logdet_z + (fac.logdet_x if reml else 0.0)
        return np.array([a, fac.r2]), fac.xtx_inv()

    f0, _ = evaluate(theta)
    base = _STEP * np.maximum(np.abs(theta), 0.1)
    grads, hessians, jacobians = [], [], []
    for level in range(_HALVINGS):
        h = base / 2.0**level
        g, H, J = np.zeros((k, 2)), np.zeros((k, k, 2)), np.zeros((k, p, p))
        for i in range(k):
            e = np.zeros(k)
            e[i] = h[i]
            fp, Xp = evaluate(theta + e)
            fm, Xm = evaluate(theta - e)
            g[i] = (fp - fm) / (2 * h[i])
            H[i, i] = (fp - 2 * f0 + fm) / h[i] ** 2
            J[i] = (Xp - Xm) / (2 * h[i])
            for j in range(i):
                e2 = np.zeros(k)
                e2[j] = h[j]
                four = [
                    evaluate(theta + s1 * e + s2 * e2)[0] for s1, s2 in ((1, 1), (1, -1), (-1, 1), (-1, -1))
                ]
                H[i, j] = H[j, i] = (four[0] - four[1] - four[2] + four[3]) / (4 * h[i] * h[j])
        grads.append(g)
        hessians.append(H)
        jacobians.append(J)
    return _richardson(grads), _richardson(hessians), _richardson(jacobians)


def _pseudo_inverse(H: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric matrix over its clearly positive eigen-directions (unit-diagonal scaling)."""
    d = np.sqrt(np.abs(np.diag(H)))
    d[d == 0] = 1.0
    vals, vecs = np.linalg.eigh(H / np.outer(d, d))
    tol = _EIG_TOL * max(float(np.abs(vals).max(initial=0.0)), 1e-300)
    if (vals < -tol).any():
        warnings.warn(
            "the Hessian of the deviance over the variance parameters has negative eigenvalues "
            f"({', '.join(f'{v:.1e}' for v in vals[vals < -tol])}): the fit may not be at a minimum; "
            "those directions are left out of the Satterthwaite df",
            ConvergenceWarning,
            stacklevel=4,
        )
    pos = vals > tol
    inv = (vecs[:, pos] / vals[pos]) @ vecs[:, pos].T
    return inv / np.outer(d, d)


def _require_lmm(m: Any) -> None:
    from .results import LinearMixedModel

    if not isinstance(m, LinearMixedModel):
        raise HmixError(
            "denominator degrees of freedom are for linear mixed models; GLMMs use z tests "
            "(asymptotic normal reference distribution, as lme4)"
        )
    if m.priors is not None:
        raise HmixError(
            "Satterthwaite and Kenward-Roger degrees of freedom are derived from the unpenalized "
            "REML criterion, which a blmer fit does not minimize; use coef_table() (Wald t values), "
            "confint(method='boot'), or fit the model with lmer for small-sample tests"
        )


def _varpar_derivatives(m: LinearMixedModel) -> _VarparDerivatives:
    if m.devfun is None:
        raise HmixError("this model was built without its objective function; refit it with hmix.lmer")
    d = m.design
    g, H, J = _theta_differences(m)
    sigma, r2 = float(m.sigma), float(m.factor.r2)
    dof = d.n - d.p if m.REML else d.n
    k = len(m.theta)
    hess = np.empty((k + 1, k + 1))
    hess[:k, :k] = H[..., 0] + H[..., 1] / sigma**2
    hess[:k, k] = hess[k, :k] = -2.0 * g[:, 1] / sigma**3
    hess[k, k] = 6.0 * r2 / sigma**4 - 2.0 * dof / sigma**2
    xtx = m.factor.xtx_inv()
    jac = np.concatenate([sigma**2 * J, (2.0 * sigma * xtx)[None]])
    return _VarparDerivatives(sigma**2 * xtx, jac, 2.0 * _pseudo_inverse(hess))


def satterthwaite_df(m: LinearMixedModel, L: Any = None) -> np.ndarray:
    """Satterthwaite's denominator degrees of freedom for contrasts of the fixed effects.

    As lmerTest computes them: the Hessian of the fitted criterion (REML or ML) and the
    Jacobian of vcov(beta) over (theta, sigma), here with closed-form sigma derivatives and
    Richardson-extrapolated differences in theta (see the module's notes).

    Parameters
    ----------
    m : LinearMixedModel
    L : array-like, optional
        One contrast (length p) or one per row (c x p). Default: each coefficient alone.

    Returns
    -------
    ndarray
        One df per contrast.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> hmix.ddf.satterthwaite_df(m).round(2)
    array([17., 17.])
    >>> hmix.ddf.satterthwaite_df(m, [0, 1]).round(2)
    array([17.])
    """
    _require_lmm(m)
    deriv: _VarparDerivatives = _cached(m, "satterthwaite", _varpar_derivatives)
    Lm = _contrasts(m, L)
    v = np.einsum("ca,ab,cb->c", Lm, deriv.vcov, Lm)
    grad = np.einsum("ca,kab,cb->ck", Lm, deriv.jacobian, Lm)
    denom = np.einsum("ck,kl,cl->c", grad, deriv.vcov_varpar, grad)
    with np.errstate(divide="ignore"):
        return np.asarray(np.where(denom > 0, 2.0 * v**2 / np.where(denom > 0, denom, 1.0), np.inf))


def varpar_vcov(m: LinearMixedModel) -> np.ndarray:
    """The covariance of (theta, sigma) from the Hessian of the criterion the model was fitted
    with, 2 H^-1 (a pseudo-inverse; see the module's notes): the A of Satterthwaite's df.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> hmix.ddf.varpar_vcov(m).shape
    (2, 2)
    """
    _require_lmm(m)
    deriv: _VarparDerivatives = _cached(m, "satterthwaite", _varpar_derivatives)
    return deriv.vcov_varpar.copy()


# ----- Kenward-Roger -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class KenwardRoger:
    """Kenward and Roger's adjusted covariance of beta and what their df need.

    Attributes
    ----------
    vcov : ndarray
        Phi, the covariance of beta at the REML estimates (lme4's ``vcov``).
    vcov_adj : ndarray
        Phi_A, the adjusted covariance (pbkrtest's ``vcovAdj``).
    P : ndarray, shape (g, p, p)
        -X'V^-1 G_i V^-1 X for each of the g variance components.
    W : ndarray, shape (g, g)
        Twice the inverse of the REML expected information of the variance components.
    names : list of str
        The variance components, as ``var(g.x)``, ``cov(g.x,g.y)`` and ``var(Residual)``.
    """

    vcov: np.ndarray
    vcov_adj: np.ndarray
    P: np.ndarray
    W: np.ndarray
    names: list[str]

    def df(self, L: Any = None) -> np.ndarray:
        """Denominator df for single contrasts (default: each coefficient alone).

        Parameters
        ----------
        L : array-like, optional
            One contrast (length p) or one per row (c x p).

        Returns
        -------
        ndarray
            One df per contrast.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> hmix.ddf.kenward_roger(m).df().round(2)
        array([17., 17.])
        """
        p = self.vcov.shape[0]
        Lm = np.eye(p) if L is None else np.atleast_2d(np.asarray(L, dtype=float))
        if Lm.shape[1] != p:
            raise ValueError(f"a contrast needs {p} coefficients (one per fixed effect), not {Lm.shape[1]}")
        PhiL = Lm @ self.vcov
        v = np.einsum("ca,ca->c", PhiL, Lm)
        a = np.einsum("ca,gab,cb->cg", PhiL, self.P, PhiL)
        denom = np.einsum("cg,gh,ch->c", a, self.W, a)
        with np.errstate(divide="ignore"):
            return np.asarray(np.where(denom > 0, 2.0 * v**2 / np.where(denom > 0, denom, 1.0), np.inf))


def _components(m: LinearMixedModel) -> tuple[list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """Names and index pairs (rows a, columns b of Z's columns) of each D_i = I (x) E_i."""
    names, pairs, off = [], [], 0
    for t in m.design.terms:
        rows, cols = t.cov.pattern
        base = off + np.arange(t.nlevels) * t.k
        for r, c in zip(rows, cols):
            ra, ca = base + r, base + c
            if r == c:
                names.append(f"var({t.group}.{t.names[r]})")
                pairs.append((ra, ra))
            else:
                names.append(f"cov({t.group}.{t.names[c]},{t.group}.{t.names[r]})")
                pairs.append((np.concatenate([ra, ca]), np.concatenate([ca, ra])))
        off += t.q
    return names, pairs


def _kenward_roger(m: LinearMixedModel) -> KenwardRoger:
    if not m.REML:
        raise HmixError(
            "Kenward-Roger's method is defined for REML fits (pbkrtest refits by REML, lmerTest "
            "refuses): fit with lmer(..., REML=True), or use ddf='satterthwaite'"
        )
    d = m.design
    for t in d.terms:
        if not t.cov.linear_covariance:
            raise HmixError(
                f"Kenward-Roger's method needs covariances linear in their parameters (unstructured "
                f"and diag() terms), and the {t.cov.kind}() term of {t.group} is not: use "
                "ddf='satterthwaite', which works for any covariance structure"
            )
    q = sum(t.q for t in d.terms)
    if q > MAX_KR_RANDOM_EFFECTS:
        raise HmixError(
            f"Kenward-Roger needs dense {q} x {q} matrices ({q} random effects; at most "
            f"{MAX_KR_RANDOM_EFFECTS} are supported): use ddf='satterthwaite', which works for any size"
        )
    sw = None if d.weights is None else np.sqrt(d.weights)
    X = d.X if sw is None else d.X * sw[:, None]
    Z = sp.hstack([t.zmatrix for t in d.terms], format="csr")
    if sw is not None:
        Z = sp.diags(sw) @ Z
    blocks = [
        sp.kron(sp.identity(t.nlevels), sp.csr_matrix(T)) for t, T in zip(d.terms, m.thetamap.tmats(m.theta))
    ]
    Lam = sp.block_diag(blocks, format="csr")
    S = np.asarray((Z.T @ Z).toarray())
    SX = np.asarray(Z.T @ X)
    XX = X.T @ X
    # V = sigma^2 (I + Z Lam Lam' Z') after whitening; V^-1 = sigma^-2 (I - Z E Z')
    LS = np.asarray(Lam.T @ S)
    M = np.asarray(Lam.T @ LS.T) + np.eye(q)
    E = np.asarray(Lam @ sla.cho_solve(sla.cho_factor(M, lower=True), Lam.T.toarray()))
    ES = E @ S
    ISE = np.eye(q) - ES.T  # I - S E
    Czz = S - S @ ES  # sigma^2 Z'V^-1 Z
    Czx = SX - S @ (E @ SX)  # sigma^2 Z'V^-1 X
    Cxx = XX - SX.T @ E @ SX  # sigma^2 X'V^-1 X
    Czx2 = ISE @ Czx  # sigma^4 Z'V^-2 X
    Xx2 = Cxx - SX.T @ E @ Czx  # sigma^4 X'V^-2 X
    Xx3 = Xx2 - Czx.T @ E @ Czx  # sigma^6 X'V^-3 X
    IS = ISE @ S  # rows of sigma^4 Z'V^-2 Z = (I - S E) S (I - E S)
    s2 = float(m.sigma) ** 2
    Phi = s2 * np.linalg.inv(Cxx)

    names, pairs = _components(m)
    names.append("var(Residual)")
    g = len(pairs) + 1
    P = np.empty((g, d.p, d.p))
    Q = np.empty((g, g, d.p, d.p))
    K = np.empty((g, g))
    for i, (ai, bi) in enumerate(pairs):
        Pi = Czx[ai].T @ Czx[bi]
        P[i] = -(Pi + Pi.T) / (2 * s2**2)
        for j, (aj, bj) in enumerate(pairs[: i + 1]):
            Q[j, i] = Czx[aj].T @ Czz[np.ix_(bj, ai)] @ Czx[bi] / s2**3
            K[i, j] = K[j, i] = float(np.sum(Czz[np.ix_(bi, aj)] * Czz[np.ix_(ai, bj)])) / s2**2
        Q[i, -1] = Czx[ai].T @ Czx2[bi] / s2**3
        K[i, -1] = K[-1, i] = float(np.einsum("ua,ua->", IS[bi], ISE[ai])) / s2**2
    P[-1] = -Xx2 / s2**2
    Q[-1, -1] = Xx3 / s2**3
    K[-1, -1] = (d.n - 2.0 * np.trace(ES) + float(np.sum(ES * ES.T))) / s2**2

    info = np.empty((g, g))
    for i in range(g):
        for j in range(i, g):
            info[i, j] = info[j, i] = (
                K[i, j] - 2.0 * float(np.sum(Phi * Q[i, j])) + float(np.sum((Phi @ P[i]) * (P[j] @ Phi)))
            )
    W = 2.0 * (
        np.linalg.inv(info) if np.abs(np.linalg.eigvalsh(info)).min() > 1e-10 else np.linalg.pinv(info)
    )
    U = np.zeros((d.p, d.p))
    for i in range(g):
        for j in range(i + 1, g):
            U += W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j])
    U = U + U.T
    for i in range(g):
        U += W[i, i] * (Q[i, i] - P[i] @ Phi @ P[i])
    PhiA = Phi + 2.0 * Phi @ U @ Phi
    return KenwardRoger(vcov=Phi, vcov_adj=(PhiA + PhiA.T) / 2, P=P, W=W, names=names)


def kenward_roger(m: LinearMixedModel) -> KenwardRoger:
    """Kenward and Roger's adjusted covariance of the fixed effects and their df.

    Parameters
    ----------
    m : LinearMixedModel
        Fitted by REML, with at most ``MAX_KR_RANDOM_EFFECTS`` random effects.

    Returns
    -------
    KenwardRoger
        ``vcov_adj`` is pbkrtest's ``vcovAdj``; ``df(L)`` gives the df of single contrasts.

    Raises
    ------
    HmixError
        For an ML fit, or too many random effects for the dense q x q computation.

    Examples
    --------
    >>> import hmix, numpy as np
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> kr = hmix.ddf.kenward_roger(m)
    >>> np.sqrt(np.diag(kr.vcov_adj)).round(3)
    array([6.825, 1.546])
    >>> kr.names[:2]
    ['var(Subject.(Intercept))', 'cov(Subject.(Intercept),Subject.Days)']
    """
    _require_lmm(m)
    result: KenwardRoger = _cached(m, "kenward-roger", _kenward_roger)
    return result


def ddf_table(m: LinearMixedModel, ddf: str) -> pd.DataFrame:
    """Fixed effects with t tests on ``ddf`` denominator degrees of freedom.

    Parameters
    ----------
    m : LinearMixedModel
    ddf : {"satterthwaite", "kenward-roger"}
        Kenward-Roger also uses the adjusted covariance for the standard errors.

    Returns
    -------
    pandas.DataFrame
        Indexed by term: ``estimate``, ``std_error``, ``statistic`` (t), ``df``, ``p_value``
        (two-sided, t distribution).

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> hmix.ddf.ddf_table(m, "satterthwaite")[["std_error", "df"]].round(3)
                 std_error    df
    (Intercept)      6.825  17.0
    Days             1.546  17.0
    """
    method = ddf_method(ddf)
    est = m.fixef
    if method == "satterthwaite":
        se = m.std_errors.to_numpy()
        df = satterthwaite_df(m)
    else:
        kr = kenward_roger(m)
        se = np.sqrt(np.diag(kr.vcov_adj))
        df = kr.df()
    t = est.to_numpy() / se
    return pd.DataFrame(
        {
            "estimate": est,
            "std_error": se,
            "statistic": t,
            "df": df,
            "p_value": 2.0 * stats.t.sf(np.abs(t), df),
        },
        index=est.index,
    )
