"""The zero-inflation part of a count model: glmmTMB's ``ziformula``.

``logit(pi) = X_zi beta_zi``: pi is the probability that an observation is a structural zero.
This module builds X_zi on the model's rows from a one-sided formula (``"~ 1"``, ``"~ x"``) and
codes new data the same way; the likelihood is in ``hmix.families.zeroinflated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .columns import check_finite, evaluate, isna_mask, names_in, new_matrix, no_column, unknown_names
from .design import Design
from .errors import DataError, FormulaError
from .families import Family, NegativeBinomial, Poisson

__all__ = ["ZeroInflation"]


@dataclass(frozen=True, eq=False)
class ZeroInflation:
    """The zero-inflation part: its formula, model matrix on the model's rows, column names and
    the formulaic spec that codes new data.

    Examples
    --------
    >>> import pandas as pd, hmix
    >>> from hmix.zeroinflation import ZeroInflation
    >>> df = pd.DataFrame({"y": [0, 1, 0, 3, 0, 2], "g": list("aabbcc"), "x": [1.0, 2, 3, 4, 5, 6]})
    >>> zi = ZeroInflation.build("~ x", df, hmix.build_design("y ~ 1 + (1 | g)", df), hmix.Poisson())
    >>> zi.names, zi.X.shape
    (('(Intercept)', 'x'), (6, 2))
    """

    formula: str
    X: np.ndarray
    names: tuple[str, ...]
    spec: Any

    @classmethod
    def build(cls, formula: str, data: pd.DataFrame, design: Design, family: Family) -> ZeroInflation:
        """X_zi on the rows the model uses (``design.index``)."""
        if not isinstance(family, (Poisson, NegativeBinomial)):
            raise DataError(
                "zero-inflation is for counts: use family='poisson' or 'negative_binomial', "
                f"not {family.name}"
            )
        if not isinstance(formula, str) or not formula.strip().startswith("~"):
            raise FormulaError(
                f"zi_formula is one-sided, as glmmTMB's ziformula: '~ 1' or '~ x', not {formula!r}"
            )
        expr = formula.strip()[1:].strip() or "1"
        if "|" in expr:
            raise FormulaError(
                "the zero-inflation part takes fixed effects only: no (... | g) terms", formula
            )
        for name in unknown_names(expr, data.columns):
            raise no_column(name, formula, data.columns)
        frame = data.loc[design.index]
        used = sorted(names_in(expr, frame.columns))
        missing = np.zeros(len(frame), bool)
        for c in used:
            missing |= isna_mask(frame[c])
        if missing.any():
            raise DataError(
                f"the zero-inflation formula's columns ({', '.join(used)}) have missing values in "
                f"{int(missing.sum())} rows the model uses; drop those rows from the data first"
            )
        X, names, spec = evaluate(expr, frame, formula)
        check_finite(X, names, "zero-inflation column", frame.index)
        return cls(formula=formula, X=np.asarray(X, dtype=float), names=tuple(names), spec=spec)

    def matrix(self, newdata: pd.DataFrame) -> np.ndarray:
        """X_zi for new rows, coded as the fitting data were."""
        return new_matrix(self.spec, newdata)
