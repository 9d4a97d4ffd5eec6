"""``x[idx] = y`` returns None; the tracer records it as an in-place write of ``x`` so the channels
written from ``y`` are coupled with ``x``'s (before, the flow from ``y`` was lost)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.pipeline import analyze_model
from helpers import check_oracle, randomize


class WriteRegion(nn.Module):
    """y's channels land in x's channels: a and b must be pruned together."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h, g = self.a(x), self.b(x)
        h[:, :, :2] = g[:, :, :2]
        return self.c(h)


class ZeroChannels(nn.Module):
    """Constant channel positions are written: those channels must stay."""

    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = self.a(x)
        h[:, 0:3] = 0
        return self.c(h)


class FillRows(nn.Module):
    """A scalar written over spatial rows touches every channel alike: nothing is blocked."""

    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = self.a(x)
        h[:, :, 0] = 0.5
        return self.c(h)


class MaskedRows(nn.Module):
    """Boolean-mask write of whole feature rows from another layer."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(5, 8), nn.Linear(5, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        m = x[:, 0] > 0
        h[m] = self.b(x)[m]
        return self.c(h)


CASES = {
    "region": (WriteRegion, (4, 3, 6, 6), 8),
    "zero_channels": (ZeroChannels, (4, 3, 6, 6), 5),
    "fill_rows": (FillRows, (4, 3, 6, 6), 8),
    "masked_rows": (MaskedRows, (6, 5), 8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_setitem_coupling_and_oracle(case):
    cls, shape, n_prunable = CASES[case]
    model = randomize(cls().eval(), seed=5).double()
    x = torch.randn(*shape, dtype=torch.float64)
    dg = analyze_model(model, (x,))
    (grp,) = [g for g in dg.groups if g.root == "a"]
    assert int(grp.prunable.sum()) == n_prunable, grp.blocked_reasons
    if hasattr(model, "b"):  # the written layer is in the same group
        assert "b" in grp.layers
    check_oracle(model, (x,), tol=1e-10, dg=dg)


class FixedChannelIndex(nn.Module):
    """A constant index tensor along channels names channel positions: the channels stay."""

    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        h = self.a(x)
        return self.c(h.index_select(1, torch.tensor([2, 0, 1, 3])) + h[:, [3, 2, 1, 0]])


class FixedTokenIndex(nn.Module):
    """The same along tokens leaves the channels prunable."""

    def __init__(self):
        super().__init__()
        self.a, self.c = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        return self.c(h[:, torch.tensor([4, 0, 1])] + h[..., [0, 1, 2], :])


def test_fixed_index_tensors():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    dg = analyze_model(randomize(FixedChannelIndex().eval()).double(), (x,))
    (a,) = [g for g in dg.groups if g.root == "a"]
    assert not a.prunable.any() and "fixed index" in a.blocked_reasons[0]
    model = randomize(FixedTokenIndex().eval()).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    dg, res = check_oracle(model, (x,), tol=1e-10)
    assert not res.excluded and res.model.a.out_features == 4
