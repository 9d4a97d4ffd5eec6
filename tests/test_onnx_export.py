"""ONNX exports of any model (issue 12): readable input/output names and a dynamic batch dimension,
checked in onnxruntime at batch 1 and 3; a model that fixes its batch is exported with it, and a
warning says so."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ort = pytest.importorskip("onnxruntime")

from core.io.onnx.export import export_onnx  # noqa: E402
from tests.onnx_cases import ort_run  # noqa: E402


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.cls, self.box = nn.Linear(8, 4), nn.Linear(8, 2)

    def forward(self, pixels):
        h = self.body(pixels)
        return {"scores": self.cls(h), "boxes": self.box(h)}


class FixedBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(x.reshape(1, 12))  # written for batch 1 only


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_names_from_forward_and_output_keys_and_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = TwoHeads().eval()
    path = tmp_path / "two.onnx"
    diff = export_onnx(model, torch.randn(1, 3, 8, 8), str(path))
    assert diff.dynamic_batch and not diff.warnings
    sess = _session(path)
    assert [i.name for i in sess.get_inputs()] == ["pixels"]
    assert [o.name for o in sess.get_outputs()] == ["scores", "boxes"]
    assert sess.get_inputs()[0].shape[0] == "batch"
    for b in (1, 3):
        x = torch.randn(b, 3, 8, 8)
        with torch.no_grad():
            ref = model(x)
        got = ort_run(path, x)
        assert np.abs(got[0] - ref["scores"].numpy()).max() < 1e-5
        assert np.abs(got[1] - ref["boxes"].numpy()).max() < 1e-5


def test_single_output_is_named_output(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    export_onnx(model, torch.randn(2, 4), str(tmp_path / "m.onnx"))
    sess = _session(tmp_path / "m.onnx")
    assert [i.name for i in sess.get_inputs()] == ["input"]  # Sequential.forward(input)
    assert [o.name for o in sess.get_outputs()] == ["output"]


@pytest.mark.slow  # two dynamo exports (~1 min on a loaded CI machine)
def test_a_model_that_fixes_its_batch_says_so(tmp_path):
    model = FixedBatch().eval()
    diff = export_onnx(model, torch.randn(1, 3, 4), str(tmp_path / "f.onnx"))
    assert not diff.dynamic_batch
    assert any("batch dimension is fixed at 1" in w for w in diff.warnings)
    assert _session(tmp_path / "f.onnx").get_inputs()[0].shape == [1, 3, 4]
