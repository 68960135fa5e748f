"""Generalized linear mixed models: PIRLS, the Laplace approximation, adaptive Gauss-Hermite.

The GLMM holds the linear engine and reuses it: each PIRLS step hands it the working response and
weights, and its blocked Cholesky factor gives the conditional modes and the log-determinant of
the Laplace approximation. The stages of a fit (``hmix.fit``) call the objective defined here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .design import ArrayLike, Design
from .engine import Engine, Factor, NotPositiveDefinite
from .errors import DataError, HmixWarning, user_stacklevel
from .families import Family
from .families.zeroinflated import ZeroInflatedObserved
from .remat import ThetaMap, spread_of

__all__ = [
    "GLMMObjective",
    "PirlsSettings",
    "PirlsState",
    "glm_start",
    "GlmmPenalty",
    "agq_rule",
    "warn_separation",
]

GlmmPenalty = Callable[[np.ndarray], tuple[float, np.ndarray]]
_CHORD_WORK = 1000.0  # flops of a factorization per row above which the chord step pays


@dataclass(frozen=True)
class PirlsSettings:
    """How PIRLS iterates for the conditional modes (recorded in the fit's ``OptSummary``).

    Attributes
    ----------
    maxit : int
        Steps at most.
    tol : float
        Convergence: the penalized deviance changes by at most this, relative, ...
    eta_tol : float
        ... and the linear predictor by at most this in any row.
    halvings : int
        Step halvings at most while the penalized deviance rises.
    early_stop : bool
        Stop before a full step that would change the penalized deviance by at most ``tol``,
        whatever it does to eta: the point before it and its factor stand (one factorization a
        call fewer). For a stage that needs the objective only roughly: nAGQ = 1's theta stage,
        recorded as ``OptSummary.pirls_theta``.

    Examples
    --------
    >>> import hmix
    >>> g = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...                hmix.datasets.load("cbpp"), family="binomial")
    >>> g.optsum.pirls
    PirlsSettings(maxit=50, tol=1e-12, eta_tol=inf, halvings=12, early_stop=False)
    >>> g.optsum.pirls_theta
    PirlsSettings(maxit=50, tol=0.0001, eta_tol=inf, halvings=12, early_stop=True)
    """

    maxit: int = 50
    tol: float = 1e-12
    eta_tol: float = math.inf
    halvings: int = 12
    early_stop: bool = False

    @classmethod
    def for_family(cls, family: Family, zero_inflated: bool = False) -> PirlsSettings:
        """The defaults for a family. With the canonical link PIRLS is Newton's method: once the
        penalized deviance changes by 1e-12, the modes are exact to about the square of the last
        step. For other links (probit, cloglog) its Fisher scoring converges only linearly: a
        small change in the penalized deviance (quadratic near its minimum) still leaves the
        modes ~1e-6 off, which moves the Laplace log-determinant (linear in them) by ~1e-7 and
        makes the objective depend on where PIRLS started. There the linear predictor must also
        have stopped moving, to 1e-10; so for zero-inflated models, whose PIRLS weights are
        not their curvature."""
        if family.canonical and not zero_inflated:
            return cls(tol=1e-12)
        return cls(tol=1e-14, eta_tol=1e-10)

    def loosened(self, tol: float, early_stop: bool = False) -> PirlsSettings:
        """The same with a tolerance no tighter than ``tol`` on the penalized deviance alone
        (and ``early_stop``)."""
        return replace(self, tol=max(self.tol, tol), eta_tol=math.inf, early_stop=early_stop)


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
    laplace: Factor | None = None  # the factor with the observed information, once computed


class GLMMObjective:
    """The Laplace (or adaptive Gauss-Hermite) deviance of a GLMM, -2 log-likelihood.

    Called with ``params = (theta, beta)`` it runs PIRLS over u with beta fixed (nAGQ >= 1);
    ``laplace_joint(theta)`` runs PIRLS over beta and u together (nAGQ = 0). The last conditional
    modes warm-start the next evaluation. ``value_and_gradient(params)`` also gives the exact
    gradient of the Laplace deviance. Beyond theta and beta, the parameters hold the extras
    (``nextra``): the logarithm of the family's dispersion when it is estimated (a negative
    binomial's theta, a Gamma's phi), then the zero-inflation coefficients.

    Parameters
    ----------
    design : Design
    family : Family
    nAGQ : int
    pirls : PirlsSettings, optional
        Defaults for the family (``PirlsSettings.for_family``).
    penalty : callable, optional
        ``(theta, beta) -> (value, gradient)``: a prior's -2 log-density and its gradient, added
        to the deviance (the optimizer minimizes the sum; ``deviance`` leaves it out).
    zi : ndarray, optional
        The zero-inflation part's model matrix (n x p_zi).

    Examples
    --------
    >>> import numpy as np, hmix
    >>> cbpp = hmix.datasets.load("cbpp")
    >>> d = hmix.build_design("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    >>> f = hmix.GLMMObjective(d, hmix.get_family("binomial"))
    >>> round(f(np.array([0.642, -1.398, -0.992, -1.128, -1.580])), 2)  # lme4's estimates
    184.05
    """

    _u_fac: Factor | None = None  # the last PIRLS's factor (``_chord``)
    # the lowest laplace_joint since start(): (value, theta's bytes, its PIRLS solution)
    _joint_best: tuple[float, bytes, PirlsState | None] = (math.inf, b"", None)

    def __init__(
        self,
        design: Design,
        family: Family,
        nAGQ: int = 1,
        pirls: PirlsSettings | None = None,
        penalty: GlmmPenalty | None = None,
        zi: np.ndarray | None = None,
    ):
        self.design = design
        self.penalty = penalty
        self.family = family
        self.zi = zi
        self.ndisp = int(family.free_dispersion)
        self.nextra = self.ndisp + (0 if zi is None else zi.shape[1])
        self.nAGQ = int(nAGQ)
        self.settings = (
            PirlsSettings.for_family(family, zero_inflated=zi is not None) if pirls is None else pirls
        )
        n = design.n
        self.y = design.y
        self.wt = np.ones(n) if design.weights is None else design.weights
        self.off = np.zeros(n) if design.offset is None else design.offset
        self._extra_at: bytes | None = None
        self.set_extra(np.zeros(self.nextra))
        self._x0 = np.zeros((n, 0))
        self.engine_u = Engine(design.terms, self._x0, np.zeros(n), np.ones(n), reweighted=True)
        self.layout = self.engine_u.layout
        self.thetamap: ThetaMap = self.layout.thetamap
        self._beta_joint = np.zeros(design.p)
        self._beta_start = np.zeros(design.p)
        self._u = [np.zeros(t.q) for t in self.layout.terms]
        self._u_at: tuple[np.ndarray, np.ndarray] | None = None  # lam and PIRLS weights of _u
        # the last value_and_gradient: (params, PIRLS state, value, gradient); the final Hessian
        # starts at the optimizer's last point, and the fit's last PIRLS is at that point too
        self._last: tuple[bytes, PirlsState, float, np.ndarray] | None = None
        self.ntheta = self.thetamap.ntheta
        self.scale_mask = self.thetamap.scale_mask
        self.lower_theta = self.thetamap.lower
        if self.nAGQ > 100:
            raise DataError(
                f"nAGQ={self.nAGQ}: at most 100 quadrature nodes (beyond, the Gauss-Hermite weights "
                "underflow); 25 already gives the likelihood to many digits"
            )
        if self.nAGQ > 1:
            if zi is not None:
                raise DataError("nAGQ > 1 is not available for zero-inflated models; use nAGQ=1 (Laplace)")
            agq_rule(design, self.nAGQ)

    @cached_property
    def theta_scale(self) -> np.ndarray:
        """theta times this is theta for columns of Z of size 1 (``ThetaMap.scale``)."""
        return self.thetamap.scale

    @cached_property
    def x_scale(self) -> np.ndarray:
        """The spread of each column of X (its SD; a constant column's root mean square; 1 for a
        column of zeros): beta times this is beta for columns of unit spread."""
        s = spread_of(self.design.X)
        return np.where(s > 0, s, 1.0)

    @property
    def observed_curvature(self) -> bool:
        """Whether the Laplace approximation's curvature is the observed information rather than
        PIRLS's Fisher weights: for glmmTMB's families with a non-canonical link, and for
        zero-inflated models (whose likelihood has no Fisher form)."""
        return self.zi is not None or (self.family.observed_laplace and not self.family.canonical)

    @property
    def exact_gradient(self) -> bool:
        """Whether ``value_and_gradient`` applies: the Laplace approximation (nAGQ <= 1), and
        for a dispersion, the observed information as its curvature (the derivatives in the
        extras are the observed information's; Fisher's weights with an estimated dispersion,
        lme4's ``glmer.nb``, take the derivative-free stage)."""
        return self.nAGQ <= 1 and (self.nextra == 0 or self.observed_curvature)

    def set_extra(self, extra: np.ndarray) -> None:
        """Bind the family at these extra parameters (the log dispersion, the zero-inflation
        coefficients); later evaluations use them."""
        extra = np.asarray(extra, dtype=float)
        key = extra.tobytes()
        if key == self._extra_at:
            return
        fam = self.family
        if self.ndisp:
            fam = fam.with_dispersion(float(np.exp(extra[0])))
        self.bound_family = fam
        if self.zi is None:
            self.obs = fam.bind(self.y, self.wt)
        else:
            self.obs = ZeroInflatedObserved.of(fam, self.y, self.wt, self.zi @ extra[self.ndisp :])
        self._extra_at = key

    def split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """theta, beta and the extras of a parameter vector."""
        p = self.design.p
        nth = self.ntheta
        return params[:nth], params[nth : nth + p], params[nth + p :]

    @cached_property
    def engine_joint(self) -> Engine:
        """The engine with X: PIRLS over beta and u together (nAGQ = 0, and the PIRLS vcov)."""
        n = self.design.n
        return Engine(self.design.terms, self.design.X, np.zeros(n), np.ones(n), reweighted=True)

    def _zlu_t(self, tmats: tuple[np.ndarray, ...], u: list[np.ndarray]) -> np.ndarray:
        """Z Lambda u without forming Z."""
        out = np.zeros(self.design.n)
        for t, T, ut in zip(self.layout.terms, tmats, u):
            if t.k == 1:
                out += t.z[:, 0] * (T[0, 0] * ut)[t.refs]
            else:
                out += t.contribution((ut.reshape(t.nlevels, t.k) @ T.T).ravel())
        return out

    def pirls(
        self, theta: np.ndarray, beta: np.ndarray | None, settings: PirlsSettings | None = None
    ) -> PirlsState:
        """Penalized iteratively reweighted least squares for the conditional modes.

        With ``beta`` given, only u moves (nAGQ >= 1); with ``beta=None``, beta and u move together
        (nAGQ = 0). Each step is halved while the penalized deviance rises.
        """
        s = self.settings if settings is None else settings
        joint = beta is None
        engine = self.engine_joint if joint else self.engine_u
        X = self.design.X
        lam = self.thetamap.lam(theta)
        tmats = self.layout.tmats(lam)
        b = self._beta_joint if joint else np.asarray(beta, dtype=float)
        u = self._rescaled_modes(lam) if joint else [v.copy() for v in self._u]
        # eta = fixed + X b (joint) + Z Lambda u, each part linear in what moves
        fixed = self.off if joint else self.off + X @ b
        xb = X @ b if joint else None
        zlu = self._zlu_t(tmats, u)
        eta = fixed + zlu if xb is None else fixed + xb + zlu
        mu = self.family.linkinv(eta)
        dev = self.obs.deviance(mu)
        pdev = dev + sum(float(v @ v) for v in u)
        # the warm start, unless the modes at zero (and, jointly, the starting beta) are better:
        # the last modes moved to a new theta, or the last beta without the random effects, can
        # leave the mean's domain (a Gamma's inverse or identity link: mu <= 0)
        b0 = self._beta_start if joint else b
        xb0 = X @ b0 if joint else None
        eta0 = fixed if xb0 is None else fixed + xb0
        dev0 = self.obs.deviance(self.family.linkinv(eta0))
        if not joint and self._u_fac is not None and self._chord_pays and np.isfinite(pdev):
            # (a second step pays only where PIRLS can stop without taking its own: eta_tol)
            for _ in range(2 if s.eta_tol < math.inf else 1):
                u, zlu, eta, dev, pdev, better = self._chord(
                    self._u_fac, tmats, fixed, u, zlu, eta, dev, pdev
                )
                if not better:
                    break
        if dev0 < pdev or (np.isnan(pdev) and not np.isnan(dev0)):
            u, zlu, eta, dev, pdev = [np.zeros_like(v) for v in u], np.zeros_like(zlu), eta0, dev0, dev0
            b, xb = b0, xb0
        fac, w, mu = self._reweight(engine, lam, eta, zlu, xb)
        converged = False
        for _ in range(s.maxit):
            u_new = fac.u_engine
            zlu_new = self._zlu_t(tmats, u_new)
            b_new = fac.beta if joint else b
            xb_new = X @ b_new if joint else None
            step = 1.0
            for _ in range(s.halvings):
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
            moved = float(np.abs(eta_try - eta).max(initial=0.0)) if s.eta_tol < math.inf else 0.0
            if (
                step == 1.0
                and change <= s.tol * (abs(pdev) + 0.1)
                and (s.early_stop or moved <= s.eta_tol < math.inf)
            ):
                # the full step from here moves eta by at most eta_tol: this point is the mode to
                # within it, and its factor stands (one factorization a call fewer than taking the
                # step and refactoring there). (Without eta_tol, the small change of a quadratic
                # leaves the modes ~sqrt(tol) off, and the log-determinant with them: the step is
                # taken, unless early_stop says that is close enough.)
                converged = True
                break
            # the factor at the new mode's weights: the next step's system, and at convergence
            # the Laplace log-determinant
            try:
                fac_try, w_try, mu_try = self._reweight(engine, lam, eta_try, zlu_try, xb_try)
            except NotPositiveDefinite:
                # the weights there have vanished along a fixed effect (complete separation): the
                # last point and its factor stand, unconverged
                break
            u, zlu, xb, eta, pdev, dev = u_try, zlu_try, xb_try, eta_try, pdev_try, dev_try
            fac, w, mu = fac_try, w_try, mu_try
            if joint:
                b = b + step * (b_new - b)
            if change <= s.tol * (abs(pdev) + 0.1) and moved <= s.eta_tol:
                converged = True
                break
        if np.isfinite(pdev):  # (modes outside the domain would hold every later start there)
            self.keep_modes(lam, u, w)
            self._u_fac = fac
            if joint:
                self._beta_joint = b
        return PirlsState(u=u, beta=b, eta=eta, mu=mu, factor=fac, converged=converged, w=w, deviance=dev)

    def _chord(
        self,
        fac: Factor,
        tmats: tuple[np.ndarray, ...],
        fixed: np.ndarray,
        u: list[np.ndarray],
        zlu: np.ndarray,
        eta: np.ndarray,
        dev: float,
        pdev: float,
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, float, float, bool]:
        """The warm start improved by one Newton step over u with the last PIRLS factor (a chord
        step: the new parameters' gradient, the last system's matrix), when it lowers the
        penalized deviance. It costs a solve rather than a factorization; after a small move of the
        parameters (a finite difference, a late quasi-Newton step) PIRLS then starts within about
        the square of the move from the new modes and needs a step fewer (grouseticks' Poisson:
        117 factorizations a fit down to 103). With an eta tolerance PIRLS can stop without a
        step of its own, and a second chord step often leaves it one factorization (the
        negative binomial: 127 down to 103; the Hessian's differences are more accurate too).
        Returns the start and whether it moved."""
        lay = self.layout
        _, _, resid, w = self.obs.working(eta)
        ztr = self._zt @ (w * resid)  # (w times the working residual: the score)
        g = np.concatenate(
            [
                ztr[o : o + t.q] * T[0, 0]
                if t.k == 1
                else (ztr[o : o + t.q].reshape(t.nlevels, t.k) @ T).ravel()
                for o, t, T in zip(lay.offsets, lay.terms, tmats)
            ]
        )
        uc = np.concatenate(u)
        with np.errstate(all="ignore"):
            uc = uc + fac.solve(g - uc)
            u_new = [uc[o : o + t.q] for o, t in zip(lay.offsets, lay.terms)]
            zlu_new = self._zlu_t(tmats, u_new)
            eta_new = fixed + zlu_new
            dev_new = self.obs.deviance(self.family.linkinv(eta_new))
        pdev_new = dev_new + float(uc @ uc)
        if pdev_new < pdev:
            return u_new, zlu_new, eta_new, dev_new, pdev_new, True
        return u, zlu, eta, dev, pdev, False

    @cached_property
    def _chord_pays(self) -> bool:
        """Whether a chord step (``_chord``) costs less than the factorization it saves: it
        passes over the rows about as often as a PIRLS step does, which on problems with many
        rows and one small term costs as much as the factorization itself (the performance page
        has the figures). So it is taken where the factorization's flops outweigh the rows, a
        choice by the problem's size alone, as ``choose_method``'s."""
        return self.engine_u.work > _CHORD_WORK * self.design.n

    @cached_property
    def _zt(self) -> sp.csr_matrix:
        """Z' in u-space (engine order)."""
        return sp.hstack([t.zmatrix for t in self.layout.terms], format="csr").T.tocsr()

    def keep_modes(self, lam: np.ndarray, u: list[np.ndarray], w: np.ndarray | None) -> None:
        """Later PIRLS runs start from these modes (at this lam, with these weights)."""
        self._u = u
        self._u_at = None if w is None else (lam.copy(), w)

    def _rescaled_modes(self, lam: np.ndarray) -> list[np.ndarray]:
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
        lam0, w = self._u_at
        for i, (t, sl) in enumerate(zip(self.layout.terms, self.layout.lam_slices)):
            t0, t1 = float(lam0[sl][0]), float(lam[sl][0])
            if t.k == 1 and t0 > 0 and t1 > 0 and t0 != t1:
                A = self._level_weight_sum(i, w)
                u[i] *= (t1 / t0) * (t0 * t0 * A + 1) / (t1 * t1 * A + 1)
        return u

    def _level_weight_sum(self, i: int, w: np.ndarray) -> np.ndarray:
        """Per level of the engine's term ``i`` (scalar), the sum of w z^2 over its rows."""
        t = self.layout.terms[i]
        return np.bincount(t.refs, w * t.z[:, 0] ** 2, minlength=t.nlevels)

    def _reweight(
        self, engine: Engine, lam: np.ndarray, eta: np.ndarray, zlu: np.ndarray, xb: np.ndarray | None
    ) -> tuple[Factor, np.ndarray, np.ndarray]:
        """Working response and weights at eta into the engine; its factor at lam.

        With the observed information as the curvature, PIRLS weighs by it, negative rows and
        all (Newton's method: zero-inflated Salamanders, 9 steps a call down to 4), while the
        system stays positive definite; else by positive weights."""
        for newton in (True, False) if self.observed_curvature else (False,):
            mu, _, resid, w = self.obs.working(eta, newton)
            if xb is None:
                engine.set_data(self._x0, zlu + resid, w)
            else:
                engine.set_data(self.design.X, xb + zlu + resid, w)
            try:
                with np.errstate(invalid="ignore"):
                    return engine.factor(lam), w, mu
            except NotPositiveDefinite:
                if not newton:
                    raise
        raise AssertionError("unreachable")

    def joint_factor(self, theta: np.ndarray, eta: np.ndarray, beta: np.ndarray) -> Factor:
        """The factor of the system with X at the working weights at eta: its L_XX gives the
        covariance of beta from the PIRLS weights alone."""
        xb = self.design.X @ beta
        return self._reweight(self.engine_joint, self.thetamap.lam(theta), eta, eta - self.off - xb, xb)[0]

    def start(self, beta: np.ndarray) -> None:
        """Set the starting fixed effects for the joint PIRLS and reset the modes."""
        self._beta_joint = np.asarray(beta, dtype=float).copy()
        self._beta_start = self._beta_joint.copy()
        self._u = [np.zeros(t.q) for t in self.layout.terms]
        self._u_at = None
        self._u_fac = None
        self._joint_best = (math.inf, b"", None)
        self._last = None

    def laplace_value(self, st: PirlsState) -> float:
        """-2 log-likelihood by the Laplace approximation at a PIRLS solution (the curvature:
        PIRLS's Fisher weights, or the observed information for ``observed_laplace`` families)."""
        dev = st.deviance if np.isfinite(st.deviance) else self.obs.deviance(st.mu)
        return float(dev + self.obs.constant + sum(float(v @ v) for v in st.u) + self.logdet(st))

    def logdet(self, st: PirlsState) -> float:
        """log |Lambda'Z'WZ Lambda + I| at the modes, W the curvature the Laplace approximation
        takes (``Family.observed_laplace``)."""
        return self.laplace_factor(st).logdet_z

    def laplace_factor(self, st: PirlsState) -> Factor:
        """The factor of Lambda'Z'WZ Lambda + I with the Laplace approximation's curvature W:
        PIRLS's last one when it weighed by W, else computed once (and kept on the state)."""
        if not self.observed_curvature:
            return st.factor
        if st.laplace is None:
            st.laplace = self._factor_with(st, self.obs.observed_weights(st.eta))
        return st.laplace

    def _factor_with(self, st: PirlsState, w: np.ndarray) -> Factor:
        """The factor at the state's lam with weights ``w`` (PIRLS's own if they are its)."""
        if st.w is not None and np.array_equal(w, st.w):
            return st.factor
        self.engine_u.set_data(self._x0, np.zeros(self.design.n), w)
        return self.engine_u.factor(st.factor.lam)

    def laplace_joint(self, theta: np.ndarray, settings: PirlsSettings | None = None) -> float:
        """nAGQ = 0: the Laplace deviance with beta from PIRLS (plus the penalty at that beta)."""
        theta = np.asarray(theta, dtype=float)
        st = self.pirls(theta, None, settings)
        value = self.laplace_value(st) + self._penalty(np.concatenate([theta, st.beta]))[0]
        if value < self._joint_best[0]:
            self._joint_best = (value, theta.tobytes(), st)
        return value

    def joint_state(self, theta: np.ndarray, settings: PirlsSettings | None = None) -> PirlsState:
        """The joint PIRLS solution at theta: the best ``laplace_joint`` kept, when it was at
        theta (the derivative-free stage ends at its best point: one PIRLS run fewer), and later
        runs start from it; else PIRLS."""
        theta = np.asarray(theta, dtype=float)
        _, key, st = self._joint_best
        if st is None or st.w is None or key != theta.tobytes():
            return self.pirls(theta, None, settings)
        self.keep_modes(st.factor.lam, [v.copy() for v in st.u], st.w)
        self._beta_joint = st.beta.copy()
        self._u_fac = st.factor
        return st

    def deviance(self, params: ArrayLike) -> float:
        """The deviance over (theta, beta, extras) for nAGQ >= 1, without the penalty."""
        params = np.asarray(params, dtype=float)
        theta, beta, extra = self.split(params)
        self.set_extra(extra)
        st = self.pirls(theta, beta)
        if self.nAGQ <= 1:
            return self.laplace_value(st)
        return self.agq_value(theta, beta, st)

    def __call__(self, params: ArrayLike) -> float:
        """The objective over (theta, beta) for nAGQ >= 1: the deviance plus the penalty."""
        params = np.asarray(params, dtype=float)
        return self.deviance(params) + self._penalty(params)[0]

    def _penalty(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        """The penalty over (theta, beta) (and 0 over the extras) and its gradient."""
        grad = np.zeros(len(params))
        if self.penalty is None:
            return 0.0, grad
        k = self.ntheta + self.design.p
        value, g = self.penalty(params[:k])
        grad[:k] = np.asarray(g, dtype=float)[:k]
        return float(value), grad

    def value_and_gradient(self, params: ArrayLike) -> tuple[float, np.ndarray]:
        """The Laplace deviance over (theta, beta, extras) and its exact gradient.

        The deviance is -2 log p(y | u-hat) + |u-hat|^2 + log|M|, M = Lambda'Z'WZ Lambda + I,
        with u-hat and W depending on the parameters (W: Fisher's weights, or the observed
        information, ``observed_curvature``). By the envelope theorem the penalized deviance moves
        only through its explicit arguments; log|M| moves with Lambda and with W, through eta(u-hat)
        and, for the extras, directly. The implicit derivative of u-hat is H^-1 times the
        derivative of the PIRLS equations, H = Lambda'Z'W_obs Z Lambda + I the Hessian of the
        penalized deviance. Per row i, with zeta_i = Lambda' z_i and the entries of M^-1 that row
        touches, the leverage h_i = zeta_i' M^-1 zeta_i; with v = h dW/deta and
        s = H^-1 Lambda'Z'v, every component is one sum over the rows.
        """
        if not self.exact_gradient:
            raise DataError("the exact gradient is that of the Laplace approximation (nAGQ <= 1)")
        params = np.asarray(params, dtype=float)
        key = params.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[2], self._last[3].copy()
        theta, beta, extra = self.split(params)
        self.set_extra(extra)
        st = self.pirls(theta, beta)
        pen, pen_grad = self._penalty(params)
        value, grad = self.laplace_value(st) + pen, self._gradient(theta, st) + pen_grad
        self._last = (key, st, value, grad)
        return value, grad.copy()

    def cached_state(self, params: np.ndarray) -> PirlsState | None:
        """The PIRLS solution the last ``value_and_gradient`` computed, if it was at ``params``."""
        last = self._last
        if last is None or last[0] != np.asarray(params, dtype=float).tobytes():
            return None
        return last[1]

    def _gradient(self, theta: np.ndarray, st: PirlsState) -> np.ndarray:
        lay = self.layout
        cols, zt, lam_r, lam_c = lay.row_columns
        assert st.w is not None
        if self.observed_curvature:
            # log|M| and u-hat's movement both take the observed information
            r, w, dw = self.obs.curvature(st.eta)
            fac = fac_obs = self.laplace_factor(st)
            w_obs = w
        else:
            # Fisher's weights in log|M|; for a non-canonical link u-hat moves with the observed
            # information, whose factor is computed as well
            w = st.w
            fac = st.factor
            r, dw, w_given = self.obs.score(st.eta, st.mu, w)
            w_obs = w if w_given is None else w_given
            fac_obs = fac if w_given is None else self._factor_with(st, w_obs)
        lam = self.thetamap.lam(theta)
        tmats = lay.tmats(lam)
        V = fac.row_inverse(cols)
        zeta = zt @ lay.row_lambda(tmats)
        Vz = np.einsum("iab,ib->ia", V, zeta)
        h = np.einsum("ia,ia->i", zeta, Vz)
        v = h * dw
        ztv = np.bincount(cols.ravel(), (zt * v[:, None]).ravel(), minlength=lay.q1 + lay.qr)
        lam_ztv = np.concatenate(
            [
                (ztv[o : o + t.q].reshape(t.nlevels, t.k) @ T).ravel()
                for o, t, T in zip(lay.offsets, lay.terms, tmats)
            ]
        )
        s_i = fac_obs.solve(lam_ztv)[cols]
        zs = np.einsum("ia,ia->i", zeta, s_i)
        a = v - w_obs * zs - 2.0 * r
        u_i = np.concatenate(st.u)[cols]
        gamma = a[:, None] * u_i + r[:, None] * s_i + 2.0 * w[:, None] * Vz
        g_lam = np.einsum("ij,ij->j", zt[:, lam_r], gamma[:, lam_c])
        J = self.thetamap.lam_jacobian(theta)
        parts = [g_lam if J is None else J.T @ g_lam, self.design.X.T @ a]
        if self.nextra:
            # the extras enter no eta: only log p, r and W move with them directly
            E = self.obs.extra_derivatives(st.eta, bool(self.ndisp))
            rows = zs[:, None] * E[:, 1, :] + h[:, None] * E[:, 2, :] - 2.0 * E[:, 0, :]
            if self.ndisp:
                parts.append(rows[:, :1].sum(axis=0))
            if self.zi is not None:
                parts.append(self.zi.T @ rows[:, -1])
        return np.concatenate(parts)

    def agq_value(
        self, theta: np.ndarray, beta: np.ndarray, st: PirlsState, nodes: int | None = None
    ) -> float:
        """-2 log-likelihood by adaptive Gauss-Hermite quadrature with ``nodes`` nodes (default:
        nAGQ) at a PIRLS solution, for one scalar term, level by level. With one node it is the
        Laplace approximation."""
        (t,) = self.design.terms
        z_nodes, z_weights = agq_rule(self.design, self.nAGQ if nodes is None else nodes)
        fam = self.bound_family
        lam = float(self.thetamap.lam(theta)[0])
        u0 = st.u[0]
        sd = 1.0 / st.factor.L11[:, 0, 0]
        fixed = self.off + self.design.X @ beta
        zi = t.z[:, 0]

        def devc(u: np.ndarray) -> np.ndarray:
            mu = fam.linkinv(fixed + lam * zi * u[t.refs])
            return np.bincount(t.refs, fam.minus2loglik(self.y, mu, self.wt), minlength=t.nlevels) + u**2

        d0 = devc(u0)
        mult = np.zeros(t.nlevels)
        for z, w in zip(z_nodes, z_weights):
            mult += w * np.exp((d0 - devc(u0 + z * sd)) / 2 + z * z / 2)
        return float(d0.sum() - 2 * np.log(mult).sum() - 2 * np.log(sd).sum())


def _glm_irls(design: Design, family: Family) -> tuple[np.ndarray, bool]:
    """The GLM without random effects by iteratively reweighted least squares (R's glm.fit:
    start from R's mustart, stop when the deviance changes by less than 1e-8 relative, or
    after 25 steps).

    Returns the fixed effects (NaN when the fit fails) and whether the fitted means reproduced
    the response (perfect prediction) at some iteration.
    """
    obs = family.bind(design.y, np.ones(design.n) if design.weights is None else design.weights)
    X = design.X
    off = np.zeros(design.n) if design.offset is None else design.offset
    beta = np.full(design.p, np.nan)
    perfect = False
    with np.errstate(all="ignore"):
        mu = family.start_mu(obs.y, obs.wt)
        eta = family.linkfun(mu)
        dev_old = np.inf  # mustart is no fit: its deviance can be below the GLM's
        for _ in range(25):
            mu, mueta, resid, w = obs.working(eta)
            # Fisher scoring with the score r = resid * w (PIRLS's weights may be the observed
            # information), and Fisher's weights without PIRLS's floor: under separation the
            # floor would turn the vanishing weights into one huge step
            XtW = X.T * (obs.wt * mueta**2 / family.variance(mu))
            try:
                step = sla.cho_solve(sla.cho_factor(XtW @ X), XtW @ (eta - off) + X.T @ (resid * w))
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


def warn_separation() -> None:
    """The warning for fixed effects that predict the response perfectly."""
    warnings.warn(
        "complete or quasi-complete separation: some fixed effects predict the response "
        "perfectly, so their estimates and standard errors are unreliable (very large); "
        "consider removing or merging the predictor levels involved",
        HmixWarning,
        stacklevel=user_stacklevel(),
    )


def agq_rule(design: Design, nAGQ: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights (for the standard normal) of adaptive quadrature, which
    needs a single scalar random-effects term."""
    t = design.terms
    if len(t) != 1 or t[0].k != 1:
        raise DataError(
            "nAGQ > 1 is only available for models with a single, scalar random-effects "
            "term, such as (1 | g); use nAGQ=1 (Laplace) for this model"
        )
    nodes, w = np.polynomial.hermite_e.hermegauss(nAGQ)
    return nodes, w / np.sqrt(2 * np.pi)


def glm_start(design: Design, family: Family) -> np.ndarray:
    """Fixed effects of the GLM without random effects, lme4's starting values; warns when they
    show separation."""
    beta, perfect = _glm_irls(design, family)
    extreme = family.name == "binomial" and np.abs(np.nan_to_num(design.X @ beta)).max(initial=0) > 15
    if perfect or extreme:
        warn_separation()
    if not np.isfinite(beta).all():
        beta = np.zeros(design.p)
    return beta
