"""The immutable fitted model: estimates and the accessors users know from lme4."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .blocks import Factor
from .design import Design
from .families import Family
from .glmm import GLMMObjective
from .lmm import LMMObjective
from .optimize import OptSummary

__all__ = ["MixedModel", "LinearMixedModel", "GeneralizedLinearMixedModel"]


@dataclass(frozen=True, eq=False, repr=False)
class MixedModel:
    """What every fitted mixed model has: the design, theta, beta and the fit's bookkeeping.

    Subclasses set ``sigma`` (1 for families without a scale) and the objective's meaning.
    """

    formula: str
    design: Design
    theta: np.ndarray
    beta: np.ndarray
    u: tuple[np.ndarray, ...]
    sigma: float
    objective: float
    optsum: OptSummary
    singular: bool
    converged: bool
    factor: Factor = field(repr=False)
    data_name: str = "data"

    # ----- sizes -------------------------------------------------------------------------
    @property
    def nobs(self) -> int:
        """Number of observations used in the fit."""
        return self.design.n

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor."""
        return {t.group: t.nlevels for t in self.design.terms}

    @property
    def n_dropped(self) -> int:
        """Rows of the data left out for missing values."""
        return self.design.n_dropped

    @property
    def theta_names(self) -> list[str]:
        """lme4's names of the elements of theta."""
        return [n for t in self.design.terms for n in t.theta_names()]

    # ----- fixed effects -----------------------------------------------------------------
    @cached_property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates, indexed by column name."""
        return pd.Series(self.beta, index=list(self.design.fixef_names), name="fixef")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effects estimates."""
        names = list(self.design.fixef_names)
        return pd.DataFrame(self._vcov_array(), index=names, columns=names)

    def _vcov_array(self) -> np.ndarray:
        return self.sigma**2 * self.factor.xtx_inv()

    @cached_property
    def std_errors(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef.index, name="std_error")

    # ----- random effects ----------------------------------------------------------------
    @cached_property
    def _b(self) -> list[np.ndarray]:
        """b = Lambda u per term (lme4's order)."""
        out, start = [], 0
        for t, u in zip(self.design.terms, self.u):
            T = t.tmat(self.theta[start : start + t.ntheta])
            start += t.ntheta
            out.append((u.reshape(t.nlevels, t.k) @ T.T).ravel())
        return out

    @cached_property
    def _cond_var(self) -> list[np.ndarray]:
        cv = self.factor.pls.to_lme4(self.factor.cond_var_engine())
        return [self.sigma**2 * v for v in cv]

    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects.

        Returns
        -------
        dict
            Grouping factor name -> DataFrame with one row per level and one column per term
            (terms of the same factor, such as the parts of ``(x || g)``, side by side).
        """
        out: dict[str, pd.DataFrame] = {}
        for t, b in zip(self.design.terms, self._b):
            df = pd.DataFrame(b.reshape(t.nlevels, t.k), index=t.levels, columns=list(t.names))
            df.index.name = t.group
            out[t.group] = pd.concat([out[t.group], df], axis=1) if t.group in out else df
        return out

    def ranef_table(self) -> pd.DataFrame:
        """Conditional modes with their conditional standard deviations, one row per effect.

        Columns ``group``, ``term``, ``level``, ``condval`` (conditional mode) and ``condsd``
        (conditional SD), as lme4's ``as.data.frame(ranef(m, condVar = TRUE))``. For LMMs the
        SDs are conditional on the estimates of beta, theta and sigma, as in lme4.
        """
        frames = []
        for t, b, v in zip(self.design.terms, self._b, self._cond_var):
            sd = np.sqrt(np.einsum("jaa->ja", v))
            bb = b.reshape(t.nlevels, t.k)
            for a, name in enumerate(t.names):
                frames.append(
                    pd.DataFrame(
                        {
                            "group": t.group,
                            "term": name,
                            "level": t.levels,
                            "condval": bb[:, a],
                            "condsd": sd[:, a],
                        }
                    )
                )
        return pd.concat(frames, ignore_index=True)

    def cond_cov(self) -> dict[str, np.ndarray]:
        """Conditional covariance matrices of the random effects: group -> (levels, k, k) array."""
        out: dict[str, np.ndarray] = {}
        for t, v in zip(self.design.terms, self._cond_var):
            key = t.group if t.group not in out else f"{t.group}.{len(out)}"
            out[key] = v
        return out

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """Variance components, tidy: one row per variance, covariance and the residual.

        Columns ``group``, ``var1``, ``var2`` (None for variances), ``vcov`` (variance or
        covariance) and ``sdcor`` (standard deviation or correlation), as lme4's
        ``as.data.frame(VarCorr(m))``.
        """
        rows: list[tuple[str, str | None, str | None, float, float]] = []
        start = 0
        for t in self.design.terms:
            T = t.tmat(self.theta[start : start + t.ntheta])
            start += t.ntheta
            S = self.sigma**2 * (T @ T.T)
            sd = np.sqrt(np.diag(S))
            for a in range(t.k):
                rows.append((t.group, t.names[a], None, S[a, a], sd[a]))
            for a in range(t.k):
                for c in range(a + 1, t.k):
                    denom = sd[a] * sd[c]
                    rows.append(
                        (t.group, t.names[a], t.names[c], S[c, a], S[c, a] / denom if denom > 0 else np.nan)
                    )
        if self._has_scale:
            rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])

    _has_scale = True

    # ----- fitted values and residuals -----------------------------------------------------
    @cached_property
    def _eta(self) -> np.ndarray:
        d = self.design
        eta = d.X @ self.beta
        for t, b in zip(d.terms, self._b):
            eta = eta + t.contribution(b)
        if d.offset is not None:
            eta = eta + d.offset
        return eta

    @property
    def fitted(self) -> pd.Series:
        """Fitted values (with the conditional modes of the random effects)."""
        return pd.Series(self._eta, index=self.design.index, name="fitted")

    def residuals(self, type: str = "response") -> pd.Series:
        """Residuals (the kinds depend on the model class)."""
        raise NotImplementedError

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        *,
        random: bool = True,
        new_levels: str = "population",
        type: str = "response",
        offset: Any = None,
    ) -> pd.Series:
        """Predictions for the fitted rows or for new data.

        Parameters
        ----------
        newdata : pandas.DataFrame, optional
            Coded as the fitting data were (the formulaic ModelSpecs kept at fit time). A factor
            level of a fixed effect that the fit has not seen is an error; rows with a missing
            value in a variable the formula uses predict NaN.
        random : bool, default True
            Include the conditional modes of the random effects (lme4's ``re.form = NULL``);
            ``False`` gives population-level predictions (``re.form = NA``).
        new_levels : {"population", "nan", "error"}
            For a grouping level the fit has not seen: its random effect is zero (lme4's
            ``allow.new.levels = TRUE``), the prediction is NaN, or an error is raised.
        type : {"response", "link"}
            For GLMMs: the mean (probabilities, rates) or the linear predictor.
        offset : str or array-like, optional
            An offset for the new rows, like ``offset=`` at fit time (``offset(...)`` terms in
            the formula are evaluated on ``newdata``).

        Returns
        -------
        pandas.Series
            Indexed like ``newdata`` (or the fitted rows).

        Examples
        --------
        >>> import hmix, pandas as pd
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> new = pd.DataFrame({"Days": [0, 5], "Subject": ["308", "NEW"]})
        >>> m.predict(new).round(1).tolist()
        [253.7, 303.7]
        """
        from .predict import predict

        return predict(self, newdata, random=random, new_levels=new_levels, type=type, offset=offset)

    def coef_table(self) -> pd.DataFrame:
        """Fixed effects with standard errors and test statistics."""
        raise NotImplementedError

    # ----- likelihood-based summaries ------------------------------------------------------
    @property
    def npar(self) -> int:
        """Number of estimated parameters (fixed effects, theta, and sigma where there is one)."""
        return self.design.p + len(self.theta) + int(self._has_scale)

    @property
    def loglik(self) -> float:
        """Log-likelihood (for REML fits: of the REML criterion, as lme4 reports)."""
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        """Akaike's information criterion, -2 loglik + 2 npar."""
        return self.objective + 2 * self.npar

    @property
    def bic(self) -> float:
        """Bayesian information criterion, -2 loglik + log(nobs) npar."""
        return self.objective + np.log(self.nobs) * self.npar

    @property
    def df_residual(self) -> int:
        """nobs - npar, as lme4's df.resid."""
        return self.nobs - self.npar


@dataclass(frozen=True, eq=False, repr=False)
class LinearMixedModel(MixedModel):
    """A fitted linear mixed model (lme4's ``lmerMod``), returned by :func:`hmix.lmer`.

    Immutable: every attribute is an estimate or a view of one; refitting makes a new model.

    Attributes
    ----------
    formula : str
    theta : ndarray
        Relative covariance parameters, lme4's order.
    beta : ndarray
        Fixed effects (see :attr:`fixef` for the named Series).
    sigma : float
        Residual standard deviation.
    objective : float
        The REML criterion for REML fits, -2 log-likelihood for ML fits.
    REML : bool
    optsum : OptSummary
    singular, converged : bool
    """

    REML: bool = True
    devfun: LMMObjective | None = field(default=None, repr=False)

    @classmethod
    def _from_fit(
        cls,
        devfun: LMMObjective,
        theta: np.ndarray,
        optsum: OptSummary,
        *,
        singular: bool,
        converged: bool,
        data_name: str = "data",
    ) -> LinearMixedModel:
        fac = devfun.pls.factor(theta)
        d = devfun.design
        dof = d.n - d.p if devfun.REML else d.n
        sigma = float(np.sqrt(fac.r2 / dof))
        return cls(
            formula=d.formula.text,
            design=d,
            theta=np.array(theta, dtype=float),
            beta=fac.beta.copy(),
            u=tuple(devfun.pls.to_lme4(fac.u_engine)),
            sigma=sigma,
            objective=float(devfun.from_factor(fac)),
            optsum=optsum,
            singular=singular,
            converged=converged,
            factor=fac,
            REML=devfun.REML,
            devfun=devfun,
            data_name=data_name,
        )

    def residuals(self, type: str = "response") -> pd.Series:
        """Residuals: ``"response"`` (y - fitted) or ``"pearson"`` (weighted by sqrt(prior weights))."""
        d = self.design
        r = d.y - self._eta
        if type == "pearson":
            if d.weights is not None:
                r = r * np.sqrt(d.weights)
        elif type != "response":
            raise ValueError(f"type must be 'response' or 'pearson', not {type!r}")
        return pd.Series(r, index=d.index, name="residuals")

    def refit_ml(self) -> LinearMixedModel:
        """The same model fitted by maximum likelihood (itself when it already is)."""
        if not self.REML:
            return self
        from .lmm import fit_lmm

        return fit_lmm(self.design, REML=False, data_name=self.data_name)

    def coef_table(self) -> pd.DataFrame:
        """Fixed effects with standard errors and t statistics."""
        se = self.std_errors
        return pd.DataFrame({"estimate": self.fixef, "std_error": se, "statistic": self.fixef / se})

    def summary(self) -> Any:
        """lme4's summary: fit criteria, scaled residuals, random and fixed effects.

        Returns
        -------
        Summary
            Prints as text in lme4's layout and renders as HTML in Jupyter.
        """
        from .summary import lmm_summary

        return lmm_summary(self)

    def __repr__(self) -> str:
        from .summary import lmm_brief

        return lmm_brief(self)


@dataclass(frozen=True, eq=False, repr=False)
class GeneralizedLinearMixedModel(MixedModel):
    """A fitted generalized linear mixed model (lme4's ``glmerMod``), returned by :func:`hmix.glmer`.

    Attributes
    ----------
    family : Family
    nAGQ : int
        Quadrature nodes: 0 (theta only), 1 (Laplace) or more (adaptive Gauss-Hermite).
    objective : float
        -2 log-likelihood at the optimum. For nAGQ > 1 it is the quadrature's -2 log-likelihood
        with the family's normalizing constants, so it compares with the Laplace value (lme4
        leaves the constants out there).
    vcov_method : str
        ``"hessian"`` (finite-difference Hessian over theta and beta, lme4's default) or
        ``"pirls"``.
    """

    family: Family | None = None
    nAGQ: int = 1
    vcov_method: str = "hessian"
    vcov_beta: np.ndarray | None = field(default=None, repr=False)
    devfun: GLMMObjective | None = field(default=None, repr=False)

    _has_scale = False

    @classmethod
    def _from_glmm(
        cls,
        obj: GLMMObjective,
        theta: np.ndarray,
        beta: np.ndarray,
        final: Any,
        value: float,
        optsum: OptSummary,
        vcov: np.ndarray,
        *,
        singular: bool,
        converged: bool,
        data_name: str,
        vcov_method: str,
    ) -> GeneralizedLinearMixedModel:
        d = obj.design
        return cls(
            formula=d.formula.text,
            design=d,
            theta=np.array(theta, dtype=float),
            beta=np.array(beta, dtype=float),
            u=tuple(obj.pls_u.to_lme4([v.copy() for v in final.u])),
            sigma=1.0,
            objective=float(value),
            optsum=optsum,
            singular=singular,
            converged=converged,
            factor=final.factor,
            data_name=data_name,
            family=obj.family,
            nAGQ=obj.nAGQ,
            vcov_method=vcov_method,
            vcov_beta=np.array(vcov, dtype=float),
            devfun=obj,
        )

    def _vcov_array(self) -> np.ndarray:
        assert self.vcov_beta is not None
        return self.vcov_beta

    @property
    def _fam(self) -> Family:
        assert self.family is not None
        return self.family

    @property
    def linear_predictor(self) -> pd.Series:
        """eta = offset + X beta + Z b."""
        return pd.Series(self._eta, index=self.design.index, name="eta")

    @property
    def fitted(self) -> pd.Series:
        """Fitted means on the response scale (probabilities for binomial, rates for Poisson)."""
        return pd.Series(self._fam.linkinv(self._eta), index=self.design.index, name="fitted")

    def residuals(self, type: str = "deviance") -> pd.Series:
        """Residuals of the kinds lme4 offers: ``"deviance"`` (default), ``"pearson"``,
        ``"response"`` (y - mu) and ``"working"``."""
        d, fam = self.design, self._fam
        wt = np.ones(d.n) if d.weights is None else d.weights
        mu = fam.linkinv(self._eta)
        if type == "deviance":
            r = np.sign(d.y - mu) * np.sqrt(np.maximum(fam.dev_resid(d.y, mu, wt), 0.0))
        elif type == "pearson":
            r = (d.y - mu) * np.sqrt(wt / fam.variance(mu))
        elif type == "response":
            r = d.y - mu
        elif type == "working":
            r = (d.y - mu) / fam.mu_eta(self._eta)
        else:
            raise ValueError(f"type must be 'deviance', 'pearson', 'response' or 'working', not {type!r}")
        return pd.Series(r, index=d.index, name="residuals")

    def coef_table(self) -> pd.DataFrame:
        """Fixed effects with standard errors, z statistics and two-sided p-values."""
        from scipy.stats import norm

        se = self.std_errors
        z = self.fixef / se
        return pd.DataFrame(
            {"estimate": self.fixef, "std_error": se, "statistic": z, "p_value": 2 * norm.sf(np.abs(z))}
        )

    def summary(self) -> Any:
        """lme4's summary of a GLMM, with z values and p-values."""
        from .summary import glmm_summary

        return glmm_summary(self)

    def __repr__(self) -> str:
        from .summary import glmm_brief

        return glmm_brief(self)
