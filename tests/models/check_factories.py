"""Models that checks must not pass on (issue 11): ``tests/models/check_factories.py:NAME``."""
import sys

import torch
from torch import nn


class SmallNet(nn.Module):
    """conv-bn-relu-conv-relu, pooled, a linear head: input 1,3,16,16."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def nan_weights():
    """Every weight NaN: its output is NaN for every input."""
    m = SmallNet()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(float("nan"))
    return m.eval()


def zero_head():
    """A zero-initialised head (as torchvision's vit_b_16): the output is 0 for every input."""
    m = SmallNet()
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.zero_()
    return m.eval()


class ShapeValue(nn.Module):
    """Computes a value from a channel count (``y * y.shape[1]``): no trace can see it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        return self.b(y * y.shape[1])


def shape_value():
    return ShapeValue().eval()


def exits():
    sys.exit(0)
