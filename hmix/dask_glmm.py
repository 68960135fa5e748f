"""GLMMs of Dask DataFrames: PIRLS with one map-reduce over the persisted partitions a step.

``DaskGLMMObjective`` is ``hmix.glmm.GLMMObjective`` with its sums over rows done where the
rows are. A point of PIRLS is (theta, beta, u): every partition computes its own linear
predictor from it (the vectors are small: one value per level), so nothing of the size of the
rows crosses the network. A PIRLS step is one pass that gives the deviance at the trial point
and, in case it is accepted, the statistics of A at its working weights; a step that is halved
costs one more pass. The exact gradient of the Laplace deviance takes two passes (three for a
non-canonical link), with the factor sent to the workers; the GLM start, one pass per IRLS step.
The stages of the fit (``hmix.fit``) run unchanged on the client.

The PIRLS weights' floor (1e-10 of the largest, against separation) is taken per partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla

from .dask import DaskRows, require_dask, rowless_design, tree_sum
from .design import Design
from .distributed import ColumnMoments, Statistics
from .engine import Blocks, Engine, Factor, Layout, Pattern, RowStatistics
from .errors import DataError
from .families import Family
from .glmm import GLMMObjective, PirlsSettings, PirlsState, agq_rule, warn_separation

__all__ = ["DaskGLMMObjective", "glmer"]


# ----- what the workers compute --------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Point:
    """A point of PIRLS: the fixed effects in the linear predictor and b = Lambda u per term
    (lme4's order, the partitions' order of terms)."""

    beta: np.ndarray
    b: tuple[np.ndarray, ...]

    def eta(self, rows: DaskRows) -> np.ndarray:
        eta = rows.X @ self.beta
        for t, bt in zip(rows.terms, self.b):
            eta = eta + t.contribution(bt)
        return eta if rows.offset is None else eta + rows.offset


def _wt(rows: DaskRows) -> np.ndarray:
    return np.ones(rows.n) if rows.weights is None else rows.weights


@dataclass(frozen=True, eq=False)
class Part:
    """A partition with its two row statistics (systems without and with X) on the global
    patterns: built once, kept on its worker."""

    rows: DaskRows
    stats_u: RowStatistics
    stats_joint: RowStatistics


def _part(rows: DaskRows, pattern_u: Pattern, pattern_joint: Pattern) -> Part:
    lay_u = Layout.of(rows.terms, 0, rows.n)
    lay_j = rows.layout()
    return Part(
        rows,
        RowStatistics(lay_u, pattern=Pattern(lay_u, pattern_u.r1_keys, pattern_u.rr_keys), reweighted=True),
        RowStatistics(
            lay_j, pattern=Pattern(lay_j, pattern_joint.r1_keys, pattern_joint.rr_keys), reweighted=True
        ),
    )


def _keys(rows: DaskRows, p: int) -> Statistics | None:
    """A partition's pattern (for the system with ``p`` fixed effects), as statistics."""
    from .distributed import statistics_of

    if rows.n == 0:
        return None
    lay = Layout.of(rows.terms, p, rows.n)
    return statistics_of(lay, np.zeros((rows.n, p)), np.zeros(rows.n), None)


@dataclass(frozen=True, eq=False)
class Pass:
    """What a PIRLS pass returns: the deviance at the point and the blocks at its weights."""

    deviance: float
    blocks: Blocks | None
    extra: np.ndarray

    def __add__(self, other: Pass) -> Pass:
        # (None is a partition without rows, or a pass that asked for no blocks: the identity)
        if self.blocks is None or other.blocks is None:
            blocks = self.blocks if other.blocks is None else other.blocks
        else:
            blocks = self.blocks + other.blocks
        return Pass(self.deviance + other.deviance, blocks, self.extra + other.extra)


def _pirls_pass(part: Part, family: Family, point: Point, fixed: np.ndarray | None, blocks: bool) -> Pass:
    """Deviance at the point and, with ``blocks``, the statistics of the PIRLS system at its
    working weights: without X (u only: the working response less X ``fixed``), or with X
    (``fixed`` None: beta and u together)."""
    rows = part.rows
    if rows.n == 0:
        return Pass(0.0, None, np.zeros(0))
    obs = family.bind(rows.y, _wt(rows))
    eta = point.eta(rows)
    mu, _, resid, w = obs.working(eta)
    dev = obs.deviance(mu)
    if not blocks:
        return Pass(dev, None, np.zeros(0))
    base = eta if rows.offset is None else eta - rows.offset
    if fixed is None:
        return Pass(dev, part.stats_joint.fill(rows.X, base + resid, w), np.zeros(0))
    return Pass(dev, part.stats_u.fill(np.zeros((rows.n, 0)), base - rows.X @ fixed + resid, w), np.zeros(0))


