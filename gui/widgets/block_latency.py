"""Per-block latency before/after (core.metrics.blocks.BlockLatency) as horizontal grouped bars:
one row per block in model order, the original above the pruned model, whiskers from the first to
the third quartile, SI time units; as many rows as fit are shown at once and the wheel scrolls
(a 32-layer Llama has 36 rows)."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from .plots import RowScroll, set_title, style_plot
from .units import SIAxis, abbreviate_path, duration_ms, speed_text

TITLE = "latency per block"
BAR = 0.38  # each model's bar height in a row of height 1


class BlockLatencyChart(pg.PlotWidget):
    LABEL_CHARS = 24  # block names longer than this are shortened (full name on hover)

    def __init__(self, theme, parent=None):
        super().__init__(parent, viewBox=RowScroll(), axisItems={"bottom": SIAxis("bottom", "ms")})
        self.theme = theme
        self.setMenuEnabled(False)
        self.hideButtons()
        self.setMouseEnabled(x=False, y=True)  # the wheel scrolls through the blocks
        self.getViewBox().invertY(True)
        self.getViewBox().sigResized.connect(self._fit_rows)
        self.scene().sigMouseMoved.connect(self._hover)
        self.setMinimumSize(240, 110)
        self.result = None  # the BlockLatency shown
        self.rows: list = []  # its BlockTiming, one per row
        self.ticks: list = []  # (row, label) on the left axis
        style_plot(self, theme, TITLE, size="9pt")

    def apply_theme(self, theme):
        self.theme = theme
        self.show_blocks(self.result)

    def clear_blocks(self):
        self.clear()
        self.getViewBox().fit_x = None
        self.result, self.rows, self.ticks = None, [], []
        self.getAxis("left").setTicks(None)
        style_plot(self, self.theme, TITLE, size="9pt")

    def show_blocks(self, result):
        """Draw ``result`` (a BlockLatency; None: say it was not measured)."""
        self.clear_blocks()
        self.result = result
        rows = [b for b in (result.blocks if result is not None else []) if b.before is not None]
        if not rows:
            set_title(self, "latency per block: not measured", self.theme, size="9pt")
            return
        self.rows = rows
        th = self.theme
        before, after = th.color("charts.before"), th.color("charts.after")
        pen = pg.mkPen(th.color("charts.outline"))
        ys = np.arange(len(rows), dtype=float)
        both = [b for b in rows if b.after is not None]
        yb = ys - BAR / 2
        self.addItem(pg.BarGraphItem(x0=0, y=yb, height=BAR, width=[b.before.median_ms for b in rows],
                                     brush=before, pen=pen))
        self._whiskers(yb, [b.before for b in rows])
        if both:
            ya = np.array([i + BAR / 2 for i, b in enumerate(rows) if b.after is not None])
            self.addItem(pg.BarGraphItem(x0=0, y=ya, height=BAR, width=[b.after.median_ms for b in both],
                                         brush=after, pen=pen))
            self._whiskers(ya, [b.after for b in both])
        self.ticks = [(i, abbreviate_path(b.name, lambda t: len(t) <= self.LABEL_CHARS))
                      for i, b in enumerate(rows)]
        self.getAxis("left").setTicks([self.ticks])
        x_max = max(max(t.q3_ms for t in (b.before, b.after) if t is not None) for b in rows) or 1.0
        vb = self.getViewBox()
        vb.setLimits(yMin=-0.5, yMax=len(rows) - 0.5, xMin=0, xMax=x_max * 1.1)
        self.setXRange(0, x_max, padding=0.02)
        vb.fit_x = self._x_for_rows
        self._fit_rows(top=-0.5)

    def _x_for_rows(self, y0: float, y1: float) -> float:
        """The widest whisker among the rows between ``y0`` and ``y1``."""
        lo, hi = max(0, int(np.ceil(y0))), min(len(self.rows), int(np.floor(y1)) + 1)
        return max((t.q3_ms for b in self.rows[lo:hi] for t in (b.before, b.after)
                    if t is not None), default=0.0)

    def _whiskers(self, ys, timings):
        med = np.array([t.median_ms for t in timings])
        # numpy arrays: with lists ErrorBarItem's boundingRect raises inside paint (a segfault)
        self.addItem(pg.ErrorBarItem(x=med, y=np.asarray(ys, dtype=float), beam=BAR * 0.6,
                                     left=med - np.array([t.q1_ms for t in timings]),
                                     right=np.array([t.q3_ms for t in timings]) - med,
                                     pen=pg.mkPen(self.theme.color("charts.foreground"), width=1.2)))

    def subtitle(self) -> str:
        """Where and how it was measured: device, threads, runs."""
        r = self.result
        return (f"{r.device} · {r.threads} thread{'s' * (r.threads != 1)} · {r.runs} interleaved "
                f"run{'s' * (r.runs != 1)} · median, IQR") if r is not None else ""

    def _key(self) -> str:
        """The colour key as text in the title (a legend box would cover the longest bars)."""
        def sq(key):
            return f"<span style='color:{self.theme.color(key)}'>■</span>"
        return f"{sq('charts.before')} original {sq('charts.after')} pruned"

    def rows_fitting(self) -> int:
        """Rows shown at once: one text line each, so the names never overlap."""
        row_px = self.fontMetrics().height() + 6
        return max(3, int(self.getViewBox().height() // row_px))

    def _fit_rows(self, *_, top=None):
        if not self.rows:
            return
        vb = self.getViewBox()
        top = vb.viewRange()[1][0] if top is None else top
        fit = self.rows_fitting()
        vb.setYRange(top, top + min(len(self.rows), fit), padding=0)
        more = f"<br>{len(self.rows)} blocks: scroll for more" if len(self.rows) > fit else ""
        set_title(self, f"{TITLE}: {self._key()}<br><span style='font-size:8pt'>{self.subtitle()}"
                        f"{more}</span>", self.theme, size="9pt")

    def row_text(self, i: int) -> str:
        """The full name and figures of row ``i`` (the tooltip)."""
        b = self.rows[i]

        def fig(t):
            return f"{duration_ms(t.median_ms)} (IQR {duration_ms(t.q1_ms)} – {duration_ms(t.q3_ms)})"
        lines = [b.name + (f" (runs {b.calls}× per pass, summed)" if b.calls > 1 else ""),
                 f"original: {fig(b.before)}"]
        if b.after is not None:
            lines += [f"pruned: {fig(b.after)}", speed_text(b.before.median_ms, b.after.median_ms)]
        lines.append(f"{self.subtitle()}; {self.result.note}")
        return "\n".join(lines)

    def _hover(self, pos):
        if not self.rows or not self.sceneBoundingRect().contains(pos):
            return
        row = int(round(self.getViewBox().mapSceneToView(pos).y()))
        if 0 <= row < len(self.rows):
            self.setToolTip(self.row_text(row))
