"""GUI accuracy tests (pytest-qt, offscreen): sensitivity through the worker, its chart, graph
overlay and per-group ratios, and evaluation rows in the summary table."""
from __future__ import annotations

import uuid

import pytest
import torch

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from core.models.demo import DEMO_INPUT_SHAPE  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402

TIMEOUT = 120_000


@pytest.fixture(scope="module")
def digits():
    from core.train.data import load_data
    return load_data("digits@32x3", batch_size=64)  # the demo model's input: 3 x 32 x 32


@pytest.fixture
def win(qtbot, monkeypatch):
    seen = []
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda *a, **k: seen.append(a[1:3])))
    monkeypatch.setenv("PRUNESTUDIO_SETTINGS_ORG", f"prunestudio-test-{uuid.uuid4().hex[:8]}")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    w = MainWindow()
    w.latency_runs = 1
    w.headless = True
    w.sens_ratios = (0.5,)
    w.sens_max_batches = 1
    w.eval_max_batches = 2
    w.errors = seen
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    with qtbot.waitSignal(w.modelReady, timeout=TIMEOUT):
        w.open_model("demo", DEMO_INPUT_SHAPE)
    yield w
    w.settings.clear()
    torch.set_num_threads(n)


def _sensitivity(qtbot, w, data):
    with qtbot.waitSignal(w.sensitivityFinished, timeout=TIMEOUT) as b:
        assert w.run_sensitivity(data) is not None
        assert w.task is not None and w.task.name == "sensitivity"  # on the worker, cancellable
    return b.args[0]


def test_default_data_is_digits_at_the_models_input(win):
    from gui.jobs.accuracy import default_data_spec
    assert default_data_spec(win.session) == "digits@32x3"


def test_sensitivity_chart_overlay_and_ratios(qtbot, win, digits):
    dg = win.session.dg
    res = _sensitivity(qtbot, win, digits)
    assert not win.errors
    prunable = {g.id for g in dg.prunable_groups}
    assert {g.gid for g in res.groups} == prunable
    # the chart: one bar per prunable group, sorted, most sensitive first
    panel = win.sensitivity
    assert win.tabs.currentWidget() is panel
    bars = panel.bar_values()
    assert len(bars) == len(prunable) and sorted(panel.order) == sorted(prunable)
    assert bars == sorted(bars, reverse=True)
    assert panel.use_btn.isEnabled()
    # the overlay: every node of every measured group is coloured by its sensitivity
    view = win.view
    assert view.overlay_kind == "sensitivity"
    from gui.jobs.accuracy import group_scores
    from gui.widgets.graph_view import removed_colour
    norm = group_scores(res)
    most = max(norm, key=norm.get)
    least = min(norm, key=norm.get)
    for gid in (most, least):
        for n in dg.groups[gid].nodes:
            assert n in view.overlay_values
    n_most = next(n for n in dg.groups[most].nodes if len(win.session.node_groups.get(n, [])) == 1)
    assert view.items_by_node[n_most].fill == removed_colour(1.0)
    assert view.items_by_node[n_most].fill != view.items_by_node[n_most].base
    assert "sensitivity" in win.overlay_legend.text()

    # "Use for ratios": overrides in the targets' settings, shown with a clear button
    assert win.targets.settings().overrides == {}
    panel.mean_ratio.setValue(0.4)
    panel.use_btn.click()
    ov = win.targets.settings().overrides
    assert ov and len(ov) == len(prunable)
    assert "per-group ratios from sensitivity" in win.targets.overrides_label.text()
    assert f"({len(ov)} groups)" in win.targets.overrides_label.text()
    assert win.targets.overrides_row.isVisibleTo(win.targets)

    # a prune with them: the least sensitive group loses a larger fraction than the most sensitive
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT) as b:
        assert win.prune() is not None
    result = b.args[0]
    removed = {g.id: len(result.plan.removed.get(g.id, ())) / g.n_prunable for g in dg.prunable_groups}
    by = res.by_group()
    assert removed[least] > removed[most], (by[least].score, by[most].score, removed)
    assert result.verify is None or result.verify.passed

    # clear: back to one ratio for every group
    win.targets.clear_overrides_btn.click()
    assert win.targets.settings().overrides == {}
    assert not win.targets.overrides_row.isVisibleTo(win.targets)


def test_evaluation_rows_after_pruning(qtbot, win, digits):
    win.eval_data = digits  # as after a sensitivity run or Evaluate on data…
    with qtbot.waitSignal(win.evaluationFinished, timeout=TIMEOUT) as b:
        with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT):
            assert win.prune() is not None
    name, before, after = b.args[0]
    assert before.top1 is not None and after is not None and after.top1 is not None
    assert before.samples == after.samples == 128  # eval_max_batches=2 of 64
    table = win.charts.summary
    rows = {table.item(i, 0).text(): table.item(i, 1).text() for i in range(table.rowCount())}
    for key in ("parameters", "FLOPs", "top-1 accuracy", "top-5 accuracy", "loss"):
        assert key in rows, rows
    assert f"{before.top1:.2%} → {after.top1:.2%}" in rows["top-1 accuracy"]
    assert f"{before.loss:.4f} → {after.loss:.4f}" in rows["loss"]
    # undo drops the rows with the rest of the charts
    win.undo()
    assert win.charts.summary.rowCount() == 0 and win.charts.evaluation is None


def test_evaluate_on_data_action_uses_the_chosen_dataset(qtbot, win, monkeypatch, digits):
    import gui.widgets.data_choice as acc
    monkeypatch.setattr(acc, "choose_data", lambda *a, **k: digits)
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT):
        win.prune()
    with qtbot.waitSignal(win.evaluationFinished, timeout=TIMEOUT) as b:
        win.a_evaluate.trigger()
    assert b.args[0][0] == digits.name and b.args[0][2] is not None
    assert any(win.charts.summary.item(i, 0).text() == "top-1 accuracy"
               for i in range(win.charts.summary.rowCount()))


def test_sensitivity_can_be_cancelled(qtbot, win, digits):
    win.sens_ratios = (0.25, 0.5, 0.75)
    with qtbot.waitSignal(win.taskCancelled, timeout=TIMEOUT):
        assert win.run_sensitivity(digits) is not None
        win.cancel()
    assert win.sensitivity_result is None and win.task is None
    assert win.a_sensitivity.isEnabled()


def test_new_model_clears_sensitivity_and_overrides(qtbot, win, digits):
    _sensitivity(qtbot, win, digits)
    win.use_sensitivity_ratios(0.5)
    assert win.targets.settings().overrides
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model("demo", DEMO_INPUT_SHAPE)
    assert win.targets.settings().overrides == {}
    assert win.sensitivity_result is None and win.sensitivity.bar_values() == []
    assert win.view.overlay_kind is None
