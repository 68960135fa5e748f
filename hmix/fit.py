"""The fit pipeline: formula -> design -> objective -> optimizer -> fitted model.

``lmer`` and ``glmer`` build the design and hand it to ``fit_lmm`` / ``fit_glmm``; refits
(``refit``, the bootstrap's ``LmmRefitter``) enter there with a design of their own. A GLMM fit
runs in named stages: ``stage_theta`` (theta with beta from PIRLS; the whole fit for nAGQ = 0),
then ``stage_newton`` (quasi-Newton over (theta, beta) with the exact gradient of the Laplace
deviance) or, where that cannot run or gives up, ``stage_bobyqa`` (derivative-free), then the
checks at the optimum and ``glmm_vcov``. What each stage did is recorded in ``OptSummary``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._progress import traced
from ._threads import one_blas_thread
from .checks import check_flag, check_lmer_response
from .dask import is_dask_frame
from .design import ArrayLike, Design, build_design
from .errors import ConvergenceWarning, DataError, HmixError, HmixWarning, user_stacklevel, whole_number
from .families import Family, get_family
from .glmm import GLMMObjective, GlmmPenalty, PirlsSettings, PirlsState, glm_start
from .lmm import LMMObjective, Penalty, check_lmm
from .optimize import (
    OptSummary,
    check_convergence,
    choose_method,
    hessian_from_gradient,
    minimize,
    minimize_newton,
)
from .results import GeneralizedLinearMixedModel, LinearMixedModel

if TYPE_CHECKING:
    from .engine import Factor
    from .results import MixedModel

__all__ = ["lmer", "glmer", "fit_lmm", "fit_glmm", "refit", "LmmRefitter"]

# nAGQ = 1 with a canonical link: stage 1 only has to bring theta near the optimum, where the
# quasi-Newton stage over (theta, beta) converges in a few steps
_STAGE1_FTOL = 1e-4
_STAGE1_PIRLS_TOL = 1e-6  # ... and its PIRLS need not converge further than that
# LMMs whose dense block has at most this many rows factor it on one BLAS thread: on two cores
# shared with other work, OpenBLAS's second thread spins while it waits (a 100,000-row crossed
# fit, m = 2,003: 26 s and 11 s of CPU with two threads, 3.5-9 s and 2.4-3 s with one), and
# blocks this small gain little from it on an idle machine
_ONE_THREAD_ROWS = 4096


def _data_name(data: pd.DataFrame) -> str:
    return str(getattr(data, "attrs", {}).get("name", "data"))


# ----- linear mixed models ------------------------------------------------------------------
def lmer(
    formula: str,
    data: pd.DataFrame,
    *,
    REML: bool = True,
    weights: ArrayLike | None = None,
    offset: ArrayLike | None = None,
    check_conv: bool = True,
    verbose: bool = False,
) -> LinearMixedModel:
    """Fit a linear mixed model, as lme4's ``lmer`` does.

    Parameters
    ----------
    formula : str
        lme4 formula, such as ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame or dask.dataframe.DataFrame
        Never modified. Rows with missing values in a variable the formula uses are dropped, with a
        ``MissingDataWarning``. A Dask DataFrame's rows stay in its cluster (``hmix.dask``): its
        ``weights`` and ``offset`` must name columns.
    REML : bool, default True
        Restricted maximum likelihood; ``False`` for maximum likelihood.
    weights : str or array-like, optional
        Prior weights: a column name or one positive value per row.
    offset : str or array-like, optional
        A known term added to the linear predictor (adds to ``offset(...)`` terms in the formula).
    check_conv : bool, default True
        Run lme4's gradient and Hessian checks at the optimum.
    verbose : bool, default False
        Print each evaluation of the objective (progress of a long fit) on stderr.

    Returns
    -------
    LinearMixedModel
        The immutable fitted model.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> round(m.objective, 4)
    1743.6283
    >>> m.fixef.round(3).to_dict()
    {'(Intercept)': 251.405, 'Days': 10.467}
    """
    REML = check_flag(REML, "REML")
    check_conv = check_flag(check_conv, "check_conv")
    verbose = check_flag(verbose, "verbose")
    if is_dask_frame(data):
        from . import dask

        return dask.lmer(
            formula,
            data,
            REML=REML,
            weights=weights,
            offset=offset,
            check_conv=check_conv,
            verbose=verbose,
            data_name=_data_name(data),
        )
    design = build_design(formula, data, weights=weights, offset=offset)
    check_lmer_response(design)
    check_lmm(design)
    return fit_lmm(design, REML=REML, check_conv=check_conv, data_name=_data_name(data), verbose=verbose)


def blas_threads(f: LMMObjective) -> AbstractContextManager[None]:
    """One BLAS thread for an LMM whose dense block is small (see ``_ONE_THREAD_ROWS``)."""
    return one_blas_thread() if f.engine.layout.m <= _ONE_THREAD_ROWS else nullcontext()


def optimize_lmm(
    f: LMMObjective,
    start: np.ndarray | None = None,
    *,
    check_conv: bool = True,
    quiet: bool = False,
    verbose: bool = False,
) -> tuple[np.ndarray, OptSummary, bool, bool]:
    """Minimize the profiled deviance: theta, what the optimizer did, singular, converged.

    The moment-based start is close: a first trust region of 10% of it (at least 0.02) saves
    a third of the evaluations over the reference models (benchmarks/optimizers.py).
    """
    x0 = f.theta0 if start is None else np.asarray(start, dtype=float)
    step = np.maximum(0.1 * np.abs(x0), 0.02)
    method = choose_method(len(x0), f.engine.work)
    with blas_threads(f):
        theta, fmin, optsum, fc = minimize(
            traced(f, "lmer") if verbose else f,
            x0,
            f.lower,
            upper=f.upper,
            diagonal=f.scale_mask,
            initial_step=step,
            method=method,
        )
        if quiet:
            f.engine.forget()
            return theta, optsum, bool((theta[f.scale_mask] < 1e-4).any()), True
        # the checks step the parameters in the engine's term order (the last ones cost least)
        singular, converged, messages, _ = check_convergence(
            fc, theta, f.scale_mask, check=check_conv, fx=fmin, order=f.engine.step_order
        )
    f.engine.forget()  # (the kept factors serve the optimizer only; a fitted model keeps its own)
    return theta, replace(optsum, n_evals=fc.n, warnings=tuple(messages)), singular, converged


def fit_lmm(
    design: Design,
    *,
    REML: bool = True,
    check_conv: bool = True,
    data_name: str = "data",
    penalty: Penalty | None = None,
    verbose: bool = False,
) -> LinearMixedModel:
    """Fit an LMM to a materialized design (``lmer`` after the formula; refits reuse it)."""
    f = LMMObjective(design, REML=REML, penalty=penalty)
    theta, optsum, singular, converged = optimize_lmm(f, check_conv=check_conv, verbose=verbose)
    with blas_threads(f):
        return lmm_model(f, theta, optsum, singular=singular, converged=converged, data_name=data_name)


def lmm_model(
    f: LMMObjective, theta: np.ndarray, optsum: OptSummary, *, singular: bool, converged: bool, data_name: str
) -> LinearMixedModel:
    """The fitted model at ``theta``: beta, sigma and u from the factor there."""
    fac = f.factor(theta)
    d = f.design
    return LinearMixedModel(
        formula=d.formula.text,
        design=d,
        theta=np.array(theta, dtype=float),
        beta=fac.beta.copy(),
        u=tuple(f.engine.to_lme4(fac.u_engine)),
        sigma=f.sigma(fac),
        objective=f.from_factor(fac),
        optsum=optsum,
        singular=singular,
        converged=converged,
        factor=fac,
        REML=f.REML,
        devfun=f,
        data_name=data_name,
    )


class LmmRefitter:
    """Refits of an LMM to new responses on the same design, reusing its engine's symbolic
    phase; each starts at the model's theta (the parametric bootstrap)."""

    def __init__(self, model: LinearMixedModel):
        self.model = model
        self.f = LMMObjective(model.design, REML=model.REML)

    def __call__(self, y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, bool]:
        """theta, sigma, beta and the singular flag of the fit to response ``y``."""
        self.f.set_response(y)
        theta, _, singular, _ = optimize_lmm(self.f, self.model.theta, quiet=True)
        fac = self.f.factor(theta)
        return theta, self.f.sigma(fac), fac.beta, singular


