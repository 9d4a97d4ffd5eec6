"""Latency-targeted pruning: tables (interpolation, save/load), the knapsack on synthetic tables,
and the zeroed-group oracle on plans made for a latency target."""
from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import check_oracle, randomize  # noqa: E402

from core.errors import PlanError  # noqa: E402
from core.plan.knapsack import latency_plan  # noqa: E402
from core.plan.latency import LatencyTable, LayerTable, check_fits, estimate_ms  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402


def linear_table(size, per_channel):
    """A layer whose time is ``per_channel`` ms per output channel (inputs fixed)."""
    grid = [1, size // 2, size]
    return LayerTable(0, 1, size, 4, grid, [4], [[per_channel * g for g in grid]])


def group(gid, name, n=8):
    member = SimpleNamespace(slot=SimpleNamespace(tensor_name=name, dim=0, role="out",
                                                  module_name=name.rsplit(".", 1)[0], size=n),
                             index_map=np.arange(n))
    return SimpleNamespace(id=gid, members=[member], n_channels=n, prunable=np.ones(n, bool))


def fake(table_layers, groups):
    table = LatencyTable("cpu", 1, "fake", "x", base_ms=100.0, layers=table_layers)
    return table, SimpleNamespace(prunable_groups=groups, groups={g.id: g for g in groups})


def test_layer_table_interpolates_and_clamps():
    t = LayerTable(0, 1, 8, 8, [2, 8], [2, 8], [[1.0, 4.0], [2.0, 8.0]])
    assert t.at(8, 8) == 8.0 and t.at(2, 2) == 1.0
    assert t.at(2, 5) == pytest.approx(2.5) and t.at(5, 8) == pytest.approx(6.0)
    # below the grid: along the first two points, never under proportional scaling (not nothing)
    assert t.at(2, 1) == pytest.approx(0.5) and t.at(1, 1) == pytest.approx(0.5 - 1 / 12)
    flat = LayerTable(0, 1, 8, 8, [2, 8], [2, 8], [[1.0, 1.0], [1.0, 1.0]])
    assert flat.at(1, 1) == 1.0  # pure overhead stays


def test_table_survives_json_and_checks_the_model(tmp_path):
    table, _ = fake({"a.weight": linear_table(8, 10.0)}, [])
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table.to_json()))
    back = LatencyTable.load(str(path))
    assert back.to_json() == table.to_json()
    check_fits(back, {"a.weight": (8, 4)})
    with pytest.raises(PlanError, match="does not fit"):
        check_fits(back, {"a.weight": (16, 4)})
    (tmp_path / "bad.json").write_text('{"x": 1}')
    with pytest.raises(PlanError, match="latency table"):
        LatencyTable.load(str(tmp_path / "bad.json"))


def test_knapsack_meets_budget_and_takes_the_cheapest_latency_first():
    # equal importance everywhere: the expensive layer gives most latency per channel removed
    table, dg = fake({"a.weight": linear_table(8, 10.0), "b.weight": linear_table(8, 1.0)},
                     [group(0, "a.weight"), group(1, "b.weight")])
    scores = {0: np.ones(8), 1: np.ones(8)}
    removed, facts = latency_plan(dg, scores, PlanSettings(target_latency=0.4, ratio=None), table)
    assert facts["estimated_latency_reduction"] >= 0.4
    assert 0 in removed and 1 not in removed
    kept = {"a.weight": {0: [i for i in range(8) if i not in set(removed[0].tolist())]}}
    assert estimate_ms(table, kept) <= 0.6 * 100.0 + 1e-9


def test_knapsack_prefers_unimportant_channels():
    table, dg = fake({"a.weight": linear_table(8, 1.0), "b.weight": linear_table(8, 1.0)},
                     [group(0, "a.weight"), group(1, "b.weight")])
    # group 0: four nearly worthless channels and four precious ones; group 1: all average
    s0 = np.array([10, 0.1, 10, 0.1, 10, 0.1, 10, 0.1])
    scores = {0: s0, 1: np.ones(8)}
    removed, facts = latency_plan(dg, scores, PlanSettings(target_latency=0.5, ratio=None), table)
    assert facts["estimated_latency_reduction"] == pytest.approx(0.5)
    assert sorted(removed[0].tolist()) == [1, 3, 5, 7]  # the worthless ones, and nothing precious
    assert len(removed[1]) == 4


def test_knapsack_respects_round_to_and_the_group_cap():
    table, dg = fake({"a.weight": linear_table(32, 1.0)}, [group(0, "a.weight", n=32)])
    removed, _ = latency_plan(dg, {0: np.arange(32.0)},
                              PlanSettings(target_latency=0.3, ratio=None, round_to=8), table)
    assert (32 - len(removed[0])) % 8 == 0
    with pytest.raises(PlanError, match="cannot be reached"):
        latency_plan(dg, {0: np.arange(32.0)},
                     PlanSettings(target_latency=0.9, ratio=None, max_group_ratio=0.5), table)


