"""Generalized linear mixed models: PIRLS, the Laplace approximation, adaptive Gauss-Hermite.

The GLMM holds the linear engine (:class:`~hmix.blocks.BlockedPLS`) and reuses it: each PIRLS
step hands it the working response and weights, and its blocked Cholesky factor gives the
conditional modes and the log-determinant of the Laplace approximation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .blocks import BlockedPLS, Factor
from .design import ArrayLike, Design, build_design
from .errors import ConvergenceWarning, DataError, HmixWarning
from .families import Family, get_family
from .optimize import OptSummary, check_convergence, choose_method, minimize

__all__ = ["glmer", "GLMMObjective"]

_PIRLS_MAXIT = 50
_PIRLS_TOL = 1e-12  # relative change of the penalized deviance
_HALVINGS = 12


@dataclass
class PirlsState:
    """The conditional modes at (theta, beta) and what the objective needs from them."""

    u: list[np.ndarray]  # spherical random effects per term, engine order
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    factor: Factor
    converged: bool


class GLMMObjective:
    """The Laplace (or adaptive Gauss-Hermite) deviance of a GLMM, -2 log-likelihood.

    ``laplace_fixed(theta, beta)`` runs PIRLS over u with beta fixed (nAGQ >= 1);
    ``laplace_joint(theta)`` runs PIRLS over beta and u together (nAGQ = 0). The last conditional
    modes warm-start the next evaluation.

    Parameters
    ----------
    design : Design
    family : Family
    nAGQ : int
    """

    def __init__(self, design: Design, family: Family, nAGQ: int = 1):
        self.design = design
        self.family = family
        self.nAGQ = int(nAGQ)
        n = design.n
        self.y = design.y
        self.wt = np.ones(n) if design.weights is None else design.weights
        self.off = np.zeros(n) if design.offset is None else design.offset
        self.pls_u = BlockedPLS(design.terms, np.zeros((n, 0)), np.zeros(n), np.ones(n))
        self._pls_joint: BlockedPLS | None = None
        self._beta_joint = np.zeros(design.p)
        self._u = [np.zeros(t.q) for t in self.pls_u.terms]
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
            self._pls_joint = BlockedPLS(self.design.terms, self.design.X, np.zeros(n), np.ones(n))
        return self._pls_joint

    def _zlu(self, theta: np.ndarray, u: list[np.ndarray], pls: BlockedPLS) -> np.ndarray:
        """Z Lambda u without forming Z."""
        out = np.zeros(self.design.n)
        for t, sl, ut in zip(pls.terms, pls.theta_slices, u):
            T = t.tmat(theta[sl])
            out += t.contribution((ut.reshape(t.nlevels, t.k) @ T.T).ravel())
        return out

    def _working_weights(self, mu: np.ndarray, mueta: np.ndarray) -> np.ndarray:
        """PIRLS weights, floored at 1e-10 of the largest so that fitted probabilities pinned at
        0 or 1 (separation) leave the weighted cross-products positive definite."""
        w = self.wt * mueta**2 / self.family.variance(mu)
        return np.maximum(w, 1e-10 * w.max())

    def _pdev(self, eta: np.ndarray, u: list[np.ndarray]) -> float:
        mu = self.family.linkinv(eta)
        return float(self.family.dev_resid(self.y, mu, self.wt).sum() + sum(float(v @ v) for v in u))

    def pirls(self, theta: np.ndarray, beta: np.ndarray | None) -> PirlsState:
        """Penalized iteratively reweighted least squares for the conditional modes.

        With ``beta`` given, only u moves (nAGQ >= 1); with ``beta=None``, beta and u move together
        (nAGQ = 0). Each step is halved while the penalized deviance rises.
        """
        joint = beta is None
        pls = self.pls_joint if joint else self.pls_u
        X = self.design.X
        b = self._beta_joint if joint else np.asarray(beta, dtype=float)
        u = [v.copy() for v in self._u]
        eta = self.off + X @ b + self._zlu(theta, u, pls)
        pdev = self._pdev(eta, u)
        fac = self.reweight(pls, theta, eta, b, joint)
        converged = False
        for _ in range(_PIRLS_MAXIT):
            u_new = fac.u_engine
            b_new = fac.beta if joint else b
            step = 1.0
            for _ in range(_HALVINGS):
                u_try = [uo + step * (un - uo) for uo, un in zip(u, u_new)]
                b_try = b + step * (b_new - b)
                eta_try = self.off + X @ b_try + self._zlu(theta, u_try, pls)
                pdev_try = self._pdev(eta_try, u_try)
                if pdev_try <= pdev * (1 + 1e-14) + 1e-12:
                    break
                step /= 2
            else:
                break
            change = abs(pdev - pdev_try)
            u, b, eta, pdev = u_try, b_try, eta_try, pdev_try
            # the factor at the new mode's weights: the next step's system, and at convergence
            # the Laplace log-determinant
            fac = self.reweight(pls, theta, eta, b, joint)
            if change <= _PIRLS_TOL * (abs(pdev) + 0.1):
                converged = True
                break
        self._u = u
        if joint:
            self._beta_joint = b
        mu = self.family.linkinv(eta)
        return PirlsState(u=u, beta=b, eta=eta, mu=mu, factor=fac, converged=converged)

    def reweight(
        self, pls: BlockedPLS, theta: np.ndarray, eta: np.ndarray, beta: np.ndarray, joint: bool
    ) -> Factor:
        """Hand the engine the working response and weights at eta; factor at theta.

        ``joint``: beta moves with u (the system has X); otherwise X beta joins the offset.
        """
        fam = self.family
        mu = fam.linkinv(eta)
        mueta = fam.mu_eta(eta)
        zwork = eta - self.off + (self.y - mu) / mueta
        w = self._working_weights(mu, mueta)
        if joint:
            pls.set_data(self.design.X, zwork, w)
        else:
            pls.set_data(pls_x0(pls), zwork - self.design.X @ beta, w)
        return pls.factor(theta)

    def start(self, beta: np.ndarray) -> None:
        """Set the starting fixed effects for the joint PIRLS and reset the modes."""
        self._beta_joint = np.asarray(beta, dtype=float).copy()
        self._u = [np.zeros(t.q) for t in self.pls_u.terms]

    def laplace_value(self, st: PirlsState) -> float:
        """-2 log-likelihood by the Laplace approximation at a PIRLS solution."""
        m2ll = self.family.minus2loglik(self.y, st.mu, self.wt).sum()
        return float(m2ll + sum(float(v @ v) for v in st.u) + st.factor.logdet_z)

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


def _glm_start(design: Design, family: Family) -> np.ndarray:
    """Fixed effects of the GLM without random effects (statsmodels), lme4's starting values."""
    from statsmodels.genmod.generalized_linear_model import GLM

    wt = np.ones(design.n) if design.weights is None else design.weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        glm = GLM(
            design.y, design.X, family=family.statsmodels_family(), offset=design.offset, var_weights=wt
        )
        try:
            beta = np.asarray(glm.fit().params, dtype=float)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            beta = np.full(design.p, np.nan)  # extreme data: PIRLS starts from zero instead
    sep = [w for w in caught if "separation" in str(w.message).lower()]
    extreme = family.name == "binomial" and np.abs(np.nan_to_num(design.X @ beta)).max(initial=0) > 15
    if sep or extreme:
        warnings.warn(
            "complete or quasi-complete separation: some fixed effects predict the response "
            "perfectly, so their estimates and standard errors are unreliable (very large); "
            "consider removing or merging the predictor levels involved",
            HmixWarning,
            stacklevel=4,
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


def fit_glmm(
    design: Design,
    fam: Family,
    *,
    nAGQ: int = 1,
    vcov_method: str = "hessian",
    check_conv: bool = True,
    data_name: str = "data",
) -> Any:
    """Fit a GLMM to a materialized design (``glmer`` after the formula; refits reuse it)."""
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
    theta, _, opt1, fc = minimize(
        obj.laplace_joint, theta0, obj.lower_theta, diagonal=obj.diagonal, method=method
    )
    st = obj.pirls(theta, None)
    beta = st.beta
    if nAGQ == 0:
        params, diag, optsum, counted = theta, obj.diagonal, opt1, fc
    else:
        se0 = np.sqrt(np.maximum(np.diag(obj.pls_joint.factor(theta).xtx_inv()), 1e-12))
        x0 = np.concatenate([theta, beta])
        lower = np.concatenate([obj.lower_theta, np.full(design.p, -np.inf)])
        diag = np.concatenate([obj.diagonal, np.zeros(design.p, bool)])
        step = np.concatenate([np.full(obj.ntheta, 0.1), np.minimum(se0, 1.0)])
        params, _, optsum, counted = minimize(
            obj, x0, lower, diagonal=diag, initial_step=step, method="NLOPT_LN_BOBYQA"
        )
        # a restart with small steps: BOBYQA's first run can stop early on this objective
        params, _, opt3, counted = minimize(
            obj, params, lower, diagonal=diag, initial_step=step / 100, method="NLOPT_LN_BOBYQA"
        )
        evals = optsum.n_evals + opt1.n_evals + opt3.n_evals
        optsum = OptSummary(**{**opt3.__dict__, "initial": x0, "n_evals": evals})
    n_before = counted.n
    singular, converged, messages, hess = check_convergence(
        counted, params, diag, check=check_conv, hessian=nAGQ > 0 and vcov_method == "hessian"
    )
    n_evals = optsum.n_evals + counted.n - n_before
    optsum = OptSummary(**{**optsum.__dict__, "n_evals": n_evals, "warnings": tuple(messages)})
    theta = params[: obj.ntheta]
    beta = params[obj.ntheta :] if nAGQ > 0 else obj.pirls(theta, None).beta
    final = obj.pirls(theta, beta)
    if not final.converged:
        warnings.warn(
            f"PIRLS did not converge in {_PIRLS_MAXIT} steps at the estimates: the conditional "
            "modes and the likelihood are approximate",
            ConvergenceWarning,
            stacklevel=2,
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
                stacklevel=2,
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
