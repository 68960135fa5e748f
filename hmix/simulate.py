"""Simulated responses from a fitted model, and posterior-predictive checks built on them.

New random effects are drawn from their fitted distribution for every simulation (lme4's
``simulate(m, re.form = NA)``, ``use.u = FALSE``), so the simulations follow the model's
marginal distribution. Everything is drawn in whole arrays: one draw per term for all levels and
simulations, one for the noise of all rows and simulations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .columns import as_vector, names_in, unknown_names
from .errors import DataError
from .formula import as_code
from .predict import OFFSET_NEEDED, fixed_eta

if TYPE_CHECKING:
    from .results import MixedModel

__all__ = ["simulate", "ppc", "PPCResult"]

Seed = int | np.random.Generator | None


def _rows_of_fit(
    model: MixedModel,
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, int]], np.ndarray]:
    """Fixed part of eta, per term (z, level codes, number of levels), and prior weights."""
    d = model.design
    eta = d.X @ model.beta + (0.0 if d.offset is None else d.offset)
    terms = [(t.z, t.refs, t.nlevels) for t in d.terms]
    return eta, terms, np.ones(d.n) if d.weights is None else d.weights


def _rows_of_newdata(
    model: MixedModel, newdata: pd.DataFrame, weights: Any, offset: Any
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray, int]], np.ndarray]:
    """As ``_rows_of_fit`` for new data, plus the mask of its complete rows.

    Levels the fit has seen keep their fitted codes and unseen ones follow them, so that
    simulating on the fitting data draws exactly what simulating without newdata draws.
    """
    d = model.design
    complete = d.complete_rows(newdata, random=True, hint="add it: simulations draw an effect for each level")
    cbind = None if model.has_scale else d.formula.cbind
    if cbind is not None and weights is None:
        for arg in cbind:
            absent = unknown_names(as_code(arg), newdata.columns)
            if absent:
                raise DataError(
                    f"newdata has no column {absent[0]!r} of cbind() argument '{arg}', which gives "
                    "the number of trials; add it, or pass weights= the number of trials"
                )
            needed = names_in(as_code(arg), newdata.columns)
            if needed:
                complete &= ~np.array(newdata[sorted(needed)].isna().any(axis=1))
    elif d.weights is not None and weights is None:
        raise DataError(
            "the model was fitted with prior weights (binomial: the number of trials); pass "
            "weights= for the rows of newdata"
        )
    if d.offset_arg and offset is None:
        raise DataError(OFFSET_NEEDED)
    wt = np.ones(len(newdata)) if weights is None else as_vector(weights, newdata, "weights")
    off = None if offset is None else as_vector(offset, newdata, "offset")
    for arr in (wt, off):
        if arr is not None:
            complete &= np.isfinite(arr)
    frame = newdata.loc[complete]
    wt = wt[complete]
    if (wt <= 0).any():
        raise DataError("weights must be positive and finite")
    if cbind is not None and weights is None:
        from formulaic import model_matrix

        succ, fail = (
            np.asarray(model_matrix("0 + " + as_code(arg), frame), dtype=float)[:, 0] for arg in cbind
        )
        wt = succ + fail
    eta = fixed_eta(model, frame) if len(frame) else np.zeros(0)
    if off is not None:
        eta = eta + off[complete]
    terms = []
    for t in d.terms:
        z = d.re_columns(t, frame) if len(frame) else np.zeros((0, t.k))
        codes = d.level_index(t, frame)
        new = codes < 0
        unseen, _ = pd.factorize(d.group_labels(t, frame)[new], sort=True)
        codes[new] = t.nlevels + unseen
        terms.append((z, codes, t.nlevels + int(unseen.max(initial=-1)) + 1))
    return complete, np.asarray(eta, dtype=float), terms, np.asarray(wt, dtype=float)


def simulate(
    model: MixedModel,
    n: int = 1,
    seed: Seed = None,
    newdata: pd.DataFrame | None = None,
    *,
    weights: Any = None,
    offset: Any = None,
) -> pd.DataFrame:
    """Simulated responses; see ``hmix.MixedModel.simulate``.

    Parameters
    ----------
    model : MixedModel
    n : int
        Number of simulations.
    seed : int or numpy.random.Generator, optional
    newdata : pandas.DataFrame, optional
    weights, offset : str or array-like, optional
        For the rows of ``newdata`` only.

    Returns
    -------
    pandas.DataFrame
        Columns ``sim_1`` ... ``sim_n``.

    Examples
    --------
    >>> import hmix
    >>> from hmix.simulate import simulate
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> simulate(m, n=3, seed=1).shape
    (30, 3)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"n must be a positive whole number of simulations, not {n!r}")
    rng = np.random.default_rng(seed)
    if newdata is None:
        if weights is not None or offset is not None:
            raise DataError(
                "weights= and offset= describe the rows of newdata; the fitted rows use the fit's own"
            )
        eta0, terms, wt = _rows_of_fit(model)
        index, complete = model.design.index, np.ones(model.design.n, bool)
    else:
        if not isinstance(newdata, pd.DataFrame):
            raise DataError(f"newdata must be a pandas DataFrame, not {newdata.__class__.__name__}")
        complete, eta0, terms, wt = _rows_of_newdata(model, newdata, weights, offset)
        index = newdata.index
    sims = _draw(model, rng, int(n), eta0, terms, wt)
    out = np.full((len(index), int(n)), np.nan)
    out[complete] = sims
    return pd.DataFrame(out, index=index, columns=[f"sim_{i + 1}" for i in range(int(n))])


