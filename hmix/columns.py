"""Formula expressions evaluated on a DataFrame: the one place that calls formulaic's materializer.

``design`` builds a model's matrices with these, and ``newdata`` codes new data with the specs
they return. Every failure becomes an hmix error that names the column.
"""

from __future__ import annotations

import builtins
import difflib
import re
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from formulaic import Formula, model_matrix

from .errors import DataError, FormulaError
from .formula import ParsedFormula, as_code

__all__ = [
    "ArrayLike",
    "NumericSpec",
    "MainEffectsSpec",
    "as_vector",
    "check_finite",
    "evaluate",
    "formula_expressions",
    "isna_mask",
    "lme4_name",
    "materialize",
    "new_matrix",
    "names_in",
    "no_column",
    "unknown_names",
]

ArrayLike = Any
_MULTIPLIES = re.compile(r"\*|<<|square|power|pow|prod")
_IDENT = re.compile(r"`([^`]+)`|([A-Za-z_.][A-Za-z0-9_.]*)")


_QUOTED_NAME = re.compile(r"`([A-Za-z_.][A-Za-z0-9_.]*)`")


def lme4_name(name: str) -> str:
    """A column's name as lme4 gives it: ``(Intercept)``, and R's names without back-quotes.

    Examples
    --------
    >>> lme4_name("Intercept"), lme4_name("I(`total.fruits` ** 2)")
    ('(Intercept)', 'I(total.fruits ** 2)')
    """
    return "(Intercept)" if name == "Intercept" else _QUOTED_NAME.sub(r"\1", name)


def names_in(expr: str, columns: pd.Index) -> set[str]:
    """Data columns an expression mentions (identifiers and back-quoted names).

    Examples
    --------
    >>> import pandas as pd
    >>> sorted(names_in("np.log(x) + `a b` + C(f)", pd.Index(["x", "a b", "f", "y"])))
    ['a b', 'f', 'x']
    """
    found = set()
    for m in _IDENT.finditer(expr):
        name = m.group(1) or m.group(2)
        if name in columns:
            found.add(name)
    return found


@lru_cache(maxsize=512)
def parsed(expr: str) -> Formula:
    """formulaic's parse of an expression, cached: parsing costs more than materializing."""
    return Formula(expr)


@lru_cache(maxsize=512)
def _required_names(expr: str) -> tuple[str, ...]:
    """The variables an expression needs (formulaic's analysis, cached with the parse)."""
    try:
        required = parsed(expr).required_variables
    except Exception:  # parse problems were reported by parse_formula already
        return ()
    return tuple(sorted({str(v) for v in required}))


def unknown_names(expr: str, columns: pd.Index) -> list[str]:
    """Variables ``expr`` needs that are neither columns nor Python builtins.

    formulaic reports ``total`` for a column ``total.fruits`` (quoted or not): such roots of
    dotted columns the expression names are not unknown.
    """
    roots = {n.split(".")[0] for n in names_in(expr, columns) if "." in n}
    return [
        n for n in _required_names(expr) if n not in columns and n not in roots and not hasattr(builtins, n)
    ]


