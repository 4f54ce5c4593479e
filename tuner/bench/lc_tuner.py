#!/usr/bin/env python3
"""lc_tuner.py - run `tuner stdio` schedulers on LCSim beside the anchors of hpo_lc_bench.py.

LCSim itself (curves, noise, optimum, incumbent tracking, summary tables) is imported from
shared/bench/hpo_lc_bench.py, so our methods see exactly the curves the anchors see: trial
`i` of seed `s` draws its noise from default_rng([s, i]) in both.

Methods (comma-separated, mixed freely in one run):
    ref:ray_asha, ref:asha_promotion, optuna:<sampler>+<pruner>   anchors, run by hpo_lc_bench.py
    tuner:<sampler>+<scheduler>[+mf]                             ours, via `tuner stdio`
        sampler   random | qmc | tpe | gp | auto
        scheduler fifo | asha | asha_promote | hyperband | hyperband_promote | median
        +mf       BOHB-like multi-fidelity model (sampler learns from the highest rung with data);
                  +mfN the same with at least N points per modelled rung
        +rN, +etaN  ASHA min_resource N (default 1) and reduction factor N (default 3)
        +lcx      judge trials at rungs (and model them in +mf) by the value their learning curve
                  extrapolates to at R (tuner/src/curve.rs) instead of their value at the rung

    OMP_NUM_THREADS=1 python3 tuner/bench/lc_tuner.py --variant easy --seeds 20 \
        --methods 'optuna:random+full,optuna:tpe+full,ref:asha_promotion,tuner:tpe+hyperband_promote+mf'

Protocol used (extension of hpo_bench.py's; see tuner/src/bin/tuner.rs): `next_job` returns a
new trial or a resumed one (`resume_from`, `until`); every trained epoch is reported with
`report` and the reply's decision is obeyed: continue, stop (pruned, or complete at R), pause
(promotion ASHA: the worker checkpoints and leaves; a later `next_job` may resume it).
Compute is counted in epochs, resumed trials pay only the epochs past their checkpoint, and
the budget is checked before each job, as hpo_lc_bench.py does.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LC = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "bench"))
sys.path.insert(0, os.environ.get("LC_BENCH_DIR", DEFAULT_LC))
import hpo_lc_bench as lc  # noqa: E402
import numpy as np  # noqa: E402

TUNER = os.environ.get("TUNER_BIN", "/work/target-tuner/release/tuner")


def space_json():
    out = {}
    for k, s in lc.SPACE.items():
        if s[0] == "cat":
            out[k] = {"type": "categorical", "choices": list(s[1])}
        else:
            out[k] = {"type": s[0], "low": s[1], "high": s[2], "log": s[3]}
    return out


class Child:
    def __init__(self, sampler):
        self.p = subprocess.Popen(shlex.split(f"{TUNER} stdio --sampler {sampler}"), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)

    def rpc(self, msg):
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        if "error" in r:
            raise RuntimeError(r["error"])
        return r

    def close(self):
        self.rpc({"op": "close"})
        self.p.wait(timeout=30)


def run_tuner(method, seed, budget):
    sampler, sched, *rest = method.split("+")
    R = lc.R
    # options: mf (BOHB-like model), mfN (mf with min_points N), rN (min_resource), etaN
    opt = {"r": 1, "eta": lc.ETA}
    mf = False
    for o in rest:
        if o == "mf":
            mf = True
        elif o == "lcx":
            opt["extrapolate"] = True
        elif o.startswith("mf"):
            mf = {"min_points": int(o[2:])}
        elif o.startswith("eta"):
            opt["eta"] = int(o[3:])
        elif o.startswith("r"):
            opt["r"] = int(o[1:])
    child = Child(sampler)
    child.rpc({"op": "init", "space": space_json(), "seed": seed, "direction": "minimize",
               "n_trials": int(budget // R),
               "scheduler": {"type": sched, "min_resource": opt["r"], "max_resource": R,
                             "reduction_factor": opt["eta"], "extrapolate": opt.get("extrapolate", False)},
               "multi_fidelity": mf})
    tr = lc.Tracker()
    curves = {}
    t_tuner = 0.0
    while tr.compute < budget:
        t0 = time.perf_counter()
        job = child.rpc({"op": "next_job"})
        t_tuner += time.perf_counter() - t0
        tid = job["trial_id"]
        if tid not in curves:
            curves[tid] = lc.observed_curve(job["params"], np.random.default_rng([seed, tid]))
            tr.n_trials += 1
        y, etrue = curves[tid]
        start = job["resume_from"] or 0
        for t in range(start + 1, R + 1):
            tr.compute += 1
            t0 = time.perf_counter()
            d = child.rpc({"op": "report", "trial_id": tid, "step": t, "value": float(y[t - 1])})
            t_tuner += time.perf_counter() - t0
            if d["decision"] == "continue":
                continue
            if d["decision"] == "pause":
                break
            # stop: complete at R, otherwise pruned
            if t >= R:
                break
            child.rpc({"op": "tell", "trial_id": tid, "state": "pruned"})
            break
        if t >= R and d["decision"] != "pause":
            # trained to R (a scheduler without milestones, e.g. FIFO, answers continue there)
            child.rpc({"op": "tell", "trial_id": tid, "value": float(y[-1])})
            tr.finish(float(y[-1]), etrue)
    child.close()
    return tr, t_tuner


def job(method, seed, budget, variant):
    if not method.startswith("tuner:"):
        return lc.seq_job(method, seed, budget, variant)
    lc.set_variant(variant)
    t0 = time.perf_counter()
    tr, tt = run_tuner(method[6:], seed, budget)
    return {"method": method, "seed": seed, "events": tr.events, "n_trials": tr.n_trials, "n_full": tr.n_full,
            "compute": tr.compute, "wall_s": time.perf_counter() - t0, "sampler_pruner_s": tt}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", required=True)
    ap.add_argument("--variant", default="easy", choices=sorted(lc.VARIANTS))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds are first-seed .. first-seed+seeds-1 (0: the seeds of hpo_lc_bench.py)")
    ap.add_argument("--budget", type=float, default=50)
    ap.add_argument("--checkpoints", default="5,8,10,25,50")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    lc.set_variant(a.variant)
    fstar = lc.find_optimum()[0]
    budget = a.budget * lc.R
    jobs = [(m, s, budget, a.variant) for m in a.methods.split(",") for s in range(a.first_seed, a.first_seed + a.seeds)]
    res, t0 = [], time.time()
    with ProcessPoolExecutor(max_workers=a.workers) as ex:
        futs = [ex.submit(job, *j) for j in jobs]
        for i, f in enumerate(as_completed(futs)):
            res.append(f.result())
            if (i + 1) % 20 == 0:
                print(f"[{time.time() - t0:5.0f}s] {i + 1}/{len(jobs)}", file=sys.stderr, flush=True)
    xs = [float(x) for x in a.checkpoints.split(",")]
    rows = lc.summarize(res, [x * lc.R for x in xs], 0, fstar)
    for r in rows:
        for x in xs:
            r[x] = r.pop(x * lc.R)
    order = {m: i for i, m in enumerate(a.methods.split(","))}
    rows.sort(key=lambda r: order[r["method"]])
    print(f"variant = {a.variant}; optimum e* = {fstar:.5f}; budget = {a.budget} x R (R = {lc.R} epochs); "
          f"regret = true e(R) of incumbent - e*; seeds = {a.seeds} (from {a.first_seed})")
    lc.print_rows(rows, xs, "R")
    # Compute needed to reach the median regret of random-full at the full budget.
    by = {}
    for r in res:
        by.setdefault(r["method"], []).append(r)
    rf = by.get("optuna:random+full")
    if rf:
        target = float(np.median([lc.incumbent_at(r["events"], budget) - fstar for r in rf]))
        print(f"\nrandom-full@{a.budget:g}R median regret = {target:.4f}; compute (R) at which each method's median "
              f"incumbent regret first reaches it:")
        for m in order:
            rs = by[m]
            grid = np.arange(0.25, a.budget + 1e-9, 0.25)
            # a seed with no full training yet counts as infinite regret
            med = [np.median(np.nan_to_num([lc.incumbent_at(r["events"], g * lc.R) - fstar for r in rs], nan=np.inf))
                   for g in grid]
            hit = next((g for g, v in zip(grid, med) if v <= target), None)
            print(f"  {m}: {'not reached' if hit is None else f'{hit:g} R'}")
    for r in rows:
        if "sampler_pruner_ms_per_trial" in r:
            print(f"  {r['method']}: sampler+scheduler overhead {r['sampler_pruner_ms_per_trial']:.2f} ms/trial")
    if a.out:
        json.dump({"fstar": fstar, "rows": [{str(k): v for k, v in r.items()} for r in rows], "raw": res,
                   "args": vars(a)}, open(a.out, "w"), default=str)


if __name__ == "__main__":
    main()
