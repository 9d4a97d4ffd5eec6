"""The io registries: every SOURCES entry loads (and builds on the meta device) a small model, every
EXPORTERS entry writes a pruned model and reads it back with the same outputs.

Both tests are parametrized over the registry's names and look the case up in a dict: a new entry
without a case here fails, so a new source or output form cannot arrive untested."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.io.exporters import EXPORTERS, exporter_for, file_filter, suffix_choices  # noqa: E402
from core.io.portable import save_portable  # noqa: E402
from core.io.sources import SOURCES, build_meta_model, load_model  # noqa: E402
from core.io.specs import spec_kind  # noqa: E402
from core.models.demo import DEMO_INPUT_SHAPE, demo_model  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402

FACTORY_SRC = """\
import torch
from torch import nn


def make():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=1))
"""


def _demo_input():
    torch.manual_seed(0)
    return torch.randn(*[int(v) for v in DEMO_INPUT_SHAPE.split(",")])


def _prune(model, x, ratio=0.4):
    dg = analyze_model(model, x)
    return prune_model(model, x, dg, PlanSettings(ratio=ratio, importance="l1"), latency=False,
                       verify=False)


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


# ------------------------------------------------------------------------------------------------
# SOURCES: each case makes (spec, trust, input, reference model or None) in tmp_path

def _case_demo(tmp):
    return "demo", False, _demo_input(), None


def _case_torchvision(tmp):
    pytest.importorskip("torchvision")
    return "torchvision:squeezenet1_1", False, torch.randn(1, 3, 64, 64), None


def _case_timm(tmp):
    pytest.importorskip("timm")
    return "timm:test_resnet", False, torch.randn(1, 3, 64, 64), None


def _case_hf(tmp):
    ref = _tiny_llama()
    ref.save_pretrained(tmp / "llama")
    return f"hf:{tmp / 'llama'}", False, torch.randint(0, 40, (1, 8)), ref


def _case_file(tmp):
    f = tmp / "tiny_factory.py"
    f.write_text(FACTORY_SRC)
    torch.manual_seed(3)
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1)).eval()
    return f"{f}:make", True, torch.randn(1, 3, 16, 16), ref  # a factory runs code: needs trust


def _case_pt(tmp):
    ref = demo_model().eval()
    torch.save(ref, tmp / "whole.pt")
    return str(tmp / "whole.pt"), True, _demo_input(), ref  # a pickled module needs trust


def _case_pstudio(tmp):
    x = _demo_input()
    res = _prune(demo_model().eval(), x)
    save_portable(str(tmp / "m.pstudio"), "demo", res.kept, res.model.state_dict(), plan=res.plan)
    return str(tmp / "m.pstudio"), False, x, res.model


def _case_onnx(tmp):
    pytest.importorskip("onnxruntime")
    from tests.onnx_cases import helper_graph, ort_run
    path = helper_graph(tmp / "net.onnx")  # built with onnx.helper: data, no code, no trust
    x = torch.randn(1, 3, 8, 8)

    class OrtReference(nn.Module):  # the reference is onnxruntime running the file itself
        def forward(self, inp):
            return torch.from_numpy(ort_run(path, inp)[0])
    return path, False, x, OrtReference()


SOURCE_CASES = {"demo": _case_demo, "torchvision": _case_torchvision, "timm": _case_timm,
                "hf": _case_hf, "file": _case_file, "pt": _case_pt, "pstudio": _case_pstudio,
                "onnx": _case_onnx}


def _out(model, x):
    with torch.no_grad():
        y = model(x)
    return y.logits if hasattr(y, "logits") else y


@pytest.mark.parametrize("name", SOURCES.names())
def test_every_source_loads_and_builds_on_meta(name, tmp_path):
    assert name in SOURCE_CASES, f"SOURCES entry '{name}' has no case in tests/test_io_registries.py"
    spec, trust, x, ref = SOURCE_CASES[name](tmp_path)
    assert spec_kind(spec) == name  # load_model routes the spec to this entry

    model = SOURCES.get(name).load(spec, trust=trust)
    assert isinstance(model, nn.Module) and not model.training
    y = _out(model, x)
    if ref is not None:
        assert torch.allclose(y, _out(ref.eval(), x), atol=1e-5 if name == "onnx" else 1e-6)
    via_spec = load_model(spec, trust=trust)
    assert type(via_spec) is type(model)

    meta = build_meta_model(spec, trust=trust)
    tensors = list(meta.parameters()) + list(meta.buffers())
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------
# EXPORTERS: each case writes a pruned model and returns (reference outputs, outputs read back)

@pytest.fixture(scope="module")
def pruned_demo():
    x = _demo_input()
    res = _prune(demo_model().eval(), x)
    with torch.no_grad():
        ref = res.model(x)
    return res, x, ref


def _write(name, model, path, **kw):
    exp = EXPORTERS.get(name)
    assert exp is exporter_for(str(path))  # the path's suffix chooses this entry
    return exp.write(model, str(path), **kw)


def _export_pt(tmp, pruned_demo):
    res, x, ref = pruned_demo
    assert _write(".pt", res.model, tmp / "m.pt", inputs=x) is None
    return ref, _out(load_model(str(tmp / "m.pt"), trust=True), x)


def _export_pstudio(tmp, pruned_demo):
    res, x, ref = pruned_demo
    assert _write(".pstudio", res.model, tmp / "m.pstudio", inputs=x, spec="demo",
                  kept=res.kept, plan=res.plan) is None
    return ref, _out(load_model(str(tmp / "m.pstudio")), x)


def _export_onnx(tmp, pruned_demo):
    ort = pytest.importorskip("onnxruntime")
    res, x, ref = pruned_demo
    diff = _write(".onnx", res.model, tmp / "m.onnx", inputs=x)
    assert diff is not None and diff < 1e-3
    sess = ort.InferenceSession(str(tmp / "m.onnx"), providers=["CPUExecutionProvider"])
    back = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    return ref, torch.from_numpy(np.asarray(back))


def _export_hf_dir(tmp, pruned_demo):
    res, x, _ = pruned_demo
    exp = EXPORTERS.get("hf-dir")
    assert "Hugging Face" in exp.unsuitable(res.model)  # the demo is refused with a reason
    ids = torch.randint(0, 40, (1, 8))
    hres = _prune(_tiny_llama(), ids, ratio=0.5)
    out = tmp / "pruned_llama"
    assert _write("hf-dir", hres.model, f"{out}/", inputs=ids) is None
    return _logits(hres.model, ids), _logits(load_model(f"hf:{out}"), ids)


EXPORT_CASES = {".pt": _export_pt, ".pstudio": _export_pstudio, ".onnx": _export_onnx,
                "hf-dir": _export_hf_dir}


@pytest.mark.parametrize("name", EXPORTERS.names())
def test_every_exporter_writes_and_reads_back(name, tmp_path, pruned_demo):
    assert name in EXPORT_CASES, f"EXPORTERS entry '{name}' has no case in tests/test_io_registries.py"
    ref, back = EXPORT_CASES[name](tmp_path, pruned_demo)
    tol = 1e-4 if name == ".onnx" else 1e-6  # onnxruntime's kernels round differently
    assert back.shape == ref.shape and torch.allclose(back, ref, atol=tol)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary file left


def test_exporter_queries_read_the_registry():
    assert file_filter() == "PyTorch whole model (*.pt);;Portable PruneStudio (*.pstudio);;ONNX (*.onnx)"
    assert suffix_choices() == ".pt, .pth, .pstudio, .onnx or a directory DIR/ (Hugging Face models)"
    assert exporter_for("x.PTH") is EXPORTERS.get(".pt")
    assert exporter_for("x.pt/") is EXPORTERS.get("hf-dir")  # a trailing slash asks for a folder
    assert exporter_for("x.txt") is None
