"""Streamed pruning of a checkpoint larger than memory: how much to remove and where to write it.
MLP width and key/value heads are the two things streaming prunes (the same in every layer)."""
from __future__ import annotations

import os

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout)


def _ratio(value: float, tip: str) -> QDoubleSpinBox:
    sb = QDoubleSpinBox(decimals=3, minimum=0.0, maximum=0.95, singleStep=0.05, value=value)
    sb.setToolTip(tip)
    return sb


class StreamDialog(QDialog):
    def __init__(self, src: str, parent=None, mlp: float = 0.5, kv: float = 0.25):
        super().__init__(parent)
        self.setWindowTitle("Prune checkpoint (streamed)")
        self.src = src
        note = QLabel("The weights are read tensor by tensor from the shards and the pruned "
                      "shards are written one at a time: the model is never loaded. The hidden "
                      "size is kept; every layer is pruned alike.")
        note.setWordWrap(True)
        self.mlp = _ratio(mlp, "fraction of every MLP's intermediate width to remove")
        self.kv = _ratio(kv, "fraction of every attention block's key/value heads to remove "
                             "(each with its query heads)")
        base = src.rstrip("/" + os.sep)
        self.out = QLineEdit(f"{base}-pruned")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("MLP width removed", self.mlp)
        form.addRow("KV heads removed", self.kv)
        form.addRow("output folder", row)
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(note)
        lay.addLayout(form)
        lay.addWidget(bb)

    def _browse(self):
        path, _ = QFileDialog.getSaveFileName(self, "Output folder (created)", self.out.text(), "",
                                              options=QFileDialog.DontConfirmOverwrite)
        if path:
            self.out.setText(path)

    def values(self) -> tuple[float, float, str]:
        return self.mlp.value(), self.kv.value(), self.out.text().strip()
