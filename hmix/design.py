"""Data frame + parsed formula -> response, fixed-effects matrix and random-effects terms.

Everything the formula uses is evaluated on the same rows: one mask drops the rows where any
variable is missing, and the count is reported. The caller's DataFrame is only read.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .checks import (
    check_columns,
    check_frame,
    check_magnitudes,
    check_random_terms,
    check_structure_columns,
    warn_duplicated_terms,
)
from .columns import (
    ArrayLike,
    as_vector,
    check_finite,
    evaluate,
    formula_expressions,
    isna_mask,
    lme4_name,
    materialize,
    names_in,
    new_matrix,
    no_column,
    unknown_names,
)
from .covariance import CovarianceStructure, structure
from .errors import DataError, FormulaError, HmixWarning, MissingDataWarning, user_stacklevel
from .formula import BarTerm, ParsedFormula, as_code, parse_formula, quote_dotted
from .newdata import ColumnCoding, code_columns, codings, formulaic_types
from .rank import aliased_columns, drop_columns
from .remat import ReTerm, group_codes
from .response import response

__all__ = ["Design", "build_design", "ArrayLike", "columns_used", "complete_rows_mask"]


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
    codings : dict
        Per data column the formula uses, its ``ColumnCoding``: the fit's dtype and levels, with
        which new data are coded by value.

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
    codings: dict[str, ColumnCoding] = field(default_factory=dict)

    holds_rows = True  # (False for a design whose rows stay in a Dask cluster: hmix.dask)

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
            bad = [n for n, a in zip(self.fixef_names, aliased_columns(X)) if a]
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

    # ----- new data, coded as the fit coded its data ------------------------------------------
    def complete_rows(self, newdata: pd.DataFrame, *, random: bool = True, hint: str = "") -> np.ndarray:
        """Mask of the rows of ``newdata`` with a value in every variable the prediction uses.

        Parameters
        ----------
        newdata : pandas.DataFrame
        random : bool, default True
            Whether the random-effects terms (their columns and grouping factors) are used too.
        hint : str
            Ends the message of the error for an absent grouping column (what else to do).

        Raises
        ------
        DataError
            When a column the prediction needs is absent from ``newdata``.

        Examples
        --------
        >>> import hmix, pandas as pd
        >>> d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> d.complete_rows(pd.DataFrame({"Days": [1, None], "Subject": ["308", "309"]})).tolist()
        [True, False]
        """
        used: set[str] = set()
        for what, expr in self._new_data_expressions(random):
            for name in unknown_names(expr, newdata.columns):
                raise DataError(f"newdata has no column {name!r}, which {what} use(s); add it")
            used |= names_in(expr, newdata.columns)
        for t in self.terms if random else ():
            absent = [c for c in t.group_columns if c not in newdata.columns]
            if absent:
                raise DataError(
                    f"newdata has no column {absent[0]!r} for the random effects of {t.group}; {hint}"
                )
            used |= set(t.group_columns)
        complete = np.ones(len(newdata), bool)
        for c in used:
            complete &= ~isna_mask(newdata[c])
        return complete

    def _new_data_expressions(self, random: bool) -> list[tuple[str, str]]:
        f = self.formula
        out = [("the fixed effects", f.fixed)] + [(f"offset({o})", as_code(o)) for o in f.offsets]
        return out + [(f"the term {t.lhs} | {t.group}", t.lhs) for t in self.terms if random]

    def fixed_matrix(self, newdata: pd.DataFrame) -> np.ndarray:
        """The fixed-effects model matrix (n, p) of complete rows of new data, aliased columns dropped.

        Examples
        --------
        >>> import hmix, pandas as pd
        >>> d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> d.fixed_matrix(pd.DataFrame({"Days": [2, 3]})).tolist()
        [[1.0, 2.0], [1.0, 3.0]]
        """
        frame = self._coded(newdata, self.formula.fixed, strict=True)
        position = {lme4_name(str(c)): j for j, c in enumerate(self.fixed_spec.column_names)}
        X = new_matrix(self.fixed_spec, frame)[:, [position[n] for n in self.fixef_names]]
        check_finite(X, list(self.fixef_names), "fixed-effects column", newdata.index)
        return X

    def offset_terms(self, newdata: pd.DataFrame) -> np.ndarray:
        """The sum of the formula's ``offset(...)`` terms on complete rows of new data (zeros without).

        Examples
        --------
        >>> import hmix, pandas as pd
        >>> sleep = hmix.datasets.load("sleepstudy")
        >>> d = hmix.build_design("Reaction ~ offset(2 * Days) + (1 | Subject)", sleep)
        >>> d.offset_terms(pd.DataFrame({"Days": [1, 4]})).tolist()
        [2.0, 8.0]
        """
        total = np.zeros(len(newdata))
        for expr in self.formula.offsets:
            code = "0 + " + as_code(expr)
            vals = np.asarray(materialize(code, self._coded(newdata, code, strict=True), expr), dtype=float)
            total += vals[:, 0]
        return total

    def re_columns(self, term: ReTerm, newdata: pd.DataFrame) -> np.ndarray:
        """A random-effects term's model-matrix columns (n, k) on complete rows of new data.

        Examples
        --------
        >>> import hmix, pandas as pd
        >>> d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> d.re_columns(d.terms[0], pd.DataFrame({"Days": [3]})).tolist()
        [[1.0, 3.0]]
        """
        return new_matrix(term.spec, self._coded(newdata, term.lhs, strict=True))

    def group_labels(self, term: ReTerm, newdata: pd.DataFrame) -> pd.Index:
        """Each row's level label of the term's grouping factor (``"a:b"`` for an interaction).

        Examples
        --------
        >>> import hmix, pandas as pd
        >>> d = hmix.build_design("strength ~ 1 + (1 | batch/cask)", hmix.datasets.load("Pastes"))
        >>> d.group_labels(d.terms[0], pd.DataFrame({"batch": ["A"], "cask": ["a"]})).tolist()
        ['A:a']
        """
        frame = code_columns(self.codings, newdata, set(term.group_columns), strict=False)
        parts = [frame[c].astype(str).to_numpy(dtype=object) for c in term.group_columns]
        labels = parts[0]
        for p in parts[1:]:
            labels = labels + ":" + p
        return pd.Index(labels)

    def level_index(self, term: ReTerm, newdata: pd.DataFrame) -> np.ndarray:
        """Index of each row's level among the term's fitted levels (-1 for a level not fitted).

        Levels are matched by value: ``308``, ``"308"`` and ``308.0`` name the same subject.

        Examples
        --------
        >>> import hmix, pandas as pd
        >>> d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
        >>> d.level_index(d.terms[0], pd.DataFrame({"Subject": [309, "308", "NEW"]})).tolist()
        [1, 0, -1]
        """
        lookup = pd.Index(term.levels.astype(str))
        return np.asarray(lookup.get_indexer(self.group_labels(term, newdata)), dtype=np.int64)

    def _coded(self, newdata: pd.DataFrame, expr: str, *, strict: bool) -> pd.DataFrame:
        return code_columns(self.codings, newdata, names_in(expr, newdata.columns), strict=strict)


def _drop_aliased(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop columns of X that are linear combinations of earlier ones, keeping the first, as lme4."""
    aliased = aliased_columns(X)
    if not aliased.any():
        return X, names, []
    dropped = [n for n, a in zip(names, aliased) if a]
    warnings.warn(
        f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
        f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
        HmixWarning,
        stacklevel=user_stacklevel(),
    )
    return drop_columns(X, aliased), [n for n, a in zip(names, aliased) if not a], dropped


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
    check_frame(data)
    check_random_terms(parsed)
    parsed = quote_dotted(parsed, data.columns)
    text = parsed.text
    used, dtypes = columns_used(parsed, data)
    w_arg = None if weights is None else as_vector(weights, data, "weights")
    o_arg = None if offset is None else as_vector(offset, data, "offset")
    keep, n_dropped = complete_rows_mask(data, used, (w_arg, o_arg), dtypes)
    # only read: without missing values the caller's frame itself, no copy
    frame = formulaic_types(data.loc[keep, sorted(used)] if n_dropped else data, used, dtypes)
    index = frame.index

    y, trials, response_name = response(parsed, frame, binary_ok)
    check_finite(y, [response_name], "the response", index)
    w = w_arg[keep] if w_arg is not None else None
    if w is not None and ((w <= 0).any() or not np.isfinite(w).all()):
        raise DataError("weights must be positive and finite")
    if trials is not None:
        w = trials if w is None else w * trials

    X, names, fixed_spec = evaluate(parsed.fixed, frame, text)
    check_finite(X, names, "fixed-effects column", index)
    terms = _re_terms(parsed, frame)
    blocks = [([response_name], y[:, None]), (names, X)]
    check_magnitudes(blocks + [([f"{n} | {t.group}" for n in t.names], t.z) for t in terms], w)
    X, names, dropped = _drop_aliased(X, names)
    warn_duplicated_terms(terms, text)
    off = _offset(parsed, frame, None if o_arg is None else o_arg[keep])

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
        codings=codings(frame, used, [fixed_spec] + [t.spec for t in terms], terms, dtypes),
    )


