"""Choose a model (torchvision zoo, saved file, file.py:factory, hf:DIR or timm:NAME) and its
example input."""
from __future__ import annotations

import torchvision
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLineEdit, QListWidget, QPushButton, QTabWidget,
                               QVBoxLayout, QWidget)

from core.trace.inputs import DTYPES

from ..jobs import model_io
from .targets_panel import attention_combo


def zoo_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


class LoadDialog(QDialog):
    def __init__(self, parent=None, shape="1,3,224,224", dtype="float32", attention="heads"):
        super().__init__(parent)
        self.setWindowTitle("Open model")
        self.resize(520, 520)
        self.tabs = QTabWidget()
        # zoo tab: searchable list of architectures (random weights; nothing is downloaded)
        zoo = QWidget()
        self.search = QLineEdit(placeholderText="search torchvision models…")
        self.zoo = QListWidget()
        self.zoo.addItems(zoo_names())
        v = QVBoxLayout(zoo)
        v.addWidget(self.search)
        v.addWidget(self.zoo)
        self.search.textChanged.connect(self._filter)
        self.zoo.itemDoubleClicked.connect(lambda *_: self.accept())
        # file tab: a saved model (.pt/.pth/.pstudio), a python factory, a local Hugging Face
        # model directory (hf:DIR) or a timm model by name (timm:NAME, timm:NAME@pretrained)
        files = QWidget()
        self.path = QLineEdit(placeholderText="model.pt, model.pstudio, path/file.py:factory, "
                                              "hf:path/to/dir or timm:NAME")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        browse_hf = QPushButton("HF folder…")
        browse_hf.setToolTip("a local Hugging Face model directory (config.json + weights)")
        browse_hf.clicked.connect(self._browse_hf)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        row.addWidget(browse_hf)
        fl = QVBoxLayout(files)
        fl.addLayout(row)
        fl.addStretch(1)
        self.tabs.addTab(zoo, "torchvision zoo")
        self.tabs.addTab(files, "file / factory / hf / timm")
        self.shape = QLineEdit(shape)
        self.dtype = QComboBox()
        self.dtype.addItems([d for d in DTYPES if d not in ("float", "half", "long")])
        self.dtype.setCurrentText(dtype)
        form = QFormLayout()
        form.addRow("input shape(s)", self.shape)
        form.addRow("dtype", self.dtype)
        self.attention = attention_combo(attention)  # analysis option: how attention is grouped
        form.addRow("attention", self.attention)
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.tabs, 1)
        lay.addLayout(form)
        lay.addWidget(bb)

    def _filter(self, text):
        text = text.lower()
        for i in range(self.zoo.count()):
            it = self.zoo.item(i)
            it.setHidden(text not in it.text().lower())

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", model_io.open_filter())
        if path:
            self.path.setText(path + (":make_model" if path.endswith(".py") else ""))

    def _browse_hf(self):
        path = QFileDialog.getExistingDirectory(self, "Hugging Face model directory")
        if path:
            self.path.setText(f"hf:{path}")

    def options(self) -> dict:
        """Analysis options for core.pipeline.analyze_model."""
        return {"attention": self.attention.currentData()}

    def spec(self) -> str:
        if self.tabs.currentIndex() == 0:
            it = self.zoo.currentItem()
            return f"torchvision:{it.text()}" if it else ""
        return self.path.text().strip()
