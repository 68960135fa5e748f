"""Data frame + parsed formula -> response, fixed-effects matrix and random-effects terms.

Everything the formula uses is evaluated on the same rows: one mask drops the rows where any
variable is missing, and the count is reported. The caller's DataFrame is only read.
"""

from __future__ import annotations

import builtins
import difflib
import re
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla
from formulaic import Formula, model_matrix

from .errors import DataError, FormulaError, HmixWarning, MissingDataWarning, user_stacklevel
from .formula import ParsedFormula, as_code, parse_formula
from .remat import ReTerm, group_codes

__all__ = ["Design", "build_design", "ArrayLike"]

ArrayLike = Any
_IDENT = re.compile(r"`([^`]+)`|([A-Za-z_.][A-Za-z0-9_.]*)")


@dataclass(frozen=True, eq=False)
class Design:
    """The materialized model: what the engines need, and how to code new data.

    Attributes
    ----------
    formula : ParsedFormula
    y : ndarray
        Response (for ``cbind`` responses: the proportion of successes).
    X : ndarray, shape (n, p)
        Fixed-effects model matrix, aliased columns dropped.
    fixef_names : tuple of str
    terms : tuple of ReTerm
        Random-effects terms in lme4's order (decreasing number of levels).
    weights : ndarray or None
        Prior weights (for ``cbind`` responses: the number of trials).
    offset : ndarray or None
    index : pandas.Index
        Labels of the rows used (rows with missing values are left out).
    n_dropped : int
        Rows left out for missing values.
    dropped_columns : tuple of str
        Fixed-effects columns dropped as aliased (rank-deficient X).
    fixed_spec : object
        formulaic ``ModelSpec`` of the fixed part, to code new data.
    response_name : str
    offset_arg : bool
        Whether an ``offset=`` argument was given (besides ``offset(...)`` in the formula).

    Examples
    --------
    >>> import hmix
    >>> d = hmix.build_design("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    >>> d.subset(d.terms[0].refs < 3).n  # the first three batches
    15
    """

    formula: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixef_names: tuple[str, ...]
    terms: tuple[ReTerm, ...]
    weights: np.ndarray | None
    offset: np.ndarray | None
    index: pd.Index
    n_dropped: int
    dropped_columns: tuple[str, ...]
    fixed_spec: Any
    response_name: str
    offset_arg: bool = False  # an offset= argument was given (new data must give one too)

    @property
    def n(self) -> int:
        """Number of observations used."""
        return len(self.y)

    @property
    def p(self) -> int:
        """Number of fixed-effects columns."""
        return int(self.X.shape[1])

    def subset(self, rows: ArrayLike, *, check: bool = True) -> Design:
        """The design on a subset of its rows: for refits (cross-validation, leave-one-out).

        Parameters
        ----------
        rows : array-like of int or bool
            Positions among the design's rows (or a mask over them).
        check : bool, default True
            Refuse subsets a model cannot be fitted to (``False`` for evaluating a likelihood at
            given parameters).

        Raises
        ------
        DataError
            When a grouping factor is left with one level, or a fixed-effects column has no
            variation left (the subset cannot estimate it).

        Examples
        --------
        >>> import hmix
        >>> d = hmix.build_design("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> sub = d.subset(d.terms[0].refs != 0)  # without batch A
        >>> sub.n, list(sub.terms[0].levels)
        (25, ['B', 'C', 'D', 'E', 'F'])
        """
        idx = np.arange(self.n)[np.asarray(rows)]
        terms = tuple(t.subset(idx) for t in self.terms)
        for t in terms if check else ():
            if t.nlevels < 2:
                raise DataError(
                    f"the subset leaves the grouping factor '{t.group}' with {t.nlevels} level; "
                    "a refit needs at least two"
                )
        X = self.X[idx]
        if X.shape[1] and check:
            r = sla.qr(X, mode="r")[0]
            k = min(r.shape)
            diag = np.zeros(X.shape[1])
            diag[:k] = np.abs(np.diag(r)[:k])
            norms = np.linalg.norm(X, axis=0)
            bad = [n for n, d, s in zip(self.fixef_names, diag, norms) if s == 0 or d <= 1e-7 * s]
            if bad:
                raise DataError(
                    f"on this subset of the rows the fixed effect(s) {', '.join(bad)} cannot be "
                    "estimated (no variation left, or aliased); use fewer or larger folds"
                )

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return replace(
            self,
            y=self.y[idx],
            X=X,
            terms=terms,
            weights=take(self.weights),
            offset=take(self.offset),
            index=self.index[idx],
            n_dropped=0,
        )

    def with_response(self, y: np.ndarray) -> Design:
        """The same design with another response (parametric bootstrap, simulation refits).

        Examples
        --------
        >>> import hmix
        >>> d = hmix.build_design("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> float(d.with_response(d.y * 2).y[0]) == 2 * float(d.y[0])
        True
        """
        y = np.asarray(y, dtype=float)
        if y.shape != self.y.shape:
            raise DataError(f"the response must have {self.n} values, not {y.shape}")
        return replace(self, y=y)


