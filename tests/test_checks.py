"""No check passes on garbage (issue 11): non-finite outputs, outputs that do not depend on the
input (a dead head), and the oracle's intermediate activations behind one."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "models"))

import check_factories as cf  # noqa: E402
import main as entry  # noqa: E402
from core.errors import VerificationError  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings, make_plan  # noqa: E402
from core.prune.apply import apply_kept  # noqa: E402
from core.prune.verify import compare_outputs, verify_plan  # noqa: E402

FACTORIES = os.path.join(ROOT, "tests", "models", "check_factories.py")
X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
SHAPE = ["--input-shape", "1,3,16,16"]


def run(args, capsys):
    rc = entry.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _plan(model, ratio=0.5):
    dg = analyze_model(model, (X,))
    return dg, make_plan(dg, model, PlanSettings(ratio=ratio))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_compare_outputs_never_calls_non_finite_equal(bad):
    a = torch.ones(4)
    b = torch.tensor([1.0, bad, 1.0, 1.0])
    for x, y in ((a, b), (b, a), (b, b)):
        diff, rel, same = compare_outputs(x, y)
        assert same and diff == float("inf") and rel == float("inf")


def test_nan_model_is_not_verified_exact():
    m = cf.nan_weights()
    dg, plan = _plan(m)
    rep = verify_plan(m, (X,), dg, plan)
    assert not rep.passed and not rep.finite
    assert rep.message == ("NOT CHECKED: the original model's output (1, 10) has 10 of 10 values "
                           "NaN or inf: nothing can be compared (are its weights or inputs "
                           "broken?)"), rep.message
    with pytest.raises(VerificationError, match="cannot verify the pruning: NOT CHECKED"):
        prune_model(m, (X,), dg, PlanSettings(ratio=0.5), latency=False)


def test_nan_model_cli_verify_and_prune_fail(tmp_path, capsys):
    rc, out, err = run(["verify", f"{FACTORIES}:nan_weights", *SHAPE, "--trust"], capsys)
    assert rc == 1 and ("result: NOT CHECKED: the original model's output (1, 10) has 10 of 10 "
                        "values NaN or inf") in out and "values NaN or inf" in err, (out, err)
    assert "NOT CHECKED: NOT CHECKED" not in out
    o = tmp_path / "m.pt"
    rc, out, err = run(["prune", f"{FACTORIES}:nan_weights", *SHAPE, "--trust", "--no-latency",
                        "-o", str(o)], capsys)
    assert rc == 2 and not o.exists()
    assert err == ("error: cannot verify the pruning: NOT CHECKED: the original model's output "
                   "(1, 10) has 10 of 10 values NaN or inf: nothing can be compared (are its "
                   "weights or inputs broken?)\n"), err


def test_pruned_nan_is_a_mismatch():
    m = cf.SmallNet().eval()
    dg, plan = _plan(m)
    pruned = apply_kept(m, plan.kept_indices(dg))
    with torch.no_grad():
        pruned.head.bias[3] = float("nan")
    rep = verify_plan(m, (X,), dg, plan, pruned=pruned)
    assert rep.finite and not rep.passed and rep.max_abs_diff == float("inf")
    assert rep.message == ("MISMATCH: the pruned model's output (1, 10) has 1 of 10 values NaN or "
                           "inf where the original's is finite"), rep.message


def test_zero_head_warns_and_compares_activations():
    m = cf.zero_head()
    dg, plan = _plan(m)
    rep = verify_plan(m, (X,), dg, plan)
    assert rep.passed and rep.max_abs_diff == 0.0
    assert rep.warnings == ["the output (1, 10) is constant (0 everywhere): comparing it cannot "
                            "fail (a dead or zero head?)"]
    assert rep.intermediates_compared > 0 and "intermediate activations" in rep.message


def test_zero_head_with_bias_only_is_input_independent():
    m = cf.zero_head()
    with torch.no_grad():
        m.head.bias.copy_(torch.arange(10.0))
    dg, plan = _plan(m)
    rep = verify_plan(m, (X,), dg, plan)
    assert rep.warnings and "same for other inputs" in rep.warnings[0], rep.warnings


def test_coupling_error_behind_a_dead_head_is_found():
    """The final output is 0 whatever the pruned body computes: only the activations show it."""
    m = cf.zero_head()
    dg, plan = _plan(m)
    pruned = apply_kept(m, plan.kept_indices(dg))
    with torch.no_grad():
        pruned.body[3].weight.mul_(-1.0)  # a wrong slice would look like this
    rep = verify_plan(m, (X,), dg, plan, pruned=pruned)
    assert rep.max_abs_diff == 0.0 and not rep.passed
    assert rep.message.startswith("MISMATCH in the intermediate activations: module 'body.3'"), \
        rep.message


def test_zero_head_cli_prints_a_warning(tmp_path, capsys):
    rc, out, err = run(["verify", f"{FACTORIES}:zero_head", *SHAPE, "--trust"], capsys)
    assert rc == 0, err
    assert "warning: the output (1, 10) is constant (0 everywhere): comparing it cannot fail" in err
    rep = tmp_path / "r.json"
    rc, out, err = run(["prune", f"{FACTORIES}:zero_head", *SHAPE, "--trust", "--no-latency",
                        "--report", str(rep)], capsys)
    assert rc == 0 and "warning: the output (1, 10) is constant" in err, err
    import json
    r = json.loads(rep.read_text())
    assert r["verify"]["intermediates_compared"] > 0 and r["warnings"]


onnx = pytest.importorskip("onnxruntime")


def test_onnx_check_refuses_nan_and_compares_intermediates_behind_a_dead_head(tmp_path):
    from core.io.onnx.export import export_onnx
    p = tmp_path / "m.onnx"
    with pytest.raises(VerificationError, match="torch's own output 0 \\(1, 10\\) has 10 of 10 "
                                                "values NaN or inf"):
        export_onnx(cf.nan_weights(), (X,), str(p))
    assert not p.exists()
    d = export_onnx(cf.zero_head(), (X,), str(p))
    assert d == 0.0 and len(d.warnings) == 1, d.warnings
    # body.0..4 and head: every torch activation found among onnxruntime's intermediate values
    assert d.warnings[0] == ("onnx: the output (1, 10) is constant (0 everywhere): 6 intermediate "
                             "activations were compared instead"), d.warnings
    d = export_onnx(cf.SmallNet().eval(), (X,), str(tmp_path / "ok.onnx"))
    assert d.warnings == []


def test_onnx_check_behind_a_dead_head_can_fail(tmp_path, monkeypatch):
    """The file computes something else in the body; the zero head hides it from the outputs, the
    intermediate activations do not."""
    import copy

    from core.io.onnx.export import export_onnx
    real = torch.onnx.export

    def export_another_body(model, args, f, **kw):
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.body[3].weight[0].add_(0.5)
        return real(other, args, f, **kw)

    monkeypatch.setattr(torch.onnx, "export", export_another_body)
    p = tmp_path / "m.onnx"
    with pytest.raises(VerificationError, match="^onnxruntime's intermediate values do not match "
                                                "torch's at module 'body.3' \\(Conv2d, output "
                                                "\\(1, 16, 16, 16\\)"):
        export_onnx(cf.zero_head(), (X,), str(p))
    assert not p.exists()



def test_onnx_check_behind_a_dead_head_accepts_a_fused_conv_bn(tmp_path, monkeypatch):
    """The TorchScript exporter folds body.1 (batch norm) into body.0 (conv): the file has no
    value for the conv's output, and the batch norm's output that it feeds is matched instead."""
    from core.io.onnx.export import export_onnx
    real = torch.onnx.export

    def torchscript(model, args, f, **kw):
        if kw.get("dynamo"):
            raise RuntimeError("no dynamo here")
        return real(model, args, f, **kw)

    monkeypatch.setattr(torch.onnx, "export", torchscript)
    d = export_onnx(cf.zero_head(), (X,), str(tmp_path / "m.onnx"))
    assert d.warnings == ["onnx: the output (1, 10) is constant (0 everywhere): 6 intermediate "
                          "activations were compared instead"], d.warnings

def test_onnx_cli_says_the_check_is_weak(tmp_path, capsys):
    o, rep = tmp_path / "m.onnx", tmp_path / "r.json"
    rc, out, err = run(["prune", f"{FACTORIES}:zero_head", *SHAPE, "--no-latency", "--no-verify",
                        "--trust", "-o", str(o), "--report", str(rep)], capsys)
    assert rc == 0 and o.exists(), err
    assert err == ("warning: onnx: the output (1, 10) is constant (0 everywhere): 6 intermediate "
                   "activations were compared instead\n"), err
    import json
    assert json.loads(rep.read_text())["warnings"] == [err[len("warning: "):-1]]