def test_a_latency_target_needs_tables():
    table, dg = fake({}, [])
    with pytest.raises(PlanError, match="latency tables"):
        latency_plan(dg, {}, PlanSettings(target_latency=0.5, ratio=None), None)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.c3 = nn.Conv2d(32, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.dw(self.c2(x)))
        x = self.c3(x) + x[:, :16]
        return self.fc(x.mean((2, 3)))


def flops_like(layer, x, tick, runs):
    """Stands in for a layer's measured time: its multiply-adds (a tiny model's real times are
    call overhead only, and noise)."""
    spatial = x[0, 0].numel() if x.dim() > 2 else 1
    return float(layer.weight.numel() * spatial) * 1e-6


def test_latency_target_plans_pass_the_oracle(monkeypatch):
    from core.metrics import tables
    monkeypatch.setattr(tables, "_time", flops_like)
    torch.manual_seed(0)
    m = randomize(SmallCNN()).eval()
    x = torch.randn(1, 3, 16, 16)
    settings = PlanSettings(ratio=None, target_latency=0.3)
    dg, res = check_oracle(m, x, settings, train_check=False)
    est = res.plan.settings["estimated_latency_reduction"]
    assert est >= 0.3 - 0.02 and res.plan.settings["latency_table"]["device"] == "cpu"


def test_measured_tables_cover_every_conv_and_linear():
    from core.metrics.tables import measure_table, table_for
    torch.manual_seed(0)
    m = randomize(SmallCNN()).eval()
    x = torch.randn(1, 3, 16, 16)
    t = measure_table(m, x, threads=1, runs=1, base_ms=1.0)
    assert set(t.layers) == {"c1.weight", "c2.weight", "dw.weight", "c3.weight", "fc.weight"}
    assert t.layers["dw.weight"].tied and t.layers["fc.weight"].size_in == 16
    assert all(v.full_ms > 0 for v in t.layers.values())
    t1, hit1 = table_for(m, x, threads=1)
    t2, hit2 = table_for(m, x, threads=1)
    assert not hit1 and hit2 and t1 is t2


def test_knapsack_accounting_matches_the_table_estimate_on_shared_layers():
    """A layer narrowed by two groups (its inputs by one, its outputs by the other): the greedy's
    running total and the estimate of the resulting widths agree."""
    grid = [2, 4, 8]
    ms = [[i * o * 0.1 for o in grid] for i in grid]
    layers = {"p.weight": linear_table(8, 2.0),
              "c.weight": LayerTable(0, 1, 8, 8, grid, grid, ms)}
    g0 = group(0, "p.weight")
    g0.members.append(SimpleNamespace(slot=SimpleNamespace(tensor_name="c.weight", dim=1, role="in",
                                                           module_name="c", size=8),
                                      index_map=np.arange(8)))
    g1 = group(1, "c.weight")
    table, dg = fake(layers, [g0, g1])
    rng = np.random.default_rng(0)
    removed, facts = latency_plan(dg, {0: rng.random(8), 1: rng.random(8)},
                                  PlanSettings(target_latency=0.5, ratio=None), table)
    kept = {}
    for gid, rm in removed.items():
        for m in dg.groups[gid].members:
            kept.setdefault(m.slot.tensor_name, {})[m.slot.dim] = [
                i for i in range(8) if i not in set(rm.tolist())]
    assert estimate_ms(table, kept) == pytest.approx(facts["estimated_latency_ms"])
    assert facts["estimated_latency_reduction"] >= 0.5


def test_a_spike_in_a_table_is_timed_again_and_tables_are_monotone():
    from core.metrics import tables
    grid = [2, 4, 8]
    true = [[i * o * 0.1 for o in grid] for i in grid]
    ms = [row[:] for row in true]
    ms[2][2] = 60.0  # an interrupted run at full width
    ms[0][1] = 5.0   # and one below
    calls = []

    def cell(ci, co):
        calls.append((ci, co))
        return true[grid.index(ci)][grid.index(co)]
    fixed = tables.monotone(tables.retime_outliers(ms, grid, grid, cell))
    assert (8, 8) in calls and fixed[2][2] == pytest.approx(true[2][2])
    assert fixed[0][1] <= fixed[0][2] and fixed[0][1] == pytest.approx(true[0][1])


def test_tables_that_add_up_to_more_than_the_model_are_flagged():
    from core.pipeline import target_warnings
    from core.metrics import Metrics
    table, dg = fake({"a.weight": linear_table(8, 30.0)}, [group(0, "a.weight")])  # 240 ms > 100
    settings = PlanSettings(target_latency=0.3, ratio=None)
    removed, facts = latency_plan(dg, {0: np.ones(8)}, settings, table)
    assert facts["tables_vs_measured"] == pytest.approx(2.4)
    plan = SimpleNamespace(settings=facts, n_removed=3)
    lines = target_warnings(settings, plan, Metrics(1, 1.0), Metrics(1, 1.0), dg)
    assert any("add up to 2.4×" in line for line in lines)
