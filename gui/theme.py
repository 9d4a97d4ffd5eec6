"""Colour themes: the palette (resources/themes/<name>.json), the stylesheet built from it
(resources/style.qss) and the icons (resources/icons/*.svg, drawn in the theme's icon colour).

Every colour the GUI paints comes from here, so a new theme is one JSON file with the same keys.
Files are read with importlib.resources: the package data works the same installed or not.
"""
from __future__ import annotations

import json
import string
from functools import lru_cache
from importlib import resources

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer

THEMES = ("light", "dark")
GROUP_SHADES = (100, 140, 72, 165, 58)  # group colours: the palette cycles through these shades
DEFAULT = "light"
ROLE_KEYS = {"out": "producer", "in": "consumer", "pass": "pass-through"}  # slot roles -> palette
ICON_SIZES = (16, 24, 32, 48)


def read_resource(*parts: str) -> str:
    """Text of a file in the ``resources`` package (e.g. ``read_resource("themes", "dark.json")``)."""
    return resources.files("resources").joinpath(*parts).read_text(encoding="utf-8")


def flatten(data: dict, prefix: str = "") -> dict:
    """{"ui": {"window": c}, "scale": [a, b]} -> {"ui_window": c, "scale_0": a, "scale_1": b}:
    the placeholder names of style.qss."""
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}".replace("-", "_")
        if isinstance(v, dict):
            out.update(flatten(v, key + "_"))
        elif isinstance(v, list):
            out.update({f"{key}_{i}": x for i, x in enumerate(v)})
        else:
            out[key] = v
    return out


class Theme:
    """One palette with the colour rules the widgets share (node kinds, overlay scale, roles)."""

    def __init__(self, data: dict):
        self.data = data
        self.name = data["name"]
        self._qcolors: dict = {}

    def color(self, key: str) -> str:
        """A colour by dotted key, e.g. ``"graph.background"`` or ``"charts.after"``."""
        v = self.data
        for part in key.split("."):
            v = v[int(part)] if isinstance(v, list) else v[part]
        return v

    def qcolor(self, key: str) -> QColor:
        c = self._qcolors.get(key)
        if c is None:
            c = self._qcolors[key] = QColor(self.color(key))
        return QColor(c)  # a copy: callers may darken it

    def node_colour(self, d: dict) -> QColor:
        """Fill of a graph node: by kind (input/output/op), layers by the op family they run."""
        nodes = self.data["nodes"]
        if d.get("kind") != "layer":
            return self.qcolor(f"nodes.{d.get('kind')}" if d.get("kind") in nodes else "nodes.op")
        op = d.get("op", "")
        for key in ("conv", "linear", "norm", "embedding"):
            if key in op:
                return self.qcolor(f"nodes.{key}")
        return self.qcolor("nodes.layer")

    def scale_colour(self, frac: float) -> QColor:
        """The overlay scale: 0 -> low (green), 0.5 -> middle (amber), 1 -> high (red)."""
        f = max(0.0, min(1.0, frac))
        stops = [self.qcolor(f"scale.{i}") for i in range(3)]
        lo, hi = (stops[0], stops[1]) if f <= 0.5 else (stops[1], stops[2])
        t = f * 2 if f <= 0.5 else f * 2 - 1
        return QColor(int(lo.red() + (hi.red() - lo.red()) * t),
                      int(lo.green() + (hi.green() - lo.green()) * t),
                      int(lo.blue() + (hi.blue() - lo.blue()) * t))

    def group_colour(self, gid: int) -> QColor:
        """A distinct colour per group, the one palette of the graph's colour-by-group and the
        group table's swatches: the theme's categorical colours, cycled with a lightness change
        and a small hue turn, so no two groups ever share a colour."""
        n = len(self.data["groups"])
        base = self.qcolor(f"groups.{gid % n}")
        level = gid // n
        if level == 0:
            return base
        shade = GROUP_SHADES[level % len(GROUP_SHADES)]
        c = base.lighter(shade) if shade >= 100 else base.darker(int(10000 / shade))
        h, s, v, a = c.getHsv()
        return QColor.fromHsv((max(h, 0) + 11 * level) % 360, s, v, a)

    def role_colour(self, role: str) -> QColor:
        """A group member's role: "out" producer, "in" consumer, "pass" pass-through."""
        return self.qcolor(f"roles.{ROLE_KEYS.get(role, 'pass-through')}")

    def stylesheet(self) -> str:
        """style.qss with its ${...} placeholders filled; a missing key is an error, not a
        silently unstyled widget."""
        return string.Template(read_resource("style.qss")).substitute(flatten(self.data))

    def palette(self) -> QPalette:
        ui = {k: QColor(v) for k, v in self.data["ui"].items()}
        p = QPalette()
        for role, key in ((QPalette.Window, "window"), (QPalette.WindowText, "text"),
                          (QPalette.Base, "panel"), (QPalette.AlternateBase, "alt_row"),
                          (QPalette.Text, "text"), (QPalette.Button, "button"),
                          (QPalette.ButtonText, "text"), (QPalette.BrightText, "error"),
                          (QPalette.Highlight, "selection"), (QPalette.HighlightedText, "selection_text"),
                          (QPalette.ToolTipBase, "tooltip"), (QPalette.ToolTipText, "tooltip_text"),
                          (QPalette.PlaceholderText, "muted"), (QPalette.Link, "link"),
                          (QPalette.Mid, "border"), (QPalette.Midlight, "hover")):
            p.setColor(role, ui[key])
        for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
            p.setColor(QPalette.Disabled, role, ui["muted"])
        return p

    def icon(self, name: str) -> QIcon:
        return _icon(self.name, name, self.data["ui"]["icon"])

    def group_swatch(self, gid: int) -> QIcon:
        """A small square in the group's colour (group table, group details)."""
        return _swatch(self.group_colour(gid).name(), self.data["ui"]["border"])


