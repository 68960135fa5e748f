"""The fit pipeline: formula -> design -> objective -> optimizer -> fitted model.

``lmer`` and ``glmer`` build the design and hand it to ``fit_lmm`` / ``fit_glmm``; refits
(``refit``, the bootstrap's ``LmmRefitter``) enter there with a design of their own. A GLMM fit
runs in named stages: ``stage_theta`` (theta with beta from PIRLS; the whole fit for nAGQ = 0),
then ``stage_newton`` (quasi-Newton over (theta, beta) and the extras -- a log dispersion,
zero-inflation coefficients -- with the exact gradient of the Laplace deviance) or, where that
cannot run or gives up, ``stage_bobyqa`` (derivative-free), then the checks at the optimum and
``glmm_vcov``. What each stage did is recorded in ``OptSummary``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.optimize as sopt

from ._progress import traced
from ._threads import one_blas_thread
from .checks import check_flag, check_lmer_response
from .dask import is_dask_frame
from .design import ArrayLike, Design, build_design
from .engine import NotPositiveDefinite
from .errors import ConvergenceWarning, DataError, HmixError, HmixWarning, user_stacklevel, whole_number
from .families import Family, NegativeBinomial, get_family
from .glmm import GLMMObjective, GlmmPenalty, PirlsSettings, PirlsState, glm_start
from .lmm import LMMObjective, Penalty, check_lmm, check_size
from .lmm import check_nobs_vs_nre as _check_nobs
from .optimize import (
    SINGULAR_TOL,
    Checks,
    OptSummary,
    assess_convergence,
    choose_method,
    convergence_derivatives,
    hessian_from_gradient,
    minimize,
    minimize_exact_newton,
    minimize_newton,
    newton_polish,
    newton_steps,
)
from .priors import Priors
from .remat import ThetaMap
from .results import GeneralizedLinearMixedModel, LinearMixedModel
from .zeroinflation import ZeroInflation

if TYPE_CHECKING:
    from .engine import Factor
    from .optimize import _Counted, _CountedHessian
    from .results import MixedModel

__all__ = ["lmer", "glmer", "fit_lmm", "fit_glmm", "refit", "LmmRefitter"]

# nAGQ = 1 with a canonical link: stage 1 only has to bring theta near the optimum, where the
# quasi-Newton stage over (theta, beta) converges in a few steps (from 1e-4 and 1e-6: the same
# evaluations on the benchmarks' GLMMs, grouseticks' Poisson 33 -> 31, and a PIRLS step fewer
# in a stage-1 evaluation out of two)
_STAGE1_FTOL = 1e-3
_STAGE1_PIRLS_TOL = 1e-4  # ... and its PIRLS need not converge further than that (nor take
# the last step, ``PirlsSettings.early_stop``)
_LOG_DISP_BOUND = float(np.log(1e8))
_EXTRA_BOUND = 10.0  # the zero-inflation coefficients' start (``conditional_extras``) within +-this
# LMMs whose dense block has at most this many rows factor it on one BLAS thread: on two cores
# shared with other work, OpenBLAS's second thread spins while it waits, and blocks this small
# gain little from it on an idle machine (the performance page has the figures)
_ONE_THREAD_ROWS = 4096
# BOBYQA's stop (change in the objective) when exact Newton steps finish the fit (lme4's: 1e-8)
_NEWTON_FTOL = 1e-5
# what the singular-fit message of an unpenalized fit suggests
_LMER_HINT = (
    "; hmix.blmer fits the same model with a weakly informative prior on the covariance (blme's "
    "default Wishart) that keeps the estimate off the boundary"
)
_GLMER_HINT = _LMER_HINT.replace("blmer", "bglmer")


def _no_overdispersion(mu: np.ndarray, theta: float) -> bool:
    """The negative binomial's extra variance mu^2 / theta is under 1% of the Poisson's mu on
    average: theta has run off towards infinity, where the likelihood is flat."""
    return float(np.mean(mu)) / theta < 0.01


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
    check_nobs_vs_nre: str = "stop",
    max_theta: int | None = 100,
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
    check_nobs_vs_nre : {"stop", "warning", "ignore"}
        A term with at least as many random effects as observations is refused (lme4's
        ``check.nobs.vs.nRE``), or only warned about.
    max_theta : int or None, default 100
        Refuse models with more covariance parameters (they take very long: the message names
        the cheaper structures); None to fit them anyway.
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
            max_theta=max_theta,
        )
    design = build_design(formula, data, weights=weights, offset=offset)
    check_lmer_response(design)
    check_lmm(design, check_nobs_vs_nre)
    check_size(design, max_theta)
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
    singular_hint: str = _LMER_HINT,
    verbose: bool = False,
) -> tuple[np.ndarray, OptSummary, bool, bool]:
    """Minimize the profiled deviance: theta, what the optimizer did, singular, converged.

    The optimizer, the snapping of tiny variances and the checks work on theta for columns of Z
    of size 1 (``ThetaMap.scale``): a slope's theta is inversely proportional to its
    predictor's units, and BOBYQA's trust region, its tolerances and lme4's finite-difference
    checks all assume parameters of order 1. The moment-based start is close: a first trust
    region of 5% of it (at least 0.02) saves about a tenth of the evaluations over the
    reference LMMs (658 in all, against 721 in unscaled theta with a 10% region).
    """
    with blas_threads(f):
        return _minimize_lmm(f, start, check_conv, quiet, singular_hint, verbose)


def _minimize_lmm(
    f: LMMObjective,
    start: np.ndarray | None,
    check_conv: bool,
    quiet: bool,
    singular_hint: str,
    verbose: bool,
) -> tuple[np.ndarray, OptSummary, bool, bool]:
    scale = f.param_scale
    x0 = (f.theta0 if start is None else np.asarray(start, dtype=float)) * scale
    step = np.maximum(0.05 * np.abs(x0), 0.02)
    method = choose_method(len(x0), f.engine.work)

    def scaled(x: np.ndarray) -> float:
        return f(x / scale)

    value = traced(scaled, "lmer") if verbose else scaled
    # where the exact Hessian costs a few evaluations, Newton's method from the moment-based
    # start replaces BOBYQA (which it falls back to when a step fails)
    newton = _newton_lmm(f, value, x0) if f.newton else None
    fc: _Counted | _CountedHessian
    if newton is not None:
        x, fmin, optsum, fc = newton
    else:
        x, fmin, optsum, fc = minimize(
            value,
            x0,
            f.lower,
            upper=f.upper,
            diagonal=f.scale_mask,
            initial_step=step,
            method=method,
            # Newton steps on exact derivatives end the fit: BOBYQA need not shrink its trust
            # region to lme4's 1e-8 change in the objective (a fifth of the reference fits'
            # evaluations)
            ftol_abs=_NEWTON_FTOL if check_conv and not quiet and _exact_gradient(f) else 1e-8,
        )
    theta = x / scale
    optsum = replace(optsum, initial=optsum.initial / scale, final=theta.copy())
    if quiet:
        f.engine.release()
        return theta, optsum, bool((x[f.scale_mask] < SINGULAR_TOL).any()), True
    x, fmin, checks = _last_steps(f, fc, x, fmin, check_conv, singular_hint)
    theta = x / scale
    f.engine.release()  # (kept factors and workspace serve the optimizer only; a model has its own)
    optsum = replace(optsum, final=theta.copy(), fmin=fmin, n_evals=fc.n, warnings=tuple(checks.messages))
    return theta, optsum, checks.singular, checks.converged


def _newton_lmm(
    f: LMMObjective, value: Callable[[np.ndarray], float], x0: np.ndarray
) -> tuple[np.ndarray, float, OptSummary, _CountedHessian] | None:
    """Newton's method on the exact derivatives (``LMMObjective.value_derivatives``) in the
    optimizer's parameters; None when it fails (``minimize_exact_newton``)."""
    scale = f.param_scale
    outer = np.outer(scale, scale)

    def fgh(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
        out = f.value_derivatives(x / scale)
        return None if out is None else (out[0], out[1] / scale, out[2] / outer)

    return minimize_exact_newton(fgh, value, x0, f.lower, upper=f.upper, diagonal=f.scale_mask)


def _last_steps(
    f: LMMObjective,
    fc: Callable[[np.ndarray], float],
    x: np.ndarray,
    fmin: float,
    check_conv: bool,
    hint: str,
) -> tuple[np.ndarray, float, Checks]:
    """Newton steps from the optimizer's point (the parameters scaled as it saw them), then
    lme4's checks, judged where the steps end.

    With an exact gradient the steps are taken on it, with the exact Hessian where the engine
    gives it (``Engine.exact_derivatives``) and else the checks' differences; a singular fit's
    steps move only the parameters off their bounds (the others stay at zero), and need an
    exact Hessian or differences over those parameters alone. Without an exact gradient, one
    step on the checks' differences is kept when it lowers the objective.
    """
    scale = f.param_scale
    grad = (lambda x: _gradient(f, x / scale) / scale) if _exact_gradient(f) else None
    exact_hessian = []  # (whether derivs gave the derivatives)

    def derivs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact derivatives in the optimizer's parameters, where the engine gives them."""
        out = f.derivatives(x / scale, hessian=True) if f.penalty is None else None
        if out is None or out[1] is None:
            return None
        exact_hessian.append(True)
        return out[0] / scale, out[1] / np.outer(scale, scale)

    # the checks step the parameters in the engine's term order (the last ones cost least)
    order = f.engine.step_order
    singular, g, H = convergence_derivatives(
        fc, x, f.scale_mask, check=check_conv, derivs=None if grad is None else derivs, fx=fmin, order=order
    )
    if grad is not None and check_conv:
        free = ~(f.scale_mask & (x <= f.lower)) if singular else np.ones(len(x), bool)
        if singular and free.any():  # (the checks skip a singular fit: the free parameters' here)
            out = derivs(x)
            if out is not None:
                g_free, H_free = out[0], out[1][np.ix_(free, free)]
            else:
                sub = np.flatnonzero(free)

                def along(z: np.ndarray) -> float:
                    return fc(np.where(free, 0.0, x) + _embed(z, free))

                keep = None if order is None else np.searchsorted(sub, order[np.isin(order, sub)])
                H_free = convergence_derivatives(
                    along, x[free], np.zeros(len(sub), bool), fx=fmin, order=keep
                )[2]
                g_free = grad(x)
        elif g is not None and H is not None:
            g_free, H_free = (g if exact_hessian else grad(x)), H
        else:
            g_free, H_free = None, None
        if g_free is not None and H_free is not None:
            x, g_end, moved = newton_steps(grad, x, g_free, H_free, f.lower, f.upper, free=free)
            fmin = fc(x) if moved else fmin
            g = g_end if not singular else g
    elif not singular and g is not None and H is not None:
        x, fmin = newton_polish(fc, x, fmin, Checks(singular, True, [], g, H), f.lower, f.upper)
    return x, fmin, assess_convergence(singular, g, H, check=check_conv, singular_hint=hint)


def _exact_gradient(f: LMMObjective) -> bool:
    """Whether the fit's last steps have an exact gradient.

    Summed over the rows, it inverts the rest block: up to these sizes it costs a few
    evaluations (beyond, InstEval's would cost fifty: one step on the checks' differences
    instead). A whole system gives it from the statistics, rows or not
    (``Engine.exact_derivatives``). A penalized objective with priors (hmix.blme) has none.
    """
    lay = f.engine.layout
    small = lay.n * sum(t.k for t in lay.terms) <= 100_000 and lay.m <= 500
    return f.priors is None and (f.engine.exact_derivatives or (small and f.design.holds_rows))


def _embed(z: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The vector with z in the free positions and zeros elsewhere."""
    out = np.zeros(len(free))
    out[free] = z
    return out


def _gradient(f: LMMObjective, theta: np.ndarray) -> np.ndarray:
    """The gradient of the objective the optimizer minimized: the deviance's exactly, the
    penalty's (smooth, cheap) by central differences."""
    g = f.gradient(theta)
    if f.penalty is not None:
        h = 1e-6 * np.maximum(np.abs(theta), 1.0)
        g = g + np.array([(f.penalty(theta + e) - f.penalty(theta - e)) / (2 * e.max()) for e in np.diag(h)])
    return g


def fit_lmm(
    design: Design,
    *,
    REML: bool = True,
    check_conv: bool = True,
    data_name: str = "data",
    penalty: Penalty | None = None,
    priors: Priors | None = None,
    verbose: bool = False,
) -> LinearMixedModel:
    """Fit an LMM to a materialized design (``lmer`` after the formula; refits reuse it).

    With ``priors`` (``hmix.priors.resolve``) the fit is blme's penalized one (``hmix.blmer``).
    """
    if priors is not None:
        from .blme import PenalizedLMM

        f: LMMObjective = PenalizedLMM(design, REML, priors)
    else:
        f = LMMObjective(design, REML=REML, penalty=penalty)
    hint = _LMER_HINT if priors is None and penalty is None else ""
    x, optsum, singular, converged = optimize_lmm(
        f, check_conv=check_conv, singular_hint=hint, verbose=verbose
    )
    with blas_threads(f):
        return lmm_model(f, x, optsum, singular=singular, converged=converged, data_name=data_name)


def lmm_model(
    f: LMMObjective, x: np.ndarray, optsum: OptSummary, *, singular: bool, converged: bool, data_name: str
) -> LinearMixedModel:
    """The fitted model at the optimizer's ``x`` (theta; and sigma where a prior keeps it from
    profiling): beta, sigma and u from the factor there."""
    theta, sigma, fac = f.estimates(x)
    objective, penalty = f.criterion(x, fac)
    d = f.design
    return LinearMixedModel(
        formula=d.formula.text,
        design=d,
        theta=np.array(theta, dtype=float),
        beta=fac.beta.copy(),
        u=tuple(f.engine.to_lme4(fac.u_engine)),
        sigma=float(sigma),
        objective=float(objective),
        optsum=optsum,
        singular=singular,
        converged=converged,
        factor=fac,
        REML=f.REML,
        devfun=f,
        data_name=data_name,
        priors=f.priors,
        penalty=float(penalty),
    )


class LmmRefitter:
    """Refits of an LMM to new responses on the same design, reusing its engine's symbolic
    phase; each starts at the model's theta (the parametric bootstrap)."""

    def __init__(self, model: LinearMixedModel):
        self.model = model
        if model.priors is not None:  # (a penalized fit: its refits keep the priors)
            from .blme import PenalizedLMM

            self.f: LMMObjective = PenalizedLMM(model.design, model.REML, model.priors)
        else:
            self.f = LMMObjective(model.design, REML=model.REML)

    def __call__(self, y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, bool]:
        """theta, sigma, beta and the singular flag of the fit to response ``y``."""
        self.f.set_response(y)
        start = self.f.params_at(self.model.theta, self.model.sigma)
        x, _, singular, _ = optimize_lmm(self.f, start, quiet=True)
        theta, sigma, fac = self.f.estimates(x)
        return theta, sigma, fac.beta, singular


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
    zi_formula: str | None = None,
    vcov_method: str = "hessian",
    check_conv: bool = True,
    check_nobs_vs_nre: str = "stop",
    max_theta: int | None = 100,
) -> GeneralizedLinearMixedModel:
    """Fit a generalized linear mixed model, as lme4's ``glmer`` (and glmmTMB's families) does.

    Parameters
    ----------
    formula : str
        lme4 formula; a binomial response may be 0/1 (numbers or booleans), a two-level factor,
        ``cbind(successes, failures)``, or a proportion with ``weights=`` the number of trials.
    data : pandas.DataFrame or dask.dataframe.DataFrame
        Never modified. A Dask DataFrame's rows stay in its cluster (``hmix.dask_glmm``; lme4's
        families, without zero-inflation).
    family : {"binomial", "poisson", "negative_binomial", "gamma"} or Family
        The negative binomial (NB2, variance mu + mu^2/theta) and the Gamma estimate their
        dispersion (theta; phi) by maximum likelihood with the other parameters, and use the
        exact Laplace approximation (the observed information), as glmmTMB; fix theta or phi
        with a family object (``hmix.NegativeBinomial(theta=2)``, ``hmix.Gamma("log", phi=0.5)``).
    link : str, optional
        ``"logit"`` (default), ``"probit"`` or ``"cloglog"`` for binomial; ``"log"`` for Poisson
        and the negative binomial; ``"inverse"`` (default), ``"log"`` or ``"identity"`` for Gamma.
    nAGQ : int, default 1
        0: optimize theta only, with beta from PIRLS (fast); 1: Laplace approximation over theta
        and beta; > 1: adaptive Gauss-Hermite quadrature with that many nodes (one scalar
        random-effects term only).
    weights, offset : str or array-like, optional
        Prior weights (binomial: trials) and an offset (adds to ``offset(...)`` terms).
    zi_formula : str, optional
        Zero-inflation for Poisson and negative binomial counts, as glmmTMB's ``ziformula``: the
        logit of the probability of a structural zero, ``"~ 1"`` or with fixed-effect
        covariates (``"~ x"``).
    vcov_method : {"hessian", "pirls"}
        Covariance of beta from the finite-difference Hessian of the deviance over (theta, beta),
        as lme4 does by default, or from the PIRLS weights alone (cheaper, a few percent off).
    check_conv : bool, default True
        Run lme4's gradient and Hessian checks at the optimum.
    check_nobs_vs_nre, max_theta
        As ``lmer``'s (a GLMM's term is refused with more random effects than observations).

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
    if is_dask_frame(data):
        from . import dask_glmm

        fam, nAGQ, check_conv = glmm_options(family, link, nAGQ, vcov_method, check_conv)
        if zi_formula is not None or fam.free_dispersion or fam.observed_laplace:
            raise DataError(
                f"a Dask DataFrame is fitted with lme4's families (binomial, Poisson) without "
                f"zero-inflation; for {fam.name}{' with zi_formula' if zi_formula else ''}, "
                "fit a pandas DataFrame (ddf.compute())"
            )
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
            max_theta=max_theta,
        )
    design, fam, nAGQ, check_conv = glmm_arguments(
        formula, data, family, link, nAGQ, weights, offset, vcov_method, check_conv
    )
    _check_nobs(design, check_nobs_vs_nre, glmm=True)
    check_size(design, max_theta)
    zi = None if zi_formula is None else ZeroInflation.build(zi_formula, data, design, fam)
    return fit_glmm(
        design,
        fam,
        nAGQ=nAGQ,
        vcov_method=vcov_method,
        check_conv=check_conv,
        data_name=_data_name(data),
        zi=zi,
    )


def glmm_arguments(
    formula: str,
    data: pd.DataFrame,
    family: str | Family,
    link: str | None,
    nAGQ: int,
    weights: ArrayLike | None,
    offset: ArrayLike | None,
    vcov_method: str,
    check_conv: bool,
) -> tuple[Design, Family, int, bool]:
    """glmer's (and bglmer's) arguments checked, and the design: (design, family, nAGQ, check_conv)."""
    fam, nAGQ, check_conv = glmm_options(family, link, nAGQ, vcov_method, check_conv)
    design = build_design(formula, data, weights=weights, offset=offset, binary_ok=fam.name == "binomial")
    return design, fam, nAGQ, check_conv


def glmm_options(
    family: str | Family, link: str | None, nAGQ: int, vcov_method: str, check_conv: bool
) -> tuple[Family, int, bool]:
    """glmer's options checked: (family, nAGQ, check_conv)."""
    fam = get_family(family, link)
    nAGQ = whole_number(nAGQ, "nAGQ", minimum=0)
    check_conv = check_flag(check_conv, "check_conv")
    if vcov_method not in ("hessian", "pirls"):
        raise DataError(f"vcov_method must be 'hessian' or 'pirls', not {vcov_method!r}")
    return fam, nAGQ, check_conv