def lme4_name(name: str) -> str:
    """formulaic's ``Intercept`` is lme4's ``(Intercept)``."""
    return "(Intercept)" if name == "Intercept" else name


def _names_in(expr: str, columns: pd.Index) -> set[str]:
    """Data columns an expression mentions (identifiers and back-quoted names)."""
    found = set()
    for m in _IDENT.finditer(expr):
        name = m.group(1) or m.group(2)
        if name in columns:
            found.add(name)
    return found


@lru_cache(maxsize=512)
def _formula(expr: str) -> Formula:
    """formulaic's parse of an expression, cached: parsing costs more than materializing."""
    return Formula(expr)


@lru_cache(maxsize=512)
def _required_names(expr: str) -> tuple[str, ...]:
    """The variables an expression needs (formulaic's analysis, cached with the parse)."""
    try:
        required = _formula(expr).required_variables
    except Exception:  # parse problems were reported by parse_formula already
        return ()
    return tuple(sorted({str(v) for v in required}))


def _unknown_names(expr: str, columns: pd.Index) -> list[str]:
    return [n for n in _required_names(expr) if n not in columns and not hasattr(builtins, n)]


def _isna(col: pd.Series) -> np.ndarray:
    """Missing-value mask of a column (numpy's isnan for float columns: a tenth of pandas' cost)."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f":
            return np.isnan(col.to_numpy())
        if dtype.kind in "iub":
            return np.zeros(len(col), dtype=bool)
        return np.asarray(pd.isna(col.to_numpy()), dtype=bool)
    return np.asarray(col.array.isna(), dtype=bool)  # extension arrays (strings, categories, ...)


def _no_column(name: str, formula: str, columns: pd.Index) -> FormulaError:
    close = difflib.get_close_matches(name, [str(c) for c in columns], n=3, cutoff=0.5)
    hint = (
        f"; did you mean {' or '.join(repr(c) for c in close)}?"
        if close
        else (
            f"; the data have {', '.join(repr(str(c)) for c in list(columns)[:8])}"
            + (", ..." if len(columns) > 8 else "")
        )
    )
    pos = formula.find(name)
    return FormulaError(f"no column '{name}' in the data{hint}", formula, pos if pos >= 0 else None)


def _pieces(parsed: ParsedFormula) -> list[str]:
    """Every formulaic expression of the formula, for column checks."""
    exprs = [parsed.fixed] + [b.lhs for b in parsed.bars]
    exprs += [as_code(o) for o in parsed.offsets]
    if parsed.cbind is not None:
        exprs += [as_code(a) for a in parsed.cbind]
    else:
        exprs.append(as_code(parsed.response))
    return exprs


def _vector(value: ArrayLike, data: pd.DataFrame, what: str) -> np.ndarray:
    """A weights/offset argument: a column name or one number per row."""
    if isinstance(value, str):
        if value not in data.columns:
            raise _no_column(value, value, data.columns)
        arr = data[value].to_numpy()
    else:
        arr = np.asarray(value)
    if arr.ndim != 1 or len(arr) != len(data):
        raise DataError(
            f"{what} must have one value per row of the data ({len(data)}), got shape {arr.shape}"
        )
    try:
        return arr.astype(float)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be numeric") from None


class NumericSpec:
    """The model spec of a formula whose terms are plain numeric columns (and the intercept).

    formulaic's machinery costs about a millisecond a call, most of a small model's fit; such
    formulas need none of it. This offers the two things hmix uses from a formulaic
    ``ModelSpec``: ``get_model_matrix`` for new data and ``encoder_state`` (no categories).
    """

    def __init__(self, columns: tuple[str, ...], intercept: bool):
        self.columns = columns
        self.intercept = intercept
        self.encoder_state: dict[str, Any] = {}

    @property
    def column_names(self) -> tuple[str, ...]:
        return (("Intercept",) if self.intercept else ()) + self.columns

    def matrix(self, data: pd.DataFrame) -> np.ndarray:
        """The columns as an (n, k) array."""
        out = np.empty((len(data), len(self.column_names)))
        j = 0
        if self.intercept:
            out[:, 0] = 1.0
            j = 1
        for c in self.columns:
            try:
                out[:, j] = data[c].to_numpy(dtype=float)
            except (TypeError, ValueError):
                raise DataError(
                    f"column '{c}' must be numeric, as it was in the data the model was fitted to "
                    f"(it has dtype {data[c].dtype})"
                ) from None
            j += 1
        return out

    def get_model_matrix(self, data: pd.DataFrame, na_action: str = "ignore") -> pd.DataFrame:
        return pd.DataFrame(self.matrix(data), index=data.index, columns=list(self.column_names))


def _numeric_spec(expr: str, data: pd.DataFrame) -> NumericSpec | None:
    """A NumericSpec when every term of ``expr`` is the intercept or one numeric column."""
    try:
        terms = list(_formula(expr))
    except Exception:
        return None
    intercept, columns = False, []
    for term in terms:
        factors = list(term.factors)
        if len(factors) != 1:
            return None
        (f,) = factors
        method = getattr(f.eval_method, "value", f.eval_method)
        if method == "literal" and f.expr == "1":
            intercept = True
        elif method == "lookup" and f.expr in data.columns:
            dtype = data[f.expr].dtype
            if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
                return None
            columns.append(f.expr)
        else:
            return None
    if intercept and terms and str(terms[0]) != "1":
        return None  # formulaic puts the intercept first; anything else is not this simple case
    return NumericSpec(tuple(columns), intercept)


def _model_matrix(expr: str, data: pd.DataFrame, formula: str) -> tuple[np.ndarray, list[str], Any]:
    """The columns of ``expr`` on ``data``, their lme4 names and the spec that codes new data."""
    spec = _numeric_spec(expr, data)
    if spec is not None:
        return spec.matrix(data), [lme4_name(c) for c in spec.column_names], spec
    mm = _materialize(expr, data, formula)
    names = [lme4_name(str(c)) for c in mm.columns]
    return np.asarray(mm, dtype=float).reshape(len(data), len(names)), names, mm.model_spec


def _materialize(expr: str, data: pd.DataFrame, formula: str, **kw: Any) -> Any:
    try:
        # log(0) and the like give inf with a RuntimeWarning; the finite checks report them
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return model_matrix(_formula(expr), data, na_action="raise", **kw)
    except FormulaError:
        raise
    except Exception as exc:
        msg = str(exc)
        m = re.search(r"`(.+?)` is not present in the dataset", msg)
        if m:
            raise _no_column(m.group(1), formula, data.columns) from None
        first = msg.strip().split("\n")[0]
        raise FormulaError(f"cannot evaluate '{expr}': {first}", formula) from None


def _finite(values: np.ndarray, names: list[str], what: str, index: pd.Index) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        col = int(np.nonzero(bad.any(axis=0))[0][0]) if values.ndim == 2 else 0
        rows = index[np.nonzero(bad if values.ndim == 1 else bad[:, col])[0][:5]].tolist()
        raise DataError(
            f"{what} '{names[col]}' has non-finite values (inf or NaN after transformation) "
            f"at rows {rows}: fix or drop those rows"
        )


def _response(
    parsed: ParsedFormula, data: pd.DataFrame, binary_ok: bool
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The response vector, the binomial trials of a cbind response, and the response's name."""
    text = parsed.text
    if parsed.cbind is not None:
        parts = []
        for arg in parsed.cbind:
            mm = _materialize("0 + " + as_code(arg), data, text)
            vals = np.asarray(mm, dtype=float)
            if vals.shape[1] != 1:
                raise FormulaError(f"cbind() argument '{arg}' must be one numeric column", text)
            parts.append(vals[:, 0])
        succ, fail = parts
        _finite(np.column_stack(parts), list(parsed.cbind), "cbind() argument", data.index)
        trials = succ + fail
        if (succ < 0).any() or (fail < 0).any():
            raise DataError("cbind(successes, failures) needs non-negative counts in both columns")
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(trials > 0, succ / np.where(trials > 0, trials, 1), 0.0)
        return y, trials, f"cbind({parsed.cbind[0]}, {parsed.cbind[1]})"
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
    mm = _materialize("0 + " + as_code(name), data, text)
    if mm.shape[1] != 1:
        raise DataError(f"the response '{name}' must be one numeric column, it gives {mm.shape[1]}")
    return np.asarray(mm, dtype=float)[:, 0], None, name


