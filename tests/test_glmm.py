"""GLMM behaviour beyond the reference figures: response forms, links, bad input, options."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hmix
from hmix import DataError
from hmix.errors import HmixWarning
from hmix.glmm import glm_start
from hmix.zeroinflation import ZeroInflation

CBPP_FORMULA = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def cbpp() -> pd.DataFrame:
    return hmix.datasets.load("cbpp")


@pytest.fixture(scope="module")
def cbpp_fit(cbpp: pd.DataFrame) -> hmix.GeneralizedLinearMixedModel:
    return hmix.glmer(CBPP_FORMULA, cbpp, family="binomial")


def test_three_binomial_response_forms_agree(
    cbpp: pd.DataFrame, cbpp_fit: hmix.GeneralizedLinearMixedModel
) -> None:
    prop = hmix.glmer("incidence / size ~ period + (1 | herd)", cbpp, family="binomial", weights="size")
    np.testing.assert_allclose(prop.objective, cbpp_fit.objective, rtol=1e-9)
    np.testing.assert_allclose(prop.beta, cbpp_fit.beta, rtol=1e-5, atol=1e-6)
    # the same data as one 0/1 row per animal: same estimates, log-likelihood without log C(n, k)
    rows = []
    for _, r in cbpp.iterrows():
        rows += [{"herd": r["herd"], "period": r["period"], "y": 1}] * int(r["incidence"])
        rows += [{"herd": r["herd"], "period": r["period"], "y": 0}] * int(r["size"] - r["incidence"])
    long = pd.DataFrame(rows)
    binary = hmix.glmer("y ~ period + (1 | herd)", long, family="binomial")
    np.testing.assert_allclose(binary.beta, cbpp_fit.beta, atol=2e-3 * cbpp_fit.std_errors.to_numpy().min())
    boolean = hmix.glmer("y ~ period + (1 | herd)", long.assign(y=long["y"].astype(bool)), family="binomial")
    np.testing.assert_allclose(boolean.objective, binary.objective, rtol=1e-10)
    labels = hmix.glmer(
        "y ~ period + (1 | herd)", long.assign(y=np.where(long["y"] == 1, "Y", "N")), family="binomial"
    )
    np.testing.assert_allclose(labels.objective, binary.objective, rtol=1e-10)


def test_poisson_offset_argument_equals_formula_offset(cbpp: pd.DataFrame) -> None:
    a = hmix.glmer("incidence ~ period + offset(np.log(size)) + (1 | herd)", cbpp, family="poisson")
    b = hmix.glmer("incidence ~ period + (1 | herd)", cbpp, family="poisson", offset=np.log(cbpp["size"]))
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-10)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-6)


def test_nagq0_optimizes_theta_alone_and_is_close(
    cbpp: pd.DataFrame, cbpp_fit: hmix.GeneralizedLinearMixedModel
) -> None:
    # (no longer fewer evaluations than nAGQ = 1: its quasi-Newton stage needs as few)
    m0 = hmix.glmer(CBPP_FORMULA, cbpp, family="binomial", nAGQ=0)
    assert m0.optsum.stages == ("theta",) and len(m0.optsum.final) == len(m0.theta)
    assert m0.objective >= cbpp_fit.objective - 1e-8  # Laplace optimum is the lower one
    np.testing.assert_allclose(m0.beta, cbpp_fit.beta, atol=0.05)


def test_pirls_vcov_is_a_few_percent_off_the_hessian(
    cbpp: pd.DataFrame, cbpp_fit: hmix.GeneralizedLinearMixedModel
) -> None:
    m = hmix.glmer(CBPP_FORMULA, cbpp, family="binomial", vcov_method="pirls")
    assert m.vcov_method == "pirls" and cbpp_fit.vcov_method == "hessian"
    ratio = m.std_errors / cbpp_fit.std_errors
    assert np.all(np.abs(ratio - 1) < 0.05)
    assert not np.allclose(ratio, 1, atol=1e-4)


def test_agq_needs_one_scalar_term(cbpp: pd.DataFrame) -> None:
    df = cbpp.assign(g2=np.where(cbpp["herd"].astype(int) % 2 == 0, "a", "b"))
    with pytest.raises(DataError, match="single, scalar random-effects term"):
        hmix.glmer(
            "cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | g2)",
            df,
            family="binomial",
            nAGQ=5,
        )


def test_agq_with_one_node_is_laplace(cbpp: pd.DataFrame, cbpp_fit: hmix.GeneralizedLinearMixedModel) -> None:
    """Adaptive Gauss-Hermite quadrature with one node is the Laplace approximation exactly;
    more nodes move the value below it (25 nodes: by 0.085 at these estimates; 3 nodes: 0.017)."""
    x = np.concatenate([cbpp_fit.theta, cbpp_fit.beta])
    obj = hmix.GLMMObjective(cbpp_fit.design, cbpp_fit.family, nAGQ=1)
    st = obj.pirls(cbpp_fit.theta, cbpp_fit.beta)
    laplace = obj.laplace_value(st)
    assert obj.agq_value(cbpp_fit.theta, cbpp_fit.beta, st, nodes=1) == pytest.approx(laplace, rel=1e-12)
    agq3, agq25 = (obj.agq_value(cbpp_fit.theta, cbpp_fit.beta, st, nodes=k) for k in (3, 25))
    assert agq25 < laplace and abs(agq3 - agq25) < abs(laplace - agq25)
    assert hmix.GLMMObjective(cbpp_fit.design, cbpp_fit.family, nAGQ=3)(x) == pytest.approx(agq3, rel=1e-9)


@pytest.mark.parametrize(
    ("frame", "formula", "family", "message"),
    [
        (
            pd.DataFrame({"y": [1, -2, 3, 0] * 5, "g": list("abcde") * 4}),
            "y ~ 1 + (1 | g)",
            "poisson",
            "non-negative",
        ),
        (
            pd.DataFrame({"y": [1.5, 2, 3, 0] * 5, "g": list("abcde") * 4}),
            "y ~ 1 + (1 | g)",
            "poisson",
            "whole counts",
        ),
        (
            pd.DataFrame({"y": [0.5, 1.2, 0, 1] * 5, "g": list("abcde") * 4}),
            "y ~ 1 + (1 | g)",
            "binomial",
            r"outside \[0, 1\]",
        ),
        (
            pd.DataFrame({"s": [3, 1, 0, 2] * 5, "n": [2, 1, 1, 2] * 5, "g": list("abcde") * 4}),
            "cbind(s, n - s) ~ 1 + (1 | g)",
            "binomial",
            "non-negative counts",
        ),
        (
            pd.DataFrame({"y": ["a", "b", "c", "a"] * 5, "g": list("abcde") * 4}),
            "y ~ 1 + (1 | g)",
            "binomial",
            "not numeric",
        ),
        (
            pd.DataFrame({"y": [0] * 20, "g": list("abcde") * 4}),
            "y ~ 1 + (1 | g)",
            "poisson",
            "every response is zero",
        ),
    ],
)
def test_bad_responses_get_clear_errors(frame: pd.DataFrame, formula: str, family: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        hmix.glmer(formula, frame, family=family)


def test_bad_family_and_link(cbpp: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="family must be"):
        hmix.glmer(CBPP_FORMULA, cbpp, family="tweedie")
    with pytest.raises(DataError, match="links"):
        hmix.glmer(CBPP_FORMULA, cbpp, family="poisson", link="logit")
    with pytest.raises(DataError, match="Gamma response must be positive"):  # cbpp has zeros
        hmix.glmer("incidence ~ period + (1 | herd)", cbpp, family="gamma")


def test_complete_separation_warns() -> None:
    rng = np.random.default_rng(3)
    g = np.repeat(list("abcdefgh"), 10)
    x = np.tile(np.arange(10.0), 8)
    df = pd.DataFrame({"y": (x > 4.5).astype(int), "x": x, "g": g, "n": rng.normal(size=80)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hmix.glmer("y ~ x + (1 | g)", df, family="binomial")
    assert any("separation" in str(w.message) for w in caught if issubclass(w.category, HmixWarning))


def test_all_zero_groups_fit() -> None:
    rng = np.random.default_rng(5)
    g = np.repeat([f"g{i}" for i in range(12)], 8)
    lam = np.exp(rng.normal(0.5, 0.7, 12))[np.arange(12).repeat(8)]
    y = rng.poisson(lam)
    y[:16] = 0  # two groups with no events at all
    m = hmix.glmer("y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": g}), family="poisson")
    modes = m.ranef()["g"]["(Intercept)"]
    assert np.isfinite(modes).all()
    assert modes.loc["g0"] < 0 and modes.loc["g1"] < 0


def test_glmm_interface_and_summary(cbpp_fit: hmix.GeneralizedLinearMixedModel) -> None:
    m = cbpp_fit
    assert m.npar == 5 and m.sigma == 1.0
    assert m.loglik == pytest.approx(-m.objective / 2)
    assert set(m.coef_table().columns) == {"estimate", "std_error", "statistic", "p_value"}
    np.testing.assert_allclose(m.fitted, 1 / (1 + np.exp(-m.linear_predictor)))
    for kind in ["deviance", "pearson", "response", "working"]:
        assert np.isfinite(m.residuals(kind)).all()
    dev = m.residuals("deviance")
    assert (dev**2).sum() < m.objective
    text = str(m.summary())
    assert "Generalized linear mixed model fit by maximum likelihood (Laplace Approximation)" in text
    assert " Family: binomial  ( logit )" in text
    assert "z value Pr(>|z|)" in text and "Signif. codes" in text
    assert "Residual" not in text
    assert "<table" in m.summary()._repr_html_()
    assert "Family: binomial" in repr(m)
    with pytest.raises(ValueError, match="type must be"):
        m.residuals("raw")


def test_value_and_gradient_reuse_and_warm_starts_do_not_change_values(
    cbpp: pd.DataFrame, cbpp_fit: hmix.GeneralizedLinearMixedModel
) -> None:
    # the objective remembers its last value and gradient (the final Hessian starts there), and
    # the theta-only PIRLS starts from modes rescaled to the new theta: neither may move a value
    d = hmix.build_design(CBPP_FORMULA, cbpp)
    fam = hmix.get_family("binomial")
    x = np.concatenate([cbpp_fit.theta, cbpp_fit.beta])
    f = hmix.GLMMObjective(d, fam)
    v1, g1 = f.value_and_gradient(x)
    g1[:] = 0.0  # the caller's copy: the remembered gradient is untouched
    v2, g2 = f.value_and_gradient(x)
    fresh_v, fresh_g = hmix.GLMMObjective(d, fam).value_and_gradient(x)
    assert v1 == v2 and np.allclose(g2, fresh_g, rtol=1e-8, atol=1e-8) and abs(v2 - fresh_v) < 1e-9
    f.start(cbpp_fit.beta)
    theta = cbpp_fit.theta
    warm = [f.laplace_joint(t) for t in (theta, 2 * theta, 0.5 * theta, theta)]
    cold = [hmix.GLMMObjective(d, fam).laplace_joint(t) for t in (theta, 2 * theta, 0.5 * theta)]
    assert np.allclose(warm[:3], cold, rtol=1e-9) and abs(warm[3] - warm[0]) < 1e-8


@pytest.mark.parametrize(
    "formula, family, link",
    [
        ("y ~ x + (1 | g) + (1 | h)", "poisson", None),  # crossed
        ("y ~ x + (1 | obs) + (1 | g) + (1 | h)", "poisson", None),  # obs nested in g (grouseticks)
        ("y ~ x + (x | g) + (1 | h)", "poisson", None),  # a vector first term
        ("b ~ x + (1 | g) + (1 | h)", "binomial", None),
        # non-canonical links: the modes move with the observed information, not the weights
        ("b ~ x + (1 | g) + (1 | h)", "binomial", "probit"),
        ("b ~ x + (x | g) + (1 | h)", "binomial", "cloglog"),
    ],
)
def test_exact_gradient_matches_differences_of_the_laplace_deviance(
    formula: str, family: str, link: str | None
) -> None:
    """The exact gradient over (theta, beta) against central differences of the objective
    (PIRLS converges to ~1e-12: differences with h = 1e-5 resolve about 1e-6)."""
    rng = np.random.default_rng(4)
    g = rng.integers(0, 25, 300)
    df = pd.DataFrame(
        {
            "g": g.astype(str),
            "obs": np.arange(300).astype(str),
            "h": rng.integers(0, 6, 300).astype(str),
            "x": rng.normal(size=300),
        }
    )
    df["obs"] = df["g"] + "_" + (np.arange(300) % 4).astype(str)  # four cells per g: nested
    eta = 0.5 + 0.3 * df["x"] + rng.normal(0, 0.5, 25)[g]
    df["y"] = rng.poisson(np.exp(eta))
    df["b"] = (rng.uniform(size=300) < 1 / (1 + np.exp(-eta))).astype(int)
    d = hmix.build_design(formula, df)
    f = hmix.GLMMObjective(d, hmix.get_family(family, link))
    f.start(np.zeros(d.p))
    ntheta = len(f.scale_mask)
    x = np.concatenate([np.where(f.scale_mask, 0.7, 0.2), [0.4, 0.25]])
    assert len(x) == ntheta + d.p
    _, grad = f.value_and_gradient(x)
    h = 1e-5
    fd = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def _overdispersed(n: int = 360, seed: int = 7) -> pd.DataFrame:
    """Negative-binomial counts with structural zeros and skewed positives, 30 groups."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 30, n)
    x = rng.normal(size=n)
    eta = 0.6 + 0.4 * x + rng.normal(0, 0.5, 30)[g]
    counts = rng.negative_binomial(2.0, 2.0 / (2.0 + np.exp(eta)))
    zero = rng.uniform(size=n) < 1 / (1 + np.exp(1.0 - 0.8 * x))
    return pd.DataFrame(
        {
            "g": g.astype(str),
            "x": x,
            "y": np.where(zero, 0, counts),
            "pos": rng.gamma(3.0, np.exp(eta) / 3.0),
            "pos_inv": rng.gamma(3.0, 1.0 / (2.0 + 0.3 * x + 0.2 * rng.normal(size=30)[g]) / 3.0),
        }
    )


@pytest.mark.parametrize(
    "response, family, zi",
    [
        ("y", hmix.NegativeBinomial(), None),  # theta estimated: an extra parameter
        ("y", hmix.NegativeBinomial(theta=1.5), None),  # fixed: the observed curvature alone
        ("y", hmix.Poisson(), "~ x"),  # zero-inflated: the logit's coefficients
        ("y", hmix.NegativeBinomial(), "~ 1"),  # both
        ("pos", hmix.Gamma("log"), None),
        ("pos_inv", hmix.Gamma("inverse"), None),
        ("pos", hmix.Gamma("identity"), None),  # negative observed information in some rows
    ],
)
def test_exact_gradient_with_the_observed_curvature_and_the_extras(
    response: str, family: hmix.Family, zi: str | None
) -> None:
    """The exact gradient of glmmTMB's Laplace approximation (the observed information in the
    log-determinant) over (theta, beta, log dispersion, zero-inflation coefficients) against
    central differences of the objective (h = 1e-4: PIRLS's tolerance 1e-14 leaves ~1e-8 noise
    in the differences, their truncation ~1e-8 of the third derivative)."""
    df = _overdispersed()
    d = hmix.build_design(f"{response} ~ x + (1 | g)", df)
    z = None if zi is None else ZeroInflation.build(zi, df, d, family).X
    f = hmix.GLMMObjective(d, family, zi=z)
    beta = glm_start(d, family.with_dispersion(1.0) if family.free_dispersion else family)
    f.start(beta)
    extra = ([0.3] if family.free_dispersion else []) + ([] if z is None else [-0.5] * z.shape[1])
    x = np.concatenate([[0.45], beta + 0.02, extra])
    assert len(x) == 1 + d.p + f.nextra
    value, grad = f.value_and_gradient(x)
    assert value == pytest.approx(f(x), abs=1e-9)
    h = 1e-4
    fd = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


