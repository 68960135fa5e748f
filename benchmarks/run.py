"""Fit the benchmark models with hmix and its peers side by side, in one run.

usage: python benchmarks/run.py [--repeats N] [--quick] [--only MODEL] [--cap SECONDS]

Each engine runs in its own process (imports and memory are its own); the first fit is a warm-up.
Prints a Markdown table of median wall times, the ratio of each peer to hmix, peak memory and the
objective (-2 log-likelihood) each engine reached; writes benchmarks/results.md and .json.
lme4 runs through Rscript when it is installed; statsmodels runs under a time cap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from models import MODELS  # noqa: E402

ENGINES = ["hmix", "lme4", "mixedlm", "statsmodels"]


def run_engine(engine: str, model: str, repeats: int, cap: float) -> dict:
    spec = MODELS[model]
    if engine == "lme4":
        if shutil.which("Rscript") is None:
            return {"status": "n/a (no Rscript)"}
        cmd = [
            "Rscript",
            str(HERE / "lme4_worker.R"),
            str(spec["csv"]),
            ",".join(spec["labels"]),
            spec["formula"],
            str(repeats),
            spec.get("family", "gaussian"),
        ]
    else:
        try:
            metadata.version("hmix" if engine == "hmix" else engine)
        except metadata.PackageNotFoundError:
            if engine != "hmix":
                return {"status": f"n/a ({engine} not installed)"}
        cmd = [sys.executable, str(HERE / "worker.py"), engine, model, str(repeats)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cap, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"> {cap:.0f} s (stopped)"}
    if proc.returncode != 0:
        return {"status": "failed", "stderr": proc.stderr[-500:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["status"] = "ok"
    out["median"] = statistics.median(out["times"])
    out["wall"] = time.perf_counter() - start
    return out


def fmt_time(r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("status", "n/a")
    m = r["median"]
    return f"{m * 1e3:.1f} ms" if m < 1 else f"{m:.2f} s"


def ratio(r: dict, base: dict) -> str:
    if r.get("status") != "ok" or base.get("status") != "ok":
        return "–"
    return f"{r['median'] / base['median']:.1f}×"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one repeat, no statsmodels")
    ap.add_argument("--only", choices=list(MODELS))
    ap.add_argument("--cap", type=float, default=120.0, help="seconds an engine may take per model")
    args = ap.parse_args()
    engines = [e for e in ENGINES if not (args.quick and e == "statsmodels")]
    skip = {"status": "–"}
    results: dict[str, dict[str, dict]] = {}
    for model in [args.only] if args.only else list(MODELS):
        reps = 1 if args.quick else (min(args.repeats, 3) if model == "InstEval" else args.repeats)
        results[model] = {}
        for engine in engines:
            glmm = "family" in MODELS[model]
            r = skip if (glmm and engine == "statsmodels") else run_engine(engine, model, reps, args.cap)
            results[model][engine] = r
            objective = r.get("objective", float("nan"))
            print(f"{model:10s} {engine:11s} {fmt_time(r):>18s}  objective {objective:.6f}", flush=True)

    head = (
        "| model | hmix | lme4 | mixedlm | statsmodels | lme4 / hmix | mixedlm / hmix "
        "| peak MB (hmix / lme4 / mixedlm / sm) | −2 logLik (hmix / lme4 / mixedlm) |"
    )
    lines = [head, "|" + "---|" * 9]
    for model, rs in results.items():
        h = rs["hmix"]
        mem = " / ".join(
            f"{rs[e]['peak_mb']:.0f}" if rs.get(e, {}).get("status") == "ok" else "–" for e in ENGINES
        )
        objs = " / ".join(
            f"{rs[e]['objective']:.4f}" if rs.get(e, {}).get("status") == "ok" else "–" for e in ENGINES[:3]
        )
        lines.append(
            f"| {model} | {fmt_time(h)} | {fmt_time(rs.get('lme4', {}))} "
            f"| {fmt_time(rs.get('mixedlm', {}))} | "
            f"{fmt_time(rs.get('statsmodels', {'status': 'skipped'}))} | {ratio(rs.get('lme4', {}), h)} | "
            f"{ratio(rs.get('mixedlm', {}), h)} | {mem} | {objs} |"
        )
    versions = {}
    for pkg in ["hmix", "numpy", "scipy", "nlopt", "mixedlm", "statsmodels"]:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "from source" if pkg == "hmix" else "not installed"
    lme4_version = next(
        (r["version"] for rs in results.values() for e, r in rs.items() if e == "lme4" and "version" in r),
        "n/a",
    )
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    footer = (
        f"\nMedian wall time of one fit by maximum likelihood (first fit excluded), {machine}; "
        f"lme4 {lme4_version}, " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."
    )
    table = "\n".join(lines) + "\n" + footer + "\n"
    print("\n" + table)
    (HERE / "results.md").write_text(table)
    (HERE / "results.json").write_text(
        json.dumps(
            {"machine": machine, "versions": versions, "lme4": lme4_version, "results": results},
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