def glmm_start(design: Design, family: Family, zi: ZeroInflation | None) -> tuple[np.ndarray, np.ndarray]:
    """Starting fixed effects (the GLM's, lme4's start) and extras: the log dispersion from the
    GLM's means (moments), the zero-inflation coefficients at 0 (glmmTMB's start)."""
    fam = family.with_dispersion(1.0) if family.free_dispersion else family
    beta = glm_start(design, fam)
    extra = []
    if family.free_dispersion:
        wt = np.ones(design.n) if design.weights is None else design.weights
        off = 0.0 if design.offset is None else design.offset
        mu = fam.linkinv(design.X @ beta + off)
        extra.append(np.log(family.dispersion_start(design.y, mu, wt)))
    if zi is not None:
        extra.extend([0.0] * zi.X.shape[1])
    return beta, np.array(extra, dtype=float)


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
    zi: ZeroInflation | None = None,
    priors: Priors | None = None,
    objective: GLMMObjective | None = None,
    beta0: np.ndarray | None = None,
) -> GeneralizedLinearMixedModel:
    """Fit a GLMM to a materialized design (``glmer`` after the formula; refits reuse it).

    ``penalty`` (a prior's -2 log-density over (theta, beta), with its gradient) is added to the
    objective the optimizer minimizes; the model's ``objective`` is the deviance without it.
    ``priors`` (``hmix.priors.resolve``) give that penalty and are recorded in the model, with the
    penalty's value (``hmix.bglmer``). ``objective`` and ``beta0``: an objective whose rows are
    elsewhere, checked by its maker, and its starting fixed effects (``hmix.dask_glmm``). The
    stages and the checks work on scaled parameters (``Scaled``). BLAS runs on one thread
    meanwhile (see ``hmix._threads``).
    """
    if objective is None:
        check_glmm(design, family)
    if nAGQ == 0 and (family.free_dispersion or zi is not None):
        raise DataError(
            "nAGQ=0 optimizes theta alone; a dispersion or zero-inflation part is estimated with "
            "the Laplace approximation: use nAGQ=1"
        )
    if priors is not None:
        if nAGQ == 0 and priors.fixef is not None:
            raise DataError(
                "a fixed-effects prior needs nAGQ >= 1: with nAGQ = 0 the fixed effects come out of "
                "PIRLS, which the prior does not enter; use nAGQ=1 or drop fixef_prior"
            )
        penalty = priors.glmm_penalty(ThetaMap.of(design.terms))
    hint = _GLMER_HINT if penalty is None else ""
    with one_blas_thread():
        if objective is None:
            obj = GLMMObjective(design, family, nAGQ, pirls, penalty, None if zi is None else zi.X)
            beta0, extra0 = glmm_start(design, family, zi)
        else:
            obj, extra0 = objective, np.zeros(0)
            assert beta0 is not None
        obj.start(beta0)
        obj.set_extra(extra0)
        sc = Scaled(obj)
        if obj.nextra:
            extra0 = start_extras(sc, extra0)
        theta, state, optsum, counted = stage_theta(sc)
        stage1 = optsum
        beta = state.beta
        derivs = None
        if nAGQ == 0:
            params, diag = theta, obj.scale_mask
        else:
            x0 = np.concatenate([theta, beta, extra0])
            diag = np.concatenate([obj.scale_mask, np.zeros(design.p + obj.nextra, bool)])
            newton = stage_newton(sc, x0, state.factor) if nAGQ == 1 and obj.exact_gradient else None
            if newton is not None and newton[1].return_code > 0:
                params, opt2, counted, derivs = newton
            else:
                params, opt2, counted = stage_bobyqa(sc, x0 if newton is None else newton[0], theta)
                if newton is not None:  # (the evaluations of the stage that gave up count too)
                    stages = ("theta", "quasi-Newton", "BOBYQA")
                    opt2 = replace(opt2, n_evals=opt2.n_evals + newton[1].n_evals, stages=stages)
            optsum = replace(opt2, initial=x0, n_evals=opt2.n_evals + optsum.n_evals)
        # the modes at the optimum, if the quasi-Newton stage left them (the Hessian moves on from there)
        at_optimum = obj.cached_state(params) if nAGQ == 1 else None
        n_before = counted.n  # type: ignore[attr-defined]
        S = sc.scale[: len(params)]
        singular, g, H = convergence_derivatives(
            counted,
            params * S,
            diag,
            check=check_conv,
            hessian=nAGQ > 0 and vcov_method == "hessian",
            derivs=derivs,
        )
        checks = assess_convergence(singular, g, H, check=check_conv, singular_hint=hint)
        singular, converged, messages, hess = (
            checks.singular,
            checks.converged,
            checks.messages,
            checks.hessian,
        )
        if derivs is None and nAGQ > 0:
            # BOBYQA stops where its trust region sees no change of 1e-12: one Newton step on the
            # checks' differences places the optimum (grouseticks' NB: 6e-9 -> 1e-11 in -2 log L)
            x1, _ = newton_polish(counted, params * S, counted(params * S), checks, sc.lower, sc.upper)
            params = x1 / S
        if hess is not None:
            hess = hess * np.outer(S, S)  # (the Hessian over the parameters themselves)
        optsum = replace(
            optsum,
            n_evals=optsum.n_evals + counted.n - n_before,  # type: ignore[attr-defined]
            warnings=tuple(messages),
            pirls=obj.settings,
            pirls_theta=stage1.pirls_theta,
        )
        theta, beta, extra = obj.split(params)
        obj.set_extra(extra)
        if nAGQ == 0:
            beta = obj.pirls(theta, None).beta
        if at_optimum is not None:
            final = at_optimum
            obj.keep_modes(obj.thetamap.lam(theta), [v.copy() for v in final.u], final.w)
        else:
            final = obj.pirls(theta, beta)
        if not final.converged:
            converged = False
            warnings.warn(
                f"PIRLS did not converge in {obj.settings.maxit} steps at the estimates: the conditional "
                "modes and the likelihood are approximate",
                ConvergenceWarning,
                stacklevel=user_stacklevel(),
            )
        value = obj.agq_value(theta, beta, final) if nAGQ > 1 else obj.laplace_value(final)
        if (
            obj.ndisp
            and isinstance(family, NegativeBinomial)
            and _no_overdispersion(final.mu, obj.bound_family.sigma)
        ):
            warnings.warn(
                f"the negative binomial's theta runs off to {obj.bound_family.sigma:.3g}: the counts show "
                "no overdispersion beyond the random effects; the Poisson model fits as well with a "
                "parameter less (compare them with hmix.compare)",
                HmixWarning,
                stacklevel=user_stacklevel(),
            )
        vcov, method, vcov_all = glmm_vcov(
            obj, theta, beta, final, hess if vcov_method == "hessian" else None
        )
    return GeneralizedLinearMixedModel(
        formula=design.formula.text,
        design=design,
        theta=np.array(theta, dtype=float),
        beta=np.array(beta, dtype=float),
        u=tuple(obj.layout.to_lme4([v.copy() for v in final.u])),
        objective=float(value),
        optsum=optsum,
        singular=singular,
        converged=converged,
        factor=final.factor,
        data_name=data_name,
        family=obj.bound_family,
        nAGQ=obj.nAGQ,
        vcov_method=method,
        vcov_beta=np.array(vcov, dtype=float),
        devfun=obj,
        sigma=obj.bound_family.sigma,
        zi=zi,
        zi_beta=None if zi is None else extra[obj.ndisp :].copy(),
        vcov_params=vcov_all,
        dispersion_estimated=bool(obj.ndisp),
        priors=priors,
        penalty=0.0 if penalty is None else float(penalty(np.concatenate([theta, beta]))[0]),
    )


