"""pyqtgraph plots in the theme's chart colours (background, axes, titles, legends)."""
from __future__ import annotations

import pyqtgraph as pg

pg.setConfigOptions(antialias=True)


def style_plot(w: pg.PlotWidget, theme, title: str | None = None, size: str | None = None):
    """Colour ``w`` from ``theme``; ``title`` (re)sets the title in the foreground colour."""
    fg = theme.color("charts.foreground")
    w.setBackground(theme.color("charts.background"))
    for side in ("left", "bottom", "top", "right"):
        ax = w.getAxis(side)
        ax.setPen(fg)
        ax.setTextPen(fg)
    legend = w.plotItem.legend
    if legend is not None:
        legend.setLabelTextColor(fg)
    if title is not None:
        set_title(w, title, theme, size)


def set_title(w: pg.PlotWidget, title: str, theme, size: str | None = None):
    """``title`` (HTML, lines split by ``<br>``) in the foreground colour, its row as tall as the
    text: pyqtgraph gives every title one 30 px row, which cuts a third line off the top."""
    kw = {"size": size} if size else {}
    w.setTitle(title, color=theme.color("charts.foreground"), **kw)
    label = w.plotItem.titleLabel
    h = max(30.0, label.item.boundingRect().height() + 2)
    label.setMaximumHeight(h)
    w.plotItem.layout.setRowFixedHeight(0, h)


class RowScroll(pg.ViewBox):
    """A horizontal bar chart's rows: the wheel scrolls them (three a notch) instead of zooming,
    so each keeps one text line; ``fit_x(y0, y1)``, when set, gives the x range for the rows
    shown (the widest of them sets the scale, not the widest of all)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.fit_x = None
        self.sigYRangeChanged.connect(self._fit_x)

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - pyqtgraph's name
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        self.scroll_rows(-3 if delta > 0 else 3)
        ev.accept()

    def scroll_rows(self, n: float):
        (y0, y1), (lo, hi) = self.viewRange()[1], self.state["limits"]["yLimits"]
        step = max(min(n, (hi if hi is not None else y1) - y1), (lo if lo is not None else y0) - y0)
        if step:
            self.setYRange(y0 + step, y1 + step, padding=0)

    def _fit_x(self, *_):
        if self.fit_x is not None:
            x1 = self.fit_x(*self.viewRange()[1])
            if x1 > 0:
                self.setXRange(0, x1, padding=0.02)
