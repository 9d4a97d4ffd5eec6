"""Pruning targets: what to remove, how to rank channels, and an instant estimate.

The panel only builds a core.plan.planner.PlanSettings; the main window asks core.pipeline.estimate
for the numbers (debounced, since dragging the slider fires many changes).
"""
from __future__ import annotations

import html

import torch
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QSlider, QSpinBox, QWidget)
from superqt import QLabeledSlider

from core.plan.criteria import CRITERIA
from core.plan.planner import PlanSettings

from .. import theme as themes
from .units import si

MODES = [("ratio", "channel ratio"), ("flops", "FLOPs target"), ("params", "params target"),
         ("latency", "latency target")]
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


IMPORTANCE_TIP = (
    "<p>How channels are ranked before the least important are removed.</p>"
    "<p><b>l1 / l2</b>: magnitude of each channel's weights, summed over every coupled layer "
    "(fast, no data). <b>random</b>: a baseline. Criteria that need data (e.g. taylor) use a few "
    "batches of the evaluation data.</p>")
GLOBAL_TIP = (
    "<p><b>On</b>: rank the channels of all groups together, so unimportant groups lose more and "
    "important ones less (the total still meets the target).</p>"
    "<p><b>Off</b>: every group loses the same fraction of its channels (with a FLOPs target and "
    "<i>plan for speed</i>: a fraction shaped by time, see there).</p>")
SPEED_TIP = (
    "<p>FLOPs target only. <b>On</b> (default): groups whose channels cost more time than their "
    "FLOPs (a stem feeding a max-pool, norms and activations at high resolution) lose more, the "
    "others less, so the same FLOPs come out faster; the target is met exactly as without it. "
    "<b>Off</b>: every group loses the same fraction. (CLI: <tt>--flops-allocation</tt>)</p>")
ROUND_TIP = (
    "<p>Keep a multiple of this many channels in every group (e.g. 8 or 16), which hardware "
    "kernels often run faster. 1: no rounding. A group that cannot reach a multiple is left "
    "whole. auto (below 1, the default): the multiple measured fastest on the device (measured "
    "once); a group narrower than 4 times it uses 8, 4 or 1 instead.</p>")
APPROX_TIP = (
    "<p>Some removals change what the model computes by design (LayerNorm statistics over a "
    "pruned residual stream, a softmax over pruned channels, GroupNorm): the pruned model is then "
    "close to, not equal to, the original with those channels zeroed. The check measures each kind "
    "against its bound.</p><p><b>Off</b> (default): such a result is refused and nothing changes. "
    "<b>On</b>: it is kept when every kind stays within its bound.</p>")
TARGET_TIP = "Type a value or drag: the percentage of channels, FLOPs or parameters to remove."


