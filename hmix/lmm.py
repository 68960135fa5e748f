"""Linear mixed models: the profiled ML/REML deviance as a function of theta."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .covariance import LevelEstimates
from .design import ArrayLike, Design
from .engine import Engine, Factor, Rule
from .engine.whole import LevelDerivatives
from .errors import DataError, HmixWarning, user_stacklevel
from .remat import ReTerm, ThetaMap

if TYPE_CHECKING:
    from .priors import Priors

__all__ = [
    "LMMObjective",
    "lmm_deviance",
    "start_theta",
    "start_ratio",
    "check_lmm",
    "check_nobs_vs_nre",
    "check_size",
    "LOG2PI",
]

LOG2PI = math.log(2 * math.pi)
_START_SWEEPS = 3  # backfitting sweeps of the moment-based start over the terms' columns
# above this many rows the start comes from the engine's statistics, the same formulas without
# passes over the rows (hmix.distributed.start_theta_from)
_START_FROM_STATISTICS = 250_000
# one-term systems take their exact derivatives level by level (``LevelDerivatives``) when its
# sums over the levels hold at most this many values (the whole system's bound, Rule.whole_basis)
_LEVEL_DERIVATIVES_SIZE = 2_000_000

Penalty = Callable[[np.ndarray], float]


def lmm_deviance(
    logdet_z: float,
    logdet_x: float,
    r2: float,
    n: int,
    p: int,
    REML: bool,
    sum_log_w: float = 0.0,
    sigma: float | None = None,
) -> float:
    """The LMM's deviance (-2 log-likelihood, or the REML criterion) from the factor's parts.

    With beta profiled out (and sigma too unless it is given)::

        ML:   log|L_Z|^2 + n (1 + log(2 pi r^2 / n))                 (sigma profiled)
              log|L_Z|^2 + n log(2 pi sigma^2) + r^2 / sigma^2        (at sigma)
        REML: as ML with log|L_Z|^2 + log|L_X|^2 and n - p for n

    minus the sum of the log prior weights.

    Examples
    --------
    >>> round(lmm_deviance(2.0, 0.0, 30.0, 10, 1, REML=False), 4)
    41.3649
    """
    if REML:
        m, logdet = n - p, logdet_z + logdet_x
    else:
        m, logdet = n, logdet_z
    if sigma is None:
        if r2 <= 0:  # y lies in the column space: no residual left (the optimizers' failure)
            return -math.inf
        return float(logdet + m * (1.0 + LOG2PI + math.log(r2 / m)) - sum_log_w)
    s2 = sigma * sigma
    return float(logdet + m * (LOG2PI + math.log(s2)) + r2 / s2 - sum_log_w)


class LMMObjective:
    """The profiled deviance of a linear mixed model as a function of theta.

    lme4's ``mkLmerDevfun``: call it with a theta vector (lme4's order) to get the REML criterion
    or -2 log-likelihood with beta and sigma profiled out (plus ``penalty(theta)`` when one is
    given: a prior's -2 log-density). Useful to plot the deviance surface or to fix theta.

    Parameters
    ----------
    design : Design
    REML : bool
    penalty : callable, optional
        theta -> a number added to the deviance (the optimizer minimizes the sum).
    rule : hmix.engine.Rule, optional
        The engine's choice of strategies.
    engine, theta0, sum_log_w, param_scale : optional
        An engine made from statistics reduced elsewhere, with the starting theta, the sum of
        the log prior weights and the optimizer's scale (``param_scale``) computed there too (a
        fit whose rows stay in a Dask cluster: ``hmix.dask``).

    Examples
    --------
    >>> import hmix
    >>> d = hmix.datasets.load("Dyestuff")
    >>> f = hmix.LMMObjective(hmix.build_design("Yield ~ 1 + (1 | Batch)", d), REML=True)
    >>> round(f([0.848323]), 3)  # lme4's REML criterion at its estimate
    319.654
    """

    priors: Priors | None = None  # (a penalized objective's, hmix.blme)
    # (the design and what its exact gradients share: see _gradient_data)
    _kept_gradient_data: tuple[Design, tuple[np.ndarray, np.ndarray, list[np.ndarray]]] | None = None
    _new_response: np.ndarray | None = None  # (set_response's, less the offset)
    # (the blocks they were made for, and the level derivatives or None where they do not apply)
    _level: tuple[object, LevelDerivatives | None] | None = None
    _last_derivatives: tuple[object, bytes, bool, tuple[np.ndarray, np.ndarray | None] | None] | None = None

    def __init__(
        self,
        design: Design,
        REML: bool = True,
        penalty: Penalty | None = None,
        rule: Rule | None = None,
        *,
        engine: Engine | None = None,
        theta0: np.ndarray | None = None,
        sum_log_w: float | None = None,
        param_scale: np.ndarray | None = None,
    ):
        self.design = design
        self.REML = bool(REML)
        self.penalty = penalty
        if engine is None:
            engine = Engine(
                design.terms, design.X, self._response(design.y), design.weights, rule=rule or Rule()
            )
        self.engine = engine
        self.thetamap: ThetaMap = self.engine.layout.thetamap
        w = design.weights
        if sum_log_w is None:
            sum_log_w = 0.0 if w is None else float(np.log(w).sum())
        self._sum_log_w = sum_log_w
        self._param_scale = param_scale
        self.lower = self.thetamap.lower
        self.upper = self.thetamap.upper
        self.scale_mask = self.thetamap.scale_mask
        if theta0 is None and design.n > _START_FROM_STATISTICS:
            from .distributed import start_theta_from

            blocks = self.engine.chol.blocks
            assert blocks is not None
            theta0 = start_theta_from(self.engine.layout, self.engine.pattern, blocks, design.n)
        if theta0 is None:
            theta0 = start_theta(design, self.thetamap)
        self.theta0 = np.asarray(theta0, dtype=float)

    def _response(self, y: np.ndarray) -> np.ndarray:
        off = self.design.offset
        return y if off is None else y - off

    def set_response(self, y: np.ndarray) -> None:
        """Evaluate for another response on the same design (bootstrap refits)."""
        d = self.design
        response = self._response(np.asarray(y, dtype=float))
        self.engine.set_data(d.X, response, d.weights)
        self._new_response = response  # (the exact gradient's response follows)

    def factor(self, theta: ArrayLike) -> Factor:
        """The engine's factor at ``theta``."""
        return self.engine.factor(self.thetamap.lam(np.asarray(theta, dtype=float)))

    @property
    def param_scale(self) -> np.ndarray:
        """The optimizer's parameters times this are on the scale it works on: theta for columns
        of Z of size 1 (``ThetaMap.scale``) and prior weights of mean 1 (theta is relative to
        sigma, whose scale the weights set: weights x c give theta / sqrt(c)); given where the
        rows are elsewhere (``hmix.dask``)."""
        if self._param_scale is not None:
            return self._param_scale
        return self.thetamap.scale * self.weight_scale

    @property
    def weight_scale(self) -> float:
        """sqrt of the prior weights' mean (1 without weights)."""
        w = self.design.weights
        return 1.0 if w is None else float(np.sqrt(np.mean(w)))

    def params_at(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        """The optimizer's parameters of a fit at theta and sigma (theta: sigma profiles out;
        a penalized objective may optimize sigma too)."""
        return np.asarray(theta, dtype=float)

    def estimates(self, params: ArrayLike) -> tuple[np.ndarray, float, Factor]:
        """theta, sigma and the factor at the optimizer's parameters."""
        theta = np.asarray(params, dtype=float)
        fac = self.factor(theta)
        return theta, self.sigma(fac), fac

    def criterion(self, params: ArrayLike, fac: Factor) -> tuple[float, float]:
        """The fitted model's criterion (REML or deviance) and penalty at params, given the
        factor there (the penalty is a prior's, which this objective has not)."""
        return self.from_factor(fac), 0.0

    def deviance(self, logdet_z: float, logdet_x: float, r2: float, sigma: float | None = None) -> float:
        """The deviance from the factor's parts (at ``sigma``, or with sigma profiled)."""
        d = self.design
        return lmm_deviance(logdet_z, logdet_x, r2, d.n, d.p, self.REML, self._sum_log_w, sigma)

    def from_factor(self, fac: Factor) -> float:
        """The deviance (without the penalty) given the factor at theta.

        Examples
        --------
        >>> import hmix
        >>> d = hmix.build_design("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> f = hmix.LMMObjective(d, REML=True)
        >>> round(f.from_factor(f.factor([0.848323])), 3)
        319.654
        """
        return self.deviance(fac.logdet_z, fac.logdet_x if self.REML else 0.0, fac.r2)

    def sigma(self, fac: Factor) -> float:
        """sigma at its profiled value given the factor."""
        d = self.design
        return math.sqrt(fac.r2 / (d.n - d.p if self.REML else d.n))

    def __call__(self, theta: ArrayLike) -> float:
        theta = np.asarray(theta, dtype=float)
        value = self.deviance(*self.engine.objective_parts(self.thetamap.lam(theta)))
        return value if self.penalty is None else value + self.penalty(theta)

    def gradient(self, theta: ArrayLike) -> np.ndarray:
        """The exact gradient of the profiled deviance (without the penalty) in theta.

        With M = Lambda'Z'WZ Lambda + I, Omega the whole penalized system (M and the fixed
        effects' rows), zeta_i = Lambda' z_i and e the penalized fit's residual, per element
        lam_p of T (row r, column c of a term's T; the chain rule takes it to theta)::

            d log|M| / d lam_p = 2 sum_i w_i z_i[r] (M^-1 zeta_i)[c]       (ML)
            d log|Omega| / d lam_p: the same with Omega^-1 [zeta_i; x_i]  (REML)
            d r^2 / d lam_p = -2 sum_i w_i e_i z_i[r] u_i[c]

        (the last by the envelope theorem: u and beta minimize r^2), and the deviance moves by
        d log|.| + m d r^2 / r^2, m = n (ML) or n - p (REML). M^-1 enters only through the
        entries each row touches (``Factor.row_inverse``); Omega^-1 = M^-1 + C S^-1 C' in the
        random effects' block and -C S^-1 beside it, C = M^-1 Lambda'Z'WX, S = L_XX L_XX'. The
        derivative-free optimizer does not need it; the fit's last Newton step does
        (differences of values are too noisy to place the optimum to better than ~1e-7).
        """
        theta = np.asarray(theta, dtype=float)
        small = self.derivatives(theta)
        if small is not None:
            return small[0]
        d, lay = self.design, self.engine.layout
        J = self.thetamap.lam_jacobian(theta)
        fac = self.factor(theta)
        cols, zt, _, lam_c = lay.row_columns
        y, wz, ztwx = self._gradient_data()
        if self._new_response is not None:
            y = self._new_response
        zeta = zt @ lay.row_lambda(fac.tmats)
        Vz = np.einsum("iab,ib->ia", fac.row_inverse(cols), zeta)
        u = np.concatenate(fac.u_engine)[cols]
        resid = y - d.X @ fac.beta - np.einsum("ia,ia->i", zeta, u)
        m = d.n
        if self.REML and d.p:
            q = lay.q1 + lay.qr
            C = np.empty((q, d.p))
            for j in range(d.p):  # Lambda'Z'W x_j in u-space, then M^-1 of it
                C[:, j] = fac.solve(self._lambda_t(ztwx[j], fac))
            Crow = C[cols]  # (n, K, p)
            a = (np.einsum("ikp,ik->ip", Crow, zeta) - d.X) @ fac.xtx_inv()
            Vz = Vz + np.einsum("ikp,ip->ik", Crow, a)
            m = d.n - d.p
        g_logdet = 2.0 * np.einsum("ij,ij->j", wz, Vz[:, lam_c])
        g_r2 = -2.0 * np.einsum("ij,ij->j", wz * resid[:, None], u[:, lam_c])
        g_lam = g_logdet + (m / fac.r2) * g_r2
        return g_lam if J is None else J.T @ g_lam

    @property
    def level_derivatives(self) -> LevelDerivatives | None:
        """The exact derivatives of a one-term system that is not a whole system, level by level
        (``LevelDerivatives``), for the engine's current statistics; None where they do not apply.
        """
        chol = self.engine.chol
        kept = self._level
        if kept is not None and kept[0] is chol.blocks:
            return kept[1]
        level = None
        if self.engine.whole is None and not self.engine.exact_derivatives:
            level = LevelDerivatives.of(chol, _LEVEL_DERIVATIVES_SIZE)
        self._level = (chol.blocks, level)
        return level

    @property
    def newton(self) -> bool:
        """Whether the fit can minimize by Newton's method on the exact Hessian: a one-term
        system beyond a whole system's size, where the derivatives cost a few evaluations (a
        whole system's values are too cheap for its derivatives to pay), without a penalty."""
        return self.penalty is None and self.priors is None and self.level_derivatives is not None

    def derivatives(
        self, theta: ArrayLike, hessian: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The exact gradient and, with ``hessian``, Hessian of the profiled deviance (without
        the penalty) in theta, where the engine's whole system gives them
        (``Engine.derivatives``) or a one-term system's levels do (``level_derivatives``);
        else None.

        The deviance is log|L_Z|^2 (+ log|L_X|^2 for REML) + m log r^2 + constants, and the
        chain rule takes lam's derivatives to theta's: J'H J plus the gradient in lam times
        lam's second derivatives (central differences of J, for the structures whose lam is
        not linear in theta). The last answer is kept: the fit's last steps ask again where
        Newton's method ended.
        """
        theta = np.asarray(theta, dtype=float)
        key, blocks = theta.tobytes(), self.engine.chol.blocks
        last = self._last_derivatives
        if last is not None and last[0] is blocks and last[1] == key and (last[2] or not hessian):
            return last[3] if hessian or last[3] is None else (last[3][0], None)
        out = self._derivatives(theta, hessian)
        self._last_derivatives = (blocks, key, hessian, None if out is None else out[1:])
        return None if out is None else out[1:]

    def value_derivatives(self, theta: ArrayLike) -> tuple[float, np.ndarray, np.ndarray] | None:
        """The deviance (without the penalty), its exact gradient and Hessian in theta, from one
        evaluation of the derivatives (Newton's method); None where ``derivatives`` is."""
        theta = np.asarray(theta, dtype=float)
        out = self._derivatives(theta, True)
        if out is None or out[2] is None:
            return None
        self._last_derivatives = (self.engine.chol.blocks, theta.tobytes(), True, out[1:])
        return self.deviance(*out[0]), out[1], out[2]

    def _derivatives(
        self, theta: np.ndarray, hessian: bool
    ) -> tuple[tuple[float, float, float], np.ndarray, np.ndarray | None] | None:
        tm = self.thetamap
        d = self.design
        weights = np.array([1.0, 1.0 if self.REML else 0.0, d.n - d.p if self.REML else d.n])
        J = tm.lam_jacobian(theta)
        level = None if self.engine.exact_derivatives else self.level_derivatives
        if level is not None:
            return self._level_derivatives(level, theta, J, weights, hessian)
        out = self.engine.derivatives(tm.lam(theta), hessian)
        if out is None:
            return None
        parts, grad, hess = out
        g_lam = weights @ grad
        if not hessian or hess is None:
            return parts, (g_lam if J is None else J.T @ g_lam), None
        H_lam = (weights @ hess.reshape(3, -1)).reshape(hess.shape[1:])
        if J is None:
            return parts, g_lam, H_lam
        H = J.T @ H_lam @ J
        h = 1e-6 * np.maximum(np.abs(theta), 1.0)
        for j in range(len(theta)):  # (a handful of parameters; J is cheap)
            e = np.zeros_like(theta)
            e[j] = h[j]
            up, down = tm.lam_jacobian(theta + e), tm.lam_jacobian(theta - e)
            assert up is not None and down is not None
            dJ = up - down
            H[:, j] += dJ.T @ g_lam / (2 * h[j])
        return parts, J.T @ g_lam, 0.5 * (H + H.T)

    def _level_derivatives(
        self,
        level: LevelDerivatives,
        theta: np.ndarray,
        J: np.ndarray | None,
        weights: np.ndarray,
        hessian: bool,
    ) -> tuple[tuple[float, float, float], np.ndarray, np.ndarray | None] | None:
        """``_derivatives`` along theta's directions: T's first derivatives are J's columns, its
        second ones forward differences of J (zero when lam is theta; J's columns along
        the structure's nonlinear parameters cost more than the level sums, and the Hessian
        needs no more than their O(h) accuracy: it only steers Newton's steps and the checks)."""
        tm, lay = self.thetamap, self.engine.layout
        nt, k = len(theta), lay.k1
        Jm = np.eye(nt) if J is None else J
        rows, cols = np.unravel_index(np.flatnonzero(lay.tmats(np.arange(1.0, tm.nlam + 1))[0]), (k, k))
        src = lay.tmats(np.arange(tm.nlam, dtype=float))[0][rows, cols].astype(np.int64)
        dT = np.zeros((nt, k, k))
        dT[:, rows, cols] = Jm[src].T
        d2T = None
        if hessian:
            d2T = np.zeros((nt, nt, k, k))
            if J is not None:
                h = 1e-7 * np.maximum(np.abs(theta), 1.0)
                for b in range(nt):
                    e = np.zeros_like(theta)
                    e[b] = h[b]
                    up = tm.lam_jacobian(theta + e)
                    assert up is not None
                    d2T[:, b, rows, cols] = ((up - J) / h[b])[src].T
                d2T = 0.5 * (d2T + np.swapaxes(d2T, 0, 1))
        out = level.derivatives(tm.lam(theta), dT, d2T)
        if out is None:
            return None
        parts, grad, hess = out
        g = weights @ grad
        if hess is None:
            return parts, g, None
        H = (weights @ hess.reshape(3, -1)).reshape(nt, nt)
        return parts, g, 0.5 * (H + H.T)

    def _gradient_data(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """What every exact gradient on this design shares: the response (less the offset), the
        weighted z values at each element of lam's row (n x nlam) and, for REML, Z'W x_j in
        u-space for each column of X (computed at the first gradient, kept with its design)."""
        d = self.design
        kept = self._kept_gradient_data
        if kept is not None and kept[0] is d:
            return kept[1]
        cols, zt, lam_r, _ = self.engine.layout.row_columns
        lay = self.engine.layout
        w = np.ones(d.n) if d.weights is None else d.weights
        ztwx = []
        if self.REML and d.p:
            q = lay.q1 + lay.qr
            wX = d.X * w[:, None]
            ztwx = [np.bincount(cols.ravel(), (zt * wX[:, j, None]).ravel(), minlength=q) for j in range(d.p)]
        data = (self._response(d.y), w[:, None] * zt[:, lam_r], ztwx)
        self._kept_gradient_data = (d, data)
        return data

    @staticmethod
    def _lambda_t(v: np.ndarray, fac: Factor) -> np.ndarray:
        """Lambda' v for v in u-space (engine order)."""
        lay = fac.layout
        return np.concatenate(
            [
                (v[o : o + t.q].reshape(t.nlevels, t.k) @ T).ravel()
                for o, t, T in zip(lay.offsets, lay.terms, fac.tmats)
            ]
        )


def start_theta(design: Design, thetamap: ThetaMap) -> np.ndarray:
    """Moment-based starting values for theta (lme4 starts every diagonal at 1).

    Per term and column: regress the OLS residuals on the column within each level; the spread
    of those per-level slopes beyond their sampling variance, relative to the residual
    variance, estimates the column's relative SD. Clipped to [0.1, 5] times the column's root
    mean square (so in any units of the predictor); each structure turns the
    SDs into its theta (off-diagonals start at 0). With one term the residual variance is the
    column's within-level one; with several, crossed factors would count each other's variation
    as residual there, so it is taken after all terms' level effects are fitted jointly (a few
    backfitting sweeps). Against lme4's start, on the reference models and the benchmarks this
    saves a fifth of the evaluations (Penicillin by ML: 22 instead of 58) and reaches the same
    optima.
    """
    d = design
    y = d.y if d.offset is None else d.y - d.offset
    w = np.ones(d.n) if d.weights is None else d.weights
    if d.p:
        Xw = d.X * w[:, None]
        try:  # (X has full column rank: aliased columns are dropped; normal equations, ~5x lstsq's speed)
            beta = np.linalg.solve(Xw.T @ d.X, Xw.T @ y)
        except np.linalg.LinAlgError:
            sw = np.sqrt(w)
            beta = np.linalg.lstsq(d.X * sw[:, None], y * sw, rcond=None)[0]
        r = y - d.X @ beta
    else:
        r = y
    cols = [(t, t.z[:, a]) for t in d.terms for a in range(t.k)]
    szz = [np.bincount(t.refs, w * za * za, minlength=t.nlevels) for t, za in cols]
    ok = [s > 0 for s in szz]
    safe = [np.where(o, s, 1.0) for s, o in zip(szz, ok)]
    slopes = [np.bincount(t.refs, w * za * r, minlength=t.nlevels) / sf for (t, za), sf in zip(cols, safe)]
    if len(d.terms) > 1:
        fits = [np.zeros(d.n) for _ in cols]
        total = np.zeros(d.n)
        for _ in range(_START_SWEEPS):
            for i, (t, za) in enumerate(cols):
                partial = r - (total - fits[i])
                b = np.bincount(t.refs, w * za * partial, minlength=t.nlevels) / safe[i]
                total += za * b[t.refs] - fits[i]
                fits[i] = za * b[t.refs]
        dof = d.n - sum(int(o.sum()) for o in ok)
        joint_s2 = float((w * (r - total) ** 2).sum()) / max(dof, 1)
    ratios: list[np.ndarray] = []
    estimates: list[LevelEstimates] = []  # (what the structures start their correlations from)
    i = 0
    wbar = float(np.sqrt(np.mean(w)))  # (clipped for unit weights too: see LMMObjective.param_scale)
    for t, size in zip(d.terms, thetamap.column_scales):
        columns = range(i, i + t.k)
        values = np.column_stack([np.where(ok[j], slopes[j], np.nan) for j in columns])
        sampling = np.array([float((1.0 / szz[j][ok[j]]).mean()) if ok[j].any() else np.nan for j in columns])
        estimates.append(_level_estimates(t, r, w, values, sampling))
        sd = np.empty(t.k)
        for a in range(t.k):
            (_, za), b, o = cols[i], slopes[i], ok[i]
            if len(d.terms) > 1:
                s2 = joint_s2
            else:
                s2 = float((w * (r - za * b[t.refs]) ** 2).sum()) / max(d.n - int(o.sum()), 1)
            # clipped on the scale of a column of size 1 (a predictor's units must not matter)
            sa = (float(size[a]) if size[a] > 0 else 1.0) * wbar
            sd[a] = start_ratio(b, szz[i], o, s2, sa)
            i += 1
        ratios.append(sd)
    return thetamap.start(ratios, estimates)


def start_ratio(b: np.ndarray, szz: np.ndarray, ok: np.ndarray, s2: float, scale: float = 1.0) -> float:
    """A column's starting relative SD from its per-level slopes ``b`` (levels ``ok`` with
    sums of weighted squares ``szz``) and the residual variance ``s2``: the variance of the
    slopes beyond their sampling variance, clipped to [0.1, 5] on the scale of a column of size
    ``scale`` (see ``start_theta``)."""
    nb = int(ok.sum())
    if nb > 1:
        bo = b[ok]
        between = float(bo @ bo) / nb - (float(bo.sum()) / nb) ** 2 - s2 * float((1.0 / szz[ok]).sum()) / nb
    else:
        between = 0.0
    ratio = math.sqrt(max(between, 0.0) / s2) if s2 > 0 else 1.0
    return min(max(ratio * scale, 0.1), 5.0) / scale


def _level_estimates(
    t: ReTerm, r: np.ndarray, w: np.ndarray, values: np.ndarray, sampling: np.ndarray
) -> LevelEstimates:
    """A term's per-level column estimates; for columns on separate rows (a factor's
    indicators), with the residual variance within the cells they leave."""
    if t.k > 1 and not (np.count_nonzero(t.z, axis=1) <= 1).all():
        return LevelEstimates(values, sampling)
    finite = np.isfinite(values)
    nfinite = int(finite.sum())
    # (nan_to_num is the identity on finite values: skipped when all are)
    fitted = np.einsum("ij,ij->i", t.z, (values if nfinite == values.size else np.nan_to_num(values))[t.refs])
    dof = len(r) - nfinite
    within = float((w * (r - fitted) ** 2).sum()) / dof if dof > 0 else float("nan")
    return LevelEstimates(values, sampling, True, within)


def check_lmm(design: Design, nobs_vs_nre: str = "stop") -> None:
    """lme4's identifiability checks for LMMs (errors, as lme4 stops); ``nobs_vs_nre`` as lme4's
    ``check.nobs.vs.nRE`` (see ``check_nobs_vs_nre``)."""
    n = design.n
    if n <= design.p:
        raise DataError(
            f"{n} observations for {design.p} fixed effects: there is nothing left to estimate the "
            "variance components from; use more data or fewer fixed effects"
        )
    y = design.y if design.offset is None else design.y - design.offset
    resid = y - design.X @ np.linalg.lstsq(design.X, y, rcond=None)[0] if design.p else y
    # relative to the response's own size (a response in units of 1e-20 is a response)
    if float(np.abs(resid).max(initial=0.0)) <= 1e-12 * float(np.abs(y).max(initial=0.0)):
        raise DataError(
            "the fixed effects reproduce the response exactly (no residual variation), so there is "
            "no variance left to split between groups and residual; check the response column"
        )
    for t in design.terms:
        if t.nlevels >= n:
            raise DataError(
                f"the grouping factor '{t.group}' has {t.nlevels} levels for {n} observations: "
                "a random effect per observation is confounded with the residual"
            )
    check_nobs_vs_nre(design, nobs_vs_nre, glmm=False)


def check_nobs_vs_nre(design: Design, action: str = "stop", *, glmm: bool) -> None:
    """lme4's ``check.nobs.vs.nRE``: a term with at least as many random effects as observations
    (an LMM; more than, a GLMM) leaves its parameters and the residual variance (or scale)
    unidentifiable. ``action``: "stop" (an error, lme4's default), "warning" or "ignore"."""
    if action not in ("stop", "warning", "ignore"):
        raise DataError(f"check_nobs_vs_nre must be 'stop', 'warning' or 'ignore', not {action!r}")
    n = design.n
    for t in design.terms:
        too_many = t.q > n if glmm else (t.q >= n and not t.cov.separates_residual)
        if not too_many or action == "ignore":
            continue
        msg = (
            f"number of observations (={n}) {'<' if glmm else '<='} number of random effects "
            f"(={t.q}) for the term {_label(t)}: its parameters and the "
            "residual variance (or scale) are probably unidentifiable; simplify the term, or pass "
            "check_nobs_vs_nre='warning' to fit it anyway"
        )
        if action == "stop":
            raise DataError(msg)
        warnings.warn(msg, HmixWarning, stacklevel=user_stacklevel())


def check_size(design: Design, max_theta: int | None = 100) -> None:
    """Refuse, before any fitting, a model with more than ``max_theta`` covariance parameters:
    the derivative-free optimizer's cost grows with their square (a (0 + f | g) term with f of
    20 levels has 210 and takes minutes; with 40 levels, 820 and hours). ``None`` lifts it."""
    if max_theta is None:
        return
    ntheta = sum(t.ntheta for t in design.terms)
    if ntheta <= max_theta:
        return
    big = max(design.terms, key=lambda t: t.ntheta)
    raise DataError(
        f"the model has {ntheta} covariance parameters ({big.ntheta} in the term {_label(big)} "
        "alone: a term of k columns has k(k + 1)/2), beyond what a fit takes in reasonable time; "
        "independent effects need k: "
        f"diag(... | {big.group}) or (... || {big.group}); an AR(1) or compound-symmetry structure "
        f"two (ar1(0 + f | {big.group}), cs(0 + f | {big.group})); pass max_theta=None to fit it anyway"
    )


def _label(t: ReTerm) -> str:
    """A term as a message shows it: (a + b | g), its columns cut after three."""
    shown = " + ".join(t.names[:3]) + (f" + ... ({t.k} columns)" if t.k > 3 else "")
    return f"({shown} | {t.group})"
