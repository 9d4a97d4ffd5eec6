"""ONNX models in: load an .onnx file, analyse, prune, export .onnx back, and check the pruned file
in onnxruntime against the ORIGINAL file with the removed channels zeroed in its initializers
(the oracle on ONNX). Files come from torch's exporters (ResNet-18, a small transformer) and from
onnx.helper directly (Conv -> BatchNormalization -> Relu -> Conv, Concat, Gemm)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
pytest.importorskip("onnxruntime")

from core.errors import VerificationError  # noqa: E402
from core.io.exporters import EXPORTERS  # noqa: E402
from core.io.onnx.build import OnnxModel  # noqa: E402
from core.io.onnx.oracle import onnx_oracle  # noqa: E402
from core.io.sources import declared_input_shape, load_model  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402
from tests.onnx_cases import export, helper_graph, ort_run, small_transformer  # noqa: E402


def _resnet18(tmp):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    path = export(tv.models.resnet18(), torch.randn(2, 3, 64, 64), tmp / "resnet18.onnx",
                  dynamo=False)  # the TorchScript exporter: shared constants via Identity
    return path, torch.randn(1, 3, 64, 64), True


def _transformer(tmp):
    path = export(small_transformer(), torch.randn(2, 8, 32), tmp / "transformer.onnx")
    return path, torch.randn(1, 8, 32), True


def _helper(tmp):
    return helper_graph(tmp / "helper.onnx"), torch.randn(1, 3, 8, 8), True


CASES = {"resnet18": _resnet18, "transformer": _transformer, "onnx_helper": _helper}


@pytest.fixture(scope="module", params=sorted(CASES))
def pruned(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    path, x, dynamic = CASES[request.param](tmp)
    torch.manual_seed(0)
    model = load_model(path)
    dg = analyze_model(model, x)
    res = prune_model(model, x, dg, PlanSettings(ratio=0.3, importance="l1"), latency=False,
                      verify=True)
    out = tmp / "pruned.onnx"
    diff = EXPORTERS.get(".onnx").write(res.model, str(out), inputs=x, spec=path, kept=res.kept)
    return request.param, path, x, model, res, out, diff, dynamic


def test_import_computes_what_onnxruntime_computes(pruned):
    _, path, x, model, *_ = pruned
    assert isinstance(model, OnnxModel) and not model.training
    with torch.no_grad():
        y = model(x)
    ref = ort_run(path, x)[0]
    assert np.abs(y.numpy() - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_pruned_exactly_in_torch(pruned):
    name, _, _, model, res, *_ = pruned
    assert res.plan.n_removed > 0 and res.after.params < res.before.params
    assert res.verify.expected_exact and res.verify.max_rel_diff < 1e-5, res.verify.message
    if name == "onnx_helper":  # the graph's layers come back as torch layers, by their ONNX names
        names = dict(model.named_modules())
        assert type(names["conv1"]).__name__ == "Conv2d" and type(names["bn"]).__name__ == "BatchNorm2d"
        assert type(names["fc"]).__name__ == "Linear"
        assert res.kept.get("branch_a.weight") and res.kept.get("fc.weight")  # through concat


def test_onnx_oracle_on_the_original_file(pruned):
    _, path, x, _, res, out, diff, _ = pruned
    assert os.path.isfile(out)
    assert diff.oracle_diff is not None and diff.oracle_diff < 1e-4
    assert diff.info and "original" in diff.info[0] and "onnxruntime" in diff.info[0]
    # the pruned file really holds fewer weights than the original
    import onnx

    def n_weights(f):
        return sum(int(np.prod(t.dims)) for t in onnx.load(str(f)).graph.initializer
                   if t.data_type == onnx.TensorProto.FLOAT)
    assert n_weights(out) < n_weights(path)


def test_onnx_oracle_fails_on_a_wrong_plan(pruned):
    """Zeroing other channels than those removed must not pass: the oracle can fail."""
    _, path, x, _, res, out, _, _ = pruned
    name, dims = next((k, v) for k, v in res.kept.items() if k.endswith(".weight") and 0 in v)
    wrong = {k: dict(v) for k, v in res.kept.items()}
    keep = sorted(dims[0])
    removed = sorted(set(range(max(keep) + 2)) - set(keep))
    assert removed
    wrong[name][0] = sorted(keep[1:] + [removed[0]])  # one kept channel swapped for a removed one
    with pytest.raises(VerificationError, match="differs from the original ONNX file"):
        onnx_oracle(path, str(out), wrong, x)


def test_names_and_dynamic_batch(pruned):
    name, path, x, _, res, out, diff, dynamic = pruned
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    orig = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    # an imported model keeps the original file's input and output names
    assert [i.name for i in sess.get_inputs()] == [i.name for i in orig.get_inputs()]
    assert [o.name for o in sess.get_outputs()] == [o.name for o in orig.get_outputs()]
    assert diff.dynamic_batch is dynamic
    if not dynamic:
        assert any("batch dimension is fixed" in w for w in diff.warnings)
        return
    assert sess.get_inputs()[0].shape[0] == "batch"
    for b in (1, 3):
        xb = torch.randn(b, *x.shape[1:])
        with torch.no_grad():
            ref = res.model(xb)
        got = ort_run(out, xb)[0]
        assert got.shape == tuple(ref.shape)
        assert np.abs(got - ref.numpy()).max() < 1e-4 * max(1.0, float(ref.abs().max()))


def test_declared_input_shape(tmp_path):
    assert declared_input_shape(helper_graph(tmp_path / "h.onnx")) == "1,3,8,8"
    from core.errors import LoadError
    with pytest.raises(LoadError, match=r"dynamic dims: give --input-shape \(e.g. --input-shape 1,3,8,8\)"):
        declared_input_shape(helper_graph(tmp_path / "d.onnx", batch="N"))


def test_portable_and_whole_model_forms_of_an_onnx_model(pruned, tmp_path):
    """The .pstudio form records the .onnx spec and the plan: it rebuilds by importing the file
    again; the whole-model .pt pickles the imported module (core's own class)."""
    _, path, x, _, res, *_ = pruned
    with torch.no_grad():
        ref = res.model(x)
    EXPORTERS.get(".pstudio").write(res.model, str(tmp_path / "m.pstudio"), spec=path,
                                    kept=res.kept, plan=res.plan)
    EXPORTERS.get(".pt").write(res.model, str(tmp_path / "m.pt"))
    for spec, trust in ((str(tmp_path / "m.pstudio"), False), (str(tmp_path / "m.pt"), True)):
        with torch.no_grad():
            back = load_model(spec, trust=trust)(x)
        assert torch.allclose(back, ref, atol=1e-6), spec
