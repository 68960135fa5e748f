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
    zi = getattr(model, "zi", None)
    types = ("response", "link", "conditional", "zi") if zi is not None else ("response", "link")
    if type not in types:
        raise DataError(
            f"type must be one of {types}, not {type!r}"
            + (
                "; 'conditional' and 'zi' are for zero-inflated models"
                if type in ("conditional", "zi")
                else ""
            )
        )
    if se_fit or interval is not None:
        from .predint import with_intervals, zero_inflated_intervals

        eta = predict(model, newdata, random=random, new_levels=new_levels, type="link", offset=offset)
        assert isinstance(eta, pd.Series)
        if zi is not None and type in ("response", "zi"):
            return zero_inflated_intervals(model, newdata, eta, random, type, interval, level)
        # (a zero-inflated model's "conditional" is the count part's mean: its response scale)
        scale = "response" if type == "conditional" else type
        return with_intervals(model, newdata, eta, random, scale, interval, level)
    if zi is not None and type in ("response", "zi"):
        return _zero_inflated(model, newdata, random, new_levels, type, offset)
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


def _zero_inflated(
    model: MixedModel, newdata: pd.DataFrame | None, random: bool, new_levels: str, type: str, offset: Any
) -> pd.Series:
    """A zero-inflated model's mean (1 - pi) mu (``type="response"``) or pi (``"zi"``)."""
    from scipy.special import expit

    zi = model.zi  # type: ignore[attr-defined]
    if newdata is None:
        X_zi, index = zi.X, model.design.index
    else:
        X_zi, index = zi.matrix(newdata), newdata.index
    pi = expit(X_zi @ model.zi_beta)  # type: ignore[attr-defined]
    if type == "zi":
        return pd.Series(pi, index=index, name="predicted")
    mu = predict(model, newdata, random=random, new_levels=new_levels, type="conditional", offset=offset)
    assert isinstance(mu, pd.Series)
    return pd.Series((1 - pi) * mu.to_numpy(), index=index, name="predicted")


def _on_scale(model: MixedModel, eta: pd.Series, type: str) -> pd.Series:
    if type == "link":
        return eta
    return pd.Series(model.family.linkinv(eta.to_numpy()), index=eta.index, name=eta.name)
