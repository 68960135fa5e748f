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
from .errors import DataError, HmixError
from .families import Family, Gaussian, Observed
from .optimize import OptSummary
from .remat import ThetaMap

if TYPE_CHECKING:
    from .glmm import GLMMObjective
    from .lmm import LMMObjective
    from .priors import Priors
    from .zeroinflation import ZeroInflation

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
    priors: Priors | None = field(default=None, repr=False)
    penalty: float = 0.0

    @property
    def penalized_objective(self) -> float:
        """What the optimizer minimized: ``objective`` plus ``penalty``, the priors' -2 log-density
        (``hmix.blmer``, ``hmix.bglmer``; blme's "Prior dev"). Without priors, ``objective``."""
        return self.objective + self.penalty

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
    def cov_scale(self) -> float:
        """sigma in Sigma = sigma^2 T T', the random effects' covariance: the residual SD of an
        LMM, 1 for a GLMM (whose ``sigma`` is glmmTMB's: a negative binomial's theta, a Gamma's
        coefficient of variation, 1 for the binomial and Poisson)."""
        return self.sigma if self.has_scale else 1.0

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
        return names + (["sigma"] if self.estimates_sigma else [])

    def varpar(self) -> np.ndarray:
        """The variance parameters in the order of ``varpar_names`` (lme4's sd/cor scale).

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.varpar().round(3).tolist()
        [24.74, 0.066, 5.922, 25.592]
        """
        v = sdcor(self.theta, self.cov_scale, self.thetamap)
        return np.append(v, self.sigma) if self.estimates_sigma else v

    @property
    def estimates_sigma(self) -> bool:
        """Whether ``sigma`` is an estimated parameter (an LMM's; a GLMM's estimated dispersion)."""
        return self.has_scale

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
        return [self.cov_scale**2 * v for v in cv]

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
        ``as.data.frame(VarCorr(m))``. The rows are each term's variance parameters
        (``varpar_names``): variances first, then correlations; a ``diag()`` term has none,
        a ``cs()`` or ``ar1()`` term one, its rho (the correlation of its first two columns),
        and a term with ``hom = TRUE`` one variance.
        """
        rows: list[tuple[str, str | None, str | None, float, float]] = []
        for t, th in zip(self.design.terms, self.thetamap.split(self.theta)):
            S = self.cov_scale**2 * t.cov.covariance(th)
            sd = np.sqrt(np.diag(S))
            r, c = t.cov.sdcor_pattern
            for a in r[r == c]:
                rows.append((t.group, t.names[a], None, S[a, a], sd[a]))
            rho = t.cov.rho(th)
            for a, b in zip(c[r != c], r[r != c]):
                denom = sd[a] * sd[b]
                cor = rho if rho is not None else (S[b, a] / denom if denom > 0 else np.nan)
                rows.append((t.group, t.names[a], t.names[b], S[b, a], cor))
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
        """Min, quartiles and max of the Pearson residuals over ``cov_scale`` (the summary's "Scaled
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
        scaled = self.residuals("pearson").to_numpy() / self.cov_scale
        return np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0])

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        *,
        random: bool = True,
        new_levels: str = "error",
        type: str = "response",
        offset: Any = None,
        se_fit: bool = False,
        interval: str | None = None,
        level: float = 0.95,
    ) -> pd.Series | pd.DataFrame:
        """Predictions for the fitted rows or for new data, optionally with SEs and intervals.

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
        type : {"response", "link", "conditional", "zi"}
            For GLMMs: the mean (probabilities, rates; with zero-inflation (1 - pi) mu) or the
            linear predictor; for zero-inflated models also the count part's mean mu
            (``"conditional"``) and the zero-inflation probability pi (``"zi"``), as glmmTMB's.
        offset : str or array-like, optional
            An offset for the new rows, like ``offset=`` at fit time (``offset(...)`` terms in
            the formula are evaluated on ``newdata``).
        se_fit : bool, default False
            Return a DataFrame with the prediction (``fit``) and its standard error (``se``):
            from vcov(beta), plus the conditional variance of the random effects of known
            levels when ``random=True``. On the response scale of a GLMM by the delta method.
        interval : {None, "confidence", "prediction"}
            Add ``lower`` and ``upper``: a confidence interval for the line the prediction
            follows (population line with ``random=False``), or a prediction interval, which adds
            the random effects' variance for rows at the population level (``random=False`` or a
            new level) and, for LMMs, the residual variance sigma^2. Normal quantiles on the
            link scale, mapped through the inverse link. See ``hmix.predint`` for exactly what is
            included (and what is not: theta's uncertainty, the covariance of beta and b).
        level : float, default 0.95

        Returns
        -------
        pandas.Series or pandas.DataFrame
            Indexed like ``newdata`` (or the fitted rows): the predictions, or with ``se_fit``
            or ``interval`` the columns ``fit``, ``se`` (and ``lower``, ``upper``).

        Examples
        --------
        >>> import hmix, pandas as pd
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> new = pd.DataFrame({"Days": [0, 5], "Subject": ["308", "NEW"]})
        >>> m.predict(new, new_levels="population").round(1).tolist()
        [253.7, 303.7]
        >>> m.predict(new, random=False, interval="confidence").round(1)
             fit   se  lower  upper
        0  251.4  6.8  238.0  264.8
        1  303.7  9.6  285.0  322.5
        """
        from .predict import predict

        return predict(
            self,
            newdata,
            random=random,
            new_levels=new_levels,
            type=type,
            offset=offset,
            se_fit=se_fit,
            interval=interval,
            level=level,
        )

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
        SD sigma / sqrt(prior weight) (LMM), or from the GLMM's family (binomial, Poisson,
        negative binomial, Gamma), with structural zeros drawn with each row's probability for a
        zero-inflated model. Binomial responses
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
    def loo(
        self, *, draws: int = 2000, seed: Any = 0, refit: bool = True, progress: bool | None = None
    ) -> Any:
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
        progress : bool, optional
            A progress bar over those refits (default: in a terminal or a notebook).

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

        return loo(self, draws=draws, seed=seed, refit=refit, progress=progress)

    def confint(
        self,
        method: str = "profile",
        level: float = 0.95,
        *,
        parm: Any = None,
        n: int = 1000,
        seed: Any = None,
        progress: bool | None = None,
    ) -> pd.DataFrame:
        """Confidence intervals for the variance parameters and the fixed effects (lme4's ``confint``).

        Parameters
        ----------
        method : {"profile", "wald", "boot"}
            (In any case: lme4's ``"Wald"`` too.)
            ``"profile"``: where the likelihood-ratio statistic of each parameter, the others
            re-optimized, reaches the chi-square quantile (lme4 profiles the ML deviance, also
            for REML fits, and so does this; GLMMs profile their Laplace or quadrature deviance
            over the sd/cor parameters and the fixed effects). ``"wald"``: estimate +- z SE for the fixed
            effects (NaN for the variance parameters, as lme4, except the rho of ``cs()`` and
            ``ar1()`` terms: glmmTMB's interval on its unbounded scale, mapped back).
            ``"boot"``: percentiles of a parametric bootstrap (``hmix.bootstrap``).
        level : float, default 0.95
        parm : str or list of str, optional
            The parameters (rows) to give, as lme4's ``parm``: a profile computes only these.
        n, seed
            Bootstrap replicates and their seed (``method="boot"``).
        progress : bool, optional
            A progress bar over the profiled parameters or the bootstrap's refits (default: in
            a terminal or a notebook); False turns it off.

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

        return confint(self, method, level, parm, n=n, seed=seed, progress=progress)

    # ----- lme4's coef, lmerTest's anova, R^2 and statsmodels' names -----------------------
    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-level coefficients: the fixed effects plus each level's conditional modes (lme4's
        ``coef``).

        Returns
        -------
        dict
            Grouping factor -> DataFrame, one row per level and a column per fixed effect; a
            random effect with no fixed effect of its name gets a column of its own (first),
            the conditional mode alone. See ``hmix.coefs``.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.coef()["Subject"].head(2).round(2)
                 (Intercept)   Days
        Subject
        308           253.66  19.67
        309           211.01   1.85
        """
        from .coefs import coef

        return coef(self)

    def anova(self, type: str = "III", ddf: str | None = None) -> pd.DataFrame:
        """One test per term of the fixed part, a multi-level factor as one test (lmerTest's
        ``anova(m)``).

        Parameters
        ----------
        type : {"III", "I"}
            Type III (default, lmerTest's and SAS's): each term given all the others, main
            effects averaged with equal weights over the levels of the factors they interact
            with, whatever the contrasts the formula uses (formulaic's treatment coding or
            ``C(f, contr.sum)`` give the same table). Type I: sequential, in the formula's
            order. The hypothesis matrices are in ``attrs["hypotheses"]``; see
            ``hmix.hypotheses``.
        ddf : {None, "satterthwaite", "kenward-roger"}
            LMMs: the F tests' denominator df, Satterthwaite's by default (Kenward-Roger also
            scales F; REML fits only). GLMMs have none (leave it None): their terms get Wald
            chi-square tests.

        Returns
        -------
        pandas.DataFrame
            Indexed by term. LMMs: ``sum_sq``, ``mean_sq``, ``num_df``, ``den_df``, ``F``,
            ``p_value`` (lmerTest's columns); GLMMs: ``chisq``, ``df``, ``p_value``.
            ``attrs["heading"]`` names the test. See ``hmix.anova``.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.anova().round(2)  # doctest: +NORMALIZE_WHITESPACE
                sum_sq   mean_sq  num_df  den_df      F  p_value
        term
        Days  30031.01  30031.01       1    17.0  45.85      0.0
        """
        from .anova import anova

        return anova(self, type, ddf)

    def r2(self, poisson_mean: str = "fitted") -> pd.Series:
        """Marginal and conditional R^2 (Nakagawa & Schielzeth 2013; Johnson 2014 for slopes),
        as ``performance::r2_nakagawa``.

        Marginal: the variance of X beta over the total; conditional: that plus the random
        effects' variance over the total. GLMMs on the latent scale, with the distribution-
        specific variances of ``variance_decomposition``; see ``hmix.r2``.

        Parameters
        ----------
        poisson_mean : {"fitted", "null"}
            For Poisson models, the mean mu in the residual variance log(1 + 1/mu): the model's
            marginal mean averaged over the fitted rows, or exp(intercept) of the null model
            (refitted with only an intercept, as performance 0.10 does).

        Returns
        -------
        pandas.Series
            ``marginal``, ``conditional``, ``var_fixed``, ``var_random``, ``var_residual``;
            ``attrs["residual"]`` says how the residual variance was obtained.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.r2()[["marginal", "conditional"]].round(3).tolist()
        [0.279, 0.799]
        """
        from .r2 import r2_nakagawa

        return r2_nakagawa(self, poisson_mean)

    @property
    def params(self) -> pd.Series:
        """statsmodels' name for ``fixef``."""
        return self.fixef

    @property
    def bse(self) -> pd.Series:
        """statsmodels' name for ``std_errors``."""
        return self.std_errors

    @property
    def tvalues(self) -> pd.Series:
        """The fixed effects over their standard errors (t for LMMs, z for GLMMs), as statsmodels."""
        return (self.fixef / self.std_errors).rename("tvalues")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided p-values of the fixed effects: t tests on Satterthwaite's df for LMMs
        (lmerTest's default; statsmodels' MixedLM uses the normal), z tests for GLMMs.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.pvalues.round(6).tolist()
        [0.0, 3e-06]
        """
        from .coefs import fixef_tests

        return fixef_tests(self)["p_value"].rename("pvalues")

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """1 - alpha confidence limits of the fixed effects, statsmodels' layout (columns 0 and 1).

        With the same reference distributions as ``pvalues`` (Satterthwaite t for LMMs, normal
        for GLMMs); ``confint`` gives lme4's profile, Wald and bootstrap intervals.

        Examples
        --------
        >>> import hmix
        >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> m.conf_int().round(2)
                          0       1
        (Intercept)  237.01  265.80
        Days           7.21   13.73
        """
        from .coefs import fixef_tests

        limits = fixef_tests(self, alpha)[["lower", "upper"]]
        return limits.set_axis([0, 1], axis=1)

    @property
    def fittedvalues(self) -> pd.Series:
        """statsmodels' name for ``fitted`` (response scale, random effects included)."""
        return self.fitted

    @property
    def resid(self) -> pd.Series:
        """Response residuals, y - fitted, as statsmodels' ``resid`` (for other kinds:
        ``residuals(type)``, a method because it takes the kind; a GLMM's default kind there is
        the deviance residual, as lme4's)."""
        return self.residuals("response")


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
        The REML criterion for REML fits, -2 log-likelihood for ML fits (for ``hmix.blmer``:
        without the priors, at the penalized estimates, as blme reports it).
    REML : bool
    optsum : OptSummary
    singular, converged : bool
    priors : hmix.priors.Priors or None
        The priors of a ``blmer`` / ``bglmer`` fit (refits keep them).
    penalty : float
        Their -2 log-density at the estimates (0 without priors); ``penalized_objective`` is
        ``objective + penalty``.

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
            raise DataError(f"type must be 'response' or 'pearson', not {type!r}")
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

        return fit_lmm(self.design, REML=False, data_name=self.data_name, priors=self.priors)

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
    priors, penalty
        As for ``LinearMixedModel`` (``hmix.bglmer``): ``objective`` is then the deviance
        without the priors.

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
    zi: ZeroInflation | None = field(default=None, repr=False)
    zi_beta: np.ndarray | None = None
    vcov_params: np.ndarray | None = field(default=None, repr=False)
    dispersion_estimated: bool = False

    @property
    def estimates_sigma(self) -> bool:
        return self.dispersion_estimated

    @property
    def zi_names(self) -> list[str]:
        """Names of the zero-inflation coefficients (``zi_(Intercept)``, ...)."""
        return [] if self.zi is None else [f"zi_{n}" for n in self.zi.names]

    def extra_se(self) -> np.ndarray:
        """Standard errors of the log dispersion and the zero-inflation coefficients (NaN
        without the Hessian), in that order.

        Examples
        --------
        >>> import hmix
        >>> sal = hmix.datasets.load("Salamanders")
        >>> m = hmix.glmer("count ~ mined + (1 | site)", sal, family="negative_binomial",
        ...                zi_formula="~ 1")
        >>> len(m.extra_se())  # log theta, zi_(Intercept)
        2
        """
        k = len(self.theta) + self.design.p
        n = int(self.dispersion_estimated) + len(self.zi_names)
        if self.vcov_params is None:
            return np.full(n, np.nan)
        return np.sqrt(np.diag(self.vcov_params)[k : k + n])

    def zi_coef_table(self) -> pd.DataFrame:
        """The zero-inflation part's coefficients (logit scale) with standard errors, z
        statistics and p-values, as glmmTMB's summary shows them.

        Examples
        --------
        >>> import hmix, numpy as np, pandas as pd
        >>> rng = np.random.default_rng(1)
        >>> df = pd.DataFrame({"g": np.repeat(list("abcdefghij"), 30), "x": rng.normal(size=300)})
        >>> df["y"] = np.where(rng.uniform(size=300) < 0.3, 0, rng.poisson(np.exp(1 + 0.5 * df["x"])))
        >>> m = hmix.glmer("y ~ x + (1 | g)", df, family="poisson", zi_formula="~ 1")
        >>> list(m.zi_coef_table().index), bool(m.zi_coef_table()["estimate"].iloc[0] < 0)
        (['(Intercept)'], True)
        """
        from scipy.stats import norm

        if self.zi is None or self.zi_beta is None:
            raise HmixError("the model has no zero-inflation part (zi_formula)")
        se = self.extra_se()[int(self.dispersion_estimated) :]
        z = self.zi_beta / se
        return pd.DataFrame(
            {"estimate": self.zi_beta, "std_error": se, "statistic": z, "p_value": 2 * norm.sf(np.abs(z))},
            index=pd.Index(self.zi.names),
        )

    @property
    def npar(self) -> int:
        """Number of estimated parameters: fixed effects, theta, an estimated dispersion and the
        zero-inflation coefficients."""
        nzi = 0 if self.zi_beta is None else len(self.zi_beta)
        return self.design.p + len(self.theta) + int(self.dispersion_estimated) + nzi

    def _vcov_array(self) -> np.ndarray:
        assert self.vcov_beta is not None
        return self.vcov_beta

    @cached_property
    def zi_prob(self) -> pd.Series | None:
        """The zero-inflation probability of each fitted row (None without zero-inflation)."""
        if self.zi is None or self.zi_beta is None:
            return None
        from scipy.special import expit

        return pd.Series(expit(self.zi.X @ self.zi_beta), index=self.design.index, name="zi_prob")

    def deviance_on(self, design: Design) -> float:
        """-2 log-likelihood (Laplace, or the model's quadrature) of ``design``'s rows at this
        model's estimates (a design made from the model's rows: a subset, or other offsets).

        Examples
        --------
        >>> import hmix
        >>> g = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
        ...                hmix.datasets.load("cbpp"), family="binomial")
        >>> round(g.deviance_on(g.design), 4) == round(g.objective, 4)
        True
        """
        from .glmm import GLMMObjective

        zi = None if self.zi is None else self.zi.for_design(design)
        nagq = 1 if zi is not None else max(self.nAGQ, 1)
        obj = GLMMObjective(design, self.family, nagq, zi=None if zi is None else zi.X)
        beta = self.beta if design.p else np.zeros(0)
        extra = np.zeros(0) if self.zi_beta is None else self.zi_beta
        return float(obj(np.concatenate([self.theta, beta, extra])))

    def observed(self) -> Observed:
        """The family bound to the response (with the zero-inflation probabilities).

        Examples
        --------
        >>> import hmix
        >>> g = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
        ...                hmix.datasets.load("cbpp"), family="binomial")
        >>> round(g.observed().deviance(g.fitted.to_numpy()), 2)
        73.47
        """
        d = self.design
        wt = np.ones(d.n) if d.weights is None else d.weights
        if self.zi_prob is not None:
            from .families.zeroinflated import ZeroInflatedObserved

            return ZeroInflatedObserved(self.family, d.y, wt, self.zi_prob.to_numpy())
        return self.family.bind(d.y, wt)

    def pointwise_loglik(self, eta: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """log p(y_i | eta_i) for the given fitted rows; ``eta`` may hold one column per draw.

        Examples
        --------
        >>> import hmix
        >>> g = hmix.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
        ...                hmix.datasets.load("cbpp"), family="binomial")
        >>> g.pointwise_loglik(g.linear_predictor.to_numpy()).shape
        (56,)
        """
        d, fam = self.design, self.family
        y = d.y[rows]
        wt = (np.ones(d.n) if d.weights is None else d.weights)[rows]
        if eta.ndim == 2:
            y, wt = y[:, None], wt[:, None]
        mu = fam.linkinv(eta)
        if self.zi_prob is not None:
            from .families.zeroinflated import zi_loglik

            pi = self.zi_prob.to_numpy()[rows]
            return zi_loglik(fam, y, mu, wt, pi[:, None] if eta.ndim == 2 else pi)
        return -0.5 * fam.minus2loglik(y, mu, wt)

    def _mean_variance(self) -> tuple[np.ndarray, np.ndarray]:
        """The response's mean and variance at the fitted rows: (1 - pi) mu and
        (1 - pi)(V(mu) + pi mu^2) with zero-inflation."""
        d, fam = self.design, self.family
        wt = np.ones(d.n) if d.weights is None else d.weights
        mu = fam.linkinv(self._eta)
        var = fam.variance(mu) / wt
        if self.zi_prob is not None:
            pi = self.zi_prob.to_numpy()
            return (1 - pi) * mu, (1 - pi) * (var + pi * mu * mu)
        return mu, var

    @property
    def fitted(self) -> pd.Series:
        """Fitted means on the response scale, the random effects at their modes (with
        zero-inflation: (1 - pi) mu)."""
        return pd.Series(self._mean_variance()[0], index=self.design.index, name="fitted")

    def residuals(self, type: str | None = None) -> pd.Series:
        """Residuals of the kinds lme4 offers: ``"deviance"`` (the default), ``"pearson"``,
        ``"response"`` (y - fitted) and ``"working"``. Zero-inflated models have no deviance or
        working residuals (their likelihood is a mixture; glmmTMB has none either): their
        default is ``"pearson"``, and asking for the others is an error.

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
        mean, var = self._mean_variance()
        if type is None:
            type = "deviance" if self.zi is None else "pearson"
        if self.zi is not None and type in ("deviance", "working"):
            raise DataError(
                f"a zero-inflated model has no {type} residuals (its likelihood is a mixture of a "
                "zero and the count model); use 'pearson' or 'response'"
            )
        if type == "deviance":
            r = np.sign(d.y - mean) * np.sqrt(np.maximum(fam.dev_resid(d.y, mean, wt), 0.0))
        elif type == "pearson":
            r = (d.y - mean) / np.sqrt(var)
        elif type == "response":
            r = d.y - mean
        elif type == "working":
            r = (d.y - mean) / fam.mu_eta(self._eta)
        else:
            raise DataError(f"type must be 'deviance', 'pearson', 'response' or 'working', not {type!r}")
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
