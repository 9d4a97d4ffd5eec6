"""Streamed pruning of a checkpoint larger than comfortable memory: Llama-2-7B's configuration.

1. Generates (seeded, tensor by tensor, never the whole model) a random bfloat16 checkpoint of the
   Llama-2-7B configuration (~13.5 GB) as sharded safetensors in DIR/src (skipped if present).
2. Prunes it with ``main.py prune hf:DIR/src --stream --mlp-ratio 0.5 --kv-ratio 0.25 -o DIR/out/``
   in a subprocess: wall time and peak RSS (getrusage RUSAGE_CHILDREN ru_maxrss). Goal: <= 3 GB.
3. Loads DIR/out with ``from_pretrained(low_cpu_mem_usage=True, dtype=bfloat16)`` in another
   subprocess and runs a short forward pass.

    python benchmarks/bench_llm_stream.py --dir /work/tmp-llm [--layers 32] [--shard-gb 5]
                                           [--clean]

DIR must lie outside the repository (it needs ~25 GB free). ``--clean`` deletes DIR/src and
DIR/out at the end. Never run in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                 max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)


def generate(d: str, layers: int, shard_bytes: int, seed: int = 0) -> float:
    """Write a random bf16 Llama checkpoint into ``d`` one tensor at a time; returns GB written."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.io.hf.shards import INDEX, nbytes, write_shard
    cfg = LlamaConfig(**{**LLAMA2_7B, "num_hidden_layers": layers})
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.dtype = "bfloat16"
    with torch.device("meta"):
        meta = LlamaForCausalLM(cfg)
    names = [(k, list(v.shape)) for k, v in meta.state_dict().items() if "rotary" not in k]
    shards, cur, size = [], [], 0
    for k, shape in names:  # HF-style: fill a shard up to the size limit
        n = nbytes("BF16", shape)
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((k, "BF16", shape))
        size += n
    shards.append(cur)
    tmp = d + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    order = {k: i for i, (k, _) in enumerate(names)}

    def make(name):
        g = torch.Generator().manual_seed(seed * 100003 + order[name])
        shape = dict(names)[name]
        t = torch.randn(shape, generator=g, dtype=torch.bfloat16)
        if name.endswith("norm.weight"):
            return t.mul_(0.1).add_(1.0)
        return t.mul_(0.02)

    weight_map, total = {}, 0
    for i, entries in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(os.path.join(tmp, fname), entries, make, {"format": "pt"})
        weight_map.update({k: fname for k, _, _ in entries})
        print(f"  wrote {fname} ({len(entries)} tensors)", flush=True)
    with open(os.path.join(tmp, INDEX), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    cfg.save_pretrained(tmp)
    os.replace(tmp, d)
    return total / 1e9


# a ru_maxrss counts what a process inherited at fork, and RUSAGE_CHILDREN is the largest of all
# children: the prune's peak is measured by a stdlib-only launcher whose one child is the prune
MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
print("MEASURE " + json.dumps({"rc": rc, "wall": time.perf_counter() - t,
      "rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}), flush=True)
"""

LOAD = """
import sys, time, torch, resource
from transformers import LlamaForCausalLM
from core.adapters.hf import load_pruned  # from_pretrained when the config describes the model
t = time.perf_counter()
m = load_pruned(LlamaForCausalLM, sys.argv[1], low_cpu_mem_usage=True, dtype=torch.bfloat16).eval()
uniform = (getattr(m.config, "prunestudio", None) or {}).get("uniform", True)
print("loaded with " + ("from_pretrained" if uniform else "core.adapters.hf.load_pruned (the "
      "config cannot describe the pruned heads)"))
t_load = time.perf_counter() - t
ids = torch.randint(0, m.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
t = time.perf_counter()
with torch.no_grad():
    y = m(ids).logits
print(f"load {t_load:.1f} s, forward (1x8 tokens) {time.perf_counter() - t:.1f} s, logits "
      f"{tuple(y.shape)} finite {bool(torch.isfinite(y).all())}, "
      f"params {sum(p.numel() for p in m.parameters()) / 1e9:.2f} B, "
      f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
"""


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="work folder outside the repository")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--shard-gb", type=float, default=5.0, help="shard size limit (HF's 5 GB)")
    ap.add_argument("--mlp-ratio", type=float, default=0.5)
    ap.add_argument("--kv-ratio", type=float, default=0.25)
    ap.add_argument("--clean", action="store_true", help="delete the checkpoints at the end")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    d = os.path.abspath(a.dir)
    if d == ROOT or d.startswith(ROOT + os.sep):
        sys.exit("--dir must lie outside the repository")
    os.makedirs(d, exist_ok=True)
    src, out = os.path.join(d, "src"), os.path.join(d, "out")
    if a.generate_only:
        import resource
        t = time.perf_counter()
        gb = generate(src, a.layers, int(a.shard_gb * 1e9))
        print(f"generated {gb:.2f} GB in {time.perf_counter() - t:.0f} s (generator peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB)", flush=True)
        return 0
    if not os.path.isdir(src):
        r = subprocess.run([sys.executable, __file__, "--dir", d, "--layers", str(a.layers),
                            "--shard-gb", str(a.shard_gb), "--generate-only"])
        if r.returncode:
            return r.returncode
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "prune", f"hf:{src}", "--stream",
           "--mlp-ratio", str(a.mlp_ratio), "--kv-ratio", str(a.kv_ratio), "-o", out + "/"]
    print("$ " + " ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-c", MEASURE, *cmd], env=env, capture_output=True,
                       text=True)
    text, _, measured = p.stdout.rpartition("MEASURE ")
    print(text, end="", flush=True)
    sys.stderr.write(p.stderr)
    m = json.loads(measured)
    print(f"prune: exit {m['rc']}, wall {m['wall']:.0f} s, peak RSS {m['rss_gb']:.2f} GB "
          f"({'within' if m['rss_gb'] <= 3 else 'ABOVE'} the 3 GB goal)", flush=True)
    if m["rc"] == 0:
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 1e9
        print(f"output: {size:.2f} GB", flush=True)
        subprocess.run([sys.executable, "-c", LOAD, out], env=env)
    if a.clean:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    return m["rc"]


if __name__ == "__main__":
    sys.exit(main())
