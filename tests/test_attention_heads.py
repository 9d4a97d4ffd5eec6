"""Head and head-dimension pruning of attention modules traced as one op (core.adapters.heads):
torchvision Swin v1/v2/3-D and MaxViT, timm ``Attention``, ``nn.MultiheadAttention``; plus the
torchvision ViT residual stream, whose patch reshape reads ``self.hidden_dim``.

Each case prunes every other head (or head dimension) of every attention module and checks the
oracle in float64 — exact, because the pruned modules keep the original softmax scale — then that
the module switched to its pruned subclass with the right sizes, trains, saves and loads, and can be
analysed and pruned again.
"""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torchvision.models import maxvit, swin_transformer as swin, vision_transformer as tv_vit
from torchvision.models.video import swin_transformer as swin3d

from core.pipeline import analyze_model
from core.prune.apply import PruningPlan, apply_kept
from core.prune.verify import verify_plan
from helpers import check_oracle, randomize

MODES = ["heads", "head_dim"]


def _swin(v2: bool):
    kw = dict(block=swin.SwinTransformerBlockV2, downsample_layer=swin.PatchMergingV2) if v2 else {}
    return swin.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                window_size=[4, 4], stochastic_depth_prob=0.0, num_classes=5, **kw)


def _swin3d():
    return swin3d.SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                    window_size=[2, 4, 4], stochastic_depth_prob=0.0, num_classes=5)


def _maxvit():
    return maxvit.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=4, block_channels=[16, 32],
                         block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=5)


def _timm(**kw):
    timm = pytest.importorskip("timm")
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5, **kw)


class _MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 24)
        self.attn = nn.MultiheadAttention(24, 4, batch_first=True)
        self.out = nn.Linear(24, 3)

    def forward(self, x):
        h = self.inp(x)
        return self.out(self.attn(h, h, h, need_weights=False)[0])


# 36 px: Swin's 9x9 patch grid is padded to whole 4x4 windows and the second block shifts them
CASES = {
    "swin_v1": (lambda: _swin(False), (2, 3, 36, 36), swin.ShiftedWindowAttention, "num_heads"),
    "swin_v2": (lambda: _swin(True), (2, 3, 36, 36), swin.ShiftedWindowAttentionV2, "num_heads"),
    "swin3d": (_swin3d, (1, 3, 4, 36, 36), swin3d.ShiftedWindowAttention3d, "num_heads"),
    "maxvit": (_maxvit, (2, 3, 32, 32), maxvit.RelativePositionalMultiHeadAttention, "n_heads"),
    "timm_vit": (_timm, (2, 3, 32, 32), None, "num_heads"),
    "mha": (_MHA, (2, 7, 6), nn.MultiheadAttention, "num_heads"),
}


def _attention_groups(dg):
    return [g for g in dg.prunable_groups
            if any(m.slot.tensor_name.endswith((".<num_heads>", ".<head_dim>")) for m in g.members)]


def _every_other(groups):
    return PruningPlan({g.id: list(range(0, g.n_channels, 2))[:g.n_channels - 1] for g in groups})


