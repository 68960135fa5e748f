"""Derivative-free optimization of the profiled objective, and lme4's checks at the optimum."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import nlopt
import numpy as np

from .blocks import NotPositiveDefinite
from .errors import ConvergenceWarning, HmixError, SingularFitWarning

__all__ = ["OptSummary", "minimize", "check_convergence", "choose_method", "SINGULAR_TOL"]

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on diagonal theta
_SNAP_BELOW = 1e-3  # diagonal theta below this is tried at zero
_SNAP_RISE = 1e-5  # ... and kept there if the objective rises by at most this
_GRAD_TOL = 2e-3  # lme4's check.conv.grad tolerance (scaled gradient)
_HESS_TOL = 1e-6  # lme4's check.conv.hess tolerance (eigenvalue ratio)
_FD_STEP = 1e-4  # lme4's finite-difference step for the checks
_COSTLY = 1e7  # estimated flops per evaluation above which NEWUOA_BOUND's overhead is negligible

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

    def __str__(self) -> str:
        return (
            f"optimizer {self.method}: {self.message} (code {self.return_code}) after "
            f"{self.n_evals} evaluations, objective {self.fmin:.6f}"
        )


class _Counted:
    """Counts evaluations; a failed evaluation returns the initial objective (see DESIGN §3)."""

    def __init__(self, f: Callable[[np.ndarray], float], x0: np.ndarray):
        self.f = f
        self.n = 0
        self.f0 = np.inf
        self.best_x, self.best_f = x0, np.inf
        self.f0 = self(x0)
        if not np.isfinite(self.f0):
            raise HmixError(
                "the objective is not finite at the starting values: the data leave nothing to "
                "estimate (for instance a response without variation)"
            )

    def __call__(self, x: np.ndarray) -> float:
        self.n += 1
        try:
            v = float(self.f(np.asarray(x, dtype=float)))
        except (NotPositiveDefinite, np.linalg.LinAlgError, FloatingPointError):
            return self.f0
        if not np.isfinite(v):
            return self.f0
        if v < self.best_f:
            self.best_x, self.best_f = np.array(x, dtype=float), v
        return v


def minimize(
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    diagonal: np.ndarray | None = None,
    ftol_rel: float = 1e-12,
    ftol_abs: float = 1e-8,
    xtol_abs: float = 1e-8,
    maxeval: int = 100_000,
    initial_step: np.ndarray | None = None,
    method: str | None = None,
) -> tuple[np.ndarray, float, OptSummary, _Counted]:
    """Minimize ``f`` within bounds by an NLopt method (BOBYQA unless ``method`` says otherwise,
    see :func:`choose_method`), then snap near-zero variances to zero.

    ``diagonal`` marks the parameters that are standard deviations (lower bound 0); those below
    1e-3 are set to 0 when that raises the objective by at most 1e-5.
    """
    x0 = np.asarray(x0, dtype=float)
    n = len(x0)
    start = time.perf_counter()
    fc = _Counted(f, x0)
    method = method or "NLOPT_LN_BOBYQA"
    opt = nlopt.opt(getattr(nlopt, method.removeprefix("NLOPT_")), n)
    opt.set_min_objective(lambda x, grad: fc(x))
    opt.set_lower_bounds(np.asarray(lower, dtype=float))
    opt.set_ftol_rel(ftol_rel)
    opt.set_ftol_abs(ftol_abs)
    opt.set_xtol_abs(xtol_abs)
    opt.set_maxeval(maxeval)
    if initial_step is not None:
        opt.set_initial_step(np.asarray(initial_step, dtype=float))
    try:
        x = opt.optimize(x0)
        code = int(opt.last_optimize_result())
        fmin = float(opt.last_optimum_value())
    except nlopt.RoundoffLimited:  # the best point so far is still a valid answer
        x, code, fmin = fc.best_x, -4, fc.best_f
    if diagonal is not None:
        for i in np.nonzero(diagonal & (x > 0) & (x < _SNAP_BELOW))[0]:
            trial = x.copy()
            trial[i] = 0.0
            ft = fc(trial)
            if ft <= fmin + _SNAP_RISE:
                x, fmin = trial, ft
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


def choose_method(nparams: int, work: float) -> str:
    """The optimizer for a problem of ``nparams`` parameters costing ``work`` flops an evaluation.

    NEWUOA_BOUND needs 10-25% fewer evaluations than BOBYQA (lme4's choice) on the reference
    models and InstEval but spends ~0.2 ms of its own per evaluation on the bounds, and needs two
    or more parameters: it pays only for costly evaluations (benchmarks/optimizers.py). The
    choice depends on the problem's size, never on timings, so a fit is reproducible.
    """
    return "NLOPT_LN_NEWUOA_BOUND" if nparams > 1 and work > _COSTLY else "NLOPT_LN_BOBYQA"


def _derivs(f: Callable[[np.ndarray], float], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central finite-difference gradient and Hessian with lme4's step (1e-4).

    The mixed second differences reuse the axis evaluations (two new evaluations per pair,
    where lme4's deriv12 spends four), with the same O(h^2) accuracy.
    """
    n = len(x)
    h = _FD_STEP
    # f(x) is evaluated here, next to the other points: a GLMM's PIRLS leaves ~1e-10 of noise
    # between evaluations, and the second differences divide by h^2 = 1e-8
    f0 = f(x)
    eye = np.eye(n) * h
    fp = np.array([f(x + eye[i]) for i in range(n)])
    fm = np.array([f(x - eye[i]) for i in range(n)])
    grad = (fp - fm) / (2 * h)
    hess = np.diag((fp - 2 * f0 + fm) / h**2)
    for i in range(n):
        for j in range(i):
            fpp = f(x + eye[i] + eye[j])
            fmm = f(x - eye[i] - eye[j])
            v = (fpp - fp[i] - fp[j] + 2 * f0 - fm[i] - fm[j] + fmm) / (2 * h * h)
            hess[i, j] = hess[j, i] = v
    return grad, hess


def check_convergence(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    diagonal: np.ndarray,
    *,
    check: bool = True,
    hessian: bool = False,
) -> tuple[bool, bool, list[str], np.ndarray | None]:
    """lme4's checks at the optimum: singularity, scaled gradient, Hessian.

    Returns ``(singular, converged, messages, hessian)`` and issues the matching warnings. The
    finite-difference Hessian is computed for the checks (``check``, skipped for singular fits,
    as lme4 does) or when asked for (``hessian``, for the GLMM covariance of beta).
    """
    messages: list[str] = []
    singular = bool(np.any(x[diagonal] < SINGULAR_TOL))
    if singular:
        msg = "boundary (singular) fit: a variance is estimated as zero or a correlation as +-1"
        messages.append(msg)
        warnings.warn(msg, SingularFitWarning, stacklevel=3)
    if not (hessian or (check and not singular)):
        return singular, True, messages, None
    grad, hess = _derivs(f, x)
    if singular or not check:
        return singular, True, messages, hess
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
        warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    return False, converged, messages, hess