def _drop_aliased(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop columns of X that are linear combinations of earlier ones, keeping the first, as lme4.

    A column is aliased when the part of it orthogonal to the columns before it (the diagonal of
    an unpivoted QR) is below 1e-7 of its norm, lme4's rank tolerance.
    """
    p = X.shape[1]
    if p == 0:
        return X, names, []
    r = sla.qr(X, mode="r")[0]
    diag = np.zeros(p)  # with fewer rows than columns, the columns past the rows are aliased
    k = min(r.shape)
    diag[:k] = np.abs(np.diag(r)[:k])
    norms = np.linalg.norm(X, axis=0)
    aliased = diag <= 1e-7 * np.where(norms > 0, norms, 1.0)
    if not aliased.any():
        return X, names, []
    dropped = [n for n, a in zip(names, aliased) if a]
    warnings.warn(
        f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
        f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
        HmixWarning,
        stacklevel=user_stacklevel(),
    )
    return X[:, ~aliased], [n for n, a in zip(names, aliased) if not a], dropped


def build_design(
    formula: str | ParsedFormula,
    data: pd.DataFrame,
    *,
    weights: ArrayLike | None = None,
    offset: ArrayLike | None = None,
    binary_ok: bool = False,
) -> Design:
    """Materialize a formula on a DataFrame.

    Parameters
    ----------
    formula : str or ParsedFormula
    data : pandas.DataFrame
        Read only; never modified.
    weights, offset : str or array-like, optional
        A column name or one value per row.
    binary_ok : bool
        Accept a two-level factor or string response (binomial models), coded 0/1.

    Returns
    -------
    Design

    Examples
    --------
    >>> import hmix
    >>> d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> d.n, d.p, d.fixef_names, [(t.group, t.nlevels, t.names) for t in d.terms]
    (180, 2, ('(Intercept)', 'Days'), [('Subject', 18, ('(Intercept)', 'Days'))])
    """
    parsed = formula if isinstance(formula, ParsedFormula) else parse_formula(formula)
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    text = parsed.text
    columns = data.columns
    for expr in _pieces(parsed):
        for name in _unknown_names(expr, columns):
            raise _no_column(name, text, columns)
    for bar in parsed.bars:
        for name in bar.group:
            if name not in columns:
                raise _no_column(name, text, columns)

    used: set[str] = set()
    for expr in _pieces(parsed):
        used |= _names_in(expr, columns)
    for bar in parsed.bars:
        used |= set(bar.group)
    w_arg = None if weights is None else _vector(weights, data, "weights")
    o_arg = None if offset is None else _vector(offset, data, "offset")
    missing = np.zeros(len(data), bool)
    for c in used:
        missing |= _isna(data[c])
    for arr in (w_arg, o_arg):
        if arr is not None:
            missing |= np.isnan(arr)
    n_dropped = int(missing.sum())
    if n_dropped == len(data):
        raise DataError("every row has a missing value in a variable the formula uses")
    if n_dropped:
        cols = [c for c in sorted(used) if data[c].isna().any()]
        warnings.warn(
            f"dropped {n_dropped} of {len(data)} rows with missing values"
            + (f" in {', '.join(cols)}" if cols else ""),
            MissingDataWarning,
            stacklevel=user_stacklevel(),
        )
    keep = ~missing
    # only read: without missing values the caller's frame itself, no copy
    frame = data.loc[keep, sorted(used)] if n_dropped else data
    index = frame.index

    y, trials, response_name = _response(parsed, frame, binary_ok)
    _finite(y, [response_name], "the response", index)

    X, names, fixed_spec = _model_matrix(parsed.fixed, frame, text)
    _finite(X, names, "fixed-effects column", index)
    X, names, dropped = _drop_aliased(X, names)

    terms = []
    for bar in parsed.bars:
        z, zn, zspec = _model_matrix(bar.lhs, frame, text)
        znames = tuple(zn)
        _finite(z, list(znames), "random-effects column", index)
        refs, levels = group_codes(frame, bar.group)
        if len(levels) < 2:
            raise DataError(
                f"the grouping factor '{bar.group_name}' of {bar.text} has {len(levels)} level; "
                "a random effect needs at least two: drop the term or model it as a fixed effect"
            )
        terms.append(
            ReTerm(
                group=bar.group_name,
                group_columns=bar.group,
                names=znames,
                refs=refs,
                levels=levels,
                z=z,
                lhs=bar.lhs,
                spec=zspec,
            )
        )
    terms.sort(key=lambda t: -t.nlevels)

    w = w_arg[keep] if w_arg is not None else None
    if w is not None and ((w <= 0).any() or not np.isfinite(w).all()):
        raise DataError("weights must be positive and finite")
    if trials is not None:
        w = trials if w is None else w * trials
    off = o_arg[keep] if o_arg is not None else None
    for expr in parsed.offsets:
        mm = _materialize("0 + " + as_code(expr), frame, text)
        vals = np.asarray(mm, dtype=float)
        if vals.shape[1] != 1:
            raise FormulaError(f"offset({expr}) must give one numeric column", text)
        _finite(vals, [f"offset({expr})"], "offset", index)
        off = vals[:, 0] if off is None else off + vals[:, 0]
    if off is not None:
        _finite(off, ["offset"], "the", index)

    return Design(
        formula=parsed,
        y=y,
        X=X,
        fixef_names=tuple(names),
        terms=tuple(terms),
        weights=w,
        offset=off,
        index=index,
        n_dropped=n_dropped,
        dropped_columns=tuple(dropped),
        fixed_spec=fixed_spec,
        response_name=response_name,
        offset_arg=o_arg is not None,
    )
