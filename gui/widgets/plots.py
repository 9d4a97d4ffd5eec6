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
    kw = {"size": size} if size else {}
    w.setTitle(title, color=theme.color("charts.foreground"), **kw)
