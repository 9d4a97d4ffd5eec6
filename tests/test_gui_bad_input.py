"""GUI under bad input and faults: each case shows a dialog with the exact message (QMessageBox is
monkeypatched), the window keeps the model it had and stays usable; cancelling at any poll leaves
the model untouched; existing files are only replaced after a confirmation; a worker crash is
reported and logged to a file; File > Save/Open project restores the same pruned model."""
from __future__ import annotations

import json
import os
import uuid

import pytest
import torch

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from core.models.demo import DEMO_INPUT_SHAPE, demo_model  # noqa: E402
from helpers import BAD_FORWARD_SRC  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTORY = os.path.join(ROOT, "tests", "models", "demo_factory.py")
TIMEOUT = 60_000


class Dialogs:
    """Stands in for QMessageBox: records critical() texts, answers question() from a queue."""

    def __init__(self):
        self.errors, self.questions, self.answers = [], [], []

    def critical(self, parent, title, text, *a, **k):
        self.errors.append((title, text))
        return QMessageBox.Ok

    def question(self, parent, title, text, *a, **k):
        self.questions.append((title, text))
        return self.answers.pop(0) if self.answers else QMessageBox.No


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("gui_bad")
    mp.setenv("PRUNESTUDIO_SETTINGS_ORG", f"prunestudio-test-{uuid.uuid4().hex[:8]}")
    mp.setenv("PRUNESTUDIO_LOG", str(d / "logs" / "prunestudio.log"))
    dialogs = Dialogs()
    mp.setattr(QMessageBox, "critical", staticmethod(dialogs.critical))
    mp.setattr(QMessageBox, "question", staticmethod(dialogs.question))
    # the inputs
    whole = d / "whole.pt"
    torch.save(demo_model(), whole)
    data = whole.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "corrupt.pt").write_bytes(b"\x80\x02garbage that is not a checkpoint")
    (d / "notes.pt").write_text("these are my notes\n")
    torch.save([1, 2, 3], d / "list.pt")
    torch.save(demo_model().state_dict(), d / "weights_only.pt")
    (d / "badfwd.py").write_text(BAD_FORWARD_SRC)
    yield d, dialogs
    mp.undo()


@pytest.fixture(scope="module")
def window(env, qapp):
    from gui.main_window import MainWindow
    w = MainWindow()
    w.latency_runs = 1
    w.resize(1200, 800)
    w.show()
    yield w
    w.settings.clear()
    w.close()


@pytest.fixture
def win(window, env, qtbot):
    d, dialogs = env
    if window.session is None or window.session.spec != "demo" or window.session.meta:
        with qtbot.waitSignal(window.modelReady, timeout=TIMEOUT):
            window.open_model("demo", DEMO_INPUT_SHAPE)
    if window.session.result is not None:
        window.undo()
    dialogs.errors.clear()
    dialogs.questions.clear()
    dialogs.answers.clear()
    window.targets.locked = []
    window.targets.mode.setCurrentIndex(0)
    window.targets.slider.setValue(50)
    window.targets.device.setCurrentText("cpu")
    window.targets.round_to.setValue(1)
    window.targets.criterion.setCurrentText("l2")
    return window


def _usable(w, session):
    assert w.task is None
    assert w.session is session
    assert w.a_prune.isEnabled() and w.a_open.isEnabled() and w.prune_btn.isEnabled()