_POSITIVE = np.array([0.2, 0.5, 1.1, 2.4, 0.9, 3.0])


@pytest.mark.parametrize(
    "observed",
    [
        hmix.NegativeBinomial(theta=1.7).bind(
            np.array([0.0, 0, 1, 3, 8, 2]), np.array([1, 2, 1, 0.5, 1, 1.5])
        ),
        hmix.Gamma("inverse", phi=0.4).bind(np.array([0.2, 0.5, 1.1, 2.4, 0.9, 3.0]), np.ones(6)),
        hmix.Gamma("identity", phi=0.4).bind(np.array([0.2, 0.5, 1.1, 2.4, 0.9, 3.0]), np.ones(6)),
        hmix.Binomial("cloglog").bind(
            np.array([0.0, 0.25, 0.5, 1.0, 0.75, 0.2]), np.array([1, 4, 2, 3, 4, 5.0])
        ),
    ],
)
def test_row_derivatives_in_eta_and_the_dispersion(observed: Any) -> None:
    """``curvature`` (score, observed information, its derivative) and ``extra_derivatives`` (in
    the log dispersion) against central differences of log p(y | mu) row by row (rtol 1e-6)."""
    eta = np.array([0.3, 0.9, 0.5, 1.4, 0.7, 1.1])
    fam = observed.family

    def loglik(e: np.ndarray, fam: hmix.Family = fam) -> np.ndarray:
        return -0.5 * fam.minus2loglik(observed.y, fam.linkinv(e), observed.wt)

    h = 1e-5
    r, w, dw = observed.curvature(eta)
    np.testing.assert_allclose(r, (loglik(eta + h) - loglik(eta - h)) / (2 * h), rtol=1e-6, atol=1e-9)
    r_of = lambda e: observed.curvature(e)[0]  # noqa: E731
    w_of = lambda e: observed.curvature(e)[1]  # noqa: E731
    np.testing.assert_allclose(w, -(r_of(eta + h) - r_of(eta - h)) / (2 * h), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dw, (w_of(eta + h) - w_of(eta - h)) / (2 * h), rtol=1e-6, atol=1e-9)
    if fam.dispersion is None:
        return
    E = observed.extra_derivatives(eta, True)[:, :, 0]
    up, down = (
        type(observed)(fam.with_dispersion(fam.dispersion * np.exp(s)), observed.y, observed.wt)
        for s in (h, -h)
    )
    fd = [
        (loglik(eta, up.family) - loglik(eta, down.family)) / (2 * h),
        (up.curvature(eta)[0] - down.curvature(eta)[0]) / (2 * h),
        (up.curvature(eta)[1] - down.curvature(eta)[1]) / (2 * h),
    ]
    for k in range(3):
        np.testing.assert_allclose(E[:, k], fd[k], rtol=1e-6, atol=1e-9)


