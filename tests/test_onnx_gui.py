"""The GUI opens an .onnx model (the open dialog's filter comes from core's suffix list; the graph's
fixed input shape is used), prunes it and exports .onnx, checked against the original file."""
from __future__ import annotations

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
pytest.importorskip("onnxruntime")
pytest.importorskip("pytestqt")

from tests.onnx_cases import helper_graph, ort_run  # noqa: E402

TIMEOUT = 60_000


def test_open_filter_lists_onnx():
    from gui.jobs import model_io
    assert "*.onnx" in model_io.open_filter() and "*.pstudio" in model_io.open_filter()


def test_gui_opens_prunes_and_exports_onnx(qtbot, win, tmp_path, monkeypatch):
    from gui.widgets.load_dialog import LoadDialog
    path = helper_graph(tmp_path / "net.onnx")

    def fill(dlg):
        dlg.tabs.setCurrentIndex(1)
        dlg.path.setText(path)
        dlg.shape.setText("1,3,224,224")  # the graph fixes 1,3,8,8: that one is used
        return LoadDialog.Accepted
    monkeypatch.setattr(LoadDialog, "exec", fill)
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_dialog()
    assert win.session.spec == path and win.session.shape == "1,3,8,8"
    assert tuple(win.session.inputs.args[0].shape) == (1, 3, 8, 8)
    assert win.session.dg.prunable_groups
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT) as blocker:
        assert win.prune() is not None
    res = blocker.args[0]
    assert res.plan.n_removed > 0
    out = str(tmp_path / "pruned.onnx")
    with qtbot.waitSignal(win.exportFinished, timeout=TIMEOUT):
        win.export_model(out)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = res.model(x)
    assert torch.allclose(torch.from_numpy(ort_run(out, x)[0]), ref, atol=1e-4)


def test_an_onnx_export_of_a_pruned_model_is_timed_against_the_original(qtbot, win, tmp_path):
    """The window said only "exported x.onnx (onnxruntime max |diff| ...)": as on the command line,
    the file is now timed against the original exported the same way, in turns."""
    from helpers import gui_prune
    gui_prune(qtbot, win)
    out = tmp_path / "pruned.onnx"
    with qtbot.waitSignal(win.exportFinished, timeout=TIMEOUT) as blocker:
        win.export_model(str(out))
    msg = blocker.args[0]
    assert "onnxruntime:" in msg and ") -> " in msg and ("faster" in msg or "slower" in msg), msg
    assert sorted(os.listdir(tmp_path)) == ["pruned.onnx"]  # no scratch file left
