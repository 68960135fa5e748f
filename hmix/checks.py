"""Checks of the data and the formula that name the problem and its fix before anything is fitted.

Each check raises a ``DataError`` or ``FormulaError`` (or warns with an ``HmixWarning``) with the
column or term at fault, so that bad input never reaches the engine as an exception from numpy,
pandas or formulaic, nor as a fit that means nothing.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import DataError, FormulaError, HmixWarning, user_stacklevel
from .formula import BarTerm, ParsedFormula

if TYPE_CHECKING:
    from .design import Design
    from .remat import ReTerm

__all__ = [
    "check_flag",
    "check_columns",
    "check_frame",
    "check_lmer_response",
    "check_magnitudes",
    "check_random_terms",
    "check_structure_columns",
    "warn_duplicated_terms",
]

# a weighted sum of squares above this leaves the engine's cross-products no room before overflow
_LARGEST_SQUARES = 1e300


def check_frame(data: object) -> None:
    """Refuse what is not a DataFrame with rows and columns.

    Examples
    --------
    >>> import pandas as pd
    >>> check_frame(pd.DataFrame({"y": []}))
    Traceback (most recent call last):
    ...
    hmix.errors.DataError: the data have no rows
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if data.shape[1] == 0:
        raise DataError(
            f"the data have no columns ({len(data)} rows and nothing in them); did reading the file fail?"
        )
    if len(data) == 0:
        raise DataError("the data have no rows")


def check_random_terms(parsed: ParsedFormula) -> None:
    """A mixed model needs a random-effects term; say how to write one, or where to go without.

    Examples
    --------
    >>> from hmix import parse_formula
    >>> check_random_terms(parse_formula("Reaction ~ Days"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hmix.errors.FormulaError: the formula has no random-effects term: add one such as (1 | g) ...
    """
    if not parsed.bars:
        raise FormulaError(
            "the formula has no random-effects term: add one such as (1 | g) for a random intercept "
            "per level of a grouping column g; for a model without random effects use statsmodels "
            "(statsmodels.formula.api.ols or glm)",
            parsed.text,
        )


def check_columns(data: pd.DataFrame, used: Collection[str], numeric: Collection[str]) -> dict[str, Any]:
    """Columns the formula uses: unique names, and types a model matrix can hold.

    Parameters
    ----------
    data : pandas.DataFrame
    used : collection of str
        Every column the formula names.
    numeric : collection of str
        The columns used in expressions (not only as grouping factors), which become numbers.

    Returns
    -------
    dict
        The dtype of each column the formula uses.
    """
    counts = Counter(data.columns)
    dups = sorted(str(c) for c in used if counts[c] > 1)
    if dups:
        raise DataError(
            f"the data have {counts[dups[0]]} columns named '{dups[0]}': a formula names a column, so "
            "each name must be unique; rename or drop the copies"
        )
    dtypes = {c: t for c, t in zip(data.columns, data.dtypes) if c in used}
    for c in sorted(numeric):
        dtype = dtypes[c]
        kind = getattr(dtype, "kind", "O")
        if kind in "biuf":  # (the common case, at a glance)
            continue
        if pd.api.types.is_complex_dtype(dtype):
            raise DataError(
                f"column '{c}' holds complex numbers; mixed models need real ones: use the real "
                "part (np.real) or the modulus (np.abs)"
            )
        if pd.api.types.is_timedelta64_dtype(dtype):
            raise DataError(
                f"column '{c}' holds durations (timedelta); convert it to a number of units, "
                f"e.g. df['{c}'].dt.total_seconds() / 3600 for hours"
            )
        if pd.api.types.is_datetime64_any_dtype(dtype):
            raise DataError(
                f"column '{c}' holds dates; convert it to a number, e.g. days since the first: "
                f"(df['{c}'] - df['{c}'].min()).dt.days, or to text for a factor"
            )
    return dtypes


