"""Training view: sparse learning / fine-tuning with live curves, off the GUI thread.

The main window hands over what to train with :meth:`TrainingView.set_inputs(model, dg, data)`
(``data``: a :class:`core.train.data.Data`, or a spec such as ``"digits"``). The run happens on the
window's compute thread (gui/jobs/training.py, gui/jobs/worker.py); batch losses are throttled to a few updates per
second, epoch records (validation loss, accuracy, group sparsity) arrive once per epoch. Pause, resume and cancel are
flags the core loop polls between batches. The original model is never modified; the trained
copy is in :attr:`TrainingView.result` (a :class:`core.train.loop.TrainResult`) once ``finished`` fires.
"""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout,
                               QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from .. import theme as themes
from ..jobs.training import TrainWorker
from ..jobs.worker import compute_busy, run_on_compute_lane
from .plots import style_plot

# curve (also its colour key in the theme's "charts") -> (line width, drawn with markers)
CURVES = {"batch_loss": (1, False), "train_loss": (2, True), "val_loss": (2, True),
          "top1": (2, True), "top5": (2, True), "sparsity": (2, True)}
PLOT_TITLES = {"loss_plot": "loss", "acc_plot": "validation accuracy", "sp_plot": "group sparsity"}


class TrainingView(QWidget):
    finished = Signal(object)  # TrainResult
    failed = Signal(str)
    cancelled = Signal()
    stateChanged = Signal(str)  # idle | running | paused

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = self.dg = self.data = None
        self.result = None
        self.worker: TrainWorker | None = None
        self.state = "idle"
        self._build()
        self._set_state("idle")

    # ------------------------------------------------------------------ layout
    def _build(self):
        self.mode = QComboBox()
        self.mode.addItems(["fine-tune", "sparse learning"])
        self.epochs = QSpinBox(minimum=1, maximum=10000, value=3)
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=10.0, singleStep=0.01, value=0.01)
        self.lam = QDoubleSpinBox(decimals=5, minimum=0.0, maximum=10.0, singleStep=0.001, value=0.003)
        self.batch = QSpinBox(minimum=1, maximum=65536, value=64)
        self.distill = QCheckBox("distil from the original")
        self.checkpoint = None  # folder; set by the owner if wanted
        form = QFormLayout()
        form.addRow("mode", self.mode)
        form.addRow("epochs", self.epochs)
        form.addRow("learning rate", self.lr)
        form.addRow("sparsity λ", self.lam)
        form.addRow("", self.distill)
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.cancel_btn = QPushButton("Cancel")
        self.start_btn.clicked.connect(self.start)
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.cancel_btn.clicked.connect(self.cancel)
        btns = QHBoxLayout()
        for b in (self.start_btn, self.pause_btn, self.cancel_btn):
            btns.addWidget(b)
        self.status = QLabel("no model")
        left = QVBoxLayout()
        left.addLayout(form)
        left.addLayout(btns)
        left.addWidget(self.status)
        left.addStretch(1)

        self.loss_plot = pg.PlotWidget()
        self.loss_plot.addLegend(offset=(-10, 10))
        self.acc_plot = pg.PlotWidget()
        self.acc_plot.addLegend(offset=(-10, 10))
        self.sp_plot = pg.PlotWidget()
        for p, lab in ((self.loss_plot, "epoch"), (self.acc_plot, "epoch"), (self.sp_plot, "epoch")):
            p.setLabel("bottom", lab)
            p.showGrid(x=True, y=True, alpha=0.3)
        marks = {"symbol": "o", "symbolSize": 5}
        self.curves = {
            "batch_loss": self.loss_plot.plot(name="batch"),
            "train_loss": self.loss_plot.plot(name="train", **marks),
            "val_loss": self.loss_plot.plot(name="val", **marks),
            "top1": self.acc_plot.plot(name="top-1", **marks),
            "top5": self.acc_plot.plot(name="top-5", **marks),
            "sparsity": self.sp_plot.plot(**marks),
        }
        self.apply_theme(themes.current())
        self.points = {k: ([], []) for k in self.curves}
        grid = QGridLayout()
        grid.addWidget(self.loss_plot, 0, 0)
        grid.addWidget(self.acc_plot, 0, 1)
        grid.addWidget(self.sp_plot, 1, 0, 1, 2)
        lay = QHBoxLayout(self)
        lay.addLayout(left, 0)
        lay.addLayout(grid, 1)

    def apply_theme(self, theme):
        for attr, title in PLOT_TITLES.items():
            style_plot(getattr(self, attr), theme, title)
        for key, (width, marked) in CURVES.items():
            colour = theme.color(f"charts.{key}")
            self.curves[key].setPen(pg.mkPen(colour, width=width))
            if marked:
                self.curves[key].setSymbolBrush(colour)
                self.curves[key].setSymbolPen(colour)

    # ------------------------------------------------------------------ inputs
    def set_inputs(self, model, dg, data):
        """What to train: the model (never modified), its dependency graph (for sparse learning
        and the sparsity curve) and a core.train.data.Data or a data spec ('digits', a folder, ...)."""
        if isinstance(data, str):
            from core.train.data import load_data
            data = load_data(data, batch_size=self.batch.value())
        self.model, self.dg, self.data = model, dg, data
        self.status.setText(f"ready: {getattr(data, 'name', 'data')}")
        self._set_state("idle")

    def config(self):
        from core.train.loop import TrainConfig
        sparse = self.mode.currentText() == "sparse learning"
        return TrainConfig(epochs=self.epochs.value(), lr=self.lr.value(),
                           sparse_lambda=self.lam.value() if sparse else 0.0,
                           checkpoint_dir=self.checkpoint)

    # ------------------------------------------------------------------ control
    def _set_state(self, s):
        self.state = s
        ready = self.model is not None and self.data is not None
        self.start_btn.setEnabled(ready and s == "idle")
        self.pause_btn.setEnabled(s in ("running", "paused"))
        self.pause_btn.setText("Resume" if s == "paused" else "Pause")
        self.cancel_btn.setEnabled(s in ("running", "paused"))
        self.stateChanged.emit(s)

    def clear(self):
        for k, c in self.curves.items():
            self.points[k] = ([], [])
            c.setData([], [])

    def start(self, config=None):
        if self.model is None or self.data is None:
            self.status.setText("no model or data to train")
            return False
        if self.state != "idle":
            return False
        cfg = config or self.config()
        self.clear()
        self.result = None
        teacher = self.model if self.distill.isChecked() else None
        self.worker = TrainWorker(self.model, self.data, cfg, self.dg, teacher)
        self.worker.batch.connect(self._on_batch)
        self.worker.epoch.connect(self._on_epoch)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.worker.cancelled.connect(self._on_cancelled)
        self._epochs = cfg.epochs
        # the window's compute thread runs one job at a time (gui.jobs.worker)
        self.status.setText("waiting for the main window's task to end…" if compute_busy()
                            else "training…")
        run_on_compute_lane(self.worker.run)
        self._set_state("running")
        return True

    def toggle_pause(self):
        if self.worker is None:
            return
        if self.state == "running":
            self.worker.set_paused(True)
            self.status.setText("paused")
            self._set_state("paused")
        elif self.state == "paused":
            self.resume()

    def pause(self):
        if self.state == "running":
            self.toggle_pause()

    def resume(self):
        if self.worker is not None and self.state == "paused":
            self.worker.set_paused(False)
            self.status.setText("training…")
            self._set_state("running")

    def cancel(self):
        if self.worker is not None and self.state in ("running", "paused"):
            self.worker.cancel()
            self.worker.set_paused(False)
            self.status.setText("cancelling…")

    # ------------------------------------------------------------------ slots
    def _add(self, key, x, y):
        if y is None:
            return
        xs, ys = self.points[key]
        xs.append(x)
        ys.append(y)
        self.curves[key].setData(xs, ys)

    @Slot(int, int, float)
    def _on_batch(self, step, total, loss):
        if self.status.text().startswith("waiting"):  # it was queued behind the window's task
            self.status.setText("training…")
        self._add("batch_loss", step / max(total, 1) * self._epochs, loss)

    @Slot(dict)
    def _on_epoch(self, rec):
        e = rec["epoch"]
        for k in ("train_loss", "val_loss", "top1", "top5", "sparsity"):
            self._add(k, e, rec.get(k))
        acc = f", top-1 {rec['top1']:.2%}" if rec.get("top1") is not None else ""
        self.status.setText(f"epoch {e}/{self._epochs}: loss {rec['train_loss']:.4f}{acc}")

    def _done(self):
        if self.worker is not None:
            self.worker.ended.wait(5)  # its last signal came just before run returned
        self.worker = None
        self._set_state("idle")

    def _on_finished(self, res):
        self.result = res
        self._done()
        acc = f": top-1 {res.final.top1:.2%}" if res.final is not None and res.final.top1 is not None else ""
        self.status.setText(f"finished{acc}")
        self.finished.emit(res)

    def _on_failed(self, msg):
        self._done()
        self.status.setText(f"failed: {msg}")
        self.failed.emit(msg)

    def _on_cancelled(self):
        self._done()
        self.status.setText("cancelled")
        self.cancelled.emit()

    def shutdown(self):
        """Cancel a run and wait for it to end (call from the window's closeEvent)."""
        if self.worker is not None:
            self.worker.cancel()
            self.worker.set_paused(False)
            self.worker.ended.wait(10)
