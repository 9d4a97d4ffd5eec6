"""Sparse learning: the DepGraph paper's group-level norm regulariser over coupled groups.

For a coupled group g with channels k, every member slice (the conv's output filter, the BN's
scale and shift, the next conv's input slice, ...) contributes to the channel's importance

    I(g, k) = sum over members w of ||w[k]||^2

and the regulariser is R(g) = sum_k gamma_k * I(g, k) with

    gamma_k = 2 ** (alpha * (I_max - I(g, k)) / (I_max - I_min))

so the least important channels of a group are pushed hardest (up to 2**alpha times). gamma is a
constant weight (computed without gradient); R is a torch expression over the model's own
parameters, so it backpropagates into every member at once and whole groups shrink together.
The total is scaled by ``lam`` times a growing schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class _Slice:
    param: torch.Tensor
    dim: int
    positions: torch.Tensor  # indices along dim that belong to this group
    channels: torch.Tensor  # the group channel of each position


class GroupSparsity:
    """The regulariser for ``model`` (parameters are resolved by name from the dependency graph
    built on this model or an identical copy of it)."""

    def __init__(self, model: nn.Module, dg, lam: float = 5e-4, alpha: float = 4.0,
                 schedule: str = "linear", warmup: float = 0.5, groups=None):
        if schedule not in ("constant", "linear", "exp"):
            raise ValueError(f"sparsity schedule must be constant, linear or exp, got '{schedule}'")
        if lam < 0 or alpha < 0:
            raise ValueError(f"sparsity strength and alpha must be >= 0 (got {lam}, {alpha})")
        self.lam, self.alpha, self.schedule, self.warmup = float(lam), float(alpha), schedule, warmup
        params = dict(model.named_parameters(remove_duplicate=False))
        self.groups = []  # (group id, root, n_channels, prunable mask tensor, [slices])
        for g in (groups if groups is not None else dg.prunable_groups):
            slices = []
            for m in g.members:
                p = params.get(m.slot.tensor_name)
                if p is None or not p.requires_grad or not p.is_floating_point():
                    continue
                mask = m.index_map >= 0
                if not mask.any():
                    continue
                pos = np.nonzero(mask)[0]
                slices.append(_Slice(p, m.slot.dim, torch.as_tensor(pos, device=p.device),
                                     torch.as_tensor(m.index_map[pos], device=p.device)))
            if slices:
                self.groups.append((g.id, g.root, g.n_channels,
                                    torch.as_tensor(np.asarray(g.prunable, bool)), slices))

    # ------------------------------------------------------------------ importance
    @staticmethod
    def _importance(n_channels: int, slices) -> torch.Tensor:
        imp = None
        for s in slices:
            w = s.param
            sq = w.pow(2)
            other = [d for d in range(w.ndim) if d != s.dim]
            per = sq.sum(dim=other) if other else sq
            per = per.index_select(0, s.positions)
            if imp is None:
                imp = torch.zeros(n_channels, dtype=per.dtype, device=per.device)
            imp = imp.index_add(0, s.channels, per)
        return imp

    def importances(self) -> dict[int, torch.Tensor]:
        """I(g, k) per group (detached)."""
        with torch.no_grad():
            return {gid: self._importance(n, sl).detach() for gid, _, n, _, sl in self.groups}

    def strength(self, frac: float) -> float:
        """lambda at training progress ``frac`` in [0, 1]: grows to lam over the first ``warmup``."""
        if self.schedule == "constant" or self.warmup <= 0:
            return self.lam
        t = min(1.0, max(0.0, frac / self.warmup))
        if self.schedule == "linear":
            return self.lam * t
        return self.lam * (math.pow(2.0, 10 * t) - 1) / (2 ** 10 - 1)  # exponential growth

    def penalty(self, frac: float = 1.0) -> torch.Tensor:
        """lambda(frac) * sum_g R(g); differentiable w.r.t. the model's parameters."""
        lam = self.strength(frac)
        total = None
        for _, _, n, prunable, sl in self.groups:
            imp = self._importance(n, sl)
            with torch.no_grad():
                d = imp.detach()
                valid = prunable.to(d.device)
                if not valid.any():
                    continue
                lo, hi = d[valid].min(), d[valid].max()
                span = hi - lo
                if span > 0:
                    gamma = torch.pow(2.0, self.alpha * (hi - d) / span)
                else:
                    gamma = torch.ones_like(d)
                gamma = torch.where(valid, gamma, torch.zeros_like(gamma))
            r = (gamma * imp).sum()
            total = r if total is None else total + r
        if total is None:
            return torch.zeros(())
        return lam * total

    # ------------------------------------------------------------------ metric
    def channel_norms(self) -> dict[int, np.ndarray]:
        return {gid: imp.sqrt().cpu().numpy() for gid, imp in self.importances().items()}

    def sparsity(self, threshold: float = 0.05, relative: bool = True) -> float:
        """Fraction of prunable group channels whose norm sqrt(I(g,k)) is below ``threshold``
        (relative to the largest channel norm of its group when ``relative``)."""
        small, total = 0, 0
        for gid, imp in self.importances().items():
            prunable = next(p for g, _, _, p, _ in self.groups if g == gid).numpy()
            norms = imp.sqrt().cpu().numpy()[prunable]
            if norms.size == 0:
                continue
            ref = norms.max() if relative else 1.0
            small += int((norms < threshold * ref).sum())
            total += norms.size
        return small / total if total else 0.0


def group_sparsity(model: nn.Module, dg, threshold: float = 0.05, relative: bool = True) -> float:
    """Sparsity of the coupled groups of ``model`` (see :meth:`GroupSparsity.sparsity`)."""
    return GroupSparsity(model, dg).sparsity(threshold, relative)