def _constant(part: Part, family: Family) -> float:
    rows = part.rows
    return family.bind(rows.y, _wt(rows)).constant if rows.n else 0.0


def _moments(part: Part) -> ColumnMoments:
    rows = part.rows
    return ColumnMoments.of(rows.X, rows.terms, rows.weights)


def _glm_pass(part: Part, family: Family, beta: np.ndarray | None) -> Pass:
    """The GLM's IRLS at beta (None: at R's mustart): deviance, whether mu reproduces y, and
    X'WX, X'Wz (in ``extra``), as ``hmix.glmm``'s IRLS computes them."""
    rows = part.rows
    p = rows.X.shape[1]
    if rows.n == 0:
        return Pass(0.0, None, np.zeros(p * p + p + 2))
    obs = family.bind(rows.y, _wt(rows))
    off = np.zeros(rows.n) if rows.offset is None else rows.offset
    with np.errstate(all="ignore"):
        eta = family.linkfun(family.start_mu(obs.y, obs.wt)) if beta is None else off + rows.X @ beta
        mu = family.linkinv(eta)
        perfect = float(not np.allclose(mu, obs.y, rtol=0.0, atol=1e-8))
        dev = obs.deviance(mu) if beta is not None else 0.0
        mu, mueta, resid, _ = obs.working(eta)
        XtW = rows.X.T * (obs.wt * mueta**2 / family.variance(mu))
        extra = np.concatenate([(XtW @ rows.X).ravel(), XtW @ (eta - off + resid), [perfect, 0.0]])
        if beta is not None:
            extra[-1] = float(np.abs(rows.X @ beta).max(initial=0.0))
    return Pass(dev, None, extra)


def _level_sums(
    part: Part, family: Family, point: Point, lam1: float, u0: np.ndarray, nodes: np.ndarray, sd: np.ndarray
) -> Pass:
    """Adaptive Gauss-Hermite: per level of the single term, -2 log p(y | u) summed over its rows
    at u0 and at u0 + z sd for each node z (rows of ``extra``)."""
    rows = part.rows
    (t,) = rows.terms
    out = np.zeros((len(nodes) + 1, t.nlevels))
    if rows.n:
        fixed = Point(point.beta, (np.zeros(t.q),)).eta(rows)
        zi = t.z[:, 0]
        for k, u in enumerate([u0, *(u0 + z * sd for z in nodes)]):
            mu = family.linkinv(fixed + lam1 * zi * u[t.refs])
            out[k] = np.bincount(t.refs, family.minus2loglik(rows.y, mu, _wt(rows)), minlength=t.nlevels)
    return Pass(0.0, None, out.ravel())


def _gradient_pass(
    part: Part,
    family: Family,
    point: Point,
    fac: Factor,
    u: np.ndarray,
    lam_rc: tuple[np.ndarray, np.ndarray],
    solution: np.ndarray | None,
) -> Pass:
    """The per-row parts of ``GLMMObjective._gradient``: without ``solution``, Z'v (and the
    statistics at the observed information for a non-canonical link); with it, the gradient's
    sums over rows in lambda and beta."""
    rows = part.rows
    lay = fac.layout
    q = lay.q1 + lay.qr
    if rows.n == 0:
        size = q if solution is None else len(lam_rc[0]) + rows.X.shape[1]
        return Pass(0.0, None, np.zeros(size))
    lay_part = Layout.of(rows.terms, lay.p, rows.n)
    columns = lay_part.u_columns()
    cols = np.stack([c for c, _ in columns], axis=1)
    zt = np.stack([z for _, z in columns], axis=1)
    obs = family.bind(rows.y, _wt(rows))
    eta = point.eta(rows)
    mu, _, _, w = obs.working(eta)
    V = fac.row_inverse(cols)
    zeta = zt @ lay.row_lambda(fac.tmats)
    Vz = np.einsum("iab,ib->ia", V, zeta)
    r, dw, w_obs = obs.score(eta, mu, w)
    v = np.einsum("ia,ia->i", zeta, Vz) * dw
    if solution is None:
        ztv = np.bincount(cols.ravel(), (zt * v[:, None]).ravel(), minlength=q)
        stats = None
        if w_obs is not None:
            stats = part.stats_u.fill(np.zeros((rows.n, 0)), np.zeros(rows.n), w_obs)
        return Pass(0.0, stats, ztv)
    w_obs = w if w_obs is None else w_obs
    s_i = solution[cols]
    a = v - w_obs * np.einsum("ia,ia->i", zeta, s_i) - 2.0 * r
    gamma = a[:, None] * u[cols] + r[:, None] * s_i + 2.0 * w[:, None] * Vz
    lam_r, lam_c = lam_rc
    g_lam = np.einsum("ij,ij->j", zt[:, lam_r], gamma[:, lam_c])
    return Pass(0.0, None, np.concatenate([g_lam, rows.X.T @ a]))