LOAD_CASES = {
    "truncated": (lambda d: (str(d / "truncated.pt"), "1,3,32,32", "float32"),
                  lambda d: f"{d / 'truncated.pt'} is not a readable PyTorch file (corrupt or "
                            f"truncated?): the zip archive is truncated or damaged"),
    "corrupt": (lambda d: (str(d / "corrupt.pt"), "1,3,32,32", "float32"),
                lambda d: f"{d / 'corrupt.pt'} is not a readable PyTorch file (corrupt or "
                          f"truncated?): the data is not a PyTorch/pickle file"),
    "not_a_model_text": (lambda d: (str(d / "notes.pt"), "1,3,32,32", "float32"),
                         lambda d: f"{d / 'notes.pt'} is not a readable PyTorch file (corrupt or "
                                   f"truncated?): the data is not a PyTorch/pickle file"),
    "not_a_model_list": (lambda d: (str(d / "list.pt"), "1,3,32,32", "float32"),
                         lambda d: f"{d / 'list.pt'} holds a list, not a torch.nn.Module or a "
                                   f"state dict"),
    "state_dict_as_model": (lambda d: (str(d / "weights_only.pt"), "1,3,32,32", "float32"),
                            lambda d: f"{d / 'weights_only.pt'} holds only weights (a state dict "
                                      f"of 46 tensors), not a model: give the architecture as "
                                      f"MODEL (torchvision:NAME or file.py:factory) and this "
                                      f"file with --weights"),
    "pickle_not_trusted": (lambda d: (str(d / "whole.pt"), "1,3,32,32", "float32"),
                           lambda d: f"{d / 'whole.pt'} contains pickled code (it references "
                                     f"core.models.demo.DemoNet), which runs when loaded; load it only "
                                     f"if you trust its source: pass --trust (trust=True)"),
    "factory_raises": (lambda d: (f"{FACTORY}:broken", "1,3,32,32", "float32"),
                       lambda d: f"{FACTORY}:broken() raised RuntimeError: factory exploded on "
                                 f"purpose"),
    "forward_fails": (lambda d: (f"{d / 'badfwd.py'}:make", "1,3,32,32", "float32"),
                      lambda d: "the model's forward failed in layer 'fc' (Linear) on the example "
                                "inputs ((1, 3, 32, 32) float32): RuntimeError: mat1 and mat2 "
                                "shapes cannot be multiplied (1x7200 and 100x10)"),
    "input_wrong_shape": (lambda d: (f"{FACTORY}:make", "1,5,32,32", "float32"),
                          lambda d: "the model's forward failed in layer 'stem.0' (Conv2d) on the "
                                    "example inputs ((1, 5, 32, 32) float32): RuntimeError: Given "
                                    "groups=1, weight of size [32, 3, 3, 3], expected input[1, 5, "
                                    "32, 32] to have 3 channels, but got 5 channels instead"),
    "input_wrong_dtype": (lambda d: (f"{FACTORY}:make", "1,3,32,32", "int64"),
                          lambda d: "the model's forward failed in layer 'stem.0' (Conv2d) on the "
                                    "example inputs ((1, 3, 32, 32) int64): RuntimeError: expected "
                                    "scalar type Long but found Float; the example input is int64 "
                                    "but the model's weights are float32: check --input-dtype"),
    "input_shape_text": (lambda d: (f"{FACTORY}:make", "1,three", "float32"),
                         lambda d: "input shape '1,three' is not a comma-separated list of "
                                   "integers"),
    "too_large_for_memory": (lambda d: (f"{FACTORY}:make", "1,3,32,32", "float32"),
                             lambda d: f"{FACTORY}:make is too large for this machine's memory: "
                                       f"its parameters take about 1.1 MB and analysing and "
                                       f"pruning it needs about 3.3 MB, but only 1.0 MB is "
                                       f"available; analyse its structure on the meta device "
                                       f"instead (no weights are loaded): python main.py graph "
                                       f"{FACTORY}:make --input-shape 1,3,32,32 --meta"),
}


@pytest.mark.parametrize("case", sorted(LOAD_CASES))
def test_bad_model_or_input_shows_a_dialog_and_keeps_the_window(case, win, env, qtbot,
                                                                 monkeypatch, trust_answers):
    from core.io.sources import what_would_run
    d, dialogs = env
    if case == "too_large_for_memory":
        monkeypatch.setenv("PRUNESTUDIO_AVAILABLE_MEMORY", str(2**20))
        dialogs.answers.append(QMessageBox.No)  # "analyse on the meta device instead?" - no
    before = win.session
    spec, shape, dtype = LOAD_CASES[case][0](d)
    if case == "pickle_not_trusted":  # answered No: nothing is loaded, nothing runs
        trust_answers.queue.append(False)
        assert win.open_model(spec, shape, dtype) is None
        assert win.task is None and not dialogs.errors
        assert len(trust_answers.asked) == 1 and str(d / "whole.pt") in trust_answers.asked[0].text()
        _usable(win, before)
        return
    trust_answers.queue.extend([True] * bool(what_would_run(spec)))  # let the code run: its error
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT):
        win.open_model(spec, shape, dtype)
    assert dialogs.errors == [(f"loading {spec} failed", LOAD_CASES[case][1](d))]
    if case == "too_large_for_memory":
        assert dialogs.questions[-1][0] == "Analyse without weights?"
    _usable(win, before)


