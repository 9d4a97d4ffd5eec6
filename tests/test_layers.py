"""One small model per supported layer / op, each through the zeroed-group oracle (max rel diff
< 1e-5), plus the planner settings, unknown ops, meta analysis and the model-safety guarantees."""
from __future__ import annotations

import copy
import dataclasses
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import assert_unchanged, check_oracle, kept_params_equal, randomize, _state  # noqa: E402

from core.errors import PlanError  # noqa: E402
from core.plan.criteria import CRITERIA  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402


def R(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class Seq(nn.Module):
    """f(x) from a lambda over named submodules (keeps each case a one-liner)."""

    def __init__(self, fn, **mods):
        super().__init__()
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, *a, **k):
        return self.fn(self, *a, **k)


# ------------------------------------------------------------------------------------------------
# convolutions, linears and norms


def conv_chain(dim, mid=(), conv_kw=None, c_in=3, c_mid=8, c_out=4):
    Conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
    return nn.Sequential(Conv(c_in, c_mid, 3, padding=1, **(conv_kw or {})), *mid, nn.ReLU(),
                         Conv(c_mid, c_out, 3, padding=1))


GROUPED_T = []


def _cases():
    c = {}
    c["conv1d"] = (lambda: conv_chain(1), lambda: R(2, 3, 16))
    c["conv2d"] = (lambda: conv_chain(2), lambda: R(2, 3, 12, 12))
    c["conv3d"] = (lambda: conv_chain(3), lambda: R(1, 3, 6, 6, 6))
    c["conv2d_stride_dilation_nobias"] = (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, dilation=2, padding=2, bias=False),
                              nn.ReLU(), nn.Conv2d(8, 4, 1)), lambda: R(2, 3, 16, 16))
    c["grouped_conv"] = (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, groups=4),
                              nn.ReLU(), nn.Conv2d(16, 4, 1)), lambda: R(2, 3, 10, 10))
    c["depthwise_conv"] = (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                              nn.ReLU(), nn.Conv2d(8, 4, 1)), lambda: R(2, 3, 10, 10))
    c["depthwise_conv_multiplier2"] = (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, groups=8),
                              nn.ReLU(), nn.Conv2d(16, 4, 1)), lambda: R(2, 3, 10, 10))
    for d, T, x in ((1, nn.ConvTranspose1d, (2, 3, 8)), (2, nn.ConvTranspose2d, (2, 3, 6, 6)),
                    (3, nn.ConvTranspose3d, (1, 3, 4, 4, 4))):
        Conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[d]
        c[f"conv_transpose{d}d"] = (
            (lambda Conv=Conv, T=T: nn.Sequential(Conv(3, 8, 3, padding=1), nn.ReLU(),
                                                  T(8, 6, 3, stride=2), nn.ReLU(), Conv(6, 4, 1))),
            (lambda x=x: R(*x)))
    c_grouped_t = (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.ConvTranspose2d(8, 12, 2, stride=2, groups=4),
                              nn.ReLU(), nn.Conv2d(12, 4, 1)), lambda: R(2, 3, 5, 5))
    GROUPED_T.append(c_grouped_t)
    c["linear_2d"] = (lambda: nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4)),
                      lambda: R(4, 10))
    c["linear_3d"] = (lambda: nn.Sequential(nn.Linear(10, 16), nn.GELU(), nn.Linear(16, 4)),
                      lambda: R(2, 5, 10))
    c["linear_nobias"] = (lambda: nn.Sequential(nn.Linear(10, 16, bias=False), nn.Tanh(),
                                                nn.Linear(16, 4, bias=False)), lambda: R(4, 10))
    c["batchnorm1d_2d_input"] = (
        lambda: nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)),
        lambda: R(4, 10))
    c["batchnorm1d_3d_input"] = (lambda: conv_chain(1, [nn.BatchNorm1d(8)]), lambda: R(2, 3, 16))
    c["batchnorm2d"] = (lambda: conv_chain(2, [nn.BatchNorm2d(8)]), lambda: R(2, 3, 12, 12))
    c["batchnorm3d"] = (lambda: conv_chain(3, [nn.BatchNorm3d(8)]), lambda: R(1, 3, 6, 6, 6))
    c["instancenorm_affine"] = (lambda: conv_chain(2, [nn.InstanceNorm2d(8, affine=True)]),
                                lambda: R(2, 3, 12, 12))
    c["instancenorm_plain"] = (lambda: conv_chain(2, [nn.InstanceNorm2d(8)]), lambda: R(2, 3, 12, 12))
    c["instancenorm1d_running_stats"] = (
        lambda: conv_chain(1, [nn.InstanceNorm1d(8, affine=True, track_running_stats=True)]),
        lambda: R(2, 3, 16))
    c["groupnorm"] = (lambda: conv_chain(2, [nn.GroupNorm(4, 16)], c_mid=16), lambda: R(2, 3, 12, 12))
    c["groupnorm_no_affine"] = (lambda: conv_chain(2, [nn.GroupNorm(4, 16, affine=False)], c_mid=16),
                                lambda: R(2, 3, 12, 12))
    c["prelu_per_channel"] = (lambda: conv_chain(2, [nn.PReLU(8)]), lambda: R(2, 3, 12, 12))
    c["prelu_shared"] = (lambda: conv_chain(2, [nn.PReLU()]), lambda: R(2, 3, 12, 12))
    c["embedding_linear"] = (
        lambda: nn.Sequential(nn.Embedding(20, 16), nn.ReLU(), nn.Linear(16, 4)),
        lambda: torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0)))
    return c


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_layer_oracle(name):
    make_model, make_x = CASES[name]
    torch.manual_seed(0)
    model = randomize(make_model().eval(), 0)
    check_oracle(model, make_x())


