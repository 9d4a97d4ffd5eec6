"""Per-block latency (core.metrics.blocks): the blocks the graph opens with, timed by forward hooks
in both models alternating A/B, medians and quartiles per block, a time budget, cancellation, hooks
always removed, and the figures in the prune report."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from core.errors import Cancelled
from core.metrics import blocks as bl
from core.metrics import timing
from core.pipeline import analyze_model, prune_model
from core.plan.planner import PlanSettings
from core.trace.inputs import make_inputs


class Clock:
    """A fake clock in seconds: blocks advance it by what they are told to "take"."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Step(nn.Module):
    """Takes the next of ``costs`` (ms, cycled) on the fake clock and logs ``tag``."""

    def __init__(self, tag, costs, clock, log, fail_at=None):
        super().__init__()
        self.tag, self.costs, self.clock, self.log, self.fail_at = tag, list(costs), clock, log, fail_at
        self.lin = nn.Linear(2, 2)
        self.n = 0

    def forward(self, x):
        if self.fail_at is not None and self.n == self.fail_at:
            raise RuntimeError("boom")
        self.clock.t += self.costs[self.n % len(self.costs)] / 1000.0
        self.n += 1
        self.log.append(self.tag)
        return self.lin(x)


def two_block_model(name, costs0, costs1, clock, log, **kw):
    return nn.Sequential(Step(f"{name}0", costs0, clock, log, **kw), Step(f"{name}1", costs1, clock, log))


SPECS = [bl.BlockSpec("0", "0", "0"), bl.BlockSpec("1", "1", "1")]
X = torch.zeros(1, 2)


def no_hooks(*models):
    return all(not m._forward_hooks and not m._forward_pre_hooks for model in models
               for m in model.modules())


def test_blocks_alternate_a_b_after_warm_up_and_take_median_and_quartiles():
    clock, log = Clock(), []
    a = two_block_model("A", [1, 2, 3, 4, 10], [5], clock, log)
    b = two_block_model("B", [1], [2], clock, log)
    r = bl.block_latency(a, b, X, SPECS, warmup=1, min_pairs=5, max_pairs=5, budget_s=100,
                         clock=clock)
    # one warm-up pass of each, then A, B, A, B, ... (a pass logs both its blocks)
    passes = [log[i][0] for i in range(0, len(log), 2)]
    assert passes == ["A", "B"] + ["A", "B"] * 5
    assert r.runs == 5 and r.stop == "max runs" and [t.name for t in r.blocks] == ["0", "1"]
    first = r.blocks[0].before  # the warm-up took cost 1, the timed passes 2, 3, 4, 10, 1
    assert (first.q1_ms, first.median_ms, first.q3_ms) == pytest.approx(timing.quartiles([2, 3, 4, 10, 1]))
    assert (first.q1_ms, first.median_ms, first.q3_ms) == pytest.approx((2, 3, 4))
    assert r.blocks[1].before.median_ms == pytest.approx(5) and r.blocks[1].before.iqr_ms == pytest.approx(0)
    assert r.blocks[0].after.median_ms == pytest.approx(1) and r.blocks[1].after.median_ms == pytest.approx(2)
    assert r.blocks[0].before.runs == 5 and r.blocks[0].calls == 1
    assert no_hooks(a, b)


def test_a_run_of_loose_layers_is_timed_from_its_first_to_its_last_and_repeats_are_summed():
    clock, log = Clock(), []
    step = Step("s", [3], clock, log)
    m = nn.Sequential(Step("p", [1], clock, log), Step("q", [2], clock, log), step, step)
    specs = [bl.BlockSpec("stem", "0", "1"), bl.BlockSpec("2", "2", "2")]
    r = bl.block_latency(m, None, X, specs, warmup=0, min_pairs=2, max_pairs=2, clock=clock)
    stem, rep = r.blocks
    assert stem.before.median_ms == pytest.approx(3) and stem.after is None
    assert rep.before.median_ms == pytest.approx(6) and rep.calls == 2  # one module called twice


def test_the_budget_stops_the_runs_after_the_minimum():
    clock, log = Clock(), []
    a = two_block_model("A", [500], [500], clock, log)  # one second a pass
    b = two_block_model("B", [250], [250], clock, log)
    r = bl.block_latency(a, b, X, SPECS, warmup=0, min_pairs=3, max_pairs=50, budget_s=2.0,
                         clock=clock)
    assert r.stop == "budget" and r.runs == 3  # the budget is spent after two pairs, three is the floor


