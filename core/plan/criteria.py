"""Group-level importance: one score per channel of a group, aggregated over every member slice.

Scores are normalised within each group (divided by the group's mean) so that groups of different
size and make-up can be ranked against each other for global pruning.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from core.errors import PlanError

CRITERIA = ("l1", "l2", "random", "bn_scale", "taylor", "lamp")


def _per_index(t: torch.Tensor, dim: int, p: float) -> np.ndarray:
    t = t.detach().float()
    other = [d for d in range(t.ndim) if d != dim]
    v = t.abs().pow(p)
    return (v.sum(dim=other) if other else v).cpu().numpy().astype(np.float64)


def _scatter(group, member, values: np.ndarray, out: np.ndarray):
    m = member.index_map >= 0
    np.add.at(out, member.index_map[m], values[m])


def group_scores(dg, model: nn.Module, criterion: str = "l2", calibration: Callable | None = None,
                 seed: int = 0, normalise: bool = True) -> dict[int, np.ndarray]:
    """Channel scores of every prunable group (higher = more important)."""
    if criterion not in CRITERIA:
        raise PlanError(f"unknown importance criterion '{criterion}' (choose from {', '.join(CRITERIA)})")
    tensors = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    grads = _taylor_grads(model, calibration) if criterion == "taylor" else None
    rng = np.random.default_rng(seed)
    scores = {}
    for g in dg.prunable_groups:
        s = np.zeros(g.n_channels)
        if criterion == "random":
            s = rng.random(g.n_channels)
        else:
            for m in g.members:
                t = tensors.get(m.slot.tensor_name)
                if t is None:
                    continue  # buffers (running stats) and attribute-only slots carry no importance
                if criterion == "bn_scale":
                    mod = modules.get(m.slot.module_name)
                    if not (isinstance(mod, (nn.modules.batchnorm._NormBase, nn.GroupNorm))
                            and m.slot.attr == "weight"):
                        continue
                    vals = _per_index(t, m.slot.dim, 1)
                elif criterion == "taylor":
                    gr = grads.get(m.slot.tensor_name)
                    if gr is None:
                        continue
                    vals = _per_index(t.detach() * gr, m.slot.dim, 1)
                elif criterion == "lamp":
                    vals = _lamp(_per_index(t, m.slot.dim, 2))
                else:
                    vals = _per_index(t, m.slot.dim, 1 if criterion == "l1" else 2)
                _scatter(g, m, vals, s)
            if criterion == "bn_scale" and not s.any():  # no norm layer in this group: fall back
                for m in g.members:
                    t = tensors.get(m.slot.tensor_name)
                    if t is not None:
                        _scatter(g, m, _per_index(t, m.slot.dim, 2), s)
        if normalise:
            mean = s[g.prunable].mean() if g.prunable.any() else 0.0
            s = s / mean if mean > 0 else s
        scores[g.id] = s
    return scores


def _lamp(sq: np.ndarray) -> np.ndarray:
    """Layer-adaptive magnitude: a channel's squared norm over the sum of the norms not smaller."""
    order = np.argsort(sq)
    tail = np.cumsum(sq[order][::-1])[::-1]
    out = np.empty_like(sq)
    out[order] = sq[order] / np.maximum(tail, 1e-12)
    return out


def _taylor_grads(model: nn.Module, calibration) -> dict[str, torch.Tensor]:
    """Gradients for first-order Taylor scores. ``calibration()`` returns (inputs, loss_fn);
    loss_fn(output) -> scalar. The model's own gradients are left as they were."""
    if calibration is None:
        raise PlanError("the taylor criterion needs a calibration batch")
    from core.trace.inputs import as_example_inputs
    from core.trace.tracer import flatten_outputs

    inputs, loss_fn = calibration()
    ex = as_example_inputs(inputs)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    mode = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for p in params:
            p.grad = None
        with torch.enable_grad():
            out = ex.call(model)
            loss = loss_fn(out) if loss_fn else sum(t.float().pow(2).mean() for t in flatten_outputs(out))
            if not loss.requires_grad:  # the outputs do not depend on any parameter
                return {}
            loss.backward()
        return {n: p.grad.detach().clone() for n, p in model.named_parameters(remove_duplicate=False)
                if p.grad is not None}
    finally:
        for p, g in zip(params, saved):
            p.grad = g
        for m, t in mode.items():
            m.training = t
