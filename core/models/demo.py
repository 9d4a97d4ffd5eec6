"""The built-in demo model: small, fast, and showing the couplings the engine handles
(residual adds, a concat, a depthwise conv, flatten into a classifier)."""
from __future__ import annotations

import torch
from torch import nn

DEMO_INPUT_SHAPE = "1,3,32,32"


class DemoNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                                    nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(32))
        self.down = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU())
        self.branch_a = nn.Sequential(nn.Conv2d(64, 48, 1), nn.ReLU())
        self.branch_b = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64),
                                      nn.ReLU(), nn.Conv2d(64, 48, 1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(96, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Sequential(nn.Linear(128 * 4, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block1(x))
        x = self.down(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = self.pool(self.fuse(x))
        return self.head(torch.flatten(x, 1))


def demo_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return DemoNet().eval()
