"""What every controller shares: the widgets (a :class:`gui.widgets.workbench.Ui`), the loaded
session, settings, the one background task, logging and the dialogs that ask or warn.

The controllers do not know each other's internals; they meet here. The public signals are the
window's (it re-exposes them); sessionChanged, resultChanged and stateChanged are for the
controllers themselves.
"""
from __future__ import annotations

import logging
import os
import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox

from .. import applog
from ..widgets.trust_dialog import TrustDialog
from .tasks import TaskRunner

log = logging.getLogger("prunestudio.gui")
TRUSTED_KEY = "trust/hashes"  # sha256 of files the user ticked "remember" for


class Context(QObject):
    modelReady = Signal()  # a model is loaded, analysed and drawn
    pruneFinished = Signal(object)  # PruneResult
    taskFailed = Signal(str)
    taskCancelled = Signal()
    estimateReady = Signal(object)  # (params, flops)
    exportFinished = Signal(str)  # message
    projectRestored = Signal()
    sensitivityFinished = Signal(object)  # core.train.sensitivity.SensitivityResult
    evaluationFinished = Signal(object)  # (data name, EvalResult original, EvalResult pruned or None)

    sessionChanged = Signal(object)  # a new Session is shown (before modelReady): reset per-model state
    resultChanged = Signal(object)  # the session's PruneResult; None after undo
    stateChanged = Signal()  # busy / loaded / pruned may have changed: refresh enabled states
    settled = Signal()  # after a load's graph was painted: the replaced model was collected

    def __init__(self, ui, settings, parent=None):
        super().__init__(parent)
        self.ui = ui
        self.settings = settings
        self.session = None  # gui.jobs.session.Session
        # a new model's graph waits for its first paint, then the replaced model is collected
        # (settled); estimates wait for it too
        self.settling = False
        self.headless = False  # scripted runs: errors go to the log and the status bar, no dialogs
        self.log_file = applog.setup_file_logging()
        self.tasks = TaskRunner(self)

    @property
    def busy(self) -> bool:
        return self.tasks.task is not None

    def changed(self):
        self.stateChanged.emit()

    # ---------------------------------------------------------------------- messages
    def log(self, msg: str):
        log.info(msg)
        self.ui.logbox.appendPlainText(time.strftime("%H:%M:%S  ") + msg)

    def status(self, msg: str):
        self.ui.status_label.setText(msg)

    def show_error(self, title: str, msg: str):
        self.log(f"ERROR {title}: {msg}")
        self.status(f"{title}: {msg}")
        if not self.headless:
            QMessageBox.critical(self.ui.window, title, msg)

    def ask(self, title: str, text: str, default_yes: bool = False) -> bool:
        """A Yes/No question (modal)."""
        default = QMessageBox.Yes if default_yes else QMessageBox.No
        return QMessageBox.question(self.ui.window, title, text, QMessageBox.Yes | QMessageBox.No,
                                    default) == QMessageBox.Yes

    # ---------------------------------------------------------------------- consent to run code
    def remembered_hashes(self) -> set:
        v = self.settings.value(TRUSTED_KEY, [])
        return {v} if isinstance(v, str) else set(v or [])

    def consent(self, refs, action: str = "Opening this"):
        """A :class:`core.io.trust.TrustPolicy` allowing exactly ``refs`` (core.io.trust.CodeRef:
        what would run) once the user said Yes - or without asking when every file's content hash
        was remembered; None when the user said No (or, in a scripted run, could not be asked):
        then nothing may run. No code is needed: an empty policy."""
        from core.io.trust import TrustPolicy
        refs = list(refs)
        remembered = self.remembered_hashes()
        ask = [r for r in refs if r.sha256 not in remembered]
        if ask:
            names = ", ".join(f"{r.path} ({r.short})" for r in ask)
            if self.headless:
                self.log(f"not run (no one to ask in a scripted run): {names}")
                return None
            yes, remember = TrustDialog(self.ui.window, ask, action).ask()
            if not yes:
                self.log(f"not run, as you answered: {names}")
                self.status(f"nothing opened: {ask[0].path} was not trusted")
                return None
            if remember:
                self.settings.setValue(TRUSTED_KEY, sorted(remembered | {r.sha256 for r in ask}))
        return TrustPolicy(hashes={r.sha256 for r in refs})

    def confirm_overwrite(self, path: str) -> bool:
        """True if ``path`` may be written: it does not exist, or the user said to replace it."""
        if not os.path.exists(path):
            return True
        if self.headless:
            self.show_error("Export", f"{path} already exists; not overwritten")
            return False
        if not self.ask("Replace file?", f"{path} already exists. Replace it?"):
            self.log(f"kept the existing {path}")
            self.status(f"not exported: {path} exists")
            return False
        return True

    def exported(self, msg: str):
        """A file was written (model, report, image or project)."""
        self.log(msg)
        self.status(msg)
        self.exportFinished.emit(msg)
