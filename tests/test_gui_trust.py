"""The GUI's side of the trust model: every way a file can bring code (a factory spec, a .pstudio
recording one, a project naming a factory, a pickle - also with a trailing space or an unusual
suffix - or Hugging Face custom code, a dataset factory) is asked about first, in a dialog that
names the path and a short content hash with No as the default; No runs nothing (the marker the
code would write stays absent). Helpers are shared with tests/test_trust.py."""
from __future__ import annotations

import hashlib

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from test_trust import _hf_custom_dir, _portable_of_factory, _project, evil_file, evil_pickle  # noqa: E402

TIMEOUT = 60_000


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "MARKER"


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _nothing_ran(w, demo, marker, errors):
    assert not marker.exists(), marker.read_text()
    assert w.task is None and w.session is demo and not errors
    assert w.a_prune.isEnabled() and w.a_open.isEnabled()


def test_no_to_a_factory_runs_nothing_and_no_is_the_default(win, errors, marker, tmp_path,
                                                             trust_answers):
    f = evil_file(tmp_path / "src", marker)
    demo = win.session
    trust_answers.queue.append(False)
    assert win.open_model(f"{f}:make", "1,3,8,8") is None
    [dlg] = trust_answers.asked
    assert dlg.defaultButton() is dlg.button(QMessageBox.No)
    assert dlg.escapeButton() is dlg.button(QMessageBox.No)
    assert f in dlg.text() and _sha(f)[:12] in dlg.text() and "model factory" in dlg.text()
    assert not dlg.remember.isChecked()
    _nothing_ran(win, demo, marker, errors)


def test_no_to_a_pstudio_recording_a_factory_runs_nothing(win, errors, marker, tmp_path,
                                                          trust_answers):
    f, p = _portable_of_factory(tmp_path, marker)
    demo = win.session
    trust_answers.queue.append(False)
    assert win.open_model(p, "1,3,8,8") is None
    [dlg] = trust_answers.asked
    assert f in dlg.text() and _sha(f)[:12] in dlg.text()
    _nothing_ran(win, demo, marker, errors)


@pytest.mark.parametrize("kind", ["factory", "pstudio", "pickle_trailing_space", "pickle_odd_suffix",
                                  "hf_auto_map"])
def test_project_naming_code_asks_and_no_runs_nothing(win, errors, marker, tmp_path, trust_answers,
                                                      kind):
    if kind == "factory":
        what = evil_file(tmp_path / "src", marker)
        spec = f"{what}:make"
    elif kind == "pstudio":
        what, spec = _portable_of_factory(tmp_path, marker)
    elif kind == "pickle_trailing_space":
        what = evil_pickle(tmp_path / "evil.pt", marker)
        spec = what + " "
    elif kind == "pickle_odd_suffix":
        what = spec = evil_pickle(tmp_path / "evil.weights", marker)
    else:
        pytest.importorskip("transformers")
        what = _hf_custom_dir(tmp_path / "hfdir", marker)
        spec = "hf:" + what
    path = _project(tmp_path, spec)  # it stores "trust": true - which counts for nothing
    demo = win.session
    trust_answers.queue.append(False)
    assert win.open_project(path) is None
    assert len(trust_answers.asked) == 1 and what in trust_answers.asked[0].text()
    _nothing_ran(win, demo, marker, errors)


def test_yes_with_remember_is_kept_per_content_hash(win, errors, marker, tmp_path, qtbot,
                                                    trust_answers):
    f = evil_file(tmp_path / "src", marker)
    trust_answers.queue.append((True, False))  # yes, not remembered
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model(f"{f}:make", "1,3,8,8")
    assert marker.exists() and not win.ctx.remembered_hashes()
    trust_answers.queue.append((True, True))  # asked again; this time remembered
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model(f"{f}:make", "1,3,8,8")
    assert win.ctx.remembered_hashes() == {_sha(f)}
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):  # not asked: remembered
        win.open_model(f"{f}:make", "1,3,8,8")
    assert len(trust_answers.asked) == 2
    with open(f, "a") as fh:
        fh.write("\n# changed\n")
    trust_answers.queue.append(False)  # new content: asked again
    assert win.open_model(f"{f}:make", "1,3,8,8") is None
    assert len(trust_answers.asked) == 3 and not errors


def test_no_to_a_dataset_factory_runs_nothing(win, errors, marker, tmp_path, trust_answers):
    f = evil_file(tmp_path / "src", marker)
    trust_answers.queue.append(False)
    assert win.run_sensitivity(f"{f}:data") is None
    assert "dataset factory" in trust_answers.asked[0].text()
    assert not marker.exists() and win.task is None and not errors


def test_recent_file_naming_a_factory_asks_and_no_runs_nothing(win, errors, marker, tmp_path,
                                                               trust_answers):
    f = evil_file(tmp_path / "src", marker)
    win.models.add_recent(f"{f}:make", "1,3,8,8", "float32")
    demo = win.session
    trust_answers.queue.append(False)
    [action] = [a for a in win.models.recent_menu.actions() if f in a.text()]
    action.trigger()
    assert len(trust_answers.asked) == 1 and f in trust_answers.asked[0].text()
    _nothing_ran(win, demo, marker, errors)


def test_project_with_an_inputs_function_is_refused_before_asking(win, errors, marker, tmp_path,
                                                                   trust_answers):
    import json
    f = evil_file(tmp_path / "src", marker)
    path = _project(tmp_path, "demo")
    d = json.loads(open(path).read())
    d["inputs"] = {"function": f"{f}:inputs"}
    open(path, "w").write(json.dumps(d))
    assert win.open_project(path) is None
    assert not trust_answers.asked and not marker.exists()
    assert errors[-1] == ("Open project", "projects with an inputs function open in the CLI only "
                                          "(python main.py)")