@lru_cache(maxsize=None)
def load(name: str) -> Theme:
    """The theme ``name`` (one of THEMES); an unknown name is a ValueError."""
    if name not in THEMES:
        raise ValueError(f"unknown theme {name!r} (themes: {', '.join(THEMES)})")
    return Theme(json.loads(read_resource("themes", f"{name}.json")))


@lru_cache(maxsize=None)
def _icon(theme_name: str, name: str, colour: str) -> QIcon:
    # SVGs draw in currentColor: render them in the theme's icon colour at a few sizes
    svg = read_resource("icons", f"{name}.svg").replace("currentColor", colour)
    renderer = QSvgRenderer(QByteArray(svg.encode("utf-8")))
    icon = QIcon()
    for size in ICON_SIZES:
        pm = QPixmap(size, size)
        pm.fill(Qt.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.Antialiasing)
        renderer.render(p, QRectF(0, 0, size, size))
        p.end()
        icon.addPixmap(pm)
    return icon


@lru_cache(maxsize=64)
def _swatch(fill: str, border: str, size: int = 12) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(Qt.transparent)
    p = QPainter(pm)
    p.setPen(QColor(border))
    p.setBrush(QColor(fill))
    p.drawRoundedRect(QRectF(0.5, 0.5, size - 1, size - 1), 2, 2)
    p.end()
    return QIcon(pm)


_current: Theme | None = None


def current() -> Theme:
    """The theme the application shows (light until :func:`apply` chose another)."""
    global _current
    if _current is None:
        _current = load(DEFAULT)
    return _current


def apply(app, name: str) -> Theme:
    """Make ``name`` the current theme and give ``app`` (a QApplication) its palette and
    stylesheet; widgets repaint their own items through their ``apply_theme``. Fusion draws
    every control from the palette (native styles ignore a dark one)."""
    global _current
    _current = load(name)
    if app is not None:
        if app.style().name().lower() != "fusion":
            app.setStyle("Fusion")
        app.setPalette(_current.palette())
        qss = _current.stylesheet()
        if app.styleSheet() != qss:  # a new stylesheet re-polishes every widget: only on change
            app.setStyleSheet(qss)
    return _current
