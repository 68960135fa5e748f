"""A crossed LMM of 100M rows read from parquet files through Dask on a two-worker LocalCluster.

usage: python benchmarks/dask_100m.py [--rows 1e8] [--parts 50] [--dir /tmp/hmix_100m]

Writes the rows (``y ~ x + (1 | u) + (1 | i)``, 20,000 users x 500 items: the same level
effects in every file) as parquet files, one partition each, unless they are there already;
then fits by ML with the rows on the workers and prints the time, the evaluations and the peak
resident memory of the client and of each worker beside the data's size in memory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write(directory: Path, rows: int, parts: int, users: int = 20_000, items: int = 500) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    bu, bi = 0.8 * rng.standard_normal(users), 0.5 * rng.standard_normal(items)
    for k in range(parts):
        path = directory / f"part-{k:04d}.parquet"
        if path.exists():
            continue
        r = np.random.default_rng(1000 + k)
        n = rows // parts
        u = r.integers(0, users, n, dtype=np.int32)
        i = r.integers(0, items, n, dtype=np.int32)
        x = r.standard_normal(n)
        y = 1.0 + 0.5 * x + bu[u] + bi[i] + r.standard_normal(n)
        pd.DataFrame({"y": y, "x": x, "u": u, "i": i}).to_parquet(path, index=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=float, default=1e8)
    ap.add_argument("--parts", type=int, default=50)
    ap.add_argument("--dir", default="/tmp/hmix_100m")
    args = ap.parse_args()
    directory = Path(args.dir)
    start = time.perf_counter()
    write(directory, int(args.rows), args.parts)
    print(f"data written in {time.perf_counter() - start:.0f} s", flush=True)

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import hmix

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        ddf = dd.read_parquet(str(directory))
        start = time.perf_counter()
        m = hmix.lmer("y ~ x + (1 | u) + (1 | i)", ddf, REML=False, verbose=True)
        seconds = time.perf_counter() - start
        workers = client.run(peak_mb)
    data_mb = m.nobs * (8 + 8 + 4 + 4) / 2**20
    out = {
        "rows": m.nobs,
        "seconds": seconds,
        "n_evals": m.optsum.n_evals,
        "optimizer_seconds": m.optsum.seconds,
        "objective": m.objective,
        "theta": m.theta.tolist(),
        "fixef": m.fixef.to_dict(),
        "client_peak_mb": peak_mb(),
        "worker_peak_mb": sorted(workers.values()),
        "data_mb_in_memory": data_mb,
        "strategy": m.devfun.engine.strategy,
    }
    print("@result " + json.dumps(out), flush=True)
    print(m.summary())


if __name__ == "__main__":
    main()
