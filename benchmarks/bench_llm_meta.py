"""Llama-7B-sized configuration analysed on the meta device (trace + groups, no weights allocated).

    python benchmarks/bench_llm_meta.py [--layers 32] [--probe]

Prints the analysis time by phase and the process's peak resident memory (imports included:
torch and transformers alone take about 0.8 GB).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=32)
    ap.add_argument("--probe", action="store_true", help="also run the shape probe (meta)")
    a = ap.parse_args(argv)
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.pipeline import analyze_model

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=a.layers,
                      num_attention_heads=32, num_key_value_heads=a.kv_heads)
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).eval()
        ids = torch.zeros(1, a.seq, dtype=torch.long)
    t_build = time.perf_counter() - t0
    n = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    dg = analyze_model(model, ids, probe=a.probe)
    t_an = time.perf_counter() - t0
    kinds = {}
    for g in dg.prunable_groups:
        k = g.root.rsplit(".", 1)[-1]
        kinds[k] = kinds.get(k, 0) + 1
    print(f"Llama-7B config ({a.layers} layers, {n / 1e9:.2f} B params, meta): build {t_build:.1f} s, "
          f"analyze {t_an:.1f} s (trace {dg.seconds['trace']:.1f} s, groups "
          f"{dg.seconds['groups']:.1f} s{', probe %.1f s' % dg.seconds['probe'] if a.probe else ''})")
    print(f"nodes {dg.graph.number_of_nodes()}, groups {len(dg.groups)}, prunable "
          f"{len(dg.prunable_groups)} {kinds}, blocked ops {dg.blocked_ops}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # (kB on Linux)
    print(f"peak RSS {peak:.2f} GB")
    return t_an


if __name__ == "__main__":
    main()
