"""Plots of a fitted model: caterpillar, shrinkage, posterior-predictive check, residuals; and
of the estimates under several priors.

matplotlib is an optional extra (``pip install 'hmix[plot]'``), imported when a plot is drawn.
Every function draws on ``ax`` (a new figure's axes when None) and returns the Axes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError, HmixError

if TYPE_CHECKING:
    from .results import MixedModel
    from .sensitivity import PriorSensitivity
    from .simulate import PPCResult

__all__ = ["caterpillar", "shrinkage", "ppc", "residuals", "prior_sensitivity"]


def _axes(ax: Any) -> Any:
    """``ax``, or the axes of a new pyplot figure; a clear error without matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise HmixError(
            "hmix.plot needs matplotlib, which is not installed: pip install 'hmix[plot]' "
            "(or pip install matplotlib)"
        ) from None
    if ax is None:
        _, ax = plt.subplots()
    return ax


def _group_and_term(model: MixedModel, group: str | None, term: str | None) -> tuple[str, str]:
    """The grouping factor (default: the first, lme4's order) and term (default: its first)."""
    terms = model.design.terms
    groups = [t.group for t in terms]
    if group is None:
        group = groups[0]
    elif group not in groups:
        raise DataError(
            f"the model has no grouping factor {group!r}; its grouping factors are "
            + ", ".join(repr(g) for g in dict.fromkeys(groups))
        )
    names = [n for t in terms if t.group == group for n in t.names]
    if term is None:
        term = names[0]
    elif term not in names:
        raise DataError(
            f"{group} has no random-effects term {term!r}; its terms are {', '.join(map(repr, names))}"
        )
    return group, term


def caterpillar(model: MixedModel, group: str | None = None, term: str | None = None, ax: Any = None) -> Any:
    """Conditional modes of one term's random effects with +-1.96 conditional SD, sorted.

    Parameters
    ----------
    model : MixedModel
    group : str, optional
        Grouping factor (default: the first, lme4's order).
    term : str, optional
        Random-effects column, such as ``"(Intercept)"`` or ``"Days"`` (default: the first).
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One row per level, from the smallest conditional mode at the bottom to the largest.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> ax = hmix.plot.caterpillar(m)
    >>> len(ax.get_yticklabels())
    6
    >>> plt.close("all")
    """
    group, term = _group_and_term(model, group, term)
    tab = model.ranef_table()
    tab = tab[(tab["group"] == group) & (tab["term"] == term)].sort_values("condval", kind="stable")
    ax = _axes(ax)
    pos = np.arange(len(tab))
    condval = tab["condval"].to_numpy(dtype=float)
    ax.errorbar(condval, pos, xerr=1.96 * tab["condsd"].to_numpy(dtype=float), fmt="o", ms=4, capsize=0)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(pos, labels=[str(v) for v in tab["level"]])
    ax.set_xlabel(f"conditional mode of {term} (±1.96 conditional SD)")
    ax.set_ylabel(group)
    ax.set_title(f"{group}: {term}")
    return ax


def shrinkage(model: MixedModel, group: str | None = None, term: str | None = None, ax: Any = None) -> Any:
    """Each level's own estimate (no pooling) with an arrow to its partial-pooling estimate.

    The horizontal line is the population estimate (complete pooling); the arrows show how far
    the model pulls each level toward it. Levels are sorted by their own estimate; a level whose
    own fit is not estimable shows its partial-pooling estimate alone.

    Parameters
    ----------
    model : MixedModel
    group : str, optional
        Grouping factor (default: the first, lme4's order).
    term : str, optional
        Random-effects column (default: the first).
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> ax = hmix.plot.shrinkage(m)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['no pooling', 'partial pooling', 'complete pooling']
    >>> plt.close("all")
    """
    group, term = _group_and_term(model, group, term)
    tab = model.shrinkage(group)
    tab = tab[tab["term"] == term].sort_values("no_pooling", kind="stable", na_position="last")
    ax = _axes(ax)
    pos = np.arange(len(tab), dtype=float)
    own = tab["no_pooling"].to_numpy(dtype=float)
    partial = tab["partial_pooling"].to_numpy(dtype=float)
    ok = np.isfinite(own)
    ax.scatter(pos[ok], own[ok], facecolors="none", edgecolors="C0", label="no pooling", zorder=3)
    ax.scatter(pos, partial, color="C1", label="partial pooling", zorder=3)
    ax.quiver(
        pos[ok],
        own[ok],
        np.zeros(ok.sum()),
        partial[ok] - own[ok],
        angles="xy",
        scale_units="xy",
        scale=1,
        color="grey",
        width=0.004,
    )
    ax.axhline(float(tab["complete_pooling"].iloc[0]), color="C2", ls="--", label="complete pooling")
    ax.set_xticks(pos, labels=[str(v) for v in tab["level"]], rotation=90 if len(tab) > 12 else 0)
    ax.set_xlabel(group)
    ax.set_ylabel(term)
    ax.set_title(f"Shrinkage of {term} by {group}")
    ax.legend()
    return ax