class Scaled:
    """The GLMM objective over scaled parameters: theta for columns of Z of unit spread
    (``ThetaMap.scale``) and beta for columns of X of unit spread, so that a predictor's units
    move neither the optimizers' steps and tolerances nor the finite differences of the checks.
    Each method takes scaled parameters and returns what the objective's does at the unscaled
    ones (gradients in the scaled coordinates)."""

    def __init__(self, obj: GLMMObjective):
        self.obj = obj
        xs = obj.x_scale
        self.scale = np.concatenate([obj.theta_scale, xs, np.ones(obj.nextra)])
        # the log dispersion within [log 1e-8, log 1e8] (it runs off to infinity where a negative
        # binomial has no overdispersion), the rest free
        lo, hi = np.full(len(xs) + obj.nextra, -np.inf), np.full(len(xs) + obj.nextra, np.inf)
        if obj.ndisp:
            lo[len(xs)], hi[len(xs)] = -_LOG_DISP_BOUND, _LOG_DISP_BOUND
        self.lower = np.concatenate([obj.lower_theta, lo])
        self.upper = np.concatenate([obj.thetamap.upper, hi])
        self.theta_scale = obj.theta_scale

    def __call__(self, x: np.ndarray) -> float:
        return self.obj(x / self.scale[: len(x)])

    def value_and_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        S = self.scale[: len(x)]
        value, grad = self.obj.value_and_gradient(x / S)
        return value, grad / S

    def laplace_joint(self, phi: np.ndarray, settings: PirlsSettings) -> float:
        return self.obj.laplace_joint(phi / self.theta_scale, settings)

    def rectify(self, x: np.ndarray) -> np.ndarray:
        nth, s = self.obj.ntheta, self.theta_scale
        return np.concatenate([self.obj.thetamap.rectify(x[:nth] / s) * s, x[nth:]])


