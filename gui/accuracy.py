"""Accuracy in the window: choose a dataset, per-group sensitivity (chart + graph overlay +
"Use for ratios"), and evaluation of the original and the pruned model.

The worker-side functions (``run_sensitivity``, ``evaluate_models``) call core/ only and run on
the window's background worker; :class:`SensitivityPanel` is the bottom-dock tab that shows a
:class:`core.train.sensitivity.SensitivityResult`.
"""
from __future__ import annotations

import os

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QDoubleSpinBox, QFileDialog, QHBoxLayout, QInputDialog, QLabel,
                               QPushButton, QVBoxLayout, QWidget)

from .graph_view import removed_colour

DIGITS_CHOICE = "built-in digits (resized to the model's input)"
FOLDER_CHOICE = "image folder (one sub-folder per class)…"
FACTORY_CHOICE = "Python file: file.py:factory returning a Dataset or DataLoader…"


# ----------------------------------------------------------------------------- data choice

def input_chw(session) -> tuple | None:
    """(C, H, W) of the session's first example input when it is an image batch, else None."""
    args = getattr(session.inputs, "args", None) or ()
    shape = tuple(args[0].shape) if args and hasattr(args[0], "shape") else ()
    return shape[1:] if len(shape) == 4 else None


def default_data_spec(session) -> str:
    """The built-in digits, resized to the model's example input (like the training view)."""
    chw = input_chw(session) if session is not None else None
    if chw and chw[0] in (1, 3) and chw[1] == chw[2] and 4 <= chw[1] <= 512:
        return f"digits@{chw[1]}x{chw[0]}"
    return "digits"


def choose_data(parent, session, last: str | None = None) -> str | None:
    """Ask which data to use: the built-in digits, an image folder or file.py:factory.
    Returns a core.train.data spec, or None when the user cancelled."""
    items = [DIGITS_CHOICE, FOLDER_CHOICE, FACTORY_CHOICE]
    if last and not last.startswith("digits"):
        items.insert(0, f"last used: {last}")
    choice, ok = QInputDialog.getItem(parent, "Data", "Evaluate on:", items, 0, False)
    if not ok:
        return None
    if choice.startswith("last used: "):
        return last
    if choice == DIGITS_CHOICE:
        return default_data_spec(session)
    if choice == FOLDER_CHOICE:
        path = QFileDialog.getExistingDirectory(parent, "Image folder (one sub-folder per class)")
        return path or None
    path, _ = QFileDialog.getOpenFileName(parent, "Dataset factory", "", "Python (*.py)")
    if not path:
        return None
    name, ok = QInputDialog.getText(parent, "Dataset factory",
                                    f"Function in {os.path.basename(path)} that returns the "
                                    "Dataset, DataLoader or (train, val):", text="make_dataset")
    if not ok or not name.strip():
        return None
    return f"{path}:{name.strip()}"


def load_for(spec, session, batch_size: int = 64):
    """core.train.data.Data for ``spec`` (a Data passes through); image folders are resized to the
    model's input size."""
    from core.train.data import Data, load_data
    if isinstance(spec, Data):
        return spec
    chw = input_chw(session)
    size = int(chw[1]) if chw else 32
    return load_data(spec, batch_size=batch_size, image_size=size)


