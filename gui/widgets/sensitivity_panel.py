"""The Sensitivity tab: a bar chart of the loss change per group (most sensitive on top) and the
buttons that turn it into per-group ratios or show it on the graph."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .. import theme as themes
from ..jobs.accuracy import group_scores
from .plots import style_plot

TITLE = "validation loss change per group (mean over ratios)"


class SensitivityPanel(QWidget):
    """Shows a :class:`core.train.sensitivity.SensitivityResult`."""

    useForRatios = Signal(float)  # mean ratio
    showOnGraph = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.theme = themes.current()
        self.result = None
        self.data_name = ""
        self.order: list[int] = []  # group ids, top bar first
        self.bars = None
        self.header = QLabel("Prune > Sensitivity… measures how much the validation loss rises when "
                             "each group alone is pruned.")
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.RichText)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "loss increase")
        self.plot.showGrid(x=True, y=False, alpha=0.3)
        style_plot(self.plot, self.theme, TITLE)
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

    def apply_theme(self, theme):
        self.theme = theme
        style_plot(self.plot, theme, TITLE)
        if self.result is not None:
            self.show_result(self.result, self.data_name)

    def clear(self):
        self.plot.clear()
        self.result, self.order, self.bars = None, [], None
        self.use_btn.setEnabled(False)
        self.graph_btn.setEnabled(False)

    def show_result(self, result, data_name: str = ""):
        self.plot.clear()
        self.result, self.data_name = result, data_name
        gs = sorted(result.groups, key=lambda g: g.score, reverse=True)
        self.order = [g.gid for g in gs]
        norm = group_scores(result)
        ys = list(range(len(gs)))
        widths = [g.score for g in gs]
        brushes = [self.theme.scale_colour(norm[g.gid]) for g in gs]
        self.bars = pg.BarGraphItem(x0=0, y=ys, height=0.7, width=widths, brushes=brushes,
                                    pen=pg.mkPen(self.theme.color("charts.outline")))
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
