"""Derivative-free optimization of the profiled objective, and lme4's checks at the optimum."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import nlopt
import numpy as np
import scipy.linalg as sla

from .engine import NotPositiveDefinite
from .errors import ConvergenceWarning, HmixError, SingularFitWarning, user_stacklevel

if TYPE_CHECKING:
    from .glmm import PirlsSettings

__all__ = [
    "OptSummary",
    "minimize",
    "minimize_newton",
    "minimize_exact_newton",
    "hessian_from_gradient",
    "convergence_derivatives",
    "assess_convergence",
    "Checks",
    "newton_polish",
    "newton_steps",
    "choose_method",
    "SINGULAR_TOL",
]

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on diagonal theta
_SNAP_BELOW = 1e-3  # diagonal theta below this is tried at zero
_SNAP_RISE = 1e-5  # ... and kept there if the objective rises by at most this
_GRAD_TOL = 2e-3  # lme4's check.conv.grad tolerance (scaled gradient)
_HESS_TOL = 1e-6  # lme4's check.conv.hess tolerance (eigenvalue ratio)
_FD_STEP = 1e-4  # lme4's finite-difference step for the checks
_COSTLY = 1e7  # estimated flops per evaluation above which NEWUOA_BOUND's overhead is negligible
_NEWTON_TOL = 1e-10  # quasi-Newton: stop when the predicted decrease g'H^-1 g falls below this
_NEWTON_NOISE = 1e-6  # ... or when the line search fails with a predicted decrease below this
# Newton's method on an exact Hessian: stop when the predicted decrease g'H^-1 g falls below this
# (the optimum then holds to the objective's rounding), after at most this many steps
_EXACT_TOL = 1e-14
_EXACT_STEPS = 50
# forward differences of an exact gradient: a smaller step than lme4's central differences of
# values, so that the O(h) error matches theirs O(h^2) (the gradient's noise is far below h)
_GRAD_FD_STEP = 1e-5

_NLOPT_CODES = {
    1: "success",
    2: "stopval reached",
    3: "ftol reached",
    4: "xtol reached",
    5: "maxeval reached",
    6: "maxtime reached",
    -1: "failure",
    -2: "invalid arguments",
    -3: "out of memory",
    -4: "roundoff limited",
    -5: "forced stop",
}


@dataclass(frozen=True)
class OptSummary:
    """What the optimizer did: shown to the user, never hidden.

    Attributes
    ----------
    method : str
        Optimizer (``"NLOPT_LN_BOBYQA"``).
    initial, final : ndarray
        Parameters at the start and at the optimum (after snapping to the boundary).
    fmin : float
        Objective at ``final``.
    n_evals : int
        Objective evaluations, the convergence checks included.
    return_code : int
        NLopt's return code (positive is success).
    message : str
    tolerances : dict
    seconds : float
        Wall time of the optimization.
    warnings : tuple of str
        Messages of lme4's convergence checks (empty when the checks passed).
    stages : tuple of str
        The stages of the fit, in order (GLMMs: ``"theta"``, then ``"quasi-Newton"`` or
        ``"BOBYQA"``).
    pirls : PirlsSettings or None
        How PIRLS iterated (GLMMs).
    pirls_theta : PirlsSettings or None
        How PIRLS iterated in the theta stage (GLMMs): ``pirls`` for nAGQ = 0; looser
        tolerances with nAGQ = 1, where that stage only brings theta near the optimum.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> m.optsum.method, m.optsum.return_code > 0, m.optsum.warnings
    ('NLOPT_LN_BOBYQA', True, ())
    """

    method: str
    initial: np.ndarray
    final: np.ndarray
    fmin: float
    n_evals: int
    return_code: int
    message: str
    tolerances: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    pirls: PirlsSettings | None = None
    pirls_theta: PirlsSettings | None = None

    def __str__(self) -> str:
        return (
            f"optimizer {self.method}: {self.message} (code {self.return_code}) after "
            f"{self.n_evals} evaluations, objective {self.fmin:.6f}"
        )


class _Counted:
    """Counts evaluations; a failed evaluation returns the initial objective (see ``minimize``)."""

    def __init__(self, f: Callable[[np.ndarray], float], x0: np.ndarray):
        self.f = f
        self.n = 0
        self.f0 = np.inf
        self.failed = False
        self._x0: np.ndarray | None = None
        self.best_x, self.best_f = x0, np.inf
        self.f0 = self(x0)
        if not np.isfinite(self.f0):
            raise HmixError(
                "the objective is not finite at the starting values: the data leave nothing to "
                "estimate (for instance a response without variation)"
            )
        self._x0 = np.array(x0, dtype=float)  # NLopt starts there again: answered from f0

    def __call__(self, x: np.ndarray) -> float:
        if self._x0 is not None:
            first, self._x0 = self._x0, None
            if np.array_equal(x, first):
                self.failed = False
                return self.f0
        self.n += 1
        self.failed = True
        try:
            v = float(self.f(np.asarray(x, dtype=float)))
        except (NotPositiveDefinite, np.linalg.LinAlgError, FloatingPointError):
            return self.f0
        if not math.isfinite(v):
            return self.f0
        self.failed = False
        if v < self.best_f:
            self.best_x, self.best_f = np.array(x, dtype=float), v
        return v


def minimize(
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    upper: np.ndarray | None = None,
    diagonal: np.ndarray | None = None,
    ftol_rel: float = 1e-12,
    ftol_abs: float = 1e-8,
    xtol_abs: float = 1e-8,
    xtol_rel: float = 0.0,
    maxeval: int = 100_000,
    initial_step: np.ndarray | None = None,
    method: str | None = None,
) -> tuple[np.ndarray, float, OptSummary, _Counted]:
    """Minimize ``f`` within bounds by an NLopt method (BOBYQA unless ``method`` says otherwise,
    see ``choose_method``), then snap near-zero variances to zero.

    ``diagonal`` marks the parameters that are standard deviations (lower bound 0); those below
    1e-3 are set to 0 when that raises the objective by at most 1e-5. An evaluation that fails
    (not positive definite, not finite) returns the objective at the start, so the optimizer
    steps back from it (lme4's policy): the one failure policy of every optimization in hmix.
    """
    x0 = np.asarray(x0, dtype=float)
    n = len(x0)
    start = time.perf_counter()
    fc = _Counted(f, x0)
    method = method or "NLOPT_LN_BOBYQA"
    opt = nlopt.opt(getattr(nlopt, method.removeprefix("NLOPT_")), n)
    opt.set_min_objective(lambda x, grad: fc(x))
    opt.set_lower_bounds(np.asarray(lower, dtype=float))
    if upper is not None:
        opt.set_upper_bounds(np.asarray(upper, dtype=float))
    opt.set_ftol_rel(ftol_rel)
    opt.set_ftol_abs(ftol_abs)
    opt.set_xtol_abs(xtol_abs)
    opt.set_xtol_rel(xtol_rel)
    opt.set_maxeval(maxeval)
    if initial_step is not None:
        opt.set_initial_step(np.asarray(initial_step, dtype=float))
    try:
        x = opt.optimize(x0)
        code = int(opt.last_optimize_result())
        fmin = float(opt.last_optimum_value())
    except nlopt.RoundoffLimited:  # the best point so far is still a valid answer
        x, code, fmin = fc.best_x, -4, fc.best_f
    x, fmin = _snap(fc, np.asarray(x, dtype=float), float(fmin), diagonal)
    summary = OptSummary(
        method=method,
        initial=x0.copy(),
        final=np.array(x, dtype=float),
        fmin=float(fmin),
        n_evals=fc.n,
        return_code=code,
        message=_NLOPT_CODES.get(code, "unknown"),
        tolerances={"ftol_rel": ftol_rel, "ftol_abs": ftol_abs, "xtol_abs": xtol_abs},
        seconds=time.perf_counter() - start,
    )
    return np.array(x, dtype=float), float(fmin), summary, fc


def _snap(
    f: Callable[[np.ndarray], float], x: np.ndarray, fmin: float, diagonal: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """Set diagonal theta below 1e-3 to 0 when that raises the objective by at most 1e-5."""
    if diagonal is not None:
        for i in np.nonzero(diagonal & (x > 0) & (x < _SNAP_BELOW))[0]:
            trial = x.copy()
            trial[i] = 0.0
            ft = f(trial)
            if ft <= fmin + _SNAP_RISE and not getattr(f, "failed", False):
                x, fmin = trial, ft
    return x, fmin


class _CountedGrad:
    """Counts evaluations of an objective that returns its value and gradient.

    Called with one argument it returns the value alone, as ``_Counted`` does (a failed
    evaluation gives the initial value), so the checks at the optimum can use it too.
    """

    def __init__(self, fg: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray):
        self._fg = fg
        self.n = 0
        self.f0 = np.inf
        self.failed = False
        self.best_x, self.best_f = x0, np.inf
        f0, g0 = self.fg(x0)
        if g0 is None:
            raise HmixError(
                "the objective is not finite at the starting values: the data leave nothing to "
                "estimate (for instance a response without variation)"
            )
        self.f0, self.g0 = f0, g0

    def fg(self, x: np.ndarray) -> tuple[float, np.ndarray | None]:
        """Value and gradient; ``(inf, None)`` for a failed evaluation."""
        self.n += 1
        try:
            v, g = self._fg(np.asarray(x, dtype=float))
        except (NotPositiveDefinite, np.linalg.LinAlgError, FloatingPointError):
            return np.inf, None
        v = float(v)
        if not (np.isfinite(v) and np.isfinite(g).all()):
            return np.inf, None
        if v < self.best_f:
            self.best_x, self.best_f = np.array(x, dtype=float), v
        return v, np.asarray(g, dtype=float)

    def __call__(self, x: np.ndarray) -> float:
        v, _ = self.fg(x)
        self.failed = not np.isfinite(v)
        return v if np.isfinite(v) else self.f0


def hessian_from_gradient(
    fg: Callable[[np.ndarray], tuple[float, np.ndarray | None]],
    x: np.ndarray,
    g: np.ndarray,
    step: float = _GRAD_FD_STEP,
    central: np.ndarray | None = None,
    columns: np.ndarray | None = None,
) -> np.ndarray | None:
    """Forward differences of an exact gradient (one evaluation per parameter, away from the
    lower bounds), symmetrized; None when an evaluation fails.

    ``central`` marks parameters differenced both ways instead: a variance at an exact zero,
    where the objective is even in it. There the mixed derivatives vanish, and a forward
    difference would leave O(h) in them, which the inverse magnifies when the curvature along
    the variance is small. ``columns``: difference along these parameters (indices) only and
    return those columns of the Hessian (n x len(columns)), unsymmetrized.
    """
    n = len(x)
    which = np.arange(n) if columns is None else np.asarray(columns)
    H = np.empty((n, len(which)))
    for j, i in enumerate(which):
        xi = x.copy()
        xi[i] += step
        _, gi = fg(xi)
        if gi is None:
            return None
        if central is not None and central[i]:
            xi[i] = x[i] - step
            _, gm = fg(xi)
            if gm is None:
                return None
            H[:, j] = (gi - gm) / (2 * step)
        else:
            H[:, j] = (gi - g) / step
    return 0.5 * (H + H.T) if columns is None else H


def _positive(H: np.ndarray) -> np.ndarray:
    """H with its eigenvalues made positive (absolute values, floored): a descent metric."""
    ev, V = np.linalg.eigh(H)
    ev = np.maximum(np.abs(ev), 1e-8 * max(float(np.abs(ev).max()), 1.0))
    return np.asarray((V * ev) @ V.T)


def _leave_saddle(
    fc: _CountedGrad,
    H: np.ndarray,
    x: np.ndarray,
    f: float,
    g: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
) -> tuple[np.ndarray, float, np.ndarray]:
    """One step along the direction of negative curvature of H, if it has one.

    A variance that starts at an exact zero has a zero derivative there (the objective is even
    in it) even when a positive value is better; the gradient alone would leave it only by
    tiny steps. The trial step lowers the quadratic model by about one unit of deviance.
    """
    ev, V = np.linalg.eigh(H)
    if ev[0] >= -1e-8 * max(float(np.abs(ev).max()), 1.0):
        return x, f, g
    v = V[:, 0] if g @ V[:, 0] <= 0 else -V[:, 0]
    t = float(np.sqrt(2.0 / -ev[0]))
    for _ in range(8):
        xt = np.clip(x + t * v, lower, upper)
        ft, gt = fc.fg(xt)
        if gt is not None and ft < f:
            return xt, ft, gt
        t /= 4
    return x, f, g


def minimize_newton(
    fg: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    upper: np.ndarray | None = None,
    diagonal: np.ndarray | None = None,
    rectify: Callable[[np.ndarray], np.ndarray] | None = None,
    tol: float = _NEWTON_TOL,
    maxeval: int = 1000,
    start_hessian: Callable[..., np.ndarray | None] | None = None,
) -> tuple[np.ndarray, float, OptSummary, _CountedGrad]:
    """Minimize ``f`` with its exact gradient within bounds: BFGS started from a
    finite-difference Hessian, with a backtracking line search and the bounds as an active set.

    Meant for a start near the optimum (the GLMM's Laplace deviance from the nAGQ = 0 fit), where
    the first Hessian makes the method scale-free and the steps nearly Newton's. Stops when the
    predicted decrease ``g'H^-1 g`` is below ``tol`` (return code 1), when the objective no longer
    moves (3), or when the line search fails (-4: the caller should fall back to a
    derivative-free method). ``rectify`` maps the optimum to an equivalent point (an objective
    that is even in the sign of each column of Lambda can be minimized without bounds, then
    have its columns' signs flipped); near-zero variances are then snapped to zero as in
    ``minimize``. ``start_hessian(x, g, fg)``, when given, makes the first Hessian instead of
    differencing the gradient along every parameter (None: do that after all).
    """
    x = np.asarray(x0, dtype=float).copy()
    lower = np.asarray(lower, dtype=float)
    upper = np.full(len(x), np.inf) if upper is None else np.asarray(upper, dtype=float)
    start = time.perf_counter()
    fc = _CountedGrad(fg, x)
    f, g = fc.f0, fc.g0
    code, H, skipped, refreshes = 5, None, 0, 0
    while fc.n < maxeval:
        if H is None:
            # a fresh Hessian at the start, and after steps met negative curvature (BFGS keeps
            # its metric positive, so along such a direction its steps stay tiny: a saddle)
            H0 = None if start_hessian is None else start_hessian(x, g, fc.fg)
            start_hessian = None  # (refreshes difference the gradient in full)
            if H0 is None:
                H0 = hessian_from_gradient(fc.fg, x, g)
            if H0 is None:
                code = -4
                break
            H = _positive(H0)
            x, f, g = _leave_saddle(fc, H0, x, f, g, lower, upper)
            skipped = 0
        free = ~(((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0)))
        p = np.zeros_like(x)
        p[free] = -np.linalg.solve(H[np.ix_(free, free)], g[free])
        dec = -(g @ p)
        if dec <= tol:
            code = 1
            break
        if skipped >= 2 and refreshes < 3:
            H, refreshes = None, refreshes + 1
            continue
        alpha, xt, ft, gt = 1.0, x, np.inf, None
        while alpha > 1e-10:
            xt = np.clip(x + alpha * p, lower, upper)
            ft, gt = fc.fg(xt)
            if gt is not None and ft <= f + 1e-4 * (g @ (xt - x)):
                break
            alpha *= 0.25
        if gt is None or not ft <= f + 1e-4 * (g @ (xt - x)):
            # no decrease along a descent direction: the objective's own noise, which is no
            # failure once the predicted decrease is this small
            code = 3 if dec <= _NEWTON_NOISE else -4
            break
        s, yv = xt - x, gt - g
        if s @ yv > 1e-12 * np.linalg.norm(s) * np.linalg.norm(yv):
            Hs = H @ s
            H = H - np.outer(Hs, Hs) / (s @ Hs) + np.outer(yv, yv) / (s @ yv)
        else:
            skipped += 1
        moved = f - ft
        x, f, g = xt, ft, gt
        if moved <= 1e-13 * (abs(f) + 1.0) and dec <= 1e3 * tol:
            code = 3
            break
    if rectify is not None:
        x = rectify(x)
    x, fmin = _snap(fc, x, float(f), diagonal)
    summary = _newton_summary("quasi-Newton (BFGS, exact gradient)", x0, x, fmin, fc.n, code, tol, start)
    return x, float(fmin), summary, fc


def _newton_summary(
    method: str, x0: np.ndarray, x: np.ndarray, fmin: float, n: int, code: int, tol: float, start: float
) -> OptSummary:
    """The summary of a Newton-type minimization that started at ``start`` (perf_counter)."""
    return OptSummary(
        method=method,
        initial=np.asarray(x0, dtype=float).copy(),
        final=x.copy(),
        fmin=float(fmin),
        n_evals=n,
        return_code=code,
        message=_NLOPT_CODES.get(code, "unknown"),
        tolerances={"decrement": tol},
        seconds=time.perf_counter() - start,
    )


class _CountedHessian:
    """Counts evaluations of an objective with its exact gradient and Hessian, and of its values
    alone (as ``_Counted``: a failed value gives the first one, so the checks can use it)."""

    def __init__(
        self,
        fgh: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray] | None],
        f: Callable[[np.ndarray], float],
    ):
        self._fgh, self._f = fgh, f
        self.n = 0
        self.f0 = np.inf
        self.failed = False

    def fgh(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
        """Value, gradient and Hessian; None where the evaluation fails."""
        self.n += 1
        try:
            out = self._fgh(np.asarray(x, dtype=float))
        except (NotPositiveDefinite, np.linalg.LinAlgError, FloatingPointError):
            return None
        if out is None:
            return None
        v, g, H = float(out[0]), np.asarray(out[1], dtype=float), np.asarray(out[2], dtype=float)
        return (v, g, H) if math.isfinite(v) and np.isfinite(g).all() and np.isfinite(H).all() else None

    def __call__(self, x: np.ndarray) -> float:
        self.n += 1
        self.failed = True
        try:
            v = float(self._f(np.asarray(x, dtype=float)))
        except (NotPositiveDefinite, np.linalg.LinAlgError, FloatingPointError):
            return self.f0
        if not math.isfinite(v):
            return self.f0
        self.failed = False
        return v


def minimize_exact_newton(
    fgh: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray] | None],
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    upper: np.ndarray | None = None,
    diagonal: np.ndarray | None = None,
    tol: float = _EXACT_TOL,
    maxiter: int = _EXACT_STEPS,
) -> tuple[np.ndarray, float, OptSummary, _CountedHessian] | None:
    """Minimize ``f`` within bounds by Newton's method on its exact gradient and Hessian
    (``fgh``: value, gradient, Hessian; ``f``: the value alone, for the line search).

    Each step is Newton's, with the Hessian's eigenvalues made positive (absolute values, floored) where
    it is not positive definite, along a backtracking line search. A step that would leave the
    bounds ends it (None): at a variance's bound of zero the objective is even in it, a point
    of zero gradient even where a positive value is better, and where the iteration leaves
    such a point depends on its path; BOBYQA, lme4's optimizer, then decides. Steps whose
    predicted decrease is below the objective's noise are judged by that decrease falling
    (as ``newton_steps`` does). Stops when the predicted decrease ``g'H^-1 g`` is below ``tol``
    (return code 1) or no longer falls once tiny (3); near-zero variances are then snapped to
    zero as in ``minimize``. None when a step would leave the bounds, an evaluation at an
    accepted point fails, the line search fails far from the optimum or the steps run out: the
    caller falls back to a derivative-free optimizer.
    """
    lower = np.asarray(lower, dtype=float)
    upper = np.full(len(x0), np.inf) if upper is None else np.asarray(upper, dtype=float)
    x = np.clip(np.asarray(x0, dtype=float), lower, upper)
    start = time.perf_counter()
    fc = _CountedHessian(fgh, f)
    out = fc.fgh(x)
    if out is None:
        return None
    fx, g, H = out
    fc.f0 = fx
    code, last, before = 5, np.inf, (x, fx, g, H)
    for _ in range(maxiter):
        ev, V = np.linalg.eigh(H)
        floor = 1e-8 * max(float(np.abs(ev).max()), 1.0)
        p = -(V @ ((V.T @ g) / np.maximum(np.abs(ev), floor)))
        dec = float(-(g @ p))
        if not math.isfinite(dec):
            return None
        if dec <= tol:
            code = 1
            break
        if dec >= last and dec <= _NEWTON_NOISE:  # (the last step went no nearer: undone)
            x, fx, g, H = before
            code = 3
            break
        last, before = dec, (x, fx, g, H)
        alpha, nxt = 1.0, None
        while alpha > 1e-10:
            xt = x + alpha * p
            if ((xt < lower) | (xt > upper)).any():
                return None  # (a bound reached: see above)
            if alpha == 1.0:
                nxt = fc.fgh(xt)
                ft = np.inf if nxt is None else nxt[0]
            else:
                ft = fc(xt)
                ft = np.inf if fc.failed else ft
            # (below the noise, a tiny step's value cannot judge it: the decrease must fall)
            if ft <= fx + 1e-4 * (g @ (xt - x)) or (
                dec <= _NEWTON_NOISE and ft <= fx + 1e-12 * (abs(fx) + 1.0)
            ):
                break
            alpha *= 0.25
        else:
            if dec <= _NEWTON_NOISE:
                code = 3
                break
            return None
        if alpha != 1.0:
            nxt = fc.fgh(xt)
        if nxt is None:
            return None
        x, (fx, g, H) = xt, nxt
    else:
        return None
    x, fmin = _snap(fc, x, fx, diagonal)
    return x, float(fmin), _newton_summary("Newton (exact Hessian)", x0, x, fmin, fc.n, code, tol, start), fc


def choose_method(nparams: int, work: float) -> str:
    """The optimizer for a problem of ``nparams`` parameters costing ``work`` flops an evaluation.

    NEWUOA_BOUND needs 10-25% fewer evaluations than BOBYQA (lme4's choice) on the reference
    models and InstEval but spends time of its own on the bounds at every evaluation, and needs two
    or more parameters: it pays only for costly evaluations (benchmarks/optimizers.py). The
    choice depends on the problem's size, never on timings, so a fit is reproducible.
    """
    return "NLOPT_LN_NEWUOA_BOUND" if nparams > 1 and work > _COSTLY else "NLOPT_LN_BOBYQA"


def _derivs(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    fx: float | None = None,
    order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Central finite-difference gradient and Hessian with lme4's step (1e-4).

    The mixed second differences reuse the axis evaluations: two new evaluations per pair
    (lme4's deriv12 spends four), with the same O(h^2) accuracy. ``fx``, the objective at ``x``
    when it is known and exact (an LMM's deterministic objective), saves the centre evaluation
    and one per pair: the mixed differences are then one-sided, O(h) (about 1e-4 relative,
    far inside what the checks resolve).

    ``order`` (parameter indices, the first varying slowest) sorts the points: the LMM engine
    finishes a factor from the last one's when only the parameters it factors last have changed
    (``hmix.engine.cholesky.TailCache``). Without it the points keep a fixed order: a GLMM's PIRLS
    starts from the last modes, so its values depend on the order by ~1e-10.
    """
    n = len(x)
    h = _FD_STEP
    # without fx, f(x) is evaluated here, next to the other points: a GLMM's PIRLS leaves
    # ~1e-10 of noise between evaluations, and the second differences divide by h^2 = 1e-8
    f0 = f(x) if fx is None else fx
    unit = [tuple(int(k == i) for k in range(n)) for i in range(n)]
    steps = unit + [tuple(-a for a in u) for u in unit]
    for i in range(n):
        for j in range(i):
            both = tuple(a + b for a, b in zip(unit[i], unit[j]))
            steps += [both] if fx is not None else [both, tuple(-a for a in both)]
    if order is not None:  # (0 first, then -1, then +1: the points next to x come first)
        rank = {0: 0, -1: 1, 1: 2}
        slow_first = [int(k) for k in order]
        steps.sort(key=lambda v: [rank[v[k]] for k in slow_first])
    val = {v: f(x + h * np.array(v, dtype=float)) for v in steps}
    fp = np.array([val[u] for u in unit])
    fm = np.array([val[tuple(-a for a in u)] for u in unit])
    grad = (fp - fm) / (2 * h)
    hess = np.diag((fp - 2 * f0 + fm) / h**2)
    for i in range(n):
        for j in range(i):
            both = tuple(a + b for a, b in zip(unit[i], unit[j]))
            fpp = val[both]
            if fx is None:
                fmm = val[tuple(-a for a in both)]
                v = (fpp - fp[i] - fp[j] + 2 * f0 - fm[i] - fm[j] + fmm) / (2 * h * h)
            else:
                v = (fpp - fp[i] - fp[j] + f0) / (h * h)
            hess[i, j] = hess[j, i] = v
    return grad, hess


def convergence_derivatives(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    diagonal: np.ndarray,
    *,
    check: bool = True,
    hessian: bool = False,
    derivs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | None] | None = None,
    fx: float | None = None,
    order: np.ndarray | None = None,
) -> tuple[bool, np.ndarray | None, np.ndarray | None]:
    """Whether the fit is singular, and the gradient and Hessian the checks judge it by.

    The finite-difference derivatives are computed for the checks (``check``, skipped for
    singular fits, as lme4 does) or when asked for (``hessian``, for the GLMM covariance of
    beta). ``derivs``, when given, returns the gradient and Hessian at ``x`` instead (exact
    ones; None when it cannot, and the differences of values are used). ``fx`` is the
    objective at ``x`` when it is exact and known, and ``order`` the order in which to step the
    parameters (see ``_derivs``).
    """
    singular = bool(np.any(x[diagonal] < SINGULAR_TOL))
    if not (hessian or (check and not singular)):
        return singular, None, None
    exact = None if derivs is None else derivs(x)
    grad, hess = _derivs(f, x, fx, order) if exact is None else exact
    return singular, grad, hess


def assess_convergence(
    singular: bool,
    grad: np.ndarray | None,
    hess: np.ndarray | None,
    *,
    check: bool = True,
    singular_hint: str = "",
) -> Checks:
    """lme4's verdicts from the derivatives at the optimum, with their warnings: a singular fit,
    a scaled gradient above tolerance, a Hessian that is not positive definite or nearly
    singular. ``singular_hint`` ends the message of a singular fit (a remedy to suggest)."""
    messages: list[str] = []
    if singular:
        msg = (
            "boundary (singular) fit: a variance is estimated as zero or a correlation as +-1" + singular_hint
        )
        messages.append(msg)
        warnings.warn(msg, SingularFitWarning, stacklevel=user_stacklevel())
    if singular or not check or grad is None or hess is None:
        return Checks(singular, True, messages, grad, hess)
    converged = True
    try:
        R = np.linalg.cholesky(hess).T
        scgrad = np.linalg.solve(R, grad)
        worst = np.minimum(np.abs(scgrad), np.abs(grad))
        i = int(np.argmax(worst))
        if worst[i] > _GRAD_TOL:
            converged = False
            messages.append(
                f"Model failed to converge with max|grad| = {worst[i]:.6g} "
                f"(tol = {_GRAD_TOL}, component {i + 1})"
            )
    except np.linalg.LinAlgError:
        converged = False
        messages.append("unable to evaluate scaled gradient")
    ev = np.linalg.eigvalsh(hess)
    if (ev < -_HESS_TOL * max(1.0, abs(ev).max())).any():
        converged = False
        messages.append(
            f"Model failed to converge: degenerate Hessian with {int((ev < 0).sum())} negative eigenvalues"
        )
    elif ev.max() > 0 and ev.min() / ev.max() < _HESS_TOL:
        messages.append("Model is nearly unidentifiable: very large eigenvalue ratio - rescale variables?")
    for msg in messages:
        warnings.warn(msg, ConvergenceWarning, stacklevel=user_stacklevel())
    return Checks(False, converged, messages, grad, hess)


class Checks(NamedTuple):
    """The outcome of ``assess_convergence``: the flags, the messages, and the gradient and
    Hessian it judged by (exact, or finite differences) when they were computed."""

    singular: bool
    converged: bool
    messages: list[str]
    gradient: np.ndarray | None = None
    hessian: np.ndarray | None = None


_POLISH_STEP = 1e-10


def newton_polish(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    fx: float,
    checks: Checks,
    lower: np.ndarray,
    upper: np.ndarray,
    gradient: Callable[[np.ndarray], np.ndarray] | None = None,
    steps: int = 3,
) -> tuple[np.ndarray, float]:
    """Newton steps from the optimum with the checks' Hessian, to place it to the precision of
    the gradient.

    A derivative-free optimizer stops where its last trust region saw no change of 1e-12
    relative in the objective: theta can be 1e-6 off the optimum, and where it stops depends
    on rounding (row order, level labels). With an exact ``gradient``, ``newton_steps``;
    without one, a single step with the checks' gradient is kept when it lowers the objective.
    Boundary fits are left as they are.
    """
    g, H = checks.gradient, checks.hessian
    if checks.singular or g is None or H is None or not np.isfinite(H).all():
        return x, fx
    if gradient is None:
        try:
            Hc = sla.cho_factor(H)
        except np.linalg.LinAlgError:
            return x, fx
        x1 = np.clip(x - sla.cho_solve(Hc, g), lower, upper)
        f1 = f(x1)
        return (x1, f1) if f1 < fx and not getattr(f, "failed", False) else (x, fx)
    x, _, moved = newton_steps(gradient, x, gradient(x), H, lower, upper, steps)
    return (x, f(x)) if moved else (x, fx)


def newton_steps(
    gradient: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    g: np.ndarray,
    H: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    steps: int = 3,
    free: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Up to ``steps`` Newton steps on the exact ``gradient`` (``g`` its value at ``x``) with the
    Hessian ``H``, taken while the Newton decrement g'H^-1 g falls (values are too noisy to
    judge steps this small) and the step is larger than 1e-10 of the parameters. With ``free``
    (a mask), only those parameters move and ``H`` is theirs (a boundary fit's: the others stay
    on their bounds).

    Returns the point, the gradient there and whether it moved; ``x`` itself when ``H`` is not
    positive definite.
    """
    if free is None:
        free = np.ones(len(x), bool)
    if not np.isfinite(H).all():
        return x, g, False
    try:
        Hc = sla.cho_factor(H)
    except np.linalg.LinAlgError:
        return x, g, False

    def newton(g: np.ndarray) -> np.ndarray:
        step = np.zeros(len(x))
        step[free] = sla.cho_solve(Hc, g[free])
        return step

    step = newton(g)
    dec = float(g @ step)
    moved = False
    for _ in range(steps):
        # a step below 1e-10 of the parameters' size moves nothing the fit reports
        if not np.abs(step).max(initial=0.0) > _POLISH_STEP * max(1.0, float(np.abs(x).max(initial=0.0))):
            break
        x1 = np.clip(x - step, lower, upper)
        g1 = gradient(x1)
        step1 = newton(g1)
        dec1 = float(g1 @ step1)
        if not (np.isfinite(dec1) and dec1 < dec):
            break
        x, g, step, dec, moved = x1, g1, step1, dec1, True
    return x, g, moved
