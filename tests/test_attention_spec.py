"""The extension point for attention modules (core.adapters.attention_spec): a user's attention
whose ``forward`` reshapes with ``self.heads`` (and ``C // heads``) is declared in a few lines, and
head / head-dimension pruning through it is exact (zeroed-group oracle, float64)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.adapters.attention_spec import AttentionSpec, fused, register_attention
from core.pipeline import analyze_model
from core.prune.apply import PruningPlan, apply_kept
from core.prune.verify import verify_plan
from helpers import randomize, registries_restored


class TinyAttention(nn.Module):
    """Fused qkv, a learned temperature per head; sizes read from ``self.heads`` and the input
    width, which ties the residual stream to the attention width for a plain trace."""

    def __init__(self, dim=24, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.temp = nn.Parameter(torch.ones(heads))
        self.out = nn.Linear(dim, dim)
        self.scale = (dim // heads) ** -0.5

    def attend(self, x, head_dim):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * self.scale * self.temp[:, None, None]
        return self.out((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1))

    def forward(self, x):
        return self.attend(x, x.shape[-1] // self.heads)


class PrunedTinyAttention(TinyAttention):
    def forward(self, x):  # widths from the weights, not from the input
        return self.attend(x, self.out.weight.shape[1] // self.heads)


@pytest.fixture(autouse=True, scope="module")
def declared():
    with registries_restored():  # (the declaration stays local to this file)
        # the whole declaration a user writes
        register_attention(AttentionSpec(
            classes={TinyAttention: PrunedTinyAttention}, op="tiny_attention", qkv=fused("qkv"),
            out="out", heads="heads", per_head=lambda m: [(m.temp, 0)]))
        yield


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 24)
        self.attn = TinyAttention()
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        h = self.inp(x)
        return self.head(h + self.attn(h))


@pytest.mark.parametrize("mode", ["heads", "head_dim"])
def test_declared_attention_prunes_exactly(mode):
    model = randomize(Net().eval(), seed=7).double()
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    dg = analyze_model(model, (x,), options={"attention": mode})
    groups = [g for g in dg.prunable_groups if any(m.slot.virtual for m in g.members)]
    assert len(groups) == 1 and groups[0].n_channels == (4 if mode == "heads" else 6)
    if mode == "heads":  # the per-head temperature is a member of the heads group
        assert any(m.slot.tensor_name == "attn.temp" for m in groups[0].members)
    plan = PruningPlan({groups[0].id: [0, 2]})
    rep = verify_plan(model, (x,), dg, plan)
    assert rep.expected_exact and rep.shapes_equal and rep.max_rel_diff < 1e-10, rep.message

    pruned = apply_kept(model, plan.kept_indices(dg))
    attn = pruned.attn
    assert type(attn) is PrunedTinyAttention
    assert attn.heads == (2 if mode == "heads" else 4)
    assert attn.qkv.out_features == 3 * attn.out.in_features == 3 * (12 if mode == "heads" else 16)
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape
