"""The window's one cancellable background task (load, analysis, pruning, export, sensitivity):
progress in the status bar, Cancel, and every failure reported in a dialog and the log file.

Only one runs at a time, so a user's model is never touched by two jobs at once; the estimate
and the evaluation run beside it as their own small tasks (see the prune and accuracy
controllers)."""
from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, Signal

from .. import applog
from ..jobs import worker

log = logging.getLogger("prunestudio.gui")


class TaskRunner(QObject):
    idle = Signal()  # the task ended (any outcome), before its result is handled

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ctx = ctx
        self.task: worker.Task | None = None
        self.cancel_pending = False
        self._on_done = None
        self._on_failed = None
        self._recover = None

    def run(self, name, fn, *args, on_done, on_failed=None, recover=None, with_callbacks=True,
            **kwargs) -> worker.Task | None:
        """Start ``fn(*args, **kwargs)`` on the worker; ``on_done(result)`` runs on the GUI thread,
        ``on_failed(task)`` after the error was shown. ``recover(task) -> bool``: asked first
        about a failure; True when it dealt with it (its own question), so no error dialog.
        None when another task is running."""
        ui = self.ctx.ui
        if self.task is not None:
            self.ctx.status("busy: cancel the running task first")
            return None
        t = worker.Task(name, fn, *args, with_callbacks=with_callbacks, **kwargs)
        t.progress.connect(self._on_progress)
        t.finished.connect(self._on_finished)
        t.failed.connect(self._on_failed_task)
        t.cancelled.connect(self._on_cancelled)
        self.task, self._on_done, self._on_failed, self._recover = t, on_done, on_failed, recover
        ui.progress.setRange(0, 0)
        ui.progress.setVisible(True)
        self._cancel_button(pending=False)
        ui.cancel_btn.setVisible(True)
        # one compute thread (gui.jobs.worker): a training run in its window goes first
        self.ctx.status(f"{name}: waiting for the training run to end" if worker.compute_busy()
                        else f"{name}…")
        self.ctx.changed()
        worker.start(t, lane="compute")
        return t

    def cancel(self) -> bool:
        """Ask the running task to stop; False when none runs."""
        if self.task is None:
            return False
        self.ctx.log(f"cancelling {self.task.name}…")
        self.task.cancel()
        self._cancel_button(pending=True)
        self.ctx.status(f"cancelling {self.task.name}…")
        return True

    def _cancel_button(self, pending: bool):
        """Cancel says "Cancelling…" and cannot be pressed again while a cancel is pending (the
        worker stops at its next check)."""
        btn = self.ctx.ui.cancel_btn
        btn.setEnabled(not pending)
        btn.setText("Cancelling…" if pending else "Cancel")
        self.cancel_pending = pending
        self.ctx.changed()  # the window's Cancel action follows (main_window._refresh_actions)

    def _on_progress(self, stage, done, total, message):
        ui = self.ctx.ui
        if total > 0:
            ui.progress.setRange(0, total)
            ui.progress.setValue(done)
        self.ctx.status(f"{stage}: {message}" if message else stage)
        if message:
            ui.logbox.appendPlainText(time.strftime("%H:%M:%S  ") + f"[{stage}] {message}")

    def _finish(self):
        ui = self.ctx.ui
        self.task, self._on_done, self._on_failed, self._recover = None, None, None, None
        ui.progress.setVisible(False)
        ui.cancel_btn.setVisible(False)
        self._cancel_button(pending=False)
        self.idle.emit()
        self.ctx.changed()

    def _on_finished(self, result):
        cb = self._on_done
        self._finish()  # free the window first: the callback's listeners may start the next task
        cb(result)

    def _on_failed_task(self, msg, tb):
        t, hook, recover = self.task, self._on_failed, self._recover
        name = t.name if t else "task"
        internal = bool(getattr(t, "internal", False))
        self._finish()
        if internal:  # a crash, not bad input: the traceback goes to the log file
            log.error("%s crashed: %s\n%s", name, msg, tb)
            applog.flush()
            where = self.ctx.log_file or "the log"
            msg = f"internal error: {msg}\n\nThe details were written to {where}."
        self.ctx.taskFailed.emit(msg)
        if not internal and recover is not None and t is not None and recover(t):
            return
        self.ctx.show_error(f"{name} failed", msg)
        if hook is not None and t is not None:
            hook(t)

    def _on_cancelled(self):
        self._finish()
        self.ctx.log("cancelled; the original model is unchanged")
        self.ctx.status("cancelled")
        self.ctx.taskCancelled.emit()
