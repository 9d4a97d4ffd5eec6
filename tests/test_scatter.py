"""Scatter / index-add message passing on plain torch (core/ops/scatter.py), pruned and checked
with the zeroed-group oracle; torch_geometric's layers are in test_pyg.py."""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import GRAPH_FEATURES, check_oracle, randomize  # noqa: E402
from helpers import random_graph as _graph  # noqa: E402
from core.pipeline import analyze_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402

C_IN = GRAPH_FEATURES


def _check(model, inputs, seed=0):
    m = randomize(model.eval(), seed=seed).double()
    dg, res = check_oracle(m, inputs, PlanSettings(ratio=0.5), tol=1e-9, expect_exact=True)
    assert not dg.blocked_ops, dg.blocked_ops
    assert res.after.flops < 0.8 * res.before.flops, (res.before.flops, res.after.flops)
    return dg, res


class IndexAddGNN(nn.Module):
    """Sum aggregation with ``x.new_zeros(n, c).index_add_(0, dst, msg[src])``."""

    def __init__(self, hid=16, nclass=4):
        super().__init__()
        self.l1, self.l2, self.out = nn.Linear(C_IN, hid), nn.Linear(hid, hid), nn.Linear(hid, nclass)

    def forward(self, x, ei):
        src, dst = ei
        for lin in (self.l1, self.l2):
            h = lin(x)
            x = F.relu(h.new_zeros(x.shape[0], h.shape[1]).index_add_(0, dst, h[src]) + h)
        return self.out(x)


class ScatterGNN(nn.Module):
    """Mean and max aggregation via scatter_add_/scatter_reduce_ into ``torch.zeros`` made from
    constants (untracked destinations), with an expanded index."""

    def __init__(self, hid=16, nclass=4):
        super().__init__()
        self.l1, self.l2, self.out = nn.Linear(C_IN, hid), nn.Linear(hid, hid), nn.Linear(hid, nclass)

    def forward(self, x, ei):
        src, dst = ei
        n = x.shape[0]
        h = self.l1(x)
        msg = h.index_select(0, src)
        idx = dst.view(-1, 1).expand_as(msg)
        s = torch.zeros(n, msg.shape[1], dtype=msg.dtype).scatter_add_(0, idx, msg)
        cnt = torch.zeros(n, dtype=msg.dtype).index_add_(0, dst, torch.ones_like(dst, dtype=msg.dtype))
        x = F.relu(s / cnt.clamp(min=1).view(-1, 1).expand_as(s))
        h = self.l2(x)
        m = torch.zeros(n, h.shape[1], dtype=h.dtype).scatter_reduce(
            0, dst.view(-1, 1).expand_as(h[src]), h[src], reduce="amax", include_self=False)
        return self.out(F.relu(m + h))


class IndexPutGNN(IndexAddGNN):
    """Sum aggregation with ``index_put_(..., accumulate=True)`` (``out[dst] += msg`` semantics)."""

    def forward(self, x, ei):
        src, dst = ei
        for lin in (self.l1, self.l2):
            h = lin(x)
            x = F.relu(torch.zeros_like(h).index_put_((dst,), h[src], accumulate=True) + h)
        return self.out(x)


@pytest.mark.parametrize("cls", [IndexAddGNN, IndexPutGNN])
def test_index_add_gnn(cls):
    x, ei = _graph()
    _check(cls(), (x, ei))


def test_scatter_mean_max_gnn():
    x, ei = _graph(seed=1)
    _check(ScatterGNN(), (x, ei), seed=1)


class _OnChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.out = nn.Linear(C_IN, 6), nn.Linear(6, 3)

    def forward(self, x, ei):  # index_add along the feature dim: channels are routed
        h = self.l1(x)
        perm = torch.tensor([1, 0, 2, 3, 5, 4])
        return self.out(h.new_zeros(h.shape).index_add_(1, perm, h))


class _IntoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.out = nn.Linear(C_IN, C_IN), nn.Linear(C_IN, 3)

    def forward(self, x, ei):  # the destination is the model input: it cannot shrink
        return self.out(x.index_add(0, ei[1], self.l1(x)[ei[0]]))


class _FixedIndex(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.out = nn.Linear(C_IN, 6), nn.Linear(6, 3)

    def forward(self, x, ei):  # an index materialised along channels keeps its size
        h = self.l1(x)[ei[0]]
        idx = ei[1].view(-1, 1).repeat(1, 6)
        return self.out(h.new_zeros(x.shape[0], 6).scatter_add_(0, idx, h))


@pytest.mark.parametrize("cls, reason", [
    (_OnChannels, "indexed dim"), (_IntoInput, "destination cannot shrink"),
    (_FixedIndex, "fixed size along channels")])
def test_scatter_blocks(cls, reason):
    x, ei = _graph()
    dg = analyze_model(randomize(cls().eval()).double(), (x, ei))
    g = dg.groups_of_module("l1")[0]
    assert not g.is_prunable
    assert any(reason in r for r in g.blocked_reasons), g.blocked_reasons