def _device_of(model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else "cpu"


# ----------------------------------------------------------------------------- worker side

def run_sensitivity(session, spec, ratios=(0.25, 0.5, 0.75), max_batches=None, importance="l2",
                    progress=None, should_stop=None):
    """Worker: load the data, then core.train.sensitivity.group_sensitivity on the original model.
    Returns ``(Data, SensitivityResult)``."""
    from core.errors import LoadError
    from core.train.sensitivity import group_sensitivity
    if progress:
        progress("data", 0, 1, f"loading {getattr(spec, 'name', spec)}")
    data = load_for(spec, session)
    loader = data.val_loader()
    if loader is None:
        raise LoadError(f"data {data.name} has no validation set to measure the loss on")
    res = group_sensitivity(session.model, session.dg, loader, ratios=ratios, importance=importance,
                            device=_device_of(session.model), max_batches=max_batches,
                            progress=progress, should_stop=should_stop)
    return data, res


def evaluate_models(session, spec, pruned=None, max_batches=None, progress=None, should_stop=None):
    """Worker: evaluate the original and (when given) the pruned model on the validation set.
    Returns ``(Data, EvalResult before, EvalResult after or None)``."""
    from core.errors import LoadError
    from core.train.evaluate import evaluate
    data = load_for(spec, session)
    loader = data.val_loader()
    if loader is None:
        raise LoadError(f"data {data.name} has no validation set to evaluate on")

    def prog(what):
        return (lambda s, d, t, m="": progress("evaluate", d, t, f"{what}: {m}")) if progress else None

    before = evaluate(session.model, loader, device=_device_of(session.model), max_batches=max_batches,
                      progress=prog("original"), should_stop=should_stop)
    after = None
    if pruned is not None:
        after = evaluate(pruned, loader, device=_device_of(pruned), max_batches=max_batches,
                         progress=prog("pruned"), should_stop=should_stop)
    return data, before, after


# ----------------------------------------------------------------------------- overlay

def group_scores(result) -> dict:
    """{group id: score normalised to [0, 1]} (0 = least sensitive, 1 = most)."""
    scores = {g.gid: g.score for g in result.groups}
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {gid: ((s - lo) / span if span > 0 else 0.0) for gid, s in scores.items()}


def sensitivity_overlay(session, result) -> dict:
    """{graph node: normalised sensitivity} for the nodes of each measured group (a node in
    several groups takes the most sensitive)."""
    norm = group_scores(result)
    out: dict = {}
    for gid, v in norm.items():
        for n in session.dg.groups[gid].nodes:
            out[n] = max(out.get(n, 0.0), v)
    return out


# ----------------------------------------------------------------------------- panel

class SensitivityPanel(QWidget):
    """Bar chart of the loss change per group (sorted, most sensitive on top) and the buttons
    that turn it into per-group ratios or show it on the graph."""

    useForRatios = Signal(float)  # mean ratio
    showOnGraph = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.result = None
        self.order: list[int] = []  # group ids, top bar first
        self.bars = None
        self.header = QLabel("Prune > Sensitivity… measures how much the validation loss rises when "
                             "each group alone is pruned.")
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.RichText)
        self.plot = pg.PlotWidget(title="validation loss change per group (mean over ratios)")
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "loss increase")
        self.plot.showGrid(x=True, y=False, alpha=0.3)
        self.mean_ratio = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=0.9, singleStep=0.05, value=0.5)
        self.mean_ratio.setToolTip("average ratio: the least sensitive groups get up to twice it, "
                                   "the most sensitive close to none")
        self.use_btn = QPushButton("Use for ratios")
        self.use_btn.setToolTip("set per-group ratios in the targets panel: insensitive groups are "
                                "pruned more")
        self.graph_btn = QPushButton("Show on graph")
        self.use_btn.setEnabled(False)
        self.graph_btn.setEnabled(False)
        self.use_btn.clicked.connect(lambda: self.useForRatios.emit(self.mean_ratio.value()))
        self.graph_btn.clicked.connect(self.showOnGraph)
        row = QHBoxLayout()
        row.addWidget(QLabel("mean ratio"))
        row.addWidget(self.mean_ratio)
        row.addWidget(self.use_btn)
        row.addWidget(self.graph_btn)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.header)
        lay.addLayout(row)
        lay.addWidget(self.plot, 1)

    def clear(self):
        self.plot.clear()
        self.result, self.order, self.bars = None, [], None
        self.use_btn.setEnabled(False)
        self.graph_btn.setEnabled(False)

    def show_result(self, result, data_name: str = ""):
        self.plot.clear()
        self.result = result
        gs = sorted(result.groups, key=lambda g: g.score, reverse=True)
        self.order = [g.gid for g in gs]
        norm = group_scores(result)
        ys = list(range(len(gs)))
        widths = [g.score for g in gs]
        brushes = [removed_colour(norm[g.gid]) for g in gs]
        self.bars = pg.BarGraphItem(x0=0, y=ys, height=0.7, width=widths, brushes=brushes,
                                    pen=pg.mkPen("#6c757d"))
        self.plot.addItem(self.bars)
        self.plot.getAxis("left").setTicks([[(i, f"#{g.gid} {g.root}") for i, g in enumerate(gs)]])
        vb = self.plot.getViewBox()
        vb.invertY(True)
        vb.setLimits(yMin=-1, yMax=max(len(gs), 1))
        self.plot.setYRange(-0.5, min(len(gs), 14) - 0.5, padding=0)
        lo, hi = min(widths + [0.0]), max(widths + [0.0])
        self.plot.setXRange(lo, hi if hi > lo else lo + 1e-3, padding=0.05)
        top1 = f", top-1 {result.base_top1:.1%}" if result.base_top1 is not None else ""
        self.header.setText(
            f"<b>{len(gs)} groups</b> on {data_name or 'the data'}: base loss {result.base_loss:.4f}"
            f"{top1}; each group pruned alone at {', '.join(f'{r:.0%}' for r in result.ratios)}. "
            f"Most sensitive on top (red), least at the bottom (green).")
        self.use_btn.setEnabled(bool(gs))
        self.graph_btn.setEnabled(bool(gs))

    def bar_values(self) -> list[float]:
        """The bar lengths as drawn, top first (for tests and reports)."""
        if self.bars is None:
            return []
        return [float(w) for w in self.bars.opts["width"]]
