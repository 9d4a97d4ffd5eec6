"""Real speed-up, measured honestly (interleaved, same inputs, fixed threads).

    python benchmarks/bench_latency.py flops [resnet50:1 resnet50:8 mobilenet_v2:8 vit_b_16:1 convnext_tiny:1]
    python benchmarks/bench_latency.py latency [resnet50:1 mobilenet_v2:8] [--target 0.5 --round-to auto]
    python benchmarks/bench_latency.py gui [vit_b_16:1]
    python benchmarks/bench_latency.py floor [resnet50:1 convnext_tiny:1]
    options: --threads 2 --pairs 12 --budget 60 --json out.json (flops: --channels-last)
             --clock cpu: CPU time of the process per forward instead of wall time (a loaded
             machine: with --threads 1 it is the forwards' own work, untouched by time slicing)

``flops``: prune to ``--target-flops 0.5`` with round-to auto and each FLOPs allocation (``uniform``:
the same share of every group, the default until 2026-12-02; ``latency``: shaped by the modelled
latency per FLOP, the default now), then time the original and both pruned models interleaved
(O, Pu, Pl, O, Pu, Pl, ...): the measured speed-up against the FLOPs reduction (the goal: speed-up
>= 0.9 x FLOPs reduction with the default settings), and the importance mass each plan keeps.

``latency``: prune as the CLI does to ``--target-latency 0.5`` (default round-to auto; tables
measured here, then the measured correction loop of core/metrics/latency_target.py, each plan
printed), then find by the same loop the ``--target-flops`` value whose plan *measures* the same
latency reduction; time the original and both pruned models interleaved once more; report the final
measured reduction with the IQR of the per-round reductions (goal: within +-5 % of the target) and
the importance mass each plan keeps (per group, scores normalised to mean 1 - the knapsack's own
currency).

``floor``: the time no channel plan removes (:func:`bench_floor`), and the speed-up it leaves
possible at 2x FLOPs.

``gui``: the window's Prune (MainWindow offscreen, its tasks on their threads, latency on,
``--target-flops 0.5``) twice, then the CLI's path for the same setting: seconds per prune and
per phase (goal: ViT-B/16 <= 15 s), and the window's latency figures next to the CLI's.

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


CLOCK = "wall"  # --clock: "cpu" times each forward by the process's CPU time (see main)


def cpu_tick(fn):
    """ms of CPU time the process spent in ``fn``: on a machine others load, time slices lost to
    them do not count (with one thread it is the forward's own work; with more, idle spinning
    of the thread pool counts too)."""
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1000.0


def interleaved(models: list, x, threads: int, pairs: int, budget: float) -> list:
    """[{median, q1, q3, runs, samples}] per model, run in turns after two warm-ups of each."""
    import torch

    from core.metrics.timing import eval_no_grad, fixed_threads, quartiles, timer
    tick = cpu_tick if CLOCK == "cpu" else timer(torch.device("cpu"))
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
    out = []
    for t in times:
        q1, med, q3 = quartiles(t)
        out.append({"median": med, "q1": q1, "q3": q3, "runs": len(t), "samples": t})
    return out


def reduction(orig: dict, pruned: dict) -> dict:
    """Measured latency reduction: 1 - median ratio, with the IQR of the per-round reductions."""
    from core.metrics.timing import quartiles
    q1, _, q3 = quartiles([1 - b / a for a, b in zip(orig["samples"], pruned["samples"])])
    return {"reduction": 1 - pruned["median"] / orig["median"], "iqr": [q1, q3]}


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


def bench_flops(name, batch, threads, pairs, budget, channels_last=False) -> dict:
    from core.metrics.widths import best_multiple
    from core.pipeline import analyze_model
    model, x = build(name, batch)
    dg = analyze_model(model, x, probe=False)
    auto, _ = best_multiple("cpu", threads)
    allocs = ("uniform", "latency")
    res = [prune(model, x, dg, target_flops=0.5, round_to=auto, round_auto=True, flops_allocation=a)
           for a in allocs]
    models = [model] + [r.model for r in res]
    if channels_last:  # oneDNN's preferred layout; NCHW max-pooling is 10-40x slower on CPU
        import torch
        models = [m.to(memory_format=torch.channels_last) for m in models]
        x = x.contiguous(memory_format=torch.channels_last)
    t = interleaved(models, x, threads, pairs, budget)
    fx = [r.before.flops / r.after.flops for r in res]
    sp = [t[0]["median"] / p["median"] for p in t[1:]]
    pair = [reduction(t[0], p) for p in t[1:]]  # per-round speed-ups: their IQR is the spread
    return {"model": name, "batch": batch, "threads": threads, "auto_multiple": auto,
            "memory_format": "channels_last" if channels_last else "contiguous",
            "clock": CLOCK, "allocations": list(allocs), "flops_x": fx, "speedup": sp,
            "speedup_per_flops_x": [s / f for s, f in zip(sp, fx)],
            "speedup_iqr": [[1 / (1 - q) for q in p["iqr"]] for p in pair],
            "mass_kept": [mass_kept(dg, model, r.plan) for r in res],
            "modelled_latency_reduction": [r.plan.settings.get("modelled_latency_reduction")
                                           for r in res],
            "timings": [{k: v for k, v in d.items() if k != "samples"} for d in t]}


def bench_latency(name, batch, threads, pairs, budget, target=0.5, round_to="auto") -> dict:
    """The CLI's path (prune_model: tables, knapsack, the measured correction loop), then the
    FLOPs target that reaches the same *measured* latency (the same loop, planning by FLOPs), and
    the three models timed interleaved once more for the final figures."""
    from core.metrics.latency_target import meet_latency_target
    from core.metrics.widths import best_multiple
    from core.pipeline import analyze_model, cost_model, prune_model, sizes
    from core.plan.planner import PlanSettings, make_plan
    from core.prune.apply import apply_kept
    model, x = build(name, batch)
    dg = analyze_model(model, x, probe=False)
    rt = {"round_to": 1}
    if round_to == "auto":
        rt = {"round_to": best_multiple("cpu", threads)[0], "round_auto": True}
    elif round_to:
        rt = {"round_to": int(round_to)}
    t0 = time.perf_counter()
    res = prune_model(model, x, dg, PlanSettings(ratio=None, target_latency=target, **rt),
                      latency=True, verify=False, threads=threads)
    t_cli = time.perf_counter() - t0
    st = res.plan.settings
    for i, step in enumerate(st.get("latency_loop", [])):
        print(f"  {name}:{batch} latency plan {i + 1}: {step}", flush=True)
    cost = cost_model(dg, model, x, sizes(model, x, memory=False).flops)

    def flops_plan(aim):
        p = make_plan(dg, model, PlanSettings(ratio=None, target_flops=min(aim, 0.95), **rt),
                      cost=cost)
        k = p.kept_indices(dg)
        return p, k, apply_kept(model, k), None
    same = meet_latency_target(flops_plan, model, x, st["measured_latency_reduction"], tol=0.02,
                               threads=threads)
    fp = same["plan"]
    pl, pf = res.model, apply_kept(model, same["kept"])
    o, ml, mf = t = interleaved([model, pl, pf], x, threads, pairs, budget)
    lat, flo = reduction(o, ml), reduction(o, mf)
    f0 = res.before.flops
    return {"model": name, "batch": batch, "threads": threads, "target": target, "round_to": rt,
            "prune_s": t_cli, "tables_s": res.seconds.get("latency_tables"),
            "estimated_reduction": st.get("estimated_latency_reduction"),
            "loop": st.get("latency_loop"), "loop_met": st.get("latency_target_met"),
            "final_measured_reduction": lat["reduction"], "final_iqr": lat["iqr"],
            "within_5pct": abs(lat["reduction"] - target) <= 0.05,
            "latency_plan_flops_reduction": 1 - res.after.flops / f0,
            "flops_target_same_latency": st_flops(fp),
            "flops_plan_measured_reduction": flo["reduction"], "flops_plan_iqr": flo["iqr"],
            "mass_kept": {"latency_plan": mass_kept(dg, model, res.plan),
                          "flops_plan": mass_kept(dg, model, fp)},
            "timings": [{k: v for k, v in d.items() if k != "samples"} for d in t]}


def st_flops(plan) -> float:
    return plan.settings.get("target_flops")


def bench_floor(name, batch, threads, pairs, budget) -> dict:
    """The time uniform plans do not remove: plans at 1/2, 1/4 and 1/10 of the FLOPs timed
    interleaved with the original, fitted as ``T = fixed + scaling / (FLOPs reduction)``. The
    fixed part is per-op dispatch, thread wake-ups and work that keeps its size. A uniform plan
    at 2x FLOPs reaches ``T / (fixed + scaling / 2)``; the >= 0.9 goal (1.8x) needs a plan that
    removes ``goal_share`` of the scaling time with half the FLOPs."""
    import numpy as np

    from core.pipeline import analyze_model
    model, x = build(name, batch)
    dg = analyze_model(model, x, probe=False)
    res = [prune(model, x, dg, target_flops=f, round_to=1, flops_allocation="uniform")
           for f in (0.5, 0.75, 0.9)]
    fx = [1.0] + [r.before.flops / r.after.flops for r in res]
    t = interleaved([model] + [r.model for r in res], x, threads, pairs, budget)
    ms = [d["median"] for d in t]
    (scaling, fixed), *_ = np.linalg.lstsq(np.c_[1 / np.asarray(fx), np.ones(len(fx))],
                                           np.asarray(ms), rcond=None)
    return {"model": name, "batch": batch, "threads": threads, "clock": CLOCK, "flops_x": fx,
            "ms": ms, "fixed_ms": float(fixed), "scaling_ms": float(scaling),
            "fixed_share": float(fixed / ms[0]),
            "uniform_speedup_at_2x": float(ms[0] / (fixed + scaling / 2)),
            "goal_share": float((1 - 1 / 1.8) * ms[0] / scaling)}


def bench_gui(name, batch, threads, pairs, budget) -> dict:
    """The window's pruning as a user runs it (MainWindow offscreen: load, FLOPs target 0.5,
    approximate results accepted, Prune twice - its tasks on their lanes, gui.jobs.worker), then
    the command line's path (core.pipeline.prune_model on the main thread) for the same setting:
    the window's latency figures must be the CLI's (they were half as fast before the lanes)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from gui.jobs.worker import claim_compute_threads
    from gui.main_window import MainWindow
    app = QApplication.instance() or QApplication([])  # noqa: F841 - kept alive while it runs
    claim_compute_threads(threads)  # as gui.app.main does

    def wait(signal=None, ms=900_000):
        loop, got = QEventLoop(), []
        if signal is not None:
            signal.connect(lambda *a: (got.append(a), loop.quit()))
        QTimer.singleShot(ms, loop.quit)
        loop.exec()
        return got[0] if got else None

    w = MainWindow()  # its own latency settings (runs, budget): what a user gets
    w.show()
    w.open_model(f"torchvision:{name}", f"{batch},3,224,224")
    wait(w.modelReady)
    wait(ms=3000)  # the importance and estimate beside it settle
    w.targets.mode.setCurrentIndex(1)  # FLOPs target, 50 %
    w.targets.slider.setValue(50)
    w.targets.accept_approx.setChecked(True)
    out = {"model": name, "batch": batch, "threads": threads}
    for k in ("first", "second"):
        t0 = time.perf_counter()
        w.prune()
        (r,) = wait(w.pruneFinished)
        out[k] = {"seconds": time.perf_counter() - t0, "phases": r.seconds,
                  "before_ms": r.before.latency_ms, "after_ms": r.after.latency_ms,
                  "speedup": r.before.latency_ms / r.after.latency_ms,
                  "runs": r.after.latency_runs, "stop": [r.before.latency_stop, r.after.latency_stop]}
        w.undo()
        wait(ms=1000)
    w.close()
    out["cli"] = cli_latency(name, batch, threads)
    return out


