"""Fit the benchmark models by ML with hmix and its peers side by side, in one run.

usage: python benchmarks/run.py [--quick] [--repeats N] [--only NAME[,NAME]] [--cap S] [--timeout S]

Each (engine, model) runs in its own process, so imports and peak memory are that engine's own;
the first fit in each process is a warm-up and is not timed. Prints a Markdown table of median
wall times, each peer's time over hmix's, peak memory and the objective (-2 log-likelihood) each
engine reached, and writes it to benchmarks/results.md (every number: benchmarks/results.json).
lme4 and glmmTMB run through Rscript when it is on PATH; statsmodels runs under a per-fit time
cap. A model's ``engines`` (models.py) say which engines fit it: the structured-covariance models
run beside glmmTMB only; ``engine_repeats`` caps an engine's timed fits (a peer that takes minutes).
An engine that is missing or fails is reported as "n/a" / "error"; the run goes on.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from models import DEFAULT_ENGINES, MODELS  # noqa: E402

ENGINES = ["hmix", "lme4", "mixedlm", "statsmodels", "glmmTMB"]
SHORT = {"hmix": "hmix", "lme4": "lme4", "mixedlm": "mixedlm", "statsmodels": "sm", "glmmTMB": "TMB"}
R_WORKERS = {"lme4": "lme4_worker.R", "glmmTMB": "glmmtmb_worker.R"}


def command(engine: str, model: str, repeats: int) -> list[str] | None:
    spec = MODELS[model]
    if engine in R_WORKERS:
        rscript = shutil.which("Rscript")
        if rscript is None:
            return None
        worker = str(HERE / R_WORKERS[engine])
        labels = ",".join(spec["labels"])
        family, zi = spec.get("family", "gaussian"), spec.get("zi", "")
        return [rscript, worker, str(spec["csv"]), labels, spec["formula"], str(repeats), family, zi]
    return [sys.executable, str(HERE / "worker.py"), engine, model, str(repeats)]


def run_engine(engine: str, model: str, repeats: int, cap: float) -> dict:
    """Run one worker; kill it if one fit (or start-up) takes longer than `cap` seconds."""
    cmd = command(engine, model, repeats)
    if cmd is None:
        return {"status": "n/a", "note": "Rscript not on PATH"}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    # (O_APPEND: the worker shares these files' offsets with this process, whose reads of its
    # progress would otherwise move where the worker's next line lands, over earlier ones)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        for f in (out, err):
            fcntl.fcntl(f.fileno(), fcntl.F_SETFL, fcntl.fcntl(f.fileno(), fcntl.F_GETFL) | os.O_APPEND)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env, start_new_session=True)
        marks, last, timed_out = 0, start, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            out.seek(0)
            n = sum(line.startswith(("@ready", "@fit")) for line in out.read().splitlines())
            if n > marks:
                marks, last = n, now
            elif now - last > cap:
                os.killpg(proc.pid, signal.SIGKILL)  # the worker's own process group
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.02)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        lines, stderr = out.read().splitlines(), err.read()
    base = {"command": cmd, "process_wall_s": wall, "peak_mb": usage.ru_maxrss / 1024}
    if timed_out:
        fits = [ln for ln in lines if ln.startswith("@fit")]
        where = "start-up" if not fits else ("warm-up fit" if fits[-1] == "@fit 0" else fits[-1][1:])
        return {**base, "status": "timeout", "cap_s": cap, "note": f"killed during {where}"}
    if code == 3:
        return {**base, "status": "n/a", "note": f"{engine} cannot be imported", "stderr": stderr[-800:]}
    if code == 4:
        return {**base, "status": "n/a", "note": "no GLMM in this engine"}
    result = next((ln[len("@result ") :] for ln in lines if ln.startswith("@result ")), None)
    if code != 0 or result is None:
        return {**base, "status": "error", "exit_code": code, "stderr": stderr[-2000:]}
    r = json.loads(result)
    return {
        **base,
        **r,
        "status": "ok",
        "median_s": statistics.median(r["times"]),
        "repeats": len(r["times"]),
    }


def fmt_time(r: dict | None) -> str:
    if r is None:
        return "skipped"
    if r["status"] == "timeout":
        return f"> {r['cap_s']:.0f} s"
    if r["status"] != "ok":
        return "no GLMM" if r.get("note") == "no GLMM in this engine" else r["status"]
    m = r["median_s"]
    return f"{m * 1e3:.1f} ms" if m < 1 else f"{m:.2f} s"


def fmt_ratio(r: dict | None, base: dict | None) -> str:
    if r is None or base is None or base["status"] != "ok":
        return "n/a"
    if r["status"] == "timeout":
        return f"> {r['cap_s'] / base['median_s']:.0f}×"
    if r["status"] != "ok":
        return "n/a"
    return f"{r['median_s'] / base['median_s']:.1f}×"


def cell(rs: dict, key: str, fmt: str, engines: list[str]) -> str:
    def one(e: str) -> str:
        r = rs.get(e)
        if r is not None and r["status"] == "timeout" and key == "peak_mb":
            return "≥" + fmt.format(r[key])  # peak up to the moment it was stopped
        return fmt.format(r[key]) if r is not None and r["status"] == "ok" else "n/a"

    return " / ".join(one(e) for e in engines)


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = None
    try:
        kb = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        mem = round(int(kb.split()[1]) / 1024**2, 1)
    except (OSError, StopIteration):
        pass
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    threads = {k: os.environ[k] for k in keys if k in os.environ}
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "thread_env": threads,
    }


def versions(results: dict) -> dict:
    v = {}
    for pkg in ["numpy", "scipy", "pandas", "formulaic", "nlopt", "mixedlm", "statsmodels"]:
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = "not installed"
    found = {e: r for rs in results.values() for e, r in rs.items() if r is not None and r["status"] == "ok"}
    v["hmix"] = found["hmix"]["version"] if "hmix" in found else "n/a"
    v["R"] = "n/a"
    for engine in R_WORKERS:
        v[engine] = found[engine]["version"] if engine in found else "n/a"
        if engine in found:
            v["R"] = found[engine]["R"]
    return v


def table(results: dict, engines: list[str], machine: dict, vers: dict, cap: float) -> str:
    peers = [e for e in engines if e != "hmix"]
    names = "/".join(SHORT[e] for e in engines)
    head = (["model"] + [f"{e}" for e in engines] + [f"{SHORT[e]} / hmix" for e in peers]
            + [f"peak MB ({names})", f"−2 logLik ({names})"])  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, rs in results.items():
        h = rs.get("hmix")
        row = [model] + [fmt_time(rs.get(e)) for e in engines] + [fmt_ratio(rs.get(e), h) for e in peers]
        row += [cell(rs, "peak_mb", "{:.0f}", engines), cell(rs, "objective", "{:.4f}", engines)]
        lines.append("| " + " | ".join(row) + " |")
    reps = ", ".join(f"{m} {next((r['repeats'] for r in rs.values() if r and r['status'] == 'ok'), '?')}"
                     for m, rs in results.items())  # fmt: skip
    foot = (
        f"\nMedian wall time of one maximum-likelihood fit after one untimed warm-up fit, each engine in "
        f"its own process (timed fits: {reps}); statsmodels capped at {cap:.0f} s per fit. "
        f"{machine['cpu']}, {machine['usable_cpus']} CPUs, Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in vers.items() if v not in ("not installed",))
        + "."
    )
    return "\n".join(lines) + "\n" + foot + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--repeats",
        type=int,
        help="timed fits per engine and model (default: 25 for the small LMMs, 3 for InstEval, 11 for GLMMs)",
    )
    ap.add_argument("--quick", action="store_true", help="one timed fit, no statsmodels")
    ap.add_argument("--only", help="model name(s), comma-separated: " + ", ".join(MODELS))
    ap.add_argument(
        "--engines", default=",".join(ENGINES), help="comma-separated subset of " + ",".join(ENGINES)
    )
    ap.add_argument(
        "--cap", type=float, default=120.0, help="statsmodels: seconds allowed per fit (default 120)"
    )
    ap.add_argument("--timeout", type=float, default=1800.0, help="other engines: seconds allowed per fit")
    args = ap.parse_args()

    models = list(MODELS)
    if args.only:
        models = [m.strip() for m in args.only.split(",")]
        bad = [m for m in models if m not in MODELS]
        if bad:
            ap.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    engines = [e for e in ENGINES if e in args.engines.split(",")]
    if "hmix" not in engines:
        engines.insert(0, "hmix")

    machine = machine_info()
    print(f"{machine['cpu']}, {machine['usable_cpus']} CPUs, Python {machine['python']}", flush=True)
    results: dict[str, dict[str, dict | None]] = {}
    for model in models:
        reps_model = 1 if args.quick else (args.repeats or MODELS[model]["repeats"])
        results[model] = {}
        for engine in engines:
            reps = min(reps_model, MODELS[model].get("engine_repeats", {}).get(engine, reps_model))
            if engine not in MODELS[model].get("engines", DEFAULT_ENGINES):
                results[model][engine] = None
                continue
            if engine == "statsmodels" and args.quick:
                results[model][engine] = None
                continue
            cap = args.cap if engine == "statsmodels" else args.timeout
            r = run_engine(engine, model, reps, cap)
            results[model][engine] = r
            obj = f"{r['objective']:.6f}" if r["status"] == "ok" else r.get("note", "")
            print(f"{model:12s} {engine:12s} {fmt_time(r):>12s}  {obj}", flush=True)
            if r["status"] == "error":
                print(
                    "    " + r["stderr"].strip().splitlines()[-1] if r["stderr"].strip() else "", flush=True
                )

    vers = versions(results)
    md = table(results, engines, machine, vers, args.cap)
    print("\n" + md)
    (HERE / "results.md").write_text(md)
    settings = {"argv": sys.argv[1:], "quick": args.quick, "repeats": args.repeats, "cap_s": args.cap,
                "timeout_s": args.timeout, "engines": engines, "models": models}  # fmt: skip
    payload = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine, "versions": vers,
               "settings": settings, "results": results, "table": md}  # fmt: skip
    (HERE / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