# ----- generalized linear mixed models ------------------------------------------------------
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
) -> GeneralizedLinearMixedModel:
    """Fit a generalized linear mixed model, as lme4's ``glmer`` does.

    Parameters
    ----------
    formula : str
        lme4 formula; a binomial response may be 0/1 (numbers or booleans), a two-level factor,
        ``cbind(successes, failures)``, or a proportion with ``weights=`` the number of trials.
    data : pandas.DataFrame or dask.dataframe.DataFrame
        Never modified. A Dask DataFrame's rows stay in its cluster (``hmix.dask_glmm``).
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
    nAGQ = whole_number(nAGQ, "nAGQ", minimum=0)
    check_conv = check_flag(check_conv, "check_conv")
    if vcov_method not in ("hessian", "pirls"):
        raise DataError(f"vcov_method must be 'hessian' or 'pirls', not {vcov_method!r}")
    if is_dask_frame(data):
        from . import dask_glmm

        return dask_glmm.glmer(
            formula,
            data,
            family=fam,
            nAGQ=nAGQ,
            weights=weights,
            offset=offset,
            vcov_method=vcov_method,
            check_conv=check_conv,
            data_name=_data_name(data),
        )
    design = build_design(formula, data, weights=weights, offset=offset, binary_ok=fam.name == "binomial")
    return fit_glmm(
        design, fam, nAGQ=nAGQ, vcov_method=vcov_method, check_conv=check_conv, data_name=_data_name(data)
    )


def check_glmm(design: Design, family: Family) -> None:
    """Responses and sizes a GLMM cannot be fitted to."""
    wt = np.ones(design.n) if design.weights is None else design.weights
    family.validate(design.y, wt)
    if np.all(design.y == 0):
        raise DataError("every response is zero: there is nothing to model")
    if design.n <= design.p:
        raise DataError(
            f"{design.n} observations for {design.p} fixed effects: use more data or fewer fixed effects"
        )


def fit_glmm(
    design: Design,
    family: Family,
    *,
    nAGQ: int = 1,
    vcov_method: str = "hessian",
    check_conv: bool = True,
    data_name: str = "data",
    pirls: PirlsSettings | None = None,
    penalty: GlmmPenalty | None = None,
    objective: GLMMObjective | None = None,
    beta0: np.ndarray | None = None,
) -> GeneralizedLinearMixedModel:
    """Fit a GLMM to a materialized design (``glmer`` after the formula; refits reuse it).

    ``penalty`` (a prior's -2 log-density over (theta, beta), with its gradient) is added to the
    objective the optimizer minimizes; the model's ``objective`` is the deviance without it.
    ``objective`` and ``beta0``: an objective whose rows are elsewhere, checked by its maker,
    and its starting fixed effects (``hmix.dask_glmm``). BLAS runs on one thread meanwhile (see
    ``hmix._threads``).
    """
    if objective is None:
        check_glmm(design, family)
    with one_blas_thread():
        obj = objective or GLMMObjective(design, family, nAGQ, pirls, penalty)
        obj.start(glm_start(design, family) if beta0 is None else beta0)
        theta, state, optsum, counted = stage_theta(obj)
        beta = state.beta
        derivs = None
        if nAGQ == 0:
            params, diag = theta, obj.scale_mask
        else:
            x0 = np.concatenate([theta, beta])
            diag = np.concatenate([obj.scale_mask, np.zeros(design.p, bool)])
            newton = stage_newton(obj, x0, state.factor) if nAGQ == 1 else None
            if newton is not None and newton[1].return_code > 0:
                params, opt2, counted, derivs = newton
            else:
                params, opt2, counted = stage_bobyqa(obj, x0 if newton is None else newton[0], theta)
                if newton is not None:  # (the evaluations of the stage that gave up count too)
                    stages = ("theta", "quasi-Newton", "BOBYQA")
                    opt2 = replace(opt2, n_evals=opt2.n_evals + newton[1].n_evals, stages=stages)
            optsum = replace(opt2, initial=x0, n_evals=opt2.n_evals + optsum.n_evals)
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
        optsum = replace(
            optsum,
            n_evals=optsum.n_evals + counted.n - n_before,  # type: ignore[attr-defined]
            warnings=tuple(messages),
            pirls=obj.settings,
        )
        theta = params[: obj.ntheta]
        beta = params[obj.ntheta :] if nAGQ > 0 else obj.pirls(theta, None).beta
        if at_optimum is not None:
            final = at_optimum
            obj.keep_modes(obj.thetamap.lam(theta), [v.copy() for v in final.u], final.w)
        else:
            final = obj.pirls(theta, beta)
        if not final.converged:
            warnings.warn(
                f"PIRLS did not converge in {obj.settings.maxit} steps at the estimates: the conditional "
                "modes and the likelihood are approximate",
                ConvergenceWarning,
                stacklevel=user_stacklevel(),
            )
        value = obj.agq_value(theta, beta, final) if nAGQ > 1 else obj.laplace_value(final)
        vcov, method = glmm_vcov(obj, theta, beta, final, hess if vcov_method == "hessian" else None)
    return GeneralizedLinearMixedModel(
        formula=design.formula.text,
        design=design,
        theta=np.array(theta, dtype=float),
        beta=np.array(beta, dtype=float),
        u=tuple(obj.layout.to_lme4([v.copy() for v in final.u])),
        sigma=1.0,
        objective=float(value),
        optsum=optsum,
        singular=singular,
        converged=converged,
        factor=final.factor,
        data_name=data_name,
        family=family,
        nAGQ=obj.nAGQ,
        vcov_method=method,
        vcov_beta=np.array(vcov, dtype=float),
        devfun=obj,
    )


def stage_theta(
    obj: GLMMObjective,
) -> tuple[np.ndarray, PirlsState, OptSummary, Callable[[np.ndarray], float]]:
    """Theta alone, beta from PIRLS over (beta, u) (lme4's nAGQ = 0; the first stage otherwise).

    With nAGQ = 1 it only has to bring theta near the optimum, so it stops early and its PIRLS
    stops at a looser tolerance. Starts at lme4's theta (1 on the diagonal). Returns theta, the
    PIRLS solution there (beta, and the factor the next stage's first Hessian starts from), what
    the optimizer did and the counted objective.
    """
    newton = obj.nAGQ == 1
    settings = obj.settings.loosened(_STAGE1_PIRLS_TOL) if newton else obj.settings
    theta0 = obj.scale_mask.astype(float)
    # a PIRLS call is a few factorizations and a few passes over the rows
    method = choose_method(obj.ntheta, 3 * (obj.engine_joint.work + 50 * obj.design.n))
    theta, _, opt, fc = minimize(
        lambda th: obj.laplace_joint(th, settings),
        theta0,
        obj.lower_theta,
        upper=obj.thetamap.upper,
        diagonal=obj.scale_mask,
        method=method,
        ftol_rel=_STAGE1_FTOL if newton else 1e-12,
    )
    state = obj.pirls(theta, None, settings)
    return theta, state, replace(opt, stages=("theta",), pirls=obj.settings), fc


def stage_newton(
    obj: GLMMObjective, x0: np.ndarray, factor: Factor
) -> tuple[
    np.ndarray, OptSummary, Callable[[np.ndarray], float], Callable[..., tuple[np.ndarray, np.ndarray] | None]
]:
    """BFGS over (theta, beta) with the exact gradient of the Laplace deviance, without bounds
    (the deviance is even in the sign of each column of Lambda, and a variance pinned at an exact
    zero would be a stationary point the gradient cannot leave); the optimum's theta is then
    rectified. ``factor`` is the joint PIRLS system's at x0 (the first Hessian's beta block).
    Returns the point, the summary (return code <= 0: it gave up, with its best point),
    the counted objective and the exact derivatives for the checks."""
    nth = obj.ntheta
    diag = np.concatenate([obj.scale_mask, np.zeros(len(x0) - nth, bool)])

    def rectify(x: np.ndarray) -> np.ndarray:
        return np.concatenate([obj.thetamap.rectify(x[:nth]), x[nth:]])

    params, _, optsum, cg = minimize_newton(
        obj.value_and_gradient,
        x0,
        np.full(len(x0), -np.inf),
        diagonal=diag,
        rectify=rectify,
        start_hessian=_start_hessian(nth, factor),
    )
    if optsum.return_code <= 0:
        params = rectify(cg.best_x) if np.isfinite(cg.best_f) else x0
    optsum = replace(optsum, stages=("theta", "quasi-Newton"))
    return params, optsum, cg, _exact_derivs(cg.fg, diag)


def stage_bobyqa(
    obj: GLMMObjective, x0: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, OptSummary, Callable[[np.ndarray], float]]:
    """BOBYQA over (theta, beta) (nAGQ > 1, and where the quasi-Newton stage gave up), with a
    restart from small steps: BOBYQA's first run can stop early on this objective."""
    p = obj.design.p
    lower = np.concatenate([obj.lower_theta, np.full(p, -np.inf)])
    upper = np.concatenate([obj.thetamap.upper, np.full(p, np.inf)])
    diag = np.concatenate([obj.scale_mask, np.zeros(p, bool)])
    se0 = np.sqrt(np.maximum(np.diag(obj.engine_joint.factor(obj.thetamap.lam(theta)).xtx_inv()), 1e-12))
    step = np.concatenate([np.full(obj.ntheta, 0.1), np.minimum(se0, 1.0)])
    params, _, opt1, _ = minimize(
        obj, x0, lower, upper=upper, diagonal=diag, initial_step=step, method="NLOPT_LN_BOBYQA"
    )
    params, _, opt2, counted = minimize(
        obj, params, lower, upper=upper, diagonal=diag, initial_step=step / 100, method="NLOPT_LN_BOBYQA"
    )
    return params, replace(opt2, n_evals=opt1.n_evals + opt2.n_evals, stages=("theta", "BOBYQA")), counted


def glmm_vcov(
    obj: GLMMObjective, theta: np.ndarray, beta: np.ndarray, final: PirlsState, hess: np.ndarray | None
) -> tuple[np.ndarray, str]:
    """The covariance of beta: from the Hessian of the deviance over (theta, beta) when given
    (lme4's default) and positive definite, else from the PIRLS weights; and which it is."""
    vcov_pirls = obj.joint_factor(theta, final.eta, beta).xtx_inv()
    if hess is None or obj.nAGQ == 0:
        return vcov_pirls, "pirls"
    try:
        Vh = np.linalg.inv(hess)
        if np.linalg.eigvalsh(Vh).min() > 0:
            return 2 * Vh[obj.ntheta :, obj.ntheta :], "hessian"
    except np.linalg.LinAlgError:
        pass
    warnings.warn(
        "the Hessian of the deviance is not positive definite: standard errors come from the "
        "PIRLS weights instead",
        HmixWarning,
        stacklevel=user_stacklevel(),
    )
    return vcov_pirls, "pirls"


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
    with beta, which BFGS then corrects. This saves one gradient per fixed effect at the start;
    the final Hessian (vcov, checks) is still differenced in full.
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


# ----- refits -------------------------------------------------------------------------------
def refit(
    model: MixedModel, design: Design, *, check_conv: bool = False, quiet: bool = True
) -> LinearMixedModel | GeneralizedLinearMixedModel:
    """Fit ``model``'s specification (REML or ML; family, link and nAGQ) to ``design``.

    Refits inside resampling loops skip the convergence checks and silence warnings by default;
    the callers count singular or unconverged refits themselves.
    """
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        if isinstance(model, LinearMixedModel):
            return fit_lmm(design, REML=model.REML, check_conv=check_conv, data_name=model.data_name)
        if isinstance(model, GeneralizedLinearMixedModel):
            return fit_glmm(
                design,
                model.family,
                nAGQ=model.nAGQ,
                vcov_method="pirls",
                check_conv=check_conv,
                data_name=model.data_name,
            )
    raise HmixError(f"cannot refit a {type(model).__name__}")
