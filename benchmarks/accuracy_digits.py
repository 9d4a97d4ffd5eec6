"""Accuracy of pruning on the built-in digits data set (real 8x8 handwritten digits, offline).

A small CNN (core.models.digits.DigitsCNN) is trained from scratch, then pruned to about half its FLOPs
(PlanSettings(target_flops=0.5), same settings for every row):

* unpruned            - the trained model
* pruned, no recovery - pruned straight away
* fine-tuned          - pruned, then FT_EPOCHS of fine-tuning
* fine-tuned (longer) - pruned, then SPARSE_EPOCHS + FT_EPOCHS of fine-tuning (same training budget
                        as the sparse-learning row, for a fair comparison)
* sparse + fine-tuned - SPARSE_EPOCHS of sparse learning (group regulariser, core.train.sparse), pruned,
                        then FT_EPOCHS of fine-tuning

Mean and spread over several seeds; writes benchmarks/accuracy_results.md.
Run: python benchmarks/accuracy_digits.py [--seeds 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.train.data import load_data  # noqa: E402
from core.train.evaluate import evaluate  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402
from core.train.sparse import group_sparsity  # noqa: E402
from core.models.digits import digits_cnn  # noqa: E402
from core.train.loop import TrainConfig, sparse_train, train  # noqa: E402

ROWS = ["unpruned", "pruned, no recovery", "fine-tuned", "fine-tuned (longer, same budget)",
        "sparse learning + fine-tuned"]


def run_seed(seed, a, device):
    data = load_data("digits", batch_size=64, val_fraction=0.2, seed=seed)
    val = data.val_loader()
    ex = data.example_input(1).to(device)
    acc = {}
    t = time.perf_counter()
    base = train(digits_cnn(a.width, seed), data, TrainConfig(epochs=a.epochs, lr=0.05, seed=seed,
                                                               device=device)).model
    acc["unpruned"] = evaluate(base, val, device=device).top1
    dg = analyze_model(base, ex)
    settings = PlanSettings(target_flops=0.5)

    def prune(m):
        r = prune_model(m, ex, dg, settings, latency=False, verify=True)
        return r.model, r.after.flops / r.before.flops

    pruned, frac = prune(base)
    acc["pruned, no recovery"] = evaluate(pruned, val, device=device).top1
    ft = TrainConfig(epochs=a.ft_epochs, lr=a.ft_lr, seed=seed, device=device)
    acc["fine-tuned"] = train(pruned, data, ft).final.top1
    longer = TrainConfig(epochs=a.ft_epochs + a.sparse_epochs, lr=a.ft_lr, seed=seed, device=device)
    acc["fine-tuned (longer, same budget)"] = train(pruned, data, longer).final.top1
    sp = sparse_train(base, data, dg, TrainConfig(epochs=a.sparse_epochs, lr=0.05, seed=seed,
                                                  device=device), lam=a.lam, alpha=a.alpha)
    sparsity = group_sparsity(sp.model, dg)
    sp_pruned, frac2 = prune(sp.model)
    acc["sparse, pruned (no recovery)"] = evaluate(sp_pruned, val, device=device).top1
    acc["sparse learning + fine-tuned"] = train(sp_pruned, data, ft).final.top1
    return acc, frac, frac2, sparsity, time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8, help="training from scratch")
    p.add_argument("--ft-epochs", type=int, default=2)
    p.add_argument("--ft-lr", type=float, default=0.01)
    p.add_argument("--sparse-epochs", type=int, default=8)
    p.add_argument("--lam", type=float, default=3e-3)
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a "
                   "busy 2-core machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                          "accuracy_results.md"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    results, fracs, sparsities = [], [], []
    for seed in range(a.seeds):
        acc, f1, f2, s, secs = run_seed(seed, a, a.device)
        results.append(acc)
        fracs.append((f1, f2))
        sparsities.append(s)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.2%}" for k, v in acc.items()) +
              f" ({secs:.0f} s)", flush=True)
    total = time.perf_counter() - t0
    rows = ROWS[:2] + ROWS[2:4] + ["sparse, pruned (no recovery)", ROWS[4]]
    lines = [
        f"Digits (sklearn, 1,797 real 8x8 images; 1,438 train / 359 val), DigitsCNN width {a.width}, "
        f"trained {a.epochs} epochs from scratch; pruned with PlanSettings(target_flops=0.5) "
        f"(FLOPs kept: {np.mean([f for f, _ in fracs]):.1%} plain, "
        f"{np.mean([f for _, f in fracs]):.1%} after sparse learning). Fine-tuning: {a.ft_epochs} epochs, "
        f"lr {a.ft_lr}, cosine. Sparse learning: {a.sparse_epochs} epochs, lambda {a.lam:g}, "
        f"alpha {a.alpha:g}, linear growing schedule (group sparsity reached "
        f"{np.mean(sparsities):.1%}). {a.seeds} seeds, {a.device}, {a.threads} thread(s), "
        f"{total:.0f} s in all.",
        "",
        "| model | FLOPs | top-1 (mean over seeds) | min | max |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        v = np.array([x[r] for x in results])
        fl = "100%" if r == "unpruned" else f"{np.mean([f[1] if 'sparse' in r else f[0] for f in fracs]):.1%}"
        lines.append(f"| {r} | {fl} | {v.mean():.2%} | {v.min():.2%} | {v.max():.2%} |")
    lines += ["", f"Command: `python benchmarks/accuracy_digits.py --seeds {a.seeds} --threads {a.threads}`"]
    text = "\n".join(lines)
    print()
    print(text)
    with open(a.output, "w", encoding="utf-8") as f:
        f.write("# Accuracy after pruning (digits)\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
