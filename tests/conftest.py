"""Shared pytest set-up."""

# --- GUI tests (tests/test_gui.py): render offscreen unless a platform was chosen explicitly
import os as _os

_os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sys as _sys  # noqa: E402

import pytest as _pytest  # noqa: E402


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
