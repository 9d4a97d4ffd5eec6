"""Graph and point-cloud networks written with plain torch ops: GCN, multi-head GAT (concatenated
heads) and DGCNN (kNN via topk + gather, edge features cat(x_j - x_i, x_i), max over neighbours),
pruned and checked with the zeroed-group oracle; torchvision segmentation/detection (slow)."""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import check_oracle, randomize  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402


class GCN(nn.Module):
    def __init__(self, cin=8, hid=16, nclass=4):
        super().__init__()
        self.l1, self.l2, self.out = nn.Linear(cin, hid), nn.Linear(hid, hid), nn.Linear(hid, nclass)

    def forward(self, x, adj):  # adj: normalised dense adjacency (N, N)
        x = F.relu(adj @ self.l1(x))
        x = F.relu(adj @ self.l2(x))
        return self.out(x)


class GATLayer(nn.Module):
    def __init__(self, cin, dim, heads):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.w = nn.Linear(cin, heads * dim, bias=False)
        self.a_src = nn.Parameter(torch.randn(heads, dim))
        self.a_dst = nn.Parameter(torch.randn(heads, dim))

    def forward(self, x, adj):
        n = x.shape[0]
        h = self.w(x).view(n, self.heads, -1)  # (N, H, D): head dim inferred
        e_src = (h * self.a_src).sum(-1)  # (N, H)
        e_dst = (h * self.a_dst).sum(-1)
        e = F.leaky_relu(e_src.unsqueeze(1) + e_dst.unsqueeze(0), 0.2)  # (N, N, H)
        e = e.masked_fill(adj.unsqueeze(-1) == 0, float("-inf"))
        att = e.softmax(dim=1)
        out = torch.einsum("ijh,jhd->ihd", att, h)
        return F.elu(out.reshape(n, -1))  # concatenated heads


class GAT(nn.Module):
    def __init__(self, cin=8, dim=8, heads=4, nclass=4):
        super().__init__()
        self.g1 = GATLayer(cin, dim, heads)
        self.g2 = GATLayer(dim * heads, dim, heads)
        self.out = nn.Linear(dim * heads, nclass)

    def forward(self, x, adj):
        return self.out(self.g2(self.g1(x, adj), adj))


def knn(x, k):  # x: (B, C, N)
    inner = -2 * torch.matmul(x.transpose(2, 1), x)
    xx = torch.sum(x ** 2, dim=1, keepdim=True)
    dist = -xx - inner - xx.transpose(2, 1)
    return dist.topk(k=k, dim=-1)[1]  # (B, N, k)


def edge_features(x, idx):  # -> (B, 2C, N, k)
    b, c, n = x.shape
    k = idx.shape[-1]
    xt = x.transpose(1, 2)  # (B, N, C)
    nb = torch.gather(xt.unsqueeze(1).expand(b, n, n, c), 2, idx.unsqueeze(-1).expand(b, n, k, c))
    center = xt.unsqueeze(2).expand(b, n, k, c)
    return torch.cat([nb - center, center], dim=3).permute(0, 3, 1, 2)


class DGCNN(nn.Module):
    def __init__(self, k=4, nclass=5):
        super().__init__()
        self.k = k
        self.c1 = nn.Sequential(nn.Conv2d(6, 16, 1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.2))
        self.c2 = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.2))
        self.c3 = nn.Sequential(nn.Conv1d(32, 32, 1, bias=False), nn.BatchNorm1d(32), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, nclass))

    def forward(self, pts):  # (B, 3, N)
        idx = knn(pts, self.k)  # neighbours from coordinates (dynamic graph on the input)
        x1 = self.c1(edge_features(pts, idx)).max(dim=-1)[0]
        idx = knn(x1, self.k)  # dynamic graph on features: indices computed from channels
        x2 = self.c2(edge_features(x1, idx)).max(dim=-1)[0]
        x = self.c3(torch.cat([x1, x2], dim=1))
        x = torch.cat([x.max(dim=-1)[0], x.mean(dim=-1)], dim=1)
        return self.head(x)


def _graph(n=10, cin=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, generator=g, dtype=torch.float64)
    a = (torch.rand(n, n, generator=g) < 0.3).double()
    a = ((a + a.T + torch.eye(n, dtype=torch.float64)) > 0).double()
    d = a.sum(1).rsqrt()
    return x, a * d[:, None] * d[None, :]


def test_gcn():
    x, adj = _graph()
    m = randomize(GCN().eval()).double()
    dg, res = check_oracle(m, (x, adj), PlanSettings(ratio=0.5), tol=1e-9, expect_exact=True)
    assert res.after.flops < 0.7 * res.before.flops


def test_gat_heads():
    x, adj = _graph()
    m = randomize(GAT().eval()).double()
    dg, res = check_oracle(m, (x, adj), PlanSettings(ratio=0.5), tol=1e-9, expect_exact=True)
    assert not dg.blocked_ops
    assert res.after.flops < 0.8 * res.before.flops


def test_dgcnn():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(2, 3, 12, generator=g, dtype=torch.float64)
    m = randomize(DGCNN().eval(), inputs=pts.float()).double()
    dg, res = check_oracle(m, pts, PlanSettings(ratio=0.5), tol=1e-9, expect_exact=None)
    assert res.after.flops < 0.8 * res.before.flops


# ------------------------------------------------------------------------------------------------
# torchvision segmentation / detection: traced, pruned at ratio 0.3, forward OK, output structure
# unchanged (slow: ~25-70 s each on 2 cores)


def _tv_seg(name):
    import torchvision
    kw = {} if name.startswith("lraspp") else {"aux_loss": False}
    m = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None,
                                                        num_classes=5, **kw).eval()
    # batch 2: DeepLabV3's ASPP pooling branch has a BatchNorm on a 1x1 map (calibration trains it)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return randomize(m, inputs=x), x


def _structure(out):
    from core.trace.tracer import flatten_outputs
    return [tuple(t.shape) for t in flatten_outputs(out)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "fcn_resnet50",
                                  "deeplabv3_mobilenet_v3_large"])
def test_torchvision_segmentation(name):
    from core.pipeline import analyze_model, prune_model
    m, x = _tv_seg(name)
    dg = analyze_model(m, x)
    res = prune_model(m, x, dg, PlanSettings(ratio=0.3), latency=False, verify=True)
    assert res.verify.passed, res.verify.message
    assert res.after.flops < 0.8 * res.before.flops
    with torch.no_grad():
        assert _structure(m(x)) == _structure(res.model(x))


@pytest.mark.slow
def test_torchvision_detection_fasterrcnn():
    """Data-dependent control flow (proposal filtering, NMS) runs on real tensors; frozen BN."""
    import torchvision
    from core.trace.inputs import as_example_inputs
    from core.pipeline import analyze_model, prune_model
    m = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128).eval()
    m = randomize(m)
    ex = as_example_inputs(([torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))],))
    dg = analyze_model(m, ex)
    res = prune_model(m, ex, dg, PlanSettings(ratio=0.3), latency=False, verify=False)
    assert res.after.flops < 0.85 * res.before.flops
    with torch.no_grad():
        out = res.model(*ex.args)
    assert isinstance(out, list) and set(out[0]) == {"boxes", "labels", "scores"}
