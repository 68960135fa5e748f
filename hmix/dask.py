"""Mixed models of Dask DataFrames: data that never sit in one process's memory.

``hmix.lmer(formula, data=dask_frame)`` (and ``hmix.glmer``) come here. The rows stay on the
workers; the client holds the statistics of the model and the optimizer:

1. a first pass collects each partition's distinct levels of the grouping factors and
   categorical columns, and a few rows; their union gives the levels in R's order, and the
   rows a template design (how to code every partition as one frame would be);
2. each partition is materialized (y, X and the terms' rows, with the global levels): again at
   each of an LMM's few passes, once and persisted on the workers for a GLMM's many;
3. the statistics of A are a map over the partitions and a tree reduction (``Statistics`` add up
   over their patterns); the engine and the optimizer then run on the client as for a frame in
   memory, and give its answer;
4. GLMMs take one such map-reduce per PIRLS step, with the weights computed on the workers
   (``hmix.dask_glmm``).

The fitted model has the same interface as one fitted in memory, except what needs the rows
(fitted values, residuals, refits), which says so. ``pip install "hmix[dask]"`` brings dask and
distributed.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from .design import Design, build_design, columns_used, complete_rows_mask
from .engine import Engine, Layout
from .errors import DataError, HmixError, MissingDataWarning, user_stacklevel
from .formula import parse_formula, quote_dotted
from .newdata import codings, formulaic_types
from .remat import ReTerm, group_codes
from .response import response

__all__ = ["is_dask_frame", "require_dask", "DaskRows", "prepare", "check_sizes"]

_SAMPLE_ROWS = 1_000  # rows per partition in the template design's sample


def is_dask_frame(data: object) -> bool:
    """Whether ``data`` is a Dask DataFrame (without importing dask)."""
    return type(data).__module__.split(".")[0] == "dask" and hasattr(data, "map_partitions")


def require_dask() -> Any:
    """The dask module, or an HmixError that says how to install it."""
    if importlib.util.find_spec("dask") is None or importlib.util.find_spec("distributed") is None:
        raise HmixError('fitting a Dask DataFrame needs dask and distributed: pip install "hmix[dask]"')
    import dask

    return dask


# ----- the first pass: levels and a sample ---------------------------------------------------
def _summary(df: pd.DataFrame, groups: list[tuple[str, ...]], factors: list[str]) -> dict[str, Any]:
    """A partition's distinct level combinations, distinct factor values and first rows."""
    return {
        "groups": {g: df[list(g)].drop_duplicates() for g in groups},
        "factors": {c: df[c].drop_duplicates() for c in factors},
        "sample": df.head(_SAMPLE_ROWS),
    }


def _order(values: pd.Series, grouping: bool) -> pd.Index:
    """Distinct values in the order a fit in memory gives them: R's factor order for grouping
    columns, formulaic's (sorted) for factors of the fixed part."""
    values = values.dropna()
    if grouping or isinstance(values.dtype, pd.CategoricalDtype):
        return group_codes(values.to_frame(), (str(values.name),))[1]
    return pd.Index(sorted(values.unique()))


@dataclass(frozen=True, eq=False)
class Spec:
    """What every partition needs to be coded as one frame: shipped to the workers."""

    design: Design  # the template, with the global terms (no rows) and codings
    used: frozenset[str]
    dtypes: dict[str, Any]
    categories: dict[str, pd.Index]
    weights: str | None
    offset: str | None
    binary_ok: bool


def _categorical(df: pd.DataFrame, categories: dict[str, pd.Index]) -> pd.DataFrame:
    todo = [c for c in categories if c in df.columns]
    if not todo:
        return df
    out = df.copy(deep=False)
    for c in todo:
        out[c] = pd.Categorical(df[c], categories=categories[c])
    return out


