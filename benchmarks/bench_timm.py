"""Sweep popular timm architectures through the engine: analyse, prune at ratio 0.3, run the oracle.

    python benchmarks/bench_timm.py                    # every case, writes benchmarks/timm_results.md
    python benchmarks/bench_timm.py swin_tiny levit    # a few cases (labels or timm names)
    python benchmarks/bench_timm.py --list

Per model (random non-trivial weights with BatchNorm statistics calibrated on the input, batch 1,
float32, CPU, one thread, small input resolutions where the model allows): ``analyze_model`` (trace,
groups and the shape probe), ``prune_model`` at a uniform ratio of 0.3 with L2 importance and the
zeroed-group oracle on (``verify=True``: a plan that is not exact when the engine says it is raises
``VerificationError``). Reported: groups / prunable groups, FLOPs and parameters before -> after,
exact or approximate (with the first reason), the failure (stage, exception type, first line) and
the blocked ops (``dg.blocked_ops``). Each model runs in its own interpreter with an address-space
cap and a timeout (:func:`helpers.run_isolated`), so one blow-up costs one row.

The same cases run as slow tests: ``pytest -m slow tests/test_timm_families.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

RATIO = 0.3

# label -> (timm name, create_model kwargs, input side[, batch]). Inputs are as small as each model allows
# (window sizes, fixed-resolution attention biases and strides decide the minimum).
CASES = {
    "resnet50": ("resnet50", {}, 64),
    "resnext50_32x4d": ("resnext50_32x4d", {}, 64),
    "seresnet50": ("seresnet50", {}, 64),
    "efficientnet_b0": ("efficientnet_b0", {}, 64),
    "mobilenetv3_large_100": ("mobilenetv3_large_100", {}, 64),
    "regnety_008": ("regnety_008", {}, 64),
    "convnext_atto": ("convnext_atto", {}, 64),
    "convnextv2_atto": ("convnextv2_atto", {}, 64),
    "deit_tiny_patch16_224": ("deit_tiny_patch16_224", {"img_size": 64}, 64),
    "vit_small_patch16_224": ("vit_small_patch16_224", {"img_size": 64}, 64),
    "vit_betwixt_patch16_reg4_gap_256": ("vit_betwixt_patch16_reg4_gap_256", {"img_size": 64}, 64),
    "eva02_tiny_patch14_224": ("eva02_tiny_patch14_224", {"img_size": 56}, 56),
    "beit_base_patch16_224": ("beit_base_patch16_224", {"img_size": 64}, 64),
    "swin_tiny_patch4_window7_224": ("swin_tiny_patch4_window7_224", {"img_size": 112}, 112),
    "swinv2_tiny_window8_256": ("swinv2_tiny_window8_256", {"img_size": 128}, 128),
    "maxvit_nano_rw_256": ("maxvit_nano_rw_256", {"img_size": 128}, 128),
    "coatnet_nano_rw_224": ("coatnet_nano_rw_224", {"img_size": 128}, 128),
    "levit_128s": ("levit_128s", {"img_size": 128}, 128, 2),
    "poolformer_s12": ("poolformer_s12", {}, 64),
    "mixer_s16_224": ("mixer_s16_224", {"img_size": 64}, 64),
    "resmlp_12_224": ("resmlp_12_224", {"img_size": 64}, 64),
    "cait_xxs24_224": ("cait_xxs24_224", {"img_size": 64}, 64),
    "xcit_nano_12_p16_224": ("xcit_nano_12_p16_224", {"img_size": 64}, 64),
    "mobilevit_xxs": ("mobilevit_xxs", {}, 128),
    "efficientformer_l1": ("efficientformer_l1", {}, 224),
    "fastvit_t8": ("fastvit_t8", {}, 64),
    "edgenext_xx_small": ("edgenext_xx_small", {}, 64),
    "hrnet_w18_small": ("hrnet_w18_small", {}, 64),
    "dla34": ("dla34", {}, 64),
    "ghostnet_100": ("ghostnet_100", {}, 64),
    "repvgg_a0": ("repvgg_a0", {}, 64),
}


# ------------------------------------------------------------------------------------------------
# child-process body


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {(lines[0] if lines else '')[:300]}"


def case(label: str):
    """(timm name, create_model kwargs, input side, batch) of a case."""
    name, kw, side, *rest = CASES[label]
    return name, kw, side, (rest[0] if rest else 1)


def build_case(label: str):
    """(model in eval mode with random non-trivial weights, input tensor)."""
    import timm
    import torch

    from helpers import randomize

    name, kw, side, batch = case(label)
    model = timm.create_model(name, pretrained=False, num_classes=10, **kw).eval()
    x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    randomize(model, 0, inputs=x)
    return model, x


def bench_case(label: str, ratio: float = RATIO, threads: int = 1) -> dict:
    """Build, analyse (with the shape probe), prune at ``ratio`` with the oracle; never raises
    for an engine failure: the row says at which stage and why."""
    import torch

    from core.pipeline import analyze_model, prune_model
    from core.plan.planner import PlanSettings
    from helpers import to_jsonable

    torch.set_num_threads(threads)
    name, kw, side, _ = case(label)
    r = {"label": label, "model": name, "input": side, "status": "ok"}
    t0 = time.perf_counter()
    stage = "build"
    try:
        model, x = build_case(label)
        stage = "analyze"
        t = time.perf_counter()
        dg = analyze_model(model, x, probe=True)
        r["analyze_s"] = time.perf_counter() - t
        r["groups"] = len(dg.groups)
        r["prunable_groups"] = len(dg.prunable_groups)
        r["blocked_ops"] = {k: sorted(set(v))[:3] for k, v in dg.blocked_ops.items()}
        n_ch = sum(g.n_channels for g in dg.groups)
        r["prunable_channels"] = [int(sum(g.n_prunable for g in dg.groups)), int(n_ch)]
        stage = "prune"
        t = time.perf_counter()
        res = prune_model(model, x, dg, PlanSettings(ratio=ratio), latency=False, verify=True)
        r["prune_s"] = time.perf_counter() - t
        v = res.verify
        r["params"] = [res.before.params, res.after.params]
        r["flops"] = [res.before.flops, res.after.flops]
        r["removed"] = int(res.plan.n_removed)
        r["exact"] = bool(v.expected_exact)
        r["max_rel_diff"] = float(v.max_rel_diff)
        r["approx_reasons"] = [str(s) for s in v.approximate_reasons[:3]]
        r["oracle"] = str(v.message)[:300]
        # groups the oracle refuted and prune_model left out of a new plan (core.prune.diagnose)
        r["excluded"] = {str(k): str(w)[:200] for k, w in getattr(res, "excluded", {}).items()}
        stage = "exact part"
        if not v.expected_exact:
            r["exact_part"] = exact_part(model, x, dg, res.plan)
        stage = "check"
        with torch.no_grad():
            y0, y1 = model(x), res.model(x)
        if tuple(y0.shape) != tuple(y1.shape) or not torch.isfinite(y1).all():
            r["status"] = f"bad pruned output {tuple(y1.shape)}"
        elif r.get("exact_part") and not r["exact_part"]["passed"]:
            r["status"] = f"MISMATCH in the exact groups alone: {r['exact_part']['message']}"
        elif r["excluded"]:
            r["status"] = f"oracle excluded {len(r['excluded'])} group(s): {next(iter(r['excluded']))}"
        elif res.plan.n_removed == 0:
            r["status"] = "nothing pruned"
        elif res.after.flops >= 0.95 * res.before.flops:
            r["status"] = "almost nothing pruned"
    except Exception as e:  # noqa: BLE001 - the row reports it
        r["status"] = f"FAIL ({stage}) {_first_line(e)}"
    r["seconds"] = time.perf_counter() - t0
    return to_jsonable(r)


def exact_part(model, x, dg, plan) -> dict:
    """The plan restricted to the channels the engine calls exact (every approximate group of a
    transformer is its LayerNorm'd residual stream): verified in float64, where it must agree to
    1e-6. An approximate verdict on the whole plan must not hide a wrong coupling elsewhere."""
    import copy

    from core.prune.apply import PruningPlan
    from core.prune.verify import verify_plan

    part = {gid: [c for c in ch if dg.groups[gid].exact[c]] for gid, ch in plan.removed.items()}
    part = PruningPlan({g: ch for g, ch in part.items() if ch})
    if not part.removed:
        return {"channels": 0, "passed": True, "rel": 0.0, "message": "no exact channel removed"}
    v = verify_plan(copy.deepcopy(model).double(), x.double(), dg, part, tolerance=1e-6)
    return {"channels": part.n_removed, "passed": bool(v.passed and v.expected_exact),
            "rel": float(v.max_rel_diff), "message": str(v.message)[:200]}


# ------------------------------------------------------------------------------------------------
# driver


def fmt_n(v: float) -> str:
    for unit, d in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= d:
            return f"{v / d:.2f}{unit}"
    return f"{v:.0f}"


def _pct(a, b):
    return f"-{100 * (1 - b / a):.0f}%" if a else "?"


def run_cases(labels, timeout, mem_gb, threads=1):
    from helpers import run_isolated

    rows = []
    for label in labels:
        t0 = time.perf_counter()
        try:
            r = run_isolated("bench_timm", "bench_case", {"label": label, "threads": threads},
                             timeout=timeout, mem_gb=mem_gb)
        except AssertionError as e:
            msg = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            r = {"label": label, "model": case(label)[0], "input": case(label)[2],
                 "status": "CRASH: " + (msg[-1] if msg else "?")[:300]}
        r["wall_s"] = time.perf_counter() - t0
        rows.append(r)
        print(row_text(r), flush=True)
    return rows


def row_text(r) -> str:
    head = f"{r['label']:34s} {r.get('wall_s', r.get('seconds', 0)):6.1f}s "
    if "flops" in r:
        ex = "exact" if r["exact"] else "approx"
        part = f" (exact part {r['exact_part']['rel']:.0e})" if r.get("exact_part") else ""
        return (head + f"groups {r['groups']:3d}/{r['prunable_groups']:3d} "
                f"FLOPs {fmt_n(r['flops'][0])}->{fmt_n(r['flops'][1])} ({_pct(*r['flops'])}) "
                f"params {fmt_n(r['params'][0])}->{fmt_n(r['params'][1])} | {ex} "
                f"rel {r['max_rel_diff']:.1e}{part} | {r['status']}"
                + (f" | blocked {list(r['blocked_ops'])}" if r.get("blocked_ops") else ""))
    return head + f"{r['status']}" + (f" | blocked {list(r['blocked_ops'])}" if r.get("blocked_ops") else "")


NOTES = """## What stays fixed, and why

- Token-mixing MLPs (MLP-Mixer `mlp_tokens.fc2`, ResMLP `linear_tokens`) output one value per
  token: their width is the token count, which the residual add fixes (blocked, correct). Their
  hidden layers and the channel MLPs are pruned.
- EdgeNeXt stage 3 splits its channels with `chunk(3)` into uneven pieces (88 = 30 + 30 + 28): no
  removal keeps the pieces aligned, so that stream stays (blocked with that reason).
- Residual streams under LayerNorm (every transformer here, ConvNeXt) and under PoolFormer's
  one-group GroupNorm are pruned *approximately* (statistics over fewer channels); heads, head
  dimensions and MLPs are exact (the *exact channels alone* check).
- Head dimensions (analysis option `attention="head_dim"`, not used in this table): blocked for
  EVA with rotary embeddings (computed outside the module for the original width), approximate for
  Swin-V2 (cosine attention) and XCiT / EdgeNeXt (cross-covariance attention). BEiT with a relative
  position bias shared by all blocks keeps its heads (that bias is passed as a keyword argument,
  which a leaf op does not see).
"""


def write_markdown(path, rows):
    import timm
    import torch

    L = ["# PruneStudio engine: timm sweep", "",
         f"Generated by `benchmarks/bench_timm.py` on {time.strftime('%Y-%m-%d %H:%M')} "
         f"({platform.machine()}, {os.cpu_count()} CPU cores, one thread per model, torch "
         f"{torch.__version__}, timm {timm.__version__}, CPU). Random non-trivial weights "
         "(BatchNorm statistics calibrated on the input), batch 1, float32; `analyze_model` with "
         f"the shape probe, then `prune_model` at a uniform ratio of {RATIO} (L2 importance) with "
         "the zeroed-group oracle on. *exact*: the engine declared the plan exact and the oracle "
         "agrees; *approximate*: the engine flagged groups whose removal changes the math (first "
         "reason below), and the plan restricted to the channels the engine calls exact is "
         "checked again in float64 (*exact channels alone*, must be below 1e-6: for a transformer "
         "that is everything but the LayerNorm'd residual stream). A plan the oracle refutes "
         "fails with `VerificationError`, or the refuted groups are left out and named "
         "(`excluded`).", "",
         "| model | input | groups (prunable) | FLOPs before -> after | params before -> after | "
         "oracle | status | blocked ops | time (s) |",
         "|---|---:|---|---|---|---|---|---|---:|"]
    for r in rows:
        blocked = ", ".join(f"`{k}`" for k in r.get("blocked_ops", {})) or "-"
        groups = f"{r['groups']} ({r['prunable_groups']})" if "groups" in r else "-"
        t = f"{r.get('wall_s', r.get('seconds', 0)):.0f}"
        status = r["status"].replace("|", "/")
        if "flops" in r:
            ex = "exact" if r["exact"] else "approximate"
            ex += f" ({r['max_rel_diff']:.0e})"
            if r.get("exact_part"):
                ex += f"; exact channels alone: {r['exact_part']['rel']:.0e} (f64)"
            L.append(f"| {r['label']} | {r['input']} | {groups} | {fmt_n(r['flops'][0])} -> "
                     f"{fmt_n(r['flops'][1])} ({_pct(*r['flops'])}) | {fmt_n(r['params'][0])} -> "
                     f"{fmt_n(r['params'][1])} ({_pct(*r['params'])}) | {ex} | {status} | "
                     f"{blocked} | {t} |")
        else:
            L.append(f"| {r['label']} | {r['input']} | {groups} | - | - | - | {status} | {blocked} | {t} |")
    approx = [r for r in rows if r.get("approx_reasons")]
    if approx:
        L += ["", "## First approximation reason per model", ""]
        for r in approx:
            L.append(f"- **{r['label']}**: {r['approx_reasons'][0]}")
    blocked = [r for r in rows if r.get("blocked_ops")]
    if blocked:
        L += ["", "## Blocked ops (first scopes)", ""]
        for r in blocked:
            L.append(f"- **{r['label']}**: " + "; ".join(
                f"`{k}` at {', '.join(v) or '(top level)'}" for k, v in r["blocked_ops"].items()))
    L += ["", NOTES.strip()]
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="labels (or substrings of them); default: all")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per model")
    ap.add_argument("--mem-gb", type=float, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "timm_results.md"))
    ap.add_argument("--json", default=os.path.join(HERE, "timm_results.json"))
    a = ap.parse_args(argv)
    if a.list:
        for k in CASES:
            n, kw, s, b = case(k)
            print(f"{k:34s} {n} {kw} {b}x3x{s}x{s}")
        return
    labels = [k for k in CASES if not a.models or any(
        m == k or (m not in CASES and m in k) for m in a.models)]
    rows = run_cases(labels, a.timeout, a.mem_gb, a.threads)
    write_markdown(a.out, rows)
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
