#!/usr/bin/env python3
"""Summarise an hpo_bench.py --out JSON into the tuner tables of BENCHMARKS.md.

    python3 tuner/bench/report_hpo.py /path/to/results.json

Prints median regret@100 [IQR] and ms/trial per benchmark and sampler, then checks the
targets for the `auto` sampler against Optuna TPE and Optuna GP from the same file.
"""
import json
import sys

import numpy as np


def short(spec):
    if spec.startswith("subprocess:"):
        return "ours " + spec.split("--sampler")[-1].strip()
    return spec


def fmt(x):
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def main():
    d = json.load(open(sys.argv[1]))
    rows = {}
    for r in d["summary"]:
        rows[(r["bench"], short(r["sampler"]))] = r
    benches = sorted({b for b, _ in rows})
    samplers = ["optuna:gp", "optuna:tpe", "ours auto", "ours gp", "ours tpe"]
    samplers = [s for s in samplers if any((b, s) in rows for b in benches)]
    print("| bench | sampler | seeds | regret@25 | regret@50 | regret@100 median [IQR] | ms/trial mean | ms/trial last 10 |")
    print("|---|---|---|---|---|---|---|---|")
    for b in benches:
        for s in samplers:
            r = rows.get((b, s))
            if not r:
                continue
            m = r["@100"]
            print(f"| {b} | {s} | {r['n_seeds']} | {fmt(r['@25'][0])} | {fmt(r['@50'][0])} | {fmt(m[0])} [{fmt(m[1])}, {fmt(m[2])}] "
                  f"| {r['overhead_ms_mean']:.1f} | {r['overhead_ms_last10']:.1f} |")
    print()
    print("| bench | ours auto | Optuna TPE | auto <= TPE | Optuna GP | auto <= GP | auto ms/trial mean (last 10) |")
    print("|---|---|---|---|---|---|---|")
    n_gp = 0
    for b in benches:
        a, t, g = rows.get((b, "ours auto")), rows.get((b, "optuna:tpe")), rows.get((b, "optuna:gp"))
        if not (a and t and g):
            continue
        ok_t = a["@100"][0] <= t["@100"][0]
        ok_g = a["@100"][0] <= g["@100"][0]
        n_gp += ok_g
        print(f"| {b} | {fmt(a['@100'][0])} | {fmt(t['@100'][0])} | {'yes' if ok_t else 'NO'} | {fmt(g['@100'][0])} | "
              f"{'yes' if ok_g else 'no'} | {a['overhead_ms_mean']:.1f} ({a['overhead_ms_last10']:.1f}) |")
    print(f"\nauto <= Optuna GP on {n_gp} of {len(benches)} benchmarks; wall time of the whole run {d.get('wall_s', 0):.0f} s")


if __name__ == "__main__":
    main()