def check_magnitudes(blocks: Sequence[tuple[Sequence[str], np.ndarray]], weights: np.ndarray | None) -> None:
    """Refuse values whose (weighted) squares overflow, naming the column and the fix.

    Parameters
    ----------
    blocks : sequence of (names, values)
        Columns (n, k) with their names: the response, the model matrices.
    weights : ndarray or None
        Prior weights.

    Examples
    --------
    >>> import numpy as np
    >>> check_magnitudes([(["x"], np.array([[1.0], [1e308]]))], None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hmix.errors.DataError: values too large: overflow in column 'x' (largest 1e+308); rescale it, ...
    """
    if weights is not None and len(weights) and not (1e-100 < float(weights.max()) < 1e100):
        # (the sums of squares and the log-likelihood's terms then lose their digits)
        raise DataError(
            f"the weights (largest {float(weights.max()):g}) are beyond what double precision can "
            "fit a mixed model at; rescale the weights, e.g. divide them by their mean (only their "
            "ratios matter to the estimates)"
        )
    for names, values in blocks:
        with np.errstate(over="ignore", invalid="ignore"):  # (einsum: no copy of a large X)
            plain = np.einsum("ij,ij->j", values, values)
            weighted = plain if weights is None else np.einsum("i,ij,ij->j", weights, values, values)
        too_large = np.flatnonzero(~(plain < _LARGEST_SQUARES))
        if len(too_large):
            j = int(too_large[0])
            raise DataError(
                f"values too large: overflow in column '{names[j]}' (largest "
                f"{np.abs(values[:, j]).max():g}); rescale it, e.g. divide it by a power of ten"
            )
        too_heavy = np.flatnonzero(~(weighted < _LARGEST_SQUARES))
        if weights is not None and len(too_heavy):
            raise DataError(
                f"values too large: the weights (largest {float(weights.max()):g}) times the squares "
                f"of '{names[int(too_heavy[0])]}' overflow; rescale the weights (only their ratios "
                "matter to the estimates)"
            )


def warn_duplicated_terms(terms: Sequence[ReTerm], formula: str) -> None:
    """Two terms of one grouping factor with a column in common split its variance arbitrarily."""
    seen: dict[tuple[str, str], ReTerm] = {}
    for t in terms:
        for name in t.names:
            other = seen.get((t.group, name))
            if other is not None and other is not t:
                warnings.warn(
                    f"the random-effects terms ({' + '.join(other.names)} | {t.group}) and "
                    f"({' + '.join(t.names)} | {t.group}) both have '{name}': only the sum of "
                    "their variances is identified, and the split between them is arbitrary; "
                    f"drop one (in {formula})",
                    HmixWarning,
                    stacklevel=user_stacklevel(),
                )
                return
            seen[(t.group, name)] = t


def check_lmer_response(design: Design) -> None:
    """An LMM's response: one numeric column that varies (``cbind()`` belongs to glmer).

    A constant response leaves no variance to split; a GLMM's may be constant (Poisson counts of
    3 everywhere are a model), so this is for ``lmer`` only.

    Examples
    --------
    >>> import hmix
    >>> cbpp = hmix.datasets.load("cbpp")
    >>> d = hmix.build_design("cbind(incidence, size - incidence) ~ 1 + (1 | herd)", cbpp)
    >>> check_lmer_response(d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hmix.errors.DataError: cbind(incidence, size - incidence) is a binomial response ...
    """
    if design.formula.cbind is not None:
        raise DataError(
            f"{design.response_name} is a binomial response (successes, failures): fit it with "
            'hmix.glmer(..., family="binomial"); lmer needs one numeric response'
        )
    y = design.y
    if len(y) and float(np.ptp(y)) == 0.0:
        raise DataError(
            f"the response '{design.response_name}' is constant (every value is {y[0]:g}): there is "
            "no variation to model; check the response column"
        )