def columns_used(parsed: ParsedFormula, data: pd.DataFrame) -> tuple[set[str], dict[str, Any]]:
    """The data columns the formula uses and their dtypes; unknown names, duplicates and bad types
    refused."""
    text, columns = parsed.text, data.columns
    for expr in formula_expressions(parsed):
        for name in unknown_names(expr, columns):
            raise no_column(name, text, columns)
    for bar in parsed.bars:
        for name in bar.group:
            if name not in columns:
                raise no_column(name, text, columns)
    numeric: set[str] = set()
    for expr in formula_expressions(parsed):
        numeric |= names_in(expr, columns)
    used = numeric | {c for bar in parsed.bars for c in bar.group}
    return used, check_columns(data, used, numeric)


def complete_rows_mask(
    data: pd.DataFrame,
    used: set[str],
    vectors: tuple[np.ndarray | None, ...],
    dtypes: dict[str, Any] | None = None,
) -> tuple[np.ndarray, int]:
    """Mask of the rows without a missing value in what the model uses, and how many were dropped.

    ``dtypes`` (the columns' dtypes, when known) spares reading integer and boolean columns,
    which cannot hold a missing value.
    """
    missing = np.zeros(len(data), bool)
    for c in used:
        dtype = None if dtypes is None else dtypes.get(c)
        if isinstance(dtype, np.dtype) and dtype.kind in "iub":
            continue
        missing |= isna_mask(data[c])
    for arr in vectors:
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
    return ~missing, n_dropped


