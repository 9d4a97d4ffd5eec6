"""torch_geometric's GCNConv, GATConv (4 concatenated heads, then a head-averaging layer),
SAGEConv (mean, max) and GINConv, pruned and checked with the zeroed-group oracle (plain-torch
scatter/index_add message passing is in test_scatter.py).

What the engine does with them (core/ops/scatter.py): a scatter moves whole rows, so the
feature dim maps 1:1 from the messages to the aggregated nodes and every reduction (sum, mean,
max) is exact. GAT's ``lin(x).view(-1, H, C)`` keeps the head count and shrinks the per-head
dim: channel j is removed from every head together (with ``att_src``/``att_dst`` column j), so
heads stay consistent and the attention coefficients (a sum over the kept channels) are exact.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("torch_geometric")  # a guard for installs without the test extra (CI has it)
from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import GRAPH_FEATURES, check_oracle, randomize  # noqa: E402
from helpers import random_graph as _graph  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402

C_IN = GRAPH_FEATURES


def _check(model, inputs, seed=0, ratio=0.5, max_flops=0.8):
    m = randomize(model.eval(), seed=seed).double()
    dg, res = check_oracle(m, inputs, PlanSettings(ratio=ratio), tol=1e-9, expect_exact=True)
    assert not dg.blocked_ops, dg.blocked_ops
    assert res.after.flops < max_flops * res.before.flops, (res.before.flops, res.after.flops)
    assert res.after.params < res.before.params
    return dg, res


class GCN(nn.Module):
    def __init__(self, hid=16, nclass=4):
        super().__init__()
        self.c1, self.c2, self.out = GCNConv(C_IN, hid), GCNConv(hid, hid), nn.Linear(hid, nclass)

    def forward(self, x, ei):
        x = F.relu(self.c1(x, ei))
        return self.out(F.relu(self.c2(x, ei)))


class GAT(nn.Module):
    def __init__(self, dim=8, heads=4, nclass=4):
        super().__init__()
        self.c1 = GATConv(C_IN, dim, heads=heads, concat=True)
        self.c2 = GATConv(dim * heads, dim, heads=heads, concat=True)
        self.c3 = GATConv(dim * heads, dim, heads=heads, concat=False)  # heads averaged
        self.out = nn.Linear(dim, nclass)

    def forward(self, x, ei):
        x = F.elu(self.c1(x, ei))
        x = F.elu(self.c2(x, ei))
        return self.out(F.elu(self.c3(x, ei)))


class SAGE(nn.Module):
    def __init__(self, hid=16, nclass=4):
        super().__init__()
        self.c1, self.c2 = SAGEConv(C_IN, hid), SAGEConv(hid, hid, aggr="max")
        self.out = nn.Linear(hid, nclass)

    def forward(self, x, ei):
        x = F.relu(self.c1(x, ei))  # mean aggregation
        return self.out(F.relu(self.c2(x, ei)))


class GIN(nn.Module):
    def __init__(self, hid=16, nclass=4):
        super().__init__()
        mlp = lambda i: nn.Sequential(nn.Linear(i, hid), nn.ReLU(), nn.Linear(hid, hid))  # noqa: E731
        self.c1, self.c2 = GINConv(mlp(C_IN), train_eps=True), GINConv(mlp(hid), train_eps=True)
        self.out = nn.Linear(hid, nclass)

    def forward(self, x, ei):
        x = F.relu(self.c1(x, ei))
        return self.out(F.relu(self.c2(x, ei)))


def test_pyg_gcn():
    x, ei = _graph()
    _check(GCN(), (x, ei), max_flops=0.7)


def test_pyg_gat_heads():
    x, ei = _graph(seed=2)
    dg, res = _check(GAT(), (x, ei), seed=2)
    # per-head channels go, the head count stays: lin rows are removed as channel j of every head
    for name in ("c1", "c2", "c3"):
        conv = getattr(res.model, name)
        assert conv.heads == 4
        c = conv.att_src.shape[-1]
        assert 0 < c < 8 and conv.att_dst.shape == (1, 4, c)
        assert conv.lin.weight.shape[0] == 4 * c
        kept = res.kept[f"{name}.lin.weight"][0]
        per_head = [[k % 8 for k in kept if k // 8 == h] for h in range(4)]
        assert all(p == per_head[0] for p in per_head), per_head
    # the pruned layers run as GATConv with their new sizes (forward and backward)
    out = res.model(x, ei)
    out.sum().backward()
    assert torch.isfinite(res.model.c1.att_src.grad).all()


def test_pyg_sage_gin():
    x, ei = _graph(seed=3)
    _check(SAGE(), (x, ei), seed=3)
    _check(GIN(), (x, ei), seed=3)
