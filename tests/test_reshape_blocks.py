"""Channels reshaped into blocks (issue 15 part 1): a flat channel dim split into a channel dim and
spatial dims (the decoder pattern ``Linear -> view(b, C, H, W) -> ConvTranspose2d``), merged with
spatial dims (``conv -> flatten -> Linear``, ``view(b, C*H, W)``), and back. Each prunable variant
goes through the float64 zeroed-group oracle; variants whose sizes are written as constants, or
whose channel is not where the consumer reads it, stay blocked with a reason."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import check_oracle, randomize  # noqa: E402

from core.pipeline import analyze_model  # noqa: E402


class Decoder(nn.Module):
    """Linear(64 -> 512) -> 32 channels of 4x4 -> ConvTranspose2d -> Conv2d."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.fc = nn.Linear(64, 512)
        self.de = nn.ConvTranspose2d(32, 16, 4, 2, 1)
        self.c = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, z):
        h = torch.relu(self.fc(z))
        b = z.size(0)
        if self.mode == "infer":
            h = h.view(b, -1, 4, 4)
        elif self.mode == "attr":  # the size read from the layer: it follows pruning
            h = h.view(-1, self.fc.out_features // 16, 4, 4)
        elif self.mode == "unflatten":
            h = h.unflatten(1, (-1, 4, 4))
        elif self.mode == "computed":
            h = h.reshape(b, h.shape[1] // 16, 4, 4)
        elif self.mode == "nhwc":  # channel innermost, then moved to dim 1
            h = h.view(b, 4, 4, -1).permute(0, 3, 1, 2)
        elif self.mode == "nhwc_computed":
            h = h.view(b, 4, 4, h.shape[1] // 16).permute(0, 3, 1, 2)
        elif self.mode == "const":
            h = h.view(-1, 32, 4, 4)
        return self.c(torch.relu(self.de(h)))


class Decoder1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 256)
        self.c = nn.Conv1d(16, 8, 3)

    def forward(self, z):
        h = self.fc(z)
        return self.c(torch.tanh(h.view(z.shape[0], h.shape[1] // 16, 16)))


class HeightMerge(nn.Module):
    """conv (b, 8, 4, 4) -> view(b, 8*4, 4) -> conv1d (channel merged with height) -> view back."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv1d(8 * 4, 24, 1)
        self.c2 = nn.Conv2d(6, 5, 3, padding=1)

    def forward(self, x):
        h = self.c0(x)
        b, c, hh, w = h.shape
        h = self.c1(h.reshape(b, c * hh, w))
        return self.c2(torch.relu(h).reshape(b, -1, hh, w))


class Encoder(nn.Module):
    """conv -> flatten -> Linear (16 positions per channel) -> view back -> deconv."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 16, 128)
        self.de = nn.ConvTranspose2d(8, 3, 3, padding=1)

    def forward(self, x):
        h = self.fc(torch.relu(self.c0(x)).flatten(1))
        return self.de(torch.relu(h).unflatten(1, (-1, 4, 4)))


Z = torch.randn(2, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
IMG = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _group_of(dg, tensor_name, dim):
    for g in dg.groups:
        for m in g.members:
            if m.slot.tensor_name == tensor_name and m.slot.dim == dim:
                return g, m
    raise AssertionError(f"{tensor_name} dim {dim} is in no group")


@pytest.mark.parametrize("mode", ["infer", "attr", "unflatten", "computed", "nhwc", "nhwc_computed"])
def test_decoder_blocks_prune_exactly(mode):
    model = randomize(Decoder(mode)).double()
    dg, res = check_oracle(model, Z, tol=1e-9)
    g, fc = _group_of(dg, "fc.weight", 0)
    assert not g.blocked_reasons, g.blocked_reasons
    _, de = _group_of(dg, "de.weight", 0)
    fc_map, de_map = fc.index_map, de.index_map
    if mode.startswith("nhwc"):  # channel j owns the strided positions j, j + 32, ...
        expect = de_map[np.arange(512) % 32]
    else:  # channel j owns the contiguous block [16j, 16j + 16)
        expect = de_map[np.arange(512) // 16]
    assert (fc_map == expect).all()
    # half of the 32 deconv inputs go, each with its 16 Linear outputs
    assert res.model.fc.out_features == 256 and res.model.de.in_channels == 16


def test_decoder_with_constant_sizes_is_blocked_with_the_reshape_named():
    model = randomize(Decoder("const")).double()
    dg = analyze_model(model, Z)
    g, _ = _group_of(dg, "fc.weight", 0)
    assert not g.prunable.any()
    assert any("[-1, 32, 4, 4]" in r for r in g.blocked_reasons), g.blocked_reasons


def test_decoder_1d_and_height_merge_and_encoder_prune_exactly():
    check_oracle(randomize(Decoder1d()).double(), Z[:, :32], tol=1e-9)
    dg, res = check_oracle(randomize(HeightMerge()).double(), IMG, tol=1e-9)
    assert res.model.c1.in_channels % 4 == 0 and res.model.c1.in_channels < 32
    dg, res = check_oracle(randomize(Encoder()).double(), IMG, tol=1e-9)
    assert res.model.fc.in_features < 512 and res.model.de.in_channels < 8


class Interleaved(nn.Module):
    """The 512 outputs read as (4, 4, 32) but consumed with the size-4 dim as channels: channel j
    of the deconv is not a block of Linear outputs that pruning can keep together."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 512)
        self.de = nn.ConvTranspose2d(4, 3, 3, padding=1)

    def forward(self, z):
        h = self.fc(z)
        return self.de(h.view(z.shape[0], 4, 4, h.shape[1] // 16))


def test_interleaved_channels_stay_blocked():
    model = randomize(Interleaved()).double()
    dg = analyze_model(model, Z)
    g, _ = _group_of(dg, "fc.weight", 0)
    assert not g.prunable.any()
    assert any("spatial" in r for r in g.blocked_reasons), g.blocked_reasons


def unflatten_decoder():
    """The Sequential decoder: ``nn.Unflatten(1, (32, 4, 4))`` has constant sizes, but they live
    in the module, whose updater rewrites the channel count after pruning."""
    return nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Unflatten(1, (32, 4, 4)),
                         nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))


def test_unflatten_module_decoder_prunes_exactly():
    model = randomize(unflatten_decoder()).double()
    dg, res = check_oracle(model, Z, tol=1e-9)
    kept = res.model[3].in_channels
    assert kept < 32 and res.model[2].unflattened_size == (kept, 4, 4)
    assert res.model[0].out_features == 16 * kept
