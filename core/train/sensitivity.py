"""Per-group sensitivity: prune each prunable group alone at a few ratios and measure how much the
validation loss (and accuracy) changes; then prune the insensitive groups more.

Each measurement physically prunes a copy of the model with a one-group plan (the group's
lowest-importance channels), so what is measured is exactly what pruning would do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from core.errors import Cancelled, PlanError
from core.train.evaluate import evaluate
from core.plan.criteria import group_scores
from core.prune.apply import PruningPlan, apply_kept


@dataclass
class GroupSensitivity:
    gid: int
    root: str
    channels: int
    ratios: list[float]
    losses: list[float]
    deltas: list[float]  # loss - base loss, per ratio
    top1: list[float | None]

    @property
    def score(self) -> float:
        """Mean loss increase over the ratios (higher = more sensitive)."""
        return float(np.mean(self.deltas)) if self.deltas else 0.0


@dataclass
class SensitivityResult:
    base_loss: float
    base_top1: float | None
    ratios: list[float]
    groups: list[GroupSensitivity] = field(default_factory=list)

    def by_group(self) -> dict[int, GroupSensitivity]:
        return {g.gid: g for g in self.groups}

    def to_json(self) -> dict:
        return {"base_loss": self.base_loss, "base_top1": self.base_top1, "ratios": self.ratios,
                "groups": [{"id": g.gid, "root": g.root, "channels": g.channels, "losses": g.losses,
                            "deltas": g.deltas, "top1": g.top1, "score": g.score}
                           for g in self.groups]}


def _n_remove(g, ratio: float) -> int:
    return min(int(math.floor(ratio * g.n_prunable + 1e-9)), g.n_prunable, g.n_channels - 1)


def group_sensitivity(model: nn.Module, dg, loader, ratios=(0.25, 0.5, 0.75), importance: str = "l2",
                      loss_fn=None, device="cpu", max_batches: int | None = None, groups=None,
                      progress=None, should_stop=None) -> SensitivityResult:
    """Loss change when each group alone loses ``ratio`` of its prunable channels."""
    ratios = [float(r) for r in ratios]
    for r in ratios:
        if not 0.0 < r < 1.0:
            raise PlanError(f"sensitivity ratios must be in (0, 1), got {r}")
    was = model.training
    model.eval()
    try:
        base = evaluate(model, loader, loss_fn, device, max_batches)
        scores = group_scores(dg, model, importance)
        todo = [g for g in dg.prunable_groups if groups is None or g.id in set(groups)]
        out = SensitivityResult(base.loss, base.top1, ratios)
        total = len(todo) * len(ratios)
        done = 0
        for g in todo:
            s = np.where(g.prunable, scores[g.id], np.inf)
            order = np.argsort(s, kind="stable")
            losses, deltas, tops = [], [], []
            for r in ratios:
                if should_stop is not None and should_stop():
                    raise Cancelled("cancelled by the user")
                n = _n_remove(g, r)
                if n <= 0:
                    losses.append(base.loss)
                    deltas.append(0.0)
                    tops.append(base.top1)
                else:
                    plan = PruningPlan({g.id: sorted(order[:n].tolist())})
                    try:
                        pruned = apply_kept(model, plan.kept_indices(dg))
                    except PlanError:
                        continue
                    ev = evaluate(pruned, loader, loss_fn, device, max_batches)
                    losses.append(ev.loss)
                    deltas.append(ev.loss - base.loss)
                    tops.append(ev.top1)
                done += 1
                if progress is not None:
                    progress("sensitivity", done, total, f"group {g.id} ({g.root}) at {r:.0%}")
            out.groups.append(GroupSensitivity(g.id, g.root, g.n_channels, ratios[:len(losses)],
                                               losses, deltas, tops))
        return out
    finally:
        model.train(was)


def ratios_from_sensitivity(result: SensitivityResult, dg=None, mean_ratio: float = 0.5,
                            min_ratio: float = 0.0, max_ratio: float = 0.9,
                            spread: float = 1.0) -> dict[str, float]:
    """Per-group ratio overrides for ``PlanSettings.overrides`` (keys: each group's root module).

    Groups are ranked by sensitivity score; the least sensitive get the highest ratio. Ratios are
    spread linearly around ``mean_ratio`` (``spread`` = 1: from mean*(1-1) to mean*(1+1), clipped
    to [min_ratio, max_ratio])."""
    if not 0.0 <= mean_ratio < 1.0:
        raise PlanError(f"mean ratio must be in [0, 1), got {mean_ratio}")
    gs = [g for g in result.groups if g.root]
    if not gs:
        return {}
    order = np.argsort([g.score for g in gs], kind="stable")  # least sensitive first
    n = len(gs)
    out: dict[str, float] = {}
    for rank, idx in enumerate(order):
        # rank 0 (least sensitive) -> mean*(1+spread); last -> mean*(1-spread)
        t = 1.0 - 2.0 * rank / (n - 1) if n > 1 else 0.0
        r = mean_ratio * (1.0 + spread * t)
        r = float(min(max_ratio, max(min_ratio, r)))
        root = gs[idx].root
        out[root] = min(out.get(root, r), r)
    return out
