"""Prune a Hugging Face checkpoint larger than memory, one tensor at a time.

1. The architecture is built from ``config.json`` on the meta device and analysed there (the
   engine's usual trace: no weight is allocated). Of its coupled groups, those whose producing
   layers all lie in one attention block (key/value heads with their query heads) or one MLP
   block (the intermediate width, gate/up/down together) are pruned; the hidden size (the
   residual stream, approximate through the norms) is left alone.
2. Importance is the engine's own criterion (:data:`core.plan.criteria.CRITERIA`: l1, l2, lamp),
   computed per member slice as each tensor is read from the memory-mapped shards and summed in
   the same order as the in-memory scorer, so the plan is the one ``make_plan`` would choose for
   the loaded model.
3. The plan is the engine's (:func:`core.plan.planner.plan_for_ratio`, one ratio for MLP groups
   and one for attention groups, uniform across layers so ``from_pretrained`` loads the result);
   the pruned config comes from slicing the meta model (:func:`core.adapters.hf.sync_hf`).
4. Every shard is rewritten tensor by tensor (:func:`core.io.hf.shards.write_shard`) into a temporary
   directory committed at the end (:func:`core.io.atomic.atomic_write_dir`); the index, config and
   the other files (tokenizer, generation config) follow. The input directory is only read.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.errors import LoadError, PlanError, PruneStudioError
from core.io.atomic import atomic_write_dir, stop_check
from core.io.hf.shards import (INDEX, nbytes, open_shard, read_tensor, shard_layout, tensor_info,
                            write_shard)

SCORED = ("l1", "l2", "lamp")  # criteria that need nothing but the tensor itself
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_META_SEQ = 8  # tokens of the meta-device trace (shapes only)


def _noop(*_a, **_k):
    pass


@dataclass
class StreamSettings:
    mlp_ratio: float = 0.5  # fraction of each MLP's intermediate width removed
    kv_ratio: float = 0.0  # fraction of each attention block's key/value heads removed
    importance: str = "l2"
    round_to: int = 1

    def validate(self) -> None:
        for name in ("mlp_ratio", "kv_ratio"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise PlanError(f"{name.replace('_', ' ')} must be in [0, 1), got {v}")
        if self.mlp_ratio == 0 and self.kv_ratio == 0:
            raise PlanError("nothing to prune: give an MLP ratio or a KV-head ratio above 0")
        if self.importance not in SCORED:
            raise PlanError(f"streamed pruning scores with {', '.join(SCORED)} (criteria that "
                            f"read only the weights), not '{self.importance}'")
        if self.round_to < 1:
            raise PlanError(f"round_to must be a positive integer, got {self.round_to}")


@dataclass
class StreamPlan:
    """What streaming needs to write the pruned checkpoint, all of it small."""
    path: str  # the input directory
    model: nn.Module  # meta device, as built from config.json
    dg: object  # its DependencyGraph
    shards: dict  # shard file -> tensor names (file order)
    index_meta: dict
    kinds: dict  # group id -> "mlp" | "kv"
    scores: dict  # group id -> channel scores (normalised as the engine does)
    plan: object  # PruningPlan
    kept: dict  # tensor -> dim -> kept indices
    pruned: nn.Module  # meta device, pruned, config rewritten
    settings: StreamSettings = field(default_factory=StreamSettings)

    @property
    def uniform(self) -> bool:
        return bool((getattr(self.pruned.config, "prunestudio", None) or {}).get("uniform", True))

    def params(self) -> tuple[int, int]:
        return _n_params(self.model), _n_params(self.pruned)

    def widths(self) -> dict:
        """Sizes before -> after (those pruning changes), from the pruned tensors: also when the
        config cannot describe them (it then keeps the original sizes, ``uniform`` False)."""
        keys = ("intermediate_size", "num_attention_heads", "num_key_value_heads")
        a = self.model.config
        b = (getattr(self.pruned.config, "prunestudio", None) or {}).get("sizes", {})
        return {k: (getattr(a, k), b[k]) for k in keys
                if getattr(a, k, None) is not None and getattr(a, k) != b.get(k, getattr(a, k))}


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def analyze_hf_dir(path: str, trust=False, progress=None, should_stop=None):
    """``(meta model, DependencyGraph)`` of the ``hf:`` directory ``path``: built from its
    config on the meta device and traced there; no weight is read."""
    from core.io.hf.source import build_hf_meta
    from core.pipeline import analyze_model
    from core.trace.inputs import make_inputs
    model = build_hf_meta(path, trust).eval()
    ex = make_inputs(f"1,{_META_SEQ}", "int64").to("meta")
    return model, analyze_model(model, ex, probe=False, progress=progress, should_stop=should_stop)


def target_groups(model, dg) -> dict[int, str]:
    """Group id -> "kv" (attention heads) or "mlp" (intermediate width), for the exact prunable
    groups whose producing layers all lie in one attention or one MLP block."""
    from core.adapters.hf import block_kinds
    blocks = block_kinds(model)

    def block_of(name):
        while name:
            name = name.rpartition(".")[0]
            if name in blocks:
                return name
        return None

    out = {}
    for g in dg.prunable_groups:
        outs = {block_of(m.slot.module_name) for m in g.members if m.slot.role == "out"}
        if len(outs) != 1 or None in outs or not g.exact[g.prunable].all():
            continue
        out[g.id] = "kv" if blocks[outs.pop()] == "attn" else "mlp"
    return out


def stream_scores(path: str, shards: dict, model, dg, kinds: dict, importance: str = "l2",
                  progress=None, should_stop=None) -> dict[int, np.ndarray]:
    """Channel scores of the ``kinds`` groups, reading each tensor once from the shards and
    keeping only its per-index scores; equal to ``core.plan.criteria.group_scores`` on the
    loaded model (same per-slice values, summed over members in the same order)."""
    from core.plan.criteria import CRITERIA
    progress = progress or _noop
    wanted: dict[str, list] = {}
    for gid in kinds:
        for i, m in enumerate(dg.groups[gid].members):
            wanted.setdefault(m.slot.tensor_name, []).append((gid, i))
    scorer = CRITERIA.get(importance)(model, None, np.random.default_rng(0))
    vals: dict[tuple[int, int], np.ndarray] = {}
    for n, (fname, keys) in enumerate(shards.items()):
        for k in keys:
            stop_check(should_stop)
            refs = wanted.get(k)
            if not refs:
                continue
            t = read_tensor(os.path.join(path, fname), k)
            for gid, i in refs:
                v = scorer.slice_scores(t, dg.groups[gid].members[i])
                if v is not None:
                    vals[(gid, i)] = v
            del t
        progress("scores", n + 1, len(shards), f"scored {fname}")
    params = {k for k, _ in model.named_parameters(remove_duplicate=False)}
    scores = {}
    for gid in kinds:
        g = dg.groups[gid]
        s = np.zeros(g.n_channels)
        for i, m in enumerate(g.members):
            v = vals.get((gid, i))
            if v is None:
                if m.slot.tensor_name in params:
                    raise LoadError(f"{path}: the checkpoint has no tensor {m.slot.tensor_name}")
                continue  # buffers and attribute-only slots carry no importance
            sel = m.index_map >= 0
            np.add.at(s, m.index_map[sel], v[sel])
        mean = s[g.prunable].mean() if g.prunable.any() else 0.0
        scores[gid] = s / mean if mean > 0 else s
    return scores


def make_stream_plan(path: str, settings: StreamSettings, trust=False, progress=None,
                     should_stop=None) -> StreamPlan:
    """Analyse on the meta device, score by streaming the shards, plan; nothing is written."""
    from core.io.hf.source import hf_local_dir
    from core.plan.planner import PlanSettings, plan_for_ratio
    from core.prune.apply import apply_kept
    settings.validate()
    d = hf_local_dir(path)
    if d is None or not os.path.isfile(os.path.join(d, "config.json")):
        from core.io.hf.source import hf_class_and_config
        hf_class_and_config(path, trust)  # raises the hf: source's error (no directory, no config)
    shards, index_meta = shard_layout(d)  # (no safetensors: refused before the analysis)
    model, dg = analyze_hf_dir(d, trust, progress, should_stop)
    _check_shapes(d, shards, model)
    kinds = target_groups(model, dg)
    if not kinds:
        raise PlanError(f"{d}: no attention-head or MLP-width group found to prune "
                        f"({type(model).__name__})")
    scores = stream_scores(d, shards, model, dg, kinds, settings.importance, progress, should_stop)
    # one plan per kind: --round-to rounds the MLP width, never a head count
    plan = None
    for kind, ratio, round_to in (("mlp", settings.mlp_ratio, settings.round_to),
                                  ("kv", settings.kv_ratio, 1)):
        ps = PlanSettings(ratio=0.0, importance=settings.importance, round_to=round_to,
                          overrides={dg.groups[g].root: ratio for g, k in kinds.items() if k == kind})
        part = plan_for_ratio(dg, scores, 0.0, ps)
        if plan is None:
            plan = part
        else:
            plan.removed.update(part.removed)
    plan.settings.update(round_to=settings.round_to, stream=dict(settings.__dict__))
    kept = plan.kept_indices(dg)
    pruned = apply_kept(model, kept)  # meta tensors: the shapes and the rewritten config
    return StreamPlan(d, model, dg, shards, index_meta, kinds, scores, plan, kept, pruned, settings)


def _check_shapes(d: str, shards: dict, model) -> None:
    """Every checkpoint tensor is one of the model built from config.json, with its shape (the
    plan's indices are computed on that model: a tensor of another shape would be cut wrong)."""
    known = {k: list(v.shape) for k, v in model.state_dict().items()}
    for fname, keys in shards.items():
        with open_shard(os.path.join(d, fname)) as h:
            for k in keys:
                if k not in known:
                    raise LoadError(f"{d}: the checkpoint holds {k}, which "
                                    f"{type(model).__name__} built from config.json does not have")
                shape = tensor_info(h, k)[1]
                if shape != known[k]:
                    raise LoadError(f"{d}: {k} has shape {shape} in {fname}, config.json gives "
                                    f"{known[k]} (a checkpoint pruned unevenly cannot be streamed)")


def _prune_tensor(t: torch.Tensor, dims: dict | None) -> torch.Tensor:
    """The kept slices of ``t`` (dims in increasing order, as ``apply_kept`` slices)."""
    for d, keep in sorted((dims or {}).items()):
        t = t.index_select(d, torch.as_tensor(keep, dtype=torch.long))
    return t


def write_stream_plan(sp: StreamPlan, out: str, force: bool = False, progress=None,
                      should_stop=None) -> None:
    """Write the pruned checkpoint of ``sp`` into the directory ``out`` (atomically: a temporary
    sibling committed at the end; an existing ``out`` is replaced only with ``force`` and only if
    it is a Hugging Face model directory; the input is never written)."""
    from core.io.hf.directory import check_hf_destination
    progress = progress or _noop
    want = {k: list(v.shape) for k, v in sp.pruned.state_dict().items()}

    def write(tmp):
        total = 0
        for n, (fname, keys) in enumerate(sp.shards.items()):
            with open_shard(os.path.join(sp.path, fname)) as h:
                entries = []
                for k in keys:
                    dtype, shape = tensor_info(h, k)
                    for d, keep in sp.kept.get(k, {}).items():
                        shape[d] = len(keep)
                    entries.append((k, dtype, shape))
                meta = h.metadata() or {"format": "pt"}
            shard = os.path.join(sp.path, fname)
            total += write_shard(os.path.join(tmp, fname), entries,
                                 lambda k, p=shard: _prune_tensor(read_tensor(p, k), sp.kept.get(k)),
                                 meta, should_stop)
            progress("write", n + 1, len(sp.shards), f"wrote {fname}")
        if os.path.isfile(os.path.join(sp.path, INDEX)):
            index = {"metadata": {**sp.index_meta, "total_size": total},
                     "weight_map": {k: f for f, keys in sp.shards.items() for k in keys}}
            with open(os.path.join(tmp, INDEX), "w", encoding="utf-8") as f:
                json.dump(index, f, indent=2, sort_keys=True)
                f.write("\n")
        from core.io.hf.source import hf_quiet
        with hf_quiet():
            sp.pruned.config.save_pretrained(tmp)
        _copy_other_files(sp.path, tmp)

    def check(tmp):
        for fname, keys in sp.shards.items():
            with open_shard(os.path.join(tmp, fname)) as h:
                if sorted(h.keys()) != sorted(keys):
                    raise PruneStudioError(f"{fname} was written with other tensors than planned")
                for k in keys:
                    dtype, shape = tensor_info(h, k)
                    if k in want and shape != want[k]:
                        raise PruneStudioError(f"{fname}: {k} has shape {shape}, the pruned "
                                               f"model needs {want[k]}")

    atomic_write_dir(out, write, check, lambda: check_hf_destination(out, force, sp.path),
                     should_stop=should_stop)


def _copy_other_files(src: str, dst: str) -> None:
    """Tokenizer, generation config, README...: every top-level file that is not a weight, the
    index or config.json (links are followed: a hub cache snapshot holds links)."""
    for name in sorted(os.listdir(src)):
        p = os.path.join(src, name)
        if (name in (INDEX, "config.json") or name.endswith(_WEIGHTS) or name.startswith(".")
                or not os.path.isfile(p)):
            continue
        shutil.copyfile(p, os.path.join(dst, name))


def output_bytes(sp: StreamPlan) -> int:
    """Bytes of the pruned weights (the shards' data), known before writing."""
    total = 0
    for fname, keys in sp.shards.items():
        with open_shard(os.path.join(sp.path, fname)) as h:
            for k in keys:
                dtype, shape = tensor_info(h, k)
                for d, keep in sp.kept.get(k, {}).items():
                    shape[d] = len(keep)
                total += nbytes(dtype, shape)
    return total


def stream_prune_hf(path: str, out: str, settings: StreamSettings, trust=False, force=False,
                    progress=None, should_stop=None) -> StreamPlan:
    """Prune the Hugging Face directory ``path`` into ``out`` without holding the model: see the
    module docstring. Returns the plan (sizes before/after, the pruned config)."""
    from core.io.hf.directory import check_hf_destination
    check_hf_destination(out, force, path)  # refused before the analysis, not after it
    sp = make_stream_plan(path, settings, trust, progress, should_stop)
    write_stream_plan(sp, out, force, progress, should_stop)
    return sp
