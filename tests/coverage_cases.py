"""The cases of ``tests/test_registry_coverage.py`` and which registry entries each must reach.

``CASES``: name -> (build() -> (model, inputs), PlanSettings, analysis options). Most builders are
borrowed from the family test files, so a family's own tests and its coverage share one model.
Everything runs in float64, where the oracle is exact to rounding.

``COVERS``: (registry kind, entry) -> the cases that must reach it. A registry entry missing here
fails the coverage test: adding an op handler, leaf module, updater or criterion means naming
(or writing) a case for it. ``python tests/coverage_cases.py`` prints what every case reaches,
to fill this table in.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_attention_heads as tah  # noqa: E402
import test_detection_heads as tdh  # noqa: E402
import test_layers as tl  # noqa: E402
import test_pyg as tpg  # noqa: E402
import test_reshape_blocks as trb  # noqa: E402
import test_rnn as trnn  # noqa: E402
import test_scatter as tsc  # noqa: E402
import test_setitem as tsi  # noqa: E402
import test_timm_families as ttf  # noqa: E402
import test_transformers as ttr  # noqa: E402
from helpers import random_graph, randomize  # noqa: E402

from core.plan.planner import PlanSettings  # noqa: E402

HALF = PlanSettings(ratio=0.5)
G = torch.Generator


def _double(model, *inputs, seed=0):
    model = randomize(model.eval(), seed).double()
    return model, tuple(t.double() if torch.is_tensor(t) and t.is_floating_point() else t for t in inputs)


def _R(*shape):
    return torch.randn(*shape, generator=G().manual_seed(1), dtype=torch.float64)


Fn = tl.Seq  # f(self, *inputs) over named submodules


def _extra_products():
    """addmm's relatives: batched / vector / outer products with a bias, as written by hand."""
    def fn(s, x):
        h = torch.relu(s.a(x))                                              # (4, 8)
        b = torch.baddbmm(s.bias3, h.unsqueeze(1).expand(-1, 3, -1), s.w3)  # (4, 3, 6)
        v = torch.addmv(s.bv, s.wv, h[0])                                   # (6,)
        o = torch.addr(s.bo, h[0], h[1])                                    # (8, 8)
        ab = torch.addbmm(s.bias2, h.unsqueeze(1).expand(-1, 2, -1), s.w2)  # (2, 5)
        return s.c(b).sum() + v.sum() + o.sum() + ab.sum()

    m = Fn(fn, a=nn.Linear(5, 8), c=nn.Linear(6, 2))
    m.w3, m.bias3 = nn.Parameter(torch.randn(4, 8, 6)), nn.Parameter(torch.randn(4, 3, 6))
    m.wv, m.bv = nn.Parameter(torch.randn(6, 8)), nn.Parameter(torch.randn(6))
    m.bo = nn.Parameter(torch.randn(8, 8))
    m.w2, m.bias2 = nn.Parameter(torch.randn(4, 8, 5)), nn.Parameter(torch.randn(2, 5))
    return _double(m, _R(4, 5))


def _sdpa():
    def fn(s, x):
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, 2, -1).transpose(1, 2) for p in (s.q, s.k, s.v))
        y = F.scaled_dot_product_attention(q, k, v)
        return s.o(y.transpose(1, 2).reshape(b, n, -1))
    return _double(Fn(fn, q=nn.Linear(6, 16), k=nn.Linear(6, 16), v=nn.Linear(6, 16), o=nn.Linear(16, 3)),
                   _R(2, 5, 6))


def _misc_ops():
    """Local response norm (approximate), a bilinear layer (blocks its inputs) beside a prunable
    branch, and a 1-D conv in (time, batch, channel) layout."""
    def fn(s, x, seq):
        h = s.c2(F.local_response_norm(torch.relu(s.c1(x)), 3))
        y = s.bil(torch.relu(s.l1(h.mean((2, 3)))), torch.relu(s.l2(h.mean((2, 3)))))
        t = torch.conv_tbc(torch.relu(s.inp(seq)), s.w_tbc, s.b_tbc, 1)
        return y, s.out(torch.relu(t))

    m = Fn(fn, c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(8, 6, 1), l1=nn.Linear(6, 5),
           l2=nn.Linear(6, 5), bil=nn.Bilinear(5, 5, 2), inp=nn.Linear(4, 8), out=nn.Linear(6, 3))
    m.w_tbc, m.b_tbc = nn.Parameter(torch.randn(3, 8, 6)), nn.Parameter(torch.randn(6))
    return _double(m, _R(2, 3, 6, 6), _R(7, 2, 4))


