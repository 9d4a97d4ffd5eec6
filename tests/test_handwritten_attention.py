"""Hand-written attention (issue 15 part 4a): einsum/matmul attention whose reshape reads the head
count from a module attribute of any name (``self.h``, ``self.heads``) and the head size from
another tensor's width. Whole heads are pruned, the attribute is set to the kept head count, and
the result is checked by the float64 zeroed-group oracle."""
from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import check_oracle, randomize  # noqa: E402

from core.pipeline import analyze_model  # noqa: E402


class EinsumAttention(nn.Module):
    """qkv in one projection, heads from ``self.h``, head size from the qkv width."""

    def __init__(self, d=32, h=4):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        qkv = self.qkv(x)
        b, n, c3 = qkv.shape
        d = c3 // 3
        q, k, v = qkv.reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        a = torch.einsum("bhid,bhjd->bhij", q, k) * (d // self.h) ** -0.5
        o = torch.einsum("bhij,bhjd->bhid", a.softmax(-1), v)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


class MatmulAttention(nn.Module):
    """Separate q/k/v projections, heads from ``self.heads``, ``@`` and a computed scale."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.q(x), self.k(x), self.v(x)
        c = q.shape[-1]
        q, k, v = (t.view(b, n, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        a = (q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5).softmax(-1)
        return self.o((a @ v).transpose(1, 2).reshape(b, n, c))


class InputWidthAttention(EinsumAttention):
    """The head size from the *input* width (timm's ``C // num_heads`` with C = x.shape[-1]): no
    head count keeps ``C // h`` the head size, so the heads cannot be pruned by attribute."""

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) * (d // self.h) ** -0.5).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class Net(nn.Module):
    """A stem, two pre-norm-free residual blocks (attention + MLP), a head: the residual stream
    is prunable too."""

    def __init__(self, make, d=32):
        super().__init__()
        self.stem = nn.Linear(12, d)
        self.attn = nn.ModuleList([make(), make()])
        self.mlp = nn.ModuleList([nn.Sequential(nn.Linear(d, 48), nn.GELU(), nn.Linear(48, d))
                                  for _ in range(2)])
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        x = self.stem(x)
        for a, m in zip(self.attn, self.mlp):
            x = x + a(x)
            x = x + m(x)
        return self.head(x)


X = torch.randn(2, 7, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _head_groups(dg, attr):
    return [g for g in dg.groups if any(m.slot.tensor_name.endswith(f".<heads:{attr}>")
                                        for m in g.members)]


def test_einsum_attention_heads_from_self_h():
    model = randomize(Net(EinsumAttention)).double()
    dg, res = check_oracle(model, X, tol=1e-9)
    groups = _head_groups(dg, "h")
    assert len(groups) == 2 and all(g.n_channels == 4 and g.prunable.all() for g in groups)
    kept = [a.h for a in res.model.attn]
    assert kept == [a.qkv.out_features // 24 for a in res.model.attn] and min(kept) < 4
    assert res.model.stem.out_features < 32  # the residual stream went too


def test_matmul_attention_heads_from_self_heads():
    model = randomize(Net(MatmulAttention), seed=3).double()
    dg, res = check_oracle(model, X, tol=1e-9)
    assert len(_head_groups(dg, "heads")) == 2
    kept = [a.heads for a in res.model.attn]
    assert kept == [a.q.out_features // 8 for a in res.model.attn] and min(kept) < 4
    for a in res.model.attn:  # q, k and v lose the same heads
        assert a.q.out_features == a.k.out_features == a.v.out_features == a.o.in_features


def test_head_size_from_the_input_width_stays_blocked():
    model = randomize(Net(InputWidthAttention)).double()
    dg = analyze_model(model, X)
    groups = _head_groups(dg, "h")
    assert len(groups) == 2
    for g in groups:
        assert not g.prunable.any()
        assert any("breaks forward" in r for r in g.blocked_reasons), g.blocked_reasons


class NumHeadsAttention(MatmulAttention):
    """The usual name, ``self.num_heads``, in a hand-written module (no family updater)."""

    def __init__(self, d=32, heads=4):
        super().__init__(d, heads)
        del self.heads
        self.num_heads = heads

    def forward(self, x):
        self.heads = self.num_heads
        try:
            return super().forward(x)
        finally:
            del self.heads


def test_handwritten_num_heads_is_updated():
    model = randomize(Net(NumHeadsAttention), seed=5).double()
    dg, res = check_oracle(model, X, tol=1e-9)
    assert len(_head_groups(dg, "num_heads")) == 2
    assert [a.num_heads for a in res.model.attn] == [a.q.out_features // 8 for a in res.model.attn]
