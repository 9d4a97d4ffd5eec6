"""torchvision region ops (``core/ops/roi.py``) and two-stage detection heads, pruned exactly.

- ``roi_align`` / ``roi_pool`` keep channels 1:1; ``ps_roi_align`` / ``ps_roi_pool`` remove whole
  blocks of ``pooled_h * pooled_w`` input channels per output channel;
- ``MultiScaleRoIAlign`` is traced as one op: the pyramid levels it reads share one group, which
  reaches the heads after it (Mask R-CNN's mask head with its ``ConvTranspose2d``, Keypoint R-CNN's
  keypoint head with ``ConvTranspose2d`` + ``F.interpolate``); a subclass, traced through, blocks
  the levels instead (its ``result[idx] = ...`` merge is invisible to a trace);
- a CI-sized Faster R-CNN (mobilenet_v3 FPN): the FPN is pruned, and the oracle is exact. Its
  float32 outputs go through score sorting / NMS, where a rounding-level difference reorders boxes
  (the unpruned model itself differs by up to ~0.7 relative between float32 and float64), so the
  oracle takes its verdict in float64 when float32 fails (``core/prune/verify.py``); a real mismatch
  still fails there.

Models are float64 where the test compares outputs itself: exact means < 1e-9 relative.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import check_oracle, randomize  # noqa: E402

from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402
from core.prune.apply import apply_kept  # noqa: E402
from core.prune.verify import verify_plan  # noqa: E402

G = torch.Generator


def _rois():
    # (batch index, x1, y1, x2, y2) on a 16x16 image, both images used
    return torch.tensor([[0, 0.0, 0.0, 15.0, 15.0], [0, 2.5, 3.0, 9.0, 12.0],
                         [1, 4.0, 1.0, 14.0, 7.5], [1, 1.0, 1.0, 5.0, 5.0]], dtype=torch.float64)


class RoiNet(nn.Module):
    """conv -> region op -> conv -> linear; the region op's input channels are prunable."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        ps = op.startswith("ps_")
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)  # ps ops: 4 output channels x 2x2 bins
        self.conv2 = nn.Conv2d(4 if ps else 16, 6, 1)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x, rois):
        f = torch.relu(self.conv1(x))
        ops = torchvision.ops
        if self.op == "roi_align":
            p = ops.roi_align(f, rois, output_size=2, spatial_scale=1.0, sampling_ratio=2)
        elif self.op == "roi_pool":
            p = ops.roi_pool(f, rois, output_size=2, spatial_scale=1.0)
        elif self.op == "ps_roi_align":
            p = ops.ps_roi_align(f, rois, output_size=2, spatial_scale=1.0, sampling_ratio=2)
        else:
            p = ops.ps_roi_pool(f, rois, output_size=2, spatial_scale=1.0)
        return self.fc(torch.relu(self.conv2(p)).flatten(1))


