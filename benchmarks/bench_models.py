"""Benchmark the engine on every torchvision classification family, plus a scaling run.

    python benchmarks/bench_models.py                 # every family, then the scaling run
    python benchmarks/bench_models.py resnet18 vit_b_16 --no-scaling
    python benchmarks/bench_models.py --only-scaling

Per model (224x224, random non-trivial weights, batch 1, float32, CPU): analysis time (trace +
groups, and the shape probe separately), 50% prune time (plan + prune), params / FLOPs / latency
before and after, and the oracle's verdict. Each model runs in its own interpreter with an
address-space cap and a timeout, so one blow-up costs one row. Writes benchmarks/results.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from helpers import run_isolated, to_jsonable  # noqa: E402

MODELS = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "densenet121", "vgg11_bn",
    "alexnet", "squeezenet1_0", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "mnasnet0_5", "shufflenet_v2_x0_5", "efficientnet_b0",
    "efficientnet_v2_s", "regnet_y_400mf", "regnet_x_400mf", "convnext_tiny", "vit_b_16", "swin_t",
    "maxvit_t",
]


# ------------------------------------------------------------------------------------------------
# child-process bodies


def bench_one(name: str, size: int = 224, ratio: float = 0.5, latency_runs: int = 5) -> dict:
    import torch

    from core.errors import PruneStudioError
    from core.pipeline import analyze_model, prune_model
    from core.plan.planner import PlanSettings
    from core.analysis.probe import probe_groups
    from core.prune.verify import verify_plan
    from helpers import randomize
    from tv_cases import build

    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    model = randomize(build(name, num_classes=1000), 0, inputs=x)
    r = {"model": name, "size": size, "status": "ok"}
    t0 = time.perf_counter()
    dg = analyze_model(model, x, probe=False)
    r["analysis_s"] = time.perf_counter() - t0
    r["trace_s"], r["groups_s"] = dg.seconds["trace"], dg.seconds["groups"]
    t0 = time.perf_counter()
    broken = probe_groups(model, x, dg)
    r["probe_s"] = time.perf_counter() - t0
    r["probe_blocked"] = len(broken)
    r["nodes"] = dg.graph.number_of_nodes()
    r["groups"] = len(dg.groups)
    r["prunable_groups"] = len(dg.prunable_groups)
    r["blocked_ops"] = dg.blocked_ops
    try:
        res = prune_model(model, x, dg, PlanSettings(ratio=ratio), latency=True,
                          latency_runs=latency_runs, verify=False)
    except PruneStudioError as e:
        r["status"] = f"{type(e).__name__}: {e}"
        return to_jsonable(r)
    # the oracle, float32 (what the user gets) and float64 (well-conditioned: pruning half the
    # channels early puts later BatchNorm statistics off, and deep nets turn float32 rounding into
    # large differences between two correct models)
    t0 = time.perf_counter()
    v32 = verify_plan(model, x, dg, res.plan, pruned=res.model)
    res.seconds["verify"] = time.perf_counter() - t0
    v = verify_plan(copy.deepcopy(model).double(), x.double(), dg, res.plan, tolerance=1e-6)
    res.verify = v
    r["rel_diff_f32"] = v32.max_rel_diff
    r["passed_f32"] = v32.passed
    if not v.passed:
        r["status"] = f"MISMATCH (float64): {v.message}"
    r["prune_s"] = res.seconds["plan"] + res.seconds["prune"]
    r["verify_s"] = res.seconds.get("verify")
    r["params"] = [res.before.params, res.after.params]
    r["flops"] = [res.before.flops, res.after.flops]
    r["latency_ms"] = [res.before.latency_ms, res.after.latency_ms]
    v = res.verify
    r["exact"] = v.expected_exact
    r["max_rel_diff"] = v.max_rel_diff
    r["approx_reasons"] = v.approximate_reasons[:3]
    r["verify"] = v.message
    with torch.no_grad():
        y = res.model(x)
    if tuple(y.shape) != (1, 1000) or not torch.isfinite(y).all():
        r["status"] = f"bad pruned output {tuple(y.shape)}"
    if res.after.flops >= res.before.flops:
        r["status"] = "FLOPs did not go down"
    return to_jsonable(r)


def scale_one(kind: str, arg: list, probe: bool = True) -> dict:
    """Analysis of one scaling point on the meta device (engine cost only, no arithmetic)."""
    import torch
    import torchvision

    from core.pipeline import analyze_model

    with torch.device("meta"):
        if kind == "resnet":
            model = getattr(torchvision.models, f"resnet{arg[0]}")()
            label = f"resnet{arg[0]}"
        else:
            layers, width = arg
            model = torchvision.models.VisionTransformer(
                image_size=224, patch_size=16, num_layers=layers, num_heads=max(1, width // 64),
                hidden_dim=width, mlp_dim=4 * width)
            label = f"vit L{layers} D{width}"
        x = torch.randn(1, 3, 224, 224)
    model.eval()
    t0 = time.perf_counter()
    dg = analyze_model(model, x, probe=False)
    an = time.perf_counter() - t0
    t0 = time.perf_counter()
    if probe:
        from core.analysis.probe import probe_groups
        probe_groups(model, x, dg)
    pr = time.perf_counter() - t0
    return {"label": label, "nodes": dg.graph.number_of_nodes(), "groups": len(dg.groups),
            "prunable": len(dg.prunable_groups), "analysis_s": an, "trace_s": dg.seconds["trace"],
            "groups_s": dg.seconds["groups"], "probe_s": pr}


# ------------------------------------------------------------------------------------------------
# driver


def fmt_n(v: float) -> str:
    for unit, d in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= d:
            return f"{v / d:.2f}{unit}"
    return f"{v:.0f}"


def run_models(names, timeout, mem_gb, size):
    rows = []
    for n in names:
        t0 = time.perf_counter()
        try:
            r = run_isolated("bench_models", "bench_one", {"name": n, "size": size},
                             timeout=timeout, mem_gb=mem_gb)
        except AssertionError as e:
            msg = str(e).strip().splitlines()
            r = {"model": n, "status": "CRASH: " + (msg[-1] if msg else "?")[:300], "detail": str(e)}
        r["wall_s"] = time.perf_counter() - t0
        rows.append(r)
        if "params" in r:
            print(f"{n:20s} nodes {r['nodes']:5d} groups {r['groups']:4d}/{r['prunable_groups']:4d}  "
                  f"trace+groups {r['analysis_s']:6.2f}s probe {r['probe_s']:6.2f}s "
                  f"prune {r['prune_s']:6.2f}s verify {r['verify_s']:6.2f}s | "
                  f"params {fmt_n(r['params'][0])}->{fmt_n(r['params'][1])} "
                  f"FLOPs {fmt_n(r['flops'][0])}->{fmt_n(r['flops'][1])} "
                  f"latency {r['latency_ms'][0]:.1f}->{r['latency_ms'][1]:.1f} ms | "
                  f"{'exact' if r['exact'] else 'approx'} rel f64 {r['max_rel_diff']:.2g} "
                  f"f32 {r['rel_diff_f32']:.2g} | {r['status']}",
                  flush=True)
        else:
            print(f"{n:20s} {r['status']}", flush=True)
    return rows


def run_scaling(timeout, mem_gb):
    points = [("resnet", [d]) for d in (18, 34, 50, 101, 152)]
    points += [("vit", [L, 384]) for L in (2, 4, 8, 12, 24)]
    points += [("vit", [6, D]) for D in (192, 384, 768, 1024)]
    rows = []
    for kind, arg in points:
        try:
            r = run_isolated("bench_models", "scale_one", {"kind": kind, "arg": arg},
                             timeout=timeout, mem_gb=mem_gb)
        except AssertionError as e:
            r = {"label": f"{kind} {arg}", "error": str(e).splitlines()[-1][:200]}
        rows.append(r)
        if "nodes" in r:
            per = 1000 * r["analysis_s"] / max(r["nodes"], 1)
            print(f"{r['label']:16s} nodes {r['nodes']:5d} groups {r['groups']:4d} "
                  f"trace+groups {r['analysis_s']:6.2f}s ({per:.2f} ms/node) probe {r['probe_s']:6.2f}s",
                  flush=True)
        else:
            print(f"{r['label']:16s} ERROR {r['error']}", flush=True)
    return rows


def write_markdown(path, rows, scaling, size):
    import torch

    L = ["# PruneStudio engine: torchvision support table", "",
         f"Generated by `benchmarks/bench_models.py` on {time.strftime('%Y-%m-%d %H:%M')} "
         f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
         f"{torch.__version__}, no GPU). Input 1x3x{size}x{size} float32, random non-trivial weights, "
         "uniform 50% channel ratio, L2 importance; *exact* = the engine declared the plan exact "
         "and the zeroed-group oracle agrees to 1e-6 relative in float64 (the float32 difference "
         "is shown too: deep BatchNorm nets are ill-conditioned once half the channels are gone); *approximate* = the engine flagged "
         "groups whose removal cannot be exact (reasons listed).", "",
         "| model | groups | prunable groups | FLOPs before -> after | params before -> after | "
         "exact/approximate | status |",
         "|---|---:|---:|---|---|---|---|"]
    for r in rows:
        if "params" in r:
            ex = "exact" if r["exact"] else "approximate"
            L.append(f"| {r['model']} | {r['groups']} | {r['prunable_groups']} | "
                     f"{fmt_n(r['flops'][0])} -> {fmt_n(r['flops'][1])} "
                     f"(-{100 * (1 - r['flops'][1] / r['flops'][0]):.0f}%) | "
                     f"{fmt_n(r['params'][0])} -> {fmt_n(r['params'][1])} "
                     f"(-{100 * (1 - r['params'][1] / r['params'][0]):.0f}%) | {ex} "
                     f"(rel diff f64 {r['max_rel_diff']:.1e}, f32 {r['rel_diff_f32']:.1e}) | {r['status']} |")
        else:
            L.append(f"| {r['model']} | {r.get('groups', '-')} | {r.get('prunable_groups', '-')} | - | - "
                     f"| - | {r['status'].replace('|', '/')} |")
    L += ["", "## Timings (seconds)", "",
          "| model | nodes | trace+groups | probe | plan+prune | verify | latency before -> after (ms) |",
          "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "params" in r:
            L.append(f"| {r['model']} | {r['nodes']} | {r['analysis_s']:.2f} | {r['probe_s']:.2f} | "
                     f"{r['prune_s']:.2f} | {r['verify_s']:.2f} | "
                     f"{r['latency_ms'][0]:.1f} -> {r['latency_ms'][1]:.1f} |")
    approx = [r for r in rows if r.get("approx_reasons")]
    if approx:
        L += ["", "## Approximation reasons (first ones per model)", ""]
        for r in approx:
            L.append(f"- **{r['model']}**: " + "; ".join(r["approx_reasons"]))
    if scaling:
        L += ["", "## Scaling (meta device: engine cost only)", "",
              "| model | nodes | groups | trace+groups (s) | ms / node | probe (s) |",
              "|---|---:|---:|---:|---:|---:|"]
        for r in scaling:
            if "nodes" in r:
                L.append(f"| {r['label']} | {r['nodes']} | {r['groups']} | {r['analysis_s']:.2f} | "
                         f"{1000 * r['analysis_s'] / max(r['nodes'], 1):.2f} | {r['probe_s']:.2f} |")
            else:
                L.append(f"| {r['label']} | - | - | - | - | {r['error']} |")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=None)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--mem-gb", type=float, default=12)
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--only-scaling", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results.md"))
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"))
    a = ap.parse_args(argv)
    rows = [] if a.only_scaling else run_models(a.models or MODELS, a.timeout, a.mem_gb, a.size)
    scaling = [] if a.no_scaling else run_scaling(a.timeout, a.mem_gb)
    write_markdown(a.out, rows, scaling, a.size)
    with open(a.json, "w") as f:
        json.dump({"models": rows, "scaling": scaling}, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
