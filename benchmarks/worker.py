"""Fit one model with one Python engine in this process; print timings as JSON.

usage: python benchmarks/worker.py ENGINE MODEL REPEATS   (ENGINE: hmix, mixedlm, statsmodels)
The first fit is a warm-up (imports, caches) and is not timed.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from models import MODELS


def peak_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fitter(engine: str, spec: dict):
    family = spec.get("family")
    if engine == "hmix":
        import hmix

        def fit(d: pd.DataFrame) -> float:
            if family:
                return hmix.glmer(spec["formula"], d, family=family).objective
            return hmix.lmer(spec["formula"], d, REML=False).objective

        return fit
    if engine == "mixedlm":
        import mixedlm

        def fit(d: pd.DataFrame) -> float:
            if family:
                fam = mixedlm.families.Binomial() if family == "binomial" else mixedlm.families.Poisson()
                return float(-2 * mixedlm.glmer(spec["formula"], d, family=fam).logLik().value)
            return float(mixedlm.lmer(spec["formula"], d, REML=False).deviance)

        return fit
    if engine == "statsmodels":
        import statsmodels.formula.api as smf

        if family:
            raise SystemExit("statsmodels has no frequentist GLMM")
        sm_spec = spec["statsmodels"]

        def fit(d: pd.DataFrame) -> float:
            if "crossed" in sm_spec:  # crossed factors: variance components inside one group
                vc = {g: f"0 + C({g})" for g in sm_spec["crossed"]}
                model = smf.mixedlm(
                    sm_spec["fixed"], d.assign(_all=1), groups="_all", vc_formula=vc, re_formula="0"
                )
            else:
                model = smf.mixedlm(
                    sm_spec["fixed"], d, groups=sm_spec["groups"], re_formula=sm_spec["re_formula"]
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(-2 * model.fit(reml=False).llf)

        return fit
    raise SystemExit(f"unknown engine {engine}")


def main() -> None:
    engine, name, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = MODELS[name]
    data = pd.read_csv(spec["csv"], dtype={c: str for c in spec["labels"]})
    fit = fitter(engine, spec)
    objective = fit(data)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        objective = fit(data)
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            {"engine": engine, "model": name, "times": times, "objective": objective, "peak_mb": peak_mb()}
        )
    )


if __name__ == "__main__":
    main()
