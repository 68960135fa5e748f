"""Per-level coefficients (lme4's ``coef``) and the fixed-effects tests behind statsmodels' names.

``coef``: for each grouping factor, one row per level with every fixed effect, to which the
level's conditional modes are added where a random effect has the fixed effect's name. A random
effect without a fixed effect of its name (``(Days | Subject)`` with no ``Days`` in the fixed
part) gets a column of its own, first, holding the conditional mode alone, as lme4's.

``fixef_tests``: what statsmodels' ``tvalues``, ``pvalues`` and ``conf_int`` report. For LMMs the
t statistics are referred to Satterthwaite's df (lmerTest's default; statsmodels' MixedLM uses
the normal distribution, which is anti-conservative with few groups); for GLMMs, z statistics and
the normal distribution (lme4's and statsmodels').
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .errors import HmixError

if TYPE_CHECKING:
    from .results import MixedModel

__all__ = ["coef", "fixef_tests"]


def coef(model: MixedModel) -> dict[str, pd.DataFrame]:
    """Fixed effects plus each level's conditional modes, per grouping factor.

    See ``hmix.MixedModel.coef``.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> coef(m)["Subject"].loc["309"].round(2).tolist()
    [211.01, 1.85]
    """
    fixef = model.fixef
    out = {}
    for group, modes in model.ranef().items():
        extra = [c for c in dict.fromkeys(modes.columns) if c not in fixef.index]
        columns = extra + list(fixef.index)
        base = np.concatenate([np.zeros(len(extra)), fixef.to_numpy()])
        values = np.tile(base, (len(modes), 1))
        position = {c: j for j, c in enumerate(columns)}
        for j, c in enumerate(modes.columns):  # (a name twice, as in (1 | g) + (1 | g): both add)
            values[:, position[c]] += modes.iloc[:, j].to_numpy()
        out[group] = pd.DataFrame(values, index=modes.index, columns=columns)
    return out


def fixef_tests(model: MixedModel, alpha: float = 0.05) -> pd.DataFrame:
    """Estimates, standard errors, statistics, p-values and confidence limits of the fixed effects.

    Parameters
    ----------
    model : MixedModel
    alpha : float, default 0.05
        The limits are the 1 - alpha interval: estimate -+ the t (Satterthwaite df, LMMs) or
        normal (GLMMs) quantile times the standard error.

    Returns
    -------
    pandas.DataFrame
        Indexed by fixed effect: ``estimate``, ``std_error``, ``statistic``, ``df`` (inf for
        GLMMs), ``p_value``, ``lower``, ``upper``.

    Examples
    --------
    >>> import hmix
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> fixef_tests(m)[["df", "lower", "upper"]].round(2)
                   df   lower   upper
    (Intercept)  17.0  237.01  265.80
    Days         17.0    7.21   13.73
    """
    if not 0 < alpha < 1:
        raise HmixError(f"alpha must be between 0 and 1 (0.05 for 95% intervals), not {alpha!r}")
    from .results import LinearMixedModel

    if isinstance(model, LinearMixedModel):
        table = model.coef_table(ddf="satterthwaite")
        df = table["df"].to_numpy()
    else:
        table = model.coef_table()
        df = np.full(len(table), np.inf)
    est, se = table["estimate"].to_numpy(), table["std_error"].to_numpy()
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return pd.DataFrame(
        {
            "estimate": est,
            "std_error": se,
            "statistic": table["statistic"].to_numpy(),
            "df": df,
            "p_value": table["p_value"].to_numpy(),
            "lower": est - half,
            "upper": est + half,
        },
        index=table.index,
    )
