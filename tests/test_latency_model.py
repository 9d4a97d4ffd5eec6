"""A FLOPs target planned for speed (core/plan/latency_model.py): per-group ratios shaped by a
modelled latency per FLOP. No timing anywhere: the model is analytic, so these tests are exact."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import PlanError
from core.pipeline import analyze_model, cost_model
from core.plan.latency_model import DEPTHWISE, OP_COST, RatioShape, op_cost
from core.plan.planner import PlanSettings, make_plan
from helpers import check_oracle, randomize


class StemNet(nn.Module):
    """ResNet's problem in small: a wide, high-resolution stem feeding a max-pool (time-heavy,
    FLOPs-light), then ordinary convolutions at low resolution (FLOPs-heavy), a depthwise one."""

    def __init__(self, stem: int = 32):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, stem, 3, padding=1), nn.BatchNorm2d(stem)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv2, self.bn2 = nn.Conv2d(stem, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.conv3, self.bn3 = nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.dw(torch.relu(self.bn2(self.conv2(x))))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def _setup(stem: int = 32):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    m = randomize(StemNet(stem), 0, inputs=x).eval()
    dg = analyze_model(m, x, probe=False)
    cost = cost_model(dg, m, x)
    by_root = {g.root: g for g in dg.prunable_groups}
    return m, x, dg, cost, by_root


def _share(plan, g) -> float:
    return len(plan.removed.get(g.id, [])) / g.n_channels


def test_op_cost_counts_only_what_the_flop_counter_misses():
    assert op_cost({"op": "batch_norm", "shape": [(1, 4, 8, 8)]}) == OP_COST["batch_norm"] * 256
    assert op_cost({"op": "relu_", "shape": [(1, 4, 8, 8)]}) == OP_COST["relu"] * 256
    assert op_cost({"op": "conv2d", "shape": [(1, 4, 8, 8)], "weight_shape": (4, 4, 3, 3)}) == 0
    assert op_cost({"op": "view", "shape": [(1, 256)]}) == 0  # views move nothing
    # a 2x2-strided pool reads 4 inputs per output
    assert op_cost({"op": "max_pool2d", "shape": [(1, 4, 8, 8)], "in_shape": (1, 4, 16, 16)}) \
        == OP_COST["max_pool2d"] * 4 * 256
    # depthwise: memory-bound on top of its FLOPs
    assert op_cost({"op": "conv2d", "shape": [(1, 4, 8, 8)], "weight_shape": (4, 1, 3, 3)}) \
        == DEPTHWISE * 2 * 9 * 256


def test_the_stem_costs_more_time_per_flop_than_the_rest():
    _, _, dg, cost, g = _setup()
    shape = RatioShape(dg, cost)
    assert shape.stretch[g["conv1"].id] > 1.5 > 1.0 > shape.stretch[g["conv3"].id]
    assert 0 < shape.mem_total / shape.full < 1


def test_a_narrow_group_is_never_pruned_harder_than_the_ratio():
    # 16 channels: each is a sixteenth of the stage; the digits CNN lost its accuracy to this
    m, _, dg, cost, g = _setup(stem=16)
    assert g["conv1"].id in RatioShape(dg, cost).held
    plan = make_plan(dg, m, PlanSettings(ratio=None, target_flops=0.5), cost=cost)
    flat = make_plan(dg, m, PlanSettings(ratio=None, target_flops=0.5, flops_allocation="uniform"),
                     cost=cost)
    assert _share(plan, g["conv1"]) <= _share(flat, g["conv1"])


def test_default_flops_target_prunes_time_heavy_groups_harder_and_meets_the_target():
    m, _, dg, cost, g = _setup()
    s = PlanSettings(ratio=None, target_flops=0.5)  # the defaults, as the CLI and GUI use them
    plan = make_plan(dg, m, s, cost=cost)
    flat = make_plan(dg, m, PlanSettings(ratio=None, target_flops=0.5, flops_allocation="uniform"),
                     cost=cost)
    for p in (plan, flat):
        assert abs(1 - cost.estimate(p.kept_indices(dg))[1] / cost.base_flops - 0.5) <= 0.005
    assert _share(plan, g["conv1"]) > _share(flat, g["conv1"]) + 0.1
    assert _share(plan, g["conv1"]) > _share(plan, g["conv3"])
    # what the plan records: the allocation chosen and its modelled latency reduction
    assert plan.settings["flops_allocation"] == "latency"
    shape = RatioShape(dg, cost)
    got = plan.settings["modelled_latency_reduction"]
    assert got == pytest.approx(shape.reduction(plan.kept_indices(dg)))
    assert got > shape.reduction(flat.kept_indices(dg)) + 0.02
    assert "flops_allocation" not in flat.settings or flat.settings["flops_allocation"] == "uniform"


def test_uniform_allocation_removes_the_same_share_everywhere():
    m, _, dg, cost, g = _setup()
    flat = make_plan(dg, m, PlanSettings(ratio=None, target_flops=0.5, flops_allocation="uniform"),
                     cost=cost)
    shares = [_share(flat, grp) for grp in dg.prunable_groups]
    assert max(shares) - min(shares) <= 1 / 32 + 1e-9
    assert "modelled_latency_reduction" not in flat.settings


def test_global_ranking_and_overrides_are_not_reshaped():
    m, _, dg, cost, g = _setup()
    glob = make_plan(dg, m, PlanSettings(ratio=None, target_flops=0.5, global_ranking=True), cost=cost)
    assert "modelled_latency_reduction" not in glob.settings
    ov = make_plan(dg, m, PlanSettings(ratio=None, target_flops=0.4, overrides={"conv1": 0.25}),
                   cost=cost)
    assert len(ov.removed.get(g["conv1"].id, [])) == 8


def test_unknown_allocation_is_refused():
    with pytest.raises(PlanError, match="allocation"):
        PlanSettings(ratio=None, target_flops=0.5, flops_allocation="fastest").validate()


@pytest.mark.parametrize("settings", [
    PlanSettings(ratio=None, target_flops=0.5),
    # a toy's groups (32-64 channels) step coarsely at multiples of 8-16: 30 % lands within a point
    PlanSettings(ratio=None, target_flops=0.3, round_to=16, round_auto=True),
], ids=["default", "auto-16"])
def test_latency_shaped_plans_pass_the_oracle(settings):
    m, x, dg, _, g = _setup()
    dg, res = check_oracle(m, x, settings, dg=dg, train_check=False)
    assert res.plan.settings["flops_allocation"] == "latency"
    assert abs(1 - res.after.flops / res.before.flops - settings.target_flops) <= 0.01


def test_latency_shaped_plan_of_the_demo_passes_the_oracle():
    from core.models.demo import demo_model
    torch.manual_seed(0)
    m = randomize(demo_model()).eval()
    _, res = check_oracle(m, torch.randn(1, 3, 32, 32), PlanSettings(ratio=None, target_flops=0.5),
                          train_check=False)
    assert "modelled_latency_reduction" in res.plan.settings


@pytest.mark.parametrize("alloc", [None, "uniform"])
def test_cli_report_says_which_flops_allocation_was_used(alloc, capsys, tmp_path):
    import json

    from core.cli import main as entry
    rep = tmp_path / "r.json"
    extra = ["--flops-allocation", alloc] if alloc else []
    rc = entry.main(["prune", "demo", "--target-flops", "0.5", "--no-latency", "--report", str(rep),
                     *extra])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(rep.read_text())
    assert r["settings"]["flops_allocation"] == (alloc or "latency")
    if alloc is None:
        assert 0 < r["flops_allocation"]["modelled_latency_reduction"] < 1
    else:
        assert r["flops_allocation"] is None
    assert abs(r["reduction"]["flops"] - 0.5) <= 0.01


class CatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(torch.cat([self.a(x), self.b(x)], 1)))


def test_memory_cost_of_a_concatenation_is_shared_by_channel():
    from core.plan.latency_model import memory_costs
    x = torch.randn(1, 3, 8, 8)
    m = randomize(CatNet(), 0, inputs=x).eval()
    dg = analyze_model(m, x, probe=False)
    per_channel, total, _ = memory_costs(dg)
    ga, gb = (next(g for g in dg.prunable_groups if g.root == n) for n in ("a", "b"))
    numel = 16 * 64
    expect = (OP_COST["cat"] + OP_COST["relu"]) * numel / 16  # both ops' outputs hold 16 channels
    assert per_channel[ga.id] == pytest.approx(expect) and per_channel[gb.id] == pytest.approx(expect)
    assert total == pytest.approx((OP_COST["cat"] + OP_COST["relu"]) * numel)


def test_a_product_on_few_rows_costs_more_than_its_flops():
    """Batch 1, one position: every weight is read for two FLOPs, so a hidden group of an MLP
    costs more time per FLOP than on 64 rows, where the reads are shared (the old model said
    the same for both: FLOPs plus the activation)."""
    from core.plan.latency_model import group_costs

    def rho(rows):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256)).eval()
        x = torch.randn(rows, 256)
        dg = analyze_model(m, x, probe=False)
        shape = RatioShape(dg, cost_model(dg, m, x))
        (f, mem), = [group_costs(dg, shape.layers)[g.id] for g in dg.prunable_groups
                     if g.n_channels == 1024]
        return (f + mem) / f
    assert rho(1) > 2 * rho(64) > 2