class StopAt:
    def __init__(self, n, raise_it=False):
        self.n, self.polls, self.raise_it = n, 0, raise_it

    def __call__(self):
        self.polls += 1
        if self.polls > self.n:
            if self.raise_it:
                raise Cancelled("stop")
            return True
        return False


@pytest.mark.parametrize("raise_it", [False, True], ids=["returns-true", "raises"])
def test_cancelling_at_every_poll_leaves_no_hook(raise_it):
    clock, log = Clock(), []
    a = two_block_model("A", [1], [1], clock, log)
    b = two_block_model("B", [1], [1], clock, log)
    total = StopAt(10**9)
    bl.block_latency(a, b, X, SPECS, max_pairs=4, should_stop=total, clock=clock)
    assert total.polls == 2 + 8  # before each warm-up pass and each timed pass
    for n in range(total.polls):
        with pytest.raises(Cancelled):
            bl.block_latency(a, b, X, SPECS, max_pairs=4, should_stop=StopAt(n, raise_it),
                             clock=clock)
        assert no_hooks(a, b), n


def test_an_error_in_the_forward_pass_leaves_no_hook():
    clock, log = Clock(), []
    a = two_block_model("A", [1], [1], clock, log)
    b = two_block_model("B", [1], [1], clock, log, fail_at=3)
    with pytest.raises(RuntimeError, match="boom"):
        bl.block_latency(a, b, X, SPECS, max_pairs=5, clock=clock)
    assert no_hooks(a, b)
    assert a.training  # train/eval modes restored as well


def test_a_block_missing_from_the_pruned_model_has_no_after():
    clock, log = Clock(), []
    a = two_block_model("A", [1], [1], clock, log)
    b = nn.Sequential(Step("B0", [1], clock, log))
    r = bl.block_latency(a, b, X, SPECS, max_pairs=3, clock=clock)
    assert r.blocks[1].before is not None and r.blocks[1].after is None and no_hooks(a, b)


def test_graph_blocks_of_resnet18_are_stem_layers_and_head():
    tv = pytest.importorskip("torchvision")
    m = tv.models.resnet18().eval()
    dg = analyze_model(m, make_inputs("1,3,32,32"), probe=False)
    specs = bl.graph_blocks(dg.graph, m)
    assert [(s.name, s.first, s.last) for s in specs] == [
        ("stem", "conv1", "maxpool"), ("layer1", "layer1", "layer1"), ("layer2", "layer2", "layer2"),
        ("layer3", "layer3", "layer3"), ("layer4", "layer4", "layer4"), ("head", "avgpool", "fc")]


def test_graph_blocks_of_a_vit_are_its_layers_not_the_encoder_that_runs_them():
    pytest.importorskip("torchvision")
    from torchvision.models.vision_transformer import VisionTransformer
    m = VisionTransformer(image_size=16, patch_size=8, num_layers=8, num_heads=2, hidden_dim=8,
                          mlp_dim=8).eval()
    dg = analyze_model(m, make_inputs("1,3,16,16"), probe=False)
    names = [s.name for s in bl.graph_blocks(dg.graph, m)]
    assert "encoder" not in names  # it adds the positions itself but runs every layer
    assert [n for n in names if "encoder_layer" in n] == [
        f"encoder.layers.encoder_layer_{i}" for i in range(8)]
    assert len(names) == len(set(names))


def test_prune_report_has_block_latency_and_hooks_are_gone():
    tv = pytest.importorskip("torchvision")
    m = tv.models.resnet18().eval()
    x = make_inputs("1,3,32,32")
    dg = analyze_model(m, x, probe=False)
    r = prune_model(m, x, dg, PlanSettings(ratio=0.5), latency=True, verify=False, latency_runs=3,
                    latency_budget_s=1.0)
    assert [b.name for b in r.blocks.blocks][:2] == ["stem", "layer1"]
    assert all(b.before.median_ms > 0 and b.after.median_ms > 0 for b in r.blocks.blocks)
    assert r.blocks.threads == torch.get_num_threads() and r.blocks.device == "cpu"
    rep = json.loads(json.dumps(r.report(dg)))
    assert rep["block_latency"]["blocks"][1]["name"] == "layer1"
    assert "hooks" in rep["block_latency"]["note"] and rep["block_latency"]["threads"] >= 1
    assert no_hooks(m, r.model)
    off = prune_model(m, x, dg, PlanSettings(ratio=0.5), latency=False, verify=False)
    assert off.blocks is None and off.report(dg)["block_latency"] is None


