"""The planner estimates FLOPs from kept *counts* (PruningPlan.kept_counts) and skips the
empty-member repair when a group loses fewer channels than its smallest member maps. Both must
agree with the index lists the prune applies."""
import numpy as np
import pytest
import torch
from torch import nn

from core.errors import PlanError
from core.pipeline import analyze_model
from core.plan.planner import PlanSettings, plan_from_counts
from core.prune.apply import PruningPlan


class Dense(nn.Module):
    """Two dense layers: their outputs are concatenated, so later slots are shared by groups."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 6, 3, padding=1)
        self.b = nn.Conv2d(14, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(19)
        self.head = nn.Conv2d(19, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.a(x)], 1)
        x = torch.cat([x, self.b(x)], 1)
        return self.head(torch.relu(self.bn(x)))


class Halves(nn.Module):
    """An 8-channel conv added to the concatenation of two 4-channel convs: one group of 8
    channels in which each half-conv's member maps only its 4."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.stem(x) + torch.cat([self.left(x), self.right(x)], 1))


def _reference_counts(dg, removed: dict) -> dict:
    """Independently: every slot position whose channel any group removes is dropped."""
    drops = {}
    for gid, chans in removed.items():
        rm = set(int(c) for c in chans)
        for m in dg.groups[gid].members:
            key = (m.slot.tensor_name, m.slot.dim)
            hit = np.array([int(c) in rm for c in m.index_map])
            if hit.any():
                drops[key] = drops.get(key, np.zeros(len(hit), bool)) | hit
    out = {}
    for (name, dim), d in drops.items():
        out.setdefault(name, {})[dim] = int((~d).sum())
    return out


@pytest.mark.parametrize("seed", range(5))
def test_kept_counts_agree_with_kept_indices_on_shared_slots(seed):
    model = Dense().eval()
    dg = analyze_model(model, torch.randn(1, 3, 8, 8))
    assert len(dg.prunable_groups) >= 3  # stem, a and b each feed the shared bn/head slots
    rng = np.random.default_rng(seed)
    removed = {}
    for g in dg.prunable_groups:
        idx = np.flatnonzero(g.prunable)
        k = int(rng.integers(1, idx.size))
        removed[g.id] = sorted(rng.choice(idx, k, replace=False).tolist())
    plan = PruningPlan(removed)
    counts = plan.kept_counts(dg)
    assert counts == {n: {d: len(k) for d, k in dims.items()} for n, dims in plan.kept_indices(dg).items()}
    assert counts == _reference_counts(dg, removed)
    assert counts["bn.weight"][0] < 19  # the shared slot lost channels of several groups


def test_emptying_a_tensor_is_refused_by_counts_as_by_indices():
    model = Dense().eval()
    dg = analyze_model(model, torch.randn(1, 3, 8, 8))
    g = next(g for g in dg.prunable_groups if g.n_channels == 8)
    plan = PruningPlan({g.id: list(range(8))})
    for ask in (plan.kept_indices, plan.kept_counts):
        with pytest.raises(PlanError, match="removes every channel"):
            ask(dg)


def test_a_member_emptied_by_the_plan_keeps_its_best_channel():
    model = Halves().eval()
    dg = analyze_model(model, torch.randn(1, 3, 8, 8))
    g = next(g for g in dg.prunable_groups if g.n_channels == 8)
    assert g.fewest_member_channels == 4
    scores = {g.id: np.array([0.1, 0.2, 0.3, 0.4, 5, 6, 7, 8])}
    settings = PlanSettings(ratio=None, target_flops=0.1)
    # three of the left half: nothing emptied, removed as chosen
    plan = plan_from_counts(dg, scores, {g.id: 3}, settings, {})
    assert plan.removed[g.id] == [0, 1, 2]
    # all four: the left conv would lose every output; its best channel stays
    plan = plan_from_counts(dg, scores, {g.id: 4}, settings, {})
    assert plan.removed[g.id] == [0, 1, 2]


@pytest.mark.parametrize("bad", [-1, 8, 9, 100])
def test_channel_indices_outside_a_group_are_refused_in_one_line(bad):
    model = Dense().eval()
    dg = analyze_model(model, torch.randn(1, 3, 8, 8))
    g = next(g for g in dg.prunable_groups if g.n_channels == 8)
    plan = PruningPlan({g.id: [0, bad]})
    for ask in (plan.kept_indices, plan.kept_counts):
        with pytest.raises(PlanError, match="outside 0..7"):
            ask(dg)