def check_flag(value: object, name: str) -> bool:
    """``value`` as a bool when it is one (numpy's too); ``REML="no"`` is refused, not read as true.

    Examples
    --------
    >>> check_flag(False, "REML")
    False
    >>> check_flag("no", "REML")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hmix.errors.DataError: REML must be True or False, not 'no'
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise DataError(f"{name} must be True or False, not {value!r}")


_LEVEL = re.compile(r"(.*)\[(.*)\]")  # formulaic's name of a factor's indicator column


def check_structure_columns(
    bar: BarTerm, z: np.ndarray, names: Sequence[str], variables: Collection[str], formula: str
) -> None:
    """A structured term's columns must suit its structure: two or more for ``cs()``; for
    ``ar1()`` one indicator column per occasion of one factor, without an intercept, in time
    order (equally spaced occasions, else a warning).

    Parameters
    ----------
    bar : BarTerm
    z : ndarray, shape (n, k)
        The term's columns.
    names : sequence of str
        Their names.
    variables : collection of str
        The data columns the term's left side uses.
    formula : str

    Examples
    --------
    >>> import numpy as np
    >>> from hmix import parse_formula
    >>> bar = parse_formula("y ~ ar1(0 + week | id)").bars[0]
    >>> check_structure_columns(bar, np.ones((3, 1)), ["week"], ["week"], "y ~ ar1(0 + week | id)")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hmix.errors.FormulaError: ar1() needs the occasions as a factor, ... write ar1(0 + C(week) | id), ...
    """
    at = formula.find(bar.text)
    where = at if at >= 0 else None
    g = bar.group_name
    if bar.structure == "cs" and len(names) < 2:
        raise FormulaError(
            f"cs() is a correlation between a level's random effects, and {bar.lhs} gives one "
            f"column: write (1 | {g}) for one random effect, or give cs() two or more columns, as "
            f"in cs(0 + f | {g}) with f a factor",
            formula,
            where,
        )
    if bar.structure != "ar1":
        return
    used = sorted(variables)
    t = used[0] if len(used) == 1 else "t"
    if "(Intercept)" in names:
        raise FormulaError(
            f"ar1() needs one random effect per occasion and no intercept: write ar1(0 + {t} | {g})",
            formula,
            where,
        )
    if len(names) < 2:
        raise FormulaError(
            f"ar1() needs the occasions as a factor, but {bar.lhs} gives one numeric column: write "
            f"ar1(0 + C({t}) | {g}), or make '{t}' a pandas Categorical",
            formula,
            where,
        )
    if not (np.isin(z, (0.0, 1.0)).all() and (z.sum(axis=1) == 1).all()):
        raise FormulaError(
            f"ar1() takes one factor of occasions (an indicator column each), not {bar.lhs}: write "
            f"ar1(0 + {t} | {g})",
            formula,
            where,
        )
    _check_occasion_order(bar, names, t, formula, where)


def _check_occasion_order(
    bar: BarTerm, names: Sequence[str], t: str, formula: str, where: int | None
) -> None:
    """Occasions labelled by numbers must be in time order (text sorts "10" before "2"), and AR(1)
    takes them as equally spaced."""
    labels = [m.group(2) for m in (_LEVEL.fullmatch(n) for n in names) if m is not None]
    try:
        times = np.array([float(v) for v in labels])
    except ValueError:  # labels that are not numbers: their order is the user's to set
        return
    if len(times) < len(names):
        return
    steps = np.diff(times)
    if (steps <= 0).any():
        raise FormulaError(
            f"the occasions of {bar.text} are numbers out of order ({', '.join(labels)}; labels "
            f"sort as text): write ar1(0 + C({t}) | {bar.group_name}) with '{t}' numeric, or make "
            "it a pandas Categorical with the categories in time order",
            formula,
            where,
        )
    if not np.allclose(steps, steps[0]):
        warnings.warn(
            f"ar1() takes consecutive occasions as equally spaced, but those of {bar.text} are at "
            f"{', '.join(f'{v:g}' for v in times)}: the correlation of neighbours is rho whatever "
            "the gap between them",
            HmixWarning,
            stacklevel=user_stacklevel(),
        )
