"""Group-level importance: one score per channel of a group, aggregated over every member slice.

Scores are normalised within each group (divided by the group's mean) so that groups of different
size and make-up can be ranked against each other for global pruning.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from core.errors import Cancelled, PlanError
from core.registry import Registry

CRITERIA: Registry[type["Criterion"]] = Registry("importance criterion")


class Criterion:
    """One way to score channels. A criterion scores each member slice of a group
    (:meth:`slice_scores`: one value per index of that tensor dim); the group's score is the sum
    over its members, so a channel counts everywhere its removal reaches (DepGraph's group-level
    importance). Subclasses override :meth:`slice_scores`, or :meth:`group_scores` for criteria
    that are not sums over slices."""

    needs_gradients = False

    def __init__(self, model: nn.Module, grads: dict | None, rng: np.random.Generator):
        self.tensors = dict(model.named_parameters(remove_duplicate=False))
        self.modules = dict(model.named_modules())
        self.grads = grads or {}
        self.rng = rng

    def slice_scores(self, t: torch.Tensor, member) -> np.ndarray | None:
        raise NotImplementedError

    def group_scores(self, g) -> np.ndarray:
        s = np.zeros(g.n_channels)
        for m in g.members:
            t = self.tensors.get(m.slot.tensor_name)
            if t is None:
                continue  # buffers (running stats) and attribute-only slots carry no importance
            vals = self.slice_scores(t, m)
            if vals is not None:
                _scatter(g, m, vals, s)
        return s


@CRITERIA.register("l1")
class L1(Criterion):
    """Sum of absolute weights of every slice a channel owns."""

    def slice_scores(self, t, member):
        return _per_index(t, member.slot.dim, 1)


@CRITERIA.register("l2")
class L2(Criterion):
    """Sum of squared weights of every slice a channel owns (DepGraph's default group norm)."""

    def slice_scores(self, t, member):
        return _per_index(t, member.slot.dim, 2)


@CRITERIA.register("random")
class Random(Criterion):
    """Uniform random scores (seeded): the baseline every criterion should beat."""

    def group_scores(self, g):
        return self.rng.random(g.n_channels)


@CRITERIA.register("bn_scale")
class BNScale(Criterion):
    """|gamma| of the normalisation layers in the group (network slimming); groups without one
    fall back to L2."""

    def slice_scores(self, t, member):
        mod = self.modules.get(member.slot.module_name)
        if isinstance(mod, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) and member.slot.attr == "weight":
            return _per_index(t, member.slot.dim, 1)
        return None

    def group_scores(self, g):
        s = super().group_scores(g)
        return s if s.any() else L2.group_scores(self, g)  # no norm layer in this group


@CRITERIA.register("taylor")
class Taylor(Criterion):
    """First-order Taylor expansion |w * dL/dw| on a calibration batch."""

    needs_gradients = True

    def slice_scores(self, t, member):
        gr = self.grads.get(member.slot.tensor_name)
        return None if gr is None else _per_index(t.detach() * gr, member.slot.dim, 1)


@CRITERIA.register("lamp")
class LAMP(Criterion):
    """Layer-adaptive magnitude (Lee et al., ICLR 2021) applied per slice."""

    def slice_scores(self, t, member):
        return _lamp(_per_index(t, member.slot.dim, 2))


def _per_index(t: torch.Tensor, dim: int, p: float) -> np.ndarray:
    if t.ndim == 1 and p in (1, 2) and t.dtype == torch.float32 and t.device.type == "cpu":
        # a norm's or bias's own values: nothing to sum, the same float32 products in numpy
        try:
            x = t.detach().numpy()
        except (RuntimeError, TypeError):  # a view numpy cannot share (negative/conjugate bit)
            x = None
        if x is not None:
            return (x * x if p == 2 else np.abs(x)).astype(np.float64)
    t = t.detach().float()
    other = [d for d in range(t.ndim) if d != dim]
    # one pass for the common norms (bit-identical to abs().pow(p), which makes two copies)
    v = t * t if p == 2 else t.abs() if p == 1 else t.abs().pow(p)
    return (v.sum(dim=other) if other else v).cpu().numpy().astype(np.float64)


def _scatter(group, member, values: np.ndarray, out: np.ndarray):
    if member.in_order and values.size == out.size:  # index i is channel i: the same sums
        out += values
        return
    m = member.index_map >= 0
    idx = member.index_map[m]
    if idx.size < 2 or (np.diff(idx) > 0).all():  # distinct channels (the usual case): no add.at
        out[idx] += values[m]
    else:
        np.add.at(out, idx, values[m])


def group_scores(dg, model: nn.Module, criterion: str = "l2", calibration: Callable | None = None,
                 seed: int = 0, normalise: bool = True,
                 should_stop: Callable[[], bool] | None = None) -> dict[int, np.ndarray]:
    """Channel scores of every prunable group (higher = more important); ``should_stop()`` is
    asked before each group (:class:`Cancelled` when it says so)."""
    if criterion not in CRITERIA:
        raise PlanError(f"unknown importance criterion '{criterion}' (choose from {', '.join(CRITERIA)})")
    cls = CRITERIA.get(criterion)
    grads = _taylor_grads(model, calibration) if cls.needs_gradients else None
    scorer = cls(model, grads, np.random.default_rng(seed))
    scores = {}
    for g in dg.prunable_groups:
        if should_stop is not None and should_stop():
            raise Cancelled("importance scoring cancelled")
        s = scorer.group_scores(g)
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
