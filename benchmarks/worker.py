"""Fit one model with one Python engine in this process; report timings on stdout.

usage: python benchmarks/worker.py ENGINE MODEL REPEATS   (ENGINE: hmix, mixedlm, statsmodels)

run.py starts one of these per (engine, model), so imports and peak memory are the engine's own.
The first fit is a warm-up (imports, caches, JIT) and is not timed; then REPEATS timed fits.
Protocol (read by run.py): ``@ready`` once the engine is imported and the data read, ``@fit I``
before each fit (run.py's per-fit time cap counts from it), and a last line ``@result {json}``.
Exit status 3: the engine cannot be imported; 4: the engine cannot fit this kind of model.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from models import MODELS


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def peak_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def n_evals(optsum) -> int | None:
    for name in ("n_evals", "feval", "fevals", "nevals", "n_eval"):
        v = getattr(optsum, name, None)
        if isinstance(v, (int, np.integer)):
            return int(v)
    return None


def floats(x) -> list[float] | None:
    try:
        return [float(v) for v in np.ravel(np.asarray(x, dtype=float))]
    except (TypeError, ValueError):
        return None


def fitter(engine: str, spec: dict):
    """Import ENGINE and return (version, fit), where fit(data) -> dict with "objective" etc."""
    family = spec.get("family")
    formula = spec["formula"]
    zi = spec.get("zi")
    if engine == "hmix":
        import hmix

        def fit(d: pd.DataFrame) -> dict:
            if family:
                m = hmix.glmer(formula, d, family=family, zi_formula=zi)
            else:
                m = hmix.lmer(formula, data=d, REML=False)
            return {
                "objective": float(m.objective),
                "fixef": {str(k): float(v) for k, v in pd.Series(m.fixef).items()},
                "theta": floats(getattr(m, "theta", None)),
                "n_evals": n_evals(getattr(m, "optsum", None)),
            }

        return getattr(hmix, "__version__", "source"), fit
    if engine == "mixedlm":
        import mixedlm

        if zi:
            say("@unsupported mixedlm has no zero-inflated GLMM")
            raise SystemExit(4)

        def fit(d: pd.DataFrame) -> dict:
            if family == "negative_binomial":  # (theta estimated, as lme4's glmer.nb)
                m = mixedlm.glmer_nb(formula, d)
                objective = -2 * float(m.logLik().value)
            elif family:
                fam = mixedlm.families.Binomial() if family == "binomial" else mixedlm.families.Poisson()
                m = mixedlm.glmer(formula, d, family=fam)
                objective = -2 * float(m.logLik().value)
            else:
                m = mixedlm.lmer(formula, d, REML=False)
                objective = float(m.deviance)  # a property, not a method
            fe = m.fixef() if callable(m.fixef) else m.fixef  # a method returning a dict
            evals = getattr(m, "function_evals", None)
            return {
                "objective": objective,
                "fixef": {str(k): float(v) for k, v in dict(fe).items()},
                "theta": floats(getattr(m, "theta", None)),
                "n_evals": int(evals) if isinstance(evals, (int, np.integer)) else None,
            }

        return getattr(mixedlm, "__version__", "?"), fit
    if engine == "statsmodels":
        import statsmodels
        import statsmodels.formula.api as smf

        if family:
            say("@unsupported statsmodels has no frequentist GLMM")
            raise SystemExit(4)
        sm = spec["statsmodels"]

        def fit(d: pd.DataFrame) -> dict:
            if "crossed" in sm:
                # Crossed factors: one group spanning all rows, each factor a variance component.
                vc = {g: f"0 + C({g})" for g in sm["crossed"]}
                model = smf.mixedlm(
                    sm["fixed"], d.assign(_all=1), groups="_all", re_formula="0", vc_formula=vc
                )
            else:
                model = smf.mixedlm(sm["fixed"], d, groups=sm["groups"], re_formula=sm["re_formula"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = model.fit(reml=False)
            return {
                "objective": float(-2 * r.llf),
                "fixef": {str(k): float(v) for k, v in r.fe_params.items()},
                "converged": bool(r.converged),
            }

        return statsmodels.__version__, fit
    raise SystemExit(f"unknown engine {engine}")


def main() -> None:
    engine, name, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = MODELS[name]
    warnings.simplefilter("ignore")
    try:
        version, fit = fitter(engine, spec)
    except ImportError:
        traceback.print_exc()
        raise SystemExit(3) from None
    data = pd.read_csv(spec["csv"], dtype={c: str for c in spec["labels"]})
    say("@ready")
    say("@fit 0")
    out = fit(data)  # warm-up, not timed
    times = []
    for i in range(repeats):
        say(f"@fit {i + 1}")
        t = time.perf_counter()
        out = fit(data)
        times.append(time.perf_counter() - t)
    say("@result " + json.dumps({"version": version, "times": times, "self_peak_mb": peak_mb(), **out}))


if __name__ == "__main__":
    main()