def test_too_large_model_offers_the_meta_analysis(win, env, qtbot, monkeypatch, trust_answers):
    d, dialogs = env
    monkeypatch.setenv("PRUNESTUDIO_AVAILABLE_MEMORY", str(2**20))
    dialogs.answers.append(QMessageBox.Yes)
    trust_answers.queue.append(True)  # asked once: the meta analysis keeps that consent
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model(f"{FACTORY}:make", "1,3,32,32")
    s = win.session
    assert s.meta and next(s.model.parameters()).device.type == "meta"
    assert len(s.dg.prunable_groups) == 7  # the same groups as the real analysis
    assert not win.a_prune.isEnabled() and not win.a_export.isEnabled()
    assert "meta device" in win.info.text()
    assert win.prune() is None and dialogs.errors[-1] == (
        "Prune", "this model was analysed on the meta device (structure only, no weights): load "
                 "it with its weights to prune it")


SETTING_CASES = {
    "ignored_layer_missing": "ignored layer 'no.such.layer' does not exist in the model",
    "cuda_absent": "device 'cuda' was asked for, but no CUDA GPU is available here",
    "target_unreachable": None,  # checked by pattern below
}


@pytest.mark.parametrize("case", sorted(SETTING_CASES))
def test_bad_settings_show_a_dialog_and_keep_the_model(case, win, env, qtbot):
    d, dialogs = env
    if case == "cuda_absent" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    before = win.session
    snap = {k: v.clone() for k, v in before.model.state_dict().items()}
    if case == "ignored_layer_missing":
        win.targets.locked = ["no.such.layer"]
    elif case == "cuda_absent":
        if win.targets.device.findText("cuda") < 0:
            win.targets.device.addItem("cuda")
        win.targets.device.setCurrentText("cuda")
    else:
        win.targets.mode.setCurrentIndex(win.targets.mode.findData("params"))
        win.targets.round_to.setValue(256)  # the widest group has 256 channels: nothing can go
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT):
        assert win.prune() is not None
    title, text = dialogs.errors[-1]
    assert title == "pruning failed"
    if SETTING_CASES[case]:
        assert text == SETTING_CASES[case]
    else:
        assert text == ("round-to 256 leaves nothing to remove: kept channels must be a multiple "
                        "of it, and the widest prunable group has 256 channels")
    _usable(win, before)
    assert win.session.result is None
    assert all(torch.equal(v, snap[k]) for k, v in before.model.state_dict().items())


def test_worker_crash_is_reported_logged_and_the_window_survives(win, env, qtbot, monkeypatch):
    from gui.jobs import session as sess
    d, dialogs = env
    before = win.session

    def crash(*a, **k):
        return 1 / 0
    monkeypatch.setattr(sess, "prune", crash)
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT):
        win.prune()
    log_file = d / "logs" / "prunestudio.log"
    assert win.log_file == str(log_file)
    assert dialogs.errors[-1] == ("pruning failed", "internal error: ZeroDivisionError: division by "
                                  f"zero\n\nThe details were written to {log_file}.")
    text = log_file.read_text()
    assert "Traceback" in text and "ZeroDivisionError" in text and "in crash" in text
    _usable(win, before)
    monkeypatch.undo()
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT):  # still works
        win.prune()


def _snap(model):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {k: m.training for k, m in model.named_modules()})


def _same(model, snap):
    sd, modes = snap
    assert {k: m.training for k, m in model.named_modules()} == modes
    now = model.state_dict()
    assert set(now) == set(sd) and all(torch.equal(now[k], v) for k, v in sd.items())


def _stop_after(monkeypatch, n):
    """Every worker task answers should_stop() True from its n-th poll on."""
    from gui.jobs import worker
    polls = {}

    def should_stop(self):
        polls[id(self)] = polls.get(id(self), 0) + 1
        return self._stop.is_set() or polls[id(self)] > n
    monkeypatch.setattr(worker.Task, "should_stop", should_stop)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_cancel_pruning_at_poll_n_leaves_the_model(n, win, qtbot, monkeypatch):
    before = win.session
    snap = _snap(before.model)
    _stop_after(monkeypatch, n)
    with qtbot.waitSignal(win.taskCancelled, timeout=TIMEOUT):
        win.prune()
    assert win.session.result is None
    _same(before.model, snap)
    _usable(win, before)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_cancel_loading_at_poll_n_keeps_the_previous_model(n, win, qtbot, monkeypatch, trust_answers):
    before = win.session
    trust_answers.queue.append(True)
    snap = _snap(before.model)
    _stop_after(monkeypatch, n)
    with qtbot.waitSignal(win.taskCancelled, timeout=TIMEOUT):
        win.open_model(f"{FACTORY}:make", "1,3,32,32")
    _same(before.model, snap)
    _usable(win, before)


