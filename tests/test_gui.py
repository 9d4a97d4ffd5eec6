"""GUI tests (pytest-qt, offscreen): the window drives core/ through the worker and shows it."""
from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import torch

pytest.importorskip("pytestqt")

from helpers import gui_prune  # noqa: E402

from core.models.demo import DEMO_INPUT_SHAPE  # noqa: E402

TIMEOUT = 60_000


def _prune(qtbot, w):
    return gui_prune(qtbot, w, TIMEOUT)


def test_graph_holds_traced_nodes(win):
    g = win.session.dg.graph
    assert set(win.view.items_by_node) == set(g.nodes)
    assert len(g) > 20
    for n, it in win.view.items_by_node.items():
        assert it.data["label"] == g.nodes[n]["label"]
    # every node was placed somewhere distinct
    assert len({(it.x(), it.y()) for it in win.view.items_by_node.values()}) == len(g)


def test_selecting_a_layer_highlights_its_coupled_group(win):
    dg = win.session.dg
    node = dg.node_of_module("block1.0")[0]  # a conv whose input channels join the residual group
    win.view.select_node(node)
    gids = dg.groups_of_node(node)
    assert len(gids) >= 2
    expected = set().union(*(dg.groups[g].nodes for g in gids))
    assert win.view.highlighted() == expected | {node}
    # a layer outside those groups stays plain
    head2 = dg.node_of_module("head.2")[0]
    assert head2 not in win.view.highlighted()
    assert win.details.tree.topLevelItemCount() == len(gids)
    # the table mirrors the pick
    assert set(win.groups.selected_ids()) == set(gids)
    # picking a group in the table highlights exactly its nodes
    win._on_groups_selected([gids[0]])
    assert win.view.highlighted() == dg.groups[gids[0]].nodes


def _estimates_idle(qtbot, win):
    """No estimate running or about to start: settings changes are debounced (120 ms) and the
    load's settle asks for one too, so an answer for the previous setting can still arrive."""
    qtbot.waitUntil(lambda: not win.ctx.settling and win.pruning._est_task is None
                    and not win.targets._debounce.isActive(), timeout=30_000)


def test_estimate_follows_slider_and_locks(qtbot, win):
    _estimates_idle(qtbot, win)
    with qtbot.waitSignal(win.estimateReady, timeout=5000) as b:
        win.targets.slider.setValue(20)
    p20, _ = b.args[0]
    _estimates_idle(qtbot, win)
    with qtbot.waitSignal(win.estimateReady, timeout=5000) as b:
        win.targets.slider.setValue(60)
    p60, _ = b.args[0]
    assert p60 < p20 < win.session.cost.base_params
    _estimates_idle(qtbot, win)
    with qtbot.waitSignal(win.estimateReady, timeout=5000) as b:
        gid = next(g.id for g in win.session.dg.groups if g.root == "head.0")  # the biggest linear
        win.groups.set_locked(gid, True)
    assert win.targets.settings().ignore == ["head.0"]
    assert b.args[0][0] > p60


def test_prune_through_worker_fills_charts_and_undo(qtbot, win):
    before = win.session.model
    r = _prune(qtbot, win)
    assert r.after.params < r.before.params and r.verify.passed
    assert win.session.result is r and win.session.model is before
    assert win.charts.values["params"] == (r.before.params, r.after.params)
    assert win.charts.values["flops"] == (r.before.flops, r.after.flops)
    bars = [i for i in win.charts.plots["params"].getPlotItem().items if hasattr(i, "opts")]
    assert list(bars[0].opts["height"]) == [r.before.params, r.after.params]
    assert win.charts.channels == r.channels and win.charts.summary.rowCount() >= 4
    # overlay: the pruned layers are coloured by the fraction removed
    node = win.session.dg.node_of_module("stem.0")[0]
    assert win.view.items_by_node[node].fill != win.view.items_by_node[node].base
    assert win.a_undo.isEnabled()
    win.undo()
    assert win.session.result is None and win.charts.values == {}
    assert win.view.items_by_node[node].fill == win.view.items_by_node[node].base
    r2 = _prune(qtbot, win)  # pruning can be repeated from the original
    assert r2.after.params == r.after.params


def test_cancel_leaves_original_untouched(qtbot, win):
    model = win.session.model
    snap = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with qtbot.waitSignal(win.taskCancelled, timeout=TIMEOUT):
        assert win.prune() is not None
        win.cancel()
    qtbot.waitUntil(lambda: win.task is None, timeout=5000)
    assert win.session.result is None
    now = model.state_dict()
    assert set(now) == set(snap)
    for k, v in snap.items():
        assert torch.equal(now[k], v), k
    assert win.a_prune.isEnabled()  # still usable


