"""Pruning targets: what to remove, how to rank channels, and an instant estimate.

The panel only builds a core.planner.PlanSettings; the main window asks core.pipeline.estimate
for the numbers (debounced, since dragging the slider fires many changes).
"""
from __future__ import annotations

import torch
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QSlider,
                               QSpinBox, QWidget)

from core.importance import CRITERIA
from core.planner import PlanSettings

MODES = [("ratio", "channel ratio"), ("flops", "FLOPs target"), ("params", "params target")]


def human(n: float) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f}{unit}"
    return f"{n:.0f}"


class TargetsPanel(QWidget):
    settingsChanged = Signal()  # debounced

    def __init__(self, parent=None):
        super().__init__(parent)
        self.mode = QComboBox()
        for key, text in MODES:
            self.mode.addItem(text, key)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 95)
        self.slider.setValue(50)
        self.slider.setTickInterval(10)
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.value = QLabel("50% removed")
        self.value.setMinimumWidth(90)
        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.value)
        self.criterion = QComboBox()
        self.criterion.addItems(list(CRITERIA))
        self.criterion.setCurrentText("l2")
        self.global_rank = QCheckBox("global ranking (else uniform per group)")
        self.round_to = QSpinBox()
        self.round_to.setRange(1, 256)
        self.device = QComboBox()
        self.device.addItem("cpu")
        if torch.cuda.is_available():
            self.device.addItem("cuda")
        self.estimate = QLabel("–")
        self.estimate.setWordWrap(True)
        self.estimate.setTextFormat(Qt.RichText)
        form = QFormLayout(self)
        form.addRow("target", self.mode)
        form.addRow("remove", row)
        form.addRow("importance", self.criterion)
        form.addRow("", self.global_rank)
        form.addRow("round to", self.round_to)
        form.addRow("device", self.device)
        form.addRow("estimate", self.estimate)
        self.locked: list[str] = []
        self._debounce = QTimer(self, singleShot=True, interval=120)
        self._debounce.timeout.connect(self.settingsChanged)
        for sig in (self.mode.currentIndexChanged, self.slider.valueChanged,
                    self.criterion.currentIndexChanged, self.global_rank.toggled,
                    self.round_to.valueChanged):
            sig.connect(self._changed)

    def _changed(self, *_):
        what = {"ratio": "of channels", "flops": "of FLOPs", "params": "of params"}[self.mode.currentData()]
        self.value.setText(f"{self.slider.value()}% {what}")
        self._debounce.start()

    def settings(self) -> PlanSettings:
        frac = self.slider.value() / 100
        mode = self.mode.currentData()
        return PlanSettings(ratio=frac if mode == "ratio" else None,
                            target_flops=frac if mode == "flops" else None,
                            target_params=frac if mode == "params" else None,
                            importance=self.criterion.currentText(),
                            global_ranking=self.global_rank.isChecked(),
                            round_to=self.round_to.value(), ignore=list(self.locked))

    def set_settings(self, settings: PlanSettings, mode: str | None = None):
        """Show ``settings`` (e.g. from a project file) in the panel."""
        if mode is None:
            mode = ("flops" if settings.target_flops is not None else
                    "params" if settings.target_params is not None else "ratio")
        frac = {"ratio": settings.ratio, "flops": settings.target_flops,
                "params": settings.target_params}[mode]
        i = self.mode.findData(mode)
        if i >= 0:
            self.mode.setCurrentIndex(i)
        if frac is not None:
            self.slider.setValue(int(round(frac * 100)))
        if self.criterion.findText(settings.importance) >= 0:
            self.criterion.setCurrentText(settings.importance)
        self.global_rank.setChecked(bool(settings.global_ranking))
        self.round_to.setValue(int(settings.round_to))
        self.locked = list(settings.ignore)

    def device_name(self) -> str:
        return self.device.currentText()

    def show_estimate(self, base_params, base_flops, params, flops):
        self.estimate.setText(
            f"params {human(base_params)} → <b>{human(params)}</b> ({1 - params / max(base_params, 1):.0%} less)<br>"
            f"FLOPs {human(base_flops)} → <b>{human(flops)}</b> ({1 - flops / max(base_flops, 1):.0%} less)")

    def show_estimate_error(self, msg: str):
        self.estimate.setText(f"<span style='color:#c1121f'>{msg}</span>")
