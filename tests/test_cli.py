"""The ``hmix`` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hmix import datasets
from hmix.cli import main


def test_fit_bundled_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "Reaction ~ Days + (Days | Subject)", "--data", "sleepstudy"]) == 0
    out = capsys.readouterr().out
    assert "REML criterion at convergence: 1743.6" in out
    assert "Days          10.467      1.546" in out


def test_fit_csv_by_ml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dye.csv"
    datasets.load("Dyestuff").to_csv(path, index=False)
    assert main(["fit", "Yield ~ 1 + (1 | Batch)", "--data", str(path), "--ml"]) == 0
    out = capsys.readouterr().out
    assert "maximum likelihood" in out and "   Data: dye" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "Reaction ~ Dayz + (1 | Subject)", "--data", "sleepstudy"], "did you mean 'Days'"),
        (["fit", "Reaction ~ Days + (1 | Subject", "--data", "sleepstudy"], "unbalanced '('"),
        (["fit", "y ~ (1 | g)", "--data", "nosuchdata"], "no bundled dataset 'nosuchdata'"),
        (["fit", "y ~ (1 | g)", "--data", "missing.csv"], "no such file"),
        (["fit", "Reaction ~ Days", "--data", "sleepstudy"], "no random-effects term"),
        (["fit", "Yield ~ (1 | Batch)", "--data", "Dyestuff", "--link", "log"], "--link applies to glmer"),
        (["fit", "Yield ~ (1 | Batch)", "--data", "Dyestuff", "--nagq", "5"], "not to a gaussian model"),
        (
            [
                "fit",
                "cbind(incidence, size - incidence) ~ (1 | herd)",
                "--data",
                "cbpp",
                "--family",
                "binomial",
                "--ml",
            ],
            "always fitted by maximum likelihood",
        ),
        (["fit", "Yield ~ 1 | Batch", "--data", "Dyestuff"], "write Yield ~ (1 | Batch)"),
    ],
)
def test_bad_input_exits_nonzero_with_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hmix.cli",
            "fit",
            "diameter ~ 1 + (1 | plate) + (1 | sample)",
            "--data",
            "Penicillin",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "REML criterion at convergence: 330.9" in proc.stdout


def test_datasets_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ["sleepstudy", "Dyestuff", "Dyestuff2", "Penicillin", "Pastes", "cbpp"]:
        assert name in out


def test_dotted_column_names_from_a_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R exports dotted names (sleep.study's Reaction.time); the command line reads them as columns."""
    path = tmp_path / "sleep.csv"
    d = datasets.load("sleepstudy").rename(columns={"Reaction": "reaction.ms", "Subject": "subject.id"})
    d.to_csv(path, index=False)
    argv = ["fit", "reaction.ms ~ Days + (Days | subject.id)", "--data", str(path), "--factors", "subject.id"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "REML criterion at convergence: 1743.6" in out and "subject.id" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import hmix

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"hmix {hmix.__version__}"


def test_glmer_options_apply_to_glmer(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fit", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "--data", "cbpp"]
    assert main([*argv, "--family", "binomial", "--link", "logit", "--nagq", "5"]) == 0
    assert "nAGQ = 5" in capsys.readouterr().out
