"""The scale table: crossed ``y ~ x + (1 | u) + (1 | i)`` fits (20,000 users x 2,000 items) of
100k, 1M and 10M rows by hmix, mixedlm and lme4, each fit in its own process, one after another.

usage: python benchmarks/scale.py [--sizes 1e5,1e6,1e7] [--engines hmix,mixedlm,lme4] [--cap 1200]
       python benchmarks/scale.py --movielens 1e7        (hmix on the MovieLens-shaped data)
       python benchmarks/scale.py --movielens 1.25e7 --evals 3   (its set-up and 3 evaluations)

Time is the fit alone (data generated or read before the clock); peak memory is the process's
peak resident set (VmHWM), the data frame included. A peer still running after --cap seconds
is stopped and shown as "> cap". Writes benchmarks/scale_results.json and scale_results.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def run(cmd: list[str], cap: float) -> dict:
    start = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=cap, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": f"> {cap:.0f} s"}
    lines = [x for x in p.stdout.splitlines() if x.startswith("@result ")]
    if not lines:
        return {"status": "error", "stderr": p.stderr[-2000:]}
    out = json.loads(lines[-1].removeprefix("@result "))
    out["process_seconds"] = time.perf_counter() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e5,1e6,1e7")
    ap.add_argument("--engines", default="hmix,mixedlm,lme4")
    ap.add_argument("--cap", type=float, default=1200.0)
    ap.add_argument("--movielens", type=float, default=None)
    ap.add_argument("--evals", type=int, default=0, help="MovieLens: set-up and this many evaluations only")
    args = ap.parse_args()
    results_path = HERE / "scale_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    worker = [sys.executable, str(HERE / "scale_worker.py")]
    if args.movielens:
        key = f"movielens:{int(args.movielens)}"
        extra = [f"--evals={args.evals}"] if args.evals else ["--verbose"]
        results[key + (f":evals{args.evals}" if args.evals else "")] = row = {
            "hmix": run([*worker, "hmix", key, *extra], 24 * 3600)
        }
        print(key, row, flush=True)
        results_path.write_text(json.dumps(results, indent=1))
        return
    else:
        from scale_data import crossed

        for size in args.sizes.split(","):
            n = int(float(size))
            key = f"crossed:{n}"
            row = results.setdefault(key, {})
            for engine in args.engines.split(","):
                if engine == "lme4":
                    with tempfile.NamedTemporaryFile(suffix=".csv") as f:
                        crossed(n).to_csv(f.name, index=False)
                        cmd = ["Rscript", str(HERE / "scale_lme4.R"), f.name, "y ~ x + (1 | u) + (1 | i)"]
                        row[engine] = run(cmd, args.cap)
                else:
                    row[engine] = run([*worker, engine, key], args.cap if engine != "hmix" else 24 * 3600)
                print(key, engine, row[engine], flush=True)
                results_path.write_text(json.dumps(results, indent=1))
    results_path.write_text(json.dumps(results, indent=1))
    (HERE / "scale_results.md").write_text(table(results))
    print(table(results))


def table(results: dict) -> str:
    lines = [
        "| data | rows | levels (u x i) | engine | seconds | evaluations | s / evaluation | peak MB "
        "| -2 log L |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in results.items():
        kind, size = key.split(":")
        known = [r for r in row.values() if "levels" in r]
        levels = " x ".join(f"{v:,}" for v in known[0]["levels"]) if known else ""
        rows = f"{known[0]['rows']:,}" if known else f"{int(size):,}"
        for engine, r in row.items():
            if "seconds" not in r:
                lines.append(f"| {kind} | {rows} | {levels} | {engine} | {r.get('status')} | | | | |")
                continue
            ev = r.get("n_evals")
            per = f"{r['optimizer_seconds'] / ev:.3f}" if ev and "optimizer_seconds" in r else ""
            lines.append(
                f"| {kind} | {rows} | {levels} | {engine} | {r['seconds']:.1f} | {ev or ''} "
                f"| {per} | {r['peak_mb']:.0f} | {r['objective']:.4f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
