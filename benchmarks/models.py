"""The benchmark models: data, grouping columns, formula (all fitted by maximum likelihood).

The CSVs are this directory's own copies (``benchmarks/data/``), so the benchmark does not depend
on what hmix bundles. Every column in ``labels`` is read as a string (a label, not a number).
A model's ``engines`` (default: ``DEFAULT_ENGINES``) are the engines that fit it.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"
DEFAULT_ENGINES = ["hmix", "lme4", "mixedlm", "statsmodels"]

MODELS: dict[str, dict] = {
    "sleepstudy": {
        "csv": DATA / "sleepstudy.csv",
        "labels": ["Subject"],
        "formula": "Reaction ~ Days + (Days | Subject)",
        "statsmodels": {"fixed": "Reaction ~ Days", "groups": "Subject", "re_formula": "~Days"},
        "repeats": 25,  # fits of a few ms: more of them for a stable median
    },
    "Penicillin": {
        "csv": DATA / "Penicillin.csv",
        "labels": ["plate", "sample"],
        "formula": "diameter ~ 1 + (1 | plate) + (1 | sample)",
        "statsmodels": {"fixed": "diameter ~ 1", "crossed": ["plate", "sample"]},
        "repeats": 25,
    },
    "InstEval": {
        "csv": DATA / "InstEval.csv",
        "labels": ["s", "d", "dept", "service", "studage", "lectage"],
        "formula": "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)",
        "statsmodels": {"fixed": "y ~ 1 + service", "crossed": ["s", "d", "dept"]},
        "repeats": 3,
    },
    # GLMMs (extra rows, after the three LMMs); statsmodels has no frequentist GLMM. The CSVs are
    # R's VerbAgg with r2 as 0/1 and grouseticks with sHEIGHT = scale(HEIGHT) (mixedlm's formulas
    # have no scale()).
    "VerbAgg": {
        "csv": DATA / "VerbAgg.csv",
        "labels": ["id", "item", "Gender", "btype", "situ"],
        "formula": "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
        "family": "binomial",
        "repeats": 11,
    },
    "grouseticks": {
        "csv": DATA / "grouseticks.csv",
        "labels": ["INDEX", "BROOD", "LOCATION", "YEAR"],
        "formula": "TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
        "family": "poisson",
        "repeats": 11,
    },
    # overdispersed counts: glmmTMB's nbinom2 and ziformula (its own data: Salamanders); lme4's
    # glmer.nb fits the negative binomial with Fisher's curvature in the Laplace approximation
    # (-2 log L 0.1 higher, theta by alternation); mixedlm's glmer_nb takes minutes: two fits
    "grouseticks_nb": {
        "csv": DATA / "grouseticks.csv",
        "labels": ["INDEX", "BROOD", "LOCATION", "YEAR"],
        "formula": "TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | LOCATION)",
        "family": "negative_binomial",
        "engines": ["hmix", "lme4", "mixedlm", "glmmTMB"],
        "engine_repeats": {"mixedlm": 2},
        "repeats": 11,
    },
    "salamanders_zip": {
        "csv": DATA / "Salamanders.csv",
        "labels": ["site", "spp", "mined"],
        "formula": "count ~ spp + mined + (1 | site)",
        "zi": "~ mined",
        "family": "poisson",
        "engines": ["hmix", "glmmTMB"],
        "repeats": 11,
    },
    "salamanders_zinb": {
        "csv": DATA / "Salamanders.csv",
        "labels": ["site", "spp", "mined"],
        "formula": "count ~ spp + mined + (1 | site)",
        "zi": "~ mined",
        "family": "negative_binomial",
        "engines": ["hmix", "glmmTMB"],
        "repeats": 11,
    },
    # structured covariances (glmmTMB's syntax, which hmix reads): lme4 1.1 has none, so they run
    # beside glmmTMB. ar1_sim and cs_sim are tests/data's (the glmmTMB reference data);
    # ar1_large is make_ar1_large.py's, the same design with 1,000 subjects.
    "ar1": {
        "csv": DATA / "ar1_sim.csv",
        "labels": ["id", "time"],
        "formula": "y ~ x + tnum + ar1(0 + time | id)",
        "engines": ["hmix", "glmmTMB"],
        "repeats": 25,
    },
    "ar1_large": {
        "csv": DATA / "ar1_large.csv",
        "labels": ["id", "time"],
        "formula": "y ~ x + tnum + ar1(0 + time | id)",
        "engines": ["hmix", "glmmTMB"],
        "repeats": 5,
    },
    "cs": {
        "csv": DATA / "cs_sim.csv",
        "labels": ["id", "cond"],
        "formula": "y ~ cond + cs(0 + cond | id)",
        "engines": ["hmix", "glmmTMB"],
        "repeats": 25,
    },
}
