"""The training run on the window's compute thread (gui.jobs.worker.run_on_compute_lane: one
OpenMP team in the process): core.train.loop.train with pause/cancel flags and throttled batch
losses (the GUI shows at most a few updates per second). QtCore only."""
from __future__ import annotations

import logging
import threading
import time
import traceback

from PySide6.QtCore import QObject, Signal, Slot

from core.errors import Cancelled

UPDATE_INTERVAL_S = 0.25  # batch-loss updates reaching the GUI: at most ~4 per second
log = logging.getLogger("prunestudio.gui")


class TrainWorker(QObject):
    batch = Signal(int, int, float)  # step, total steps, loss
    epoch = Signal(dict)
    progress = Signal(str, int, int, str)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, model, data, config, dg, teacher):
        super().__init__()
        self.model, self.data, self.config, self.dg, self.teacher = model, data, config, dg, teacher
        self._stop = threading.Event()
        self._pause = threading.Event()
        self.ended = threading.Event()  # set when run returns, whatever the outcome
        self._last = 0.0

    def cancel(self):
        self._stop.set()

    def set_paused(self, on: bool):
        (self._pause.set if on else self._pause.clear)()

    def _emit(self, signal, *args):
        """Tell the GUI thread, unless its side is gone: a run still going when the window closes
        and the process ends outlives this worker's Qt object (as in gui.jobs.worker)."""
        try:
            signal.emit(*args)
        except RuntimeError:  # "Signal source has been deleted"
            log.info("training ended after its window closed")

    def _on_batch(self, step, total, loss):
        now = time.monotonic()
        if now - self._last >= UPDATE_INTERVAL_S or step == total:
            self._last = now
            self._emit(self.batch, step, total, loss)

    @Slot()
    def run(self):
        from core.train.loop import train
        try:
            res = train(self.model, self.data, self.config, teacher=self.teacher, dg=self.dg,
                        should_stop=self._stop.is_set, paused=self._pause.is_set,
                        on_epoch=lambda row: self._emit(self.epoch, row), on_batch=self._on_batch,
                        progress=lambda s, d, t, m="": None)
            self._emit(self.finished, res)
        except Cancelled:
            self._emit(self.cancelled)
        except Exception as e:  # noqa: BLE001
            from core.errors import PruneStudioError
            msg = " ".join(str(e).split()) or type(e).__name__
            self._emit(self.failed, msg if isinstance(e, PruneStudioError) else f"{type(e).__name__}: {msg}")
            traceback.print_exc()
        finally:
            self.ended.set()
