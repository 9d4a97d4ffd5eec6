"""Pruning targets: what to remove, how to rank channels, and an instant estimate.

The panel only builds a core.plan.planner.PlanSettings; the main window asks core.pipeline.estimate
for the numbers (debounced, since dragging the slider fires many changes).
"""
from __future__ import annotations

import torch
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel,
                               QPushButton, QSlider, QSpinBox, QWidget)

from core.plan.criteria import CRITERIA
from core.plan.planner import PlanSettings

from .. import theme as themes

MODES = [("ratio", "channel ratio"), ("flops", "FLOPs target"), ("params", "params target")]
# analysis option "attention" (core.pipeline.analyze_model(options=...)): how attention is grouped
ATTENTION = [("heads", "Whole heads"), ("head_dim", "Dimensions in every head")]
ATTENTION_TIP = (
    "<p>How attention layers (nn.MultiheadAttention, torchvision Swin/MaxViT, timm Attention) "
    "are pruned.</p>"
    "<p><b>Whole heads</b>: remove entire heads; the heads that stay are unchanged.<br>"
    "<b>Dimensions in every head</b>: keep every head and make each one narrower (the same "
    "dimensions are removed from all heads).</p>"
    "<p>Both are exact, because the pruned layer keeps the original attention scale "
    "1/&radic;(head dim); only timm's qk_norm makes dimensions approximate.</p>"
    "<p>Changing it analyses the model again: the groups change, and a pruned result made with "
    "the other choice is dropped.</p>")


def attention_combo(mode: str = "heads") -> QComboBox:
    """The attention-structure choice (shared by the load dialog and the targets panel)."""
    c = QComboBox()
    for key, text in ATTENTION:
        c.addItem(text, key)
    c.setToolTip(ATTENTION_TIP)
    i = c.findData(mode)
    c.setCurrentIndex(max(i, 0))
    return c


def human(n: float) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f}{unit}"
    return f"{n:.0f}"


class TargetsPanel(QWidget):
    settingsChanged = Signal()  # debounced
    attentionChanged = Signal(str)  # the user picked another attention structure ("heads"|"head_dim")

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
        self.attention = attention_combo()
        self.attention_available = True  # the loaded model has attention layers it applies to
        self.attention.currentIndexChanged.connect(
            lambda _i: self.attentionChanged.emit(self.attention_mode()))
        self.device = QComboBox()
        self.device.addItem("cpu")
        if torch.cuda.is_available():
            self.device.addItem("cuda")
        # per-group ratio overrides (module name -> ratio), e.g. from a sensitivity analysis
        self.overrides: dict[str, float] = {}
        self.overrides_source = ""
        self.overrides_label = QLabel()
        self.overrides_label.setWordWrap(True)
        self.clear_overrides_btn = QPushButton("Clear")
        self.clear_overrides_btn.setToolTip("back to one ratio for every group")
        self.clear_overrides_btn.clicked.connect(self.clear_overrides)
        self.overrides_row = QWidget()
        orow = QHBoxLayout(self.overrides_row)
        orow.setContentsMargins(0, 0, 0, 0)
        orow.addWidget(self.overrides_label, 1)
        orow.addWidget(self.clear_overrides_btn)
        self.overrides_row.hide()
        self.estimate = QLabel("–")
        self.estimate.setWordWrap(True)
        self.estimate.setTextFormat(Qt.RichText)
        form = QFormLayout(self)
        form.addRow("target", self.mode)
        form.addRow("remove", row)
        form.addRow("importance", self.criterion)
        form.addRow("", self.global_rank)
        form.addRow("round to", self.round_to)
        self.attention_label = QLabel("attention")
        self.attention_label.setToolTip(ATTENTION_TIP)
        form.addRow(self.attention_label, self.attention)
        form.addRow("device", self.device)
        form.addRow(self.overrides_row)
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
                            round_to=self.round_to.value(), ignore=list(self.locked),
                            overrides=dict(self.overrides))

    def set_overrides(self, overrides: dict, source: str = "sensitivity"):
        """Per-group ratios ({group root module: ratio}) that replace the slider's ratio for
        those groups; shown as a label with a clear button."""
        self.overrides = {str(k): float(v) for k, v in (overrides or {}).items()}
        self.overrides_source = source if self.overrides else ""
        if self.overrides:
            lo, hi = min(self.overrides.values()), max(self.overrides.values())
            self.overrides_label.setText(
                f"per-group ratios from {source} ({len(self.overrides)} groups)")
            self.overrides_label.setToolTip(
                f"{lo:.0%} to {hi:.0%} per group:\n" + "\n".join(
                    f"{k}: {v:.0%}" for k, v in sorted(self.overrides.items(), key=lambda kv: -kv[1])))
        self.overrides_row.setVisible(bool(self.overrides))
        self._debounce.start()

    def clear_overrides(self):
        self.set_overrides({})

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
        self.set_overrides(dict(settings.overrides or {}), "the project")

    def attention_mode(self) -> str:
        return self.attention.currentData()

    def set_attention(self, mode: str, available: bool = True):
        """Show ``mode`` without emitting attentionChanged. ``available``: whether the loaded
        model has attention layers the choice applies to (the tooltip says so when not)."""
        i = self.attention.findData(mode)
        self.attention.blockSignals(True)
        self.attention.setCurrentIndex(max(i, 0))
        self.attention.blockSignals(False)
        self.attention_available = available
        tip = ATTENTION_TIP if available else (
            ATTENTION_TIP + "<p><i>The loaded model has no attention layers this applies to.</i></p>")
        self.attention.setToolTip(tip)
        self.attention_label.setToolTip(tip)

    def device_name(self) -> str:
        return self.device.currentText()

    def show_estimate(self, base_params, base_flops, params, flops):
        self.estimate.setText(
            f"params {human(base_params)} → <b>{human(params)}</b> ({1 - params / max(base_params, 1):.0%} less)<br>"
            f"FLOPs {human(base_flops)} → <b>{human(flops)}</b> ({1 - flops / max(base_flops, 1):.0%} less)")

    def show_estimate_error(self, msg: str):
        colour = themes.current().color("ui.error")
        self.estimate.setText(f"<span style='color:{colour}'>{msg}</span>")
