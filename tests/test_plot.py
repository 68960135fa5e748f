"""hmix.plot: each plot renders to a non-empty PNG (Agg) and carries the artists it should."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hmix

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _render(ax: Any, path: Path) -> None:
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000  # a PNG with something drawn, not an empty file


def test_caterpillar(sleep: hmix.LinearMixedModel, tmp_path: Path) -> None:
    ax = hmix.plot.caterpillar(sleep, term="Days")
    _render(ax, tmp_path / "caterpillar.png")
    tab = sleep.ranef_table()
    tab = tab[tab["term"] == "Days"].sort_values("condval")
    assert [t.get_text() for t in ax.get_yticklabels()] == list(tab["level"])  # sorted, bottom up
    (bars,) = ax.containers
    line, _, (xerr,) = bars.lines
    np.testing.assert_allclose(line.get_xdata(), tab["condval"])
    half = np.array([seg[1, 0] - seg[0, 0] for seg in xerr.get_segments()]) / 2
    np.testing.assert_allclose(half, 1.96 * tab["condsd"], rtol=1e-12)
    assert "Days" in ax.get_title()


def test_caterpillar_on_given_axes_and_glmm(cbpp: hmix.GeneralizedLinearMixedModel, tmp_path: Path) -> None:
    _, ax = plt.subplots()
    assert hmix.plot.caterpillar(cbpp, "herd", ax=ax) is ax
    _render(ax, tmp_path / "cbpp.png")
    assert len(ax.get_yticklabels()) == 15
    with pytest.raises(hmix.DataError, match="no grouping factor 'plate'"):
        hmix.plot.caterpillar(cbpp, "plate")
    with pytest.raises(hmix.DataError, match="no random-effects term 'Days'"):
        hmix.plot.caterpillar(cbpp, term="Days")


def test_shrinkage(sleep: hmix.LinearMixedModel, tmp_path: Path) -> None:
    ax = hmix.plot.shrinkage(sleep, term="Days")
    _render(ax, tmp_path / "shrinkage.png")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "no pooling",
        "partial pooling",
        "complete pooling",
    ]
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in points] == [18, 18]
    (arrows,) = [c for c in ax.collections if isinstance(c, Quiver)]
    s = sleep.shrinkage("Subject")
    s = s[s["term"] == "Days"].sort_values("no_pooling")
    np.testing.assert_allclose(arrows.V, s["partial_pooling"] - s["no_pooling"], rtol=1e-12)
    assert ax.lines[0].get_ydata()[0] == pytest.approx(sleep.fixef["Days"])  # the population line
    assert len(ax.get_xticklabels()) == 18


def test_ppc_plot(cbpp: hmix.GeneralizedLinearMixedModel, tmp_path: Path) -> None:
    result = cbpp.ppc("zeros", n=100, seed=1)
    ax = hmix.plot.ppc(result, bins=12)
    _render(ax, tmp_path / "ppc.png")
    assert len(ax.patches) == 12
    assert sum(p.get_height() for p in ax.patches) == 100
    (observed,) = ax.lines
    assert observed.get_xdata()[0] == result.observed
    assert f"{result.p_value:.3g}" in ax.get_title()
    from_model = hmix.plot.ppc(cbpp, "zeros", n=100, seed=1, bins=12)
    assert [p.get_height() for p in from_model.patches] == [p.get_height() for p in ax.patches]


def test_residuals(
    sleep: hmix.LinearMixedModel, cbpp: hmix.GeneralizedLinearMixedModel, tmp_path: Path
) -> None:
    ax = hmix.plot.residuals(sleep)
    _render(ax, tmp_path / "residuals.png")
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets()[:, 0], sleep.fitted)
    np.testing.assert_allclose(points.get_offsets()[:, 1], sleep.residuals("pearson"))
    assert len(ax.lines) == 2  # the zero line and the lowess curve
    ax = hmix.plot.residuals(cbpp, smooth=False)
    _render(ax, tmp_path / "residuals_glmm.png")
    assert len(ax.collections[0].get_offsets()) == cbpp.nobs and len(ax.lines) == 1


def test_missing_matplotlib_is_a_clear_error(sleep: hmix.LinearMixedModel, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import now raises ImportError
    with pytest.raises(hmix.HmixError, match=r"pip install 'hmix\[plot\]'"):
        hmix.plot.caterpillar(sleep)


def test_dispersion_and_zero_inflated_families(tmp_path: Path) -> None:
    """The caterpillar and shrinkage plots of a negative binomial fit (one point per site, the
    modes' bars); a zero-inflated fit's caterpillar plot, and its shrinkage plot refused by name."""
    from conftest import quiet_glmer

    sal = hmix.datasets.load("Salamanders")
    nb = quiet_glmer("count ~ mined + (1 | site)", sal, family="negative_binomial")
    ax = hmix.plot.caterpillar(nb)
    _render(ax, tmp_path / "nb_caterpillar.png")
    assert len(ax.get_yticklabels()) == nb.design.terms[0].nlevels
    ax = hmix.plot.shrinkage(nb)
    _render(ax, tmp_path / "nb_shrinkage.png")
    own = int(nb.shrinkage()["no_pooling"].notna().sum())  # (a site of zeros has no own fit)
    assert [len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)] == [own, 23]
    zip_ = quiet_glmer("count ~ mined + (1 | site)", sal, family="poisson", zi_formula="~ mined")
    _render(hmix.plot.caterpillar(zip_), tmp_path / "zip_caterpillar.png")
    with pytest.raises(hmix.HmixError, match="zero-inflated"):
        hmix.plot.shrinkage(zip_)