def test_export_pt_and_onnx_reload(qtbot, win, tmp_path):
    r = _prune(qtbot, win)
    x = win.session.inputs.args[0]
    with torch.no_grad():
        ref = r.model(x)
    pt = str(tmp_path / "pruned.pt")
    with qtbot.waitSignal(win.exportFinished, timeout=TIMEOUT):
        win.export_model(pt)
    back = torch.load(pt, weights_only=False)
    with torch.no_grad():
        assert torch.allclose(back(x), ref, atol=1e-6)
    onnx_path = str(tmp_path / "pruned.onnx")
    with qtbot.waitSignal(win.exportFinished, timeout=TIMEOUT) as b:
        win.export_model(onnx_path)
    assert "max |diff|" in b.args[0]
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == tuple(ref.shape)
    assert np.abs(out - ref.numpy()).max() < 1e-3
    report = tmp_path / "report.json"
    win.export_report(str(report))
    import json
    assert json.loads(report.read_text())["after"]["params"] == r.after.params


def test_corrupt_file_shows_error_and_window_survives(qtbot, win, errors, tmp_path, trust_answers):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a torch file" * 10)
    trust_answers.queue.append(True)
    demo = win.session
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT):
        win.open_model(str(bad), "1,3,32,32")
    assert trust_answers.asked, "a pickle must not be trusted without asking"
    assert errors and "broken.pt" in errors[-1][1]
    assert win.session is demo and win.a_prune.isEnabled()


def test_find_and_export_views(win, tmp_path):
    r = win.view.find("branch_b")
    assert r is not None and r[1] >= 3
    assert "branch_b" in win.view.items_by_node[r[0]].data["scope"]
    png, svg = tmp_path / "g.png", tmp_path / "g.svg"
    win.view.export_png(str(png))
    win.view.export_svg(str(svg))
    assert png.stat().st_size > 1000 and "<svg" in svg.read_text()[:2000]


