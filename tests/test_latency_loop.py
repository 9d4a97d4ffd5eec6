"""A latency target closed by measurement (core/metrics/latency_target.py): with a fake clock the
correction converges, stops at its bound with one clear line, and its plans pass the oracle."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import randomize  # noqa: E402
from test_latency_plan import SmallCNN, flops_like  # noqa: E402

from core.errors import PlanError  # noqa: E402
from core.metrics import latency_target as lt  # noqa: E402
from core.metrics.counting import count_flops  # noqa: E402
from core.plan.knapsack import OutOfReach  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402


def _fake_plans(cap=0.95, reach=None):
    """plan_for(aim): the 'plan' is its aim, the tables estimate exactly the aim; beyond ``cap``
    a PlanError (with ``reach``: the knapsack's OutOfReach, which says how far the tables go)."""
    def plan_for(aim):
        if aim > cap + 1e-9:
            if reach is not None:
                raise OutOfReach("out of reach", reach)
            raise PlanError("out of reach")
        return aim, {}, aim, aim
    return plan_for


def test_optimistic_tables_are_calibrated_and_converge():
    # the machine gives 60 % of what the tables promise (e.g. overheads they do not see)
    measure = lambda orig, pruned: (0.6 * pruned, 0.6 * pruned - 0.01, 0.6 * pruned + 0.01, 8, "tight")  # noqa: E731
    res = lt.meet_latency_target(_fake_plans(), None, None, 0.5, measure=measure)
    assert res["met"] and res["message"] is None
    assert abs(res["best"].measured - 0.5) <= lt.TOLERANCE / 2
    assert res["steps"][0].aim == 0.5 and res["steps"][1].aim == pytest.approx(0.5 / 0.6)
    assert res["plan"] == res["best"].aim


def test_a_curved_response_is_bracketed_and_interpolated():
    # measured = aim^2: the calibration overshoots, interpolation between the sides closes in
    measure = lambda orig, pruned: (pruned ** 2, pruned ** 2, pruned ** 2, 8, "tight")  # noqa: E731
    res = lt.meet_latency_target(_fake_plans(), None, None, 0.5, measure=measure, tol=0.02)
    assert res["met"] and abs(res["best"].measured - 0.5) <= 0.01
    assert len(res["steps"]) <= lt.MAX_PLANS


def test_the_bound_stops_it_with_one_clear_line():
    # a machine where pruning saves almost nothing: no aim reaches the target
    measure = lambda orig, pruned: (0.1 * pruned, 0.0, 0.1, 5, "budget")  # noqa: E731
    calls = []

    def plan_for(aim):
        calls.append(aim)
        return _fake_plans(cap=0.9)(aim)
    res = lt.meet_latency_target(plan_for, None, None, 0.5, measure=measure, max_plans=3)
    assert not res["met"] and len(res["steps"]) == 3 and len(calls) <= 6
    msg = res["message"]
    assert "\n" not in msg and "not met within ±5%" in msg and "50.0%" in msg
    assert f"{res['best'].measured:.1%}" in msg and "IQR" in msg


def test_the_first_plan_out_of_reach_is_the_tables_error():
    with pytest.raises(PlanError, match="out of reach"):
        lt.meet_latency_target(_fake_plans(cap=0.3), None, None, 0.5,
                               measure=lambda a, b: (0.5, 0.5, 0.5, 5, "tight"))


def test_pessimistic_tables_are_overruled_by_the_clock():
    # the tables say 30 % at most, the machine gives twice what they promise: 0.5 is met
    measure = lambda orig, pruned: (2 * pruned, 2 * pruned, 2 * pruned, 8, "tight")  # noqa: E731
    res = lt.meet_latency_target(_fake_plans(cap=0.3, reach=0.3), None, None, 0.5, measure=measure)
    assert res["met"] and res["steps"][0].aim == 0.3 and res["best"].measured == pytest.approx(0.5)
    # ... but when the farthest plan measures short too, it is the tables' error, with the figure
    with pytest.raises(PlanError, match="out of reach, and that plan measured 33.0%"):
        lt.meet_latency_target(_fake_plans(cap=0.3, reach=0.3), None, None, 0.5,
                               measure=lambda a, b: (1.1 * b, b, b, 8, "tight"))


@pytest.fixture
def cnn(monkeypatch):
    from core.metrics import tables
    monkeypatch.setattr(tables, "_time", flops_like)
    torch.manual_seed(0)
    m = randomize(SmallCNN()).eval()
    x = torch.randn(1, 3, 16, 16)
    return m, x, analyze_model(m, x)


def _flops_clock(monkeypatch, factor):
    """The fake timing function: a pruned model's measured reduction is ``factor`` x its FLOPs
    reduction (the tables here are FLOPs-like, so they are optimistic by 1/factor)."""
    seen = []

    def measure_reduction(original, pruned, inputs, **kw):
        r = factor * (1 - count_flops(pruned, inputs) / count_flops(original, inputs))
        seen.append(r)
        return r, r - 0.01, r + 0.01, 6, "tight"
    monkeypatch.setattr(lt, "measure_reduction", measure_reduction)
    return seen


def test_prune_model_meets_a_latency_target_by_measurement_and_passes_the_oracle(cnn, monkeypatch):
    m, x, dg = cnn
    seen = _flops_clock(monkeypatch, 0.7)
    res = prune_model(m, x, dg, PlanSettings(ratio=None, target_latency=0.3), latency=True,
                      verify=True, latency_runs=3, latency_budget_s=1.0)
    st = res.plan.settings
    assert len(st["latency_loop"]) >= 2 and len(seen) == len(st["latency_loop"])
    assert st["latency_target_met"] and abs(st["measured_latency_reduction"] - 0.3) <= lt.TOLERANCE
    assert st["latency_aim"] > 0.3 and st["target_latency"] == 0.3  # the aim was corrected up
    assert not [w for w in res.warnings if "not met" in w]
    assert res.verify.passed and res.verify.expected_exact  # zeroed original == pruned


def test_prune_model_says_when_the_target_is_not_met(cnn, monkeypatch):
    m, x, dg = cnn
    _flops_clock(monkeypatch, 0.05)  # pruning hardly helps on this "machine"
    res = prune_model(m, x, dg, PlanSettings(ratio=None, target_latency=0.3), latency=True,
                      verify=True, latency_runs=3, latency_budget_s=1.0)
    st = res.plan.settings
    assert st["latency_target_met"] is False and len(st["latency_loop"]) <= lt.MAX_PLANS
    lines = [w for w in res.warnings if "latency reduction target" in w]
    assert len(lines) == 1 and "not met" in lines[0]
    assert res.verify.passed


def test_cli_prints_each_plan_and_the_final_figure(monkeypatch, capsys, tmp_path):
    from core.cli.main import main
    from core.metrics import tables
    monkeypatch.setattr(tables, "_time", flops_like)
    _flops_clock(monkeypatch, 0.8)
    rc = main(["prune", "demo", "--target-latency", "0.3", "--round-to", "1", "--no-verify",
               "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "latency plan 1: aim 30.0%" in out and "latency target 30.0%" in out
    assert "interleaved pairs" in out


def test_tables_that_fall_short_are_replaced_by_proportional_ones():
    # the measured tables saturate at 15 % (timed under load) and their farthest plan measures 12 %:
    # the fallback tables plan again from the target, and the clock confirms them
    def fallback():
        return lambda aim: ("prop", {}, 0.9 * aim, aim)
    measure = lambda orig, pruned: (pruned, pruned, pruned, 8, "tight")  # noqa: E731
    plans = lambda aim: ((_ for _ in ()).throw(OutOfReach("short", 0.15)) if aim > 0.15  # noqa: E731
                         else ("tables", {}, 0.8 * aim, aim))
    res = lt.meet_latency_target(plans, None, None, 0.5, measure=measure, fallback=fallback)
    kinds = [s.tables for s in res["steps"]]
    assert kinds[0] == "timed" and res["steps"][0].aim == 0.15 and "proportional" in kinds
    assert res["met"] and res["plan"] == "prop"


def test_pipeline_falls_back_when_the_tables_saturate(cnn, monkeypatch):
    """Tables timed under load: every cell as slow as the full width (nothing looks removable)."""
    from core.metrics import tables
    m, x, dg = cnn
    monkeypatch.setattr(tables, "_time", lambda layer, xin, tick, runs: 1.0)
    _flops_clock(monkeypatch, 0.9)
    res = prune_model(m, x, dg, PlanSettings(ratio=None, target_latency=0.3), latency=True,
                      verify=True, latency_runs=3, latency_budget_s=1.0)
    st = res.plan.settings
    assert st["latency_target_met"], res.warnings
    assert [s["tables"] for s in st["latency_loop"]][-1] == "proportional"
    assert res.verify.passed and res.verify.expected_exact


def test_tables_off_by_more_than_twice_are_replaced():
    # the timed tables promise 20 % where the clock measures 80 % (their shape is not this machine's)
    def fallback():
        return lambda aim: ("prop", {}, aim, aim)
    measure = lambda orig, pruned: (pruned, pruned, pruned, 8, "tight")  # noqa: E731
    res = lt.meet_latency_target(lambda aim: ("tables", {}, 0.8, 0.2), None, None, 0.5,
                                 measure=measure, fallback=fallback)
    assert [s.tables for s in res["steps"]] == ["timed", "proportional"] and res["plan"] == "prop"
    assert res["met"]


def test_inside_the_tolerance_with_a_noisy_clock_it_stops():
    # 46 % for 50 % with a median uncertain by +-10 points: another plan could not be told apart
    noisy = lambda orig, pruned: (pruned - 0.04, 0.2, 0.6, 8, "budget")  # noqa: E731
    res = lt.meet_latency_target(_fake_plans(), None, None, 0.5, measure=noisy)
    assert len(res["steps"]) == 1 and res["met"]
    quiet = lambda orig, pruned: (pruned - 0.04, pruned - 0.05, pruned - 0.03, 8, "tight")  # noqa: E731
    res = lt.meet_latency_target(_fake_plans(), None, None, 0.5, measure=quiet)
    assert len(res["steps"]) == 2 and abs(res["best"].measured - 0.5) <= lt.TOLERANCE / 2