def test_cancel_export_writes_nothing_and_keeps_the_result(win, qtbot, monkeypatch, tmp_path):
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT):
        win.prune()
    result = win.session.result
    snap, psnap = _snap(win.session.model), _snap(result.model)
    for n in (0, 1, 2):
        _stop_after(monkeypatch, n)
        for name in ("m.pt", "m.pstudio"):
            with qtbot.waitSignal(win.taskCancelled, timeout=TIMEOUT):
                win.export_model(str(tmp_path / name))
            assert os.listdir(tmp_path) == [], (n, name)
    _same(win.session.model, snap)
    _same(result.model, psnap)
    assert win.session.result is result


def test_existing_file_is_replaced_only_after_confirmation(win, env, qtbot, tmp_path):
    d, dialogs = env
    target = tmp_path / "pruned.pt"
    target.write_bytes(b"my precious file")
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT):
        win.prune()
    dialogs.answers.append(QMessageBox.No)
    assert win.export_model(str(target)) is None
    assert dialogs.questions[-1] == ("Replace file?", f"{target} already exists. Replace it?")
    assert target.read_bytes() == b"my precious file"
    report = tmp_path / "report.json"
    report.write_text("keep")
    dialogs.answers.append(QMessageBox.No)
    win.export_report(str(report))
    assert report.read_text() == "keep"
    dialogs.answers.append(QMessageBox.Yes)
    with qtbot.waitSignal(win.exportFinished, timeout=TIMEOUT):
        win.export_model(str(target))
    assert target.read_bytes() != b"my precious file"
    assert isinstance(torch.load(target, weights_only=False), torch.nn.Module)
    assert sorted(os.listdir(tmp_path)) == ["pruned.pt", "report.json"]  # no temporary files


def test_export_never_writes_over_the_input_model(win, env, qtbot, tmp_path, trust_answers):
    d, dialogs = env
    src = tmp_path / "mine.pt"
    torch.save(demo_model(), src)
    original = src.read_bytes()
    trust_answers.queue.append(True)  # trust it
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model(str(src), DEMO_INPUT_SHAPE)
    dialogs.answers.append(QMessageBox.Yes)  # "replace it?" - yes, but it is the input
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT):
        win.export_model(str(src))
    assert dialogs.errors[-1] == ("export failed", f"refusing to write over the input file {src}; "
                                                   f"choose another output name")
    assert src.read_bytes() == original


def test_project_save_and_open_restores_the_pruned_model(win, env, qtbot, tmp_path):
    d, dialogs = env
    win.targets.slider.setValue(40)
    win.targets.criterion.setCurrentText("l1")
    gid = next(g.id for g in win.session.dg.groups if g.root == "head.0")
    win.groups.set_locked(gid, True)
    qtbot.waitUntil(lambda: win.targets.locked == ["head.0"], timeout=5000)
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT) as b:
        win.prune()
    r = b.args[0]
    path = tmp_path / "work.psproj"
    assert win.save_project(str(path))
    saved = json.loads(path.read_text())
    assert saved["settings"]["ratio"] == 0.4 and saved["settings"]["ignore"] == ["head.0"]
    assert saved["plan"] == r.plan.to_json()
    dialogs.answers.append(QMessageBox.No)  # saving again: "replace it?" - no
    assert not win.save_project(str(path))
    # a fresh start: the demo with default settings, then File > Open project
    win.undo()
    win.groups.set_locked(gid, False)
    win.targets.slider.setValue(10)
    win.targets.criterion.setCurrentText("l2")
    with qtbot.waitSignal(win.projectRestored, timeout=TIMEOUT):
        win.open_project(str(path))
    s = win.session
    assert s.result is not None
    assert json.dumps(s.result.plan.to_json(), sort_keys=True) == json.dumps(saved["plan"],
                                                                             sort_keys=True)
    for (k, v), (k2, v2) in zip(r.model.state_dict().items(), s.result.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    st = win.targets.settings()
    assert (st.ratio, st.importance, st.ignore) == (0.4, "l1", ["head.0"])
    # the restored settings plan the same channels again (determinism across save and load)
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT) as b2:
        win.prune()
    assert b2.args[0].plan.to_json() == r.plan.to_json()
    win.groups.set_locked(gid, False)


def test_damaged_project_shows_a_dialog(win, env, tmp_path):
    d, dialogs = env
    p = tmp_path / "bad.psproj"
    p.write_text('{"format": "prunestudio.project", "version": 1}')
    before = win.session
    assert win.open_project(str(p)) is None
    assert dialogs.errors[-1] == ("Open project", f"{p} is damaged: KeyError: 'model'")
    _usable(win, before)
