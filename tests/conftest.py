"""Shared fixtures: lme4 reference figures and a cache of fitted models."""

from __future__ import annotations

import json
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hmix
from hmix import datasets

HERE = Path(__file__).parent
REFERENCE = HERE / "reference"
DATA = HERE / "data"


@cache
def reference(name: str = "lme4_reference.json") -> dict[str, Any]:
    """lme4 1.1-31's figures (produced by tests/reference/make_reference.R or shared/tools)."""
    return json.loads((REFERENCE / name).read_text())


@cache
def spec(name: str = "public_spec.json") -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in json.loads((REFERENCE / name).read_text())}


# each spec of lme4 models and the file of lme4's figures for it (made by make_reference.R)
LME4_REFERENCES = {
    "public_spec.json": "lme4_reference.json",
    "extra_spec.json": "lme4_extra.json",
    # the binomial/cloglog models of lme4's own tests/glmmExt.R (data: make_cloglog_data.R)
    "glmmext_spec.json": "lme4_glmmext.json",
}


def lme4_ref(spec_file: str, model_id: str) -> dict[str, Any]:
    """lme4's figures for one model of a spec."""
    return reference(LME4_REFERENCES[spec_file])[model_id]


def lme4_cases(gaussian: bool, refused: bool = False) -> list[tuple[str, str]]:
    """(spec file, model id) of every LMM (``gaussian``) or GLMM that lme4 fitted (or, with
    ``refused``, refused with an error)."""
    out = []
    for sf, rf in LME4_REFERENCES.items():
        for mid, s in spec(sf).items():
            r = reference(rf).get(mid)
            if r is None or (s.get("family", "gaussian") == "gaussian") != gaussian:
                continue
            if ("error" in r) == refused:
                out.append((sf, mid))
    return out


def vec(x: object) -> np.ndarray:
    """R's jsonlite writes length-one vectors as scalars."""
    return np.atleast_1d(np.asarray(x, dtype=float))


def load_data(name: str, factors: tuple[str, ...] = ()) -> pd.DataFrame:
    """A dataset by name: bundled with hmix, or a test-only CSV in tests/data."""
    path = DATA / f"{name}.csv"
    if path.exists():
        df = pd.read_csv(path, dtype={c: str for c in factors})
        df.attrs["name"] = name
        return df
    df = datasets.load(name)
    for c in factors:
        df[c] = df[c].astype(str)
    return df


def spec_data(spec_file: str, model_id: str) -> pd.DataFrame:
    """The data of a spec entry, with its factor and binary columns coded as the R script did."""
    s = spec(spec_file)[model_id]
    data = load_data(s["data"], tuple(s.get("factors", ())))
    for b in s.get("binary", []):
        data[b] = (data[b] == "Y").astype(int)
    return data


@cache
def fit_spec(spec_file: str, model_id: str) -> Any:
    """Fit one model of a spec file (cached: tests share fits)."""
    s = spec(spec_file)[model_id]
    data = spec_data(spec_file, model_id)
    kw: dict[str, Any] = {}
    if s.get("weights"):
        kw["weights"] = s["weights"]
    if s.get("offset"):
        kw["offset"] = s["offset"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.HmixWarning)
        if s.get("family", "gaussian") == "gaussian":
            return hmix.lmer(s["py_formula"], data, REML=bool(s.get("REML")), **kw)
        return hmix.glmer(
            s["py_formula"], data, family=s["family"], link=s.get("link"), nAGQ=s.get("nAGQ", 1), **kw
        )


def quiet_glmer(formula: str, data: pd.DataFrame, **kw: Any) -> hmix.GeneralizedLinearMixedModel:
    """glmer with hmix's own warnings silenced (tests that check warnings call glmer directly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hmix.HmixWarning)
        return hmix.glmer(formula, data, **kw)


@pytest.fixture(scope="session")
def sleep() -> hmix.LinearMixedModel:
    """sleepstudy's correlated intercept-and-slope model by REML (fitted models are immutable)."""
    return hmix.lmer("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy"))


@pytest.fixture(scope="session")
def cbpp() -> hmix.GeneralizedLinearMixedModel:
    """cbpp's binomial random-intercept model by Laplace."""
    return quiet_glmer(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)", datasets.load("cbpp"), family="binomial"
    )
