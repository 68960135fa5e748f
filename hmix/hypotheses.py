"""What an F test of a model term tests: the contrast matrices of type I and type III tables.

A term of the fixed part (``Product``, ``Days:phase``) is tested as a whole, L beta = 0 with one
row of L per column the term contributes; the rows are the hypotheses lmerTest's ``anova``
tests, so that multi-df Satterthwaite tests (whose df depend on the rows, not only on the space
they span) agree with it.

Type I (sequential): with X'X = R'R (R upper triangular), the rows of R belonging to the term,
each divided by its diagonal element. The term is tested after the terms before it in the
formula and ignoring those after it.

Type III (SAS's, Goodnight 1978; lmerTest's default): write the model over-parameterized, an
intercept and for every term one column per cell of its factors (every level of each, no level
dropped) times its numeric variables. In the treatment-coded full-rank matrix X_t (formulaic's
columns with each factor coded by indicators, the first level dropped where formulaic reduces
it) that matrix is X_t B, and each row of B is an estimable function of the over-parameterized
effects, belonging to the term of its column of X_t. The hypothesis of a term takes its rows of
B and makes them orthogonal to the rows of every term that contains it, the containing terms
being made orthogonal first. A main effect in a model with its interactions is thereby tested
on the levels' means averaged with equal weights over the other factors' levels (with a
numeric variable at 0 when the interaction has one: ``Product`` in ``Product * Age``), whatever
the cell counts; a slope with its interactions (``Age`` in ``Product * Age``) is the average
slope over the levels. The hypotheses are then written in the fit's own coding (formulaic's
treatment coding, ``C(f, contr.sum)``, any other), so the table does not depend on it.

Containment is lmerTest's, on R's marginal variables: a variable v of a term is marginal when
the term without v is a term of the model too (every variable of a main effect is); a term
contains another when its marginal variables include the other's and more, with the same
numeric ones. In ``Days * phase`` the interaction contains ``Days``; in ``Days + Days:phase``
only ``phase`` is marginal in the interaction (``phase`` alone is not a term), so ``Days`` is
not contained and is tested at phase's first level, as lmerTest does.

B does not depend on the data: it follows from the codings alone. It is computed on the points
made of every combination of the factors' levels with each numeric variable at 0 and at 1 --
every column is a product with each variable at most once, so these values fix it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .columns import lme4_name
from .errors import HmixError, HmixWarning, user_stacklevel

if TYPE_CHECKING:
    from .design import Design

__all__ = ["ModelTerm", "model_terms", "hypotheses", "TYPES"]

TYPES = ("I", "III")
MAX_POINTS = 200_000  # cells x numeric corners on which type III's B is computed
_ZERO = 1e-8  # rows whose absolute sum is below this are no hypothesis (lmerTest's cut)


@dataclass(frozen=True)
class ModelTerm:
    """One term of the fixed part.

    Attributes
    ----------
    name : str
        As the formula spells it (``Product:Information``).
    columns : tuple of int
        Its columns among the model's fixed effects (aliased columns are not among them).
    variables : frozenset of str
        The factor expressions it multiplies (``Product``, ``Information``).
    marginal : frozenset of str
        Those whose margin is in the model: the term without them is a term of the model too
        (R's factor code 1; every variable of a main effect).
    numeric : frozenset of str
        The numeric ones among the marginal variables.
    """

    name: str
    columns: tuple[int, ...]
    variables: frozenset[str]
    marginal: frozenset[str]
    numeric: frozenset[str]

    def contained_in(self, other: ModelTerm) -> bool:
        """lmerTest's containment: other's marginal variables include this term's and more, and
        the numeric ones are the same."""
        return self.marginal < other.marginal and self.numeric == other.numeric


def _structure(design: Design) -> list[tuple[Any, list[Any], list[str]]]:
    """(term, scoped terms, column names) per term of formulaic's spec, intercept included."""
    spec = design.fixed_spec
    if hasattr(spec, "structure"):
        return [(s.term, list(s.scoped_terms), list(s.columns)) for s in spec.structure]
    out: list[tuple[Any, list[Any], list[str]]] = []
    for name in spec.column_names:  # (hmix's NumericSpec: the intercept and plain numeric columns)
        out.append((name, [], [name]))
    return out


def _variables(term: Any) -> list[str]:
    if isinstance(term, str):
        return [] if term == "Intercept" else [term]
    return [str(f.expr) for f in term.factors if str(f.expr) != "1"]


def _categorical(design: Design, expr: str) -> dict[str, Any] | None:
    """The encoder state of a categorical factor (None for a numeric one)."""
    kind, state = design.fixed_spec.encoder_state.get(expr, (None, {}))
    return dict(state) if getattr(kind, "value", kind) == "categorical" else None


def model_terms(design: Design) -> list[ModelTerm]:
    """The terms of the fixed part, the intercept left out, in the formula's order.

    Examples
    --------
    >>> import hmix, numpy as np
    >>> data = hmix.datasets.load("sleepstudy")
    >>> data["phase"] = np.where(data.Days > 4, "late", "early")
    >>> d = hmix.build_design("Reaction ~ Days * phase + (1 | Subject)", data)
    >>> [(t.name, t.columns) for t in model_terms(d)]
    [('Days', (1,)), ('phase', (2,)), ('Days:phase', (3,))]
    """
    position = {n: j for j, n in enumerate(design.fixef_names)}
    structure = [(t, frozenset(_variables(t)), cols) for t, _, cols in _structure(design)]
    present = {vs for _, vs, _ in structure}
    out = []
    for term, variables, columns in structure:
        if not variables:
            continue
        marginal = frozenset(v for v in variables if len(variables) == 1 or variables - {v} in present)
        numeric = frozenset(v for v in marginal if _categorical(design, v) is None)
        cols = tuple(position[lme4_name(c)] for c in columns if lme4_name(c) in position)
        name = lme4_name(term if isinstance(term, str) else str(term))
        out.append(ModelTerm(name, cols, variables, marginal, numeric))
    return out


def hypotheses(design: Design, type: str = "III") -> dict[str, np.ndarray]:
    """Each term's contrast matrix L (rows x fixed effects) of a type I or type III test.

    Parameters
    ----------
    design : Design
    type : {"III", "I"}
        See the module's notes. As lmerTest, a model with one term (or one fixed effect) gets
        the type I rows for either.

    Returns
    -------
    dict
        Term name -> L, in the formula's order; a term whose columns were all dropped as
        aliased gets an empty (0 x p) matrix.

    Examples
    --------
    >>> import hmix, numpy as np
    >>> data = hmix.datasets.load("sleepstudy")
    >>> data["phase"] = np.where(data.Days > 4, "late", "early")
    >>> d = hmix.build_design("Reaction ~ Days * phase + (1 | Subject)", data)
    >>> hypotheses(d)["Days"].round(3)
    array([[0. , 1. , 0. , 0.5]])
    """
    kind = str(type).upper().replace("TYPE", "").strip()
    kind = {"1": "I", "3": "III"}.get(kind, kind)
    if kind not in TYPES:
        raise HmixError(f"type must be 'III' (lmerTest's default) or 'I' (sequential), not {type!r}")
    terms = model_terms(design)
    if kind == "I" or len(terms) <= 1 or design.p <= 1:
        return _type1(design, terms)
    return _type3(design, terms)


def _type1(design: Design, terms: list[ModelTerm]) -> dict[str, np.ndarray]:
    p = design.p
    R = np.linalg.cholesky(design.X.T @ design.X).T
    rows = _clean(R / np.diag(R)[:, None])
    return {t.name: rows[list(t.columns)] if t.columns else np.zeros((0, p)) for t in terms}


def _clean(H: np.ndarray) -> np.ndarray:
    """Entries that are zero but for rounding set to zero (the rows are read by users)."""
    H = H.copy()
    H[np.abs(H) < 1e-10 * max(1.0, float(np.abs(H).max(initial=0.0)))] = 0.0
    return H


# ----- type III -----------------------------------------------------------------------------
def _points(design: Design, variables: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """Every combination of the factors' levels (level indices) and of 0/1 for the numeric ones."""
    sizes = []
    for v in variables:
        state = _categorical(design, v)
        sizes.append(len(state["categories"]) if state is not None else 2)
    npoints = int(np.prod(sizes, dtype=float)) if sizes else 1
    if npoints > MAX_POINTS:
        raise HmixError(
            f"type III hypotheses need the {npoints:,} combinations of the fixed factors' levels "
            f"(at most {MAX_POINTS:,}): use type='I' (sequential tests), or hmix.compare to test "
            "a term by a likelihood-ratio test"
        )
    grid = np.indices(sizes).reshape(len(sizes), -1) if sizes else np.zeros((0, 1), int)
    return dict(zip(variables, grid)), npoints


def _coding(design: Design, expr: str, reduced: bool, treatment: bool) -> tuple[np.ndarray, list[str]]:
    """A categorical factor's coding matrix (levels x columns) and its columns' names."""
    state = _categorical(design, expr)
    assert state is not None
    levels = list(state["categories"])
    k = len(levels)
    if treatment:
        eye = np.eye(k)
        return (eye[:, 1:] if reduced else eye), []
    contrasts = getattr(state.get("contrasts"), "contrasts", None)
    if contrasts is None:
        from formulaic.transforms.contrasts import TreatmentContrasts

        contrasts = TreatmentContrasts()
    matrix = np.asarray(contrasts.get_coding_matrix(levels, reduced_rank=reduced), dtype=float)
    fmt = contrasts.get_factor_format(levels, reduced_rank=reduced)
    names = [
        fmt.format(name=expr, field=f)
        for f in contrasts.get_coding_column_names(levels, reduced_rank=reduced)
    ]
    return matrix, names


def _product(parts: list[tuple[np.ndarray, list[str]]], npoints: int) -> tuple[np.ndarray, list[str]]:
    """Row-wise products of the parts' columns, the first part's index varying fastest
    (formulaic's order), with names joined by ':'."""
    out, names = np.ones((npoints, 1)), [""]
    for values, labels in parts:
        out = (values[:, :, None] * out[:, None, :]).reshape(npoints, -1)
        names = [":".join(x for x in (a, b) if x) for b in labels or [""] * values.shape[1] for a in names]
    return out, names


def _factor_columns(
    design: Design, expr: str, codes: np.ndarray, reduced: bool, coding: str
) -> tuple[np.ndarray, list[str]]:
    if _categorical(design, expr) is None:
        return codes[:, None].astype(float), [expr]
    if coding == "cells":
        k = len(_categorical(design, expr)["categories"])  # type: ignore[index]
        return np.eye(k)[codes], []
    matrix, names = _coding(design, expr, reduced, treatment=coding == "treatment")
    return matrix[codes], names


def _columns(
    design: Design, structure: list[Any], codes: dict[str, np.ndarray], npoints: int, coding: str
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The fixed part's columns on the points, their names and each column's term (its index in
    ``structure``). ``coding``: "actual" (the fit's), "treatment" (indicators, first level
    dropped where formulaic reduces), "cells" (the over-parameterized model: every level)."""
    blocks, names, owner = [], [], []
    for i, (term, scoped, columns) in enumerate(structure):
        if coding == "cells" or isinstance(term, str):  # (a NumericSpec column is its own term)
            parts = [_factor_columns(design, v, codes[v], False, coding) for v in _variables(term)]
            m, _ = _product(parts, npoints)
            blocks.append(m)
            names += list(columns)
            owner += [i] * m.shape[1]
            continue
        for st in scoped:
            exprs = [(str(sf.factor.expr), sf.reduced) for sf in st.factors]
            m, nm = _product([_factor_columns(design, e, codes[e], r, coding) for e, r in exprs], npoints)
            blocks.append(m * float(getattr(st, "scale", 1.0)))
            names += [n or "Intercept" for n in nm]
            owner += [i] * m.shape[1]
    return np.hstack(blocks), [lme4_name(n) for n in names], np.asarray(owner)


def _type3(design: Design, terms: list[ModelTerm]) -> dict[str, np.ndarray]:
    structure = _structure(design)
    codes, npoints = _points(design, sorted({v for t, _, _ in structure for v in _variables(t)}))
    Xt, _, owner = _columns(design, structure, codes, npoints, "treatment")
    Xa, names, _ = _columns(design, structure, codes, npoints, "actual")
    over, _, _ = _columns(design, structure, codes, npoints, "cells")
    expected = [lme4_name(c) for _, _, cols in structure for c in cols]
    if names != expected:
        raise HmixError(
            "cannot rebuild the fixed effects' coding for type III hypotheses (a contrast coding "
            "hmix does not know?): use type='I', or hmix.compare for a likelihood-ratio test"
        )
    B = _solve_exact(Xt, over, "the over-parameterized model")
    M = _solve_exact(Xt, Xa, "the fit's coding")  # beta_treatment = M beta
    L = B.T.copy()  # the estimable functions, as columns: one per column of X_t
    index = {lme4_name(str(t)): i for i, (t, _, _) in enumerate(structure)}
    for t in sorted(terms, key=lambda t: -len(t.variables)):
        containing = [index[u.name] for u in terms if t.contained_in(u)]
        if containing:
            mine, theirs = owner == index[t.name], np.isin(owner, containing)
            coef, *_ = np.linalg.lstsq(L[:, theirs], L[:, mine], rcond=None)
            L[:, mine] -= L[:, theirs] @ coef
    if design.dropped_columns:
        warnings.warn(
            f"fixed-effect columns {', '.join(design.dropped_columns)} were dropped as aliased (empty "
            "cells?): the type III hypotheses leave them out; interpret them with care",
            HmixWarning,
            stacklevel=user_stacklevel(),
        )
    keep = [expected.index(n) for n in design.fixef_names]
    out = {}
    for t in terms:
        # the function of beta_treatment each estimable function is, then of the fit's beta
        H = np.linalg.lstsq(B.T, L[:, owner == index[t.name]], rcond=None)[0].T @ M
        H = _clean(H[:, keep])
        out[t.name] = H[np.abs(H).sum(axis=1) > _ZERO]
    return out


def _solve_exact(X: np.ndarray, Y: np.ndarray, what: str) -> np.ndarray:
    """C with X C = Y; an error when Y is not in X's column space."""
    C, *_ = np.linalg.lstsq(X, Y, rcond=None)
    scale = max(1.0, float(np.abs(Y).max(initial=0.0)))
    if np.abs(X @ C - Y).max(initial=0.0) > 1e-8 * scale:
        raise HmixError(
            f"the fixed effects' columns do not span {what}, so type III hypotheses are not "
            "defined for this formula: use type='I', or hmix.compare for a likelihood-ratio test"
        )
    return C