def start_extras(sc: Scaled, extra0: np.ndarray) -> np.ndarray:
    """The extras' start for the theta stage, which holds them: those that maximize the
    likelihood of the rows given the linear predictor of the joint PIRLS solution at theta's
    start (``conditional_extras``), where the Laplace deviance there is lower with them than with
    ``extra0`` (the GLM's moments and glmmTMB's zeros); else ``extra0``. The theta stage then
    optimizes theta for extras nearer their estimates, and the quasi-Newton stage, which moves
    everything, has less of the way to go (the negative binomial's random-effects variances and
    its dispersion trade off). Leaves the objective bound at the extras returned."""
    obj = sc.obj
    settings = obj.settings.loosened(_STAGE1_PIRLS_TOL, early_stop=True)
    phi0 = obj.scale_mask.astype(float)
    try:
        v0 = sc.laplace_joint(phi0, settings)
        st = obj.joint_state(phi0 / sc.theta_scale, settings)
        extra1 = conditional_extras(obj, st, extra0)
        obj.set_extra(extra1)
        v1 = sc.laplace_joint(phi0, settings)
    except (NotPositiveDefinite, np.linalg.LinAlgError, FloatingPointError):
        v0, v1, extra1 = 0.0, math.inf, extra0
    if v1 < v0:
        return extra1
    obj.set_extra(extra0)
    return extra0