def test_a_block_timing_failure_is_a_warning_not_a_failed_prune(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no hooks here")
    monkeypatch.setattr(bl, "graph_blocks", broken)
    blocks, warnings = bl.measure_blocks(nn.Linear(2, 2), None, X, None)
    assert blocks is None and "no hooks here" in warnings[0]
    monkeypatch.setattr(bl, "graph_blocks", lambda *a: (_ for _ in ()).throw(Cancelled("stop")))
    with pytest.raises(Cancelled):
        bl.measure_blocks(nn.Linear(2, 2), None, X, None)


def test_meta_models_are_not_timed():
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(2, 2))
    assert bl.block_latency(m, None, X.to("meta"), [bl.BlockSpec("0", "0", "0")]) is None


def test_cli_report_has_the_per_block_figures(tmp_path, capsys):
    import os
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    import main as entry
    rep = tmp_path / "r.json"
    args = ["prune", os.path.join(root, "tests", "models", "demo_factory.py") + ":make", "--trust",
            "--input-shape", "1,3,32,32", "--round-to", "1", "--threads", "1", "--no-verify"]
    assert entry.main(args + ["--report", str(rep)]) == 0, capsys.readouterr().err
    r = json.loads(rep.read_text())["block_latency"]
    assert r["threads"] == 1 and r["device"] == "cpu" and r["blocks"]
    assert all(b["before"]["median_ms"] > 0 and b["after"]["median_ms"] > 0 for b in r["blocks"])
    rep2 = tmp_path / "r2.json"
    assert entry.main(args + ["--no-latency", "--report", str(rep2)]) == 0
    assert json.loads(rep2.read_text())["block_latency"] is None


def test_the_blocks_are_the_ones_the_graph_view_opens_with():
    """Per-block latency times the items the graph view opens with (both use
    core.analysis.hierarchy): the blocks of ResNet-18's collapsed view, in order."""
    tv = pytest.importorskip("torchvision")
    from core.analysis.hierarchy import Hierarchy
    m = tv.models.resnet18().eval()
    g = analyze_model(m, make_inputs("1,3,32,32"), probe=False).graph
    h = Hierarchy(g)
    blocks = [it for it in h.visible(h.auto_expanded())[0] if isinstance(it, str)]
    assert blocks and [s.name for s in bl.graph_blocks(g, m)] == blocks


def test_cuda_path_uses_events_read_after_one_synchronise_per_pass(monkeypatch):
    """No GPU needed: CUDA events and synchronize are stood in for, to check the code path (events
    recorded in the hooks, the device synchronised once after each forward pass, then read)."""
    clock, log = Clock(), []
    calls = []

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.t = None

        def record(self):
            self.t = clock.t
            calls.append("record")

        def elapsed_time(self, end):
            assert calls[-1] == "sync", "an event is read before the pass was synchronised"
            return (end.t - self.t) * 1000.0

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(bl, "device_of_model", lambda m: torch.device("cuda", 0))
    a = two_block_model("A", [4], [6], clock, log)
    b = two_block_model("B", [2], [3], clock, log)
    # the default (wall) clock only keeps the budget: the figures come from the events
    r = bl.block_latency(a, b, X, SPECS, warmup=1, min_pairs=3, max_pairs=3)
    assert r.device == "cuda:0"
    assert [t.before.median_ms for t in r.blocks] == pytest.approx([4, 6])
    assert [t.after.median_ms for t in r.blocks] == pytest.approx([2, 3])
    assert calls.count("sync") == 6 and no_hooks(a, b)


def test_a_slow_model_stops_after_one_pair_at_three_budgets():
    clock, log = Clock(), []
    a = two_block_model("A", [2500], [2500], clock, log)  # five seconds a pass
    b = two_block_model("B", [2500], [2500], clock, log)
    r = bl.block_latency(a, b, X, SPECS, warmup=1, min_pairs=3, max_pairs=50, budget_s=2.0,
                         clock=clock)
    assert r.stop == "budget" and r.runs == 1 and clock.t == pytest.approx(20.0)
