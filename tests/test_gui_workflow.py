"""Issue 12, the workflow around the graph: the open dialog's keyboard behaviour, a stale estimate
marked while it is recalculated, Cancel while a cancel is pending, export names, drag-and-drop, the
targets' tooltips and typed value, and a window that fits its screen."""
from __future__ import annotations

import json
import os
import threading

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QLineEdit, QFileDialog  # noqa: E402

from core.models.demo import DEMO_INPUT_SHAPE  # noqa: E402

TIMEOUT = 60_000


@pytest.fixture
def dialog(qtbot):
    from gui.widgets.load_dialog import LoadDialog
    d = LoadDialog()
    qtbot.addWidget(d)
    d.show()
    qtbot.waitExposed(d)
    return d


def test_open_dialog_search_has_focus_and_typing_goes_there(qtbot, dialog):
    assert QApplication.focusWidget() is dialog.search
    qtbot.keyClicks(QApplication.focusWidget(), "resnet50")
    assert dialog.search.text() == "resnet50"
    qtbot.keyClick(dialog.search, Qt.Key_Return)
    assert dialog.result() == dialog.Accepted and dialog.spec() == "torchvision:resnet50"


def test_open_dialog_enter_picks_the_first_match_or_says_none(qtbot, dialog):
    qtbot.keyClicks(dialog.search, "mobilenet_v3")
    visible = [dialog.zoo.item(i).text() for i in range(dialog.zoo.count()) if not dialog.zoo.item(i).isHidden()]
    assert dialog.zoo.currentItem().text() == visible[0]  # the highlighted row is what Enter opens
    dialog.search.clear()
    qtbot.keyClicks(dialog.search, "no-such-net")
    qtbot.keyClick(dialog.search, Qt.Key_Return)
    assert dialog.isVisible() and dialog.result() != dialog.Accepted
    assert "no-such-net" in dialog.message.text()  # said, not silent
    assert dialog.spec() == ""  # a hidden row is never what gets loaded


def test_open_dialog_single_click_selects_without_loading(qtbot, dialog):
    it = dialog.zoo.item(3)
    rect = dialog.zoo.visualItemRect(it)
    qtbot.mouseClick(dialog.zoo.viewport(), Qt.LeftButton, pos=rect.center())
    assert dialog.isVisible() and dialog.result() != dialog.Accepted
    qtbot.mouseDClick(dialog.zoo.viewport(), Qt.LeftButton, pos=rect.center())
    assert dialog.result() == dialog.Accepted and dialog.spec() == f"torchvision:{it.text()}"


def test_new_model_marks_the_estimate_as_recalculating(qtbot, win):
    est = win.targets.estimate
    qtbot.waitUntil(lambda: "→" in est.text(), timeout=5000)
    with qtbot.waitSignal(win.estimateReady, timeout=TIMEOUT):
        win.open_model("demo", DEMO_INPUT_SHAPE)
        assert "recalculating" in est.text() and win.targets.estimate_stale
    assert "recalculating" not in est.text() and not win.targets.estimate_stale


def test_slider_move_marks_the_estimate_until_the_answer(qtbot, win):
    with qtbot.waitSignal(win.estimateReady, timeout=TIMEOUT):
        win.targets.slider.setValue(30)
        assert win.targets.estimate_stale
    assert not win.targets.estimate_stale


def test_successful_load_clears_an_old_error(qtbot, win, errors):
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT):
        win.open_model("torchvision:no_such_model", "1,3,8,8")
    assert "failed" in win.status_label.text()
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model("demo", DEMO_INPUT_SHAPE)
    assert "failed" not in win.status_label.text() and "no_such_model" not in win.status_label.text()


def test_cancel_is_disabled_while_a_cancel_is_pending(qtbot, win):
    release = threading.Event()

    def slow(progress=None, should_stop=None):
        release.wait(10)

    win.ctx.tasks.run("slow", slow, on_done=lambda _r: None)
    btn = win.cancel_btn
    assert btn.isEnabled() and btn.text() == "Cancel"
    assert win.a_cancel.isEnabled()
    win.cancel()
    assert not btn.isEnabled() and btn.text() == "Cancelling…"
    assert not win.a_cancel.isEnabled()  # the toolbar/menu Cancel (Esc) too
    with qtbot.waitSignal(win.taskCancelled, timeout=TIMEOUT, raising=False):
        release.set()
    qtbot.waitUntil(lambda: win.task is None, timeout=5000)
    assert btn.isEnabled() and btn.text() == "Cancel"
    assert not win.a_cancel.isEnabled()  # idle: nothing to cancel


def test_export_names_follow_the_model_and_the_last_folder(qtbot, win, tmp_path, monkeypatch):
    from gui.controllers.export import default_export_name
    assert default_export_name("torchvision:resnet50") == "resnet50-pruned.pt"
    assert default_export_name("/data/nets/my model.pth") == "my model-pruned.pt"
    assert default_export_name("/x/f.py:make_net") == "make_net-pruned.pt"
    assert default_export_name("hf:/m/bert-base/") == "bert-base-pruned.pt"
    assert default_export_name("timm:vit_base_patch16_224@pretrained") == "vit_base_patch16_224-pruned.pt"
    asked = []

    def save(parent, caption, path, *a, **k):
        asked.append(path)
        return str(tmp_path / "out.pt"), ""
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save))
    monkeypatch.setattr(win.exports, "export_model", lambda p: None)
    win.exports.export_dialog()
    assert os.path.basename(asked[0]) == "demo-original.pt"  # not pruned yet: says so
    win.exports.export_dialog()
    assert asked[1] == str(tmp_path / "demo-original.pt")  # the last folder used