def _re_terms(parsed: ParsedFormula, frame: pd.DataFrame) -> list[ReTerm]:
    """The random-effects terms on the model's rows, in lme4's order (most levels first)."""
    terms = []
    for bar in parsed.bars:
        z, zn, zspec = evaluate(bar.lhs, frame, parsed.text)
        znames = tuple(zn)
        check_finite(z, list(znames), "random-effects column", frame.index)
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
                cov=_structure(bar, z, znames, frame, parsed.text),
            )
        )
    terms.sort(key=lambda t: -t.nlevels)
    return terms


def _structure(
    bar: BarTerm, z: np.ndarray, names: tuple[str, ...], frame: pd.DataFrame, formula: str
) -> CovarianceStructure:
    """The term's covariance structure, once its columns show that it fits them."""
    check_structure_columns(bar, z, names, names_in(bar.lhs, frame.columns), formula)
    return structure(bar.structure, len(names), bar.hom)


def _offset(parsed: ParsedFormula, frame: pd.DataFrame, given: np.ndarray | None) -> np.ndarray | None:
    """The offset= argument plus the formula's offset(...) terms (None without either)."""
    off = given
    for expr in parsed.offsets:
        mm = materialize("0 + " + as_code(expr), frame, parsed.text)
        vals = np.asarray(mm, dtype=float)
        if vals.shape[1] != 1:
            raise FormulaError(f"offset({expr}) must give one numeric column", parsed.text)
        check_finite(vals, [f"offset({expr})"], "offset", frame.index)
        off = vals[:, 0] if off is None else off + vals[:, 0]
    if off is not None:
        check_finite(off, ["offset"], "the", frame.index)
    return off


# simulate.py's names, until it imports the public ones from hmix.columns
_names_in, _unknown_names, _vector = names_in, unknown_names, as_vector
