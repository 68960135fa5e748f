"""Evaluations and time of NLopt's optimizers on the LMM reference models and InstEval.

usage: python benchmarks/optimizers.py

hmix picks BOBYQA (lme4's choice) when an evaluation is cheap and NEWUOA_BOUND when it costs
more than a few milliseconds: this script shows why (evaluation counts, wall time, and the
objective reached relative to lme4's).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import nlopt
import numpy as np
import pandas as pd

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import spec, spec_data  # noqa: E402

from hmix import LMMObjective, build_design  # noqa: E402

ALGORITHMS = ["LN_BOBYQA", "LN_NEWUOA_BOUND", "LN_SBPLX"]


def problems() -> list[tuple[str, LMMObjective, float]]:
    out = []
    ref = json.loads((ROOT / "tests/reference/lme4_reference.json").read_text())
    for mid, s in spec("public_spec.json").items():
        if s.get("family", "gaussian") != "gaussian":
            continue
        d = build_design(s["py_formula"], spec_data("public_spec.json", mid))
        out.append((mid, LMMObjective(d, REML=bool(s["REML"])), ref[mid]["objective"]))
    ie = pd.read_csv(
        Path(__file__).parent / "data/InstEval.csv", dtype={c: str for c in ["s", "d", "dept", "service"]}
    )
    d = build_design("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)", ie)
    out.append(("InstEval (ML)", LMMObjective(d, REML=False), 237721.768776))
    return out


def run(alg: str, f: LMMObjective) -> tuple[int, float, float]:
    x0 = f.theta0
    n = [0]

    def g(x: np.ndarray, grad: np.ndarray) -> float:
        n[0] += 1
        return f(x)

    opt = nlopt.opt(getattr(nlopt, alg if len(x0) > 1 else "LN_BOBYQA"), len(x0))
    opt.set_min_objective(g)
    opt.set_lower_bounds(f.lower)
    opt.set_ftol_rel(1e-12)
    opt.set_ftol_abs(1e-8)
    opt.set_xtol_abs(1e-8)
    t = time.perf_counter()
    opt.optimize(x0)
    return n[0], time.perf_counter() - t, opt.last_optimum_value()


def main() -> None:
    warnings.simplefilter("ignore")
    rows = []
    for name, f, ref in problems():
        row = {"model": name}
        for alg in ALGORITHMS:
            evals, secs, fmin = run(alg, f)
            row[alg] = f"{evals} / {secs * 1e3:.1f} ms / {(fmin - ref) / abs(ref):+.0e}"
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model")
    print("evaluations / wall time / objective relative to lme4\n")
    print(table.to_string())


if __name__ == "__main__":
    main()
