"""Approximate verdicts have a size (issue 15 part 4): each kind of approximation is measured
against a stated bound, and an approximate plan passes only when it is within its bounds *and*
the user accepts approximate results. Exact plans are unaffected."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import randomize  # noqa: E402

import main as entry  # noqa: E402
from core.errors import ApproximateRefused, VerificationError  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings, make_plan  # noqa: E402
from core.prune.bounds import DEFAULT_BOUND, approximate_summary, reason_kind  # noqa: E402
from core.prune.verify import verify_plan  # noqa: E402

GN_SRC = '''
import torch
from torch import nn
def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(1, 16), nn.ReLU(), nn.Conv2d(16, 8, 3),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
'''
X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def _gn():
    ns = {}
    exec(GN_SRC, ns)  # noqa: S102 - the test's own source, shared with the CLI case
    return randomize(ns["make"](), inputs=(X,)).eval()


class LnSoftmax(nn.Module):
    """Two kinds at once: a LayerNorm over a pruned stream and a softmax over other channels."""

    def __init__(self):
        super().__init__()
        self.a, self.ln, self.b = nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4)
        self.c, self.d = nn.Linear(8, 12), nn.Linear(12, 4)

    def forward(self, x):
        return self.b(self.ln(self.a(x))) + self.d(self.c(x).softmax(-1))


def _plan(model, x, ratio=0.5):
    dg = analyze_model(model, (x,))
    return dg, make_plan(dg, model, PlanSettings(ratio=ratio))


def test_within_bound_passes_only_when_accepted():
    model = _gn()
    dg, plan = _plan(model, X)
    refused = verify_plan(model, (X,), dg, plan, accept_approximate=False)
    assert not refused.expected_exact and not refused.passed and refused.within_bounds
    assert "--accept-approximate" in refused.message
    [e] = refused.approximations
    assert e["kind"] == "group_norm" and e["bound"] == DEFAULT_BOUND
    assert e["rel_diff"] == pytest.approx(refused.max_rel_diff) and 0 < e["rel_diff"] < DEFAULT_BOUND
    accepted = verify_plan(model, (X,), dg, plan, accept_approximate=True)
    assert accepted.passed and accepted.accepted


def test_beyond_bound_fails_even_when_accepted():
    model = _gn()
    dg, plan = _plan(model, X)
    rep = verify_plan(model, (X,), dg, plan, accept_approximate=True, bounds={"*": 1e-4})
    assert not rep.passed and not rep.within_bounds and rep.message.startswith("APPROXIMATE BEYOND")
    with pytest.raises(VerificationError, match="approximate result refused"):
        prune_model(model, (X,), dg, PlanSettings(ratio=0.5), latency=False,
                    approx_bounds={"group_norm": 1e-4})
    with pytest.raises(VerificationError, match="not accepted"):
        prune_model(model, (X,), dg, PlanSettings(ratio=0.5), latency=False, accept_approximate=False)
    res = prune_model(model, (X,), dg, PlanSettings(ratio=0.5), latency=False)
    assert res.verify.passed and res.verify.approximations


def test_exact_plans_are_unaffected():
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 4, 3))).eval()
    dg, plan = _plan(model, X)
    rep = verify_plan(model, (X,), dg, plan, accept_approximate=False, bounds={"*": 1e-12})
    assert rep.expected_exact and rep.passed and rep.approximations == []


def test_each_kind_is_measured_on_its_own():
    model = randomize(LnSoftmax()).eval()
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    dg, plan = _plan(model, x)
    rep = verify_plan(model, (x,), dg, plan)
    kinds = {e["kind"]: e for e in rep.approximations}
    assert set(kinds) == {"layer_norm", "softmax"}, rep.approximate_reasons
    for e in kinds.values():
        assert 0 < e["rel_diff"] <= rep.max_rel_diff * 1.0001 and e["reasons"]


def test_reason_kinds():
    assert reason_kind("layer_norm in blocks.0.ln: normalisation statistics are computed over the "
                       "pruned channels") == "layer_norm"
    assert reason_kind("softmax in attn: normalises over pruned channels") == "softmax"
    assert reason_kind("group_norm: a single norm group: statistics are computed over the pruned "
                       "channels") == "group_norm"
    assert reason_kind("something new") == "other"


def test_cli_verify_and_prune_ask_for_acceptance(tmp_path, capsys):
    src = tmp_path / "gn.py"
    src.write_text(GN_SRC)
    common = [f"{src}:make", "--trust", "--input-shape", "2,3,12,12", "--ratio", "0.5"]
    rc = entry.main(["verify", *common])
    out, err = capsys.readouterr()
    assert rc == 1 and "group_norm: relative difference" in out and "--accept-approximate" in err
    assert entry.main(["verify", *common, "--accept-approximate"]) == 0
    capsys.readouterr()
    assert entry.main(["verify", *common, "--accept-approximate", "--approximate-bound", "1e-6"]) == 1
    out, _ = capsys.readouterr()
    assert "BEYOND bound 1e-06" in out
    pt = tmp_path / "pruned.pt"
    assert entry.main(["prune", *common, "--no-latency", "-o", str(pt)]) != 0 and not pt.exists()
    capsys.readouterr()
    assert entry.main(["prune", *common, "--no-latency", "--accept-approximate", "-o", str(pt)]) == 0
    assert pt.exists()


def test_a_refusal_that_accepting_would_pass_says_so_with_plain_data():
    model = randomize(LnSoftmax()).eval()
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    dg = analyze_model(model, (x,))
    with pytest.raises(ApproximateRefused) as got:
        prune_model(model, (x,), dg, PlanSettings(ratio=0.5), latency=False, accept_approximate=False)
    d = got.value.detail
    assert d["groups"] == 2 and {k["kind"] for k in d["kinds"]} == {"layer_norm", "softmax"}
    # beyond its bound, accepting would not help: a plain verification error
    with pytest.raises(VerificationError) as beyond:
        prune_model(model, (x,), dg, PlanSettings(ratio=0.5), latency=False,
                    accept_approximate=False, approx_bounds={"*": 1e-6})
    assert not isinstance(beyond.value, ApproximateRefused)


def test_the_summary_names_the_approximate_groups_before_any_plan():
    model = randomize(LnSoftmax()).eval()
    dg = analyze_model(model, (torch.randn(5, 8),))
    text = approximate_summary(dg)
    assert text.startswith("2 groups prune approximately") and "LayerNorm" in text and "softmax" in text
    exact = randomize(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))).eval()
    assert approximate_summary(analyze_model(exact, (X,))) is None


def test_cli_graph_marks_approximate_groups_before_any_prune(tmp_path, capsys):
    src = tmp_path / "gn.py"
    src.write_text(GN_SRC)
    assert entry.main(["graph", f"{src}:make", "--trust", "--input-shape", "2,3,12,12"]) == 0
    text = capsys.readouterr().out
    assert " approx " in text and "GroupNorm" in text and "--accept-approximate" in text


def test_a_traced_rmsnorm_counts_as_a_norm_not_a_generic_statistic():
    """A Llama's RMSNorm is traced as pow/mean/rsqrt: its reason names the mean in a module called
    ...norm, which is the LayerNorm/RMSNorm kind (its summary said "a statistic (mean, ...)")."""
    assert reason_kind("mean in model.layers.0.input_layernorm: statistic over pruned channels") == "layer_norm"
    assert reason_kind("mean in model.norm: statistic over pruned channels") == "layer_norm"
    assert reason_kind("mean in model.pool: statistic over pruned channels") == "statistic"
    assert reason_kind("amax in encoder.normalizer_stats: statistic over pruned channels") == "statistic"


def _dead_head(model):
    """``model`` with its last layer zeroed: the output no longer depends on the input
    (torchvision's ViT heads start this way)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return model


def test_a_dead_head_does_not_make_the_bound_check_pass_trivially():
    """With a zero head both outputs are 0: the bound check read "relative difference 0" and
    passed whatever the approximation did. The bound is then measured on the activations inside."""
    model = _dead_head(_gn())
    dg, plan = _plan(model, X)
    rep = verify_plan(model, (X,), dg, plan, accept_approximate=True)
    [e] = rep.approximations
    assert e["rel_diff"] > 0.01 and rep.passed
    assert "intermediate activations" in rep.message
    tight = verify_plan(model, (X,), dg, plan, accept_approximate=True, bounds={"*": 1e-4})
    assert not tight.passed and not tight.within_bounds


class LnSoftmaxModule(LnSoftmax):
    """The softmax as a module: its output is an activation the hooks see (a functional softmax
    right before a dead head shows in no module's output)."""

    def __init__(self):
        super().__init__()
        self.sm = nn.Softmax(-1)

    def forward(self, x):
        return self.b(self.ln(self.a(x))) + self.d(self.sm(self.c(x)))


def test_a_dead_head_measures_each_kind_inside_too():
    model = _dead_head(randomize(LnSoftmaxModule()).eval())
    with torch.no_grad():  # two branches, two heads (_dead_head zeroed d): zero b too
        model.b.weight.zero_()
        model.b.bias.zero_()
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    dg, plan = _plan(model, x)
    rep = verify_plan(model, (x,), dg, plan)
    kinds = {e["kind"]: e for e in rep.approximations}
    assert set(kinds) == {"layer_norm", "softmax"}
    assert all(e["rel_diff"] > 0.01 for e in kinds.values()), kinds