@dataclass(frozen=True, eq=False)
class DaskRows:
    """One partition materialized: response, fixed effects, the terms on its rows (global
    levels), prior weights and offset, and the rows dropped for missing values."""

    y: np.ndarray
    X: np.ndarray
    terms: tuple[ReTerm, ...]
    weights: np.ndarray | None
    offset: np.ndarray | None
    n_dropped: int

    @property
    def n(self) -> int:
        return len(self.y)

    def layout(self) -> Layout:
        return Layout.of(self.terms, self.X.shape[1], self.n)


def materialize(df: pd.DataFrame, spec: Spec) -> DaskRows:
    """A partition's rows, coded as the template codes new data."""
    d = spec.design
    df = _categorical(df, spec.categories)
    w_arg = None if spec.weights is None else np.asarray(df[spec.weights], dtype=float)
    o_arg = None if spec.offset is None else np.asarray(df[spec.offset], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            keep, dropped = complete_rows_mask(df, set(spec.used), (w_arg, o_arg))
        except DataError:  # (every row of this partition has a missing value)
            keep, dropped = np.zeros(len(df), bool), len(df)
    frame = formulaic_types(df.loc[keep, sorted(spec.used)], spec.used, dict(spec.dtypes))
    y, trials, _ = response(d.formula, frame, spec.binary_ok)
    X = d.fixed_matrix(frame)
    terms = tuple(replace(t, refs=d.level_index(t, frame), z=d.re_columns(t, frame)) for t in d.terms)
    w = None if w_arg is None else w_arg[keep]
    if trials is not None:
        w = trials if w is None else w * trials
    off = d.offset_terms(frame) if d.formula.offsets else None
    if o_arg is not None:
        off = o_arg[keep] if off is None else off + o_arg[keep]
    return DaskRows(y, X, terms, w, off, int(dropped))


def prepare(
    formula: str,
    ddf: Any,
    *,
    weights: Any = None,
    offset: Any = None,
    binary_ok: bool = False,
    persist: bool = False,
) -> tuple[Spec, list[Any], pd.DataFrame]:
    """The first pass: the template ``Spec``, the partitions materialized (a list of Dask
    delayed objects, one per partition: persisted on the workers with ``persist``, for the many
    passes of a GLMM; else computed again from the source at each of an LMM's few passes, so
    that the workers never hold all the rows) and the sample the template was built on."""
    dask = require_dask()
    for name, arg in (("weights", weights), ("offset", offset)):
        if arg is not None and not isinstance(arg, str):
            raise DataError(f"with a Dask DataFrame, {name}= must name a column of it, not give values")
    parsed = quote_dotted(parse_formula(formula), ddf.columns)
    meta = ddf._meta
    used, dtypes = columns_used(parsed, meta)
    groups = sorted({bar.group for bar in parsed.bars})
    grouping = {c for g in groups for c in g}
    numeric = {
        c
        for c in used
        if pd.api.types.is_numeric_dtype(dtypes[c]) and not pd.api.types.is_bool_dtype(dtypes[c])
    }
    factors = sorted(c for c in used if c not in numeric)
    parts = ddf.to_delayed()
    summaries = dask.compute(*[dask.delayed(_summary)(p, groups, factors) for p in parts])
    categories = {
        c: _order(pd.concat([s["factors"][c] for s in summaries], ignore_index=True), c in grouping)
        for c in factors
    }
    sample = _categorical(pd.concat([s["sample"] for s in summaries]), categories)
    dtypes = columns_used(parsed, sample)[1]  # (the factors as categorical columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tpl = build_design(parsed, sample, weights=weights, offset=offset, binary_ok=binary_ok)
    levels = {}
    for g in groups:
        combos = _categorical(pd.concat([s["groups"][g] for s in summaries]).drop_duplicates(), categories)
        combos = combos.dropna()
        name = ":".join(g)
        levels[name] = group_codes(combos, g)[1]
    from .distributed import rowless_terms

    terms = rowless_terms(tpl, levels)
    frame = formulaic_types(sample, used, dict(dtypes))
    tpl = replace(
        tpl,
        terms=terms,
        codings=codings(frame, used, [tpl.fixed_spec] + [t.spec for t in terms], list(terms), dtypes),
    )
    spec = Spec(tpl, frozenset(used), dtypes, categories, weights, offset, binary_ok)
    rows = [dask.delayed(materialize)(p, spec) for p in parts]
    return spec, list(dask.persist(*rows)) if persist else rows, sample


def tree_sum(items: list[Any]) -> Any:
    """Pairwise sums of delayed objects, level by level (a tree of depth log2 of their count)."""
    dask = require_dask()
    while len(items) > 1:
        pairs = [dask.delayed(_add)(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        items = pairs + ([items[-1]] if len(items) % 2 else [])
    return items[0]


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def engine_from(stats: Any, terms: tuple[ReTerm, ...], p: int, *, reweighted: bool = False) -> Engine:
    """The engine of the reduced statistics (the terms without rows give the layout)."""
    layout = Layout.of(terms, p, stats.n)
    return Engine.from_statistics(layout, stats.pattern(layout), stats.blocks(), reweighted=reweighted)


# ----- linear mixed models -------------------------------------------------------------------
def _lmm_statistics(rows: DaskRows) -> Any:
    from .distributed import ColumnMoments, statistics_of

    if rows.n == 0 and rows.n_dropped == 0:
        return None
    # (a partition whose every row has a missing value still counts them: its statistics are
    # of zero rows)
    y = rows.y if rows.offset is None else rows.y - rows.offset
    moments = ColumnMoments.of(rows.X, rows.terms, rows.weights)
    return replace(
        statistics_of(rows.layout(), rows.X, y, rows.weights), dropped=rows.n_dropped, moments=moments
    )


def rowless_design(spec: Spec, n: int, dropped: int) -> Any:
    """The fitted model's design: the template's coding, the global terms, no rows (and the
    in-memory fit's warning for rows dropped with missing values)."""
    from .distributed import RowlessDesign

    if dropped:
        warnings.warn(
            f"dropped {dropped} of {n + dropped} rows with missing values",
            MissingDataWarning,
            stacklevel=user_stacklevel(),
        )

    tpl = spec.design
    none = np.zeros(0)
    fields = {f: getattr(tpl, f) for f in tpl.__dataclass_fields__}
    fields.update(
        y=none,
        X=np.zeros((0, tpl.p)),
        weights=none if spec.weights is not None or tpl.formula.cbind is not None else None,
        offset=none if spec.offset is not None or tpl.formula.offsets else None,
        index=pd.RangeIndex(0),
        n_dropped=dropped,
        nobs=int(n),
    )
    return RowlessDesign(**fields)


def lmer(
    formula: str,
    ddf: Any,
    *,
    REML: bool,
    weights: str | None,
    offset: str | None,
    check_conv: bool,
    verbose: bool,
    data_name: str,
    max_theta: int | None = 100,
) -> Any:
    """``hmix.lmer`` for a Dask DataFrame (see the module's docstring)."""
    from .distributed import start_theta_from
    from .fit import lmm_model, optimize_lmm
    from .lmm import LMMObjective, check_size

    dask = require_dask()
    spec, parts, _ = prepare(formula, ddf, weights=weights, offset=offset)
    check_size(spec.design, max_theta)  # (after the levels' pass, before the statistics')
    stats = tree_sum([dask.delayed(_lmm_statistics)(p) for p in parts]).compute()
    if stats is None or stats.n == 0:
        raise DataError("every row has a missing value in a variable the formula uses")
    dropped = stats.dropped
    tpl = spec.design
    check_sizes(tpl, stats.n)
    engine = engine_from(stats, tpl.terms, tpl.p)
    theta0 = start_theta_from(engine.layout, engine.pattern, stats.blocks(), stats.n)
    design = rowless_design(spec, stats.n, dropped)
    mom = stats.moments
    scale = mom.theta_scale(engine.layout.thetamap) * np.sqrt(mom.sum_w / mom.n)
    f = LMMObjective(
        design, REML=REML, engine=engine, theta0=theta0, sum_log_w=stats.sum_log_w, param_scale=scale
    )
    theta, optsum, singular, converged = optimize_lmm(f, check_conv=check_conv, verbose=verbose)
    fac = f.factor(theta)
    b = [v.ravel() for v in engine.to_lme4(fac.b_engine)]
    sigma = f.sigma(fac)
    q = exact_quantiles(parts, _ScaledResiduals(fac.beta.copy(), b, sigma), [0, 0.25, 0.5, 0.75, 1.0])
    f.design = replace(design, residual_quantiles=q)
    return lmm_model(f, theta, optsum, singular=singular, converged=converged, data_name=data_name)


def check_sizes(design: Design, n: int) -> None:
    if n <= design.p:
        raise DataError(
            f"{n} observations for {design.p} fixed effects: use more data or fewer fixed effects"
        )
    for t in design.terms:
        if t.nlevels >= n:
            raise DataError(
                f"the grouping factor '{t.group}' has {t.nlevels} levels for {n} observations: "
                "a random effect per observation is confounded with the residual"
            )


@dataclass(frozen=True, eq=False)
class _ScaledResiduals:
    """Pearson residuals over sigma of a partition's rows at the estimates."""

    beta: np.ndarray
    b: list[np.ndarray]
    sigma: float

    def __call__(self, rows: DaskRows) -> np.ndarray:
        eta = rows.X @ self.beta
        for t, bt in zip(rows.terms, self.b):
            eta = eta + t.contribution(bt)
        if rows.offset is not None:
            eta = eta + rows.offset
        r = rows.y - eta
        if rows.weights is not None:
            r = r * np.sqrt(rows.weights)
        return r / self.sigma


def _range(values: Any, rows: DaskRows) -> tuple[float, float, int]:
    v = values(rows)
    return (float(v.min()), float(v.max()), len(v)) if len(v) else (np.inf, -np.inf, 0)


def _histogram(values: Any, rows: DaskRows, edges: np.ndarray) -> np.ndarray:
    return np.histogram(values(rows), edges)[0]


def _in_bins(values: Any, rows: DaskRows, edges: np.ndarray, bins: np.ndarray) -> list[np.ndarray]:
    v = values(rows)
    which = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
    return [np.sort(v[which == k]) for k in bins]


def exact_quantiles(parts: list[Any], values: Any, probs: list[float], nbins: int = 4096) -> np.ndarray:
    """R's type-7 quantiles of values computed on the partitions, exactly, in three passes: the
    range, a histogram, and the values in the bins that hold the order statistics needed."""
    dask = require_dask()
    ranges = dask.compute(*[dask.delayed(_range)(values, p) for p in parts])
    lo, hi, n = min(r[0] for r in ranges), max(r[1] for r in ranges), sum(r[2] for r in ranges)
    if n == 0:
        return np.full(len(probs), np.nan)
    if lo == hi:
        return np.full(len(probs), lo)
    edges = np.linspace(lo, hi, nbins + 1)
    counts = sum(dask.compute(*[dask.delayed(_histogram)(values, p, edges) for p in parts]))
    h = (n - 1) * np.asarray(probs, dtype=float)
    ranks = np.unique(np.concatenate([np.floor(h), np.minimum(np.floor(h) + 1, n - 1)]).astype(np.int64))
    ends = np.cumsum(counts)
    bins = np.searchsorted(ends, ranks, side="right")
    need = np.unique(bins)
    found = dask.compute(*[dask.delayed(_in_bins)(values, p, edges, need) for p in parts])
    pooled = {k: np.sort(np.concatenate([f[i] for f in found])) for i, k in enumerate(need)}
    order = {int(r): pooled[k][r - (ends[k - 1] if k else 0)] for r, k in zip(ranks, bins)}
    lo_r = np.floor(h).astype(np.int64)
    hi_r = np.minimum(lo_r + 1, n - 1)
    a = np.array([order[int(r)] for r in lo_r])
    b = np.array([order[int(r)] for r in hi_r])
    return a + (h - lo_r) * (b - a)
