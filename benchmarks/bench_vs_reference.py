"""This project against Torch-Pruning (the reference), side by side, one interpreter per model.

    pip install -e .[bench]                                # torch-pruning==1.6.1
    python benchmarks/bench_vs_reference.py               # the eight models of issue 14
    python benchmarks/bench_vs_reference.py resnet18 vit_b_16
    python benchmarks/bench_vs_reference.py --all         # every torchvision classifier
    python benchmarks/bench_vs_reference.py --scaling     # ResNet-18 -> 152, ViT depth 2 -> 48

Per model: the same seeded random model, 1 thread, input 1x3x224x224, median of ``--repeat`` (3)
runs; ours and theirs alternate inside one process so machine load hits both alike (each side
first in every other round)
(``--clock cpu`` times process CPU time instead of wall time: steadier on a shared machine).
``--best-of N`` reports the minimum over N interleaved rounds instead of the median: on a loaded
machine a run's best time is the one least disturbed, for both sides alike, so small models'
ratios (tens of milliseconds) move much less than with a median.

    python benchmarks/bench_vs_reference.py mnasnet0_5 mobilenet_v3_small --clock cpu --best-of 20

* analysis - ours: ``analyze_model`` (trace + groups + shape probe: what the GUI and the CLI do
  before showing groups); theirs: ``DependencyGraph().build_dependency`` + ``get_all_groups``.
* prune - ours: analysis + plan at ratio 0.5 (L2) + physical prune of a copy; theirs:
  ``MetaPruner(ratio 0.5, L2)`` construction (which builds its graph) + ``step()`` on a copy.

Both leave the classifier's output alone (ours: the output is blocked; theirs: ignored_layers).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODELS = ["resnet50", "densenet121", "vit_b_16", "convnext_tiny", "mobilenet_v2",
          "efficientnet_b0", "resnet18", "regnet_y_400mf"]
SCALING = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] + \
    [f"vit_depth{d}" for d in (2, 6, 12, 24, 48)]


def _build(name: str):
    import torch
    import torchvision

    if name.startswith("vit_depth"):
        from torchvision.models.vision_transformer import VisionTransformer
        depth = int(name[len("vit_depth"):])
        return VisionTransformer(224, 16, depth, 12, 768, 3072).eval()
    kw = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=False)
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(**kw).eval()


def _head(model):
    """The final classifier layer (the reference must be told to leave it alone)."""
    import torch
    last = None
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            last = m
    return [last] if last is not None else []


def _ours_analysis(model, x):
    from core.pipeline import analyze_model
    return analyze_model(model, x)


def _ours_prune(model, x):
    from core.pipeline import analyze_model
    from core.plan.planner import PlanSettings, make_plan
    from core.prune.apply import apply_kept
    dg = analyze_model(model, x)
    plan = make_plan(dg, model, PlanSettings(ratio=0.5))
    return apply_kept(model, plan.kept_indices(dg))


def _ref_analysis(model, x):
    import torch_pruning as tp
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    return list(dg.get_all_groups(ignored_layers=_head(model)))


def _ref_prune(model, x):
    import torch_pruning as tp
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=_head(model))
    pruner.step()
    return model


def child(name: str, repeat: int, size: int, clock: str = "wall", best: bool = False) -> dict:
    import copy

    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, ROOT)
    # process CPU time is what to compare on a shared, loaded machine (one thread either way)
    now = time.process_time if clock == "cpu" else time.perf_counter
    model = _build(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    times = {k: [] for k in ("ours_analysis", "ref_analysis", "ours_prune", "ref_prune")}
    err = {}
    # one warm-up of each (imports, lazy registries), not timed
    for key, fn, fresh in (("ours_analysis", _ours_analysis, False),
                           ("ref_analysis", _ref_analysis, False),
                           ("ours_prune", _ours_prune, False), ("ref_prune", _ref_prune, True)):
        try:
            fn(copy.deepcopy(model) if fresh else model, x)
        except Exception as e:  # noqa: BLE001 - a model one side cannot handle is a row, not a crash
            err[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    runs = (("ours_analysis", _ours_analysis, False), ("ref_analysis", _ref_analysis, False),
            ("ours_prune", _ours_prune, False), ("ref_prune", _ref_prune, True))
    swapped = (runs[1], runs[0], runs[3], runs[2])
    for i in range(repeat):
        # each side goes first in every other round: in a fixed order one side's analysis always
        # follows the other's prune (the most memory churned) and pays for the evicted caches
        for key, fn, fresh in runs if i % 2 == 0 else swapped:
            if key in err:
                continue
            m = copy.deepcopy(model) if fresh else model  # the reference prunes in place
            t0 = now()
            fn(m, x)
            times[key].append(now() - t0)
    out = {"model": name, "errors": err, "statistic": "min" if best else "median"}
    for k, v in times.items():
        out[k] = (min(v) if best else statistics.median(v)) if v else None
    return out


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def _fmt(v):
    return f"{v:.3f}" if v is not None else "fail"


def run(names, repeat, size, timeout, clock="wall", best=False):
    rows = []
    print("| model | analysis ours / ref (s) | ratio | prune ours / ref (s) | ratio |")
    print("|---|---|---|---|---|")
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--repeat", str(repeat),
               "--size", str(size), "--clock", clock] + (["--best"] if best else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            r = json.loads(p.stdout.strip().splitlines()[-1])
        except Exception as e:  # noqa: BLE001
            print(f"| {name} | failed: {type(e).__name__} | | | |", flush=True)
            continue
        rows.append(r)
        note = f" ({'; '.join(f'{k}: {v}' for k, v in r['errors'].items())})" if r["errors"] else ""
        print(f"| {name} | {_fmt(r['ours_analysis'])} / {_fmt(r['ref_analysis'])} | "
              f"{_ratio(r['ours_analysis'], r['ref_analysis'])} | {_fmt(r['ours_prune'])} / "
              f"{_fmt(r['ref_prune'])} | {_ratio(r['ours_prune'], r['ref_prune'])} |{note}",
              flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--all", action="store_true", help="every torchvision classifier")
    ap.add_argument("--scaling", action="store_true", help="ResNet-18..152 and ViT depth 2..48")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time (quiet machine) or process CPU time (shared machine)")
    ap.add_argument("--best-of", type=int, metavar="N",
                    help="minimum over N interleaved rounds instead of the median of --repeat")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--best", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.repeat, a.size, a.clock, a.best)))
        return 0
    names = list(a.models)
    if a.all:
        import torchvision
        names += [n for n in torchvision.models.list_models(module=torchvision.models)
                  if n not in names]
    if a.scaling:
        names += [n for n in SCALING if n not in names]
    if a.best_of is not None and a.best_of < 1:
        ap.error("--best-of must be at least 1")
    repeat = a.best_of or a.repeat
    print(f"{'minimum' if a.best_of else 'median'} of {repeat} rounds, {a.clock} clock")
    rows = run(names or MODELS, repeat, a.size, a.timeout, a.clock, bool(a.best_of))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
