"""Ask which data to evaluate on: the built-in digits, an image folder or file.py:factory."""
from __future__ import annotations

import os

from PySide6.QtWidgets import QFileDialog, QInputDialog

from ..jobs.accuracy import default_data_spec

DIGITS_CHOICE = "built-in digits (resized to the model's input)"
FOLDER_CHOICE = "image folder (one sub-folder per class)…"
FACTORY_CHOICE = "Python file: file.py:factory returning a Dataset or DataLoader…"


def choose_data(parent, session, last: str | None = None) -> str | None:
    """Ask which data to use: the built-in digits, an image folder or file.py:factory.
    Returns a core.train.data spec, or None when the user cancelled."""
    items = [DIGITS_CHOICE, FOLDER_CHOICE, FACTORY_CHOICE]
    if last and not last.startswith("digits"):
        items.insert(0, f"last used: {last}")
    choice, ok = QInputDialog.getItem(parent, "Data", "Evaluate on:", items, 0, False)
    if not ok:
        return None
    if choice.startswith("last used: "):
        return last
    if choice == DIGITS_CHOICE:
        return default_data_spec(session)
    if choice == FOLDER_CHOICE:
        path = QFileDialog.getExistingDirectory(parent, "Image folder (one sub-folder per class)")
        return path or None
    path, _ = QFileDialog.getOpenFileName(parent, "Dataset factory", "", "Python (*.py)")
    if not path:
        return None
    name, ok = QInputDialog.getText(parent, "Dataset factory",
                                    f"Function in {os.path.basename(path)} that returns the "
                                    "Dataset, DataLoader or (train, val):", text="make_dataset")
    if not ok or not name.strip():
        return None
    return f"{path}:{name.strip()}"
