"""Real speed-up, measured honestly (interleaved, same inputs, fixed threads).

    python benchmarks/bench_latency.py flops [resnet50:1 resnet50:8 mobilenet_v2:8 vit_b_16:1 convnext_tiny:1]
    python benchmarks/bench_latency.py latency [resnet50:1 mobilenet_v2:8]
    python benchmarks/bench_latency.py gui [vit_b_16:1]
    options: --threads 2 --pairs 12 --budget 60 --json out.json

``flops``: prune to ``--target-flops 0.5`` with round-to 1 and round-to auto, then time the
original and both pruned models interleaved (O, P1, Pa, O, P1, Pa, ...): the measured speed-up
against the FLOPs reduction (the goal: speed-up >= 0.9 x FLOPs reduction with the default settings).

``latency``: prune to ``--target-latency 0.5`` (tables measured here) and to the FLOPs target whose
plan the same tables estimate at the same latency; time the three interleaved; report the
measured latency reduction (goal: within +-5 % of the target) and the importance mass each plan
keeps (per group, scores normalised to mean 1 - the knapsack's own currency).

``gui``: the window's pruning job (gui.jobs.session.prune, latency on, ``--target-flops 0.5``) on
a loaded and analysed model, twice: seconds per prune and per phase (goal: ViT-B/16 <= 15 s).

Random non-trivial weights (tests/helpers.randomize), float32, CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def build(name: str, batch: int):
    import torch
    import torchvision

    from helpers import randomize
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    return randomize(getattr(torchvision.models, name)(), 0, inputs=x).eval(), x


def interleaved(models: list, x, threads: int, pairs: int, budget: float) -> list:
    """[(median, q1, q3, runs)] per model, run in turns after two warm-ups of each."""
    import torch

    from core.metrics.timing import eval_no_grad, fixed_threads, quartiles, timer
    tick = timer(torch.device("cpu"))
    times = [[] for _ in models]
    with fixed_threads(threads), eval_no_grad(*models):
        for m in models:
            m(x)
            m(x)
        t0 = time.perf_counter()
        for i in range(pairs):
            for k, m in enumerate(models):
                times[k].append(tick(lambda m=m: m(x)))
            if i >= 4 and time.perf_counter() - t0 > budget:
                break
    return [(*quartiles(t), len(t)) for t in times]


def prune(model, x, dg, **settings):
    from core.pipeline import prune_model
    from core.plan.planner import PlanSettings
    s = PlanSettings(**{"ratio": None, **settings})
    return prune_model(model, x, dg, s, latency=False, verify=False)


def mass_kept(dg, model, plan) -> float:
    """Share of the importance (per group normalised to mean 1) that the plan keeps."""
    import numpy as np

    from core.plan.criteria import group_scores
    scores = group_scores(dg, model, "l2", None, 0)
    total = kept = 0.0
    for g in dg.prunable_groups:
        s = np.abs(np.asarray(scores[g.id], float))
        s = s / (s.mean() or 1.0)
        rm = plan.removed.get(g.id, [])
        total += s.sum()
        kept += s.sum() - s[rm].sum()
    return kept / total


def bench_flops(name, batch, threads, pairs, budget) -> dict:
    from core.metrics.widths import best_multiple
    from core.pipeline import analyze_model
    model, x = build(name, batch)
    dg = analyze_model(model, x, probe=False)
    auto, _ = best_multiple("cpu", threads)
    r1 = prune(model, x, dg, target_flops=0.5, round_to=1)
    ra = prune(model, x, dg, target_flops=0.5, round_to=auto)
    (o, *_), (p1, *_), (pa, *_) = t = interleaved([model, r1.model, ra.model], x, threads, pairs, budget)
    return {"model": name, "batch": batch, "threads": threads, "auto_multiple": auto,
            "flops_x": [r1.before.flops / r1.after.flops, ra.before.flops / ra.after.flops],
            "speedup": [o / p1, o / pa], "timings": t}


def bench_latency(name, batch, threads, pairs, budget) -> dict:
    from core.metrics.tables import table_for
    from core.pipeline import analyze_model, cost_model, sizes
    from core.plan.latency import estimate_ms
    from core.plan.planner import PlanSettings, make_plan
    model, x = build(name, batch)
    dg = analyze_model(model, x, probe=False)
    t0 = time.perf_counter()
    table, _ = table_for(model, x, threads)
    t_tables = time.perf_counter() - t0
    cost = cost_model(dg, model, x, sizes(model, x, memory=False).flops)
    cost.latency = table
    lat_plan = make_plan(dg, model, PlanSettings(ratio=None, target_latency=0.5), cost=cost)
    est = estimate_ms(table, lat_plan.kept_indices(dg))
    lo, hi = 0.0, 0.95  # the FLOPs target the tables put at the same latency
    for _ in range(12):
        mid = (lo + hi) / 2
        fp = make_plan(dg, model, PlanSettings(ratio=None, target_flops=mid), cost=cost)
        if estimate_ms(table, fp.kept_indices(dg)) > est:
            lo = mid
        else:
            hi = mid
    from core.prune.apply import apply_kept
    pl, pf = apply_kept(model, lat_plan.kept_indices(dg)), apply_kept(model, fp.kept_indices(dg))
    (o, *_), (ml, *_), (mf, *_) = t = interleaved([model, pl, pf], x, threads, pairs, budget)
    return {"model": name, "batch": batch, "threads": threads, "tables_s": t_tables,
            "estimated_reduction": 1 - est / table.base_ms, "measured_reduction": 1 - ml / o,
            "flops_target_same_latency": mid, "flops_plan_measured_reduction": 1 - mf / o,
            "mass_kept": {"latency_plan": mass_kept(dg, model, lat_plan),
                          "flops_plan": mass_kept(dg, model, fp)}, "timings": t}


def bench_gui(name, batch, threads, pairs, budget) -> dict:
    from core.plan.planner import PlanSettings
    from gui.jobs import session as sess
    s = sess.load_and_analyse(f"torchvision:{name}", f"{batch},3,224,224")
    out = {"model": name, "batch": batch, "analyse_s": s.seconds}
    for k in ("first", "second"):
        t0 = time.perf_counter()
        r = sess.prune(s, PlanSettings(ratio=None, target_flops=0.5), threads=threads)
        out[k] = {"seconds": time.perf_counter() - t0, "phases": r.seconds,
                  "before_ms": r.before.latency_ms, "after_ms": r.after.latency_ms,
                  "runs": r.after.latency_runs, "stop": [r.before.latency_stop, r.after.latency_stop]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["flops", "latency", "gui"])
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    default = {"flops": ["resnet50:1", "resnet50:8", "mobilenet_v2:8", "vit_b_16:1", "convnext_tiny:1"],
               "latency": ["resnet50:1", "mobilenet_v2:8"], "gui": ["vit_b_16:1"]}[a.mode]
    rows = []
    for case in a.cases or default:
        name, _, b = case.partition(":")
        fn = {"flops": bench_flops, "latency": bench_latency, "gui": bench_gui}[a.mode]
        t0 = time.perf_counter()
        from core.errors import PruneStudioError
        try:
            r = fn(name, int(b or 1), a.threads, a.pairs, a.budget)
        except PruneStudioError as e:  # e.g. a latency target the tables say is out of reach
            r = {"model": name, "batch": int(b or 1), "error": str(e)}
        r["seconds"] = time.perf_counter() - t0
        rows.append(r)
        print(json.dumps(r), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
