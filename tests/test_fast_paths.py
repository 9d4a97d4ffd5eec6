"""Fast paths of data-movement ops (core.ops.fast) give exactly the groups the replay derives.

Each model runs an op through its fast path, then again with that fast path removed (the replay:
index tensors run through the op), and everything a user sees of the groups must match. The
models that split channels across dims (groups x channels) before the op check that nothing
changes there either.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import core.ops.movement as movement
from core.analysis.graph import analyze
from core.ops.fast import FAST_PATHS


def signature(dg):
    return [([(m.slot.tensor_name, m.slot.dim, m.slot.role, m.index_map.tolist()) for m in g.members],
             g.prunable.tolist(), g.exact.tolist(), g.blocked_reasons, g.approx_reasons,
             sorted(g.nodes)) for g in dg.groups]


class CacheCat(nn.Module):
    """A KV cache's first update: cat of a 1-D empty tensor and the new keys along the tokens."""

    def __init__(self):
        super().__init__()
        self.k, self.q, self.o = nn.Linear(16, 32), nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):  # x: (batch, tokens, 16)
        k = torch.cat([torch.tensor([]), self.k(x)], dim=-2)
        return self.o(self.q(x) * k.mean(1, keepdim=True))


class Unsqueezed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.c1, self.c2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.c1(x).unsqueeze(self.dim)
        return self.c2(y.mean(self.dim))


class SplitThenUnsqueeze(nn.Module):
    """Channels split into groups x channels before the unsqueeze."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.c1(x)
        b, c, h, w = y.shape
        z = y.view(b, 2, c // 2, h, w).unsqueeze(1).mean(1)
        return self.c2(z.reshape(b, c, h, w))


class SplitCat(nn.Module):
    """cat along the inner dim of channels split into groups x channels."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3), nn.Conv2d(3, 8, 3), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        ya, yb = self.a(x), self.b(x)
        b, c, h, w = ya.shape
        z = torch.cat([ya.view(b, 2, c // 2, h, w), yb.view(b, 2, c // 2, h, w)], dim=2)
        return self.c(z.reshape(b, 2 * c, h, w))


CASES = [
    ("cat", CacheCat, (torch.randn(1, 5, 16),), True),
    ("unsqueeze", lambda: Unsqueezed(1), (torch.randn(1, 3, 8, 8),), True),  # at the channels
    ("unsqueeze", lambda: Unsqueezed(2), (torch.randn(1, 3, 8, 8),), True),
    ("unsqueeze", lambda: Unsqueezed(-1), (torch.randn(1, 3, 8, 8),), True),
    ("unsqueeze", lambda: Unsqueezed(0), (torch.randn(1, 3, 8, 8),), True),
    ("unsqueeze", SplitThenUnsqueeze, (torch.randn(1, 3, 8, 8),), False),
    ("cat", SplitCat, (torch.randn(1, 3, 8, 8),), False),
]


@pytest.mark.parametrize("op, make, inputs, fast",
                         CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_fast_path_matches_the_replay(op, make, inputs, fast, monkeypatch):
    torch.manual_seed(0)
    model = make().eval()
    replays = []
    real = movement.replay

    def counting(func, *a, **k):
        replays.append(getattr(func, "__name__", str(func)))
        return real(func, *a, **k)

    monkeypatch.setattr(movement, "replay", counting)
    with_fast = signature(analyze(model, *inputs))
    if fast:
        assert op not in replays  # the case takes the path it is meant to test
    monkeypatch.delitem(FAST_PATHS, op)
    replays.clear()
    replayed = signature(analyze(model, *inputs))
    assert op in replays
    assert with_fast == replayed
    assert any(len(g[0]) > 1 for g in with_fast)  # groups that couple something: not vacuous
