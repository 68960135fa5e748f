"""The benchmark models: data, grouping columns, formula (fitted by maximum likelihood)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
BUNDLED = HERE.parent / "hmix" / "datasets" / "data"

MODELS: dict[str, dict] = {
    "sleepstudy": {
        "csv": BUNDLED / "sleepstudy.csv",
        "labels": ["Subject"],
        "formula": "Reaction ~ Days + (Days | Subject)",
        "statsmodels": {"fixed": "Reaction ~ Days", "groups": "Subject", "re_formula": "~Days"},
    },
    "Penicillin": {
        "csv": BUNDLED / "Penicillin.csv",
        "labels": ["plate", "sample"],
        "formula": "diameter ~ 1 + (1 | plate) + (1 | sample)",
        "statsmodels": {"fixed": "diameter ~ 1", "crossed": ["plate", "sample"]},
    },
    "InstEval": {
        "csv": HERE / "data" / "InstEval.csv",
        "labels": ["s", "d", "dept", "service", "studage", "lectage"],
        "formula": "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)",
        "statsmodels": {"fixed": "y ~ 1 + service", "crossed": ["s", "d", "dept"]},
    },
    # GLMMs (issue 3); statsmodels has no frequentist GLMM. The CSVs are R's VerbAgg with r2 as
    # 0/1 and grouseticks with sHEIGHT = scale(HEIGHT) (mixedlm's formulas have no scale()).
    "VerbAgg": {
        "csv": HERE / "data" / "VerbAgg.csv",
        "labels": ["id", "item", "Gender", "btype", "situ"],
        "formula": "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
        "family": "binomial",
    },
    "grouseticks": {
        "csv": HERE / "data" / "grouseticks.csv",
        "labels": ["INDEX", "BROOD", "LOCATION", "YEAR"],
        "formula": "TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
        "family": "poisson",
    },
}