def test_app_main_screenshot(tmp_path):
    # a real process: main.py without a subcommand opens the window on the demo, shoots, quits
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen",
               PRUNESTUDIO_SETTINGS_ORG=f"prunestudio-test-{uuid.uuid4().hex[:8]}")
    r = subprocess.run([sys.executable, os.path.join(root, "main.py"), "--screenshot", str(out)],
                       env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size > 10_000


def test_worker_throttles_progress_and_reports_errors(qtbot):
    from gui.jobs import worker

    def busy(progress, should_stop):
        for i in range(2000):
            progress("step", i, 2000, "")
        progress("step", 2000, 2000, "done")
        return 42

    t = worker.Task("busy", busy)
    seen = []
    t.progress.connect(lambda *a: seen.append(a))
    with qtbot.waitSignal(t.finished, timeout=10_000) as b:
        worker.start(t)
    assert b.args == [42]
    qtbot.wait(50)
    assert 2 <= len(seen) < 50 and seen[-1][1] == 2000  # throttled, but the end always arrives

    def boom(progress, should_stop):
        raise ValueError("bad value")
    t2 = worker.Task("boom", boom)
    with qtbot.waitSignal(t2.failed, timeout=10_000) as b:
        worker.start(t2)
    assert b.args[0] == "ValueError: bad value" and "Traceback" in b.args[1]


def test_shortcuts(win):
    keys = {a.shortcut().toString() for a in (win.a_open, win.a_prune, win.a_undo, win.a_export,
                                              win.a_fit, win.a_find)}
    assert keys == {"Ctrl+O", "Ctrl+P", "Ctrl+Z", "Ctrl+E", "F", "Ctrl+F"}


def test_many_void_qt_calls_do_not_abort_python():
    # PySide6 6.12 on Python 3.11 drops a reference to None per void call; gui.compat guards it
    import sys

    import gui  # noqa: F401
    from PySide6.QtCore import QPointF
    p = QPointF()
    for _ in range(100_000):
        p.setX(1.0)
    assert sys.getrefcount(None) > 100_000


# ------------------------------------------------------------------ attention: heads or head dims
MHA_SRC = '''
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)  # 4 heads of 8 dims
        self.out = nn.Linear(32, 5)
    def forward(self, x):
        h = self.inp(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.out(a + h)
def make():
    torch.manual_seed(0)
    return Net()
'''


@pytest.fixture
def mha(qtbot, win, tmp_path, trust_answers):
    """The window on a small model with one nn.MultiheadAttention (4 heads of 8 dimensions)."""
    f = tmp_path / "mha.py"
    f.write_text(MHA_SRC)
    trust_answers.queue.append(True)  # run mha.py
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model(f"{f}:make", "1,6,8")
    return win


def _attention_row(w):
    """(channels, text) of the attention group in the group table."""
    p = w.groups
    row = next(i for i in range(p.row_count()) if p.text(i, "root") == "attn")
    return p.value(row, "channels"), p.text(row, "channels")


def _switch_attention(qtbot, w, mode):
    with qtbot.waitSignal(w.modelReady, timeout=TIMEOUT):
        w.targets.attention.setCurrentIndex(w.targets.attention.findData(mode))


def test_attention_choice_reanalyses_prunes_and_is_kept_in_the_project(qtbot, mha, errors, tmp_path,
                                                                       trust_answers):
    w = mha
    combo = w.targets.attention
    assert combo.isEnabled() and w.targets.attention_mode() == "heads"
    assert "Whole heads" in combo.toolTip() and "narrower" in combo.toolTip()
    assert _attention_row(w) == (4, "4 heads")  # one channel per head
    gid = next(g.id for g in w.session.dg.groups if g.root == "inp")
    w.groups.set_locked(gid, True)  # a lock (by root layer) survives the new analysis
    r_heads = _prune(qtbot, w)
    assert r_heads.model.attn.num_heads < 4
    old = w.session
    _switch_attention(qtbot, w, "head_dim")
    s = w.session
    assert s is not old and s.model is old.model and s.dg.options == {"attention": "head_dim"}
    # the old pruned result does not survive into the new groups
    assert s.result is None and w.charts.values == {} and not w.a_undo.isEnabled()
    assert _attention_row(w) == (8, "8 per head")  # one channel per dimension of every head
    assert w.targets.locked == ["inp"] and "dimensions in every head" in w.info.text()
    r = _prune(qtbot, w)
    assert r.verify.passed and r.plan.settings["analysis"] == {"attention": "head_dim"}
    attn = r.model.attn
    assert attn.num_heads == 4 and attn.in_proj_weight.shape[0] == 3 * 4 * 4  # 4 heads, 4 dims each
    # the project records the choice; opening it restores the control and the same pruned model
    path = tmp_path / "attn.psproj"
    assert w.save_project(str(path))
    import json
    assert json.loads(path.read_text())["extra"]["analysis"] == {"attention": "head_dim"}
    _switch_attention(qtbot, w, "heads")
    assert _attention_row(w) == (4, "4 heads")
    trust_answers.queue.append(True)  # the project runs mha.py again: asked again
    with qtbot.waitSignal(w.projectRestored, timeout=TIMEOUT):
        w.open_project(str(path))
    assert w.targets.attention_mode() == "head_dim" and _attention_row(w) == (8, "8 per head")
    assert w.session.result.plan.to_json() == r.plan.to_json()
    for (k, v), (k2, v2) in zip(r.model.state_dict().items(),
                                w.session.result.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert not errors


def test_attention_reanalysis_cancel_and_failure_keep_the_old_analysis(qtbot, mha, errors, monkeypatch):
    from gui.jobs import session as sess, worker
    w = mha
    before = w.session
    r = _prune(qtbot, w)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(worker.Task, "should_stop", lambda self: True)  # Cancel at the first poll
        with qtbot.waitSignal(w.taskCancelled, timeout=TIMEOUT):
            w.targets.attention.setCurrentIndex(w.targets.attention.findData("head_dim"))
    assert w.session is before and before.result is r
    assert w.targets.attention_mode() == "heads" and w.targets.attention.isEnabled()
    from core.errors import TraceError

    def boom(*a, **k):
        raise TraceError("forward broke")
    monkeypatch.setattr(sess, "reanalyse", boom)
    with qtbot.waitSignal(w.taskFailed, timeout=TIMEOUT):
        w.targets.attention.setCurrentIndex(w.targets.attention.findData("head_dim"))
    assert errors[-1][1] == "forward broke"
    assert w.session is before and w.targets.attention_mode() == "heads" and w.a_prune.isEnabled()


def test_load_dialog_attention_choice_reaches_the_analysis(qtbot, win, tmp_path, monkeypatch,
                                                           trust_answers):
    from gui.widgets.load_dialog import LoadDialog
    f = tmp_path / "mha.py"
    f.write_text(MHA_SRC)
    assert not win.targets.attention.isEnabled()  # the demo has no attention layers
    assert "no attention layers" in win.targets.attention.toolTip()

    def fill(dlg):
        assert dlg.attention.currentData() == "heads"  # the current choice is the default
        dlg.tabs.setCurrentIndex(1)
        dlg.path.setText(f"{f}:make")
        dlg.shape.setText("1,6,8")
        dlg.attention.setCurrentIndex(dlg.attention.findData("head_dim"))
        return LoadDialog.Accepted
    monkeypatch.setattr(LoadDialog, "exec", fill)
    trust_answers.queue.append(True)
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_dialog()
    assert win.session.dg.options == {"attention": "head_dim"}
    assert win.targets.attention_mode() == "head_dim" and win.targets.attention.isEnabled()
    assert _attention_row(win) == (8, "8 per head")


def test_project_weights_reach_the_gui(win, qtbot, tmp_path, errors):
    """A project saved with --weights opens in the GUI with those weights (the GUI used to
    rebuild the model from its spec alone and ignore them)."""
    from core.io import project as proj
    from core.models.demo import demo_model

    trained = demo_model()
    with torch.no_grad():  # weights no build of the spec gives
        for t in trained.parameters():
            t.add_(torch.randn(t.shape, generator=torch.Generator().manual_seed(t.numel())))
    weights = tmp_path / "trained.pt"
    torch.save(trained.state_dict(), weights)
    p = proj.project_from("demo", win.targets.settings(), shape=DEMO_INPUT_SHAPE, weights=str(weights))
    path = tmp_path / "w.psproj"
    proj.save_project(str(path), p)
    with qtbot.waitSignal(win.projectRestored, timeout=TIMEOUT):
        win.open_project(str(path))
    got = win.session.model.state_dict()
    for k, v in trained.state_dict().items():
        assert torch.equal(got[k], v), k
    assert not errors