def ppc(
    model_or_result: MixedModel | PPCResult,
    stat: str | Callable[[np.ndarray], float] = "mean",
    n: int = 1000,
    seed: int | np.random.Generator | None = None,
    ax: Any = None,
    bins: int = 30,
) -> Any:
    """Histogram of a statistic over simulated responses, with the observed value as a line.

    Parameters
    ----------
    model_or_result : MixedModel or PPCResult
        A fitted model (the check is run with ``stat``, ``n`` and ``seed``) or the result of
        ``hmix.MixedModel.ppc``.
    stat, n, seed
        As ``hmix.MixedModel.ppc``; ignored when a result is given.
    ax : matplotlib.axes.Axes, optional
    bins : int, default 30

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> ax = hmix.plot.ppc(m, "sd", n=100, seed=1)
    >>> len(ax.patches)
    30
    >>> plt.close("all")
    """
    from .simulate import PPCResult

    result = model_or_result if isinstance(model_or_result, PPCResult) else model_or_result.ppc(stat, n, seed)
    ax = _axes(ax)
    ax.hist(result.simulated, bins=bins, color="C0", alpha=0.7, label="simulated")
    ax.axvline(result.observed, color="C3", lw=2, label="observed")
    ax.set_xlabel(result.stat)
    ax.set_ylabel("simulations")
    ax.set_title(f"Posterior-predictive check of {result.stat}: p = {result.p_value:.3g}")
    ax.legend()
    return ax


def residuals(model: MixedModel, ax: Any = None, smooth: bool = True) -> Any:
    """Pearson residuals against fitted values, with a zero line and a lowess smooth.

    Parameters
    ----------
    model : MixedModel
    ax : matplotlib.axes.Axes, optional
    smooth : bool, default True
        Add a lowess curve (statsmodels), which should stay near zero.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import hmix
    >>> m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> ax = hmix.plot.residuals(m)
    >>> len(ax.collections[0].get_offsets())
    30
    >>> plt.close("all")
    """
    fitted = model.fitted.to_numpy()
    resid = model.residuals("pearson").to_numpy()
    ax = _axes(ax)
    ax.scatter(fitted, resid, s=12, alpha=0.7)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    if smooth and len(fitted) > 3:
        from statsmodels.nonparametric.smoothers_lowess import lowess

        curve = lowess(resid, fitted)
        ax.plot(curve[:, 0], curve[:, 1], color="C3")
    ax.set_xlabel("fitted values")
    ax.set_ylabel("Pearson residuals")
    ax.set_title("Residuals vs fitted")
    return ax


def prior_sensitivity(
    result: PriorSensitivity, parameters: Sequence[str] | None = None, axes: Any = None
) -> Any:
    """One panel per parameter: its estimate under each prior (the fit without priors on top),
    fixed effects with +-1.96 SE; singular fits as open circles.

    Parameters
    ----------
    result : PriorSensitivity
        From ``hmix.prior_sensitivity``.
    parameters : list of str, optional
        Rows of ``result.estimates`` to draw (default: all).
    axes : sequence of matplotlib.axes.Axes, optional
        One per parameter (default: a new figure with a grid of panels).

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes
        The panels, one per parameter.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import hmix
    >>> s = hmix.prior_sensitivity("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff2"))
    >>> axes = hmix.plot.prior_sensitivity(s)
    >>> [ax.get_title() for ax in axes]
    ['(Intercept)', 'sd_(Intercept)|Batch', 'sigma']
    >>> plt.close("all")
    """
    est = result.estimates
    names = list(est.index) if parameters is None else list(parameters)
    missing = [p for p in names if p not in est.index]
    if missing:
        raise DataError(f"no parameter {missing[0]!r} in the table; its parameters are {list(est.index)}")
    if axes is None:
        _axes(None)  # (matplotlib's presence, with the clear error)
        import matplotlib.pyplot as plt

        plt.close()
        ncol = min(3, len(names))
        nrow = -(-len(names) // ncol)
        fig, grid = plt.subplots(
            nrow, ncol, figsize=(4.2 * ncol, 0.5 + 0.45 * len(est.columns) * nrow), squeeze=False
        )
        for extra in grid.ravel()[len(names) :]:
            fig.delaxes(extra)
        panels = grid.ravel()[: len(names)]
    else:
        panels = np.atleast_1d(np.asarray(axes, dtype=object))
        if len(panels) != len(names):
            raise DataError(f"axes has {len(panels)} panels for {len(names)} parameters")
    labels = list(est.columns)
    y = np.arange(len(labels))[::-1]
    singular = result.singular.reindex(labels).to_numpy(dtype=bool)
    for ax, name in zip(panels, names):
        values = est.loc[name].to_numpy(dtype=float)
        if name in result.std_errors.index:
            half = 1.96 * result.std_errors.loc[name].to_numpy(dtype=float)
            ax.errorbar(values, y, xerr=half, fmt="none", ecolor="grey", lw=1)
        ax.scatter(values[~singular], y[~singular], color="C0", zorder=3)
        ax.scatter(values[singular], y[singular], facecolors="none", edgecolors="C3", zorder=3)
        ax.axvline(values[0], color="grey", lw=0.8, ls=":")
        ax.set_yticks(y)
        ax.set_yticklabels(labels)
        ax.set_title(name)
    panels[0].figure.tight_layout()
    return panels
