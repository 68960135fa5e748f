"""Time per evaluation of each covariance structure against the unstructured term of the same size.

usage: python benchmarks/structures.py [--repeats N]

A structured term (``diag``, ``cs``, ``ar1``) maps its few parameters to the same k x k block of
Lambda that an unstructured term fills from k(k+1)/2: the engine's work per evaluation is the
same, and only the map from theta to lam differs. This script evaluates the profiled deviance at
the starting theta of each term on the same data (the benchmark's ar1 and cs data, and a
1,000-subject ar1 design), alternating the structures so that the machine's load falls on all
alike, and prints the median per evaluation and its ratio to the unstructured term's; it writes
``structures_results.md`` beside itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT.parent))

import hmix  # noqa: E402
from hmix._threads import one_blas_thread  # noqa: E402

CASES = [
    ("ar1_sim.csv", ["id", "time"], "y ~ x + tnum + {}(0 + time | id)", ["us", "diag", "cs", "ar1"]),
    ("ar1_large.csv", ["id", "time"], "y ~ x + tnum + {}(0 + time | id)", ["us", "diag", "cs", "ar1"]),
    ("cs_sim.csv", ["id", "cond"], "y ~ cond + {}(0 + cond | id)", ["us", "diag", "cs"]),
]


def per_evaluation(f: hmix.LMMObjective, theta: np.ndarray, n: int) -> float:
    """Seconds of one evaluation: the median of n, each at theta moved by 1e-9 (no reuse)."""
    rng = np.random.default_rng(0)
    times = []
    for _ in range(n):
        x = theta * (1 + 1e-9 * rng.uniform(size=len(theta)))
        t = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    lines = [
        "| data | term | parameters | µs per evaluation | ratio to us |",
        "| --- | --- | --- | --- | --- |",
    ]
    for csv, labels, formula, structures in CASES:
        df = pd.read_csv(ROOT / "data" / csv, dtype={c: str for c in labels})
        objectives = {}
        for s in structures:  # (at the starting theta: one row per subject and occasion leaves
            # us() and cs() of the ar1 data unidentified, which lme4's check refuses to fit)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = hmix.LMMObjective(hmix.build_design(formula.format(s), df), REML=False)
            objectives[s] = (f, f.theta0)
        times: dict[str, list[float]] = {s: [] for s in structures}
        with one_blas_thread():
            for f, theta in objectives.values():  # (warm-up: the first evaluations allocate)
                per_evaluation(f, theta, 10)
            for _ in range(10):  # (rounds alternate the structures: load falls on all alike)
                for s in structures:
                    f, theta = objectives[s]
                    times[s].append(per_evaluation(f, theta, args.repeats // 10))
        base = statistics.median(times["us"])
        for s in structures:
            t = statistics.median(times[s])
            nth = len(objectives[s][1])
            lines.append(f"| {csv} | {s}() | {nth} | {t * 1e6:.0f} | {t / base:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "structures_results.md").write_text(text)


if __name__ == "__main__":
    main()