def conditional_extras(obj: GLMMObjective, st: PirlsState, extra0: np.ndarray) -> np.ndarray:
    """The extras (a log dispersion, zero-inflation coefficients) that maximize log p(y | eta)
    with eta a PIRLS solution's (the modes held): a sum over the rows, without a factorization,
    by L-BFGS-B from ``extra0`` with the exact derivatives (``Observed.extra_derivatives``),
    the log dispersion within its bounds, the rest within +-_EXTRA_BOUND. Leaves the objective
    bound at the last extras it tried."""
    eta, mu = st.eta, st.mu
    k = obj.ndisp

    def fg(e: np.ndarray) -> tuple[float, np.ndarray]:
        obj.set_extra(e)
        value = obj.obs.deviance(mu) + obj.obs.constant
        rows = obj.obs.extra_derivatives(eta, bool(k))[:, 0, :]
        parts = [rows[:, :1].sum(axis=0)] if k else []
        if obj.zi is not None:
            parts.append(obj.zi.T @ rows[:, -1])
        return value, -2.0 * np.concatenate(parts)

    bounds = [(-_LOG_DISP_BOUND, _LOG_DISP_BOUND)] * k + [(-_EXTRA_BOUND, _EXTRA_BOUND)] * (obj.nextra - k)
    with np.errstate(all="ignore"):
        res = sopt.minimize(fg, extra0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 50})
    x = np.asarray(res.x, dtype=float)
    return x if np.isfinite(x).all() else np.asarray(extra0, dtype=float)


