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


class Fn(nn.Module):
    """f(self, *inputs) over named submodules."""

    def __init__(self, fn, **mods):
        super().__init__()
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, *a):
        return self.fn(self, *a)


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


# (kind, entry) -> cases; generated by running this file, then reviewed.
COVERS: dict[tuple[str, str], tuple[str, ...]] = {}


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