def _draw(
    model: MixedModel,
    rng: np.random.Generator,
    nsim: int,
    eta0: np.ndarray,
    terms: list[tuple[np.ndarray, np.ndarray, int]],
    wt: np.ndarray,
) -> np.ndarray:
    """Responses (rows, nsim): random effects for every level, then the response's noise."""
    eta = np.repeat(eta0[:, None], nsim, axis=1)
    for (z, codes, nlevels), T in zip(terms, model.thetamap.tmats(model.theta)):
        k = z.shape[1]
        b = np.einsum("ab,lbs->las", model.cov_scale * T, rng.standard_normal((nlevels, k, nsim)))
        for a in range(k):
            eta += z[:, a, None] * b[codes, a, :]
    return model.family.sample(model.family.linkinv(eta), wt, model.cov_scale, rng)


_STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda y: np.mean(y, axis=0),
    "sd": lambda y: np.std(y, axis=0, ddof=1),
    "var": lambda y: np.var(y, axis=0, ddof=1),
    "min": lambda y: np.min(y, axis=0),
    "max": lambda y: np.max(y, axis=0),
    "median": lambda y: np.median(y, axis=0),
    "zeros": lambda y: np.sum(y == 0, axis=0).astype(float),
}


@dataclass(frozen=True, eq=False)
class PPCResult:
    """A statistic of the observed response against its distribution over simulated responses.

    Attributes
    ----------
    stat : str
        The statistic's name.
    observed : float
        Its value on the observed response.
    simulated : ndarray
        Its value on each simulated response.

    Examples
    --------
    >>> import numpy as np
    >>> from hmix.simulate import PPCResult
    >>> r = PPCResult("mean", 1.0, np.array([0.0, 0.5, 2.0, 3.0]))
    >>> r.p_upper, r.p_lower, r.p_value
    (0.5, 0.5, 1.0)
    """

    stat: str
    observed: float
    simulated: np.ndarray

    @property
    def p_upper(self) -> float:
        """Share of simulations with a statistic at least the observed one."""
        return float(np.mean(self.simulated >= self.observed))

    @property
    def p_lower(self) -> float:
        """Share of simulations with a statistic at most the observed one."""
        return float(np.mean(self.simulated <= self.observed))

    @property
    def p_value(self) -> float:
        """Two-sided: twice the smaller tail share, at most 1. Small values flag misfit."""
        return float(min(1.0, 2 * min(self.p_upper, self.p_lower)))

    def to_frame(self) -> pd.DataFrame:
        """One row: the statistic, observed value, simulated mean and 2.5/97.5% points, p-values."""
        lo, hi = np.quantile(self.simulated, [0.025, 0.975])
        return pd.DataFrame(
            [
                {
                    "stat": self.stat,
                    "observed": self.observed,
                    "simulated_mean": float(np.mean(self.simulated)),
                    "q025": lo,
                    "q975": hi,
                    "p_upper": self.p_upper,
                    "p_value": self.p_value,
                    "n": len(self.simulated),
                }
            ]
        )

    def __repr__(self) -> str:
        lo, hi = np.quantile(self.simulated, [0.025, 0.975])
        return (
            f"PPC of {self.stat}: observed {self.observed:.6g}, simulated 95% range "
            f"[{lo:.6g}, {hi:.6g}] over {len(self.simulated)} simulations, p = {self.p_value:.3g}"
        )


def ppc(
    model: MixedModel,
    stat: str | Callable[[np.ndarray], float] = "mean",
    n: int = 1000,
    seed: Seed = None,
) -> PPCResult:
    """A statistic of the observed response against simulations; see ``hmix.MixedModel.ppc``.

    Parameters
    ----------
    model : MixedModel
    stat : str or callable
        ``"mean"``, ``"sd"``, ``"var"``, ``"min"``, ``"max"``, ``"median"``, ``"zeros"``, or a
        function of the response vector returning a number.
    n : int
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    PPCResult

    Examples
    --------
    >>> import hmix
    >>> from hmix.simulate import ppc
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> ppc(m, "sd", n=200, seed=1).p_value > 0.05
    True
    """
    if isinstance(stat, str):
        if stat not in _STATS:
            raise DataError(
                f"stat must be one of {sorted(_STATS)} or a function of the response, not {stat!r}"
            )
        fn = _STATS[stat]
        name = stat
    elif callable(stat):
        name = getattr(stat, "__name__", "statistic")

        def fn(y: np.ndarray) -> np.ndarray:
            return np.array([_scalar(stat, y[:, j]) for j in range(y.shape[1])])

    else:
        raise DataError(f"stat must be a name or a function of the response, not {type(stat).__name__}")
    sims = simulate(model, n, seed).to_numpy()
    observed = float(fn(model.design.y[:, None])[0])
    return PPCResult(name, observed, np.asarray(fn(sims), dtype=float))


def _scalar(stat: Callable[[np.ndarray], float], y: np.ndarray) -> float:
    value = np.asarray(stat(y), dtype=float)
    if value.shape not in ((), (1,)):
        raise DataError(f"stat must return one number per response vector, it returned shape {value.shape}")
    return float(value.reshape(()))
