"""The original and the pruned model in onnxruntime, timed three ways (``main.py prune -o x.onnx``
prints the second):

- ``spinning``: two sessions with onnxruntime's default thread pools, run in turns - each pool
  spins after its run and the two fight over the cores (how the CLI timed them until 2026-12-02);
- ``no-spin``: the same turns, neither pool spinning (``core.metrics.timing.onnx_compare_latency``);
- ``alone``: each file in a process of its own, default options (what one deployed session sees).

    python benchmarks/bench_onnx_latency.py [resnet50:1 mobilenet_v2:8 convnext_tiny:1] [--threads 2]

Both models pruned to ``--target-flops 0.5`` (default settings), exported with the product's
exporter (``core.io.onnx.export.export_onnx``); random non-trivial weights, float32, CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), HERE]

ALONE = """
import json, sys, time
import numpy as np, onnxruntime as ort
path, shape, threads, runs = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
feed = {s.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
for _ in range(3): s.run(None, feed)
ts = []
for _ in range(runs):
    t = time.perf_counter(); s.run(None, feed); ts.append((time.perf_counter() - t) * 1e3)
print(json.dumps(float(np.median(ts))))
"""


def spinning(before, after, x, threads, runs):
    """The old way: two default sessions in turns (medians in ms)."""
    import numpy as np
    import onnxruntime as ort
    sessions = []
    for path in (before, after):
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
        s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        feed = {s.get_inputs()[0].name: x.numpy()}
        for _ in range(2):
            s.run(None, feed)
        sessions.append((s, feed))
    times = [[], []]
    for _ in range(runs):
        for (s, feed), ts in zip(sessions, times):
            t = time.perf_counter()
            s.run(None, feed)
            ts.append((time.perf_counter() - t) * 1e3)
    return [float(np.median(ts)) for ts in times]


def alone(path, shape, threads, runs, rounds=3):
    """Median over ``rounds`` fresh processes (taken in turns with the other file by the caller)."""
    r = subprocess.run([sys.executable, "-c", ALONE, path, ",".join(map(str, shape)), str(threads),
                        str(runs)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench(name, batch, threads, runs) -> dict:
    from bench_latency import build, prune

    from core.io.onnx.export import export_onnx
    from core.metrics.timing import onnx_compare_latency
    from core.metrics.widths import best_multiple
    from core.pipeline import analyze_model
    model, x = build(name, batch)
    dg = analyze_model(model, x, probe=False)
    auto, _ = best_multiple("cpu", threads)
    res = prune(model, x, dg, target_flops=0.5, round_to=auto, round_auto=True)
    with tempfile.TemporaryDirectory() as d:
        paths = [os.path.join(d, "original.onnx"), os.path.join(d, "pruned.onnx")]
        for m, p in zip((model, res.model), paths):
            export_onnx(m, x, p)
        # the product's way first: the spinning sessions' pools would still be alive after theirs
        b, a = onnx_compare_latency(*paths, x, threads=threads, min_runs=runs, max_runs=runs)
        old = spinning(*paths, x, threads, runs)
        solo = [[], []]
        for _ in range(3):  # in turns, a process each
            for k, p in enumerate(paths):
                solo[k].append(alone(p, tuple(x.shape), threads, runs))
        solo = [sorted(v)[1] for v in solo]
    return {"model": name, "batch": batch, "threads": threads,
            "flops_x": res.before.flops / res.after.flops,
            "spinning_ms": old, "spinning_speedup": old[0] / old[1],
            "no_spin_ms": [b.median_ms, a.median_ms], "no_spin_iqr": [[b.q1_ms, b.q3_ms], [a.q1_ms, a.q3_ms]],
            "no_spin_speedup": b.median_ms / a.median_ms,
            "alone_ms": solo, "alone_speedup": solo[0] / solo[1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["resnet50:1", "mobilenet_v2:8", "convnext_tiny:1"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    for spec in a.models:
        name, _, batch = spec.partition(":")
        print(json.dumps(bench(name, int(batch or 1), a.threads, a.runs)), flush=True)


if __name__ == "__main__":
    main()
