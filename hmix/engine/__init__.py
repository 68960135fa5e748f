"""The penalized least-squares engine: the blocked Cholesky factor of Lambda'A Lambda + I.

Its input is the statistics of the model, the blocks of A = [Z X y]'W[Z X y] (sums over rows,
``statistics``); its output a ``Factor`` at any lam (the values of the terms' relative
covariance factors, see ``hmix.remat.ThetaMap``), from which the profiled deviance, beta, u and
the variances follow. How it factors is a set of small strategies (``cholesky``, ``whole``),
chosen once, at construction, by ``choose``:

1. Small systems (at most ``whole_size`` rows in all, and not reweighted) evaluate the
   objective's value from a dense copy of the whole system (``WholeSystem``).
2. The Schur update of the rest block: a dense F (``DenseUpdate``) for small systems, for
   systems filled once whose dense F costs at most ``dense_per_pair_once`` times the pair map's
   entries in flops, and for systems refilled at every PIRLS step at most ``dense_per_pair``
   times; for a scalar first term with more than ``pair_rows`` pairs (and
   at most ``max_pair_rows``), the pair map by rows built in chunks (``PairRowsUpdate``); else
   the pair map (``PairMapUpdate``) while it has at most ``max_pairs`` entries; beyond both, a
   dense F where it is that cheap and fits in a quarter of the memory, else a sparse F F'
   (``SparseUpdate``).
3. The rest block: when the first term is nested in the only other term, a scalar one, with at
   least ``bordered_rows`` levels, a diagonal bordered by the rows of X and y, stored and
   factored without its square (``BorderedCholesky``: nested designs of any size); else the
   second term's rows eliminated by a scaling when the first term is nested in a scalar second
   term (``NestedRest``), else LAPACK's Cholesky (``DenseRest``), whose dense block must stay
   within ``max_dense`` rows and the machine's memory.
4. Systems filled once whose last terms' rows are at most ``tail_fraction`` of the rest block,
   with a diagonal Lambda_r, keep factors to finish later ones from (``TailCache``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import HmixError
from ..remat import ReTerm
from .cholesky import (
    BlockedCholesky,
    DenseRest,
    DenseUpdate,
    NestedRest,
    PairMapUpdate,
    RestFactorization,
    SchurUpdate,
    SparseUpdate,
    TailCache,
)
from .factor import Factor
from .layout import Layout
from .linalg import NotPositiveDefinite
from .nested import BorderedCholesky
from .pairs import PairRowsUpdate
from .statistics import Blocks, Pattern, RowStatistics, reduce_blocks
from .whole import WholeSystem

__all__ = [
    "Engine",
    "Rule",
    "Factor",
    "Layout",
    "Pattern",
    "Blocks",
    "RowStatistics",
    "reduce_blocks",
    "NotPositiveDefinite",
    "choose",
]


@dataclass(frozen=True)
class Rule:
    """The thresholds of ``choose`` (the defaults were measured; tests force each path).

    Attributes
    ----------
    max_dense : int
        Largest rest block (rows) factored densely (20,000: 3.2 GB a copy).
    whole_size, whole_basis : int
        Systems of at most this many rows in all, whose polynomial coefficients hold at most
        ``whole_basis`` values, evaluate the objective from the whole system (the two paths
        break even near 55 rows).
    max_pairs : int
        Largest pair map (about 0.5 GB at 40M entries).
    pair_rows, max_pair_rows : int
        A scalar first term whose pairs of random-effects entries number more than
        ``pair_rows`` (and at most ``max_pair_rows``) stores its pair map by rows of S, built in
        chunks (``PairRowsUpdate``: a quarter of the time per product, a third of the memory).
    dense_per_pair, dense_per_pair_once : float
        Reweighted systems take a dense F while its flops stay below ``dense_per_pair`` times
        the pair map's entries (BLAS at ~0.1 ns a flop against a few ns an entry for a refill);
        systems filled once (LMMs) while they stay below ``dense_per_pair_once`` times (the pair
        map's product alone, about 1 ns an entry; its symbolic phase costs more than a small
        fit's evaluations, and many dense columns of X would make gigabytes of pairs).
    tail_fraction, tail_keep, tail_bytes : float, int, int
        Tails of at most this fraction of the rest block are finished alone; the factors of the
        last ``tail_keep`` heads are kept while their Lr take at most ``tail_bytes``.
    nested : bool
        Eliminate a nested second term's rows by a scaling.
    bordered_rows : int
        Nested designs whose second term has at least this many levels store the rest block as
        a bordered diagonal (``BorderedCholesky``).
    pair_chunk : int
        Pairs per chunk of ``PairRowsUpdate``'s symbolic phase.
    heavy_fraction : float
        ``PairRowsUpdate`` leaves out of its pairs the levels with more entries than this
        fraction of the rest block's rows, and updates with their dense columns by BLAS (their
        pairs would cost more than m^2 flops: power-law activity, a few users rating thousands
        of items).
    """

    max_dense: int = 20_000
    whole_size: int = 50
    whole_basis: int = 2_000_000
    max_pairs: int = 40_000_000
    pair_rows: int = 4_000_000
    max_pair_rows: int = 400_000_000
    dense_per_pair: float = 50.0
    dense_per_pair_once: float = 10.0
    tail_fraction: float = 0.25
    tail_keep: int = 3
    tail_bytes: int = 100_000_000
    nested: bool = True
    bordered_rows: int = 1_000
    pair_chunk: int = 1 << 19
    heavy_fraction: float = 1 / 16


@dataclass(frozen=True)
class Choice:
    """The strategies ``choose`` picked (their names show in ``Engine.strategy``)."""

    whole: bool
    bordered: bool
    update: SchurUpdate
    rest: RestFactorization
    tail0: int | None
    keep: int


def choose(pattern: Pattern, reweighted: bool, rule: Rule) -> Choice:
    """The strategies for this problem (see the module's docstring): by its shape, never by
    timings, so that a fit is reproducible."""
    lay = pattern.layout
    if rule.nested and lay.qr >= rule.bordered_rows and pattern.diagonal_rows == lay.qr and lay.lam_diagonal:
        return Choice(False, True, DenseUpdate(pattern), DenseRest(), None, 0)
    size = lay.q1 + lay.m
    whole = (
        size <= rule.whole_size
        and WholeSystem.basis_size(lay.nlam, size) <= rule.whole_basis
        and not reweighted
    )
    npairs = PairMapUpdate.pairs(pattern)
    update: SchurUpdate
    dense_flops = lay.m * lay.m * lay.q1 * lay.k1
    heavy = int(rule.heavy_fraction * lay.m)
    # a dense F when BLAS over it costs less than the pairs (dense columns of X make a pair per
    # two of them and level: 5,000 columns, 100 levels, 1.25e9 pairs for 2.6e9 flops)
    once = dense_flops <= rule.dense_per_pair_once * npairs
    if whole or (dense_flops <= rule.dense_per_pair * npairs if reweighted else once):
        update = DenseUpdate(pattern)
    elif lay.k1 == 1 and rule.pair_rows < PairRowsUpdate.pairs(pattern, heavy) <= rule.max_pair_rows:
        update = PairRowsUpdate(pattern, reweighted, chunk=rule.pair_chunk, heavy=heavy)
    elif (
        npairs > rule.max_pair_rows
        and dense_flops <= rule.dense_per_pair * npairs
        and 16 * lay.m * lay.q1 <= physical_memory() / 4
    ):  # (so many pairs that the first term's levels meet most of the rest: BLAS on a dense F)
        update = DenseUpdate(pattern)
    elif npairs > rule.max_pairs:
        update = SparseUpdate(pattern)
    else:
        update = PairMapUpdate(pattern, merge=not reweighted)
    kd = pattern.diagonal_rows if rule.nested else 0
    rest: RestFactorization = NestedRest(kd) if kd else DenseRest()
    tails = [o for o in lay.rest_offsets if lay.m - o <= rule.tail_fraction * lay.m]
    tail0 = min(tails) if tails and lay.lam_diagonal and not reweighted else None
    keep = min(rule.tail_keep, rule.tail_bytes // (8 * lay.m * lay.m)) if tail0 is not None else 0
    return Choice(whole, False, update, rest, tail0 if keep else None, keep)


def physical_memory() -> int:
    """Bytes of memory of this machine (0 when the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def check_dense_size(layout: Layout, rule: Rule) -> None:
    """Refuse, before allocating it, a dense rest block beyond ``rule.max_dense`` rows or the
    machine's memory, naming the term that drives it and what it would take."""
    m = layout.m
    memory = physical_memory()  # (0 where the system does not say: then only max_dense applies)
    if m <= rule.max_dense and (memory == 0 or 3 * 8 * m * m <= memory):
        return
    big = max(layout.terms[1:], key=lambda t: t.q, default=None)
    need = 3 * 8 * m * m / 2**30
    what = (
        f"the random effects after the largest term, {layout.qr} of them ({big.q} from the term "
        f"({big.lhs} | {big.group})),"
        if big is not None and layout.qr >= layout.p
        else f"the {layout.p} fixed effects (and {layout.qr} random effects after the largest term)"
    )
    raise HmixError(
        f"{what} form a dense block of {m:,} x {m:,} doubles: "
        f"{8 * m * m / 2**30:.1f} GiB a copy and about {need:.1f} GiB for a fit, beyond "
        f"{'this machine' if m <= rule.max_dense else f'the dense limit of {rule.max_dense:,} rows'}. "
        f"Only nested designs (the largest term nested in a single scalar term) are factored "
        f"sparsely; for crossed factors, fit the larger one as the first term and keep the other "
        f"below {rule.max_dense:,} levels (for instance by dropping its rarest levels)"
    )


_KEEP_LAST_ROWS = 500  # the engine keeps its last factor up to this many rows of the rest block


class Engine:
    """Penalized least squares for one set of weights: the blocks of A and their factorization.

    Parameters
    ----------
    terms : sequence of ReTerm
        Random-effects terms in lme4's order; lam follows that order.
    X : ndarray, shape (n, p)
    y : ndarray, shape (n,)
    weights : ndarray or None
        Prior (or PIRLS working) weights.
    reweighted : bool, default False
        The weights will change at every step (PIRLS): lay out the Schur complement for cheap
        refills rather than cheap factorizations.
    rule : Rule, optional
        The thresholds of the choice of strategies.

    Examples
    --------
    >>> import numpy as np, hmix
    >>> from hmix.engine import Engine
    >>> d = hmix.build_design("Reaction ~ Days + (Days | Subject)", hmix.datasets.load("sleepstudy"))
    >>> e = Engine(d.terms, d.X, d.y)
    >>> e.strategy
    {'whole system': True, 'schur update': 'dense F', 'rest': 'dense', 'tail cache': False}
    >>> np.round(e.factor(np.array([0.967, 0.015, 0.231])).beta, 2).tolist()
    [251.41, 10.47]
    """

    def __init__(
        self,
        terms: tuple[ReTerm, ...],
        X: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        reweighted: bool = False,
        rule: Rule | None = None,
    ):
        layout = Layout.of(tuple(terms), X.shape[1], len(y))
        stats = RowStatistics(layout, reweighted=reweighted)
        self._setup(layout, stats.pattern, reweighted, rule or Rule())
        self._rows = True
        blocks = stats.fill(X, y, weights)
        # (filled once: its symbolic phase is redone if new data come, and its memory is free
        # before the Schur update's own symbolic phase)
        self.stats: RowStatistics | None = stats if reweighted else None
        del stats
        self.set_blocks(blocks)

    @classmethod
    def from_statistics(
        cls,
        layout: Layout,
        pattern: Pattern,
        blocks: Blocks,
        *,
        reweighted: bool = False,
        rule: Rule | None = None,
    ) -> Engine:
        """An engine for statistics reduced elsewhere (``hmix.distributed``): it factors, but
        ``set_data`` has no rows to compute new statistics from (``set_blocks`` takes them).

        Examples
        --------
        >>> import numpy as np, hmix
        >>> from hmix.engine import Engine, Layout, RowStatistics
        >>> d = hmix.build_design("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
        >>> lay = Layout.of(d.terms, d.p, d.n)
        >>> st = RowStatistics(lay)
        >>> e = Engine.from_statistics(lay, st.pattern, st.fill(d.X, d.y, None))
        >>> round(e.factor(np.array([0.848])).r2, 1)
        71093.6
        """
        self = cls.__new__(cls)
        self._setup(layout, pattern, reweighted, rule or Rule())
        self.stats = None
        self._rows = False
        self.set_blocks(blocks)
        return self

    def _setup(self, layout: Layout, pattern: Pattern, reweighted: bool, rule: Rule) -> None:
        self.layout = layout
        self.reweighted = reweighted
        self.pattern = pattern
        choice = choose(pattern, reweighted, rule)
        self.chol: BlockedCholesky
        if choice.bordered:
            self.chol = BorderedCholesky(pattern)
        else:
            check_dense_size(layout, rule)
            self.chol = BlockedCholesky(pattern, choice.update, choice.rest, shared_blocks=not reweighted)
        self.cache = TailCache(self.chol, choice.tail0, choice.keep) if choice.tail0 is not None else None
        self.whole = WholeSystem(self.chol) if choice.whole else None
        # an engine without rows (a Dask fit's statistics) takes its exact derivatives from a
        # whole system made for them alone, when its coefficients fit in whole_basis values
        size = layout.q1 + layout.m
        self._derivative_basis = (
            not choice.whole
            and not choice.bordered
            and not reweighted
            and WholeSystem.basis_size(layout.nlam, size) <= rule.whole_basis
        )
        self._derivative_whole: WholeSystem | None = None
        # the last factor and its lam's bytes: a fit asks for the factor at its optimum twice
        # (the last exact gradient, then the model), and a factor is never modified; kept for
        # small rest blocks only (a large one's copy would add to the memory a fit needs)
        self._keep_last = layout.m <= _KEEP_LAST_ROWS
        self._last: tuple[bytes, Factor] | None = None

    @property
    def strategy(self) -> dict[str, object]:
        """The strategies chosen for this problem."""
        return {
            "whole system": self.whole is not None,
            "schur update": self.chol.update.name,
            "rest": self.chol.rest.name,
            "tail cache": self.cache is not None,
        }

    def set_data(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> None:
        """New data or weights (once for an LMM, at every PIRLS step for a GLMM)."""
        self.set_blocks(self.statistics(X, y, weights))

    def statistics(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> Blocks:
        """The statistics of these data on the engine's pattern, without setting them."""
        if not self._rows:
            raise HmixError("this engine was made from statistics: give it new ones with set_blocks")
        if self.stats is None:
            self.stats = RowStatistics(self.layout, reweighted=self.reweighted)
        return self.stats.fill(X, y, weights)

    def set_blocks(self, blocks: Blocks) -> None:
        """New statistics (from ``RowStatistics.fill`` or ``reduce_blocks``)."""
        self._last = None
        self.chol.set_blocks(blocks)
        if self.whole is not None:
            self.whole.refill()
        self._derivative_whole = None  # (made again from the new blocks when asked for)
        self.forget()

    def forget(self) -> None:
        """Drop the kept factors of the tail cache (they serve one optimization only)."""
        if self.cache is not None:
            self.cache.clear()

    def release(self) -> None:
        """After an optimization: drop the kept factors and the values' workspace (a large rest
        block's copy, which would stand beside the fitted model's own factor)."""
        self.forget()
        self.chol.release()

    def factor(self, lam: np.ndarray) -> Factor:
        """The blocked Cholesky factor at ``lam``.

        Raises
        ------
        NotPositiveDefinite
            When a block is not numerically positive definite.
        """
        lam = np.asarray(lam, dtype=float)
        if self.cache is not None:  # (its factors depend on the kept one: not reused here)
            return self.cache.factor(lam)
        key = lam.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        if not self._keep_last:
            return self.chol.factor(lam)
        # (a copy: the kept factor holds its lam, which the caller may change afterwards)
        fac = self.chol.factor(lam.copy())
        self._last = (key, fac)
        return fac

    def objective_parts(self, lam: np.ndarray) -> tuple[float, float, float]:
        """``(log|L_Z|^2, log|L_X|^2, r^2)`` at ``lam``: what the profiled deviance needs."""
        lam = np.asarray(lam, dtype=float)
        if self.whole is not None:
            return self.whole.objective_parts(lam)
        if self.cache is None and not self._keep_last:  # (read at once: the kept workspace)
            fac = self.chol.factor(lam, workspace=True)
        else:
            fac = self.factor(lam)
        return fac.logdet_z, fac.logdet_x, fac.r2

    def derivatives(
        self, lam: np.ndarray, hessian: bool = False
    ) -> tuple[tuple[float, float, float], np.ndarray, np.ndarray | None] | None:
        """``objective_parts`` at ``lam`` and the exact derivatives in lam of log|L_Z|^2,
        log|L_X|^2 and log r^2 where the whole system gives them (``WholeSystem.derivatives``);
        else None."""
        whole = self.whole
        if whole is None and self.exact_derivatives:
            if self._derivative_whole is None:
                self._derivative_whole = WholeSystem(self.chol)
                self._derivative_whole.refill()
            whole = self._derivative_whole
        return None if whole is None else whole.derivatives(np.asarray(lam, dtype=float), hessian)

    @property
    def exact_derivatives(self) -> bool:
        """Whether ``derivatives`` gives the exact gradient and Hessian: for a whole system, and
        for an engine without rows (statistics reduced over a cluster) whose whole system's
        coefficients fit in ``Rule.whole_basis`` values (those with rows sum the gradient over
        them, cheaper than the whole system's inverse beyond a few dozen rows)."""
        return self.whole is not None or (not self._rows and self._derivative_basis)

    @property
    def work(self) -> float:
        """Estimated flops of one factorization."""
        return self.chol.work

    @property
    def step_order(self) -> np.ndarray | None:
        """theta's indices term by term in the engine's order, when stepping the last terms'
        alone lets a factor be finished from the last one's (the tail cache); else None."""
        if self.cache is None:
            return None
        slices = self.layout.thetamap.slices  # (theta's, not lam's: a structured term has fewer)
        return np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in self.layout.perm])

    def to_lme4(self, per_term: list[np.ndarray]) -> list[np.ndarray]:
        """Reorder per-term results from engine order to lme4's order."""
        return self.layout.to_lme4(per_term)