def cli_latency(name, batch, threads) -> dict:
    """``main.py prune`` of the same model and setting, in a process of its own (an OpenMP team
    left on this process's main thread would slow the window's compute thread down)."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        rep = os.path.join(d, "r.json")
        subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "prune", f"torchvision:{name}",
                        "--input-shape", f"{batch},3,224,224", "--target-flops", "0.5",
                        "--accept-approximate", "--threads", str(threads), "-o",
                        os.path.join(d, "p.pt"), "--report", rep], check=True, capture_output=True)
        with open(rep) as f:
            r = json.load(f)
        b, a = r["before"], r["after"]
    return {"before_ms": b["latency_ms"], "after_ms": a["latency_ms"],
            "speedup": b["latency_ms"] / a["latency_ms"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["flops", "latency", "floor", "gui"])
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--json")
    ap.add_argument("--target", type=float, default=0.5, help="latency mode: the latency target")
    ap.add_argument("--round-to", default="auto", help="latency mode: auto (default, as the CLI) or N")
    ap.add_argument("--channels-last", action="store_true", help="flops mode: time the models and "
                    "the input in channels_last memory format")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    a = ap.parse_args(argv)
    global CLOCK
    CLOCK = a.clock
    default = {"flops": ["resnet50:1", "resnet50:8", "mobilenet_v2:8", "vit_b_16:1", "convnext_tiny:1"],
               "latency": ["resnet50:1", "mobilenet_v2:8"], "gui": ["vit_b_16:1"],
               "floor": ["resnet50:1", "convnext_tiny:1"]}[a.mode]
    rows = []
    for case in a.cases or default:
        name, _, b = case.partition(":")
        fn = {"flops": bench_flops, "latency": bench_latency, "gui": bench_gui,
              "floor": bench_floor}[a.mode]
        t0 = time.perf_counter()
        from core.errors import PruneStudioError
        try:
            more = ({"target": a.target, "round_to": a.round_to} if a.mode == "latency" else
                    {"channels_last": a.channels_last} if a.mode == "flops" else {})
            r = fn(name, int(b or 1), a.threads, a.pairs, a.budget, **more)
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
