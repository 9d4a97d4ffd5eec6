"""A small CNN for the built-in digits data set (benchmarks, tests, demos)."""
from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """conv-BN-ReLU x3 with a residual block, global pooling, linear head; input (N, 1, 8, 8)."""

    def __init__(self, width: int = 32, num_classes: int = 10, in_ch: int = 1):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                   nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w))
        self.down = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * w), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * w), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(2 * w, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = self.conv(self.down(x))
        return self.head(torch.flatten(self.pool(x), 1))


def digits_cnn(width: int = 32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return DigitsCNN(width).eval()