def stage_theta(sc: Scaled) -> tuple[np.ndarray, PirlsState, OptSummary, Callable[[np.ndarray], float]]:
    """Theta alone, beta from PIRLS over (beta, u) (lme4's nAGQ = 0; the first stage otherwise).

    With nAGQ = 1 it only has to bring theta near the optimum, so it stops early and its PIRLS
    stops at a looser tolerance. Starts at 1 on the diagonal of the scaled theta (lme4's start,
    for columns of unit spread). Returns theta, the PIRLS solution there (beta, and the factor
    the next stage's first Hessian starts from), what the optimizer did and the counted
    (scaled) objective.
    """
    obj, s = sc.obj, sc.theta_scale
    newton = obj.nAGQ == 1
    settings = obj.settings.loosened(_STAGE1_PIRLS_TOL, early_stop=True) if newton else obj.settings
    # a PIRLS call is a few factorizations and a few passes over the rows
    method = choose_method(obj.ntheta, 3 * (obj.engine_joint.work + 50 * obj.design.n))
    phi, _, opt, fc = minimize(
        lambda x: sc.laplace_joint(x, settings),
        obj.scale_mask.astype(float),
        obj.lower_theta,
        upper=obj.thetamap.upper,
        # (a variance snapped to an exact zero here would be a stationary point the next stage
        # cannot leave: the snapping waits for the last stage)
        diagonal=None if newton else obj.scale_mask,
        method=method,
        ftol_rel=_STAGE1_FTOL if newton else 1e-12,
    )
    theta = phi / s
    state = obj.joint_state(theta, settings)
    opt = replace(
        opt,
        initial=opt.initial / s,
        final=theta.copy(),
        stages=("theta",),
        pirls=obj.settings,
        pirls_theta=settings,
    )
    return theta, state, opt, fc