def _fresh():
    """Tensors made from nothing or from another tensor's shape, combined with channels."""
    def fn(s, x):
        h = s.c1(x)
        w = h.shape[-1]  # constants over space, not over channels (those would block them)
        z = torch.zeros(w) + torch.ones(w) + torch.empty(w).fill_(0.25)  # untraced: no tensor in
        h = h + h.new_ones(w) + h.new_full((w,), 0.5) + h.new_empty(w).fill_(0.25)
        m = h.mean()  # a traced scalar makes these ops visible to the trace
        h = h + torch.full((w,), m) + torch.arange(h.new_tensor(float(w))) + torch.as_tensor(m)
        return s.c2(torch.relu(h) * z.to(h.dtype).sigmoid())
    return _double(Fn(fn, c1=nn.Conv2d(3, 8, 3, padding=1), c2=nn.Conv2d(8, 4, 1)), _R(2, 3, 6, 6))


def _layers(table, name):
    make_model, make_x = table[name]
    return lambda: _double(make_model(), make_x())


def _attention(name):
    make, shape = tah.CASES[name][:2]
    return lambda: _double(make(), _R(*shape))


def _timm(name):
    def build():
        model, shape = ttf.ATTENTION[name][0]()
        return _double(model, _R(*shape))
    return build


def _hf(name):
    def build():
        model, _ = ttr.FAMILIES[name]()
        return randomize(model.eval()).double(), (ttr.IDS,)
    return build


def _mvit():
    from torchvision.models.video import mvit
    cfg = [mvit.MSBlockConfig(2, 16, 16, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 2, 2]),
           mvit.MSBlockConfig(2, 16, 32, [3, 3, 3], [3, 3, 3], [1, 2, 2], [1, 2, 2])]
    m = mvit.MViT(spatial_size=(32, 32), temporal_size=4, block_setting=cfg, residual_pool=True,
                  residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
                  dropout=0.0, num_classes=5)
    return _double(m, _R(1, 3, 4, 32, 32))


def _tv_vit():
    from torchvision.models.vision_transformer import VisionTransformer
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                          mlp_dim=64, num_classes=5)
    return _double(m, _R(2, 3, 32, 32))


CASES: dict = {}
for _n in tl.CASES:
    CASES[f"layers:{_n}"] = (_layers(tl.CASES, _n), HALF, None)
for _n in tl.OPS:
    CASES[f"ops:{_n}"] = (_layers(tl.OPS, _n), HALF, None)
for _n in tah.CASES:
    for _mode in ("heads", "head_dim"):
        CASES[f"attention:{_n}:{_mode}"] = (_attention(_n), HALF, {"attention": _mode})
for _n in ttf.ATTENTION:
    for _mode in ("heads", "head_dim"):
        CASES[f"timm:{_n}:{_mode}"] = (_timm(_n), PlanSettings(ratio=0.3), {"attention": _mode})
CASES["timm:poolformer"] = (lambda: _double(*ttf._poolformer()[:1], _R(2, 3, 32, 32)), PlanSettings(ratio=0.3),
                            None)
for _n in ttr.FAMILIES:
    CASES[f"hf:{_n}"] = (_hf(_n), HALF, None)
for _n in trnn.CASES:
    CASES[f"rnn:{_n}"] = ((lambda n=_n: _double(trnn.Head(trnn.CASES[n]()), _R(5, 3, 6))), HALF, None)
for _cls in (trnn.Packed, trnn.PackedLSTM):
    CASES[f"rnn:{_cls.__name__}"] = ((lambda c=_cls: _double(c(), _R(3, 5, 6), torch.tensor([5, 2, 4]))),
                                     HALF, None)
for _cls in (tsc.IndexAddGNN, tsc.IndexPutGNN, tsc.ScatterGNN):
    CASES[f"scatter:{_cls.__name__}"] = ((lambda c=_cls: _double(c(), *random_graph())), HALF, None)
for _cls in (tpg.GCN, tpg.GAT, tpg.SAGE, tpg.GIN):
    CASES[f"pyg:{_cls.__name__}"] = ((lambda c=_cls: _double(c(), *random_graph())), HALF, None)
for _n, (_cls, _shape, _) in tsi.CASES.items():
    CASES[f"setitem:{_n}"] = ((lambda c=_cls, s=_shape: _double(c(), _R(*s), seed=5)), HALF, None)
for _op in ("roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool"):
    CASES[f"roi:{_op}"] = ((lambda o=_op: _double(tdh.RoiNet(o), _R(2, 3, 16, 16), tdh._rois())), HALF, None)