def test_dispersion_and_zero_inflated_fits_take_the_quasi_newton_path() -> None:
    """With the exact gradient over the extras, these fits end in the quasi-Newton stage (not
    BOBYQA) and converge: one evaluation with its gradient costs about one without."""
    df = _overdispersed()
    for family, zi in [("negative_binomial", None), ("poisson", "~ x")]:
        m = hmix.glmer("y ~ x + (1 | g)", df, family=family, zi_formula=zi)
        assert m.optsum.stages == ("theta", "quasi-Newton") and m.converged


def _blas_threads() -> set[int]:
    from threadpoolctl import threadpool_info

    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_glmm_fit_runs_blas_on_one_thread_and_restores_it(
    cbpp: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from threadpoolctl import threadpool_limits

    from hmix import fit

    seen: list[set[int]] = []
    inner = fit.stage_theta

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(_blas_threads())
        return inner(*args, **kwargs)

    monkeypatch.setattr(fit, "stage_theta", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        assert _blas_threads() == {2}
        hmix.glmer(CBPP_FORMULA, cbpp, family="binomial")
        assert seen == [{1}]
        assert _blas_threads() == {2}  # restored after the fit


def test_one_blas_thread_restores_only_when_the_last_of_overlapping_fits_ends() -> None:
    from threadpoolctl import threadpool_limits

    from hmix._threads import one_blas_thread

    # two fits in two Python threads: entered a, b and left a, b (not last in, first out)
    a, b = one_blas_thread(), one_blas_thread()
    with threadpool_limits(limits=2, user_api="blas"):
        a.__enter__()
        b.__enter__()
        assert _blas_threads() == {1}
        a.__exit__(None, None, None)
        assert _blas_threads() == {1}  # b still runs
        b.__exit__(None, None, None)
        assert _blas_threads() == {2}