def stage_newton(
    sc: Scaled, x0: np.ndarray, factor: Factor
) -> tuple[
    np.ndarray, OptSummary, Callable[[np.ndarray], float], Callable[..., tuple[np.ndarray, np.ndarray] | None]
]:
    """BFGS over (theta, beta, extras) with the exact gradient of the Laplace deviance, theta and
    beta without bounds (the deviance is even in the sign of each column of Lambda, and a
    variance pinned at an exact zero would be a stationary point the gradient cannot leave); the
    optimum's theta is then rectified. ``factor`` is the joint PIRLS system's at x0 (the first
    Hessian's beta block). Returns the point, the summary (return code <= 0: it gave up, with its
    best point), the counted objective and the exact derivatives for the checks (both over
    scaled parameters)."""
    obj = sc.obj
    nth, p = obj.ntheta, obj.design.p
    S = sc.scale[: len(x0)]
    diag = np.concatenate([obj.scale_mask, np.zeros(len(x0) - nth, bool)])
    # a variance the first stage left at an exact zero is a stationary point of an objective
    # even in it: start just off it (the snapping at the end returns it there if it belongs)
    start = x0 * S
    start[diag & (start == 0)] = 0.01
    # theta and beta free; the extras within their bounds (a log dispersion within +-18)
    lower, upper = sc.lower.copy(), sc.upper.copy()
    lower[: nth + p], upper[: nth + p] = -np.inf, np.inf
    x, _, optsum, cg = minimize_newton(
        sc.value_and_gradient,
        start,
        lower,
        upper=upper,
        diagonal=diag,
        rectify=sc.rectify,
        start_hessian=_start_hessian(nth, factor, S[nth : nth + p]),
    )
    if optsum.return_code <= 0:
        x = sc.rectify(cg.best_x) if np.isfinite(cg.best_f) else x0 * S
    optsum = replace(optsum, initial=x0.copy(), final=x / S, stages=("theta", "quasi-Newton"))
    return x / S, optsum, cg, _exact_derivs(cg.fg, diag)


