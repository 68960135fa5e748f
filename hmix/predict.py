"""Predictions for new data: the design codes the rows, this adds up the linear predictor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .columns import as_vector
from .errors import DataError

if TYPE_CHECKING:
    from .results import MixedModel

__all__ = ["predict", "fixed_eta", "NEW_LEVELS", "OFFSET_NEEDED"]

NEW_LEVELS = ("error", "population", "nan")
OFFSET_NEEDED = (
    "the model was fitted with an offset= argument; pass offset= for the rows of newdata too "
    "(or put the offset in the formula, offset(...), so that newdata's columns give it)"
)


def predict(
    model: MixedModel,
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
    """Predictions; see ``hmix.LinearMixedModel.predict`` (and ``hmix.predint`` for ``se_fit``
    and ``interval``).

    Examples
    --------
    >>> import hmix, pandas as pd
    >>> from hmix.predict import predict
    >>> m = hmix.lmer("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> new = pd.DataFrame({"Days": [0, 5], "Subject": [308, "NEW"]})
    >>> predict(m, new, new_levels="population").round(1).tolist()
    [253.7, 303.7]
    """
    if new_levels not in NEW_LEVELS:
        raise DataError(f"new_levels must be one of {NEW_LEVELS}, not {new_levels!r}")
    if type not in ("response", "link"):
        raise DataError(f"type must be 'response' or 'link', not {type!r}")
    if se_fit or interval is not None:
        from .predint import with_intervals

        eta = predict(model, newdata, random=random, new_levels=new_levels, type="link", offset=offset)
        assert isinstance(eta, pd.Series)
        return with_intervals(model, newdata, eta, random, type, interval, level)
    d = model.design
    if newdata is None:
        eta = d.X @ model.beta + (d.offset if d.offset is not None else 0.0)
        if random:
            for t, b in zip(d.terms, model.b):
                eta = eta + t.contribution(b)
        return _on_scale(model, pd.Series(eta, index=d.index, name="predicted"), type)
    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, not {newdata.__class__.__name__}")
    if d.offset_arg and offset is None:
        raise DataError(OFFSET_NEEDED)
    complete = d.complete_rows(newdata, random=random, hint="add it, or predict with random=False")
    frame = newdata.loc[complete]
    out = np.full(len(newdata), np.nan)
    if len(frame):
        out[complete] = _linear_predictor(model, frame, random, new_levels)
    if offset is not None:
        out = out + as_vector(offset, newdata, "offset")
    return _on_scale(model, pd.Series(out, index=newdata.index, name="predicted"), type)


def fixed_eta(model: MixedModel, frame: pd.DataFrame) -> np.ndarray:
    """X beta plus the formula's offset(...) terms on complete rows of new data."""
    d = model.design
    return np.asarray(d.fixed_matrix(frame) @ model.beta + d.offset_terms(frame), dtype=float)


def _linear_predictor(model: MixedModel, frame: pd.DataFrame, random: bool, new_levels: str) -> np.ndarray:
    d = model.design
    eta = fixed_eta(model, frame)
    if not random:
        return eta
    for t, b in zip(d.terms, model.b):
        z = d.re_columns(t, frame)
        idx = d.level_index(t, frame)
        new = idx < 0
        if new.any() and new_levels == "error":
            unseen = sorted(set(d.group_labels(t, frame)[new]))
            raise DataError(
                f"newdata has levels of {t.group} the model was not fitted with: "
                f"{', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}; pass "
                'new_levels="population" to predict them at the population level (lme4\'s '
                'allow.new.levels = TRUE), or new_levels="nan" to leave them out'
            )
        bb = b.reshape(t.nlevels, t.k)[np.where(new, 0, idx)]
        contrib = np.einsum("ij,ij->i", z, bb)
        contrib[new] = np.nan if new_levels == "nan" else 0.0
        eta = eta + contrib
    return eta


def _on_scale(model: MixedModel, eta: pd.Series, type: str) -> pd.Series:
    if type == "link":
        return eta
    return pd.Series(model.family.linkinv(eta.to_numpy()), index=eta.index, name=eta.name)
