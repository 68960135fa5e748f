"""blmer and bglmer side by side with R's blme, in one run (penalized fits by maximum likelihood).

usage: python benchmarks/priors.py [--repeats N] [--only NAME[,NAME]]

Each (engine, model) runs in its own process (this script with ``--worker`` for hmix,
``blme_worker.R`` for blme), one after another; the first fit in each is a warm-up and is not
timed. Prints a Markdown table of median wall times, blme's time over hmix's, and the penalized
criterion (deviance + prior deviance) each reached, and writes it to benchmarks/priors_results.md
(every number: benchmarks/priors_results.json).
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from models import DATA, MODELS  # noqa: E402

# (base model, hmix's prior arguments, blme's as R text, timed fits)
PRIOR_MODELS: dict[str, dict] = {
    "sleepstudy": {"base": "sleepstudy", "hmix": {}, "cov": "wishart", "fixef": "NULL", "repeats": 25},
    "Dyestuff2": {
        "base": {"csv": DATA / "Dyestuff2.csv", "labels": ["Batch"], "formula": "Yield ~ 1 + (1 | Batch)"},
        "hmix": {},
        "cov": "wishart",
        "fixef": "NULL",
        "repeats": 25,
    },
    "Penicillin": {"base": "Penicillin", "hmix": {}, "cov": "wishart", "fixef": "NULL", "repeats": 25},
    "InstEval": {"base": "InstEval", "hmix": {}, "cov": "wishart", "fixef": "NULL", "repeats": 3},
    "cbpp": {
        "base": {
            "csv": DATA / "cbpp.csv",
            "labels": ["herd", "period"],
            "formula": "cbind(incidence, size - incidence) ~ period + (1 | herd)",
            "family": "binomial",
        },
        "hmix": {"fixef_prior": "normal"},
        "cov": "wishart",
        "fixef": "normal",
        "repeats": 11,
    },
    "VerbAgg": {
        "base": "VerbAgg",
        "hmix": {"fixef_prior": "normal"},
        "cov": "wishart",
        "fixef": "normal",
        "repeats": 3,
    },
    "grouseticks": {"base": "grouseticks", "hmix": {}, "cov": "wishart", "fixef": "NULL", "repeats": 11},
}


def spec_of(name: str) -> dict:
    base = PRIOR_MODELS[name]["base"]
    return MODELS[base] if isinstance(base, str) else base


def worker(name: str, repeats: int) -> None:
    """Fit one model with hmix in this process and print the protocol's lines."""
    import warnings

    import pandas as pd

    import hmix

    warnings.simplefilter("ignore")
    spec, args = spec_of(name), PRIOR_MODELS[name]["hmix"]
    data = pd.read_csv(spec["csv"], dtype={c: str for c in spec["labels"]})

    def fit() -> hmix.MixedModel:
        if spec.get("family"):
            return hmix.bglmer(spec["formula"], data, family=spec["family"], **args)
        return hmix.blmer(spec["formula"], data, REML=False, **args)

    print("@ready", flush=True)
    m = fit()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        m = fit()
        times.append(time.perf_counter() - t)
    result = {
        "version": hmix.__version__,
        "times": times,
        "objective": m.penalized_objective,
        "penalty": m.penalty,
        "fixef": {str(k): float(v) for k, v in m.fixef.items()},
        "theta": [float(v) for v in m.theta],
        "converged": bool(m.converged),
    }
    print("@result " + json.dumps(result), flush=True)


def run(cmd: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@result ")]
    if proc.returncode == 3:
        return {"status": "n/a", "note": "not installed"}
    if proc.returncode != 0 or not lines:
        return {"status": "error", "stderr": proc.stderr[-2000:]}
    out = json.loads(lines[-1][len("@result ") :])
    out.update(status="ok", median=statistics.median(out["times"]), process_seconds=wall)
    return out


def commands(name: str, repeats: int) -> dict[str, list[str] | None]:
    spec, pm = spec_of(name), PRIOR_MODELS[name]
    rscript = shutil.which("Rscript")
    blme = None
    if rscript is not None:
        family = spec.get("family", "gaussian")
        blme = [rscript, str(HERE / "blme_worker.R"), str(spec["csv"]), ",".join(spec["labels"]),
                spec["formula"], str(repeats), family, pm["cov"], pm["fixef"]]  # fmt: skip
    hmix = [sys.executable, str(Path(__file__).resolve()), "--worker", name, str(repeats)]
    return {"hmix": hmix, "blme": blme}


def fmt_time(r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("status", "n/a")
    s = r["median"]
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--only")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "REPEATS"))
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], int(a.worker[1]))
        return
    names = a.only.split(",") if a.only else list(PRIOR_MODELS)
    results: dict[str, dict] = {}
    rows = [
        "| model | priors | hmix | blme | blme / hmix | penalized criterion hmix | blme | blme − hmix |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        repeats = a.repeats or PRIOR_MODELS[name]["repeats"]
        res = {}
        for engine, cmd in commands(name, repeats).items():
            res[engine] = {"status": "n/a", "note": "Rscript not on PATH"} if cmd is None else run(cmd)
            res[engine]["command"] = cmd
        results[name] = res
        h, b = res["hmix"], res["blme"]
        ok = h.get("status") == "ok" and b.get("status") == "ok"
        ratio = f"{b['median'] / h['median']:.1f}×" if ok else ""
        crit = [f"{r['objective']:.4f}" if r.get("status") == "ok" else "" for r in (h, b)]
        diff = f"{b['objective'] - h['objective']:+.2g}" if ok else ""
        pm = PRIOR_MODELS[name]
        priors = f"{pm['cov']}" + (f" + {pm['fixef']}" if pm["fixef"] != "NULL" else "")
        cells = [name, priors, fmt_time(h), fmt_time(b), ratio, crit[0], crit[1], diff]
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    blme_ok = [r["blme"] for r in results.values() if r["blme"].get("status") == "ok"]
    info = {
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "blme": blme_ok[0]["version"] if blme_ok else None,
        "lme4": blme_ok[0]["lme4"] if blme_ok else None,
    }
    counts = ", ".join(f"{n} {a.repeats or PRIOR_MODELS[n]['repeats']}" for n in names)
    note = (
        f"\nMedian wall time of one fit (after a warm-up fit; timed fits per model: {counts}), by ML. "
        "Penalized criterion: -2 log-likelihood plus the prior deviance (blme's deviance + 'Prior dev'). "
        f"blme {info['blme']} (lme4 {info['lme4']}), Python {info['python']}, {info['cpus']} CPUs.\n"
    )
    table = "\n".join(rows) + "\n" + note
    print(note)
    (HERE / "priors_results.md").write_text(table)
    dump = json.dumps({"info": info, "results": results}, indent=1, default=str)
    (HERE / "priors_results.json").write_text(dump)


if __name__ == "__main__":
    main()