def _attention_modules(model, cls):
    if cls is None:  # timm
        import timm
        cls = timm.layers.Attention
    return {n: m for n, m in model.named_modules() if isinstance(m, cls)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_attention_pruned_exactly(case, mode):
    make, shape, cls, heads_attr = CASES[case]
    model = randomize(make().eval(), seed=1).double()
    x = torch.randn(*shape, dtype=torch.float64)
    dg = analyze_model(model, (x,), options={"attention": mode})
    groups = _attention_groups(dg)
    before = _attention_modules(model, cls)
    assert len(groups) == len(before) > 0, [g.root for g in dg.groups]
    plan = _every_other(groups)
    rep = verify_plan(model, (x,), dg, plan)
    assert rep.expected_exact and not rep.approximate_reasons, rep.approximate_reasons
    assert rep.shapes_equal and rep.max_rel_diff < 1e-10, rep.max_rel_diff

    pruned = apply_kept(model, plan.kept_indices(dg))
    after = _attention_modules(pruned, cls)
    for name, m0 in before.items():
        m1 = after[name]
        assert type(m1).__name__.startswith("Pruned"), type(m1)
        h0, h1 = getattr(m0, heads_attr), getattr(m1, heads_attr)
        if mode == "heads":
            assert h1 == (h0 + 1) // 2 < h0
        else:
            assert h1 == h0
    assert list(pruned.state_dict()) == list(model.state_dict())  # same keys, smaller tensors
    n0 = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in pruned.parameters()) < n0

    # trains, pickles, and a pruned model can be analysed and pruned again
    pruned.train()
    pruned(x).sum().backward()
    assert all(p.grad is not None for p in pruned.parameters() if p.requires_grad and p.numel())
    pruned.eval()
    buf = io.BytesIO()
    torch.save(pruned, buf)
    back = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    with torch.no_grad():
        assert torch.equal(back(x), pruned(x))
    dg2 = analyze_model(pruned, (x,), options={"attention": mode})
    # (PrunedMultiheadAttention is traced through: its heads are the inferred dim of a view)
    groups2 = [g for g in dg2.prunable_groups if g.n_channels > 1 and any(
        m.slot.tensor_name.endswith(("qkv.weight", "in_proj_weight")) and m.slot.dim == 0
        for m in g.members)]
    assert groups2, "the pruned attention is no longer prunable"
    rep2 = verify_plan(pruned, (x,), dg2, _every_other(groups2))
    assert rep2.expected_exact and rep2.max_rel_diff < 1e-10


def test_qk_norm_makes_head_dim_pruning_approximate():
    model = randomize(_timm(qk_norm=True).eval(), seed=2).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for mode, exact in (("heads", True), ("head_dim", False)):
        dg = analyze_model(model, (x,), options={"attention": mode})
        rep = verify_plan(model, (x,), dg, _every_other(_attention_groups(dg)))
        assert rep.expected_exact is exact, (mode, rep.approximate_reasons)
        if exact:
            assert rep.max_rel_diff < 1e-10
        else:
            assert any("head dimension" in r for r in rep.approximate_reasons)


def test_unknown_attention_mode_is_named():
    with pytest.raises(ValueError, match="'heads_and_dims'"):
        analyze_model(_MHA(), (torch.randn(1, 2, 6),), options={"attention": "heads_and_dims"})


def test_swin_whole_model_pipeline():
    """Ratio 0.5 over every group: heads, MLPs and the residual stream (LayerNorm: approximate)."""
    model = randomize(_swin(False).eval(), seed=3)
    dg, res = check_oracle(model, (torch.randn(1, 3, 36, 36),), expect_exact=False)
    assert res.after.flops < 0.5 * res.before.flops
    heads = [m.num_heads for m in res.model.modules() if isinstance(m, swin.ShiftedWindowAttention)]
    assert heads == [1, 1, 2, 2]


def test_torchvision_vit_stream_is_prunable():
    """``VisionTransformer._process_input`` reshapes with ``self.hidden_dim``; the updater follows."""
    model = randomize(tv_vit.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                               hidden_dim=32, mlp_dim=64, num_classes=5).eval(), seed=4)
    dg, res = check_oracle(model, (torch.randn(1, 3, 32, 32),), expect_exact=False)
    stream = [g for g in dg.prunable_groups if g.root == "conv_proj"]
    assert stream and res.model.hidden_dim == res.model.conv_proj.out_channels < 32