def test_grouped_conv_transpose():
    """Grouped transposed convs: whole groups could be removed; at the very least the engine must
    not prune them wrongly. This requires real pruning (whole groups), like the grouped conv."""
    make_model, make_x = GROUPED_T[0]
    model = randomize(make_model().eval(), 0)
    dg = analyze_model(model, make_x())
    for g in dg.groups:
        if not g.is_prunable:
            assert g.blocked_reasons, g.to_json()
    check_oracle(model, make_x(), dg=dg)


def test_groupnorm_removes_whole_groups():
    model = randomize(conv_chain(2, [nn.GroupNorm(4, 16)], c_mid=16).eval(), 0)
    dg, res = check_oracle(model, R(2, 3, 12, 12))
    keep = res.kept["0.weight"][0]
    assert len(keep) % 4 == 0
    blocks = {k // 4 for k in keep}
    assert sorted(k for b in blocks for k in range(4 * b, 4 * b + 4)) == keep
    assert res.model[1].num_groups == len(keep) // 4


def test_grouped_conv_removes_whole_groups():
    make_model, make_x = CASES["grouped_conv"]
    model = randomize(make_model().eval(), 0)
    dg, res = check_oracle(model, make_x())
    assert res.model[2].groups * (16 // 4) == res.model[2].out_channels


def test_layernorm_is_flagged_approximate():
    model = randomize(nn.Sequential(nn.Linear(10, 16), nn.LayerNorm(16), nn.ReLU(),
                                    nn.Linear(16, 4)).eval(), 0)
    dg, res = check_oracle(model, R(4, 10), expect_exact=False)
    assert any("normalis" in r for r in res.verify.approximate_reasons), res.verify.approximate_reasons
    assert res.model[1].normalized_shape == (res.model[0].out_features,)


# ------------------------------------------------------------------------------------------------
# bare parameters used in forward


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gamma = nn.Parameter(torch.ones(8))
        self.beta = nn.Parameter(torch.zeros(8))
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.conv1(x) * self.gamma.view(1, -1, 1, 1)
        x = torch.relu(x + self.beta.view(1, -1, 1, 1))
        return self.conv2(x)


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, MLP blocks, head on the class token."""

    def __init__(self, dim=16, hidden=32, classes=5, n_patches=9):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.fc3 = nn.Linear(dim, hidden)
        self.fc4 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embedding
        x = x + self.fc2(F.gelu(self.fc1(x)))
        x = x + self.fc4(F.gelu(self.fc3(x)))
        return self.head(x[:, 0])


def test_bare_parameter_scale_and_bias():
    model = randomize(Scale().eval(), 0)
    dg, res = check_oracle(model, R(2, 3, 8, 8))
    assert "gamma" in res.kept and "beta" in res.kept
    assert res.kept["gamma"][0] == res.kept["conv1.weight"][0] == res.kept["beta"][0]


def test_tiny_vit_tokens():
    model = randomize(TinyViT().eval(), 0)
    dg, res = check_oracle(model, R(2, 3, 12, 12))
    k = res.kept
    assert "cls_token" in k and "pos_embedding" in k, sorted(k)
    assert k["cls_token"][2] == k["pos_embedding"][2] == k["patch.weight"][0] == k["fc2.weight"][0]
    assert res.model.pos_embedding.shape[1] == 10  # the token dim is never pruned


# ------------------------------------------------------------------------------------------------
# element-wise, broadcasting and data movement


def _m(fn, **mods):
    return Seq(fn, **mods)


def op_cases():
    c = {}
    c["residual_add"] = (lambda: _m(
        lambda s, x: s.c3(torch.relu(s.c2(torch.relu(s.c1(x))) + s.c1(x))),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(8, 8, 3, padding=1), c3=nn.Conv2d(8, 4, 1)),
        lambda: R(2, 3, 8, 8))
    c["broadcast_mask_n1hw"] = (lambda: _m(
        lambda s, x: s.c2(s.c1(x) * torch.sigmoid(s.gate(x)) + s.gate(x)),
        c1=nn.Conv2d(3, 8, 3, padding=1), gate=nn.Conv2d(3, 1, 3, padding=1), c2=nn.Conv2d(8, 4, 1)),
        lambda: R(2, 3, 8, 8))
    c["concat"] = (lambda: _m(
        lambda s, x: s.c3(torch.cat([torch.relu(s.c1(x)), torch.relu(s.c2(x))], dim=1)),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(3, 6, 1), c3=nn.Conv2d(14, 4, 1)),
        lambda: R(2, 3, 8, 8))
    c["concat_then_bn"] = (lambda: _m(
        lambda s, x: s.c3(torch.relu(s.bn(torch.cat([s.c1(x), s.c2(x)], dim=1)))),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(3, 6, 1), bn=nn.BatchNorm2d(14),
        c3=nn.Conv2d(14, 4, 1)), lambda: R(2, 3, 8, 8))
    c["chunk"] = (lambda: _m(
        lambda s, x: (lambda a, b: s.c2(a * torch.sigmoid(b)))(*s.c1(x).chunk(2, dim=1)),
        c1=nn.Conv2d(3, 16, 3, padding=1), c2=nn.Conv2d(8, 4, 1)), lambda: R(2, 3, 8, 8))
    c["split_sizes"] = (lambda: _m(
        lambda s, x: (lambda a, b: s.ca(a).sum((2, 3)) + s.cb(b).sum((2, 3)))(
            *torch.split(torch.relu(s.c1(torch.relu(s.c0(x)))), [6, 10], dim=1)),
        c0=nn.Conv2d(3, 8, 3, padding=1), c1=nn.Conv2d(8, 16, 3, padding=1), ca=nn.Conv2d(6, 4, 1),
        cb=nn.Conv2d(10, 4, 1)), lambda: R(2, 3, 8, 8))
    c["stack_unbind"] = (lambda: _m(
        lambda s, x: (lambda a, b: s.c3(a * b))(*torch.stack([s.c1(x), s.c2(x)], dim=1).unbind(1)),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(3, 8, 1), c3=nn.Conv2d(8, 4, 1)),
        lambda: R(2, 3, 8, 8))
    c["stack_sum"] = (lambda: _m(
        lambda s, x: s.c3(torch.stack([s.c1(x), s.c2(x)], dim=0).sum(0)),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(3, 8, 1), c3=nn.Conv2d(8, 4, 1)),
        lambda: R(2, 3, 8, 8))
    c["slice_prefix"] = (lambda: _m(
        lambda s, x: (lambda h: s.ca(h[:, :6]) + s.cb(h[:, 6:]))(torch.relu(s.c1(torch.relu(s.c0(x))))),
        c0=nn.Conv2d(3, 8, 3, padding=1), c1=nn.Conv2d(8, 16, 3, padding=1), ca=nn.Conv2d(6, 4, 1),
        cb=nn.Conv2d(10, 4, 1)), lambda: R(2, 3, 8, 8))
    c["flatten_linear"] = (lambda: _m(
        lambda s, x: s.fc(torch.relu(s.c1(x)).flatten(1)),
        c1=nn.Conv2d(3, 8, 3, padding=1), fc=nn.Linear(8 * 16, 5)), lambda: R(2, 3, 4, 4))
    c["view_linear"] = (lambda: _m(
        lambda s, x: s.fc(torch.relu(s.c1(x)).view(x.shape[0], -1)),
        c1=nn.Conv2d(3, 8, 3, padding=1), fc=nn.Linear(8 * 16, 5)), lambda: R(2, 3, 4, 4))
    c["reshape_linear"] = (lambda: _m(
        lambda s, x: s.fc(torch.relu(s.c1(x)).reshape(x.shape[0], -1)),
        c1=nn.Conv2d(3, 8, 3, padding=1), fc=nn.Linear(8 * 16, 5)), lambda: R(2, 3, 4, 4))
    c["nn_flatten_linear"] = (lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 5)),
        lambda: R(2, 3, 4, 4))
    c["unflatten_spatial"] = (lambda: _m(
        lambda s, x: s.c2(torch.relu(s.c1(x)).unflatten(2, (4, 4))),
        c1=nn.Conv1d(3, 8, 3, padding=1), c2=nn.Conv2d(8, 4, 3)), lambda: R(2, 3, 16))
    c["permute_channels_last_linear"] = (lambda: _m(
        lambda s, x: s.c2(s.fc(torch.relu(s.c1(x)).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)),
        c1=nn.Conv2d(3, 8, 3, padding=1), fc=nn.Linear(8, 6), c2=nn.Conv2d(6, 4, 1)),
        lambda: R(2, 3, 6, 6))
    c["transpose_linear"] = (lambda: _m(
        lambda s, x: s.c2(s.fc(torch.relu(s.c1(x)).transpose(1, 2)).transpose(1, 2)),
        c1=nn.Conv1d(3, 8, 3, padding=1), fc=nn.Linear(8, 6), c2=nn.Conv1d(6, 4, 1)),
        lambda: R(2, 3, 10))
    c["expand"] = (lambda: _m(
        lambda s, x: (lambda h: s.c2(h * h.mean((2, 3), keepdim=True).expand(-1, -1, 6, 6)))(s.c1(x)),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(8, 4, 1)), lambda: R(2, 3, 6, 6))
    c["repeat_channels"] = (lambda: _m(
        lambda s, x: s.c2(torch.relu(s.c1(x)).repeat(1, 2, 1, 1)),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(16, 4, 1)), lambda: R(2, 3, 6, 6))
    c["repeat_spatial"] = (lambda: _m(
        lambda s, x: s.c2(torch.relu(s.c1(x)).repeat(1, 1, 2, 2)),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(8, 4, 1)), lambda: R(2, 3, 6, 6))
    c["channel_shuffle_reshape"] = (lambda: _m(
        lambda s, x: (lambda h: s.c2(h.view(h.shape[0], 2, h.shape[1] // 2, 6, 6).transpose(1, 2)
                                     .reshape(h.shape[0], -1, 6, 6)))(torch.relu(s.c1(x))),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(8, 4, 1)), lambda: R(2, 3, 6, 6))
    c["channel_shuffle_module"] = (lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.ChannelShuffle(2), nn.Conv2d(8, 4, 1)),
        lambda: R(2, 3, 6, 6))
    c["pixel_shuffle"] = (lambda: nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2), nn.Conv2d(4, 4, 3, padding=1)),
        lambda: R(2, 3, 4, 4))
    c["pixel_unshuffle"] = (lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.PixelUnshuffle(2), nn.Conv2d(16, 4, 1)),
        lambda: R(2, 3, 8, 8))
    c["max_pool"] = (lambda: conv_chain(2, [nn.MaxPool2d(2)]), lambda: R(2, 3, 8, 8))
    c["avg_pool"] = (lambda: conv_chain(2, [nn.AvgPool2d(2)]), lambda: R(2, 3, 8, 8))
    c["adaptive_pools"] = (lambda: conv_chain(2, [nn.AdaptiveAvgPool2d(3), nn.AdaptiveMaxPool2d(2)]),
                           lambda: R(2, 3, 8, 8))
    c["pool_1d_3d"] = (lambda: conv_chain(3, [nn.MaxPool3d(2), nn.AvgPool3d(1)]),
                       lambda: R(1, 3, 4, 4, 4))
    c["global_pool_linear"] = (lambda: _m(
        lambda s, x: s.fc(torch.relu(s.c1(x)).mean((2, 3))),
        c1=nn.Conv2d(3, 8, 3, padding=1), fc=nn.Linear(8, 5)), lambda: R(2, 3, 6, 6))
    c["adaptive_global_pool_flatten"] = (lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)),
        lambda: R(2, 3, 6, 6))
    c["interpolate_bilinear"] = (lambda: _m(
        lambda s, x: s.c2(F.interpolate(torch.relu(s.c1(x)), scale_factor=2, mode="bilinear",
                                        align_corners=False)),
        c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(8, 4, 1)), lambda: R(2, 3, 5, 5))
    c["upsample_nearest"] = (lambda: conv_chain(2, [nn.Upsample(scale_factor=2)]), lambda: R(2, 3, 4, 4))
    c["matmul_two_branches"] = (lambda: _m(
        lambda s, x: s.out(torch.softmax(s.q(x) @ s.k(x).transpose(-1, -2), -1) @ s.v(x)),
        q=nn.Linear(8, 16), k=nn.Linear(8, 16), v=nn.Linear(8, 12), out=nn.Linear(12, 4)),
        lambda: R(2, 5, 8))
    c["einsum_two_branches"] = (lambda: _m(
        lambda s, x: s.out(torch.einsum("bls,bsd->bld",
                                        torch.einsum("bld,bsd->bls", s.q(x), s.k(x)).softmax(-1), s.v(x))),
        q=nn.Linear(8, 16), k=nn.Linear(8, 16), v=nn.Linear(8, 12), out=nn.Linear(12, 4)),
        lambda: R(2, 5, 8))
    return c


OPS = op_cases()


@pytest.mark.parametrize("name", list(OPS))
def test_op_oracle(name):
    make_model, make_x = OPS[name]
    torch.manual_seed(0)
    model = randomize(make_model().eval(), 0)
    check_oracle(model, make_x())


def test_broadcast_n1hw_not_coupled():
    model = randomize(OPS["broadcast_mask_n1hw"][0]().eval(), 0)
    dg = analyze_model(model, R(2, 3, 8, 8))
    (g,) = [g for g in dg.groups if "c1" in g.layers and g.is_prunable]
    assert "gate" not in g.layers, g.layers
    assert g.n_channels == 8 and g.n_prunable == 8


class ChanParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.p = nn.Parameter(torch.ones(8, 1, 1))
        self.q = nn.Parameter(torch.ones(1, 6, 6))  # spatial: broadcast over the channels
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(torch.relu(self.c1(x) * self.p + self.q))


def test_broadcast_c11_parameter():
    model = randomize(ChanParam().eval(), 0)
    dg, res = check_oracle(model, R(2, 3, 6, 6))
    assert res.kept["p"][0] == res.kept["c1.weight"][0]
    assert "q" not in res.kept
    (g,) = [g for g in dg.groups if "c1" in g.layers and g.is_prunable]
    assert all(m.slot.tensor_name != "q" for m in g.members)


def test_split_halves_pruned_evenly():
    model = randomize(OPS["chunk"][0]().eval(), 0)
    dg, res = check_oracle(model, R(2, 3, 8, 8))
    keep = res.kept["c1.weight"][0]
    first = [k for k in keep if k < 8]
    assert [k - 8 for k in keep if k >= 8] == first


def test_repeat_couples_copies():
    model = randomize(OPS["repeat_channels"][0]().eval(), 0)
    dg, res = check_oracle(model, R(2, 3, 6, 6))
    k1, k2 = res.kept["c1.weight"][0], res.kept["c2.weight"][1]
    assert k2 == k1 + [k + 8 for k in k1]


def test_pixel_shuffle_removes_whole_blocks():
    model = randomize(OPS["pixel_shuffle"][0]().eval(), 0)
    dg, res = check_oracle(model, R(2, 3, 4, 4))
    keep = res.kept["0.weight"][0]
    assert len(keep) % 4 == 0


def test_matmul_couples_query_and_key():
    model = randomize(OPS["matmul_two_branches"][0]().eval(), 0)
    dg, res = check_oracle(model, R(2, 5, 8))
    assert res.kept["q.weight"][0] == res.kept["k.weight"][0]


# ------------------------------------------------------------------------------------------------
# unknown ops, the classifier, model safety


def produced_by(dg, layer):
    """The group holding ``layer``'s output channels."""
    (g,) = [g for g in dg.groups for m in g.members
            if m.slot.tensor_name == f"{layer}.weight" and m.slot.role == "out"]
    return g


class FFTNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.c1(torch.relu(self.c0(x)))
        x = torch.fft.fft(x, dim=1).real
        return self.c2(x)


class KronNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 1)
        self.c3 = nn.Conv2d(3, 8, 3, padding=1)
        self.c4 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        h = self.c1(x)
        k = torch.kron(h, torch.ones(1, 2, 1, 1))
        return self.c4(k) + self.c2(torch.relu(self.c3(x)))


def test_unknown_fft_blocks_and_is_reported():
    model = randomize(FFTNet().eval(), 0)
    x = R(2, 3, 6, 6)
    dg = analyze_model(model, x)
    assert any("fft" in k for k in dg.blocked_ops), dg.blocked_ops
    assert not produced_by(dg, "c1").is_prunable
    assert any("fft" in r for r in produced_by(dg, "c1").blocked_reasons)
    assert produced_by(dg, "c0").is_prunable
    check_oracle(model, x, dg=dg)


def test_unknown_kron_blocks_and_is_reported():
    model = randomize(KronNet().eval(), 0)
    x = R(2, 3, 6, 6)
    dg = analyze_model(model, x)
    assert "kron" in dg.blocked_ops, dg.blocked_ops
    assert not produced_by(dg, "c1").is_prunable
    assert produced_by(dg, "c3").is_prunable
    dg, res = check_oracle(model, x, dg=dg)
    assert "c1.weight" not in res.kept or 0 not in res.kept["c1.weight"]


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32),
                                      nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def test_classifier_output_never_pruned():
    model = randomize(Classifier().eval(), 0)
    for settings in (PlanSettings(ratio=0.9), PlanSettings(ratio=0.5, global_ranking=True),
                     PlanSettings(target_flops=0.6)):
        dg, res = check_oracle(model, R(2, 3, 8, 8), settings)
        assert 0 not in res.kept.get("fc.weight", {}) and "fc.bias" not in res.kept
        assert res.model.fc.out_features == 10
    for g in dg.groups:
        for m in g.members:
            if m.slot.tensor_name in ("fc.weight", "fc.bias") and m.slot.dim == 0:
                assert not g.prunable[m.index_map[m.index_map >= 0]].any()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_model_unchanged_by_analysis_and_pruning(mode):
    model = randomize(Classifier(), 0)
    model.train(mode == "train")
    model.features[1].eval()  # a mixed-mode model
    x = R(4, 3, 8, 8)
    state = _state(model)
    grads_before = [p.grad for p in model.parameters()]
    dg = analyze_model(model, x)
    assert_unchanged(model, state)
    for imp in ("l2", "taylor"):
        cal = (lambda: (x, None)) if imp == "taylor" else None
        res = prune_model(model, x, dg, PlanSettings(ratio=0.5, importance=imp), latency=True,
                          latency_runs=2, calibration=cal)
        assert_unchanged(model, state)
        assert [p.grad for p in model.parameters()] == grads_before
        assert res.model is not model


