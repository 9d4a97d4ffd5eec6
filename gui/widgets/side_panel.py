"""The left dock: pruning targets, the Prune button, what was loaded, and the legend of the graph
overlay's colour scale."""
from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from .. import theme as themes
from .targets_panel import TargetsPanel


class SidePanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.theme = themes.current()
        self._info = None  # (title, lines) last shown, redrawn on a theme change
        self.targets = TargetsPanel()
        self.prune_btn = QPushButton("Prune")
        self.prune_btn.setObjectName("primaryButton")  # bold, accent colour: style.qss
        self.prune_btn.setMinimumHeight(34)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.RichText)
        self.overlay_legend = QLabel()
        self.overlay_legend.setObjectName("overlayLegend")  # the scale's gradient: style.qss
        self.overlay_legend.setWordWrap(True)
        self.overlay_legend.hide()
        lv = QVBoxLayout(self)
        lv.addWidget(self.targets)
        lv.addWidget(self.prune_btn)
        lv.addWidget(self.info)
        lv.addWidget(self.overlay_legend)
        lv.addStretch(1)

    def apply_theme(self, theme):
        self.theme = theme
        if self._info is not None:
            self.show_info(*self._info)

    def show_info(self, title: str, lines: list[tuple[str, str]]):
        """``title`` in bold, then one line per (text, kind); kind "error" or "bold" or ""."""
        self._info = (title, lines)
        error = self.theme.color("ui.error")
        # a long path may wrap after its separators instead of widening the dock
        out = ["<b>" + html.escape(title, quote=False).replace("/", "/\u200b").replace(".", ".\u200b") + "</b>"]
        for text, kind in lines:
            text = html.escape(text, quote=False)
            out.append(f"<span style='color:{error}'>{text}</span>" if kind == "error"
                       else f"<b>{text}</b>" if kind == "bold" else text)
        self.info.setText("<br>".join(out))

    def show_legend(self, text: str):
        self.overlay_legend.setText(text)
        self.overlay_legend.show()

    def hide_legend(self):
        self.overlay_legend.hide()