def test_cli_head_dim_pruning_and_project_replay(tmp_path, capsys):
    """``--attention head-dim`` reaches the analysis, and a project replays the plan with it."""
    import main as entry
    from core.io.project import load_project, restore

    factory = tmp_path / "swin_small.py"
    factory.write_text(
        "import torch\nfrom torchvision.models import swin_transformer as swin\n"
        "def make():\n    torch.manual_seed(0)\n"
        "    return swin.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], "
        "num_heads=[2, 4], window_size=[4, 4], stochastic_depth_prob=0.0, num_classes=5)\n")
    spec = f"{factory}:make"
    out, proj = tmp_path / "p.pt", tmp_path / "p.psproj"
    rc = entry.main(["prune", spec, "--input-shape", "1,3,32,32", "--attention", "head-dim",
                     "--ratio", "0.5", "--no-latency", "--trust", "--accept-approximate", "-o", str(out),
                     "--project", str(proj)])
    assert rc == 0, capsys.readouterr().err
    pruned = torch.load(out, weights_only=False)
    attn = [m for m in pruned.modules() if isinstance(m, swin.ShiftedWindowAttention)]
    assert [m.num_heads for m in attn] == [2, 2, 4, 4]  # heads kept, each one narrower
    assert all(m.qkv.out_features < 3 * 16 * (1 + (i >= 2)) for i, m in enumerate(attn))
    _, _, dg, result = restore(load_project(str(proj)), trust=True)
    assert dg.options == {"attention": "head_dim"}
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        assert torch.equal(result.model.eval()(x), pruned.eval()(x))


def test_mvit_pooling_attention_heads():
    """MViT-v2's MultiscaleAttention pools q/k/v per head dimension and reshapes with
    ``self.num_heads``: its heads (the split dim sized like num_heads) are pruned exactly and the
    updater rewrites ``num_heads`` / ``output_dim``."""
    from torchvision.models.video import mvit

    cfg = [mvit.MSBlockConfig(2, 16, 16, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 2, 2]),
           mvit.MSBlockConfig(2, 16, 32, [3, 3, 3], [3, 3, 3], [1, 2, 2], [1, 2, 2]),
           mvit.MSBlockConfig(4, 32, 32, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 1, 1])]
    model = mvit.MViT(spatial_size=(32, 32), temporal_size=4, block_setting=cfg, residual_pool=True,
                      residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
                      dropout=0.0, num_classes=5)
    model = randomize(model.eval(), seed=6).double()
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    dg = analyze_model(model, (x,))
    heads = [g for g in dg.prunable_groups if g.root.endswith("attn.qkv")]
    assert [g.n_channels for g in heads] == [2, 2, 4]
    plan = _every_other(heads)
    rep = verify_plan(model, (x,), dg, plan)
    assert rep.expected_exact and rep.max_rel_diff < 1e-10, rep.message
    pruned = apply_kept(model, plan.kept_indices(dg))
    assert [b.attn.num_heads for b in pruned.blocks] == [1, 1, 2]
    assert [b.attn.output_dim for b in pruned.blocks] == [8, 16, 16]


def test_cost_estimate_counts_attention_traced_as_one_op():
    """The instant estimate (targets panel, FLOPs targets) spreads the FLOPs measured inside a
    leaf attention module over its weights: it must track the real pruned FLOPs."""
    from core.pipeline import cost_model, estimate, prune_model
    from core.plan.planner import PlanSettings

    model = _swin(False).eval()
    x = torch.randn(1, 3, 36, 36)
    dg = analyze_model(model, (x,))
    cost = cost_model(dg, model, (x,))
    for ratio in (0.3, 0.5):
        _, guess = estimate(dg, model, PlanSettings(ratio=ratio), cost)
        real = prune_model(model, (x,), dg, PlanSettings(ratio=ratio), latency=False,
                           verify=False).after.flops
        assert abs(guess - real) < 0.1 * real, (ratio, guess, real)


def test_user_subclass_keeps_its_forward():
    """Only the exact library classes are traced as one op and switched to a pruned subclass; a
    user's subclass (own forward) keeps its class when its sizes are updated after pruning."""
    from core.prune.apply import update_module

    class MyAttention(swin.ShiftedWindowAttention):
        def forward(self, x):
            return 2 * super().forward(x)

    mine = MyAttention(16, [4, 4], [0, 0], 2)
    update_module(mine, {})
    assert type(mine) is MyAttention
    plain = swin.ShiftedWindowAttention(16, [4, 4], [0, 0], 2)
    update_module(plain, {})
    assert type(plain).__name__ == "PrunedShiftedWindowAttention"
