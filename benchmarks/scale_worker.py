"""One fit of a scale benchmark in this process: ``python benchmarks/scale_worker.py ENGINE DATA``.

ENGINE: hmix or mixedlm (lme4 runs scale_lme4.R); DATA: ``crossed:N`` (rows) or
``movielens:N`` (draws; see scale_data.py). ``--evals=K``: hmix's set-up and K evaluations only
(the per-evaluation time of a fit too long to run whole). The data are generated here, before the clock
starts; the fit is timed alone. Prints ``@result {json}`` (time, objective, theta, evaluations,
per-evaluation time for hmix, and the peak resident memory of the process, data included).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale_data import crossed, movielens

FORMULAS = {"crossed": "y ~ x + (1 | u) + (1 | i)", "movielens": "rating ~ 1 + (1 | u) + (1 | i)"}


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    engine, data = sys.argv[1], sys.argv[2]
    kind, size = data.split(":")
    df = crossed(int(float(size))) if kind == "crossed" else movielens(int(float(size)))
    formula = FORMULAS[kind]
    out: dict = {"rows": len(df), "levels": [int(df[c].nunique()) for c in ("u", "i")], "data_mb": peak_mb()}
    evals = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--evals=")), 0)
    if engine == "hmix" and evals:
        # per-evaluation time without the whole optimization: the design, the engine's set-up,
        # then `evals` evaluations at theta near the start (the optimizer's first points)
        import numpy as np

        import hmix

        start = time.perf_counter()
        d = hmix.build_design(formula, df)
        f = hmix.LMMObjective(d, REML=False)
        setup = time.perf_counter() - start
        times, values = [], []
        for k in range(evals):
            t = time.perf_counter()
            values.append(float(f(f.theta0 * (1 + 0.05 * k))))
            times.append(time.perf_counter() - t)
        out.update(
            setup_seconds=setup,
            evaluation_seconds=times,
            per_evaluation=float(np.median(times)),
            values=values,
            strategy=f.engine.strategy,
        )
    elif engine == "hmix":
        import hmix

        verbose = "--verbose" in sys.argv
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = hmix.lmer(formula, df, REML=False, verbose=verbose)
        out.update(
            seconds=time.perf_counter() - start,
            objective=float(m.objective),
            theta=[float(v) for v in m.theta],
            n_evals=int(m.optsum.n_evals),
            optimizer_seconds=float(m.optsum.seconds),
            strategy=m.devfun.engine.strategy,
        )
    else:
        import mixedlm

        df = df.assign(u=df["u"].astype(str), i=df["i"].astype(str))
        start = time.perf_counter()
        m = mixedlm.lmer(formula, df, REML=False)
        out.update(
            seconds=time.perf_counter() - start,
            objective=float(m.deviance),
            theta=[float(v) for v in m.theta],
        )
    out["peak_mb"] = peak_mb()
    print("@result " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
