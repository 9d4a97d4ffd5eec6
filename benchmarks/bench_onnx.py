"""ONNX in, ONNX out: torchvision ResNet-50 and MobileNetV2 (random weights, seed 0) and a small
transformer exported to .onnx, then pruned with the CLI exactly as a user would:

    python main.py prune MODEL.onnx --input-shape 1,3,224,224 --ratio 0.3 -o pruned.onnx --report r.json

Prints one line per model (parameter and FLOP reduction, onnxruntime vs torch, the ONNX oracle:
the pruned file vs the original file with the removed channels zeroed, both in onnxruntime) and
writes benchmarks/onnx_results.md. Usage: python benchmarks/bench_onnx.py [resnet50 mobilenet_v2 transformer]
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as entry  # noqa: E402
from core.io.onnx.names import is_dynamic  # noqa: E402
from tests.helpers import calibrate_norms  # noqa: E402
from tests.onnx_cases import export, small_transformer  # noqa: E402


def _model(name):
    if name == "transformer":
        return small_transformer(), (2, 8, 32), "1,8,32"
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    # batch-norm statistics of real activations: torchvision's fresh MobileNetV2 otherwise
    # outputs values of order 1e-10, on which no difference means anything
    calibrate_norms(model, torch.randn(4, 3, 224, 224))
    return model.eval(), (2, 3, 224, 224), "1,3,224,224"


def run(name: str, tmp: str, ratio: float = 0.3) -> dict:
    model, ex_shape, shape = _model(name)
    src = os.path.join(tmp, f"{name}.onnx")
    t = time.perf_counter()
    export(model, torch.randn(*ex_shape), src)
    t_export = time.perf_counter() - t
    out, rep = os.path.join(tmp, f"{name}-pruned.onnx"), os.path.join(tmp, f"{name}.json")
    cmd = ["prune", src, "--input-shape", shape, "--ratio", str(ratio), "-o", out, "--report", rep]
    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = entry.main(cmd)
    wall = time.perf_counter() - t
    if rc != 0:
        raise SystemExit(f"{name}: exit {rc}\n{buf.getvalue()}")
    r = json.load(open(rep))
    text = buf.getvalue()
    scale = float(re.search(r"onnx oracle: .*scale ([0-9.e+-]+)\)", text).group(1))
    excluded = [ln.split(":")[0].replace("excluded group ", "") for ln in text.splitlines()
                if ln.startswith("excluded group ")]
    return {"model": name, "command": "python main.py " + " ".join(
                [cmd[0], f"{name}.onnx", *cmd[2:6], "-o", f"{name}-pruned.onnx"]),
            "params": (r["before"]["params"], r["after"]["params"]),
            "flops": (r["before"]["flops"], r["after"]["flops"]),
            "onnx_vs_torch": r["onnx_max_abs_diff"], "oracle": r.get("onnx_oracle_max_abs_diff"),
            "dynamic_batch": is_dynamic(out, 1), "scale": scale,
            "excluded": excluded,
            "export_s": t_export, "prune_s": wall}


def _si(v: float) -> str:
    return f"{v / 1e9:.3f}G" if v >= 1e8 else f"{v / 1e6:.3f}M"


def main(names):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            r = run(name, tmp)
            rows.append(r)
            (p0, p1), (f0, f1) = r["params"], r["flops"]
            print(f"{name}: params {p0 / 1e6:.2f}M -> {p1 / 1e6:.2f}M (-{1 - p1 / p0:.1%}), FLOPs "
                  f"{_si(f0)} -> {_si(f1)} (-{1 - f1 / f0:.1%}), onnxruntime vs torch "
                  f"{r['onnx_vs_torch']:.2g}, ONNX oracle {r['oracle']:.2g} (output scale {r['scale']:.2g}), "
                  f"excluded by the oracle {r['excluded'] or 'none'}, dynamic batch "
                  f"{'yes' if r['dynamic_batch'] else 'no'}, {r['prune_s']:.1f} s", flush=True)
    lines = ["# ONNX in, ONNX out (benchmarks/bench_onnx.py)", "",
             "Random weights (seed 0; batch-norm statistics calibrated on random inputs), `--ratio 0.3`, l1 importance. *ONNX oracle*: the pruned file vs the",
             "original file with the removed channels zeroed in its initializers, both run in onnxruntime",
             "(max abs difference). Wall times on a shared, loaded 2-core machine.", "",
             "| model | params | FLOPs | onnxruntime vs torch | ONNX oracle (output scale) | dynamic batch | prune + export |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        (p0, p1), (f0, f1) = r["params"], r["flops"]
        lines.append(f"| {r['model']} | {p0 / 1e6:.2f}M → {p1 / 1e6:.2f}M (−{1 - p1 / p0:.1%}) | "
                     f"{_si(f0)} → {_si(f1)} (−{1 - f1 / f0:.1%}) | "
                     f"{r['onnx_vs_torch']:.2g} | {r['oracle']:.2g} ({r['scale']:.2g}) | "
                     f"{'yes' if r['dynamic_batch'] else 'no (fixed)'} | {r['prune_s']:.0f} s |")
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in rows]
    with open(os.path.join(ROOT, "benchmarks", "onnx_results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["resnet50", "mobilenet_v2", "transformer"])