class TargetsPanel(QWidget):
    settingsChanged = Signal()  # debounced
    attentionChanged = Signal(str)  # the user picked another attention structure ("heads"|"head_dim")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.mode = QComboBox()
        for key, text in MODES:
            self.mode.addItem(text, key)
        # superqt's labelled slider: the value beside it is a spin box the user can type into
        self.slider = QLabeledSlider(Qt.Horizontal)
        self.slider.setRange(0, 95)
        self.slider.setValue(50)
        self.slider.setTickInterval(10)
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setToolTip(TARGET_TIP)
        box = self.slider.findChild(QLineEdit)  # superqt's editable value label
        if box is not None:
            box.setToolTip(TARGET_TIP)
        self.value = QLabel("% of channels")
        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.value)
        self.criterion = QComboBox()
        self.criterion.addItems(list(CRITERIA))
        self.criterion.setCurrentText("l2")
        self.criterion.setToolTip(IMPORTANCE_TIP)
        self.global_rank = QCheckBox("global ranking")
        self.global_rank.setToolTip(GLOBAL_TIP)
        self.speed_shaped = QCheckBox("plan for speed")
        self.speed_shaped.setChecked(True)
        self.speed_shaped.setToolTip(SPEED_TIP)
        self.round_to = QSpinBox()
        self.round_to.setRange(0, 256)
        self.round_to.setValue(0)  # auto: measured faster than 1 on every benchmarked model
        self.round_to.setSpecialValueText("auto")  # 0: the multiple measured fastest on the device
        self.round_to.setToolTip(ROUND_TIP)
        self.accept_approx = QCheckBox("accept approximate results")
        self.accept_approx.setToolTip(APPROX_TIP)
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
        self.estimate_stale = False  # the numbers shown are not those of the current model/settings
        self._estimate_text = ""
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.addRow("target", self.mode)
        form.addRow("remove", row)
        form.addRow(self._tipped("importance", IMPORTANCE_TIP), self.criterion)
        form.addRow("", self.global_rank)
        form.addRow("", self.speed_shaped)
        form.addRow(self._tipped("round to", ROUND_TIP), self.round_to)
        form.addRow("", self.accept_approx)
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
                    self.speed_shaped.toggled, self.round_to.valueChanged):
            sig.connect(self._changed)
        self.speed_shaped.setEnabled(self.mode.currentData() == "flops")

    @staticmethod
    def _tipped(text: str, tip: str) -> QLabel:
        label = QLabel(text)
        label.setToolTip(tip)
        return label

    def _changed(self, *_):
        what = {"ratio": "% of channels", "flops": "% of FLOPs", "params": "% of params",
                "latency": "% of latency"}[self.mode.currentData()]
        self.value.setText(what)
        # it shapes a FLOPs target's per-group ratios, which global ranking replaces
        self.speed_shaped.setEnabled(self.mode.currentData() == "flops"
                                     and not self.global_rank.isChecked())
        if self._estimate_text:  # numbers are shown: they are about to be replaced
            self.mark_estimate_stale()
        self._debounce.start()

    def mark_estimate_stale(self, clear: bool = False):
        """The estimate shown no longer matches (settings moved, another model loaded): grey it
        and say it is being recalculated until :meth:`show_estimate` brings the new numbers.
        ``clear``: drop the old numbers too (they belong to another model)."""
        self.estimate_stale = True
        if clear:
            self._estimate_text = ""
        grey = themes.current().color("ui.muted")
        old = f"<span style='color:{grey}'>{self._estimate_text}</span><br>" if self._estimate_text else ""
        self.estimate.setText(f"{old}<i style='color:{grey}'>…recalculating</i>")

    def show_no_estimate(self, why: str = "–"):
        self.estimate_stale = False
        self._estimate_text = ""
        self.estimate.setText(why)

    def settings(self) -> PlanSettings:
        frac = self.slider.value() / 100
        mode = self.mode.currentData()
        return PlanSettings(ratio=frac if mode == "ratio" else None,
                            target_flops=frac if mode == "flops" else None,
                            target_params=frac if mode == "params" else None,
                            target_latency=frac if mode == "latency" else None,
                            importance=self.criterion.currentText(),
                            global_ranking=self.global_rank.isChecked(),
                            flops_allocation="latency" if self.speed_shaped.isChecked() else "uniform",
                            round_to=max(1, self.round_to.value()), ignore=list(self.locked),
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
                    "params" if settings.target_params is not None else
                    "latency" if settings.target_latency is not None else "ratio")
        frac = {"ratio": settings.ratio, "flops": settings.target_flops,
                "params": settings.target_params, "latency": settings.target_latency}[mode]
        i = self.mode.findData(mode)
        if i >= 0:
            self.mode.setCurrentIndex(i)
        if frac is not None:
            self.slider.setValue(int(round(frac * 100)))
        if self.criterion.findText(settings.importance) >= 0:
            self.criterion.setCurrentText(settings.importance)
        self.global_rank.setChecked(bool(settings.global_ranking))
        self.speed_shaped.setChecked(settings.flops_allocation != "uniform")
        self.round_to.setValue(0 if getattr(settings, "round_auto", False) else int(settings.round_to))
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
        self.estimate_stale = False
        self._estimate_text = (
            f"params {si(base_params)} → <b>{si(params)}</b> ({1 - params / max(base_params, 1):.0%} less)<br>"
            f"FLOPs {si(base_flops, 'FLOPs')} → <b>{si(flops, 'FLOPs')}</b> "
            f"({1 - flops / max(base_flops, 1):.0%} less)")
        self.estimate.setText(self._estimate_text)

    def show_estimate_error(self, msg: str):
        self.estimate_stale = False
        self._estimate_text = ""
        colour = themes.current().color("ui.error")
        self.estimate.setText(f"<span style='color:{colour}'>{html.escape(msg)}</span>")