def test_report_names_the_model_and_its_inputs(qtbot, win, tmp_path):
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT):
        win.prune()
    p = tmp_path / "r.json"
    win.export_report(str(p))
    rep = json.loads(p.read_text())
    assert rep["model"]["spec"] == "demo"
    assert rep["model"]["inputs"] == win.session.inputs.describe()
    assert rep["model"]["input_shapes"] == [list(int(s) for s in DEMO_INPUT_SHAPE.split(","))]


def _drop(win, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    enter = QDragEnterEvent(QPoint(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(win, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(win, drop)


def test_dropping_a_model_file_loads_it_after_consent(qtbot, win, tmp_path, trust_answers):
    import torch
    path = tmp_path / "net.pt"
    torch.save(win.session.model, path)  # a whole pickled model: loading it runs code
    trust_answers.queue.append(False)
    _drop(win, path)
    assert len(trust_answers.asked) == 1 and win.session.spec == "demo" and win.task is None
    trust_answers.queue.append(True)
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        _drop(win, path)
    assert win.session.spec == str(path) and len(trust_answers.asked) == 2


def test_drag_of_non_files_is_refused(win):
    mime = QMimeData()
    mime.setText("hello")
    enter = QDragEnterEvent(QPoint(5, 5), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    enter.ignore()
    QApplication.sendEvent(win, enter)
    assert not enter.isAccepted()


def test_targets_have_tooltips_and_a_typed_value(qtbot, win):
    t = win.targets
    for w in (t.criterion, t.round_to, t.global_rank):
        assert len(w.toolTip()) > 40, w
    box = t.slider.findChild(QLineEdit)  # superqt's editable value
    assert box is not None and box.isVisible()
    box.setFocus()
    box.selectAll()
    qtbot.keyClicks(box, "37")
    qtbot.keyClick(box, Qt.Key_Return)
    assert t.slider.value() == 37 and t.settings().ratio == pytest.approx(0.37)


def test_fresh_window_fits_the_available_screen(qtbot, monkeypatch):
    import uuid

    from gui.main_window import MainWindow
    monkeypatch.setenv("PRUNESTUDIO_SETTINGS_ORG", f"prunestudio-test-{uuid.uuid4().hex[:8]}")
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    avail = w.screen().availableGeometry()
    try:
        assert w.minimumSizeHint().width() <= avail.width()
        assert w.minimumSizeHint().height() <= avail.height()
        assert avail.contains(w.frameGeometry()) or (w.width() <= avail.width()
                                                     and w.height() <= avail.height())
        # the left dock scrolls instead of forcing its height onto the window
        assert w.ui.docks["targets"].widget().inherits("QScrollArea")
    finally:
        w.settings.clear()


def test_new_model_clears_the_group_table_selection(qtbot, win):
    win.groups.table.selectRow(1)
    assert win.groups.selected_ids()
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model("demo", DEMO_INPUT_SHAPE)
    assert not win.groups.selected_ids()  # the details say "Pick a node": nothing may look picked
    assert "Pick a node" in win.details.header.text()


def test_a_geometry_saved_on_a_bigger_screen_is_brought_back_on_screen(qtbot, monkeypatch):
    import uuid

    from gui.main_window import MainWindow
    monkeypatch.setenv("PRUNESTUDIO_SETTINGS_ORG", f"prunestudio-test-{uuid.uuid4().hex[:8]}")
    big = MainWindow()
    qtbot.addWidget(big)
    big.show()
    big.setGeometry(200, 150, 3000, 2000)  # as if saved on a 4K screen
    big.close()  # saves the geometry
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    avail = w.screen().availableGeometry()
    try:
        assert w.width() <= avail.width() and w.height() <= avail.height()
        assert avail.contains(w.geometry().topLeft()) and avail.contains(w.geometry().bottomRight())
    finally:
        w.settings.clear()


def test_a_small_window_gives_the_graph_the_width(qtbot, monkeypatch):
    """On a small screen (200 % scaling of 1920×1080 leaves 960×540) the coupled-group dock shares
    the left column with the targets as a tab, so the graph is not squeezed between two docks."""
    import uuid

    from gui.main_window import MainWindow
    monkeypatch.setenv("PRUNESTUDIO_SETTINGS_ORG", f"prunestudio-test-{uuid.uuid4().hex[:8]}")
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(900, 500)
    w.show()
    try:
        w._default_docks()
        docks = w.ui.docks
        assert docks["details"] in w.tabifiedDockWidgets(docks["targets"])
        qtbot.waitUntil(lambda: w.view.width() >= w.width() // 2, timeout=3000)
    finally:
        w.settings.clear()