# ------------------------------------------------------------------------------------------------
# planner settings


class Wide(nn.Module):
    """Several independent groups of different sizes and weight scales."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 48, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(48)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def wide(skew=False):
    m = randomize(Wide().eval(), 0)
    if skew:  # 40 of conv2's 64 channels matter little: global ranking should cut them all
        with torch.no_grad():
            for t in (m.conv2.weight, m.conv2.bias, m.bn2.weight, m.bn2.bias):
                t[:40] *= 0.01
    return m


def kept_out(res, layer, size):
    return len(res.kept.get(f"{layer}.weight", {}).get(0, range(size)))


def test_uniform_ratio_per_group():
    dg, res = check_oracle(wide(), R(2, 3, 8, 8), PlanSettings(ratio=0.5))
    assert (kept_out(res, "conv1", 32), kept_out(res, "conv2", 64), kept_out(res, "conv3", 48)) == \
        (16, 32, 24)


def test_global_ranking():
    # scores are normalised per group, so global ranking compares channels *within* their group's
    # distribution: conv2's 40 near-zero channels are the globally least important
    dg, res = check_oracle(wide(skew=True), R(2, 3, 8, 8),
                           PlanSettings(ratio=0.5, global_ranking=True))
    k = (kept_out(res, "conv1", 32), kept_out(res, "conv2", 64), kept_out(res, "conv3", 48))
    assert (32 - k[0]) + (64 - k[1]) + (48 - k[2]) == 72, k  # half of the 144 prunable channels
    assert k[1] <= 24, f"global ranking should cut conv2's 40 weak channels, kept {k}"
    assert set(res.kept["conv2.weight"][0]) >= set(range(40, 64))
    assert k != (16, 32, 24)


@pytest.mark.parametrize("round_to", [4, 8])
def test_round_to(round_to):
    dg, res = check_oracle(wide(), R(2, 3, 8, 8), PlanSettings(ratio=0.3, round_to=round_to))
    for layer, n in (("conv1", 32), ("conv2", 64), ("conv3", 48)):
        assert kept_out(res, layer, n) % round_to == 0, (layer, kept_out(res, layer, n))


def test_ignore_and_overrides():
    dg, res = check_oracle(wide(), R(2, 3, 8, 8),
                           PlanSettings(ratio=0.5, ignore=["conv1"], overrides={"conv3": 0.25}))
    assert kept_out(res, "conv1", 32) == 32
    assert kept_out(res, "conv2", 64) == 32
    assert kept_out(res, "conv3", 48) == 36


def test_unknown_layer_names_are_plan_errors():
    m = wide()
    dg = analyze_model(m, R(2, 3, 8, 8))
    with pytest.raises(PlanError):
        prune_model(m, R(2, 3, 8, 8), dg, PlanSettings(ignore=["nope"]), latency=False)
    with pytest.raises(PlanError):
        prune_model(m, R(2, 3, 8, 8), dg, PlanSettings(ratio=1.5), latency=False)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_importance_criteria(criterion):
    m = wide()
    x = R(4, 3, 8, 8)
    cal = (lambda: (x, lambda out: out.pow(2).mean())) if criterion == "taylor" else None
    check_oracle(m, x, PlanSettings(ratio=0.5, importance=criterion), calibration=cal)


def test_taylor_without_calibration_is_a_plan_error():
    m = wide()
    dg = analyze_model(m, R(2, 3, 8, 8))
    with pytest.raises(PlanError):
        prune_model(m, R(2, 3, 8, 8), dg, PlanSettings(importance="taylor"), latency=False)


@pytest.mark.parametrize("criterion", ["l1", "l2", "lamp"])
def test_magnitude_removes_small_channels(criterion):
    m = randomize(Wide().eval(), 0)
    small = [1, 5, 9, 30]
    with torch.no_grad():
        for c in small:
            m.conv1.weight[c].mul_(1e-3)
            m.conv1.bias[c] *= 1e-3
            m.bn1.weight[c] *= 1e-3
            m.bn1.bias[c] *= 1e-3
            m.conv2.weight[:, c].mul_(1e-3)
    dg, res = check_oracle(m, R(2, 3, 8, 8), PlanSettings(ratio=0.25, importance=criterion))
    kept = set(res.kept["conv1.weight"][0])
    assert not kept & set(small), f"{criterion} kept low-magnitude channels {sorted(kept & set(small))}"


class Bigger(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 32, 64, 64, 128, 128]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm2d(b) for b in chans[1:])
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        for i, (c, b) in enumerate(zip(self.convs, self.bns)):
            x = torch.relu(b(c(x)))
            if i in (1, 3):
                x = F.max_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("kind,target", [("flops", 0.5), ("flops", 0.3), ("params", 0.5),
                                         ("params", 0.7)])
@pytest.mark.parametrize("global_ranking", [False, True])
def test_targets_within_2_percent(kind, target, global_ranking):
    m = randomize(Bigger().eval(), 0)
    x = R(1, 3, 16, 16)
    s = PlanSettings(ratio=None, global_ranking=global_ranking,
                     **{f"target_{kind}": target})
    dg, res = check_oracle(m, x, s)
    b, a = (res.before.flops, res.after.flops) if kind == "flops" else (res.before.params, res.after.params)
    achieved = 1 - a / b
    assert abs(achieved - target) <= 0.02, f"{kind} target {target}: achieved {achieved:.4f}"


def test_unreachable_target_is_a_plan_error():
    m = randomize(Bigger().eval(), 0)
    x = R(1, 3, 16, 16)
    dg = analyze_model(m, x)
    with pytest.raises(PlanError):
        prune_model(m, x, dg, PlanSettings(ratio=None, target_params=0.999, max_group_ratio=0.5),
                    latency=False)


# ------------------------------------------------------------------------------------------------
# meta device, control flow, structured inputs and outputs


def test_meta_analysis_allocates_nothing():
    with torch.device("meta"):
        model = Bigger().eval()
        x = torch.randn(1, 3, 16, 16)
    assert all(p.is_meta for p in model.parameters())
    dg = analyze_model(model, x)
    assert len(dg.prunable_groups) == 5, [g.root for g in dg.prunable_groups]
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
    # the same groups as on CPU
    cpu = randomize(Bigger().eval(), 0)
    dg_cpu = analyze_model(cpu, torch.randn(1, 3, 16, 16))
    assert [(g.root, g.n_channels, g.n_prunable) for g in dg.groups] == \
        [(g.root, g.n_channels, g.n_prunable) for g in dg_cpu.groups]


def test_meta_analysis_of_resnet18():
    import torchvision
    with torch.device("meta"):
        model = torchvision.models.resnet18(num_classes=10).eval()
        x = torch.randn(1, 3, 224, 224)
    dg = analyze_model(model, x)
    assert len(dg.prunable_groups) >= 10
    assert all(p.is_meta for p in model.parameters())


class ControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x, use_a: bool = True):
        x = self.stem(x)
        for i, blk in enumerate(self.blocks):
            if i % 2 == 0:
                x = x + torch.relu(blk(x))
            else:
                x = torch.relu(blk(x))
        if x.shape[-1] > 4:
            x = F.max_pool2d(x, 2)
        return self.a(x) if use_a else self.b(x)


def test_python_control_flow():
    dg, res = check_oracle(randomize(ControlFlow().eval(), 0), R(2, 3, 8, 8))
    assert res.model.b.in_channels == 8  # never traced: untouched


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    features: torch.Tensor


class MultiOut(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        logits = self.fc(h.mean((2, 3)))
        feats = self.c2(h)
        if self.kind == "tuple":
            return logits, feats
        if self.kind == "dict":
            return {"logits": logits, "features": [feats]}
        return Out(logits, feats)


@pytest.mark.parametrize("kind", ["tuple", "dict", "dataclass"])
def test_structured_outputs(kind):
    dg, res = check_oracle(randomize(MultiOut(kind).eval(), 0), R(2, 3, 6, 6))
    assert res.model.c2.out_channels == 8 and res.model.fc.out_features == 5


class DictIn(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Conv2d(3, 8, 3, padding=1)
        self.aux = nn.Linear(4, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, image, meta, scale: float = 1.0):
        h = torch.relu(self.img(image)) * scale
        h = h + self.aux(meta)[:, :, None, None]
        return self.head(h)


def test_dict_inputs():
    x = {"image": R(2, 3, 6, 6), "meta": R(2, 4, seed=3)}
    dg, res = check_oracle(randomize(DictIn().eval(), 0), x)
    assert res.kept["img.weight"][0] == res.kept["aux.weight"][0]


def test_float64_model():
    m = randomize(Bigger().eval(), 0).double()
    check_oracle(m, R(1, 3, 16, 16).double(), tol=1e-10)


def test_kept_params_equal_detects_tampering():
    m = randomize(Classifier().eval(), 0)
    dg, res = check_oracle(m, R(2, 3, 8, 8))
    bad = copy.deepcopy(res.model)
    with torch.no_grad():
        bad.features[0].weight[0, 0, 0, 0] += 1
    with pytest.raises(AssertionError):
        kept_params_equal(m, bad, res.kept)
