"""Generalized linear mixed models: PIRLS, the Laplace approximation, adaptive Gauss-Hermite.

The GLMM holds the linear engine (``BlockedPLS``) and reuses it: each PIRLS
step hands it the working response and weights, and its blocked Cholesky factor gives the
conditional modes and the log-determinant of the Laplace approximation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla

from ._threads import one_blas_thread
from .blocks import BlockedPLS, Factor
from .design import ArrayLike, Design, build_design
from .errors import ConvergenceWarning, DataError, HmixWarning, user_stacklevel
from .families import Family, Observed, get_family
from .optimize import (
    OptSummary,
    check_convergence,
    choose_method,
    hessian_from_gradient,
    minimize,
    minimize_newton,
)

__all__ = ["glmer", "GLMMObjective"]

_PIRLS_MAXIT = 50
_PIRLS_TOL = 1e-12  # relative change of the penalized deviance
# non-canonical links (probit, cloglog): PIRLS's Fisher scoring converges only linearly, and the
# exact gradient (and the Hessian differenced from it) needs the modes to ~1e-7
_PIRLS_TOL_FISHER = 1e-14
_HALVINGS = 12
# nAGQ = 1 with a canonical link: stage 1 only has to bring theta near the optimum, where the
# quasi-Newton stage over (theta, beta) converges in a few steps
_STAGE1_FTOL = 1e-4
_STAGE1_PIRLS_TOL = 1e-6  # ... and its PIRLS need not converge further than that


@dataclass
class PirlsState:
    """The conditional modes at (theta, beta) and what the objective needs from them."""

    u: list[np.ndarray]  # spherical random effects per term, engine order
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    factor: Factor
    converged: bool
    w: np.ndarray | None = None  # the PIRLS weights the factor was computed with
    deviance: float = float("nan")  # sum of squared deviance residuals at mu


class GLMMObjective:
    """The Laplace (or adaptive Gauss-Hermite) deviance of a GLMM, -2 log-likelihood.

    Called with ``params = (theta, beta)`` it runs PIRLS over u with beta fixed (nAGQ >= 1);
    ``laplace_joint(theta)`` runs PIRLS over beta and u together (nAGQ = 0). The last conditional
    modes warm-start the next evaluation. ``value_and_gradient(params)`` also gives the exact
    gradient of the Laplace deviance.

    Parameters
    ----------
    design : Design
    family : Family
    nAGQ : int

    Examples
    --------
    >>> import numpy as np, hmix
    >>> cbpp = hmix.datasets.load("cbpp")
    >>> d = hmix.build_design("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    >>> f = hmix.GLMMObjective(d, hmix.get_family("binomial"))
    >>> round(f(np.array([0.642, -1.398, -0.992, -1.128, -1.580])), 2)  # lme4's estimates
    184.05
    """

    def __init__(self, design: Design, family: Family, nAGQ: int = 1):
        self.design = design
        self.family = family
        self.nAGQ = int(nAGQ)
        n = design.n
        self.y = design.y
        self.wt = np.ones(n) if design.weights is None else design.weights
        self.off = np.zeros(n) if design.offset is None else design.offset
        self.obs = Observed(family, self.y, self.wt)
        self.pls_u = BlockedPLS(design.terms, np.zeros((n, 0)), np.zeros(n), np.ones(n), reweighted=True)
        self._pls_joint: BlockedPLS | None = None
        self._beta_joint = np.zeros(design.p)
        self._u = [np.zeros(t.q) for t in self.pls_u.terms]
        self._u_at: tuple[np.ndarray, np.ndarray] | None = None  # theta and PIRLS weights of _u
        # the last value_and_gradient: (params, PIRLS state, value, gradient); the final Hessian
        # starts at the optimizer's last point, and the fit's last PIRLS is at that point too
        self._last: tuple[bytes, PirlsState, float, np.ndarray] | None = None
        self.pirls_tol = _PIRLS_TOL if family.canonical else _PIRLS_TOL_FISHER
        self.ntheta = self.pls_u.ntheta
        self.diagonal = np.concatenate([t.diagonal for t in design.terms])
        self.lower_theta = np.where(self.diagonal, 0.0, -np.inf)
        if self.nAGQ > 1:
            t = design.terms
            if len(t) != 1 or t[0].k != 1:
                raise DataError(
                    "nAGQ > 1 is only available for models with a single, scalar random-effects "
                    "term, such as (1 | g); use nAGQ=1 (Laplace) for this model"
                )
            self._nodes, w = np.polynomial.hermite_e.hermegauss(self.nAGQ)
            self._weights = w / np.sqrt(2 * np.pi)

    @property
    def pls_joint(self) -> BlockedPLS:
        if self._pls_joint is None:
            n = self.design.n
            self._pls_joint = BlockedPLS(
                self.design.terms, self.design.X, np.zeros(n), np.ones(n), reweighted=True
            )
        return self._pls_joint

    def _tmats(self, theta: np.ndarray, pls: BlockedPLS) -> list[np.ndarray]:
        return [t.tmat(theta[sl]) for t, sl in zip(pls.terms, pls.theta_slices)]

    @staticmethod
    def _zlu_t(tmats: list[np.ndarray], u: list[np.ndarray], pls: BlockedPLS) -> np.ndarray:
        """Z Lambda u without forming Z."""
        out = np.zeros(pls.n)
        for t, T, ut in zip(pls.terms, tmats, u):
            if t.k == 1:
                out += t.z[:, 0] * (T[0, 0] * ut)[t.refs]
            else:
                out += t.contribution((ut.reshape(t.nlevels, t.k) @ T.T).ravel())
        return out

    def pirls(self, theta: np.ndarray, beta: np.ndarray | None) -> PirlsState:
        """Penalized iteratively reweighted least squares for the conditional modes.

        With ``beta`` given, only u moves (nAGQ >= 1); with ``beta=None``, beta and u move together
        (nAGQ = 0). Each step is halved while the penalized deviance rises.
        """
        joint = beta is None
        pls = self.pls_joint if joint else self.pls_u
        X = self.design.X
        tmats = self._tmats(theta, pls)
        b = self._beta_joint if joint else np.asarray(beta, dtype=float)
        u = self._rescaled_modes(theta, pls) if joint else [v.copy() for v in self._u]
        # eta = fixed + X b (joint) + Z Lambda u, each part linear in what moves
        fixed = self.off if joint else self.off + X @ b
        xb = X @ b if joint else None
        zlu = self._zlu_t(tmats, u, pls)
        eta = fixed + zlu if xb is None else fixed + xb + zlu
        mu = self.family.linkinv(eta)
        dev = self.obs.deviance(mu)
        pdev = dev + sum(float(v @ v) for v in u)
        fac, w, mu = self._reweight(pls, theta, eta, zlu, xb)
        converged = False
        for _ in range(_PIRLS_MAXIT):
            u_new = fac.u_engine
            zlu_new = self._zlu_t(tmats, u_new, pls)
            b_new = fac.beta if joint else b
            xb_new = X @ b_new if joint else None
            step = 1.0
            for _ in range(_HALVINGS):
                u_try = [uo + step * (un - uo) for uo, un in zip(u, u_new)]
                zlu_try = zlu + step * (zlu_new - zlu)
                if xb is None or xb_new is None:
                    xb_try, eta_try = None, fixed + zlu_try
                else:
                    xb_try = xb + step * (xb_new - xb)
                    eta_try = fixed + xb_try + zlu_try
                mu_try = self.family.linkinv(eta_try)
                dev_try = self.obs.deviance(mu_try)
                pdev_try = dev_try + sum(float(v @ v) for v in u_try)
                if pdev_try <= pdev * (1 + 1e-14) + 1e-12:
                    break
                step /= 2
            else:
                break
            change = abs(pdev - pdev_try)
            u, zlu, xb, eta, pdev, dev = u_try, zlu_try, xb_try, eta_try, pdev_try, dev_try
            if joint:
                b = b + step * (b_new - b)
            # the factor at the new mode's weights: the next step's system, and at convergence
            # the Laplace log-determinant
            fac, w, mu = self._reweight(pls, theta, eta, zlu, xb)
            if change <= self.pirls_tol * (abs(pdev) + 0.1):
                converged = True
                break
        self._keep_modes(theta, u, w)
        if joint:
            self._beta_joint = b
        return PirlsState(u=u, beta=b, eta=eta, mu=mu, factor=fac, converged=converged, w=w, deviance=dev)

    def _keep_modes(self, theta: np.ndarray, u: list[np.ndarray], w: np.ndarray | None) -> None:
        """Later PIRLS runs start from these modes (at this theta, with these weights)."""
        self._u = u
        self._u_at = None if w is None else (theta.copy(), w)

    def _rescaled_modes(self, theta: np.ndarray, pls: BlockedPLS) -> list[np.ndarray]:
        """The last modes, moved to ``theta`` (the joint PIRLS's warm start as theta moves).

        For a scalar term, at level j with everything else held, the linearized PIRLS equation
        gives b_j ~ theta^2 c_j / (theta^2 A_j + 1), A_j = sum of w z^2 over the level's rows:
        so u_j = b_j / theta scales by (t1 / t0) (t0^2 A_j + 1) / (t1^2 A_j + 1) from t0 to t1,
        between keeping u (levels with little data) and keeping b (levels with much). This saves
        about one PIRLS step an evaluation of the theta-only stage (grouseticks: 78 to 62
        factorizations). Vector-valued terms keep u.
        """
        u = [v.copy() for v in self._u]
        if self._u_at is None:
            return u
        theta0, w = self._u_at
        for i, (t, sl) in enumerate(zip(pls.terms, pls.theta_slices)):
            t0, t1 = float(theta0[sl][0]), float(theta[sl][0])
            if t.k == 1 and t0 > 0 and t1 > 0 and t0 != t1:
                A = np.bincount(t.refs, w * t.z[:, 0] ** 2, minlength=t.nlevels)
                u[i] *= (t1 / t0) * (t0 * t0 * A + 1) / (t1 * t1 * A + 1)
        return u

    def _reweight(
        self, pls: BlockedPLS, theta: np.ndarray, eta: np.ndarray, zlu: np.ndarray, xb: np.ndarray | None
    ) -> tuple[Factor, np.ndarray, np.ndarray]:
        """Working response and weights at eta into the engine; its factor at theta."""
        mu, _, resid, w = self.obs.working(eta)
        if xb is None:
            pls.set_data(pls_x0(pls), zlu + resid, w)
        else:
            pls.set_data(self.design.X, xb + zlu + resid, w)
        return pls.factor(theta), w, mu

    def reweight(
        self, pls: BlockedPLS, theta: np.ndarray, eta: np.ndarray, beta: np.ndarray, joint: bool
    ) -> Factor:
        """Hand the engine the working response and weights at eta; factor at theta.

        ``joint``: beta moves with u (the system has X); otherwise X beta joins the offset.
        """
        xb = self.design.X @ beta
        zlu = eta - self.off - xb
        return self._reweight(pls, theta, eta, zlu, xb if joint else None)[0]

    def start(self, beta: np.ndarray) -> None:
        """Set the starting fixed effects for the joint PIRLS and reset the modes."""
        self._beta_joint = np.asarray(beta, dtype=float).copy()
        self._u = [np.zeros(t.q) for t in self.pls_u.terms]
        self._u_at = None
        self._last = None

    def laplace_value(self, st: PirlsState) -> float:
        """-2 log-likelihood by the Laplace approximation at a PIRLS solution."""
        dev = st.deviance if np.isfinite(st.deviance) else self.obs.deviance(st.mu)
        return float(dev + self.obs.constant + sum(float(v @ v) for v in st.u) + st.factor.logdet_z)

    def laplace_joint(self, theta: np.ndarray) -> float:
        """nAGQ = 0: the Laplace deviance with beta from PIRLS."""
        return self.laplace_value(self.pirls(np.asarray(theta, dtype=float), None))

    def __call__(self, params: ArrayLike) -> float:
        """The objective over (theta, beta) for nAGQ >= 1."""
        params = np.asarray(params, dtype=float)
        theta, beta = params[: self.ntheta], params[self.ntheta :]
        st = self.pirls(theta, beta)
        if self.nAGQ <= 1:
            return self.laplace_value(st)
        return self._agq(theta, beta, st)

    def value_and_gradient(self, params: ArrayLike) -> tuple[float, np.ndarray]:
        """The Laplace deviance over (theta, beta) and its exact gradient (canonical links).

        The deviance is pdev(u-hat) + log|M|, M = Lambda'Z'WZ Lambda + I, with u-hat and W
        depending on (theta, beta). By the envelope theorem pdev moves only through its explicit
        arguments; log|M| moves with Lambda and with W through eta(u-hat), and the implicit
        derivative of u-hat is M^-1 times the derivative of the PIRLS equations (for canonical
        links W is the curvature of the deviance). Per row i, with zeta_i = Lambda' z_i and the
        entries of M^-1 that row touches, the leverage h_i = zeta_i' M^-1 zeta_i; with
        v = h dW/deta and s = M^-1 Lambda'Z'v, every component is one sum over the rows.
        """
        if self.nAGQ > 1:
            raise DataError("the exact gradient is that of the Laplace approximation (nAGQ <= 1)")
        params = np.asarray(params, dtype=float)
        key = params.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[2], self._last[3].copy()
        theta, beta = params[: self.ntheta], params[self.ntheta :]
        st = self.pirls(theta, beta)
        value, grad = self.laplace_value(st), self._gradient(theta, st)
        self._last = (key, st, value, grad)
        return value, grad.copy()

    def cached_state(self, params: np.ndarray) -> PirlsState | None:
        """The PIRLS solution the last ``value_and_gradient`` computed, if it was at ``params``."""
        last = self._last
        if last is None or last[0] != np.asarray(params, dtype=float).tobytes():
            return None
        return last[1]

    @cached_property
    def _rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row, the u-space columns of Z it touches (n, K) and their values; per theta
        element, its row and column among those K (K = sum of the terms' k)."""
        pls = self.pls_u
        cols, zs, kstart = [], [], [0]
        for off, t in zip(pls.offsets, pls.terms):
            for a in range(t.k):
                cols.append(off + t.refs * t.k + a)
                zs.append(t.z[:, a])
            kstart.append(kstart[-1] + t.k)
        th_r = np.empty(self.ntheta, dtype=np.int64)
        th_c = np.empty(self.ntheta, dtype=np.int64)
        for i, (t, sl) in enumerate(zip(pls.terms, pls.theta_slices)):
            r, c = t.tril
            th_r[sl], th_c[sl] = kstart[i] + r, kstart[i] + c
        return np.stack(cols, axis=1), np.stack(zs, axis=1), th_r, th_c

    def _gradient(self, theta: np.ndarray, st: PirlsState) -> np.ndarray:
        pls = self.pls_u
        cols, zt, th_r, th_c = self._rows
        fac = st.factor
        assert st.w is not None
        w = st.w
        tmats = self._tmats(theta, pls)
        lam = np.zeros((zt.shape[1], zt.shape[1]))
        k0 = 0
        for t, T in zip(pls.terms, tmats):
            lam[k0 : k0 + t.k, k0 : k0 + t.k] = T
            k0 += t.k
        V = fac.row_inverse(cols)
        zeta = zt @ lam
        Vz = np.einsum("iab,ib->ia", V, zeta)
        r, dw, w_obs = self.obs.score(st.eta, st.mu, w)
        if w_obs is not None:
            # non-canonical link: u-hat moves with the observed information, not the weights;
            # the engine factors Lambda'Z'W_obs Z Lambda + I as well (its data are set afresh by
            # the next PIRLS step)
            pls.set_data(pls_x0(pls), np.zeros(pls.n), w_obs)
            fac_obs = pls.factor(theta)
        else:
            fac_obs, w_obs = fac, w
        v = np.einsum("ia,ia->i", zeta, Vz) * dw
        ztv = np.bincount(cols.ravel(), (zt * v[:, None]).ravel(), minlength=pls.q1 + pls.qr)
        lam_ztv = np.concatenate(
            [
                (ztv[o : o + t.q].reshape(t.nlevels, t.k) @ T).ravel()
                for o, t, T in zip(pls.offsets, pls.terms, tmats)
            ]
        )
        s_i = fac_obs.solve(lam_ztv)[cols]
        a = v - w_obs * np.einsum("ia,ia->i", zeta, s_i) - 2.0 * r
        u_i = np.concatenate(st.u)[cols]
        gamma = a[:, None] * u_i + r[:, None] * s_i + 2.0 * w[:, None] * Vz
        g_theta = np.einsum("ij,ij->j", zt[:, th_r], gamma[:, th_c])
        return np.concatenate([g_theta, self.design.X.T @ a])

    def _agq(self, theta: np.ndarray, beta: np.ndarray, st: PirlsState) -> float:
        """Adaptive Gauss-Hermite quadrature for one scalar term, level by level."""
        (t,) = self.design.terms
        fam = self.family
        lam = theta[0]
        u0 = st.u[0]
        sd = 1.0 / st.factor.L11[:, 0, 0]
        fixed = self.off + self.design.X @ beta
        zi = t.z[:, 0]

        def devc(u: np.ndarray) -> np.ndarray:
            mu = fam.linkinv(fixed + lam * zi * u[t.refs])
            return np.bincount(t.refs, fam.minus2loglik(self.y, mu, self.wt), minlength=t.nlevels) + u**2

        d0 = devc(u0)
        mult = np.zeros(t.nlevels)
        for z, w in zip(self._nodes, self._weights):
            mult += w * np.exp((d0 - devc(u0 + z * sd)) / 2 + z * z / 2)
        return float(d0.sum() - 2 * np.log(mult).sum() - 2 * np.log(sd).sum())


def pls_x0(pls: BlockedPLS) -> np.ndarray:
    """The empty fixed-effects matrix of a u-only system."""
    return np.zeros((pls.n, 0))


def _glm_irls(design: Design, family: Family) -> tuple[np.ndarray, bool]:
    """The GLM without random effects by iteratively reweighted least squares (R's glm.fit:
    start from R's mustart, stop when the deviance changes by less than 1e-8 relative, or
    after 25 steps).

    Returns the fixed effects (NaN when the fit fails) and whether the fitted means reproduced
    the response (perfect prediction) at some iteration.
    """
    obs = Observed(family, design.y, np.ones(design.n) if design.weights is None else design.weights)
    X = design.X
    off = np.zeros(design.n) if design.offset is None else design.offset
    beta = np.full(design.p, np.nan)
    perfect = False
    with np.errstate(all="ignore"):
        mu = family.start_mu(obs.y, obs.wt)
        eta = family.linkfun(mu)
        dev_old = np.inf  # mustart is no fit: its deviance can be below the GLM's
        for _ in range(25):
            mu, mueta, resid, _ = obs.working(eta)
            # the weights without PIRLS's floor: under separation the floor would turn the
            # vanishing weights into one huge step
            XtW = X.T * (obs.wt * mueta**2 / family.variance(mu))
            try:
                step = sla.cho_solve(sla.cho_factor(XtW @ X), XtW @ (eta - off + resid))
            except (np.linalg.LinAlgError, ValueError):
                break
            eta_new = off + X @ step
            mu = family.linkinv(eta_new)
            perfect = perfect or bool(np.allclose(mu, obs.y, rtol=0.0, atol=1e-8))
            dev = obs.deviance(mu)
            # keep the last step that lowered the deviance: under separation the weights
            # vanish and the next system is numerically singular
            if not (np.isfinite(dev) and np.isfinite(step).all() and dev < dev_old):
                break
            beta, eta = step, eta_new
            if dev_old - dev < 1e-8 * (dev + 0.1):
                break
            dev_old = dev
    return beta, perfect


def _glm_start(design: Design, family: Family) -> np.ndarray:
    """Fixed effects of the GLM without random effects, lme4's starting values; warns when they
    show separation."""
    beta, perfect = _glm_irls(design, family)
    extreme = family.name == "binomial" and np.abs(np.nan_to_num(design.X @ beta)).max(initial=0) > 15
    if perfect or extreme:
        warnings.warn(
            "complete or quasi-complete separation: some fixed effects predict the response "
            "perfectly, so their estimates and standard errors are unreliable (very large); "
            "consider removing or merging the predictor levels involved",
            HmixWarning,
            stacklevel=user_stacklevel(),
        )
    if not np.isfinite(beta).all():
        beta = np.zeros(design.p)
    return beta


def glmer(
    formula: str,
    data: pd.DataFrame,
    *,
    family: str | Family = "binomial",
    link: str | None = None,
    nAGQ: int = 1,
    weights: ArrayLike | None = None,
    offset: ArrayLike | None = None,
    vcov_method: str = "hessian",
    check_conv: bool = True,
) -> Any:
    """Fit a generalized linear mixed model, as lme4's ``glmer`` does.

    Parameters
    ----------
    formula : str
        lme4 formula; a binomial response may be 0/1 (numbers or booleans), a two-level factor,
        ``cbind(successes, failures)``, or a proportion with ``weights=`` the number of trials.
    data : pandas.DataFrame
        Never modified.
    family : {"binomial", "poisson"} or Family
    link : str, optional
        ``"logit"`` (default), ``"probit"`` or ``"cloglog"`` for binomial; ``"log"`` for Poisson.
    nAGQ : int, default 1
        0: optimize theta only, with beta from PIRLS (fast); 1: Laplace approximation over theta
        and beta; > 1: adaptive Gauss-Hermite quadrature with that many nodes (one scalar
        random-effects term only).
    weights, offset : str or array-like, optional
        Prior weights (binomial: trials) and an offset (adds to ``offset(...)`` terms).
    vcov_method : {"hessian", "pirls"}
        Covariance of beta from the finite-difference Hessian of the deviance over (theta, beta),
        as lme4 does by default, or from the PIRLS weights alone (cheaper, a few percent off).
    check_conv : bool, default True
        Run lme4's gradient and Hessian checks at the optimum.

    Returns
    -------
    GeneralizedLinearMixedModel

    Examples
    --------
    >>> import hmix
    >>> cbpp = hmix.datasets.load("cbpp")
    >>> m = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
    ...                family="binomial")
    >>> round(m.loglik, 2)
    -92.03
    """
    fam = get_family(family, link)
    if nAGQ < 0:
        raise DataError("nAGQ must be 0, 1 or more")
    if vcov_method not in ("hessian", "pirls"):
        raise DataError(f"vcov_method must be 'hessian' or 'pirls', not {vcov_method!r}")
    design = build_design(formula, data, weights=weights, offset=offset, binary_ok=fam.name == "binomial")
    name = str(data.attrs.get("name", "data"))
    return fit_glmm(design, fam, nAGQ=nAGQ, vcov_method=vcov_method, check_conv=check_conv, data_name=name)


def _rectify(theta: np.ndarray, design: Design) -> np.ndarray:
    """theta with every column of each term's T that has a negative diagonal negated (the same
    covariance Lambda Lambda')."""
    out, start = [], 0
    for t in design.terms:
        T = t.tmat(theta[start : start + t.ntheta])
        T[:, np.diag(T) < 0] *= -1
        out.append(T[t.tril])
        start += t.ntheta
    return np.concatenate(out)


def _exact_derivs(
    fg: Callable[[np.ndarray], tuple[float, np.ndarray | None]], diagonal: np.ndarray
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Gradient and Hessian at x from the exact gradient (None: fall back to differences of values)."""

    def derivs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        _, g = fg(x)
        H = None if g is None else hessian_from_gradient(fg, x, g, central=diagonal & (x == 0))
        return None if g is None or H is None else (g, H)

    return derivs


def _start_hessian(ntheta: int, factor: Factor) -> Callable[..., np.ndarray | None]:
    """The quasi-Newton stage's first Hessian, from the gradient differenced along theta alone.

    Its beta-by-beta block is PIRLS's own curvature at the stage-1 solution, 2 L_XX L_XX' (the
    Laplace deviance is -2 log-likelihood): the exact one differs only by how the modes move
    with beta, which BFGS then corrects. This saves one gradient per fixed effect (grouseticks:
    4 of 7) at the start; the final Hessian (vcov, checks) is still differenced in full.
    """
    xtx_inv = factor.xtx_inv()

    def start(x: np.ndarray, g: np.ndarray, fg: Callable) -> np.ndarray | None:
        n = len(x)
        if n - ntheta != len(xtx_inv):
            return None
        cols = hessian_from_gradient(fg, x, g, columns=ntheta)
        if cols is None:
            return None
        H = np.zeros((n, n))
        H[:, :ntheta] = cols
        H[:ntheta, ntheta:] = H[ntheta:, :ntheta].T
        H[:ntheta, :ntheta] = 0.5 * (H[:ntheta, :ntheta] + H[:ntheta, :ntheta].T)
        try:
            H[ntheta:, ntheta:] = 2.0 * np.linalg.inv(xtx_inv)
        except np.linalg.LinAlgError:
            return None
        return H

    return start


def fit_glmm(
    design: Design,
    fam: Family,
    *,
    nAGQ: int = 1,
    vcov_method: str = "hessian",
    check_conv: bool = True,
    data_name: str = "data",
) -> Any:
    """Fit a GLMM to a materialized design (``glmer`` after the formula; refits reuse it).

    BLAS runs on one thread meanwhile (see ``hmix._threads``).
    """
    with one_blas_thread():
        return _fit_glmm(design, fam, nAGQ, vcov_method, check_conv, data_name)


def _fit_glmm(
    design: Design, fam: Family, nAGQ: int, vcov_method: str, check_conv: bool, data_name: str
) -> Any:
    from .results import GeneralizedLinearMixedModel

    wt = np.ones(design.n) if design.weights is None else design.weights
    fam.validate(design.y, wt)
    if np.all(design.y == 0):
        raise DataError("every response is zero: there is nothing to model")
    if design.n <= design.p:
        raise DataError(
            f"{design.n} observations for {design.p} fixed effects: use more data or fewer fixed effects"
        )
    obj = GLMMObjective(design, fam, nAGQ)
    beta0 = _glm_start(design, fam)
    obj.start(beta0)

    # stage 1 (and the whole fit for nAGQ = 0): theta only, beta from PIRLS
    theta0 = obj.diagonal.astype(float)  # lme4's start: 1 on the diagonal
    # a PIRLS call is a few factorizations and a few passes over the rows
    method = choose_method(obj.ntheta, 3 * (obj.pls_joint.work + 50 * design.n))
    newton = nAGQ == 1
    full_tol = obj.pirls_tol
    if newton:
        obj.pirls_tol = max(full_tol, _STAGE1_PIRLS_TOL)
    theta, _, opt1, fc = minimize(
        obj.laplace_joint,
        theta0,
        obj.lower_theta,
        diagonal=obj.diagonal,
        method=method,
        ftol_rel=_STAGE1_FTOL if newton else 1e-12,
    )
    st = obj.pirls(theta, None)
    beta = st.beta
    obj.pirls_tol = full_tol
    derivs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | None] | None = None
    counted: Callable[[np.ndarray], float]
    if nAGQ == 0:
        params, diag, optsum, counted = theta, obj.diagonal, opt1, fc
    else:
        x0 = np.concatenate([theta, beta])
        lower = np.concatenate([obj.lower_theta, np.full(design.p, -np.inf)])
        diag = np.concatenate([obj.diagonal, np.zeros(design.p, bool)])
        spent = 0  # evaluations of a quasi-Newton stage that gave up
        found = False
        if newton:
            # without bounds: the deviance is even in the sign of each column of Lambda, and a
            # variance pinned at an exact zero would be a stationary point the gradient cannot leave
            def rectify(x: np.ndarray) -> np.ndarray:
                return np.concatenate([_rectify(x[: obj.ntheta], design), x[obj.ntheta :]])

            params, _, optsum, cg = minimize_newton(
                obj.value_and_gradient,
                x0,
                np.full(len(x0), -np.inf),
                diagonal=diag,
                rectify=rectify,
                start_hessian=_start_hessian(obj.ntheta, st.factor),
            )
            found = optsum.return_code > 0
            if found:
                counted, derivs = cg, _exact_derivs(cg.fg, diag)
            else:  # the derivative-free stage takes over from the best point
                spent = cg.n
                x0 = rectify(cg.best_x) if np.isfinite(cg.best_f) else x0
        if not found:
            se0 = np.sqrt(np.maximum(np.diag(obj.pls_joint.factor(theta).xtx_inv()), 1e-12))
            step = np.concatenate([np.full(obj.ntheta, 0.1), np.minimum(se0, 1.0)])
            params, _, optsum, counted = minimize(
                obj, x0, lower, diagonal=diag, initial_step=step, method="NLOPT_LN_BOBYQA"
            )
            # a restart with small steps: BOBYQA's first run can stop early on this objective
            params, _, opt3, counted = minimize(
                obj, params, lower, diagonal=diag, initial_step=step / 100, method="NLOPT_LN_BOBYQA"
            )
            optsum = OptSummary(**{**opt3.__dict__, "n_evals": optsum.n_evals + opt3.n_evals})
        evals = optsum.n_evals + opt1.n_evals + spent
        optsum = OptSummary(**{**optsum.__dict__, "initial": np.concatenate([theta, beta]), "n_evals": evals})
    # the modes at the optimum, if the quasi-Newton stage left them (the Hessian moves on from there)
    at_optimum = obj.cached_state(params) if nAGQ == 1 else None
    n_before = counted.n  # type: ignore[attr-defined]
    singular, converged, messages, hess = check_convergence(
        counted,
        params,
        diag,
        check=check_conv,
        hessian=nAGQ > 0 and vcov_method == "hessian",
        derivs=derivs,
    )
    n_evals = optsum.n_evals + counted.n - n_before  # type: ignore[attr-defined]
    optsum = OptSummary(**{**optsum.__dict__, "n_evals": n_evals, "warnings": tuple(messages)})
    theta = params[: obj.ntheta]
    beta = params[obj.ntheta :] if nAGQ > 0 else obj.pirls(theta, None).beta
    if at_optimum is not None:
        final = at_optimum
        obj._keep_modes(theta, [v.copy() for v in final.u], final.w)  # later PIRLS runs start here
    else:
        final = obj.pirls(theta, beta)
    if not final.converged:
        warnings.warn(
            f"PIRLS did not converge in {_PIRLS_MAXIT} steps at the estimates: the conditional "
            "modes and the likelihood are approximate",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    value = obj._agq(theta, beta, final) if nAGQ > 1 else obj.laplace_value(final)
    vcov_pirls = obj.reweight(obj.pls_joint, theta, final.eta, beta, joint=True).xtx_inv()
    vcov = vcov_pirls
    if vcov_method == "hessian" and nAGQ > 0 and hess is not None:
        try:
            Vh = np.linalg.inv(hess)
            if np.linalg.eigvalsh(Vh).min() > 0:
                vcov = 2 * Vh[obj.ntheta :, obj.ntheta :]
            else:
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            warnings.warn(
                "the Hessian of the deviance is not positive definite: standard errors come "
                "from the PIRLS weights instead",
                HmixWarning,
                stacklevel=user_stacklevel(),
            )
    return GeneralizedLinearMixedModel._from_glmm(
        obj,
        theta,
        beta,
        final,
        value,
        optsum,
        vcov,
        singular=singular,
        converged=converged,
        data_name=data_name,
        vcov_method=vcov_method if vcov is not vcov_pirls else "pirls",
    )
