"""Choose a model (torchvision zoo, saved file, file.py:factory, hf:DIR or timm:NAME) and its
example input."""
from __future__ import annotations

import torchvision
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QListWidget, QPushButton, QTabWidget,
                               QVBoxLayout, QWidget)

from core.trace.inputs import DTYPES

from ..jobs import model_io
from .targets_panel import attention_combo


def zoo_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


class LoadDialog(QDialog):
    """Typing goes to the search box (it has the focus); the highlighted match is what Enter or
    Open loads, and a single click only highlights (double-click opens). Enter with nothing to
    open says so and keeps the dialog open."""
    Accepted, Rejected = QDialog.Accepted, QDialog.Rejected

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
        self.search.returnPressed.connect(self.accept)
        self.zoo.itemDoubleClicked.connect(lambda *_: self.accept())
        self.message = QLabel()
        self.message.setObjectName("dialogMessage")
        self.message.setWordWrap(True)
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
        bb = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        for b in bb.buttons():  # Enter in the search box must not press a default button first
            b.setAutoDefault(False)
            b.setDefault(False)
        lay = QVBoxLayout(self)
        lay.addWidget(self.tabs, 1)
        lay.addWidget(self.message)
        lay.addLayout(form)
        lay.addWidget(bb)
        for edit in (self.path, self.shape):  # Enter anywhere opens (or says why not)
            edit.returnPressed.connect(self.accept)
        self.tabs.currentChanged.connect(self._focus_tab)
        QTimer.singleShot(0, self._focus_tab)

    def showEvent(self, e):  # noqa: N802 - Qt's name
        super().showEvent(e)
        avail = self.screen().availableGeometry()  # a scaled screen may be smaller than 520×520
        self.resize(min(self.width(), avail.width()), min(self.height(), avail.height()))
        self._focus_tab()

    def _focus_tab(self, *_):
        (self.search if self.tabs.currentIndex() == 0 else self.path).setFocus()

    def accept(self):
        """Open what is highlighted; with nothing to open, say why and stay."""
        if self.spec():
            self.message.clear()
            super().accept()
        elif self.tabs.currentIndex() == 0:
            text = self.search.text().strip()
            self.message.setText(f"No torchvision model matches '{text}'." if text else
                                 "Pick a model in the list (or type part of its name).")
        else:
            self.message.setText("Type or browse to a model file, file.py:factory, hf:DIR or timm:NAME.")

    def _filter(self, text):
        """Show the matches and highlight the best: an exact name, else the first match; the
        highlight is what Enter opens, so it is never a hidden row."""
        text = text.lower().strip()
        first = exact = None
        for i in range(self.zoo.count()):
            it = self.zoo.item(i)
            it.setHidden(text not in it.text().lower())
            if not it.isHidden():
                first = first or it
                exact = exact or (it if it.text().lower() == text else None)
        if not text:  # everything shown again: keep what the user had picked
            self.message.clear()
            return
        best = exact or first
        if best is None:
            self.zoo.setCurrentItem(None)
        else:
            self.zoo.setCurrentItem(best)
            self.zoo.scrollToItem(best)
        self.message.setText("" if best is not None or not text else f"No torchvision model matches '{text}'.")

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", model_io.open_filter())
        if path:
            self.path.setText(path + (":make_model" if path.endswith(".py") else ""))

    def _browse_hf(self):
        path = QFileDialog.getExistingDirectory(self, "Hugging Face model directory")
        if path:
            self.path.setText(f"hf:{path}")
            self.suggest_input()

    def suggest_input(self):
        """The model's own kind of input in the shape and dtype fields (token ids for a language
        model) - the image shape used last would not run it."""
        suggested = model_io.suggested_input(self.path.text().strip())
        if suggested:
            self.shape.setText(suggested[0])
            self.dtype.setCurrentText(suggested[1])

    def options(self) -> dict:
        """Analysis options for core.pipeline.analyze_model."""
        return {"attention": self.attention.currentData()}

    def spec(self) -> str:
        if self.tabs.currentIndex() == 0:
            it = self.zoo.currentItem()
            return f"torchvision:{it.text()}" if it is not None and not it.isHidden() else ""
        return self.path.text().strip()