CASES["roi:multiscale"] = (lambda: _double(tdh.TwoLevelHeads(), *tdh._two_level_inputs()), HALF, None)
CASES["mvit"] = (_mvit, HALF, None)
CASES["tv_vit"] = (_tv_vit, HALF, None)
CASES["extra:products"] = (_extra_products, HALF, None)
CASES["extra:sdpa"] = (_sdpa, HALF, None)
CASES["extra:misc"] = (_misc_ops, HALF, None)
CASES["extra:fresh"] = (_fresh, HALF, None)
CASES["extra:unflatten_decoder"] = (lambda: _double(trb.unflatten_decoder(), _R(2, 64)), HALF, None)


# (kind, entry) -> cases; the cheapest case reaching each entry, as printed by running this file.
COVERS: dict[tuple[str, str], tuple[str, ...]] = {
    ('leaves', 'core.adapters.timm_attention.PrunedTimmAttention'): ('attention:timm_vit:head_dim',),
    ('leaves', 'core.adapters.timm_hybrid.PrunedClassAttn'): ('timm:cait:head_dim',),
    ('leaves', 'core.adapters.timm_hybrid.PrunedCrossCovarianceAttn'): ('timm:edgenext:head_dim',),
    ('leaves', 'core.adapters.timm_hybrid.PrunedLevitAttention'): ('timm:levit:heads',),
    ('leaves', 'core.adapters.timm_hybrid.PrunedTalkingHeadAttn'): ('timm:cait:head_dim',),
    ('leaves', 'core.adapters.timm_hybrid.PrunedXCA'): ('timm:xcit:heads',),
    ('leaves', 'core.adapters.timm_vit.PrunedAttention2d'): ('timm:coatnet:heads',),
    ('leaves', 'core.adapters.timm_vit.PrunedAttentionCl'): ('timm:maxvit:head_dim',),
    ('leaves', 'core.adapters.timm_vit.PrunedBeitAttention'): ('timm:beit:heads',),
    ('leaves', 'core.adapters.timm_vit.PrunedEvaAttention'): ('timm:eva:head_dim',),
    ('leaves', 'core.adapters.timm_vit.PrunedWindowAttentionV2'): ('timm:swinv2:heads',),
    ('leaves', 'core.adapters.torchvision_attention.PrunedRelativePositionalMultiHeadAttention'): ('attention:maxvit:heads',),
    ('leaves', 'core.adapters.torchvision_attention.PrunedShiftedWindowAttention'): ('attention:swin_v1:heads',),
    ('leaves', 'core.adapters.torchvision_attention.PrunedShiftedWindowAttention3d'): ('attention:swin3d:heads',),
    ('leaves', 'core.adapters.torchvision_attention.PrunedShiftedWindowAttentionV2'): ('attention:swin_v2:head_dim',),
    ('leaves', 'timm.layers.attention.Attention'): ('attention:timm_vit:head_dim',),
    ('leaves', 'timm.models.beit.Attention'): ('timm:beit:heads',),
    ('leaves', 'timm.models.cait.ClassAttn'): ('timm:cait:head_dim',),
    ('leaves', 'timm.models.cait.TalkingHeadAttn'): ('timm:cait:head_dim',),
    ('leaves', 'timm.models.edgenext.CrossCovarianceAttn'): ('timm:edgenext:head_dim',),
    ('leaves', 'timm.models.efficientformer.Attention'): ('timm:efficientformer:heads',),
    ('leaves', 'timm.models.eva.EvaAttention'): ('timm:eva:head_dim',),
    ('leaves', 'timm.models.levit.Attention'): ('timm:levit:heads',),
    ('leaves', 'timm.models.levit.AttentionDownsample'): ('timm:levit:heads',),
    ('leaves', 'timm.models.maxxvit.Attention2d'): ('timm:coatnet:heads',),
    ('leaves', 'timm.models.maxxvit.AttentionCl'): ('timm:maxvit:head_dim',),
    ('leaves', 'timm.models.swin_transformer_v2.WindowAttention'): ('timm:swinv2:heads',),
    ('leaves', 'timm.models.xcit.XCA'): ('timm:xcit:heads',),
    ('leaves', 'torchvision.models.maxvit.RelativePositionalMultiHeadAttention'): ('attention:maxvit:heads',),
    ('leaves', 'torchvision.models.swin_transformer.ShiftedWindowAttention'): ('attention:swin_v1:heads',),
    ('leaves', 'torchvision.models.swin_transformer.ShiftedWindowAttentionV2'): ('attention:swin_v2:head_dim',),
    ('leaves', 'torchvision.models.video.swin_transformer.ShiftedWindowAttention3d'): ('attention:swin3d:heads',),
    ('leaves', 'torchvision.ops.poolers.MultiScaleRoIAlign'): ('roi:multiscale',),
    ('ops', 'H'): ('ops:view_linear',),
    ('ops', '_max_pool1d'): ('ops:interpolate_bilinear',),
    ('ops', '_pack_padded_sequence'): ('rnn:Packed',),
    ('ops', '_pad_packed_sequence'): ('rnn:Packed',),
    ('ops', 'abs'): ('layers:embedding_linear',),
    ('ops', 'addbmm'): ('extra:products',),
    ('ops', 'addmm'): ('hf:gpt2',),
    ('ops', 'addmv'): ('extra:products',),
    ('ops', 'addr'): ('extra:products',),
    ('ops', 'all'): ('ops:global_pool_linear',),
    ('ops', 'arange'): ('extra:fresh',),
    ('ops', 'baddbmm'): ('extra:products',),
    ('ops', 'batch_norm'): ('layers:batchnorm1d_3d_input',),
    ('ops', 'bilinear'): ('extra:misc',),
    ('ops', 'bmm'): ('ops:matmul_two_branches',),
    ('ops', 'channel_shuffle'): ('ops:channel_shuffle_module',),
    ('ops', 'conv1d'): ('ops:view_linear',),
    ('ops', 'conv_tbc'): ('extra:misc',),
    ('ops', 'conv_transpose1d'): ('layers:conv_transpose3d',),
    ('ops', 'cumprod'): ('ops:matmul_two_branches',),
    ('ops', 'einsum'): ('ops:einsum_two_branches',),
    ('ops', 'embedding'): ('layers:embedding_linear',),
    ('ops', 'expand_as'): ('scatter:ScatterGNN',),
    ('ops', 'full'): ('extra:fresh',),
    ('ops', 'group_norm'): ('layers:groupnorm_no_affine',),
    ('ops', 'gru'): ('rnn:Packed',),
    ('ops', 'index_add'): ('scatter:ScatterGNN',),
    ('ops', 'index_put'): ('scatter:IndexPutGNN',),
    ('ops', 'layer_norm'): ('timm:poolformer',),
    ('ops', 'linear'): ('layers:embedding_linear',),
    ('ops', 'local_response_norm'): ('extra:misc',),
    ('ops', 'maxvit_attention'): ('attention:maxvit:heads',),
    ('ops', 'multi_head_attention_forward'): ('attention:mha:head_dim',),
    ('ops', 'multiscale_roi_align'): ('roi:multiscale',),
    ('ops', 'new_full'): ('extra:fresh',),
    ('ops', 'new_ones'): ('extra:fresh',),
    ('ops', 'new_zeros'): ('scatter:IndexAddGNN',),
    ('ops', 'pixel_shuffle'): ('ops:pixel_shuffle',),
    ('ops', 'prelu'): ('layers:prelu_shared',),
    ('ops', 'ps_roi_align'): ('roi:ps_roi_align',),
    ('ops', 'roi_align'): ('roi:roi_pool',),
    ('ops', 'scaled_dot_product_attention'): ('extra:sdpa',),
    ('ops', 'scatter'): ('scatter:ScatterGNN',),
    ('ops', 'setitem'): ('setitem:fill_rows',),
    ('ops', 'swin_window_attention'): ('attention:swin_v1:heads',),
    ('ops', 'timm_attention'): ('attention:timm_vit:head_dim',),
    ('ops', 'timm_beit_attention'): ('timm:beit:heads',),
    ('ops', 'timm_class_attention'): ('timm:cait:head_dim',),
    ('ops', 'timm_eva_attention'): ('timm:eva:head_dim',),
    ('ops', 'timm_key_value_attention'): ('timm:levit:heads',),
    ('ops', 'timm_maxxvit_attention'): ('timm:coatnet:heads',),
    ('ops', 'timm_swinv2_attention'): ('timm:swinv2:heads',),
    ('ops', 'timm_talking_head_attention'): ('timm:cait:head_dim',),
    ('ops', 'timm_xca_attention'): ('timm:xcit:heads',),
    ('updaters', 'core.adapters.pyg.TorchGeometricModule'): ('pyg:GCN',),
    ('updaters', 'timm.layers.attention.Attention'): ('attention:timm_vit:head_dim',),
    ('updaters', 'timm.layers.pos_embed_rel.RelPosBias'): ('timm:coatnet:heads',),
    ('updaters', 'timm.layers.pos_embed_rel.RelPosBiasTf'): ('timm:maxvit_tf:heads',),
    ('updaters', 'timm.layers.pos_embed_rel.RelPosMlp'): ('timm:maxxvit_rel_mlp:heads',),
    ('updaters', 'timm.models.beit.Attention'): ('timm:beit:heads',),
    ('updaters', 'timm.models.cait.ClassAttn'): ('timm:cait:head_dim',),
    ('updaters', 'timm.models.cait.TalkingHeadAttn'): ('timm:cait:head_dim',),
    ('updaters', 'timm.models.edgenext.CrossCovarianceAttn'): ('timm:edgenext:head_dim',),
    ('updaters', 'timm.models.efficientformer.Attention'): ('timm:efficientformer:heads',),
    ('updaters', 'timm.models.eva.EvaAttention'): ('timm:eva:head_dim',),
    ('updaters', 'timm.models.levit.Attention'): ('timm:levit:heads',),
    ('updaters', 'timm.models.levit.AttentionDownsample'): ('timm:levit:heads',),
    ('updaters', 'timm.models.maxxvit.Attention2d'): ('timm:coatnet:heads',),
    ('updaters', 'timm.models.maxxvit.AttentionCl'): ('timm:maxvit:head_dim',),
    ('updaters', 'timm.models.metaformer.Scale'): ('timm:poolformer',),
    ('updaters', 'timm.models.swin_transformer_v2.WindowAttention'): ('timm:swinv2:heads',),
    ('updaters', 'timm.models.xcit.XCA'): ('timm:xcit:heads',),
    ('updaters', 'torch.nn.modules.activation.MultiheadAttention'): ('attention:mha:head_dim',),
    ('updaters', 'torch.nn.modules.activation.PReLU'): ('layers:prelu_per_channel',),
    ('updaters', 'torch.nn.modules.batchnorm._NormBase'): ('layers:batchnorm1d_3d_input',),
    ('updaters', 'torch.nn.modules.conv._ConvNd'): ('ops:view_linear',),
    ('updaters', 'torch.nn.modules.flatten.Unflatten'): ('extra:unflatten_decoder',),
    ('updaters', 'torch.nn.modules.linear.Linear'): ('layers:embedding_linear',),
    ('updaters', 'torch.nn.modules.module.Module'): ('layers:embedding_linear',),
    ('updaters', 'torch.nn.modules.normalization.GroupNorm'): ('layers:groupnorm_no_affine',),
    ('updaters', 'torch.nn.modules.normalization.LayerNorm'): ('timm:poolformer',),
    ('updaters', 'torch.nn.modules.rnn.RNNBase'): ('rnn:Packed',),
    ('updaters', 'torch.nn.modules.sparse.Embedding'): ('layers:embedding_linear',),
    ('updaters', 'torchvision.models.maxvit.RelativePositionalMultiHeadAttention'): ('attention:maxvit:heads',),
    ('updaters', 'torchvision.models.swin_transformer.ShiftedWindowAttention'): ('attention:swin_v1:heads',),
    ('updaters', 'torchvision.models.swin_transformer.ShiftedWindowAttentionV2'): ('attention:swin_v2:head_dim',),
    ('updaters', 'torchvision.models.video.mvit.MultiscaleAttention'): ('mvit',),
    ('updaters', 'torchvision.models.video.swin_transformer.ShiftedWindowAttention3d'): ('attention:swin3d:heads',),
    ('updaters', 'torchvision.models.vision_transformer.VisionTransformer'): ('tv_vit',),
}


if __name__ == "__main__":  # print what each case reaches, for filling in COVERS
    import test_registry_coverage as trc

    import time

    reach: dict = {}
    cost: dict = {}
    for name in CASES:
        t0 = time.perf_counter()
        try:
            hits = trc.run_case(name)
            cost[name] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"# {name}: FAILED {type(e).__name__}: {str(e)[:200]}")
            continue
        for kind, entries in hits.items():
            for e in entries:
                reach.setdefault((kind, e), []).append(name)
    want = ([("ops", e) for e in trc.OP_ENTRIES] + [("leaves", e) for e in trc.LEAF_ENTRIES]
            + [("updaters", e) for e in trc.UPDATER_ENTRIES])
    for key in sorted(want):
        cheapest = sorted(reach.get(key, ()), key=cost.get)[:1]
        print(f"    {key!r}: {tuple(cheapest)!r},")
    print("# seconds:", {k: round(v, 2) for k, v in sorted(cost.items(), key=lambda kv: -kv[1])[:15]})