@pytest.mark.parametrize("op", ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool"])
def test_region_ops_prune_input_channels(op):
    x = torch.randn(2, 3, 16, 16, generator=G().manual_seed(0), dtype=torch.float64)
    m = randomize(RoiNet(op)).double().eval()
    dg, res = check_oracle(m, (x, _rois()), PlanSettings(ratio=0.5), tol=1e-9)
    assert not dg.blocked_ops, dg.blocked_ops
    kept = res.kept["conv1.weight"][0]
    assert 0 < len(kept) < 16
    if op.startswith("ps_"):  # whole blocks of 2x2 bins go, with the output channel they feed
        blocks = {k // 4 for k in kept}
        assert sorted(kept) == [b * 4 + j for b in sorted(blocks) for j in range(4)]
        assert res.kept["conv2.weight"][1] == sorted(blocks)
    else:
        assert res.kept["conv2.weight"][1] == kept


class TwoLevelHeads(nn.Module):
    """Two pyramid levels -> MultiScaleRoIAlign -> a box head, Mask R-CNN's mask head and
    predictor, Keypoint R-CNN's keypoint head and predictor (at toy widths)."""

    pooler_type = MultiScaleRoIAlign

    def __init__(self):
        super().__init__()
        self.level0 = nn.Conv2d(3, 8, 3, padding=1)  # 32x32: small boxes
        self.level1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 16x16: large boxes
        self.pool = self.pooler_type(["0", "1"], output_size=4, sampling_ratio=2)
        self.box = nn.Linear(8 * 4 * 4, 6)
        self.mask_head = MaskRCNNHeads(8, (6, 6), dilation=1)
        self.mask_predictor = MaskRCNNPredictor(6, 5, num_classes=3)  # ConvTranspose2d + 1x1 conv
        self.kp_head = KeypointRCNNHeads(8, (6, 6))
        self.kp_predictor = KeypointRCNNPredictor(6, 4)  # ConvTranspose2d + F.interpolate

    def forward(self, x, boxes):
        feats = {"0": torch.relu(self.level0(x)), "1": torch.relu(self.level1(x))}
        p = self.pool(feats, boxes, [tuple(x.shape[-2:])] * x.shape[0])
        return (self.box(p.flatten(1)), self.mask_predictor(self.mask_head(p)),
                self.kp_predictor(self.kp_head(p)))


def _boxes():
    # sides ~8 map to level 0, sides ~32 to level 1 (canonical 224 px at level 4)
    return [torch.tensor([[0.0, 0.0, 31.0, 31.0], [3.0, 4.0, 11.0, 12.0]], dtype=torch.float64),
            torch.tensor([[1.0, 2.0, 30.0, 29.0], [20.0, 18.0, 27.0, 26.0]], dtype=torch.float64)]


def _two_level_inputs():
    return torch.randn(2, 3, 32, 32, generator=G().manual_seed(0), dtype=torch.float64), _boxes()


def test_multiscale_roi_align_levels_and_heads_pruned_exactly():
    x, boxes = _two_level_inputs()
    m = randomize(TwoLevelHeads()).double().eval()
    with torch.no_grad():  # both levels really receive boxes
        m(x, boxes)
        levels = m.pool.map_levels(boxes)
    assert set(levels.tolist()) == {0, 1}
    dg, res = check_oracle(m, (x, boxes), PlanSettings(ratio=0.5), tol=1e-9)
    assert not dg.blocked_ops, dg.blocked_ops
    g = dg.groups_of_module("level0")
    pyramid = [grp for grp in g if "level1" in grp.layers]
    assert pyramid and pyramid[0].is_prunable, [grp.layers for grp in g]
    for name in ("level0.weight", "level1.weight"):
        assert len(res.kept[name][0]) == 4
    # the pooled channels reach every head: box linear (x 16 positions), mask and keypoint convs
    assert len(res.kept["box.weight"][1]) == 4 * 16
    assert len(res.kept["mask_head.0.0.weight"][1]) == 4
    assert len(res.kept["kp_head.0.weight"][1]) == 4
    # the heads' own widths are pruned too: ConvTranspose2d weights are (in, out, k, k)
    assert len(res.kept["mask_predictor.conv5_mask.weight"][0]) < 6  # fed by mask_head.1.0
    assert len(res.kept["mask_predictor.conv5_mask.weight"][1]) < 5  # its own output channels
    assert len(res.kept["kp_predictor.kps_score_lowres.weight"][0]) < 6  # fed by kp_head.2


class MyPooler(MultiScaleRoIAlign):
    """A subclass is traced through (leaf modules match the exact class)."""


class TracedThroughHeads(TwoLevelHeads):
    pooler_type = MyPooler


def test_multiscale_roi_align_subclass_blocks_levels():
    x, boxes = _two_level_inputs()
    m = randomize(TracedThroughHeads()).double().eval()
    dg, res = check_oracle(m, (x, boxes), PlanSettings(ratio=0.5), tol=1e-9)
    reasons = [r for grp in dg.groups_of_module("level0") for r in grp.blocked_reasons]
    assert any("item assignment" in r for r in reasons), reasons
    assert "level0.weight" not in res.kept and "level1.weight" not in res.kept
    assert "mask_head.0.0.weight" in res.kept  # the heads' own widths still go


def _fasterrcnn():
    m = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128).eval()
    x = [torch.rand(3, 128, 128, generator=G().manual_seed(0))]
    return randomize(m, inputs=(x,)), (x,)


def test_fasterrcnn_fpn_pruned_through_roi_align():
    """Default post-processing (score threshold, NMS, top-k): here the float32 comparison flips
    (relative ~0.2 on 1 CPU thread: boxes reordered) and the float64 one is exact."""
    torch.set_num_threads(1)
    m, ex = _fasterrcnn()
    dg = analyze_model(m, ex)
    assert "roi_align" not in dg.blocked_ops and "multiscale_roi_align" not in dg.blocked_ops
    res = prune_model(m, ex, dg, PlanSettings(ratio=0.3), latency=False, verify=True)
    rep = res.verify
    assert rep.passed and rep.expected_exact, rep.message
    # exact: in float32 directly, or (after a rounding flip in NMS / sorting) in float64
    # (float32 through a deep FPN: about 2e-5 relative from rounding alone on some CPUs)
    assert rep.max_rel_diff < (1e-4 if rep.float32_rel_diff is None else 1e-9), rep.message
    for lvl in ("0", "1"):  # the FPN outputs (read by roi_align) lose channels
        assert len(res.kept[f"backbone.fpn.layer_blocks.{lvl}.0.weight"][0]) < 256
    assert len(res.kept["roi_heads.box_head.fc6.weight"][1]) < 256 * 7 * 7
    assert res.after.params < 0.55 * res.before.params  # 19.0M -> 9.4M (12.4M with the FPN kept)
    with torch.no_grad():
        out = res.model(*ex)
    assert set(out[0]) == {"boxes", "labels", "scores"}


def test_verify_float64_recheck_still_fails_a_wrong_plan():
    """The float64 re-check only forgives rounding: a pruned model that drops the wrong slices
    fails in float64 too."""
    torch.set_num_threads(1)
    x = torch.randn(2, 3, 16, 16, generator=G().manual_seed(0))
    m = randomize(RoiNet("roi_align")).eval()
    rois = _rois().float()
    dg = analyze_model(m, (x, rois))
    res = prune_model(m, (x, rois), dg, PlanSettings(ratio=0.5), latency=False, verify=True)
    kept = {k: {d: list(v) for d, v in dims.items()} for k, dims in res.kept.items()}
    keep = kept["conv1.weight"][0]
    wrong = [c for c in range(16) if c not in keep][:1] + keep[1:]  # one wrong channel kept
    for name in ("conv1.weight", "conv1.bias"):
        kept[name][0] = sorted(wrong)
    rep = verify_plan(m, (x, rois), dg, res.plan, pruned=apply_kept(m, kept))
    assert not rep.passed and "MISMATCH" in rep.message and "float64" in rep.message, rep.message
    assert rep.float32_rel_diff is not None and rep.max_rel_diff > 1e-3
