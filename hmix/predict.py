"""Predictions for new data, coded through the formulaic ModelSpecs kept at fit time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .design import _finite, _names_in, _vector
from .errors import DataError
from .formula import as_code
from .remat import ReTerm

if TYPE_CHECKING:
    from .results import MixedModel

__all__ = ["predict"]

_NEW_LEVELS = ("population", "nan", "error")
OFFSET_NEEDED = (
    "the model was fitted with an offset= argument; pass offset= for the rows of newdata too "
    "(or put the offset in the formula, offset(...), so that newdata's columns give it)"
)


def _check_levels(spec: Any, data: pd.DataFrame) -> None:
    """formulaic codes an unseen category as the reference level; refuse it instead."""
    for key, (kind, state) in spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical":
            continue
        cols = _names_in(key, data.columns)
        if len(cols) != 1:
            continue
        (col,) = cols
        known = {str(c) for c in state.get("categories", [])}
        unseen = sorted({str(v) for v in data[col].dropna().unique()} - known)
        if unseen:
            raise DataError(
                f"'{col}' has levels the model was not fitted with: {', '.join(unseen[:5])}"
                + (" ..." if len(unseen) > 5 else "")
                + f"; the fitted levels are {', '.join(sorted(known))}"
            )


def _group_labels(term: ReTerm, data: pd.DataFrame) -> pd.Index:
    """Each row's level label of the term's grouping factor (``"a:b"`` for an interaction)."""
    parts = [data[c].astype(str).to_numpy(dtype=object) for c in term.group_columns]
    labels = parts[0]
    for p in parts[1:]:
        labels = labels + ":" + p
    return pd.Index(labels)


def _level_index(term: ReTerm, data: pd.DataFrame) -> np.ndarray:
    """Index of each row's level in the fitted term (-1 for a level the fit has not seen)."""
    lookup = pd.Index(term.levels.astype(str))
    return np.asarray(lookup.get_indexer(_group_labels(term, data)), dtype=np.int64)


def _complete_rows(model: MixedModel, newdata: pd.DataFrame, random: bool, hint: str) -> np.ndarray:
    """Mask of the rows of ``newdata`` with every variable the formula uses (and, with ``random``,
    the grouping columns, whose absence is an error that ends with ``hint``)."""
    d = model.design
    formula = d.formula
    exprs = [formula.fixed] + [as_code(o) for o in formula.offsets]
    if random:
        exprs += [b.lhs for b in formula.bars]
    used: set[str] = set()
    for expr in exprs:
        used |= _names_in(expr, newdata.columns)
    if random:
        for t in d.terms:
            missing_cols = [c for c in t.group_columns if c not in newdata.columns]
            if missing_cols:
                raise DataError(
                    f"newdata has no column {missing_cols[0]!r} for the random effects of {t.group}; {hint}"
                )
            used |= set(t.group_columns)
    if not used:
        return np.ones(len(newdata), bool)
    return ~np.array(newdata[sorted(used)].isna().any(axis=1))


def predict(
    model: MixedModel,
    newdata: pd.DataFrame | None = None,
    *,
    random: bool = True,
    new_levels: str = "population",
    type: str = "response",
    offset: Any = None,
) -> pd.Series:
    """Predictions; see ``hmix.LinearMixedModel.predict``."""
    if new_levels not in _NEW_LEVELS:
        raise ValueError(f"new_levels must be one of {_NEW_LEVELS}, not {new_levels!r}")
    if type not in ("response", "link"):
        raise ValueError(f"type must be 'response' or 'link', not {type!r}")
    d = model.design
    if newdata is None:
        eta = d.X @ model.beta + (d.offset if d.offset is not None else 0.0)
        if random:
            for t, b in zip(d.terms, model._b):
                eta = eta + t.contribution(b)
        return _on_scale(model, pd.Series(eta, index=d.index, name="predicted"), type)
    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, not {newdata.__class__.__name__}")
    if d.offset_arg and offset is None:
        raise DataError(OFFSET_NEEDED)
    complete = _complete_rows(model, newdata, random, "add it, or predict with random=False")
    frame = newdata.loc[complete]
    out = np.full(len(newdata), np.nan)
    if len(frame):
        out[complete] = _linear_predictor(model, frame, random, new_levels)
    if offset is not None:
        out = out + _vector(offset, newdata, "offset")
    return _on_scale(model, pd.Series(out, index=newdata.index, name="predicted"), type)


def _fixed_eta(model: MixedModel, frame: pd.DataFrame) -> np.ndarray:
    """X beta plus the formula's offset(...) terms on complete rows of new data."""
    d = model.design
    _check_levels(d.fixed_spec, frame)
    X = d.fixed_spec.get_model_matrix(frame, na_action="ignore")
    cols = ["(Intercept)" if c == "Intercept" else str(c) for c in X.columns]
    X = pd.DataFrame(np.asarray(X, dtype=float), columns=cols)[list(d.fixef_names)]
    _finite(X.to_numpy(), list(X.columns), "fixed-effects column", frame.index)
    eta = X.to_numpy() @ model.beta
    from formulaic import model_matrix

    for expr in d.formula.offsets:
        eta = eta + np.asarray(model_matrix("0 + " + as_code(expr), frame), dtype=float)[:, 0]
    return np.asarray(eta, dtype=float)


def _re_columns(term: ReTerm, frame: pd.DataFrame) -> np.ndarray:
    """The term's model-matrix columns (n, k) on complete rows of new data."""
    _check_levels(term.spec, frame)
    return np.asarray(term.spec.get_model_matrix(frame, na_action="ignore"), dtype=float)


def _linear_predictor(model: MixedModel, frame: pd.DataFrame, random: bool, new_levels: str) -> np.ndarray:
    d = model.design
    eta = _fixed_eta(model, frame)
    if not random:
        return eta
    for t, b in zip(d.terms, model._b):
        z = _re_columns(t, frame)
        idx = _level_index(t, frame)
        new = idx < 0
        if new.any() and new_levels == "error":
            unseen = sorted(
                {
                    str(v)
                    for v in np.asarray(frame[list(t.group_columns)].astype(str).agg(":".join, axis=1))[new]
                }
            )
            raise DataError(
                f"levels of {t.group} the model was not fitted with: {', '.join(unseen[:5])}; "
                "pass new_levels='population' to predict them at the population level"
            )
        bb = b.reshape(t.nlevels, t.k)[np.where(new, 0, idx)]
        contrib = np.einsum("ij,ij->i", z, bb)
        contrib[new] = np.nan if new_levels == "nan" else 0.0
        eta = eta + contrib
    return eta


def _on_scale(model: MixedModel, eta: pd.Series, type: str) -> pd.Series:
    family = getattr(model, "family", None)
    if family is None or type == "link":
        return eta
    return pd.Series(family.linkinv(eta.to_numpy()), index=eta.index, name=eta.name)
