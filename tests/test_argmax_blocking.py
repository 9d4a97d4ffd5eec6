"""Positions that become values (issue 15 part 4b): the index that argmax, max(dim), topk, sort...
return along a channel dim is a channel *position*; removing a channel shifts every later index, so
such a dim blocks (a router choosing its expert by ``idx == k`` would silently pick other experts).
The same ops over a dim that carries no channels stay prunable."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import check_oracle, randomize  # noqa: E402

from core.pipeline import analyze_model  # noqa: E402


class Router(nn.Module):
    """Top-1 mixture of experts: the gate's arg-max picks an expert by its position."""

    def __init__(self, how, d=16, experts=6):
        super().__init__()
        self.how = how
        self.stem = nn.Linear(8, d)
        self.gate = nn.Linear(d, experts)
        self.experts = nn.ModuleList(nn.Linear(d, d) for _ in range(experts))
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        p = self.gate(h).softmax(-1)
        if self.how == "max":
            w, idx = p.max(-1)
        elif self.how == "min":
            w, idx = torch.min(p, dim=-1)
        elif self.how == "topk":
            w, idx = p.topk(1, dim=-1)
            w, idx = w[..., 0], idx[..., 0]
        elif self.how == "sort":
            w, idx = p.sort(-1, descending=True)
            w, idx = w[..., 0], idx[..., 0]
        else:
            idx = p.argmax(-1)
            w = p.amax(-1)
        out = torch.zeros_like(h)
        for k, e in enumerate(self.experts):
            out = out + (idx == k).unsqueeze(-1) * w.unsqueeze(-1) * e(h)
        return self.head(out)


X = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _gate_group(dg):
    return next(g for g in dg.groups if any(m.slot.tensor_name == "gate.weight" and m.slot.dim == 0
                                            for m in g.members))


@pytest.mark.parametrize("how", ["max", "min", "topk", "sort", "argmax"])
def test_router_index_blocks_the_gate(how):
    model = randomize(Router(how)).double()
    dg = analyze_model(model, X)
    g = _gate_group(dg)
    assert not g.prunable.any(), f"{how}: gate rows prunable; approx reasons {g.approx_reasons}"
    assert any("indices" in r for r in g.blocked_reasons), g.blocked_reasons


class ArgmaxLookup(nn.Module):
    """An argmax head feeding an embedding lookup (a quantiser / classifier-then-embed)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(8, 10)
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.emb(self.enc(x).max(dim=-1).indices))


def test_argmax_feeding_a_lookup_blocks():
    model = randomize(ArgmaxLookup()).double()
    dg = analyze_model(model, X)
    g = next(g for g in dg.groups if any(m.slot.tensor_name == "enc.weight" for m in g.members))
    assert not g.prunable.any()


class TokenArgmax(nn.Module):
    """max/argmax over tokens (not channels): the channels stay prunable, exactly."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 12)
        self.b = nn.Linear(12, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        v, _ = h.max(dim=1)  # over the 5 tokens
        return self.b(v)


def test_max_over_tokens_stays_prunable():
    model = randomize(TokenArgmax()).double()
    dg, res = check_oracle(model, X, tol=1e-9)
    assert res.model.a.out_features < 12


class ChannelMaxValues(nn.Module):
    """CBAM's spatial attention: ``torch.max(x, dim=1)[0]`` over channels, values only. The
    indices are never read, so the channels stay prunable (approximate: a max over fewer)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.s = nn.Conv2d(1, 1, 3, padding=1)
        self.o = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = torch.relu(self.c(x))
        att = torch.sigmoid(self.s(torch.max(h, dim=1, keepdim=True)[0]))
        return self.o(h * att)


def test_channel_max_values_only_stays_prunable():
    model = randomize(ChannelMaxValues()).double()
    img = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dg, res = check_oracle(model, img, expect_exact=False)
    assert res.model.c.out_channels < 8