def stage_bobyqa(
    sc: Scaled, x0: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, OptSummary, Callable[[np.ndarray], float]]:
    """BOBYQA over (theta, beta) (nAGQ > 1, and where the quasi-Newton stage gave up), with a
    restart from small steps: BOBYQA's first run can stop early on this objective."""
    obj = sc.obj
    p, ne = obj.design.p, obj.nextra
    S = sc.scale
    lower, upper = sc.lower, sc.upper
    diag = np.concatenate([obj.scale_mask, np.zeros(p + ne, bool)])
    se0 = np.sqrt(np.maximum(np.diag(obj.engine_joint.factor(obj.thetamap.lam(theta)).xtx_inv()), 1e-12))
    # (the extras: a log dispersion and logits, of order 1)
    step = np.concatenate(
        [np.full(obj.ntheta, 0.1), np.minimum(se0 * S[obj.ntheta : obj.ntheta + p], 1.0), np.full(ne, 0.25)]
    )
    x, _, opt1, _ = minimize(
        sc, x0 * S, lower, upper=upper, diagonal=diag, initial_step=step, method="NLOPT_LN_BOBYQA"
    )
    x, _, opt2, counted = minimize(
        sc, x, lower, upper=upper, diagonal=diag, initial_step=step / 100, method="NLOPT_LN_BOBYQA"
    )
    opt = replace(
        opt2, initial=x0.copy(), final=x / S, n_evals=opt1.n_evals + opt2.n_evals, stages=("theta", "BOBYQA")
    )
    return x / S, opt, counted


def glmm_vcov(
    obj: GLMMObjective, theta: np.ndarray, beta: np.ndarray, final: PirlsState, hess: np.ndarray | None
) -> tuple[np.ndarray, str, np.ndarray | None]:
    """The covariance of beta: from the Hessian of the deviance over all the parameters when
    given (lme4's default) and positive definite, else from the PIRLS weights; which it is; and
    the covariance of all the parameters (theta, beta, the extras) from the Hessian, or None."""
    if hess is not None and obj.nAGQ > 0:
        try:
            Vh = np.linalg.inv(hess)
            if np.linalg.eigvalsh(Vh).min() > 0:
                k, p = obj.ntheta, obj.design.p
                return 2 * Vh[k : k + p, k : k + p], "hessian", 2 * Vh
        except np.linalg.LinAlgError:
            pass
    # (the weights' covariance only where it is the answer: it takes a factorization with X)
    vcov_pirls = obj.joint_factor(theta, final.eta, beta).xtx_inv()
    if hess is None or obj.nAGQ == 0:
        return vcov_pirls, "pirls", None
    warnings.warn(
        "the Hessian of the deviance is not positive definite: standard errors come from the "
        "PIRLS weights instead",
        HmixWarning,
        stacklevel=user_stacklevel(),
    )
    return vcov_pirls, "pirls", None


def _exact_derivs(
    fg: Callable[[np.ndarray], tuple[float, np.ndarray | None]], diagonal: np.ndarray
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Gradient and Hessian at x from the exact gradient (None: fall back to differences of values)."""

    def derivs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        _, g = fg(x)
        H = None if g is None else hessian_from_gradient(fg, x, g, central=diagonal & (x == 0))
        return None if g is None or H is None else (g, H)

    return derivs


def _start_hessian(ntheta: int, factor: Factor, beta_scale: np.ndarray) -> Callable[..., np.ndarray | None]:
    """The quasi-Newton stage's first Hessian, from the gradient differenced along theta and the
    extras alone.

    Its beta-by-beta block is PIRLS's own curvature at the stage-1 solution, 2 L_XX L_XX' (the
    Laplace deviance is -2 log-likelihood): the exact one differs only by how the modes move
    with beta, which BFGS then corrects. This saves one gradient per fixed effect at the start;
    the final Hessian (vcov, checks) is still differenced in full. (Over scaled parameters:
    beta's block is divided by the scales of X's columns.)
    """
    xtx_inv = factor.xtx_inv() * np.outer(beta_scale, beta_scale)
    p = len(xtx_inv)

    def start(x: np.ndarray, g: np.ndarray, fg: Callable) -> np.ndarray | None:
        n = len(x)
        fixed = np.zeros(n, bool)
        fixed[ntheta : ntheta + p] = True
        others = np.flatnonzero(~fixed)
        cols = hessian_from_gradient(fg, x, g, columns=others)
        if cols is None:
            return None
        H = np.zeros((n, n))
        H[:, others] = cols
        H[np.ix_(fixed, others)] = cols[fixed]
        H[np.ix_(others, fixed)] = cols[fixed].T
        H[np.ix_(others, others)] = 0.5 * (cols[~fixed] + cols[~fixed].T)
        try:
            H[np.ix_(fixed, fixed)] = 2.0 * np.linalg.inv(xtx_inv)
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
            return fit_lmm(
                design, REML=model.REML, check_conv=check_conv, data_name=model.data_name, priors=model.priors
            )
        if isinstance(model, GeneralizedLinearMixedModel):
            # (the family as it was given: an estimated dispersion is estimated again)
            family = model.devfun.family if model.devfun is not None else model.family
            return fit_glmm(
                design,
                family,
                nAGQ=model.nAGQ,
                vcov_method="pirls",
                check_conv=check_conv,
                data_name=model.data_name,
                zi=None if model.zi is None else model.zi.for_design(design),
                priors=model.priors,
            )
    raise HmixError(f"cannot refit a {type(model).__name__}")