# ----- the objective on the client -----------------------------------------------------------
class DaskGLMMObjective(GLMMObjective):
    """``GLMMObjective`` over persisted Dask partitions (see the module's docstring)."""

    def __init__(
        self,
        design: Design,
        family: Family,
        parts: list[Any],
        nAGQ: int = 1,
        pirls: PirlsSettings | None = None,
    ):
        dask = require_dask()
        self.design = design
        self.penalty = None
        self.family = self.bound_family = family
        self.zi = None  # (Dask fits take families without extras: see glmer)
        self.ndisp = self.nextra = 0
        self._extra_at = np.zeros(0).tobytes()
        self.nAGQ = int(nAGQ)
        self.settings = PirlsSettings.for_family(family) if pirls is None else pirls
        terms, p = design.terms, design.p
        ku = tree_sum([dask.delayed(_keys)(r, 0) for r in parts]).compute()
        kj = tree_sum([dask.delayed(_keys)(r, p) for r in parts]).compute()
        lay_u, lay_j = Layout.of(terms, 0, ku.n), Layout.of(terms, p, kj.n)
        pat_u, pat_j = ku.pattern(lay_u), kj.pattern(lay_j)
        self.parts = list(dask.persist(*[dask.delayed(_part)(r, pat_u, pat_j) for r in parts]))
        self.engine_u = Engine.from_statistics(lay_u, pat_u, ku.blocks(), reweighted=True)
        self._engine_joint = Engine.from_statistics(lay_j, pat_j, kj.blocks(), reweighted=True)
        self.layout = self.engine_u.layout
        self.thetamap = self.layout.thetamap
        self._constant = float(sum(dask.compute(*[dask.delayed(_constant)(q, family) for q in self.parts])))
        moments = tree_sum([dask.delayed(_moments)(q) for q in self.parts]).compute()
        self.theta_scale = moments.theta_scale(self.thetamap)
        self.x_scale = moments.x_scale()
        self._beta_joint = np.zeros(p)
        self._beta_start = np.zeros(p)
        self._u = [np.zeros(t.q) for t in self.layout.terms]
        self._u_at: Any = None
        self._last = None
        self.ntheta = self.thetamap.ntheta
        self.scale_mask = self.thetamap.scale_mask
        self.lower_theta = self.thetamap.lower
        self._x0 = np.zeros((0, 0))
        if self.nAGQ > 1:
            agq_rule(design, self.nAGQ)

    @property
    def engine_joint(self) -> Engine:
        return self._engine_joint

    def _map(self, fn: Any, *args: Any) -> Any:
        dask = require_dask()
        return tree_sum([dask.delayed(fn)(q, self.family, *args) for q in self.parts]).compute()

    def _point(self, lam: np.ndarray, u: list[np.ndarray], beta: np.ndarray) -> Point:
        tmats = self.layout.tmats(lam)
        b = [(ut.reshape(t.nlevels, t.k) @ T.T).ravel() for ut, t, T in zip(u, self.layout.terms, tmats)]
        return Point(np.asarray(beta, dtype=float), tuple(self.layout.to_lme4(b)))

    def _level_weights(self, engine: Engine) -> list[np.ndarray]:
        """Per scalar term and level, the sum of w z^2 (the diagonal of its Z'WZ) at the
        engine's last weights: what ``_rescaled_modes`` needs of them."""
        lay, blocks, pat = engine.layout, engine.chol.blocks, engine.pattern
        assert blocks is not None
        diag = np.zeros(lay.qr)
        on = pat.rr_keys // lay.m == pat.rr_keys % lay.m
        diag[pat.rr_keys[on] // lay.m] = blocks.rr[on]
        out = [blocks.A11[:, 0, 0]]
        for o, t in zip(lay.rest_offsets, lay.terms[1:]):
            out.append(diag[o : o + t.q])
        return out

    def keep_modes(self, lam: np.ndarray, u: list[np.ndarray], w: Any) -> None:
        """As ``GLMMObjective.keep_modes``, with ``w`` the sums of w z^2 per level of each term
        (``_level_weights``) rather than the weights of the rows."""
        self._u = u
        self._u_at = None if w is None else (lam.copy(), w)

    def _level_weight_sum(self, i: int, w: Any) -> np.ndarray:
        return np.asarray(w[i])  # (the sums themselves: see keep_modes)

    def pirls(
        self, theta: np.ndarray, beta: np.ndarray | None, settings: PirlsSettings | None = None
    ) -> PirlsState:
        """``GLMMObjective.pirls`` with each evaluation of the rows a pass over the partitions."""
        s = self.settings if settings is None else settings
        joint = beta is None
        engine = self.engine_joint if joint else self.engine_u
        lam = self.thetamap.lam(theta)
        b = self._beta_joint if joint else np.asarray(beta, dtype=float)
        u = self._rescaled_modes(lam) if joint else [v.copy() for v in self._u]
        fixed = None if joint else b

        def visit(uu: list[np.ndarray], bb: np.ndarray) -> tuple[float, Factor, Blocks]:
            res = self._map(_pirls_pass, self._point(lam, uu, bb), fixed, True)
            engine.set_blocks(res.blocks)
            return res.deviance, engine.factor(lam), res.blocks

        dev, fac, blocks = visit(u, b)
        pdev = dev + sum(float(v @ v) for v in u)
        converged = False
        for _ in range(s.maxit):
            u_new = fac.u_engine
            b_new = fac.beta if joint else b
            step = 1.0
            for _ in range(s.halvings):
                u_try = [uo + step * (un - uo) for uo, un in zip(u, u_new)]
                b_try = b + step * (b_new - b) if joint else b
                dev_try, fac_try, blocks_try = visit(u_try, b_try)
                pdev_try = dev_try + sum(float(v @ v) for v in u_try)
                if pdev_try <= pdev * (1 + 1e-14) + 1e-12:
                    break
                step /= 2
            else:
                engine.set_blocks(blocks)  # (back to the weights of the last point accepted)
                break
            change = abs(pdev - pdev_try)
            if s.early_stop and step == 1.0 and change <= s.tol * (abs(pdev) + 0.1):
                # (as the in-memory PIRLS: the point before the step stands, with its factor;
                # its pass over the rows is spent here all the same)
                engine.set_blocks(blocks)
                converged = True
                break
            u, b, pdev, dev, fac, blocks = u_try, b_try, pdev_try, dev_try, fac_try, blocks_try
            if change <= s.tol * (abs(pdev) + 0.1):
                converged = True
                break
        self.keep_modes(lam, u, self._level_weights(engine))
        if joint:
            self._beta_joint = b
        none = np.zeros(0)  # (the rows' eta and mu stay on the workers)
        return PirlsState(
            u=u, beta=b, eta=none, mu=none, factor=fac, converged=converged, w=None, deviance=dev
        )

    def laplace_value(self, st: PirlsState) -> float:
        return float(st.deviance + self._constant + sum(float(v @ v) for v in st.u) + st.factor.logdet_z)

    def joint_factor(self, theta: np.ndarray, eta: Any, beta: np.ndarray) -> Factor:
        lam = self.thetamap.lam(theta)
        res = self._map(_pirls_pass, self._point(lam, self._u, beta), None, True)
        self.engine_joint.set_blocks(res.blocks)
        return self.engine_joint.factor(lam)

    def _gradient(self, theta: np.ndarray, st: PirlsState) -> np.ndarray:
        lay = self.layout
        lam = self.thetamap.lam(theta)
        point = self._point(lam, st.u, st.beta)
        lam_r, lam_c = self.layout.lam_positions()
        u_all = np.concatenate(st.u)
        first = self._map(_gradient_pass, point, st.factor, u_all, (lam_r, lam_c), None)
        fac_obs = st.factor
        if first.blocks is not None:
            self.engine_u.set_blocks(first.blocks)
            fac_obs = self.engine_u.factor(lam)
        tmats = lay.tmats(lam)
        ztv = first.extra
        lam_ztv = np.concatenate(
            [
                (ztv[o : o + t.q].reshape(t.nlevels, t.k) @ T).ravel()
                for o, t, T in zip(lay.offsets, lay.terms, tmats)
            ]
        )
        sol = fac_obs.solve(lam_ztv)
        second = self._map(_gradient_pass, point, st.factor, u_all, (lam_r, lam_c), sol)
        g = second.extra
        g_lam, xta = g[: len(lam_r)], g[len(lam_r) :]
        J = self.thetamap.lam_jacobian(theta)
        return np.concatenate([g_lam if J is None else J.T @ g_lam, xta])

    def agq_value(
        self, theta: np.ndarray, beta: np.ndarray, st: PirlsState, nodes: int | None = None
    ) -> float:
        (t,) = self.design.terms
        z_nodes, z_weights = agq_rule(self.design, self.nAGQ if nodes is None else nodes)
        lam = float(self.thetamap.lam(theta)[0])
        u0 = st.u[0]
        sd = 1.0 / st.factor.L11[:, 0, 0]
        sums = self._map(_level_sums, Point(beta, (np.zeros(t.q),)), lam, u0, z_nodes, sd).extra
        sums = sums.reshape(len(z_nodes) + 1, t.nlevels)
        d0 = sums[0] + u0**2
        mult = np.zeros(t.nlevels)
        for k, (z, w) in enumerate(zip(z_nodes, z_weights)):
            mult += w * np.exp((d0 - (sums[k + 1] + (u0 + z * sd) ** 2)) / 2 + z * z / 2)
        return float(d0.sum() - 2 * np.log(mult).sum() - 2 * np.log(sd).sum())

    def glm_start(self) -> np.ndarray:
        """``hmix.glmm.glm_start`` (R's glm.fit) with one pass over the partitions a step."""
        p = self.design.p
        beta = np.full(p, np.nan)
        perfect = False
        res = self._map(_glm_pass, None)
        dev_old, extreme = np.inf, 0.0
        with np.errstate(all="ignore"):
            for _ in range(25):
                XtWX, XtWz = res.extra[: p * p].reshape(p, p), res.extra[p * p : p * p + p]
                try:
                    step = sla.cho_solve(sla.cho_factor(XtWX), XtWz)
                except (np.linalg.LinAlgError, ValueError):
                    break
                res = self._map(_glm_pass, step)
                perfect = perfect or res.extra[-2] == 0.0
                dev = res.deviance
                if not (np.isfinite(dev) and np.isfinite(step).all() and dev < dev_old):
                    break
                beta, extreme = step, res.extra[-1]
                if dev_old - dev < 1e-8 * (dev + 0.1):
                    break
                dev_old = dev
        if perfect or (self.family.name == "binomial" and extreme > 15):
            warn_separation()
        return beta if np.isfinite(beta).all() else np.zeros(p)


def glmer(
    formula: str,
    ddf: Any,
    *,
    family: Family,
    nAGQ: int,
    weights: str | None,
    offset: str | None,
    vcov_method: str,
    check_conv: bool,
    data_name: str,
    max_theta: int | None = 100,
) -> Any:
    """``hmix.glmer`` for a Dask DataFrame (see the module's docstring)."""
    from dataclasses import replace

    from .dask import check_sizes, exact_quantiles, prepare
    from .fit import fit_glmm
    from .lmm import check_size

    spec, rows, _ = prepare(
        formula, ddf, weights=weights, offset=offset, binary_ok=family.name == "binomial", persist=True
    )
    check_size(spec.design, max_theta)
    dask = require_dask()
    counts = np.sum(dask.compute(*[dask.delayed(_validate)(r, family) for r in rows]), axis=0)
    n, dropped, nonzero = (int(c) for c in counts)
    if not nonzero:
        raise DataError("every response is zero: there is nothing to model")
    tpl = spec.design
    check_sizes(tpl, n)
    design = rowless_design(spec, n, dropped)
    obj = DaskGLMMObjective(design, family, rows, nAGQ)
    model = fit_glmm(
        design,
        family,
        nAGQ=nAGQ,
        vcov_method=vcov_method,
        check_conv=check_conv,
        data_name=data_name,
        objective=obj,
        beta0=obj.glm_start(),
    )
    q = exact_quantiles(
        rows, _PearsonResiduals(family, model.beta.copy(), tuple(model.b)), [0, 0.25, 0.5, 0.75, 1.0]
    )
    return replace(model, design=replace(design, residual_quantiles=q))


def _validate(rows: DaskRows, family: Family) -> tuple[int, int, int]:
    """The family's checks of a partition's responses; its rows, rows dropped, and whether a
    response is not zero."""
    family.validate(rows.y, _wt(rows))
    return rows.n, rows.n_dropped, int(bool(np.any(rows.y != 0)))


@dataclass(frozen=True, eq=False)
class _PearsonResiduals:
    family: Family
    beta: np.ndarray
    b: tuple[np.ndarray, ...]

    def __call__(self, rows: DaskRows) -> np.ndarray:
        mu = self.family.linkinv(Point(self.beta, self.b).eta(rows))
        return (rows.y - mu) * np.sqrt(_wt(rows) / self.family.variance(mu))
