"""The immutable fitted models: estimates and the accessors users know from lme4.

``hmix.fit`` makes them; what differs between a linear and a generalized model is a method of
each class. The analyses behind the methods (intervals, LOO, shrinkage, simulation, ...) live in
their own modules, imported when first called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .design import Design
from .engine import Factor
from .errors import HmixError
from .families import Family, Gaussian
from .optimize import OptSummary
from .remat import ThetaMap

if TYPE_CHECKING:
    from .glmm import GLMMObjective
    from .lmm import LMMObjective

__all__ = ["MixedModel", "LinearMixedModel", "GeneralizedLinearMixedModel"]


@dataclass(frozen=True, eq=False, repr=False)
class MixedModel:
    """What every fitted mixed model has: the design, theta, beta and the fit's bookkeeping.

    Subclasses set ``sigma`` (1 for families without a scale) and the objective's meaning.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> isinstance(m, hmix.MixedModel), m.nobs, m.ngroups, m.npar
    (True, 30, {'Batch': 6}, 3)
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
    family: Family = field(default_factory=Gaussian)
    REML: bool = False

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

    @cached_property
    def thetamap(self) -> ThetaMap:
        """theta, term by term: slices, bounds, names and theta -> T."""
        return ThetaMap.of(self.design.terms)

    @property
    def theta_names(self) -> list[str]:
        """lme4's names of the elements of theta."""
        return self.thetamap.names

    @property
    def has_scale(self) -> bool:
        """Whether the model estimates a residual scale sigma (LMMs)."""
        return self.family.has_scale

    def varpar_names(self) -> list[str]:
        """lme4's names of the variance parameters: ``sd_(Intercept)|Subject``,
        ``cor_Days.(Intercept)|Subject`` per term, then ``sigma`` when the model has one.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.varpar_names()
        ['sd_(Intercept)|Subject', 'cor_Days.(Intercept)|Subject', 'sd_Days|Subject', 'sigma']
        """
        names = [n for t in self.design.terms for n in t.cov.sdcor_names(t.group, t.names)]
        return names + (["sigma"] if self.has_scale else [])

    def varpar(self) -> np.ndarray:
        """The variance parameters in the order of ``varpar_names`` (lme4's sd/cor scale).

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.varpar().round(3).tolist()
        [24.74, 0.066, 5.922, 25.592]
        """
        v = sdcor(self.theta, self.sigma, self.thetamap)
        return np.append(v, self.sigma) if self.has_scale else v

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
    def b(self) -> tuple[np.ndarray, ...]:
        """The conditional modes b = Lambda u per term (lme4's order of ``design.terms``), each
        level's k effects together."""
        return tuple(
            (u.reshape(t.nlevels, t.k) @ T.T).ravel()
            for t, u, T in zip(self.design.terms, self.u, self.thetamap.tmats(self.theta))
        )

    @cached_property
    def _cond_var(self) -> list[np.ndarray]:
        cv = self.factor.layout.to_lme4(self.factor.cond_var_engine())
        return [self.sigma**2 * v for v in cv]

    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects.

        Returns
        -------
        dict
            Grouping factor name -> DataFrame with one row per level and one column per term
            (terms of the same factor, such as the parts of ``(x || g)``, side by side).

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.ranef()["Subject"].loc["309"].round(2).tolist()
        [-40.4, -8.62]
        """
        out: dict[str, pd.DataFrame] = {}
        for t, b in zip(self.design.terms, self.b):
            df = pd.DataFrame(b.reshape(t.nlevels, t.k), index=t.levels, columns=list(t.names))
            df.index.name = t.group
            out[t.group] = pd.concat([out[t.group], df], axis=1) if t.group in out else df
        return out

    def ranef_table(self) -> pd.DataFrame:
        """Conditional modes with their conditional standard deviations, one row per effect.

        Columns ``group``, ``term``, ``level``, ``condval`` (conditional mode) and ``condsd``
        (conditional SD), as lme4's ``as.data.frame(ranef(m, condVar = TRUE))``. For LMMs the
        SDs are conditional on the estimates of beta, theta and sigma, as in lme4.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> m.ranef_table().head(2).round(2)
           group         term level  condval  condsd
        0  Batch  (Intercept)     A   -17.61   19.59
        1  Batch  (Intercept)     B     0.39   19.59
        """
        frames = []
        for t, b, v in zip(self.design.terms, self.b, self._cond_var):
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
        """Conditional covariance matrices of the random effects: group -> (levels, k, k) array.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.cond_cov()["Subject"].shape
        (18, 2, 2)
        """
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
        for t, T in zip(self.design.terms, self.thetamap.tmats(self.theta)):
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
        if self.has_scale:
            rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])

    # ----- fitted values and residuals -----------------------------------------------------
    @cached_property
    def _eta(self) -> np.ndarray:
        d = self.design
        if not d.holds_rows:
            raise HmixError(
                "fitted values and residuals need the rows of the data, which stay in the Dask "
                "cluster for this fit: compute them there, e.g. ddf.map_partitions(model.predict)"
            )
        eta = d.X @ self.beta
        for t, b in zip(d.terms, self.b):
            eta = eta + t.contribution(b)
        if d.offset is not None:
            eta = eta + d.offset
        return eta

    @property
    def linear_predictor(self) -> pd.Series:
        """eta = offset + X beta + Z b at the fitted rows."""
        return pd.Series(self._eta, index=self.design.index, name="eta")

    @property
    def fitted(self) -> pd.Series:
        """Fitted values with the conditional modes of the random effects, on the response scale
        (an LMM's eta; a GLMM's mean: probabilities, rates)."""
        return pd.Series(self.family.linkinv(self._eta), index=self.design.index, name="fitted")

    def residuals(self, type: str = "response") -> pd.Series:
        """Residuals (the kinds depend on the model class)."""
        raise NotImplementedError

    def scaled_residual_quantiles(self) -> np.ndarray:
        """Min, quartiles and max of the Pearson residuals over sigma (the summary's "Scaled
        residuals"); for a fit whose rows stay in a Dask cluster, computed there at fit time.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.scaled_residual_quantiles().round(3).tolist()
        [-3.954, -0.463, 0.023, 0.463, 5.179]
        """
        stored = getattr(self.design, "residual_quantiles", None)
        if stored is not None:
            return np.asarray(stored)
        scaled = self.residuals("pearson").to_numpy() / self.sigma
        return np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0])

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        *,
        random: bool = True,
        new_levels: str = "error",
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
        >>> m.predict(new, new_levels="population").round(1).tolist()
        [253.7, 303.7]
        """
        from .predict import predict

        return predict(self, newdata, random=random, new_levels=new_levels, type=type, offset=offset)

    def coef_table(self) -> pd.DataFrame:
        """Fixed effects with standard errors and test statistics."""
        raise NotImplementedError

    # ----- partial pooling and simulation ---------------------------------------------------
    def shrinkage(self, group: str | None = None) -> pd.DataFrame:
        """Each level's own fit, its partial-pooling estimate and the population value, tidy.

        One row per (grouping factor, level, random-effects term):

        * ``no_pooling``: the level's own fit -- least squares (LMM, with the prior weights) or
          the maximum-likelihood GLM (GLMM) of the response on the term's columns within the
          level, with everything else in the fitted linear predictor held where the fit put it
          (the other fixed effects at their estimates, the other random-effects terms at their
          conditional modes, the offset). NaN where the own fit is not estimable: a singular
          cross-product (too few distinct rows for a slope) or a GLM estimate that runs to
          infinity (all successes or failures, all-zero counts).
        * ``partial_pooling``: the fixed effect of the same name plus the conditional mode (the
          conditional mode alone for a term with no matching fixed effect).
        * ``complete_pooling``: the fixed effect (0 when there is none).
        * ``weight``: P / (P + 1/tau^2), with tau^2 the term's variance and P the precision of the
          level's own estimate of that coefficient, 1 / Var (Var from the inverse of
          Z_j'W Z_j / sigma^2; for GLMMs W are the working weights at the fit and sigma = 1).

        For a random intercept in an LMM the conditional mode is exactly the shrunken own fit:
        ``partial = weight * no_pooling + (1 - weight) * complete_pooling``. For terms with
        several columns the shrinkage is a matrix and the weight summarizes one coefficient; for
        GLMMs the relation holds approximately.

        Parameters
        ----------
        group : str, optional
            One grouping factor; all when None.

        Returns
        -------
        pandas.DataFrame
            Columns ``group``, ``level``, ``term``, ``n`` (rows in the level), ``no_pooling``,
            ``partial_pooling``, ``complete_pooling``, ``weight``.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> s = m.shrinkage()
        >>> s[["level", "n", "no_pooling", "partial_pooling", "weight"]].head(2).round(2)
          level  n  no_pooling  partial_pooling  weight
        0     A  5      1505.0          1509.89    0.78
        1     B  5      1528.0          1527.89    0.78
        """
        from .pooling import shrinkage

        return shrinkage(self, group)

    def variance_decomposition(self) -> pd.DataFrame:
        """Variance components, their shares of the total variance and the ICCs.

        Each random-effects term contributes the average over the fitted rows of
        z_i' Sigma z_i, the variance it adds to an observation's linear predictor (for a random
        intercept: its variance; with slopes it depends on the covariates' values and centring,
        as in Johnson's 2014 extension of Nakagawa & Schielzeth's R^2). The residual variance is
        sigma^2 for LMMs; for GLMMs the decomposition is on the latent (link) scale, with the
        distribution-specific variance of Nakagawa & Schielzeth (2013): pi^2/3 (logit), 1
        (probit), pi^2/6 (cloglog), and for the Poisson log link the lognormal approximation
        log(1 + 1/lambda), lambda the model's marginal mean averaged over the fitted rows,
        mean(exp(X beta + offset + z'Sigma z / 2)).

        ``share`` is each variance over the total (random terms plus residual). ``icc`` is the
        correlation between two observations in the same level of the factor: its variance plus
        those of the factors it is nested in, over the total. It is given for random intercepts
        only (NaN when the factor also has slopes).

        Returns
        -------
        pandas.DataFrame
            Columns ``group``, ``term``, ``variance``, ``share``, ``icc``; the last row is the
            residual, its ``term`` says how it was obtained. ``attrs["scale"]`` is
            ``"response"`` or ``"latent"``, ``attrs["residual"]`` the residual's definition and
            ``attrs["icc_adjusted"]`` all random variances over the total (and
            ``attrs["poisson_mean"]`` lambda for Poisson models).

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> m.variance_decomposition()[["group", "variance", "share", "icc"]].round(3)
              group  variance  share    icc
        0     Batch   1764.05  0.418  0.418
        1  Residual   2451.25  0.582    NaN
        """
        from .pooling import variance_decomposition

        return variance_decomposition(self)

    def simulate(
        self,
        n: int = 1,
        seed: int | np.random.Generator | None = None,
        newdata: pd.DataFrame | None = None,
        *,
        weights: Any = None,
        offset: Any = None,
    ) -> pd.DataFrame:
        """Responses simulated from the fitted model, with new random effects.

        Every simulation draws new random effects for every level from their fitted
        distribution (lme4's ``simulate(m, re.form = NA)``), then the response: Gaussian with
        SD sigma / sqrt(prior weight) (LMM), binomial or Poisson (GLMM). Binomial responses
        come back as stored in the fit: the proportion of successes out of the trials (the
        ``cbind`` total or the weights); multiply by the trials for counts.

        Parameters
        ----------
        n : int, default 1
            Number of simulations.
        seed : int or numpy.random.Generator, optional
            The same seed gives the same simulations.
        newdata : pandas.DataFrame, optional
            Rows to simulate for, coded as the fitting data were; each grouping level in it (seen
            in the fit or not) gets its own draws. Rows missing a variable the model uses give
            NaN. A binomial ``cbind`` model takes the trials from the ``cbind`` columns.
        weights, offset : str or array-like, optional
            For the rows of ``newdata``: prior weights (binomial: the number of trials; needed
            when the model was fitted with weights and no ``cbind`` response) and an offset, as
            at fit time.

        Returns
        -------
        pandas.DataFrame
            Columns ``sim_1`` ... ``sim_n``, indexed like the fitted rows (or ``newdata``).

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> sims = m.simulate(n=2, seed=42)
        >>> list(sims.columns), len(sims)
        (['sim_1', 'sim_2'], 30)
        >>> bool((m.simulate(n=2, seed=42) == sims).all().all())
        True
        """
        from .simulate import simulate

        return simulate(self, n, seed, newdata, weights=weights, offset=offset)

    def ppc(self, stat: Any = "mean", n: int = 1000, seed: int | np.random.Generator | None = None) -> Any:
        """Check a statistic of the observed response against its distribution over simulations.

        The response is simulated ``n`` times by ``simulate`` (new random effects each
        time: a plug-in check of the whole model at its estimates, not a Bayesian posterior).

        Parameters
        ----------
        stat : str or callable, default "mean"
            ``"mean"``, ``"sd"``, ``"var"``, ``"min"``, ``"max"``, ``"median"``, ``"zeros"``
            (the number of zero responses), or a function of the response vector (as stored:
            proportions for binomial) returning a number.
        n : int, default 1000
        seed : int or numpy.random.Generator, optional

        Returns
        -------
        PPCResult
            ``observed``, ``simulated``, ``p_value`` (two-sided), ``p_upper`` and ``p_lower``
            (shares of simulations at or above, at or below the observed value), ``to_frame()``.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> r = m.ppc("max", n=200, seed=1)
        >>> float(r.observed), len(r.simulated), 0 <= r.p_value <= 1
        (1635.0, 200, True)
        """
        from .simulate import ppc

        return ppc(self, stat, n, seed)

    # ----- likelihood-based summaries ------------------------------------------------------
    @property
    def npar(self) -> int:
        """Number of estimated parameters (fixed effects, theta, and sigma where there is one)."""
        return self.design.p + len(self.theta) + int(self.has_scale)

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

    # ----- inference ------------------------------------------------------------------------
    def loo(self, *, draws: int = 2000, seed: Any = 0, refit: bool = True) -> Any:
        """Leave-one-out cross-validation: the expected log predictive density of each observation.

        For an LMM it is exact and needs no refit: with theta and sigma at their estimates and the
        fixed effects integrated out (flat prior), log p(y_i | y_-i) follows from the fit's
        leverages. For a GLMM it is Pareto-smoothed importance sampling (PSIS-LOO) over draws of
        the random and fixed effects from their Laplace approximation; observations whose Pareto
        k exceeds 0.7 are refitted without them (``refit=True``).

        Parameters
        ----------
        draws : int, default 2000
            Importance-sampling draws (GLMMs).
        seed : int or numpy Generator, default 0
            For the draws (GLMMs); LMM results are exact.
        refit : bool, default True
            Refit the model without each observation whose Pareto k exceeds 0.7 (GLMMs).

        Returns
        -------
        LOO
            ``elpd_loo``, ``se``, ``p_loo``, ``looic``, ``pointwise`` (a DataFrame) and, for
            PSIS, ``pareto_k``, as ArviZ names them.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> res = m.loo()
        >>> round(res.elpd_loo, 2), round(res.p_loo, 1)
        (-856.44, 31.9)
        """
        from .loo import loo

        return loo(self, draws=draws, seed=seed, refit=refit)

    def confint(
        self,
        method: str = "profile",
        level: float = 0.95,
        *,
        n: int = 1000,
        seed: Any = None,
        progress_bar: bool | None = None,
    ) -> pd.DataFrame:
        """Confidence intervals for the variance parameters and the fixed effects (lme4's ``confint``).

        Parameters
        ----------
        method : {"profile", "wald", "boot"}
            ``"profile"``: where the likelihood-ratio statistic of each parameter, the others
            re-optimized, reaches the chi-square quantile (lme4 profiles the ML deviance, also
            for REML fits, and so does this; GLMMs profile their Laplace or quadrature deviance
            over the sd/cor parameters and the fixed effects). ``"wald"``: estimate +- z SE for the fixed
            effects (NaN for the variance parameters, as lme4). ``"boot"``: percentiles of a
            parametric bootstrap (``hmix.bootstrap``).
        level : float, default 0.95
        n, seed, progress_bar
            Bootstrap replicates, their seed, and a progress bar (``method="boot"``).

        Returns
        -------
        pandas.DataFrame
            Rows named as lme4's (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
            ``sigma``, then the fixed effects), columns ``2.5 %`` and ``97.5 %``.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.confint().round(2)  # doctest: +NORMALIZE_WHITESPACE
                                       2.5 %  97.5 %
        parameter
        sd_(Intercept)|Subject         14.38   37.72
        cor_Days.(Intercept)|Subject   -0.48    0.69
        sd_Days|Subject                 3.80    8.75
        sigma                          22.90   28.86
        (Intercept)                   237.68  265.13
        Days                            7.36   13.58
        """
        from .confint import confint

        return confint(self, method, level, n=n, seed=seed, progress_bar=progress_bar)


@dataclass(frozen=True, eq=False, repr=False)
class LinearMixedModel(MixedModel):
    """A fitted linear mixed model (lme4's ``lmerMod``), returned by ``hmix.lmer``.

    Immutable: every attribute is an estimate or a view of one; refitting makes a new model.

    Attributes
    ----------
    formula : str
    theta : ndarray
        Relative covariance parameters, lme4's order.
    beta : ndarray
        Fixed effects (see ``fixef`` for the named Series).
    sigma : float
        Residual standard deviation.
    objective : float
        The REML criterion for REML fits, -2 log-likelihood for ML fits.
    REML : bool
    optsum : OptSummary
    singular, converged : bool

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> m
    Linear mixed model fit by REML ['LinearMixedModel']
    Formula: Reaction ~ Days + (Days | Subject)
       Data: sleepstudy
    REML criterion at convergence: 1743.6283
    Random effects:
     Groups   Name        Std.Dev. Corr
     Subject  (Intercept) 24.740
              Days         5.922   0.07
     Residual             25.592
    Number of obs: 180, groups:  Subject, 18
    Fixed Effects:
    (Intercept)        Days
         251.41       10.47
    """

    REML: bool = True
    devfun: LMMObjective | None = field(default=None, repr=False)

    def residuals(self, type: str = "response") -> pd.Series:
        """Residuals: ``"response"`` (y - fitted) or ``"pearson"`` (weighted by sqrt(prior weights)).

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.residuals().head(2).round(2).tolist()
        [-4.1, -14.63]
        """
        d = self.design
        r = d.y - self._eta
        if type == "pearson":
            if d.weights is not None:
                r = r * np.sqrt(d.weights)
        elif type != "response":
            raise ValueError(f"type must be 'response' or 'pearson', not {type!r}")
        return pd.Series(r, index=d.index, name="residuals")

    def refit_ml(self) -> LinearMixedModel:
        """The same model fitted by maximum likelihood (itself when it already is).

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> round(m.refit_ml().objective, 2)  # -2 log-likelihood
        1751.94
        """
        if not self.REML:
            return self
        from .fit import fit_lmm

        return fit_lmm(self.design, REML=False, data_name=self.data_name)

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """Fixed effects with standard errors and t statistics; with ``ddf``, t tests.

        Parameters
        ----------
        ddf : {None, "satterthwaite", "kenward-roger"}
            Denominator degrees of freedom for small-sample t tests, as lmerTest's
            ``summary(m, ddf=)``: Satterthwaite's approximation, or Kenward and Roger's, which
            also adjusts the covariance of the estimates (so ``std_error`` is the adjusted one;
            REML fits only). See :mod:`hmix.ddf`.

        Returns
        -------
        pandas.DataFrame
            Indexed by term: ``estimate``, ``std_error``, ``statistic`` (t); with ``ddf`` also
            ``df`` and ``p_value`` (two-sided, t distribution).

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> list(m.coef_table().columns)
        ['estimate', 'std_error', 'statistic']
        >>> m.coef_table(ddf="satterthwaite")[["statistic", "df"]].round(2)
                     statistic    df
        (Intercept)      36.84  17.0
        Days              6.77  17.0
        """
        if ddf is not None:
            from .ddf import ddf_table

            return ddf_table(self, ddf)
        se = self.std_errors
        return pd.DataFrame({"estimate": self.fixef, "std_error": se, "statistic": self.fixef / se})

    def summary(self, ddf: str | None = None) -> Any:
        """lme4's summary: fit criteria, scaled residuals, random and fixed effects.

        Parameters
        ----------
        ddf : {None, "satterthwaite", "kenward-roger"}
            With a method, the fixed effects get df and p-values in lmerTest's layout (see
            ``coef_table``).

        Returns
        -------
        Summary
            Prints as text in lme4's (or lmerTest's) layout and renders as HTML in Jupyter.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> print(m.summary(ddf="satterthwaite").title)
        Linear mixed model fit by REML. t-tests use Satterthwaite's method ['LinearMixedModel']
        """
        from .summary import lmm_summary

        return lmm_summary(self, ddf=ddf)

    def __repr__(self) -> str:
        from .summary import lmm_brief

        return lmm_brief(self)


@dataclass(frozen=True, eq=False, repr=False)
class GeneralizedLinearMixedModel(MixedModel):
    """A fitted generalized linear mixed model (lme4's ``glmerMod``), returned by ``hmix.glmer``.

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

    Examples
    --------
    >>> import hmix
    >>> g = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...                hmix.datasets.load("cbpp"), family="binomial")
    >>> str(g.family), g.nAGQ, round(g.objective, 2), g.ngroups
    ('binomial  ( logit )', 1, 184.05, {'herd': 15})
    """

    nAGQ: int = 1
    vcov_method: str = "hessian"
    vcov_beta: np.ndarray | None = field(default=None, repr=False)
    devfun: GLMMObjective | None = field(default=None, repr=False)

    def _vcov_array(self) -> np.ndarray:
        assert self.vcov_beta is not None
        return self.vcov_beta

    def residuals(self, type: str = "deviance") -> pd.Series:
        """Residuals of the kinds lme4 offers: ``"deviance"`` (default), ``"pearson"``,
        ``"response"`` (y - mu) and ``"working"``.

        Examples
        --------
        >>> import hmix
        >>> g = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
        ...                hmix.datasets.load("cbpp"), family="binomial")
        >>> g.residuals("pearson").head(2).round(3).tolist()
        [-1.34, 1.075]
        """
        d, fam = self.design, self.family
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

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """Fixed effects with standard errors, z statistics and two-sided p-values.

        Parameters
        ----------
        ddf : None
            Only None: GLMMs use z tests (lme4's asymptotic normal reference), so there are no
            denominator degrees of freedom; any other value raises ``HmixError``.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
        ...                hmix.datasets.load("cbpp"), family="binomial")
        >>> list(m.coef_table().columns)
        ['estimate', 'std_error', 'statistic', 'p_value']
        """
        from scipy.stats import norm

        if ddf is not None:
            from .errors import HmixError

            raise HmixError(
                f"ddf={ddf!r} is for linear mixed models: GLMMs use z tests (asymptotic normal "
                "reference distribution, as lme4), which have no denominator degrees of freedom"
            )
        se = self.std_errors
        z = self.fixef / se
        return pd.DataFrame(
            {"estimate": self.fixef, "std_error": se, "statistic": z, "p_value": 2 * norm.sf(np.abs(z))}
        )

    def summary(self) -> Any:
        """lme4's summary of a GLMM, with z values and p-values.

        Returns
        -------
        Summary
            Prints as text in lme4's layout and renders as HTML in Jupyter.

        Examples
        --------
        >>> import hmix
        >>> g = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
        ...                hmix.datasets.load("cbpp"), family="binomial")
        >>> print(g.summary())  # doctest: +ELLIPSIS
        Generalized linear mixed model fit by maximum likelihood (Laplace Approximation) [...]
        ...
        Fixed effects:
                    Estimate Std. Error z value Pr(>|z|)
        (Intercept)  -1.3985     0.2325  -6.016 1.79e-09 ***
        ...
        """
        from .summary import glmm_summary

        return glmm_summary(self)

    def __repr__(self) -> str:
        from .summary import glmm_brief

        return glmm_brief(self)


def sdcor(theta: np.ndarray, sigma: float, thetamap: ThetaMap) -> np.ndarray:
    """Every term's variance parameters on lme4's sd/cor scale (see ``varpar_names``)."""
    parts = [t.cov.sdcor(th, sigma) for t, th in zip(thetamap.terms, thetamap.split(theta))]
    return np.concatenate(parts) if parts else np.zeros(0)


def theta_from_sdcor(values: np.ndarray, sigma: float, thetamap: ThetaMap) -> np.ndarray:
    """theta from the sd/cor scale, term by term (the inverse of ``sdcor``)."""
    out, start = [], 0
    for t in thetamap.terms:
        n = len(t.cov.sdcor_pattern[0])
        out.append(t.cov.from_sdcor(values[start : start + n], sigma))
        start += n
    return np.concatenate(out) if out else np.zeros(0)
