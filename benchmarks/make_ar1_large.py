"""Write benchmarks/data/ar1_large.csv: 1,000 subjects x 8 equally spaced occasions, AR(1) subject
effects over the occasions (rho 0.6, SD 1), residual SD 0.5, y = 1 + 0.5 x + 0.2 tnum + ...
(ar1_sim.csv's design, larger). Deterministic (a fixed seed).

usage: python benchmarks/make_ar1_large.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    rng = np.random.default_rng(20260517)
    subjects, k, rho = 1000, 8, 0.6
    lag = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    b = rng.standard_normal((subjects, k)) @ np.linalg.cholesky(rho**lag).T
    t = np.tile(np.arange(1, k + 1), subjects)
    x = np.round(rng.uniform(-1, 1, subjects * k), 4)
    y = 1 + 0.5 * x + 0.2 * t + b.ravel() + rng.normal(0, 0.5, subjects * k)
    ids = np.repeat([f"s{i:04d}" for i in range(subjects)], k)
    frame = pd.DataFrame({"id": ids, "time": t, "tnum": t, "x": x, "y": np.round(y, 6)})
    frame.to_csv(Path(__file__).parent / "data" / "ar1_large.csv", index=False)


if __name__ == "__main__":
    main()