def isna_mask(col: pd.Series) -> np.ndarray:
    """Missing-value mask of a column (numpy's isnan for float columns: a tenth of pandas' cost)."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f":
            return np.isnan(col.to_numpy())
        if dtype.kind in "iub":
            return np.zeros(len(col), dtype=bool)
        return np.asarray(pd.isna(col.to_numpy()), dtype=bool)
    return np.asarray(col.array.isna(), dtype=bool)  # extension arrays (strings, categories, ...)


def no_column(name: str, formula: str, columns: pd.Index) -> FormulaError:
    """The error for a name that is no column, with the nearest column names as a hint."""
    shown = [str(c) for c in columns]
    close = difflib.get_close_matches(name, shown, n=3, cutoff=0.5)
    close = [c for c in close if c != name]  # (an integer column 0 is not the name '0')
    if close:
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?"
    else:
        more = ", ..." if len(shown) > 8 else ""
        hint = f"; the data have {', '.join(repr(c) for c in shown[:8])}{more}"
    if any(not isinstance(c, str) for c in columns):
        hint += " (a formula names columns by strings: df.columns = df.columns.astype(str) renames them)"
    pos = formula.find(name)
    return FormulaError(f"no column '{name}' in the data{hint}", formula, pos if pos >= 0 else None)


def formula_expressions(parsed_formula: ParsedFormula) -> list[str]:
    """Every formulaic expression of the formula, for column checks."""
    p = parsed_formula
    exprs = [p.fixed] + [b.lhs for b in p.bars]
    exprs += [as_code(o) for o in p.offsets]
    if p.cbind is not None:
        exprs += [as_code(a) for a in p.cbind]
    else:
        exprs.append(as_code(p.response))
    return exprs


def as_vector(value: ArrayLike, data: pd.DataFrame, what: str) -> np.ndarray:
    """A weights or offset argument as floats: a column name or one number per row.

    Examples
    --------
    >>> import pandas as pd
    >>> as_vector("w", pd.DataFrame({"w": [1, 2]}), "weights").tolist()
    [1.0, 2.0]
    """
    if isinstance(value, str):
        if value not in data.columns:
            raise no_column(value, value, data.columns)
        arr = data[value].to_numpy()
    else:
        arr = np.asarray(value)
    if arr.ndim != 1 or len(arr) != len(data):
        raise DataError(
            f"{what} must have one value per row of the data ({len(data)}), got shape {arr.shape}"
        )
    if arr.dtype.kind == "c":
        raise DataError(f"{what} must be real numbers, not complex ones")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
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

    def get_model_matrix(
        self, data: pd.DataFrame, na_action: str = "ignore", output: str = ""
    ) -> pd.DataFrame:
        return pd.DataFrame(self.matrix(data), index=data.index, columns=list(self.column_names))


class MainEffectsSpec:
    """The model spec of an expression made of the intercept, numeric columns and text columns
    (main effects only: a fixed part, a random term's left side): what formulaic gives (its
    names, its order: the intercept, then the terms as written; treatment contrasts, full rank
    for the first factor when there is no intercept), without its machinery, which costs
    milliseconds a factor.

    ``structure`` (the terms' structure that ``hmix.hypotheses`` reads) is formulaic's own, made
    when first asked for from a frame of one row per level; ``encoder_state`` carries the
    categories (``hmix.newdata.codings``, the hypotheses' contrasts).
    """

    def __init__(self, terms: list[tuple[str, np.ndarray | None]], intercept: bool, expr: str):
        self.terms = terms  # (column, its sorted levels or None for a numeric column)
        self.intercept = intercept
        self.expr = expr
        first = next((c for c, lv in terms if lv is not None), None)
        self._full = None if intercept else first  # (the factor coded in full)
        self._structure: Any = None
        self.encoder_state: dict[str, Any] = {
            c: ("categorical", {"categories": list(lv)}) for c, lv in terms if lv is not None
        }

    @property
    def column_names(self) -> tuple[str, ...]:
        names = ["Intercept"] if self.intercept else []
        for c, lv in self.terms:
            if lv is None:
                names.append(c)
            elif c == self._full:
                names += [f"{c}[{v}]" for v in lv]
            else:
                names += [f"{c}[T.{v}]" for v in lv[1:]]
        return tuple(names)

    def matrix(self, data: pd.DataFrame) -> np.ndarray:
        """The columns as an (n, p) array (a level the fit did not see codes as zeros)."""
        blocks = [np.ones((len(data), 1))] if self.intercept else []
        for c, lv in self.terms:
            if lv is None:
                try:
                    blocks.append(data[c].to_numpy(dtype=float)[:, None])
                except (TypeError, ValueError):
                    raise DataError(
                        f"column '{c}' must be numeric, as it was in the data the model was "
                        f"fitted to (it has dtype {data[c].dtype})"
                    ) from None
                continue
            values = data[c].to_numpy(dtype=object)
            pos = np.minimum(np.searchsorted(lv, values), len(lv) - 1)
            rows = np.flatnonzero(lv[pos] == values)
            cols = np.zeros((len(values), len(lv)))
            cols[rows, pos[rows]] = 1.0
            blocks.append(cols if c == self._full else cols[:, 1:])
        return np.hstack(blocks) if blocks else np.zeros((len(data), 0))

    def get_model_matrix(
        self, data: pd.DataFrame, na_action: str = "ignore", output: str = ""
    ) -> pd.DataFrame:
        return pd.DataFrame(self.matrix(data), index=data.index, columns=list(self.column_names))

    @property
    def structure(self) -> Any:
        """formulaic's structure of these terms (made once, from one row per level)."""
        if self._structure is None:
            rows = max([2] + [len(lv) for _, lv in self.terms if lv is not None])
            synthetic = pd.DataFrame(
                {
                    c: np.zeros(rows) if lv is None else np.resize(np.asarray(lv, dtype=object), rows)
                    for c, lv in self.terms
                }
            )
            spec = model_matrix(parsed(self.expr), synthetic, output="numpy").model_spec
            if tuple(spec.column_names) != self.column_names:  # (never: the tests hold them equal)
                msg = f"internal: the columns of '{self.expr}' differ from formulaic's"
                raise FormulaError(msg, self.expr)
            self._structure = spec.structure
        return self._structure

    @staticmethod
    def of(expr: str, data: pd.DataFrame) -> MainEffectsSpec | None:
        """A MainEffectsSpec when every term of ``expr`` is the intercept, a numeric column or a
        text column (``str`` or ``object`` of strings, not a categorical or a boolean), each once,
        and one at least is text (else ``NumericSpec``)."""
        try:
            terms = [list(t.factors) for t in parsed(expr)]
        except Exception:
            return None
        if any(len(f) != 1 for f in terms):
            return None
        intercept, out = False, list[tuple[str, np.ndarray | None]]()
        for (f,) in terms:
            method = getattr(f.eval_method, "value", f.eval_method)
            if method == "literal" and f.expr == "1" and not out and not intercept:
                intercept = True
                continue
            if method != "lookup" or f.expr not in data.columns or f.expr in [c for c, _ in out]:
                return None
            col = data[f.expr]
            dtype = col.dtype
            if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
                return None
            if pd.api.types.is_numeric_dtype(dtype):
                if getattr(dtype, "kind", "") == "c":
                    return None
                out.append((f.expr, None))
                continue
            _, uniques = pd.factorize(col.to_numpy(dtype=object))
            if len(uniques) < 2 or not all(isinstance(v, str) for v in uniques):
                return None
            out.append((f.expr, np.sort(np.asarray(uniques, dtype=object))))
        if all(lv is None for _, lv in out):
            return None
        return MainEffectsSpec(out, intercept, expr)


def _numeric_spec(expr: str, data: pd.DataFrame) -> NumericSpec | None:
    """A NumericSpec when every term of ``expr`` is the intercept or one numeric column."""
    try:
        terms = list(parsed(expr))
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
            if getattr(dtype, "kind", "") == "c":
                return None
            columns.append(f.expr)
        else:
            return None
    if intercept and terms and str(terms[0]) != "1":
        return None  # formulaic puts the intercept first; anything else is not this simple case
    return NumericSpec(tuple(columns), intercept)


def evaluate(expr: str, data: pd.DataFrame, formula: str) -> tuple[np.ndarray, list[str], Any]:
    """The columns of ``expr`` on ``data``, their lme4 names and the spec that codes new data
    (hmix's own for plain columns and main effects, else formulaic's)."""
    spec: NumericSpec | MainEffectsSpec | None = _numeric_spec(expr, data)
    if spec is None:
        spec = MainEffectsSpec.of(expr, data)
    if spec is not None:
        return spec.matrix(data), [lme4_name(c) for c in spec.column_names], spec
    # sparse: a factor's indicator columns cost their nonzeros until the one dense copy (a
    # DataFrame or dense output would hold X twice: 4 GB for a 5,000-level factor on 50,000 rows)
    try:
        mm = materialize(expr, data, formula, output="sparse")
    except FormulaError:  # (a transform that formulaic's sparse output cannot hold: say it densely)
        mm = materialize(expr, data, formula, output="numpy")
    names = [lme4_name(str(c)) for c in mm.model_spec.column_names]
    return as_real(mm, expr, formula).reshape(len(data), len(names)), names, mm.model_spec


def dense(mm: Any) -> np.ndarray:
    """A model matrix (formulaic's sparse or dense output, a DataFrame) as a dense array."""
    return np.asarray(mm.toarray()) if sp.issparse(mm) else np.asarray(mm)


def new_matrix(spec: Any, frame: pd.DataFrame) -> np.ndarray:
    """The columns ``spec`` (a formulaic ModelSpec or a NumericSpec) codes on new data, as floats."""
    values = dense(spec.get_model_matrix(frame, na_action="ignore", output="numpy"))
    return np.asarray(values, dtype=float).reshape(len(frame), len(spec.column_names))


def as_real(mm: Any, expr: str, formula: str) -> np.ndarray:
    """A materialized matrix as floats; complex or non-numeric results are refused by name."""
    values = dense(mm)
    if values.dtype.kind == "c":
        raise DataError(
            f"'{expr}' gives complex numbers; mixed models need real ones: use the real part "
            "(np.real(x)) or the modulus (np.abs(x))"
        )
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        msg = f"cannot evaluate '{expr}' as numbers (a column of text or dates?)"
        raise FormulaError(msg, formula) from None


def materialize(expr: str, data: pd.DataFrame, formula: str, **kw: Any) -> Any:
    """formulaic's model matrix of ``expr`` on ``data``; failures become FormulaErrors."""
    try:
        # log(0) and the like give inf with a RuntimeWarning; the finite checks report them
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mm = model_matrix(parsed(expr), data, na_action="raise", **kw)
            _check_integer_overflow(expr, data, mm, kw)
            return mm
    except (FormulaError, DataError):
        raise
    except Exception as exc:
        msg = str(exc)
        m = re.search(r"`(.+?)` is not present in the dataset", msg)
        if m:
            raise no_column(m.group(1), formula, data.columns) from None
        first = msg.strip().split("\n")[0]
        raise FormulaError(f"cannot evaluate '{expr}': {first}", formula) from None


def _check_integer_overflow(expr: str, data: pd.DataFrame, mm: Any, kw: dict[str, Any]) -> None:
    """Refuse an expression whose integer arithmetic wrapped around (``I(Days**20)``, 9**20 > 2**63).

    numpy's integers overflow silently; the same expression on the columns as floats shows it.
    Only expressions that multiply (products, powers, shifts) integer columns are evaluated
    twice: sums would need values near 9e18 to wrap.
    """
    if not _MULTIPLIES.search(expr):
        return
    ints = [c for c in names_in(expr, data.columns) if pd.api.types.is_integer_dtype(data[c].dtype)]
    if not ints:
        return
    floats = data.assign(**{c: data[c].astype(float) for c in ints})
    alt = model_matrix(parsed(expr), floats, na_action="raise", **kw)
    a, b = (m if sp.issparse(m) else dense(m) for m in (mm, alt))
    if a.shape != b.shape or a.dtype.kind not in "iufb" or b.dtype.kind not in "iufb":
        return
    bad = _differing_columns(a, b)
    if bad.any():
        col = str(mm.model_spec.column_names[int(np.nonzero(bad)[0][0])])
        raise DataError(
            f"'{lme4_name(col)}' overflows 64-bit integers (the column"
            f"{'s' if len(ints) > 1 else ''} {', '.join(repr(c) for c in ints)} hold"
            f"{'' if len(ints) > 1 else 's'} integers, whose arithmetic wraps around): convert to "
            f"float first, e.g. df['{ints[0]}'].astype(float), or rescale"
        )


def _differing_columns(a: Any, b: Any) -> np.ndarray:
    """Columns where two matrices differ by more than 1e-9 relative (NaN equals NaN)."""
    if sp.issparse(a) or sp.issparse(b):
        a, b = sp.csc_matrix(a, dtype=float), sp.csc_matrix(b, dtype=float)
        gap = abs(a - b) - 1e-9 * abs(b)
        return np.asarray((gap > 0).sum(axis=0)).ravel() > 0
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.asarray((~np.isclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True)).any(axis=0))


def check_finite(values: np.ndarray, names: list[str], what: str, index: pd.Index) -> None:
    """Refuse inf and NaN (after transformation), naming the column and the first rows."""
    bad = ~np.isfinite(values)
    if bad.any():
        col = int(np.nonzero(bad.any(axis=0))[0][0]) if values.ndim == 2 else 0
        rows = index[np.nonzero(bad if values.ndim == 1 else bad[:, col])[0][:5]].tolist()
        raise DataError(
            f"{what} '{names[col]}' has non-finite values (inf or NaN after transformation) "
            f"at rows {rows}: fix or drop those rows"
        )
