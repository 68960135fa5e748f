"""New data coded the way the fit coded its data: by value, against the fit's types and levels.

A factor seen as strings at fit time may come back as integers, categories or pandas' nullable
types (``2``, ``"2"``, ``Int64``, ``category``): each value is matched to the fit's level of the
same value, and the column is given the fit's dtype before formulaic's saved specs code it. A
value that names no fitted level is refused with the column and the levels expected, never coded
as the reference level.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .columns import names_in
from .errors import DataError
from .remat import ReTerm, group_codes

__all__ = ["ColumnCoding", "code_columns", "codings", "formulaic_types", "value_key"]


def value_key(value: Any) -> str:
    """A value's spelling for matching levels by value: ``2``, ``2.0``, ``"2"`` and ``"2.0"`` agree.

    Examples
    --------
    >>> value_key(2) == value_key("2") == value_key(2.0) == value_key("2.0")
    True
    >>> value_key(True), value_key("a")
    ('True', 'a')
    """
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return _number_key(number) if np.isfinite(number) else text
    if isinstance(value, numbers.Real):
        return _number_key(float(value))
    return str(value)


def _number_key(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 2**63 else repr(x)


def _numeric(dtype: Any) -> bool:
    return bool(pd.api.types.is_numeric_dtype(dtype)) and not pd.api.types.is_bool_dtype(dtype)


@dataclass(frozen=True, eq=False)
class ColumnCoding:
    """How one data column was typed at fit time, to read new data the same way.

    Attributes
    ----------
    name : hashable
        The column.
    dtype : object
        Its dtype in the data the model was fitted to.
    levels : list or None
        The fit's levels (values, in factor order) of a column used as a factor or grouping
        factor; ``None`` for a numeric column.

    Examples
    --------
    >>> import pandas as pd
    >>> c = ColumnCoding("period", pd.Series(["1", "2", "3"]).dtype, ["1", "2", "3"])
    >>> c.code(pd.Series([2, 3])).tolist()
    ['2', '3']
    """

    name: Hashable
    dtype: Any
    levels: list[Any] | None

    @cached_property
    def _exact(self) -> dict[Any, int]:
        return {v: i for i, v in enumerate(self.levels or [])}

    @cached_property
    def _by_key(self) -> dict[str, int]:
        keys: dict[str, int] = {}
        for i, v in enumerate(self.levels or []):
            k = value_key(v)
            keys[k] = -1 if k in keys else i  # two levels of one value ("1", "01"): exact matches only
        return keys

    def code(self, col: pd.Series, *, strict: bool = True) -> pd.Series:
        """``col`` with the fit's values and dtype.

        With ``strict``, a value that matches no fitted level (or a non-number in a numeric
        column) is a DataError; otherwise such values are kept as they are (the new levels of a
        grouping factor).
        """
        if self.levels is None:
            return self._numbers(col)
        values = col.to_numpy(dtype=object)
        codes, uniques = pd.factorize(values)  # (-1: a missing value)
        where = np.array([self._position(u) for u in uniques], dtype=np.int64)
        if strict and (where < 0).any():
            self._refuse(uniques[where < 0])
        at = np.where(codes >= 0, where[np.maximum(codes, 0)] if len(where) else -1, -1)
        out = values.copy()
        out[at >= 0] = np.asarray(self.levels, dtype=object)[at[at >= 0]]
        if not strict:
            return pd.Series(out, index=col.index, name=col.name)
        return self._typed(out, col.index, col.name)

    def _position(self, value: Any) -> int:
        exact = self._exact.get(value, -1) if isinstance(value, Hashable) else -1
        return exact if exact >= 0 else self._by_key.get(value_key(value), -1)

    def _refuse(self, unseen: np.ndarray) -> None:
        shown = ", ".join(repr(v) for v in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
        levels = self.levels or []
        expected = ", ".join(repr(v) for v in levels[:12]) + (" ..." if len(levels) > 12 else "")
        raise DataError(
            f"column '{self.name}' of newdata has values the model was not fitted with: {shown}; "
            f"the fitted levels are {expected}"
        )

    def _typed(self, mapped: np.ndarray, index: pd.Index, name: Hashable) -> pd.Series:
        if isinstance(self.dtype, pd.CategoricalDtype):
            return pd.Series(pd.Categorical(mapped, dtype=self.dtype), index=index, name=name)
        series = pd.Series(mapped, index=index, name=name, dtype=object)
        try:
            return series.astype(self.dtype)
        except (TypeError, ValueError):  # (missing values in an integer or boolean column)
            return series

    def _numbers(self, col: pd.Series) -> pd.Series:
        values = col
        if not _numeric(col.dtype) or getattr(col.dtype, "kind", "") == "c":
            try:
                values = pd.to_numeric(col.astype(object))
            except (TypeError, ValueError):
                values = col
        if not _numeric(values.dtype) or getattr(values.dtype, "kind", "") == "c":
            raise DataError(
                f"column '{self.name}' must be numeric, as it was in the data the model was "
                f"fitted to (it has dtype {col.dtype}); convert it, e.g. with pd.to_numeric"
            )
        if pd.api.types.is_integer_dtype(self.dtype) and not pd.api.types.is_integer_dtype(values.dtype):
            floats = values.to_numpy(dtype=float, na_value=np.nan)
            whole = np.isfinite(floats) & (floats == np.round(floats)) & (np.abs(floats) < 2**62)
            if whole.all():  # (so that C(x) of integers finds its levels)
                return pd.Series(floats.astype(np.int64), index=col.index, name=col.name)
        return values


def code_columns(
    codings: Mapping[str, ColumnCoding],
    newdata: pd.DataFrame,
    columns: Collection[str],
    *,
    strict: bool,
) -> pd.DataFrame:
    """``newdata`` with ``columns`` coded as at fit time (the caller's frame is not modified)."""
    todo = [c for c in columns if c in codings and c in newdata.columns]
    if not todo:
        return newdata
    frame = newdata.copy(deep=False)
    for c in todo:
        frame[c] = codings[c].code(newdata[c], strict=strict)
    return frame


def formulaic_types(frame: pd.DataFrame, used: Collection[str], dtypes: dict[str, Any]) -> pd.DataFrame:
    """``frame`` with pandas' nullable string columns as Python strings (``dtypes`` updated).

    formulaic codes ``string`` (``pd.NA``) columns as numbers, not as factors; ``object`` and
    pandas' default ``str`` it codes as factors, as R does.
    """
    nullable = [c for c in used if isinstance(dtypes[c], pd.StringDtype) and dtypes[c].na_value is pd.NA]
    if not nullable:
        return frame
    frame = frame.copy(deep=False)
    for c in nullable:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
        dtypes[c] = frame[c].dtype
    return frame


def codings(
    frame: pd.DataFrame,
    used: Collection[str],
    specs: list[Any],
    terms: list[ReTerm],
    dtypes: Mapping[str, Any],
) -> dict[str, ColumnCoding]:
    """How each column the formula uses was typed, to code new data by value.

    The levels come from the grouping factors and formulaic's categories where these have them
    (finding them again costs a third of a small model's design).
    """
    levels: dict[str, Any] = {t.group_columns[0]: t.levels for t in terms if len(t.group_columns) == 1}
    factors: set[str] = {c for t in terms for c in t.group_columns}
    for spec in specs:
        for key, (_, state) in spec.encoder_state.items():
            if "categories" in state:  # (C(x) of numbers is a factor too)
                cols = names_in(key, frame.columns)
                factors |= cols
                if len(cols) == 1:
                    levels.setdefault(next(iter(cols)), state["categories"])
    out = {}
    for c in used:
        numeric = pd.api.types.is_numeric_dtype(dtypes[c]) and not pd.api.types.is_bool_dtype(dtypes[c])
        if c not in levels and (c in factors or not numeric):
            levels[c] = group_codes(frame, (c,))[1]
        out[c] = ColumnCoding(c, dtypes[c], list(levels[c]) if c in levels else None)
    return out
