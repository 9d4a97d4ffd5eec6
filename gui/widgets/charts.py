"""Before/after charts (pyqtgraph) and a summary table of a core.pipeline.PruneResult."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QFrame, QGridLayout, QHeaderView, QLabel, QScrollArea, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from .. import theme as themes
from .block_latency import BlockLatencyChart
from .plots import RowScroll, set_title, style_plot
from .units import SIAxis, abbreviate_path, si, speed_text

TITLES = {"params": "params", "flops": "FLOPs", "latency": "latency"}
UNITS = {"params": "", "flops": "FLOPs", "latency": "ms"}
LAYERS_TITLE = "output channels per layer"


def _bar_plot(unit: str) -> pg.PlotWidget:
    w = pg.PlotWidget(axisItems={"left": SIAxis("left", unit)})
    w.setMenuEnabled(False)
    w.setMouseEnabled(False, False)
    w.hideButtons()
    w.getAxis("bottom").setTicks([[(0, "before"), (1, "after")]])
    w.setMinimumSize(210, 110)  # narrower clips the bars: the title and axis keep their width
    return w


class ChartsPanel(QWidget):
    LABEL_CHARS = 30  # per-layer names longer than this are elided in the middle (full on hover)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.theme = themes.current()
        self.plots = {k: _bar_plot(UNITS[k]) for k in TITLES}
        self.layers = pg.PlotWidget(viewBox=RowScroll(), axisItems={"bottom": SIAxis("bottom")})
        self.layers.setMenuEnabled(False)
        self.layers.hideButtons()
        self.layers.setMouseEnabled(x=False, y=True)  # the wheel scrolls through the layers
        self.layers.getViewBox().sigResized.connect(self._fit_rows)
        self.layers.scene().sigMouseMoved.connect(self._hover_layer)
        self.layer_ticks: list = []  # (row, label) the left axis shows
        self.blocks = BlockLatencyChart(self.theme)  # per-block latency before/after
        self._style()
        self.summary = QTableWidget(0, 2)
        self.summary.setHorizontalHeaderLabels(["metric", "value"])
        self.summary.verticalHeader().setVisible(False)
        self.summary.verticalHeader().setDefaultSectionSize(20)
        self.summary.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.placeholder = QLabel("Prune the model to see before/after numbers here.")
        self.placeholder.setAlignment(Qt.AlignCenter)
        # the charts scroll inside the panel, so a small (or 200 % scaled) screen gives the dock a
        # scroll bar instead of a minimum height that squeezes the graph
        inner = QWidget()
        inner.setMinimumSize(1280, 250)
        area = QScrollArea()
        area.setWidget(inner)
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.NoFrame)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(area)
        g = QGridLayout(inner)
        g.setContentsMargins(2, 2, 2, 2)
        # left: the three before/after bars over the summary; right: the per-layer chart and
        # the per-block latency
        g.addWidget(self.placeholder, 0, 0, 1, 4)
        for i, k in enumerate(("params", "flops", "latency")):
            g.addWidget(self.plots[k], 1, i)
        g.addWidget(self.summary, 2, 0, 1, 3)
        g.addWidget(self.layers, 1, 3, 2, 1)
        g.addWidget(self.blocks, 1, 4, 2, 1)
        g.setRowStretch(1, 3)
        g.setRowStretch(2, 2)
        for c in range(3):
            g.setColumnStretch(c, 1)
        g.setColumnStretch(3, 3)
        g.setColumnStretch(4, 3)
        self.values: dict = {}  # metric -> (before, after), what the bars show
        self.channels: dict = {}
        self.result = None
        self.evaluation = None  # (data name, EvalResult before, EvalResult after)

    def _style(self):
        for k, w in self.plots.items():
            style_plot(w, self.theme, TITLES[k])
        style_plot(self.layers, self.theme, LAYERS_TITLE)
        self.blocks.apply_theme(self.theme)

    def apply_theme(self, theme):
        """Restyle the plots and redraw the result in the new colours (evaluation rows kept)."""
        self.theme = theme
        result, evaluation = self.result, self.evaluation
        self._style()
        if result is not None:
            self.show_result(result)
            if evaluation:
                self.show_evaluation(*evaluation)

    def clear(self):
        for w in (*self.plots.values(), self.layers):
            w.clear()
        self.layers.getViewBox().fit_x = None
        self._style()
        self.blocks.clear_blocks()
        self.summary.setRowCount(0)
        self.values, self.channels = {}, {}
        self.result, self.evaluation = None, None
        self.placeholder.show()

    def show_evaluation(self, data_name: str, before, after):
        """Add top-1 / top-5 / loss rows (original → pruned, core.train.evaluate.EvalResult) to the
        summary, next to params, FLOPs and latency."""
        self.evaluation = (data_name, before, after)
        if self.result is not None:
            self._summary(self.result)

    def show_result(self, result):
        self.clear()
        self.result = result
        self.placeholder.hide()
        b, a = result.before, result.after
        before, after = self.theme.color("charts.before"), self.theme.color("charts.after")
        pen = pg.mkPen(self.theme.color("charts.outline"))
        self.values = {"params": (b.params, a.params), "flops": (b.flops, a.flops),
                       "latency": (b.latency_ms, a.latency_ms)}
        for k, (vb, va) in self.values.items():
            p = self.plots[k]
            if vb is None or va is None:
                set_title(p, f"{TITLES[k]}: not measured", self.theme)
                continue
            p.addItem(pg.BarGraphItem(x=[0, 1], height=[vb, va], width=0.6, brushes=[before, after],
                                      pen=pen))
            # short titles (they must fit a narrow plot): the values are on the axis and in the table
            if k == "latency":
                self._error_bars(p, b, a)
                title = f"latency: {speed_text(vb, va)}"
            else:
                title = f"{TITLES[k]}: {1 - va / vb:.0%} less" if vb else TITLES[k]
            set_title(p, title, self.theme, size="9pt")
        self._layers(result.channels)
        self.blocks.show_blocks(getattr(result, "blocks", None))
        self._summary(result)

    def _error_bars(self, plot, b, a):
        """Whiskers from the first to the third quartile of the timed runs, when the metrics have
        them (core.metrics.Metrics.latency_q1_ms / latency_q3_ms)."""
        qs = [(getattr(m, "latency_q1_ms", None), m.latency_ms, getattr(m, "latency_q3_ms", None))
              for m in (b, a)]
        if any(q1 is None or q3 is None for q1, _, q3 in qs):
            return
        # numpy arrays: with lists ErrorBarItem's boundingRect raises inside paint (a segfault)
        plot.addItem(pg.ErrorBarItem(x=np.array([0.0, 1.0]), y=np.array([m for _, m, _ in qs]),
                                     beam=0.2, bottom=np.array([m - q1 for q1, m, _ in qs]),
                                     top=np.array([q3 - m for _, m, q3 in qs]),
                                     pen=pg.mkPen(self.theme.color("charts.foreground"), width=1.5)))

    def _layers(self, channels: dict):
        self.channels = dict(channels)
        names = list(channels)
        ys = list(range(len(names)))
        orig = [channels[n][0] for n in names]
        kept = [channels[n][1] for n in names]
        before, after = self.theme.color("charts.before"), self.theme.color("charts.after")
        pen = pg.mkPen(self.theme.color("charts.outline"))
        # horizontal bars: one row per layer, names readable on the left axis
        self.layers.addItem(pg.BarGraphItem(x0=0, y=ys, height=0.8, width=orig, brush=before, pen=pen,
                                            name="original"))
        self.layers.addItem(pg.BarGraphItem(x0=0, y=ys, height=0.5, width=kept, brush=after, pen=pen,
                                            name="kept"))
        self.layer_ticks = [(i, abbreviate_path(n, lambda t: len(t) <= self.LABEL_CHARS))
                            for i, n in enumerate(names)]
        self.layers.getAxis("left").setTicks([self.layer_ticks])
        vb = self.layers.getViewBox()
        vb.invertY(True)
        vb.setLimits(yMin=-1, yMax=max(len(names), 1), xMin=0, xMax=max(orig + [1]) * 1.05)
        self.layers.setXRange(0, max(orig + [1]), padding=0.02)
        vb.fit_x = lambda y0, y1: max(orig[max(0, int(np.ceil(y0))):int(np.floor(y1)) + 1],
                                      default=0)
        self._fit_rows(top=-0.5)

    def _rows_fitting(self) -> int:
        """Rows the per-layer chart shows at once: one text line each, so labels never overlap."""
        row_px = self.layers.fontMetrics().height() + 4
        return max(3, int(self.layers.getViewBox().height() // row_px))

    def _fit_rows(self, *_, top=None):
        if not self.channels:
            return
        vb = self.layers.getViewBox()
        top = vb.viewRange()[1][0] if top is None else top
        fit = self._rows_fitting()
        vb.setYRange(top, top + min(len(self.channels), fit), padding=0)
        more = (f"<br><span style='font-size:8pt'>{len(self.channels)} layers: scroll for more</span>"
                if len(self.channels) > fit else "")
        set_title(self.layers, self._layers_title() + more, self.theme, size="9pt")

    def _layers_title(self) -> str:
        """The title with its colour key (a legend box covered the longest bars, and was cut)."""
        def sq(key):
            return f"<span style='color:{self.theme.color(key)}'>■</span>"
        return f"{LAYERS_TITLE}: {sq('charts.before')} original {sq('charts.after')} kept"

    def _hover_layer(self, pos):
        """The full name and counts of the layer under the mouse (the axis shows elided names)."""
        vb = self.layers.getViewBox()
        if not self.channels or not self.layers.sceneBoundingRect().contains(pos):
            return
        row = int(round(vb.mapSceneToView(pos).y()))
        names = list(self.channels)
        if 0 <= row < len(names):
            o, k = self.channels[names[row]]
            self.layers.setToolTip(f"{names[row]}\n{k} of {o} output channels kept ({o - k} removed)")

    def _summary(self, result):
        b, a = result.before, result.after
        rows = [("parameters", f"{si(b.params)} → {si(a.params)} ({b.params:,} → {a.params:,}, "
                               f"{1 - a.params / max(b.params, 1):.1%} less)"),
                ("FLOPs", f"{si(b.flops, 'FLOPs')} → {si(a.flops, 'FLOPs')} "
                          f"({1 - a.flops / max(b.flops, 1):.1%} less)")]
        if b.latency_ms and a.latency_ms:
            rows.append(("latency", f"{b.latency_ms:.2f} → {a.latency_ms:.2f} ms "
                                    f"({speed_text(b.latency_ms, a.latency_ms)})"))
        blocks = getattr(result, "blocks", None)
        if blocks is not None and blocks.blocks:
            rows.append(("latency per block", f"{len(blocks.blocks)} blocks, {self.blocks.subtitle()}: "
                                              f"{blocks.note}"))
        rows.append(("channels removed", f"{result.plan.n_removed:,}"))
        if result.verify is not None:
            rows.append(("verification", result.verify.message))
        excluded = getattr(result, "excluded", {}) or {}
        if excluded:
            rows.append(("left unpruned", f"{len(excluded)} group(s) changed the output when "
                                          f"removed: {', '.join(excluded)}"))
        rows.extend(evaluation_rows(*self.evaluation) if self.evaluation else [])
        rows.append(("time", f"{sum(result.seconds.values()):.2f} s"))
        self.summary.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            self.summary.setItem(i, 0, QTableWidgetItem(k))
            it = QTableWidgetItem(v)
            it.setToolTip(v)
            self.summary.setItem(i, 1, it)
        self.summary.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)


def evaluation_rows(data_name: str, before, after) -> list[tuple[str, str]]:
    """Summary rows for two core.train.evaluate.EvalResult (after may be None)."""
    rows = []
    on = f" ({data_name}, {before.samples} samples)" if data_name else ""
    for key, label in (("top1", "top-1"), ("top5", "top-5")):
        b = getattr(before, key)
        a = getattr(after, key) if after is not None else None
        if b is None:
            continue
        if a is None:
            rows.append((label + " accuracy", f"{b:.2%}{on}"))
        else:
            rows.append((label + " accuracy", f"{b:.2%} → {a:.2%} ({(a - b) * 100:+.1f} pts){on}"))
    if after is None:
        rows.append(("loss", f"{before.loss:.4f}{on}"))
    else:
        rows.append(("loss", f"{before.loss:.4f} → {after.loss:.4f} ({after.loss - before.loss:+.4f}){on}"))
    return rows
