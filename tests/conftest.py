"""Shared pytest set-up."""

# --- GUI tests (tests/test_gui.py): render offscreen unless a platform was chosen explicitly
import os as _os

_os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sys as _sys  # noqa: E402

import pytest as _pytest  # noqa: E402


def _seed_widths_cache():
    """``--round-to auto`` is the default: every test process (subprocesses inherit the variable)
    reads a cache that says 16 - the multiple measured on CPU here - instead of running the
    micro-benchmark. Tests that time widths set their own cache dir and stub."""
    import json
    import tempfile

    import torch

    from core.metrics import widths
    d = tempfile.mkdtemp(prefix="prunestudio-test-cache-")
    n = max(64, _os.cpu_count() or 1, torch.get_num_threads())
    cache = {widths.device_key(torch.device("cpu"), t): {"multiple": AUTO_MULTIPLE, "ms_per_channel": {}}
             for t in range(1, n + 1)}
    with open(_os.path.join(d, "widths.json"), "w") as f:
        json.dump(cache, f)
    _os.environ[widths.CACHE_ENV] = d


AUTO_MULTIPLE = 16
_seed_widths_cache()


class TrustAnswers:
    """Answers for the GUI's trust dialog (gui/widgets/trust_dialog.py): ``queue`` holds True (Yes),
    False (No) or ``(answer, remember)``; ``asked`` records each dialog shown."""

    def __init__(self):
        self.queue, self.asked = [], []


@_pytest.fixture(autouse=True)
def trust_answers(monkeypatch):
    """In a process that imported Qt, the trust dialog answers from ``trust_answers.queue``; asked
    with the queue empty it fails the test at once instead of blocking on a modal dialog."""
    answers = TrustAnswers()
    if "PySide6" not in _sys.modules:
        return answers
    from PySide6.QtWidgets import QMessageBox
    from gui.widgets import trust_dialog

    def exec_(dlg):
        answers.asked.append(dlg)
        if not answers.queue:
            raise AssertionError("the trust dialog was shown but the test gave no answer: "
                                 + dlg.text().replace("\n", " "))
        a = answers.queue.pop(0)
        yes, remember = a if isinstance(a, tuple) else (a, False)
        dlg.remember.setChecked(remember)
        return QMessageBox.Yes if yes else QMessageBox.No

    monkeypatch.setattr(trust_dialog.TrustDialog, "exec", exec_)
    return answers


# --- GUI fixtures shared by the window tests (a test file may define its own to differ)

@_pytest.fixture
def errors(monkeypatch):
    """Record error dialogs instead of blocking on them."""
    from PySide6.QtWidgets import QMessageBox

    seen = []
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda *a, **k: seen.append(a[1:3])))
    return seen


@_pytest.fixture
def win(qtbot, errors, monkeypatch):
    """The main window on the demo model, with settings of its own (cleared after)."""
    import uuid

    from core.models.demo import DEMO_INPUT_SHAPE
    from gui.main_window import MainWindow

    monkeypatch.setenv("PRUNESTUDIO_SETTINGS_ORG", f"prunestudio-test-{uuid.uuid4().hex[:8]}")
    w = MainWindow()
    w.latency_runs = 1  # latency numbers are not under test; keep runs short
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    with qtbot.waitSignal(w.modelReady, timeout=60_000):
        w.open_model("demo", DEMO_INPUT_SHAPE)
    yield w
    w.settings.clear()
