"""Progress bars (hmix._progress): tqdm's auto bars, on where someone watches."""

from __future__ import annotations

import pytest

from hmix._progress import interactive, progress


def test_off_and_default_off_under_pytest(capsys: pytest.CaptureFixture[str]) -> None:
    assert not interactive()  # (pytest captures stderr: neither a terminal nor a notebook)
    assert list(progress(range(4), 4, "bootstrap", show=False)) == [0, 1, 2, 3]
    assert list(progress(range(4), 4, "bootstrap", show=None)) == [0, 1, 2, 3]
    assert capsys.readouterr().err == ""


def test_forced_on_draws_a_tqdm_bar(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress(iter(range(5)), 5, "cross-validation by Subject", show=True)) == list(range(5))
    err = capsys.readouterr().err
    assert "cross-validation by Subject" in err and "5/5" in err


def test_a_bootstrap_shows_its_bar_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    import hmix
    from hmix.bootstrap import bootstrap

    m = hmix.lmer("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff"))
    bootstrap(m, n=3, seed=1, progress=True)
    assert "bootstrap" in capsys.readouterr().err
