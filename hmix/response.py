"""The response of a formula: a column, an arithmetic expression, or cbind(successes, failures)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import check_finite, lme4_name, materialize
from .errors import DataError, FormulaError
from .formula import ParsedFormula, as_code
from .remat import group_codes

__all__ = ["response"]


def response(
    parsed: ParsedFormula, data: pd.DataFrame, binary_ok: bool
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The response vector, the binomial trials of a cbind response, and the response's name."""
    text = parsed.text
    if parsed.cbind is not None:
        parts = []
        for arg in parsed.cbind:
            mm = materialize("0 + " + as_code(arg), data, text)
            vals = np.asarray(mm, dtype=float)
            if vals.shape[1] != 1:
                raise FormulaError(f"cbind() argument '{arg}' must be one numeric column", text)
            parts.append(vals[:, 0])
        succ, fail = parts
        check_finite(np.column_stack(parts), list(parsed.cbind), "cbind() argument", data.index)
        trials = succ + fail
        if (succ < 0).any() or (fail < 0).any():
            raise DataError("cbind(successes, failures) needs non-negative counts in both columns")
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(trials > 0, succ / np.where(trials > 0, trials, 1), 0.0)
        return y, trials, lme4_name(f"cbind({parsed.cbind[0]}, {parsed.cbind[1]})")
    name = parsed.response
    bare = name[1:-1] if name.startswith("`") and name.endswith("`") else name
    if bare in data.columns:
        col = data[bare]
        if col.dtype == bool:
            return col.to_numpy(dtype=float), None, bare
        if pd.api.types.is_numeric_dtype(col.dtype):
            return col.to_numpy(dtype=float), None, bare
        levels = pd.unique(col)
        if binary_ok and len(levels) <= 2:
            codes, lev = group_codes(data, (bare,))
            if len(lev) == 2:
                return codes.astype(float), None, bare
        raise DataError(
            f"the response '{bare}' is not numeric (dtype {col.dtype})"
            + ("; a binomial response may be 0/1, boolean, or a factor with two levels" if binary_ok else "")
        )
    # an expression on the left is arithmetic, as in R (incidence/size, log(y)), not a formula
    mm = materialize("0 + " + as_code(name), data, text)
    if mm.shape[1] != 1:
        raise DataError(f"the response '{name}' must be one numeric column, it gives {mm.shape[1]}")
    return np.asarray(mm, dtype=float)[:, 0], None, lme4_name(name)
